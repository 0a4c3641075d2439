// The client's full-tunnel routes against the real kernel, in a fresh namespace with two TUN
// devices: "uplink" (the machine's way out, with a default route via a gateway) and "dvpn0"
// (the tunnel). Only route lookups: nothing is sent.

#include <gtest/gtest.h>

#include "tests/tunnel_os/os_test_util.h"
#include "tunnel/os/full_tunnel_routes.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/tun_device.h"

namespace dvpn::tunnel::os {
namespace {

TEST(FullTunnelRoutes, EverythingThroughTheTunnelButTheExceptionsAndRemoveRestores) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl) << nl.error().message;
    ASSERT_TRUE(nl->SetLinkUp(1, 0));  // lo: so that 127.0.0.1 is a local address
    auto uplink = UpDevice(*nl, "uplink", 1500, {"192.0.2.10/24", "2001:db8:1::10/64"});
    auto tun = UpDevice(*nl, "dvpn0", 1420, {"10.231.0.2/16", "fd00:231::2/64"});
    ASSERT_TRUE(uplink && tun);
    ASSERT_TRUE(nl->AddRoute(Route{P("0.0.0.0/0"), uplink->index(), A("192.0.2.1"), 0}));
    ASSERT_TRUE(nl->AddRoute(Route{P("::/0"), uplink->index(), A("2001:db8:1::1"), 0}));

    const IpAddress outside[] = {A("198.51.100.7"), A("2001:db8:99::7"), A("127.0.0.1"),
                                 A("198.51.100.7")};
    auto routes = FullTunnelRoutes::Install(tun->index(), outside);
    ASSERT_TRUE(routes) << routes.error().message;
    EXPECT_EQ(routes->routes().size(), 2u + 4u) << "two exceptions (loopback and the repeat need "
                                                   "none) and four half-space routes";

    auto via = [&](const char* dst) {
      auto r = nl->LookupRoute(A(dst));
      EXPECT_TRUE(r) << dst << ": " << (r ? "" : r.error().message);
      return r.value_or(RouteLookup{});
    };
    for (const char* dst : {"203.0.113.9", "8.8.8.8", "200.1.1.1", "2001:db8:42::1", "2a00::1"}) {
      EXPECT_EQ(via(dst).oif, tun->index()) << dst << " should take the tunnel";
    }
    // The exceptions keep the machine's old path, gateway included.
    EXPECT_EQ(via("198.51.100.7").oif, uplink->index());
    EXPECT_EQ(via("198.51.100.7").gateway, A("192.0.2.1"));
    EXPECT_EQ(via("2001:db8:99::7").oif, uplink->index());
    EXPECT_EQ(via("2001:db8:99::7").gateway, A("2001:db8:1::1"));
    EXPECT_TRUE(via("127.0.0.1").local);

    // Installing twice over the same device refuses, and leaves the first intact.
    auto twice = FullTunnelRoutes::Install(tun->index(), outside);
    ASSERT_FALSE(twice);
    EXPECT_EQ(via("8.8.8.8").oif, tun->index());

    ASSERT_TRUE(routes->Remove());
    EXPECT_EQ(via("8.8.8.8").oif, uplink->index());
    EXPECT_EQ(via("2a00::1").oif, uplink->index());
    EXPECT_TRUE(routes->Remove()) << "twice is harmless";
  });
}

TEST(FullTunnelRoutes, AnUnreachableExceptionFailsAndLeavesNothing) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl);
    auto uplink = UpDevice(*nl, "uplink", 1500, {"192.0.2.10/24"});
    auto tun = UpDevice(*nl, "dvpn0", 1420, {});
    ASSERT_TRUE(uplink && tun);
    // 192.0.2.77 is on the uplink's subnet; 2001:db8::7 has no route at all (no IPv6 here).
    const IpAddress outside[] = {A("192.0.2.77"), A("2001:db8::7")};
    auto routes = FullTunnelRoutes::Install(tun->index(), outside);
    ASSERT_FALSE(routes);
    EXPECT_EQ(routes.error().code, OsErrc::kNotFound) << routes.error().message;
    auto r = nl->LookupRoute(A("192.0.2.77"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->oif, uplink->index());
    auto host = nl->DeleteRoute(Route{P("192.0.2.77/32"), uplink->index(), std::nullopt, 0});
    ASSERT_FALSE(host) << "the exception added before the failure was left behind";
  });
}

TEST(FullTunnelRoutes, ClosingTheDeviceFirstLeavesNothingToFailOn) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl);
    auto tun = UpDevice(*nl, "dvpn0", 1420, {"10.231.0.2/16", "fd00:231::2/64"});
    ASSERT_TRUE(tun);
    auto routes = FullTunnelRoutes::Install(tun->index(), {});
    ASSERT_TRUE(routes) << routes.error().message;
    tun->Close();  // a crash: the kernel takes the device's routes
    EXPECT_TRUE(routes->Remove());
  });
}

}  // namespace
}  // namespace dvpn::tunnel::os
