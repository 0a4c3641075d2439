// Randomized conservation test: thousands of valid and invalid requests across many accounts,
// each checked against a small independent model (plain maps, no SQL, no crypto), and the
// conservation identity checked along the way and at the end.
//
// The model knows whether a signature is good from how the generator made it, so it does not
// share the ledger's verification code; it reimplements the rules of docs/ledger.md directly.

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>
#include <variant>

#include "tests/ledger/test_util.h"

namespace dvpn::ledger {
namespace {

using testing::Wallet;

constexpr uint64_t kStart = 1'800'000'000;
constexpr uint64_t kChallenge = 300;
constexpr uint32_t kMaxBatch = 8;
constexpr int kUsers = 20;
constexpr uint64_t kMaxTime = (uint64_t{1} << 63) - 1;

using u128 = unsigned __int128;

struct ModelAccount {
  uint64_t balance = 0;
  uint64_t nonce = 0;
};

struct ModelChannel {
  ChannelId id;
  int client = 0;  // wallet index
  Address provider;
  uint64_t deposit = 0, settled = 0, refunded = 0;
  ChannelStatus status = ChannelStatus::kOpen;
  uint64_t expiry = 0, deadline = 0, opened = 0;
  uint64_t max_signed = 0;  // highest cumulative the client ever signed
};

// A request the generator made, with what it knows about its signatures.
struct Generated {
  std::variant<DepositRequest, WithdrawRequest, OpenChannelRequest, TopUpChannelRequest,
               CloseChannelRequest, SettleBatchRequest>
      req;
  bool sig_ok = true;
  std::vector<bool> promise_sig_ok = {};  // settle: item i is signed by its channel's client
};

class PropertyRun {
 public:
  PropertyRun(uint64_t seed, std::string path)
      : rng_(seed), clock_(kStart), path_(std::move(path)), wallets_(kUsers + 1) {
    Reopen();
  }

  void Run(int steps) {
    for (step_ = 0; step_ < steps; ++step_) {
      Step();
      if (::testing::Test::HasFatalFailure() || failures_ > 20) return;
      if (step_ % 250 == 249) CheckAll();
    }
    CheckAll();
  }

  void Reopen() {
    ledger_.reset();
    LedgerConfig config{.name = "property",
                        .operator_key = op().key.public_key(),
                        .challenge_period_seconds = kChallenge,
                        .max_batch_items = kMaxBatch,
                        .verify_threads = 2};
    auto store = OpenSqliteStore(path_, payments::LedgerIdFor(config.name, config.operator_key));
    ASSERT_TRUE(store) << store.error().message;
    ledger_ = std::make_unique<Ledger>(config, std::move(*store), clock_);
    id_ = ledger_->id();
  }

  void CheckAll() {
    for (const Wallet& w : wallets_) CheckAccount(w.address);
    for (const auto& [cid, ch] : channels_) CheckChannel(cid);
    CheckTotals();
    std::vector<Address> addrs;
    for (const Wallet& w : wallets_) addrs.push_back(w.address);
    std::vector<ChannelId> ids;
    for (const auto& [cid, ch] : channels_) ids.push_back(cid);
    testing::ExpectConservation(*ledger_, addrs, ids);
    // The model's own identity, in 128 bits so it cannot wrap.
    u128 held = 0;
    for (const auto& [a, acct] : accounts_) held += acct.balance;
    for (const auto& [cid, ch] : channels_) {
      if (ch.status != ChannelStatus::kClosed) held += ch.deposit - ch.settled - ch.refunded;
    }
    EXPECT_TRUE(held == u128(deposited_) - withdrawn_) << "model conservation";
    // Journal: each account's last movement shows its balance.
    for (const Wallet& w : wallets_) {
      std::optional<Movement> last;
      uint64_t after = 0;
      for (int page_no = 0; page_no < 10'000; ++page_no) {
        auto page = ledger_->History(w.address, after, 1000);
        ASSERT_TRUE(page) << page.error().message;
        if (page->empty()) break;
        last = page->back();
        after = last->seq;
        if (page->size() < 1000) break;
      }
      if (last) {
        EXPECT_EQ(last->balance_after.micro(), Model(w.address).balance) << Where();
      }
    }
  }

  size_t accepted() const { return accepted_; }
  size_t refused() const { return refused_; }
  size_t settled_items() const { return settled_items_; }
  size_t channel_count() const { return channels_.size(); }

 private:
  Wallet& op() { return wallets_[0]; }
  Wallet& user(int i) { return wallets_[1 + i]; }
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool Chance(int percent) { return Rand(100) < static_cast<uint64_t>(percent); }
  uint64_t Now() const { return clock_.NowSeconds(); }

  ModelAccount Model(const Address& a) const {
    auto it = accounts_.find(a);
    return it == accounts_.end() ? ModelAccount{} : it->second;
  }
  uint64_t Escrowed(const Address& a) const {
    uint64_t sum = 0;
    for (const auto& [cid, ch] : channels_) {
      if (wallets_[ch.client].address == a && ch.status != ChannelStatus::kClosed) {
        sum += ch.deposit - ch.settled - ch.refunded;
      }
    }
    return sum;
  }
  bool Live(const ModelChannel& ch) const {
    switch (ch.status) {
      case ChannelStatus::kOpen:
        return u128(ch.expiry) + kChallenge > Now();
      case ChannelStatus::kClosing:
        return Now() < ch.deadline;
      case ChannelStatus::kClosed:
        return false;
    }
    return false;
  }

  void CheckAccount(const Address& a) {
    auto got = ledger_->GetAccount(a);
    ASSERT_TRUE(got) << got.error().message;
    ModelAccount m = Model(a);
    EXPECT_EQ(got->balance.micro(), m.balance) << Where() << a.ToString();
    EXPECT_EQ(got->last_nonce, m.nonce) << Where() << a.ToString();
    EXPECT_EQ(got->escrowed.micro(), Escrowed(a)) << Where() << a.ToString();
    if (got->balance.micro() != m.balance) ++failures_;
  }

  void CheckChannel(const ChannelId& cid) {
    const ModelChannel& m = channels_.at(cid);
    auto got = ledger_->GetChannel(cid);
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(got->client, wallets_[m.client].address);
    EXPECT_EQ(got->provider, m.provider);
    EXPECT_EQ(got->deposit.micro(), m.deposit) << Where();
    EXPECT_EQ(got->settled.micro(), m.settled) << Where();
    EXPECT_EQ(got->refunded.micro(), m.refunded) << Where();
    EXPECT_EQ(got->status, m.status) << Where();
    EXPECT_EQ(got->expiry_unix, m.expiry) << Where();
    EXPECT_EQ(got->close_deadline_unix, m.deadline) << Where();
    EXPECT_EQ(got->opened_unix, m.opened) << Where();
    // A provider never collects more than the client signed for, nor more than the escrow.
    EXPECT_LE(got->settled.micro(), m.max_signed);
    EXPECT_LE(u128(got->settled.micro()) + got->refunded.micro(), got->deposit.micro());
  }

  void CheckTotals() {
    auto totals = ledger_->GetTotals();
    ASSERT_TRUE(totals);
    EXPECT_EQ(totals->deposited.micro(), deposited_) << Where();
    EXPECT_EQ(totals->withdrawn.micro(), withdrawn_) << Where();
  }

  std::string Where() const { return "step " + std::to_string(step_) + ": "; }

  // ------------------------------------------------------------------------------------------
  // The model. Each returns the expected refusal, or nothing after applying the request.

  std::optional<Errc> ModelDeposit(const DepositRequest& r, bool sig_ok) {
    if (r.auth.ledger_id != id_) return Errc::kWrongLedger;
    if (r.amount.IsZero()) return Errc::kInvalidArgument;
    if (!sig_ok) return Errc::kBadSignature;
    if (!(r.auth.signer == op().key.public_key())) return Errc::kNotPermitted;
    if (r.auth.nonce <= Model(op().address).nonce) return Errc::kReplay;
    if (u128(deposited_) + r.amount.micro() > UINT64_MAX) return Errc::kOverflow;
    accounts_[op().address].nonce = r.auth.nonce;
    deposited_ += r.amount.micro();
    accounts_[r.to].balance += r.amount.micro();
    touched_ = {op().address, r.to};
    return std::nullopt;
  }

  std::optional<Errc> ModelWithdraw(const WithdrawRequest& r, bool sig_ok) {
    if (r.auth.ledger_id != id_) return Errc::kWrongLedger;
    if (r.amount.IsZero() || r.destination.size() > 128) return Errc::kInvalidArgument;
    if (!sig_ok) return Errc::kBadSignature;
    Address from = Address::FromPublicKey(r.auth.signer);
    ModelAccount a = Model(from);
    if (r.auth.nonce <= a.nonce) return Errc::kReplay;
    if (a.balance < r.amount.micro()) return Errc::kInsufficientBalance;
    accounts_[from] = ModelAccount{a.balance - r.amount.micro(), r.auth.nonce};
    withdrawn_ += r.amount.micro();
    touched_ = {from};
    return std::nullopt;
  }

  std::optional<Errc> ModelOpen(const OpenChannelRequest& r, bool sig_ok, int client) {
    if (r.auth.ledger_id != id_) return Errc::kWrongLedger;
    Address from = Address::FromPublicKey(r.auth.signer);
    if (r.amount.IsZero() || r.provider == from || r.expiry_unix <= Now() ||
        r.expiry_unix > kMaxTime) {
      return Errc::kInvalidArgument;
    }
    if (!sig_ok) return Errc::kBadSignature;
    ModelAccount a = Model(from);
    if (r.auth.nonce <= a.nonce) return Errc::kReplay;
    if (a.balance < r.amount.micro()) return Errc::kInsufficientBalance;
    accounts_[from] = ModelAccount{a.balance - r.amount.micro(), r.auth.nonce};
    ModelChannel ch;
    ch.id = payments::ChannelIdFor(id_, from, r.auth.nonce);
    ch.client = client;
    ch.provider = r.provider;
    ch.deposit = r.amount.micro();
    ch.expiry = r.expiry_unix;
    ch.opened = Now();
    channels_[ch.id] = ch;
    channel_list_.push_back(ch.id);
    touched_ = {from};
    touched_channels_ = {ch.id};
    return std::nullopt;
  }

  std::optional<Errc> ModelTopUp(const TopUpChannelRequest& r, bool sig_ok) {
    if (r.auth.ledger_id != id_) return Errc::kWrongLedger;
    if (r.amount.IsZero()) return Errc::kInvalidArgument;
    if (r.new_expiry_unix != 0 && (r.new_expiry_unix <= Now() || r.new_expiry_unix > kMaxTime)) {
      return Errc::kInvalidArgument;
    }
    if (!sig_ok) return Errc::kBadSignature;
    auto it = channels_.find(r.channel);
    if (it == channels_.end()) return Errc::kUnknownChannel;
    ModelChannel& ch = it->second;
    const Address& client = wallets_[ch.client].address;
    if (Address::FromPublicKey(r.auth.signer) != client) return Errc::kNotPermitted;
    ModelAccount a = Model(client);
    if (r.auth.nonce <= a.nonce) return Errc::kReplay;
    if (ch.status != ChannelStatus::kOpen || !Live(ch)) return Errc::kChannelNotOpen;
    if (r.new_expiry_unix != 0 && r.new_expiry_unix < ch.expiry) return Errc::kInvalidArgument;
    if (a.balance < r.amount.micro()) return Errc::kInsufficientBalance;
    if (u128(ch.deposit) + r.amount.micro() > UINT64_MAX) return Errc::kOverflow;
    accounts_[client] = ModelAccount{a.balance - r.amount.micro(), r.auth.nonce};
    ch.deposit += r.amount.micro();
    if (r.new_expiry_unix != 0) ch.expiry = r.new_expiry_unix;
    touched_ = {client};
    touched_channels_ = {ch.id};
    return std::nullopt;
  }

  void Refund(ModelChannel& ch) {
    uint64_t rest = ch.deposit - ch.settled - ch.refunded;
    accounts_[wallets_[ch.client].address].balance += rest;
    ch.refunded += rest;
    ch.status = ChannelStatus::kClosed;
  }

  std::optional<Errc> ModelClose(const CloseChannelRequest& r, bool sig_ok) {
    if (r.auth.ledger_id != id_) return Errc::kWrongLedger;
    if (!sig_ok) return Errc::kBadSignature;
    auto it = channels_.find(r.channel);
    if (it == channels_.end()) return Errc::kUnknownChannel;
    ModelChannel& ch = it->second;
    Address signer = Address::FromPublicKey(r.auth.signer);
    const bool is_client = signer == wallets_[ch.client].address;
    const bool is_provider = signer == ch.provider;
    if (!is_client && !is_provider) return Errc::kNotPermitted;
    ModelAccount a = Model(signer);
    if (r.auth.nonce <= a.nonce) return Errc::kReplay;
    if (!Live(ch)) return Errc::kChannelNotOpen;
    if (is_client && ch.status != ChannelStatus::kOpen) return Errc::kChannelNotOpen;
    accounts_[signer].nonce = r.auth.nonce;
    if (is_client) {
      ch.status = ChannelStatus::kClosing;
      ch.deadline = Now() + kChallenge;
    } else {
      Refund(ch);
    }
    touched_ = {signer, wallets_[ch.client].address};
    touched_channels_ = {ch.id};
    return std::nullopt;
  }

  struct ModelItem {
    SettleOutcome outcome;
    uint64_t moved = 0;
  };

  std::optional<Errc> ModelSettle(const SettleBatchRequest& r, bool sig_ok,
                                  const std::vector<bool>& item_ok, std::vector<ModelItem>& items) {
    if (r.auth.ledger_id != id_) return Errc::kWrongLedger;
    if (r.promises.empty()) return Errc::kInvalidArgument;
    if (r.promises.size() > kMaxBatch) return Errc::kBatchTooLarge;
    if (!sig_ok) return Errc::kBadSignature;
    Address provider = Address::FromPublicKey(r.auth.signer);
    if (r.auth.nonce <= Model(provider).nonce) return Errc::kReplay;
    accounts_[provider].nonce = r.auth.nonce;
    touched_ = {provider};
    touched_channels_.clear();
    for (size_t i = 0; i < r.promises.size(); ++i) {
      const SignedPromise& p = r.promises[i];
      auto it = channels_.find(p.channel);
      if (it == channels_.end()) {
        items.push_back({SettleOutcome::kUnknownChannel});
        continue;
      }
      ModelChannel& ch = it->second;
      if (ch.provider != provider) {
        items.push_back({SettleOutcome::kNotYourChannel});
      } else if (!Live(ch)) {
        items.push_back({SettleOutcome::kChannelClosed});
      } else if (!item_ok[i]) {
        items.push_back({SettleOutcome::kBadSignature});
      } else if (p.cumulative.micro() <= ch.settled) {
        items.push_back({SettleOutcome::kAlreadySettled});
      } else if (ch.settled == ch.deposit) {
        items.push_back({SettleOutcome::kEscrowExhausted});
      } else {
        uint64_t target = std::min(p.cumulative.micro(), ch.deposit);
        uint64_t moved = target - ch.settled;
        ch.settled = target;
        accounts_[provider].balance += moved;
        items.push_back({p.cumulative.micro() > ch.deposit ? SettleOutcome::kSettledCapped
                                                           : SettleOutcome::kSettled,
                         moved});
        touched_channels_.push_back(ch.id);
        touched_.push_back(wallets_[ch.client].address);
      }
    }
    return std::nullopt;
  }

  size_t ModelFinalize() {
    size_t n = 0;
    for (auto& [cid, ch] : channels_) {
      if (ch.status != ChannelStatus::kClosed && !Live(ch)) {
        Refund(ch);
        touched_.push_back(wallets_[ch.client].address);
        touched_channels_.push_back(cid);
        ++n;
      }
    }
    return n;
  }

  // ------------------------------------------------------------------------------------------
  // The generator.

  uint64_t PickNonce(Wallet& w) {
    const int r = static_cast<int>(Rand(100));
    const uint64_t last = Model(w.address).nonce;
    if (r < 4 && last > 0) return last;            // exactly the last accepted: replay
    if (r < 6 && last > 1) return 1 + Rand(last);  // an older one
    if (r < 7) w.nonce += Rand(1000);              // a gap is fine
    return w.Next();
  }

  const LedgerId& PickLedger() {
    static const LedgerId other = testing::OtherLedger();
    return Chance(3) ? other : id_;
  }

  uint64_t PickAmount(uint64_t available) {
    switch (Rand(12)) {
      case 0:
        return 0;
      case 1:
        return available;
      case 2:
        return available + 1 + Rand(100);
      case 3:
        return rng_();
      case 4:
        return 1;
      default:
        return 1 + Rand(std::max<uint64_t>(available, 1));
    }
  }

  // Flips a signature bit with a small probability; returns whether the signature still holds.
  bool MaybeForge(Signature& sig) {
    if (!Chance(4)) return true;
    sig[Rand(64)] ^= static_cast<uint8_t>(1u << Rand(8));
    return false;
  }

  int RandomUser() { return static_cast<int>(Rand(kUsers)); }

  const ModelChannel* RandomChannel() {
    if (channel_list_.empty()) return nullptr;
    // Favour recent channels: they are more likely to be live.
    size_t n = channel_list_.size();
    size_t i = Chance(70) ? n - 1 - Rand(std::min<size_t>(n, 40)) : Rand(n);
    return &channels_.at(channel_list_[i]);
  }

  // Mostly a live channel (one that can still change), sometimes any channel.
  const ModelChannel* PickChannel() {
    if (Chance(20)) return RandomChannel();
    std::vector<const ModelChannel*> live;
    for (auto it = channel_list_.rbegin(); it != channel_list_.rend() && live.size() < 50; ++it) {
      const ModelChannel& ch = channels_.at(*it);
      if (Live(ch)) live.push_back(&ch);
    }
    return live.empty() ? RandomChannel() : live[Rand(live.size())];
  }

  ChannelId RandomUnknownChannel() {
    ChannelId id;
    for (auto& b : id.bytes) b = static_cast<uint8_t>(rng_());
    return id;
  }

  Generated GenDeposit() {
    const bool late = step_ > steps_hint_ * 8 / 10;
    uint64_t amount = Chance(2) ? 0 : 1 + Rand(50'000);
    if (late && Chance(5)) amount = UINT64_MAX / 6 + Rand(1'000);  // run into the overflow
    Wallet& signer = Chance(8) ? user(RandomUser()) : op();
    Address to = Chance(3) ? op().address : user(RandomUser()).address;
    Generated g{
        MakeDeposit(signer.key, PickLedger(), to, Amount::FromMicro(amount), PickNonce(signer))};
    g.sig_ok = MaybeForge(std::get<DepositRequest>(g.req).auth.signature);
    return g;
  }

  Generated GenWithdraw() {
    Wallet& w = user(RandomUser());
    size_t len = Chance(5) ? 127 + Rand(4) : Rand(24);
    std::string dest(std::min<size_t>(len, 128), 'd');
    Generated g{MakeWithdraw(w.key, PickLedger(),
                             Amount::FromMicro(PickAmount(Model(w.address).balance)), PickNonce(w),
                             dest)};
    auto& req = std::get<WithdrawRequest>(g.req);
    g.sig_ok = MaybeForge(req.auth.signature);
    if (len > 128) {
      req.destination.assign(len, 'd');
      g.sig_ok = false;
    }
    return g;
  }

  Generated GenOpen(int& client) {
    client = RandomUser();
    Wallet& w = user(client);
    int provider = Chance(3) ? client : RandomUser();
    uint64_t expiry = Chance(10) ? Now() - 5 + Rand(600) : Now() + Rand(20'000);
    if (Chance(2)) expiry = kMaxTime + Rand(2);
    Generated g{MakeOpenChannel(w.key, PickLedger(), user(provider).address,
                                Amount::FromMicro(PickAmount(Model(w.address).balance / 3)),
                                PickNonce(w), expiry)};
    g.sig_ok = MaybeForge(std::get<OpenChannelRequest>(g.req).auth.signature);
    return g;
  }

  Generated GenTopUp() {
    const ModelChannel* ch = PickChannel();
    ChannelId cid = ch && !Chance(5) ? ch->id : RandomUnknownChannel();
    Wallet& w = ch && Chance(85) ? wallets_[ch->client] : user(RandomUser());
    uint64_t expiry = 0;
    if (ch) {
      switch (Rand(8)) {
        case 0:
        case 1:
        case 2:
        case 3:
          expiry = 0;
          break;
        case 4:
        case 5:
          expiry = ch->expiry + Rand(1'000);
          break;
        case 6:
          expiry = ch->expiry - 1 - Rand(100);
          break;
        default:
          expiry = Now() - Rand(10);
          break;
      }
    }
    Generated g{MakeTopUpChannel(w.key, PickLedger(), cid,
                                 Amount::FromMicro(PickAmount(Model(w.address).balance / 2)),
                                 PickNonce(w), expiry)};
    g.sig_ok = MaybeForge(std::get<TopUpChannelRequest>(g.req).auth.signature);
    return g;
  }

  Generated GenClose() {
    const ModelChannel* ch = PickChannel();
    ChannelId cid = ch && !Chance(5) ? ch->id : RandomUnknownChannel();
    Wallet* w = &user(RandomUser());
    if (ch) {
      int r = static_cast<int>(Rand(10));
      if (r < 5) {
        w = &wallets_[ch->client];
      } else if (r < 9) {
        for (Wallet& candidate : wallets_) {
          if (candidate.address == ch->provider) w = &candidate;
        }
      }
    }
    Generated g{MakeCloseChannel(w->key, PickLedger(), cid, PickNonce(*w))};
    g.sig_ok = MaybeForge(std::get<CloseChannelRequest>(g.req).auth.signature);
    return g;
  }

  Wallet& WalletOf(const Address& a) {
    for (Wallet& w : wallets_) {
      if (w.address == a) return w;
    }
    return user(0);
  }

  Generated GenSettle() {
    const ModelChannel* anchor = PickChannel();
    Wallet& provider = anchor && Chance(90) ? WalletOf(anchor->provider) : user(RandomUser());
    std::vector<const ModelChannel*> own;  // recent channels of this provider, mostly live
    for (auto it = channel_list_.rbegin(); it != channel_list_.rend() && own.size() < 30; ++it) {
      const ModelChannel& ch = channels_.at(*it);
      if (ch.provider == provider.address && (Live(ch) || Chance(10))) own.push_back(&ch);
    }
    size_t count = 1 + Rand(6);
    if (Chance(3)) count = kMaxBatch + 1;
    if (Chance(2)) count = 0;
    std::vector<SignedPromise> promises;
    std::vector<bool> ok;
    for (size_t i = 0; i < count; ++i) {
      const ModelChannel* ch = nullptr;
      int r = static_cast<int>(Rand(100));
      if (r < 70 && !own.empty()) {
        ch = own[Rand(own.size())];
      } else if (r < 85) {
        ch = RandomChannel();
      } else if (r < 95 && !promises.empty()) {  // a channel already in this batch
        auto it = channels_.find(promises[Rand(promises.size())].channel);
        if (it != channels_.end()) ch = &it->second;
      }
      if (!ch) {
        Wallet& w = user(RandomUser());
        promises.push_back(MakePromise(w.key, id_, RandomUnknownChannel(), Amount::FromMicro(5)));
        ok.push_back(false);
        continue;
      }
      uint64_t cumulative;
      switch (Rand(10)) {
        case 0:
        case 1:
          cumulative = Rand(ch->settled + 1);
          break;  // old
        case 2:
          cumulative = ch->max_signed;
          break;
        case 3:
          cumulative = ch->deposit + 1 + Rand(500);
          break;  // above the escrow
        default:
          cumulative = ch->settled + 1 + Rand(std::max<uint64_t>(ch->deposit - ch->settled, 1));
      }
      int kind = static_cast<int>(Rand(20));
      if (kind == 0) {  // signed by someone else
        Wallet& w = user(RandomUser());
        promises.push_back(MakePromise(w.key, id_, ch->id, Amount::FromMicro(cumulative)));
        ok.push_back(&w == &wallets_[ch->client]);
      } else if (kind == 1) {  // a promise of another channel, relabelled
        const ModelChannel* other = RandomChannel();
        SignedPromise p =
            MakePromise(wallets_[other->client].key, id_, other->id, Amount::FromMicro(cumulative));
        channels_.at(other->id).max_signed = std::max(other->max_signed, cumulative);
        p.channel = ch->id;
        promises.push_back(p);
        ok.push_back(other->id == ch->id);
      } else if (kind == 2) {  // signed for this ledger's twin
        promises.push_back(MakePromise(wallets_[ch->client].key, testing::OtherLedger(), ch->id,
                                       Amount::FromMicro(cumulative)));
        ok.push_back(false);
      } else {
        promises.push_back(
            MakePromise(wallets_[ch->client].key, id_, ch->id, Amount::FromMicro(cumulative)));
        ok.push_back(true);
      }
      if (ok.back()) {
        ModelChannel& m = channels_.at(ch->id);
        m.max_signed = std::max(m.max_signed, cumulative);
      }
    }
    Generated g{MakeSettleBatch(provider.key, PickLedger(), PickNonce(provider), promises)};
    g.sig_ok = MaybeForge(std::get<SettleBatchRequest>(g.req).auth.signature);
    g.promise_sig_ok = std::move(ok);
    return g;
  }

  // ------------------------------------------------------------------------------------------
  // One step: generate, predict, apply, compare.

  template <class R>
  void ExpectOutcome(const LedgerResult<R>& got, std::optional<Errc> want, const char* what) {
    ++op_counts_[std::string(what) + ":" + (want ? ErrcName(*want) : "ok")];
    if (want) {
      if (got) {
        ADD_FAILURE() << Where() << what << " accepted, model expected " << ErrcName(*want);
        ++failures_;
      } else if (got.error().code != *want) {
        ADD_FAILURE() << Where() << what << " refused with " << ErrcName(got.error().code) << " ("
                      << got.error().message << "), model expected " << ErrcName(*want);
        ++failures_;
      }
      ++refused_;
    } else {
      if (!got) {
        ADD_FAILURE() << Where() << what << " refused with " << ErrcName(got.error().code) << " ("
                      << got.error().message << "), model expected success";
        ++failures_;
      }
      ++accepted_;
    }
  }

  std::optional<Errc> Apply(const Generated& g, int open_client) {
    return std::visit(
        [&](const auto& req) -> std::optional<Errc> {
          using T = std::decay_t<decltype(req)>;
          if constexpr (std::is_same_v<T, DepositRequest>) {
            auto want = ModelDeposit(req, g.sig_ok);
            auto got = ledger_->Deposit(req);
            ExpectOutcome(got, want, "deposit");
            if (got && !want) {
              EXPECT_EQ(got->balance.micro(), Model(req.to).balance);
            }
            return want;
          } else if constexpr (std::is_same_v<T, WithdrawRequest>) {
            auto want = ModelWithdraw(req, g.sig_ok);
            auto got = ledger_->Withdraw(req);
            ExpectOutcome(got, want, "withdraw");
            if (got && !want) {
              EXPECT_EQ(got->balance.micro(), Model(got->address).balance);
            }
            return want;
          } else if constexpr (std::is_same_v<T, OpenChannelRequest>) {
            int client = open_client;
            if (client < 0) {  // a replay: find who signed it
              for (int i = 0; i < kUsers; ++i) {
                if (user(i).key.public_key() == req.auth.signer) client = 1 + i;
              }
            } else {
              client += 1;
            }
            auto want = ModelOpen(req, g.sig_ok, client);
            auto got = ledger_->OpenChannel(req);
            ExpectOutcome(got, want, "open");
            if (got && !want) {
              EXPECT_EQ(got->id, ChannelIdOf(req));
              EXPECT_TRUE(channels_.count(got->id));
            }
            return want;
          } else if constexpr (std::is_same_v<T, TopUpChannelRequest>) {
            auto want = ModelTopUp(req, g.sig_ok);
            auto got = ledger_->TopUpChannel(req);
            ExpectOutcome(got, want, "top-up");
            if (got && !want) {
              EXPECT_EQ(got->deposit.micro(), channels_.at(req.channel).deposit);
            }
            return want;
          } else if constexpr (std::is_same_v<T, CloseChannelRequest>) {
            auto want = ModelClose(req, g.sig_ok);
            auto got = ledger_->CloseChannel(req);
            ExpectOutcome(got, want, "close");
            if (got && !want) {
              EXPECT_EQ(got->status, channels_.at(req.channel).status);
            }
            return want;
          } else {
            std::vector<ModelItem> items;
            auto want = ModelSettle(req, g.sig_ok, g.promise_sig_ok, items);
            auto got = ledger_->SettleBatch(req);
            ExpectOutcome(got, want, "settle");
            if (got && !want) {
              EXPECT_EQ(got->items.size(), items.size());
              uint64_t total = 0;
              for (size_t i = 0; i < std::min(items.size(), got->items.size()); ++i) {
                EXPECT_EQ(got->items[i].outcome, items[i].outcome)
                    << Where() << "item " << i << ": " << got->items[i].message;
                EXPECT_EQ(got->items[i].moved.micro(), items[i].moved) << Where() << i;
                if (got->items[i].outcome != items[i].outcome) ++failures_;
                total += items[i].moved;
                if (items[i].moved) ++settled_items_;
                ++outcome_counts_[static_cast<int>(got->items[i].outcome)];
              }
              EXPECT_EQ(got->total_moved.micro(), total);
              EXPECT_EQ(got->provider_balance.micro(),
                        Model(Address::FromPublicKey(req.auth.signer)).balance);
            }
            return want;
          }
        },
        g.req);
  }

  void Step() {
    touched_.clear();
    touched_channels_.clear();
    const uint64_t seq_before =
        ledger_->WaitForMovementAfter(UINT64_MAX, std::chrono::steady_clock::now());
    const int r = static_cast<int>(Rand(100));
    if (r < 6) {  // time passes; due channels are finalized
      clock_.Advance(Rand(5) == 0 ? Rand(3'000) : Rand(60));
      const size_t want = ModelFinalize();
      auto got = ledger_->FinalizeDueChannels();
      ASSERT_TRUE(got) << got.error().message;
      EXPECT_EQ(*got, want) << Where();
    } else if (r < 12 && !past_.empty()) {  // a replay of an accepted request
      const Generated& g = past_[Rand(past_.size())];
      Apply(g, -1);
    } else {
      Generated g{DepositRequest{Signed{id_, 0, op().key.public_key(), {}}, {}, {}}};
      int open_client = -1;
      if (r < 30) {
        g = GenDeposit();
      } else if (r < 40) {
        g = GenWithdraw();
      } else if (r < 55) {
        g = GenOpen(open_client);
      } else if (r < 62) {
        g = GenTopUp();
      } else if (r < 72) {
        g = GenClose();
      } else {
        g = GenSettle();
      }
      auto refused = Apply(g, open_client);
      if (!refused) {
        if (past_.size() < 64) {
          past_.push_back(std::move(g));
        } else {
          past_[Rand(past_.size())] = std::move(g);
        }
      }
    }
    // Whatever happened, the accounts and channels it touched match the model, and a refused
    // request appended nothing.
    for (const Address& a : touched_) CheckAccount(a);
    for (const ChannelId& c : touched_channels_) CheckChannel(c);
    CheckTotals();
    const uint64_t seq_after =
        ledger_->WaitForMovementAfter(UINT64_MAX, std::chrono::steady_clock::now());
    EXPECT_GE(seq_after, seq_before);
  }

 public:
  int steps_hint_ = 0;

 private:
  std::mt19937_64 rng_;
  ManualClock clock_;
  std::string path_;
  std::vector<Wallet> wallets_;  // 0: operator, 1..kUsers: users
  std::unique_ptr<Ledger> ledger_;
  LedgerId id_;

  std::map<Address, ModelAccount> accounts_;
  std::map<ChannelId, ModelChannel> channels_;
  std::vector<ChannelId> channel_list_;  // in opening order
  uint64_t deposited_ = 0, withdrawn_ = 0;

  std::vector<Generated> past_;
  std::vector<Address> touched_;
  std::vector<ChannelId> touched_channels_;
  int step_ = 0;
  int failures_ = 0;
  size_t accepted_ = 0, refused_ = 0, settled_items_ = 0;

 public:
  std::map<int, int> outcome_counts_;
  std::map<std::string, int> op_counts_;
};

class LedgerProperty : public ::testing::TestWithParam<uint64_t> {};

TEST_P(LedgerProperty, RandomOperationsMatchTheModel) {
  constexpr int kSteps = 4'000;
  const uint64_t seed = GetParam();
  SCOPED_TRACE("seed " + std::to_string(seed));
  PropertyRun run(seed, ":memory:");
  run.steps_hint_ = kSteps;
  run.Run(kSteps);
  // The mix must really exercise both sides; otherwise the test proves little.
  EXPECT_GT(run.accepted(), static_cast<size_t>(kSteps) / 4);
  EXPECT_GT(run.refused(), static_cast<size_t>(kSteps) / 10);
  EXPECT_GT(run.settled_items(), 200u);
  EXPECT_GT(run.channel_count(), 100u);
  RecordProperty("accepted", static_cast<int>(run.accepted()));
  for (int outcome = 1; outcome <= 8; ++outcome) {
    EXPECT_GT(run.outcome_counts_[outcome], 0) << "settle outcome " << outcome << " never seen";
  }
  for (const char* seen : {"deposit:ok",
                           "deposit:not permitted",
                           "deposit:replay",
                           "deposit:wrong ledger",
                           "deposit:bad signature",
                           "withdraw:ok",
                           "withdraw:insufficient balance",
                           "withdraw:invalid argument",
                           "open:ok",
                           "open:invalid argument",
                           "top-up:ok",
                           "top-up:channel not open",
                           "top-up:not permitted",
                           "top-up:unknown channel",
                           "close:ok",
                           "close:channel not open",
                           "close:not permitted",
                           "settle:ok",
                           "settle:batch too large",
                           "settle:invalid argument",
                           "settle:replay"}) {
    EXPECT_GT(run.op_counts_[seen], 0) << seen << " never seen";
  }
  RecordProperty("refused", static_cast<int>(run.refused()));
}

INSTANTIATE_TEST_SUITE_P(Seeds, LedgerProperty, ::testing::Values(1, 2, 3, 20240601));

TEST(LedgerPropertyFile, SurvivesReopenMidRun) {
  // The same on a real file, reopening the ledger between phases.
  testing::TempDir dir;
  PropertyRun run(77, dir.File("ledger.db"));
  run.steps_hint_ = 600;
  for (int phase = 0; phase < 3; ++phase) {
    run.Run(200);
    ASSERT_FALSE(::testing::Test::HasFailure());
    run.Reopen();
    run.CheckAll();
  }
  EXPECT_GT(run.accepted(), 100u);
}

}  // namespace
}  // namespace dvpn::ledger
