// tunnel/ip: TUN offloads (docs/full-tunnel.md, "Offloads"): the vnet header, SplitTunRead
// and TcpCoalescer.
//
// Super-packets are built as a Linux TUN device with IFF_VNET_HDR hands them over: one IP
// header whose length counts the whole, the TCP/UDP header with the first sequence number,
// kVnetNeedsCsum and the pseudo-header's sum (with the whole transport length) in the checksum
// field. The sums the tests expect are computed here by a word-by-word reference, apart from
// the code under test. Every packet handed over must pass ParsePacket, whose checks are the
// tunnel's.
#include "tunnel/ip/offload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <random>
#include <vector>

#include "tests/support/allocation_counter.h"
#include "tunnel/ip/checksum.h"
#include "tunnel/ip/packet.h"

namespace {

using namespace dvpn::tunnel::ip;
using Bytes = std::vector<uint8_t>;

constexpr uint8_t kTcpUrg = 0x20;
constexpr uint8_t kTcpEce = 0x40;
constexpr uint8_t kTcpCwr = 0x80;

uint16_t Get16(std::span<const uint8_t> b, size_t at) { return uint16_t(b[at] << 8 | b[at + 1]); }
uint32_t Get32(std::span<const uint8_t> b, size_t at) {
  return uint32_t(Get16(b, at)) << 16 | Get16(b, at + 2);
}
void Put16(std::span<uint8_t> b, size_t at, uint16_t v) {
  b[at] = uint8_t(v >> 8);
  b[at + 1] = uint8_t(v);
}
void Put32(std::span<uint8_t> b, size_t at, uint32_t v) {
  Put16(b, at, uint16_t(v >> 16));
  Put16(b, at + 2, uint16_t(v));
}

// The reference: RFC 1071 word by word (the implementation before the 8-byte Sum).
uint64_t RefSum(std::span<const uint8_t> bytes, uint64_t sum = 0) {
  size_t i = 0;
  for (; i + 1 < bytes.size(); i += 2) sum += uint32_t(bytes[i]) << 8 | bytes[i + 1];
  if (i < bytes.size()) sum += uint32_t(bytes[i]) << 8;
  return sum;
}
uint16_t RefFold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}

const Address kV4Src = Address::V4({10, 9, 0, 1});
const Address kV4Dst = Address::V4({93, 184, 216, 34});
const Address kV6Src = Address::V6({0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
const Address kV6Dst = Address::V6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7});

Bytes Timestamps(uint32_t tsval, uint32_t tsecr) {
  Bytes o{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0};
  Put32(o, 4, tsval);
  Put32(o, 8, tsecr);
  return o;
}

Bytes Payload(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

// An IP packet around `l4`; checksums filled by FillChecksums.
Bytes MakeIp(Family family, uint8_t protocol, const Bytes& l4, uint16_t id = 0x1234,
             const Bytes& ip_options = {}, uint8_t ttl = 64, uint8_t tos = 0, Address src = {},
             Address dst = {}) {
  Bytes p;
  if (family == Family::kV4) {
    if (src == Address{}) src = kV4Src;
    if (dst == Address{}) dst = kV4Dst;
    p.resize(20 + ip_options.size());
    p[0] = uint8_t(0x40 | (5 + ip_options.size() / 4));
    p[1] = tos;
    Put16(p, 2, uint16_t(p.size() + l4.size()));
    Put16(p, 4, id);
    Put16(p, 6, 0x4000);
    p[8] = ttl;
    p[9] = protocol;
    std::copy_n(src.bytes.begin(), 4, p.begin() + 12);
    std::copy_n(dst.bytes.begin(), 4, p.begin() + 16);
    std::copy(ip_options.begin(), ip_options.end(), p.begin() + 20);
  } else {
    if (src == Address{}) src = kV6Src;
    if (dst == Address{}) dst = kV6Dst;
    p.resize(40);
    p[0] = uint8_t(0x60 | tos >> 4);
    p[1] = uint8_t(tos << 4 | 0x0a);  // flow label 0xabcde
    p[2] = 0xbc;
    p[3] = 0xde;
    Put16(p, 4, uint16_t(l4.size()));
    p[6] = protocol;
    p[7] = ttl;
    std::copy(src.bytes.begin(), src.bytes.end(), p.begin() + 8);
    std::copy(dst.bytes.begin(), dst.bytes.end(), p.begin() + 24);
  }
  p.insert(p.end(), l4.begin(), l4.end());
  EXPECT_TRUE(FillChecksums(p).has_value());
  return p;
}

struct Tcp {
  Family family = Family::kV4;
  uint16_t sport = 40000;
  uint16_t dport = 443;
  uint32_t seq = 0xfffff000;  // wraps within the larger tests
  uint32_t ack = 77777;
  uint8_t flags = kTcpAck;
  uint16_t window = 501;
  Bytes options = Timestamps(111, 222);
  uint16_t id = 0xfff0;  // wraps too
  uint8_t ttl = 64;
  uint8_t tos = 0;
  Bytes ip_options;
  Address src;  // {} = the family's default
  Address dst;
  Bytes payload;
};

Bytes Build(const Tcp& t) {
  Bytes l4(20 + t.options.size());
  Put16(l4, 0, t.sport);
  Put16(l4, 2, t.dport);
  Put32(l4, 4, t.seq);
  Put32(l4, 8, t.ack);
  l4[12] = uint8_t((5 + t.options.size() / 4) << 4);
  l4[13] = t.flags;
  Put16(l4, 14, t.window);
  std::copy(t.options.begin(), t.options.end(), l4.begin() + 20);
  l4.insert(l4.end(), t.payload.begin(), t.payload.end());
  return MakeIp(t.family, kProtoTcp, l4, t.id, t.ip_options, t.ttl, t.tos, t.src, t.dst);
}

Bytes BuildUdp(Family family, const Bytes& payload, uint16_t id = 0x1234) {
  Bytes l4(8);
  Put16(l4, 0, 5353);
  Put16(l4, 2, 53);
  Put16(l4, 4, uint16_t(8 + payload.size()));
  l4.insert(l4.end(), payload.begin(), payload.end());
  return MakeIp(family, kProtoUdp, l4, id);
}

// The i-th segment of `size` payload bytes of a flow that starts at `base`.
Bytes SegmentOf(Tcp base, size_t i, size_t size, uint8_t flags = kTcpAck) {
  base.seq += uint32_t(i * size);
  base.id = uint16_t(base.id + i);
  base.flags = flags;
  base.payload = Payload(size, uint32_t(i + 1));
  return Build(base);
}

size_t L4Offset(std::span<const uint8_t> p) {
  return p[0] >> 4 == 4 ? size_t(p[0] & 0x0f) * 4 : kIpv6Header;
}

// The pseudo-header's sum with the transport length of `p`, folded, not complemented.
uint16_t PseudoSum(std::span<const uint8_t> p) {
  const bool v4 = p[0] >> 4 == 4;
  const size_t l4 = L4Offset(p);
  const uint64_t length = p.size() - l4;
  const uint8_t protocol = v4 ? p[9] : p[6];
  const auto addresses = v4 ? p.subspan(12, 8) : p.subspan(8, 32);
  return RefFold(RefSum(addresses) + protocol + (length & 0xffff) + (length >> 16));
}

Bytes VnetBytes(const VnetHeader& h) {
  Bytes b(kVnetHeaderSize);
  WriteVnetHeader(h, std::span<uint8_t, kVnetHeaderSize>(b.data(), kVnetHeaderSize));
  return b;
}

// What a TUN read gives for `packet` sent with GSO: NEEDS_CSUM, the pseudo-header sum in the
// transport checksum field.
Bytes KernelRead(const Bytes& packet, uint8_t gso_type, uint16_t gso_size) {
  const size_t l4 = L4Offset(packet);
  const bool tcp = (packet[0] >> 4 == 4 ? packet[9] : packet[6]) == kProtoTcp;
  VnetHeader h;
  h.flags = kVnetNeedsCsum;
  h.gso_type = gso_type;
  h.hdr_len = uint16_t(tcp ? l4 + (packet[l4 + 12] >> 4) * 4 : l4 + 8);
  h.gso_size = gso_size;
  h.csum_start = uint16_t(l4);
  h.csum_offset = tcp ? 16 : 6;
  Bytes read = VnetBytes(h);
  read.insert(read.end(), packet.begin(), packet.end());
  Put16(std::span(read).subspan(kVnetHeaderSize), l4 + h.csum_offset, PseudoSum(packet));
  return read;
}

// The kernel's NEEDS_CSUM rule on a TUN write (vnet header + packet), by the reference sum.
void ApplyNeedsCsum(Bytes& write) {
  const VnetHeader h = ReadVnetHeader(std::span<const uint8_t, kVnetHeaderSize>(write.data(), 10));
  if (!(h.flags & kVnetNeedsCsum)) return;
  const auto p = std::span(write).subspan(kVnetHeaderSize);
  const uint16_t sum = uint16_t(~RefFold(RefSum(p.subspan(h.csum_start))));
  Put16(p, h.csum_start + h.csum_offset, sum == 0 ? 0xffff : sum);
}

struct SplitOut {
  dvpn::Result<size_t, OffloadErrc> result;
  std::vector<Bytes> packets;
  std::vector<const uint8_t*> data;  // where each handed-over span pointed
};

SplitOut DoSplit(Bytes& read, size_t max_packet = 1500, size_t scratch_size = 65535) {
  Bytes scratch(scratch_size);
  SplitOut out;
  out.result = SplitTunRead(read, scratch, max_packet, [&](std::span<uint8_t> p) {
    out.packets.emplace_back(p.begin(), p.end());
    out.data.push_back(p.data());
  });
  return out;
}

OffloadErrc SplitError(Bytes read, size_t max_packet = 1500) {
  auto out = DoSplit(read, max_packet);
  EXPECT_TRUE(out.packets.empty());
  if (out.result) {
    ADD_FAILURE() << "accepted";
    return OffloadErrc{};
  }
  return out.result.error().code;
}

Bytes PayloadOf(std::span<const uint8_t> packet) {
  auto info = ParsePacket(packet);
  EXPECT_TRUE(info.has_value());
  if (!info) return {};
  return Bytes(packet.begin() + info->payload_offset, packet.end());
}

// ----------------------------------------------------------------------- the vnet header

TEST(OffloadVnetHeader, TenBytesInHostOrder) {
  const VnetHeader h{kVnetNeedsCsum, kGsoTcpV4 | kGsoEcn, 0x0102, 0x0304, 0x0506, 0x0708};
  const Bytes b = VnetBytes(h);
  ASSERT_EQ(b.size(), 10u);
  EXPECT_EQ(b[0], kVnetNeedsCsum);
  EXPECT_EQ(b[1], kGsoTcpV4 | kGsoEcn);
  if constexpr (std::endian::native == std::endian::little) {
    EXPECT_EQ(b, (Bytes{1, 0x81, 2, 1, 4, 3, 6, 5, 8, 7}));
  }
  EXPECT_EQ(ReadVnetHeader(std::span<const uint8_t, 10>(b.data(), 10)), h);
}

// ------------------------------------------------------------------------------- splitting

void CheckTcpSplit(Family family) {
  Tcp t;
  t.family = family;
  t.flags = kTcpAck | kTcpPsh | kTcpFin | kTcpCwr;
  t.payload = Payload(5000, 7);
  const Bytes super = Build(t);
  Bytes read = KernelRead(super, family == Family::kV4 ? kGsoTcpV4 : kGsoTcpV6, 1400);
  const auto out = DoSplit(read);
  ASSERT_TRUE(out.result) << out.result.error().message;
  ASSERT_EQ(*out.result, 4u);
  ASSERT_EQ(out.packets.size(), 4u);
  Bytes joined;
  for (size_t i = 0; i < 4; ++i) {
    const Bytes& s = out.packets[i];
    auto info = ParsePacket(s);
    ASSERT_TRUE(info) << i << " " << info.error().message;
    const size_t l4 = info->l4_offset;
    EXPECT_EQ(info->payload_offset - l4, 32u);  // the timestamps option kept
    EXPECT_EQ(s.size() - info->payload_offset, i < 3 ? 1400u : 5000u - 3 * 1400);
    EXPECT_EQ(Get32(s, l4 + 4), uint32_t(t.seq + i * 1400));
    EXPECT_EQ(Get32(s, l4 + 8), t.ack);
    EXPECT_EQ(Get16(s, l4 + 14), t.window);
    EXPECT_TRUE(std::equal(s.begin() + l4 + 20, s.begin() + l4 + 32, t.options.begin()));
    uint8_t flags = kTcpAck;
    if (i == 0) flags |= kTcpCwr;
    if (i == 3) flags |= kTcpPsh | kTcpFin;
    EXPECT_EQ(info->tcp_flags, flags) << i;
    if (family == Family::kV4) {
      EXPECT_EQ(Get16(s, 4), uint16_t(t.id + i));  // 0xfff0 + i: wraps past 0xffff later
      EXPECT_EQ(Get16(s, 6), 0x4000);
    } else {
      EXPECT_TRUE(std::equal(s.begin(), s.begin() + 4, super.begin()));  // class, flow label
    }
    const Bytes p = PayloadOf(s);
    joined.insert(joined.end(), p.begin(), p.end());
  }
  EXPECT_EQ(joined, t.payload);
}

TEST(OffloadSplit, TcpV4SuperPacket) { CheckTcpSplit(Family::kV4); }
TEST(OffloadSplit, TcpV6SuperPacket) { CheckTcpSplit(Family::kV6); }

TEST(OffloadSplit, Ipv4OptionsAreCopied) {
  Tcp t;
  t.ip_options = {1, 1, 1, 0};  // NOP NOP NOP EOL
  t.payload = Payload(3000, 3);
  Bytes read = KernelRead(Build(t), kGsoTcpV4, 1400);
  const auto out = DoSplit(read);
  ASSERT_TRUE(out.result);
  ASSERT_EQ(out.packets.size(), 3u);
  for (const Bytes& s : out.packets) {
    auto info = ParsePacket(s);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->l4_offset, 24u);
    EXPECT_EQ(Get32(s, 20), 0x01010100u);
  }
}

TEST(OffloadSplit, GsoSizeLargerThanPayloadGivesOneSegment) {
  for (Family family : {Family::kV4, Family::kV6}) {
    Tcp t;
    t.family = family;
    t.flags = kTcpAck | kTcpPsh;
    t.payload = Payload(700, 1);
    const Bytes packet = Build(t);
    Bytes read = KernelRead(packet, family == Family::kV4 ? kGsoTcpV4 : kGsoTcpV6, 1400);
    const auto out = DoSplit(read);
    ASSERT_TRUE(out.result);
    ASSERT_EQ(out.packets.size(), 1u);
    EXPECT_EQ(out.packets[0], packet);  // the same bytes, checksum complete
  }
}

TEST(OffloadSplit, ExactMultipleAndNoPayload) {
  Tcp t;
  t.payload = Payload(3 * 1000, 2);
  Bytes read = KernelRead(Build(t), kGsoTcpV4, 1000);
  auto out = DoSplit(read);
  ASSERT_TRUE(out.result);
  EXPECT_EQ(out.packets.size(), 3u);
  // A GSO packet without payload is one segment: itself.
  t.payload.clear();
  const Bytes bare = Build(t);
  read = KernelRead(bare, kGsoTcpV4, 1000);
  out = DoSplit(read);
  ASSERT_TRUE(out.result);
  ASSERT_EQ(out.packets.size(), 1u);
  EXPECT_EQ(out.packets[0], bare);
}

TEST(OffloadSplit, NoneWithNeedsCsumCompletesInPlace) {
  for (Family family : {Family::kV4, Family::kV6}) {
    Tcp t;
    t.family = family;
    t.payload = Payload(999, 4);  // odd
    const Bytes tcp = Build(t);
    const Bytes udp = BuildUdp(family, Payload(333, 5));
    for (const Bytes& packet : {tcp, udp}) {
      Bytes read = KernelRead(packet, kGsoNone, 0);
      const auto out = DoSplit(read);
      ASSERT_TRUE(out.result);
      ASSERT_EQ(out.packets.size(), 1u);
      EXPECT_EQ(out.data[0], read.data() + kVnetHeaderSize);  // no copy
      EXPECT_TRUE(ParsePacket(out.packets[0]));
      EXPECT_EQ(out.packets[0], packet);
      EXPECT_TRUE(std::equal(packet.begin(), packet.end(), read.begin() + kVnetHeaderSize));
    }
  }
}

TEST(OffloadSplit, NoneWithoutFlagsPassesThrough) {
  const Bytes packet = BuildUdp(Family::kV4, Payload(100, 6));
  Bytes read = VnetBytes({kVnetDataValid, kGsoNone, 0, 0, 0, 0});
  read.insert(read.end(), packet.begin(), packet.end());
  const auto out = DoSplit(read);
  ASSERT_TRUE(out.result);
  ASSERT_EQ(out.packets.size(), 1u);
  EXPECT_EQ(out.packets[0], packet);
  EXPECT_EQ(out.data[0], read.data() + kVnetHeaderSize);
}

TEST(OffloadSplit, UdpSegmentationBothFamilies) {
  for (Family family : {Family::kV4, Family::kV6}) {
    const Bytes payload = Payload(4000, 8);
    Bytes read = KernelRead(BuildUdp(family, payload, 0x0100), kGsoUdpL4, 1200);
    const auto out = DoSplit(read);
    ASSERT_TRUE(out.result);
    ASSERT_EQ(out.packets.size(), 4u);
    Bytes joined;
    for (size_t i = 0; i < 4; ++i) {
      const Bytes& s = out.packets[i];
      auto info = ParsePacket(s);
      ASSERT_TRUE(info) << info.error().message;
      EXPECT_EQ(info->protocol, kProtoUdp);
      EXPECT_EQ(Get16(s, info->l4_offset + 4), s.size() - info->l4_offset);
      EXPECT_EQ(s.size() - info->payload_offset, i < 3 ? 1200u : 400u);
      EXPECT_NE(Get16(s, info->l4_offset + 6), 0);
      if (family == Family::kV4) {
        EXPECT_EQ(Get16(s, 4), 0x0100 + i);
      }
      const Bytes p = PayloadOf(s);
      joined.insert(joined.end(), p.begin(), p.end());
    }
    EXPECT_EQ(joined, payload);
  }
}

TEST(OffloadSplit, BadInputs) {
  Tcp t;
  t.payload = Payload(3000, 9);
  const Bytes tcp4 = Build(t);
  const Bytes good = KernelRead(tcp4, kGsoTcpV4, 1400);
  {
    Bytes g = good;
    ASSERT_TRUE(DoSplit(g).result);
  }

  auto with = [&](auto change) {
    Bytes b = good;
    VnetHeader h = ReadVnetHeader(std::span<const uint8_t, 10>(b.data(), 10));
    change(h, b);
    WriteVnetHeader(h, std::span<uint8_t, 10>(b.data(), 10));
    return b;
  };
  // Truncated: the vnet header, the IP header, the TCP header, the TCP options. The checks of
  // the vnet header come first, so these carry no NEEDS_CSUM (whose field would be outside).
  auto cut = [&](size_t packet_bytes) {
    Bytes b = with([](VnetHeader& h, Bytes&) { h.flags = 0; });
    b.resize(kVnetHeaderSize + packet_bytes);
    return b;
  };
  EXPECT_EQ(SplitError(Bytes(good.begin(), good.begin() + 9)), OffloadErrc::kTruncated);
  EXPECT_EQ(SplitError(cut(0)), OffloadErrc::kTruncated);
  EXPECT_EQ(SplitError(cut(19)), OffloadErrc::kTruncated);
  EXPECT_EQ(SplitError(with([](VnetHeader&, Bytes& b) { b.resize(10 + 19); })),
            OffloadErrc::kBadHeader);  // with NEEDS_CSUM: csum_start 20 is outside
  {
    // An IPv4 header that claims 40 bytes and a TCP header whose data offset passes the end;
    // then a TCP header cut short.
    Bytes p = cut(40);
    Put16(std::span(p).subspan(kVnetHeaderSize), 2, 40);
    EXPECT_EQ(SplitError(p), OffloadErrc::kTruncated);
    p = cut(30);
    Put16(std::span(p).subspan(kVnetHeaderSize), 2, 30);
    EXPECT_EQ(SplitError(p), OffloadErrc::kTruncated);
    // UDP: a header cut short.
    Bytes u = KernelRead(BuildUdp(Family::kV6, Payload(10, 1)), kGsoUdpL4, 1000);
    u.resize(kVnetHeaderSize + 44);
    u[1] = kGsoUdpL4;
    u[0] = 0;
    Put16(std::span(u).subspan(kVnetHeaderSize), 4, 4);
    EXPECT_EQ(SplitError(u), OffloadErrc::kTruncated);
  }
  EXPECT_EQ(SplitError(Bytes(good.begin(), good.end() - 1)), OffloadErrc::kBadPacket);
  // The header.
  EXPECT_EQ(SplitError(with([](VnetHeader& h, Bytes&) { h.gso_type = 2; })),
            OffloadErrc::kBadHeader);
  EXPECT_EQ(SplitError(with([](VnetHeader& h, Bytes&) { h.gso_type = 6; })),
            OffloadErrc::kBadHeader);
  EXPECT_EQ(SplitError(with([](VnetHeader& h, Bytes&) { h.gso_type = kGsoUdp; })),
            OffloadErrc::kBadHeader);
  EXPECT_EQ(SplitError(with([](VnetHeader& h, Bytes&) { h.gso_type = kGsoUdpL4 | kGsoEcn; })),
            OffloadErrc::kBadHeader);
  EXPECT_EQ(SplitError(with([](VnetHeader& h, Bytes&) { h.gso_size = 0; })),
            OffloadErrc::kBadHeader);
  EXPECT_EQ(SplitError(with([](VnetHeader& h, Bytes& b) { h.csum_start = uint16_t(b.size()); })),
            OffloadErrc::kBadHeader);
  EXPECT_EQ(SplitError(
                with([](VnetHeader& h, Bytes& b) { h.csum_start = uint16_t(b.size() - 10 - 17); })),
            OffloadErrc::kBadHeader);  // the field would pass the end
  {
    Bytes b = with([](VnetHeader& h, Bytes&) { h.gso_type = kGsoNone; });
    Bytes c = b;
    VnetHeader h = ReadVnetHeader(std::span<const uint8_t, 10>(c.data(), 10));
    h.csum_offset = 0xffff;
    WriteVnetHeader(h, std::span<uint8_t, 10>(c.data(), 10));
    EXPECT_EQ(SplitError(c, 65535), OffloadErrc::kBadHeader);
  }
  // The packet: a fragment, a UDP packet under a TCP type, the other family.
  EXPECT_EQ(SplitError(with([](VnetHeader&, Bytes& b) { Put16(std::span(b), 10 + 6, 0x2000); })),
            OffloadErrc::kBadPacket);
  EXPECT_EQ(SplitError(with([](VnetHeader&, Bytes& b) { Put16(std::span(b), 10 + 6, 0x0001); })),
            OffloadErrc::kBadPacket);
  EXPECT_EQ(SplitError(KernelRead(BuildUdp(Family::kV4, Payload(3000, 1)), kGsoTcpV4, 1000)),
            OffloadErrc::kBadPacket);
  EXPECT_EQ(SplitError(KernelRead(tcp4, kGsoUdpL4, 1000)), OffloadErrc::kBadPacket);
  EXPECT_EQ(SplitError(KernelRead(tcp4, kGsoTcpV6, 1000)), OffloadErrc::kBadPacket);
  Tcp t6 = t;
  t6.family = Family::kV6;
  EXPECT_EQ(SplitError(KernelRead(Build(t6), kGsoTcpV4, 1000)), OffloadErrc::kBadPacket);
  EXPECT_EQ(SplitError(with([](VnetHeader&, Bytes& b) { b[10] = 0x55; })),
            OffloadErrc::kBadPacket);  // bad version nibble
  EXPECT_EQ(SplitError(with([](VnetHeader&, Bytes& b) { b[10] = 0x44; })),
            OffloadErrc::kBadPacket);  // IHL 4
  EXPECT_EQ(SplitError(with([](VnetHeader&, Bytes& b) { b[10 + 20 + 12] = 0x40; })),
            OffloadErrc::kBadPacket);  // data offset 4
  {
    // IPv6 with a Destination Options header before TCP.
    Bytes p = Build(t6);
    const Bytes ext{kProtoTcp, 0, 1, 4, 0, 0, 0, 0};
    p.insert(p.begin() + 40, ext.begin(), ext.end());
    p[6] = 60;
    Put16(p, 4, uint16_t(p.size() - 40));
    Bytes read = VnetBytes({kVnetNeedsCsum, kGsoTcpV6, 0, 1000, 48, 16});
    read.insert(read.end(), p.begin(), p.end());
    EXPECT_EQ(SplitError(read), OffloadErrc::kBadPacket);
  }
  // Too large: a segment above max_packet, or above the scratch buffer.
  EXPECT_EQ(SplitError(good, 1400 + 20 + 32 - 1), OffloadErrc::kTooLarge);
  {
    Bytes g = good;
    EXPECT_TRUE(DoSplit(g, 1400 + 20 + 32).result);
  }
  {
    Bytes b = good;
    auto out = DoSplit(b, 1500, 1400 + 20 + 31);
    EXPECT_TRUE(out.packets.empty());
    ASSERT_FALSE(out.result);
    EXPECT_EQ(out.result.error().code, OffloadErrc::kTooLarge);
  }
  {
    Bytes none = KernelRead(tcp4, kGsoNone, 0);
    EXPECT_EQ(SplitError(none, tcp4.size() - 1), OffloadErrc::kTooLarge);
  }
  // Error messages stay short (no allocation for a refused read).
  Bytes five(5);
  auto out = DoSplit(five);
  ASSERT_FALSE(out.result);
  EXPECT_LE(out.result.error().message.size(), 15u);
  EXPECT_STREQ(OffloadErrcName(OffloadErrc::kTooLarge), "kTooLarge");
}

// ---------------------------------------------------------------------------- coalescing

struct Written {
  VnetHeader header;
  Bytes packet;
};

std::vector<Written> FlushAll(TcpCoalescer& c) {
  std::vector<Written> out;
  c.Flush([&](std::span<const uint8_t> w) {
    EXPECT_GE(w.size(), kVnetHeaderSize);
    out.push_back(
        {ReadVnetHeader(w.first<kVnetHeaderSize>()), Bytes(w.begin() + kVnetHeaderSize, w.end())});
  });
  EXPECT_TRUE(c.empty());
  return out;
}

bool AddPacket(TcpCoalescer& c, const Bytes& p) {
  auto info = ParsePacket(p);
  EXPECT_TRUE(info) << info.error().message;
  return c.Add(p, *info);
}

// Checks a written super-packet: header fields, lengths, the pseudo-header sum, and that the
// kernel's completion makes it a valid packet.
void CheckSuperPacket(const Written& w, size_t segments, uint16_t gso_size) {
  const auto& p = w.packet;
  const bool v4 = p[0] >> 4 == 4;
  const size_t l4 = v4 ? 20 : 40;
  EXPECT_EQ(w.header.flags, kVnetNeedsCsum);
  EXPECT_EQ(w.header.gso_type, v4 ? kGsoTcpV4 : kGsoTcpV6);
  EXPECT_EQ(w.header.gso_size, gso_size);
  EXPECT_EQ(w.header.csum_start, l4);
  EXPECT_EQ(w.header.csum_offset, 16);
  EXPECT_EQ(w.header.hdr_len, l4 + (p[l4 + 12] >> 4) * 4);
  if (v4) {
    EXPECT_EQ(Get16(p, 2), p.size());
    EXPECT_EQ(RefFold(RefSum(std::span(p).first(20))), 0xffff);  // header checksum valid
  } else {
    EXPECT_EQ(Get16(p, 4) + 40u, p.size());
  }
  EXPECT_EQ(Get16(p, l4 + 16), PseudoSum(p));
  const size_t payload = p.size() - w.header.hdr_len;
  EXPECT_GT(payload, (segments - 1) * gso_size);
  EXPECT_LE(payload, segments * gso_size);
  Bytes write = VnetBytes(w.header);
  write.insert(write.end(), p.begin(), p.end());
  ApplyNeedsCsum(write);
  EXPECT_TRUE(ParsePacket(std::span(write).subspan(kVnetHeaderSize)));
}

TEST(OffloadCoalesce, JoinsConsecutiveSegmentsBothFamilies) {
  for (Family family : {Family::kV4, Family::kV6}) {
    Tcp t;
    t.family = family;
    TcpCoalescer c(8);
    std::vector<Bytes> segs;
    Bytes payload;
    for (size_t i = 0; i < 5; ++i) {
      segs.push_back(SegmentOf(t, i, 1000, i == 4 ? kTcpAck | kTcpPsh : kTcpAck));
      const Bytes p = PayloadOf(segs.back());
      payload.insert(payload.end(), p.begin(), p.end());
      ASSERT_TRUE(AddPacket(c, segs.back()));
    }
    EXPECT_EQ(c.size(), 1u);
    EXPECT_EQ(c.merged(), 4u);
    const auto out = FlushAll(c);
    ASSERT_EQ(out.size(), 1u);
    CheckSuperPacket(out[0], 5, 1000);
    const size_t l4 = family == Family::kV4 ? 20 : 40;
    EXPECT_EQ(Bytes(out[0].packet.begin() + l4 + 32, out[0].packet.end()), payload);
    EXPECT_EQ(Get32(out[0].packet, l4 + 4), t.seq);
    EXPECT_EQ(out[0].packet[l4 + 13], kTcpAck | kTcpPsh);  // PSH of the last
    if (family == Family::kV4) {
      EXPECT_EQ(Get16(out[0].packet, 4), t.id);  // the first's id
    }
  }
}

TEST(OffloadCoalesce, SinglePacketUnchangedWithZeroHeader) {
  Tcp t;
  TcpCoalescer c;
  const Bytes p = SegmentOf(t, 0, 500);
  ASSERT_TRUE(AddPacket(c, p));
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].header, VnetHeader{});
  EXPECT_EQ(out[0].packet, p);
  EXPECT_EQ(c.merged(), 0u);
}

TEST(OffloadCoalesce, InterleavedFlowsKeepTwoItems) {
  Tcp a;
  Tcp b;
  b.sport = 40001;
  TcpCoalescer c;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(AddPacket(c, SegmentOf(a, i, 800)));
    ASSERT_TRUE(AddPacket(c, SegmentOf(b, i, 800)));
  }
  EXPECT_EQ(c.size(), 2u);
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 2u);
  CheckSuperPacket(out[0], 3, 800);
  CheckSuperPacket(out[1], 3, 800);
  EXPECT_EQ(Get16(out[0].packet, 20), 40000);
  EXPECT_EQ(Get16(out[1].packet, 20), 40001);
}

// Adds segment 0 of `base`, then `second`; expects two items (the second did not join).
void ExpectNotJoined(const Tcp& base, const Bytes& second, const char* what) {
  TcpCoalescer c;
  ASSERT_TRUE(AddPacket(c, SegmentOf(base, 0, 1000)));
  ASSERT_TRUE(AddPacket(c, second));
  EXPECT_EQ(c.size(), 2u) << what;
  EXPECT_EQ(c.merged(), 0u) << what;
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].packet, second) << what;
  EXPECT_EQ(out[1].header, VnetHeader{});
}

TEST(OffloadCoalesce, WhatDoesNotJoin) {
  Tcp t;
  ExpectNotJoined(t, SegmentOf(t, 2, 1000), "a gap in seq");
  Tcp u = t;
  u.seq -= 1;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "seq one short");
  u = t;
  u.ack += 1;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "another ack");
  u = t;
  u.window += 1;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "another window");
  u = t;
  u.options = Timestamps(112, 222);
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "another timestamp");
  u = t;
  u.options.clear();
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "no options");
  u = t;
  u.ttl = 63;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "another ttl");
  u = t;
  u.tos = 1;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "another tos");
  u = t;
  u.id += 2;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "an id not first + 1");
  {
    Tcp w = t;
    w.seq += 1000;
    w.id += 1;
    w.payload = Payload(1001, 1);
    ExpectNotJoined(t, Build(w), "larger than gso_size");
  }
  for (uint8_t flags : {uint8_t(kTcpAck | kTcpFin), uint8_t(kTcpAck | kTcpRst), uint8_t(kTcpSyn),
                        uint8_t(kTcpAck | kTcpUrg), uint8_t(kTcpAck | kTcpEce),
                        uint8_t(kTcpAck | kTcpCwr), uint8_t(0)}) {
    ExpectNotJoined(t, SegmentOf(t, 1, 1000, flags), "flags");
  }
  ExpectNotJoined(t, SegmentOf(t, 1, 0), "no payload");
  ExpectNotJoined(t, BuildUdp(Family::kV4, Payload(1000, 3)), "udp");
  u = t;
  u.family = Family::kV6;
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "other family");
  u = t;
  u.dst = Address::V4({93, 184, 216, 35});
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "other destination");
  u = t;
  u.ip_options = {1, 1, 1, 0};
  ExpectNotJoined(t, SegmentOf(u, 1, 1000), "ip options");
  {
    Tcp v = t;
    v.family = Family::kV6;
    Bytes p = SegmentOf(v, 1, 1000);
    p[1] ^= 0x01;  // flow label
    ASSERT_TRUE(FillChecksums(p));
    TcpCoalescer c;
    ASSERT_TRUE(AddPacket(c, SegmentOf(v, 0, 1000)));
    ASSERT_TRUE(AddPacket(c, p));
    EXPECT_EQ(c.size(), 2u);
  }
}

TEST(OffloadCoalesce, ShortSegmentAndPshEndTheItem) {
  Tcp t;
  TcpCoalescer c;
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 0, 1000)));
  Tcp s = t;
  s.seq += 1000;
  s.id += 1;
  s.payload = Payload(500, 1);
  ASSERT_TRUE(AddPacket(c, Build(s)));  // joins, ends the item
  s.seq += 500;
  s.id += 1;
  ASSERT_TRUE(AddPacket(c, Build(s)));  // starts a new one
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.merged(), 1u);
  (void)FlushAll(c);

  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 0, 1000)));
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 1, 1000, kTcpAck | kTcpPsh)));
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 2, 1000)));
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 3, 1000)));
  EXPECT_EQ(c.size(), 2u);
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 2u);
  CheckSuperPacket(out[0], 2, 1000);
  CheckSuperPacket(out[1], 2, 1000);
  EXPECT_EQ(out[0].packet[20 + 13], kTcpAck | kTcpPsh);
  EXPECT_EQ(out[1].packet[20 + 13], kTcpAck);
  EXPECT_EQ(Get16(out[1].packet, 4), uint16_t(t.id + 2));

  // A PSH segment alone may start an item, but nothing joins it.
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 0, 1000, kTcpAck | kTcpPsh)));
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 1, 1000)));
  EXPECT_EQ(c.size(), 2u);
}

TEST(OffloadCoalesce, OrderKeptWithinAFlow) {
  // Segment 1 cannot join (a pure ACK between them, then data): segment 2 must not join
  // segment 0's item behind the packet that could not join.
  Tcp t;
  TcpCoalescer c;
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 0, 1000)));
  Tcp bare = t;
  bare.seq += 1000;
  bare.id += 1;
  ASSERT_TRUE(AddPacket(c, Build(bare)));  // no payload: alone
  Tcp next = t;
  next.id += 1;  // the pure ACK took id + 1; data goes on with + 2
  const Bytes s1 = SegmentOf(next, 1, 1000);
  const Bytes s2 = SegmentOf(next, 2, 1000);
  ASSERT_TRUE(AddPacket(c, s1));
  ASSERT_TRUE(AddPacket(c, s2));
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.merged(), 1u);  // s2 joined s1 in the new item
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].header, VnetHeader{});
  EXPECT_EQ(out[1].packet, Build(bare));
  CheckSuperPacket(out[2], 2, 1000);
  EXPECT_EQ(Get32(out[2].packet, 24), t.seq + 1000);

  // The same with a segment that failed to join for a gap (a retransmission in between).
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 0, 1000)));
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 5, 1000)));  // gap: a new item
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 1, 1000)));  // would fit item 0, but comes after
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.merged(), 1u);
}

TEST(OffloadCoalesce, SuperPacketBound) {
  // 1448-byte payloads with 52 bytes of headers: 45 segments fit 65535 bytes, the 46th not.
  Tcp t;
  TcpCoalescer c;
  const size_t fit = (kMaxSuperPacket - 52) / 1448;
  for (size_t i = 0; i <= fit; ++i) ASSERT_TRUE(AddPacket(c, SegmentOf(t, i, 1448)));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.merged(), fit - 1);
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_LE(out[0].packet.size(), kMaxSuperPacket);
  CheckSuperPacket(out[0], fit, 1448);
  // IPv6: the whole packet, fixed header included, stays within 65535 too.
  t.family = Family::kV6;
  const size_t fit6 = (kMaxSuperPacket - 72) / 1448;
  for (size_t i = 0; i <= fit6; ++i) ASSERT_TRUE(AddPacket(c, SegmentOf(t, i, 1448)));
  EXPECT_EQ(c.size(), 2u);
  const auto out6 = FlushAll(c);
  EXPECT_LE(out6[0].packet.size(), kMaxSuperPacket);
  CheckSuperPacket(out6[0], fit6, 1448);
}

TEST(OffloadCoalesce, SegmentBound) {
  Tcp t;
  TcpCoalescer c;
  for (size_t i = 0; i < TcpCoalescer::kMaxSegments + 1; ++i) {
    ASSERT_TRUE(AddPacket(c, SegmentOf(t, i, 100)));
  }
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.merged(), TcpCoalescer::kMaxSegments - 1);
  const auto out = FlushAll(c);
  CheckSuperPacket(out[0], TcpCoalescer::kMaxSegments, 100);
  EXPECT_EQ(out[1].header, VnetHeader{});
}

TEST(OffloadCoalesce, FullQueue) {
  TcpCoalescer c(3);
  Tcp t;
  const Bytes udp = BuildUdp(Family::kV4, Payload(10, 1));
  ASSERT_TRUE(AddPacket(c, udp));
  ASSERT_TRUE(AddPacket(c, udp));
  ASSERT_TRUE(AddPacket(c, SegmentOf(t, 0, 1000)));
  EXPECT_TRUE(AddPacket(c, SegmentOf(t, 1, 1000)));  // joins: no new item needed
  EXPECT_FALSE(AddPacket(c, udp));
  EXPECT_FALSE(AddPacket(c, SegmentOf(t, 3, 1000)));
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(FlushAll(c).size(), 3u);
  EXPECT_TRUE(AddPacket(c, SegmentOf(t, 3, 1000)));
  // At least one item even when asked for none.
  TcpCoalescer one(0);
  EXPECT_TRUE(AddPacket(one, udp));
  EXPECT_FALSE(AddPacket(one, udp));
}

TEST(OffloadCoalesce, LargestIpv6PacketFitsAnItem) {
  const Bytes big = BuildUdp(Family::kV6, Payload(0xffff - 8, 2));
  ASSERT_EQ(big.size(), 40u + 0xffff);
  TcpCoalescer c(1);
  ASSERT_TRUE(AddPacket(c, big));
  const auto out = FlushAll(c);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].packet, big);
}

// ------------------------------------------------------------------------------ round trip

TEST(OffloadProperty, SplitCoalesceSplitRoundTrip) {
  std::mt19937 rng(20240917);
  constexpr size_t kMtu = 1500;
  for (int round = 0; round < 300; ++round) {
    Tcp t;
    t.family = round % 2 ? Family::kV6 : Family::kV4;
    t.seq = uint32_t(rng());
    t.id = uint16_t(rng());
    t.flags = rng() % 2 ? kTcpAck : kTcpAck | kTcpPsh;
    t.options = rng() % 4 ? Timestamps(uint32_t(rng()), uint32_t(rng())) : Bytes{};
    const size_t headers = (t.family == Family::kV4 ? 20 : 40) + 20 + t.options.size();
    const size_t gso = rng() % 8 == 0 ? 1 + rng() % 64 : 1 + rng() % (kMtu - headers);
    const size_t max_payload = std::min(kMaxSuperPacket - headers, gso * 300);
    t.payload = Payload(rng() % 8 == 0 ? rng() % 3 : rng() % (max_payload + 1), uint32_t(rng()));
    Bytes read =
        KernelRead(Build(t), t.family == Family::kV4 ? kGsoTcpV4 : kGsoTcpV6, uint16_t(gso));
    const auto first = DoSplit(read, kMtu);
    ASSERT_TRUE(first.result) << first.result.error().message;

    TcpCoalescer c(16);
    std::vector<Bytes> writes;
    auto flush = [&] {
      c.Flush([&](std::span<const uint8_t> w) { writes.emplace_back(w.begin(), w.end()); });
    };
    for (const Bytes& s : first.packets) {
      auto info = ParsePacket(s);
      ASSERT_TRUE(info) << info.error().message;
      if (!c.Add(s, *info)) {
        flush();
        ASSERT_TRUE(c.Add(s, *info));
      }
    }
    flush();

    Bytes payload;
    std::vector<Bytes> again;
    for (Bytes& w : writes) {
      const VnetHeader h = ReadVnetHeader(std::span<const uint8_t, 10>(w.data(), 10));
      const size_t hdr = h.gso_type == kGsoNone ? headers : h.hdr_len;
      ASSERT_EQ(hdr, headers);
      payload.insert(payload.end(), w.begin() + 10 + hdr, w.end());
      Bytes completed = w;
      ApplyNeedsCsum(completed);
      ASSERT_TRUE(ParsePacket(std::span(completed).subspan(kVnetHeaderSize)));
      const auto out = DoSplit(w, kMtu);
      ASSERT_TRUE(out.result);
      again.insert(again.end(), out.packets.begin(), out.packets.end());
    }
    ASSERT_EQ(payload, t.payload) << "round " << round;
    ASSERT_EQ(again, first.packets) << "round " << round << " gso " << gso;
    EXPECT_LE(writes.size(), first.packets.size() / TcpCoalescer::kMaxSegments + 2);
  }
}

#if DVPN_COUNT_ALLOCATIONS
TEST(OffloadAllocation, NoHeapAllocationPerPacket) {
  Tcp t;
  t.payload = Payload(20000, 1);
  const Bytes read = KernelRead(Build(t), kGsoTcpV4, 1448);
  Bytes bad = read;
  bad[1] = kGsoUdp;
  Bytes scratch(1500);
  TcpCoalescer c(4);
  auto once = [&] {
    Bytes r = read;  // allocated outside the counted part below
    size_t added = 0;
    auto run = [&](Bytes& in) {
      return SplitTunRead(in, scratch, 1500, [&](std::span<uint8_t> s) {
        auto info = ParsePacket(s);
        if (info && c.Add(s, *info)) ++added;
      });
    };
    dvpn::test::AllocationCounter allocations;
    auto ok = run(r);
    auto refused = run(bad);
    size_t written = 0;
    c.Flush([&](std::span<const uint8_t>) { ++written; });
    allocations.Stop();
    EXPECT_TRUE(ok);
    EXPECT_FALSE(refused);
    EXPECT_EQ(added, 14u);
    EXPECT_EQ(written, 1u);
    return allocations.count();
  };
  (void)once();  // the coalescer's buffers, once
  EXPECT_EQ(once(), 0);
}
#endif

}  // namespace
