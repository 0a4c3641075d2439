#pragma once
// Client side of the tunnel:
// - ConnectTunnel: TCP connect + handshake initiator, bounded by a timeout.
// - TunnelSlot: holds the client's current tunnel (or none); what the SOCKS front end asks for
//   a tunnel when a request arrives.
// - TunnelKeeper: keeps a tunnel in a TunnelSlot: connects, and when the tunnel is lost (exit
//   gone, network error, idle timeout) reconnects with exponential backoff and jitter, a fresh
//   handshake timestamp each attempt.
// - SocksFrontend: a SOCKS5 server on a local address whose CONNECTs become streams of the
//   slot's current tunnel (domain names are passed to the exit unresolved); optional RFC 1929
//   username/password authentication.
//
// Threading: single io_context thread; nothing here is thread-safe. Objects are held by
// shared_ptr; their coroutines hold a shared_ptr to them, so they stay alive until their loops
// end (or the io_context is destroyed).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "common/bytes.h"
#include "common/result.h"
#include "payments/signed_messages.h"
#include "tunnel/handshake.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/tunnel_connection.h"
#include "tunnel/socks5.h"

namespace dvpn::tunnel::session {

// Why a client's tunnel was not established.
enum class ConnectErrc {
  kConnect,     // no TCP connection to the exit
  kTimeout,     // the connect or the handshake did not finish within the timeout
  kHandshake,   // the exit closed the handshake, or its answer did not authenticate
  kNoProvider,  // the picker has no provider to offer (or the keeper stopped while it looked)
};

// Connects to the exit at `provider`, runs the handshake (msg1, msg2) within `timeout` and
// returns the tunnel, not yet started (call Start on it). The error says what failed, e.g. a
// wrong provider key shows as the exit closing the connection or msg2 failing to authenticate.
asio::awaitable<Result<std::shared_ptr<TunnelConnection>, ConnectErrc>> ConnectTunnel(
    tcp::endpoint provider, HandshakeInitiator::Options handshake, ConnectionOptions options,
    std::chrono::milliseconds timeout);

// The client's current tunnel, replaced when the keeper reconnects. current() is null while no
// usable tunnel exists (not yet connected, lost, or closing).
class TunnelSlot {
 public:
  std::shared_ptr<TunnelConnection> current() const {
    return tunnel_ && !tunnel_->closed() ? tunnel_ : nullptr;
  }
  void Set(std::shared_ptr<TunnelConnection> tunnel) { tunnel_ = std::move(tunnel); }
  void Clear() { tunnel_.reset(); }

 private:
  std::shared_ptr<TunnelConnection> tunnel_;
};

// The delay before reconnect attempt `attempt` (1-based) of an outage: initial * 2^(attempt-1)
// capped at `max`, then "equal jitter": a uniformly random value in [delay/2, delay]. Pure
// (given the generator); exposed for tests.
std::chrono::milliseconds ReconnectDelay(uint32_t attempt, std::chrono::milliseconds initial,
                                         std::chrono::milliseconds max, std::mt19937_64& rng);

// One provider to connect to.
struct ProviderTarget {
  tcp::endpoint endpoint;
  Key32 provider_static{};            // its tunnel's X25519 key
  payments::ChannelId channel{};      // zeros: a free session
  std::string name;                   // for logs
};

enum class ProviderFailure {
  kConnect,     // no connection, or the handshake failed
  kRefused,     // the provider's terms or its session were refused (or it refused ours)
  kOvercharge,  // it invoiced more than the client's own meter allows
};

// Chooses the provider of each connection attempt (docs/marketplace.md §3: the best offer under
// the client's policy, the next one after a failure). Next() may block (it may ask a node or a
// ledger): the keeper calls it on a helper thread, one call at a time. Failed and Connected are
// called on the keeper's io thread. Implementations synchronise themselves.
class ProviderPicker {
 public:
  virtual ~ProviderPicker() = default;
  // The provider to use now: the last one until it failed, then the next best. kNoProvider
  // (and why) when none is left.
  virtual Result<ProviderTarget, ConnectErrc> Next() = 0;
  virtual void Failed(const ProviderTarget& target, ProviderFailure failure,
                      const std::string& why) = 0;
  virtual void Connected(const ProviderTarget& target, std::chrono::milliseconds handshake) = 0;
};

class TunnelKeeper : public std::enable_shared_from_this<TunnelKeeper> {
 public:
  struct Options {
    tcp::endpoint provider;  // unless `picker` is set
    // Handshake parameters; timestamp_ms is replaced on every attempt by
    // max(now_ms, last_used + 1) (the exit's replay guard refuses an old timestamp).
    // `identity` is not owned and must outlive the keeper.
    HandshakeInitiator::Options handshake;
    ConnectionOptions connection;
    std::chrono::milliseconds handshake_timeout{10'000};
    // Reconnect backoff: the delay doubles from `initial_backoff` to `max_backoff`, with jitter.
    std::chrono::milliseconds initial_backoff{250};
    std::chrono::milliseconds max_backoff{30'000};
    // Attempts per outage before giving up; nullopt = unlimited; 0 = a lost tunnel is final.
    // The count starts again after every successful reconnect.
    std::optional<uint64_t> max_reconnects;
    // A tunnel that lived at least this long resets the backoff delay; one that dies sooner
    // (an exit that accepts and drops us at once) keeps it growing.
    std::chrono::milliseconds stable_after{10'000};
    // Called on every new tunnel right after it started (the payment layer attaches here, and
    // may Close the tunnel and call Halt). Optional.
    std::function<void(const std::shared_ptr<TunnelConnection>&)> on_tunnel;
    // When set, every connection attempt goes to picker->Next() (provider, its key and the
    // channel replace `provider`, handshake.provider_static and handshake.channel); a failed
    // attempt moves to the next provider at once, and the first connection fails only when no
    // provider is left. `on_target` (optional) learns each target before it is tried.
    std::shared_ptr<ProviderPicker> picker;
    std::function<void(const ProviderTarget&)> on_target;
  };
  // The first tunnel is up (called once).
  using UpHandler = std::function<void()>;
  // The keeper stopped for good: the first connection failed, or a tunnel was lost and the
  // reconnect attempts ran out. `why` is a one-line explanation. Not called after Stop().
  using GaveUpHandler = std::function<void(const std::string& why)>;

  TunnelKeeper(asio::any_io_executor ex, std::shared_ptr<TunnelSlot> slot, Options options);

  // Connects the first tunnel (a failure there is final: the provider or key is wrong).
  void Start(UpHandler on_up, GaveUpHandler on_gave_up);
  // Stops reconnecting and closes the current tunnel (CLOSE frame). `on_stopped` runs once the
  // tunnel's socket is closed (at once when there is none); the close is bounded by the
  // connection's own flush timeout.
  void Stop(std::function<void()> on_stopped = nullptr);

  // Stops for good without reconnecting (e.g. a spending cap was reached): the current tunnel
  // is left to whoever closed it; the GaveUpHandler runs with `why` (not after Stop()).
  void Halt(const std::string& why);

  // With a picker: the current provider failed (e.g. it overcharged); the keeper moves to the
  // next one when the current tunnel closes. Without a picker: nothing.
  void ProviderFailed(ProviderFailure failure, const std::string& why);

  bool up() const { return slot_->current() != nullptr; }
  uint64_t reconnects() const { return reconnects_; }  // successful reconnects so far

 private:
  asio::awaitable<void> Run();
  asio::awaitable<Result<std::shared_ptr<TunnelConnection>, ConnectErrc>> Connect();
  asio::awaitable<Result<ProviderTarget, ConnectErrc>> PickTarget();
  std::string ProviderText() const;

  asio::any_io_executor ex_;
  std::shared_ptr<TunnelSlot> slot_;
  Options options_;
  asio::steady_timer wake_;  // backoff sleep and "tunnel closed" signal
  std::mt19937_64 rng_;
  UpHandler on_up_;
  GaveUpHandler on_gave_up_;
  std::function<void()> on_stopped_;
  std::shared_ptr<TunnelConnection> tunnel_;  // the tunnel being watched (also while closing)
  bool tunnel_closed_ = false;
  bool stopped_ = false;
  uint64_t last_timestamp_ms_ = 0;
  uint64_t reconnects_ = 0;
  std::optional<ProviderTarget> target_;  // with a picker: the provider of the last attempt
  bool no_provider_left_ = false;
};

// RFC 1929 credentials for the SOCKS front end.
struct SocksCredentials {
  std::string user;      // 1..255 bytes
  std::string password;  // 1..255 bytes
};

class SocksFrontend : public std::enable_shared_from_this<SocksFrontend> {
 public:
  struct Options {
    std::chrono::milliseconds negotiation_timeout{30'000};  // greeting..request
    // When set, every client must authenticate with exactly these (RFC 1929, method 02) and
    // method 00 (no authentication) is not offered. Compared in constant time; the frontend
    // keeps only a keyed hash of them (the constructor wipes its copy of the password).
    std::optional<SocksCredentials> credentials;
    // Answer the SOCKS CONNECT at once and send the first bytes with the OPEN (early data,
    // docs/tunnel.md) instead of waiting for the exit's OPEN_OK: one tunnel round trip less per
    // new connection, but a failure at the exit (refused, unreachable, not allowed) reaches the
    // application as a connection reset instead of its SOCKS reply code. Off by default.
    bool fast_reply = false;
  };

  // Binds and listens on `listen` (throws boost::system::system_error when it cannot, and
  // std::invalid_argument for credentials outside 1..255 bytes). Requests are served on
  // slot->current(); when it is null the client gets REP 01 (general failure) at once.
  SocksFrontend(asio::io_context& io, const tcp::endpoint& listen, std::shared_ptr<TunnelSlot> slot,
                Options options);

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  void Start();
  void Stop();

 private:
  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Serve(tcp::socket socket);
  Hash32 CredentialDigest(std::string_view user, std::string_view password) const;
  bool CheckCredentials(std::string_view user, std::string_view password) const;

  tcp::acceptor acceptor_;
  std::shared_ptr<TunnelSlot> slot_;
  std::chrono::milliseconds negotiation_timeout_;
  bool require_auth_ = false;
  bool fast_reply_ = false;
  Key32 digest_key_{};  // random per process
  Hash32 digest_{};     // keyed BLAKE2b of the expected credentials
};

}  // namespace dvpn::tunnel::session
