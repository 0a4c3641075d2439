#pragma once
// PromiseLog: the promise store's append-only log (docs/payments.md §6, "The log"). An accepted
// promise is appended here, one write() per group, before it is credited; the store folds the
// log into its SQLite tables in batches and then empties it. Appending ~200 bytes costs one
// system call, where a SQLite transaction per promise cost more CPU than the whole tunnel
// could spare at full speed (docs/BENCHMARKS.md, "Payments").
//
// Each record is fixed-size and ends with a check (SHA-256 of the rest, first 8 bytes), so a
// record torn by a power loss, or anything after it, is recognised and dropped at Open.
//
// Thread-safety: none (the store calls it under its write lock). Ownership: owns the file
// descriptor.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "settlement/promise_store.h"

namespace dvpn::payments {

// A promise as logged: what the store needs to fold it into its row later.
struct LoggedPromise {
  AcceptedPromise promise;
  uint64_t received_unix = 0;
};

class PromiseLog {
 public:
  static constexpr size_t kRecordSize = 205;

  // Opens (creating if needed) the log at `path` and reads it: `*records` gets every valid
  // record in order; a torn or corrupt record and everything after it are cut off the file.
  static StoreResult<PromiseLog> Open(const std::string& path, std::vector<LoggedPromise>* records);

  PromiseLog(PromiseLog&& other) noexcept;
  PromiseLog& operator=(PromiseLog&& other) noexcept;
  ~PromiseLog();

  // Appends `records` with one write() (and an fdatasync when `sync`). Error: kStorage, and
  // the part of the group that was written is cut off again (if even that fails, every later
  // append fails too, so no record ever follows a torn one).
  StoreResult<void> Append(std::span<const LoggedPromise> records, bool sync);
  // Empties the log (its records are in the tables).
  StoreResult<void> Clear();

  static std::vector<uint8_t> Encode(const LoggedPromise& record);
  // Empty when the record's check or fields are wrong.
  static std::optional<LoggedPromise> Decode(std::span<const uint8_t> bytes);

 private:
  PromiseLog(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
  size_t size_ = 0;      // bytes of whole records in the file
  bool broken_ = false;  // a failed append could not be cut off: no more appends
};

}  // namespace dvpn::payments
