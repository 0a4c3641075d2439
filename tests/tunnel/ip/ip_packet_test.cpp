// tunnel/ip: parsing and checking IP packets, flow keys, checksums and the ICMP answers
// (docs/tunnel.md, "IP packets").
//
// Known-good packets come from the Linux stack: tests/tunnel/ip/capture_ip_packets.py made the
// kernel send them through a TUN device in a private network namespace and printed them as
// read from it; their checksums are the kernel's, so they check ours independently of our
// own FillChecksums. Hand-built packets reach every PacketErrc and IcmpErrc; the answers of the
// builders are parsed back with ParsePacket and checked field by field.
//
// NoHeapAllocation counts allocations (tests/support/allocation_counter.h); it is left out of
// sanitizer builds, whose runtimes provide their own operator new.
#include "tunnel/ip/packet.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "tests/support/allocation_counter.h"
#include "tunnel/ip/checksum.h"
#include "tunnel/ip/flow_key.h"
#include "tunnel/ip/icmp.h"


namespace {

using namespace dvpn::tunnel::ip;
using Bytes = std::vector<uint8_t>;

Bytes Hex(const std::string& h) {
  Bytes out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(uint8_t(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

// --------------------------------------------------------------- packets from the kernel
// unshare -rn python3 tests/tunnel/ip/capture_ip_packets.py (Linux 6.x, Debian 12).
const Bytes kUdp4 = Hex(
    "450000276a5a40004011bc570a0900010a0900029c4014e90013e9bc68656c6c6f2c2065786974");
const Bytes kTcp4Syn = Hex(
    "4500003c2f3d40004006f76a0a0900010a0900029c4101bb5e4de13c00000000a002faf081e10000020405b404"
    "02080a26f0b29f000000000103030a");
const Bytes kIcmp4Echo = Hex(
    "450000300f854000400117340a0900010a090002080011ea1234000170696e672d646174612d3031323334353637"
    "3839");
const Bytes kUdp6 = Hex(
    "6000ae8c00161140fd000009000000000000000000000001fd0000090000000000000000000000029c4214e90016"
    "8d5c68656c6c6f2c2065786974207636");
const Bytes kTcp6Syn = Hex(
    "6005190800280640fd000009000000000000000000000001fd0000090000000000000000000000029c4301bb5f6e"
    "72c800000000a002fd20ffc70000020405a00402080a0000e0dc000000000103030a");
const Bytes kIcmp6Echo = Hex(
    "6004156800123a40fd000009000000000000000000000001fd000009000000000000000000000002800054b34321"
    "000770696e67362d64617461");

std::vector<Bytes> RealPackets() { return {kUdp4, kTcp4Syn, kIcmp4Echo, kUdp6, kTcp6Syn, kIcmp6Echo}; }

const Address kV4Client = Address::V4({10, 9, 0, 1});
const Address kV4Peer = Address::V4({10, 9, 0, 2});
const Address kV6Client = Address::V6({0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
const Address kV6Peer = Address::V6({0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2});
const Address kExitV4 = Address::V4({10, 231, 0, 1});
const Address kExitV6 = Address::V6({0xfd, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});

Address V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) { return Address::V4({a, b, c, d}); }
Address V6Text(const std::array<uint8_t, 16>& a) { return Address::V6(a); }

// ----------------------------------------------------------------- hand-built packets
uint16_t Get16(const Bytes& b, size_t at) { return uint16_t(b[at] << 8 | b[at + 1]); }
void Put16(Bytes& b, size_t at, uint16_t v) {
  b[at] = uint8_t(v >> 8);
  b[at + 1] = uint8_t(v);
}

// Recomputes only the IPv4 header checksum (for packets FillChecksums refuses on purpose).
void FixV4Header(Bytes& p) {
  const size_t ihl = size_t(p[0] & 0x0f) * 4;
  Put16(p, 10, 0);
  Put16(p, 10, Checksum(std::span(p).first(ihl)));
}

// An IPv4 packet around `l4` with the given protocol and options (a multiple of 4 bytes),
// checksums filled when the packet allows it.
Bytes MakeV4(uint8_t protocol, const Bytes& l4, Address src = kV4Client, Address dst = kV4Peer,
             const Bytes& options = {}) {
  Bytes p(20 + options.size());
  p[0] = uint8_t(0x40 | (5 + options.size() / 4));
  Put16(p, 2, uint16_t(p.size() + l4.size()));
  Put16(p, 4, 0x1234);
  Put16(p, 6, 0x4000);
  p[8] = 64;
  p[9] = protocol;
  std::copy_n(src.bytes.begin(), 4, p.begin() + 12);
  std::copy_n(dst.bytes.begin(), 4, p.begin() + 16);
  std::copy(options.begin(), options.end(), p.begin() + 20);
  p.insert(p.end(), l4.begin(), l4.end());
  if (!FillChecksums(p)) FixV4Header(p);
  return p;
}

// An IPv6 packet: `chain` is the extension headers (each: its type and its bytes, whose first
// byte is overwritten with the next header), then `l4` of `protocol`.
struct Ext {
  uint8_t type;
  Bytes bytes;
};
Bytes MakeV6(uint8_t protocol, const Bytes& l4, const std::vector<Ext>& chain = {},
             Address src = kV6Client, Address dst = kV6Peer) {
  Bytes p(40);
  p[0] = 0x60;
  p[6] = chain.empty() ? protocol : chain[0].type;
  p[7] = 64;
  std::copy(src.bytes.begin(), src.bytes.end(), p.begin() + 8);
  std::copy(dst.bytes.begin(), dst.bytes.end(), p.begin() + 24);
  for (size_t i = 0; i < chain.size(); ++i) {
    Bytes e = chain[i].bytes;
    e[0] = i + 1 < chain.size() ? chain[i + 1].type : protocol;
    p.insert(p.end(), e.begin(), e.end());
  }
  p.insert(p.end(), l4.begin(), l4.end());
  Put16(p, 4, uint16_t(p.size() - 40));
  (void)FillChecksums(p);
  return p;
}

Ext Options8(uint8_t type) { return {type, Bytes{0, 0, 1, 4, 0, 0, 0, 0}}; }  // PadN
Ext Routing8() { return {43, Bytes{0, 0, 4, 0, 0, 0, 0, 0}}; }  // type 4, segments left 0
Ext Fragment(uint16_t offset_units, bool more) {
  return {44, Bytes{0, 0, uint8_t(offset_units >> 5), uint8_t((offset_units << 3) | more), 0, 0,
                    0, 42}};
}

Bytes Udp(uint16_t sport, uint16_t dport, const std::string& data) {
  Bytes u(8);
  Put16(u, 0, sport);
  Put16(u, 2, dport);
  Put16(u, 4, uint16_t(8 + data.size()));
  u.insert(u.end(), data.begin(), data.end());
  return u;
}
Bytes Tcp(uint16_t sport, uint16_t dport, uint8_t flags, const std::string& data = "") {
  Bytes t(20);
  Put16(t, 0, sport);
  Put16(t, 2, dport);
  t[12] = 5 << 4;
  t[13] = flags;
  Put16(t, 14, 65535);
  t.insert(t.end(), data.begin(), data.end());
  return t;
}
Bytes Icmp(uint8_t type, uint8_t code, uint16_t id, const std::string& data = "") {
  Bytes m = {type, code, 0, 0, uint8_t(id >> 8), uint8_t(id), 0, 1};
  m.insert(m.end(), data.begin(), data.end());
  return m;
}

PacketErrc ErrOf(const Bytes& p) {
  auto r = ParsePacket(p);
  EXPECT_FALSE(r) << Describe(p);
  return r ? PacketErrc{} : r.error().code;
}

PacketInfo Ok(const Bytes& p) {
  auto r = ParsePacket(p);
  EXPECT_TRUE(r) << (r ? "" : PacketErrcName(r.error().code));
  return r ? *r : PacketInfo{};
}

// ================================================================ real packets
// What each kernel packet must parse to, field by field.
struct RealCase {
  const char* name;
  const Bytes* packet;
  Family family;
  uint8_t protocol;
  uint16_t src_port, dst_port;
  uint8_t tcp_flags, icmp_type;
  uint32_t l4_offset, payload_offset, total_length;
  const char* payload;  // the bytes after payload_offset
  const char* describe;
};

TEST(IpPacketReal, EachFieldOfEachKernelPacket) {
  const RealCase cases[] = {
      {"udp4", &kUdp4, Family::kV4, kProtoUdp, 40000, 5353, 0, 0, 20, 28, 39, "hello, exit",
       "udp4 10.9.0.1:40000 > 10.9.0.2:5353 len 39"},
      // Data offset 10: 20 bytes of options (MSS, SACK permitted, timestamps, window scale).
      {"tcp4_syn", &kTcp4Syn, Family::kV4, kProtoTcp, 40001, 443, kTcpSyn, 0, 20, 60, 60, "",
       "tcp4 10.9.0.1:40001 > 10.9.0.2:443 flags S len 60"},
      {"icmp4_echo", &kIcmp4Echo, Family::kV4, kProtoIcmp, 0x1234, 0x1234, 0, 8, 20, 28, 48,
       "ping-data-0123456789", "icmp4 10.9.0.1 > 10.9.0.2 type 8 code 0 id 4660 len 48"},
      {"udp6", &kUdp6, Family::kV6, kProtoUdp, 40002, 5353, 0, 0, 40, 48, 62, "hello, exit v6",
       "udp6 [fd00:9::1]:40002 > [fd00:9::2]:5353 len 62"},
      {"tcp6_syn", &kTcp6Syn, Family::kV6, kProtoTcp, 40003, 443, kTcpSyn, 0, 40, 80, 80, "",
       "tcp6 [fd00:9::1]:40003 > [fd00:9::2]:443 flags S len 80"},
      {"icmp6_echo", &kIcmp6Echo, Family::kV6, kProtoIcmpv6, 0x4321, 0x4321, 0, 128, 40, 48, 58,
       "ping6-data", "icmp6 fd00:9::1 > fd00:9::2 type 128 code 0 id 17185 len 58"},
  };
  for (const RealCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Bytes& p = *c.packet;
    const PacketInfo i = Ok(p);
    const bool v4 = c.family == Family::kV4;
    EXPECT_EQ(i.family, c.family);
    EXPECT_EQ(i.protocol, c.protocol);
    EXPECT_EQ(i.src, v4 ? kV4Client : kV6Client);
    EXPECT_EQ(i.dst, v4 ? kV4Peer : kV6Peer);
    EXPECT_EQ(i.ttl, 64);
    EXPECT_EQ(i.src_port, c.src_port);
    EXPECT_EQ(i.dst_port, c.dst_port);
    EXPECT_EQ(i.tcp_flags, c.tcp_flags);
    EXPECT_EQ(i.icmp_type, c.icmp_type);
    EXPECT_EQ(i.icmp_code, 0);
    EXPECT_FALSE(i.IsIcmpError());
    EXPECT_EQ(i.l4_offset, c.l4_offset);
    EXPECT_EQ(i.payload_offset, c.payload_offset);
    EXPECT_EQ(i.total_length, c.total_length);
    EXPECT_EQ(std::string(p.begin() + i.payload_offset, p.end()), c.payload);
    EXPECT_EQ(Describe(p), c.describe);
  }
}

TEST(IpPacketReal, Peeks) {
  EXPECT_EQ(SourceAddress(kUdp4), kV4Client);
  EXPECT_EQ(DestinationAddress(kUdp4), kV4Peer);
  EXPECT_EQ(SourceAddress(kTcp6Syn), kV6Client);
  EXPECT_EQ(DestinationAddress(kTcp6Syn), kV6Peer);
  // Only the version and the fixed header are looked at: a bad checksum does not matter.
  Bytes bad = kUdp4;
  bad[10] ^= 1;
  EXPECT_EQ(SourceAddress(bad), kV4Client);
  EXPECT_FALSE(SourceAddress(std::span(kUdp4).first(19)));
  EXPECT_FALSE(DestinationAddress(std::span(kUdp6).first(39)));
  EXPECT_FALSE(SourceAddress(Bytes{}));
  Bytes v5 = kUdp4;
  v5[0] = 0x55;
  EXPECT_FALSE(DestinationAddress(v5));
}

// ================================================================ checksums
TEST(IpChecksum, Rfc1071Example) {
  // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (folded), so the checksum is 220d.
  EXPECT_EQ(Checksum(Hex("0001f203f4f5f6f7")), 0x220d);
  EXPECT_EQ(Checksum(Hex("0001f203f4f5f6f7220d")), 0);
  EXPECT_EQ(Checksum(Hex("01")), 0xfeff);  // an odd byte is padded with zero
  EXPECT_EQ(Checksum(Bytes{}), 0xffff);
}

TEST(IpChecksum, KernelPacketsVerify) {
  for (const Bytes& p : RealPackets()) {
    const PacketInfo i = Ok(p);
    const auto l4 = std::span(p).subspan(i.l4_offset);
    if (i.family == Family::kV4) {
      EXPECT_EQ(Checksum(std::span(p).first(20)), 0);
    }
    if (i.protocol == kProtoIcmp) {
      EXPECT_EQ(Checksum(l4), 0);
    } else {
      EXPECT_EQ(TransportChecksum(i.src, i.dst, i.protocol, l4), 0) << Describe(p);
    }
  }
}

TEST(IpChecksum, FillChecksumsReproducesTheKernel) {
  for (const Bytes& p : RealPackets()) {
    const PacketInfo i = Ok(p);
    Bytes zeroed = p;
    if (i.family == Family::kV4) Put16(zeroed, 10, 0);
    const size_t field = i.l4_offset + (i.protocol == kProtoUdp ? 6 : i.protocol == kProtoTcp ? 16 : 2);
    Put16(zeroed, field, 0);
    EXPECT_EQ(ErrOf(zeroed), PacketErrc::kBadChecksum);
    ASSERT_TRUE(FillChecksums(zeroed));
    EXPECT_EQ(zeroed, p) << Describe(p);
  }
}

TEST(IpChecksum, AdjustMatchesRecomputing) {
  Bytes p = kUdp4;
  const uint16_t old_word = Get16(p, 8);  // TTL and protocol
  p[8] = 63;
  const uint16_t adjusted = ChecksumAdjust(Get16(p, 10), old_word, Get16(p, 8));
  Put16(p, 10, 0);
  EXPECT_EQ(adjusted, Checksum(std::span(p).first(20)));
  Put16(p, 10, adjusted);
  EXPECT_EQ(Ok(p).ttl, 63);
  // A word that changes an address in the pseudo-header: adjust the UDP checksum as a NAT does.
  Bytes q = kUdp4;
  const uint16_t old_src = Get16(q, 14);
  Put16(q, 14, 0x0099);
  Put16(q, 26, ChecksumAdjust(Get16(q, 26), old_src, 0x0099));
  Put16(q, 10, ChecksumAdjust(Get16(q, 10), old_src, 0x0099));
  EXPECT_TRUE(ParsePacket(q));
}

TEST(IpChecksum, UdpZeroChecksum) {
  Bytes v4 = kUdp4;
  Put16(v4, 26, 0);  // IPv4: "not computed"
  EXPECT_TRUE(ParsePacket(v4));
  Bytes v6 = kUdp6;
  Put16(v6, 46, 0);  // IPv6: refused (RFC 8200 §8.1)
  EXPECT_EQ(ErrOf(v6), PacketErrc::kBadChecksum);
  // A computed 0 is stored as 0xffff, and 0xffff verifies.
  Bytes u;
  for (int k = 0; k < 65536; ++k) {  // find a payload whose checksum computes to 0
    u = MakeV4(kProtoUdp, Udp(1, 2, std::string{char(k >> 8), char(k)}));
    if (Get16(u, 26) == 0xffff) break;
  }
  ASSERT_EQ(Get16(u, 26), 0xffff);
  EXPECT_TRUE(ParsePacket(u));
}

// The word-by-word sum of RFC 1071 that Checksum's 8-byte loop must equal: every length 0..300,
// every start alignment, random bytes, random partial sums, and the all-zero / all-0xff edges
// (where 0 and 0xffff must stay apart).
uint16_t WordByWordChecksum(std::span<const uint8_t> bytes, uint64_t sum) {
  size_t i = 0;
  for (; i + 1 < bytes.size(); i += 2) sum += uint32_t(bytes[i]) << 8 | bytes[i + 1];
  if (i < bytes.size()) sum += uint32_t(bytes[i]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

TEST(IpChecksum, EightBytesAtATimeEqualsWordByWord) {
  std::mt19937_64 rng(1071);
  Bytes buffer(300 + 8);
  long checked = 0;
  for (size_t length = 0; length <= 300; ++length) {
    for (int round = 0; round < 24; ++round) {
      const size_t start = round % 8;
      for (auto& b : buffer) b = uint8_t(rng());
      if (round == 0) std::fill(buffer.begin(), buffer.end(), 0);
      if (round == 1) std::fill(buffer.begin(), buffer.end(), 0xff);
      const auto bytes = std::span<const uint8_t>(buffer).subspan(start, length);
      const uint64_t initial =
          round < 4 ? uint64_t(round % 2) * 0xffff : rng() >> (16 + rng() % 48);
      ASSERT_EQ(Checksum(bytes, initial), WordByWordChecksum(bytes, initial))
          << "length " << length << " start " << start << " initial " << initial;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 301 * 24);
  // Transport checksums (the pseudo-header goes through the same sum) over random segments.
  for (int round = 0; round < 200; ++round) {
    const bool v4 = round % 2 == 0;
    Address src;
    Address dst;
    src.family = dst.family = v4 ? Family::kV4 : Family::kV6;
    for (size_t k = 0; k < src.size(); ++k) {
      src.bytes[k] = uint8_t(rng());
      dst.bytes[k] = uint8_t(rng());
    }
    Bytes segment(rng() % 1500);
    for (auto& b : segment) b = uint8_t(rng());
    uint64_t pseudo = 0;
    const Bytes addresses = [&] {
      Bytes a(src.view().begin(), src.view().end());
      a.insert(a.end(), dst.view().begin(), dst.view().end());
      return a;
    }();
    for (size_t k = 0; k < addresses.size(); k += 2) pseudo += addresses[k] << 8 | addresses[k + 1];
    pseudo += kProtoUdp + segment.size();
    EXPECT_EQ(TransportChecksum(src, dst, kProtoUdp, segment), WordByWordChecksum(segment, pseudo));
  }
}

// ================================================================ every PacketErrc
TEST(IpPacketErrors, Truncated) {
  EXPECT_EQ(ErrOf({}), PacketErrc::kTruncated);
  EXPECT_EQ(ErrOf(Bytes(kUdp4.begin(), kUdp4.begin() + 19)), PacketErrc::kTruncated);
  EXPECT_EQ(ErrOf(Bytes(kUdp6.begin(), kUdp6.begin() + 39)), PacketErrc::kTruncated);
  Bytes ihl = Bytes(kUdp4.begin(), kUdp4.begin() + 20);  // IHL 6, 20 bytes
  ihl[0] = 0x46;
  EXPECT_EQ(ErrOf(ihl), PacketErrc::kTruncated);
  // Transport headers cut short, the IP lengths consistent.
  EXPECT_EQ(ErrOf(MakeV4(kProtoTcp, Bytes(19))), PacketErrc::kTruncated);
  EXPECT_EQ(ErrOf(MakeV4(kProtoUdp, Bytes(7))), PacketErrc::kTruncated);
  EXPECT_EQ(ErrOf(MakeV4(kProtoIcmp, Bytes(7))), PacketErrc::kTruncated);
  EXPECT_EQ(ErrOf(MakeV6(kProtoIcmpv6, Bytes(4))), PacketErrc::kTruncated);
  EXPECT_EQ(ErrOf(MakeV6(kProtoTcp, Bytes(0))), PacketErrc::kTruncated);
  // An extension header that runs past the packet: length 1 = 16 bytes, 8 present.
  Bytes ext = MakeV6(59, {}, {Options8(60)});
  ext[41] = 1;
  EXPECT_EQ(ErrOf(ext), PacketErrc::kTruncated);
  // Not even the two bytes of the next header's type and length.
  Bytes cut = MakeV6(59, {}, {Options8(60)});
  cut.resize(41);
  Put16(cut, 4, 1);
  EXPECT_EQ(ErrOf(cut), PacketErrc::kTruncated);
}

TEST(IpPacketErrors, BadVersion) {
  for (uint8_t v : {0x00, 0x15, 0x55, 0xf0}) {
    Bytes p = kUdp4;
    p[0] = uint8_t(v | 5);
    EXPECT_EQ(ErrOf(p), PacketErrc::kBadVersion);
  }
  EXPECT_EQ(ErrOf(Bytes{0x70}), PacketErrc::kBadVersion);
}

TEST(IpPacketErrors, BadHeaderLength) {
  Bytes p = kUdp4;
  p[0] = 0x44;
  EXPECT_EQ(ErrOf(p), PacketErrc::kBadHeaderLength);
  for (uint8_t data_offset : {0, 4, 6, 15}) {  // the segment is 20 bytes: 6 and 15 are past it
    Bytes t = Tcp(1, 2, kTcpAck);
    t[12] = uint8_t(data_offset << 4);
    Bytes q = MakeV4(kProtoTcp, t);
    FixV4Header(q);
    EXPECT_EQ(ErrOf(q), PacketErrc::kBadHeaderLength) << int(data_offset);
  }
}

TEST(IpPacketErrors, LengthMismatch) {
  Bytes longer = kUdp4;
  longer.push_back(0);
  EXPECT_EQ(ErrOf(longer), PacketErrc::kLengthMismatch);
  Bytes field = kUdp4;
  Put16(field, 2, 38);
  FixV4Header(field);
  EXPECT_EQ(ErrOf(field), PacketErrc::kLengthMismatch);
  Bytes six = kUdp6;
  Put16(six, 4, 21);
  EXPECT_EQ(ErrOf(six), PacketErrc::kLengthMismatch);
  Bytes jumbo = kUdp6;  // payload length 0: a jumbogram, refused
  Put16(jumbo, 4, 0);
  EXPECT_EQ(ErrOf(jumbo), PacketErrc::kLengthMismatch);
  Bytes udp = kUdp4;
  Put16(udp, 24, 18);  // UDP length one short of the rest
  EXPECT_EQ(ErrOf(udp), PacketErrc::kLengthMismatch);
  Put16(udp, 24, 7);
  EXPECT_EQ(ErrOf(udp), PacketErrc::kLengthMismatch);
}

TEST(IpPacketErrors, BadChecksum) {
  Bytes hdr = kUdp4;
  hdr[15] ^= 0x01;  // the source address: both the header and the UDP checksum break
  EXPECT_EQ(ErrOf(hdr), PacketErrc::kBadChecksum);
  for (const Bytes& p : RealPackets()) {
    Bytes q = p;
    q.back() ^= 0x40;  // the last payload byte: only the transport checksum breaks
    EXPECT_EQ(ErrOf(q), PacketErrc::kBadChecksum) << Describe(p);
  }
}

TEST(IpPacketErrors, ZeroTtl) {
  Bytes p = kUdp4;
  p[8] = 0;
  FixV4Header(p);
  EXPECT_EQ(ErrOf(p), PacketErrc::kZeroTtl);
  Bytes q = kUdp6;
  q[7] = 0;
  EXPECT_EQ(ErrOf(q), PacketErrc::kZeroTtl);
  q[7] = 1;  // TTL 1 is fine: the exit's kernel answers "time exceeded" (traceroute)
  EXPECT_TRUE(ParsePacket(q));
}

TEST(IpPacketErrors, Fragment) {
  Bytes mf = kUdp4;
  Put16(mf, 6, 0x2000);
  FixV4Header(mf);
  EXPECT_EQ(ErrOf(mf), PacketErrc::kFragment);
  Bytes offset = kUdp4;
  Put16(offset, 6, 0x0001);  // offset 8 bytes, MF clear: the last fragment
  FixV4Header(offset);
  EXPECT_EQ(ErrOf(offset), PacketErrc::kFragment);
  Bytes df = kUdp4;  // DF alone is not a fragment
  Put16(df, 6, 0x4000);
  FixV4Header(df);
  EXPECT_TRUE(ParsePacket(df));
  EXPECT_EQ(ErrOf(MakeV6(kProtoUdp, Udp(1, 2, "x"), {Fragment(0, true)})), PacketErrc::kFragment);
  EXPECT_EQ(ErrOf(MakeV6(kProtoUdp, Udp(1, 2, "x"), {Fragment(0, false)})), PacketErrc::kFragment);
  EXPECT_EQ(ErrOf(MakeV6(kProtoUdp, Udp(1, 2, "x"), {Options8(0), Fragment(100, false)})),
            PacketErrc::kFragment);
}

TEST(IpPacketErrors, BadExtensionHeader) {
  EXPECT_EQ(ErrOf(MakeV6(kProtoUdp, Udp(1, 2, "x"), {Options8(60), Options8(0)})),
            PacketErrc::kBadExtensionHeader);
}

TEST(IpPacketErrors, TooManyExtensionHeaders) {
  std::vector<Ext> chain(kMaxExtensionHeaders, Options8(60));
  chain[0] = Options8(0);
  chain[1] = Routing8();
  const PacketInfo i = Ok(MakeV6(kProtoUdp, Udp(7, 8, "x"), chain));
  EXPECT_EQ(i.l4_offset, 40u + 8 * kMaxExtensionHeaders);
  EXPECT_EQ(i.dst_port, 8);
  chain.push_back(Options8(60));
  EXPECT_EQ(ErrOf(MakeV6(kProtoUdp, Udp(7, 8, "x"), chain)), PacketErrc::kTooManyExtensionHeaders);
}

TEST(IpPacketErrors, DocumentListsEveryCode) {
  std::ifstream in(DVPN_TUNNEL_MD);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const size_t from = doc.find("| `PacketErrc` | when |");
  ASSERT_NE(from, std::string::npos);
  const std::string table = doc.substr(from, doc.find("\n\n", from) - from);
  std::set<std::string> in_doc;
  const std::regex row(R"(\n\| `(k\w+)` \|)");
  for (std::sregex_iterator it(table.begin(), table.end(), row), end; it != end; ++it) {
    in_doc.insert((*it)[1]);
  }
  std::set<std::string> in_code;
  for (int c = 1; c <= int(PacketErrc::kTooManyExtensionHeaders); ++c) {
    in_code.insert(PacketErrcName(PacketErrc(c)));
  }
  EXPECT_EQ(in_doc, in_code);
  // And the ICMP refusals.
  const size_t ifrom = doc.find("| `IcmpErrc` | when |");
  ASSERT_NE(ifrom, std::string::npos);
  const std::string itable = doc.substr(ifrom, doc.find("\n\n", ifrom) - ifrom);
  std::set<std::string> idoc, icode;
  for (std::sregex_iterator it(itable.begin(), itable.end(), row), end; it != end; ++it) {
    idoc.insert((*it)[1]);
  }
  for (int c = 1; c <= int(IcmpErrc::kBufferTooSmall); ++c) icode.insert(IcmpErrcName(IcmpErrc(c)));
  EXPECT_EQ(idoc, icode);
}

// ================================================================ what else parses
TEST(IpPacketParse, Ipv4OptionsAreSkipped) {
  const Bytes options = {1, 1, 1, 0};  // NOP NOP NOP EOL
  const PacketInfo i = Ok(MakeV4(kProtoUdp, Udp(53, 1053, "dns"), kV4Client, kV4Peer, options));
  EXPECT_EQ(i.l4_offset, 24u);
  EXPECT_EQ(i.payload_offset, 32u);
  EXPECT_EQ(i.src_port, 53);
}

TEST(IpPacketParse, Ipv6ExtensionHeadersAreSkipped) {
  const Bytes p = MakeV6(kProtoTcp, Tcp(5000, 80, kTcpAck | kTcpPsh, "GET /"),
                         {Options8(0), Routing8(), Options8(60)});
  const PacketInfo i = Ok(p);
  EXPECT_EQ(i.protocol, kProtoTcp);
  EXPECT_EQ(i.l4_offset, 64u);
  EXPECT_EQ(i.payload_offset, 84u);
  EXPECT_EQ(i.tcp_flags, kTcpAck | kTcpPsh);
  EXPECT_EQ(Describe(p), "tcp6 [fd00:9::1]:5000 > [fd00:9::2]:80 flags PA len 89");
  // The pseudo-header uses the final next header (6), not the first (0).
  EXPECT_EQ(TransportChecksum(i.src, i.dst, kProtoTcp, std::span(p).subspan(64)), 0);
}

TEST(IpPacketParse, TcpFlags) {
  const PacketInfo i = Ok(MakeV4(kProtoTcp, Tcp(1, 2, kTcpFin | kTcpAck)));
  EXPECT_EQ(i.tcp_flags, kTcpFin | kTcpAck);
  EXPECT_EQ(Ok(MakeV4(kProtoTcp, Tcp(1, 2, kTcpRst))).tcp_flags, kTcpRst);
}

TEST(IpPacketParse, OtherProtocolsCarryAddressesOnly) {
  const Bytes gre = {0, 0, 0x08, 0x00, 1, 2, 3, 4};
  for (uint8_t proto : {47, 132, 50, 51, 59}) {  // GRE, SCTP, ESP, AH, No Next Header
    for (const Bytes& p : {MakeV4(proto, gre), MakeV6(proto, gre)}) {
      const PacketInfo i = Ok(p);
      EXPECT_EQ(i.protocol, proto);
      EXPECT_EQ(i.src_port, 0);
      EXPECT_EQ(i.dst_port, 0);
      EXPECT_EQ(i.l4_offset, i.payload_offset);
      EXPECT_EQ(i.payload_offset + 8, i.total_length);
    }
  }
  // ICMP over IPv6 and ICMPv6 over IPv4 are "other": no checksum is asked of them.
  EXPECT_EQ(Ok(MakeV6(kProtoIcmp, Bytes(3))).src_port, 0);
  EXPECT_EQ(Ok(MakeV4(kProtoIcmpv6, Bytes(3))).icmp_type, 0);
  EXPECT_EQ(Describe(MakeV4(47, gre)), "ip4 proto 47 10.9.0.1 > 10.9.0.2 len 28");
  EXPECT_EQ(Describe(Bytes{0x45}), "refused kTruncated");
}

TEST(IpPacketParse, IcmpIdentifierOnlyForEcho) {
  EXPECT_EQ(Ok(MakeV4(kProtoIcmp, Icmp(0, 0, 77))).src_port, 77);  // echo reply
  EXPECT_EQ(Ok(MakeV4(kProtoIcmp, Icmp(13, 0, 77))).src_port, 0);  // timestamp
  EXPECT_EQ(Ok(MakeV6(kProtoIcmpv6, Icmp(129, 0, 77))).dst_port, 77);
  EXPECT_EQ(Ok(MakeV6(kProtoIcmpv6, Icmp(135, 0, 77))).dst_port, 0);  // neighbor solicitation
  EXPECT_TRUE(Ok(MakeV4(kProtoIcmp, Icmp(11, 0, 0))).IsIcmpError());
  EXPECT_TRUE(Ok(MakeV6(kProtoIcmpv6, Icmp(137, 0, 0))).IsIcmpError());  // redirect
  EXPECT_FALSE(Ok(MakeV6(kProtoIcmpv6, Icmp(135, 0, 0))).IsIcmpError());
}

// ================================================================ flow keys
TEST(IpFlowKey, FiveTupleAndReverse) {
  const FlowKey k = MakeFlowKey(Ok(kUdp4));
  EXPECT_EQ(k.family, Family::kV4);
  EXPECT_EQ(k.protocol, kProtoUdp);
  EXPECT_EQ(k.src, kV4Client);
  EXPECT_EQ(k.dst, kV4Peer);
  EXPECT_EQ(k.src_port, 40000);
  EXPECT_EQ(k.dst_port, 5353);
  const FlowKey r = k.Reversed();
  EXPECT_EQ(r.src, kV4Peer);
  EXPECT_EQ(r.src_port, 5353);
  EXPECT_EQ(r.dst_port, 40000);
  EXPECT_EQ(r.Reversed(), k);
  // The answer the peer sends comes back under the reversed key.
  const Bytes answer = MakeV4(kProtoUdp, Udp(5353, 40000, "answer"), kV4Peer, kV4Client);
  EXPECT_EQ(MakeFlowKey(Ok(answer)), r);
  EXPECT_NE(MakeFlowKey(Ok(answer)), k);
}

TEST(IpFlowKey, EchoRequestAndReplyShareTheIdentifier) {
  const Bytes request = MakeV6(kProtoIcmpv6, Icmp(128, 0, 99, "x"));
  const Bytes reply = MakeV6(kProtoIcmpv6, Icmp(129, 0, 99, "x"), {}, kV6Peer, kV6Client);
  EXPECT_EQ(MakeFlowKey(Ok(request)).Reversed(), MakeFlowKey(Ok(reply)));
  const Bytes other_id = MakeV6(kProtoIcmpv6, Icmp(129, 0, 98, "x"), {}, kV6Peer, kV6Client);
  EXPECT_NE(MakeFlowKey(Ok(request)).Reversed(), MakeFlowKey(Ok(other_id)));
}

TEST(IpFlowKey, HashAndSets) {
  std::unordered_set<FlowKey> set;
  for (const Bytes& p : RealPackets()) {
    const FlowKey k = MakeFlowKey(Ok(p));
    EXPECT_TRUE(set.insert(k).second);
    EXPECT_FALSE(set.insert(k).second);
    EXPECT_EQ(std::hash<FlowKey>{}(k), FlowKeyHash{}(k));
    EXPECT_NE(FlowKeyHash{1}(k), FlowKeyHash{2}(k));
    EXPECT_EQ(set.count(k.Reversed()), 0u);
  }
  // Keys differing in one field hash apart (no field is left out of the hash).
  std::set<size_t> hashes;
  FlowKey base = MakeFlowKey(Ok(kUdp6));
  hashes.insert(FlowKeyHash{}(base));
  for (int b = 0; b < 16; ++b) {
    FlowKey k = base;
    k.dst.bytes[b] ^= 1;
    hashes.insert(FlowKeyHash{}(k));
  }
  FlowKey k = base;
  k.protocol = kProtoTcp;
  hashes.insert(FlowKeyHash{}(k));
  k = base;
  k.src_port ^= 1;
  hashes.insert(FlowKeyHash{}(k));
  k = base;
  k.dst_port ^= 1;
  hashes.insert(FlowKeyHash{}(k));
  EXPECT_EQ(hashes.size(), 20u);
  // Many UDP flows spread over buckets.
  std::unordered_set<FlowKey, FlowKeyHash> many(0, FlowKeyHash{0x5eed});
  for (int port = 0; port < 5000; ++port) {
    FlowKey f = base;
    f.src_port = uint16_t(port);
    many.insert(f);
  }
  size_t longest = 0;
  for (size_t b = 0; b < many.bucket_count(); ++b) longest = std::max(longest, many.bucket_size(b));
  EXPECT_LE(longest, 12u);
}

// ================================================================ ICMP answers
// Parses an answer and checks what every answer has; returns it and the quoted bytes.
struct Answer {
  PacketInfo info;
  Bytes packet;
  Bytes quoted;
};
Answer CheckAnswer(const Bytes& offending, const Address& from, std::span<const uint8_t> out,
                   size_t n) {
  Answer a;
  a.packet.assign(out.begin(), out.begin() + n);
  auto r = ParsePacket(a.packet);
  EXPECT_TRUE(r) << (r ? "" : PacketErrcName(r.error().code));
  if (!r) return a;
  a.info = *r;
  EXPECT_EQ(a.info.src, from);
  EXPECT_EQ(a.info.dst, *SourceAddress(offending));
  EXPECT_EQ(a.info.ttl, 64);
  EXPECT_TRUE(a.info.IsIcmpError());
  EXPECT_EQ(a.info.src_port, 0);
  a.quoted.assign(a.packet.begin() + a.info.payload_offset, a.packet.end());
  EXPECT_TRUE(std::equal(a.quoted.begin(), a.quoted.end(), offending.begin()));
  if (from.family == Family::kV4) {
    EXPECT_EQ(a.info.protocol, kProtoIcmp);
    EXPECT_EQ(a.packet[0], 0x45);
    EXPECT_EQ(a.packet[1], 0xc0);
    EXPECT_EQ(Get16(a.packet, 4), 0);
    EXPECT_EQ(Get16(a.packet, 6), 0x4000);
    EXPECT_EQ(a.info.payload_offset, 28u);
    EXPECT_LE(n, kMaxIcmpv4Answer);
  } else {
    EXPECT_EQ(a.info.protocol, kProtoIcmpv6);
    EXPECT_EQ(a.packet[0], 0x60);
    EXPECT_EQ(Get16(a.packet, 2), 0);
    EXPECT_EQ(a.info.payload_offset, 48u);
    EXPECT_LE(n, kMaxIcmpv6Answer);
  }
  return a;
}

TEST(IpIcmpAnswer, ProhibitedForEveryRealPacket) {
  for (const Bytes& p : RealPackets()) {
    const bool v4 = p[0] >> 4 == 4;
    const Address from = v4 ? kExitV4 : kExitV6;
    Bytes out(1500);
    auto n = BuildProhibited(p, from, out);
    ASSERT_TRUE(n) << IcmpErrcName(n.error().code);
    EXPECT_EQ(*n, (v4 ? 28 : 48) + p.size());
    const Answer a = CheckAnswer(p, from, out, *n);
    EXPECT_EQ(a.quoted, p);
    EXPECT_EQ(a.info.icmp_type, v4 ? 3 : 1);
    EXPECT_EQ(a.info.icmp_code, v4 ? 13 : 1);
    EXPECT_EQ(Get16(a.packet, a.info.l4_offset + 4), 0);
    EXPECT_EQ(Get16(a.packet, a.info.l4_offset + 6), 0);
  }
}

TEST(IpIcmpAnswer, TooBigForEveryRealPacket) {
  for (const Bytes& p : RealPackets()) {
    const bool v4 = p[0] >> 4 == 4;
    const Address from = v4 ? kExitV4 : kExitV6;
    Bytes out(1500);
    auto n = BuildTooBig(p, from, 1420, out);
    ASSERT_TRUE(n) << IcmpErrcName(n.error().code);
    const Answer a = CheckAnswer(p, from, out, *n);
    EXPECT_EQ(a.quoted, p);
    EXPECT_EQ(a.info.icmp_type, v4 ? 3 : 2);
    EXPECT_EQ(a.info.icmp_code, v4 ? 4 : 0);
    const size_t at = a.info.l4_offset;
    if (v4) {
      EXPECT_EQ(Get16(a.packet, at + 4), 0);
      EXPECT_EQ(Get16(a.packet, at + 6), 1420);
    } else {
      EXPECT_EQ(Get16(a.packet, at + 4), 0);
      EXPECT_EQ(Get16(a.packet, at + 6), 1420);
    }
  }
  Bytes out(1500);
  auto big = BuildTooBig(kUdp6, kExitV6, 70000, out);  // IPv6 MTU is 32 bits
  ASSERT_TRUE(big);
  EXPECT_EQ(Get16(out, 44), 1);
  EXPECT_EQ(Get16(out, 46), 70000 - 65536);
}

TEST(IpIcmpAnswer, ExactBytesOfAnIpv4Answer) {
  Bytes out(600);
  auto n = BuildProhibited(kUdp4, kExitV4, out);
  ASSERT_TRUE(n);
  out.resize(*n);
  Bytes want = Hex("45c00043000040004001" "0000" "0ae70001" "0a090001" "030d" "0000" "00000000");
  want.insert(want.end(), kUdp4.begin(), kUdp4.end());
  Put16(want, 10, Checksum(std::span(want).first(20)));
  Put16(want, 22, Checksum(std::span(want).subspan(20)));
  EXPECT_EQ(out, want);
}

TEST(IpIcmpAnswer, LongPacketsAreQuotedUpToTheLimits) {
  const Bytes v4 = MakeV4(kProtoUdp, Udp(1, 2, std::string(1400, 'a')));
  const Bytes v6 = MakeV6(kProtoUdp, Udp(1, 2, std::string(1400, 'b')));
  Bytes out(2000);
  auto n4 = BuildTooBig(v4, kExitV4, 1420, out);
  ASSERT_TRUE(n4);
  EXPECT_EQ(*n4, kMaxIcmpv4Answer);
  EXPECT_EQ(CheckAnswer(v4, kExitV4, out, *n4).quoted.size(), 548u);
  auto n6 = BuildTooBig(v6, kExitV6, 1420, out);
  ASSERT_TRUE(n6);
  EXPECT_EQ(*n6, kMaxIcmpv6Answer);
  EXPECT_EQ(CheckAnswer(v6, kExitV6, out, *n6).quoted.size(), 1232u);
}

TEST(IpIcmpAnswer, ShortBuffersQuoteLessThenRefuse) {
  const Bytes v4 = MakeV4(kProtoUdp, Udp(1, 2, std::string(100, 'a')), kV4Client, kV4Peer,
                          Bytes{1, 1, 1, 1, 1, 1, 1, 0});  // IHL 7: 28 bytes of header
  Bytes out(28 + 28 + 8);  // the smallest allowed: IP header (28) + 8 bytes quoted
  auto n = BuildProhibited(v4, kExitV4, out);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, out.size());
  EXPECT_EQ(CheckAnswer(v4, kExitV4, out, *n).quoted.size(), 36u);
  out.pop_back();
  auto refused = BuildProhibited(v4, kExitV4, out);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, IcmpErrc::kBufferTooSmall);
  Bytes out6(96);
  auto n6 = BuildProhibited(kTcp6Syn, kExitV6, out6);  // 80 bytes, 48 quoted
  ASSERT_TRUE(n6);
  EXPECT_EQ(CheckAnswer(kTcp6Syn, kExitV6, out6, *n6).quoted.size(), 48u);
  out6.resize(95);
  EXPECT_EQ(BuildProhibited(kTcp6Syn, kExitV6, out6).error().code, IcmpErrc::kBufferTooSmall);
  // A whole offending packet shorter than the minimum is quoted whole.
  const Bytes tiny = MakeV4(47, {});
  Bytes small(48);
  auto nt = BuildProhibited(tiny, kExitV4, small);
  ASSERT_TRUE(nt);
  EXPECT_EQ(*nt, 48u);
}

IcmpErrc NoAnswer(const Bytes& offending, const Address& from, bool too_big = false,
                  uint32_t mtu = 1420) {
  Bytes out(1500);
  auto r = too_big ? BuildTooBig(offending, from, mtu, out) : BuildProhibited(offending, from, out);
  EXPECT_FALSE(r) << Describe(offending);
  return r ? IcmpErrc{} : r.error().code;
}

TEST(IpIcmpAnswer, NoAnswerBadPacketFamilyMtu) {
  EXPECT_EQ(NoAnswer(Bytes(kUdp4.begin(), kUdp4.begin() + 19), kExitV4), IcmpErrc::kBadPacket);
  EXPECT_EQ(NoAnswer(Bytes{0x55, 0, 0, 0}, kExitV4), IcmpErrc::kBadPacket);
  EXPECT_EQ(NoAnswer(Bytes(kUdp6.begin(), kUdp6.begin() + 39), kExitV6), IcmpErrc::kBadPacket);
  std::vector<Ext> chain(kMaxExtensionHeaders + 1, Options8(60));
  EXPECT_EQ(NoAnswer(MakeV6(kProtoUdp, Udp(1, 2, "x"), chain), kExitV6), IcmpErrc::kBadPacket);
  EXPECT_EQ(NoAnswer(kUdp4, kExitV6), IcmpErrc::kFamilyMismatch);
  EXPECT_EQ(NoAnswer(kUdp6, kExitV4), IcmpErrc::kFamilyMismatch);
  EXPECT_EQ(NoAnswer(kUdp4, kExitV4, true, 67), IcmpErrc::kBadMtu);
  EXPECT_EQ(NoAnswer(kUdp4, kExitV4, true, 65536), IcmpErrc::kBadMtu);
  EXPECT_EQ(NoAnswer(kUdp6, kExitV6, true, 1279), IcmpErrc::kBadMtu);
  Bytes out(1500);
  EXPECT_TRUE(BuildTooBig(kUdp4, kExitV4, 68, out));
  EXPECT_TRUE(BuildTooBig(kUdp6, kExitV6, 1280, out));
}

TEST(IpIcmpAnswer, NoAnswerToLaterFragments) {
  Bytes later = kUdp4;
  Put16(later, 6, 0x0010);
  FixV4Header(later);
  EXPECT_EQ(NoAnswer(later, kExitV4), IcmpErrc::kNotFirstFragment);
  Bytes first = kUdp4;  // the first fragment is answered
  Put16(first, 6, 0x2000);
  FixV4Header(first);
  Bytes out(1500);
  EXPECT_TRUE(BuildTooBig(first, kExitV4, 1420, out));
  EXPECT_EQ(NoAnswer(MakeV6(kProtoUdp, Udp(1, 2, "x"), {Fragment(3, true)}), kExitV6),
            IcmpErrc::kNotFirstFragment);
  EXPECT_TRUE(BuildTooBig(MakeV6(kProtoUdp, Udp(1, 2, "x"), {Fragment(0, true)}), kExitV6, 1420,
                          out));
}

TEST(IpIcmpAnswer, NoAnswerToIcmpErrors) {
  Bytes out(1500);
  auto n = BuildProhibited(kUdp4, kExitV4, out);
  ASSERT_TRUE(n);
  const Bytes answer(out.begin(), out.begin() + *n);  // our own answer, sent back to us
  EXPECT_EQ(NoAnswer(answer, kV4Client), IcmpErrc::kIcmpError);
  for (uint8_t type : {3, 4, 5, 11, 12}) {
    EXPECT_EQ(NoAnswer(MakeV4(kProtoIcmp, Icmp(type, 0, 0)), kExitV4), IcmpErrc::kIcmpError);
  }
  for (uint8_t type : {1, 2, 3, 4, 127, 137}) {
    EXPECT_EQ(NoAnswer(MakeV6(kProtoIcmpv6, Icmp(type, 0, 0)), kExitV6, true),
              IcmpErrc::kIcmpError);
  }
  // Behind extension headers too, and when the ICMP type byte is missing.
  EXPECT_EQ(NoAnswer(MakeV6(kProtoIcmpv6, Icmp(1, 4, 0), {Options8(0), Fragment(0, true)}),
                     kExitV6),
            IcmpErrc::kIcmpError);
  Bytes cut = MakeV4(kProtoIcmp, {});
  EXPECT_EQ(NoAnswer(cut, kExitV4), IcmpErrc::kIcmpError);
  // Echo and other informational messages are answered.
  EXPECT_TRUE(BuildProhibited(kIcmp4Echo, kExitV4, out));
  EXPECT_TRUE(BuildProhibited(kIcmp6Echo, kExitV6, out));
  EXPECT_TRUE(BuildProhibited(MakeV4(kProtoIcmp, Icmp(13, 0, 0)), kExitV4, out));
}

TEST(IpIcmpAnswer, NoAnswerToOtherThanOneHost) {
  const Bytes udp = Udp(1, 2, "x");
  for (const Address& src : {V4(0, 0, 0, 0), V4(0, 1, 2, 3), V4(127, 0, 0, 1), V4(224, 0, 0, 1),
                             V4(239, 255, 255, 250), V4(240, 0, 0, 1), V4(255, 255, 255, 255)}) {
    EXPECT_EQ(NoAnswer(MakeV4(kProtoUdp, udp, src, kV4Peer), kExitV4), IcmpErrc::kSourceNotUnicast)
        << src.ToString();
  }
  const Address v6_unspecified = V6Text({});
  Address v6_loopback = v6_unspecified;
  v6_loopback.bytes[15] = 1;
  const Address v6_multicast = V6Text({0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  for (const Address& src : {v6_unspecified, v6_loopback, v6_multicast}) {
    EXPECT_EQ(NoAnswer(MakeV6(kProtoUdp, udp, {}, src, kV6Peer), kExitV6, true),
              IcmpErrc::kSourceNotUnicast)
        << src.ToString();
  }
  for (const Address& dst : {V4(224, 0, 0, 251), V4(255, 255, 255, 255)}) {
    EXPECT_EQ(NoAnswer(MakeV4(kProtoUdp, udp, kV4Client, dst), kExitV4),
              IcmpErrc::kDestinationNotUnicast);
    EXPECT_EQ(NoAnswer(MakeV4(kProtoUdp, udp, kV4Client, dst), kExitV4, true),
              IcmpErrc::kDestinationNotUnicast);
  }
  const Bytes to_group = MakeV6(kProtoUdp, udp, {}, kV6Client, v6_multicast);
  EXPECT_EQ(NoAnswer(to_group, kExitV6), IcmpErrc::kDestinationNotUnicast);
  Bytes out(1500);
  EXPECT_TRUE(BuildTooBig(to_group, kExitV6, 1420, out));  // RFC 4443 §2.4 (e.3)
  // Ordinary unicast sources and destinations, global ones included, are answered.
  EXPECT_TRUE(BuildProhibited(MakeV4(kProtoUdp, udp, V4(10, 231, 0, 7), V4(8, 8, 8, 8)), kExitV4,
                              out));
}

// ================================================================ robustness
// Random mutations of valid packets: parsing never crashes and either succeeds with offsets
// inside the buffer or names an error; whatever parses is answered, and the answer parses.
TEST(IpPacketProperty, MutationsParseOrFail) {
  std::vector<Bytes> seeds = RealPackets();
  seeds.push_back(MakeV6(kProtoTcp, Tcp(1, 2, kTcpSyn), {Options8(0), Routing8()}));
  seeds.push_back(MakeV4(kProtoUdp, Udp(1, 2, "opt"), kV4Client, kV4Peer, Bytes{1, 1, 1, 0}));
  seeds.push_back(MakeV6(kProtoUdp, Udp(1, 2, "frag"), {Fragment(0, true)}));
  std::mt19937_64 rng(20240516);
  std::set<PacketErrc> seen;
  int parsed = 0;
  Bytes out(1500);
  for (int iter = 0; iter < 30000; ++iter) {
    Bytes p = seeds[rng() % seeds.size()];
    const int edits = 1 + int(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0: if (!p.empty()) p[rng() % p.size()] ^= uint8_t(1u << (rng() % 8)); break;
        case 1: if (!p.empty()) p[rng() % p.size()] = uint8_t(rng()); break;
        case 2: if (!p.empty()) p.resize(rng() % p.size()); break;
        case 3: p.push_back(uint8_t(rng())); break;
      }
    }
    // Half the time make the checksums right, so the checks after them are reached.
    if (rng() % 2) (void)FillChecksums(p);
    auto r = ParsePacket(p);
    if (!r) {
      seen.insert(r.error().code);
      EXPECT_LE(r.error().message.size(), 15u);
      continue;
    }
    ++parsed;
    ASSERT_EQ(r->total_length, p.size());
    ASSERT_LE(r->l4_offset, r->payload_offset);
    ASSERT_LE(r->payload_offset, r->total_length);
    EXPECT_EQ(MakeFlowKey(*r).Reversed().Reversed(), MakeFlowKey(*r));
    const Address from = r->family == Family::kV4 ? kExitV4 : kExitV6;
    for (bool too_big : {false, true}) {
      auto n = too_big ? BuildTooBig(p, from, 1280, out) : BuildProhibited(p, from, out);
      if (!n) continue;
      auto a = ParsePacket(std::span(out).first(*n));
      ASSERT_TRUE(a);
      EXPECT_TRUE(a->IsIcmpError());
      EXPECT_EQ(a->dst, r->src);
    }
  }
  EXPECT_GT(parsed, 1000);
  // The mutations reach most refusals (the rarer ones have their own tests above).
  EXPECT_GE(seen.size(), 6u);
}

#if DVPN_COUNT_ALLOCATIONS
TEST(IpPacketAllocation, NoHeapAllocation) {
  std::vector<Bytes> inputs = RealPackets();
  for (const Bytes& p : RealPackets()) {
    Bytes bad = p;
    bad[bad.size() - 1] ^= 1;  // kBadChecksum
    inputs.push_back(bad);
    inputs.push_back(Bytes(p.begin(), p.begin() + 10));  // kTruncated
  }
  inputs.push_back(Bytes{0x55, 0, 0, 0});
  Bytes out(1500);
  long failures = 0;
  dvpn::test::AllocationCounter allocations;
  for (int i = 0; i < 100; ++i) {
    for (const Bytes& p : inputs) {
      auto r = ParsePacket(p);
      failures += !r;
      if (r) {
        (void)MakeFlowKey(*r);
        const Address from = r->family == Family::kV4 ? kExitV4 : kExitV6;
        failures += !BuildProhibited(p, from, out);
        failures += !BuildTooBig(p, from, 1280, out);
      } else {
        failures += !BuildProhibited(p, kExitV4, out);
      }
    }
  }
  allocations.Stop();
  EXPECT_EQ(allocations.count(), 0);
  EXPECT_EQ(failures, 100 * 23);  // 13 refused; 10 of them not answered either
}
#endif

}  // namespace
