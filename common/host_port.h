#pragma once
// HOST:PORT as users write it in flags and configuration files: "127.0.0.1:7400",
// "[::1]:7443", "ledger.example:7400". Text only: nothing here resolves a name.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace dvpn {

enum class HostPortErrc {
  kMalformed,  // not HOST:PORT, a port out of range, not an IP literal where one is needed
};

// "host:port" split; the host of "[v6]:port" without brackets.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;  // brackets around an IPv6 host
};

// HOST:PORT with a port 0..65535 (`allow_zero`) or 1..65535. Error kMalformed, the message says
// what is wrong.
Result<HostPort, HostPortErrc> ParseHostPort(std::string_view text, bool allow_zero);
// An IPv4 or IPv6 literal to listen on, with a port (0: any free port).
Result<HostPort, HostPortErrc> ParseListenAddress(std::string_view text);

}  // namespace dvpn
