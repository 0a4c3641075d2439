#pragma once
// Connection: one SQLite connection as every store of the project opens and drives it (the
// ledger's SqliteStore, the provider's PromiseStore, the client's ProviderStats): a database
// file created 0600 before SQLite opens it, a busy timeout, extended result codes, errors that
// name what failed, a cache of prepared statements, BEGIN IMMEDIATE transactions, and the
// `meta` table each of our files describes itself in.
//
// Not thread-safe: the connection is opened with SQLITE_OPEN_NOMUTEX, so one thread at a time
// uses it (its owner locks). Ownership: the Connection owns the sqlite3 handle and the cached
// statements, and finalizes them before it closes the handle. Move-only; a default-constructed
// or moved-from Connection is closed and may only be assigned to or destroyed.
//
// Errors are Result<T, SqliteErrc> whose message names the operation ("<what>: <SQLite's
// message>"); each store maps them to its own Errc.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "sqlite/statement.h"

namespace dvpn::sqlite {

enum class SqliteErrc {
  kFile,    // Open: the file could not be created 0600; the message names it and says why
  kOpen,    // Open: SQLite could not open the file; the message is SQLite's reason alone, so
            // that the caller names the file as it reports it
  kSqlite,  // any other SQLite failure; the message is "<what>: <SQLite's message>"
};

template <class T>
using SqliteResult = Result<T, SqliteErrc>;

struct OpenOptions {
  // Create the file when it is missing, mode 0600 whatever the umask (CreatePrivateFile; SQLite
  // gives its -wal, -shm and -journal files the same mode). False: the file must exist.
  bool create = true;
  int busy_timeout_ms = 5000;  // how long a statement waits for another connection's lock
};

// What a file says of itself, for refusing foreign and newer files before touching them. Our
// files keep facts in a table `meta(key TEXT PRIMARY KEY, value)`: 'schema_version' always,
// 'format' (the kind of file) where the store writes one.
struct Schema {
  int64_t tables = 0;                     // tables other than SQLite's own (sqlite_%)
  bool has_meta = false;                  // one of them is named meta
  std::optional<std::string> format;      // meta 'format' as text; empty when absent or NULL
  std::optional<int64_t> schema_version;  // meta 'schema_version'; empty when absent or NULL
};

class Connection {
 public:
  Connection() = default;
  ~Connection() { Close(); }
  Connection(Connection&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), stmts_(std::move(other.stmts_)) {}
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Opens `path` read-write (":memory:" for a private in-memory database), with extended
  // result codes on and `options.busy_timeout_ms`. Errors: kFile when the file cannot be
  // created; kOpen when SQLite cannot open it (message: SQLite's reason); kSqlite "set busy
  // timeout: ...". A file that is not a database opens fine: the first read says so.
  [[nodiscard]] static SqliteResult<Connection> Open(const std::string& path,
                                                     const OpenOptions& options = {});

  sqlite3* db() const { return db_; }

  // kSqlite "<what>: <sqlite3_errmsg>": the connection's last failure, named.
  [[nodiscard]] dvpn::Error<SqliteErrc> LastError(std::string_view what) const;

  // Runs one or more SQL statements without results. Error: kSqlite "<what>: <SQLite's
  // message>".
  [[nodiscard]] SqliteResult<void> Exec(const char* sql, std::string_view what);

  // The statement for `sql`, prepared on first use and kept as long as the connection. Keyed by
  // the address of `sql`: pass a string literal (or a string that lives as long as the
  // connection and never changes). Error: kSqlite "prepare statement: ...".
  [[nodiscard]] SqliteResult<const Statement*> Prepared(const char* sql);

  // Rolls back the open transaction, if any; does nothing in autocommit mode (SQLite may
  // already have rolled back on its own, e.g. after SQLITE_FULL).
  void Rollback();

  // Runs `body` (returning Result<void, Code>) inside BEGIN IMMEDIATE ... COMMIT and rolls back
  // when `body` or COMMIT fails. Returns what `body` returned, or {code, "begin <what>: ..."} /
  // {code, "commit <what>: ..."} when SQLite fails to begin or commit.
  template <class Code, class F>
  [[nodiscard]] Result<void, Code> Transact(std::string_view what, Code code, F&& body) {
    if (auto ok = Exec("BEGIN IMMEDIATE", "begin " + std::string(what)); !ok) {
      return Fail(code, std::move(ok.error().message));
    }
    Result<void, Code> ok = std::forward<F>(body)();
    if (ok) {
      if (auto committed = Exec("COMMIT", "commit " + std::string(what)); !committed) {
        ok = Fail(code, std::move(committed.error().message));
      }
    }
    if (!ok) Rollback();
    return ok;
  }

  // Reads Schema. Inside a transaction it reads in that one; otherwise in a read transaction of
  // its own, ended before it returns. Error: kSqlite "read schema: ..." (which is also where a
  // file that is not a database is noticed).
  [[nodiscard]] SqliteResult<Schema> ReadSchema();

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  void Close();

  sqlite3* db_ = nullptr;
  // Keyed by the SQL text's address: callers pass string literals, so no text is compared.
  std::vector<std::pair<const char*, std::unique_ptr<Statement>>> stmts_;
};

}  // namespace dvpn::sqlite
