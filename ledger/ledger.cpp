#include "ledger/ledger.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/log.h"

namespace dvpn::ledger {
namespace {

// Times are stored as signed 64-bit integers (see docs/ledger.md, "Storage").
constexpr uint64_t kMaxUnixTime = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr uint32_t kMaxFinalizePerCall = 1000;
constexpr uint32_t kMaxPageSize = 1000;
// ~130 bytes per entry; a miss only costs one store read, so a full cache is simply dropped.
constexpr size_t kMaxCachedChannels = size_t{1} << 17;
// Below this many signatures a second thread costs more than it saves.
constexpr size_t kParallelVerifyMin = 32;
constexpr size_t kVerifyChunk = 16;

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<uint64_t>::max() : sum;
}

// A channel is live while its provider may still settle: before close_deadline when closing,
// before expiry + challenge period when open. A channel past that is treated as closed.
bool IsLive(const ChannelState& ch, uint64_t now, uint64_t challenge) {
  switch (ch.status) {
    case ChannelStatus::kOpen:
      return now < challenge || ch.expiry_unix > now - challenge;
    case ChannelStatus::kClosing:
      return now < ch.close_deadline_unix;
    case ChannelStatus::kClosed:
      return false;
  }
  return false;
}

std::string Short(const ChannelId& id) { return ToHex(ByteSpan(id.bytes.data(), 8)); }

// Channel ids are SHA-256 outputs, but their creators can grind them; a per-process secret
// keeps anyone from piling channels into one hash bucket.
struct ChannelIdHash {
  size_t operator()(const ChannelId& id) const {
    static const uint64_t seed = (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
    uint64_t h;
    std::memcpy(&h, id.bytes.data(), sizeof h);
    return static_cast<size_t>((h ^ seed) * 0x9e3779b97f4a7c15ull);
  }
};

// What SettleBatch needs to check a promise before taking the write lock. Both fields are
// fixed when the channel opens, so a cached copy never goes stale.
struct ChannelKeys {
  PublicKey client_key;
  Address provider;
};

std::string ReplayMessage(uint64_t nonce, uint64_t last) {
  return "nonce " + std::to_string(nonce) + " is not greater than the last accepted nonce " +
         std::to_string(last);
}

}  // namespace

class Ledger::Impl {
 public:
  Impl(const LedgerConfig& config, const LedgerId& id, std::unique_ptr<Store> store,
       const Clock& clock)
      : config_(config), id_(id), store_(std::move(store)), clock_(clock) {
    auto last = store_->LastSeq();
    if (!last) throw std::runtime_error("ledger store: " + last.error().message);
    last_seq_ = *last;
    verify_threads_ = config_.verify_threads != 0
                          ? config_.verify_threads
                          : std::max(1u, std::thread::hardware_concurrency());
  }

  LedgerResult<AccountState> Deposit(const DepositRequest& req);
  LedgerResult<AccountState> Withdraw(const WithdrawRequest& req);
  LedgerResult<ChannelState> OpenChannel(const OpenChannelRequest& req);
  LedgerResult<ChannelState> TopUpChannel(const TopUpChannelRequest& req);
  LedgerResult<ChannelState> CloseChannel(const CloseChannelRequest& req);
  LedgerResult<SettleBatchResult> SettleBatch(const SettleBatchRequest& req);
  LedgerResult<std::vector<std::optional<PublicKey>>> ClientKeys(const SettleBatchRequest& req,
                                                                 const Address& provider);
  LedgerResult<void> SettleItem(const SignedPromise& p, uint8_t verdict, const Address& provider,
                                uint64_t now, AccountRow& prov, Amount& total_moved,
                                SettleItemResult& item);
  LedgerResult<size_t> FinalizeDueChannels();

  LedgerResult<AccountState> GetAccount(const Address& address) {
    std::lock_guard lock(mu_);
    auto row = LoadAccount(address);
    if (!row) return std::unexpected(row.error());
    return StateOf(*row);
  }
  LedgerResult<ChannelState> GetChannel(const ChannelId& id) {
    std::lock_guard lock(mu_);
    return LoadChannel(id);
  }
  LedgerResult<std::vector<ChannelState>> ListChannels(const Address& address, uint32_t limit) {
    std::lock_guard lock(mu_);
    return store_->ChannelsOf(address, std::clamp(limit, 1u, kMaxPageSize));
  }
  LedgerResult<std::vector<Movement>> History(const Address& address, uint64_t after_seq,
                                              uint32_t limit) {
    std::lock_guard lock(mu_);
    return store_->History(address, after_seq, std::clamp(limit, 1u, kMaxPageSize));
  }
  LedgerResult<Totals> GetTotals() {
    std::lock_guard lock(mu_);
    return store_->GetTotals();
  }
  uint64_t WaitForMovementAfter(uint64_t after_seq,
                                std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(seq_mu_);
    seq_cv_.wait_until(lock, deadline, [&] { return last_seq_ > after_seq; });
    return last_seq_;
  }

 private:
  // Runs `body` in one store transaction under the write lock: commits when it succeeds, rolls
  // back on any failure, and wakes watchers when movements were appended.
  template <class T, class Body>
  LedgerResult<T> Transact(const char* what, Body&& body) {
    LedgerResult<T> out = [&]() -> LedgerResult<T> {
      std::lock_guard lock(mu_);
      tx_last_seq_ = 0;
      if (auto ok = store_->Begin(); !ok) {
        store_->Rollback();
        return std::unexpected(ok.error());
      }
      LedgerResult<T> result = body();
      if (!result) {
        store_->Rollback();
        return result;
      }
      if (auto ok = store_->Commit(); !ok) {
        store_->Rollback();
        return std::unexpected(ok.error());
      }
      if (tx_last_seq_ != 0) Publish(tx_last_seq_);
      return result;
    }();
    if (!out && out.error().code == Errc::kStorage) {
      Logger("ledger")->error("{}: {}", what, out.error().message);
    }
    return out;
  }

  void Publish(uint64_t seq) {
    {
      std::lock_guard lock(seq_mu_);
      last_seq_ = std::max(last_seq_, seq);
    }
    seq_cv_.notify_all();
  }

  // Inside a transaction: appends and remembers the highest seq for Publish.
  LedgerResult<void> Append(const Movement& m) {
    if (m.amount.IsZero()) return {};
    auto seq = store_->AppendMovement(m);
    if (!seq) return std::unexpected(seq.error());
    tx_last_seq_ = std::max(tx_last_seq_, *seq);
    return {};
  }

  // A never-seen address reads as a fresh zero row (created when it is written).
  LedgerResult<AccountRow> LoadAccount(const Address& address) {
    auto row = store_->GetAccount(address);
    if (!row) return std::unexpected(row.error());
    if (*row) return **row;
    return AccountRow{address, Amount::Zero(), 0};
  }

  LedgerResult<ChannelState> LoadChannel(const ChannelId& id) {
    auto ch = store_->GetChannel(id);
    if (!ch) return std::unexpected(ch.error());
    if (!*ch) return Fail(Errc::kUnknownChannel, "no channel " + ToHex(id.bytes));
    return std::move(**ch);
  }

  LedgerResult<AccountState> StateOf(const AccountRow& row) {
    auto escrowed = store_->EscrowedBy(row.address);
    if (!escrowed) return std::unexpected(escrowed.error());
    return AccountState{row.address, row.balance, row.last_nonce, *escrowed};
  }

  // Checks the nonce of `row` (the signer's account) and consumes it.
  static LedgerResult<void> UseNonce(AccountRow& row, uint64_t nonce) {
    if (nonce <= row.last_nonce) return Fail(Errc::kReplay, ReplayMessage(nonce, row.last_nonce));
    row.last_nonce = nonce;
    return {};
  }

  LedgerResult<void> CheckLedger(const Signed& auth) const {
    if (auth.ledger_id != id_) {
      return Fail(Errc::kWrongLedger, "request is for ledger " + ToHex(auth.ledger_id.bytes) +
                                          ", this is ledger " + ToHex(id_.bytes));
    }
    return {};
  }

  static LedgerResult<void> CheckSignature(const Signed& auth, const Hash32& digest) {
    if (!auth.signer.Verify(digest, auth.signature)) {
      return Fail(Errc::kBadSignature, "signature does not verify for the signer and fields");
    }
    return {};
  }

  void RememberKeys(const ChannelState& ch) {
    std::lock_guard lock(cache_mu_);
    if (keys_.size() >= kMaxCachedChannels) keys_.clear();
    keys_.insert_or_assign(ch.id, ChannelKeys{ch.client_key, ch.provider});
  }

  // Refunds the remaining escrow of `ch` to its client and closes it (inside a transaction).
  LedgerResult<void> CloseAndRefund(ChannelState& ch, uint64_t now);

  // Verifies promise i for every i with keys[i] set, on up to verify_threads_ threads.
  // verdict[i]: 0 not checked, 1 valid, 2 invalid.
  void VerifyPromises(const std::vector<SignedPromise>& promises,
                      const std::vector<std::optional<PublicKey>>& keys,
                      std::vector<uint8_t>& verdict) const;

  const LedgerConfig config_;
  const LedgerId id_;
  unsigned verify_threads_ = 1;

  std::mutex mu_;  // serialises every use of store_
  std::unique_ptr<Store> store_;
  const Clock& clock_;
  uint64_t tx_last_seq_ = 0;  // guarded by mu_

  std::mutex cache_mu_;
  std::unordered_map<ChannelId, ChannelKeys, ChannelIdHash> keys_;  // guarded by cache_mu_

  std::mutex seq_mu_;
  std::condition_variable seq_cv_;
  uint64_t last_seq_ = 0;  // guarded by seq_mu_
};

LedgerResult<AccountState> Ledger::Impl::Deposit(const DepositRequest& req) {
  if (auto ok = CheckLedger(req.auth); !ok) return std::unexpected(ok.error());
  if (req.amount.IsZero()) return Fail(Errc::kInvalidArgument, "deposit amount is zero");
  if (auto ok = CheckSignature(req.auth,
                               payments::DepositDigest(id_, req.to, req.amount, req.auth.nonce));
      !ok) {
    return std::unexpected(ok.error());
  }
  if (!(req.auth.signer == config_.operator_key)) {
    return Fail(Errc::kNotPermitted, "only the operator key may deposit");
  }
  const Address op = Address::FromPublicKey(req.auth.signer);
  const uint64_t now = clock_.NowSeconds();
  return Transact<AccountState>("deposit", [&]() -> LedgerResult<AccountState> {
    auto signer = LoadAccount(op);
    if (!signer) return std::unexpected(signer.error());
    if (auto ok = UseNonce(*signer, req.auth.nonce); !ok) return std::unexpected(ok.error());
    auto totals = store_->GetTotals();
    if (!totals) return std::unexpected(totals.error());
    auto deposited = totals->deposited.CheckedAdd(req.amount);
    if (!deposited) {
      return Fail(Errc::kOverflow, "total deposits would exceed " + Amount::Max().ToString());
    }
    totals->deposited = *deposited;
    AccountRow other;
    AccountRow* target = &*signer;
    if (req.to != op) {
      auto to = LoadAccount(req.to);
      if (!to) return std::unexpected(to.error());
      other = *to;
      target = &other;
    }
    auto balance = target->balance.CheckedAdd(req.amount);
    if (!balance) return Fail(Errc::kOverflow, "balance would not fit 64 bits");
    target->balance = *balance;
    if (auto ok = store_->PutAccount(*signer); !ok) return std::unexpected(ok.error());
    if (target == &other) {
      if (auto ok = store_->PutAccount(other); !ok) return std::unexpected(ok.error());
    }
    if (auto ok = store_->PutTotals(*totals); !ok) return std::unexpected(ok.error());
    Movement m;
    m.time_unix = now;
    m.account = req.to;
    m.kind = MovementKind::kDeposit;
    m.amount = req.amount;
    m.counterparty = op;
    m.balance_after = target->balance;
    if (auto ok = Append(m); !ok) return std::unexpected(ok.error());
    return StateOf(*target);
  });
}

LedgerResult<AccountState> Ledger::Impl::Withdraw(const WithdrawRequest& req) {
  if (auto ok = CheckLedger(req.auth); !ok) return std::unexpected(ok.error());
  if (req.amount.IsZero()) return Fail(Errc::kInvalidArgument, "withdrawal amount is zero");
  if (req.destination.size() > payments::kMaxWithdrawDestination) {
    return Fail(
        Errc::kInvalidArgument,
        "destination longer than " + std::to_string(payments::kMaxWithdrawDestination) + " bytes");
  }
  if (!ValidWithdrawDestination(req.destination)) {
    return Fail(Errc::kInvalidArgument, "destination is not UTF-8 or holds a control character");
  }
  const Address from = Address::FromPublicKey(req.auth.signer);
  if (auto ok = CheckSignature(req.auth, payments::WithdrawDigest(id_, from, req.amount,
                                                                  req.auth.nonce, req.destination));
      !ok) {
    return std::unexpected(ok.error());
  }
  const uint64_t now = clock_.NowSeconds();
  return Transact<AccountState>("withdraw", [&]() -> LedgerResult<AccountState> {
    auto row = LoadAccount(from);
    if (!row) return std::unexpected(row.error());
    if (auto ok = UseNonce(*row, req.auth.nonce); !ok) return std::unexpected(ok.error());
    auto balance = row->balance.CheckedSub(req.amount);
    if (!balance) {
      return Fail(Errc::kInsufficientBalance,
                  "balance " + row->balance.ToString() + " is lower than " + req.amount.ToString());
    }
    auto totals = store_->GetTotals();
    if (!totals) return std::unexpected(totals.error());
    auto withdrawn = totals->withdrawn.CheckedAdd(req.amount);
    if (!withdrawn) return Fail(Errc::kOverflow, "total withdrawals would not fit 64 bits");
    totals->withdrawn = *withdrawn;
    row->balance = *balance;
    if (auto ok = store_->PutAccount(*row); !ok) return std::unexpected(ok.error());
    if (auto ok = store_->PutTotals(*totals); !ok) return std::unexpected(ok.error());
    Movement m;
    m.time_unix = now;
    m.account = from;
    m.kind = MovementKind::kWithdraw;
    m.amount = req.amount;
    m.balance_after = row->balance;
    m.destination = req.destination;
    if (auto ok = Append(m); !ok) return std::unexpected(ok.error());
    return StateOf(*row);
  });
}

LedgerResult<ChannelState> Ledger::Impl::OpenChannel(const OpenChannelRequest& req) {
  if (auto ok = CheckLedger(req.auth); !ok) return std::unexpected(ok.error());
  const uint64_t now = clock_.NowSeconds();
  const Address client = Address::FromPublicKey(req.auth.signer);
  if (req.amount.IsZero()) return Fail(Errc::kInvalidArgument, "channel amount is zero");
  if (req.provider == client) {
    return Fail(Errc::kInvalidArgument, "provider and client are the same account");
  }
  if (req.expiry_unix <= now || req.expiry_unix > kMaxUnixTime) {
    return Fail(Errc::kInvalidArgument, "expiry " + std::to_string(req.expiry_unix) +
                                            " is not in the future (now " + std::to_string(now) +
                                            ") or is out of range");
  }
  if (auto ok = CheckSignature(req.auth,
                               payments::OpenChannelDigest(id_, client, req.provider, req.amount,
                                                           req.auth.nonce, req.expiry_unix));
      !ok) {
    return std::unexpected(ok.error());
  }
  auto out = Transact<ChannelState>("open channel", [&]() -> LedgerResult<ChannelState> {
    auto row = LoadAccount(client);
    if (!row) return std::unexpected(row.error());
    if (auto ok = UseNonce(*row, req.auth.nonce); !ok) return std::unexpected(ok.error());
    auto balance = row->balance.CheckedSub(req.amount);
    if (!balance) {
      return Fail(Errc::kInsufficientBalance,
                  "balance " + row->balance.ToString() + " is lower than " + req.amount.ToString());
    }
    row->balance = *balance;
    ChannelState ch{
        .id = payments::ChannelIdFor(id_, client, req.auth.nonce),
        .client = client,
        .client_key = req.auth.signer,
        .provider = req.provider,
        .deposit = req.amount,
        .settled = Amount::Zero(),
        .refunded = Amount::Zero(),
        .status = ChannelStatus::kOpen,
        .expiry_unix = req.expiry_unix,
        .close_deadline_unix = 0,
        .opened_unix = now,
    };
    // Fresh nonces give fresh ids; an existing id would mean a hash collision.
    auto existing = store_->GetChannel(ch.id);
    if (!existing) return std::unexpected(existing.error());
    if (*existing) return Fail(Errc::kReplay, "channel " + ToHex(ch.id.bytes) + " exists");
    if (auto ok = store_->PutAccount(*row); !ok) return std::unexpected(ok.error());
    if (auto ok = store_->PutChannel(ch); !ok) return std::unexpected(ok.error());
    Movement m;
    m.time_unix = now;
    m.account = client;
    m.kind = MovementKind::kEscrowLock;
    m.amount = req.amount;
    m.channel = ch.id;
    m.counterparty = req.provider;
    m.balance_after = row->balance;
    if (auto ok = Append(m); !ok) return std::unexpected(ok.error());
    return ch;
  });
  if (out) RememberKeys(*out);
  return out;
}

LedgerResult<ChannelState> Ledger::Impl::TopUpChannel(const TopUpChannelRequest& req) {
  if (auto ok = CheckLedger(req.auth); !ok) return std::unexpected(ok.error());
  const uint64_t now = clock_.NowSeconds();
  if (req.amount.IsZero()) return Fail(Errc::kInvalidArgument, "top-up amount is zero");
  if (req.new_expiry_unix != 0 &&
      (req.new_expiry_unix <= now || req.new_expiry_unix > kMaxUnixTime)) {
    return Fail(Errc::kInvalidArgument, "new expiry " + std::to_string(req.new_expiry_unix) +
                                            " is not in the future (now " + std::to_string(now) +
                                            ") or is out of range");
  }
  if (auto ok = CheckSignature(
          req.auth, payments::TopUpChannelDigest(id_, req.channel, req.amount, req.auth.nonce,
                                                 req.new_expiry_unix));
      !ok) {
    return std::unexpected(ok.error());
  }
  const uint64_t challenge = config_.challenge_period_seconds;
  return Transact<ChannelState>("top up channel", [&]() -> LedgerResult<ChannelState> {
    auto ch = LoadChannel(req.channel);
    if (!ch) return std::unexpected(ch.error());
    if (!(ch->client_key == req.auth.signer)) {
      return Fail(Errc::kNotPermitted, "only the channel's client may top it up");
    }
    auto row = LoadAccount(ch->client);
    if (!row) return std::unexpected(row.error());
    if (auto ok = UseNonce(*row, req.auth.nonce); !ok) return std::unexpected(ok.error());
    if (ch->status != ChannelStatus::kOpen || !IsLive(*ch, now, challenge)) {
      return Fail(Errc::kChannelNotOpen, "channel " + Short(ch->id) + " is not open");
    }
    if (req.new_expiry_unix != 0 && req.new_expiry_unix < ch->expiry_unix) {
      return Fail(Errc::kInvalidArgument, "new expiry " + std::to_string(req.new_expiry_unix) +
                                              " is earlier than the current expiry " +
                                              std::to_string(ch->expiry_unix));
    }
    auto balance = row->balance.CheckedSub(req.amount);
    if (!balance) {
      return Fail(Errc::kInsufficientBalance,
                  "balance " + row->balance.ToString() + " is lower than " + req.amount.ToString());
    }
    auto deposit = ch->deposit.CheckedAdd(req.amount);
    if (!deposit) return Fail(Errc::kOverflow, "channel deposit would not fit 64 bits");
    row->balance = *balance;
    ch->deposit = *deposit;
    if (req.new_expiry_unix != 0) ch->expiry_unix = req.new_expiry_unix;
    if (auto ok = store_->PutAccount(*row); !ok) return std::unexpected(ok.error());
    if (auto ok = store_->PutChannel(*ch); !ok) return std::unexpected(ok.error());
    Movement m;
    m.time_unix = now;
    m.account = ch->client;
    m.kind = MovementKind::kEscrowLock;
    m.amount = req.amount;
    m.channel = ch->id;
    m.counterparty = ch->provider;
    m.balance_after = row->balance;
    if (auto ok = Append(m); !ok) return std::unexpected(ok.error());
    return std::move(*ch);
  });
}

LedgerResult<void> Ledger::Impl::CloseAndRefund(ChannelState& ch, uint64_t now) {
  const Amount refund = ch.Remaining();
  auto client = LoadAccount(ch.client);
  if (!client) return std::unexpected(client.error());
  auto balance = client->balance.CheckedAdd(refund);
  auto refunded = ch.refunded.CheckedAdd(refund);
  if (!balance || !refunded) return Fail(Errc::kOverflow, "refund would not fit 64 bits");
  client->balance = *balance;
  ch.refunded = *refunded;
  ch.status = ChannelStatus::kClosed;
  if (auto ok = store_->PutAccount(*client); !ok) return std::unexpected(ok.error());
  if (auto ok = store_->PutChannel(ch); !ok) return std::unexpected(ok.error());
  Movement m;
  m.time_unix = now;
  m.account = ch.client;
  m.kind = MovementKind::kEscrowRefund;
  m.amount = refund;
  m.channel = ch.id;
  m.counterparty = ch.provider;
  m.balance_after = client->balance;
  return Append(m);
}

LedgerResult<ChannelState> Ledger::Impl::CloseChannel(const CloseChannelRequest& req) {
  if (auto ok = CheckLedger(req.auth); !ok) return std::unexpected(ok.error());
  const Address signer = Address::FromPublicKey(req.auth.signer);
  if (auto ok = CheckSignature(
          req.auth, payments::CloseChannelDigest(id_, req.channel, signer, req.auth.nonce));
      !ok) {
    return std::unexpected(ok.error());
  }
  const uint64_t now = clock_.NowSeconds();
  const uint64_t challenge = config_.challenge_period_seconds;
  return Transact<ChannelState>("close channel", [&]() -> LedgerResult<ChannelState> {
    auto ch = LoadChannel(req.channel);
    if (!ch) return std::unexpected(ch.error());
    const bool is_client = ch->client_key == req.auth.signer;
    const bool is_provider = !is_client && ch->provider == signer;
    if (!is_client && !is_provider) {
      return Fail(Errc::kNotPermitted, "only the channel's client or provider may close it");
    }
    auto row = LoadAccount(signer);
    if (!row) return std::unexpected(row.error());
    if (auto ok = UseNonce(*row, req.auth.nonce); !ok) return std::unexpected(ok.error());
    if (!IsLive(*ch, now, challenge)) {
      return Fail(Errc::kChannelNotOpen, "channel " + Short(ch->id) + " is closed");
    }
    if (is_client && ch->status != ChannelStatus::kOpen) {
      return Fail(Errc::kChannelNotOpen, "channel " + Short(ch->id) + " is already closing");
    }
    if (auto ok = store_->PutAccount(*row); !ok) return std::unexpected(ok.error());
    if (is_client) {
      ch->status = ChannelStatus::kClosing;
      ch->close_deadline_unix = std::min(SaturatingAdd(now, challenge), kMaxUnixTime);
      if (auto ok = store_->PutChannel(*ch); !ok) return std::unexpected(ok.error());
    } else {
      if (auto ok = CloseAndRefund(*ch, now); !ok) return std::unexpected(ok.error());
    }
    return std::move(*ch);
  });
}

void Ledger::Impl::VerifyPromises(const std::vector<SignedPromise>& promises,
                                  const std::vector<std::optional<PublicKey>>& keys,
                                  std::vector<uint8_t>& verdict) const {
  const size_t n = promises.size();
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (;;) {
      const size_t begin = next.fetch_add(kVerifyChunk, std::memory_order_relaxed);
      if (begin >= n) return;
      const size_t end = std::min(n, begin + kVerifyChunk);
      for (size_t i = begin; i < end; ++i) {
        if (!keys[i]) continue;
        const SignedPromise& p = promises[i];
        const Hash32 digest = payments::PromiseDigest(id_, p.channel, p.cumulative);
        verdict[i] = keys[i]->Verify(digest, p.signature) ? 1 : 2;
      }
    }
  };
  size_t helpers = 0;
  if (n >= kParallelVerifyMin) {
    helpers = std::min<size_t>(verify_threads_, (n + kVerifyChunk - 1) / kVerifyChunk) - 1;
  }
  std::vector<std::thread> threads;
  threads.reserve(helpers);
  for (size_t t = 0; t < helpers; ++t) {
    try {
      threads.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // the calling thread does the rest
    }
  }
  work();
  for (std::thread& t : threads) t.join();
}

// Step 1 of SettleBatch: the client key of each promise's channel when the channel is
// `provider`'s (none for an unknown channel or another provider's), from the cache or, on a miss,
// the store. Refuses a replayed batch (kReplay) before it costs any signature checks.
LedgerResult<std::vector<std::optional<PublicKey>>> Ledger::Impl::ClientKeys(
    const SettleBatchRequest& req, const Address& provider) {
  const size_t n = req.promises.size();
  std::vector<std::optional<PublicKey>> keys(n);
  std::vector<size_t> misses;
  {
    std::lock_guard lock(cache_mu_);
    for (size_t i = 0; i < n; ++i) {
      auto it = keys_.find(req.promises[i].channel);
      if (it == keys_.end()) {
        misses.push_back(i);
      } else if (it->second.provider == provider) {
        keys[i] = it->second.client_key;
      }
    }
  }
  {
    // Skip the early checks rather than wait behind another batch's transaction; the
    // transaction repeats them anyway.
    std::unique_lock lock(mu_, std::defer_lock);
    if (!misses.empty()) {
      lock.lock();
    } else {
      (void)lock.try_lock();
    }
    if (lock.owns_lock()) {
      // A replayed batch is refused before it costs any signature checks.
      auto row = LoadAccount(provider);
      if (!row) return std::unexpected(row.error());
      if (req.auth.nonce <= row->last_nonce) {
        return Fail(Errc::kReplay, ReplayMessage(req.auth.nonce, row->last_nonce));
      }
      std::vector<ChannelState> found;
      for (size_t i : misses) {
        auto ch = store_->GetChannel(req.promises[i].channel);
        if (!ch) return std::unexpected(ch.error());
        if (!*ch) continue;
        if ((*ch)->provider == provider) keys[i] = (*ch)->client_key;
        found.push_back(std::move(**ch));
      }
      lock.unlock();
      for (const ChannelState& ch : found) RememberKeys(ch);
    }
  }
  return keys;
}

// Step 3 of SettleBatch for one promise, inside the batch's transaction: the item's outcome
// and, when credits move, the channel, the two movements and `prov`'s balance (which the caller
// writes once) and `total_moved`. `verdict`: 1 verified, 2 failed, 0 not checked (the channel was
// unknown in step 1). An error aborts the whole batch.
LedgerResult<void> Ledger::Impl::SettleItem(const SignedPromise& p, uint8_t verdict,
                                            const Address& provider, uint64_t now, AccountRow& prov,
                                            Amount& total_moved, SettleItemResult& item) {
  item.channel = p.channel;
  auto found = store_->GetChannel(p.channel);
  if (!found) return std::unexpected(found.error());
  if (!*found) {
    item.outcome = SettleOutcome::kUnknownChannel;
    item.message = "unknown channel";
    return {};
  }
  ChannelState& ch = **found;
  item.channel_settled = ch.settled;
  if (ch.provider != provider) {
    item.outcome = SettleOutcome::kNotYourChannel;
    item.message = "channel belongs to another provider";
    return {};
  }
  if (!IsLive(ch, now, config_.challenge_period_seconds)) {
    item.outcome = SettleOutcome::kChannelClosed;
    item.message = "channel is closed or past its challenge deadline";
    return {};
  }
  bool valid = verdict == 1;
  if (verdict == 0) {  // the channel was unknown when the batch was verified
    valid =
        ch.client_key.Verify(payments::PromiseDigest(id_, p.channel, p.cumulative), p.signature);
  }
  if (!valid) {
    item.outcome = SettleOutcome::kBadSignature;
    item.message = "promise signature does not verify for the channel's client";
    return {};
  }
  if (p.cumulative <= ch.settled) {
    item.outcome = SettleOutcome::kAlreadySettled;
    item.message = "already settled up to " + ch.settled.ToString();
    return {};
  }
  if (ch.settled == ch.deposit) {
    item.outcome = SettleOutcome::kEscrowExhausted;
    item.message = "escrow exhausted";
    return {};
  }
  const Amount target = Min(p.cumulative, ch.deposit);
  const Amount moved = *target.CheckedSub(ch.settled);  // settled < target here
  auto balance = prov.balance.CheckedAdd(moved);
  auto total = total_moved.CheckedAdd(moved);
  if (!balance || !total) return Fail(Errc::kOverflow, "provider balance would not fit");
  auto client = store_->GetAccount(ch.client);
  if (!client) return std::unexpected(client.error());
  if (!*client) return Fail(Errc::kStorage, "channel client has no account row");
  ch.settled = target;
  prov.balance = *balance;
  total_moved = *total;
  if (auto ok = store_->PutChannel(ch); !ok) return std::unexpected(ok.error());
  Movement pay;
  pay.time_unix = now;
  pay.account = ch.client;
  pay.kind = MovementKind::kSettlePay;
  pay.amount = moved;
  pay.channel = ch.id;
  pay.counterparty = provider;
  pay.balance_after = (*client)->balance;
  if (auto ok = Append(pay); !ok) return std::unexpected(ok.error());
  Movement receive = pay;
  receive.account = provider;
  receive.kind = MovementKind::kSettleReceive;
  receive.counterparty = ch.client;
  receive.balance_after = prov.balance;
  if (auto ok = Append(receive); !ok) return std::unexpected(ok.error());
  item.outcome =
      p.cumulative > ch.deposit ? SettleOutcome::kSettledCapped : SettleOutcome::kSettled;
  item.moved = moved;
  item.channel_settled = ch.settled;
  return {};
}

LedgerResult<SettleBatchResult> Ledger::Impl::SettleBatch(const SettleBatchRequest& req) {
  if (auto ok = CheckLedger(req.auth); !ok) return std::unexpected(ok.error());
  const size_t n = req.promises.size();
  if (n == 0) return Fail(Errc::kInvalidArgument, "empty settlement batch");
  if (n > config_.max_batch_items) {
    return Fail(Errc::kBatchTooLarge, "batch of " + std::to_string(n) + " promises exceeds " +
                                          std::to_string(config_.max_batch_items));
  }
  const Address provider = Address::FromPublicKey(req.auth.signer);
  if (auto ok = CheckSignature(
          req.auth, payments::SettleBatchDigest(id_, provider, req.auth.nonce, req.promises));
      !ok) {
    return std::unexpected(ok.error());
  }

  // 1. Client keys of this provider's channels, from the cache or (on a miss) the store.
  auto keys = ClientKeys(req, provider);
  if (!keys) return std::unexpected(keys.error());

  // 2. Promise signatures, in parallel and outside the write lock.
  std::vector<uint8_t> verdict(n, 0);
  VerifyPromises(req.promises, *keys, verdict);

  // 3. The money, in one transaction.
  return Transact<SettleBatchResult>("settle batch", [&]() -> LedgerResult<SettleBatchResult> {
    const uint64_t now = clock_.NowSeconds();
    auto prov = LoadAccount(provider);
    if (!prov) return std::unexpected(prov.error());
    if (auto ok = UseNonce(*prov, req.auth.nonce); !ok) return std::unexpected(ok.error());
    SettleBatchResult result;
    result.items.resize(n);
    for (size_t i = 0; i < n; ++i) {
      auto ok = SettleItem(req.promises[i], verdict[i], provider, now, *prov, result.total_moved,
                           result.items[i]);
      if (!ok) return std::unexpected(ok.error());
    }
    if (auto ok = store_->PutAccount(*prov); !ok) return std::unexpected(ok.error());
    result.provider_balance = prov->balance;
    return result;
  });
}

LedgerResult<size_t> Ledger::Impl::FinalizeDueChannels() {
  const uint64_t challenge = config_.challenge_period_seconds;
  return Transact<size_t>("finalize channels", [&]() -> LedgerResult<size_t> {
    const uint64_t now = clock_.NowSeconds();
    auto due = store_->ChannelsDue(now, challenge, kMaxFinalizePerCall);
    if (!due) return std::unexpected(due.error());
    for (const ChannelId& id : *due) {
      auto ch = LoadChannel(id);
      if (!ch) return std::unexpected(ch.error());
      if (auto ok = CloseAndRefund(*ch, now); !ok) return std::unexpected(ok.error());
    }
    return due->size();
  });
}

Ledger::Ledger(LedgerConfig config, std::unique_ptr<Store> store, const Clock& clock)
    : config_(std::move(config)), id_([this] {
        if (config_.name.size() > payments::kMaxLedgerName) {
          throw std::invalid_argument("ledger name longer than " +
                                      std::to_string(payments::kMaxLedgerName) + " bytes");
        }
        return payments::LedgerIdFor(config_.name, config_.operator_key);
      }()) {
  if (!store) throw std::invalid_argument("ledger needs a store");
  impl_ = std::make_unique<Impl>(config_, id_, std::move(store), clock);
}

Ledger::~Ledger() = default;

LedgerResult<AccountState> Ledger::Deposit(const DepositRequest& req) {
  return impl_->Deposit(req);
}
LedgerResult<AccountState> Ledger::Withdraw(const WithdrawRequest& req) {
  return impl_->Withdraw(req);
}
LedgerResult<ChannelState> Ledger::OpenChannel(const OpenChannelRequest& req) {
  return impl_->OpenChannel(req);
}
LedgerResult<ChannelState> Ledger::TopUpChannel(const TopUpChannelRequest& req) {
  return impl_->TopUpChannel(req);
}
LedgerResult<ChannelState> Ledger::CloseChannel(const CloseChannelRequest& req) {
  return impl_->CloseChannel(req);
}
LedgerResult<SettleBatchResult> Ledger::SettleBatch(const SettleBatchRequest& req) {
  return impl_->SettleBatch(req);
}
LedgerResult<size_t> Ledger::FinalizeDueChannels() { return impl_->FinalizeDueChannels(); }
LedgerResult<AccountState> Ledger::GetAccount(const Address& address) {
  return impl_->GetAccount(address);
}
LedgerResult<ChannelState> Ledger::GetChannel(const ChannelId& id) { return impl_->GetChannel(id); }
LedgerResult<std::vector<ChannelState>> Ledger::ListChannels(const Address& address,
                                                             uint32_t limit) {
  return impl_->ListChannels(address, limit);
}
LedgerResult<std::vector<Movement>> Ledger::History(const Address& address, uint64_t after_seq,
                                                    uint32_t limit) {
  return impl_->History(address, after_seq, limit);
}
LedgerResult<Totals> Ledger::GetTotals() { return impl_->GetTotals(); }
uint64_t Ledger::WaitForMovementAfter(uint64_t after_seq,
                                      std::chrono::steady_clock::time_point deadline) {
  return impl_->WaitForMovementAfter(after_seq, deadline);
}

}  // namespace dvpn::ledger
