#include "sqlite/connection.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "tests/support/subprocess.h"

namespace dvpn::sqlite {
namespace {

using dvpn::testing::TempDir;

enum class TestErrc { kStorage, kBody };

// Opens `path`, failing the test when it cannot.
Connection OpenOrDie(const std::string& path, OpenOptions options = {}) {
  auto conn = Connection::Open(path, options);
  EXPECT_TRUE(conn) << conn.error().message;
  return conn ? std::move(*conn) : Connection();
}

int64_t CountRows(Connection& conn, const char* table_sql) {
  Statement s;
  EXPECT_EQ(s.Prepare(conn.db(), table_sql), SQLITE_OK) << sqlite3_errmsg(conn.db());
  Run r(s);
  EXPECT_EQ(r.Step(), SQLITE_ROW) << sqlite3_errmsg(conn.db());
  return r.I64(0);
}

bool InTransaction(const Connection& conn) { return sqlite3_get_autocommit(conn.db()) == 0; }

TEST(Connection, OpenCreatesA0600FileWhateverTheUmask) {
  TempDir dir;
  const std::string path = dir.File("private.db");
  const mode_t old_umask = ::umask(0);  // the most permissive: SQLite alone would make 0644
  {
    Connection conn = OpenOrDie(path);
    ASSERT_TRUE(conn.Exec("CREATE TABLE t(x)", "create table"));
  }
  ::umask(old_umask);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Connection, OpenWithoutCreateNeedsTheFile) {
  TempDir dir;
  const std::string path = dir.File("missing.db");
  auto conn = Connection::Open(path, {.create = false});
  ASSERT_FALSE(conn);
  EXPECT_EQ(conn.error().code, SqliteErrc::kOpen);
  EXPECT_EQ(conn.error().message, "unable to open database file");
  struct stat st {};
  EXPECT_NE(::stat(path.c_str(), &st), 0);  // not created
}

TEST(Connection, ASecondConnectionSeesCommittedData) {
  TempDir dir;
  const std::string path = dir.File("shared.db");
  Connection writer = OpenOrDie(path);
  ASSERT_TRUE(writer.Exec("CREATE TABLE t(x)", "create table"));
  Connection reader = OpenOrDie(path, {.create = false});
  auto ok = writer.Transact("insert", TestErrc::kStorage, [&]() -> Result<void, TestErrc> {
    if (auto e = writer.Exec("INSERT INTO t VALUES (1), (2)", "insert"); !e) {
      return Fail(TestErrc::kStorage, e.error().message);
    }
    return {};
  });
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_FALSE(InTransaction(writer));
  EXPECT_EQ(CountRows(reader, "SELECT count(*) FROM t"), 2);
}

TEST(Connection, TransactRollsBackWhenTheBodyFails) {
  TempDir dir;
  Connection conn = OpenOrDie(dir.File("body.db"));
  ASSERT_TRUE(conn.Exec("CREATE TABLE t(x)", "create table"));
  auto ok = conn.Transact("insert", TestErrc::kStorage, [&]() -> Result<void, TestErrc> {
    EXPECT_TRUE(InTransaction(conn));
    EXPECT_TRUE(conn.Exec("INSERT INTO t VALUES (1)", "insert"));
    return Fail(TestErrc::kBody, "the body changed its mind");
  });
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, TestErrc::kBody);  // the body's own error, untouched
  EXPECT_EQ(ok.error().message, "the body changed its mind");
  EXPECT_FALSE(InTransaction(conn));
  EXPECT_EQ(CountRows(conn, "SELECT count(*) FROM t"), 0);
}

TEST(Connection, TransactRollsBackWhenTheCommitFails) {
  TempDir dir;
  Connection conn = OpenOrDie(dir.File("commit.db"));
  // A deferred foreign key is checked at COMMIT, which then fails and leaves the transaction
  // open.
  ASSERT_TRUE(
      conn.Exec("PRAGMA foreign_keys = ON;"
                "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
                "CREATE TABLE child(p INTEGER REFERENCES parent(id) "
                "DEFERRABLE INITIALLY DEFERRED)",
                "create tables"));
  auto ok = conn.Transact("orphan", TestErrc::kStorage, [&]() -> Result<void, TestErrc> {
    if (auto e = conn.Exec("INSERT INTO child VALUES (7)", "insert"); !e) {
      return Fail(TestErrc::kBody, e.error().message);
    }
    return {};
  });
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, TestErrc::kStorage);
  EXPECT_EQ(ok.error().message, "commit orphan: FOREIGN KEY constraint failed");
  EXPECT_FALSE(InTransaction(conn));
  EXPECT_EQ(CountRows(conn, "SELECT count(*) FROM child"), 0);
}

TEST(Connection, TransactReportsAFailedBegin) {
  TempDir dir;
  const std::string path = dir.File("busy.db");
  Connection holder = OpenOrDie(path);
  ASSERT_TRUE(holder.Exec("CREATE TABLE t(x); BEGIN IMMEDIATE", "hold the write lock"));
  Connection conn = OpenOrDie(path, {.create = false, .busy_timeout_ms = 0});
  bool ran = false;
  auto ok = conn.Transact("insert", TestErrc::kStorage, [&]() -> Result<void, TestErrc> {
    ran = true;
    return {};
  });
  ASSERT_FALSE(ok);
  EXPECT_FALSE(ran);
  EXPECT_EQ(ok.error().code, TestErrc::kStorage);
  EXPECT_EQ(ok.error().message, "begin insert: database is locked");
  holder.Rollback();
}

TEST(Connection, TheStatementCacheReturnsTheSameStatementForTheSameLiteral) {
  TempDir dir;
  Connection conn = OpenOrDie(dir.File("cache.db"));
  const char* sql = "SELECT 40 + 2";
  auto first = conn.Prepared(sql);
  ASSERT_TRUE(first) << first.error().message;
  auto again = conn.Prepared(sql);
  ASSERT_TRUE(again);
  EXPECT_EQ(*first, *again);
  EXPECT_EQ((*first)->get(), (*again)->get());
  auto other = conn.Prepared("SELECT 1");
  ASSERT_TRUE(other);
  EXPECT_NE((*other)->get(), (*first)->get());
  sqlite::Run r(**again);
  ASSERT_EQ(r.Step(), SQLITE_ROW);
  EXPECT_EQ(r.I64(0), 42);
}

TEST(Connection, ErrorsNameTheOperation) {
  TempDir dir;
  Connection conn = OpenOrDie(dir.File("errors.db"));
  auto exec = conn.Exec("CREATE TABLE", "create the widgets");
  ASSERT_FALSE(exec);
  EXPECT_EQ(exec.error().code, SqliteErrc::kSqlite);
  EXPECT_EQ(exec.error().message, "create the widgets: incomplete input");

  auto prepared = conn.Prepared("SELECT x FROM nowhere");
  ASSERT_FALSE(prepared);
  EXPECT_EQ(prepared.error().code, SqliteErrc::kSqlite);
  EXPECT_EQ(prepared.error().message, "prepare statement: no such table: nowhere");

  ASSERT_TRUE(conn.Exec("CREATE TABLE t(x UNIQUE); INSERT INTO t VALUES (1)", "create table"));
  auto insert = conn.Prepared("INSERT INTO t VALUES (1)");
  ASSERT_TRUE(insert);
  sqlite::Run r(**insert);
  EXPECT_EQ(r.Step(), SQLITE_CONSTRAINT_UNIQUE);  // extended result codes are on
  const Error<SqliteErrc> last = conn.LastError("insert a widget");
  EXPECT_EQ(last.code, SqliteErrc::kSqlite);
  EXPECT_EQ(last.message, "insert a widget: UNIQUE constraint failed: t.x");

  auto no_dir = Connection::Open(dir.File("missing/errors.db"));
  ASSERT_FALSE(no_dir);
  EXPECT_EQ(no_dir.error().code, SqliteErrc::kFile);
  EXPECT_EQ(no_dir.error().message.rfind("create " + dir.File("missing/errors.db") + ": ", 0), 0u)
      << no_dir.error().message;
}

TEST(Connection, ReadSchemaSaysWhatTheFileIs) {
  TempDir dir;
  Connection conn = OpenOrDie(dir.File("schema.db"));
  auto empty = conn.ReadSchema();
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_EQ(empty->tables, 0);
  EXPECT_FALSE(empty->has_meta);

  ASSERT_TRUE(conn.Exec("CREATE TABLE songs(title TEXT)", "create table"));
  auto foreign = conn.ReadSchema();
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->tables, 1);
  EXPECT_FALSE(foreign->has_meta);
  EXPECT_FALSE(foreign->format);

  ASSERT_TRUE(
      conn.Exec("CREATE TABLE meta(key TEXT PRIMARY KEY, value NOT NULL);"
                "INSERT INTO meta VALUES ('format', 'test.file'), ('schema_version', 3)",
                "create meta"));
  // Inside a transaction it reads in that one and leaves it open.
  ASSERT_TRUE(conn.Exec("BEGIN", "begin"));
  auto ours = conn.ReadSchema();
  EXPECT_TRUE(InTransaction(conn));
  conn.Rollback();
  ASSERT_TRUE(ours) << ours.error().message;
  EXPECT_EQ(ours->tables, 2);
  EXPECT_TRUE(ours->has_meta);
  EXPECT_EQ(ours->format, "test.file");
  EXPECT_EQ(ours->schema_version, 3);

  ASSERT_TRUE(conn.Exec("DELETE FROM meta WHERE key = 'format'", "delete format"));
  auto unmarked = conn.ReadSchema();
  ASSERT_TRUE(unmarked);
  EXPECT_FALSE(unmarked->format);
  EXPECT_EQ(unmarked->schema_version, 3);
  EXPECT_FALSE(InTransaction(conn));  // its own read transaction ended
}

TEST(Connection, ReadSchemaNoticesAFileThatIsNotADatabase) {
  TempDir dir;
  const std::string path = dir.File("junk.db");
  {
    std::ofstream junk(path, std::ios::binary);
    junk << std::string(4096, 'x');
  }
  Connection conn = OpenOrDie(path);  // SQLite reads nothing yet
  auto schema = conn.ReadSchema();
  ASSERT_FALSE(schema);
  EXPECT_EQ(schema.error().code, SqliteErrc::kSqlite);
  EXPECT_EQ(schema.error().message, "read schema: file is not a database");
  EXPECT_FALSE(InTransaction(conn));
}

TEST(Connection, MovingKeepsTheConnectionAndItsStatements) {
  TempDir dir;
  Connection from = OpenOrDie(dir.File("move.db"));
  auto stmt = from.Prepared("SELECT 5");
  ASSERT_TRUE(stmt);
  sqlite3* const db = from.db();
  Connection to = std::move(from);
  EXPECT_EQ(from.db(), nullptr);  // NOLINT(bugprone-use-after-move): documented as closed
  EXPECT_EQ(to.db(), db);
  auto again = to.Prepared("SELECT 5");
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *stmt);
}

}  // namespace
}  // namespace dvpn::sqlite
