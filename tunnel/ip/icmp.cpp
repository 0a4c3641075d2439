#include "tunnel/ip/icmp.h"

#include <algorithm>

#include "tunnel/ip/checksum.h"
#include "tunnel/ip/packet.h"
#include "tunnel/ip/walk_internal.h"

namespace dvpn::tunnel::ip {
namespace {

enum class Kind { kProhibited, kTooBig };

void Put16(std::span<uint8_t> p, size_t at, uint16_t v) {
  p[at] = uint8_t(v >> 8);
  p[at + 1] = uint8_t(v);
}

// Messages stay within 15 characters: std::string keeps them without allocating.
const char* Message(IcmpErrc code) {
  switch (code) {
    case IcmpErrc::kBadPacket: return "bad packet";
    case IcmpErrc::kFamilyMismatch: return "family mismatch";
    case IcmpErrc::kBadMtu: return "bad mtu";
    case IcmpErrc::kNotFirstFragment: return "later fragment";
    case IcmpErrc::kIcmpError: return "icmp error";
    case IcmpErrc::kSourceNotUnicast: return "bad source";
    case IcmpErrc::kDestinationNotUnicast: return "bad destination";
    case IcmpErrc::kBufferTooSmall: return "buffer small";
  }
  return "no answer";
}

std::unexpected<Error<IcmpErrc>> Refuse(IcmpErrc code) { return Fail(code, Message(code)); }

bool IsIcmpErrorType(Family family, uint8_t type) {
  if (family == Family::kV4) return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
  return type < 128 || type == 137;
}

Result<size_t, IcmpErrc> Build(Kind kind, std::span<const uint8_t> offending, const Address& from,
                               uint32_t mtu, std::span<uint8_t> out) {
  detail::IpLayer layer;
  PacketErrc ignored{};
  if (!detail::WalkIp(offending, detail::WalkMode::kClassify, false, layer, ignored)) {
    return Refuse(IcmpErrc::kBadPacket);
  }
  const bool v4 = layer.family == Family::kV4;
  if (from.family != layer.family) return Refuse(IcmpErrc::kFamilyMismatch);
  if (kind == Kind::kTooBig && (v4 ? (mtu < kMinIpv4Mtu || mtu > 0xffff) : mtu < kMinIpv6Mtu)) {
    return Refuse(IcmpErrc::kBadMtu);
  }
  if (layer.later_fragment) return Refuse(IcmpErrc::kNotFirstFragment);
  if (layer.protocol == (v4 ? kProtoIcmp : kProtoIcmpv6)) {
    // Too short to hold its type: it may be an error, so it is treated as one.
    if (layer.l4_offset >= offending.size() ||
        IsIcmpErrorType(layer.family, offending[layer.l4_offset])) {
      return Refuse(IcmpErrc::kIcmpError);
    }
  }
  const Address src = detail::AddressAt(offending, layer.family, v4 ? 12 : 8);
  const Address dst = detail::AddressAt(offending, layer.family, v4 ? 16 : 24);
  if (IsNotUnicastSource(src)) return Refuse(IcmpErrc::kSourceNotUnicast);
  if (IsMulticastOrBroadcast(dst) && (v4 || kind != Kind::kTooBig)) {
    return Refuse(IcmpErrc::kDestinationNotUnicast);
  }

  const size_t header = v4 ? 28 : 48;  // IP header + the ICMP header
  const size_t largest = (v4 ? kMaxIcmpv4Answer : kMaxIcmpv6Answer) - header;
  const size_t smallest = std::min(offending.size(), v4 ? size_t(layer.l4_offset) + 8 : 48);
  const size_t room = out.size() > header ? out.size() - header : 0;
  const size_t quoted = std::min({offending.size(), largest, room});
  if (out.size() < header || quoted < smallest) return Refuse(IcmpErrc::kBufferTooSmall);
  const size_t total = header + quoted;

  std::fill(out.begin(), out.begin() + header, uint8_t{0});
  std::copy_n(offending.begin(), quoted, out.begin() + header);
  const size_t icmp = v4 ? 20 : 40;
  if (v4) {
    out[0] = 0x45;
    out[1] = 0xc0;  // precedence "internetwork control"
    Put16(out, 2, uint16_t(total));
    Put16(out, 6, 0x4000);  // DF: an atomic datagram, identification 0
    out[8] = 64;
    out[9] = kProtoIcmp;
    std::copy_n(from.bytes.begin(), 4, out.begin() + 12);
    std::copy_n(src.bytes.begin(), 4, out.begin() + 16);
    out[icmp] = 3;
    out[icmp + 1] = kind == Kind::kTooBig ? 4 : 13;
    if (kind == Kind::kTooBig) Put16(out, icmp + 6, uint16_t(mtu));
    Put16(out, 10, Checksum(out.first(20)));
    Put16(out, icmp + 2, Checksum(out.subspan(icmp, total - icmp)));
  } else {
    out[0] = 0x60;
    Put16(out, 4, uint16_t(total - 40));
    out[6] = kProtoIcmpv6;
    out[7] = 64;
    std::copy_n(from.bytes.begin(), 16, out.begin() + 8);
    std::copy_n(src.bytes.begin(), 16, out.begin() + 24);
    out[icmp] = kind == Kind::kTooBig ? 2 : 1;
    out[icmp + 1] = kind == Kind::kTooBig ? 0 : 1;
    if (kind == Kind::kTooBig) {
      Put16(out, icmp + 4, uint16_t(mtu >> 16));
      Put16(out, icmp + 6, uint16_t(mtu));
    }
    Put16(out, icmp + 2,
          TransportChecksum(from, src, kProtoIcmpv6, out.subspan(icmp, total - icmp)));
  }
  return total;
}

}  // namespace

const char* IcmpErrcName(IcmpErrc code) {
  switch (code) {
    case IcmpErrc::kBadPacket: return "kBadPacket";
    case IcmpErrc::kFamilyMismatch: return "kFamilyMismatch";
    case IcmpErrc::kBadMtu: return "kBadMtu";
    case IcmpErrc::kNotFirstFragment: return "kNotFirstFragment";
    case IcmpErrc::kIcmpError: return "kIcmpError";
    case IcmpErrc::kSourceNotUnicast: return "kSourceNotUnicast";
    case IcmpErrc::kDestinationNotUnicast: return "kDestinationNotUnicast";
    case IcmpErrc::kBufferTooSmall: return "kBufferTooSmall";
  }
  return "unknown";
}

Result<size_t, IcmpErrc> BuildProhibited(std::span<const uint8_t> offending, const Address& from,
                                         std::span<uint8_t> out) {
  return Build(Kind::kProhibited, offending, from, 0, out);
}

Result<size_t, IcmpErrc> BuildTooBig(std::span<const uint8_t> offending, const Address& from,
                                     uint32_t mtu, std::span<uint8_t> out) {
  return Build(Kind::kTooBig, offending, from, mtu, out);
}

}  // namespace dvpn::tunnel::ip
