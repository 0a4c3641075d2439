#include "tunnel/os/full_tunnel_routes.h"

namespace dvpn::tunnel::os {

namespace {

// Half of each address space: together they cover everything, each more specific than a
// default route.
const char* const kHalves[] = {"0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"};

}  // namespace

OsResult<FullTunnelRoutes> FullTunnelRoutes::Install(uint32_t tun_index,
                                                     std::span<const IpAddress> outside) {
  auto nl = Netlink::Open();
  if (!nl) return std::unexpected(nl.error());
  FullTunnelRoutes routes(std::move(*nl));
  auto fail = [&routes](Error<OsErrc> e) -> OsResult<FullTunnelRoutes> {
    (void)routes.Remove();
    return std::unexpected(std::move(e));
  };
  // The exceptions, while the machine's own routes still decide.
  std::vector<IpAddress> done;
  for (const IpAddress& a : outside) {
    if (std::find(done.begin(), done.end(), a) != done.end()) continue;
    done.push_back(a);
    auto path = routes.nl_.LookupRoute(a);
    if (!path) {
      return fail(Error<OsErrc>{
          path.error().code, "outside the tunnel: " + a.ToString() + ": " + path.error().message});
    }
    if (path->local || path->oif == tun_index) continue;
    Route r{IpPrefix{a, AddressBits(a)}, path->oif, path->gateway, 0};
    if (auto ok = routes.nl_.AddRoute(r); !ok) {
      if (ok.error().code == OsErrc::kExists) continue;  // someone routes it this way already
      return fail(ok.error());
    }
    routes.added_.push_back(r);
  }
  for (const char* half : kHalves) {
    Route r{*IpPrefix::Parse(half), tun_index, std::nullopt, 0};
    if (auto ok = routes.nl_.AddRoute(r); !ok) return fail(ok.error());
    routes.added_.push_back(r);
  }
  return routes;
}

FullTunnelRoutes::FullTunnelRoutes(FullTunnelRoutes&& other) noexcept
    : nl_(std::move(other.nl_)), added_(std::move(other.added_)) {
  other.added_.clear();
}

FullTunnelRoutes& FullTunnelRoutes::operator=(FullTunnelRoutes&& other) noexcept {
  if (this != &other) {
    (void)Remove();
    nl_ = std::move(other.nl_);
    added_ = std::move(other.added_);
    other.added_.clear();
  }
  return *this;
}

FullTunnelRoutes::~FullTunnelRoutes() { (void)Remove(); }

OsResult<void> FullTunnelRoutes::Remove() {
  OsResult<void> result;
  while (!added_.empty()) {
    const Route r = added_.back();
    added_.pop_back();
    auto ok = nl_.DeleteRoute(r);
    if (!ok && ok.error().code != OsErrc::kNotFound && result) result = ok;
  }
  return result;
}

}  // namespace dvpn::tunnel::os
