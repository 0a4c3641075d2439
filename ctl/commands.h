#pragma once
// dvpnctl's subcommands (docs/dvpnctl.md) as CLI11 tables: the wallet's commands over the
// ledger (key, info, balance, deposit, withdraw, channel, promise, settle, history, watch) and
// the commands for a dvpn-node or a dvpn-client (offers, earnings, connect, disconnect,
// status). Each subcommand's callback stores in `action` what to run once every option is
// parsed; dvpnctl's main parses and runs it.

#include <functional>

#include <CLI/CLI.hpp>

#include "ctl/cli.h"
#include "ctl/wallet.h"

namespace dvpn::ctl {

using Action = std::function<CliResult<void>(Wallet&)>;

// The ledger's commands. The values they parse live as long as `app`.
void AddWalletCommands(CLI::App& app, Action& action);

// The daemons' commands; `options` (the global options, read when the action runs) must
// outlive `app`.
void AddDaemonCommands(CLI::App& app, const Options& options, Action& action);

}  // namespace dvpn::ctl
