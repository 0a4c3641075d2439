// The settlement scheduler against the real dvpn-ledger executable over gRPC (RpcLedgerGateway):
// channels opened and promises signed with real keys; every trigger; results recorded exactly
// (the provider's balance on the ledger equals what the store says is settled, and each
// client's escrow dropped by exactly its channel's share); the ledger killed with SIGKILL and
// restarted on the same database and port while settlements are due; an answer lost because
// the ledger died right after committing (re-signed: kAlreadySettled, nothing paid twice);
// dead channels; a promise above the deposit.

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ledger/requests.h"
#include "ledger/rpc/ledger_client.h"
#include "settlement/ledger_gateway_rpc.h"
#include "settlement/settlement.h"
#include "tests/settlement/settlement_test_util.h"
#include "tests/settlement/test_gateways.h"
#include "tests/support/ledger_process.h"
#include "tests/support/subprocess.h"

#ifndef DVPN_LEDGER_BIN
#error "DVPN_LEDGER_BIN must name the dvpn-ledger executable"
#endif

namespace dvpn::payments {
namespace {

using dvpn::testing::FileTail;
using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using ledger::rpc::GatewayErrcFor;
using ledger::rpc::LedgerClient;
using ledger::rpc::RpcGatewayOptions;
using ledger::rpc::RpcLedgerGateway;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::FaultyGateway;
using testing::Micro;
using testing::SubmitAndWait;
using testing::WaitUntil;

constexpr uint64_t kCredit = 1'000'000;
constexpr uint64_t kChallenge = 60;

struct Chan {
  PrivateKey client;
  Address address;
  ChannelId id;
  Amount deposit;
  uint64_t expiry = 0;
  uint64_t nonce = 0;
};

class SettlementE2E : public ::testing::Test {
 protected:
  void SetUp() override { StartLedger(5000); }

  void StartLedger(uint32_t max_batch) {
    ledger_ = std::make_unique<dvpn::testing::LedgerProcess>(
        dir_, dvpn::testing::LedgerProcessOptions{
                  .binary = DVPN_LEDGER_BIN,
                  .name = "settle-e2e",
                  .operator_hex = ToHex(operator_.public_key().bytes()),
                  .extra = {"--challenge-period", std::to_string(kChallenge), "--max-batch",
                            std::to_string(max_batch)}});
    ASSERT_TRUE(ledger_->Start());
    auto info = ledger_->client().GetInfo();
    ASSERT_TRUE(info) << info.error().message;
    id_ = info->id;
    now_ = info->server_time_unix;
    clock_.Set(now_);
    auto store = PromiseStore::Open(dir_.File("promises.db"), clock_);
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    rpc_ = std::make_unique<RpcLedgerGateway>(
        ledger_->target(), RpcGatewayOptions{.call_timeout = milliseconds(2000),
                                             .max_reconnect_backoff = milliseconds(300)});
    gateway_ = std::make_unique<FaultyGateway>(*rpc_);
  }

  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "ledger log:\n%s\n", FileTail(ledger_->log()).c_str());
    scheduler_.reset();
    ledger_.reset();  // kills the process by PID
  }

  Chan& Open(uint64_t deposit, uint64_t expiry_in = 86'400,
             std::optional<Address> provider = std::nullopt) {
    Chan ch{PrivateKey::Generate(), {}, {}, Micro(deposit), now_ + expiry_in, 0};
    ch.address = Address::FromPublicKey(ch.client.public_key());
    auto d = ledger_->client().Deposit(
        ledger::MakeDeposit(operator_, id_, ch.address, Micro(deposit + kCredit), ++op_nonce_));
    EXPECT_TRUE(d) << d.error().message;
    auto c = ledger_->client().OpenChannel(ledger::MakeOpenChannel(
        ch.client, id_, provider.value_or(provider_addr_), Micro(deposit), ++ch.nonce, ch.expiry));
    EXPECT_TRUE(c) << c.error().message;
    if (c) ch.id = c->id;
    channels_.push_back(std::make_unique<Chan>(std::move(ch)));
    return *channels_.back();
  }

  void Submit(const Chan& ch, uint64_t cumulative, bool hints = true) {
    auto p = testing::Accepted(ch.client, id_, ch.id, Micro(cumulative));
    if (hints) {
      p.deposit = ch.deposit;
      p.deadline_unix = ch.expiry + kChallenge;
    }
    auto r = SubmitAndWait(*store_, p);
    ASSERT_TRUE(r) << r.error().message;
    max_promised_[ch.id] = std::max(max_promised_[ch.id], Micro(cumulative));
  }

  SettlementScheduler& Start(SettlementPolicy policy) {
    scheduler_ =
        std::make_unique<SettlementScheduler>(*store_, *gateway_, provider_, id_, clock_, policy);
    scheduler_->Start();
    return *scheduler_;
  }

  static SettlementPolicy Policy() {
    SettlementPolicy p;
    p.settle_threshold = Micro(100 * kCredit);
    p.settle_max_age = std::chrono::hours(24);
    p.settle_deadline_margin = std::chrono::seconds(600);
    p.backoff_initial = milliseconds(50);
    p.backoff_max = milliseconds(400);
    p.poll_interval = milliseconds(25);
    p.call_timeout = milliseconds(2000);
    return p;
  }

  void Look() {
    const uint64_t s0 = scheduler_->Stats().steps;
    scheduler_->Wake();
    ASSERT_TRUE(WaitUntil([&] { return scheduler_->Stats().steps >= s0 + 2; }));
  }

  // Waits until nothing is unsettled and the pass that settled it has finished (its stats
  // written).
  void WaitAllSettled(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    ASSERT_TRUE(WaitUntil([&] { return AllSettled(); }, timeout))
        << "unsettled: " << store_->GetEarnings()->unsettled.ToString()
        << ", last error: " << scheduler_->Stats().last_error;
    Look();
  }

  bool AllSettled() {
    auto e = store_->GetEarnings();
    return e && e->unsettled.IsZero();
  }
  StoredChannel Row(const Chan& ch) { return **store_->Get(ch.id); }

  // The ledger (read over gRPC) and the store agree exactly; nothing was paid twice.
  void ExpectExact() {
    LedgerClient& client = ledger_->client();
    Amount sum;
    for (const auto& ch : channels_) {
      auto on_ledger = client.GetChannel(ch->id);
      ASSERT_TRUE(on_ledger) << on_ledger.error().message;
      if (on_ledger->provider != provider_addr_) continue;
      auto row = store_->Get(ch->id);
      ASSERT_TRUE(row);
      const Amount settled = *row ? (*row)->settled_known : Amount::Zero();
      EXPECT_EQ(on_ledger->settled, settled);
      EXPECT_LE(on_ledger->settled, max_promised_[ch->id]) << "paid above the promise";
      sum = *sum.CheckedAdd(on_ledger->settled);
      if (on_ledger->status != ledger::ChannelStatus::kClosed) {
        auto acct = client.GetAccount(ch->address);
        ASSERT_TRUE(acct);
        EXPECT_EQ(acct->escrowed, *ch->deposit.CheckedSub(settled));
      }
    }
    auto provider = client.GetAccount(provider_addr_);
    ASSERT_TRUE(provider);
    EXPECT_EQ(provider->balance, sum);
    EXPECT_EQ(store_->GetEarnings()->settled, sum);
  }

  TempDir dir_;
  PrivateKey operator_ = PrivateKey::Generate();
  PrivateKey provider_ = PrivateKey::Generate();
  Address provider_addr_ = Address::FromPublicKey(provider_.public_key());
  LedgerId id_;
  uint64_t now_ = 0;
  uint64_t op_nonce_ = 0;
  ManualClock clock_{0};
  std::map<ChannelId, Amount> max_promised_;
  std::vector<std::unique_ptr<Chan>> channels_;
  std::unique_ptr<dvpn::testing::LedgerProcess> ledger_;
  std::unique_ptr<PromiseStore> store_;
  std::unique_ptr<RpcLedgerGateway> rpc_;
  std::unique_ptr<FaultyGateway> gateway_;
  std::unique_ptr<SettlementScheduler> scheduler_;
};

TEST_F(SettlementE2E, EveryTriggerSettlesExactly) {
  SettlementPolicy policy = Policy();
  policy.settle_threshold = Micro(kCredit);
  policy.settle_max_age = std::chrono::seconds(600);
  Chan& t1 = Open(2 * kCredit);
  Chan& t2 = Open(2 * kCredit);
  Chan& soon = Open(kCredit, 30);  // settleable until 30 + 60 s from now
  Chan& old = Open(kCredit);
  Chan& now = Open(kCredit);
  Chan& last = Open(kCredit);

  // Threshold.
  Submit(t1, 600'000);
  auto& s = Start(policy);
  Look();
  EXPECT_EQ(s.Stats().passes, 0u);
  Submit(t2, 500'000);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kThreshold);
  ExpectExact();

  // Deadline (learned from the ledger: the session gave no hints).
  Submit(soon, 1234, /*hints=*/false);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kDeadline);
  EXPECT_EQ(Row(soon).deadline_unix, soon.expiry + kChallenge);

  // Age.
  const uint64_t passes = s.Stats().passes;
  Submit(old, 77);
  Look();
  EXPECT_EQ(s.Stats().passes, passes);
  clock_.Advance(600);
  Look();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kMaxAge);

  // Operator.
  Submit(now, 5000);
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kSettleNow);

  // Shutdown.
  Submit(last, 999);
  Submit(t1, 700'000);
  s.Shutdown(steady_clock::now() + std::chrono::seconds(10));
  EXPECT_TRUE(AllSettled());
  EXPECT_EQ(s.Stats().last_trigger, SettleTrigger::kShutdown);
  EXPECT_EQ(s.Stats().failures, 0u);
  ExpectExact();
  auto provider = ledger_->client().GetAccount(provider_addr_);
  EXPECT_EQ(provider->balance, Micro(700'000 + 500'000 + 1234 + 77 + 5000 + 999));
}

TEST_F(SettlementE2E, LedgerKilledAndRestartedNothingLostNothingPaidTwice) {
  std::vector<Chan*> chans;
  for (int i = 0; i < 6; ++i) chans.push_back(&Open(kCredit));
  Chan& capped = Open(1000);
  for (int i = 0; i < 6; ++i) Submit(*chans[i], 1000 * (i + 1));
  Submit(capped, 1500, /*hints=*/false);

  ledger_->Kill();
  auto& s = Start(Policy());
  s.SettleNow();
  ASSERT_TRUE(WaitUntil([&] { return s.Stats().failures >= 3; }));
  EXPECT_NE(s.Stats().last_error.find("unreachable"), std::string::npos) << s.Stats().last_error;
  for (int i = 0; i < 6; ++i) Submit(*chans[i], 1000 * (i + 1) + 500);  // sessions go on

  ASSERT_TRUE(ledger_->Start());  // same database, same port
  WaitAllSettled(std::chrono::seconds(30));
  EXPECT_EQ(s.Stats().consecutive_failures, 0u);
  EXPECT_EQ(Row(capped).settled_known, Micro(1000)) << "capped at the deposit";
  ExpectExact();
  Amount expected = Micro(1000);
  for (int i = 0; i < 6; ++i) expected = *expected.CheckedAdd(Micro(1000 * (i + 1) + 500));
  EXPECT_EQ(ledger_->client().GetAccount(provider_addr_)->balance, expected);
}

// The ledger commits a batch and dies before its answer arrives: the scheduler cannot know
// what happened, retries with a fresh nonce once the ledger is back, and gets kAlreadySettled.
TEST_F(SettlementE2E, AnAnswerLostInACrashIsResignedAndAnswersAlreadySettled) {
  Chan& a = Open(kCredit);
  Chan& b = Open(kCredit);
  Submit(a, 4000);
  Submit(b, 6000);
  std::atomic<bool> killed{false};
  gateway_->lose_settle_answers = 1;
  gateway_->after_settle = [&] {
    if (!killed.exchange(true)) ledger_->proc().Signal(SIGKILL);
  };
  auto& s = Start(Policy());
  s.SettleNow();
  ASSERT_TRUE(WaitUntil([&] { return killed.load() && s.Stats().failures >= 2; }));
  auto status = ledger_->proc().WaitFor(milliseconds(10'000));
  ASSERT_TRUE(status && WIFSIGNALED(*status));
  ASSERT_TRUE(ledger_->Start());
  WaitAllSettled(std::chrono::seconds(30));
  EXPECT_EQ(Row(a).last_outcome, "already settled");
  EXPECT_EQ(Row(b).last_outcome, "already settled");
  auto log = store_->Attempts(1);
  ASSERT_TRUE(log && !log->empty());
  EXPECT_EQ((*log)[0].outcome, "ok: moved 0.000000, 2 already settled");
  EXPECT_EQ(ledger_->client().GetAccount(provider_addr_)->balance, Micro(10'000));
  ExpectExact();
}

TEST_F(SettlementE2E, DeadChannelsAndCappedPromisesOverGrpc) {
  Chan& closed = Open(kCredit);
  Chan& other = Open(kCredit, 86'400, Address::FromPublicKey(PrivateKey::Generate().public_key()));
  Chan& capped = Open(2000);
  Chan& fine = Open(kCredit);
  Chan ghost{PrivateKey::Generate(), {}, {}, Micro(kCredit), now_ + 86'400, 0};
  ghost.id = ChannelIdFor(id_, Address::FromPublicKey(ghost.client.public_key()), 5);
  Submit(closed, 800);
  Submit(other, 900);
  Submit(capped, 2500, /*hints=*/false);
  Submit(fine, 100);
  Submit(ghost, 700);
  auto close =
      ledger_->client().CloseChannel(ledger::MakeCloseChannel(provider_, id_, closed.id, 1));
  ASSERT_TRUE(close) << close.error().message;

  auto& s = Start(Policy());
  s.SettleNow();
  WaitAllSettled();
  EXPECT_EQ(Row(closed).state, ChannelSettleState::kDead);
  EXPECT_EQ(Row(other).state, ChannelSettleState::kDead);
  EXPECT_EQ((*store_->Get(ghost.id))->state, ChannelSettleState::kDead);
  EXPECT_EQ(Row(capped).settled_known, Micro(2000));
  EXPECT_EQ(Row(fine).settled_known, Micro(100));
  auto e = store_->GetEarnings();
  EXPECT_EQ(e->settled, Micro(2100));
  EXPECT_EQ(e->lost, Micro(800 + 900 + 700));
  const int calls = gateway_->settle_calls.load();
  s.SettleNow();
  Look();
  EXPECT_EQ(gateway_->settle_calls.load(), calls) << "dead channels are never retried";
  ExpectExact();
}

TEST_F(SettlementE2E, GatewayMapsTheLedgersAnswers) {
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::UNAVAILABLE), GatewayErrc::kUnreachable);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::DEADLINE_EXCEEDED), GatewayErrc::kUnreachable);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::CANCELLED), GatewayErrc::kUnreachable);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::INTERNAL), GatewayErrc::kUnreachable);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::ALREADY_EXISTS), GatewayErrc::kReplay);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::NOT_FOUND), GatewayErrc::kUnknownChannel);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::RESOURCE_EXHAUSTED), GatewayErrc::kBatchTooLarge);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::FAILED_PRECONDITION), GatewayErrc::kRejected);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::UNAUTHENTICATED), GatewayErrc::kRejected);
  EXPECT_EQ(GatewayErrcFor(grpc::StatusCode::INVALID_ARGUMENT), GatewayErrc::kRejected);

  RpcLedgerGateway& g = *rpc_;
  const auto soon = [] { return steady_clock::now() + std::chrono::seconds(5); };
  auto params = g.GetParams(soon());
  ASSERT_TRUE(params) << params.error().message;
  EXPECT_EQ(params->id, id_);
  EXPECT_EQ(params->challenge_period_seconds, kChallenge);
  EXPECT_EQ(params->max_batch_items, 5000u);
  EXPECT_EQ(g.LastNonce(provider_addr_, soon()).value_or(99), 0u);

  Chan& a = Open(kCredit);
  auto ch = g.GetChannel(a.id, soon());
  ASSERT_TRUE(ch) << ch.error().message;
  EXPECT_EQ(ch->deposit, Micro(kCredit));
  auto missing = g.GetChannel(ChannelId{}, soon());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, GatewayErrc::kUnknownChannel);

  std::vector<SignedPromise> promises = {ledger::MakePromise(a.client, id_, a.id, Micro(10))};
  auto ok = g.SettleBatch(ledger::MakeSettleBatch(provider_, id_, 5, promises), soon());
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(g.LastNonce(provider_addr_, soon()).value_or(0), 5u);
  auto replay = g.SettleBatch(ledger::MakeSettleBatch(provider_, id_, 5, promises), soon());
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error().code, GatewayErrc::kReplay);
  const LedgerId other = LedgerIdFor("elsewhere", operator_.public_key());
  auto wrong = g.SettleBatch(ledger::MakeSettleBatch(provider_, other, 6, promises), soon());
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, GatewayErrc::kRejected);
  auto late = g.LastNonce(provider_addr_, steady_clock::now() - milliseconds(1));
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, GatewayErrc::kUnreachable);

  ledger_->Kill();
  const auto t = steady_clock::now();
  auto down = g.LastNonce(provider_addr_, soon());
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, GatewayErrc::kUnreachable);
  EXPECT_LT(steady_clock::now() - t, std::chrono::seconds(3)) << "bounded by call_timeout";
}

}  // namespace
}  // namespace dvpn::payments
