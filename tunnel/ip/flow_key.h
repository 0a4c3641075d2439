#pragma once
// The key of a flow in a session's flow table: protocol, addresses and ports (ICMP echo: its
// identifier as both ports; other protocols: ports 0). docs/tunnel.md, "Flow keys". A value.

#include <cstddef>
#include <cstdint>
#include <functional>

#include "tunnel/ip/address.h"
#include "tunnel/ip/packet.h"

namespace dvpn::tunnel::ip {

struct FlowKey {
  Family family = Family::kV4;
  uint8_t protocol = 0;
  Address src;
  Address dst;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;

  // The key of the answers: addresses and ports swapped.
  FlowKey Reversed() const;
  friend bool operator==(const FlowKey&, const FlowKey&) = default;
};

// The flow a parsed packet belongs to (PacketInfo's ports are already the key's).
FlowKey MakeFlowKey(const PacketInfo& info);

// A seeded 64-bit mix of every field. Spreads keys well; not a keyed PRF (see the document:
// tables stay bounded; one shared by sessions takes a random seed).
struct FlowKeyHash {
  uint64_t seed = 0;
  size_t operator()(const FlowKey& key) const noexcept;
};

}  // namespace dvpn::tunnel::ip

template <>
struct std::hash<dvpn::tunnel::ip::FlowKey> {
  size_t operator()(const dvpn::tunnel::ip::FlowKey& key) const noexcept {
    return dvpn::tunnel::ip::FlowKeyHash{}(key);
  }
};
