#pragma once
// One named spdlog logger per component ("ledger", "rpc", "payments", ...). Every logger writes
// to stderr through one shared sink that escapes each message (common/text.h: bytes that are not
// printable UTF-8 become \xNN) and cuts it at 4 KiB, so text from a peer cannot steer a terminal
// or forge a line. gRPC's and protobuf's own output joins them through grpc_log/grpc_log.h.

#include <exception>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace dvpn {

// Returns the logger called `name`, creating it on first use. Thread-safe.
std::shared_ptr<spdlog::logger> Logger(const std::string& name);

// Sets the level of every logger from "trace", "debug", "info", "warn", "error" or "off".
// Returns false (and changes nothing) for any other string.
bool SetLogLevel(const std::string& level);

// The completion of a background task (an Asio co_spawn): an exception there is our bug; logs
// it on `log` as "<component>: task failed: <what>" and returns, so the process keeps running.
// A null `e` (the task ended normally) logs nothing.
void LogTaskFailure(spdlog::logger& log, const char* component, std::exception_ptr e);

}  // namespace dvpn
