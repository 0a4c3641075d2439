#include "sqlite/connection.h"

#include "common/private_file.h"

namespace dvpn::sqlite {

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    Close();
    db_ = std::exchange(other.db_, nullptr);
    stmts_ = std::move(other.stmts_);
  }
  return *this;
}

void Connection::Close() {
  stmts_.clear();  // statements are finalized before the connection closes
  if (db_) sqlite3_close_v2(db_);
  db_ = nullptr;
}

SqliteResult<Connection> Connection::Open(const std::string& path, const OpenOptions& options) {
  if (options.create) {
    if (auto ok = CreatePrivateFile(path); !ok) {
      return Fail(SqliteErrc::kFile, std::move(ok.error().message));
    }
  }
  const int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (options.create ? SQLITE_OPEN_CREATE : 0);
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  Connection conn(db);  // SQLite returns a handle to close even when the open fails
  if (rc != SQLITE_OK) return Fail(SqliteErrc::kOpen, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  sqlite3_extended_result_codes(db, 1);
  if (sqlite3_busy_timeout(db, options.busy_timeout_ms) != SQLITE_OK) {
    return std::unexpected(conn.LastError("set busy timeout"));
  }
  return conn;
}

dvpn::Error<SqliteErrc> Connection::LastError(std::string_view what) const {
  return {SqliteErrc::kSqlite, std::string(what) + ": " + sqlite3_errmsg(db_)};
}

SqliteResult<void> Connection::Exec(const char* sql, std::string_view what) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = std::string(what) + ": " + (err ? err : sqlite3_errmsg(db_));
    sqlite3_free(err);
    return Fail(SqliteErrc::kSqlite, std::move(msg));
  }
  return {};
}

SqliteResult<const Statement*> Connection::Prepared(const char* sql) {
  for (auto& [text, stmt] : stmts_) {
    if (text == sql) return stmt.get();
  }
  auto stmt = std::make_unique<Statement>();
  if (stmt->Prepare(db_, sql) != SQLITE_OK) return std::unexpected(LastError("prepare statement"));
  stmts_.emplace_back(sql, std::move(stmt));
  return stmts_.back().second.get();
}

void Connection::Rollback() {
  if (!sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK", "rollback");
}

SqliteResult<Schema> Connection::ReadSchema() {
  // Both reads in one transaction, so they see one state of the file.
  const bool own_transaction = sqlite3_get_autocommit(db_) != 0;
  if (own_transaction) {
    if (auto ok = Exec("BEGIN", "read schema"); !ok) return std::unexpected(ok.error());
  }
  auto read = [&]() -> SqliteResult<Schema> {
    Schema schema;
    {
      Statement tables;
      if (tables.Prepare(db_,
                         "SELECT count(*), coalesce(sum(name = 'meta'), 0) FROM sqlite_master "
                         "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") != SQLITE_OK) {
        return std::unexpected(LastError("read schema"));
      }
      Run r(tables);
      if (r.Step() != SQLITE_ROW) return std::unexpected(LastError("read schema"));
      schema.tables = r.I64(0);
      schema.has_meta = r.I64(1) > 0;
    }
    if (!schema.has_meta) return schema;
    Statement meta;
    if (meta.Prepare(db_,
                     "SELECT (SELECT value FROM meta WHERE key = 'format'), "
                     "(SELECT value FROM meta WHERE key = 'schema_version')") != SQLITE_OK) {
      return std::unexpected(LastError("read schema"));
    }
    Run r(meta);
    if (r.Step() != SQLITE_ROW) return std::unexpected(LastError("read schema"));
    if (!r.IsNull(0)) schema.format = r.Str(0);
    if (!r.IsNull(1)) schema.schema_version = r.I64(1);
    return schema;
  };
  auto schema = read();
  if (own_transaction) Rollback();
  return schema;
}

}  // namespace dvpn::sqlite
