#pragma once
// ClientDaemon: dvpn-client put together (docs/client.md): the ledger client, the offers (a
// node's OfferBook, or a light gossip node of its own that only dials out, with a local
// OfferBook), the ClientController that starts a ClientRuntime on each Connect with a fresh
// configuration sharing the wallet and the spend state, and dvpn.v1.ClientControl on loopback.
// The executable's main checks the flags into a ClientDaemonConfig and waits for the signals.
//
// Thread-safety: Start, ConnectAtStart and Stop from the main thread; the controller and the
// gRPC service run threads of their own. Ownership: the daemon owns everything it starts; the
// wallet key is borrowed and must outlive it.

#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/client_control.h"
#include "client/errc.h"
#include "common/amount.h"
#include "common/host_port.h"
#include "marketplace/offer.h"
#include "payments/keys.h"
#include "tunnel/session/client.h"
#include "tunnel/session/paid_client.h"
#include "tunnel/session/packet_offloads.h"

namespace dvpn::client {

struct ClientDaemonConfig {
  const payments::PrivateKey* wallet = nullptr;
  std::string ledger;  // the ledger's gRPC HOST:PORT
  // The offers: gossip from these peers, or else the OfferBook at `offers_from`.
  std::vector<marketplace::Endpoint> bootstrap;
  std::string offers_from;
  ConnectPolicy defaults;
  tunnel::session::ClientPaymentConfig pay;  // caps and spend state; identity and ledger set here
  Amount open_deposit;                       // zero: no channel is opened
  std::string provider_stats;                // SQLite file; empty: kept in memory
  tunnel::session::tcp::endpoint socks;
  std::string socks_port_file;
  std::optional<tunnel::session::SocksCredentials> credentials;
  HostPort control;            // loopback, when control_socket is empty
  std::string control_socket;  // a Unix socket path (mode 0660: owner and group) instead
  std::string control_port_file;
  // Full-tunnel mode (docs/full-tunnel.md): the TUN device and whether UDP may carry packets
  // (false: the TCP fallback, forced). The mode itself is ConnectPolicy::full_tunnel.
  std::string tun_device = "dvpn0";
  bool full_tunnel_udp = true;
  tunnel::session::PacketOffloads packet_offloads;  // --packet-offloads
};

class ClientDaemon {
 public:
  // Reads the ledger's id, starts the offers source and the ClientControl service. Error: the
  // line for the user (the ledger cannot be reached, a port cannot be bound or written).
  static Result<std::unique_ptr<ClientDaemon>, Errc> Start(ClientDaemonConfig config);
  ~ClientDaemon();  // Stop()
  ClientDaemon(const ClientDaemon&) = delete;
  ClientDaemon& operator=(const ClientDaemon&) = delete;

  // --connect: waits for the gossip node to know the offers (at most 10 s), then connects with
  // the default policy and waits up to 15 s for the tunnel; the controller keeps trying after.
  // Error: the runtime's configuration could not be built.
  Result<void, Errc> ConnectAtStart();

  // Disconnects and stops the service and the offers source. Idempotent.
  void Stop();

 private:
  struct State;
  explicit ClientDaemon(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace dvpn::client
