// dvpn-tunnel-client: the client end of a dVPN tunnel with a local SOCKS5 front end. Wiring
// only: flags (client/tunnel_client_flags.h: identity, spend policy, provider or offers) ->
// ClientRuntime (client_runtime.h: TunnelKeeper, payments, SocksFrontend on an io thread).
// SIGINT/SIGTERM stop it cleanly at any moment.
//
// Paid sessions (docs/payments.md): when the exit's msg2 carries session terms, they are checked
// against the spend policy (--max-price-per-mb, ...) and every invoice is answered with a promise
// signed by the payment identity (--identity-key-file, $DVPN_IDENTITY_KEY_HEX or --keystore).
//
// Exit codes: 0 clean shutdown; 2 refused to start (bad flag, key or password); 1 cannot reach
// the exit at start, handshake failed, cannot listen, or the tunnel was lost and could not be
// re-established within --max-reconnects attempts; 3 a spending cap (--session-cap,
// --daily-cap) was reached: the client stopped without signing more; 4 the provider's payment
// terms were refused (price above the policy, wrong payee, bad base) or it overcharged (with
// --offers-from these move to the next offer instead; exit 1 when none is left).

#include <csignal>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/cli_util.h"
#include "cli/program.h"
#include "client/client_runtime.h"
#include "client/tunnel_client_flags.h"
#include "common/log.h"
#include "tunnel/kdf.h"

namespace {

// How often the main thread looks whether the runtime ended by itself.
constexpr long kSignalPollNs = 100'000'000;

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-tunnel-client", message); }

}  // namespace

int main(int argc, char** argv) {
  dvpn::client::TunnelClientFlags f;
  CLI::App app{"dvpn-tunnel-client: a dVPN tunnel client with a SOCKS5 front end"};
  dvpn::client::AddTunnelClientFlags(app, f);
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;
  if (auto ok = dvpn::cli::StartLogging(f.log_level); !ok) return Refuse(ok.error().message);
  if (!f.identity_hex.empty()) return Refuse(dvpn::cli::kIdentityKeyHexRemoved);
  dvpn::tunnel::EnsureSodium();
  auto log = dvpn::Logger("dvpn-tunnel-client");
  dvpn::cli::RaiseOpenFileLimit(*log);
  auto setup = dvpn::client::MakeTunnelClientSetup(f, *log);
  if (!setup) return Refuse(setup.error().message);

  // Block the shutdown signals before the runtime's thread starts, so only this thread's
  // sigtimedwait receives them.
  const sigset_t signals = dvpn::cli::BlockShutdownSignals();
  auto runtime = dvpn::tunnel_client::ClientRuntime::Start(std::move(setup->config));
  if (!runtime) return Refuse(runtime.error().message);
  while (!(*runtime)->Finished()) {
    timespec tick{0, kSignalPollNs};
    int sig = ::sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) {
      log->info("signal {}: shutting down", sig);
      break;
    }
  }
  (*runtime)->Stop();
  const int code = (*runtime)->ExitCode();
  if (code == dvpn::tunnel_client::kClientSpendCap ||
      code == dvpn::tunnel_client::kClientPaymentRefused) {
    std::cerr << "dvpn-tunnel-client: stopped: " << (*runtime)->Status().last_error << "\n";
  }
  return code;
}
