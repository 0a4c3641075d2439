// dvpn-ledger: the settlement ledger as a gRPC service over an embedded SQLite file.
// Wiring only: flags -> operator key -> store -> Ledger -> LedgerServer, then wait for
// SIGINT/SIGTERM and shut down cleanly. The rules live in ledger/, the adapter in ledger/rpc/.
//
// Exit codes: 0 clean shutdown; 2 refused to start (bad flag, missing or bad operator key,
// database unusable or belonging to another ledger); 1 cannot listen or other runtime failure.

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/errc.h"
#include "cli/program.h"
#include "common/bytes.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/port_file.h"
#include "ledger/ledger.h"
#include "ledger/rpc/ledger_service.h"
#include "ledger/sqlite_store.h"
#include "payments/keystore.h"
#include "payments/signed_messages.h"

namespace {

using dvpn::cli::kExitRuntime;
using dvpn::cli::kExitConfig;

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

dvpn::Result<dvpn::payments::PublicKey, dvpn::cli::Errc> OperatorKey(const Flags& flags) {
  using dvpn::cli::Errc;
  if (!flags.operator_keystore.empty()) {
    auto key = dvpn::payments::LoadKeystorePublicKey(flags.operator_keystore);
    if (!key) {
      return dvpn::Fail(Errc::kIo, "cannot read the operator key from " +
                                       flags.operator_keystore + ": " + key.error().message);
    }
    return *key;
  }
  auto bytes = dvpn::FromHex(flags.operator_pubkey_hex);
  if (!bytes) {
    return dvpn::Fail(Errc::kBadInput,
                      "--operator-pubkey: not hex (expected 64 hex digits, an x-only public key)");
  }
  auto key = dvpn::payments::PublicKey::Parse(*bytes);
  if (!key) {
    return dvpn::Fail(Errc::kBadInput,
                      "--operator-pubkey: not a valid secp256k1 x-only public key (expected 32 "
                      "bytes, 64 hex digits)");
  }
  return *key;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{"dvpn-ledger: the dVPN settlement ledger (gRPC service dvpn.v1.Ledger)"};
  app.add_option("--db", flags.db, "SQLite database file (created if missing)")
      ->capture_default_str();
  app.add_option("--listen", flags.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--port-file", flags.port_file,
                 "write the bound port to this file once listening");
  app.add_option("--name", flags.name, "ledger name (with the operator key, fixes the ledger id)")
      ->capture_default_str();
  auto* pubkey = app.add_option("--operator-pubkey", flags.operator_pubkey_hex,
                                "operator public key, 64 hex digits (x-only)");
  auto* keystore = app.add_option("--operator-keystore", flags.operator_keystore,
                                  "read the operator public key from this keystore file "
                                  "(no passphrase needed)");
  pubkey->excludes(keystore);
  app.add_option("--challenge-period", flags.challenge_period,
                 "seconds a provider may still settle after a client closes a channel")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, kMaxChallengePeriod));
  app.add_option("--max-batch", flags.max_batch, "most promises in one SettleBatch")
      ->capture_default_str()
      ->check(CLI::Range(uint32_t{1}, kMaxBatchLimit));
  app.add_option("--verify-threads", flags.verify_threads,
                 "threads verifying the signatures of one batch (0: one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 256u));
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.footer(
      "Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 refused to start (bad flags, operator "
      "key, database), 1 cannot listen.");

  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;

  if (auto e = dvpn::cli::StartLogging(flags.log_level)) return Refuse(*e);
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
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto log = dvpn::Logger("dvpn-ledger");

  auto operator_key = OperatorKey(flags);
  if (!operator_key) return Refuse(operator_key.error().message);

  dvpn::ledger::LedgerConfig config{.name = flags.name,
                                    .operator_key = *operator_key,
                                    .challenge_period_seconds = flags.challenge_period,
                                    .max_batch_items = flags.max_batch,
                                    .verify_threads = flags.verify_threads};
  dvpn::payments::LedgerId id = dvpn::payments::LedgerIdFor(config.name, config.operator_key);

  auto store = dvpn::ledger::OpenSqliteStore(flags.db, id);
  if (!store) return Refuse("cannot use database " + flags.db + ": " + store.error().message);

  dvpn::SystemClock clock;
  std::unique_ptr<dvpn::ledger::Ledger> ledger;
  try {
    ledger = std::make_unique<dvpn::ledger::Ledger>(config, *std::move(store), clock);
  } catch (const std::exception& e) {
    return Refuse("cannot load the ledger from " + flags.db + ": " + e.what());
  }

  dvpn::ledger::rpc::LedgerServerOptions options;
  options.listen_address = flags.listen;
  auto server = dvpn::ledger::rpc::LedgerServer::Start(*ledger, clock, options);
  if (!server) {
    std::cerr << "dvpn-ledger: " << server.error() << "\n";
    return kExitRuntime;
  }
  if (auto written = dvpn::WritePortFile(flags.port_file, (*server)->port()); !written) {
    std::cerr << "dvpn-ledger: --port-file: " << written.error().message << "\n";
    (*server)->Shutdown();
    return kExitRuntime;
  }
  log->info("ledger {} ({}) listening on {}, database {}", dvpn::ToHex(id.bytes), flags.name,
            (*server)->address(), flags.db);

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  log->info("{} received, shutting down", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Shutdown(std::chrono::milliseconds(2000));
  log->info("stopped");
  return 0;
}
