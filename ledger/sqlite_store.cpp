#include "ledger/sqlite_store.h"

#include <sqlite3.h>

#include <bit>
#include <cstring>
#include <limits>
#include <random>
#include <unordered_map>
#include <utility>

#include "sqlite/connection.h"
#include "sqlite/statement.h"

namespace dvpn::ledger {
namespace {

// Version 1: meta, accounts, channels, movements. Version 2: movements.destination, a
// withdrawal's payout reference (NULL on other kinds and on withdrawals version 1 recorded).
// Each entry migrates from version i to i + 1; new versions append an entry and never edit an
// old one.
constexpr int kSchemaVersion = 2;
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE meta(
  key   TEXT PRIMARY KEY,
  value NOT NULL
);
CREATE TABLE accounts(
  address    BLOB PRIMARY KEY CHECK(length(address) = 20),
  balance    INTEGER NOT NULL,
  last_nonce INTEGER NOT NULL
);
CREATE TABLE channels(
  id             BLOB PRIMARY KEY CHECK(length(id) = 32),
  client         BLOB NOT NULL REFERENCES accounts(address) DEFERRABLE INITIALLY DEFERRED,
  client_key     BLOB NOT NULL CHECK(length(client_key) = 32),
  provider       BLOB NOT NULL CHECK(length(provider) = 20),
  deposit        INTEGER NOT NULL,
  settled        INTEGER NOT NULL,
  refunded       INTEGER NOT NULL,
  status         INTEGER NOT NULL CHECK(status IN (1, 2, 3)),
  expiry         INTEGER NOT NULL CHECK(expiry >= 0),
  close_deadline INTEGER NOT NULL CHECK(close_deadline >= 0),
  opened         INTEGER NOT NULL CHECK(opened >= 0)
);
CREATE INDEX channels_by_client ON channels(client);
CREATE INDEX channels_by_provider ON channels(provider);
CREATE INDEX channels_closing_due ON channels(close_deadline) WHERE status = 2;
CREATE INDEX channels_open_due ON channels(expiry) WHERE status = 1;
-- Append-only journal. Rows are never deleted, so the rowid alone is strictly increasing
-- (AUTOINCREMENT would add a write per row). No foreign keys: the ledger writes each row in the
-- transaction that creates what it refers to, and two parent lookups per row would cost more
-- than anything else on the settlement path.
CREATE TABLE movements(
  seq           INTEGER PRIMARY KEY,
  time          INTEGER NOT NULL,
  account       BLOB NOT NULL,
  kind          INTEGER NOT NULL CHECK(kind BETWEEN 1 AND 6),
  amount        INTEGER NOT NULL,
  channel       BLOB,
  counterparty  BLOB CHECK(counterparty IS NULL OR length(counterparty) = 20),
  balance_after INTEGER NOT NULL
);
CREATE INDEX movements_by_account ON movements(account, seq);
)sql",
    R"sql(
ALTER TABLE movements ADD COLUMN destination TEXT CHECK(length(CAST(destination AS BLOB)) <= 128);
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

constexpr uint64_t kMaxTime = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr size_t kMaxCachedKeys = 1 << 16;

using sqlite::Connection;
using sqlite::FromDb;
using sqlite::Run;
using sqlite::SqliteErrc;
using sqlite::Statement;
using sqlite::ToDb;

// The ledger reports SQLite's failures as kStorage with SQLite's message, named.
std::unexpected<Error<Errc>> Storage(const Error<SqliteErrc>& e) {
  return Fail(Errc::kStorage, e.message);
}

// Keys are chosen by clients; a per-process secret keeps them from aiming at one bucket.
struct KeyHash {
  size_t operator()(const ByteArray<32>& k) const {
    static const uint64_t seed = (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
    uint64_t h;
    std::memcpy(&h, k.data(), sizeof h);
    return static_cast<size_t>((h ^ seed) * 0x9e3779b97f4a7c15ull);
  }
};

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(Connection conn) : conn_(std::move(conn)), db_(conn_.db()) {}
  ~SqliteStore() override {
    stmts_.reset();  // statements are finalized before conn_ closes
  }

  LedgerResult<void> Setup(const LedgerId& ledger_id);

  LedgerResult<void> Begin() override {
    last_channel_.reset();
    Run r(s().begin);
    if (r.Step() != SQLITE_DONE) return StoreError("begin transaction");
    return {};
  }
  LedgerResult<void> Commit() override {
    last_channel_.reset();
    Run r(s().commit);
    if (r.Step() != SQLITE_DONE) return StoreError("commit");
    return {};
  }
  void Rollback() override {
    last_channel_.reset();
    // Fails harmlessly when SQLite has already rolled back on its own (e.g. after SQLITE_FULL).
    if (sqlite3_get_autocommit(db_)) return;
    Run r(s().rollback);
    (void)r.Step();
  }

  LedgerResult<std::optional<AccountRow>> GetAccount(const Address& address) override {
    Run r(s().get_account);
    r.Blob(1, address.bytes());
    int rc = r.Step();
    if (rc == SQLITE_DONE) return std::optional<AccountRow>();
    if (rc != SQLITE_ROW) return StoreError("read account");
    return std::optional<AccountRow>(AccountRow{address, r.Money(0), r.U64(1)});
  }

  LedgerResult<void> PutAccount(const AccountRow& row) override {
    Run r(s().put_account);
    r.Blob(1, row.address.bytes()).U64(2, row.balance.micro()).U64(3, row.last_nonce);
    if (r.Step() != SQLITE_DONE) return StoreError("write account");
    return {};
  }

  LedgerResult<std::optional<ChannelState>> GetChannel(const ChannelId& id) override {
    Run r(s().get_channel);
    r.Blob(1, id.bytes);
    int rc = r.Step();
    if (rc == SQLITE_DONE) return std::optional<ChannelState>();
    if (rc != SQLITE_ROW) return StoreError("read channel");
    auto ch = ChannelFromRow(r, 0, id);
    if (!ch) return std::unexpected(ch.error());
    RememberChannel(*ch);
    return std::optional<ChannelState>(std::move(*ch));
  }

  LedgerResult<void> PutChannel(const ChannelState& ch) override {
    if (ch.expiry_unix > kMaxTime || ch.close_deadline_unix > kMaxTime ||
        ch.opened_unix > kMaxTime) {
      return Fail(Errc::kInvalidArgument, "channel time beyond 2^63-1 cannot be stored");
    }
    if (last_channel_ && last_channel_->id == ch.id && last_channel_->status == ch.status &&
        last_channel_->expiry == ch.expiry_unix &&
        last_channel_->close_deadline == ch.close_deadline_unix) {
      // Only money moved (settlement): leave the indexed columns alone, which saves SQLite
      // rewriting the due-channel index entries.
      Run r(s().update_channel_money);
      r.Blob(1, ch.id.bytes)
          .U64(2, ch.deposit.micro())
          .U64(3, ch.settled.micro())
          .U64(4, ch.refunded.micro());
      if (r.Step() != SQLITE_DONE) return StoreError("update channel");
      if (sqlite3_changes(db_) > 0) return {};
    }
    RememberChannel(ch);
    {
      // client, client_key, provider and opened never change once written.
      Run r(s().update_channel);
      r.Blob(1, ch.id.bytes)
          .U64(2, ch.deposit.micro())
          .U64(3, ch.settled.micro())
          .U64(4, ch.refunded.micro())
          .I64(5, static_cast<int64_t>(ch.status))
          .U64(6, ch.expiry_unix)
          .U64(7, ch.close_deadline_unix);
      if (r.Step() != SQLITE_DONE) return StoreError("update channel");
      if (sqlite3_changes(db_) > 0) return {};
    }
    Run r(s().insert_channel);
    r.Blob(1, ch.id.bytes)
        .Blob(2, ch.client.bytes())
        .Blob(3, ch.client_key.bytes())
        .Blob(4, ch.provider.bytes())
        .U64(5, ch.deposit.micro())
        .U64(6, ch.settled.micro())
        .U64(7, ch.refunded.micro())
        .I64(8, static_cast<int64_t>(ch.status))
        .U64(9, ch.expiry_unix)
        .U64(10, ch.close_deadline_unix)
        .U64(11, ch.opened_unix);
    if (r.Step() != SQLITE_DONE) return StoreError("insert channel");
    return {};
  }

  LedgerResult<std::vector<ChannelState>> ChannelsOf(const Address& address,
                                                     uint32_t limit) override {
    Run r(s().channels_of);
    r.Blob(1, address.bytes()).I64(2, limit);
    std::vector<ChannelState> out;
    for (;;) {
      int rc = r.Step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return StoreError("list channels");
      auto id = r.Array<32>(0);
      if (!id) return Fail(Errc::kStorage, "corrupt channel id");
      auto ch = ChannelFromRow(r, 1, ChannelId{*id});
      if (!ch) return std::unexpected(ch.error());
      out.push_back(std::move(*ch));
    }
    return out;
  }

  LedgerResult<Amount> EscrowedBy(const Address& client) override {
    Run r(s().escrowed_by);
    r.Blob(1, client.bytes());
    Amount total;
    for (;;) {
      int rc = r.Step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return StoreError("sum escrow");
      auto rest = r.Money(0).CheckedSub(r.Money(1));
      if (rest) rest = rest->CheckedSub(r.Money(2));
      if (!rest) return Fail(Errc::kStorage, "corrupt channel: settled + refunded > deposit");
      auto sum = total.CheckedAdd(*rest);
      if (!sum) return Fail(Errc::kStorage, "corrupt channels: escrow does not fit 64 bits");
      total = *sum;
    }
    return total;
  }

  LedgerResult<std::vector<ChannelId>> ChannelsDue(uint64_t now_unix, uint64_t challenge_period,
                                                   uint32_t limit) override {
    // Stored times are <= 2^63-1, so clamping the bounds to that changes no answer.
    const int64_t closing_bound = static_cast<int64_t>(std::min(now_unix, kMaxTime));
    const int64_t open_bound =
        now_unix < challenge_period
            ? -1
            : static_cast<int64_t>(std::min(now_unix - challenge_period, kMaxTime));
    Run r(s().channels_due);
    r.I64(1, closing_bound).I64(2, open_bound).I64(3, limit);
    std::vector<ChannelId> out;
    for (;;) {
      int rc = r.Step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return StoreError("list due channels");
      auto id = r.Array<32>(0);
      if (!id) return Fail(Errc::kStorage, "corrupt channel id");
      out.push_back(ChannelId{*id});
    }
    return out;
  }

  LedgerResult<uint64_t> AppendMovement(const Movement& m) override {
    Run r(s().append_movement);
    r.U64(1, m.time_unix)
        .Blob(2, m.account.bytes())
        .I64(3, static_cast<int64_t>(m.kind))
        .U64(4, m.amount.micro());
    if (m.channel) {
      r.Blob(5, m.channel->bytes);
    } else {
      r.Null(5);
    }
    if (m.counterparty) {
      r.Blob(6, m.counterparty->bytes());
    } else {
      r.Null(6);
    }
    r.U64(7, m.balance_after.micro());
    if (m.destination.empty()) {
      r.Null(8);
    } else {
      r.Text(8, m.destination);
    }
    if (r.Step() != SQLITE_DONE) return StoreError("append movement");
    return static_cast<uint64_t>(sqlite3_last_insert_rowid(db_));
  }

  LedgerResult<std::vector<Movement>> History(const Address& address, uint64_t after_seq,
                                              uint32_t limit) override {
    std::vector<Movement> out;
    if (after_seq > kMaxTime) return out;  // seq values are positive int64
    Run r(s().history);
    r.Blob(1, address.bytes()).U64(2, after_seq).I64(3, limit);
    for (;;) {
      int rc = r.Step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return StoreError("read history");
      Movement m;
      m.seq = r.U64(0);
      m.time_unix = r.U64(1);
      m.account = address;
      int64_t kind = r.I64(2);
      if (kind < 1 || kind > 6) return Fail(Errc::kStorage, "corrupt movement kind");
      m.kind = static_cast<MovementKind>(kind);
      m.amount = r.Money(3);
      if (!r.IsNull(4)) {
        auto ch = r.Array<32>(4);
        if (!ch) return Fail(Errc::kStorage, "corrupt movement channel");
        m.channel = ChannelId{*ch};
      }
      if (!r.IsNull(5)) {
        auto cp = r.Array<20>(5);
        if (!cp) return Fail(Errc::kStorage, "corrupt movement counterparty");
        m.counterparty = Address(*cp);
      }
      m.balance_after = r.Money(6);
      if (!r.IsNull(7)) m.destination = r.Str(7);
      out.push_back(std::move(m));
    }
    return out;
  }

  LedgerResult<uint64_t> LastSeq() override {
    Run r(s().last_seq);
    if (r.Step() != SQLITE_ROW) return StoreError("read last movement");
    return r.U64(0);
  }

  LedgerResult<Totals> GetTotals() override {
    auto deposited = GetMetaU64("deposited");
    if (!deposited) return std::unexpected(deposited.error());
    auto withdrawn = GetMetaU64("withdrawn");
    if (!withdrawn) return std::unexpected(withdrawn.error());
    return Totals{Amount::FromMicro(*deposited), Amount::FromMicro(*withdrawn)};
  }

  LedgerResult<void> PutTotals(const Totals& totals) override {
    if (auto ok = PutMetaU64("deposited", totals.deposited.micro()); !ok) return ok;
    return PutMetaU64("withdrawn", totals.withdrawn.micro());
  }

 private:
  struct Statements {
    Statement begin, commit, rollback;
    Statement get_account, put_account;
    Statement get_channel, update_channel, update_channel_money, insert_channel, channels_of,
        escrowed_by, channels_due;
    Statement append_movement, history, last_seq;
    Statement get_meta, put_meta;
  };

  Statements& s() { return *stmts_; }

  std::unexpected<Error<Errc>> StoreError(const char* what) const {
    return Storage(conn_.LastError(what));
  }

  LedgerResult<void> Exec(const char* sql, const char* what) {
    if (auto ok = conn_.Exec(sql, what); !ok) return Storage(ok.error());
    return {};
  }

  LedgerResult<void> Migrate(const LedgerId& ledger_id);
  LedgerResult<void> PrepareAll();

  LedgerResult<uint64_t> GetMetaU64(const char* key) {
    Run r(s().get_meta);
    r.Text(1, key);
    int rc = r.Step();
    if (rc == SQLITE_DONE) return Fail(Errc::kStorage, std::string("meta key missing: ") + key);
    if (rc != SQLITE_ROW) return StoreError("read meta");
    return r.U64(0);
  }

  LedgerResult<void> PutMetaU64(const char* key, uint64_t value) {
    Run r(s().put_meta);
    r.Text(1, key).U64(2, value);
    if (r.Step() != SQLITE_DONE) return StoreError("write meta");
    return {};
  }

  // Parses a channel row whose columns start at `first` in the order of kChannelColumns.
  LedgerResult<ChannelState> ChannelFromRow(const Run& r, int first,
                                            std::optional<ChannelId> id = std::nullopt);
  // Parsing an x-only key costs a square root; clients reuse keys, so keep parsed ones.
  std::optional<PublicKey> ParseKey(const ByteArray<32>& bytes);

  // The indexed columns of the channel row last read or written in this transaction; lets
  // PutChannel skip index maintenance when only amounts changed.
  struct ChannelMeta {
    ChannelId id;
    ChannelStatus status;
    uint64_t expiry;
    uint64_t close_deadline;
  };
  void RememberChannel(const ChannelState& ch) {
    last_channel_ = ChannelMeta{ch.id, ch.status, ch.expiry_unix, ch.close_deadline_unix};
  }

  Connection conn_;
  sqlite3* db_;  // conn_'s handle
  std::unique_ptr<Statements> stmts_;
  std::optional<ChannelMeta> last_channel_;
  std::unordered_map<ByteArray<32>, PublicKey, KeyHash> keys_;
};

constexpr const char* kChannelColumns =
    "client, client_key, provider, deposit, settled, refunded, status, expiry, close_deadline, "
    "opened";

std::optional<PublicKey> SqliteStore::ParseKey(const ByteArray<32>& bytes) {
  if (auto it = keys_.find(bytes); it != keys_.end()) return it->second;
  auto key = PublicKey::Parse(bytes);
  if (!key) return std::nullopt;
  if (keys_.size() >= kMaxCachedKeys) keys_.clear();
  keys_.emplace(bytes, *key);
  return key;
}

LedgerResult<ChannelState> SqliteStore::ChannelFromRow(const Run& r, int first,
                                                       std::optional<ChannelId> id) {
  auto client = r.Array<20>(first + 0);
  auto key_bytes = r.Array<32>(first + 1);
  auto provider = r.Array<20>(first + 2);
  if (!client || !key_bytes || !provider) return Fail(Errc::kStorage, "corrupt channel row");
  auto key = ParseKey(*key_bytes);
  if (!key) return Fail(Errc::kStorage, "corrupt channel row: client key is not a curve point");
  int64_t status = r.I64(first + 6);
  if (status < 1 || status > 3) return Fail(Errc::kStorage, "corrupt channel status");
  ChannelState ch{
      .id = id.value_or(ChannelId{}),
      .client = Address(*client),
      .client_key = *key,
      .provider = Address(*provider),
      .deposit = r.Money(first + 3),
      .settled = r.Money(first + 4),
      .refunded = r.Money(first + 5),
      .status = static_cast<ChannelStatus>(status),
      .expiry_unix = r.U64(first + 7),
      .close_deadline_unix = r.U64(first + 8),
      .opened_unix = r.U64(first + 9),
  };
  return ch;
}

LedgerResult<void> SqliteStore::Migrate(const LedgerId& ledger_id) {
  return conn_.Transact("migration", Errc::kStorage, [&]() -> LedgerResult<void> {
    auto schema = conn_.ReadSchema();
    if (!schema) return Storage(schema.error());
    const int64_t version = schema->has_meta ? schema->schema_version.value_or(0) : 0;
    if (schema->has_meta) {
      if (!schema->schema_version) return Fail(Errc::kStorage, "not a dvpn ledger database");
      if (version > kSchemaVersion) {
        return Fail(Errc::kStorage, "database schema version " + std::to_string(version) +
                                        " is newer than this build supports (" +
                                        std::to_string(kSchemaVersion) + "); upgrade dvpn-ledger");
      }
      if (version < 1) return Fail(Errc::kStorage, "corrupt schema version");
      Statement get;
      if (get.Prepare(db_, "SELECT value FROM meta WHERE key = ?1") != SQLITE_OK) {
        return StoreError("read meta");
      }
      Run r(get);
      r.Text(1, "ledger_id");
      if (r.Step() != SQLITE_ROW) return Fail(Errc::kStorage, "database has no ledger id");
      auto stored = r.Array<32>(0);
      if (!stored) return Fail(Errc::kStorage, "corrupt ledger id in database");
      if (*stored != ledger_id.bytes) {
        return Fail(Errc::kStorage, "database belongs to ledger " + ToHex(*stored) +
                                        ", not to this ledger " + ToHex(ledger_id.bytes) +
                                        " (check the ledger name and operator key)");
      }
    } else if (schema->tables > 0) {
      return Fail(Errc::kStorage, "not a dvpn ledger database (it has tables but no meta table)");
    }
    for (int64_t v = version; v < kSchemaVersion; ++v) {
      if (auto ok = Exec(kMigrations[v], "migrate schema"); !ok) return ok;
    }
    Statement put;
    if (put.Prepare(db_,
                    "INSERT INTO meta(key, value) VALUES(?1, ?2) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value") != SQLITE_OK) {
      return StoreError("write meta");
    }
    {
      Run r(put);
      r.Text(1, "schema_version").I64(2, kSchemaVersion);
      if (r.Step() != SQLITE_DONE) return StoreError("write meta");
    }
    if (!schema->has_meta) {
      {
        Run r(put);
        r.Text(1, "ledger_id").Blob(2, ledger_id.bytes);
        if (r.Step() != SQLITE_DONE) return StoreError("write meta");
      }
      for (const char* key : {"deposited", "withdrawn"}) {
        Run r(put);
        r.Text(1, key).I64(2, 0);
        if (r.Step() != SQLITE_DONE) return StoreError("write meta");
      }
    }
    return {};
  });
}

LedgerResult<void> SqliteStore::PrepareAll() {
  stmts_ = std::make_unique<Statements>();
  const std::string cols = kChannelColumns;
  const std::string get_channel = "SELECT " + cols + " FROM channels WHERE id = ?1";
  const std::string channels_of = "SELECT id, " + cols +
                                  " FROM channels WHERE client = ?1 OR provider = ?1 "
                                  "ORDER BY opened DESC, rowid DESC LIMIT ?2";
  struct Item {
    Statement* stmt;
    const char* sql;
  };
  Statements& st = *stmts_;
  const Item items[] = {
      {&st.begin, "BEGIN IMMEDIATE"},
      {&st.commit, "COMMIT"},
      {&st.rollback, "ROLLBACK"},
      {&st.get_account, "SELECT balance, last_nonce FROM accounts WHERE address = ?1"},
      {&st.put_account,
       "INSERT INTO accounts(address, balance, last_nonce) VALUES(?1, ?2, ?3) "
       "ON CONFLICT(address) DO UPDATE SET balance = excluded.balance, "
       "last_nonce = excluded.last_nonce"},
      {&st.get_channel, get_channel.c_str()},
      {&st.update_channel,
       "UPDATE channels SET deposit = ?2, settled = ?3, refunded = ?4, status = ?5, "
       "expiry = ?6, close_deadline = ?7 WHERE id = ?1"},
      {&st.update_channel_money,
       "UPDATE channels SET deposit = ?2, settled = ?3, refunded = ?4 WHERE id = ?1"},
      {&st.insert_channel,
       "INSERT INTO channels(id, client, client_key, provider, deposit, settled, refunded, "
       "status, expiry, close_deadline, opened) "
       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"},
      {&st.channels_of, channels_of.c_str()},
      {&st.escrowed_by,
       "SELECT deposit, settled, refunded FROM channels WHERE client = ?1 AND status <> 3"},
      {&st.channels_due,
       "SELECT id FROM channels WHERE status = 2 AND close_deadline <= ?1 "
       "UNION ALL SELECT id FROM channels WHERE status = 1 AND expiry <= ?2 LIMIT ?3"},
      {&st.append_movement,
       "INSERT INTO movements(time, account, kind, amount, channel, counterparty, balance_after, "
       "destination) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
      {&st.history,
       "SELECT seq, time, kind, amount, channel, counterparty, balance_after, destination "
       "FROM movements "
       "WHERE account = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"},
      {&st.last_seq, "SELECT coalesce(max(seq), 0) FROM movements"},
      {&st.get_meta, "SELECT value FROM meta WHERE key = ?1"},
      {&st.put_meta,
       "INSERT INTO meta(key, value) VALUES(?1, ?2) "
       "ON CONFLICT(key) DO UPDATE SET value = excluded.value"},
  };
  for (const Item& item : items) {
    if (item.stmt->Prepare(db_, item.sql) != SQLITE_OK) return StoreError("prepare statement");
  }
  return {};
}

LedgerResult<void> SqliteStore::Setup(const LedgerId& ledger_id) {
  if (auto ok = Exec("PRAGMA journal_mode = WAL", "enable WAL"); !ok) return ok;
  if (auto ok = Exec("PRAGMA synchronous = FULL", "set synchronous"); !ok) return ok;
  if (auto ok = Exec("PRAGMA foreign_keys = ON", "enable foreign keys"); !ok) return ok;
  if (auto ok = Migrate(ledger_id); !ok) return ok;
  return PrepareAll();
}

}  // namespace

LedgerResult<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                     const LedgerId& ledger_id) {
  // Created 0600 whatever the umask; SQLite gives the -wal and -shm files the same mode.
  auto conn = Connection::Open(path, {.create = true, .busy_timeout_ms = 5000});
  if (!conn) {
    const Error<SqliteErrc>& e = conn.error();
    if (e.code == SqliteErrc::kFile) return Fail(Errc::kStorage, e.message);
    if (e.code == SqliteErrc::kOpen) return Fail(Errc::kStorage, "open " + path + ": " + e.message);
    return Fail(Errc::kStorage, path + ": " + e.message);
  }
  auto store = std::make_unique<SqliteStore>(std::move(*conn));
  if (auto ok = store->Setup(ledger_id); !ok) {
    return Fail(Errc::kStorage, path + ": " + ok.error().message);
  }
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace dvpn::ledger
