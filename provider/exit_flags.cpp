#include "provider/exit_flags.h"

#include <utility>

#include "cli/cli_util.h"
#include "cli/flags.h"

namespace dvpn::node {

namespace session = tunnel::session;

namespace {

// Upper bounds of the limit flags (far above what one process can serve; they only keep the
// numbers meaningful).
constexpr uint64_t kMaxCount = 1'000'000;
constexpr uint32_t kMaxRate = 1'000'000;
constexpr std::chrono::seconds kLedgerTimeout{10};

// The ExitServer's limits from the flags.
session::ExitServer::Options LimitOptions(const ExitFlags& f) {
  session::ExitServer::Options options;
  options.log_destinations = f.log_destinations;
  options.max_tunnels = f.max_tunnels;
  options.connection.table.max_streams = f.max_streams;
  // 0 for either disables the OPEN rate limit (the table reads a burst of 0 as "no limit"; a
  // rate of 0 with a burst would allow `burst` streams in a tunnel's whole life, which nobody
  // means).
  options.connection.table.new_streams_per_second = f.new_streams_per_second;
  options.connection.table.new_streams_burst =
      f.new_streams_per_second == 0 ? 0 : f.new_streams_burst;
  options.rate_limit.per_second = f.handshakes_per_second;
  options.rate_limit.burst = f.handshake_burst;
  options.max_pending_handshakes = f.max_pending_handshakes;
  options.msg1_timeout = std::chrono::milliseconds(f.msg1_timeout_ms);
  options.replay_capacity = f.replay_table_size;
  options.log_summary_interval = std::chrono::milliseconds(f.log_summary_interval_ms);
  return options;
}

// An amount flag into `value` (kept when the flag is empty); kBadConfig with the line for the
// user.
Result<void, Errc> SetAmount(Amount& value, const std::string& text, const char* flag) {
  return cli::SetAmountFlag(value, text, flag, Errc::kBadConfig);
}

}  // namespace

void AddExitFlags(CLI::App& app, ExitFlags& f) {
  const session::ExitServer::Options defaults{};
  f.max_tunnels = defaults.max_tunnels;
  f.max_streams = defaults.connection.table.max_streams;
  f.new_streams_per_second = defaults.connection.table.new_streams_per_second;
  f.new_streams_burst = defaults.connection.table.new_streams_burst;
  f.handshakes_per_second = defaults.rate_limit.per_second;
  f.handshake_burst = defaults.rate_limit.burst;
  f.max_pending_handshakes = defaults.max_pending_handshakes;
  f.msg1_timeout_ms = static_cast<uint64_t>(defaults.msg1_timeout.count());
  f.replay_table_size = defaults.replay_capacity;
  f.log_summary_interval_ms = static_cast<uint64_t>(defaults.log_summary_interval.count());

  app.add_option("--listen", f.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--port-file", f.port_file, "write the bound port to this file once listening");
  app.add_option("--static-key-file", f.key_file,
                 "hex X25519 secret key (created with mode 0600 when missing)")
      ->capture_default_str();
  app.add_flag("--print-public-key", f.print_public_key,
               "print the static public key (hex) to stdout and exit");
  app.add_option("--allow", f.allow,
                 "exit policy allow rule, e.g. 127.0.0.1/32 or [::1]/128:8080 (repeatable; "
                 "deny rules are consulted first, then allow rules, then the defaults)");
  app.add_option("--deny", f.deny, "exit policy deny rule, e.g. 0.0.0.0/0:25 (repeatable)");
  app.add_flag("--log-destinations", f.log_destinations,
               "log the destination of every stream (off by default)");
  cli::AddBounded(app, "--max-tunnels", f.max_tunnels, "most tunnels open at once (1..1000000)", 1,
                  kMaxCount);
  cli::AddBounded(app, "--max-streams-per-tunnel", f.max_streams,
                  "most concurrent streams in one tunnel (1..1000000)", 1, kMaxCount);
  cli::AddBounded(app, "--new-streams-per-second", f.new_streams_per_second,
                  "streams a tunnel may open per second, sustained (0..1000000; 0: no limit)", 0,
                  kMaxRate);
  cli::AddBounded(app, "--new-streams-burst", f.new_streams_burst,
                  "streams a tunnel may open at once before the per-second rate applies "
                  "(0..1000000; 0: no limit)",
                  0, kMaxRate);
  cli::AddBounded(app, "--handshakes-per-second", f.handshakes_per_second,
                  "handshakes per second per source address (IPv6: per /64), sustained "
                  "(1..1000000)",
                  1, kMaxRate);
  cli::AddBounded(app, "--handshake-burst", f.handshake_burst,
                  "handshakes a source may start at once (1..1000000)", 1, kMaxRate);
  cli::AddBounded(app, "--max-pending-handshakes", f.max_pending_handshakes,
                  "connections whose handshake has not finished, all sources together; the oldest "
                  "still waiting for msg1 is closed for a new one (1..65536; at most the open-file "
                  "limit / 16)",
                  1, 65536);
  cli::AddBounded(app, "--msg1-timeout-ms", f.msg1_timeout_ms,
                  "a connection must deliver its msg1 this soon after the accept (100..60000)", 100,
                  60'000);
  cli::AddBounded(app, "--replay-table-size", f.replay_table_size,
                  "client identities the replay guard remembers (16..16777216)", 16,
                  uint64_t{1} << 24);
  cli::AddBounded(app, "--log-summary-interval-ms", f.log_summary_interval_ms,
                  "at most one info summary line (tunnels opened/closed, handshakes dropped) per "
                  "this interval (100..86400000)",
                  100, 86'400'000);
  // Payments (docs/payments.md). Free sessions unless a price is given.
  app.add_option("--price-per-mb", f.price_per_mb,
                 "price per 10^6 metered bytes in credits (decimal, e.g. 0.25); enables payments");
  app.add_option("--price-per-minute", f.price_per_minute,
                 "price per minute of session in credits (decimal); enables payments");
  app.add_option("--invoice-interval-bytes", f.invoice_interval_bytes,
                 "invoice every this many metered bytes (65536..64000000)")
      ->capture_default_str();
  app.add_option("--credit-window-bytes", f.credit_window_bytes,
                 "unpaid bytes served before pausing (interval..256000000)")
      ->capture_default_str();
  app.add_option("--payment-grace-ms", f.payment_grace_ms,
                 "paused this long without payment: the session ends (100..600000)")
      ->capture_default_str();
  app.add_option("--ledger", f.ledger, "ledger gRPC HOST:PORT (required with a price)");
  cli::AddAccountKeyFlags(app, f.identity_key_hex, f.identity_key_file, f.keystore,
                          "provider account", "");
  app.add_option("--promise-db", f.promise_db, "promise store SQLite file (required with a price)");
  app.add_option("--promise-durability", f.promise_durability,
                 "what an accepted promise survives before it is credited: 'process' (a crash or "
                 "kill -9 of the exit) or 'power' (also a power loss: one fsync per commit)")
      ->capture_default_str()
      ->check(CLI::IsMember({"process", "power"}));
  app.add_option("--settle-threshold", f.settle_threshold,
                 "settle when this many credits are unsettled (decimal)")
      ->capture_default_str();
  cli::AddBounded(app, "--settle-max-age-s", f.settle_max_age_s,
                  "settle a promise at most this many seconds after it arrived", 1, 86'400 * 30);
  cli::AddBounded(app, "--shutdown-settle-timeout-ms", f.shutdown_settle_timeout_ms,
                  "on SIGTERM/SIGINT, the final settlement attempt's deadline", 0, 600'000);
  cli::AddLogLevel(app, f.log_level);
}

Result<ExitSetup, Errc> MakeExitSetup(const ExitFlags& f, spdlog::logger& log) {
  ExitSetup setup;
  setup.spec.listen = f.listen;
  setup.spec.policy_rules = cli::PolicyRules(f.deny, f.allow);
  setup.spec.options = LimitOptions(f);
  if (f.price_per_mb.empty() && f.price_per_minute.empty()) return setup;

  PaidExitSpec& pay = setup.spec.paid.emplace();
  if (auto ok = SetAmount(pay.terms.price.per_mb, f.price_per_mb, "--price-per-mb"); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = SetAmount(pay.terms.price.per_minute, f.price_per_minute, "--price-per-minute");
      !ok) {
    return std::unexpected(ok.error());
  }
  pay.terms.invoice_interval_bytes = f.invoice_interval_bytes;
  pay.terms.credit_window_bytes = f.credit_window_bytes;
  pay.terms.payment_grace_ms = f.payment_grace_ms;
  if (f.ledger.empty())
    return Fail(Errc::kBadConfig, "--ledger HOST:PORT is required with a price");
  if (f.promise_db.empty())
    return Fail(Errc::kBadConfig, "--promise-db FILE is required with a price");
  auto key = cli::LoadAccountKey(f.identity_key_file, f.keystore);
  if (!key) return Fail(Errc::kBadConfig, key.error().message);
  setup.provider_key = std::make_unique<payments::PrivateKey>(std::move(*key));
  auto threshold = Amount::Parse(f.settle_threshold);
  if (!threshold)
    return Fail(Errc::kBadConfig, "--settle-threshold: not an amount: " + f.settle_threshold);
  setup.gateway = std::make_unique<ledger::rpc::RpcLedgerGateway>(f.ledger);
  auto params = setup.gateway->GetParams(std::chrono::steady_clock::now() + kLedgerTimeout);
  if (!params) return Fail(Errc::kLedger, "--ledger " + f.ledger + ": " + params.error().message);
  pay.terms.provider_key = setup.provider_key.get();
  pay.terms.ledger = params->id;
  pay.terms.gateway = setup.gateway.get();
  pay.promise_db = f.promise_db;
  pay.durability = f.promise_durability == "power" ? payments::Durability::kPowerLoss
                                                   : payments::Durability::kProcessCrash;
  pay.settle.settle_threshold = *threshold;
  pay.settle.settle_max_age = std::chrono::seconds(f.settle_max_age_s);
  log.info("paid sessions: {} per MB, {} per minute; provider {}; ledger {}",
           pay.terms.price.per_mb.ToString(), pay.terms.price.per_minute.ToString(),
           payments::Address::FromPublicKey(setup.provider_key->public_key()).ToString(), f.ledger);
  return setup;
}

}  // namespace dvpn::node
