// dvpn-client: the privacy user's daemon (docs/client.md). A wallet (dvpnctl keystore), the
// offers of the network (an embedded gossip node that only dials out to --bootstrap peers, or a
// node's OfferBook with --offers-from), provider choice by policy, the SOCKS5 port, spend
// limits, reconnect and failover (ClientRuntime), and dvpn.v1.ClientControl on 127.0.0.1 so
// that dvpnctl (connect, disconnect, status) or a wallet app drives it.
// Wiring only: flags -> wallet, spend limits -> ClientDaemon (client/client_daemon.h: ledger,
// offers source, controller, gRPC) -> signals.
//
// Exit codes: 0 clean shutdown (SIGINT/SIGTERM); 2 refused to start (bad flag, keystore,
// passphrase, spend file); 1 runtime failure (ledger unreachable, cannot listen).

#include <signal.h>

#include <string>
#include <utility>

#include <CLI/CLI.hpp>

#include "cli/cli_util.h"
#include "cli/program.h"
#include "client/client_daemon.h"
#include "client/daemon_flags.h"
#include "common/log.h"
#include "tunnel/kdf.h"

namespace {

namespace cli = dvpn::cli;

constexpr long kSignalPollNs = 200'000'000;

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-client", message); }

int Fail(const std::string& message) { return dvpn::cli::Fail("dvpn-client", message); }

}  // namespace

int main(int argc, char** argv) {
  dvpn::client::ClientDaemonFlags f;
  CLI::App app{"dvpn-client: a dVPN user's daemon (wallet, provider choice, SOCKS5, control)"};
  dvpn::client::AddClientDaemonFlags(app, f);
  app.set_version_flag("--version", "dvpn-client " DVPN_VERSION);
  app.footer(
      "Exit codes: 0 clean shutdown, 2 refused to start, 1 runtime failure. "
      "docs/client.md.");
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;
  if (auto ok = dvpn::cli::StartLogging(f.log_level); !ok) return Refuse(ok.error().message);
  if (f.bootstrap.empty() == f.offers_from.empty()) {
    return Refuse("give --bootstrap (gossip) or --offers-from (a node's OfferBook), one of them");
  }
  dvpn::tunnel::EnsureSodium();

  auto c = dvpn::client::ClientDaemonConfigFromFlags(f);
  if (!c) return Refuse(c.error().message);
  // The wallet.
  auto wallet =
      cli::LoadKeystoreWithPassphrase(f.keystore, f.passphrase_file, "--keystore",
                                      "--passphrase-file", "--passphrase-file or $DVPN_PASSPHRASE");
  if (!wallet) return Refuse(wallet.error().message);
  const dvpn::payments::PrivateKey identity = std::move(*wallet);
  c->wallet = &identity;

  auto log = dvpn::Logger("dvpn-client");
  cli::RaiseOpenFileLimit(*log);
  const sigset_t signals = cli::BlockShutdownSignals();

  auto daemon = dvpn::client::ClientDaemon::Start(std::move(*c));
  if (!daemon) return Fail(daemon.error().message);
  if (f.connect) {
    if (auto ok = (*daemon)->ConnectAtStart(); !ok) return Fail(ok.error().message);
  }

  for (;;) {
    timespec tick{0, kSignalPollNs};
    int sig = ::sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) {
      log->info("signal {}: shutting down", sig);
      break;
    }
  }
  (*daemon)->Stop();
  return 0;
}
