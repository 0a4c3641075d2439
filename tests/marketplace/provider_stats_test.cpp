// ProviderStats (measurements kept in SQLite), Score / RankOffers and ProviderChooser
// (docs/marketplace.md §3).

#include "marketplace/provider_stats.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "tests/support/subprocess.h"

namespace dvpn::marketplace {
namespace {

using dvpn::testing::TempDir;
using payments::LedgerId;
using payments::PrivateKey;

constexpr uint64_t kNow = 1'900'000'000;

LedgerId Ledger(uint8_t b) {
  LedgerId id;
  id.bytes.fill(b);
  return id;
}

PrivateKey KeyOf(uint8_t n) {
  ByteArray<32> secret{};
  secret[31] = n;
  secret[0] = 0x11;
  return *PrivateKey::FromBytes(secret);
}

ProviderKey KeyBytes(uint8_t n) { return KeyOf(n).public_key().bytes(); }

struct OfferSpec {
  uint64_t per_mb = 1000;
  uint64_t per_minute = 0;
  uint32_t capacity = 100;
  std::string region = "eu-west";
  uint32_t offer_id = 1;
  uint64_t seq = 1;
  uint64_t issued = kNow - 100;
  uint64_t expires = kNow + 3600;
  bool retired = false;
  LedgerId ledger = Ledger(0xaa);
  uint8_t modes = kModeSocks;  // anything else: format 2
};

std::shared_ptr<const Offer> MakeOffer(const PrivateKey& key, const OfferSpec& s) {
  Offer o;
  o.ledger = s.ledger;
  o.offer_id = s.offer_id;
  o.seq = s.seq;
  o.issued_unix = s.issued;
  o.expires_unix = s.expires;
  o.retired = s.retired;
  if (!s.retired) {
    o.tunnel_key.fill(0xa4);
    o.price_per_mb = Amount::FromMicro(s.per_mb);
    o.price_per_minute = Amount::FromMicro(s.per_minute);
    o.capacity_mbps = s.capacity;
    o.max_sessions = 8;
    o.region = s.region;
    o.endpoints = {{"exit.example.net", 7443}};
  }
  if (s.modes != kModeSocks) {
    o.format = 2;
    o.modes = s.modes;
  }
  SignOffer(o, key);
  EXPECT_TRUE(CheckFields(o).has_value());
  EXPECT_TRUE(VerifyOfferSignature(o, OfferDigest(o)));
  return std::make_shared<const Offer>(std::move(o));
}

std::string WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
  return path;
}

// Every offer `chooser` yields at kNow, in order.
std::vector<std::shared_ptr<const Offer>> Drain(ProviderChooser chooser) {
  std::vector<std::shared_ptr<const Offer>> out;
  for (auto o = chooser.Next(kNow); o; o = chooser.Next(kNow)) out.push_back(o);
  return out;
}

// --- Score ---

TEST(ProviderScore, NothingMeasured) {
  auto key = KeyOf(1);
  auto o = MakeOffer(key, {.per_mb = 1000});
  // (1000 + 1) * 1 * 1 * (1 + 50/100) * 1
  EXPECT_DOUBLE_EQ(Score(*o, nullptr), 1501.5);
  // A per-minute price counts a tenth (integer division): 1000 + 2005/10 = 1200.
  auto m = MakeOffer(key, {.per_mb = 1000, .per_minute = 2005});
  EXPECT_EQ(ScorePrice(*m), 1200u);
  EXPECT_DOUBLE_EQ(Score(*m, nullptr), 1201 * 1.5);
  // Free offers still rank by what was measured: the +1.
  auto free = MakeOffer(key, {.per_mb = 0});
  EXPECT_DOUBLE_EQ(Score(*free, nullptr), 1.5);
  // The empty stats give the same.
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  EXPECT_DOUBLE_EQ(Score(*o, stats), 1501.5);
}

TEST(ProviderScore, EveryFactor) {
  auto key = KeyOf(1);
  auto o = MakeOffer(key, {.per_mb = 999});
  ProviderRecord r{.handshake_ms = 100.0,
                   .throughput_mbps = 25.0,
                   .succeeded = 3,
                   .failed = 1,
                   .overcharges = 1};
  // price 1000, latency 1 + 100/200 = 1.5, reliability 1 + 4*1/5 = 1.8,
  // throughput 1 + 50/25 = 3, overcharge 10.
  EXPECT_DOUBLE_EQ(Score(*o, &r), 1000 * 1.5 * 1.8 * 3 * 10);

  // Throughput below 1 Mbit/s counts as 1: 1 + 50 = 51.
  ProviderRecord slow{.throughput_mbps = 0.25};
  EXPECT_DOUBLE_EQ(Score(*o, &slow), 1000 * 51.0);
  // Only failures: 1 + 4 * 2/3.
  ProviderRecord failing{.failed = 2};
  EXPECT_DOUBLE_EQ(Score(*o, &failing), 1000 * (1 + 8.0 / 3) * 1.5);
  // Overcharges stop counting at 6: 10^6.
  ProviderRecord cheat{.overcharges = 9};
  EXPECT_DOUBLE_EQ(Score(*o, &cheat), 1000 * 1.5 * 1e6);
  ProviderRecord cheat6{.overcharges = 6};
  EXPECT_DOUBLE_EQ(Score(*o, &cheat6), Score(*o, &cheat));
  // A record with only counts: latency and throughput as never measured.
  ProviderRecord ok{.succeeded = 5};
  EXPECT_DOUBLE_EQ(Score(*o, &ok), 1000 * 1.5);
}

TEST(ProviderScore, HighestPricesStayFinite) {
  auto key = KeyOf(1);
  auto o = MakeOffer(key, {.per_mb = kMaxOfferPrice, .per_minute = kMaxOfferPrice});
  ProviderRecord worst{.handshake_ms = kMaxHandshakeMs,
                       .throughput_mbps = 0.0,
                       .failed = UINT64_MAX / 2,
                       .overcharges = UINT64_MAX};
  const double s = Score(*o, &worst);
  EXPECT_TRUE(std::isfinite(s));
  EXPECT_GT(s, Score(*o, nullptr));
}

// --- Stats ---

TEST(ProviderStats, EwmaAndCounters) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  const ProviderKey p = KeyBytes(1);
  EXPECT_FALSE(stats.Get(p));
  ASSERT_TRUE(stats.RecordHandshake(p, 100));
  EXPECT_DOUBLE_EQ(*stats.Get(p)->handshake_ms, 100);  // first sample as is
  EXPECT_FALSE(stats.Get(p)->throughput_mbps);
  ASSERT_TRUE(stats.RecordHandshake(p, 200));
  EXPECT_DOUBLE_EQ(*stats.Get(p)->handshake_ms, 0.3 * 200 + 0.7 * 100);
  ASSERT_TRUE(stats.RecordHandshake(p, 0));
  EXPECT_DOUBLE_EQ(*stats.Get(p)->handshake_ms, 0.7 * 130);

  ASSERT_TRUE(stats.RecordThroughput(p, 50));
  ASSERT_TRUE(stats.RecordThroughput(p, 150));
  EXPECT_DOUBLE_EQ(*stats.Get(p)->throughput_mbps, 0.3 * 150 + 0.7 * 50);

  clock.Advance(10);
  ASSERT_TRUE(stats.RecordSessionOk(p));
  ASSERT_TRUE(stats.RecordSessionOk(p));
  ASSERT_TRUE(stats.RecordSessionFailed(p));
  ASSERT_TRUE(stats.RecordOvercharge(p));
  auto r = *stats.Get(p);
  EXPECT_EQ(r.succeeded, 2u);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.overcharges, 1u);
  EXPECT_EQ(r.last_seen_unix, kNow + 10);
  EXPECT_EQ(stats.size(), 1u);
}

TEST(ProviderStats, BadSamplesAreRefused) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  const ProviderKey p = KeyBytes(1);
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    auto h = stats.RecordHandshake(p, bad);
    ASSERT_FALSE(h);
    EXPECT_EQ(h.error().code, StatsErrc::kInvalidArgument);
    auto t = stats.RecordThroughput(p, bad);
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code, StatsErrc::kInvalidArgument);
  }
  EXPECT_FALSE(stats.Get(p));  // nothing recorded
  // Huge samples are clamped.
  ASSERT_TRUE(stats.RecordHandshake(p, 1e300));
  EXPECT_DOUBLE_EQ(*stats.Get(p)->handshake_ms, kMaxHandshakeMs);
  ASSERT_TRUE(stats.RecordThroughput(p, 1e300));
  EXPECT_DOUBLE_EQ(*stats.Get(p)->throughput_mbps, kMaxThroughputMbps);
}

TEST(ProviderStats, PersistsAcrossReopen) {
  TempDir dir;
  const std::string path = dir.File("stats.db");
  ManualClock clock(kNow);
  const ProviderKey a = KeyBytes(1), b = KeyBytes(2);
  ProviderRecord ra, rb;
  {
    auto stats = ProviderStats::Open(path, clock);
    ASSERT_TRUE(stats) << stats.error().message;
    ASSERT_TRUE(stats->RecordHandshake(a, 120.5));
    ASSERT_TRUE(stats->RecordHandshake(a, 80.25));
    ASSERT_TRUE(stats->RecordThroughput(a, 93.75));
    ASSERT_TRUE(stats->RecordSessionOk(a));
    clock.Advance(7);
    ASSERT_TRUE(stats->RecordSessionFailed(b));
    ASSERT_TRUE(stats->RecordOvercharge(b));
    ra = *stats->Get(a);
    rb = *stats->Get(b);
  }
  clock.Advance(100);
  {
    auto stats = ProviderStats::Open(path, clock);
    ASSERT_TRUE(stats) << stats.error().message;
    EXPECT_EQ(stats->size(), 2u);
    EXPECT_EQ(*stats->Get(a), ra);  // doubles bit for bit
    EXPECT_EQ(*stats->Get(b), rb);
    EXPECT_EQ(rb.last_seen_unix, kNow + 7);
    EXPECT_FALSE(rb.handshake_ms);
    ASSERT_TRUE(stats->RecordSessionOk(b));
  }
  auto stats = ProviderStats::Open(path, clock);
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_EQ(stats->Get(b)->succeeded, 1u);
  EXPECT_EQ(stats->Get(b)->last_seen_unix, kNow + 107);
}

std::vector<ProviderKey> ManyKeys(size_t n) {
  // Bytes only (no curve point needed for stats keys): fast.
  std::vector<ProviderKey> keys(n);
  for (size_t i = 0; i < n; ++i) {
    keys[i].fill(0x5a);
    for (int b = 0; b < 8; ++b) keys[i][b] = static_cast<uint8_t>(i >> (8 * b));
  }
  return keys;
}

TEST(ProviderStats, BoundDropsLeastRecentlySeen) {
  TempDir dir;
  const std::string path = dir.File("stats.db");
  ManualClock clock(kNow);
  const auto keys = ManyKeys(120);
  {
    auto stats = ProviderStats::Open(path, clock, {.max_providers = 50});
    ASSERT_TRUE(stats) << stats.error().message;
    for (size_t i = 0; i < 100; ++i) ASSERT_TRUE(stats->RecordSessionOk(keys[i]));
    EXPECT_EQ(stats->size(), 50u);
    EXPECT_FALSE(stats->Get(keys[49]));
    EXPECT_TRUE(stats->Get(keys[50]));
    // Seeing keys[50] again makes keys[51] the least recent (same clock second: order counts).
    ASSERT_TRUE(stats->RecordHandshake(keys[50], 10));
    ASSERT_TRUE(stats->RecordSessionOk(keys[100]));
    EXPECT_TRUE(stats->Get(keys[50]));
    EXPECT_FALSE(stats->Get(keys[51]));
    EXPECT_EQ(stats->size(), 50u);
  }
  {
    // The order survives a restart.
    auto stats = ProviderStats::Open(path, clock, {.max_providers = 50});
    ASSERT_TRUE(stats) << stats.error().message;
    EXPECT_EQ(stats->size(), 50u);
    ASSERT_TRUE(stats->RecordSessionOk(keys[101]));
    EXPECT_FALSE(stats->Get(keys[52]));
    EXPECT_TRUE(stats->Get(keys[50]));
    EXPECT_TRUE(stats->Get(keys[53]));
  }
  {
    // A smaller bound trims the file on open, least recent first.
    auto stats = ProviderStats::Open(path, clock, {.max_providers = 3});
    ASSERT_TRUE(stats) << stats.error().message;
    EXPECT_EQ(stats->size(), 3u);
    EXPECT_TRUE(stats->Get(keys[50]));
    EXPECT_TRUE(stats->Get(keys[100]));
    EXPECT_TRUE(stats->Get(keys[101]));
  }
  auto stats = ProviderStats::Open(path, clock, {.max_providers = 50});
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_EQ(stats->size(), 3u);
}

TEST(ProviderStats, DefaultBoundIsTenThousand) {
  ManualClock clock(kNow);
  const auto keys = ManyKeys(kDefaultMaxProviders + 5);
  auto mem = ProviderStats::InMemory(clock);
  EXPECT_EQ(mem.max_providers(), 10'000u);
  for (const auto& k : keys) ASSERT_TRUE(mem.RecordSessionFailed(k));
  EXPECT_EQ(mem.size(), 10'000u);
  for (size_t i = 0; i < 5; ++i) EXPECT_FALSE(mem.Get(keys[i]));
  EXPECT_TRUE(mem.Get(keys[5]));

  // And on file (one transaction per record; WAL without fsync per commit keeps it quick).
  TempDir dir;
  {
    auto stats = ProviderStats::Open(dir.File("stats.db"), clock);
    ASSERT_TRUE(stats) << stats.error().message;
    EXPECT_EQ(stats->max_providers(), 10'000u);
    for (const auto& k : keys) ASSERT_TRUE(stats->RecordSessionFailed(k));
    EXPECT_EQ(stats->size(), 10'000u);
  }
  auto stats = ProviderStats::Open(dir.File("stats.db"), clock);
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_EQ(stats->size(), 10'000u);
  EXPECT_FALSE(stats->Get(keys[4]));
  EXPECT_EQ(stats->Get(keys.back())->failed, 1u);
}

TEST(ProviderStats, UnusableFilesGiveErrors) {
  TempDir dir;
  ManualClock clock(kNow);
  auto expect_storage_error = [&](const std::string& path) {
    auto stats = ProviderStats::Open(path, clock);
    ASSERT_FALSE(stats) << path;
    EXPECT_EQ(stats.error().code, StatsErrc::kStorage) << path;
    EXPECT_FALSE(stats.error().message.empty());
  };
  // Not a database.
  std::string garbage;
  for (int i = 0; i < 500; ++i) garbage += "this is not a database file. ";
  const std::string bad = WriteFile(dir.File("garbage.db"), garbage);
  expect_storage_error(bad);
  EXPECT_EQ(dvpn::testing::ReadFile(bad), garbage);  // left as it was
  // A directory, and a missing directory.
  ::mkdir(dir.File("a-dir").c_str(), 0700);
  expect_storage_error(dir.File("a-dir"));
  expect_storage_error(dir.File("missing/stats.db"));
  // Someone else's database.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(dir.File("other.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)", nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  expect_storage_error(dir.File("other.db"));
  // Caller errors.
  auto empty = ProviderStats::Open("", clock);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, StatsErrc::kInvalidArgument);
  auto zero = ProviderStats::Open(dir.File("z.db"), clock, {.max_providers = 0});
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, StatsErrc::kInvalidArgument);
}

TEST(ProviderStats, InvalidRowsAndNewerSchemaGiveErrors) {
  TempDir dir;
  ManualClock clock(kNow);
  auto make = [&](const std::string& name, const char* sql) {
    const std::string path = dir.File(name);
    {
      auto stats = ProviderStats::Open(path, clock);
      EXPECT_TRUE(stats);
      EXPECT_TRUE(stats->RecordSessionOk(KeyBytes(1)));
    }
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
    auto stats = ProviderStats::Open(path, clock);
    EXPECT_FALSE(stats) << name;
    if (!stats) {
      EXPECT_EQ(stats.error().code, StatsErrc::kStorage) << stats.error().message;
    }
  };
  make("short-key.db", "INSERT INTO providers VALUES (x'0102', NULL, NULL, 0, 0, 0, 1, 99)");
  make("negative.db", "UPDATE providers SET failed = -1");
  make("nan.db", "UPDATE providers SET handshake_ms = 'fast'");
  make("too-big.db", "UPDATE providers SET throughput_mbps = 1e300");
  make("newer.db", "UPDATE meta SET value = 99 WHERE key = 'schema_version'");
  make("foreign.db", "UPDATE meta SET value = 'something.else' WHERE key = 'format'");
}

TEST(ProviderStats, DamagedFileNeverCrashes) {
  TempDir dir;
  ManualClock clock(kNow);
  const std::string path = dir.File("stats.db");
  {
    auto stats = ProviderStats::Open(path, clock);
    ASSERT_TRUE(stats);
    for (const auto& k : ManyKeys(300)) ASSERT_TRUE(stats->RecordHandshake(k, 42));
  }
  // Fold the WAL in so the main file holds everything, then damage it in many ways.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "PRAGMA journal_mode = DELETE", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  const std::string good = dvpn::testing::ReadFile(path);
  ASSERT_GT(good.size(), 4096u);
  std::mt19937_64 rng(7);
  for (int round = 0; round < 40; ++round) {
    std::string bytes = good;
    if (round % 4 == 0) {
      bytes.resize(rng() % bytes.size());  // truncated
    } else {
      for (int i = 0; i < 16; ++i) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    const std::string damaged = WriteFile(dir.File("damaged-" + std::to_string(round)), bytes);
    auto stats = ProviderStats::Open(damaged, clock);
    if (stats) {
      // What loaded is within the rules; recording still works or fails cleanly.
      EXPECT_LE(stats->size(), 300u);
      (void)stats->RecordSessionOk(KeyBytes(1));
    } else {
      EXPECT_EQ(stats.error().code, StatsErrc::kStorage);
    }
  }
}

// --- Ranking ---

TEST(RankOffers, ByScoreThenPriceThenKey) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  auto k1 = KeyOf(1), k2 = KeyOf(2), k3 = KeyOf(3), k4 = KeyOf(4);
  // Two providers at the same price and no measurements: a tie, broken by key bytes.
  auto a = MakeOffer(k1, {.per_mb = 500});
  auto b = MakeOffer(k2, {.per_mb = 500});
  // Same score (3000) as c below, lower price: price 999 with latency 2 (200 ms).
  auto c = MakeOffer(k3, {.per_mb = 1999});
  auto d = MakeOffer(k4, {.per_mb = 999});
  ASSERT_TRUE(stats.RecordHandshake(k4.public_key().bytes(), 200));
  ASSERT_DOUBLE_EQ(Score(*c, stats), Score(*d, stats));
  // Cheap but an overcharger: last.
  auto e = MakeOffer(KeyOf(5), {.per_mb = 400});  // 401 * 1.5 * 10 > 3000
  ASSERT_TRUE(stats.RecordOvercharge(KeyOf(5).public_key().bytes()));

  auto ranked = RankOffers({e, d, nullptr, c, b, a}, stats);
  ASSERT_EQ(ranked.size(), 5u);
  const bool k1_first = k1.public_key().bytes() < k2.public_key().bytes();
  EXPECT_EQ(ranked[0], k1_first ? a : b);
  EXPECT_EQ(ranked[1], k1_first ? b : a);
  EXPECT_EQ(ranked[2], d);
  EXPECT_EQ(ranked[3], c);
  EXPECT_EQ(ranked[4], e);
  // Order of the input does not matter.
  EXPECT_EQ(RankOffers({a, b, c, d, e}, stats), ranked);
}

// --- The chooser ---

TEST(ProviderChooser, FailsOverInScoreOrder) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  auto k1 = KeyOf(1), k2 = KeyOf(2), k3 = KeyOf(3);
  auto p1 = k1.public_key().bytes(), p2 = k2.public_key().bytes();
  auto cheap = MakeOffer(k1, {.per_mb = 100, .offer_id = 1});
  auto cheap_second_slot = MakeOffer(k1, {.per_mb = 150, .offer_id = 2});
  auto mid = MakeOffer(k2, {.per_mb = 300});
  auto dear = MakeOffer(k3, {.per_mb = 2000});
  auto too_dear = MakeOffer(KeyOf(4), {.per_mb = 2001});
  auto other_ledger = MakeOffer(KeyOf(5), {.per_mb = 1, .ledger = Ledger(0xbb)});
  auto retired = MakeOffer(KeyOf(6), {.seq = 2, .retired = true});
  auto expired = MakeOffer(KeyOf(7), {.per_mb = 1, .expires = kNow});
  auto future = MakeOffer(KeyOf(8), {.per_mb = 1, .issued = kNow + 500, .expires = kNow + 900});

  ChoicePolicy policy{.ledger = Ledger(0xaa), .max_price_per_mb = Amount::FromMicro(2000)};
  ProviderChooser chooser(
      policy,
      {too_dear, dear, other_ledger, retired, expired, future, mid, cheap_second_slot, cheap},
      stats);
  EXPECT_EQ(chooser.Next(kNow), cheap);
  ASSERT_TRUE(chooser.Failed(p1, FailReason::kOvercharge));
  EXPECT_EQ(stats.Get(p1)->overcharges, 1u);
  EXPECT_EQ(stats.Get(p1)->failed, 1u);
  // k1's other offer now scores 151 * 1.5 * 3 * 10 > mid's and dear's.
  EXPECT_EQ(chooser.Next(kNow), mid);
  ASSERT_TRUE(chooser.Failed(p2, FailReason::kConnectFailed));
  EXPECT_EQ(stats.Get(p2)->failed, 1u);
  EXPECT_EQ(stats.Get(p2)->overcharges, 0u);
  EXPECT_EQ(chooser.Next(kNow), dear);
  ASSERT_TRUE(chooser.Failed(k3.public_key().bytes(), FailReason::kHandshakeRefused));
  EXPECT_EQ(chooser.Next(kNow), cheap_second_slot);
  EXPECT_EQ(chooser.Next(kNow), nullptr);
  EXPECT_EQ(chooser.Next(kNow), nullptr);
}

TEST(ProviderChooser, PolicyFilters) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  auto k1 = KeyOf(1), k2 = KeyOf(2), k3 = KeyOf(3);
  auto eu = MakeOffer(k1, {.per_mb = 100, .capacity = 50, .region = "eu-west"});
  auto us = MakeOffer(k2, {.per_mb = 100, .capacity = 500, .region = "us-east"});
  auto per_minute = MakeOffer(k3, {.per_mb = 10, .per_minute = 5000, .capacity = 500});
  const std::vector<std::shared_ptr<const Offer>> all = {eu, us, per_minute};
  auto drain = [&](const ChoicePolicy& p) { return Drain(ProviderChooser(p, all, stats)); };
  using V = std::vector<std::shared_ptr<const Offer>>;
  ChoicePolicy base{.ledger = Ledger(0xaa), .max_price_per_mb = Amount::FromMicro(100)};
  // eu and us tie at 101 * 1.5 (broken by key); per_minute is 10 + 5000/10 = 510.
  const bool k1_first = k1.public_key().bytes() < k2.public_key().bytes();
  EXPECT_EQ(drain(base), (k1_first ? V{eu, us, per_minute} : V{us, eu, per_minute}));
  auto p = base;
  p.max_price_per_minute = Amount::FromMicro(4999);
  EXPECT_EQ(drain(p).size(), 2u);
  p.region = "us-east";
  EXPECT_EQ(drain(p), V{us});
  p = base;
  p.min_capacity_mbps = 100;
  EXPECT_EQ(drain(p), (V{us, per_minute}));
  p = base;
  p.provider = k1.public_key().bytes();
  EXPECT_EQ(drain(p), V{eu});
  p = base;
  p.max_price_per_mb = Amount::FromMicro(99);
  EXPECT_EQ(drain(p), V{per_minute});
  p.max_price_per_mb = Amount::FromMicro(9);
  EXPECT_TRUE(drain(p).empty());

  // The book query asks for the same.
  auto q = QueryFor(base);
  EXPECT_EQ(q.max_price_per_mb, Amount::FromMicro(100));
  EXPECT_TRUE(q.region.empty());
  EXPECT_EQ(q.required_modes, kModeSocks);
}

// A client connects in one mode: SOCKS by default, so an offer that serves only full tunnel is
// never a candidate; a full-tunnel client takes only offers that serve it.
TEST(ProviderChooser, OnlyOffersThatServeTheClientsMode) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  auto socks = MakeOffer(KeyOf(1), {.per_mb = 100});
  auto both = MakeOffer(KeyOf(2), {.per_mb = 200, .modes = kModeSocks | kModeFullTunnel});
  auto full = MakeOffer(KeyOf(3), {.per_mb = 300, .modes = kModeFullTunnel});
  const std::vector<std::shared_ptr<const Offer>> all = {full, both, socks};
  auto drain = [&](const ChoicePolicy& p) { return Drain(ProviderChooser(p, all, stats)); };
  using V = std::vector<std::shared_ptr<const Offer>>;
  ChoicePolicy p{.ledger = Ledger(0xaa), .max_price_per_mb = Amount::FromMicro(1000)};
  EXPECT_EQ(p.required_modes, kModeSocks);
  EXPECT_EQ(drain(p), (V{socks, both}));
  p.required_modes = kModeFullTunnel;
  EXPECT_EQ(drain(p), (V{both, full}));
  EXPECT_EQ(QueryFor(p).required_modes, kModeFullTunnel);
  p.required_modes = 0;
  EXPECT_EQ(drain(p), (V{socks, both, full}));
}

TEST(ProviderChooser, NewestVersionOfASlotAndExpiryDuringTheChoice) {
  ManualClock clock(kNow);
  auto stats = ProviderStats::InMemory(clock);
  auto k1 = KeyOf(1), k2 = KeyOf(2);
  auto v1 = MakeOffer(k1, {.per_mb = 100, .seq = 1});
  auto v2 = MakeOffer(k1, {.per_mb = 200, .seq = 2});
  auto retired_slot_live = MakeOffer(k2, {.per_mb = 1, .seq = 1});
  auto retired_slot = MakeOffer(k2, {.seq = 2, .retired = true});
  auto short_lived = MakeOffer(KeyOf(3), {.per_mb = 300, .expires = kNow + 10});
  ChoicePolicy policy{.ledger = Ledger(0xaa), .max_price_per_mb = Amount::FromMicro(1000)};
  ProviderChooser chooser(policy, {v1, retired_slot_live, short_lived, v2, retired_slot, v1},
                          stats);
  EXPECT_EQ(chooser.Next(kNow), v2);            // the newest version, once; the retired slot never
  EXPECT_EQ(chooser.Next(kNow + 10), nullptr);  // short_lived expired meanwhile
}

// --- Property: random offers and policies ---

struct Model {
  ChoicePolicy policy;
  bool Eligible(const Offer& o, uint64_t now) const {
    return o.ledger == policy.ledger && !o.retired && o.expires_unix > now &&
           o.issued_unix <= now + 120 && o.price_per_mb <= policy.max_price_per_mb &&
           (!policy.max_price_per_minute || o.price_per_minute <= *policy.max_price_per_minute) &&
           (policy.region.empty() || o.region == policy.region) &&
           o.capacity_mbps >= policy.min_capacity_mbps &&
           (o.modes & policy.required_modes) == policy.required_modes &&
           (!policy.provider || *policy.provider == o.provider);
  }
};

TEST(ProviderChooser, PropertyNeverIneligibleEveryEligibleOnceInScoreOrder) {
  std::mt19937_64 rng(20240605);
  auto pick = [&](uint64_t n) { return rng() % n; };
  // Modes from a stream of their own, so the rest of the draw stays what it was before them.
  std::mt19937_64 modes_rng(16);
  auto pick_modes = [&](uint64_t n) { return modes_rng() % n; };
  std::vector<PrivateKey> keys;
  for (uint8_t i = 1; i <= 6; ++i) keys.push_back(KeyOf(i));
  const std::vector<std::string> regions = {"", "eu-west", "us-east"};
  ManualClock clock(kNow);
  size_t total_yielded = 0, total_failed_over = 0, long_choices = 0;

  for (int iter = 0; iter < 460; ++iter) {
    auto stats = ProviderStats::InMemory(clock);
    for (const auto& k : keys) {
      const auto p = k.public_key().bytes();
      if (pick(2)) {
        ASSERT_TRUE(stats.RecordHandshake(p, static_cast<double>(pick(500))));
      }
      if (pick(2)) {
        ASSERT_TRUE(stats.RecordThroughput(p, static_cast<double>(pick(300))));
      }
      for (uint64_t n = pick(3); n > 0; --n) ASSERT_TRUE(stats.RecordSessionOk(p));
      for (uint64_t n = pick(3); n > 0; --n) ASSERT_TRUE(stats.RecordSessionFailed(p));
      if (pick(8) == 0) {
        ASSERT_TRUE(stats.RecordOvercharge(p));
      }
    }
    const uint64_t start = kNow;
    std::vector<std::shared_ptr<const Offer>> offers;
    for (uint64_t n = pick(20); n > 0; --n) {
      OfferSpec s;
      s.ledger = pick(8) == 0 ? Ledger(0xbb) : Ledger(0xaa);
      s.offer_id = static_cast<uint32_t>(pick(3));
      s.seq = 1 + pick(4);
      s.issued = pick(10) == 0 ? start + 121 + pick(300) : start - pick(600);
      s.expires = s.issued + 1 + pick(pick(2) ? 1500 : 86400);
      s.retired = pick(10) == 0;
      s.per_mb = pick(3000);
      s.per_minute = pick(3) == 0 ? pick(20000) : 0;
      s.capacity = static_cast<uint32_t>(pick(1000));
      s.region = regions[pick(regions.size())];
      // Mostly SOCKS only (format 1), as today's offers.
      s.modes = static_cast<uint8_t>(pick_modes(8) == 0 ? 2 + pick_modes(2) : kModeSocks);
      offers.push_back(MakeOffer(keys[pick(keys.size())], s));
    }
    Model model;
    model.policy.ledger = Ledger(0xaa);
    model.policy.max_price_per_mb = Amount::FromMicro(pick(3500));
    if (pick(2)) model.policy.max_price_per_minute = Amount::FromMicro(pick(20000));
    model.policy.region = pick(2) ? "" : regions[pick(regions.size())];
    model.policy.min_capacity_mbps = static_cast<uint32_t>(pick(2) ? pick(800) : 0);
    if (pick(5) == 0) model.policy.provider = keys[pick(keys.size())].public_key().bytes();
    model.policy.required_modes =
        static_cast<uint8_t>(pick_modes(8) == 0 ? pick_modes(4) : kModeSocks);
    const bool time_moves = pick(2);

    // The model's candidates: the newest version of each slot.
    std::map<std::pair<ProviderKey, uint32_t>, std::shared_ptr<const Offer>> slots;
    for (const auto& o : offers) {
      auto& held = slots[{o->provider, o->offer_id}];
      // Equal seq (an equivocating provider): the smaller signature, whatever the order given.
      if (!held || held->seq < o->seq || (held->seq == o->seq && o->signature < held->signature)) {
        held = o;
      }
    }
    std::vector<std::shared_ptr<const Offer>> pool;
    for (auto& [slot, o] : slots) pool.push_back(o);
    size_t eligible_at_start = 0;
    for (const auto& o : pool) eligible_at_start += model.Eligible(*o, start);

    std::vector<std::shared_ptr<const Offer>> shuffled = offers;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    ProviderChooser chooser(model.policy, shuffled, stats);
    uint64_t now = start;
    std::set<std::pair<ProviderKey, uint32_t>> yielded;
    for (int step = 0; step < 64; ++step) {
      // What the model expects now: the lowest (score, price, key, id) not yet yielded.
      std::shared_ptr<const Offer> expected;
      for (const auto& o : pool) {
        if (yielded.count({o->provider, o->offer_id}) || !model.Eligible(*o, now)) continue;
        if (!expected) {
          expected = o;
          continue;
        }
        const double so = Score(*o, stats), se = Score(*expected, stats);
        const uint64_t po = o->price_per_mb.micro() + o->price_per_minute.micro() / 10;
        const uint64_t pe =
            expected->price_per_mb.micro() + expected->price_per_minute.micro() / 10;
        if (std::tie(so, po, o->provider, o->offer_id) <
            std::tie(se, pe, expected->provider, expected->offer_id)) {
          expected = o;
        }
      }
      auto got = chooser.Next(now);
      auto describe = [&](const std::shared_ptr<const Offer>& o) {
        if (!o) return std::string("none");
        return ToHex(o->provider).substr(0, 8) + "/" + std::to_string(o->offer_id) + " seq " +
               std::to_string(o->seq) + " mb " + o->price_per_mb.ToString() + " min " +
               o->price_per_minute.ToString() + " cap " + std::to_string(o->capacity_mbps) +
               " region " + o->region + " issued " + std::to_string(o->issued_unix) + " expires " +
               std::to_string(o->expires_unix) + " retired " + std::to_string(o->retired) +
               " score " + std::to_string(Score(*o, stats));
      };
      ASSERT_EQ(got, expected) << "iteration " << iter << " step " << step << " now " << now
                               << "\n got " << describe(got) << "\n expected "
                               << describe(expected);
      if (!got) break;
      ASSERT_TRUE(model.Eligible(*got, now));
      ASSERT_LE(got->price_per_mb, model.policy.max_price_per_mb);
      ASSERT_TRUE(yielded.insert({got->provider, got->offer_id}).second) << "yielded twice";
      ++total_yielded;
      const uint64_t verdict = pick(5);
      total_failed_over += verdict <= 2;
      switch (verdict) {
        case 0:
          ASSERT_TRUE(chooser.Failed(got->provider, FailReason::kConnectFailed));
          break;
        case 1:
          ASSERT_TRUE(chooser.Failed(got->provider, FailReason::kHandshakeRefused));
          break;
        case 2:
          ASSERT_TRUE(chooser.Failed(got->provider, FailReason::kOvercharge));
          break;
        case 3:
          ASSERT_TRUE(chooser.Succeeded(got->provider));
          break;
        default:
          break;  // asked again without a verdict
      }
      if (time_moves) now += pick(400);
    }
    long_choices += yielded.size() >= 3;
    if (!time_moves) {
      EXPECT_EQ(yielded.size(), eligible_at_start) << "iteration " << iter;
    }
  }
  // The generator really exercised the chooser. The counts vary from run to run (the offers'
  // BIP-340 signatures are randomized, and they break ties between versions of equal seq): 40
  // runs gave 406..537 yielded, 48..87 long choices, 245..320 failovers (460 iterations: the
  // modes leave fewer offers eligible than before them); the bars sit well below (a bar at 400
  // yielded failed about one run in 20).
  EXPECT_GT(total_yielded, 300u);
  EXPECT_GT(long_choices, 40u);
  EXPECT_GT(total_failed_over, 200u);
}

}  // namespace
}  // namespace dvpn::marketplace
