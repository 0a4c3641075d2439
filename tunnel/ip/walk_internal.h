#pragma once
// The IP layer of a packet, walked once for the parser (every check of docs/tunnel.md, "Parsing
// one packet", in order) and for the ICMP builders (only what classifying the offending packet
// needs). Private to tunnel/ip.

#include <cstdint>
#include <span>

#include "tunnel/ip/address.h"
#include "tunnel/ip/packet.h"

namespace dvpn::tunnel::ip::detail {

struct IpLayer {
  Family family = Family::kV4;
  uint8_t protocol = 0;  // after IPv6 extension headers (for a later fragment: unknown, 0)
  uint8_t ttl = 0;
  uint32_t l4_offset = 0;
  bool fragment = false;        // IPv4 MF or offset != 0; an IPv6 Fragment header
  bool later_fragment = false;  // fragment offset != 0
};

enum class WalkMode {
  kParse,     // ParsePacket's checks; checksum_ok says whether to verify the header checksum
  kClassify,  // the builders: whole fixed header (and IHL), the IPv6 chain through first fragments
};

// Returns true and fills `out`, or false with `error` set.
bool WalkIp(std::span<const uint8_t> p, WalkMode mode, bool verify_checksum, IpLayer& out,
            PacketErrc& error);

// The address of `family` at `at` in `p` (which holds it).
Address AddressAt(std::span<const uint8_t> p, Family family, size_t at);

}  // namespace dvpn::tunnel::ip::detail
