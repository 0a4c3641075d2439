// dvpn-node: a marketplace node (docs/marketplace.md). It gossips signed offers with its peers
// over TCP (GossipTransport), serves its offer book to local clients over gRPC
// (dvpn.v1.OfferBook), and, in provider mode (--price-per-mb), advertises the provider's own
// offer: published at start, re-published before it expires, retired at shutdown.
// Wiring only: flags -> settings -> RunMarketNode (provider/market_node.h), or --config ->
// RunSellerNode (provider/seller_node.h).
// Flags, examples and exit codes: docs/node-cli.md.
//
// Exit codes: 0 clean shutdown (SIGINT/SIGTERM); 2 refused to start (bad flag or value, key,
// offer fields); 1 runtime failure (cannot listen, cannot write a port file, the node refused
// our own offer).

#include <signal.h>

#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/program.h"
#include "provider/config.h"
#include "provider/market_node.h"
#include "provider/node_flags.h"
#include "provider/seller_node.h"

namespace {

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-node", message); }

}  // namespace

int main(int argc, char** argv) {
  dvpn::node::MarketNodeFlags flags;
  CLI::App app{
      "dvpn-node: a dVPN provider's daemon (--config: tunnel exit, payments, settlement, offer, "
      "control service and dashboard) or a marketplace node (flags: gossip of signed offers, "
      "gRPC OfferBook)"};
  std::string config_path;
  std::vector<std::string> overrides;
  std::string ports_file;
  app.add_option("--config", config_path,
                 "seller mode: the node's TOML file (docs/node.md); the flags below are then "
                 "refused except --set and --ports-file");
  app.add_option("--set", overrides,
                 "seller mode: override a file key, TABLE.KEY=VALUE (repeatable), e.g. "
                 "--set offer.price_per_mb=0.3");
  app.add_option("--ports-file", ports_file,
                 "seller mode: write the bound ports (gossip, tunnel, control, http) to this file");
  app.set_version_flag("--version", "dvpn-node " DVPN_VERSION);
  dvpn::node::AddMarketNodeFlags(app, flags);
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;

  // Block the shutdown signals before any thread starts, so every thread inherits the mask and
  // only the main thread's sigtimedwait receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);

  if (!config_path.empty()) {
    for (const CLI::Option* o : app.get_options()) {
      const std::string name = o->get_name();
      if (o->count() > 0 && name != "--config" && name != "--set" && name != "--ports-file") {
        return Refuse(name +
                      " cannot be combined with --config (write it in the file, or use "
                      "--set TABLE.KEY=VALUE)");
      }
    }
    auto config = dvpn::node::LoadNodeConfig(config_path, overrides);
    if (!config) return Refuse(config.error().message);
    (void)dvpn::cli::StartLogging(config->log_level);  // the config checked the level
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    try {
      return dvpn::node::RunSellerNode(*config, {.ports_file = ports_file}, signals);
    } catch (const std::exception& e) {
      return dvpn::cli::Fail("dvpn-node", e.what());
    }
  }
  if (!overrides.empty() || !ports_file.empty()) {
    return Refuse("--set and --ports-file need --config (seller mode)");
  }
  if (flags.ledger_id.empty()) return Refuse("--ledger-id is required (or give --config)");
  if (auto ok = dvpn::cli::StartLogging(flags.log_level); !ok) return Refuse(ok.error().message);
  auto settings = dvpn::node::ValidateMarketNodeFlags(flags);
  if (!settings) return Refuse(settings.error().message);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    return dvpn::node::RunMarketNode(*settings, signals);
  } catch (const std::exception& e) {
    return dvpn::cli::Fail("dvpn-node", e.what());
  }
}
