#pragma once
// dvpn-tunnel-client's command line (docs/tunnel-cli.md): the flags as typed, their table for
// CLI11, and what they make: the ClientRuntimeConfig (client_runtime.h) with the payment
// identity and the clock it borrows.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <spdlog/logger.h>
#include <CLI/CLI.hpp>

#include "client/client_runtime.h"
#include "client/errc.h"
#include "common/clock.h"
#include "payments/keys.h"

namespace dvpn::client {

struct TunnelClientFlags {
  std::string provider;
  std::string provider_key_hex;
  std::string offers_from;
  std::string region;
  uint32_t min_capacity_mbps = 0;
  std::string provider_stats_path;
  std::string open_deposit_text;
  std::string socks = "127.0.0.1:1080";
  std::string socks_port_file;
  std::string socks_user;
  std::string socks_password_file;
  bool socks_fast_reply = false;
  std::string identity_hex;  // refused: see cli::kIdentityKeyHexRemoved
  std::string identity_key_file;
  std::string keystore_path;
  std::string channel_hex;
  std::string ledger_hex;
  std::string ledger_target;
  unsigned handshake_timeout_ms = 10'000;
  std::optional<uint64_t> max_reconnects;  // unlimited when absent
  unsigned reconnect_min_ms = 250;
  unsigned reconnect_max_ms = 30'000;
  // Spend policy (docs/payments.md §5). Amounts are decimal credits.
  std::string max_price_per_mb_text;
  std::string max_price_per_minute_text;
  std::string session_cap_text;
  std::string daily_cap_text;
  uint64_t tolerance_bytes = 65'536;
  std::string spend_file;
  std::string top_up_amount_text;
  std::string top_up_below_text;
  std::string payee_text;
  std::string log_level = "info";
};

// Adds dvpn-tunnel-client's flags to `app`, bound to `f`.
void AddTunnelClientFlags(CLI::App& app, TunnelClientFlags& f);

// What the flags make. The config borrows the identity and the clock held beside it.
struct TunnelClientSetup {
  tunnel_client::ClientRuntimeConfig config;
  std::unique_ptr<payments::PrivateKey> identity;  // random when no key is given (free exits)
  std::unique_ptr<SystemClock> clock = std::make_unique<SystemClock>();
};

// Checks the flags, loads the identity and the SOCKS credentials, reads the ledger's id when
// --ledger is given, opens the spend file (logging today's spending on `log`) and the provider
// stats. Error: the line for the user, naming the flag.
Result<TunnelClientSetup, Errc> MakeTunnelClientSetup(const TunnelClientFlags& f,
                                                      spdlog::logger& log);

}  // namespace dvpn::client
