#pragma once
// Small helpers shared by the tunnel executables (wiring only): HOST:PORT parsing and the
// atomic port file.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

// "127.0.0.1:0", "[::1]:1080", "localhost:9000" (names resolved once, first address).
// nullopt with `error` set when it cannot be parsed or resolved.
inline std::optional<tcp::endpoint> ResolveHostPort(asio::io_context& io, const std::string& text,
                                                    std::string* error) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    *error = "expected HOST:PORT, got \"" + text + "\"";
    return std::nullopt;
  }
  std::string host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    *error = "cannot resolve \"" + text + "\": " + (ec ? ec.message() : "no address");
    return std::nullopt;
  }
  return results.begin()->endpoint();
}

}  // namespace dvpn::tunnel::session
