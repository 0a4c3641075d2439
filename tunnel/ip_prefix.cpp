#include "tunnel/ip_prefix.h"

#include <charconv>

namespace dvpn::tunnel {

std::optional<IpPrefix> IpPrefix::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  auto address = IpAddress::Parse(text.substr(0, slash));
  if (!address) return std::nullopt;
  IpPrefix p{*address, AddressBits(*address)};
  if (slash == std::string_view::npos) return p;
  const std::string_view digits = text.substr(slash + 1);
  unsigned length = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
  if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty() ||
      length > AddressBits(*address)) {
    return std::nullopt;
  }
  p.length = static_cast<uint8_t>(length);
  return p;
}

std::string IpPrefix::ToString() const { return address.ToString() + "/" + std::to_string(length); }

IpPrefix IpPrefix::Network() const {
  IpPrefix p = *this;
  for (size_t i = p.length; i < AddressBits(p.address); ++i) {
    p.address.bytes[i / 8] &= static_cast<uint8_t>(~(0x80u >> (i % 8)));
  }
  return p;
}

bool IpPrefix::Contains(const IpAddress& a) const {
  if (a.family != address.family) return false;
  IpPrefix other{a, length};
  return other.Network().address == Network().address;
}

}  // namespace dvpn::tunnel
