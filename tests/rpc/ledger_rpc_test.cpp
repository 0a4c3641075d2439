// The gRPC layer of the ledger, in process: a LedgerServer on 127.0.0.1:0 over a SQLite file in
// a temp dir, driven through LedgerClient and through the raw generated stub with hand-made
// bad protos. Every refused request must get its exact status code and leave the state
// (accounts, channels, history, totals) unchanged.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>

#include "common/amount.h"
#include "common/clock.h"
#include "dvpn/v1/ledger.grpc.pb.h"
#include "ledger/ledger.h"
#include "ledger/requests.h"
#include "ledger/rpc/convert.h"
#include "ledger/rpc/ledger_client.h"
#include "ledger/rpc/ledger_service.h"
#include "ledger/sqlite_store.h"
#include "tests/support/subprocess.h"

namespace dvpn {
// Readable amounts in assertion failures.
void PrintTo(const Amount& amount, std::ostream* os) { *os << amount.ToString() << " credits"; }
}  // namespace dvpn

namespace dvpn::ledger::rpc {
namespace {

using payments::PrivateKey;
using std::chrono::milliseconds;

constexpr uint64_t kStart = 1'700'000'000;
constexpr uint32_t kMaxBatch = 20;
constexpr uint64_t kChallenge = 3600;
constexpr Amount Micro(uint64_t v) { return Amount::FromMicro(v); }

// Collects a WatchAccount stream on its own thread so the test can wait with a deadline.
class WatchCollector {
 public:
  explicit WatchCollector(std::unique_ptr<AccountWatch> watch)
      : watch_(std::move(watch)), thread_([this] { Run(); }) {}
  ~WatchCollector() {
    watch_->Cancel();
    thread_.join();
  }

  // True once at least `n` movements arrived within `timeout`.
  bool WaitForCount(size_t n, milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return movements_.size() >= n; });
  }
  // True once the stream ended within `timeout`.
  bool WaitForEnd(milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return ended_; });
  }
  std::vector<Movement> movements() {
    std::lock_guard lock(mu_);
    return movements_;
  }
  // After WaitForEnd: how the stream ended.
  RpcResult<void> end() {
    std::lock_guard lock(mu_);
    return end_;
  }

 private:
  void Run() {
    while (auto m = watch_->Next()) {
      std::lock_guard lock(mu_);
      movements_.push_back(*m);
      cv_.notify_all();
    }
    auto end = watch_->Finish();
    std::lock_guard lock(mu_);
    end_ = end;
    ended_ = true;
    cv_.notify_all();
  }

  std::unique_ptr<AccountWatch> watch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Movement> movements_;
  bool ended_ = false;
  RpcResult<void> end_;
  std::thread thread_;  // last: starts after the members it uses
};

class LedgerRpcTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(LedgerServerOptions{}); }

  void StartServer(LedgerServerOptions options) {
    server_.reset();
    client_.reset();
    ledger_.reset();
    LedgerConfig config{.name = "rpc-test",
                        .operator_key = operator_.public_key(),
                        .challenge_period_seconds = kChallenge,
                        .max_batch_items = kMaxBatch,
                        .verify_threads = 2};
    id_ = payments::LedgerIdFor(config.name, config.operator_key);
    auto store = OpenSqliteStore(dir_.File("ledger.db"), id_);
    ASSERT_TRUE(store) << store.error().message;
    ledger_ = std::make_unique<Ledger>(config, *std::move(store), clock_);
    options.listen_address = "127.0.0.1:0";
    options.max_watchers = 3;
    options.finalize_interval = milliseconds(20);
    auto server = LedgerServer::Start(*ledger_, clock_, options);
    ASSERT_TRUE(server) << server.error().message;
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    channel_ = LedgerClient::MakeChannel(server_->address());
    client_ = std::make_unique<LedgerClient>(channel_, milliseconds(5000));
    stub_ = v1::Ledger::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(milliseconds(500));
  }

  static Address Addr(const PrivateKey& key) { return Address::FromPublicKey(key.public_key()); }

  std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return ctx;
  }

  AccountState Deposit(const PrivateKey& to, uint64_t micro) {
    auto r = client_->Deposit(MakeDeposit(operator_, id_, Addr(to), Micro(micro), ++op_nonce_));
    EXPECT_TRUE(r) << r.error().message;
    return r.value_or(AccountState{});
  }

  ChannelId Open(const PrivateKey& client, const PrivateKey& provider, uint64_t micro,
                 uint64_t nonce) {
    auto req = MakeOpenChannel(client, id_, Addr(provider), Micro(micro), nonce,
                               clock_.NowSeconds() + 86400);
    auto r = client_->OpenChannel(req);
    if (!r) {
      ADD_FAILURE() << r.error().message;
    } else {
      EXPECT_EQ(r->id, ChannelIdOf(req));
      EXPECT_EQ(r->deposit, Micro(micro));
      EXPECT_EQ(r->status, ChannelStatus::kOpen);
    }
    return ChannelIdOf(req);
  }

  // Everything a refused request must leave untouched, as text so a diff is readable.
  std::string Snapshot() {
    std::ostringstream out;
    auto info = client_->GetInfo();
    EXPECT_TRUE(info) << info.error().message;
    if (info) {
      out << "totals " << info->totals.deposited.micro() << " " << info->totals.withdrawn.micro()
          << "\n";
    }
    for (const PrivateKey* key : {&operator_, &alice_, &bob_, &provider_, &mallory_}) {
      Address a = Addr(*key);
      auto acct = client_->GetAccount(a);
      EXPECT_TRUE(acct) << acct.error().message;
      if (acct) {
        out << a.ToString() << " balance " << acct->balance.micro() << " nonce " << acct->last_nonce
            << " escrowed " << acct->escrowed.micro() << "\n";
      }
      auto channels = client_->ListChannels(a, 500);
      EXPECT_TRUE(channels);
      if (channels) {
        for (const ChannelState& c : *channels) {
          out << "  channel " << ToHex(c.id.bytes) << " deposit " << c.deposit.micro()
              << " settled " << c.settled.micro() << " refunded " << c.refunded.micro()
              << " status " << int(c.status) << " expiry " << c.expiry_unix << " deadline "
              << c.close_deadline_unix << "\n";
        }
      }
      auto history = client_->History(a, 0, 1000);
      EXPECT_TRUE(history);
      if (history) {
        out << "  movements " << history->movements.size();
        if (!history->movements.empty()) out << " last " << history->movements.back().seq;
        out << "\n";
      }
    }
    return out.str();
  }

  // A funded world: alice and bob have balances, alice has a channel to provider.
  void Fund() {
    Deposit(alice_, 1'000'000);
    Deposit(bob_, 500'000);
    channel_a_ = Open(alice_, provider_, 300'000, ++alice_nonce_);
  }

  dvpn::testing::TempDir dir_;
  ManualClock clock_{kStart};
  PrivateKey operator_ = PrivateKey::Generate();
  PrivateKey alice_ = PrivateKey::Generate();
  PrivateKey bob_ = PrivateKey::Generate();
  PrivateKey provider_ = PrivateKey::Generate();
  PrivateKey mallory_ = PrivateKey::Generate();
  LedgerId id_;
  uint64_t op_nonce_ = 0;
  uint64_t alice_nonce_ = 0;
  uint64_t provider_nonce_ = 0;
  ChannelId channel_a_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<LedgerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<LedgerClient> client_;
  std::unique_ptr<v1::Ledger::Stub> stub_;
};

// --- the happy path through LedgerClient ------------------------------------------------------

TEST_F(LedgerRpcTest, InfoDescribesTheLedger) {
  auto info = client_->GetInfo();
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->id, id_);
  EXPECT_EQ(info->name, "rpc-test");
  EXPECT_EQ(info->operator_key, operator_.public_key());
  EXPECT_EQ(info->operator_address, Addr(operator_));
  EXPECT_EQ(info->challenge_period_seconds, kChallenge);
  EXPECT_EQ(info->max_batch_items, kMaxBatch);
  EXPECT_EQ(info->server_time_unix, kStart);
  EXPECT_TRUE(info->totals.deposited.IsZero());
}

TEST_F(LedgerRpcTest, FullChannelLifecycle) {
  Fund();
  auto alice = client_->GetAccount(Addr(alice_));
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->balance, Micro(700'000));
  EXPECT_EQ(alice->escrowed, Micro(300'000));
  EXPECT_EQ(alice->last_nonce, 1u);

  // Settle two promises (the second one repeated: moves nothing the second time).
  auto p1 = MakePromise(alice_, id_, channel_a_, Micro(100'000));
  auto r1 = client_->SettleBatch(MakeSettleBatch(provider_, id_, ++provider_nonce_, {p1}));
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_EQ(r1->items.size(), 1u);
  EXPECT_EQ(r1->items[0].outcome, SettleOutcome::kSettled);
  EXPECT_EQ(r1->items[0].moved, Micro(100'000));
  EXPECT_EQ(r1->provider_balance, Micro(100'000));
  auto r2 = client_->SettleBatch(MakeSettleBatch(provider_, id_, ++provider_nonce_, {p1}));
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->items[0].outcome, SettleOutcome::kAlreadySettled);
  EXPECT_TRUE(r2->items[0].moved.IsZero());
  EXPECT_TRUE(r2->total_moved.IsZero());

  // Top up, then close as the client: closing, then closed after the challenge period.
  auto topped = client_->TopUpChannel(
      MakeTopUpChannel(alice_, id_, channel_a_, Micro(50'000), ++alice_nonce_, 0));
  ASSERT_TRUE(topped) << topped.error().message;
  EXPECT_EQ(topped->deposit, Micro(350'000));
  auto closing = client_->CloseChannel(MakeCloseChannel(alice_, id_, channel_a_, ++alice_nonce_));
  ASSERT_TRUE(closing) << closing.error().message;
  EXPECT_EQ(closing->status, ChannelStatus::kClosing);
  EXPECT_EQ(closing->close_deadline_unix, kStart + kChallenge);

  clock_.Advance(kChallenge + 1);
  // The server's finalizer runs every 20 ms here; poll with a deadline.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::optional<ChannelState> closed;
  while (std::chrono::steady_clock::now() < deadline) {
    auto c = client_->GetChannel(channel_a_);
    ASSERT_TRUE(c);
    if (c->status == ChannelStatus::kClosed) {
      closed = *c;
      break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(closed) << "channel not finalized after the challenge period";
  EXPECT_EQ(closed->settled, Micro(100'000));
  EXPECT_EQ(closed->refunded, Micro(250'000));
  alice = client_->GetAccount(Addr(alice_));
  EXPECT_EQ(alice->balance, Micro(900'000));
  EXPECT_TRUE(alice->escrowed.IsZero());

  // Withdraw and check the totals.
  auto w = client_->Withdraw(MakeWithdraw(alice_, id_, Micro(400'000), ++alice_nonce_, "iban:1"));
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->balance, Micro(500'000));
  auto info = client_->GetInfo();
  EXPECT_EQ(info->totals.deposited, Micro(1'500'000));
  EXPECT_EQ(info->totals.withdrawn, Micro(400'000));

  // History pages one movement at a time and ends with next_after_seq == 0.
  std::vector<Movement> all;
  uint64_t after = 0;
  for (int page = 0; page < 100; ++page) {
    auto h = client_->History(Addr(alice_), after, 1);
    ASSERT_TRUE(h) << h.error().message;
    all.insert(all.end(), h->movements.begin(), h->movements.end());
    if (h->next_after_seq == 0) break;
    after = h->next_after_seq;
  }
  auto whole = client_->History(Addr(alice_), 0, 1000);
  ASSERT_TRUE(whole);
  ASSERT_EQ(all.size(), whole->movements.size());
  ASSERT_GE(all.size(), 5u);  // deposit, lock, top-up lock, (settle pay), refund, withdraw
  EXPECT_EQ(all.front().kind, MovementKind::kDeposit);
  EXPECT_EQ(all.back().kind, MovementKind::kWithdraw);
  EXPECT_EQ(all.back().balance_after, Micro(500'000));
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].seq, all[i - 1].seq);
  // The withdrawal's destination reaches the operator; no other movement has one.
  EXPECT_EQ(all.back().destination, "iban:1");
  for (size_t i = 0; i + 1 < all.size(); ++i) EXPECT_EQ(all[i].destination, "") << i;
  {
    v1::HistoryRequest req;
    req.set_address(Addr(alice_).ToString());
    req.set_after_seq(all[all.size() - 2].seq);
    v1::HistoryReply reply;
    ASSERT_TRUE(stub_->History(Ctx().get(), req, &reply).ok());
    ASSERT_EQ(reply.movements_size(), 1);
    EXPECT_EQ(reply.movements(0).kind(), v1::MOVEMENT_KIND_WITHDRAW);
    EXPECT_EQ(reply.movements(0).destination(), "iban:1");
  }

  auto listed = client_->ListChannels(Addr(provider_));
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().id, channel_a_);
  EXPECT_EQ(listed->front().client_key, alice_.public_key());
}

TEST_F(LedgerRpcTest, PromiseAtTheIntegerLimitIsCappedByTheEscrow) {
  Fund();
  auto p = MakePromise(alice_, id_, channel_a_, Amount::Max());
  auto r = client_->SettleBatch(MakeSettleBatch(provider_, id_, ++provider_nonce_, {p}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kSettledCapped);
  EXPECT_EQ(r->items[0].moved, Micro(300'000));
  EXPECT_EQ(r->items[0].channel_settled, Micro(300'000));
  auto again = client_->SettleBatch(MakeSettleBatch(provider_, id_, ++provider_nonce_, {p}));
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->items[0].moved.IsZero());
}

TEST_F(LedgerRpcTest, PerItemRefusalsInABatch) {
  Fund();
  ChannelId unknown{};
  unknown.bytes.fill(0x42);
  auto good = MakePromise(alice_, id_, channel_a_, Micro(1000));
  auto forged = MakePromise(mallory_, id_, channel_a_, Micro(2000));  // not alice's signature
  auto stranger = MakePromise(alice_, id_, unknown, Micro(1000));
  auto r = client_->SettleBatch(
      MakeSettleBatch(provider_, id_, ++provider_nonce_, {forged, stranger, good}));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->items.size(), 3u);
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kBadSignature);
  EXPECT_TRUE(r->items[0].moved.IsZero());
  EXPECT_EQ(r->items[1].outcome, SettleOutcome::kUnknownChannel);
  EXPECT_EQ(r->items[2].outcome, SettleOutcome::kSettled);
  EXPECT_EQ(r->total_moved, Micro(1000));

  // Another provider cannot collect alice's channel.
  auto theft = client_->SettleBatch(MakeSettleBatch(mallory_, id_, 1, {good}));
  ASSERT_TRUE(theft) << theft.error().message;
  EXPECT_EQ(theft->items[0].outcome, SettleOutcome::kNotYourChannel);
  EXPECT_TRUE(theft->total_moved.IsZero());
}

// --- refusals: exact code, state unchanged ----------------------------------------------------

TEST_F(LedgerRpcTest, ForgedSignatureIsUnauthenticated) {
  Fund();
  std::string before = Snapshot();
  // Mallory signs a deposit but claims to be the operator.
  v1::DepositRequest msg;
  ToProto(MakeDeposit(mallory_, id_, Addr(mallory_), Micro(1'000'000), op_nonce_ + 1), &msg);
  msg.set_signer_pubkey(BytesToString(operator_.public_key().bytes()));
  v1::Account reply;
  grpc::Status st = stub_->Deposit(Ctx().get(), msg, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();

  // A valid batch with one bit of its signature flipped.
  v1::SettleBatchRequest batch;
  ToProto(MakeSettleBatch(provider_, id_, provider_nonce_ + 1,
                          {MakePromise(alice_, id_, channel_a_, Micro(5000))}),
          &batch);
  std::string sig = batch.signature();
  sig[10] ^= 0x01;
  batch.set_signature(sig);
  v1::SettleBatchReply settle_reply;
  st = stub_->SettleBatch(Ctx().get(), batch, &settle_reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();

  // Through the client: a forged top-up (fields changed after signing).
  auto topup = MakeTopUpChannel(alice_, id_, channel_a_, Micro(10), alice_nonce_ + 1, 0);
  topup.amount = Micro(100'000);
  auto r = client_->TopUpChannel(topup);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, grpc::StatusCode::UNAUTHENTICATED) << r.error().message;
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, TruncatedSignatureIsInvalidArgument) {
  Fund();
  std::string before = Snapshot();
  v1::DepositRequest msg;
  ToProto(MakeDeposit(operator_, id_, Addr(bob_), Micro(10), op_nonce_ + 1), &msg);
  msg.set_signature(msg.signature().substr(0, 63));
  v1::Account reply;
  grpc::Status st = stub_->Deposit(Ctx().get(), msg, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("signature: expected 64 bytes, got 63"), std::string::npos)
      << st.error_message();

  v1::SettleBatchRequest batch;
  ToProto(MakeSettleBatch(provider_, id_, provider_nonce_ + 1,
                          {MakePromise(alice_, id_, channel_a_, Micro(5000))}),
          &batch);
  batch.mutable_promises(0)->set_signature(batch.promises(0).signature().substr(0, 63));
  v1::SettleBatchReply settle_reply;
  st = stub_->SettleBatch(Ctx().get(), batch, &settle_reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("promises[0].signature"), std::string::npos)
      << st.error_message();

  // An empty signature is malformed too, not merely wrong.
  msg.clear_signature();
  st = stub_->Deposit(Ctx().get(), msg, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, WrongLedgerIdIsFailedPrecondition) {
  Fund();
  std::string before = Snapshot();
  LedgerId other = payments::LedgerIdFor("another-ledger", operator_.public_key());
  auto r = client_->Deposit(MakeDeposit(operator_, other, Addr(bob_), Micro(10), op_nonce_ + 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, grpc::StatusCode::FAILED_PRECONDITION) << r.error().message;

  auto s = client_->SettleBatch(MakeSettleBatch(
      provider_, other, provider_nonce_ + 1, {MakePromise(alice_, other, channel_a_, Micro(5))}));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, grpc::StatusCode::FAILED_PRECONDITION) << s.error().message;

  // A missing ledger id is malformed.
  v1::DepositRequest msg;
  ToProto(MakeDeposit(operator_, id_, Addr(bob_), Micro(10), op_nonce_ + 1), &msg);
  msg.clear_ledger_id();
  v1::Account reply;
  grpc::Status st = stub_->Deposit(Ctx().get(), msg, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("ledger_id"), std::string::npos) << st.error_message();
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, ReplayIsAlreadyExists) {
  Fund();
  auto deposit = MakeDeposit(operator_, id_, Addr(bob_), Micro(10), ++op_nonce_);
  ASSERT_TRUE(client_->Deposit(deposit));
  auto batch = MakeSettleBatch(provider_, id_, ++provider_nonce_,
                               {MakePromise(alice_, id_, channel_a_, Micro(5000))});
  ASSERT_TRUE(client_->SettleBatch(batch));
  std::string before = Snapshot();

  auto r = client_->Deposit(deposit);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, grpc::StatusCode::ALREADY_EXISTS) << r.error().message;
  auto s = client_->SettleBatch(batch);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, grpc::StatusCode::ALREADY_EXISTS) << s.error().message;
  // An older nonce, freshly signed, is a replay as well.
  auto older = client_->Deposit(MakeDeposit(operator_, id_, Addr(bob_), Micro(99), 1));
  ASSERT_FALSE(older);
  EXPECT_EQ(older.error().code, grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, UnknownChannelIsNotFound) {
  Fund();
  std::string before = Snapshot();
  ChannelId unknown{};
  unknown.bytes.fill(0x17);
  auto g = client_->GetChannel(unknown);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, grpc::StatusCode::NOT_FOUND);
  auto t =
      client_->TopUpChannel(MakeTopUpChannel(alice_, id_, unknown, Micro(10), alice_nonce_ + 1, 0));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, grpc::StatusCode::NOT_FOUND) << t.error().message;
  auto c = client_->CloseChannel(MakeCloseChannel(alice_, id_, unknown, alice_nonce_ + 1));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, grpc::StatusCode::NOT_FOUND) << c.error().message;

  // A channel id of the wrong size is malformed, not unknown.
  v1::GetChannelRequest req;
  req.set_channel_id(std::string(31, 'x'));
  v1::Channel reply;
  grpc::Status st = stub_->GetChannel(Ctx().get(), req, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, OverflowIsOutOfRange) {
  Fund();
  std::string before = Snapshot();
  auto r = client_->Deposit(MakeDeposit(operator_, id_, Addr(bob_), Amount::Max(), op_nonce_ + 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, grpc::StatusCode::OUT_OF_RANGE) << r.error().message;
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, OversizedBatchIsResourceExhausted) {
  Fund();
  std::string before = Snapshot();
  std::vector<SignedPromise> promises;
  for (uint32_t i = 0; i <= kMaxBatch; ++i) {
    promises.push_back(MakePromise(alice_, id_, channel_a_, Micro(1 + i)));
  }
  auto r = client_->SettleBatch(MakeSettleBatch(provider_, id_, provider_nonce_ + 1, promises));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, grpc::StatusCode::RESOURCE_EXHAUSTED) << r.error().message;

  // The same through the raw stub with junk promises: refused before any item is looked at.
  v1::SettleBatchRequest batch;
  ToProto(MakeSettleBatch(provider_, id_, provider_nonce_ + 1, {}), &batch);
  for (uint32_t i = 0; i < 10 * kMaxBatch; ++i) batch.add_promises()->set_cumulative(i);
  v1::SettleBatchReply reply;
  grpc::Status st = stub_->SettleBatch(Ctx().get(), batch, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();

  // Exactly max_batch_items is fine.
  promises.pop_back();
  auto ok = client_->SettleBatch(MakeSettleBatch(provider_, id_, ++provider_nonce_, promises));
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->items.size(), kMaxBatch);
  EXPECT_EQ(ok->total_moved, Micro(kMaxBatch));
}

TEST_F(LedgerRpcTest, OversizedMessageIsRefusedByTheTransport) {
  Fund();
  std::string before = Snapshot();
  // 17 MiB, over the server's 16 MiB receive limit; a channel without a client-side limit.
  auto plain = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Ledger::NewStub(plain);
  v1::SettleBatchRequest batch;
  ToProto(MakeSettleBatch(provider_, id_, provider_nonce_ + 1, {}), &batch);
  batch.add_promises()->set_channel_id(std::string(17 * 1024 * 1024, 'x'));
  v1::SettleBatchReply reply;
  grpc::Status st = stub->SettleBatch(Ctx().get(), batch, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  // The server is still fine.
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, MalformedAddressIsInvalidArgument) {
  Fund();
  std::string before = Snapshot();
  std::string good = Addr(bob_).ToString();
  std::string bad_checksum = good;
  bad_checksum.back() = bad_checksum.back() == '0' ? '1' : '0';
  for (const std::string& text :
       {std::string("not-an-address"), std::string("dv1234"), bad_checksum,
        std::string("DV") + good.substr(2), std::string(5000, 'a'), std::string()}) {
    v1::GetAccountRequest req;
    req.set_address(text);
    v1::Account reply;
    grpc::Status st = stub_->GetAccount(Ctx().get(), req, &reply);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << text;
    EXPECT_NE(st.error_message().find("address"), std::string::npos);
    EXPECT_LT(st.error_message().size(), 400u) << "echoes unbounded input";

    v1::DepositRequest dep;
    ToProto(MakeDeposit(operator_, id_, Addr(bob_), Micro(10), op_nonce_ + 1), &dep);
    dep.set_to(text);
    v1::Account dep_reply;
    st = stub_->Deposit(Ctx().get(), dep, &dep_reply);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << text;
    EXPECT_NE(st.error_message().find("to:"), std::string::npos) << st.error_message();

    v1::OpenChannelRequest open;
    ToProto(
        MakeOpenChannel(alice_, id_, Addr(provider_), Micro(10), alice_nonce_ + 1, kStart + 1000),
        &open);
    open.set_provider(text);
    v1::Channel open_reply;
    st = stub_->OpenChannel(Ctx().get(), open, &open_reply);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << text;
  }
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, MalformedPublicKeyIsInvalidArgument) {
  Fund();
  std::string before = Snapshot();
  for (const std::string& key :
       {std::string(31, '\x02'), std::string(33, '\x02'), std::string(32, '\xff'), std::string()}) {
    v1::WithdrawRequest msg;
    ToProto(MakeWithdraw(alice_, id_, Micro(10), alice_nonce_ + 1, "x"), &msg);
    msg.set_signer_pubkey(key);
    v1::Account reply;
    grpc::Status st = stub_->Withdraw(Ctx().get(), msg, &reply);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << key.size();
    EXPECT_NE(st.error_message().find("signer_pubkey"), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LedgerRpcTest, OtherRefusalsMapToTheirCodes) {
  Fund();
  std::string before = Snapshot();
  // Not the operator: permission denied.
  auto mint = client_->Deposit(MakeDeposit(mallory_, id_, Addr(mallory_), Micro(10), 1));
  ASSERT_FALSE(mint);
  EXPECT_EQ(mint.error().code, grpc::StatusCode::PERMISSION_DENIED) << mint.error().message;
  // More than the balance.
  auto w = client_->Withdraw(MakeWithdraw(bob_, id_, Micro(500'001), 1, "x"));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, grpc::StatusCode::FAILED_PRECONDITION) << w.error().message;
  // Zero amount.
  auto zero =
      client_->OpenChannel(MakeOpenChannel(bob_, id_, Addr(provider_), Micro(0), 1, kStart + 1000));
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, grpc::StatusCode::INVALID_ARGUMENT) << zero.error().message;
  // Messages name the error and say what was wrong.
  EXPECT_NE(w.error().message.find(ErrcName(Errc::kInsufficientBalance)), std::string::npos)
      << w.error().message;
  // Destination longer than the signed format allows.
  auto longdest = client_->Withdraw(MakeWithdraw(bob_, id_, Micro(1), 1, std::string(129, 'd')));
  ASSERT_FALSE(longdest);
  EXPECT_EQ(longdest.error().code, grpc::StatusCode::INVALID_ARGUMENT);
  // A destination that would steer the operator's terminal.
  auto escape = client_->Withdraw(MakeWithdraw(bob_, id_, Micro(1), 1, "\x1b]0;pwned\x07"));
  ASSERT_FALSE(escape);
  EXPECT_EQ(escape.error().code, grpc::StatusCode::INVALID_ARGUMENT) << escape.error().message;
  EXPECT_EQ(Snapshot(), before);

  // A closed channel is not open: FAILED_PRECONDITION.
  ASSERT_TRUE(client_->CloseChannel(MakeCloseChannel(provider_, id_, channel_a_, 1)));
  auto again = client_->TopUpChannel(
      MakeTopUpChannel(alice_, id_, channel_a_, Micro(10), ++alice_nonce_, 0));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, grpc::StatusCode::FAILED_PRECONDITION) << again.error().message;
}

TEST(LedgerRpcMapping, EveryErrcHasItsCode) {
  EXPECT_EQ(StatusCodeFor(Errc::kInvalidArgument), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(StatusCodeFor(Errc::kWrongLedger), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(StatusCodeFor(Errc::kBadSignature), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(StatusCodeFor(Errc::kNotPermitted), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(StatusCodeFor(Errc::kReplay), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(StatusCodeFor(Errc::kUnknownChannel), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(StatusCodeFor(Errc::kInsufficientBalance), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(StatusCodeFor(Errc::kOverflow), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(StatusCodeFor(Errc::kChannelNotOpen), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(StatusCodeFor(Errc::kBatchTooLarge), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(StatusCodeFor(Errc::kStorage), grpc::StatusCode::UNAVAILABLE);
  auto st = ToStatus(Error<Errc>{Errc::kReplay, "nonce 5 is not greater than 7"});
  EXPECT_EQ(st.error_message(),
            std::string(ErrcName(Errc::kReplay)) + ": nonce 5 is not greater than 7");
}

TEST(LedgerRpcConvert, RequestsSurviveTheRoundTrip) {
  auto op = PrivateKey::Generate();
  auto client = PrivateKey::Generate();
  LedgerId id = payments::LedgerIdFor("x", op.public_key());
  auto open =
      MakeOpenChannel(client, id, Address::FromPublicKey(op.public_key()), Micro(77), 9, 12345);
  v1::OpenChannelRequest msg;
  ToProto(open, &msg);
  auto back = FromProto(msg);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->auth.ledger_id, id);
  EXPECT_EQ(back->auth.nonce, 9u);
  EXPECT_EQ(back->auth.signer, client.public_key());
  EXPECT_EQ(back->auth.signature, open.auth.signature);
  EXPECT_EQ(back->provider, open.provider);
  EXPECT_EQ(back->amount, Micro(77));
  EXPECT_EQ(back->expiry_unix, 12345u);
}

// --- WatchAccount -----------------------------------------------------------------------------

TEST_F(LedgerRpcTest, WatchSeesHistoryThenLiveMovements) {
  Deposit(alice_, 1000);
  Deposit(bob_, 1000);
  WatchCollector watch(client_->WatchAccount(Addr(alice_), 0));
  ASSERT_TRUE(watch.WaitForCount(1, milliseconds(5000)));
  EXPECT_EQ(watch.movements()[0].kind, MovementKind::kDeposit);

  Deposit(bob_, 1);  // not alice's: must not appear
  Deposit(alice_, 250);
  ASSERT_TRUE(watch.WaitForCount(2, milliseconds(5000)));
  Open(alice_, provider_, 600, ++alice_nonce_);
  ASSERT_TRUE(watch.WaitForCount(3, milliseconds(5000)));
  auto seen = watch.movements();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[1].kind, MovementKind::kDeposit);
  EXPECT_EQ(seen[1].amount, Micro(250));
  EXPECT_EQ(seen[1].balance_after, Micro(1250));
  EXPECT_EQ(seen[2].kind, MovementKind::kEscrowLock);
  for (const Movement& m : seen) EXPECT_EQ(m.account, Addr(alice_));

  // The same as History.
  auto history = client_->History(Addr(alice_), 0, 100);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->movements.size(), seen.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(history->movements[i].seq, seen[i].seq);

  // Resuming after a seq skips what was seen.
  WatchCollector resumed(client_->WatchAccount(Addr(alice_), seen[1].seq));
  ASSERT_TRUE(resumed.WaitForCount(1, milliseconds(5000)));
  EXPECT_EQ(resumed.movements()[0].seq, seen[2].seq);
}

TEST_F(LedgerRpcTest, TooManyWatchersAreRefused) {
  Deposit(alice_, 1000);
  std::vector<std::unique_ptr<WatchCollector>> watchers;
  for (int i = 0; i < 3; ++i) {  // the fixture allows 3
    watchers.push_back(std::make_unique<WatchCollector>(client_->WatchAccount(Addr(alice_), 0)));
    ASSERT_TRUE(watchers.back()->WaitForCount(1, milliseconds(5000)));
  }
  WatchCollector extra(client_->WatchAccount(Addr(alice_), 0));
  ASSERT_TRUE(extra.WaitForEnd(milliseconds(5000)));
  ASSERT_FALSE(extra.end());
  EXPECT_EQ(extra.end().error().code, grpc::StatusCode::RESOURCE_EXHAUSTED);

  // A freed slot can be used again.
  watchers.pop_back();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool admitted = false;
  while (!admitted && std::chrono::steady_clock::now() < deadline) {
    WatchCollector again(client_->WatchAccount(Addr(alice_), 0));
    admitted = again.WaitForCount(1, milliseconds(1000));
  }
  EXPECT_TRUE(admitted);
}

TEST_F(LedgerRpcTest, MalformedWatchIsRefused) {
  v1::WatchAccountRequest req;
  req.set_address("nope");
  auto ctx = Ctx();
  auto reader = stub_->WatchAccount(ctx.get(), req);
  v1::Movement m;
  EXPECT_FALSE(reader->Read(&m));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(LedgerRpcTest, ShutdownEndsWatchersPromptly) {
  Deposit(alice_, 1000);
  WatchCollector watch(client_->WatchAccount(Addr(alice_), 0));
  ASSERT_TRUE(watch.WaitForCount(1, milliseconds(5000)));
  auto start = std::chrono::steady_clock::now();
  server_->Shutdown(milliseconds(5000));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(3));
  ASSERT_TRUE(watch.WaitForEnd(milliseconds(5000)));
  ASSERT_FALSE(watch.end());
  EXPECT_EQ(watch.end().error().code, grpc::StatusCode::UNAVAILABLE) << watch.end().error().message;
  // After shutdown the client gets a transport error, not a hang.
  LedgerClient late(channel_, milliseconds(1000));
  auto r = late.GetInfo();
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().code == grpc::StatusCode::UNAVAILABLE ||
              r.error().code == grpc::StatusCode::DEADLINE_EXCEEDED)
      << int(r.error().code);
}

// --- server reflection ------------------------------------------------------------------------

// Lists services through grpc.reflection.v1alpha.ServerReflection, as grpcurl would. The
// request and reply types come from the descriptors that libgrpc++_reflection registers.
TEST_F(LedgerRpcTest, ReflectionListsTheLedgerService) {
  using google::protobuf::Message;
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* req_desc =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest");
  const auto* rsp_desc =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse");
  ASSERT_NE(req_desc, nullptr);
  ASSERT_NE(rsp_desc, nullptr);
  auto* factory = google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<Message> req(factory->GetPrototype(req_desc)->New());
  std::unique_ptr<Message> rsp(factory->GetPrototype(rsp_desc)->New());
  req->GetReflection()->SetString(req.get(), req_desc->FindFieldByName("list_services"), "*");

  grpc::internal::RpcMethod method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                   grpc::internal::RpcMethod::BIDI_STREAMING);
  auto ctx = Ctx();
  std::unique_ptr<grpc::ClientReaderWriter<Message, Message>> stream(
      grpc::internal::ClientReaderWriterFactory<Message, Message>::Create(channel_.get(), method,
                                                                          ctx.get()));
  ASSERT_TRUE(stream->Write(*req));
  stream->WritesDone();
  ASSERT_TRUE(stream->Read(rsp.get()));
  while (stream->Read(rsp.get() /* drain */)) {
  }
  grpc::Status st = stream->Finish();
  ASSERT_TRUE(st.ok()) << st.error_message();

  const auto* list_field = rsp_desc->FindFieldByName("list_services_response");
  ASSERT_NE(list_field, nullptr);
  const Message& list = rsp->GetReflection()->GetMessage(*rsp, list_field);
  const auto* service_field = list.GetDescriptor()->FindFieldByName("service");
  std::vector<std::string> names;
  for (int i = 0; i < list.GetReflection()->FieldSize(list, service_field); ++i) {
    const Message& svc = list.GetReflection()->GetRepeatedMessage(list, service_field, i);
    names.push_back(
        svc.GetReflection()->GetString(svc, svc.GetDescriptor()->FindFieldByName("name")));
  }
  EXPECT_NE(std::find(names.begin(), names.end(), "dvpn.v1.Ledger"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "grpc.reflection.v1alpha.ServerReflection"),
            names.end());
}

}  // namespace
}  // namespace dvpn::ledger::rpc
