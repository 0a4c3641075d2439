#pragma once
// The machine's network configuration over rtnetlink (through libmnl): bring a link up with an
// MTU, add and delete addresses and routes, and ask which route the kernel would use for an
// address. Each call is one request and its acknowledgement on a socket of the calling
// thread's network namespace. docs/full-tunnel.md "On the machine".

#include <cstdint>
#include <optional>
#include <string>

#include "tunnel/exit_policy.h"
#include "tunnel/ip_prefix.h"
#include "tunnel/os/errc.h"

namespace dvpn::tunnel::os {

using tunnel::IpPrefix;  // tunnel/ip_prefix.h

// Which route the kernel takes to reach an address.
struct RouteLookup {
  uint32_t oif = 0;                  // the outgoing interface's index
  std::optional<IpAddress> gateway;  // none for a directly connected destination
  std::optional<IpAddress> source;   // the preferred source address, when the kernel says one
  bool local = false;                // an address of this machine (delivered, never routed)
};

// A route to add or delete: `destination` through interface `oif`, via `gateway` when set.
struct Route {
  IpPrefix destination;
  uint32_t oif = 0;
  std::optional<IpAddress> gateway;
  uint32_t metric = 0;
};

// The MTU of interface `index` (SIOCGIFMTU). kNotFound when there is no such interface.
OsResult<uint32_t> InterfaceMtu(uint32_t index);

class Netlink {
 public:
  // Opens a NETLINK_ROUTE socket. kPermission / kSystem on failure.
  static OsResult<Netlink> Open();

  Netlink(Netlink&& other) noexcept;
  Netlink& operator=(Netlink&& other) noexcept;
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;
  ~Netlink();

  // Sets the link's MTU (0: leave it) and brings it up.
  OsResult<void> SetLinkUp(uint32_t index, uint32_t mtu);
  // Turns on the device's IPv4 promote_secondaries (RTM_NEWLINK, IFLA_AF_SPEC/AF_INET/
  // IFLA_INET_CONF): when its first address of a subnet goes, the next one takes its place
  // instead of going with it. Without it, replacing an address leaves the device without any
  // for a moment, and the kernel flushes every IPv4 route through it.
  OsResult<void> PromoteSecondaries(uint32_t index);
  // Adds an address to the link (IPv6 without duplicate address detection, so it is usable at
  // once). kExists when it is there already.
  OsResult<void> AddAddress(uint32_t index, const IpPrefix& prefix);
  OsResult<void> DeleteAddress(uint32_t index, const IpPrefix& prefix);
  // Adds a unicast route in the main table. kExists when an equal route is there.
  OsResult<void> AddRoute(const Route& route);
  // Deletes a route added by AddRoute. kNotFound when there is none.
  OsResult<void> DeleteRoute(const Route& route);
  // The kernel's answer to "ip route get <address>". kNotFound when unreachable.
  OsResult<RouteLookup> LookupRoute(const IpAddress& destination);

 private:
  explicit Netlink(void* socket, uint32_t port) : socket_(socket), port_(port) {}
  void* socket_ = nullptr;  // struct mnl_socket*
  uint32_t port_ = 0;
  uint32_t seq_ = 0;
};

}  // namespace dvpn::tunnel::os
