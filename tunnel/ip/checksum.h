#pragma once
// The Internet checksum (RFC 1071) and its uses in IP, TCP, UDP, ICMP and ICMPv6: the one
// implementation in the code base. Pure functions, no allocation.

#include <cstdint>
#include <span>

#include "tunnel/ip/address.h"

namespace dvpn::tunnel::ip {

// The one's complement of the one's complement sum of `bytes` (an odd length is padded with a
// zero byte), starting from the unfolded partial sum `initial`. Over data that holds a correct
// checksum field the result is 0; with the field zeroed it is the value to store.
uint16_t Checksum(std::span<const uint8_t> bytes, uint64_t initial = 0);

// The checksum of a transport segment (TCP, UDP, ICMPv6; `segment` = its header and payload)
// with the pseudo-header of `src`, `dst` (same family), `protocol` and the segment's length
// (RFC 768/793 for IPv4, RFC 8200 §8.1 for IPv6). 0 when the segment's own checksum field is
// right; with the field zeroed, the value to store (UDP stores a computed 0 as 0xffff).
uint16_t TransportChecksum(const Address& src, const Address& dst, uint8_t protocol,
                           std::span<const uint8_t> segment);

// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changed from
// `old_word` to `new_word`.
uint16_t ChecksumAdjust(uint16_t checksum, uint16_t old_word, uint16_t new_word);

}  // namespace dvpn::tunnel::ip
