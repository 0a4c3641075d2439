// dvpn-tunnel-exit: a tunnel exit node (the provider side) for tests and manual runs.
// Wiring only: flags (provider/exit_flags.h) -> static key file -> ExitAssembly
// (provider/exit_assembly.h: exit policy, ExitServer, payments; the same as dvpn-node's seller)
// on one io_context thread; SIGINT/SIGTERM stop it cleanly. With --price-per-mb / --price-per-minute the sessions are
// paid (docs/payments.md): channels are checked on the ledger (--ledger), promises kept in
// --promise-db, and a SettlementScheduler settles them; on SIGTERM it makes a final settlement
// attempt (bounded by --shutdown-settle-timeout-ms) before exiting.
//
// Exit codes: 0 clean shutdown (or --print-public-key); 2 refused to start (bad flag or value
// out of range, key file, rule, payment configuration); 1 cannot listen.

#include <csignal>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/cli_util.h"
#include "cli/program.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/port_file.h"
#include "provider/exit_assembly.h"
#include "provider/exit_flags.h"
#include "tunnel/kdf.h"

namespace {

namespace session = dvpn::tunnel::session;
namespace cli = dvpn::cli;
using dvpn::node::ExitAssemblyErrc;

constexpr std::chrono::milliseconds kShutdownGrace{2'000};
constexpr const char* kProgram = "dvpn-tunnel-exit";

int Refuse(const std::string& message) { return cli::Refuse(kProgram, message); }

// The assembly's failure as this program has always reported it.
int BuildFailed(const dvpn::Error<ExitAssemblyErrc>& e, const dvpn::node::ExitFlags& f) {
  switch (e.code) {
    case ExitAssemblyErrc::kListenAddress:
      return Refuse("--listen: " + e.message);
    case ExitAssemblyErrc::kPolicy:
      return Refuse("exit policy: " + e.message);
    case ExitAssemblyErrc::kPromiseStore:
      return Refuse("--promise-db " + f.promise_db + ": " + e.message);
    case ExitAssemblyErrc::kPackets:  // dvpn-tunnel-exit does not serve full tunnel (no spec)
    case ExitAssemblyErrc::kListen:
      break;
  }
  return cli::Fail(kProgram, "cannot listen on " + f.listen + ": " + e.message);
}

}  // namespace

int main(int argc, char** argv) {
  dvpn::node::ExitFlags f;
  CLI::App app{"dvpn-tunnel-exit: a dVPN tunnel exit node"};
  dvpn::node::AddExitFlags(app, f);
  if (auto rc = cli::Parse(app, argc, argv)) return *rc;
  if (auto ok = cli::StartLogging(f.log_level); !ok) return Refuse(ok.error().message);
  if (!f.identity_key_hex.empty()) return Refuse(cli::kIdentityKeyHexRemoved);
  dvpn::tunnel::EnsureSodium();

  auto key = cli::LoadOrCreateTunnelKey(f.key_file);
  if (!key) return Refuse(key.error().message);
  std::string public_hex = dvpn::ToHex(key->public_key);
  if (f.print_public_key) {
    std::cout << public_hex << "\n";
    return 0;
  }

  auto log = dvpn::Logger(kProgram);
  cli::RaiseOpenFileLimit(*log);
  auto setup = dvpn::node::MakeExitSetup(f, *log);
  if (!setup) return Refuse(setup.error().message);
  session::asio::io_context io(1);
  auto exit = dvpn::node::ExitAssembly::Build(io, *key, std::move(setup->spec));
  if (!exit) return BuildFailed(exit.error(), f);

  // SIGINT/SIGTERM are ours before the port file says we are up: a stop asked the moment after
  // (a supervisor, a test) gets the graceful shutdown with its final settlement, not the
  // default action that kills the process.
  session::asio::signal_set stop(io, SIGINT, SIGTERM);
  auto server = (*exit)->server();
  int port = server->local_endpoint().port();
  (*exit)->Start();
  log->info("listening on {}:{}; static public key {}",
            (*exit)->listen_endpoint().address().to_string(), port, public_hex);
  if (auto written = dvpn::WritePortFile(f.port_file, port); !written) {
    return cli::Fail(kProgram, written.error().message);
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
  (*exit)->Settle(std::chrono::milliseconds(f.shutdown_settle_timeout_ms), *log);
  return 0;
}
