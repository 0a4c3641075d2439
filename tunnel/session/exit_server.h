#pragma once
// ExitServer: the provider's tunnel endpoint. Accepts TCP connections, rate-limits handshakes
// per source (before reading a byte), reads msg1 with a size limit and a timeout, checks mac1
// (no DH for strangers), answers with msg2, then serves the tunnel's streams: each OPEN is
// resolved (domain names, with a timeout), every address is decided by the ExitPolicy, the
// first allowed address is connected to (with a timeout) and the client gets OPEN_OK or
// OPEN_FAIL with the matching reason. Destinations are logged only when asked to.
//
// Threading: single io_context thread; not thread-safe. Owned by the caller (shared_ptr); it
// must outlive the io_context's run.

#include <chrono>
#include <functional>
#include <memory>
#include <unordered_set>

#include "common/clock.h"
#include "tunnel/exit_policy.h"
#include "tunnel/handshake.h"
#include "tunnel/rate_limit.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/paid_exit.h"
#include "tunnel/session/tunnel_connection.h"

namespace dvpn::tunnel::session {

class ExitServer : public std::enable_shared_from_this<ExitServer> {
 public:
  struct Options {
    ConnectionOptions connection;
    HandshakeRateLimiter::Options rate_limit;
    std::chrono::milliseconds handshake_timeout{10'000};
    std::chrono::milliseconds resolve_timeout{10'000};
    std::chrono::milliseconds connect_timeout{10'000};
    size_t max_tunnels = 4096;
    bool log_destinations = false;
    // Paid sessions (docs/payments.md); null: free sessions (empty msg2 params).
    std::shared_ptr<ExitPayments> payments;
  };

  // Binds and listens on `listen` (throws boost::system::system_error when it cannot).
  ExitServer(asio::io_context& io, const tcp::endpoint& listen, const X25519KeyPair& static_key,
             ExitPolicy policy, Options options);

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  void Start();
  // Stops accepting and closes every tunnel (CLOSE kShutdown); `on_idle`, if given, runs on
  // the io thread once the last tunnel has closed (at once when there is none).
  void Stop(std::function<void()> on_idle = nullptr);
  // After the io_context stopped: lets go of tunnels that did not close in time (their handlers
  // hold the server, so they would keep each other alive). Not on a running io thread.
  void DropTunnels() { tunnels_.clear(); }
  size_t tunnel_count() const { return tunnels_.size(); }

 private:
  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Handshake(tcp::socket socket);
  asio::awaitable<void> ServeOpen(std::shared_ptr<TunnelConnection> tunnel, uint32_t id,
                                  Destination destination);

  tcp::acceptor acceptor_;
  X25519KeyPair static_key_;
  ExitPolicy policy_;
  Options options_;
  SystemClock clock_;
  ReplayGuard replay_guard_;
  HandshakeRateLimiter rate_limiter_;
  std::unordered_set<std::shared_ptr<TunnelConnection>> tunnels_;
  std::function<void()> on_idle_;  // set by Stop()
  uint64_t next_tunnel_ = 1;
};

}  // namespace dvpn::tunnel::session
