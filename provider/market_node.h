#pragma once
// The marketplace node of dvpn-node (docs/marketplace.md, docs/node-cli.md): gossip of signed
// offers with its peers over TCP (GossipTransport), the offer book served to local clients over
// gRPC (dvpn.v1.OfferBook) and, in provider mode (--price-per-mb), the provider's own offer:
// published at start, re-published before it expires, retired at shutdown. The node's flags
// are node_flags.h; the seller's node (--config) is seller_node.h.
//
// Threading: RunMarketNode runs on the main thread, which receives the signals; the transport
// and the gRPC server run threads of their own.

#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

#include "marketplace/gossip_transport.h"
#include "marketplace/rpc/offer_book_service.h"
#include "payments/keys.h"
#include "provider/advertiser.h"

namespace dvpn::node {

// What the marketplace node runs with, every value checked (ValidateMarketNodeFlags).
// What the node runs with, every value checked.
struct MarketNodeSettings {
  marketplace::GossipConfig gossip;
  marketplace::GossipTransportOptions transport;
  marketplace::rpc::OfferBookServerOptions grpc;
  std::string port_file;
  std::string grpc_port_file;
  // Provider mode only.
  std::optional<OfferTemplate> offer;
  std::optional<OfferAdvertiser::EndpointSource> endpoint_source;  // names given
  std::optional<payments::PrivateKey> key;
  std::chrono::seconds refresh{0};
  std::chrono::milliseconds retire_linger{0};
};

// Runs the node until SIGINT or SIGTERM in `signals` (blocked in every thread). Returns the
// process's exit code: 0 after a clean shutdown, cli::kExitRuntime when it cannot listen or
// write a port file, or the node refused our own offer (the line is on stderr).
int RunMarketNode(MarketNodeSettings& s, const sigset_t& signals);

}  // namespace dvpn::node
