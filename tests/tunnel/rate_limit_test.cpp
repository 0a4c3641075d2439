#include "tunnel/rate_limit.h"

#include <gtest/gtest.h>

namespace dvpn::tunnel {
namespace {

TEST(HandshakeRateLimiterTest, BurstThenSustainedRate) {
  HandshakeRateLimiter limiter({.per_second = 2, .burst = 3, .max_sources = 16});
  SourceKey a = SourceKeyFromIpv4({10, 0, 0, 1});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Allow(a, 1000)) << i;
  EXPECT_FALSE(limiter.Allow(a, 1000));
  EXPECT_FALSE(limiter.Allow(a, 1499));  // 0.998 tokens
  EXPECT_TRUE(limiter.Allow(a, 1500));   // 1 token after 500 ms at 2/s
  EXPECT_FALSE(limiter.Allow(a, 1500));
  EXPECT_FALSE(limiter.Allow(a, 400));   // time going backwards adds nothing
  // Another source is independent.
  EXPECT_TRUE(limiter.Allow(SourceKeyFromIpv4({10, 0, 0, 2}), 1500));
  // Long idle refills only up to the burst.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Allow(a, 10'000'000)) << i;
  EXPECT_FALSE(limiter.Allow(a, 10'000'000));
}

TEST(HandshakeRateLimiterTest, MemoryIsBounded) {
  HandshakeRateLimiter limiter({.per_second = 1, .burst = 1, .max_sources = 100});
  for (uint32_t i = 0; i < 10'000; ++i) {
    limiter.Allow(SourceKeyFromIpv4({uint8_t(i >> 24), uint8_t(i >> 16), uint8_t(i >> 8),
                                     uint8_t(i)}),
                  0);
    ASSERT_LE(limiter.size(), 100u);
  }
}

TEST(HandshakeRateLimiterTest, Ipv6HostsInOnePrefixShareABucket) {
  HandshakeRateLimiter limiter({.per_second = 1, .burst = 1, .max_sources = 16});
  ByteArray<16> x{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
  ByteArray<16> y = x;
  y[15] = 2;
  EXPECT_TRUE(limiter.Allow(SourceKeyFromIpv6(x), 0));
  EXPECT_FALSE(limiter.Allow(SourceKeyFromIpv6(y), 0));
  EXPECT_NE(SourceKeyFromIpv6(x), SourceKeyFromIpv4({32, 1, 13, 184}));
}

}  // namespace
}  // namespace dvpn::tunnel
