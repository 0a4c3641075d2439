#pragma once
// dvpn-node in seller mode (`--config FILE`, docs/node.md): the provider's whole daemon in one
// process. It loads the keystore, connects to the ledger, starts the gossip node, the exit with
// payments (Seller), the offer advertiser, the gRPC server (NodeControl and OfferBook) and the
// dashboard, then waits for SIGINT/SIGTERM and shuts down in the order of docs/node.md §5.

#include <signal.h>

#include <string>

#include "provider/config.h"

namespace dvpn::node {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;  // cannot listen, ledger unreachable, offer refused
inline constexpr int kExitConfig = 2;   // bad configuration, keystore, passphrase

struct SellerRunOptions {
  // When set, written once everything listens: "gossip=P\ntunnel=P\ncontrol=P\nhttp=P\n"
  // (atomically; for tests and scripts that use port 0).
  std::string ports_file;
};

// Runs until one of `signals` (blocked in every thread) arrives. Returns the exit code; the
// reason for a non-zero one is printed to stderr as one line.
int RunSellerNode(const NodeConfig& config, const SellerRunOptions& options,
                  const sigset_t& signals);

}  // namespace dvpn::node
