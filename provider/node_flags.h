#pragma once
// dvpn-node's flags for the marketplace node (docs/node-cli.md): the flags as typed, their
// table for CLI11, and the check that turns them into MarketNodeSettings (market_node.h).
// The seller's node reads its TOML file instead (config.h).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "provider/errc.h"
#include "provider/market_node.h"

namespace dvpn::node {

// The flags as typed.
struct MarketNodeFlags {
  std::string ledger_id;
  std::string gossip_listen = "127.0.0.1:0";
  uint32_t advertise_port = 0;
  std::vector<std::string> bootstrap;
  std::string grpc_listen = "127.0.0.1:0";
  std::string port_file;
  std::string grpc_port_file;
  std::string log_level = "info";
  std::optional<uint64_t> seed;
  uint32_t round_ms = 1000;
  uint32_t anti_entropy_ms = 30000;
  uint32_t hello_timeout_ms = 5000;
  // Provider mode.
  std::string price_per_mb;
  std::string price_per_minute;
  std::string keystore;
  std::string identity_key_hex;  // refused: see cli::kIdentityKeyHexRemoved
  std::string identity_key_file;
  std::string tunnel_key;
  std::vector<std::string> endpoints;
  std::string region;
  uint32_t capacity_mbps = 100;
  uint32_t max_sessions = 64;
  uint32_t offer_id = 1;
  uint64_t offer_lifetime_s = 3600;
  std::optional<uint64_t> refresh_s;
  uint32_t retire_linger_ms = 2000;
  bool full_tunnel = false;  // advertise full-tunnel mode besides SOCKS
};

// Adds the marketplace node's flags to `app`, bound to `f`.
void AddMarketNodeFlags(CLI::App& app, MarketNodeFlags& f);

// Checks every flag and builds the settings; in provider mode loads the provider key. Error:
// the line for the user, naming the flag.
Result<MarketNodeSettings, Errc> ValidateMarketNodeFlags(const MarketNodeFlags& f);

}  // namespace dvpn::node
