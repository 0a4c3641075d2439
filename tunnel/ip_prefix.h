#pragma once
// An IPv4 or IPv6 prefix ("10.231.0.0/16", "fd00::/64"): the exit's inner pools, routes and
// interface addresses (docs/full-tunnel.md). Pure value type.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tunnel/exit_policy.h"

namespace dvpn::tunnel {

struct IpPrefix {
  IpAddress address;
  uint8_t length = 0;  // 0..32 for IPv4, 0..128 for IPv6

  // "10.0.0.0/8", "fd00::/64"; a bare address is a host prefix (/32 or /128). The address keeps
  // its host bits (so "10.1.2.3/16" names an interface address); nullopt when malformed.
  static std::optional<IpPrefix> Parse(std::string_view text);
  std::string ToString() const;
  // The prefix with its host bits cleared ("10.231.7.1/16" -> "10.231.0.0/16").
  IpPrefix Network() const;
  // True when `a` is of the same family and inside the prefix.
  bool Contains(const IpAddress& a) const;
  friend bool operator==(const IpPrefix&, const IpPrefix&) = default;
};

// 32 for IPv4, 128 for IPv6.
inline uint8_t AddressBits(const IpAddress& a) {
  return a.family == IpAddress::Family::kV4 ? 32 : 128;
}

}  // namespace dvpn::tunnel
