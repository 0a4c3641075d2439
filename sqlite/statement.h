#pragma once
// Small RAII helpers over SQLite prepared statements, shared by every store over SQLite (the
// ledger's SqliteStore, the provider's PromiseStore, the client's ProviderStats); connections
// are sqlite/connection.h.
//
// uint64 values (amounts, nonces) are stored bit for bit in SQLite's int64 (ToDb / FromDb); SQL
// never does arithmetic or comparisons on them. Not thread-safe: a statement belongs to one
// connection, used by one thread at a time.

#include <sqlite3.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "common/amount.h"
#include "common/bytes.h"

namespace dvpn::sqlite {

inline int64_t ToDb(uint64_t v) { return std::bit_cast<int64_t>(v); }
inline uint64_t FromDb(int64_t v) { return std::bit_cast<uint64_t>(v); }

// Owns one prepared statement.
class Statement {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  int Prepare(sqlite3* db, const char* sql) {
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// Binds and steps one statement; resets it and clears its bindings when it goes out of scope,
// so it never keeps a read open or points at bound data that is gone. Blobs are bound without a
// copy (they must outlive the Run); text is copied.
class Run {
 public:
  explicit Run(const Statement& s) : s_(s.get()) {}
  ~Run() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  Run& Blob(int i, ByteSpan b) {
    sqlite3_bind_blob(s_, i, b.data(), static_cast<int>(b.size()), SQLITE_STATIC);
    return *this;
  }
  Run& Null(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  Run& U64(int i, uint64_t v) {
    sqlite3_bind_int64(s_, i, ToDb(v));
    return *this;
  }
  Run& I64(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Run& OptI64(int i, std::optional<int64_t> v) { return v ? I64(i, *v) : Null(i); }
  Run& Text(int i, std::string_view text) {
    sqlite3_bind_text(s_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(s_); }

  bool IsBlob(int i) const { return sqlite3_column_type(s_, i) == SQLITE_BLOB; }
  bool IsNull(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
  int64_t I64(int i) const { return sqlite3_column_int64(s_, i); }
  uint64_t U64(int i) const { return FromDb(sqlite3_column_int64(s_, i)); }
  Amount Money(int i) const { return Amount::FromMicro(U64(i)); }
  std::optional<Amount> OptMoney(int i) const {
    if (IsNull(i)) return std::nullopt;
    return Money(i);
  }
  std::string Str(int i) const {
    const unsigned char* text = sqlite3_column_text(s_, i);
    return text ? std::string(reinterpret_cast<const char*>(text)) : std::string();
  }
  template <size_t N>
  std::optional<ByteArray<N>> Array(int i) const {
    if (sqlite3_column_type(s_, i) != SQLITE_BLOB) return std::nullopt;
    if (sqlite3_column_bytes(s_, i) != static_cast<int>(N)) return std::nullopt;
    ByteArray<N> out;
    std::memcpy(out.data(), sqlite3_column_blob(s_, i), N);
    return out;
  }

 private:
  sqlite3_stmt* s_;
};

}  // namespace dvpn::sqlite
