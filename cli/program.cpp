#include "cli/program.h"

#include <iostream>

#include "common/log.h"
#include "grpc_log/grpc_log.h"

namespace dvpn::cli {

int Refuse(const char* program, const std::string& message) {
  std::cerr << program << ": " << message << "\n";
  return kExitConfig;
}

int Fail(const char* program, const std::string& message) {
  std::cerr << program << ": " << message << "\n";
  return kExitRuntime;
}

std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitConfig;
  }
  return std::nullopt;
}

Result<void, Errc> StartLogging(const std::string& level) {
  if (!SetLogLevel(level)) {
    return dvpn::Fail(Errc::kBadInput, "--log-level: unknown level \"" + level +
                                           "\" (trace, debug, info, warn, error, off)");
  }
  grpc_log::RouteLibraryLogs();
  return {};
}

sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForShutdownSignal(const sigset_t& signals) {
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  return signal_number;
}

const char* ShutdownSignalName(int signal_number) {
  return signal_number == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace dvpn::cli
