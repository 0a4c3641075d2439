#pragma once
// Driving an io_context from a test's thread with a deadline (no sleeps), for the tunnel tests
// that run an ExitServer or a TunnelConnection on one io_context.

#include <chrono>
#include <functional>

#include "tunnel/session/asio.h"

namespace dvpn::tunnel::testing {

// Runs `io` (restarted when it has stopped) one handler at a time until `pred` holds; false
// when `timeout` passes first.
inline bool RunUntil(boost::asio::io_context& io, const std::function<bool()>& pred,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_one_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace dvpn::tunnel::testing
