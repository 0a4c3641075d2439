// Rules of docs/ledger.md, one by one: every request kind, every error code, and proof that a
// refused request changes nothing observable.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/ledger/test_util.h"

namespace dvpn::ledger {
namespace {

using testing::Describe;
using testing::OtherLedger;
using testing::Snapshot;
using testing::Wallet;

constexpr uint64_t kStart = 1'700'000'000;
constexpr uint64_t kChallenge = 600;
constexpr uint64_t kHour = 3600;

Amount Micro(uint64_t v) { return Amount::FromMicro(v); }

// A placeholder returned after a failed expectation.
ChannelState Blank(const PublicKey& key) {
  return ChannelState{.id = {},
                      .client = {},
                      .client_key = key,
                      .provider = {},
                      .deposit = {},
                      .settled = {},
                      .refunded = {}};
}

// Asserts that `expr` was refused with `errc`, with a message, and that no observable state
// changed.
#define EXPECT_REFUSED(expr, errc)                                    \
  do {                                                                \
    const std::string before_ = State();                              \
    auto result_ = (expr);                                            \
    ASSERT_FALSE(result_.has_value()) << "accepted: " #expr;          \
    EXPECT_EQ(result_.error().code, errc) << result_.error().message; \
    EXPECT_FALSE(result_.error().message.empty());                    \
    EXPECT_EQ(State(), before_) << "state changed by refused " #expr; \
  } while (0)

class LedgerTest : public ::testing::Test {
 protected:
  LedgerTest() : clock_(kStart) { Open(":memory:"); }

  LedgerConfig Config() const {
    return LedgerConfig{.name = "test-ledger",
                        .operator_key = op_.key.public_key(),
                        .challenge_period_seconds = kChallenge,
                        .max_batch_items = 64,
                        .verify_threads = 2};
  }

  void Open(const std::string& path) {
    ledger_.reset();
    LedgerConfig config = Config();
    auto store = OpenSqliteStore(path, payments::LedgerIdFor(config.name, config.operator_key));
    ASSERT_TRUE(store.has_value()) << store.error().message;
    ledger_ = std::make_unique<Ledger>(config, std::move(*store), clock_);
  }

  const LedgerId& id() const { return ledger_->id(); }

  AccountState Fund(Wallet& w, uint64_t micro) {
    auto r = ledger_->Deposit(MakeDeposit(op_.key, id(), w.address, Micro(micro), op_.Next()));
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r.value_or(AccountState{});
  }

  ChannelState OpenChannel(Wallet& client, const Wallet& provider, uint64_t micro,
                           uint64_t expiry = kStart + kHour) {
    auto req =
        MakeOpenChannel(client.key, id(), provider.address, Micro(micro), client.Next(), expiry);
    auto r = ledger_->OpenChannel(req);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    if (!r) return Blank(client.key.public_key());
    channels_.push_back(r->id);
    return *r;
  }

  SignedPromise Promise(const Wallet& client, const ChannelId& ch, uint64_t cumulative) {
    return MakePromise(client.key, id(), ch, Micro(cumulative));
  }

  LedgerResult<SettleBatchResult> Settle(Wallet& provider, std::vector<SignedPromise> promises) {
    return ledger_->SettleBatch(
        MakeSettleBatch(provider.key, id(), provider.Next(), std::move(promises)));
  }

  AccountState Account(const Wallet& w) {
    auto r = ledger_->GetAccount(w.address);
    EXPECT_TRUE(r.has_value());
    return r.value_or(AccountState{});
  }

  ChannelState Channel(const ChannelId& ch) {
    auto r = ledger_->GetChannel(ch);
    EXPECT_TRUE(r.has_value());
    return r.value_or(Blank(op_.key.public_key()));
  }

  std::vector<Address> Addresses() const {
    return {op_.address, alice_.address, bob_.address, carol_.address};
  }
  std::string State() { return Snapshot(*ledger_, Addresses(), channels_); }
  void ExpectConservation() { testing::ExpectConservation(*ledger_, Addresses(), channels_); }

  Wallet op_, alice_, bob_, carol_;  // alice is the usual client, bob the usual provider
  std::vector<ChannelId> channels_;
  ManualClock clock_;
  std::unique_ptr<Ledger> ledger_;
};

// ---------------------------------------------------------------------------------------------
// Deposit

TEST_F(LedgerTest, DepositCreditsAccountTotalsAndHistory) {
  AccountState a = Fund(alice_, 5'000);
  EXPECT_EQ(a.address, alice_.address);
  EXPECT_EQ(a.balance, Micro(5'000));
  EXPECT_EQ(a.last_nonce, 0u);  // alice signed nothing
  EXPECT_EQ(Account(op_).last_nonce, 1u);
  EXPECT_EQ(Account(op_).balance, Amount::Zero());
  auto totals = ledger_->GetTotals();
  ASSERT_TRUE(totals);
  EXPECT_EQ(totals->deposited, Micro(5'000));
  EXPECT_EQ(totals->withdrawn, Amount::Zero());
  auto history = ledger_->History(alice_.address, 0, 10);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->size(), 1u);
  const Movement& m = history->front();
  EXPECT_GT(m.seq, 0u);
  EXPECT_EQ(m.time_unix, kStart);
  EXPECT_EQ(m.account, alice_.address);
  EXPECT_EQ(m.kind, MovementKind::kDeposit);
  EXPECT_EQ(m.amount, Micro(5'000));
  EXPECT_EQ(m.balance_after, Micro(5'000));
  EXPECT_EQ(m.counterparty, op_.address);
  EXPECT_FALSE(m.channel.has_value());
  Fund(alice_, 1);
  EXPECT_EQ(Account(alice_).balance, Micro(5'001));
  ExpectConservation();
}

TEST_F(LedgerTest, DepositToTheOperatorsOwnAccount) {
  Fund(op_, 10);
  Fund(op_, 20);
  AccountState a = Account(op_);
  EXPECT_EQ(a.balance, Micro(30));
  EXPECT_EQ(a.last_nonce, 2u);
  ExpectConservation();
}

TEST_F(LedgerTest, DepositRefusals) {
  Fund(alice_, 100);
  EXPECT_REFUSED(
      ledger_->Deposit(MakeDeposit(op_.key, OtherLedger(), alice_.address, Micro(1), op_.Next())),
      Errc::kWrongLedger);
  EXPECT_REFUSED(
      ledger_->Deposit(MakeDeposit(op_.key, id(), alice_.address, Amount::Zero(), op_.Next())),
      Errc::kInvalidArgument);
  // Signed by alice, a valid signature but not the operator.
  EXPECT_REFUSED(
      ledger_->Deposit(MakeDeposit(alice_.key, id(), alice_.address, Micro(1), alice_.Next())),
      Errc::kNotPermitted);
  {
    auto req = MakeDeposit(op_.key, id(), alice_.address, Micro(1), op_.Next());
    req.amount = Micro(1'000'000);  // tampered after signing
    EXPECT_REFUSED(ledger_->Deposit(req), Errc::kBadSignature);
    req = MakeDeposit(op_.key, id(), alice_.address, Micro(1), op_.Next());
    req.to = bob_.address;  // redirected
    EXPECT_REFUSED(ledger_->Deposit(req), Errc::kBadSignature);
    req = MakeDeposit(op_.key, id(), alice_.address, Micro(1), op_.Next());
    req.auth.signature[10] ^= 0x40;  // forged
    EXPECT_REFUSED(ledger_->Deposit(req), Errc::kBadSignature);
    req = MakeDeposit(op_.key, id(), alice_.address, Micro(1), op_.Next());
    req.auth.nonce += 1;  // nonce not what was signed
    EXPECT_REFUSED(ledger_->Deposit(req), Errc::kBadSignature);
    req = MakeDeposit(op_.key, id(), alice_.address, Micro(1), op_.Next());
    req.auth.signature = payments::Signature{};  // truncated to nothing
    EXPECT_REFUSED(ledger_->Deposit(req), Errc::kBadSignature);
  }
  {
    auto req = MakeDeposit(op_.key, id(), alice_.address, Micro(7), op_.Next());
    ASSERT_TRUE(ledger_->Deposit(req));
    EXPECT_REFUSED(ledger_->Deposit(req), Errc::kReplay);  // the same request again
    EXPECT_REFUSED(
        ledger_->Deposit(MakeDeposit(op_.key, id(), alice_.address, Micro(7), req.auth.nonce - 1)),
        Errc::kReplay);  // an older nonce
    EXPECT_REFUSED(ledger_->Deposit(MakeDeposit(op_.key, id(), alice_.address, Micro(7), 0)),
                   Errc::kReplay);
  }
  EXPECT_EQ(Account(alice_).balance, Micro(107));
  ExpectConservation();
}

TEST_F(LedgerTest, DepositsAreBoundedByUint64Max) {
  Fund(alice_, UINT64_MAX - 1);
  Fund(bob_, 1);  // total now exactly UINT64_MAX
  EXPECT_EQ(ledger_->GetTotals()->deposited, Amount::Max());
  EXPECT_REFUSED(ledger_->Deposit(MakeDeposit(op_.key, id(), carol_.address, Micro(1), op_.Next())),
                 Errc::kOverflow);
  EXPECT_REFUSED(
      ledger_->Deposit(MakeDeposit(op_.key, id(), bob_.address, Amount::Max(), op_.Next())),
      Errc::kOverflow);
  // Withdrawing does not make room: deposits count what was ever minted.
  ASSERT_TRUE(ledger_->Withdraw(MakeWithdraw(bob_.key, id(), Micro(1), bob_.Next(), "bank")));
  EXPECT_REFUSED(ledger_->Deposit(MakeDeposit(op_.key, id(), bob_.address, Micro(1), op_.Next())),
                 Errc::kOverflow);
  // Nonce UINT64_MAX is valid, and then nothing more can be signed by that key.
  ASSERT_TRUE(ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(5), UINT64_MAX, "bank")));
  EXPECT_REFUSED(ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(5), UINT64_MAX, "bank")),
                 Errc::kReplay);
  EXPECT_EQ(Account(alice_).balance, Micro(UINT64_MAX - 6));
  ExpectConservation();
}

// ---------------------------------------------------------------------------------------------
// Withdraw

TEST_F(LedgerTest, WithdrawDebitsAndCountsTotals) {
  Fund(alice_, 1'000);
  auto r = ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(400), alice_.Next(), "iban:1"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->balance, Micro(600));
  EXPECT_EQ(r->last_nonce, 1u);
  EXPECT_EQ(ledger_->GetTotals()->withdrawn, Micro(400));
  auto history = ledger_->History(alice_.address, 0, 10);
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ(history->back().kind, MovementKind::kWithdraw);
  EXPECT_EQ(history->back().amount, Micro(400));
  EXPECT_EQ(history->back().balance_after, Micro(600));
  // The operator learns where to pay from the movement; other kinds carry no destination.
  EXPECT_EQ(history->back().destination, "iban:1");
  EXPECT_EQ(history->front().destination, "");
  // Everything, with a destination of the maximum length.
  const std::string longest(payments::kMaxWithdrawDestination, 'd');
  r = ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(600), alice_.Next(), longest));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->balance, Amount::Zero());
  history = ledger_->History(alice_.address, 0, 10);
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ(history->back().destination, longest);
  ExpectConservation();
}

TEST_F(LedgerTest, WithdrawDestinationIsPrintableUtf8) {
  Fund(alice_, 100);
  // Shown to the operator: nothing that steers a terminal, nothing that is not UTF-8.
  for (const std::string& bad : {std::string("\x1b[2J"), std::string("a\nb"), std::string("a\0b", 3),
                                std::string("\x7f"), std::string("\xc2\x9b" "31m"),
                                std::string("\xff"), std::string("\xc3"),
                                std::string("\xc0\xaf"), std::string("\xed\xa0\x80")}) {
    EXPECT_REFUSED(ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(1), alice_.Next(), bad)),
                   Errc::kInvalidArgument);
  }
  EXPECT_EQ(Account(alice_).balance, Micro(100));
  for (const std::string& good : {std::string(""), std::string("iban:DE89 3704 0044 0532 0130 00"),
                                 std::string("M\xc3\xbcller \xe2\x82\xac \xf0\x9f\x92\xb6")}) {
    auto r = ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(1), alice_.Next(), good));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(ledger_->History(alice_.address, 0, 10)->back().destination, good);
  }
  ExpectConservation();
}

TEST_F(LedgerTest, WithdrawRefusals) {
  Fund(alice_, 100);
  EXPECT_REFUSED(
      ledger_->Withdraw(MakeWithdraw(alice_.key, OtherLedger(), Micro(1), alice_.Next(), "x")),
      Errc::kWrongLedger);
  EXPECT_REFUSED(
      ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Amount::Zero(), alice_.Next(), "x")),
      Errc::kInvalidArgument);
  {
    auto req = MakeWithdraw(alice_.key, id(), Micro(1), alice_.Next(), "x");
    req.destination = std::string(payments::kMaxWithdrawDestination + 1, 'd');
    EXPECT_REFUSED(ledger_->Withdraw(req), Errc::kInvalidArgument);
    req = MakeWithdraw(alice_.key, id(), Micro(1), alice_.Next(), "x");
    req.destination = "y";  // payout redirected
    EXPECT_REFUSED(ledger_->Withdraw(req), Errc::kBadSignature);
    req = MakeWithdraw(alice_.key, id(), Micro(1), alice_.Next(), "x");
    req.auth.signer = bob_.key.public_key();  // claims to be bob
    EXPECT_REFUSED(ledger_->Withdraw(req), Errc::kBadSignature);
  }
  EXPECT_REFUSED(ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(101), alice_.Next(), "x")),
                 Errc::kInsufficientBalance);
  // An address never seen has nothing to withdraw (and gets no account row).
  EXPECT_REFUSED(ledger_->Withdraw(MakeWithdraw(carol_.key, id(), Micro(1), carol_.Next(), "x")),
                 Errc::kInsufficientBalance);
  auto req = MakeWithdraw(alice_.key, id(), Micro(10), alice_.Next(), "x");
  ASSERT_TRUE(ledger_->Withdraw(req));
  EXPECT_REFUSED(ledger_->Withdraw(req), Errc::kReplay);
  EXPECT_EQ(Account(alice_).balance, Micro(90));
  ExpectConservation();
}

// ---------------------------------------------------------------------------------------------
// OpenChannel

TEST_F(LedgerTest, OpenChannelLocksEscrow) {
  Fund(alice_, 1'000);
  auto req =
      MakeOpenChannel(alice_.key, id(), bob_.address, Micro(300), alice_.Next(), kStart + kHour);
  auto ch = ledger_->OpenChannel(req);
  ASSERT_TRUE(ch) << ch.error().message;
  channels_.push_back(ch->id);
  EXPECT_EQ(ch->id, ChannelIdOf(req));
  EXPECT_EQ(ch->id, payments::ChannelIdFor(id(), alice_.address, 1));
  EXPECT_EQ(ch->client, alice_.address);
  EXPECT_EQ(ch->client_key, alice_.key.public_key());
  EXPECT_EQ(ch->provider, bob_.address);
  EXPECT_EQ(ch->deposit, Micro(300));
  EXPECT_EQ(ch->settled, Amount::Zero());
  EXPECT_EQ(ch->refunded, Amount::Zero());
  EXPECT_EQ(ch->status, ChannelStatus::kOpen);
  EXPECT_EQ(ch->expiry_unix, kStart + kHour);
  EXPECT_EQ(ch->close_deadline_unix, 0u);
  EXPECT_EQ(ch->opened_unix, kStart);
  EXPECT_EQ(Describe(Channel(ch->id)), Describe(*ch));
  AccountState a = Account(alice_);
  EXPECT_EQ(a.balance, Micro(700));
  EXPECT_EQ(a.escrowed, Micro(300));
  EXPECT_EQ(a.last_nonce, 1u);
  auto history = ledger_->History(alice_.address, 0, 10);
  ASSERT_EQ(history->size(), 2u);
  const Movement& m = history->back();
  EXPECT_EQ(m.kind, MovementKind::kEscrowLock);
  EXPECT_EQ(m.amount, Micro(300));
  EXPECT_EQ(m.channel, ch->id);
  EXPECT_EQ(m.counterparty, bob_.address);
  EXPECT_EQ(m.balance_after, Micro(700));
  // The provider needs no account to be named; the channel lists for both sides.
  EXPECT_EQ(ledger_->ListChannels(bob_.address, 10)->size(), 1u);
  EXPECT_EQ(ledger_->ListChannels(alice_.address, 10)->size(), 1u);
  ExpectConservation();
}

TEST_F(LedgerTest, OpenChannelRefusals) {
  Fund(alice_, 100);
  auto open = [&](const LedgerId& ledger, const Address& provider, uint64_t amount,
                  uint64_t expiry) {
    return ledger_->OpenChannel(
        MakeOpenChannel(alice_.key, ledger, provider, Micro(amount), alice_.Next(), expiry));
  };
  EXPECT_REFUSED(open(OtherLedger(), bob_.address, 10, kStart + kHour), Errc::kWrongLedger);
  EXPECT_REFUSED(open(id(), bob_.address, 0, kStart + kHour), Errc::kInvalidArgument);
  EXPECT_REFUSED(open(id(), alice_.address, 10, kStart + kHour), Errc::kInvalidArgument);
  EXPECT_REFUSED(open(id(), bob_.address, 10, kStart), Errc::kInvalidArgument);  // now
  EXPECT_REFUSED(open(id(), bob_.address, 10, kStart - 1), Errc::kInvalidArgument);
  EXPECT_REFUSED(open(id(), bob_.address, 10, 0), Errc::kInvalidArgument);
  EXPECT_REFUSED(open(id(), bob_.address, 10, uint64_t{1} << 63), Errc::kInvalidArgument);
  EXPECT_REFUSED(open(id(), bob_.address, 101, kStart + kHour), Errc::kInsufficientBalance);
  EXPECT_REFUSED(ledger_->OpenChannel(MakeOpenChannel(carol_.key, id(), bob_.address, Micro(1),
                                                      carol_.Next(), kStart + kHour)),
                 Errc::kInsufficientBalance);
  {
    auto req =
        MakeOpenChannel(alice_.key, id(), bob_.address, Micro(10), alice_.Next(), kStart + kHour);
    req.provider = carol_.address;
    EXPECT_REFUSED(ledger_->OpenChannel(req), Errc::kBadSignature);
    req = MakeOpenChannel(alice_.key, id(), bob_.address, Micro(10), alice_.Next(), kStart + kHour);
    req.expiry_unix += 1;
    EXPECT_REFUSED(ledger_->OpenChannel(req), Errc::kBadSignature);
    req = MakeOpenChannel(alice_.key, id(), bob_.address, Micro(10), alice_.Next(), kStart + kHour);
    req.auth.signature[63] ^= 1;
    EXPECT_REFUSED(ledger_->OpenChannel(req), Errc::kBadSignature);
  }
  auto req =
      MakeOpenChannel(alice_.key, id(), bob_.address, Micro(10), alice_.Next(), kStart + kHour);
  auto ch = ledger_->OpenChannel(req);
  ASSERT_TRUE(ch);
  channels_.push_back(ch->id);
  EXPECT_REFUSED(ledger_->OpenChannel(req), Errc::kReplay);
  // Nonces are per signer across request kinds.
  EXPECT_REFUSED(ledger_->Withdraw(MakeWithdraw(alice_.key, id(), Micro(1), req.auth.nonce, "x")),
                 Errc::kReplay);
  // The largest storable expiry is fine.
  OpenChannel(alice_, bob_, 1, (uint64_t{1} << 63) - 1);
  ExpectConservation();
}

// ---------------------------------------------------------------------------------------------
// TopUpChannel

TEST_F(LedgerTest, TopUpAddsEscrowAndExtendsExpiry) {
  Fund(alice_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 100);
  auto r =
      ledger_->TopUpChannel(MakeTopUpChannel(alice_.key, id(), ch.id, Micro(50), alice_.Next(), 0));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->deposit, Micro(150));
  EXPECT_EQ(r->expiry_unix, ch.expiry_unix);  // 0 keeps it
  r = ledger_->TopUpChannel(
      MakeTopUpChannel(alice_.key, id(), ch.id, Micro(1), alice_.Next(), ch.expiry_unix));
  ASSERT_TRUE(r) << r.error().message;  // the same expiry is not earlier
  r = ledger_->TopUpChannel(
      MakeTopUpChannel(alice_.key, id(), ch.id, Micro(9), alice_.Next(), ch.expiry_unix + kHour));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->deposit, Micro(160));
  EXPECT_EQ(r->expiry_unix, ch.expiry_unix + kHour);
  EXPECT_EQ(Describe(Channel(ch.id)), Describe(*r));
  AccountState a = Account(alice_);
  EXPECT_EQ(a.balance, Micro(840));
  EXPECT_EQ(a.escrowed, Micro(160));
  auto history = ledger_->History(alice_.address, 0, 10);
  EXPECT_EQ(history->back().kind, MovementKind::kEscrowLock);
  EXPECT_EQ(history->back().amount, Micro(9));
  EXPECT_EQ(history->back().balance_after, Micro(840));
  ExpectConservation();
}

TEST_F(LedgerTest, TopUpRefusals) {
  Fund(alice_, 1'000);
  Fund(bob_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 100);
  auto top = [&](Wallet& w, const LedgerId& ledger, const ChannelId& c, uint64_t amount,
                 uint64_t expiry) {
    return ledger_->TopUpChannel(
        MakeTopUpChannel(w.key, ledger, c, Micro(amount), w.Next(), expiry));
  };
  EXPECT_REFUSED(top(alice_, OtherLedger(), ch.id, 1, 0), Errc::kWrongLedger);
  EXPECT_REFUSED(top(alice_, id(), ch.id, 0, 0), Errc::kInvalidArgument);
  EXPECT_REFUSED(top(alice_, id(), ch.id, 1, kStart), Errc::kInvalidArgument);  // not future
  EXPECT_REFUSED(top(alice_, id(), ch.id, 1, uint64_t{1} << 63), Errc::kInvalidArgument);
  EXPECT_REFUSED(top(alice_, id(), ch.id, 1, ch.expiry_unix - 1), Errc::kInvalidArgument);
  EXPECT_REFUSED(top(bob_, id(), ch.id, 1, 0), Errc::kNotPermitted);  // the provider
  EXPECT_REFUSED(top(carol_, id(), ch.id, 1, 0), Errc::kNotPermitted);
  ChannelId unknown;
  unknown.bytes.fill(7);
  EXPECT_REFUSED(top(alice_, id(), unknown, 1, 0), Errc::kUnknownChannel);
  EXPECT_REFUSED(top(alice_, id(), ch.id, 901, 0), Errc::kInsufficientBalance);
  {
    auto req = MakeTopUpChannel(alice_.key, id(), ch.id, Micro(1), alice_.Next(), 0);
    req.amount = Micro(2);
    EXPECT_REFUSED(ledger_->TopUpChannel(req), Errc::kBadSignature);
    req = MakeTopUpChannel(alice_.key, id(), ch.id, Micro(1), alice_.Next(), 0);
    ASSERT_TRUE(ledger_->TopUpChannel(req));
    EXPECT_REFUSED(ledger_->TopUpChannel(req), Errc::kReplay);
  }
  // Closing, then closed: no more top-ups.
  ASSERT_TRUE(ledger_->CloseChannel(MakeCloseChannel(alice_.key, id(), ch.id, alice_.Next())));
  EXPECT_REFUSED(top(alice_, id(), ch.id, 1, 0), Errc::kChannelNotOpen);
  ASSERT_TRUE(ledger_->CloseChannel(MakeCloseChannel(bob_.key, id(), ch.id, bob_.Next())));
  EXPECT_REFUSED(top(alice_, id(), ch.id, 1, 0), Errc::kChannelNotOpen);
  // Open but past expiry + challenge period, not yet finalized: treated as closed.
  ChannelState late = OpenChannel(alice_, bob_, 10, kStart + 100);
  clock_.Set(kStart + 100 + kChallenge);
  EXPECT_EQ(Channel(late.id).status, ChannelStatus::kOpen);
  EXPECT_REFUSED(top(alice_, id(), late.id, 1, kStart + 10 * kHour), Errc::kChannelNotOpen);
  ExpectConservation();
}

TEST_F(LedgerTest, TopUpAtItsLimitIsRefusedWithOverflow) {
  // A channel deposit near UINT64_MAX cannot arise through requests (deposits are bounded), so
  // seed the store directly to reach the check.
  testing::TempDir dir;
  const std::string path = dir.File("ledger.db");
  {
    auto store = OpenSqliteStore(path, payments::LedgerIdFor("test-ledger", op_.key.public_key()));
    ASSERT_TRUE(store);
    ASSERT_TRUE((*store)->Begin());
    ASSERT_TRUE((*store)->PutAccount(AccountRow{alice_.address, Micro(5), 0}));
    ChannelState ch{.id = payments::ChannelIdFor(id(), alice_.address, 1),
                    .client = alice_.address,
                    .client_key = alice_.key.public_key(),
                    .provider = bob_.address,
                    .deposit = Amount::Max(),
                    .settled = {},
                    .refunded = {},
                    .status = ChannelStatus::kOpen,
                    .expiry_unix = kStart + kHour,
                    .opened_unix = kStart};
    ASSERT_TRUE((*store)->PutChannel(ch));
    ASSERT_TRUE((*store)->Commit());
    channels_.push_back(ch.id);
  }
  Open(path);
  alice_.nonce = 1;
  EXPECT_REFUSED(ledger_->TopUpChannel(
                     MakeTopUpChannel(alice_.key, id(), channels_[0], Micro(1), alice_.Next(), 0)),
                 Errc::kOverflow);
  EXPECT_EQ(Account(alice_).balance, Micro(5));
}

// ---------------------------------------------------------------------------------------------
// CloseChannel and FinalizeDueChannels

TEST_F(LedgerTest, ClientCloseStartsChallengeThenFinalizeRefunds) {
  Fund(alice_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 400);
  clock_.Advance(10);
  auto closing = ledger_->CloseChannel(MakeCloseChannel(alice_.key, id(), ch.id, alice_.Next()));
  ASSERT_TRUE(closing) << closing.error().message;
  EXPECT_EQ(closing->status, ChannelStatus::kClosing);
  EXPECT_EQ(closing->close_deadline_unix, kStart + 10 + kChallenge);
  EXPECT_EQ(Account(alice_).escrowed, Micro(400));
  EXPECT_EQ(Account(alice_).balance, Micro(600));
  // The provider can still collect during the challenge period.
  clock_.Set(kStart + 10 + kChallenge - 1);
  auto settled = Settle(bob_, {Promise(alice_, ch.id, 150)});
  ASSERT_TRUE(settled) << settled.error().message;
  EXPECT_EQ(settled->items[0].outcome, SettleOutcome::kSettled);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 0u);  // not yet due
  // At the deadline: no more settlement; finalize refunds the rest.
  clock_.Set(kStart + 10 + kChallenge);
  settled = Settle(bob_, {Promise(alice_, ch.id, 300)});
  ASSERT_TRUE(settled);
  EXPECT_EQ(settled->items[0].outcome, SettleOutcome::kChannelClosed);
  EXPECT_EQ(settled->total_moved, Amount::Zero());
  auto done = ledger_->FinalizeDueChannels();
  ASSERT_TRUE(done);
  EXPECT_EQ(*done, 1u);
  ChannelState closed = Channel(ch.id);
  EXPECT_EQ(closed.status, ChannelStatus::kClosed);
  EXPECT_EQ(closed.settled, Micro(150));
  EXPECT_EQ(closed.refunded, Micro(250));
  EXPECT_EQ(closed.Remaining(), Amount::Zero());
  AccountState a = Account(alice_);
  EXPECT_EQ(a.balance, Micro(850));
  EXPECT_EQ(a.escrowed, Amount::Zero());
  EXPECT_EQ(Account(bob_).balance, Micro(150));
  auto history = ledger_->History(alice_.address, 0, 10);
  EXPECT_EQ(history->back().kind, MovementKind::kEscrowRefund);
  EXPECT_EQ(history->back().amount, Micro(250));
  EXPECT_EQ(history->back().balance_after, Micro(850));
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 0u);  // nothing twice
  ExpectConservation();
}

TEST_F(LedgerTest, ProviderClosesAtOnce) {
  Fund(alice_, 1'000);
  ChannelState open = OpenChannel(alice_, bob_, 100);
  ASSERT_TRUE(Settle(bob_, {Promise(alice_, open.id, 30)}));
  auto closed = ledger_->CloseChannel(MakeCloseChannel(bob_.key, id(), open.id, bob_.Next()));
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_EQ(closed->status, ChannelStatus::kClosed);
  EXPECT_EQ(closed->refunded, Micro(70));
  EXPECT_EQ(Account(alice_).balance, Micro(970));
  EXPECT_EQ(Account(bob_).balance, Micro(30));
  auto history = ledger_->History(alice_.address, 0, 10);
  EXPECT_EQ(history->back().kind, MovementKind::kEscrowRefund);
  EXPECT_EQ(history->back().counterparty, bob_.address);

  // A closing channel, too.
  ChannelState other = OpenChannel(alice_, bob_, 50);
  ASSERT_TRUE(ledger_->CloseChannel(MakeCloseChannel(alice_.key, id(), other.id, alice_.Next())));
  closed = ledger_->CloseChannel(MakeCloseChannel(bob_.key, id(), other.id, bob_.Next()));
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_EQ(closed->refunded, Micro(50));
  EXPECT_EQ(Account(alice_).balance, Micro(1'000 - 30));
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 0u);
  ExpectConservation();
}

TEST_F(LedgerTest, CloseRefusals) {
  Fund(alice_, 1'000);
  Fund(carol_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 100);
  auto close = [&](Wallet& w, const LedgerId& ledger, const ChannelId& c) {
    return ledger_->CloseChannel(MakeCloseChannel(w.key, ledger, c, w.Next()));
  };
  EXPECT_REFUSED(close(alice_, OtherLedger(), ch.id), Errc::kWrongLedger);
  EXPECT_REFUSED(close(carol_, id(), ch.id), Errc::kNotPermitted);
  ChannelId unknown;
  unknown.bytes.fill(9);
  EXPECT_REFUSED(close(alice_, id(), unknown), Errc::kUnknownChannel);
  {
    auto req = MakeCloseChannel(alice_.key, id(), ch.id, alice_.Next());
    req.auth.signer = bob_.key.public_key();  // alice pretends to be the provider
    EXPECT_REFUSED(ledger_->CloseChannel(req), Errc::kBadSignature);
    req = MakeCloseChannel(alice_.key, id(), ch.id, alice_.Next());
    req.channel = unknown;
    EXPECT_REFUSED(ledger_->CloseChannel(req), Errc::kBadSignature);
  }
  auto req = MakeCloseChannel(alice_.key, id(), ch.id, alice_.Next());
  ASSERT_TRUE(ledger_->CloseChannel(req));
  EXPECT_REFUSED(ledger_->CloseChannel(req), Errc::kReplay);
  EXPECT_REFUSED(close(alice_, id(), ch.id), Errc::kChannelNotOpen);  // already closing
  ASSERT_TRUE(close(bob_, id(), ch.id));
  EXPECT_REFUSED(close(bob_, id(), ch.id), Errc::kChannelNotOpen);  // closed
  EXPECT_REFUSED(close(alice_, id(), ch.id), Errc::kChannelNotOpen);
  // Past its deadline an unfinalized channel cannot be closed by request either.
  ChannelState late = OpenChannel(alice_, bob_, 10, kStart + 100);
  clock_.Set(kStart + 100 + kChallenge);
  EXPECT_REFUSED(close(alice_, id(), late.id), Errc::kChannelNotOpen);
  EXPECT_REFUSED(close(bob_, id(), late.id), Errc::kChannelNotOpen);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 1u);
  ExpectConservation();
}

TEST_F(LedgerTest, FinalizeClosesExpiredOpenChannelsAfterTheChallengePeriod) {
  Fund(alice_, 1'000);
  ChannelState a = OpenChannel(alice_, bob_, 100, kStart + 100);
  ChannelState b = OpenChannel(alice_, bob_, 100, kStart + 200);
  // Past expiry but within the challenge period: the provider may still settle.
  clock_.Set(kStart + 100 + kChallenge - 1);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 0u);
  auto r = Settle(bob_, {Promise(alice_, a.id, 40)});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kSettled);
  clock_.Set(kStart + 100 + kChallenge);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 1u);
  EXPECT_EQ(Channel(a.id).status, ChannelStatus::kClosed);
  EXPECT_EQ(Channel(a.id).refunded, Micro(60));
  EXPECT_EQ(Channel(b.id).status, ChannelStatus::kOpen);
  clock_.Set(kStart + 200 + kChallenge);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 1u);
  EXPECT_EQ(Account(alice_).balance, Micro(960));
  ExpectConservation();
}

TEST_F(LedgerTest, FinalizeIsBoundedPerCall) {
  constexpr size_t kChannels = 1'003;
  Fund(alice_, kChannels);
  for (size_t i = 0; i < kChannels; ++i) OpenChannel(alice_, bob_, 1, kStart + 10);
  clock_.Set(kStart + 10 + kChallenge);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 1'000u);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 3u);
  EXPECT_EQ(ledger_->FinalizeDueChannels(), 0u);
  EXPECT_EQ(Account(alice_).balance, Micro(kChannels));
  EXPECT_EQ(Account(alice_).escrowed, Amount::Zero());
  ExpectConservation();
}

// ---------------------------------------------------------------------------------------------
// SettleBatch

TEST_F(LedgerTest, SettleMovesEscrowToProvider) {
  Fund(alice_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 500);
  auto r = Settle(bob_, {Promise(alice_, ch.id, 120)});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_EQ(r->items[0].channel, ch.id);
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kSettled);
  EXPECT_EQ(r->items[0].moved, Micro(120));
  EXPECT_EQ(r->items[0].channel_settled, Micro(120));
  EXPECT_EQ(r->total_moved, Micro(120));
  EXPECT_EQ(r->provider_balance, Micro(120));
  EXPECT_EQ(Account(bob_).balance, Micro(120));
  EXPECT_EQ(Account(bob_).last_nonce, 1u);
  AccountState a = Account(alice_);
  EXPECT_EQ(a.balance, Micro(500));
  EXPECT_EQ(a.escrowed, Micro(380));
  auto pay = ledger_->History(alice_.address, 0, 10);
  EXPECT_EQ(pay->back().kind, MovementKind::kSettlePay);
  EXPECT_EQ(pay->back().amount, Micro(120));
  EXPECT_EQ(pay->back().channel, ch.id);
  EXPECT_EQ(pay->back().counterparty, bob_.address);
  EXPECT_EQ(pay->back().balance_after, Micro(500));
  auto receive = ledger_->History(bob_.address, 0, 10);
  ASSERT_EQ(receive->size(), 1u);
  EXPECT_EQ(receive->back().kind, MovementKind::kSettleReceive);
  EXPECT_EQ(receive->back().amount, Micro(120));
  EXPECT_EQ(receive->back().counterparty, alice_.address);
  EXPECT_EQ(receive->back().balance_after, Micro(120));
  EXPECT_EQ(receive->back().seq, pay->back().seq + 1);
  ExpectConservation();
}

TEST_F(LedgerTest, SettleIsIdempotent) {
  Fund(alice_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 500);
  SignedPromise p200 = Promise(alice_, ch.id, 200);
  auto batch = MakeSettleBatch(bob_.key, id(), bob_.Next(), {p200});
  ASSERT_TRUE(ledger_->SettleBatch(batch));
  // The same request again is a replay; the same promise in a new batch moves nothing.
  EXPECT_REFUSED(ledger_->SettleBatch(batch), Errc::kReplay);
  const std::string before = State();
  auto again = Settle(bob_, {p200, Promise(alice_, ch.id, 150)});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->items[0].outcome, SettleOutcome::kAlreadySettled);
  EXPECT_EQ(again->items[1].outcome, SettleOutcome::kAlreadySettled);  // an older promise
  EXPECT_EQ(again->items[0].moved, Amount::Zero());
  EXPECT_EQ(again->items[0].channel_settled, Micro(200));
  EXPECT_EQ(again->total_moved, Amount::Zero());
  EXPECT_EQ(again->provider_balance, Micro(200));
  EXPECT_EQ(Account(bob_).balance, Micro(200));
  EXPECT_EQ(Channel(ch.id).settled, Micro(200));
  EXPECT_EQ(ledger_->History(bob_.address, 0, 10)->size(), 1u);
  // A newer promise collects only the difference.
  auto newer = Settle(bob_, {Promise(alice_, ch.id, 260)});
  ASSERT_TRUE(newer);
  EXPECT_EQ(newer->items[0].moved, Micro(60));
  EXPECT_EQ(Account(bob_).balance, Micro(260));
  ExpectConservation();
}

TEST_F(LedgerTest, SettleIsCappedByEscrowAndResumesAfterTopUp) {
  Fund(alice_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 100);
  SignedPromise p250 = Promise(alice_, ch.id, 250);
  auto r = Settle(bob_, {p250});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kSettledCapped);
  EXPECT_EQ(r->items[0].moved, Micro(100));
  EXPECT_EQ(r->items[0].channel_settled, Micro(100));
  r = Settle(bob_, {Promise(alice_, ch.id, 300)});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kEscrowExhausted);
  EXPECT_EQ(r->items[0].moved, Amount::Zero());
  r = Settle(bob_, {Promise(alice_, ch.id, 100)});
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kAlreadySettled);
  ASSERT_TRUE(ledger_->TopUpChannel(
      MakeTopUpChannel(alice_.key, id(), ch.id, Micro(200), alice_.Next(), 0)));
  r = Settle(bob_, {p250});  // the same capped promise collects the rest now
  ASSERT_TRUE(r);
  EXPECT_EQ(r->items[0].outcome, SettleOutcome::kSettled);
  EXPECT_EQ(r->items[0].moved, Micro(150));
  EXPECT_EQ(Account(bob_).balance, Micro(250));
  EXPECT_EQ(Account(alice_).escrowed, Micro(50));
  ExpectConservation();
}

TEST_F(LedgerTest, SettleItemOutcomes) {
  Fund(alice_, 1'000);
  Fund(carol_, 1'000);
  ChannelState mine = OpenChannel(alice_, bob_, 100);
  ChannelState carols = OpenChannel(carol_, bob_, 100);
  ChannelState not_bobs = OpenChannel(alice_, carol_, 100);
  ChannelState closed = OpenChannel(carol_, bob_, 100);
  ASSERT_TRUE(ledger_->CloseChannel(MakeCloseChannel(bob_.key, id(), closed.id, bob_.Next())));
  ChannelId unknown;
  unknown.bytes.fill(3);

  SignedPromise forged = Promise(carol_, mine.id, 50);  // signed by the wrong client
  SignedPromise moved_over = Promise(carol_, carols.id, 40);
  moved_over.channel = mine.id;  // a valid promise of another channel
  SignedPromise tampered = Promise(alice_, mine.id, 10);
  tampered.cumulative = Micro(90);
  auto r = Settle(bob_, {
                            Promise(alice_, unknown, 10),      // 0
                            Promise(alice_, not_bobs.id, 10),  // 1
                            Promise(carol_, closed.id, 10),    // 2
                            forged,                            // 3
                            moved_over,                        // 4
                            tampered,                          // 5
                            Promise(alice_, mine.id, 0),       // 6
                            Promise(alice_, mine.id, 30),      // 7
                            Promise(carol_, carols.id, 20),    // 8
                            Promise(alice_, mine.id, 20),      // 9: older than item 7
                            Promise(alice_, mine.id, 45),      // 10: sees item 7's effect
                        });
  ASSERT_TRUE(r) << r.error().message;
  const SettleOutcome expected[] = {
      SettleOutcome::kUnknownChannel, SettleOutcome::kNotYourChannel, SettleOutcome::kChannelClosed,
      SettleOutcome::kBadSignature,   SettleOutcome::kBadSignature,   SettleOutcome::kBadSignature,
      SettleOutcome::kAlreadySettled, SettleOutcome::kSettled,        SettleOutcome::kSettled,
      SettleOutcome::kAlreadySettled, SettleOutcome::kSettled,
  };
  ASSERT_EQ(r->items.size(), std::size(expected));
  for (size_t i = 0; i < std::size(expected); ++i) {
    EXPECT_EQ(r->items[i].outcome, expected[i]) << "item " << i << ": " << r->items[i].message;
    if (expected[i] != SettleOutcome::kSettled) {
      EXPECT_EQ(r->items[i].moved, Amount::Zero()) << i;
      EXPECT_FALSE(r->items[i].message.empty()) << i;
    }
  }
  EXPECT_EQ(r->items[7].moved, Micro(30));
  EXPECT_EQ(r->items[10].moved, Micro(15));
  EXPECT_EQ(r->items[10].channel_settled, Micro(45));
  EXPECT_EQ(r->items[8].moved, Micro(20));
  EXPECT_EQ(r->total_moved, Micro(65));
  EXPECT_EQ(r->provider_balance, Micro(65));
  EXPECT_EQ(Channel(mine.id).settled, Micro(45));
  EXPECT_EQ(Channel(not_bobs.id).settled, Amount::Zero());
  EXPECT_EQ(Channel(closed.id).settled, Amount::Zero());
  ExpectConservation();
}

TEST_F(LedgerTest, SettleBatchRefusals) {
  Fund(alice_, 1'000);
  ChannelState ch = OpenChannel(alice_, bob_, 100);
  std::vector<SignedPromise> one = {Promise(alice_, ch.id, 10)};
  EXPECT_REFUSED(ledger_->SettleBatch(MakeSettleBatch(bob_.key, OtherLedger(), bob_.Next(), one)),
                 Errc::kWrongLedger);
  EXPECT_REFUSED(ledger_->SettleBatch(MakeSettleBatch(bob_.key, id(), bob_.Next(), {})),
                 Errc::kInvalidArgument);
  std::vector<SignedPromise> big(Config().max_batch_items + 1, one[0]);
  EXPECT_REFUSED(ledger_->SettleBatch(MakeSettleBatch(bob_.key, id(), bob_.Next(), big)),
                 Errc::kBatchTooLarge);
  big.pop_back();  // exactly the limit is fine
  {
    auto req = MakeSettleBatch(bob_.key, id(), bob_.Next(), one);
    req.promises[0].cumulative = Micro(11);  // promise altered after the provider signed
    EXPECT_REFUSED(ledger_->SettleBatch(req), Errc::kBadSignature);
    req = MakeSettleBatch(bob_.key, id(), bob_.Next(), one);
    req.promises.push_back(one[0]);  // item appended
    EXPECT_REFUSED(ledger_->SettleBatch(req), Errc::kBadSignature);
    req = MakeSettleBatch(bob_.key, id(), bob_.Next(), one);
    req.auth.signature[0] ^= 0x80;
    EXPECT_REFUSED(ledger_->SettleBatch(req), Errc::kBadSignature);
  }
  auto req = MakeSettleBatch(bob_.key, id(), bob_.Next(), big);
  auto r = ledger_->SettleBatch(req);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->items.size(), big.size());
  EXPECT_EQ(r->total_moved, Micro(10));
  EXPECT_REFUSED(ledger_->SettleBatch(req), Errc::kReplay);
  EXPECT_REFUSED(ledger_->SettleBatch(MakeSettleBatch(bob_.key, id(), 1, one)), Errc::kReplay);
  ExpectConservation();
}

TEST_F(LedgerTest, SettleManyChannelsInParallel) {
  // Enough promises to use every verification thread, with forgeries spread through them.
  constexpr size_t kChannels = 60;
  Fund(alice_, 100'000);
  std::vector<ChannelState> chans;
  for (size_t i = 0; i < kChannels; ++i) chans.push_back(OpenChannel(alice_, bob_, 1'000));
  std::vector<SignedPromise> promises;
  for (size_t i = 0; i < kChannels; ++i) {
    promises.push_back(i % 7 == 3 ? Promise(carol_, chans[i].id, 100 + i)
                                  : Promise(alice_, chans[i].id, 100 + i));
  }
  // The second round finds everything settled already; forgeries stay forgeries.
  for (int round = 0; round < 2; ++round) {
    auto r = Settle(bob_, promises);
    ASSERT_TRUE(r) << r.error().message;
    uint64_t total = 0;
    for (size_t i = 0; i < kChannels; ++i) {
      SettleOutcome want = i % 7 == 3   ? SettleOutcome::kBadSignature
                           : round == 0 ? SettleOutcome::kSettled
                                        : SettleOutcome::kAlreadySettled;
      EXPECT_EQ(r->items[i].outcome, want) << i;
      if (round == 0 && i % 7 != 3) total += 100 + i;
    }
    if (round == 0) {
      EXPECT_EQ(r->total_moved, Micro(total));
    }
  }
  ExpectConservation();
}

TEST_F(LedgerTest, SettleColdCacheAfterReopen) {
  testing::TempDir dir;
  Open(dir.File("ledger.db"));
  Fund(alice_, 1'000);
  std::vector<ChannelState> chans;
  for (int i = 0; i < 40; ++i) chans.push_back(OpenChannel(alice_, bob_, 10));
  Open(dir.File("ledger.db"));  // new Ledger: empty key cache
  std::vector<SignedPromise> promises;
  for (int i = 0; i < 40; ++i) {
    promises.push_back(i == 5 ? Promise(bob_, chans[i].id, 5) : Promise(alice_, chans[i].id, 5));
  }
  auto r = Settle(bob_, promises);
  ASSERT_TRUE(r) << r.error().message;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(r->items[i].outcome, i == 5 ? SettleOutcome::kBadSignature : SettleOutcome::kSettled);
  }
  EXPECT_EQ(r->total_moved, Micro(39 * 5));
  ExpectConservation();
}

TEST_F(LedgerTest, SettleRacingChannelOpens) {
  // The provider settles promises of channels whose opening is still in flight: a promise whose
  // channel did not exist when the batch was verified must be checked inside the transaction.
  constexpr int kChannels = 40;
  Fund(alice_, 10'000);
  std::vector<OpenChannelRequest> opens;
  std::vector<SignedPromise> promises;
  for (int i = 0; i < kChannels; ++i) {
    opens.push_back(
        MakeOpenChannel(alice_.key, id(), bob_.address, Micro(10), alice_.Next(), kStart + kHour));
    channels_.push_back(ChannelIdOf(opens.back()));
    promises.push_back(Promise(alice_, channels_.back(), 7));
  }
  promises.push_back(Promise(carol_, channels_.back(), 9));  // a forgery, always refused
  std::atomic<bool> opened_all{false};
  std::thread opener([&] {
    for (const auto& req : opens) EXPECT_TRUE(ledger_->OpenChannel(req));
    opened_all = true;
  });
  int settled = 0;
  for (int round = 0; round < 10'000 && settled < kChannels; ++round) {
    const bool last_round = opened_all.load();
    auto r = Settle(bob_, promises);
    ASSERT_TRUE(r) << r.error().message;
    for (int i = 0; i < kChannels; ++i) {
      SettleOutcome o = r->items[i].outcome;
      EXPECT_TRUE(o == SettleOutcome::kUnknownChannel || o == SettleOutcome::kSettled ||
                  o == SettleOutcome::kAlreadySettled)
          << "item " << i << ": " << r->items[i].message;
      if (o == SettleOutcome::kSettled) ++settled;
    }
    const SettleOutcome forged = r->items[kChannels].outcome;
    EXPECT_TRUE(forged == SettleOutcome::kUnknownChannel || forged == SettleOutcome::kBadSignature);
    if (last_round) break;
  }
  opener.join();
  EXPECT_EQ(settled, kChannels);
  EXPECT_EQ(Account(bob_).balance, Micro(7 * kChannels));
  ExpectConservation();
}

TEST_F(LedgerTest, ProviderBalanceOverflowRefusesTheWholeBatch) {
  // Seeded store: a provider already holding UINT64_MAX (impossible through requests).
  testing::TempDir dir;
  const std::string path = dir.File("ledger.db");
  const LedgerId lid = payments::LedgerIdFor("test-ledger", op_.key.public_key());
  ChannelState ch{.id = payments::ChannelIdFor(lid, alice_.address, 1),
                  .client = alice_.address,
                  .client_key = alice_.key.public_key(),
                  .provider = bob_.address,
                  .deposit = Micro(10),
                  .settled = {},
                  .refunded = {},
                  .status = ChannelStatus::kOpen,
                  .expiry_unix = kStart + kHour,
                  .opened_unix = kStart};
  {
    auto store = OpenSqliteStore(path, lid);
    ASSERT_TRUE(store);
    ASSERT_TRUE((*store)->Begin());
    ASSERT_TRUE((*store)->PutAccount(AccountRow{alice_.address, Amount::Zero(), 1}));
    ASSERT_TRUE((*store)->PutAccount(AccountRow{bob_.address, Amount::Max(), 0}));
    ASSERT_TRUE((*store)->PutChannel(ch));
    ASSERT_TRUE((*store)->Commit());
  }
  Open(path);
  channels_.push_back(ch.id);
  EXPECT_REFUSED(Settle(bob_, {Promise(alice_, ch.id, 5)}), Errc::kOverflow);
  EXPECT_EQ(Account(bob_).last_nonce, 0u);
}

// ---------------------------------------------------------------------------------------------
// Reads

TEST_F(LedgerTest, ReadsOfUnknownThings) {
  AccountState a = Account(carol_);
  EXPECT_EQ(a.address, carol_.address);
  EXPECT_EQ(a.balance, Amount::Zero());
  EXPECT_EQ(a.last_nonce, 0u);
  EXPECT_EQ(a.escrowed, Amount::Zero());
  ChannelId unknown;
  auto ch = ledger_->GetChannel(unknown);
  ASSERT_FALSE(ch);
  EXPECT_EQ(ch.error().code, Errc::kUnknownChannel);
  EXPECT_TRUE(ledger_->ListChannels(carol_.address, 10)->empty());
  EXPECT_TRUE(ledger_->History(carol_.address, 0, 10)->empty());
  EXPECT_TRUE(ledger_->History(carol_.address, UINT64_MAX, 10)->empty());
}

TEST_F(LedgerTest, ListChannelsNewestFirst) {
  Fund(alice_, 1'000);
  Fund(carol_, 1'000);
  ChannelState first = OpenChannel(alice_, bob_, 1);
  clock_.Advance(5);
  ChannelState second = OpenChannel(carol_, bob_, 1);
  ChannelState third = OpenChannel(alice_, carol_, 1);  // same second as `second`
  auto bobs = ledger_->ListChannels(bob_.address, 10);
  ASSERT_EQ(bobs->size(), 2u);
  EXPECT_EQ((*bobs)[0].id, second.id);
  EXPECT_EQ((*bobs)[1].id, first.id);
  auto alices = ledger_->ListChannels(alice_.address, 10);
  ASSERT_EQ(alices->size(), 2u);
  EXPECT_EQ((*alices)[0].id, third.id);
  EXPECT_EQ((*alices)[1].id, first.id);
  auto carols = ledger_->ListChannels(carol_.address, 10);
  ASSERT_EQ(carols->size(), 2u);  // as client and as provider
  EXPECT_EQ((*carols)[0].id, third.id);
  EXPECT_EQ(ledger_->ListChannels(bob_.address, 1)->size(), 1u);
  EXPECT_EQ(ledger_->ListChannels(bob_.address, 0)->size(), 1u);  // clamped up to 1
}

TEST_F(LedgerTest, HistoryPagesAndClampsItsLimit) {
  constexpr size_t kDeposits = 1'005;
  for (size_t i = 0; i < kDeposits; ++i) Fund(alice_, 1);
  auto page = ledger_->History(alice_.address, 0, 5'000);
  ASSERT_TRUE(page);
  EXPECT_EQ(page->size(), 1'000u);  // clamped down
  for (size_t i = 1; i < page->size(); ++i) EXPECT_LT((*page)[i - 1].seq, (*page)[i].seq);
  EXPECT_EQ(page->back().balance_after, Micro(1'000));
  auto rest = ledger_->History(alice_.address, page->back().seq, 1'000);
  ASSERT_EQ(rest->size(), 5u);
  EXPECT_EQ(rest->back().balance_after, Micro(kDeposits));
  EXPECT_EQ(ledger_->History(alice_.address, 0, 0)->size(), 1u);  // clamped up
  EXPECT_EQ(ledger_->History(alice_.address, rest->back().seq, 10)->size(), 0u);
}

TEST_F(LedgerTest, WaitForMovementWakesOnCommit) {
  using Clock = std::chrono::steady_clock;
  const uint64_t start = ledger_->WaitForMovementAfter(0, Clock::now());
  EXPECT_EQ(start, 0u);
  // Times out when nothing happens.
  EXPECT_EQ(ledger_->WaitForMovementAfter(0, Clock::now() + std::chrono::milliseconds(20)), 0u);
  std::atomic<uint64_t> seen{0};
  std::thread waiter(
      [&] { seen = ledger_->WaitForMovementAfter(0, Clock::now() + std::chrono::seconds(30)); });
  Fund(alice_, 5);
  waiter.join();
  EXPECT_GT(seen.load(), 0u);
  // Already past: returns at once.
  EXPECT_EQ(ledger_->WaitForMovementAfter(0, Clock::now() + std::chrono::seconds(30)), seen.load());
  // A refused request wakes nobody: waiting for more times out.
  auto before = seen.load();
  (void)ledger_->Deposit(MakeDeposit(op_.key, id(), alice_.address, Amount::Zero(), op_.Next()));
  EXPECT_EQ(ledger_->WaitForMovementAfter(before, Clock::now() + std::chrono::milliseconds(20)),
            before);
}

TEST_F(LedgerTest, ConcurrentRequestsAreSerialised) {
  constexpr int kThreads = 4;
  constexpr int kEach = 25;
  std::vector<Wallet> clients(kThreads);
  for (Wallet& w : clients) Fund(w, 10'000);
  Fund(alice_, 10'000);
  std::vector<ChannelState> chans;
  for (Wallet& w : clients) chans.push_back(OpenChannel(w, bob_, 5'000));
  // Pre-sign everything so the threads race on the ledger only.
  std::vector<std::vector<SettleBatchRequest>> batches(kThreads);
  std::vector<std::vector<WithdrawRequest>> withdrawals(kThreads);
  uint64_t provider_nonce = 1'000;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kEach; ++i) {
      batches[t].push_back(MakeSettleBatch(bob_.key, id(), ++provider_nonce,
                                           {Promise(clients[t], chans[t].id, 10 * (i + 1))}));
      withdrawals[t].push_back(
          MakeWithdraw(clients[t].key, id(), Micro(1), clients[t].Next(), "x"));
    }
  }
  std::vector<std::thread> threads;
  std::atomic<int> accepted_batches{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        if (ledger_->SettleBatch(batches[t][i])) ++accepted_batches;
        EXPECT_TRUE(ledger_->Withdraw(withdrawals[t][i]));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  // Batches from one provider race on its nonce: some are refused as replays, never applied.
  EXPECT_GT(accepted_batches.load(), 0);
  uint64_t settled = 0;
  for (const ChannelState& c : chans) settled += Channel(c.id).settled.micro();
  EXPECT_EQ(Account(bob_).balance, Micro(settled));
  std::vector<Address> all = Addresses();
  for (const Wallet& w : clients) {
    all.push_back(w.address);
    EXPECT_EQ(Account(w).balance, Micro(5'000 - kEach));
  }
  testing::ExpectConservation(*ledger_, all, channels_);
}

}  // namespace
}  // namespace dvpn::ledger
