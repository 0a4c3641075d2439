// Charge (docs/payments.md §1): exact values, rounding down, overflow at the limits, and a
// randomized comparison against an independent long-division reference.

#include "payments/metering.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/payments_session/test_util.h"

// In the namespace of the helpers of test_util.h.
namespace dvpn::payments::testing {
namespace {

using u128 = unsigned __int128;

uint64_t C(uint64_t per_mb, uint64_t per_minute, uint64_t bytes, uint64_t ms) {
  auto r = Charge(Price{Micro(per_mb), Micro(per_minute)}, bytes, ms);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return r ? r->micro() : 0;
}

bool Overflows(uint64_t per_mb, uint64_t per_minute, uint64_t bytes, uint64_t ms) {
  auto r = Charge(Price{Micro(per_mb), Micro(per_minute)}, bytes, ms);
  if (r) return false;
  EXPECT_EQ(r.error().code, MeteringErrc::kOverflow);
  EXPECT_NE(r.error().message.find("overflows"), std::string::npos);
  return true;
}

// The worked examples of docs/protocol.md §5.
TEST(Charge, ProtocolDocumentExamples) {
  EXPECT_EQ(C(10'000, 0, 999'999, 0), 9'999u);
  EXPECT_EQ(C(10'000, 0, 1'000'000, 0), 10'000u);
  EXPECT_EQ(C(10'000, 0, 1'500'001, 0), 15'000u);
  EXPECT_TRUE(Overflows(1'000'000'000'000, 0, UINT64_MAX, 0));
}

TEST(Charge, ExactValues) {
  EXPECT_EQ(C(0, 0, 0, 0), 0u);
  EXPECT_EQ(C(1000, 0, 1'000'000, 0), 1000u);            // 1 MB at 1000u/MB
  EXPECT_EQ(C(1000, 0, 5'000'000, 99'999), 5000u);       // no time price: time is free
  EXPECT_EQ(C(0, 600, 10'000'000, 60'000), 600u);        // no byte price: bytes are free
  EXPECT_EQ(C(1'234'567, 0, 2'500'000, 0), 3'086'417u);  // 3086417.5 rounds down
  EXPECT_EQ(C(1'000'000, 0, 1, 0), 1u);                  // 1 credit/MB: one micro per byte
  EXPECT_EQ(C(1000, 600, 3'000'000, 120'000), 3000u + 1200u);
  // 1 credit per MB and 1 credit per minute for an hour and a GB.
  EXPECT_EQ(C(1'000'000, 1'000'000, 1'000'000'000, 3'600'000), 1000'000'000u + 60'000'000u);
}

TEST(Charge, RoundsDownPerTermNeverAgainstTheClient) {
  // Partial megabytes and minutes.
  EXPECT_EQ(C(1, 0, 999'999, 0), 0u);
  EXPECT_EQ(C(1, 0, 1'000'000, 0), 1u);
  EXPECT_EQ(C(1, 0, 1'999'999, 0), 1u);
  EXPECT_EQ(C(3, 0, 333'333, 0), 0u);     // 0.999999
  EXPECT_EQ(C(3, 0, 333'334, 0), 1u);     // 1.000002
  EXPECT_EQ(C(0, 600, 0, 59'999), 599u);  // 599.99
  EXPECT_EQ(C(0, 1, 0, 59'999), 0u);
  EXPECT_EQ(C(0, 1, 0, 60'000), 1u);
  // Each term rounds on its own: 0.9999 + 0.99998 = 1 micro short of 2, and the charge is 0.
  EXPECT_EQ(C(1, 1, 999'900, 59'999), 0u);
  // Cumulative invoices lose less than one micro per term per session, not per invoice: at
  // 1u/MB an invoice every 700 kB would be worth 0 on its own, yet the charge at the tenth is 7.
  uint64_t previous = 0, per_step_sum = 0;
  for (uint64_t k = 1; k <= 10; ++k) {
    uint64_t c = C(1, 0, k * 700'000, 0);
    EXPECT_GE(c, previous);
    EXPECT_EQ(c, k * 7 / 10);
    previous = c;
    per_step_sum += C(1, 0, 700'000, 0);
  }
  EXPECT_EQ(previous, 7u);
  EXPECT_EQ(per_step_sum, 0u);
  EXPECT_EQ(C(3, 0, 5'000'000, 0), 15u);
  EXPECT_EQ(C(3, 0, 4'999'999, 0), 14u);  // 14.999997
}

TEST(Charge, OverflowAtTheLimits) {
  const uint64_t kMax = UINT64_MAX;
  const uint64_t p = kMaxPricePerMb.micro();  // 10^12
  // floor(M * 10^12 / 10^6) = M * 10^6 fits up to M = floor((2^64 - 1) / 10^6).
  const uint64_t m_max = kMax / 1'000'000;  // 18446744073709
  EXPECT_EQ(C(p, 0, m_max, 0), m_max * 1'000'000);
  EXPECT_TRUE(Overflows(p, 0, m_max + 1, 0));
  EXPECT_TRUE(Overflows(p, 0, kMax, 0));
  // The same for time: floor(T * 10^12 / 60000).
  // The largest T with floor(T * p / 60000) <= 2^64 - 1.
  const uint64_t t_max = static_cast<uint64_t>(((u128{kMax} + 1) * 60'000 - 1) / p);
  EXPECT_EQ(C(0, p, 0, t_max), *RefMulDiv(t_max, p, 60'000));
  EXPECT_TRUE(Overflows(0, p, 0, t_max + 1));
  // Each term fits, the sum does not.
  const uint64_t half = kMax / 2 + 1;  // 2^63
  EXPECT_EQ(C(1'000'000, 0, half, 0), half);
  EXPECT_EQ(C(1'000'000, 60'000, half - 1, half - 1), kMax - 1);
  EXPECT_EQ(C(1'000'000, 60'000, half, half - 1), kMax);  // exactly 2^64 - 1
  EXPECT_TRUE(Overflows(1'000'000, 60'000, half, half));
  // Defined for every input: the largest products do not wrap, they overflow.
  EXPECT_TRUE(Overflows(kMax, kMax, kMax, kMax));
  EXPECT_TRUE(Overflows(kMax, 0, kMax, 0));
  EXPECT_EQ(C(kMax, 0, 1, 0), kMax / 1'000'000);
  EXPECT_EQ(C(kMax, 0, 999'999, 0), *RefMulDiv(kMax, 999'999, 1'000'000));
  EXPECT_EQ(C(0, kMax, 0, 59'999), *RefMulDiv(kMax, 59'999, 60'000));
  EXPECT_TRUE(Overflows(kMax, kMax, 999'999, 59'999));  // each fits, not both
}

TEST(Charge, ReferenceItselfIsRight) {
  EXPECT_EQ(RefMulDiv(0, 0, 7), 0u);
  EXPECT_EQ(RefMulDiv(UINT64_MAX, 1, 1), UINT64_MAX);
  EXPECT_EQ(RefMulDiv(UINT64_MAX, 2, 2), UINT64_MAX);
  EXPECT_EQ(RefMulDiv(UINT64_MAX, 3, 2), std::nullopt);
  EXPECT_EQ(RefMulDiv(1ull << 32, 1ull << 32, 1), std::nullopt);  // 2^64
  EXPECT_EQ(RefMulDiv(1ull << 32, 1ull << 32, 2), 1ull << 63);
  EXPECT_EQ(RefMulDiv(123'456'789, 987'654'321, 1'000'000), 121'932'631'112u);
}

// Random prices, byte counts and durations of every magnitude (log-uniform), compared to the
// limb reference; the floor bounds checked directly; and monotonicity.
TEST(Charge, PropertyAgainstReference) {
  std::mt19937_64 rng(20240601);
  auto any = [&] {
    int bits = static_cast<int>(rng() % 65);
    return bits == 0 ? 0 : (rng() >> (64 - bits));
  };
  int overflows = 0;
  for (int i = 0; i < 200'000; ++i) {
    const uint64_t per_mb = any(), per_minute = any(), bytes = any(), ms = any();
    auto got = Charge(Price{Micro(per_mb), Micro(per_minute)}, bytes, ms);
    auto want = RefCharge(per_mb, per_minute, bytes, ms);
    ASSERT_EQ(got.has_value(), want.has_value())
        << per_mb << " " << per_minute << " " << bytes << " " << ms;
    if (!got) {
      ++overflows;
      continue;
    }
    ASSERT_EQ(got->micro(), *want) << per_mb << " " << per_minute << " " << bytes << " " << ms;
    // Per term: term * d <= exact numerator < (term + 1) * d.
    const uint64_t a = *RefMulDiv(bytes, per_mb, 1'000'000);
    const uint64_t b = *RefMulDiv(ms, per_minute, 60'000);
    ASSERT_LE(u128{a} * 1'000'000, u128{bytes} * per_mb);
    ASSERT_GT((u128{a} + 1) * 1'000'000, u128{bytes} * per_mb);
    ASSERT_LE(u128{b} * 60'000, u128{ms} * per_minute);
    ASSERT_GT((u128{b} + 1) * 60'000, u128{ms} * per_minute);
    // More traffic or time never costs less.
    const uint64_t more_bytes = bytes + (bytes < UINT64_MAX ? rng() % (UINT64_MAX - bytes) : 0);
    auto later = Charge(Price{Micro(per_mb), Micro(per_minute)}, more_bytes, ms);
    if (later) {
      ASSERT_GE(*later, *got);
    }
  }
  // Both outcomes were exercised in quantity.
  EXPECT_GT(overflows, 10'000);
  EXPECT_LT(overflows, 190'000);
}

// Realistic prices (up to the protocol limit) and sessions of up to a petabyte and a year never
// overflow below these sizes and match the reference.
TEST(Charge, PropertyRealisticSessions) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t per_mb = rng() % (kMaxPricePerMb.micro() + 1) >> (rng() % 40);
    const uint64_t per_minute = rng() % (kMaxPricePerMinute.micro() + 1) >> (rng() % 40);
    const uint64_t bytes = rng() % 1'000'000'000'000'000 >> (rng() % 50);
    const uint64_t ms = rng() % (366ull * 86'400'000) >> (rng() % 30);
    auto got = Charge(Price{Micro(per_mb), Micro(per_minute)}, bytes, ms);
    auto want = RefCharge(per_mb, per_minute, bytes, ms);
    ASSERT_EQ(got.has_value(), want.has_value());
    if (got) {
      ASSERT_EQ(got->micro(), *want);
    }
  }
}

}  // namespace
}  // namespace dvpn::payments::testing
