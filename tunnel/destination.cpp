#include "tunnel/destination.h"

#include <algorithm>
#include <cstdio>

namespace dvpn::tunnel {
namespace {

bool ValidDomain(std::string_view name) {
  return !name.empty() && name.size() <= kMaxDomainLength &&
         name.find('\0') == std::string_view::npos;
}

}  // namespace

Destination Destination::Ipv4(const std::array<uint8_t, 4>& a, uint16_t port) {
  Destination d;
  d.kind = Kind::kIpv4;
  d.v4 = a;
  d.port = port;
  return d;
}

Destination Destination::Ipv6(const std::array<uint8_t, 16>& a, uint16_t port) {
  Destination d;
  d.kind = Kind::kIpv6;
  d.v6 = a;
  d.port = port;
  return d;
}

Destination Destination::Domain(std::string name, uint16_t port) {
  Destination d;
  d.kind = Kind::kDomain;
  d.domain = std::move(name);
  d.port = port;
  return d;
}

bool IsValidOpenFailure(uint8_t code) { return code >= 1 && code <= 8; }

const char* OpenFailureName(OpenFailure failure) {
  switch (failure) {
    case OpenFailure::kGeneral:
      return "general failure";
    case OpenFailure::kNotAllowed:
      return "not allowed by ruleset";
    case OpenFailure::kNetworkUnreachable:
      return "network unreachable";
    case OpenFailure::kHostUnreachable:
      return "host unreachable";
    case OpenFailure::kRefused:
      return "connection refused";
    case OpenFailure::kTtlExpired:
      return "TTL expired";
    case OpenFailure::kCommandNotSupported:
      return "command not supported";
    case OpenFailure::kAddressTypeNotSupported:
      return "address type not supported";
  }
  return "unknown";
}

size_t EncodedDestinationSize(const Destination& d) {
  switch (d.kind) {
    case Destination::Kind::kIpv4:
      return 1 + 4 + 2;
    case Destination::Kind::kIpv6:
      return 1 + 16 + 2;
    case Destination::Kind::kDomain:
      return 1 + 1 + d.domain.size() + 2;
  }
  return 0;
}

Result<size_t, DestinationErrc> EncodeDestination(const Destination& d, std::span<uint8_t> out) {
  if (d.kind == Destination::Kind::kDomain && !ValidDomain(d.domain)) {
    return Fail(DestinationErrc::kBadDomain, "domain must be 1..255 bytes without NUL");
  }
  const size_t size = EncodedDestinationSize(d);
  if (out.size() < size) return Fail(DestinationErrc::kBufferTooSmall, "destination buffer");
  size_t at = 0;
  switch (d.kind) {
    case Destination::Kind::kIpv4:
      out[at++] = kAtypIpv4;
      at = std::copy(d.v4.begin(), d.v4.end(), out.begin() + at) - out.begin();
      break;
    case Destination::Kind::kIpv6:
      out[at++] = kAtypIpv6;
      at = std::copy(d.v6.begin(), d.v6.end(), out.begin() + at) - out.begin();
      break;
    case Destination::Kind::kDomain:
      out[at++] = kAtypDomain;
      out[at++] = static_cast<uint8_t>(d.domain.size());
      for (char c : d.domain) out[at++] = static_cast<uint8_t>(c);
      break;
  }
  out[at++] = static_cast<uint8_t>(d.port >> 8);
  out[at++] = static_cast<uint8_t>(d.port);
  return at;
}

Result<size_t, DestinationErrc> ValidateDestinationPrefix(std::span<const uint8_t> in) {
  if (in.empty()) return Fail(DestinationErrc::kTruncated, "missing address type");
  size_t need = 0;
  switch (in[0]) {
    case kAtypIpv4:
      need = 1 + 4 + 2;
      break;
    case kAtypIpv6:
      need = 1 + 16 + 2;
      break;
    case kAtypDomain: {
      if (in.size() < 2) return Fail(DestinationErrc::kTruncated, "missing domain length");
      const size_t len = in[1];
      if (len == 0) return Fail(DestinationErrc::kBadDomain, "empty domain");
      need = 1 + 1 + len + 2;
      if (in.size() < need) return Fail(DestinationErrc::kTruncated, "domain truncated");
      if (std::find(in.begin() + 2, in.begin() + 2 + len, uint8_t{0}) != in.begin() + 2 + len) {
        return Fail(DestinationErrc::kBadDomain, "NUL byte in domain");
      }
      break;
    }
    default:
      return Fail(DestinationErrc::kBadType, "unknown address type " + std::to_string(in[0]));
  }
  if (in.size() < need) return Fail(DestinationErrc::kTruncated, "destination truncated");
  return need;
}

Result<Destination, DestinationErrc> DecodeDestination(std::span<const uint8_t> in) {
  auto size = ValidateDestinationPrefix(in);
  if (!size) return std::unexpected(std::move(size.error()));
  if (*size != in.size()) return Fail(DestinationErrc::kTrailingBytes, "bytes after destination");
  Destination d;
  size_t at = 1;
  switch (in[0]) {
    case kAtypIpv4:
      d.kind = Destination::Kind::kIpv4;
      std::copy_n(in.begin() + at, 4, d.v4.begin());
      at += 4;
      break;
    case kAtypIpv6:
      d.kind = Destination::Kind::kIpv6;
      std::copy_n(in.begin() + at, 16, d.v6.begin());
      at += 16;
      break;
    default: {  // kAtypDomain, validated above
      d.kind = Destination::Kind::kDomain;
      const size_t len = in[at++];
      d.domain.assign(reinterpret_cast<const char*>(in.data() + at), len);
      at += len;
      break;
    }
  }
  d.port = static_cast<uint16_t>((uint16_t{in[at]} << 8) | in[at + 1]);
  return d;
}

std::string ToString(const Destination& d) {
  char buf[64];
  switch (d.kind) {
    case Destination::Kind::kIpv4:
      std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u:%u", d.v4[0], d.v4[1], d.v4[2], d.v4[3], d.port);
      return buf;
    case Destination::Kind::kIpv6: {
      std::string s = "[";
      for (int i = 0; i < 8; ++i) {
        std::snprintf(buf, sizeof(buf), i == 0 ? "%x" : ":%x",
                      (unsigned{d.v6[2 * i]} << 8) | d.v6[2 * i + 1]);
        s += buf;
      }
      std::snprintf(buf, sizeof(buf), "]:%u", d.port);
      return s + buf;
    }
    case Destination::Kind::kDomain:
      return d.domain + ":" + std::to_string(d.port);
  }
  return "?";
}

}  // namespace dvpn::tunnel
