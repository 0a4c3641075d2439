#pragma once
// The full tunnel's fast paths and their switch (docs/full-tunnel.md "Offloads"). No Asio here:
// configuration code includes it.

#include <string>
#include <string_view>

#include <expected>

namespace dvpn::tunnel::session {

// Which of the fast paths a full-tunnel end uses (each has a plain fallback):
//   tun   TUN offloads: IFF_VNET_HDR with checksum, TSO and (6.2+) USO, segments split before
//         sealing and joined again before writing (tunnel/ip/offload.h)
//   gso   UDP_SEGMENT: one sendmsg buffer carries a run of equal-size datagrams
//   gro   UDP_GRO: one receive may hold several datagrams of one sender
//   mmsg  sendmmsg / recvmmsg: many messages per system call
// Text form (config `[tunnel] packet_offloads`, dvpn-client --packet-offloads): "auto" (all;
// the kernel may still refuse some), "off" (none), or a comma list of the names above.
struct PacketOffloads {
  bool tun = true;
  bool gso = true;
  bool gro = true;
  bool mmsg = true;
  static PacketOffloads None() { return {false, false, false, false}; }
  static std::expected<PacketOffloads, std::string> Parse(std::string_view text);
  std::string ToString() const;  // "tun,gso,gro,mmsg", or "off"
  friend bool operator==(const PacketOffloads&, const PacketOffloads&) = default;
};

}  // namespace dvpn::tunnel::session
