#pragma once
// dvpnctl's commands that talk to a daemon instead of the ledger: `offers` (a dvpn-node's
// OfferBook, best first), `earnings` (a seller node's NodeControl), and `connect`,
// `disconnect`, `status` (a dvpn-client's ClientControl). Used by dvpnctl's main;
// docs/dvpnctl.md, "Node and client commands".

#include <cstdint>
#include <string>

#include "common/amount.h"
#include "ctl/cli.h"

namespace dvpn::ctl {

struct OffersQuery {
  std::string max_price;  // credits per MB; empty: any
  std::string region;     // empty: any
  bool full_tunnel = false;  // only offers that serve full-tunnel mode
  uint32_t limit = 20;
};

// Lists the offers the node at `node` (HOST:PORT of its gRPC port) knows, best first.
CliResult<void> ListOffers(const Options& options, const std::string& node,
                           const OffersQuery& query);
// A seller node's earnings: settled, unsettled, lost, settlement counts, channels.
CliResult<void> ShowEarnings(const Options& options, const std::string& node);

struct ConnectArgs {
  std::string max_price;  // credits per MB; empty: the client's default
  std::string region;
  std::string provider;   // dv... address
  uint32_t wait_s = 15;
  bool full_tunnel = false;  // every packet of the machine through the exit
};

// Asks the dvpn-client at `client` to connect under `args` and prints the outcome; a
// connection that did not come up is exit code 1 with its error.
CliResult<void> Connect(const Options& options, const std::string& client, const ConnectArgs& args);
CliResult<void> Disconnect(const Options& options, const std::string& client);
// The client's status; with `watch_s` > 0 one line per second for that many seconds (0: once)
// showing the throughput and the credits spent while connected.
// With `check`: exit kRefused unless the client is connected with its SOCKS port open.
CliResult<void> ClientStatus(const Options& options, const std::string& client, uint32_t watch_s,
                             bool check);

}  // namespace dvpn::ctl
