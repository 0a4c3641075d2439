#pragma once
// One IP packet of full-tunnel mode, parsed and checked: IPv4 or IPv6 (extension headers
// skipped), then TCP, UDP, ICMP or ICMPv6 with their checksums; other transports carry their
// addresses only. The byte-exact rules, their order and the error table: docs/tunnel.md, "IP
// packets". Pure code: no sockets, no logging, no allocation (an error's message is at most 15
// characters, kept inside std::string).

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/result.h"
#include "tunnel/ip/address.h"

namespace dvpn::tunnel::ip {

// Why a packet was refused. An unknown transport protocol is not an error.
enum class PacketErrc {
  kTruncated = 1,            // empty, or shorter than a header it has
  kBadVersion,               // version nibble neither 4 nor 6
  kBadHeaderLength,          // IPv4 IHL < 5; TCP data offset < 5 or past the segment
  kLengthMismatch,           // IP length field != buffer size; UDP length != rest of packet
  kBadChecksum,              // IPv4 header, TCP, UDP, ICMP, ICMPv6; zero UDP checksum on IPv6
  kZeroTtl,                  // TTL / hop limit 0
  kFragment,                 // IPv4 MF or offset != 0; an IPv6 Fragment header
  kBadExtensionHeader,       // IPv6 Hop-by-Hop Options not directly after the fixed header
  kTooManyExtensionHeaders,  // more than kMaxExtensionHeaders
};

// The error's name as in the document ("kTruncated"), for tests and counters.
const char* PacketErrcName(PacketErrc code);

inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoIcmpv6 = 58;

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

inline constexpr size_t kIpv4MinHeader = 20;
inline constexpr size_t kIpv6Header = 40;
// IPv6 extension headers skipped before the transport; one more is kTooManyExtensionHeaders.
inline constexpr int kMaxExtensionHeaders = 8;

// What a packet that passed every check is. Offsets count from the packet's first byte and
// satisfy l4_offset <= payload_offset <= total_length == the buffer's size.
struct PacketInfo {
  Family family = Family::kV4;
  uint8_t protocol = 0;  // IANA number of the transport, after IPv6 extension headers
  uint8_t ttl = 0;       // TTL or hop limit
  uint8_t tcp_flags = 0;  // TCP's flags byte (kTcpSyn, ...); 0 for other protocols
  uint8_t icmp_type = 0;  // ICMP (IPv4) / ICMPv6 only
  uint8_t icmp_code = 0;
  Address src;
  Address dst;
  uint16_t src_port = 0;  // TCP/UDP ports; ICMP/ICMPv6 echo: the identifier; otherwise 0
  uint16_t dst_port = 0;
  uint32_t total_length = 0;
  uint32_t l4_offset = 0;       // the transport header
  uint32_t payload_offset = 0;  // after the TCP/UDP/ICMP header (== l4_offset for others)

  // ICMP types 3, 4, 5, 11, 12; ICMPv6 types 0..127 and Redirect (137).
  bool IsIcmpError() const;
};

// Parses and checks one whole packet (a TUN read without the packet-information header).
// Returns the first failing check's code (docs/tunnel.md, "Parsing one packet").
[[nodiscard]] Result<PacketInfo, PacketErrc> ParsePacket(std::span<const uint8_t> packet);

// The source / destination address after checking only the version nibble and the fixed
// header's length; nullopt otherwise.
std::optional<Address> SourceAddress(std::span<const uint8_t> packet);
std::optional<Address> DestinationAddress(std::span<const uint8_t> packet);

// Recomputes, in place, the IPv4 header checksum and the TCP, UDP (never 0: 0xffff), ICMP or
// ICMPv6 checksum of a packet that parses apart from its checksums. Returns the first other
// error of ParsePacket (nothing is changed then except checksum fields).
[[nodiscard]] Result<void, PacketErrc> FillChecksums(std::span<uint8_t> packet);

// One line for tests and debug logs: "udp4 10.9.0.1:40000 > 10.9.0.2:5353 len 39", "icmp6
// fd00::1 > fd00::2 type 128 code 0 id 17 len 58", or "refused kBadChecksum". It names the
// destination: the exit logs it only where the operator's log_destinations allows.
std::string Describe(std::span<const uint8_t> packet);

}  // namespace dvpn::tunnel::ip
