#pragma once
// Clock: the time source injected into components that make time-based decisions (channel
// expiry, challenge periods), so tests control time. Implementations must be thread-safe.

#include <atomic>
#include <cstdint>

namespace dvpn {

class Clock {
 public:
  virtual ~Clock() = default;
  // Seconds since the Unix epoch.
  virtual uint64_t NowSeconds() const = 0;
};

class SystemClock final : public Clock {
 public:
  uint64_t NowSeconds() const override;
};

// Seconds since the Unix epoch by the system clock (where no Clock is injected).
uint64_t UnixSeconds();

// A clock that moves only when told to. For tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_seconds) : now_(start_seconds) {}
  uint64_t NowSeconds() const override { return now_.load(); }
  void Set(uint64_t seconds) { now_.store(seconds); }
  void Advance(uint64_t seconds) { now_.fetch_add(seconds); }

 private:
  std::atomic<uint64_t> now_;
};

}  // namespace dvpn
