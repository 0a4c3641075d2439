#pragma once
// The log output of the libraries that parse what peers send us, gRPC's core (gpr_log) and
// protobuf, routed through the project's loggers ("grpc", "protobuf" in common/log.h) instead
// of straight to stderr. Those libraries log parse failures with the peer's bytes in them, so
// an unauthenticated connection could write hundreds of megabytes of its own terminal escape
// sequences into an operator's log. Routed, each message is cut to kMaxLibraryLogMessage bytes,
// escaped like every log line (common/log.h), and rate-limited: at most kLibraryLogBurst
// messages per kLibraryLogWindow across both libraries, then one line saying how many were
// dropped (under a constant flood at most about 40 KB a minute).
//
// Every executable that links gRPC calls RouteLibraryLogs once at the top of main, after its
// log level is set and before any gRPC object exists.

#include <chrono>
#include <cstddef>

namespace dvpn::grpc_log {

inline constexpr size_t kMaxLibraryLogMessage = 512;
inline constexpr int kLibraryLogBurst = 20;
inline constexpr std::chrono::seconds kLibraryLogWindow{60};

// Installs the gRPC log function and the protobuf log handler, and sets gRPC's verbosity from
// the current spdlog level (debug or trace: gRPC's debug messages too; otherwise its errors
// only; GRPC_VERBOSITY is ignored). gRPC's errors are logged at warn: a peer can cause them.
// Calling it again only updates the verbosity. Thread-safe.
void RouteLibraryLogs();

}  // namespace dvpn::grpc_log
