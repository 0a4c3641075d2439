#pragma once
// PromiseStore: the provider's durable record of what its clients owe it (docs/payments.md §6).
// One SQLite file (WAL journal, synchronous=FULL): one row per channel holding the latest
// accepted promise and what is known of its settlement, a log of settlement attempts, and the
// last SettleBatch nonce the provider used.
//
// Promises arrive through Submit() and are group committed by the store's writer thread: all
// promises pending when a transaction starts share it (and its one fsync); each submitter's
// callback then runs with the durable result. A promise only replaces a channel's row when its
// cumulative is greater, so late duplicates never lower it. The settlement scheduler
// (settlement/settlement.h) reads the rows that can be settled and records what the ledger
// answered through the synchronous Begin/FinishAttempt and ApplyUpdates.
//
// Thread-safety: every method may be called from any thread. Reads use their own connection
// and do not wait for the writer's fsync. Ownership: the store owns its SQLite connections and
// writer thread; it reads the injected Clock (which must outlive it) for receive times.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/amount.h"
#include "common/clock.h"
#include "common/result.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {

enum class StoreErrc {
  kStorage,          // SQLite failed (I/O, corrupt file, schema refused); nothing was applied
  kQueueFull,        // Submit: the bounded queue is full; the promise was not taken
  kClosed,           // Submit after Close()
  kConflict,         // the channel's row names another ledger or client key
  kInvalidArgument,  // a caller bug: unknown attempt id, nonce not above the stored one, ...
};

const char* StoreErrcName(StoreErrc code);

template <class T>
using StoreResult = Result<T, StoreErrc>;

// Where a channel stands for settlement. Dead is final.
enum class ChannelSettleState {
  kActive = 1,     // settle when the triggers say so
  kDead = 2,       // closed, unknown, not ours: its unsettled value is lost, never retried
  kExhausted = 3,  // escrow fully paid out; settleable again once a top-up is seen
};

const char* ChannelSettleStateName(ChannelSettleState state);

// A promise a session has checked (signature, channel, escrow; docs/payments.md §4) and wants
// made durable, with what the session knows of the channel.
struct AcceptedPromise {
  LedgerId ledger;
  ChannelId channel;
  PublicKey client_key;
  Amount cumulative;
  Signature signature{};
  std::optional<Amount> deposit;          // the channel's deposit, if known
  std::optional<uint64_t> deadline_unix;  // last moment the channel can be settled, if known
};

// One channel's row.
struct StoredChannel {
  LedgerId ledger;
  ChannelId channel;
  PublicKey client_key;
  Amount cumulative;  // the latest (greatest) accepted promise
  Signature signature{};
  uint64_t first_received_unix = 0;  // first promise of the channel
  uint64_t last_received_unix = 0;   // the promise now held
  Amount settled_known;              // the ledger's `settled` as last seen (only grows)
  std::optional<Amount> deposit_known;
  std::optional<uint64_t> deadline_unix;
  std::optional<uint64_t> info_checked_unix;     // when deposit/deadline were last learned
  std::optional<uint64_t> unsettled_since_unix;  // set while Unsettled() > 0
  ChannelSettleState state = ChannelSettleState::kActive;
  std::string last_outcome;  // text of the last settlement outcome or channel check

  // min(cumulative, deposit) - settled_known (cumulative when the deposit is unknown), zero when
  // that is negative or the channel is dead.
  Amount Unsettled() const;
  // What a dead channel left unsettled; zero otherwise.
  Amount Lost() const;
  SignedPromise Promise() const { return SignedPromise{channel, cumulative, signature}; }
};

// Submit's durable answer: the channel's cumulative now on disk (>= the submitted one), and
// whether the submitted promise is the one held (false: an equal or greater one already was).
struct SubmitResult {
  Amount durable_cumulative;
  bool stored = false;
};

using SubmitCallback = std::function<void(StoreResult<SubmitResult>)>;

// Totals over every row (sums saturate at Amount::Max()).
struct Earnings {
  Amount settled;    // sum of settled_known
  Amount unsettled;  // sum of Unsettled()
  Amount lost;       // sum of Lost()
  uint64_t channels = 0, active = 0, exhausted = 0, dead = 0;
};

// What the scheduler's triggers look at: the rows of one ledger with unsettled value.
struct SettleOverview {
  uint64_t channels = 0;
  Amount total_unsettled;  // saturating
  std::optional<uint64_t> oldest_unsettled_since_unix;
  std::optional<uint64_t> nearest_deadline_unix;
};

// One row of the settlement-attempt log.
struct SettleAttempt {
  uint64_t id = 0;
  uint64_t time_unix = 0;
  uint64_t nonce = 0;
  uint32_t items = 0;
  Amount total_moved;
  std::string outcome;  // "pending" until finished; a crash leaves it so
};

// A change to one channel's row learned from the ledger (a settlement outcome or GetChannel).
// Unset fields are left as they are.
struct ChannelUpdate {
  ChannelId channel;
  std::optional<Amount> settled;           // raises settled_known (never lowers it)
  std::optional<Amount> deposit;           // replaces deposit_known
  std::optional<Amount> deposit_at_least;  // raises a known deposit_known to at least this
  std::optional<uint64_t> deadline_unix;
  std::optional<uint64_t> info_checked_unix;
  // kDead is final; kExhausted turns back to kActive by itself when the deposit known exceeds
  // settled_known; kActive lifts kExhausted.
  std::optional<ChannelSettleState> state;
  std::string outcome;  // replaces last_outcome when not empty
};

// What a committed promise survives (docs/payments.md §6, "Durability").
enum class Durability {
  // Committed = written to the operating system (SQLite WAL, synchronous=NORMAL): survives the
  // provider being killed (kill -9) at any moment; a power loss or kernel crash may take the
  // commits since the last WAL checkpoint. A lost promise only costs the provider.
  kProcessCrash,
  // Committed = fsync'd (synchronous=FULL): survives a power loss too, at one fsync per group
  // commit on the path of every credit.
  kPowerLoss,
};

const char* DurabilityName(Durability durability);

struct PromiseStoreOptions {
  Durability durability = Durability::kProcessCrash;
  size_t max_pending = 4096;  // Submit fails with kQueueFull beyond this many waiting promises
  size_t max_group = 1024;    // promises per transaction at most
  size_t max_attempt_rows = 10'000;  // older attempt-log rows are pruned
};

struct WriterStats {
  uint64_t commits = 0;   // group transactions committed
  uint64_t promises = 0;  // promises processed in them
  uint64_t failures = 0;  // group transactions that failed (their callbacks got kStorage)
  size_t queued = 0;      // waiting now
};

class PromiseStore {
 public:
  // Opens (creating if needed) the store in the file `path` (not ":memory:": readers use a
  // connection of their own) and starts its writer thread. Fails with
  // kStorage when the file cannot be opened, is not a promise store, is corrupt, or has a newer
  // schema than this build (it is never modified then).
  static StoreResult<std::unique_ptr<PromiseStore>> Open(const std::string& path,
                                                         const Clock& clock,
                                                         PromiseStoreOptions options = {});
  ~PromiseStore();  // Close()
  PromiseStore(const PromiseStore&) = delete;
  PromiseStore& operator=(const PromiseStore&) = delete;

  // --- promises (group committed) ---

  // Queues `promise` for the writer. On success `done` will be called exactly once, on the
  // store's writer thread, after the group transaction holding it has committed (Ok: durable)
  // or failed (kStorage: not durable), or with kConflict when the channel's row names another
  // ledger or client key. `done` must not block or call Flush/Close (post the result to your
  // own thread). When Submit itself fails (kQueueFull, kClosed) `done` is never called.
  StoreResult<void> Submit(AcceptedPromise promise, SubmitCallback done);
  // Returns when every promise submitted before the call has been committed and its callback
  // has returned. Must not be called from a callback.
  void Flush();
  // Stops taking promises (Submit: kClosed), commits everything queued, runs its callbacks and
  // stops the writer thread. Reads and the scheduler's writes keep working. Idempotent.
  void Close();
  WriterStats writer_stats() const;

  // --- reads ---

  StoreResult<std::optional<StoredChannel>> Get(const ChannelId& channel);
  // The rows of `ledger` with unsettled value, most urgent first (nearest known deadline, then
  // oldest unsettled), at most `limit`.
  StoreResult<std::vector<StoredChannel>> Settleable(const LedgerId& ledger, size_t limit);
  StoreResult<SettleOverview> Overview(const LedgerId& ledger);
  // Rows of `ledger`, not dead, still owed something (cumulative > settled_known), whose
  // channel facts were never learned or were learned at or before `checked_before_unix`;
  // never-checked first, at most `limit`.
  StoreResult<std::vector<StoredChannel>> NeedingInfo(const LedgerId& ledger,
                                                      uint64_t checked_before_unix, size_t limit);
  StoreResult<Earnings> GetEarnings();

  // --- unpaid traffic per channel (docs/payments.md §4) ---

  // The channel's recorded bound on served-but-unpaid bytes (0 when none is recorded).
  StoreResult<uint64_t> ChannelDebt(const ChannelId& channel);
  // Replaces it (0 removes the row). Synchronous: committed, with the store's durability, when
  // it returns Ok; nothing changes on kStorage. One small transaction (tens of microseconds
  // without fsync); a session calls it a few times, not per byte.
  StoreResult<void> SetChannelDebt(const LedgerId& ledger, const ChannelId& channel,
                                   uint64_t unpaid_bytes);
  // The last SettleBatch nonce recorded by BeginAttempt (0 when none).
  StoreResult<uint64_t> LastNonce();
  // The newest `limit` attempts, newest first.
  StoreResult<std::vector<SettleAttempt>> Attempts(size_t limit);

  // --- the scheduler's writes (synchronous: durable when they return) ---

  // Logs a settlement attempt as "pending" and makes `nonce` the stored last nonce, before the
  // batch is sent. Fails with kInvalidArgument when `nonce` is not above LastNonce().
  StoreResult<uint64_t> BeginAttempt(uint64_t nonce, uint32_t items);
  // Finishes attempt `attempt_id` and applies `updates` in one transaction. Updates of
  // channels that have no row are ignored. Fails with kInvalidArgument for an unknown id.
  StoreResult<void> FinishAttempt(uint64_t attempt_id, Amount total_moved,
                                  const std::string& outcome,
                                  std::span<const ChannelUpdate> updates);
  // Applies `updates` in one transaction (channel facts learned outside a settlement).
  StoreResult<void> ApplyUpdates(std::span<const ChannelUpdate> updates);

 private:
  class Impl;
  explicit PromiseStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dvpn::payments
