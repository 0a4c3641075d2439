#pragma once
// dvpn-client's command line (docs/client.md): the flags as typed, their table for CLI11, and
// the check that turns them into a ClientDaemonConfig (client_daemon.h). The wallet is loaded
// by the executable (its passphrase) and set in the config.

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/client_daemon.h"
#include "client/errc.h"

namespace dvpn::client {

struct ClientDaemonFlags {
  std::string keystore;
  std::string passphrase_file;
  std::string ledger;
  std::vector<std::string> bootstrap;
  std::string offers_from;
  std::string max_price_per_mb;
  std::string region;
  std::string provider;
  std::string socks = "127.0.0.1:1080";
  std::string socks_port_file;
  std::string socks_user;
  std::string socks_password_file;
  std::string session_cap;
  std::string daily_cap;
  std::string spend_file;
  std::string open_deposit;
  std::string provider_stats;
  std::string control = "127.0.0.1:7700";
  std::string control_port_file;
  bool connect = false;
  bool full_tunnel = false;
  std::string tun_device = "dvpn0";
  std::string full_tunnel_transport = "auto";
  std::string packet_offloads = "auto";
  std::string log_level = "info";
};

// Adds dvpn-client's flags (all but --version) to `app`, bound to `f`.
void AddClientDaemonFlags(CLI::App& app, ClientDaemonFlags& f);

// Checks every flag (prices, region, provider, control and SOCKS addresses, caps, the spend
// file, SOCKS credentials) and builds the configuration, `wallet` unset. Error: the line for
// the user, naming the flag (kBadConfig).
Result<ClientDaemonConfig, Errc> ClientDaemonConfigFromFlags(const ClientDaemonFlags& f);

}  // namespace dvpn::client
