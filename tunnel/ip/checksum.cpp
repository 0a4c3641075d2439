#include "tunnel/ip/checksum.h"

namespace dvpn::tunnel::ip {
namespace {

// Adds `bytes` as big-endian 16-bit words to an unfolded sum (no overflow below 2^47 bytes).
uint64_t Sum(std::span<const uint8_t> bytes, uint64_t sum) {
  size_t i = 0;
  for (; i + 1 < bytes.size(); i += 2) sum += uint32_t(bytes[i]) << 8 | bytes[i + 1];
  if (i < bytes.size()) sum += uint32_t(bytes[i]) << 8;
  return sum;
}

uint16_t Fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}

}  // namespace

uint16_t Checksum(std::span<const uint8_t> bytes, uint64_t initial) {
  return uint16_t(~Fold(Sum(bytes, initial)));
}

uint16_t TransportChecksum(const Address& src, const Address& dst, uint8_t protocol,
                           std::span<const uint8_t> segment) {
  uint64_t pseudo = Sum(src.view(), 0);
  pseudo = Sum(dst.view(), pseudo);
  // IPv4: zero, protocol, u16 length; IPv6: u32 length, three zero bytes, next header. As
  // 16-bit words both come to protocol + the length's words.
  const uint64_t length = segment.size();
  pseudo += protocol + (length & 0xffff) + (length >> 16);
  return Checksum(segment, pseudo);
}

uint16_t ChecksumAdjust(uint16_t checksum, uint16_t old_word, uint16_t new_word) {
  // HC' = ~(~HC + ~m + m')
  const uint64_t sum = uint16_t(~checksum) + uint64_t(uint16_t(~old_word)) + new_word;
  return uint16_t(~Fold(sum));
}

}  // namespace dvpn::tunnel::ip
