#include "common/bytes.h"

#include <cassert>

namespace dvpn {

std::string ToHex(ByteSpan bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<std::vector<uint8_t>> FromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

Encoder& Encoder::U8(uint8_t v) {
  buf_.push_back(v);
  return *this;
}

Encoder& Encoder::U16(uint16_t v) {
  buf_.push_back(static_cast<uint8_t>(v >> 8));
  buf_.push_back(static_cast<uint8_t>(v));
  return *this;
}

Encoder& Encoder::U32(uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) buf_.push_back(static_cast<uint8_t>(v >> shift));
  return *this;
}

Encoder& Encoder::U64(uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) buf_.push_back(static_cast<uint8_t>(v >> shift));
  return *this;
}

Encoder& Encoder::Raw(ByteSpan bytes) {
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  return *this;
}

Encoder& Encoder::Tag(std::string_view tag) {
  assert(tag.size() <= 255);
  U8(static_cast<uint8_t>(tag.size()));
  return Raw(AsBytes(tag));
}

Encoder& Encoder::Bytes16(ByteSpan bytes) {
  assert(bytes.size() <= 0xffff);
  U16(static_cast<uint16_t>(bytes.size()));
  return Raw(bytes);
}

}  // namespace dvpn
