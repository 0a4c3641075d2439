// SettlementScheduler against a real in-process ledger (dvpn::ledger::Ledger over a SQLite
// file) with an injected clock: each trigger, batching, nonces, every item outcome, retries
// while the ledger is unreachable, a lost answer re-signed (kAlreadySettled, nothing paid
// twice), and bounded shutdown. Faults come from FaultyGateway, which wraps the real ledger.

#include "settlement/settlement.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "ledger/ledger.h"
#include "ledger/requests.h"
#include "ledger/sqlite_store.h"
#include "tests/settlement/settlement_test_util.h"
#include "tests/settlement/test_gateways.h"
#include "tests/support/subprocess.h"

namespace dvpn::payments {
namespace {

using dvpn::testing::TempDir;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::FaultyGateway;
using testing::LocalLedgerGateway;
using testing::Micro;
using testing::SubmitAndWait;
using testing::WaitUntil;

constexpr uint64_t kT0 = 1'700'000'000;
constexpr uint64_t kChallenge = 3600;
constexpr uint64_t kCredit = 1'000'000;

SettlementPolicy FastPolicy() {
  SettlementPolicy p;
  p.settle_threshold = Micro(100 * kCredit);  // tests pick the trigger they exercise
  p.settle_max_age = std::chrono::hours(24);
  p.settle_deadline_margin = std::chrono::seconds(600);
  p.backoff_initial = milliseconds(20);
  p.backoff_max = milliseconds(200);
  p.poll_interval = milliseconds(20);
  p.call_timeout = milliseconds(2000);
  p.jitter_seed = 1;
  return p;
}

struct TestChannel {
  PrivateKey client;
  Address address;
  ChannelId id;
  Amount deposit;  // total locked, top-ups included
  uint64_t expiry = 0;
  uint64_t nonce = 0;
};

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest() { OpenLedger(5000); }

  void OpenLedger(uint32_t max_batch) {
    scheduler_.reset();
    faulty_.reset();
    local_.reset();
    ledger_.reset();
    ledger::LedgerConfig config{.name = "settle-test",
                                .operator_key = operator_.public_key(),
                                .challenge_period_seconds = kChallenge,
                                .max_batch_items = max_batch,
                                .verify_threads = 1};
    auto db = ledger::OpenSqliteStore(dir_.File("ledger.db"),
                                      LedgerIdFor(config.name, config.operator_key));
    ASSERT_TRUE(db) << db.error().message;
    ledger_ = std::make_unique<ledger::Ledger>(config, std::move(*db), clock_);
    local_ = std::make_unique<LocalLedgerGateway>(*ledger_);
    faulty_ = std::make_unique<FaultyGateway>(*local_);
    if (!store_) {
      auto store = PromiseStore::Open(dir_.File("promises.db"), clock_);
      ASSERT_TRUE(store) << store.error().message;
      store_ = std::move(*store);
    }
  }

  ~SchedulerTest() override { scheduler_.reset(); }

  const LedgerId& id() const { return ledger_->id(); }

  // A funded client with a channel of `deposit` micro-credits to `provider` (ours by default).
  TestChannel& Open(uint64_t deposit, uint64_t expiry = kT0 + 86'400,
                    std::optional<Address> provider = std::nullopt) {
    TestChannel ch{PrivateKey::Generate(), {}, {}, Micro(deposit), expiry, 0};
    ch.address = Address::FromPublicKey(ch.client.public_key());
    auto d = ledger_->Deposit(ledger::MakeDeposit(operator_, id(), ch.address,
                                                  Micro(deposit + 10 * kCredit), ++op_nonce_));
    EXPECT_TRUE(d) << d.error().message;
    auto open = ledger::MakeOpenChannel(ch.client, id(), provider.value_or(provider_addr_),
                                        Micro(deposit), ++ch.nonce, expiry);
    auto c = ledger_->OpenChannel(open);
    EXPECT_TRUE(c) << c.error().message;
    if (c) ch.id = c->id;
    channels_.push_back(std::make_unique<TestChannel>(std::move(ch)));
    return *channels_.back();
  }

  // Stores a promise as a session would; with `hints`, what the session knew of the channel.
  void Submit(const TestChannel& ch, uint64_t cumulative, bool hints = true) {
    auto p = testing::Accepted(ch.client, id(), ch.id, Micro(cumulative));
    if (hints) {
      p.deposit = ch.deposit;
      p.deadline_unix = ch.expiry + kChallenge;
    }
    auto r = SubmitAndWait(*store_, p);
    ASSERT_TRUE(r) << r.error().message;
  }

  SettlementScheduler& Start(SettlementPolicy policy = FastPolicy()) {
    scheduler_ =
        std::make_unique<SettlementScheduler>(*store_, *faulty_, provider_, id(), clock_, policy);
    scheduler_->Start();
    return *scheduler_;
  }

  // Returns after the scheduler has looked at the triggers at least once since the call.
  void Look() {
    const uint64_t s0 = scheduler_->Stats().steps;
    scheduler_->Wake();
    ASSERT_TRUE(WaitUntil([&] { return scheduler_->Stats().steps >= s0 + 2; }));
  }

  Amount Unsettled() {
    auto e = store_->GetEarnings();
    EXPECT_TRUE(e);
    return e ? e->unsettled : Amount::Max();
  }
  // Waits until nothing is unsettled and the pass that settled it has finished (its stats
  // written).
  void WaitAllSettled(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    ASSERT_TRUE(WaitUntil([&] { return AllSettled(); }, timeout))
        << "unsettled: " << store_->GetEarnings()->unsettled.ToString()
        << ", last error: " << scheduler_->Stats().last_error;
    Look();
  }

  bool AllSettled() { return Unsettled().IsZero(); }
  Amount ProviderBalance() { return ledger_->GetAccount(provider_addr_)->balance; }
  StoredChannel Row(const TestChannel& ch) {
    auto row = store_->Get(ch.id);
    EXPECT_TRUE(row && *row);
    return **row;
  }
  ledger::ChannelState OnLedger(const TestChannel& ch) { return *ledger_->GetChannel(ch.id); }

  // The store agrees with the ledger exactly: per channel, settled_known is the ledger's
  // settled; the provider got the sum; each client's escrow dropped by exactly its channel's.
  void ExpectExact() {
    Amount sum;
    for (const auto& ch : channels_) {
      auto row = store_->Get(ch->id);
      ASSERT_TRUE(row);
      auto on_ledger = ledger_->GetChannel(ch->id);
      ASSERT_TRUE(on_ledger);
      if (on_ledger->provider != provider_addr_) continue;
      const Amount settled = *row ? (*row)->settled_known : Amount::Zero();
      EXPECT_EQ(on_ledger->settled, settled);
      sum = *sum.CheckedAdd(on_ledger->settled);
      if (on_ledger->status != ledger::ChannelStatus::kClosed) {
        auto client = ledger_->GetAccount(ch->address);
        EXPECT_EQ(client->escrowed, *ch->deposit.CheckedSub(settled))
            << "the client's escrow must drop by exactly what was settled";
      }
    }
    EXPECT_EQ(*ProviderBalance().CheckedSub(provider_other_), sum);
    EXPECT_EQ(store_->GetEarnings()->settled, sum);
  }

  TempDir dir_;
  ManualClock clock_{kT0};
  PrivateKey operator_ = PrivateKey::Generate();
  PrivateKey provider_ = PrivateKey::Generate();
  Address provider_addr_ = Address::FromPublicKey(provider_.public_key());
  Amount provider_other_;  // provider balance that did not come from settlement
  uint64_t op_nonce_ = 0;
  std::vector<std::unique_ptr<TestChannel>> channels_;
  std::unique_ptr<ledger::Ledger> ledger_;
  std::unique_ptr<PromiseStore> store_;
  std::unique_ptr<LocalLedgerGateway> local_;
  std::unique_ptr<FaultyGateway> faulty_;
  std::unique_ptr<SettlementScheduler> scheduler_;
};

TEST(SettleTriggers, FollowThePolicy) {
  SettlementPolicy p;
  p.settle_threshold = Micro(1000);
  p.settle_max_age = std::chrono::seconds(600);
  p.settle_deadline_margin = std::chrono::seconds(300);
  SettleOverview ov{.channels = 2,
                    .total_unsettled = Micro(999),
                    .oldest_unsettled_since_unix = kT0,
                    .nearest_deadline_unix = kT0 + 1000};
  EXPECT_EQ(EvaluateTriggers(ov, kT0, p), SettleTrigger::kNone);
  EXPECT_EQ(EvaluateTriggers(ov, kT0 + 599, p), SettleTrigger::kNone);
  EXPECT_EQ(EvaluateTriggers(ov, kT0 + 600, p), SettleTrigger::kMaxAge);
  EXPECT_EQ(EvaluateTriggers(ov, kT0 + 700, p), SettleTrigger::kMaxAge) << "300 s left: not < 300";
  EXPECT_EQ(EvaluateTriggers(ov, kT0 + 701, p), SettleTrigger::kDeadline) << "299 s left";
  EXPECT_EQ(EvaluateTriggers(ov, kT0 + 5000, p), SettleTrigger::kDeadline) << "already past";
  ov.total_unsettled = Micro(1000);
  EXPECT_EQ(EvaluateTriggers(ov, kT0, p), SettleTrigger::kThreshold);
  ov.nearest_deadline_unix.reset();
  ov.oldest_unsettled_since_unix.reset();
  EXPECT_EQ(EvaluateTriggers(ov, UINT64_MAX, p), SettleTrigger::kThreshold);
  EXPECT_EQ(EvaluateTriggers(SettleOverview{}, kT0, p), SettleTrigger::kNone);
  // Times near the top of the range do not wrap.
  ov.total_unsettled = Micro(1);
  ov.oldest_unsettled_since_unix = UINT64_MAX - 10;
  ov.nearest_deadline_unix = UINT64_MAX;
  EXPECT_EQ(EvaluateTriggers(ov, UINT64_MAX - 20, p), SettleTrigger::kNone);
}

TEST_F(SchedulerTest, ThresholdTriggersSettlement) {
  SettlementPolicy policy = FastPolicy();
  policy.settle_threshold = Micro(kCredit);
  TestChannel& a = Open(5 * kCredit);
  TestChannel& b = Open(5 * kCredit);
  Submit(a, 400'000);
  auto& s = Start(policy);
  Look();
  EXPECT_EQ(s.Stats().passes, 0u) << "0.4 credit is below the threshold";
  Submit(b, 600'000);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kThreshold);
  EXPECT_EQ(s.Stats().successes, 1u);
  EXPECT_EQ(ProviderBalance(), Micro(kCredit));
  EXPECT_EQ(Row(a).last_outcome, "settled +0.400000");
  ExpectExact();
}

TEST_F(SchedulerTest, MaxAgeTriggersSettlement) {
  SettlementPolicy policy = FastPolicy();
  policy.settle_max_age = std::chrono::seconds(600);
  TestChannel& a = Open(kCredit);
  Submit(a, 1000);
  auto& s = Start(policy);
  clock_.Advance(599);
  Look();
  EXPECT_EQ(s.Stats().passes, 0u);
  clock_.Advance(1);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kMaxAge);
  EXPECT_EQ(OnLedger(a).settled, Micro(1000));
  ExpectExact();
}

// The deadline is learned from the ledger (no session hints): expiry + challenge period.
TEST_F(SchedulerTest, DeadlineMarginTriggersSettlement) {
  TestChannel& a = Open(kCredit, kT0 + 1000);  // settleable until kT0 + 4600
  Submit(a, 2000, /*hints=*/false);
  auto& s = Start();
  ASSERT_TRUE(WaitUntil([&] { return Row(a).deadline_unix.has_value(); }));
  EXPECT_EQ(Row(a).deadline_unix, kT0 + 1000 + kChallenge);
  EXPECT_EQ(Row(a).deposit_known, Micro(kCredit));
  clock_.Set(kT0 + 4000);  // 600 s left: not yet inside the margin
  Look();
  EXPECT_EQ(s.Stats().passes, 0u);
  clock_.Advance(1);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kDeadline);
  EXPECT_EQ(OnLedger(a).settled, Micro(2000));
  ExpectExact();
}

// A client that closes its channel shortens the deadline to the end of the challenge period;
// the periodic channel check finds it and the promise is settled before the money goes back.
TEST_F(SchedulerTest, ClosingChannelIsSettledBeforeItsChallengeEnds) {
  SettlementPolicy policy = FastPolicy();
  policy.channel_refresh_interval = std::chrono::seconds(300);
  TestChannel& a = Open(kCredit);  // expiry a day away; the session's hint says so
  Submit(a, 3000);
  auto& s = Start(policy);
  Look();
  auto closing = ledger_->CloseChannel(
      ledger::MakeCloseChannel(a.client, id(), a.id, ++a.nonce));  // at kT0: until kT0 + 3600
  ASSERT_TRUE(closing) << closing.error().message;
  clock_.Advance(301);  // the channel is checked again
  Look();
  ASSERT_TRUE(WaitUntil([&] { return Row(a).deadline_unix == kT0 + kChallenge; }));
  EXPECT_EQ(s.Stats().passes, 0u) << "3299 s left, margin 600";
  clock_.Set(kT0 + kChallenge - 599);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kDeadline);
  EXPECT_EQ(OnLedger(a).settled, Micro(3000));
  ExpectExact();
}

TEST_F(SchedulerTest, SettleNowAndShutdownSettleEverything) {
  TestChannel& a = Open(kCredit);
  TestChannel& b = Open(kCredit);
  Submit(a, 1000);
  auto& s = Start();
  Look();
  EXPECT_EQ(s.Stats().passes, 0u);
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kSettleNow);

  Submit(a, 2500);
  Submit(b, 10);
  const auto t = steady_clock::now();
  s.Shutdown(t + std::chrono::seconds(5));
  EXPECT_LT(steady_clock::now() - t, std::chrono::seconds(5));
  EXPECT_TRUE(AllSettled()) << "the final attempt settles what is left";
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kShutdown);
  EXPECT_FALSE(s.Stats().running);
  EXPECT_EQ(ProviderBalance(), Micro(2510));
  s.Shutdown(t);  // idempotent
  ExpectExact();
}

TEST_F(SchedulerTest, BatchesHoldAtMostMaxBatchPromises) {
  SettlementPolicy policy = FastPolicy();
  policy.max_batch = 4;
  for (int i = 0; i < 10; ++i) Submit(Open(kCredit), 100 + i);
  auto& s = Start(policy);
  s.SettleNow();
  WaitAllSettled();
  auto log = store_->Attempts(10);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 3u);
  EXPECT_EQ((*log)[2].items, 4u);
  EXPECT_EQ((*log)[1].items, 4u);
  EXPECT_EQ((*log)[0].items, 2u);
  EXPECT_LT((*log)[2].nonce, (*log)[1].nonce);
  EXPECT_LT((*log)[1].nonce, (*log)[0].nonce);
  EXPECT_EQ(s.Stats().successes, 3u);
  ExpectExact();
}

TEST_F(SchedulerTest, TheLedgersLowerBatchLimitIsRespected) {
  OpenLedger(3);
  for (int i = 0; i < 7; ++i) Submit(Open(kCredit), 100 + i);
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().successes, 3u) << "3 + 3 + 1";
  EXPECT_EQ(s.Stats().failures, 0u);
  ExpectExact();
}

TEST_F(SchedulerTest, BatchTooLargeShrinksTheBatch) {
  OpenLedger(3);
  faulty_->report_max_batch = 1000;  // the ledger says one thing and enforces another
  for (int i = 0; i < 7; ++i) Submit(Open(kCredit), 100 + i);
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  EXPECT_GT(s.Stats().failures, 0u);
  EXPECT_EQ(s.Stats().consecutive_failures, 0u);
  ExpectExact();
}

TEST_F(SchedulerTest, UnreachableLedgerIsRetriedWithBackoffUntilItReturns) {
  TestChannel& a = Open(kCredit);
  TestChannel& b = Open(kCredit);
  Submit(a, 1000);
  Submit(b, 2000);
  faulty_->down = true;
  auto& s = Start();
  s.SettleNow();
  ASSERT_TRUE(WaitUntil([&] { return s.Stats().failures >= 4; }));
  SchedulerStats st = s.Stats();
  EXPECT_NE(st.last_error.find("unreachable"), std::string::npos) << st.last_error;
  ASSERT_TRUE(st.next_attempt);
  EXPECT_LE(*st.next_attempt - steady_clock::now(), FastPolicy().backoff_max);
  EXPECT_EQ(ProviderBalance(), Micro(0));
  // More promises while the ledger is away.
  Submit(a, 1500);
  faulty_->down = false;
  WaitAllSettled();
  st = s.Stats();
  EXPECT_EQ(st.consecutive_failures, 0u);
  EXPECT_FALSE(st.next_attempt);
  EXPECT_EQ(ProviderBalance(), Micro(3500));
  ExpectExact();
}

TEST_F(SchedulerTest, ALostAnswerIsResignedAndNothingIsPaidTwice) {
  TestChannel& a = Open(kCredit);
  TestChannel& b = Open(kCredit);
  TestChannel& c = Open(kCredit);
  Submit(a, 1000);
  Submit(b, 2000);
  Submit(c, 3000);
  faulty_->lose_settle_answers = 1;
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(faulty_->settle_reached.load(), 2);
  EXPECT_EQ(ProviderBalance(), Micro(6000)) << "applied once, answered twice";
  auto log = store_->Attempts(10);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 2u);
  EXPECT_NE((*log)[1].outcome.find("answer was lost"), std::string::npos) << (*log)[1].outcome;
  EXPECT_EQ((*log)[0].outcome, "ok: moved 0.000000, 3 already settled");
  EXPECT_GT((*log)[0].nonce, (*log)[1].nonce) << "re-signed with a fresh nonce";
  EXPECT_EQ(Row(b).last_outcome, "already settled");
  EXPECT_EQ(Row(b).settled_known, Micro(2000));
  ExpectExact();
}

TEST_F(SchedulerTest, DeadChannelsAreMarkedLostAndNeverRetried) {
  TestChannel& closed = Open(kCredit);
  TestChannel& other =
      Open(kCredit, kT0 + 86'400, Address::FromPublicKey(PrivateKey::Generate().public_key()));
  TestChannel& fine = Open(kCredit);
  TestChannel ghost{PrivateKey::Generate(), {}, {}, Micro(kCredit), kT0 + 86'400, 0};
  ghost.id = ChannelIdFor(id(), Address::FromPublicKey(ghost.client.public_key()), 9);
  Submit(closed, 5000);
  Submit(other, 900);
  Submit(fine, 300);
  Submit(ghost, 700);
  // The provider closes `closed` itself (say, by mistake): its escrow goes back to the client.
  ASSERT_TRUE(ledger_->CloseChannel(ledger::MakeCloseChannel(provider_, id(), closed.id, 1)));
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(Row(closed).state, ChannelSettleState::kDead);
  EXPECT_NE(Row(closed).last_outcome.find("channel closed"), std::string::npos);
  EXPECT_EQ(Row(other).state, ChannelSettleState::kDead);
  EXPECT_NE(Row(other).last_outcome.find("not our channel"), std::string::npos);
  auto ghost_row = *store_->Get(ghost.id);
  EXPECT_EQ(ghost_row->state, ChannelSettleState::kDead);
  EXPECT_NE(ghost_row->last_outcome.find("unknown channel"), std::string::npos);
  EXPECT_EQ(Row(fine).state, ChannelSettleState::kActive);
  auto e = store_->GetEarnings();
  EXPECT_EQ(e->settled, Micro(300));
  EXPECT_EQ(e->lost, Micro(5000 + 900 + 700));
  EXPECT_EQ(e->dead, 3u);

  // Never retried, not even with a newer promise or an operator's SettleNow.
  const int calls = faulty_->settle_calls.load();
  Submit(closed, 6000);
  s.SettleNow();
  Look();
  EXPECT_EQ(faulty_->settle_calls.load(), calls);
  EXPECT_EQ(store_->GetEarnings()->lost, Micro(6000 + 900 + 700));
  ExpectExact();
}

// Channel checks find dead channels before any settlement is sent.
TEST_F(SchedulerTest, ChannelChecksMarkClosedAndUnknownChannelsDead) {
  TestChannel& closed = Open(kCredit);
  TestChannel ghost{PrivateKey::Generate(), {}, {}, Micro(kCredit), kT0 + 86'400, 0};
  ghost.id = ChannelIdFor(id(), Address::FromPublicKey(ghost.client.public_key()), 3);
  Submit(closed, 5000, /*hints=*/false);
  Submit(ghost, 700, /*hints=*/false);
  ASSERT_TRUE(ledger_->CloseChannel(ledger::MakeCloseChannel(provider_, id(), closed.id, 1)));
  Start();
  ASSERT_TRUE(WaitUntil([&] { return store_->GetEarnings()->dead == 2; }));
  EXPECT_EQ(faulty_->settle_calls.load(), 0);
  EXPECT_EQ(store_->GetEarnings()->lost, Micro(5700));
}

TEST_F(SchedulerTest, APromiseAboveTheDepositSettlesCapped) {
  TestChannel& a = Open(1000);
  Submit(a, 1500, /*hints=*/false);
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  StoredChannel row = Row(a);
  EXPECT_EQ(row.settled_known, Micro(1000));
  EXPECT_EQ(row.deposit_known, Micro(1000));
  EXPECT_NE(row.last_outcome.find("capped"), std::string::npos) << row.last_outcome;
  EXPECT_EQ(OnLedger(a).settled, Micro(1000));
  EXPECT_EQ(ledger_->GetAccount(a.address)->escrowed, Micro(0));
  ExpectExact();
}

TEST_F(SchedulerTest, AnExhaustedChannelResumesAfterATopUp) {
  TestChannel& a = Open(1000);
  faulty_->channel_reads_down = true;  // the deposit stays unknown to the store
  Submit(a, 1000, /*hints=*/false);
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  Submit(a, 1200, /*hints=*/false);
  s.SettleNow();
  ASSERT_TRUE(WaitUntil([&] { return Row(a).state == ChannelSettleState::kExhausted; }));
  EXPECT_TRUE(AllSettled()) << "nothing more can be collected now";
  EXPECT_EQ(Row(a).deposit_known, Micro(1000));

  auto top = ledger_->TopUpChannel(
      ledger::MakeTopUpChannel(a.client, id(), a.id, Micro(500), ++a.nonce, 0));
  ASSERT_TRUE(top) << top.error().message;
  a.deposit = Micro(1500);
  faulty_->channel_reads_down = false;
  clock_.Advance(301);  // the next channel check reads the new deposit
  Look();
  ASSERT_TRUE(WaitUntil([&] { return Row(a).state == ChannelSettleState::kActive; }));
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(OnLedger(a).settled, Micro(1200));
  ExpectExact();
}

TEST_F(SchedulerTest, NoncesAreAboveTheLedgersAndTheStoredOnes) {
  // The provider's key signed other requests: its ledger nonce is 41.
  ASSERT_TRUE(ledger_->Deposit(
      ledger::MakeDeposit(operator_, id(), provider_addr_, Micro(50), ++op_nonce_)));
  ASSERT_TRUE(ledger_->Withdraw(ledger::MakeWithdraw(provider_, id(), Micro(20), 41, "bank")));
  provider_other_ = Micro(30);
  TestChannel& a = Open(kCredit);
  Submit(a, 1000);
  auto& s = Start();
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(store_->Attempts(1)->at(0).nonce, 42u);
  // An attempt that was logged but never reached the ledger (say the provider died): its
  // nonce is not reused.
  ASSERT_TRUE(store_->BeginAttempt(100, 1));
  Submit(a, 2000);
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(store_->Attempts(1)->at(0).nonce, 101u);
  EXPECT_EQ(ledger_->GetAccount(provider_addr_)->last_nonce, 101u);
  ExpectExact();
}

TEST_F(SchedulerTest, AProviderRestartSettlesWhatItStored) {
  TestChannel& a = Open(kCredit);
  TestChannel& b = Open(kCredit);
  Submit(a, 1000);
  Submit(b, 2000);
  Start();
  Look();
  scheduler_.reset();  // gone without a final attempt
  store_.reset();
  auto store = PromiseStore::Open(dir_.File("promises.db"), clock_);
  ASSERT_TRUE(store) << store.error().message;
  store_ = std::move(*store);
  EXPECT_EQ(Unsettled(), Micro(3000));
  auto& s = Start();
  s.Shutdown(steady_clock::now() + std::chrono::seconds(5));
  EXPECT_TRUE(AllSettled());
  ExpectExact();
}

TEST_F(SchedulerTest, ShutdownIsPromptWhileBackingOff) {
  SettlementPolicy policy = FastPolicy();
  policy.backoff_initial = std::chrono::seconds(30);
  policy.backoff_max = std::chrono::seconds(60);
  TestChannel& a = Open(kCredit);
  Submit(a, 1000);
  faulty_->down = true;
  auto& s = Start(policy);
  s.SettleNow();
  ASSERT_TRUE(WaitUntil([&] { return s.Stats().failures >= 1; }));
  ASSERT_TRUE(s.Stats().next_attempt);
  EXPECT_GT(*s.Stats().next_attempt - steady_clock::now(), std::chrono::seconds(10));
  // The final attempt meets a ledger that does not answer: bounded by the deadline.
  faulty_->down = false;
  faulty_->hang = true;
  const auto t = steady_clock::now();
  s.Shutdown(t + milliseconds(300));
  const auto took = steady_clock::now() - t;
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, std::chrono::seconds(2));
  EXPECT_FALSE(s.Stats().running);
  EXPECT_EQ(Unsettled(), Micro(1000)) << "still owed, on disk for the next start";
}

// A call already hanging when Shutdown comes (its own deadline is call_timeout, far away) is
// cancelled: the shutdown still ends by its deadline and the final pass runs.
TEST_F(SchedulerTest, ShutdownCancelsACallInFlight) {
  SettlementPolicy policy = FastPolicy();
  policy.call_timeout = std::chrono::seconds(60);
  TestChannel& a = Open(kCredit);
  Submit(a, 1000);
  faulty_->hang = true;
  auto& s = Start(policy);
  s.SettleNow();
  ASSERT_TRUE(WaitUntil([&] { return faulty_->hanging.load() > 0; }));
  const auto t = steady_clock::now();
  s.Shutdown(t + milliseconds(300));
  const auto took = steady_clock::now() - t;
  EXPECT_LT(took, std::chrono::seconds(2)) << "the call in flight held the shutdown";
  EXPECT_FALSE(s.Stats().running);
  EXPECT_EQ(Unsettled(), Micro(1000)) << "still owed, on disk for the next start";
}

}  // namespace
}  // namespace dvpn::payments
