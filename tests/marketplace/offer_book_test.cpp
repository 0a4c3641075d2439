// The offer book (docs/marketplace.md §2 and §1 "Memory bounds"): newest version wins,
// tombstones, bounds in total and per provider, eviction order, expiry, queries, digests and
// the change events watchers get.
#include <random>

#include <gtest/gtest.h>

#include "marketplace/offer_book.h"

namespace dvpn::marketplace {
namespace {

// Offers here are not signed: the book checks no signature (the gossip node does).
std::shared_ptr<const Offer> Make(uint8_t provider, uint32_t slot, uint64_t seq,
                                  uint64_t expires = 2'000'000'000, bool retired = false,
                                  uint64_t price = 1000, std::string region = "eu",
                                  uint32_t capacity = 100) {
  Offer o;
  o.provider.fill(provider);
  o.offer_id = slot;
  o.seq = seq;
  o.issued_unix = expires - 3600;
  o.expires_unix = expires;
  o.retired = retired;
  o.price_per_mb = Amount::FromMicro(price);
  o.region = std::move(region);
  o.capacity_mbps = capacity;
  if (!retired) {
    o.tunnel_key.fill(1);
    o.endpoints = {{"127.0.0.1", 7000}};
  }
  return std::make_shared<const Offer>(std::move(o));
}

constexpr uint64_t kNow = 1'999'990'000;

TEST(OfferBook, NewestVersionWinsAndEventsFollow) {
  OfferBook book;
  std::vector<OfferChange::Kind> events;
  book.SetListener([&](const OfferChange& c) { events.push_back(c.kind); });
  EXPECT_EQ(book.Insert(Make(1, 0, 2)), OfferBook::InsertResult::kAdded);
  EXPECT_EQ(book.Insert(Make(1, 0, 2)), OfferBook::InsertResult::kStale);
  EXPECT_EQ(book.Insert(Make(1, 0, 1)), OfferBook::InsertResult::kStale);
  EXPECT_EQ(book.Insert(Make(1, 0, 3)), OfferBook::InsertResult::kReplaced);
  EXPECT_EQ(book.SeqOf(OfferKeyOf(*Make(1, 0, 3))), 3u);
  EXPECT_EQ(book.Insert(Make(1, 0, 4, 2'000'000'000, true)), OfferBook::InsertResult::kReplaced);
  EXPECT_EQ(book.size(), 1u);
  EXPECT_EQ(book.live_count(), 0u);
  EXPECT_TRUE(book.Query({}, kNow).empty()) << "a retired offer is never shown";
  EXPECT_EQ(book.Insert(Make(1, 0, 3)), OfferBook::InsertResult::kStale)
      << "the tombstone keeps an older live version out";
  using K = OfferChange::Kind;
  EXPECT_EQ(events, (std::vector<K>{K::kAdded, K::kUpdated, K::kRemoved}));
}

TEST(OfferBook, PerProviderBoundEvictsTheOldestSlot) {
  OfferBook book({.max_offers = 100, .max_offers_per_provider = 2});
  book.Insert(Make(1, 0, 1, 2'000'000'000));
  book.Insert(Make(1, 1, 1, 2'000'000'100));
  book.Insert(Make(1, 2, 1, 2'000'000'200));
  EXPECT_EQ(book.size(), 2u);
  EXPECT_EQ(book.SeqOf(OfferKeyOf(*Make(1, 0, 1))), 0u) << "slot 0 was issued first";
  EXPECT_EQ(book.SeqOf(OfferKeyOf(*Make(1, 2, 1))), 1u);
  book.Insert(Make(2, 0, 1));
  EXPECT_EQ(book.size(), 3u) << "another provider is not held to provider 1's bound";
}

TEST(OfferBook, TotalBoundEvictsRetiredThenSoonestExpiring) {
  OfferBook book({.max_offers = 3, .max_offers_per_provider = 4});
  book.Insert(Make(1, 0, 1, 2'000'000'500));
  book.Insert(Make(2, 0, 1, 2'000'000'100));
  book.Insert(Make(3, 0, 1, 2'000'000'900, true));  // a tombstone, expiring last
  EXPECT_EQ(book.Insert(Make(4, 0, 1, 2'000'000'300)), OfferBook::InsertResult::kAdded);
  EXPECT_EQ(book.SeqOf(OfferKeyOf(*Make(3, 0, 1))), 0u) << "retired goes first";
  EXPECT_EQ(book.Insert(Make(5, 0, 1, 2'000'000'400)), OfferBook::InsertResult::kAdded);
  EXPECT_EQ(book.SeqOf(OfferKeyOf(*Make(2, 0, 1))), 0u) << "then the soonest to expire";
  EXPECT_EQ(book.Insert(Make(6, 0, 1, 2'000'000'001)), OfferBook::InsertResult::kFull)
      << "an offer that would itself be evicted first is refused";
  EXPECT_EQ(book.size(), 3u);
}

TEST(OfferBook, ExpiryAndQueries) {
  OfferBook book;
  book.Insert(Make(1, 0, 1, kNow + 10, false, 500, "eu", 100));
  book.Insert(Make(2, 0, 1, kNow + 1000, false, 1500, "eu", 1000));
  book.Insert(Make(3, 0, 1, kNow + 1000, false, 800, "us", 50));
  book.Insert(Make(4, 0, 1, kNow + 5, true));
  EXPECT_EQ(book.Query({}, kNow).size(), 3u);
  OfferQuery cheap, us, big;
  cheap.max_price_per_mb = Amount::FromMicro(800);
  us.region = "us";
  big.min_capacity_mbps = 100;
  EXPECT_EQ(book.Query(cheap, kNow).size(), 2u);
  EXPECT_EQ(book.Query(us, kNow).size(), 1u);
  EXPECT_EQ(book.Query(big, kNow).size(), 2u);
  EXPECT_EQ(book.Query({}, kNow + 10).size(), 2u) << "expired offers are not shown";
  EXPECT_EQ(book.ExpireUpTo(kNow + 10), 2u) << "the live one and the tombstone";
  EXPECT_EQ(book.size(), 2u);
}

TEST(OfferBook, DigestIsSortedAndComplete) {
  OfferBook book;
  for (uint8_t p = 1; p <= 50; ++p) book.Insert(Make(p, p % 3, p));
  book.Insert(Make(9, 9, 9, 2'000'000'000, true));
  auto d = book.Digest();
  ASSERT_EQ(d.size(), 51u);
  EXPECT_TRUE(std::is_sorted(d.begin(), d.end()));
  for (const auto& e : d) EXPECT_EQ(book.SeqOf(e.key), e.seq);
}

// Property: under random inserts, replacements, retirements and expiry the book never exceeds
// its bounds, always holds the newest version it kept of a slot, and its counts agree.
TEST(OfferBook, PropertyBoundsHoldUnderRandomOperations) {
  std::mt19937_64 rng(12345);
  OfferBookLimits limits{.max_offers = 40, .max_offers_per_provider = 3};
  OfferBook book(limits);
  std::map<OfferKey, uint64_t> highest_seen;
  uint64_t now = kNow;
  for (int step = 0; step < 20000; ++step) {
    const uint8_t provider = 1 + rng() % 30;
    const uint32_t slot = rng() % 5;
    const uint64_t seq = 1 + rng() % 20;
    const bool retired = rng() % 10 == 0;
    auto offer = Make(provider, slot, seq, now + 1 + rng() % 3000, retired);
    const OfferKey key = OfferKeyOf(*offer);
    const uint64_t before = book.SeqOf(key);
    auto r = book.Insert(offer);
    if (before >= seq) {
      ASSERT_EQ(r, OfferBook::InsertResult::kStale);
    }
    if (r == OfferBook::InsertResult::kAdded || r == OfferBook::InsertResult::kReplaced) {
      ASSERT_EQ(book.SeqOf(key), seq);
    }
    ASSERT_LE(book.size(), limits.max_offers);
    if (step % 97 == 0) book.ExpireUpTo(now += 50);
    if (step % 500 == 0) {
      std::map<ByteArray<32>, size_t> per_provider;
      size_t live = 0;
      for (const auto& e : book.Digest()) {
        auto o = book.Find(e.key);
        ASSERT_TRUE(o);
        ++per_provider[o->provider];
        live += o->retired ? 0 : 1;
        ASSERT_GT(o->expires_unix, now);
      }
      for (const auto& [p, n] : per_provider) ASSERT_LE(n, limits.max_offers_per_provider);
      ASSERT_EQ(live, book.live_count());
    }
  }
}

}  // namespace
}  // namespace dvpn::marketplace
