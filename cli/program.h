#pragma once
// The start of every daemon's main (dvpn-ledger, dvpn-node, dvpn-client, dvpn-tunnel-client,
// dvpn-tunnel-exit), written once: the exit codes they share, refusing to start with one line
// on stderr, parsing the command line, and turning logging on.

#include <signal.h>

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/errc.h"
#include "common/result.h"

namespace dvpn::cli {

// Exit codes of the daemons (each one's docs list them): 0 a clean shutdown (or --help,
// --version), 1 a runtime failure (a port cannot be bound, the ledger cannot be reached),
// 2 refused to start (a bad flag, key, file or setting).
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitConfig = 2;

// "<program>: <message>" on stderr; returns kExitConfig (Refuse) or kExitRuntime (Fail).
int Refuse(const char* program, const std::string& message);
int Fail(const char* program, const std::string& message);

// Parses the command line. nullopt: go on; otherwise the process's exit code, after CLI11 has
// printed the help, the version or the error (0 for --help and --version, kExitConfig else).
std::optional<int> Parse(CLI::App& app, int argc, char** argv);

// Sets every logger's level ("trace" .. "off") and routes gRPC's and protobuf's own logs
// through ours. kBadInput with the line for the user when the level is unknown.
Result<void, Errc> StartLogging(const std::string& level);

// SIGINT and SIGTERM, blocked in the calling thread. Called before any thread starts, so that
// every thread inherits the mask and only the main thread's sigwait/sigtimedwait receives them.
sigset_t BlockShutdownSignals();
// Waits for one of `signals` (blocked by BlockShutdownSignals) and returns it.
int WaitForShutdownSignal(const sigset_t& signals);
// "SIGINT" or "SIGTERM", for the log line that says why a daemon stops.
const char* ShutdownSignalName(int signal_number);

}  // namespace dvpn::cli
