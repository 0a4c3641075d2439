#include "tunnel/ip/offload.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "tunnel/ip/checksum.h"

namespace dvpn::tunnel::ip {
namespace {

constexpr uint8_t kTcpCwr = 0x80;
constexpr size_t kTcpHeader = 20;
constexpr size_t kUdpHeader = 8;
constexpr size_t kTcpChecksumOffset = 16;

uint16_t Get16(std::span<const uint8_t> p, size_t at) { return uint16_t(p[at] << 8 | p[at + 1]); }

uint32_t Get32(std::span<const uint8_t> p, size_t at) {
  return uint32_t(p[at]) << 24 | uint32_t(p[at + 1]) << 16 | uint32_t(p[at + 2]) << 8 | p[at + 3];
}

void Put16(std::span<uint8_t> p, size_t at, uint16_t v) {
  p[at] = uint8_t(v >> 8);
  p[at + 1] = uint8_t(v);
}

void Put32(std::span<uint8_t> p, size_t at, uint32_t v) {
  p[at] = uint8_t(v >> 24);
  p[at + 1] = uint8_t(v >> 16);
  p[at + 2] = uint8_t(v >> 8);
  p[at + 3] = uint8_t(v);
}

uint16_t GetHost16(std::span<const uint8_t> p, size_t at) {
  uint16_t v;
  std::memcpy(&v, p.data() + at, 2);
  return v;
}

void PutHost16(std::span<uint8_t> p, size_t at, uint16_t v) { std::memcpy(p.data() + at, &v, 2); }

// Messages stay within 15 characters: std::string keeps them without allocating.
const char* Message(OffloadErrc code) {
  switch (code) {
    case OffloadErrc::kTruncated:
      return "truncated";
    case OffloadErrc::kBadHeader:
      return "bad vnet header";
    case OffloadErrc::kBadPacket:
      return "bad gso packet";
    case OffloadErrc::kTooLarge:
      return "too large";
  }
  return "offload error";
}

std::unexpected<Error<OffloadErrc>> Refuse(OffloadErrc code) { return Fail(code, Message(code)); }

Address AddressIn(std::span<const uint8_t> p, Family family, size_t at) {
  Address a;
  a.family = family;
  std::copy_n(p.begin() + at, family == Family::kV4 ? 4 : 16, a.bytes.begin());
  return a;
}

// Where a GSO packet's parts are, after the checks of its IP and transport headers.
struct GsoLayout {
  Family family = Family::kV4;
  size_t l4 = 0;       // the transport header
  size_t headers = 0;  // IP and transport headers: the bytes every segment repeats
};

// The IP header of a GSO packet of `family` carrying `protocol` directly (no IPv6 extension
// headers), and the TCP or UDP header after it. Never reads past `p`.
Result<GsoLayout, OffloadErrc> CheckGsoPacket(std::span<const uint8_t> p, Family family,
                                              uint8_t protocol) {
  if (p.empty()) return Refuse(OffloadErrc::kTruncated);
  GsoLayout out;
  out.family = family;
  if (family == Family::kV4) {
    if (p[0] >> 4 != 4) return Refuse(OffloadErrc::kBadPacket);
    if (p.size() < kIpv4MinHeader) return Refuse(OffloadErrc::kTruncated);
    const size_t ihl = size_t(p[0] & 0x0f) * 4;
    if (ihl < kIpv4MinHeader) return Refuse(OffloadErrc::kBadPacket);
    if (ihl > p.size()) return Refuse(OffloadErrc::kTruncated);
    if (Get16(p, 2) != p.size()) return Refuse(OffloadErrc::kBadPacket);
    if ((Get16(p, 6) & 0x3fff) != 0) return Refuse(OffloadErrc::kBadPacket);  // MF or offset
    if (p[9] != protocol) return Refuse(OffloadErrc::kBadPacket);
    out.l4 = ihl;
  } else {
    if (p[0] >> 4 != 6) return Refuse(OffloadErrc::kBadPacket);
    if (p.size() < kIpv6Header) return Refuse(OffloadErrc::kTruncated);
    if (kIpv6Header + Get16(p, 4) != p.size()) return Refuse(OffloadErrc::kBadPacket);
    if (p[6] != protocol) return Refuse(OffloadErrc::kBadPacket);  // extension headers too
    out.l4 = kIpv6Header;
  }
  if (protocol == kProtoTcp) {
    if (p.size() - out.l4 < kTcpHeader) return Refuse(OffloadErrc::kTruncated);
    const size_t data_offset = size_t(p[out.l4 + 12] >> 4) * 4;
    if (data_offset < kTcpHeader) return Refuse(OffloadErrc::kBadPacket);
    if (p.size() - out.l4 < data_offset) return Refuse(OffloadErrc::kTruncated);
    out.headers = out.l4 + data_offset;
  } else {
    if (p.size() - out.l4 < kUdpHeader) return Refuse(OffloadErrc::kTruncated);
    out.headers = out.l4 + kUdpHeader;
  }
  return out;
}

// Cuts a checked GSO packet into segments of `gso_size` payload bytes in `scratch`.
Result<size_t, OffloadErrc> Segment(std::span<const uint8_t> p, const GsoLayout& layout,
                                    uint8_t protocol, size_t gso_size, std::span<uint8_t> scratch,
                                    size_t bound, PacketSink sink) {
  const size_t payload = p.size() - layout.headers;
  const size_t count = payload == 0 ? 1 : (payload + gso_size - 1) / gso_size;
  // The first segment is the largest.
  if (layout.headers + std::min(gso_size, payload) > bound) return Refuse(OffloadErrc::kTooLarge);
  const bool v4 = layout.family == Family::kV4;
  const Address src = AddressIn(p, layout.family, v4 ? 12 : 8);
  const Address dst = AddressIn(p, layout.family, v4 ? 16 : 24);
  const size_t l4 = layout.l4;
  const uint16_t id = v4 ? Get16(p, 4) : 0;
  const uint32_t seq = protocol == kProtoTcp ? Get32(p, l4 + 4) : 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t offset = i * gso_size;
    const size_t length = std::min(gso_size, payload - offset);
    const auto out = scratch.first(layout.headers + length);
    std::copy_n(p.begin(), layout.headers, out.begin());
    std::copy_n(p.begin() + layout.headers + offset, length, out.begin() + layout.headers);
    if (v4) {
      Put16(out, 2, uint16_t(out.size()));
      Put16(out, 4, uint16_t(id + i));
      Put16(out, 10, 0);
      Put16(out, 10, Checksum(out.first(l4)));
    } else {
      Put16(out, 4, uint16_t(out.size() - kIpv6Header));
    }
    const auto segment = out.subspan(l4);
    if (protocol == kProtoTcp) {
      Put32(segment, 4, uint32_t(seq + offset));
      if (i + 1 != count) segment[13] &= uint8_t(~(kTcpFin | kTcpPsh));
      if (i != 0) segment[13] &= uint8_t(~kTcpCwr);
      Put16(segment, kTcpChecksumOffset, 0);
      Put16(segment, kTcpChecksumOffset, TransportChecksum(src, dst, kProtoTcp, segment));
    } else {
      Put16(segment, 4, uint16_t(segment.size()));
      Put16(segment, 6, 0);
      const uint16_t sum = TransportChecksum(src, dst, kProtoUdp, segment);
      Put16(segment, 6, sum == 0 ? 0xffff : sum);
    }
    sink(out);
  }
  return count;
}

}  // namespace

VnetHeader ReadVnetHeader(std::span<const uint8_t, kVnetHeaderSize> bytes) {
  VnetHeader h;
  h.flags = bytes[0];
  h.gso_type = bytes[1];
  h.hdr_len = GetHost16(bytes, 2);
  h.gso_size = GetHost16(bytes, 4);
  h.csum_start = GetHost16(bytes, 6);
  h.csum_offset = GetHost16(bytes, 8);
  return h;
}

void WriteVnetHeader(const VnetHeader& header, std::span<uint8_t, kVnetHeaderSize> bytes) {
  bytes[0] = header.flags;
  bytes[1] = header.gso_type;
  PutHost16(bytes, 2, header.hdr_len);
  PutHost16(bytes, 4, header.gso_size);
  PutHost16(bytes, 6, header.csum_start);
  PutHost16(bytes, 8, header.csum_offset);
}

const char* OffloadErrcName(OffloadErrc code) {
  switch (code) {
    case OffloadErrc::kTruncated:
      return "kTruncated";
    case OffloadErrc::kBadHeader:
      return "kBadHeader";
    case OffloadErrc::kBadPacket:
      return "kBadPacket";
    case OffloadErrc::kTooLarge:
      return "kTooLarge";
  }
  return "unknown";
}

Result<size_t, OffloadErrc> SplitTunRead(std::span<uint8_t> read, std::span<uint8_t> scratch,
                                         size_t max_packet, PacketSink sink) {
  if (read.size() < kVnetHeaderSize) return Refuse(OffloadErrc::kTruncated);
  const VnetHeader h = ReadVnetHeader(read.first<kVnetHeaderSize>());
  const auto p = read.subspan(kVnetHeaderSize);
  const uint8_t gso = h.gso_type & uint8_t(~kGsoEcn);
  const bool ecn = (h.gso_type & kGsoEcn) != 0;
  if (gso != kGsoNone && gso != kGsoTcpV4 && gso != kGsoTcpV6 && gso != kGsoUdpL4) {
    return Refuse(OffloadErrc::kBadHeader);  // UFO (kGsoUdp) included
  }
  if (ecn && gso != kGsoTcpV4 && gso != kGsoTcpV6) return Refuse(OffloadErrc::kBadHeader);
  if (gso != kGsoNone && h.gso_size == 0) return Refuse(OffloadErrc::kBadHeader);
  const bool needs_csum = (h.flags & kVnetNeedsCsum) != 0;
  if (needs_csum && size_t(h.csum_start) + h.csum_offset + 2 > p.size()) {
    return Refuse(OffloadErrc::kBadHeader);
  }
  const size_t bound = std::min(max_packet, scratch.size());

  if (gso == kGsoNone) {
    if (p.size() > max_packet) return Refuse(OffloadErrc::kTooLarge);
    if (needs_csum) {
      // The field holds the pseudo-header's sum: the sum from csum_start on completes it.
      const size_t field = size_t(h.csum_start) + h.csum_offset;
      const uint16_t sum = Checksum(p.subspan(h.csum_start));
      p[field] = uint8_t(sum == 0 ? 0xff : sum >> 8);
      p[field + 1] = uint8_t(sum == 0 ? 0xff : sum);
    }
    sink(p);
    return size_t{1};
  }

  // Each segment's checksums are computed whole: the partial sum in the field (whatever
  // length its pseudo-header counted) is not needed.
  const Family family = gso == kGsoTcpV6                 ? Family::kV6
                        : gso == kGsoTcpV4               ? Family::kV4
                        : (!p.empty() && p[0] >> 4 == 6) ? Family::kV6
                                                         : Family::kV4;
  const uint8_t protocol = gso == kGsoUdpL4 ? kProtoUdp : kProtoTcp;
  auto layout = CheckGsoPacket(p, family, protocol);
  if (!layout) return std::unexpected(std::move(layout.error()));
  return Segment(p, *layout, protocol, h.gso_size, scratch, bound, sink);
}

// ------------------------------------------------------------------------------ coalescing

// The packet bytes one item holds (after its vnet header): the largest packet ParsePacket
// accepts (IPv6 with a 65535-byte payload), so that any added packet fits an empty item.
constexpr size_t kItemPacketCapacity = kIpv6Header + 0xffff;

struct TcpCoalescer::Item {
  std::unique_ptr<uint8_t[]> buffer;  // kVnetHeaderSize + kItemPacketCapacity, on first use
  size_t length = 0;                  // packet bytes after the vnet header
  // The flow, for TCP packets (joinable or not: a later packet of the flow must not pass it).
  bool tcp = false;
  Family family = Family::kV4;
  Address src;
  Address dst;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  // Joining state.
  bool open = false;      // may take another segment
  uint32_t l4 = 0;        // the TCP header
  uint32_t headers = 0;   // IP and TCP headers
  uint16_t gso_size = 0;  // the first segment's payload
  uint16_t first_id = 0;  // IPv4 identification of the first segment
  uint32_t segments = 0;
  uint32_t next_seq = 0;  // the sequence number the next segment must carry

  std::span<uint8_t> packet() { return {buffer.get() + kVnetHeaderSize, length}; }
};

TcpCoalescer::TcpCoalescer(size_t max_items) : items_(std::max<size_t>(max_items, 1)) {}

TcpCoalescer::~TcpCoalescer() = default;

namespace {

// A TCP packet that may start or join a super-packet: ACK, maybe PSH, nothing else; payload;
// no IPv4 options, no IPv6 extension headers; small enough to be a super-packet itself.
bool Joinable(std::span<const uint8_t> packet, const PacketInfo& info) {
  if (info.protocol != kProtoTcp) return false;
  if ((info.tcp_flags & ~kTcpPsh) != kTcpAck) return false;
  if (info.payload_offset < info.l4_offset + kTcpHeader) return false;
  if (info.payload_offset >= packet.size()) return false;
  const size_t ip_header = info.family == Family::kV4 ? kIpv4MinHeader : kIpv6Header;
  return info.l4_offset == ip_header && packet.size() <= kMaxSuperPacket;
}

bool SameBytes(std::span<const uint8_t> a, std::span<const uint8_t> b, size_t from, size_t to) {
  return std::equal(a.begin() + from, a.begin() + to, b.begin() + from);
}

}  // namespace

bool TcpCoalescer::Add(std::span<const uint8_t> packet, const PacketInfo& info) {
  // A packet larger than any ParsePacket accepts breaks the precondition: it is dropped
  // rather than overrun a buffer.
  if (packet.size() > kItemPacketCapacity || info.total_length != packet.size() ||
      info.l4_offset > info.payload_offset || info.payload_offset > packet.size()) {
    return true;
  }
  const bool tcp = info.protocol == kProtoTcp;
  const bool joinable = Joinable(packet, info);
  if (tcp) {
    // Only the flow's last item may take it, so the flow's order is kept.
    for (size_t i = count_; i-- > 0;) {
      Item& item = items_[i];
      if (!item.tcp || item.family != info.family || item.src_port != info.src_port ||
          item.dst_port != info.dst_port || !(item.src == info.src) || !(item.dst == info.dst)) {
        continue;
      }
      if (!joinable || !item.open) break;
      const size_t payload = packet.size() - info.payload_offset;
      const auto head = std::span<const uint8_t>(item.packet());
      const size_t l4 = item.l4;
      if (info.payload_offset != item.headers || payload > item.gso_size ||
          item.length + payload > kMaxSuperPacket || Get32(packet, l4 + 4) != item.next_seq) {
        break;
      }
      const bool same_ip = info.family == Family::kV4
                               ? head[1] == packet[1] && SameBytes(head, packet, 6, 9) &&
                                     Get16(packet, 4) == uint16_t(item.first_id + item.segments)
                               : SameBytes(head, packet, 0, 4) && head[7] == packet[7];
      // TCP: acknowledgement, data offset, flags but PSH, window, urgent pointer, options.
      const bool same_tcp = SameBytes(head, packet, l4 + 8, l4 + 13) &&
                            (packet[l4 + 13] & ~kTcpPsh) == head[l4 + 13] &&
                            SameBytes(head, packet, l4 + 14, l4 + 16) &&
                            SameBytes(head, packet, l4 + 18, item.headers);
      if (!same_ip || !same_tcp) break;
      std::copy_n(packet.begin() + info.payload_offset, payload,
                  item.buffer.get() + kVnetHeaderSize + item.length);
      item.length += payload;
      item.next_seq += uint32_t(payload);
      ++item.segments;
      ++merged_;
      if (info.tcp_flags & kTcpPsh) {
        item.packet()[l4 + 13] |= kTcpPsh;  // as GRO does: the super-packet ends with a push
        item.open = false;
      }
      if (payload < item.gso_size || item.segments == kMaxSegments) item.open = false;
      return true;
    }
  }
  if (count_ == items_.size()) return false;
  Item& item = items_[count_];
  if (!item.buffer)
    item.buffer = std::make_unique_for_overwrite<uint8_t[]>(kVnetHeaderSize + kItemPacketCapacity);
  item.length = packet.size();
  std::copy(packet.begin(), packet.end(), item.buffer.get() + kVnetHeaderSize);
  item.tcp = tcp;
  item.family = info.family;
  item.src = info.src;
  item.dst = info.dst;
  item.src_port = info.src_port;
  item.dst_port = info.dst_port;
  item.open = joinable && (info.tcp_flags & kTcpPsh) == 0;
  item.l4 = info.l4_offset;
  item.headers = info.payload_offset;
  item.segments = 1;
  if (joinable) {
    const size_t payload = packet.size() - info.payload_offset;
    item.gso_size = uint16_t(payload);
    item.first_id = info.family == Family::kV4 ? Get16(packet, 4) : 0;
    item.next_seq = Get32(packet, info.l4_offset + 4) + uint32_t(payload);
  }
  ++count_;
  return true;
}

std::span<uint8_t> TcpCoalescer::Finish(size_t i) {
  Item& item = items_[i];
  const auto out = std::span<uint8_t>(item.buffer.get(), kVnetHeaderSize + item.length);
  VnetHeader h;
  if (item.segments > 1) {
    const auto p = item.packet();
    const bool v4 = item.family == Family::kV4;
    if (v4) {
      Put16(p, 2, uint16_t(p.size()));
      Put16(p, 10, 0);
      Put16(p, 10, Checksum(p.first(kIpv4MinHeader)));
    } else {
      Put16(p, 4, uint16_t(p.size() - kIpv6Header));
    }
    // The pseudo-header's sum, folded and not complemented: the addresses (contiguous in both
    // families), the protocol and the whole TCP length. Checksum complements; undo it.
    const size_t tcp_length = p.size() - item.l4;
    const auto addresses = v4 ? p.subspan(12, 8) : p.subspan(8, 32);
    Put16(p, item.l4 + kTcpChecksumOffset,
          uint16_t(~Checksum(addresses, uint64_t(kProtoTcp) + tcp_length)));
    h.flags = kVnetNeedsCsum;
    h.gso_type = v4 ? kGsoTcpV4 : kGsoTcpV6;
    h.hdr_len = uint16_t(item.headers);
    h.gso_size = item.gso_size;
    h.csum_start = uint16_t(item.l4);
    h.csum_offset = kTcpChecksumOffset;
  }
  WriteVnetHeader(h, out.first<kVnetHeaderSize>());
  return out;
}

}  // namespace dvpn::tunnel::ip
