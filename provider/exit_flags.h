#pragma once
// dvpn-tunnel-exit's command line (docs/tunnel-cli.md): the flags as typed, their table for
// CLI11, and what they make: an ExitSpec (exit_assembly.h) with, for paid sessions, the
// provider key and the ledger gateway it borrows. The executable's main parses, calls these and
// runs the ExitAssembly.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/logger.h>
#include <CLI/CLI.hpp>

#include "payments/keys.h"
#include "provider/errc.h"
#include "provider/exit_assembly.h"
#include "settlement/ledger_gateway_rpc.h"

namespace dvpn::node {

struct ExitFlags {
  std::string listen = "127.0.0.1:7500";
  std::string port_file;
  std::string key_file = "./dvpn-tunnel-exit.key";
  bool print_public_key = false;
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  bool log_destinations = false;
  std::string log_level = "info";
  uint64_t max_tunnels = 0;  // the limits: ExitServer::Options' defaults until AddExitFlags
  uint64_t max_streams = 0;
  uint32_t new_streams_per_second = 0;
  uint32_t new_streams_burst = 0;
  uint32_t handshakes_per_second = 0;
  uint32_t handshake_burst = 0;
  uint64_t max_pending_handshakes = 0;
  uint64_t msg1_timeout_ms = 0;
  uint64_t replay_table_size = 0;
  uint64_t log_summary_interval_ms = 0;
  // Payments (docs/payments.md). Free sessions unless a price is given.
  std::string price_per_mb;
  std::string price_per_minute;
  uint64_t invoice_interval_bytes = payments::kDefaultInvoiceIntervalBytes;
  uint64_t credit_window_bytes = payments::kDefaultCreditWindowBytes;
  uint32_t payment_grace_ms = payments::kDefaultPaymentGraceMs;
  std::string ledger;
  std::string identity_key_hex;  // refused: see cli::kIdentityKeyHexRemoved
  std::string identity_key_file;
  std::string keystore;
  std::string promise_db;
  std::string promise_durability = "process";
  std::string settle_threshold = "1";
  uint64_t settle_max_age_s = 600;
  uint64_t shutdown_settle_timeout_ms = 10'000;
};

// Adds every flag of dvpn-tunnel-exit to `app`, bound to `flags` (whose limits it first sets
// to ExitServer::Options' defaults).
void AddExitFlags(CLI::App& app, ExitFlags& flags);

// What the flags make. The spec borrows the key and the gateway held beside it.
struct ExitSetup {
  ExitSpec spec;
  std::unique_ptr<payments::PrivateKey> provider_key;      // paid sessions only
  std::unique_ptr<ledger::rpc::RpcLedgerGateway> gateway;  // paid sessions only
};

// Checks the flags; for paid sessions loads the provider key, asks the ledger for its id and
// logs the terms on `log`. Error: the line for the user, naming the flag.
Result<ExitSetup, Errc> MakeExitSetup(const ExitFlags& flags, spdlog::logger& log);

}  // namespace dvpn::node
