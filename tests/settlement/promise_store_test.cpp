// PromiseStore: durability across reopen, only-greater replacement (also as a randomized
// property), group commit from many threads, the bounded queue, refusal of files that are not
// (or are newer) promise stores, and the bookkeeping the settlement scheduler relies on.

#include "settlement/promise_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ledger/sqlite_store.h"
#include "tests/settlement/settlement_test_util.h"
#include "tests/support/subprocess.h"

namespace dvpn::payments {
namespace {

using dvpn::testing::TempDir;
using testing::Accepted;
using testing::Micro;
using testing::SubmitAndWait;

constexpr uint64_t kT0 = 1'700'000'000;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}


void Exec(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

struct Client {
  PrivateKey key = PrivateKey::Generate();
  ChannelId channel;
};

class PromiseStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 8; ++i) {
      Client c;
      c.channel = ChannelIdFor(ledger_, Address::FromPublicKey(c.key.public_key()), 1);
      clients_.push_back(std::move(c));
    }
  }

  std::unique_ptr<PromiseStore> Open(PromiseStoreOptions options = {}) {
    auto store = PromiseStore::Open(path(), clock_, options);
    EXPECT_TRUE(store) << store.error().message;
    return store ? std::move(*store) : nullptr;
  }
  std::string path() const { return dir_.File("promises.db"); }

  AcceptedPromise P(int client, uint64_t cumulative, std::optional<Amount> deposit = {},
                    std::optional<uint64_t> deadline = {}) {
    return Accepted(clients_[client].key, ledger_, clients_[client].channel, Micro(cumulative),
                    deposit, deadline);
  }

  bool SignatureValid(const StoredChannel& row) {
    return row.client_key.Verify(PromiseDigest(row.ledger, row.channel, row.cumulative),
                                 row.signature);
  }

  TempDir dir_;
  ManualClock clock_{kT0};
  LedgerId ledger_ = LedgerIdFor("promise-store-test", PrivateKey::Generate().public_key());
  std::vector<Client> clients_;
};

TEST_F(PromiseStoreTest, ReopenKeepsEverything) {
  {
    auto store = Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(SubmitAndWait(*store, P(0, 1000)));
    clock_.Advance(5);
    ASSERT_TRUE(SubmitAndWait(*store, P(0, 2500)));
    ASSERT_TRUE(SubmitAndWait(*store, P(1, 700, Micro(5000), kT0 + 9000)));
    ASSERT_TRUE(SubmitAndWait(*store, P(2, 300)));
    auto attempt = store->BeginAttempt(7, 2);
    ASSERT_TRUE(attempt) << attempt.error().message;
    ChannelUpdate settled;
    settled.channel = clients_[0].channel;
    settled.settled = Micro(2500);
    settled.outcome = "settled";
    ChannelUpdate dead;
    dead.channel = clients_[2].channel;
    dead.state = ChannelSettleState::kDead;
    dead.outcome = "channel closed";
    std::vector<ChannelUpdate> updates = {settled, dead};
    ASSERT_TRUE(store->FinishAttempt(*attempt, Micro(2500), "ok", updates));
  }
  auto store = Open();
  ASSERT_TRUE(store);
  auto row0 = store->Get(clients_[0].channel);
  ASSERT_TRUE(row0 && *row0);
  EXPECT_EQ((*row0)->cumulative, Micro(2500));
  EXPECT_EQ((*row0)->settled_known, Micro(2500));
  EXPECT_EQ((*row0)->first_received_unix, kT0);
  EXPECT_EQ((*row0)->last_received_unix, kT0 + 5);
  EXPECT_EQ((*row0)->ledger, ledger_);
  EXPECT_EQ((*row0)->client_key, clients_[0].key.public_key());
  EXPECT_EQ((*row0)->last_outcome, "settled");
  EXPECT_FALSE((*row0)->unsettled_since_unix);
  EXPECT_TRUE(SignatureValid(**row0));
  auto row1 = store->Get(clients_[1].channel);
  ASSERT_TRUE(row1 && *row1);
  EXPECT_EQ((*row1)->deposit_known, Micro(5000));
  EXPECT_EQ((*row1)->deadline_unix, kT0 + 9000);
  EXPECT_EQ((*row1)->info_checked_unix, kT0 + 5);
  EXPECT_EQ((*row1)->unsettled_since_unix, kT0 + 5);
  auto row2 = store->Get(clients_[2].channel);
  ASSERT_TRUE(row2 && *row2);
  EXPECT_EQ((*row2)->state, ChannelSettleState::kDead);
  EXPECT_FALSE(*store->Get(clients_[3].channel));

  EXPECT_EQ(store->LastNonce().value_or(0), 7u);
  auto attempts = store->Attempts(10);
  ASSERT_TRUE(attempts);
  ASSERT_EQ(attempts->size(), 1u);
  EXPECT_EQ((*attempts)[0].nonce, 7u);
  EXPECT_EQ((*attempts)[0].items, 2u);
  EXPECT_EQ((*attempts)[0].total_moved, Micro(2500));
  EXPECT_EQ((*attempts)[0].outcome, "ok");

  auto e = store->GetEarnings();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->settled, Micro(2500));
  EXPECT_EQ(e->unsettled, Micro(700));
  EXPECT_EQ(e->lost, Micro(300));
  EXPECT_EQ(e->channels, 3u);
  EXPECT_EQ(e->active, 2u);
  EXPECT_EQ(e->dead, 1u);
}

TEST_F(PromiseStoreTest, OnlyAGreaterCumulativeReplaces) {
  auto store = Open();
  ASSERT_TRUE(store);
  auto r = SubmitAndWait(*store, P(0, 100));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->stored);
  EXPECT_EQ(r->durable_cumulative, Micro(100));
  r = SubmitAndWait(*store, P(0, 50));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->stored) << "a late, smaller promise must not replace";
  EXPECT_EQ(r->durable_cumulative, Micro(100));
  r = SubmitAndWait(*store, P(0, 100));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->stored) << "a duplicate is not stored again";
  r = SubmitAndWait(*store, P(0, 150));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->stored);
  auto row = store->Get(clients_[0].channel);
  ASSERT_TRUE(row && *row);
  EXPECT_EQ((*row)->cumulative, Micro(150));
  EXPECT_TRUE(SignatureValid(**row)) << "the signature belongs to the cumulative held";
}

// Property: whatever order and interleaving promises arrive in, from many threads, each row
// holds the greatest cumulative submitted for its channel, with that promise's signature.
TEST_F(PromiseStoreTest, RandomSequencesAlwaysKeepTheMaximum) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto store = Open();
  ASSERT_TRUE(store);
  std::map<int, uint64_t> all_time;
  for (int round = 0; round < 4; ++round) {
    std::vector<std::map<int, uint64_t>> maxima(4);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(seed + 131 * round + t);
        for (int i = 0; i < 120; ++i) {
          int c = static_cast<int>(rng() % clients_.size());
          uint64_t cumulative = 1 + rng() % 100'000;
          maxima[t][c] = std::max(maxima[t][c], cumulative);
          auto ok = store->Submit(P(c, cumulative), [&](StoreResult<SubmitResult> r) {
            if (!r) ++failures;
          });
          if (!ok) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    store->Flush();
    EXPECT_EQ(failures.load(), 0);
    std::map<int, uint64_t> expected;
    for (auto& m : maxima) {
      for (auto [c, v] : m) expected[c] = std::max(expected[c], v);
    }
    // Rows also keep maxima from earlier rounds.
    for (auto [c, v] : expected) all_time[c] = std::max(all_time[c], v);
    for (auto [c, v] : all_time) {
      auto row = store->Get(clients_[c].channel);
      ASSERT_TRUE(row && *row);
      EXPECT_EQ((*row)->cumulative, Micro(v)) << "client " << c << " round " << round;
      EXPECT_TRUE(SignatureValid(**row));
    }
    if (round == 2) {  // and across a reopen
      store.reset();
      store = Open();
      ASSERT_TRUE(store);
    }
  }
}

TEST_F(PromiseStoreTest, ManyThreadsEachCallbackFiresOnceAndIsDurable) {
  constexpr int kThreads = 8, kPerThread = 100;
  std::vector<std::atomic<int>> fired(kThreads * kPerThread);
  std::atomic<int> errors{0};
  {
    auto store = Open();
    ASSERT_TRUE(store);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const int id = t * kPerThread + i;
          // Each thread owns one channel and raises it; all share the writer.
          auto ok = store->Submit(P(t, 1000 + i), [&, id](StoreResult<SubmitResult> r) {
            fired[id].fetch_add(1);
            if (!r || !r->stored) ++errors;
          });
          if (!ok) {
            ++errors;
            fired[id].fetch_add(1);
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    store->Flush();
    for (int id = 0; id < kThreads * kPerThread; ++id) {
      ASSERT_EQ(fired[id].load(), 1) << "callback " << id;
    }
    EXPECT_EQ(errors.load(), 0);
    WriterStats stats = store->writer_stats();
    EXPECT_EQ(stats.promises, uint64_t{kThreads * kPerThread});
    EXPECT_LE(stats.commits, stats.promises);
    std::printf("%llu promises in %llu group commits\n",
                static_cast<unsigned long long>(stats.promises),
                static_cast<unsigned long long>(stats.commits));
  }
  auto store = Open();
  ASSERT_TRUE(store);
  for (int t = 0; t < kThreads; ++t) {
    auto row = store->Get(clients_[t].channel);
    ASSERT_TRUE(row && *row);
    EXPECT_EQ((*row)->cumulative, Micro(1000 + kPerThread - 1));
  }
}

// Promises that wait while the writer is busy share one log append (one write, one fsync
// with Durability::kPowerLoss).
TEST_F(PromiseStoreTest, PendingPromisesShareOneCommit) {
  auto store = Open();
  ASSERT_TRUE(store);
  std::atomic<bool> writer_held{false};
  std::atomic<bool> release{false};
  std::atomic<int> fired{0};
  ASSERT_TRUE(store->Submit(P(0, 99), [&](StoreResult<SubmitResult>) {
    writer_held = true;
    for (int i = 0; i < 10'000 && !release; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }));
  ASSERT_TRUE(testing::WaitUntil([&] { return writer_held.load(); }));
  for (int i = 0; i < 60; ++i) {
    auto ok = store->Submit(P(i % 8, 100 + i), [&](StoreResult<SubmitResult> r) {
      EXPECT_TRUE(r) << r.error().message;
      ++fired;
    });
    ASSERT_TRUE(ok) << ok.error().message;
  }
  release = true;
  store->Flush();
  EXPECT_EQ(fired.load(), 60);
  EXPECT_EQ(store->writer_stats().commits, 2u) << "the first promise, then the 60 together";
}

TEST_F(PromiseStoreTest, AFullQueueRefusesInsteadOfGrowing) {
  auto store = Open(PromiseStoreOptions{.max_pending = 8, .max_group = 1});
  ASSERT_TRUE(store);
  std::atomic<int> fired{0};
  int accepted = 0;
  std::optional<int> first_refused;
  // The writer is held inside the first promise's callback, so nothing drains the queue.
  std::atomic<bool> writer_held{false};
  std::atomic<bool> release{false};
  ASSERT_TRUE(store->Submit(P(0, 99), [&](StoreResult<SubmitResult>) {
    ++fired;
    writer_held = true;
    for (int i = 0; i < 10'000 && !release; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }));
  ++accepted;
  ASSERT_TRUE(testing::WaitUntil([&] { return writer_held.load(); }));
  for (int i = 0; i < 20; ++i) {
    auto ok = store->Submit(P(0, 100 + i), [&](StoreResult<SubmitResult>) { ++fired; });
    if (ok) {
      ++accepted;
    } else {
      EXPECT_EQ(ok.error().code, StoreErrc::kQueueFull) << ok.error().message;
      if (!first_refused) first_refused = i;
    }
  }
  ASSERT_TRUE(first_refused);
  EXPECT_EQ(*first_refused, 8) << "8 waiting";
  EXPECT_LE(store->writer_stats().queued, 8u);
  release = true;
  store->Flush();
  EXPECT_EQ(fired.load(), accepted) << "every accepted promise gets exactly one answer";
  // The queue drains and takes promises again.
  EXPECT_TRUE(SubmitAndWait(*store, P(0, 1000)));
}

TEST_F(PromiseStoreTest, CloseFlushesAndRefusesLaterSubmits) {
  std::atomic<int> fired{0};
  {
    auto store = Open();
    ASSERT_TRUE(store);
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(store->Submit(P(i % 8, 10 + i), [&](StoreResult<SubmitResult> r) {
        EXPECT_TRUE(r);
        ++fired;
      }));
    }
    store->Close();
    EXPECT_EQ(fired.load(), 100) << "Close commits and answers everything queued";
    auto late = store->Submit(P(0, 1'000'000), [](StoreResult<SubmitResult>) {
      ADD_FAILURE() << "a refused submit must not call back";
    });
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().code, StoreErrc::kClosed);
    store->Close();  // idempotent
    store->Flush();  // returns at once
    // Reads and the scheduler's writes still work.
    EXPECT_TRUE(store->Get(clients_[0].channel));
    EXPECT_TRUE(store->BeginAttempt(1, 0));
  }
  auto store = Open();
  ASSERT_TRUE(store);
  for (int c = 0; c < 8; ++c) {
    auto row = store->Get(clients_[c].channel);
    ASSERT_TRUE(row && *row);
    const int last = c + 8 * ((99 - c) / 8);  // the last i with i % 8 == c
    EXPECT_EQ((*row)->cumulative, Micro(10 + last)) << c;
  }
}

TEST_F(PromiseStoreTest, AnotherClientKeyForAStoredChannelIsAConflict) {
  auto store = Open();
  ASSERT_TRUE(store);
  ASSERT_TRUE(SubmitAndWait(*store, P(0, 100)));
  PrivateKey other = PrivateKey::Generate();
  auto r = SubmitAndWait(*store, Accepted(other, ledger_, clients_[0].channel, Micro(500)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, StoreErrc::kConflict);
  auto wrong_ledger = LedgerIdFor("another", other.public_key());
  r = SubmitAndWait(*store,
                    Accepted(clients_[0].key, wrong_ledger, clients_[0].channel, Micro(500)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, StoreErrc::kConflict);
  EXPECT_EQ((*store->Get(clients_[0].channel))->cumulative, Micro(100));
}

TEST_F(PromiseStoreTest, RefusesANewerSchemaWithoutTouchingTheFile) {
  { ASSERT_TRUE(Open()); }
  Exec(path(), "UPDATE meta SET value = 99 WHERE key = 'schema_version'");
  const std::string before = ReadBytes(path());
  auto store = PromiseStore::Open(path(), clock_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, StoreErrc::kStorage);
  EXPECT_NE(store.error().message.find("newer"), std::string::npos) << store.error().message;
  EXPECT_EQ(ReadBytes(path()), before);
}

TEST_F(PromiseStoreTest, RefusesFilesThatAreNotPromiseStores) {
  // A ledger database.
  {
    auto ledger_db = ledger::OpenSqliteStore(dir_.File("ledger.db"), ledger_);
    ASSERT_TRUE(ledger_db) << ledger_db.error().message;
  }
  auto store = PromiseStore::Open(dir_.File("ledger.db"), clock_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, StoreErrc::kStorage);
  EXPECT_NE(store.error().message.find("not a dvpn promise store"), std::string::npos)
      << store.error().message;
  // Some other application's database.
  Exec(dir_.File("other.db"), "CREATE TABLE songs(title TEXT)");
  store = PromiseStore::Open(dir_.File("other.db"), clock_);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message.find("not a dvpn promise store"), std::string::npos)
      << store.error().message;
  // Garbage.
  {
    std::ofstream junk(dir_.File("junk.db"), std::ios::binary);
    std::mt19937 rng(7);
    for (int i = 0; i < 8192; ++i) junk.put(static_cast<char>(rng()));
  }
  store = PromiseStore::Open(dir_.File("junk.db"), clock_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, StoreErrc::kStorage);
  // A truncated store: the header survives, the rest is gone.
  {
    ASSERT_TRUE(Open());
    std::string bytes = ReadBytes(path());
    ASSERT_GT(bytes.size(), 200u);
    std::ofstream cut(path(), std::ios::binary | std::ios::trunc);
    cut.write(bytes.data(), 200);
  }
  store = PromiseStore::Open(path(), clock_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, StoreErrc::kStorage);
  // Not a file.
  store = PromiseStore::Open(":memory:", clock_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, StoreErrc::kStorage);
  // A directory that does not exist.
  store = PromiseStore::Open(dir_.File("no/such/dir/p.db"), clock_);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, StoreErrc::kStorage);
}

TEST_F(PromiseStoreTest, UpdatesFollowTheSettlementRules) {
  auto store = Open();
  ASSERT_TRUE(store);
  // 0: deposit 1000, promise 1500 (above the escrow); 1: promise 400, deposit unknown;
  // 2: 300 with a near deadline; 3: 200 with a far one.
  ASSERT_TRUE(SubmitAndWait(*store, P(0, 1500, Micro(1000), kT0 + 50'000)));
  clock_.Advance(10);
  ASSERT_TRUE(SubmitAndWait(*store, P(1, 400)));
  ASSERT_TRUE(SubmitAndWait(*store, P(2, 300, Micro(9000), kT0 + 1000)));
  ASSERT_TRUE(SubmitAndWait(*store, P(3, 200, Micro(9000), kT0 + 90'000)));

  auto ov = store->Overview(ledger_);
  ASSERT_TRUE(ov);
  EXPECT_EQ(ov->channels, 4u);
  EXPECT_EQ(ov->total_unsettled, Micro(1000 + 400 + 300 + 200)) << "capped at the deposit";
  EXPECT_EQ(ov->nearest_deadline_unix, kT0 + 1000);
  EXPECT_EQ(ov->oldest_unsettled_since_unix, kT0);
  EXPECT_EQ(store->Overview(LedgerIdFor("x", clients_[0].key.public_key()))->channels, 0u);

  auto rows = store->Settleable(ledger_, 10);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[0].channel, clients_[2].channel) << "nearest deadline first";
  EXPECT_EQ((*rows)[1].channel, clients_[0].channel);
  EXPECT_EQ((*rows)[2].channel, clients_[3].channel);
  EXPECT_EQ((*rows)[3].channel, clients_[1].channel) << "unknown deadline last";
  EXPECT_EQ(store->Settleable(ledger_, 2)->size(), 2u);

  // Channel facts: 1 was never checked; 0, 2, 3 were (hints), at kT0 / kT0+10.
  auto need = store->NeedingInfo(ledger_, kT0 - 1, 10);
  ASSERT_TRUE(need);
  ASSERT_EQ(need->size(), 1u);
  EXPECT_EQ((*need)[0].channel, clients_[1].channel);
  EXPECT_EQ(store->NeedingInfo(ledger_, kT0 + 10, 10)->size(), 4u);

  // Capped settlement of 0; exhausted 1 (deposit 400 all paid... then a top-up); 2 dies.
  clock_.Advance(100);
  auto attempt = store->BeginAttempt(3, 3);
  ASSERT_TRUE(attempt);
  std::vector<ChannelUpdate> updates(3);
  updates[0].channel = clients_[0].channel;
  updates[0].settled = Micro(1000);
  updates[0].deposit = Micro(1000);
  updates[1].channel = clients_[1].channel;
  updates[1].settled = Micro(250);
  updates[1].deposit = Micro(250);
  updates[1].state = ChannelSettleState::kExhausted;
  updates[2].channel = clients_[2].channel;
  updates[2].settled = Micro(100);
  updates[2].state = ChannelSettleState::kDead;
  ASSERT_TRUE(store->FinishAttempt(*attempt, Micro(1350), "ok", updates));

  auto e = store->GetEarnings();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->settled, Micro(1000 + 250 + 100));
  EXPECT_EQ(e->unsettled, Micro(200)) << "only channel 3";
  EXPECT_EQ(e->lost, Micro(200)) << "channel 2: 300 promised, 100 settled, then dead";
  EXPECT_EQ(e->exhausted, 1u);
  EXPECT_EQ(e->dead, 1u);
  EXPECT_EQ(store->Overview(ledger_)->channels, 1u);

  // Dead is final; settled never goes down.
  ChannelUpdate revive;
  revive.channel = clients_[2].channel;
  revive.state = ChannelSettleState::kActive;
  revive.settled = Micro(50);
  std::vector<ChannelUpdate> one = {revive};
  ASSERT_TRUE(store->ApplyUpdates(one));
  auto row2 = *store->Get(clients_[2].channel);
  EXPECT_EQ(row2->state, ChannelSettleState::kDead);
  EXPECT_EQ(row2->settled_known, Micro(100));
  // A dead channel's newer promise is kept (it is money owed) but never settleable.
  ASSERT_TRUE(SubmitAndWait(*store, P(2, 600)));
  EXPECT_EQ((*store->Get(clients_[2].channel))->cumulative, Micro(600));
  EXPECT_EQ(store->Overview(ledger_)->channels, 1u);
  EXPECT_EQ(store->GetEarnings()->lost, Micro(500));

  // A top-up seen by a session lifts "exhausted".
  ASSERT_TRUE(SubmitAndWait(*store, P(1, 450, Micro(2000))));
  auto row1 = *store->Get(clients_[1].channel);
  EXPECT_EQ(row1->state, ChannelSettleState::kActive);
  EXPECT_EQ(row1->Unsettled(), Micro(200));
  EXPECT_EQ(store->Overview(ledger_)->channels, 2u);
  // ... and so does one learned from the ledger.
  ChannelUpdate exhaust;
  exhaust.channel = clients_[1].channel;
  exhaust.settled = Micro(450);
  exhaust.deposit = Micro(450);
  exhaust.state = ChannelSettleState::kExhausted;
  one = {exhaust};
  ASSERT_TRUE(store->ApplyUpdates(one));
  ASSERT_TRUE(SubmitAndWait(*store, P(1, 800)));
  EXPECT_EQ((*store->Get(clients_[1].channel))->state, ChannelSettleState::kExhausted);
  ChannelUpdate topped;
  topped.channel = clients_[1].channel;
  topped.deposit = Micro(5000);
  one = {topped};
  ASSERT_TRUE(store->ApplyUpdates(one));
  row1 = *store->Get(clients_[1].channel);
  EXPECT_EQ(row1->state, ChannelSettleState::kActive);
  EXPECT_EQ(row1->Unsettled(), Micro(350));

  // Updates for channels without a row are ignored.
  ChannelUpdate stray;
  stray.channel = ChannelId{};
  stray.settled = Micro(5);
  one = {stray};
  EXPECT_TRUE(store->ApplyUpdates(one));
  EXPECT_FALSE(*store->Get(ChannelId{}));
}

TEST_F(PromiseStoreTest, UnsettledSinceTracksTheOldestUnsettledPromise) {
  auto store = Open();
  ASSERT_TRUE(store);
  ASSERT_TRUE(SubmitAndWait(*store, P(0, 100)));
  clock_.Advance(60);
  ASSERT_TRUE(SubmitAndWait(*store, P(0, 200)));
  EXPECT_EQ((*store->Get(clients_[0].channel))->unsettled_since_unix, kT0);

  // Settled up to 200 in an attempt started at kT0+100, recorded at kT0+130: nothing left.
  clock_.Advance(40);
  auto a = store->BeginAttempt(1, 1);
  ASSERT_TRUE(a);
  clock_.Advance(30);
  std::vector<ChannelUpdate> u(1);
  u[0].channel = clients_[0].channel;
  u[0].settled = Micro(200);
  ASSERT_TRUE(store->FinishAttempt(*a, Micro(200), "ok", u));
  EXPECT_FALSE((*store->Get(clients_[0].channel))->unsettled_since_unix);

  // A new promise starts the clock again.
  clock_.Advance(10);
  ASSERT_TRUE(SubmitAndWait(*store, P(0, 300)));
  EXPECT_EQ((*store->Get(clients_[0].channel))->unsettled_since_unix, kT0 + 140);

  // Partly settled (a promise arrived after the batch was read): the rest dates from the
  // attempt's start, not from the first promise.
  clock_.Advance(10);
  a = store->BeginAttempt(2, 1);
  ASSERT_TRUE(a);
  ASSERT_TRUE(SubmitAndWait(*store, P(0, 400)));
  clock_.Advance(5);
  u[0].settled = Micro(300);
  ASSERT_TRUE(store->FinishAttempt(*a, Micro(100), "ok", u));
  EXPECT_EQ((*store->Get(clients_[0].channel))->unsettled_since_unix, kT0 + 150);
}

TEST_F(PromiseStoreTest, AttemptLogNoncesAndPruning) {
  auto store = Open(PromiseStoreOptions{.max_attempt_rows = 3});
  ASSERT_TRUE(store);
  EXPECT_EQ(store->LastNonce().value_or(99), 0u);
  auto a = store->BeginAttempt(5, 1);
  ASSERT_TRUE(a);
  auto again = store->BeginAttempt(5, 1);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, StoreErrc::kInvalidArgument);
  EXPECT_FALSE(store->BeginAttempt(4, 1));
  auto missing = store->FinishAttempt(*a + 100, Micro(0), "x", {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, StoreErrc::kInvalidArgument);
  for (uint64_t n = 6; n <= 9; ++n) ASSERT_TRUE(store->BeginAttempt(n, 2));
  auto log = store->Attempts(10);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 3u);
  EXPECT_EQ((*log)[0].nonce, 9u);
  EXPECT_EQ((*log)[2].nonce, 7u);
  EXPECT_EQ((*log)[0].outcome, "pending");
  EXPECT_EQ(store->LastNonce().value_or(0), 9u);
  // A nonce is never reused, even when its attempt row is pruned.
  EXPECT_FALSE(store->BeginAttempt(6, 1));
}

}  // namespace
}  // namespace dvpn::payments
