#pragma once
// Boost.Asio includes and small coroutine helpers shared by the tunnel's session layer.
// (<utility> first: Boost 1.74's awaitable.hpp uses std::exchange without including it.)

#include <utility>

#include <chrono>
#include <cstdint>
#include <memory>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log.h"

namespace dvpn::tunnel::session {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// The session layer's logger ("tunnel").
inline std::shared_ptr<spdlog::logger> TunnelLog() {
  static auto log = Logger("tunnel");
  return log;
}

// Milliseconds on the steady clock: rate limits, keepalive and open deadlines.
inline uint64_t MonotonicMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits until `signal` is cancelled (Notify) or `deadline` passes. Returns true when the
// deadline passed. Used as a condition variable on a single-threaded io_context: callers
// re-check their condition after every wake-up. Several coroutines may wait on one signal
// (Notify wakes them all) as long as they use the same deadline: the timer is re-armed only when
// the deadline changes, because re-arming cancels every pending wait (two waiters re-arming in
// turn would wake each other forever).
inline asio::awaitable<bool> WaitSignal(
    asio::steady_timer& signal,
    asio::steady_timer::time_point deadline = asio::steady_timer::time_point::max()) {
  if (signal.expiry() != deadline) signal.expires_at(deadline);
  error_code ec;
  co_await signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

inline void Notify(asio::steady_timer& signal) { signal.cancel(); }

// Calls `on_expiry` once if `deadline` passes while the Watchdog lives (e.g. to close a socket
// whose operation takes too long). Safe when the expiry handler is already queued at
// destruction: it then does nothing, so `on_expiry` may capture locals by reference.
class Watchdog {
 public:
  template <class F>
  Watchdog(const asio::any_io_executor& ex, asio::steady_timer::time_point deadline, F on_expiry)
      : timer_(ex), alive_(std::make_shared<bool>(true)) {
    timer_.expires_at(deadline);
    timer_.async_wait([alive = alive_, f = std::move(on_expiry)](error_code ec) mutable {
      if (ec || !*alive) return;
      f();
    });
  }
  template <class F>
  Watchdog(const asio::any_io_executor& ex, std::chrono::milliseconds timeout, F on_expiry)
      : Watchdog(ex, asio::steady_timer::clock_type::now() + timeout, std::move(on_expiry)) {}
  ~Watchdog() {
    *alive_ = false;
    timer_.cancel();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  asio::steady_timer timer_;
  std::shared_ptr<bool> alive_;
};

}  // namespace dvpn::tunnel::session
