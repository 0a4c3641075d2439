#pragma once
// Fixed-size byte strings, hex conversion, and the big-endian Encoder used for every
// domain-separated signed encoding (docs/protocol.md, "Encoding rules").

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dvpn {

using ByteSpan = std::span<const uint8_t>;
template <size_t N>
using ByteArray = std::array<uint8_t, N>;
using Hash32 = ByteArray<32>;

std::string ToHex(ByteSpan bytes);
// Lowercase or uppercase hex, even length; empty on anything else.
std::optional<std::vector<uint8_t>> FromHex(std::string_view hex);

// Copies `bytes` into a fixed array; empty when the size differs.
template <size_t N>
std::optional<ByteArray<N>> ToArray(ByteSpan bytes) {
  if (bytes.size() != N) return std::nullopt;
  ByteArray<N> out;
  for (size_t i = 0; i < N; ++i) out[i] = bytes[i];
  return out;
}

inline ByteSpan AsBytes(std::string_view s) {
  return ByteSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Appends fields in network byte order. Variable-length fields carry an explicit length prefix
// chosen by the caller (see docs/protocol.md); the Encoder itself adds nothing implicitly.
class Encoder {
 public:
  Encoder& U8(uint8_t v);
  Encoder& U16(uint16_t v);
  Encoder& U32(uint32_t v);
  Encoder& U64(uint64_t v);
  Encoder& Raw(ByteSpan bytes);
  // One length byte, then the ASCII tag. Tags are at most 255 bytes (asserted: they are ours).
  Encoder& Tag(std::string_view tag);
  // u16 length, then the bytes. Caller guarantees size <= 65535.
  Encoder& Bytes16(ByteSpan bytes);

  const std::vector<uint8_t>& bytes() const { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

}  // namespace dvpn
