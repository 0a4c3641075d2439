#include "settlement/promise_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>

#include "common/io_thread.h"
#include "common/log.h"
#include "settlement/promise_log.h"
#include "sqlite/connection.h"
#include "sqlite/statement.h"

namespace dvpn::payments {
namespace {

// Version 1: meta, promises, settle_attempts. Version 2: channel_debt. Entry i migrates from
// version i to i + 1; a new version appends an entry and never edits an old one.
constexpr int kSchemaVersion = 2;
constexpr const char* kFormat = "dvpn-promise-store";
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE meta(
  key   TEXT PRIMARY KEY,
  value NOT NULL
);
-- One row per channel: its latest (greatest) accepted promise and what is known of its
-- settlement. Amounts are uint64 stored bit for bit; SQL never compares or adds them, so the
-- two flags below are computed in C++ on every write.
CREATE TABLE promises(
  channel         BLOB PRIMARY KEY CHECK(length(channel) = 32),
  ledger          BLOB NOT NULL CHECK(length(ledger) = 32),
  client_key      BLOB NOT NULL CHECK(length(client_key) = 32),
  cumulative      INTEGER NOT NULL,
  signature       BLOB NOT NULL CHECK(length(signature) = 64),
  first_received  INTEGER NOT NULL CHECK(first_received >= 0),
  last_received   INTEGER NOT NULL CHECK(last_received >= 0),
  settled_known   INTEGER NOT NULL,
  deposit_known   INTEGER,
  deadline        INTEGER CHECK(deadline IS NULL OR deadline >= 0),
  info_checked    INTEGER CHECK(info_checked IS NULL OR info_checked >= 0),
  unsettled_since INTEGER CHECK(unsettled_since IS NULL OR unsettled_since >= 0),
  state           INTEGER NOT NULL CHECK(state IN (1, 2, 3)),
  last_outcome    TEXT NOT NULL,
  settleable      INTEGER NOT NULL CHECK(settleable IN (0, 1)),  -- Unsettled() > 0
  owed            INTEGER NOT NULL CHECK(owed IN (0, 1))         -- not dead, cumulative > settled
);
CREATE INDEX promises_settleable ON promises(ledger, deadline, unsettled_since)
  WHERE settleable = 1;
CREATE INDEX promises_owed ON promises(ledger, info_checked) WHERE owed = 1;
CREATE TABLE settle_attempts(
  id          INTEGER PRIMARY KEY,
  time        INTEGER NOT NULL,
  nonce       INTEGER NOT NULL,
  items       INTEGER NOT NULL,
  total_moved INTEGER NOT NULL,
  outcome     TEXT NOT NULL
);
)sql",
    R"sql(
-- Per channel: an upper bound on the bytes served and not covered by a durable promise
-- (docs/payments.md §4, "Unpaid traffic per channel"). Written before the bytes it covers are
-- served; the next session of the channel carries it. No row: zero.
CREATE TABLE channel_debt(
  channel      BLOB PRIMARY KEY CHECK(length(channel) = 32),
  ledger       BLOB NOT NULL CHECK(length(ledger) = 32),
  unpaid_bytes INTEGER NOT NULL,
  updated      INTEGER NOT NULL CHECK(updated >= 0)
);
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

constexpr uint64_t kMaxTime = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr size_t kMaxOutcomeText = 300;

// Times are compared in SQL (ordering by deadline), so they are kept within int64.
int64_t TimeToDb(uint64_t t) { return static_cast<int64_t>(std::min(t, kMaxTime)); }

Amount SaturatingAdd(Amount a, Amount b) { return a.CheckedAdd(b).value_or(Amount::Max()); }

Amount UnsettledOf(Amount cumulative, Amount settled, std::optional<Amount> deposit,
                   ChannelSettleState state) {
  if (state == ChannelSettleState::kDead) return Amount::Zero();
  Amount payable = deposit ? Min(cumulative, *deposit) : cumulative;
  return payable.CheckedSub(settled).value_or(Amount::Zero());
}

std::string Clip(std::string text) {
  if (text.size() > kMaxOutcomeText) text.resize(kMaxOutcomeText);
  return text;
}

using sqlite::Connection;
using sqlite::FromDb;
using sqlite::Run;
using sqlite::SqliteErrc;
using sqlite::Statement;
using sqlite::ToDb;

// The store reports SQLite's failures as kStorage with SQLite's message, named.
std::unexpected<Error<StoreErrc>> Storage(const Error<SqliteErrc>& e) {
  return Fail(StoreErrc::kStorage, e.message);
}

std::optional<uint64_t> OptTime(const Run& r, int i) {
  if (r.IsNull(i)) return std::nullopt;
  return static_cast<uint64_t>(std::max<int64_t>(0, r.I64(i)));
}

constexpr const char* kRowColumns =
    "channel, ledger, client_key, cumulative, signature, first_received, last_received, "
    "settled_known, deposit_known, deadline, info_checked, unsettled_since, state, last_outcome";

StoreResult<StoredChannel> RowFrom(const Run& r) {
  auto channel = r.Array<32>(0);
  auto ledger = r.Array<32>(1);
  auto key_bytes = r.Array<32>(2);
  auto signature = r.Array<64>(4);
  if (!channel || !ledger || !key_bytes || !signature) {
    return Fail(StoreErrc::kStorage, "corrupt promise row");
  }
  auto key = PublicKey::Parse(*key_bytes);
  if (!key) return Fail(StoreErrc::kStorage, "corrupt promise row: client key is not a point");
  int64_t state = r.I64(12);
  if (state < 1 || state > 3) return Fail(StoreErrc::kStorage, "corrupt promise row state");
  return StoredChannel{
      .ledger = LedgerId{*ledger},
      .channel = ChannelId{*channel},
      .client_key = *key,
      .cumulative = r.Money(3),
      .signature = *signature,
      .first_received_unix = OptTime(r, 5).value_or(0),
      .last_received_unix = OptTime(r, 6).value_or(0),
      .settled_known = r.Money(7),
      .deposit_known = r.OptMoney(8),
      .deadline_unix = OptTime(r, 9),
      .info_checked_unix = OptTime(r, 10),
      .unsettled_since_unix = OptTime(r, 11),
      .state = static_cast<ChannelSettleState>(state),
      .last_outcome = r.Str(13),
  };
}

// Opens `path`, creating it 0600 when `create`.
StoreResult<Connection> OpenConnection(const std::string& path, bool create) {
  auto conn = Connection::Open(path, {.create = create, .busy_timeout_ms = 5000});
  if (!conn) {
    if (conn.error().code == SqliteErrc::kOpen) {
      return Fail(StoreErrc::kStorage, "open " + path + ": " + conn.error().message);
    }
    return Storage(conn.error());
  }
  return std::move(*conn);
}

#define DVPN_TRY_STMT(var, conn, sql)              \
  auto var##_or = (conn).Prepared(sql);            \
  if (!var##_or) return Storage(var##_or.error()); \
  const Statement& var = **var##_or

StoreResult<std::optional<StoredChannel>> ReadRow(Connection& c, const ChannelId& channel) {
  static const std::string sql =
      std::string("SELECT ") + kRowColumns + " FROM promises WHERE channel = ?1";
  DVPN_TRY_STMT(stmt, c, sql.c_str());
  Run r(stmt);
  r.Blob(1, channel.bytes);
  int rc = r.Step();
  if (rc == SQLITE_DONE) return std::optional<StoredChannel>();
  if (rc != SQLITE_ROW) return Storage(c.LastError("read promise"));
  auto row = RowFrom(r);
  if (!row) return std::unexpected(row.error());
  return std::optional<StoredChannel>(std::move(*row));
}

StoreResult<void> WriteRow(Connection& c, const StoredChannel& row) {
  DVPN_TRY_STMT(stmt, c,
                "INSERT INTO promises(channel, ledger, client_key, cumulative, signature, "
                "first_received, last_received, settled_known, deposit_known, deadline, "
                "info_checked, unsettled_since, state, last_outcome, settleable, owed) "
                "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) "
                "ON CONFLICT(channel) DO UPDATE SET cumulative = excluded.cumulative, "
                "signature = excluded.signature, last_received = excluded.last_received, "
                "settled_known = excluded.settled_known, deposit_known = excluded.deposit_known, "
                "deadline = excluded.deadline, info_checked = excluded.info_checked, "
                "unsettled_since = excluded.unsettled_since, state = excluded.state, "
                "last_outcome = excluded.last_outcome, settleable = excluded.settleable, "
                "owed = excluded.owed");
  auto opt_time = [](std::optional<uint64_t> t) -> std::optional<int64_t> {
    if (!t) return std::nullopt;
    return TimeToDb(*t);
  };
  const bool dead = row.state == ChannelSettleState::kDead;
  Run r(stmt);
  r.Blob(1, row.channel.bytes)
      .Blob(2, row.ledger.bytes)
      .Blob(3, row.client_key.bytes())
      .U64(4, row.cumulative.micro())
      .Blob(5, row.signature)
      .I64(6, TimeToDb(row.first_received_unix))
      .I64(7, TimeToDb(row.last_received_unix))
      .U64(8, row.settled_known.micro())
      .OptI64(9, row.deposit_known ? std::optional<int64_t>(ToDb(row.deposit_known->micro()))
                                   : std::nullopt)
      .OptI64(10, opt_time(row.deadline_unix))
      .OptI64(11, opt_time(row.info_checked_unix))
      .OptI64(12, opt_time(row.unsettled_since_unix))
      .I64(13, static_cast<int64_t>(row.state))
      .Text(14, row.last_outcome)
      .I64(15, row.Unsettled().IsZero() ? 0 : 1)
      .I64(16, !dead && row.cumulative > row.settled_known ? 1 : 0);
  if (r.Step() != SQLITE_DONE) return Storage(c.LastError("write promise"));
  return {};
}

StoreResult<uint64_t> ReadLastNonce(Connection& c) {
  DVPN_TRY_STMT(stmt, c, "SELECT value FROM meta WHERE key = 'last_nonce'");
  Run r(stmt);
  int rc = r.Step();
  if (rc == SQLITE_DONE) return Fail(StoreErrc::kStorage, "meta key missing: last_nonce");
  if (rc != SQLITE_ROW) return Storage(c.LastError("read last nonce"));
  return r.U64(0);
}

// Keeps unsettled_since true to its meaning: the receive time of the oldest promise not yet
// settled, or a slightly earlier time (never a later one, so the age trigger is never late).
void TrackSince(StoredChannel& row, bool was_settleable, uint64_t now) {
  if (row.Unsettled().IsZero()) {
    row.unsettled_since_unix.reset();
  } else if (!was_settleable || !row.unsettled_since_unix) {
    row.unsettled_since_unix = now;
  }
}

// `residual_since`: when the update raises settled_known and value remains, it came from
// promises received after this time (the settlement's batch was read before it).
void ApplyUpdate(StoredChannel& row, const ChannelUpdate& u, uint64_t now,
                 std::optional<uint64_t> residual_since) {
  const bool was_settleable = !row.Unsettled().IsZero();
  bool settled_rose = false;
  if (u.settled && *u.settled > row.settled_known) {
    row.settled_known = *u.settled;
    settled_rose = true;
  }
  if (u.deposit) row.deposit_known = *u.deposit;
  if (u.deposit_at_least && row.deposit_known && *row.deposit_known < *u.deposit_at_least) {
    row.deposit_known = *u.deposit_at_least;
  }
  if (u.deadline_unix) row.deadline_unix = std::min(*u.deadline_unix, kMaxTime);
  if (u.info_checked_unix) row.info_checked_unix = u.info_checked_unix;
  if (u.state && row.state != ChannelSettleState::kDead) row.state = *u.state;
  if (row.state == ChannelSettleState::kExhausted && row.deposit_known &&
      *row.deposit_known > row.settled_known) {
    row.state = ChannelSettleState::kActive;  // a top-up was seen
  }
  if (!u.outcome.empty()) row.last_outcome = Clip(u.outcome);
  TrackSince(row, was_settleable, now);
  if (settled_rose && residual_since && row.unsettled_since_unix) {
    row.unsettled_since_unix = std::max(*row.unsettled_since_unix, *residual_since);
  }
}

StoreResult<void> ApplyUpdatesIn(Connection& c, std::span<const ChannelUpdate> updates,
                                 uint64_t now, std::optional<uint64_t> residual_since) {
  for (const ChannelUpdate& u : updates) {
    auto row = ReadRow(c, u.channel);
    if (!row) return std::unexpected(row.error());
    if (!*row) continue;
    ApplyUpdate(**row, u, now, residual_since);
    if (auto ok = WriteRow(c, **row); !ok) return ok;
  }
  return {};
}

}  // namespace

const char* DurabilityName(Durability durability) {
  switch (durability) {
    case Durability::kProcessCrash:
      return "process";
    case Durability::kPowerLoss:
      return "power";
  }
  return "?";
}

const char* StoreErrcName(StoreErrc code) {
  switch (code) {
    case StoreErrc::kStorage:
      return "storage";
    case StoreErrc::kQueueFull:
      return "queue full";
    case StoreErrc::kClosed:
      return "closed";
    case StoreErrc::kConflict:
      return "conflict";
    case StoreErrc::kInvalidArgument:
      return "invalid argument";
  }
  return "?";
}

const char* ChannelSettleStateName(ChannelSettleState state) {
  switch (state) {
    case ChannelSettleState::kActive:
      return "active";
    case ChannelSettleState::kDead:
      return "dead";
    case ChannelSettleState::kExhausted:
      return "exhausted";
  }
  return "?";
}

Amount StoredChannel::Unsettled() const {
  return UnsettledOf(cumulative, settled_known, deposit_known, state);
}

Amount StoredChannel::Lost() const {
  if (state != ChannelSettleState::kDead) return Amount::Zero();
  return UnsettledOf(cumulative, settled_known, deposit_known, ChannelSettleState::kActive);
}

// --- Impl ----------------------------------------------------------------------------------

// Logged promises are folded into the tables after this long, or once this many are waiting.
constexpr std::chrono::milliseconds kApplyAfter{200};
constexpr size_t kApplyBatch = 512;
// Promises in the log at most (about 20 MB of file) while folds keep failing; then kQueueFull.
constexpr size_t kMaxUnapplied = 100'000;

class PromiseStore::Impl {
 public:
  Impl(const Clock& clock, PromiseStoreOptions options) : clock_(clock), options_(options) {
    options_.max_pending = std::max<size_t>(options_.max_pending, 1);
    options_.max_group = std::max<size_t>(options_.max_group, 1);
    options_.max_attempt_rows = std::max<size_t>(options_.max_attempt_rows, 1);
  }
  ~Impl() { Close(); }

  StoreResult<void> Setup(const std::string& path);
  void StartWriter() {
    writer_ = std::thread([this] {
      NameThisThread("promise-store");
      WriterLoop();
    });
  }

  StoreResult<void> Submit(AcceptedPromise promise, SubmitCallback done) {
    std::lock_guard lock(mu_);
    if (closing_) return Fail(StoreErrc::kClosed, "the promise store is closed");
    if (queue_.size() >= options_.max_pending) {
      return Fail(StoreErrc::kQueueFull,
                  "promise store queue is full (" + std::to_string(queue_.size()) + " waiting)");
    }
    queue_.push_back(Pending{std::move(promise), std::move(done)});
    ++submitted_;
    cv_.notify_one();
    return {};
  }

  void Flush() {
    std::unique_lock lock(mu_);
    const uint64_t target = submitted_;
    done_cv_.wait(lock, [&] { return completed_ >= target || writer_gone_; });
  }

  void Close() {
    {
      std::lock_guard lock(mu_);
      closing_ = true;
      cv_.notify_all();
    }
    std::lock_guard join_lock(join_mu_);
    if (writer_.joinable()) writer_.join();
    std::lock_guard write_lock(write_mu_);
    if (log_) (void)ApplyLogLocked();
  }

  WriterStats Stats() const {
    std::lock_guard lock(mu_);
    WriterStats s = stats_;
    s.queued = queue_.size();
    return s;
  }

  // Reads.
  StoreResult<std::optional<StoredChannel>> Get(const ChannelId& channel) {
    if (auto ok = ApplyPending(); !ok) return std::unexpected(ok.error());
    std::lock_guard lock(read_mu_);
    return ReadRow(read_, channel);
  }

  StoreResult<uint64_t> ChannelDebt(const ChannelId& channel) {
    std::lock_guard lock(read_mu_);
    DVPN_TRY_STMT(stmt, read_, "SELECT unpaid_bytes FROM channel_debt WHERE channel = ?1");
    Run r(stmt);
    r.Blob(1, channel.bytes);
    const int rc = r.Step();
    if (rc == SQLITE_DONE) return uint64_t{0};
    if (rc != SQLITE_ROW) return Storage(read_.LastError("read channel debt"));
    return r.U64(0);
  }
  StoreResult<void> SetChannelDebt(const LedgerId& ledger, const ChannelId& channel,
                                   uint64_t unpaid_bytes) {
    std::lock_guard lock(write_mu_);
    const int64_t now = TimeToDb(clock_.NowSeconds());
    return write_.Transact("channel debt", StoreErrc::kStorage, [&]() -> StoreResult<void> {
      if (unpaid_bytes == 0) {
        DVPN_TRY_STMT(del, write_, "DELETE FROM channel_debt WHERE channel = ?1");
        Run r(del);
        r.Blob(1, channel.bytes);
        if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("write channel debt"));
        return {};
      }
      DVPN_TRY_STMT(put, write_,
                    "INSERT INTO channel_debt(channel, ledger, unpaid_bytes, updated) "
                    "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(channel) DO UPDATE SET "
                    "ledger = excluded.ledger, unpaid_bytes = excluded.unpaid_bytes, "
                    "updated = excluded.updated");
      Run r(put);
      r.Blob(1, channel.bytes).Blob(2, ledger.bytes).U64(3, unpaid_bytes).I64(4, now);
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("write channel debt"));
      return {};
    });
  }

  // Folds the log into the tables now (readers call it first, so they see every promise).
  StoreResult<void> ApplyPending() {
    std::lock_guard lock(write_mu_);
    return ApplyLogLocked();
  }
  StoreResult<std::vector<StoredChannel>> Settleable(const LedgerId& ledger, size_t limit);
  StoreResult<SettleOverview> Overview(const LedgerId& ledger);
  StoreResult<std::vector<StoredChannel>> NeedingInfo(const LedgerId& ledger, uint64_t before,
                                                      size_t limit);
  StoreResult<Earnings> GetEarnings();
  StoreResult<uint64_t> LastNonce() {
    std::lock_guard lock(read_mu_);
    return ReadLastNonce(read_);
  }
  StoreResult<std::vector<SettleAttempt>> Attempts(size_t limit);

  // The scheduler's writes.
  StoreResult<uint64_t> BeginAttempt(uint64_t nonce, uint32_t items);
  StoreResult<void> FinishAttempt(uint64_t id, Amount total_moved, const std::string& outcome,
                                  std::span<const ChannelUpdate> updates);
  StoreResult<void> ApplyUpdates(std::span<const ChannelUpdate> updates) {
    std::lock_guard lock(write_mu_);
    if (auto ok = ApplyLogLocked(); !ok) return ok;  // the rows updated must exist
    const uint64_t now = clock_.NowSeconds();
    return write_.Transact("channel updates", StoreErrc::kStorage,
                           [&] { return ApplyUpdatesIn(write_, updates, now, std::nullopt); });
  }

 private:
  struct Pending {
    AcceptedPromise promise;
    SubmitCallback done;
  };

  void WriterLoop();
  // Makes `group` durable with one log append; one result per promise.
  std::vector<StoreResult<SubmitResult>> LogGroup(std::vector<Pending>& group);
  // Writes the logged promises into the tables in one transaction, then empties the log.
  // Caller holds write_mu_.
  StoreResult<void> ApplyLogLocked();
  StoreResult<SubmitResult> StoreOne(const AcceptedPromise& p, uint64_t now);
  StoreResult<void> CheckExisting();
  StoreResult<void> Migrate();

  const Clock& clock_;
  PromiseStoreOptions options_;
  std::string path_;

  // What the log holds that the tables do not yet, and the latest promise known per channel
  // (tables + log), which Submit's checks use without a SQL query.
  struct Known {
    LedgerId ledger;
    PublicKey client_key;
    Amount cumulative;
  };
  std::optional<PromiseLog> log_;
  std::vector<LoggedPromise> unapplied_;
  std::map<ChannelId, Known> known_;
  std::chrono::steady_clock::time_point last_apply_ = std::chrono::steady_clock::now();
  std::atomic<bool> has_unapplied_{false};
  std::mutex write_mu_;  // guards write_, log_, unapplied_, known_
  Connection write_;
  std::mutex read_mu_;  // guards read_
  Connection read_;

  mutable std::mutex mu_;            // guards the queue and counters below
  std::condition_variable cv_;       // writer: work or closing
  std::condition_variable done_cv_;  // Flush: completed_ moved
  std::deque<Pending> queue_;
  uint64_t submitted_ = 0;
  uint64_t completed_ = 0;
  bool closing_ = false;
  bool writer_gone_ = false;
  WriterStats stats_;

  std::mutex join_mu_;
  std::thread writer_;
};

StoreResult<void> PromiseStore::Impl::Migrate() {
  return write_.Transact("migration", StoreErrc::kStorage, [&]() -> StoreResult<void> {
    auto schema = write_.ReadSchema();
    if (!schema) return Storage(schema.error());
    const bool has_meta = schema->has_meta;
    int64_t version = 0;
    if (has_meta) {
      if (schema->format != kFormat) {
        return Fail(StoreErrc::kStorage, "not a dvpn promise store (no format marker)");
      }
      if (!schema->schema_version) {
        return Fail(StoreErrc::kStorage, "promise store has no version");
      }
      version = *schema->schema_version;
      if (version > kSchemaVersion) {
        return Fail(StoreErrc::kStorage, "promise store schema version " + std::to_string(version) +
                                             " is newer than this build supports (" +
                                             std::to_string(kSchemaVersion) + ")");
      }
      if (version < 1) return Fail(StoreErrc::kStorage, "corrupt promise store schema version");
    } else if (schema->tables > 0) {
      return Fail(StoreErrc::kStorage, "not a dvpn promise store (it has other tables)");
    }
    for (int64_t v = version; v < kSchemaVersion; ++v) {
      if (auto ok = write_.Exec(kMigrations[v], "migrate promise store"); !ok) {
        return Storage(ok.error());
      }
    }
    DVPN_TRY_STMT(put, write_,
                  "INSERT INTO meta(key, value) VALUES(?1, ?2) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    {
      Run r(put);
      r.Text(1, "schema_version").I64(2, kSchemaVersion);
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("write meta"));
    }
    if (!has_meta) {
      {
        Run r(put);
        r.Text(1, "format").Text(2, kFormat);
        if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("write meta"));
      }
      Run r(put);
      r.Text(1, "last_nonce").I64(2, 0);
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("write meta"));
    }
    return {};
  });
}

StoreResult<void> PromiseStore::Impl::CheckExisting() {
  auto schema = write_.ReadSchema();  // also where a file that is not a database is noticed
  if (!schema) return Storage(schema.error());
  if (!schema->has_meta) return {};  // empty, or someone else's tables: Migrate() says which
  if (schema->format != kFormat) {
    return Fail(StoreErrc::kStorage, "not a dvpn promise store (no format marker)");
  }
  const int64_t version = schema->schema_version.value_or(0);
  if (version > kSchemaVersion) {
    return Fail(StoreErrc::kStorage, "promise store schema version " + std::to_string(version) +
                                         " is newer than this build supports (" +
                                         std::to_string(kSchemaVersion) + ")");
  }
  return {};
}

StoreResult<void> PromiseStore::Impl::Setup(const std::string& path) {
  path_ = path;
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) {
    return Fail(StoreErrc::kStorage, "a promise store needs a file path");  // two connections
  }
  auto write = OpenConnection(path, /*create=*/true);
  if (!write) return std::unexpected(write.error());
  write_ = std::move(*write);
  // Check the schema before anything writes to the file (switching to WAL rewrites its
  // header): a newer or foreign file is left as it is.
  if (auto ok = CheckExisting(); !ok) return ok;
  if (auto ok = write_.Exec("PRAGMA journal_mode = WAL", "enable WAL"); !ok) {
    return Storage(ok.error());
  }
  const char* sync = options_.durability == Durability::kPowerLoss ? "PRAGMA synchronous = FULL"
                                                                   : "PRAGMA synchronous = NORMAL";
  if (auto ok = write_.Exec(sync, "set synchronous"); !ok) return Storage(ok.error());
  if (auto ok = Migrate(); !ok) return ok;
  // Promises logged before a crash (credited, not yet in the tables) go in first.
  auto log = PromiseLog::Open(path + ".log", &unapplied_);
  if (!log) return std::unexpected(log.error());
  log_.emplace(std::move(*log));
  if (!unapplied_.empty()) {
    Logger("payments")->info("promise store: {} promise(s) recovered from the log",
                             unapplied_.size());
  }
  if (auto ok = ApplyLogLocked(); !ok) return ok;
  auto read = OpenConnection(path, /*create=*/false);
  if (!read) return std::unexpected(read.error());
  read_ = std::move(*read);
  if (auto ok = read_.Exec("PRAGMA query_only = ON", "set query_only"); !ok) {
    return Storage(ok.error());
  }
  return {};
}

void PromiseStore::Impl::WriterLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    // With promises only in the log, wake up in time to fold them into the tables.
    if (has_unapplied_) {
      cv_.wait_for(lock, kApplyAfter, [&] { return !queue_.empty() || closing_; });
    } else {
      cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
    }
    if (queue_.empty()) {
      if (closing_) break;  // closing and drained (Close folds the log in)
      lock.unlock();
      {
        std::lock_guard write_lock(write_mu_);
        if (std::chrono::steady_clock::now() - last_apply_ >= kApplyAfter) (void)ApplyLogLocked();
      }
      lock.lock();
      continue;
    }
    std::vector<Pending> group;
    const size_t n = std::min(queue_.size(), options_.max_group);
    group.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      group.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    std::vector<StoreResult<SubmitResult>> results = LogGroup(group);
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i].done) group[i].done(std::move(results[i]));
    }
    lock.lock();
    completed_ += group.size();
    done_cv_.notify_all();
  }
  writer_gone_ = true;
  done_cv_.notify_all();
}

StoreResult<SubmitResult> PromiseStore::Impl::StoreOne(const AcceptedPromise& p, uint64_t now) {
  auto existing = ReadRow(write_, p.channel);
  if (!existing) return std::unexpected(existing.error());
  if (!*existing) {
    StoredChannel row{
        .ledger = p.ledger,
        .channel = p.channel,
        .client_key = p.client_key,
        .cumulative = p.cumulative,
        .signature = p.signature,
        .first_received_unix = now,
        .last_received_unix = now,
        .settled_known = Amount::Zero(),
        .deposit_known = p.deposit,
        .deadline_unix =
            p.deadline_unix ? std::optional(std::min(*p.deadline_unix, kMaxTime)) : std::nullopt,
        .info_checked_unix =
            p.deposit && p.deadline_unix ? std::optional<uint64_t>(now) : std::nullopt,
        .unsettled_since_unix = std::nullopt,
        .state = ChannelSettleState::kActive,
        .last_outcome = "",
    };
    TrackSince(row, false, now);
    if (auto ok = WriteRow(write_, row); !ok) return std::unexpected(ok.error());
    return SubmitResult{p.cumulative, true};
  }
  StoredChannel& row = **existing;
  if (row.ledger != p.ledger || !(row.client_key == p.client_key)) {
    return Fail(StoreErrc::kConflict, "channel " + ToHex(ByteSpan(p.channel.bytes.data(), 8)) +
                                          " is stored with another ledger or client key");
  }
  if (p.cumulative <= row.cumulative) return SubmitResult{row.cumulative, false};
  const bool was_settleable = !row.Unsettled().IsZero();
  row.cumulative = p.cumulative;
  row.signature = p.signature;
  row.last_received_unix = now;
  if (p.deposit && (!row.deposit_known || *p.deposit > *row.deposit_known)) {
    row.deposit_known = p.deposit;  // deposits only grow
  }
  if (p.deadline_unix) row.deadline_unix = std::min(*p.deadline_unix, kMaxTime);
  if (row.state == ChannelSettleState::kExhausted && row.deposit_known &&
      *row.deposit_known > row.settled_known) {
    row.state = ChannelSettleState::kActive;
  }
  TrackSince(row, was_settleable, now);
  if (auto ok = WriteRow(write_, row); !ok) return std::unexpected(ok.error());
  return SubmitResult{p.cumulative, true};
}

std::vector<StoreResult<SubmitResult>> PromiseStore::Impl::LogGroup(std::vector<Pending>& group) {
  std::vector<StoreResult<SubmitResult>> results;
  results.reserve(group.size());
  std::lock_guard lock(write_mu_);
  const uint64_t now = clock_.NowSeconds();
  std::vector<LoggedPromise> append;
  std::map<ChannelId, std::optional<Known>> before;  // to undo known_ if the append fails
  std::vector<size_t> appended_index;                // results[i] of each appended promise
  std::optional<Error<StoreErrc>> failure;
  for (Pending& p : group) {
    const AcceptedPromise& a = p.promise;
    auto it = known_.find(a.channel);
    if (it == known_.end()) {
      auto row = ReadRow(write_, a.channel);
      if (!row) {
        failure = row.error();
        results.push_back(std::unexpected(row.error()));
        continue;
      }
      if (*row) {
        it = known_.emplace(a.channel, Known{(*row)->ledger, (*row)->client_key,
                                             (*row)->cumulative}).first;
      }
    }
    if (it != known_.end()) {
      if (it->second.ledger != a.ledger || !(it->second.client_key == a.client_key)) {
        results.push_back(Fail(StoreErrc::kConflict,
                               "channel " + ToHex(ByteSpan(a.channel.bytes.data(), 8)) +
                                   " is stored with another ledger or client key"));
        continue;
      }
      if (a.cumulative <= it->second.cumulative) {
        results.push_back(SubmitResult{it->second.cumulative, false});
        continue;
      }
    }
    if (unapplied_.size() + append.size() >= kMaxUnapplied) {  // the tables are not keeping up
      failure = Error<StoreErrc>{StoreErrc::kQueueFull,
                                 "the promise log is not being folded in (" +
                                     std::to_string(unapplied_.size()) + " promises waiting)"};
      results.push_back(std::unexpected(*failure));
      continue;
    }
    before.try_emplace(a.channel, it == known_.end() ? std::nullopt : std::optional(it->second));
    known_.insert_or_assign(a.channel, Known{a.ledger, a.client_key, a.cumulative});
    append.push_back(LoggedPromise{a, now});
    appended_index.push_back(results.size());
    results.push_back(SubmitResult{a.cumulative, true});
  }
  if (!append.empty()) {
    auto ok = log_->Append(append, options_.durability == Durability::kPowerLoss);
    if (!ok) {
      failure = ok.error();
      for (auto& [channel, prev] : before) {
        if (prev) {
          known_.insert_or_assign(channel, *prev);
        } else {
          known_.erase(channel);
        }
      }
      for (size_t i : appended_index) results[i] = std::unexpected(ok.error());
    } else {
      unapplied_.insert(unapplied_.end(), append.begin(), append.end());
      has_unapplied_ = true;
    }
  }
  {
    std::lock_guard stats_lock(mu_);
    if (!failure) {
      ++stats_.commits;
      stats_.promises += group.size();
    } else {
      ++stats_.failures;
    }
  }
  if (failure) {
    Logger("payments")->error("promise store: promises not stored: {}", failure->message);
  }
  if (unapplied_.size() >= kApplyBatch) (void)ApplyLogLocked();
  return results;
}

StoreResult<void> PromiseStore::Impl::ApplyLogLocked() {
  if (unapplied_.empty()) return {};
  // Per channel, the first logged promise (its receive time starts the row's clocks) and the
  // greatest (the one held): the ones between would be replaced at once.
  struct FirstAndGreatest {
    const LoggedPromise* first;
    const LoggedPromise* greatest;
  };
  std::map<ChannelId, FirstAndGreatest> per_channel;
  for (const LoggedPromise& p : unapplied_) {
    auto [it, fresh] = per_channel.try_emplace(p.promise.channel, FirstAndGreatest{&p, &p});
    if (!fresh && p.promise.cumulative > it->second.greatest->promise.cumulative) {
      it->second.greatest = &p;
    }
  }
  auto ok = write_.Transact("promises", StoreErrc::kStorage, [&]() -> StoreResult<void> {
    for (const auto& [channel, p] : per_channel) {
      auto r = StoreOne(p.first->promise, p.first->received_unix);
      if (!r && r.error().code == StoreErrc::kStorage) return std::unexpected(r.error());
      if (p.greatest != p.first) {
        r = StoreOne(p.greatest->promise, p.greatest->received_unix);
        if (!r && r.error().code == StoreErrc::kStorage) return std::unexpected(r.error());
      }
    }
    return {};
  });
  if (!ok) {  // kept in the log and in memory; tried again later
    Logger("payments")->error("promise store: cannot fold {} logged promise(s) into the tables: {}",
                              unapplied_.size(), ok.error().message);
    return ok;
  }
  last_apply_ = std::chrono::steady_clock::now();
  unapplied_.clear();
  has_unapplied_ = false;
  // A log that cannot be emptied would be applied again later: harmless (only a greater
  // cumulative replaces a row), so this is logged, not fatal.
  if (auto cleared = log_->Clear(); !cleared) {
    Logger("payments")->error("promise store: {}", cleared.error().message);
  }
  return {};
}

StoreResult<std::vector<StoredChannel>> PromiseStore::Impl::Settleable(const LedgerId& ledger,
                                                                       size_t limit) {
  static const std::string sql =
      std::string("SELECT ") + kRowColumns +
      " FROM promises WHERE ledger = ?1 AND settleable = 1 "
      "ORDER BY deadline IS NULL, deadline, unsettled_since, channel LIMIT ?2";
  if (auto ok = ApplyPending(); !ok) return std::unexpected(ok.error());
  std::lock_guard lock(read_mu_);
  DVPN_TRY_STMT(stmt, read_, sql.c_str());
  Run r(stmt);
  r.Blob(1, ledger.bytes).I64(2, static_cast<int64_t>(std::min<size_t>(limit, kMaxTime)));
  std::vector<StoredChannel> out;
  for (;;) {
    int rc = r.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Storage(read_.LastError("list settleable promises"));
    auto row = RowFrom(r);
    if (!row) return std::unexpected(row.error());
    out.push_back(std::move(*row));
  }
  return out;
}

StoreResult<SettleOverview> PromiseStore::Impl::Overview(const LedgerId& ledger) {
  if (auto ok = ApplyPending(); !ok) return std::unexpected(ok.error());
  std::lock_guard lock(read_mu_);
  DVPN_TRY_STMT(stmt, read_,
                "SELECT cumulative, settled_known, deposit_known, deadline, unsettled_since "
                "FROM promises WHERE ledger = ?1 AND settleable = 1");
  Run r(stmt);
  r.Blob(1, ledger.bytes);
  SettleOverview out;
  for (;;) {
    int rc = r.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Storage(read_.LastError("read settleable promises"));
    ++out.channels;
    out.total_unsettled = SaturatingAdd(
        out.total_unsettled,
        UnsettledOf(r.Money(0), r.Money(1), r.OptMoney(2), ChannelSettleState::kActive));
    if (auto d = OptTime(r, 3)) {
      out.nearest_deadline_unix = std::min(out.nearest_deadline_unix.value_or(*d), *d);
    }
    if (auto s = OptTime(r, 4)) {
      out.oldest_unsettled_since_unix = std::min(out.oldest_unsettled_since_unix.value_or(*s), *s);
    }
  }
  return out;
}

StoreResult<std::vector<StoredChannel>> PromiseStore::Impl::NeedingInfo(const LedgerId& ledger,
                                                                        uint64_t before,
                                                                        size_t limit) {
  static const std::string sql =
      std::string("SELECT ") + kRowColumns +
      " FROM promises WHERE ledger = ?1 AND owed = 1 AND "
      "(info_checked IS NULL OR info_checked <= ?2) "
      "ORDER BY info_checked IS NOT NULL, info_checked, channel LIMIT ?3";
  if (auto ok = ApplyPending(); !ok) return std::unexpected(ok.error());
  std::lock_guard lock(read_mu_);
  DVPN_TRY_STMT(stmt, read_, sql.c_str());
  Run r(stmt);
  r.Blob(1, ledger.bytes)
      .I64(2, TimeToDb(before))
      .I64(3, static_cast<int64_t>(std::min<size_t>(limit, kMaxTime)));
  std::vector<StoredChannel> out;
  for (;;) {
    int rc = r.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Storage(read_.LastError("list promises needing channel facts"));
    auto row = RowFrom(r);
    if (!row) return std::unexpected(row.error());
    out.push_back(std::move(*row));
  }
  return out;
}

StoreResult<Earnings> PromiseStore::Impl::GetEarnings() {
  if (auto ok = ApplyPending(); !ok) return std::unexpected(ok.error());
  std::lock_guard lock(read_mu_);
  DVPN_TRY_STMT(stmt, read_,
                "SELECT cumulative, settled_known, deposit_known, state FROM promises");
  Run r(stmt);
  Earnings out;
  for (;;) {
    int rc = r.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Storage(read_.LastError("read earnings"));
    int64_t state = r.I64(3);
    if (state < 1 || state > 3) return Fail(StoreErrc::kStorage, "corrupt promise row state");
    const auto st = static_cast<ChannelSettleState>(state);
    const Amount cumulative = r.Money(0), settled = r.Money(1);
    const std::optional<Amount> deposit = r.OptMoney(2);
    ++out.channels;
    out.settled = SaturatingAdd(out.settled, settled);
    switch (st) {
      case ChannelSettleState::kActive:
        ++out.active;
        break;
      case ChannelSettleState::kExhausted:
        ++out.exhausted;
        break;
      case ChannelSettleState::kDead:
        ++out.dead;
        out.lost = SaturatingAdd(
            out.lost, UnsettledOf(cumulative, settled, deposit, ChannelSettleState::kActive));
        break;
    }
    out.unsettled = SaturatingAdd(out.unsettled, UnsettledOf(cumulative, settled, deposit, st));
  }
  return out;
}

StoreResult<std::vector<SettleAttempt>> PromiseStore::Impl::Attempts(size_t limit) {
  std::lock_guard lock(read_mu_);
  DVPN_TRY_STMT(stmt, read_,
                "SELECT id, time, nonce, items, total_moved, outcome FROM settle_attempts "
                "ORDER BY id DESC LIMIT ?1");
  Run r(stmt);
  r.I64(1, static_cast<int64_t>(std::min<size_t>(limit, kMaxTime)));
  std::vector<SettleAttempt> out;
  for (;;) {
    int rc = r.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Storage(read_.LastError("read settlement attempts"));
    out.push_back(SettleAttempt{
        .id = static_cast<uint64_t>(r.I64(0)),
        .time_unix = OptTime(r, 1).value_or(0),
        .nonce = r.U64(2),
        .items = static_cast<uint32_t>(r.I64(3)),
        .total_moved = r.Money(4),
        .outcome = r.Str(5),
    });
  }
  return out;
}

StoreResult<uint64_t> PromiseStore::Impl::BeginAttempt(uint64_t nonce, uint32_t items) {
  std::lock_guard lock(write_mu_);
  if (auto ok = ApplyLogLocked(); !ok) return std::unexpected(ok.error());
  const uint64_t now = clock_.NowSeconds();
  uint64_t id = 0;
  auto ok = write_.Transact("settlement attempt", StoreErrc::kStorage, [&]() -> StoreResult<void> {
    auto last = ReadLastNonce(write_);
    if (!last) return std::unexpected(last.error());
    if (nonce <= *last) {
      return Fail(StoreErrc::kInvalidArgument, "nonce " + std::to_string(nonce) +
                                                   " is not above the stored last nonce " +
                                                   std::to_string(*last));
    }
    {
      DVPN_TRY_STMT(put, write_, "UPDATE meta SET value = ?1 WHERE key = 'last_nonce'");
      Run r(put);
      r.U64(1, nonce);
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("write last nonce"));
    }
    {
      DVPN_TRY_STMT(insert, write_,
                    "INSERT INTO settle_attempts(time, nonce, items, total_moved, outcome) "
                    "VALUES(?1, ?2, ?3, 0, 'pending')");
      Run r(insert);
      r.I64(1, TimeToDb(now)).U64(2, nonce).I64(3, items);
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("log settlement attempt"));
      id = static_cast<uint64_t>(sqlite3_last_insert_rowid(write_.db()));
    }
    if (id > options_.max_attempt_rows) {
      DVPN_TRY_STMT(prune, write_, "DELETE FROM settle_attempts WHERE id <= ?1");
      Run r(prune);
      r.I64(1, static_cast<int64_t>(id - options_.max_attempt_rows));
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("prune settlement attempts"));
    }
    return {};
  });
  if (!ok) return std::unexpected(ok.error());
  return id;
}

StoreResult<void> PromiseStore::Impl::FinishAttempt(uint64_t id, Amount total_moved,
                                                    const std::string& outcome,
                                                    std::span<const ChannelUpdate> updates) {
  std::lock_guard lock(write_mu_);
  if (auto ok = ApplyLogLocked(); !ok) return std::unexpected(ok.error());
  const uint64_t now = clock_.NowSeconds();
  return write_.Transact("settlement result", StoreErrc::kStorage, [&]() -> StoreResult<void> {
    std::optional<uint64_t> started;
    {
      DVPN_TRY_STMT(get, write_, "SELECT time FROM settle_attempts WHERE id = ?1");
      Run r(get);
      r.I64(1, static_cast<int64_t>(std::min(id, kMaxTime)));
      int rc = r.Step();
      if (rc == SQLITE_DONE) {
        return Fail(StoreErrc::kInvalidArgument,
                    "no settlement attempt " + std::to_string(id) + " in the log");
      }
      if (rc != SQLITE_ROW) return Storage(write_.LastError("read settlement attempt"));
      started = OptTime(r, 0);
    }
    {
      DVPN_TRY_STMT(put, write_,
                    "UPDATE settle_attempts SET total_moved = ?2, outcome = ?3 WHERE id = ?1");
      const std::string text = Clip(outcome);
      Run r(put);
      r.I64(1, static_cast<int64_t>(id)).U64(2, total_moved.micro()).Text(3, text);
      if (r.Step() != SQLITE_DONE) return Storage(write_.LastError("finish settlement attempt"));
    }
    return ApplyUpdatesIn(write_, updates, now, started);
  });
}

// --- PromiseStore ----------------------------------------------------------------------------

PromiseStore::PromiseStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PromiseStore::~PromiseStore() = default;

StoreResult<std::unique_ptr<PromiseStore>> PromiseStore::Open(const std::string& path,
                                                              const Clock& clock,
                                                              PromiseStoreOptions options) {
  auto impl = std::make_unique<Impl>(clock, options);
  if (auto ok = impl->Setup(path); !ok) {
    return Fail(StoreErrc::kStorage, path + ": " + ok.error().message);
  }
  impl->StartWriter();
  return std::unique_ptr<PromiseStore>(new PromiseStore(std::move(impl)));
}

StoreResult<void> PromiseStore::Submit(AcceptedPromise promise, SubmitCallback done) {
  return impl_->Submit(std::move(promise), std::move(done));
}
void PromiseStore::Flush() { impl_->Flush(); }
void PromiseStore::Close() { impl_->Close(); }
WriterStats PromiseStore::writer_stats() const { return impl_->Stats(); }

StoreResult<std::optional<StoredChannel>> PromiseStore::Get(const ChannelId& channel) {
  return impl_->Get(channel);
}
StoreResult<std::vector<StoredChannel>> PromiseStore::Settleable(const LedgerId& ledger,
                                                                 size_t limit) {
  return impl_->Settleable(ledger, limit);
}
StoreResult<SettleOverview> PromiseStore::Overview(const LedgerId& ledger) {
  return impl_->Overview(ledger);
}
StoreResult<std::vector<StoredChannel>> PromiseStore::NeedingInfo(const LedgerId& ledger,
                                                                  uint64_t checked_before_unix,
                                                                  size_t limit) {
  return impl_->NeedingInfo(ledger, checked_before_unix, limit);
}
StoreResult<Earnings> PromiseStore::GetEarnings() { return impl_->GetEarnings(); }
StoreResult<uint64_t> PromiseStore::ChannelDebt(const ChannelId& channel) {
  return impl_->ChannelDebt(channel);
}
StoreResult<void> PromiseStore::SetChannelDebt(const LedgerId& ledger, const ChannelId& channel,
                                               uint64_t unpaid_bytes) {
  return impl_->SetChannelDebt(ledger, channel, unpaid_bytes);
}
StoreResult<uint64_t> PromiseStore::LastNonce() { return impl_->LastNonce(); }
StoreResult<std::vector<SettleAttempt>> PromiseStore::Attempts(size_t limit) {
  return impl_->Attempts(limit);
}
StoreResult<uint64_t> PromiseStore::BeginAttempt(uint64_t nonce, uint32_t items) {
  return impl_->BeginAttempt(nonce, items);
}
StoreResult<void> PromiseStore::FinishAttempt(uint64_t attempt_id, Amount total_moved,
                                              const std::string& outcome,
                                              std::span<const ChannelUpdate> updates) {
  return impl_->FinishAttempt(attempt_id, total_moved, outcome, updates);
}
StoreResult<void> PromiseStore::ApplyUpdates(std::span<const ChannelUpdate> updates) {
  return impl_->ApplyUpdates(updates);
}

}  // namespace dvpn::payments
