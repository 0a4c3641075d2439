#pragma once
// HOST:PORT as users write it in flags and configuration files: "127.0.0.1:7400",
// "[::1]:7443", "ledger.example:7400". Text only: nothing here resolves a name.

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace dvpn {

// "host:port" split; the host of "[v6]:port" without brackets.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;  // brackets around an IPv6 host
};

// HOST:PORT with a port 0..65535 (`allow_zero`) or 1..65535. The error says what is wrong.
std::expected<HostPort, std::string> ParseHostPort(std::string_view text, bool allow_zero);
// An IPv4 or IPv6 literal to listen on, with a port (0: any free port).
std::expected<HostPort, std::string> ParseListenAddress(std::string_view text);

}  // namespace dvpn
