#pragma once
// SpendJournal: keeps the client's daily spending cap across restarts (docs/payments.md §5,
// "The daily cap across restarts"). One small file records how much of a UTC day's cap has been
// reserved; the client makes sure the reservation covers a promise before it sends it, and a
// process started later on the same day reads the reservation back as already spent. A crash
// can only make the cap stricter, by at most one block.
//
// Thread-safety: every method may be called from any thread. Ownership: holds only the path.

#include <cstdint>
#include <mutex>
#include <string>

#include "common/amount.h"
#include "common/result.h"

namespace dvpn::payments {

enum class JournalErrc {
  kNoCap,     // Open without a daily cap
  kIo,        // the file or its directory cannot be read, written or synced
  kCorrupt,   // the file's content is not a journal line
};

class SpendJournal {
 public:
  // Reads `path` (a missing file is an empty journal) for a cap of `daily_cap` (non-zero).
  // Error: a message naming the file and what is wrong with it.
  static Result<SpendJournal, JournalErrc> Open(std::string path, Amount daily_cap);

  SpendJournal(SpendJournal&& other) noexcept;
  SpendJournal& operator=(SpendJournal&&) = delete;

  // What was reserved for `utc_day` when the file was opened or last written: zero for a day
  // after the journal's, the journal's amount for its own day or an earlier one (a clock that
  // went back counts the later day's spending, which is stricter).
  Amount ReservedFor(uint64_t utc_day) const;

  // Makes sure the file covers `spent_today` on `utc_day`: when it already does, returns at
  // once; otherwise durably writes reserved = min(spent_today + block, cap) (at least
  // spent_today) with write-temp, fsync, rename, fsync-directory. Error: what failed.
  Result<void, JournalErrc> Cover(uint64_t utc_day, Amount spent_today);

  // On a clean stop: gives back the unused part of the reservation, so that a restart the same
  // day does not lose it (rewrites the file with reserved = spent_today when that is lower).
  Result<void, JournalErrc> Trim(uint64_t utc_day, Amount spent_today);

  // How many times the file was written by this process (for tests and logs).
  uint64_t writes() const;

  static constexpr uint32_t kBlocksPerDay = 32;

 private:
  SpendJournal(std::string path, Amount daily_cap, uint64_t day, Amount reserved);

  std::string path_;
  Amount cap_;
  Amount block_;
  mutable std::mutex mu_;
  uint64_t day_ = 0;
  Amount reserved_;
  uint64_t writes_ = 0;
};

}  // namespace dvpn::payments
