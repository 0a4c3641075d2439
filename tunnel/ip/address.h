#pragma once
// An IPv4 or IPv6 address as it appears in a packet, and the address classes the ICMP rules
// need. A value type; tunnel/ip depends on nothing but common/, so this is not
// tunnel::IpAddress, but it has the same layout (family, 16 bytes, IPv4 in the first 4, the
// rest zero) and converts to it field by field. docs/tunnel.md, "IP packets".

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace dvpn::tunnel::ip {

enum class Family : uint8_t { kV4 = 4, kV6 = 6 };

struct Address {
  Family family = Family::kV4;
  std::array<uint8_t, 16> bytes{};  // IPv4: the first 4 bytes, the other 12 zero

  static Address V4(const std::array<uint8_t, 4>& a);
  static Address V6(const std::array<uint8_t, 16>& a);
  // 4 bytes for IPv4, 16 for IPv6.
  size_t size() const { return family == Family::kV4 ? 4 : 16; }
  std::span<const uint8_t> view() const { return std::span(bytes).first(size()); }
  // Dotted quad or RFC 5952 text (inet_ntop).
  std::string ToString() const;

  friend bool operator==(const Address&, const Address&) = default;
};

// Not one host (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)): IPv4 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4,
// 240.0.0.0/4; IPv6 ::, ::1, ff00::/8. No ICMP error is sent to such a source.
bool IsNotUnicastSource(const Address& a);
// IPv4 224.0.0.0/4 and 255.255.255.255; IPv6 ff00::/8.
bool IsMulticastOrBroadcast(const Address& a);

}  // namespace dvpn::tunnel::ip
