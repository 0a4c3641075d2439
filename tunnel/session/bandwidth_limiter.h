#pragma once
// BandwidthLimiter: a token bucket shared by every stream pump of every tunnel of an exit, so the
// exit's total forwarding rate (bytes read from and written to its upstream sockets) stays under
// `rate` bytes per second, with at most `burst` bytes above that after an idle spell.
//
// Reservations, not polling: Reserve() always grants at once (at most `max_grant` bytes per
// call) and takes the tokens even when that puts the bucket into debt; the caller then waits
// until the debt its grant created is paid back (Reservation::ready_at). Each later reservation
// queues behind the debt of the earlier ones, so waiters are served in FIFO order with no
// waiter list, and a busy stream that comes back for more queues behind the others: no stream
// starves and no one busy-waits. Bytes granted but not used go back with Refund(). The debt is
// bounded by (number of pumps waiting at once) x max_grant, since a pump holds one grant at a
// time.
//
// Bound: whatever the callers do, the bytes granted in any interval of length t are at most
// burst + rate * t (the bucket starts full).
//
// Threading: not thread-safe; every call on one thread (the exit's io_context thread). Time is
// an argument of the bucket methods (tests pass their own time points); Acquire() uses
// std::chrono::steady_clock, the clock of asio::steady_timer. Ownership: held by shared_ptr
// (ExitServer::Options::bandwidth, copied into each tunnel's ConnectionOptions); it must outlive
// the coroutines awaiting Acquire, which the tunnels' shared_ptrs guarantee.

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

class BandwidthLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  struct Options {
    uint64_t rate_bytes_per_s = 0;  // > 0 (0 is taken as 1)
    uint64_t burst_bytes = 0;       // bucket size; 0: max(rate / 10, kMinBurst)
    uint64_t max_grant_bytes = 0;   // per Reserve; 0: clamp(rate / 100, 16 KiB, 256 KiB)
  };

  static constexpr uint64_t kMinBurst = 256 * 1024;
  static constexpr uint64_t kMinGrant = 16 * 1024;   // about one full DATA frame
  static constexpr uint64_t kMaxGrant = 256 * 1024;  // about one pump wake-up's read

  // `[limits] bandwidth_mbps` (megabits, 10^6 bits, per second) in bytes per second. The
  // caller bounds `mbps` (no overflow below 10^14); the constructor caps the rate at 2^40 B/s.
  static constexpr uint64_t BytesPerSecondFromMbps(uint64_t mbps) { return mbps * 125'000; }

  // A bucket of `rate_bytes_per_s` with the default burst and grant size, full at `now`.
  explicit BandwidthLimiter(uint64_t rate_bytes_per_s, TimePoint now = Clock::now());
  // Burst and grant size as given (0: the defaults above); max_grant is capped at the burst.
  explicit BandwidthLimiter(const Options& options, TimePoint now = Clock::now());
  BandwidthLimiter(const BandwidthLimiter&) = delete;
  BandwidthLimiter& operator=(const BandwidthLimiter&) = delete;

  struct Reservation {
    size_t bytes = 0;    // granted: min(max, max_grant); 0 only when max was 0
    TimePoint ready_at;  // use them not before this (<= now: at once)
  };
  // Grants min(max, max_grant) bytes at once, taking their tokens (the bucket may go into
  // debt), and says when they may be used: when the bucket, refilled at `rate`, has paid back
  // the debt this and every earlier reservation created. Never fails.
  Reservation Reserve(size_t max, TimePoint now);
  // Returns `bytes` granted but not used (the bucket is capped at the burst).
  void Refund(size_t bytes);
  // Tokens in the bucket at `now` (negative: debt). For tests and metrics.
  int64_t Available(TimePoint now);

  // Reserve(max, now) and, when the grant is not ready yet, waits on `timer` (owned by the
  // caller, on the caller's executor) until it is. Returns the bytes granted, 1..max_grant.
  // Completes without suspending when tokens are available. Cancelling `timer` (e.g. the stream
  // closing) ends the wait: the grant is refunded and 0 is returned. `max` 0 returns 0 at once.
  // The caller refunds what it does not use. The limiter and `timer` must outlive the wait.
  asio::awaitable<size_t> Acquire(size_t max, asio::steady_timer& timer);

  uint64_t rate() const { return rate_; }
  uint64_t burst() const { return burst_; }
  uint64_t max_grant() const { return max_grant_; }

 private:
  void Refill(TimePoint now);

  uint64_t rate_;
  uint64_t burst_;
  uint64_t max_grant_;
  int64_t tokens_;         // as of last_; negative: debt
  uint64_t fraction_ = 0;  // part of a byte earned by last_, in 10^-9 bytes
  TimePoint last_;         // time of the last refill
};

}  // namespace dvpn::tunnel::session
