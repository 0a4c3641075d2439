#pragma once
// ExitServer: the provider's tunnel endpoint. Accepts TCP connections, rate-limits handshakes
// per source (before reading a byte), reads msg1 with a size limit and a timeout, checks mac1
// (no DH for strangers), answers with msg2, then serves the tunnel's streams: each OPEN is
// resolved (domain names, with a timeout), every address is decided by the ExitPolicy, the
// first allowed address is connected to (with a timeout) and the client gets OPEN_OK or
// OPEN_FAIL with the matching reason. Destinations are logged only when asked to.
//
// Threading: single io_context thread; not thread-safe (post to it to read Tunnels() etc.). Owned by the caller (shared_ptr); it
// must outlive the io_context's run.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "tunnel/exit_policy.h"
#include "tunnel/handshake.h"
#include "tunnel/rate_limit.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/bandwidth_limiter.h"
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
    // The exit-wide bandwidth limit (`[limits] bandwidth_mbps`): one token bucket over the
    // upstream bytes of every tunnel, both directions (docs/tunnel.md, "Bandwidth limit"). When
    // set, it is used instead of connection.bandwidth. Null: no limit. Used on the server's
    // io_context thread only.
    std::shared_ptr<BandwidthLimiter> bandwidth;
  };

  // One open tunnel as the operator sees it (NodeControl's ListSessions).
  struct TunnelInfo {
    std::string name;  // "tunnel#N"
    std::string peer;  // the client's IP:port
    uint64_t started_unix_ms = 0;
    uint64_t bytes_sent = 0;      // metered (DATA payload) bytes to the client
    uint64_t bytes_received = 0;  // metered bytes from the client
    std::optional<PayeeController::Snapshot> payment;  // paid sessions only
  };

  // Binds and listens on `listen` (throws boost::system::system_error when it cannot).
  ExitServer(asio::io_context& io, const tcp::endpoint& listen, const X25519KeyPair& static_key,
             ExitPolicy policy, Options options);

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  void Start();
  // Stops accepting and closes every tunnel (CLOSE kShutdown); `on_idle`, if given, runs on
  // the io thread once the last tunnel has closed (at once when there is none).
  void Stop(std::function<void()> on_idle = nullptr);
  // Ends every open tunnel with CLOSE `reason` carrying `why` (e.g. a data cap reached); the
  // server goes on accepting.
  void CloseAll(CloseReason reason, const std::string& why);
  // Stops accepting; open tunnels go on (a graceful shutdown's first step).
  void StopAccepting() {
    error_code ignored;
    acceptor_.close(ignored);
  }
  // After the io_context stopped: lets go of tunnels that did not close in time (their handlers
  // hold the server, so they would keep each other alive). Not on a running io thread.
  void DropTunnels() { tunnels_.clear(); }
  size_t tunnel_count() const { return tunnels_.size(); }
  std::vector<TunnelInfo> Tunnels() const;
  // Metered bytes (both directions) of every tunnel since the server started, open or closed.
  uint64_t metered_bytes_total() const;
  // While `refusal` is set, new tunnels are closed right after the handshake with CLOSE
  // kShutdown carrying its text (e.g. a data cap reached); tunnels already open go on.
  void SetRefusal(std::optional<std::string> refusal) { refusal_ = std::move(refusal); }

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
  struct TunnelEntry {
    std::string peer;
    uint64_t started_unix_ms = 0;
    std::shared_ptr<PayeeController> controller;
  };
  std::unordered_map<std::shared_ptr<TunnelConnection>, TunnelEntry> tunnels_;
  uint64_t closed_metered_bytes_ = 0;  // of tunnels no longer in tunnels_
  std::optional<std::string> refusal_;
  std::function<void()> on_idle_;  // set by Stop()
  uint64_t next_tunnel_ = 1;
};

}  // namespace dvpn::tunnel::session
