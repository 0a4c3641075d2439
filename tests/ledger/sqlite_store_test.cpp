// SqliteStore: durability across reopen, schema and ledger-id guards, the Store contract at the
// integer limits.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>

#include "tests/ledger/test_util.h"

namespace dvpn::ledger {
namespace {

using testing::Snapshot;
using testing::TempDir;
using testing::Wallet;

constexpr uint64_t kStart = 1'700'000'000;

LedgerId IdFor(const Wallet& op, const std::string& name = "store-test") {
  return payments::LedgerIdFor(name, op.key.public_key());
}

// Runs one SQL statement on the file through a separate connection.
void ExecRaw(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

std::string QueryText(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return "open failed";
  sqlite3_stmt* stmt = nullptr;
  std::string out = "prepare failed";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK) {
    out = sqlite3_step(stmt) == SQLITE_ROW
              ? reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))
              : "no row";
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

TEST(SqliteStore, MemoryDatabaseWorksAndStartsEmpty) {
  Wallet op;
  auto store = OpenSqliteStore(":memory:", IdFor(op));
  ASSERT_TRUE(store) << store.error().message;
  Store& s = **store;
  EXPECT_EQ(s.LastSeq(), 0u);
  auto totals = s.GetTotals();
  ASSERT_TRUE(totals);
  EXPECT_EQ(totals->deposited, Amount::Zero());
  EXPECT_EQ(totals->withdrawn, Amount::Zero());
  auto row = s.GetAccount(op.address);
  ASSERT_TRUE(row);
  EXPECT_FALSE(row->has_value());
}

TEST(SqliteStore, RoundTripsValuesAtTheIntegerLimits) {
  Wallet op, client, provider;
  auto store = OpenSqliteStore(":memory:", IdFor(op));
  ASSERT_TRUE(store);
  Store& s = **store;
  ASSERT_TRUE(s.Begin());
  ASSERT_TRUE(s.PutAccount(AccountRow{client.address, Amount::Max(), UINT64_MAX}));
  ASSERT_TRUE(
      s.PutAccount(AccountRow{provider.address, Amount::FromMicro(1ull << 63), 1ull << 63}));
  const uint64_t max_time = (1ull << 63) - 1;
  ChannelState ch{.id = payments::ChannelIdFor(IdFor(op), client.address, UINT64_MAX),
                  .client = client.address,
                  .client_key = client.key.public_key(),
                  .provider = provider.address,
                  .deposit = Amount::Max(),
                  .settled = Amount::FromMicro(UINT64_MAX - 1),
                  .refunded = Amount::FromMicro(1),
                  .status = ChannelStatus::kClosing,
                  .expiry_unix = max_time,
                  .close_deadline_unix = max_time,
                  .opened_unix = max_time};
  ASSERT_TRUE(s.PutChannel(ch));
  ASSERT_TRUE(s.PutTotals(Totals{Amount::Max(), Amount::FromMicro(UINT64_MAX - 1)}));
  Movement m;
  m.time_unix = kStart;
  m.account = client.address;
  m.kind = MovementKind::kEscrowRefund;
  m.amount = Amount::Max();
  m.channel = ch.id;
  m.counterparty = provider.address;
  m.balance_after = Amount::FromMicro(1ull << 63);
  auto seq = s.AppendMovement(m);
  ASSERT_TRUE(seq) << seq.error().message;
  ASSERT_TRUE(s.Commit());

  auto row = s.GetAccount(client.address);
  ASSERT_TRUE(row && *row);
  EXPECT_EQ((*row)->balance, Amount::Max());
  EXPECT_EQ((*row)->last_nonce, UINT64_MAX);
  row = s.GetAccount(provider.address);
  EXPECT_EQ((*row)->balance, Amount::FromMicro(1ull << 63));
  EXPECT_EQ((*row)->last_nonce, 1ull << 63);
  auto got = s.GetChannel(ch.id);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(testing::Describe(**got), testing::Describe(ch));
  auto totals = s.GetTotals();
  EXPECT_EQ(totals->deposited, Amount::Max());
  EXPECT_EQ(totals->withdrawn, Amount::FromMicro(UINT64_MAX - 1));
  auto history = s.History(client.address, 0, 10);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->size(), 1u);
  const Movement& h = history->front();
  EXPECT_EQ(h.seq, *seq);
  EXPECT_EQ(h.time_unix, kStart);
  EXPECT_EQ(h.account, client.address);
  EXPECT_EQ(h.kind, MovementKind::kEscrowRefund);
  EXPECT_EQ(h.amount, Amount::Max());
  EXPECT_EQ(h.channel, ch.id);
  EXPECT_EQ(h.counterparty, provider.address);
  EXPECT_EQ(h.balance_after, Amount::FromMicro(1ull << 63));
  EXPECT_EQ(s.LastSeq(), *seq);
  // Remaining = MAX - (MAX-1) - 1 = 0 for this closing channel.
  EXPECT_EQ(s.EscrowedBy(client.address), Amount::Zero());

  // Times that do not fit the signed column are refused, not wrapped.
  ChannelState bad = ch;
  bad.expiry_unix = max_time + 1;
  auto put = s.PutChannel(bad);
  ASSERT_FALSE(put);
  EXPECT_EQ(s.GetChannel(ch.id).value()->expiry_unix, max_time);
}

TEST(SqliteStore, RollbackDiscardsEverything) {
  Wallet op, a;
  auto store = OpenSqliteStore(":memory:", IdFor(op));
  ASSERT_TRUE(store);
  Store& s = **store;
  ASSERT_TRUE(s.Begin());
  ASSERT_TRUE(s.PutAccount(AccountRow{a.address, Amount::FromMicro(5), 1}));
  ASSERT_TRUE(s.PutTotals(Totals{Amount::FromMicro(5), Amount::Zero()}));
  Movement m;
  m.account = a.address;
  m.amount = Amount::FromMicro(5);
  ASSERT_TRUE(s.AppendMovement(m));
  s.Rollback();
  EXPECT_FALSE(s.GetAccount(a.address).value().has_value());
  EXPECT_EQ(s.GetTotals()->deposited, Amount::Zero());
  EXPECT_EQ(s.LastSeq(), 0u);
  s.Rollback();  // harmless without a transaction
}

TEST(SqliteStore, ChannelsDueAndEscrowQueries) {
  Wallet op, client, provider;
  const LedgerId lid = IdFor(op);
  auto store = OpenSqliteStore(":memory:", lid);
  ASSERT_TRUE(store);
  Store& s = **store;
  ASSERT_TRUE(s.Begin());
  ASSERT_TRUE(s.PutAccount(AccountRow{client.address, Amount::Zero(), 0}));
  auto make = [&](uint64_t nonce, ChannelStatus status, uint64_t expiry, uint64_t deadline) {
    ChannelState ch{.id = payments::ChannelIdFor(lid, client.address, nonce),
                    .client = client.address,
                    .client_key = client.key.public_key(),
                    .provider = provider.address,
                    .deposit = Amount::FromMicro(100),
                    .settled = Amount::FromMicro(10),
                    .refunded = {},
                    .status = status,
                    .expiry_unix = expiry,
                    .close_deadline_unix = deadline,
                    .opened_unix = nonce};
    EXPECT_TRUE(s.PutChannel(ch));
    return ch.id;
  };
  ChannelId open_due = make(1, ChannelStatus::kOpen, 1'000, 0);
  ChannelId open_not_due = make(2, ChannelStatus::kOpen, 1'001, 0);
  ChannelId closing_due = make(3, ChannelStatus::kClosing, 5'000, 1'100);
  ChannelId closing_not_due = make(4, ChannelStatus::kClosing, 500, 1'101);
  make(5, ChannelStatus::kClosed, 1, 1);
  ASSERT_TRUE(s.Commit());

  auto due = s.ChannelsDue(1'100, 100, 10);
  ASSERT_TRUE(due);
  std::vector<ChannelId> got = *due;
  std::sort(got.begin(), got.end());
  std::vector<ChannelId> want = {open_due, closing_due};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(s.ChannelsDue(1'100, 100, 1)->size(), 1u);
  EXPECT_EQ(s.ChannelsDue(1'099, 100, 10)->size(), 0u);
  // now < challenge: no open channel is due; huge values clamp instead of wrapping.
  EXPECT_EQ(s.ChannelsDue(50, 100, 10)->size(), 0u);
  EXPECT_EQ(s.ChannelsDue(UINT64_MAX, 0, 10)->size(), 4u);
  EXPECT_EQ(s.ChannelsDue(UINT64_MAX, UINT64_MAX, 10)->size(), 2u);  // closing ones only
  (void)open_not_due;
  (void)closing_not_due;
  // Four channels not closed, 90 remaining each.
  EXPECT_EQ(s.EscrowedBy(client.address), Amount::FromMicro(360));
  EXPECT_EQ(s.EscrowedBy(provider.address), Amount::Zero());
  EXPECT_EQ(s.ChannelsOf(provider.address, 10)->size(), 5u);
  auto newest = s.ChannelsOf(client.address, 2);
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].opened_unix, 5u);
  EXPECT_EQ((*newest)[1].opened_unix, 4u);
}

class SqliteFileTest : public ::testing::Test {
 protected:
  LedgerConfig Config() const {
    return LedgerConfig{.name = "file-ledger",
                        .operator_key = op_.key.public_key(),
                        .challenge_period_seconds = 60,
                        .verify_threads = 1};
  }
  LedgerId Id() const { return payments::LedgerIdFor("file-ledger", op_.key.public_key()); }
  std::unique_ptr<Ledger> OpenLedger() {
    auto store = OpenSqliteStore(path_, Id());
    EXPECT_TRUE(store) << store.error().message;
    if (!store) return nullptr;
    return std::make_unique<Ledger>(Config(), std::move(*store), clock_);
  }

  TempDir dir_;
  std::string path_ = dir_.File("ledger.db");
  Wallet op_, alice_, bob_;
  ManualClock clock_{kStart};
};

TEST_F(SqliteFileTest, ReopenedFileHasTheSameStateAndContinues) {
  std::vector<ChannelId> channels;
  std::string before;
  {
    auto ledger = OpenLedger();
    ASSERT_TRUE(ledger);
    const LedgerId& lid = ledger->id();
    ASSERT_TRUE(ledger->Deposit(
        MakeDeposit(op_.key, lid, alice_.address, Amount::FromMicro(1'000), op_.Next())));
    auto ch = ledger->OpenChannel(MakeOpenChannel(
        alice_.key, lid, bob_.address, Amount::FromMicro(400), alice_.Next(), kStart + 100));
    ASSERT_TRUE(ch);
    channels.push_back(ch->id);
    ASSERT_TRUE(ledger->SettleBatch(
        MakeSettleBatch(bob_.key, lid, bob_.Next(),
                        {MakePromise(alice_.key, lid, ch->id, Amount::FromMicro(50))})));
    ASSERT_TRUE(ledger->CloseChannel(MakeCloseChannel(alice_.key, lid, ch->id, alice_.Next())));
    before = Snapshot(*ledger, {op_.address, alice_.address, bob_.address}, channels);
  }
  EXPECT_EQ(QueryText(path_, "PRAGMA journal_mode"), "wal");
  auto ledger = OpenLedger();
  ASSERT_TRUE(ledger);
  EXPECT_EQ(Snapshot(*ledger, {op_.address, alice_.address, bob_.address}, channels), before);
  // Nonces survived: the old requests are replays; new ones work and seq continues.
  const LedgerId& lid = ledger->id();
  auto replay =
      ledger->Deposit(MakeDeposit(op_.key, lid, alice_.address, Amount::FromMicro(1), op_.nonce));
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error().code, Errc::kReplay);
  const uint64_t last = ledger->WaitForMovementAfter(UINT64_MAX, std::chrono::steady_clock::now());
  EXPECT_GT(last, 0u);
  ASSERT_TRUE(
      ledger->Deposit(MakeDeposit(op_.key, lid, alice_.address, Amount::FromMicro(1), op_.Next())));
  EXPECT_GT(ledger->WaitForMovementAfter(last, std::chrono::steady_clock::now()), last);
  clock_.Advance(61);
  EXPECT_EQ(ledger->FinalizeDueChannels(), 1u);
  testing::ExpectConservation(*ledger, {op_.address, alice_.address, bob_.address}, channels);
  EXPECT_EQ(ledger->GetAccount(alice_.address)->balance, Amount::FromMicro(951));
}

TEST_F(SqliteFileTest, AnotherLedgersFileIsRefused) {
  { ASSERT_TRUE(OpenSqliteStore(path_, Id())); }
  auto other = OpenSqliteStore(path_, payments::LedgerIdFor("other-name", op_.key.public_key()));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::kStorage);
  EXPECT_NE(other.error().message.find("belongs to ledger"), std::string::npos)
      << other.error().message;
  EXPECT_TRUE(OpenSqliteStore(path_, Id()));  // still fine for its own ledger
}

TEST_F(SqliteFileTest, NewerSchemaIsRefused) {
  { ASSERT_TRUE(OpenSqliteStore(path_, Id())); }
  ExecRaw(path_, "UPDATE meta SET value = 99 WHERE key = 'schema_version'");
  auto store = OpenSqliteStore(path_, Id());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, Errc::kStorage);
  EXPECT_NE(store.error().message.find("newer"), std::string::npos) << store.error().message;
  EXPECT_EQ(QueryText(path_, "SELECT value FROM meta WHERE key = 'schema_version'"), "99");
}

TEST_F(SqliteFileTest, ForeignFilesAreRefused) {
  {
    std::ofstream junk(path_, std::ios::binary);
    junk << std::string(4096, 'x');
  }
  auto store = OpenSqliteStore(path_, Id());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, Errc::kStorage);

  const std::string other = dir_.File("other.db");
  ExecRaw(other, "CREATE TABLE t(x)");
  store = OpenSqliteStore(other, Id());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, Errc::kStorage);

  store = OpenSqliteStore(dir_.File("no/such/dir/ledger.db"), Id());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, Errc::kStorage);
}

// The schema of version 1, frozen as it shipped, so the upgrade below starts from a real old file.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value NOT NULL);
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
)sql";

TEST_F(SqliteFileTest, SchemaVersion1UpgradesAndKeepsWithdrawalDestinations) {
  // A version-1 file: alice was credited 1000 and withdrew 400 (its destination was dropped).
  const std::string alice = "X'" + ToHex(alice_.address.bytes()) + "'";
  ExecRaw(path_, std::string(kSchemaV1) +
                     "INSERT INTO meta VALUES('schema_version', 1), ('ledger_id', X'" +
                     ToHex(Id().bytes) + "'), ('deposited', 1000), ('withdrawn', 400);" +
                     "INSERT INTO accounts VALUES(X'" + ToHex(op_.address.bytes()) + "', 0, 1);" +
                     "INSERT INTO accounts VALUES(" + alice + ", 600, 1);" +
                     "INSERT INTO movements VALUES(1, 10, " + alice + ", 1, 1000, NULL, NULL, 1000);" +
                     "INSERT INTO movements VALUES(2, 11, " + alice + ", 2, 400, NULL, NULL, 600);");
  op_.nonce = 1;
  alice_.nonce = 1;
  {
    auto ledger = OpenLedger();
    ASSERT_TRUE(ledger);
    EXPECT_EQ(QueryText(path_, "SELECT value FROM meta WHERE key = 'schema_version'"), "2");
    auto history = ledger->History(alice_.address, 0, 10);
    ASSERT_TRUE(history);
    ASSERT_EQ(history->size(), 2u);
    EXPECT_EQ((*history)[1].kind, MovementKind::kWithdraw);
    EXPECT_EQ((*history)[1].amount, Amount::FromMicro(400));
    EXPECT_EQ((*history)[1].destination, "");  // not recorded by version 1
    EXPECT_EQ(ledger->GetAccount(alice_.address)->balance, Amount::FromMicro(600));
    EXPECT_EQ(ledger->GetTotals()->withdrawn, Amount::FromMicro(400));
    auto w = ledger->Withdraw(
        MakeWithdraw(alice_.key, ledger->id(), Amount::FromMicro(100), alice_.Next(), "iban:2"));
    ASSERT_TRUE(w) << w.error().message;
  }
  // Reopened at version 2: no migration runs again and the new destination is there.
  auto ledger = OpenLedger();
  ASSERT_TRUE(ledger);
  auto history = ledger->History(alice_.address, 0, 10);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ((*history)[2].seq, 3u);
  EXPECT_EQ((*history)[2].destination, "iban:2");
  EXPECT_EQ(ledger->GetAccount(alice_.address)->balance, Amount::FromMicro(500));
  EXPECT_EQ(ledger->GetTotals()->withdrawn, Amount::FromMicro(500));
  // The column refuses more than the ledger accepts, whoever writes it.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  const std::string too_long = "INSERT INTO movements VALUES(9, 12, " + alice +
                               ", 2, 1, NULL, NULL, 0, '" + std::string(129, 'd') + "')";
  EXPECT_NE(sqlite3_exec(db, too_long.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
}

TEST_F(SqliteFileTest, FailedMigrationLeavesTheFileUntouched) {
  // A meta table without a schema version is not ours; nothing may be created next to it.
  ExecRaw(path_, "CREATE TABLE meta(key TEXT PRIMARY KEY, value)");
  auto store = OpenSqliteStore(path_, Id());
  ASSERT_FALSE(store);
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"), "1");
}

}  // namespace
}  // namespace dvpn::ledger
