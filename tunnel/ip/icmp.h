#pragma once
// The ICMP/ICMPv6 answers full-tunnel mode sends back through the tunnel to the sender of a
// packet: "administratively prohibited" for a flow the exit policy refused and "too big" for a
// packet longer than the inner MTU. Each is written into the caller's buffer (no allocation)
// as one whole IP packet with correct checksums; RFC 1122/1812/4443's rules on when no ICMP
// error may be sent are applied, and a refusal says which one. Byte layout and the rules, in
// order: docs/tunnel.md, "ICMP answers".

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/result.h"
#include "tunnel/ip/address.h"

namespace dvpn::tunnel::ip {

enum class IcmpErrc {
  kBadPacket = 1,          // no whole IPv4/IPv6 header, or an IPv6 chain that does not parse
  kFamilyMismatch,         // `from` is not of the offending packet's family
  kBadMtu,                 // too big: IPv4 MTU outside 68..65535, IPv6 MTU below 1280
  kNotFirstFragment,       // a fragment with offset != 0
  kIcmpError,              // the offending packet is an ICMP error (or an ICMPv6 Redirect)
  kSourceNotUnicast,       // its source is not one host (IsNotUnicastSource)
  kDestinationNotUnicast,  // its destination is multicast/broadcast (IPv6 too big excepted)
  kBufferTooSmall,         // `out` cannot hold the smallest allowed answer
};

const char* IcmpErrcName(IcmpErrc code);

// The largest answers: IPv4 576 bytes (RFC 1812 §4.3.2.3), IPv6 1280 (the minimum MTU).
inline constexpr size_t kMaxIcmpv4Answer = 576;
inline constexpr size_t kMaxIcmpv6Answer = 1280;
inline constexpr uint32_t kMinIpv4Mtu = 68;
inline constexpr uint32_t kMinIpv6Mtu = 1280;

// ICMP type 3 code 13 / ICMPv6 type 1 code 1 from `from` to the offending packet's source,
// quoting as much of it as fits. Returns the answer's size (bytes written at the start of
// `out`).
[[nodiscard]] Result<size_t, IcmpErrc> BuildProhibited(std::span<const uint8_t> offending,
                                                       const Address& from,
                                                       std::span<uint8_t> out);

// ICMP type 3 code 4 with the next-hop MTU / ICMPv6 type 2 code 0 with the MTU, likewise.
[[nodiscard]] Result<size_t, IcmpErrc> BuildTooBig(std::span<const uint8_t> offending,
                                                   const Address& from, uint32_t mtu,
                                                   std::span<uint8_t> out);

}  // namespace dvpn::tunnel::ip
