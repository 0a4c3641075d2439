#include "tunnel/ip/checksum.h"

#include <bit>
#include <cstring>

namespace dvpn::tunnel::ip {
namespace {

uint16_t Fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}

// Adds `bytes` as big-endian 16-bit words to an unfolded sum. Folded, the result equals what
// adding the words one by one gives (no overflow for sums below 2^63 and buffers below 2^31
// bytes).
//
// It reads 8 bytes at a time in the host's order and adds each half as a 32-bit number to a
// 64-bit accumulator, so no carry is lost. A 32-bit number is congruent to the sum of its two
// 16-bit halves modulo 0xffff, and on a little-endian host every 16-bit word is read
// byte-swapped, which multiplies it by 256 modulo 0xffff; swapping the folded sum back undoes
// that (256 * 256 = 65536 = 1 modulo 0xffff). Fold keeps zero apart from 0xffff (only a zero
// sum folds to 0), and the data's sum is zero only when all its bytes are, as with the
// word-by-word sum.
uint64_t Sum(std::span<const uint8_t> bytes, uint64_t sum) {
  const uint8_t* p = bytes.data();
  size_t n = bytes.size();
  uint64_t a = 0;
  uint64_t b = 0;  // two accumulators: two independent chains of additions
  for (; n >= 16; n -= 16, p += 16) {
    uint64_t w0;
    uint64_t w1;
    std::memcpy(&w0, p, 8);
    std::memcpy(&w1, p + 8, 8);
    a += (w0 & 0xffffffff) + (w0 >> 32);
    b += (w1 & 0xffffffff) + (w1 >> 32);
  }
  a += b;
  if (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    a += (w & 0xffffffff) + (w >> 32);
    n -= 8;
    p += 8;
  }
  // The last 0..7 bytes, in the host's order like the words above (an odd last byte is the
  // first byte of a word whose second is zero).
  uint8_t tail[8] = {};
  if (n != 0) std::memcpy(tail, p, n);  // p may be null when bytes is empty
  uint64_t w;
  std::memcpy(&w, tail, 8);
  a += (w & 0xffffffff) + (w >> 32);
  uint16_t folded = Fold(a);
  if constexpr (std::endian::native == std::endian::little) {
    folded = uint16_t(folded << 8 | folded >> 8);
  }
  return sum + folded;
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
