#pragma once
// ClientRuntime: one running client connection (the body of dvpn-tunnel-client, and what
// dvpn-client starts on Connect), built on a path of hops (client/path.h; one hop today). Each
// hop has its provider (fixed, or chosen by an OfferPicker of its own), its TunnelKeeper
// (handshake, reconnects, failover) and its payment session (PayerController: terms check,
// promises, spend caps, top-ups). The SOCKS5 front end feeds the first hop; it starts once every
// hop's first tunnel is up. Everything runs on an io thread of its own.
//
// It ends by itself when a hop's keeper gives up, a spend cap is reached or a provider's terms
// are refused (with a fixed provider; with offers the hop's picker moves on), or on Stop().
//
// Thread-safety: public methods may be called from any thread. Ownership: the runtime owns
// everything in its config (the identity is borrowed and must outlive it).

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/amount.h"
#include "ledger/rpc/ledger_client.h"
#include "marketplace/provider_stats.h"
#include "client/escrow_top_up.h"
#include "client/offer_picker.h"
#include "client/path.h"
#include "tunnel/session/client.h"
#include "tunnel/session/client_packets.h"
#include "tunnel/session/paid_client.h"

namespace dvpn::tunnel_client {

// Exit codes of dvpn-tunnel-client (docs/tunnel-cli.md), also the runtime's outcome.
inline constexpr int kClientOk = 0;
inline constexpr int kClientRuntimeFailure = 1;
inline constexpr int kClientSpendCap = 3;
inline constexpr int kClientPaymentRefused = 4;

struct ClientRuntimeConfig {
  // How many hops (Start refuses a path this build cannot chain: more than one hop today).
  PathSpec path;
  // Where the hop goes: a fixed exit (provider + key), or the offers of a node (picker set).
  std::optional<tunnel::session::tcp::endpoint> provider;
  Hash32 provider_key{};
  std::optional<OfferPicker::Options> picker;  // with `stats`
  std::unique_ptr<marketplace::ProviderStats> stats;

  tunnel::session::tcp::endpoint socks;
  std::string socks_port_file;  // written once the SOCKS server listens
  tunnel::session::SocksFrontend::Options frontend;
  tunnel::session::ClientPaymentConfig pay;  // identity, ledger, channel, policy, spend state
  std::shared_ptr<ledger::rpc::LedgerClient> ledger_client;  // top-ups (optional)
  tunnel::session::TunnelKeeper::Options keeper;  // timeouts and backoff; the rest is set here
  // Full-tunnel mode (docs/full-tunnel.md): the TUN device, routes and packet sessions. Start
  // fails (kBadConfig) when the device cannot be created (CAP_NET_ADMIN, /dev/net/tun).
  std::optional<tunnel::session::ClientPacketsOptions> full_tunnel;
};

enum class ClientState { kConnecting, kConnected, kReconnecting, kStopped, kFailed };
const char* ClientStateName(ClientState state);

// One hop of the path.
struct HopStatus {
  // kConnecting until its first tunnel is up, then kConnected while a tunnel is up and
  // kReconnecting between tunnels; the path's kStopped / kFailed once the runtime ended.
  ClientState state = ClientState::kConnecting;
  std::string provider_address;   // the payee's account, when known
  std::string provider_endpoint;  // HOST:PORT of the hop's provider
  Amount price_per_mb;            // of the offer chosen (offers mode)
  uint64_t bytes_sent = 0;        // metered bytes of the hop's current tunnel
  uint64_t bytes_received = 0;
  Amount spent;                   // signed to this hop's provider by this runtime (every session)
  uint64_t reconnects = 0;
};

// The path's totals (the fields dvpn-client reports), then each hop.
struct ClientStatus {
  ClientState state = ClientState::kConnecting;
  std::string provider_address;  // the exit's (last hop's) payee account, when known
  std::string provider_endpoint;  // HOST:PORT of the exit in use
  Amount price_per_mb;            // of the offers chosen, summed over the hops (offers mode)
  uint16_t socks_port = 0;        // 0 until the SOCKS server listens
  uint64_t bytes_sent = 0;        // metered bytes of the first hop's current tunnel (the SOCKS
  uint64_t bytes_received = 0;    // traffic); with one hop, to the exit
  Amount spent_today;             // signed today by this process (and the spend file)
  Amount spent_since_start;
  uint64_t reconnects = 0;        // summed over the hops
  std::string last_error;
  std::vector<HopStatus> hops;    // in path order: [0] is fed by SOCKS, back() is the exit
  bool full_tunnel = false;       // the mode: full tunnel, else SOCKS only
  tunnel::session::ClientPacketsStatus packets;  // full tunnel: addresses, transport, counters
};

class ClientRuntime {
 public:
  // Starts the io thread and the first connection. Fails only on a local problem (kBadConfig: a
  // path this build cannot chain, CheckPathSpec's message "multi-hop is not built yet"; a top-up
  // without a ledger; EscrowTopUp::Start's errors); connection failures show in Status() and in
  // the outcome.
  static Result<std::unique_ptr<ClientRuntime>, client::Errc> Start(ClientRuntimeConfig config);
  ~ClientRuntime();  // Stop()

  ClientStatus Status();
  // The state alone, without asking the io thread (cheap; a tunnel lost a moment ago may still
  // read kConnected until the next Status()).
  ClientState state() const;
  // True once the runtime ended (by itself or by Stop); ExitCode() is then final.
  bool Finished() const;
  int ExitCode() const;
  // Closes the tunnel (CLOSE goes out within 1 s), stops the SOCKS server, joins. Idempotent.
  void Stop();

 private:
  struct Hop;
  struct State;
  explicit ClientRuntime(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
  std::thread io_thread_;
};

}  // namespace dvpn::tunnel_client
