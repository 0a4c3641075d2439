#pragma once
// ExitServer: the provider's tunnel endpoint. Accepts TCP connections, rate-limits handshakes
// per source (before reading a byte), reads msg1 with a size limit and a timeout, checks mac1
// (no DH for strangers), answers with msg2, then serves the tunnel's streams: each OPEN is
// resolved (domain names, with a timeout), every address is decided by the ExitPolicy, the
// first allowed address is connected to (with a timeout) and the client gets OPEN_OK or
// OPEN_FAIL with the matching reason. Destinations are logged only when asked to. The policy
// decides with the host's own addresses (a HostAddressWatcher it owns, kept current) and the
// node's protected ports (its own listen port and Options::protected_ports).
//
// Under attack (docs/tunnel.md, "Handshake rate limit", "Limits"): connections that have not
// finished their handshake are capped (oldest still waiting for msg1 evicted) and must deliver
// msg1 within a short deadline; a tunnel counts against max_tunnels until it is freed; accept
// failures (no descriptors) back off; freed memory is returned to the system (malloc_trim, at
// most once a second); per-tunnel log lines are debug and a summary line goes out at info at
// most once per log_summary_interval.
//
// Threading: single io_context thread; not thread-safe (post to it to read Tunnels() etc.).
// Owned by the caller (shared_ptr); it must outlive the io_context's run.

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
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
#include "tunnel/session/exit_handshake.h"
#include "tunnel/session/exit_packets.h"
#include "tunnel/session/host_addresses.h"
#include "tunnel/session/paid_admission.h"
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
    // Tunnels open at once, closing ones included until they are freed.
    size_t max_tunnels = 4096;
    // Connections accepted whose handshake has not finished; also at most RLIMIT_NOFILE / 16.
    size_t max_pending_handshakes = 128;
    // From accept to a whole msg1 (the rest of the handshake has handshake_timeout).
    std::chrono::milliseconds msg1_timeout{3'000};
    // Identities the replay guard remembers (docs/tunnel.md, "Replay guard").
    size_t replay_capacity = 65536;
    // The info summary line ("N tunnels opened, M closed, ...") at most this often.
    std::chrono::milliseconds log_summary_interval{60'000};
    bool log_destinations = false;
    // Paid sessions (docs/payments.md); null: free sessions (empty msg2 params).
    std::shared_ptr<ExitPayments> payments;
    // The exit-wide bandwidth limit (`[limits] bandwidth_mbps`): one token bucket over the
    // upstream bytes of every tunnel, both directions (docs/tunnel.md, "Bandwidth limit"). When
    // set, it is used instead of connection.bandwidth. Null: no limit. Used on the server's
    // io_context thread only.
    std::shared_ptr<BandwidthLimiter> bandwidth;
    // Ports of the node's own services besides this exit's listen port (always protected):
    // control, dashboard, gossip. Refused on every own address whatever the rules say
    // (docs/tunnel.md, "The exit's own host").
    std::vector<uint16_t> protected_ports;
    // How the host's addresses are kept current.
    HostAddressWatcher::Options host_addresses;
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

  // Binds and listens on `listen` (throws boost::system::system_error when it cannot) and
  // reads the host's addresses (throws std::runtime_error when it cannot: an exit that does not
  // know its own addresses must not serve).
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
  // Tunnel objects alive (open or closing, not yet freed): what max_tunnels limits.
  size_t live_tunnel_count() const { return live_tunnels_; }
  // Connections accepted whose handshake has not finished.
  size_t pending_handshake_count() const { return pending_.size(); }
  // The pending-handshake cap in force (options capped by the open-file limit at Start).
  size_t max_pending_handshakes() const { return max_pending_; }
  std::vector<TunnelInfo> Tunnels() const;
  // Metered bytes (both directions) of every tunnel since the server started, open or closed.
  uint64_t metered_bytes_total() const;
  // While `refusal` is set, new tunnels are closed right after the handshake with CLOSE
  // kShutdown carrying its text (e.g. a data cap reached); tunnels already open go on.
  void SetRefusal(std::optional<std::string> refusal) { refusal_ = std::move(refusal); }
  // Serves full-tunnel mode (docs/full-tunnel.md "The exit"): creates the TUN device, the NAT
  // table and the UDP socket (ExitPackets::Start's errors: privileges, names, the port), and from
  // then on answers every tunnel's PACKET_SETUP. Call before Start, on the io thread.
  Result<void, ExitPacketsErrc> EnablePackets(ExitPacketsOptions options);
  // Null unless EnablePackets succeeded.
  const std::shared_ptr<ExitPackets>& packets() const { return packets_; }
  // Adds ports of the node's services bound after the exit (io thread); see
  // Options::protected_ports.
  void ProtectPorts(const std::vector<uint16_t>& ports);
  // The host as the policy sees it now (io thread): the watcher's addresses, protected ports.
  const OwnHost& own_host();

 private:
  // A connection whose handshake has not finished; owned by its Handshake coroutine, listed in
  // pending_ (oldest first) until it ends or is evicted.
  struct PendingConn {
    explicit PendingConn(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    bool awaiting_msg1 = true;
    bool listed = false;
    std::list<std::shared_ptr<PendingConn>>::iterator pos;
  };
  // What the summary line reports (since the last one).
  struct Counters {
    uint64_t opened = 0;
    uint64_t closed = 0;
    uint64_t refused = 0;         // closed right after the handshake (payment, refusal_)
    uint64_t failed = 0;          // handshakes that ended before a tunnel existed
    uint64_t rate_limited = 0;    // dropped by the per-source limit
    uint64_t pending_capped = 0;  // evicted or dropped by the pending cap
    uint64_t tunnel_limit = 0;    // dropped by max_tunnels
    uint64_t accept_failed = 0;
  };

  asio::awaitable<void> AcceptLoop();
  // The handshake (ExitHandshake), paid admission between msg1 and msg2 when the exit is paid
  // (PaidAdmission), then OpenTunnel.
  asio::awaitable<void> Handshake(std::shared_ptr<PendingConn> conn);
  // Makes and starts the tunnel of a finished handshake; with `admission`, its payment
  // controller (or CLOSE kPaymentRequired for a refused client).
  void OpenTunnel(tcp::socket socket, const SessionKeys& keys, const ClientHello& hello,
                  PaidAdmission* admission, std::chrono::steady_clock::time_point msg2_sent);
  // Closes the oldest pending connection still waiting for msg1; false when there is none.
  bool EvictOldestPending();
  void Unlist(PendingConn& conn);
  void Count(uint64_t Counters::*field);
  void WriteSummary();
  void OnTunnelFreed();
  asio::awaitable<void> ServeOpen(std::shared_ptr<TunnelConnection> tunnel, uint32_t id,
                                  Destination destination);

  tcp::acceptor acceptor_;
  X25519KeyPair static_key_;
  ExitPolicy policy_;
  std::shared_ptr<ExitPackets> packets_;
  Options options_;
  std::shared_ptr<HostAddressWatcher> host_watcher_;
  uint64_t host_generation_ = 0;  // of the watcher's list copied into own_host_
  OwnHost own_host_;
  SystemClock clock_;
  ReplayGuard replay_guard_;
  HandshakeRateLimiter rate_limiter_;
  size_t max_pending_;
  std::list<std::shared_ptr<PendingConn>> pending_;
  size_t live_tunnels_ = 0;
  size_t msg2_in_flight_ = 0;  // handshakes past the tunnel-limit check, tunnel not made yet
  Counters counters_;
  asio::steady_timer summary_timer_;
  bool summary_armed_ = false;
  std::chrono::steady_clock::time_point last_summary_;
  asio::steady_timer trim_timer_;
  bool trim_armed_ = false;
  uint64_t freed_since_trim_ = 0;
  bool stopped_ = false;
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
