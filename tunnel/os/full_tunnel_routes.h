#pragma once
// The client's routes in full-tunnel mode (docs/full-tunnel.md "On the machine"): all IPv4 and
// IPv6 through the TUN device by four half-space routes (0.0.0.0/1, 128.0.0.0/1, ::/1,
// 8000::/1: more specific than any default route, which stays as it was), and host routes
// through the path the machine used before for the addresses that must stay outside the tunnel
// (the exit's endpoint, the ledger, gossip peers). Exceptions are added before the tunnel's
// routes, so no packet to them ever takes the tunnel; Remove takes everything away in reverse.
// Addresses of this machine (loopback included) need no exception and get none.

#include <algorithm>
#include <span>
#include <vector>

#include "tunnel/os/errc.h"
#include "tunnel/os/netlink.h"

namespace dvpn::tunnel::os {

class FullTunnelRoutes {
 public:
  // Adds the routes; on failure removes what it added and says which step failed (kNotFound
  // when an outside address is unreachable now, kExists when a route is there already).
  static OsResult<FullTunnelRoutes> Install(uint32_t tun_index, std::span<const IpAddress> outside);

  FullTunnelRoutes(FullTunnelRoutes&& other) noexcept;
  FullTunnelRoutes& operator=(FullTunnelRoutes&& other) noexcept;
  FullTunnelRoutes(const FullTunnelRoutes&) = delete;
  FullTunnelRoutes& operator=(const FullTunnelRoutes&) = delete;
  ~FullTunnelRoutes();  // Remove()

  // Deletes every route Install added, newest first. A route that is already gone (the TUN
  // device was deleted, which takes its routes) is not an error. Safe to call twice.
  OsResult<void> Remove();
  // The routes in place, in the order they were added.
  const std::vector<Route>& routes() const { return added_; }

 private:
  explicit FullTunnelRoutes(Netlink nl) : nl_(std::move(nl)) {}
  Netlink nl_;
  std::vector<Route> added_;
};

}  // namespace dvpn::tunnel::os
