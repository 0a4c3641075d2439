#pragma once
// TUN offloads (docs/full-tunnel.md "Offloads"): the virtio-net header that a TUN device opened
// with IFF_VNET_HDR puts before every packet, the splitting of what such a device hands over
// (TCP and UDP super-packets up to 64 KiB, and packets whose transport checksum is only
// partial) into ordinary IP packets with complete checksums, and the coalescing of TCP
// segments of one flow into one super-packet for one write. Pure code over common/ and the
// checksum: no sockets, no logging, no heap allocation per packet.
//
// The metering rule these keep: what the tunnel meters and seals is always the segmented IP
// packets (each at most the tunnel's MTU, with its own headers), never a super-packet; the
// coalescer only joins packets that were opened, counted and checked one by one.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/result.h"
#include "tunnel/ip/packet.h"

namespace dvpn::tunnel::ip {

// struct virtio_net_hdr (linux/virtio_net.h), in the host's byte order (a TUN device without
// TUNSETVNETLE/BE uses the legacy, native order).
inline constexpr size_t kVnetHeaderSize = 10;
inline constexpr uint8_t kVnetNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
inline constexpr uint8_t kVnetDataValid = 2;  // VIRTIO_NET_HDR_F_DATA_VALID
inline constexpr uint8_t kGsoNone = 0;        // VIRTIO_NET_HDR_GSO_NONE
inline constexpr uint8_t kGsoTcpV4 = 1;       // VIRTIO_NET_HDR_GSO_TCPV4
inline constexpr uint8_t kGsoUdp = 3;         // VIRTIO_NET_HDR_GSO_UDP (UFO: refused)
inline constexpr uint8_t kGsoTcpV6 = 4;       // VIRTIO_NET_HDR_GSO_TCPV6
inline constexpr uint8_t kGsoUdpL4 = 5;       // VIRTIO_NET_HDR_GSO_UDP_L4 (USO, kernel 6.2+)
inline constexpr uint8_t kGsoEcn = 0x80;      // VIRTIO_NET_HDR_GSO_ECN

// The largest packet a TUN read or write with offloads carries (IPv4's total length bound;
// an IPv6 super-packet is held to the same).
inline constexpr size_t kMaxSuperPacket = 65535;
// The buffer one TUN read needs: the header and the largest super-packet.
inline constexpr size_t kMaxTunRead = kVnetHeaderSize + kMaxSuperPacket;

struct VnetHeader {
  uint8_t flags = 0;     // kVnetNeedsCsum, kVnetDataValid
  uint8_t gso_type = 0;  // kGsoNone, kGsoTcpV4, kGsoTcpV6, kGsoUdpL4, each maybe | kGsoEcn
  uint16_t hdr_len = 0;  // advisory only: never trusted for bounds
  uint16_t gso_size = 0;  // payload bytes per segment
  uint16_t csum_start = 0;   // NEEDS_CSUM: where the checksummed bytes start (the L4 header)
  uint16_t csum_offset = 0;  // NEEDS_CSUM: the checksum field's offset from csum_start
  friend bool operator==(const VnetHeader&, const VnetHeader&) = default;
};
VnetHeader ReadVnetHeader(std::span<const uint8_t, kVnetHeaderSize> bytes);
void WriteVnetHeader(const VnetHeader& header, std::span<uint8_t, kVnetHeaderSize> bytes);

enum class OffloadErrc {
  kTruncated = 1,    // shorter than the vnet header, or than an IP/TCP/UDP header it needs
  kBadHeader,        // unknown gso_type, UFO (kGsoUdp), kGsoEcn without a TCP type, gso_size 0
                     // with a GSO type, csum_start/csum_offset outside the packet
  kBadPacket,        // the IP packet does not fit its gso_type (family, protocol, lengths,
                     // fragments, IPv6 extension headers before TCP/UDP)
  kTooLarge,         // a segment would exceed the caller's bound (max_packet, scratch)
};
const char* OffloadErrcName(OffloadErrc code);

// A callable reference (no ownership, no allocation): the sink of SplitTunRead.
template <class Sig>
class FunctionRef;
template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
             std::is_invocable_r_v<R, F&, Args...>)
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): used like a function parameter
      : object_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

// Splits one TUN read (`read` = the vnet header and the packet after it) into ordinary IP
// packets, in order, each handed to `sink` once:
//   - kGsoNone: the packet itself (in place, no copy); with kVnetNeedsCsum its transport
//     checksum is completed in place first (the field holds the pseudo-header sum; the sum
//     from csum_start to the end, folded and complemented, goes into the field; a computed 0
//     is stored as 0xffff, as the kernel does). Nothing else of the packet is checked here.
//   - kGsoTcpV4 / kGsoTcpV6: one TCP segment per gso_size payload bytes (the last may be
//     shorter; a packet without payload is one segment), each with the IP and TCP headers
//     copied (options included), IPv4 total length, identification (first + i) and header
//     checksum, IPv6 payload length, sequence number (first + i * gso_size), FIN and PSH only
//     on the last segment and CWR only on the first, and a complete TCP checksum.
//   - kGsoUdpL4: one UDP datagram per gso_size payload bytes, each with its own UDP length,
//     IPv4 total length, identification (first + i) and header checksum, IPv6 payload length
//     and complete checksum (always computed, both families; a computed 0 is sent as 0xffff).
// A GSO segment's checksums are computed whole: the partial sum the kernel left in the field
// is not used, and hdr_len is ignored. The GSO packet must be of the type's family and
// protocol (kGsoUdpL4: either family), its IP length must equal what follows the vnet header,
// IPv4 may carry options but no fragment, IPv6 no extension header. kGsoEcn is accepted with
// the TCP types only. The checks run in this order: the vnet header's size (kTruncated), its
// type, gso_size and the NEEDS_CSUM field's place (kBadHeader), the packet's headers
// (kTruncated, kBadPacket), the segments' size (kTooLarge).
// Segments are built in `scratch` (at least max_packet bytes), valid only during the sink's
// call; the sink may modify them. `max_packet` bounds every packet handed over (the tunnel's
// MTU): a segment above it, or above scratch's size, is kTooLarge before anything is handed
// over. Returns the number of packets handed over; on an error none was.
using PacketSink = FunctionRef<void(std::span<uint8_t>)>;
[[nodiscard]] Result<size_t, OffloadErrc> SplitTunRead(std::span<uint8_t> read,
                                                       std::span<uint8_t> scratch,
                                                       size_t max_packet, PacketSink sink);

// Joins TCP segments of one flow, in the order they are added, into super-packets for TUN
// writes with a vnet header, as the kernel's GRO would: same addresses, ports, IP header
// (IPv4: TOS, TTL, DF, identification + 1 per segment; IPv6: traffic class, flow label, hop
// limit), same TCP header except the sequence number, checksum and PSH (acknowledgement
// number, window, flags and options identical); the next segment's sequence number is the
// previous one's end; every segment but the last carries exactly gso_size payload bytes (the
// first's) and the last at most that (a shorter one ends the super-packet); ACK must be set
// and only PSH beside it (PSH ends the super-packet and is set on it); the whole stays within
// kMaxSuperPacket and kMaxSegments segments. Anything else (other protocols,
// SYN/FIN/RST/URG/ECE/CWR, no payload, IP options, IPv6 extension headers) is queued as a
// packet of its own. A packet never joins one queued before another packet of the same flow
// that could not join, so each flow's order is kept; different flows may leave in a
// different order from the one they came in.
//
// Every packet added must have passed ParsePacket (so its checksums verified): a super-packet
// goes out with kVnetNeedsCsum and the pseudo-header sum in the TCP checksum field, and the
// kernel computes the rest; it keeps the first segment's headers (IPv4: its identification;
// the kernel's TSO numbers the segments from it), with the IPv4 total length and header
// checksum or the IPv6 payload length of the whole. A packet that joined nothing goes out
// unchanged with an all-zero vnet header.
//
// Not thread-safe: one owner (the session's executor). The coalescer owns its buffers.
class TcpCoalescer {
 public:
  static constexpr size_t kMaxSegments = 64;
  // `max_items` (at least 1): super-packets (and single packets) held before Add asks for a
  // Flush.
  explicit TcpCoalescer(size_t max_items = 64);
  ~TcpCoalescer();
  TcpCoalescer(const TcpCoalescer&) = delete;
  TcpCoalescer& operator=(const TcpCoalescer&) = delete;

  // Queues `packet` (info = ParsePacket(packet)). False when the queue is full: the caller
  // flushes and adds again (it always fits an empty queue). A packet whose info does not
  // describe it (a broken precondition) is dropped, and true returned. An item's buffer (the
  // largest packet ParsePacket accepts, about 64 KiB) is allocated when the item is first
  // used and kept: after that, nothing is allocated.
  bool Add(std::span<const uint8_t> packet, const PacketInfo& info);
  // Each queued item as the bytes of one TUN write (the vnet header, then the packet), in
  // order; then the queue is empty. The spans stay valid until the next Add.
  template <class Fn>
  void Flush(Fn&& write) {
    for (size_t i = 0; i < count_; ++i) write(std::span<const uint8_t>(Finish(i)));
    count_ = 0;
  }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Segments that joined an earlier one (tests, counters).
  uint64_t merged() const { return merged_; }

 private:
  struct Item;
  std::span<uint8_t> Finish(size_t i);  // header fields and the vnet header, then the bytes
  std::vector<Item> items_;
  size_t count_ = 0;
  uint64_t merged_ = 0;
};

}  // namespace dvpn::tunnel::ip
