#include "common/host_port.h"

#include <arpa/inet.h>

namespace dvpn {
namespace {

std::unexpected<Error<HostPortErrc>> Malformed(std::string message) {
  return Fail(HostPortErrc::kMalformed, std::move(message));
}

}  // namespace

std::string HostPort::ToString() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

Result<HostPort, HostPortErrc> ParseHostPort(std::string_view text, bool allow_zero) {
  const std::string quoted = "\"" + std::string(text) + "\"";
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return Malformed("expected HOST:PORT, got " + quoted);
  }
  HostPort out;
  out.host = std::string(text.substr(0, colon));
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  const std::string_view port = text.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
      std::stoul(std::string(port)) > 65535) {
    return Malformed("bad port in " + quoted + " (expected 0..65535)");
  }
  out.port = static_cast<uint16_t>(std::stoul(std::string(port)));
  if (out.port == 0 && !allow_zero) {
    return Malformed("port 0 in " + quoted + " (expected 1..65535)");
  }
  if (out.host.empty()) return Malformed("empty host in " + quoted);
  return out;
}

Result<HostPort, HostPortErrc> ParseListenAddress(std::string_view text) {
  auto hp = ParseHostPort(text, true);
  if (!hp) return std::unexpected(std::move(hp.error()));
  in6_addr v6{};
  in_addr v4{};
  if (inet_pton(AF_INET, hp->host.c_str(), &v4) != 1 &&
      inet_pton(AF_INET6, hp->host.c_str(), &v6) != 1) {
    return Malformed("\"" + hp->host + "\" is not an IPv4 or IPv6 literal");
  }
  return hp;
}

}  // namespace dvpn
