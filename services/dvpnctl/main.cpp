// dvpnctl: the command-line wallet of the dVPN ledger. This file only parses the command line
// and runs the subcommand (ctl/commands.h: their tables; ctl/wallet.h, ctl/daemon_commands.h:
// what they do); docs/dvpnctl.md is the user's guide.

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ctl/cli.h"
#include "ctl/commands.h"
#include "ctl/wallet.h"

namespace {

using dvpn::ctl::CliResult;
using dvpn::ctl::Exit;
using dvpn::ctl::Options;
using dvpn::ctl::Wallet;

std::string DefaultKeystore() {
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') return "";
  return std::string(home) + "/.dvpn/key.json";
}

}  // namespace

int main(int argc, char** argv) {
  // gRPC would otherwise log connection failures on stderr; dvpnctl reports them itself.
  if (std::getenv("GRPC_VERBOSITY") == nullptr) ::setenv("GRPC_VERBOSITY", "NONE", 0);

  Options options;
  options.keystore = DefaultKeystore();
  uint64_t timeout_seconds = 10;

  CLI::App app{"dvpnctl: command-line wallet for the dVPN ledger"};
  app.fallthrough();  // global options may also follow the subcommand
  app.require_subcommand(1);
  app.add_option("--ledger", options.ledger, "ledger address HOST:PORT")
      ->envname("DVPN_LEDGER")
      ->capture_default_str();
  app.add_option("--keystore", options.keystore, "keystore file (default $HOME/.dvpn/key.json)")
      ->envname("DVPN_KEYSTORE");
  app.add_option("--passphrase-file", options.passphrase_file,
                 "read the passphrase from the first line of this file (else $DVPN_PASSPHRASE, "
                 "else a prompt on the terminal)");
  app.add_option("--kdf-cost", options.kdf_cost,
                 "Argon2id cost for `key new` / `key import`: moderate, interactive or test")
      ->check(CLI::IsMember({"moderate", "interactive", "test"}))
      ->capture_default_str();
  app.add_flag("--json", options.json, "machine-readable output (JSON)");
  app.add_option("--timeout", timeout_seconds, "seconds to wait for each ledger call")
      ->check(CLI::Range(uint64_t{1}, uint64_t{3600}))
      ->capture_default_str();
  app.footer(
      "Exit codes: 0 ok, 1 refused by the ledger or bad input, 2 usage error, 3 ledger "
      "unreachable. See docs/dvpnctl.md.");

  // Each subcommand's callback stores what to run once every option is parsed.
  dvpn::ctl::Action action;
  dvpn::ctl::AddWalletCommands(app, action);
  dvpn::ctl::AddDaemonCommands(app, options, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(Exit::kUsage);
  }
  options.timeout = std::chrono::seconds(timeout_seconds);
  if (!action) {  // not reached: require_subcommand
    std::cerr << app.help();
    return static_cast<int>(Exit::kUsage);
  }

  Wallet wallet(options);
  CliResult<void> result = action(wallet);
  if (!result) {
    std::cout.flush();
    std::cerr << "dvpnctl: " << result.error().message << '\n';
    return static_cast<int>(result.error().code);
  }
  return static_cast<int>(Exit::kOk);
}
