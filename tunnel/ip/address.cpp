#include "tunnel/ip/address.h"

#include <arpa/inet.h>

#include <algorithm>

namespace dvpn::tunnel::ip {

Address Address::V4(const std::array<uint8_t, 4>& a) {
  Address out;
  out.family = Family::kV4;
  std::copy(a.begin(), a.end(), out.bytes.begin());
  return out;
}

Address Address::V6(const std::array<uint8_t, 16>& a) {
  Address out;
  out.family = Family::kV6;
  out.bytes = a;
  return out;
}

std::string Address::ToString() const {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == Family::kV4 ? AF_INET : AF_INET6, bytes.data(), text, sizeof text);
  return text;
}

bool IsNotUnicastSource(const Address& a) {
  const auto& b = a.bytes;
  if (a.family == Family::kV4) return b[0] == 0 || b[0] == 127 || b[0] >= 224;
  if (b[0] == 0xff) return true;
  const bool zero_but_last = std::all_of(b.begin(), b.end() - 1, [](uint8_t x) { return x == 0; });
  return zero_but_last && (b[15] == 0 || b[15] == 1);
}

bool IsMulticastOrBroadcast(const Address& a) {
  const auto& b = a.bytes;
  if (a.family == Family::kV6) return b[0] == 0xff;
  const bool broadcast = b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255;
  return (b[0] >= 224 && b[0] <= 239) || broadcast;
}

}  // namespace dvpn::tunnel::ip
