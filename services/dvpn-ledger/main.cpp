// dvpn-ledger: the settlement ledger as a gRPC service over an embedded SQLite file.
// Wiring only: flags -> operator key -> OpenLedger (ledger/open_ledger.h: the SQLite store and
// the Ledger) -> LedgerServer, then wait for SIGINT/SIGTERM and shut down cleanly. The rules live
// in ledger/, the adapter in ledger/rpc/.
//
// Exit codes: 0 clean shutdown; 2 refused to start (bad flag, missing or bad operator key,
// database unusable or belonging to another ledger); 1 cannot listen or other runtime failure.

#include <csignal>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/errc.h"
#include "cli/flags.h"
#include "cli/program.h"
#include "common/bytes.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/port_file.h"
#include "common/result.h"
#include "ledger/ledger.h"
#include "ledger/open_ledger.h"
#include "ledger/rpc/ledger_service.h"
#include "payments/signed_messages.h"

namespace {

// The largest batch whose request still fits the server's 16 MiB receive limit with room to
// spare (a promise is about 110 bytes on the wire).
constexpr uint32_t kMaxBatchLimit = 100'000;
// Ten years: long enough for any real challenge period, small enough that expiry arithmetic
// cannot overflow.
constexpr uint64_t kMaxChallengePeriod = 10ull * 365 * 24 * 3600;

struct Flags {
  std::string db = "./dvpn-ledger.db";
  std::string listen = "127.0.0.1:7400";
  std::string port_file;
  std::string name = "dvpn-local";
  std::string operator_pubkey_hex;
  std::string operator_keystore;
  uint64_t challenge_period = 3600;
  uint32_t max_batch = 5000;
  unsigned verify_threads = 0;
  std::string log_level = "info";
};

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-ledger", message); }

void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("--db", f.db, "SQLite database file (created if missing)")->capture_default_str();
  app.add_option("--listen", f.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--port-file", f.port_file, "write the bound port to this file once listening");
  app.add_option("--name", f.name, "ledger name (with the operator key, fixes the ledger id)")
      ->capture_default_str();
  auto* pubkey = app.add_option("--operator-pubkey", f.operator_pubkey_hex,
                                "operator public key, 64 hex digits (x-only)");
  auto* keystore = app.add_option("--operator-keystore", f.operator_keystore,
                                  "read the operator public key from this keystore file "
                                  "(no passphrase needed)");
  pubkey->excludes(keystore);
  dvpn::cli::AddBounded(app, "--challenge-period", f.challenge_period,
                        "seconds a provider may still settle after a client closes a channel", 0,
                        kMaxChallengePeriod);
  dvpn::cli::AddBounded(app, "--max-batch", f.max_batch, "most promises in one SettleBatch", 1,
                        kMaxBatchLimit);
  dvpn::cli::AddBounded(app, "--verify-threads", f.verify_threads,
                        "threads verifying the signatures of one batch (0: one per core)", 0, 256);
  dvpn::cli::AddLogLevel(app, f.log_level);
  app.footer(
      "Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 refused to start (bad flags, operator "
      "key, database), 1 cannot listen.");
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{"dvpn-ledger: the dVPN settlement ledger (gRPC service dvpn.v1.Ledger)"};
  AddFlags(app, flags);
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;

  if (auto ok = dvpn::cli::StartLogging(flags.log_level); !ok) return Refuse(ok.error().message);
  if (flags.operator_pubkey_hex.empty() && flags.operator_keystore.empty()) {
    return Refuse(
        "an operator key is required: pass --operator-pubkey HEX or "
        "--operator-keystore FILE");
  }
  if (flags.name.empty() || flags.name.size() > dvpn::payments::kMaxLedgerName) {
    return Refuse("--name: must be 1 to " + std::to_string(dvpn::payments::kMaxLedgerName) +
                  " bytes");
  }
  if (flags.listen.rfind(':') == std::string::npos) {
    return Refuse("--listen: expected HOST:PORT, got \"" + flags.listen + "\"");
  }

  // Block the shutdown signals before any thread starts, so every thread inherits the mask and
  // only the sigwait below receives them.
  const sigset_t signals = dvpn::cli::BlockShutdownSignals();

  auto log = dvpn::Logger("dvpn-ledger");

  const bool from_keystore = !flags.operator_keystore.empty();
  auto operator_key = from_keystore ? dvpn::ledger::ReadOperatorKey(flags.operator_keystore)
                                    : dvpn::ledger::ParseOperatorKey(flags.operator_pubkey_hex);
  if (!operator_key) {
    return Refuse((from_keystore ? "" : "--operator-pubkey: ") + operator_key.error().message);
  }

  dvpn::ledger::LedgerConfig config{.name = flags.name,
                                    .operator_key = *operator_key,
                                    .challenge_period_seconds = flags.challenge_period,
                                    .max_batch_items = flags.max_batch,
                                    .verify_threads = flags.verify_threads};
  dvpn::SystemClock clock;
  auto ledger = dvpn::ledger::OpenLedger(config, flags.db, clock);
  if (!ledger) return Refuse(ledger.error().message);
  const dvpn::payments::LedgerId id = (*ledger)->id();

  dvpn::ledger::rpc::LedgerServerOptions options;
  options.listen_address = flags.listen;
  auto server = dvpn::ledger::rpc::LedgerServer::Start(**ledger, clock, options);
  if (!server) return dvpn::cli::Fail("dvpn-ledger", server.error().message);
  if (auto written = dvpn::WritePortFile(flags.port_file, (*server)->port()); !written) {
    const int code = dvpn::cli::Fail("dvpn-ledger", "--port-file: " + written.error().message);
    (*server)->Shutdown();
    return code;
  }
  log->info("ledger {} ({}) listening on {}, database {}", dvpn::ToHex(id.bytes), flags.name,
            (*server)->address(), flags.db);

  const int signal_number = dvpn::cli::WaitForShutdownSignal(signals);
  log->info("{} received, shutting down", dvpn::cli::ShutdownSignalName(signal_number));
  (*server)->Shutdown(std::chrono::milliseconds(2000));
  log->info("stopped");
  return 0;
}
