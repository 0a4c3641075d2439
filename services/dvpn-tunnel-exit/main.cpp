// dvpn-tunnel-exit: a tunnel exit node (the provider side) for tests and manual runs.
// Wiring only: flags -> static key file -> exit policy -> ExitServer on one io_context thread;
// SIGINT/SIGTERM stop it cleanly. With --price-per-mb / --price-per-minute the sessions are
// paid (docs/payments.md): channels are checked on the ledger (--ledger), promises kept in
// --promise-db, and a SettlementScheduler settles them; on SIGTERM it makes a final settlement
// attempt (bounded by --shutdown-settle-timeout-ms) before exiting.
//
// Exit codes: 0 clean shutdown (or --print-public-key); 2 refused to start (bad flag or value
// out of range, key file, rule, payment configuration); 1 cannot listen.


#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/amount.h"
#include "common/bytes.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/port_file.h"
#include "settlement/ledger_gateway_rpc.h"
#include "payments/keys.h"
#include "payments/keystore.h"
#include "settlement/promise_store.h"
#include "settlement/settlement.h"
#include "tunnel/exit_policy.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "cli/cli_util.h"
#include "cli/program.h"
#include "tunnel/session/exit_server.h"

namespace {

using dvpn::cli::kExitRuntime;
using dvpn::cli::kExitConfig;
// Upper bounds of the limit flags (far above what one process can serve; they only keep the
// numbers meaningful).
constexpr uint64_t kMaxCount = 1'000'000;
constexpr uint32_t kMaxRate = 1'000'000;

namespace session = dvpn::tunnel::session;
namespace cli = dvpn::cli;

constexpr std::chrono::milliseconds kShutdownGrace{2'000};

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-tunnel-exit", message); }

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:7500";
  std::string port_file;
  std::string key_file = "./dvpn-tunnel-exit.key";
  bool print_public_key = false;
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  bool log_destinations = false;
  std::string log_level = "info";
  const session::ExitServer::Options defaults{};
  uint64_t max_tunnels = defaults.max_tunnels;
  uint64_t max_streams = defaults.connection.table.max_streams;
  uint32_t new_streams_per_second = defaults.connection.table.new_streams_per_second;
  uint32_t new_streams_burst = defaults.connection.table.new_streams_burst;
  uint32_t handshakes_per_second = defaults.rate_limit.per_second;
  uint32_t handshake_burst = defaults.rate_limit.burst;
  uint64_t max_pending_handshakes = defaults.max_pending_handshakes;
  uint64_t msg1_timeout_ms = static_cast<uint64_t>(defaults.msg1_timeout.count());
  uint64_t replay_table_size = defaults.replay_capacity;
  uint64_t log_summary_interval_ms = static_cast<uint64_t>(defaults.log_summary_interval.count());

  CLI::App app{"dvpn-tunnel-exit: a dVPN tunnel exit node"};
  app.add_option("--listen", listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--port-file", port_file, "write the bound port to this file once listening");
  app.add_option("--static-key-file", key_file,
                 "hex X25519 secret key (created with mode 0600 when missing)")
      ->capture_default_str();
  app.add_flag("--print-public-key", print_public_key,
               "print the static public key (hex) to stdout and exit");
  app.add_option("--allow", allow,
                 "exit policy allow rule, e.g. 127.0.0.1/32 or [::1]/128:8080 (repeatable; "
                 "deny rules are consulted first, then allow rules, then the defaults)");
  app.add_option("--deny", deny, "exit policy deny rule, e.g. 0.0.0.0/0:25 (repeatable)");
  app.add_flag("--log-destinations", log_destinations,
               "log the destination of every stream (off by default)");
  app.add_option("--max-tunnels", max_tunnels, "most tunnels open at once (1..1000000)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, kMaxCount));
  app.add_option("--max-streams-per-tunnel", max_streams,
                 "most concurrent streams in one tunnel (1..1000000)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, kMaxCount));
  app.add_option("--new-streams-per-second", new_streams_per_second,
                 "streams a tunnel may open per second, sustained (0..1000000; 0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(uint32_t{0}, kMaxRate));
  app.add_option("--new-streams-burst", new_streams_burst,
                 "streams a tunnel may open at once before the per-second rate applies "
                 "(0..1000000; 0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(uint32_t{0}, kMaxRate));
  app.add_option("--handshakes-per-second", handshakes_per_second,
                 "handshakes per second per source address (IPv6: per /64), sustained "
                 "(1..1000000)")
      ->capture_default_str()
      ->check(CLI::Range(uint32_t{1}, kMaxRate));
  app.add_option("--handshake-burst", handshake_burst,
                 "handshakes a source may start at once (1..1000000)")
      ->capture_default_str()
      ->check(CLI::Range(uint32_t{1}, kMaxRate));
  app.add_option("--max-pending-handshakes", max_pending_handshakes,
                 "connections whose handshake has not finished, all sources together; the oldest "
                 "still waiting for msg1 is closed for a new one (1..65536; at most the open-file "
                 "limit / 16)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{65536}));
  app.add_option("--msg1-timeout-ms", msg1_timeout_ms,
                 "a connection must deliver its msg1 this soon after the accept (100..60000)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{100}, uint64_t{60'000}));
  app.add_option("--replay-table-size", replay_table_size,
                 "client identities the replay guard remembers (16..16777216)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{16}, uint64_t{1} << 24));
  app.add_option("--log-summary-interval-ms", log_summary_interval_ms,
                 "at most one info summary line (tunnels opened/closed, handshakes dropped) per "
                 "this interval (100..86400000)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{100}, uint64_t{86'400'000}));
  // Payments (docs/payments.md). Free sessions unless a price is given.
  std::string price_per_mb_text;
  std::string price_per_minute_text;
  uint64_t invoice_interval_bytes = dvpn::payments::kDefaultInvoiceIntervalBytes;
  uint64_t credit_window_bytes = dvpn::payments::kDefaultCreditWindowBytes;
  uint32_t payment_grace_ms = dvpn::payments::kDefaultPaymentGraceMs;
  std::string ledger_target;
  std::string identity_key_hex;  // refused: see kIdentityKeyHexRemoved
  std::string identity_key_file;
  std::string keystore_path;
  std::string promise_db;
  std::string settle_threshold_text = "1";
  uint64_t settle_max_age_s = 600;
  uint64_t shutdown_settle_timeout_ms = 10'000;
  app.add_option("--price-per-mb", price_per_mb_text,
                 "price per 10^6 metered bytes in credits (decimal, e.g. 0.25); enables payments");
  app.add_option("--price-per-minute", price_per_minute_text,
                 "price per minute of session in credits (decimal); enables payments");
  app.add_option("--invoice-interval-bytes", invoice_interval_bytes,
                 "invoice every this many metered bytes (65536..64000000)")
      ->capture_default_str();
  app.add_option("--credit-window-bytes", credit_window_bytes,
                 "unpaid bytes served before pausing (interval..256000000)")
      ->capture_default_str();
  app.add_option("--payment-grace-ms", payment_grace_ms,
                 "paused this long without payment: the session ends (100..600000)")
      ->capture_default_str();
  app.add_option("--ledger", ledger_target, "ledger gRPC HOST:PORT (required with a price)");
  app.add_option("--identity-key-hex", identity_key_hex,
                 "refused: a secret on the command line is readable by every local user");
  app.add_option("--identity-key-file", identity_key_file,
                 "file holding the provider account secret key, 64 hex digits, mode 0600 (or "
                 "$DVPN_IDENTITY_KEY_HEX, or --keystore)");
  app.add_option("--keystore", keystore_path,
                 "provider account keystore file (passphrase from $DVPN_PASSPHRASE)");
  app.add_option("--promise-db", promise_db, "promise store SQLite file (required with a price)");
  std::string promise_durability = "process";
  app.add_option("--promise-durability", promise_durability,
                 "what an accepted promise survives before it is credited: 'process' (a crash or "
                 "kill -9 of the exit) or 'power' (also a power loss: one fsync per commit)")
      ->capture_default_str()
      ->check(CLI::IsMember({"process", "power"}));
  app.add_option("--settle-threshold", settle_threshold_text,
                 "settle when this many credits are unsettled (decimal)")
      ->capture_default_str();
  app.add_option("--settle-max-age-s", settle_max_age_s,
                 "settle a promise at most this many seconds after it arrived")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{86'400 * 30}));
  app.add_option("--shutdown-settle-timeout-ms", shutdown_settle_timeout_ms,
                 "on SIGTERM/SIGINT, the final settlement attempt's deadline")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{600'000}));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;
  if (auto e = dvpn::cli::StartLogging(log_level)) return Refuse(*e);
  if (!identity_key_hex.empty()) return Refuse(dvpn::cli::kIdentityKeyHexRemoved);
  dvpn::tunnel::EnsureSodium();

  auto key = cli::LoadOrCreateTunnelKey(key_file);
  if (!key) return Refuse(key.error().message);
  std::string public_hex = dvpn::ToHex(key->public_key);
  if (print_public_key) {
    std::cout << public_hex << "\n";
    return 0;
  }

  std::vector<std::string> rules = cli::PolicyRules(deny, allow);

  session::asio::io_context io(1);
  auto endpoint = cli::ResolveHostPort(io, listen);
  if (!endpoint) return Refuse("--listen: " + endpoint.error().message);

  std::vector<dvpn::tunnel::IpAddress> own;
  if (!endpoint->address().is_unspecified()) {
    auto a = endpoint->address();
    own.push_back(a.is_v4() ? dvpn::tunnel::IpAddress::V4(a.to_v4().to_bytes())
                            : dvpn::tunnel::IpAddress::V6(a.to_v6().to_bytes()));
  }
  auto policy = dvpn::tunnel::ExitPolicy::FromStrings(rules, own);
  if (!policy) return Refuse("exit policy: " + policy.error().message);

  auto log = dvpn::Logger("dvpn-tunnel-exit");
  cli::RaiseOpenFileLimit(*log);
  session::ExitServer::Options options;
  options.log_destinations = log_destinations;
  options.max_tunnels = max_tunnels;
  options.connection.table.max_streams = max_streams;
  // 0 for either disables the OPEN rate limit (the table reads a burst of 0 as "no limit"; a
  // rate of 0 with a burst would allow `burst` streams in a tunnel's whole life, which nobody
  // means).
  options.connection.table.new_streams_per_second = new_streams_per_second;
  options.connection.table.new_streams_burst = new_streams_per_second == 0 ? 0 : new_streams_burst;
  options.rate_limit.per_second = handshakes_per_second;
  options.rate_limit.burst = handshake_burst;
  options.max_pending_handshakes = max_pending_handshakes;
  options.msg1_timeout = std::chrono::milliseconds(msg1_timeout_ms);
  options.replay_capacity = replay_table_size;
  options.log_summary_interval = std::chrono::milliseconds(log_summary_interval_ms);
  // ---- payments ----
  const bool paid = !price_per_mb_text.empty() || !price_per_minute_text.empty();
  dvpn::SystemClock wall_clock;
  std::optional<dvpn::payments::PrivateKey> provider_key;
  std::unique_ptr<dvpn::payments::PromiseStore> store;
  std::unique_ptr<dvpn::ledger::rpc::RpcLedgerGateway> gateway;
  std::unique_ptr<dvpn::payments::SettlementScheduler> scheduler;
  if (paid) {
    session::ExitPaymentConfig pay;
    const auto& parse_price = cli::ParseAmountFlag;
    if (auto e = parse_price(price_per_mb_text, "--price-per-mb", &pay.price.per_mb))
      return Refuse(*e);
    if (auto e = parse_price(price_per_minute_text, "--price-per-minute", &pay.price.per_minute))
      return Refuse(*e);
    pay.invoice_interval_bytes = invoice_interval_bytes;
    pay.credit_window_bytes = credit_window_bytes;
    pay.payment_grace_ms = payment_grace_ms;
    if (ledger_target.empty()) return Refuse("--ledger HOST:PORT is required with a price");
    if (promise_db.empty()) return Refuse("--promise-db FILE is required with a price");
    auto key = cli::LoadAccountKey(identity_key_file, keystore_path);
    if (!key) return Refuse(key.error().message);
    provider_key = std::move(*key);
    auto threshold = dvpn::Amount::Parse(settle_threshold_text);
    if (!threshold) return Refuse("--settle-threshold: not an amount: " + settle_threshold_text);
    gateway = std::make_unique<dvpn::ledger::rpc::RpcLedgerGateway>(ledger_target);
    auto params = gateway->GetParams(std::chrono::steady_clock::now() + std::chrono::seconds(10));
    if (!params) return Refuse("--ledger " + ledger_target + ": " + params.error().message);
    dvpn::payments::PromiseStoreOptions store_options;
    store_options.durability = promise_durability == "power"
                                   ? dvpn::payments::Durability::kPowerLoss
                                   : dvpn::payments::Durability::kProcessCrash;
    auto opened = dvpn::payments::PromiseStore::Open(promise_db, wall_clock, store_options);
    if (!opened) return Refuse("--promise-db " + promise_db + ": " + opened.error().message);
    store = std::move(*opened);
    pay.provider_key = &*provider_key;
    pay.ledger = params->id;
    pay.store = store.get();
    pay.gateway = gateway.get();
    dvpn::payments::SettlementPolicy policy;
    policy.settle_threshold = *threshold;
    policy.settle_max_age = std::chrono::seconds(settle_max_age_s);
    scheduler = std::make_unique<dvpn::payments::SettlementScheduler>(
        *store, *gateway, *provider_key, params->id, wall_clock, policy);
    scheduler->Start();
    log->info("paid sessions: {} per MB, {} per minute; provider {}; ledger {}",
              pay.price.per_mb.ToString(), pay.price.per_minute.ToString(),
              dvpn::payments::Address::FromPublicKey(provider_key->public_key()).ToString(),
              ledger_target);
    options.payments = std::make_shared<session::ExitPayments>(pay);
  }
  std::shared_ptr<session::ExitServer> server;
  try {
    server =
        std::make_shared<session::ExitServer>(io, *endpoint, *key, std::move(*policy), options);
  } catch (const std::exception& e) {
    std::cerr << "dvpn-tunnel-exit: cannot listen on " << listen << ": " << e.what() << "\n";
    return kExitRuntime;
  }
  // SIGINT/SIGTERM are ours before the port file says we are up: a stop asked the moment after
  // (a supervisor, a test) gets the graceful shutdown with its final settlement, not the
  // default action that kills the process.
  session::asio::signal_set stop(io, SIGINT, SIGTERM);
  int port = server->local_endpoint().port();
  server->Start();
  log->info("listening on {}:{}; static public key {}", endpoint->address().to_string(), port,
            public_hex);
  if (auto written = dvpn::WritePortFile(port_file, port); !written) {
    std::cerr << "dvpn-tunnel-exit: " << written.error().message << "\n";
    return kExitRuntime;
  }

  session::asio::steady_timer grace(io);
  stop.async_wait([&](const session::error_code& ec, int sig) {
    if (ec) return;
    log->info("signal {}: shutting down", sig);
    // Tunnels get their CLOSE out (and their payment state settles) within a short grace time.
    server->Stop([&io] { io.stop(); });
    grace.expires_after(kShutdownGrace);
    grace.async_wait([&io](const session::error_code&) { io.stop(); });
  });
  io.run();
  server->DropTunnels();
  if (options.payments) {
    // Channel reads still running post to `io` and use the gateway: cut them short (no new
    // session needs them now) and wait until their threads are gone.
    gateway->CancelInFlight();
    options.payments->WaitForLedgerCalls(std::chrono::steady_clock::now() +
                                         std::chrono::seconds(10));
  }
  if (scheduler) {
    // Promises still on their way to the disk are committed first, then one final settlement.
    store->Close();
    log->info("final settlement (deadline {} ms)", shutdown_settle_timeout_ms);
    scheduler->Shutdown(std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(shutdown_settle_timeout_ms));
    auto stats = scheduler->Stats();
    log->info("settlement: {} batch(es) settled, {} failed{}{}", stats.successes, stats.failures,
              stats.last_error.empty() ? "" : "; last error: ", stats.last_error);
  }
  return 0;
}
