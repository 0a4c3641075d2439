#include "tunnel/ip/packet.h"

#include <cstdio>

#include "tunnel/ip/checksum.h"
#include "tunnel/ip/walk_internal.h"

namespace dvpn::tunnel::ip {
namespace {

using detail::IpLayer;
using detail::WalkMode;

uint16_t Get16(std::span<const uint8_t> p, size_t at) { return uint16_t(p[at] << 8 | p[at + 1]); }

void Put16(std::span<uint8_t> p, size_t at, uint16_t v) {
  p[at] = uint8_t(v >> 8);
  p[at + 1] = uint8_t(v);
}

constexpr uint8_t kHopByHop = 0;
constexpr uint8_t kRouting = 43;
constexpr uint8_t kFragmentHeader = 44;
constexpr uint8_t kDestinationOptions = 60;

// Messages stay within 15 characters: std::string keeps them without allocating.
const char* Message(PacketErrc code) {
  switch (code) {
    case PacketErrc::kTruncated: return "truncated";
    case PacketErrc::kBadVersion: return "bad version";
    case PacketErrc::kBadHeaderLength: return "bad hdr length";
    case PacketErrc::kLengthMismatch: return "length mismatch";
    case PacketErrc::kBadChecksum: return "bad checksum";
    case PacketErrc::kZeroTtl: return "zero ttl";
    case PacketErrc::kFragment: return "fragment";
    case PacketErrc::kBadExtensionHeader: return "bad ext header";
    case PacketErrc::kTooManyExtensionHeaders: return "too many ext";
  }
  return "bad packet";
}

bool Refuse(PacketErrc& error, PacketErrc code) {
  error = code;
  return false;
}

bool WalkV4(std::span<const uint8_t> p, WalkMode mode, bool verify_checksum, IpLayer& out,
            PacketErrc& error) {
  if (p.size() < kIpv4MinHeader) return Refuse(error, PacketErrc::kTruncated);
  const size_t ihl = size_t(p[0] & 0x0f) * 4;
  if (ihl < kIpv4MinHeader) return Refuse(error, PacketErrc::kBadHeaderLength);
  if (ihl > p.size()) return Refuse(error, PacketErrc::kTruncated);
  const uint16_t flags_offset = Get16(p, 6);
  out.family = Family::kV4;
  out.protocol = p[9];
  out.ttl = p[8];
  out.l4_offset = uint32_t(ihl);
  out.fragment = (flags_offset & 0x3fff) != 0;  // MF or an offset
  out.later_fragment = (flags_offset & 0x1fff) != 0;
  if (mode == WalkMode::kClassify) return true;
  if (Get16(p, 2) != p.size()) return Refuse(error, PacketErrc::kLengthMismatch);
  if (verify_checksum && Checksum(p.first(ihl)) != 0) {
    return Refuse(error, PacketErrc::kBadChecksum);
  }
  if (out.ttl == 0) return Refuse(error, PacketErrc::kZeroTtl);
  if (out.fragment) return Refuse(error, PacketErrc::kFragment);
  return true;
}

bool WalkV6(std::span<const uint8_t> p, WalkMode mode, IpLayer& out, PacketErrc& error) {
  if (p.size() < kIpv6Header) return Refuse(error, PacketErrc::kTruncated);
  out.family = Family::kV6;
  out.ttl = p[7];
  if (mode == WalkMode::kParse) {
    if (kIpv6Header + Get16(p, 4) != p.size()) return Refuse(error, PacketErrc::kLengthMismatch);
    if (out.ttl == 0) return Refuse(error, PacketErrc::kZeroTtl);
  }
  uint8_t next = p[6];
  size_t at = kIpv6Header;
  for (int count = 0;; ++count) {
    if (next != kHopByHop && next != kRouting && next != kFragmentHeader &&
        next != kDestinationOptions) {
      break;
    }
    if (next == kHopByHop && count != 0) return Refuse(error, PacketErrc::kBadExtensionHeader);
    if (count == kMaxExtensionHeaders) return Refuse(error, PacketErrc::kTooManyExtensionHeaders);
    if (p.size() - at < 8) return Refuse(error, PacketErrc::kTruncated);  // each is >= 8 bytes
    const size_t length = next == kFragmentHeader ? 8 : (size_t(p[at + 1]) + 1) * 8;
    if (p.size() - at < length) return Refuse(error, PacketErrc::kTruncated);
    if (next == kFragmentHeader) {
      out.fragment = true;
      if (mode == WalkMode::kParse) return Refuse(error, PacketErrc::kFragment);
      if ((Get16(p, at + 2) >> 3) != 0) {
        out.later_fragment = true;  // what follows is the middle of the payload
        out.protocol = 0;
        out.l4_offset = uint32_t(at + length);
        return true;
      }
    }
    next = p[at];
    at += length;
  }
  out.protocol = next;
  out.l4_offset = uint32_t(at);
  return true;
}

// The transport's checks (docs/tunnel.md, the transport table); fills ports, flags, ICMP type
// and code and the payload offset.
bool ParseTransport(std::span<const uint8_t> p, bool verify_checksums, PacketInfo& info,
                    PacketErrc& error) {
  const auto segment = p.subspan(info.l4_offset);
  info.payload_offset = info.l4_offset;
  const bool v4 = info.family == Family::kV4;
  if (info.protocol == kProtoTcp) {
    if (segment.size() < 20) return Refuse(error, PacketErrc::kTruncated);
    const size_t data_offset = size_t(segment[12] >> 4) * 4;
    if (data_offset < 20 || data_offset > segment.size()) {
      return Refuse(error, PacketErrc::kBadHeaderLength);
    }
    if (verify_checksums && TransportChecksum(info.src, info.dst, kProtoTcp, segment) != 0) {
      return Refuse(error, PacketErrc::kBadChecksum);
    }
    info.src_port = Get16(segment, 0);
    info.dst_port = Get16(segment, 2);
    info.tcp_flags = segment[13];
    info.payload_offset = info.l4_offset + uint32_t(data_offset);
  } else if (info.protocol == kProtoUdp) {
    if (segment.size() < 8) return Refuse(error, PacketErrc::kTruncated);
    if (Get16(segment, 4) != segment.size()) return Refuse(error, PacketErrc::kLengthMismatch);
    if (verify_checksums) {
      const bool zero = Get16(segment, 6) == 0;  // "not computed": IPv4 only
      if (zero ? !v4 : TransportChecksum(info.src, info.dst, kProtoUdp, segment) != 0) {
        return Refuse(error, PacketErrc::kBadChecksum);
      }
    }
    info.src_port = Get16(segment, 0);
    info.dst_port = Get16(segment, 2);
    info.payload_offset = info.l4_offset + 8;
  } else if ((v4 && info.protocol == kProtoIcmp) || (!v4 && info.protocol == kProtoIcmpv6)) {
    if (segment.size() < 8) return Refuse(error, PacketErrc::kTruncated);
    if (verify_checksums) {
      const uint16_t sum = v4 ? Checksum(segment)
                              : TransportChecksum(info.src, info.dst, kProtoIcmpv6, segment);
      if (sum != 0) return Refuse(error, PacketErrc::kBadChecksum);
    }
    info.icmp_type = segment[0];
    info.icmp_code = segment[1];
    const bool echo = v4 ? (info.icmp_type == 8 || info.icmp_type == 0)
                         : (info.icmp_type == 128 || info.icmp_type == 129);
    if (echo) info.src_port = info.dst_port = Get16(segment, 4);
    info.payload_offset = info.l4_offset + 8;
  }
  return true;
}

bool Parse(std::span<const uint8_t> p, bool verify_checksums, PacketInfo& info,
           PacketErrc& error) {
  if (p.empty()) return Refuse(error, PacketErrc::kTruncated);
  const uint8_t version = p[0] >> 4;
  if (version != 4 && version != 6) return Refuse(error, PacketErrc::kBadVersion);
  IpLayer layer;
  const bool ok = version == 4 ? WalkV4(p, WalkMode::kParse, verify_checksums, layer, error)
                               : WalkV6(p, WalkMode::kParse, layer, error);
  if (!ok) return false;
  info = PacketInfo{};
  info.family = layer.family;
  info.protocol = layer.protocol;
  info.ttl = layer.ttl;
  info.src = detail::AddressAt(p, layer.family, version == 4 ? 12 : 8);
  info.dst = detail::AddressAt(p, layer.family, version == 4 ? 16 : 24);
  info.total_length = uint32_t(p.size());
  info.l4_offset = layer.l4_offset;
  return ParseTransport(p, verify_checksums, info, error);
}

std::optional<Address> Peek(std::span<const uint8_t> p, size_t v4_at, size_t v6_at) {
  if (p.empty()) return std::nullopt;
  if (p[0] >> 4 == 4 && p.size() >= kIpv4MinHeader) return detail::AddressAt(p, Family::kV4, v4_at);
  if (p[0] >> 4 == 6 && p.size() >= kIpv6Header) return detail::AddressAt(p, Family::kV6, v6_at);
  return std::nullopt;
}

}  // namespace

namespace detail {

bool WalkIp(std::span<const uint8_t> p, WalkMode mode, bool verify_checksum, IpLayer& out,
            PacketErrc& error) {
  if (p.empty()) return Refuse(error, PacketErrc::kTruncated);
  if (p[0] >> 4 == 4) return WalkV4(p, mode, verify_checksum, out, error);
  if (p[0] >> 4 == 6) return WalkV6(p, mode, out, error);
  return Refuse(error, PacketErrc::kBadVersion);
}

Address AddressAt(std::span<const uint8_t> p, Family family, size_t at) {
  Address a;
  a.family = family;
  const size_t n = family == Family::kV4 ? 4 : 16;
  for (size_t i = 0; i < n; ++i) a.bytes[i] = p[at + i];
  return a;
}

}  // namespace detail

const char* PacketErrcName(PacketErrc code) {
  switch (code) {
    case PacketErrc::kTruncated: return "kTruncated";
    case PacketErrc::kBadVersion: return "kBadVersion";
    case PacketErrc::kBadHeaderLength: return "kBadHeaderLength";
    case PacketErrc::kLengthMismatch: return "kLengthMismatch";
    case PacketErrc::kBadChecksum: return "kBadChecksum";
    case PacketErrc::kZeroTtl: return "kZeroTtl";
    case PacketErrc::kFragment: return "kFragment";
    case PacketErrc::kBadExtensionHeader: return "kBadExtensionHeader";
    case PacketErrc::kTooManyExtensionHeaders: return "kTooManyExtensionHeaders";
  }
  return "unknown";
}

bool PacketInfo::IsIcmpError() const {
  if (family == Family::kV4 && protocol == kProtoIcmp) {
    return icmp_type == 3 || icmp_type == 4 || icmp_type == 5 || icmp_type == 11 ||
           icmp_type == 12;
  }
  if (family == Family::kV6 && protocol == kProtoIcmpv6) {
    return icmp_type < 128 || icmp_type == 137;
  }
  return false;
}

Result<PacketInfo, PacketErrc> ParsePacket(std::span<const uint8_t> packet) {
  PacketInfo info;
  PacketErrc error{};
  if (!Parse(packet, /*verify_checksums=*/true, info, error)) return Fail(error, Message(error));
  return info;
}

std::optional<Address> SourceAddress(std::span<const uint8_t> packet) {
  return Peek(packet, 12, 8);
}

std::optional<Address> DestinationAddress(std::span<const uint8_t> packet) {
  return Peek(packet, 16, 24);
}

Result<void, PacketErrc> FillChecksums(std::span<uint8_t> packet) {
  PacketInfo info;
  PacketErrc error{};
  if (!Parse(packet, /*verify_checksums=*/false, info, error)) return Fail(error, Message(error));
  if (info.family == Family::kV4) {
    Put16(packet, 10, 0);
    Put16(packet, 10, Checksum(packet.first(info.l4_offset)));
  }
  const auto segment = packet.subspan(info.l4_offset);
  const bool v4 = info.family == Family::kV4;
  if (info.protocol == kProtoTcp) {
    Put16(segment, 16, 0);
    Put16(segment, 16, TransportChecksum(info.src, info.dst, kProtoTcp, segment));
  } else if (info.protocol == kProtoUdp) {
    Put16(segment, 6, 0);
    const uint16_t sum = TransportChecksum(info.src, info.dst, kProtoUdp, segment);
    Put16(segment, 6, sum == 0 ? 0xffff : sum);
  } else if (v4 && info.protocol == kProtoIcmp) {
    Put16(segment, 2, 0);
    Put16(segment, 2, Checksum(segment));
  } else if (!v4 && info.protocol == kProtoIcmpv6) {
    Put16(segment, 2, 0);
    Put16(segment, 2, TransportChecksum(info.src, info.dst, kProtoIcmpv6, segment));
  }
  return {};
}

std::string Describe(std::span<const uint8_t> packet) {
  auto parsed = ParsePacket(packet);
  if (!parsed) return std::string("refused ") + PacketErrcName(parsed.error().code);
  const PacketInfo& i = *parsed;
  const char family = i.family == Family::kV4 ? '4' : '6';
  const bool v6 = i.family == Family::kV6;
  char tail[64];
  std::snprintf(tail, sizeof tail, " len %u", unsigned(i.total_length));
  auto endpoint = [v6](const Address& a, uint16_t port) {
    return (v6 ? "[" + a.ToString() + "]" : a.ToString()) + ":" + std::to_string(port);
  };
  if (i.protocol == kProtoTcp || i.protocol == kProtoUdp) {
    std::string out = (i.protocol == kProtoTcp ? "tcp" : "udp") + std::string(1, family) + " " +
                      endpoint(i.src, i.src_port) + " > " + endpoint(i.dst, i.dst_port);
    if (i.protocol == kProtoTcp) {
      out += " flags ";
      const char* letters = "FSRPAUEC";
      for (int b = 0; b < 8; ++b) {
        if (i.tcp_flags & (1 << b)) out += letters[b];
      }
    }
    return out + tail;
  }
  if (i.payload_offset != i.l4_offset) {  // ICMP / ICMPv6
    std::string out = "icmp" + std::string(1, family) + " " + i.src.ToString() + " > " +
                      i.dst.ToString() + " type " + std::to_string(i.icmp_type) + " code " +
                      std::to_string(i.icmp_code);
    const bool echo = v6 ? (i.icmp_type == 128 || i.icmp_type == 129)
                         : (i.icmp_type == 8 || i.icmp_type == 0);
    if (echo) out += " id " + std::to_string(i.src_port);
    return out + tail;
  }
  return "ip" + std::string(1, family) + " proto " + std::to_string(i.protocol) + " " +
         i.src.ToString() + " > " + i.dst.ToString() + tail;
}

}  // namespace dvpn::tunnel::ip
