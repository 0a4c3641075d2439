// The exit's inner address pool: distinct addresses inside both pools, never the network, the
// exit's own or the IPv4 broadcast address, next-fit reuse, and a random acquire/release
// sequence checked against a reference set.

#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "tunnel/inner_pool.h"

namespace dvpn::tunnel {
namespace {

IpPrefix P(const char* text) { return IpPrefix::Parse(text).value(); }
IpAddress A(const char* text) { return IpAddress::Parse(text).value(); }

TEST(IpPrefix, NetworkAndContains) {
  EXPECT_EQ(P("10.231.7.1/16").Network().ToString(), "10.231.0.0/16");
  EXPECT_EQ(P("fd00:231::77/64").Network().ToString(), "fd00:231::/64");
  EXPECT_EQ(P("10.1.2.3/0").Network().ToString(), "0.0.0.0/0");
  EXPECT_TRUE(P("10.231.0.0/16").Contains(A("10.231.255.255")));
  EXPECT_FALSE(P("10.231.0.0/16").Contains(A("10.232.0.1")));
  EXPECT_FALSE(P("10.231.0.0/16").Contains(A("fd00::1")));
  EXPECT_TRUE(P("fd00:231::/64").Contains(A("fd00:231::ffff:1")));
  EXPECT_FALSE(P("fd00:231::/64").Contains(A("fd00:232::1")));
}

TEST(InnerAddressPool, HandsOutPairsAfterTheExitsOwnAddresses) {
  auto pool = InnerAddressPool::Make(P("10.231.0.0/16"), P("fd00:231::/64"));
  ASSERT_TRUE(pool) << pool.error().message;
  EXPECT_EQ(pool->exit_v4().ToString(), "10.231.0.1/16");
  EXPECT_EQ(pool->exit_v6().ToString(), "fd00:231::1/64");
  EXPECT_EQ(pool->capacity(), 65533u);  // 2^16 less network, exit and broadcast
  auto a = pool->Acquire();
  auto b = pool->Acquire();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->v4, A("10.231.0.2"));
  EXPECT_EQ(a->v6, A("fd00:231::2"));
  EXPECT_EQ(b->v4, A("10.231.0.3"));
  EXPECT_EQ(b->v6, A("fd00:231::3"));
  EXPECT_TRUE(pool->Leased(A("10.231.0.2")));
  EXPECT_TRUE(pool->Leased(A("fd00:231::3")));
  EXPECT_FALSE(pool->Leased(A("10.231.0.1")));
  // Released addresses come back only after the rest of the pool (next-fit).
  ASSERT_TRUE(pool->Release(*a));
  auto c = pool->Acquire();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->v4, A("10.231.0.4"));
  auto twice = pool->Release(*a);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, PoolErrc::kNotLeased);
  EXPECT_FALSE(pool->Release(InnerLease{A("10.231.0.3"), A("fd00:231::9")}))
      << "a lease is released whole, as it was given";
  EXPECT_FALSE(pool->Release(InnerLease{A("192.0.2.1"), A("fd00:231::3")}));
}

TEST(InnerAddressPool, RefusesBadPoolsAndRunsOutExactly) {
  EXPECT_FALSE(InnerAddressPool::Make(P("fd00::/64"), P("10.0.0.0/8")));
  EXPECT_FALSE(InnerAddressPool::Make(P("10.0.0.0/31"), P("fd00::/64")));
  EXPECT_FALSE(InnerAddressPool::Make(P("10.0.0.0/24"), P("fd00::/121")));
  auto small = InnerAddressPool::Make(P("10.9.9.0/29"), P("fd00:9::/64"));
  ASSERT_TRUE(small);
  ASSERT_EQ(small->capacity(), 5u);  // .2 .. .6 (.7 is the broadcast address)
  std::set<IpAddress> v4;
  for (int i = 0; i < 5; ++i) {
    auto l = small->Acquire();
    ASSERT_TRUE(l);
    v4.insert(l->v4);
  }
  EXPECT_EQ(v4.count(A("10.9.9.7")), 0u);
  auto none = small->Acquire();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, PoolErrc::kExhausted);
  auto capped = InnerAddressPool::Make(P("10.0.0.0/8"), P("fd00::/64"), 1000);
  ASSERT_TRUE(capped);
  EXPECT_EQ(capped->capacity(), 1000u);
}

TEST(InnerAddressPool, RandomLeasesMatchAReferenceSet) {
  auto pool = InnerAddressPool::Make(P("10.231.0.0/24"), P("fd00:231::/64"), 100);
  ASSERT_TRUE(pool);
  const size_t capacity = pool->capacity();
  std::mt19937 rng(20261207);
  std::map<IpAddress, InnerLease> live;  // by v4
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || (rng() % 2 == 0 && live.size() < capacity)) {
      auto l = pool->Acquire();
      ASSERT_TRUE(l) << step;
      ASSERT_FALSE(live.contains(l->v4)) << "handed out twice: " << l->v4.ToString();
      ASSERT_TRUE(P("10.231.0.0/24").Contains(l->v4));
      ASSERT_TRUE(P("fd00:231::/64").Contains(l->v6));
      ASSERT_NE(l->v4, A("10.231.0.0"));
      ASSERT_NE(l->v4, A("10.231.0.1"));
      ASSERT_NE(l->v4, A("10.231.0.255"));
      ASSERT_EQ(l->v4.bytes[3], l->v6.bytes[15]) << "the pair shares its offset";
      live.emplace(l->v4, *l);
    } else if (live.size() == capacity && rng() % 4 == 0) {
      ASSERT_FALSE(pool->Acquire()) << "acquired beyond capacity";
    } else {
      auto it = std::next(live.begin(), rng() % live.size());
      ASSERT_TRUE(pool->Release(it->second));
      live.erase(it);
    }
    ASSERT_EQ(pool->in_use(), live.size());
  }
}

}  // namespace
}  // namespace dvpn::tunnel

namespace dvpn::tunnel {
namespace {

TEST(InnerAddressPool, DerivedIpv6PoolIsAUniqueLocalSlash64OfTheKey) {
  ByteArray<32> key{};
  key.fill(0xa4);
  const IpPrefix p = DerivedIpv6Pool(key);
  EXPECT_EQ(p.length, 64);
  EXPECT_EQ(p.address.family, IpAddress::Family::kV6);
  EXPECT_EQ(p.address.bytes[0], 0xfd);
  EXPECT_EQ(p.Network(), p) << "subnet 0, host bits clear";
  EXPECT_EQ(DerivedIpv6Pool(key), p) << "the same key, the same pool";
  key[31] ^= 1;
  EXPECT_NE(DerivedIpv6Pool(key), p);
  EXPECT_TRUE(InnerAddressPool::Make(IpPrefix::Parse("10.231.0.0/16").value(), p));
}

}  // namespace
}  // namespace dvpn::tunnel
