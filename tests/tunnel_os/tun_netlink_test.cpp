// TunDevice and Netlink against the real kernel, each test in a fresh network namespace (a
// thread that unshare(CLONE_NEWNET)s: the namespace holds only its loopback and what the test
// makes, and goes away with the thread, also when the test fails).

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/tunnel_os/os_test_util.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/tun_device.h"

namespace dvpn::tunnel::os {
namespace {

TEST(IpPrefix, ParsesAndPrints) {
  EXPECT_EQ(P("10.1.2.3/16").ToString(), "10.1.2.3/16");
  EXPECT_EQ(P("fd00::1/64").ToString(), "fd00::1/64");
  EXPECT_EQ(P("192.0.2.1").length, 32);
  EXPECT_EQ(P("::1").length, 128);
  for (const char* bad :
       {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/8x", "x/8", "", "10.0.0.0/-1"}) {
    EXPECT_FALSE(IpPrefix::Parse(bad)) << bad;
  }
}

TEST(TunDevice, RefusesBadNamesBeforeTouchingTheKernel) {
  for (const char* bad : {"", "a-name-longer-than-15", "tun 0", "tun/0", "..", "tün0"}) {
    auto dev = TunDevice::Create(bad);
    ASSERT_FALSE(dev) << bad;
    EXPECT_EQ(dev.error().code, OsErrc::kBadArgument) << bad;
  }
}

TEST(TunDevice, ExistsWhileItsDescriptorIsOpen) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto dev = TunDevice::Create("dvpnt%d");
    ASSERT_TRUE(dev) << dev.error().message;
    EXPECT_EQ(dev->name(), "dvpnt0");
    EXPECT_GT(dev->index(), 0u);
    EXPECT_EQ(::if_nametoindex("dvpnt0"), dev->index());
    // A second device of that name while the first is held is refused, not taken over.
    auto twin = TunDevice::Create("dvpnt0");
    ASSERT_FALSE(twin);
    EXPECT_EQ(twin.error().code, OsErrc::kExists) << twin.error().message;
    dev->Close();
    EXPECT_EQ(::if_nametoindex("dvpnt0"), 0u);
  });
}

TEST(Netlink, AddressesAndRoutesSendPacketsIntoTheDevice) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl) << nl.error().message;
    auto dev = UpDevice(*nl, "dvpnt0", 1420, {"10.9.0.1/24", "fd00:9::1/64"});
    ASSERT_TRUE(dev);
    auto again = nl->AddAddress(dev->index(), P("10.9.0.1/24"));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, OsErrc::kExists);

    // The kernel routes the device's subnets and an added route through it.
    for (const char* dst : {"10.9.0.7", "fd00:9::7"}) {
      auto r = nl->LookupRoute(A(dst));
      ASSERT_TRUE(r) << dst << ": " << r.error().message;
      EXPECT_EQ(r->oif, dev->index()) << dst;
      EXPECT_FALSE(r->gateway) << dst;
    }
    auto none = nl->LookupRoute(A("198.51.100.9"));
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().code, OsErrc::kNotFound) << none.error().message;
    const Route doc{P("198.51.100.0/24"), dev->index(), std::nullopt, 0};
    ASSERT_TRUE(nl->AddRoute(doc));
    auto dup = nl->AddRoute(doc);
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error().code, OsErrc::kExists);
    auto via = nl->LookupRoute(A("198.51.100.9"));
    ASSERT_TRUE(via) << via.error().message;
    EXPECT_EQ(via->oif, dev->index());
    EXPECT_EQ(via->source, A("10.9.0.1"));

    // A UDP datagram to a routed address comes out of the device as an IPv4 packet.
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(s, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9999);
    ::inet_pton(AF_INET, "198.51.100.9", &to.sin_addr);
    ASSERT_EQ(::sendto(s, "ping", 4, 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 4);
    ::close(s);
    std::vector<uint8_t> out;
    for (int i = 0; i < 10 && (out.empty() || out[0] >> 4 != 4); ++i) out = ReadPacket(dev->fd());
    ASSERT_GE(out.size(), 32u);  // IPv6 router solicitations may come first; skipped above
    EXPECT_EQ(out[9], 17);       // UDP
    EXPECT_EQ(std::vector<uint8_t>(out.begin() + 16, out.begin() + 20),
              (std::vector<uint8_t>{198, 51, 100, 9}));
    EXPECT_EQ(std::string(out.end() - 4, out.end()), "ping");

    ASSERT_TRUE(nl->DeleteRoute(doc));
    auto gone = nl->DeleteRoute(doc);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().code, OsErrc::kNotFound) << gone.error().message;
    ASSERT_TRUE(nl->DeleteAddress(dev->index(), P("fd00:9::1/64")));
  });
}

TEST(Netlink, PacketsWrittenToTheDeviceReachLocalSockets) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl) << nl.error().message;
    auto dev = UpDevice(*nl, "dvpnt0", 0, {"10.9.0.1/24"});
    ASSERT_TRUE(dev);
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(s, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_port = htons(7777);
    ::inet_pton(AF_INET, "10.9.0.1", &local.sin_addr);
    ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&local), sizeof local), 0);
    const auto packet = Ipv4Udp({10, 9, 0, 2}, {10, 9, 0, 1}, 5555, 7777, "from the tunnel");
    ASSERT_EQ(::write(dev->fd(), packet.data(), packet.size()),
              static_cast<ssize_t>(packet.size()));
    pollfd p{s, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 2000), 1);
    char buf[64];
    sockaddr_in from{};
    socklen_t from_len = sizeof from;
    const ssize_t n =
        ::recvfrom(s, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    ASSERT_EQ(n, 15);
    EXPECT_EQ(std::string(buf, 15), "from the tunnel");
    EXPECT_EQ(ntohs(from.sin_port), 5555);
    ::close(s);
  });
}

TEST(Netlink, LookupNamesTheGatewayAndClosingTheDeviceTakesItsRoutes) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl) << nl.error().message;
    auto dev = UpDevice(*nl, "dvpnt0", 1420, {"10.9.0.1/24"});
    ASSERT_TRUE(dev);
    // A default route via a gateway on the device's subnet (nothing is sent: lookups only).
    const Route def{P("0.0.0.0/0"), dev->index(), A("10.9.0.254"), 0};
    ASSERT_TRUE(nl->AddRoute(def)) << "default route";
    auto r = nl->LookupRoute(A("203.0.113.5"));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->oif, dev->index());
    EXPECT_EQ(r->gateway, A("10.9.0.254"));
    // Mixed families and a route with neither interface nor gateway are refused up front.
    auto mixed = nl->AddRoute(Route{P("0.0.0.0/0"), 0, A("fd00::1"), 0});
    ASSERT_FALSE(mixed);
    EXPECT_EQ(mixed.error().code, OsErrc::kBadArgument);
    auto nowhere = nl->AddRoute(Route{P("192.0.2.0/24"), 0, std::nullopt, 0});
    ASSERT_FALSE(nowhere);
    EXPECT_EQ(nowhere.error().code, OsErrc::kBadArgument);

    // The path's MTU is the outgoing device's (the client sizes its datagrams from it).
    auto mtu = InterfaceMtu(r->oif);
    ASSERT_TRUE(mtu) << mtu.error().message;
    EXPECT_EQ(*mtu, 1420u);

    dev->Close();
    auto gone = InterfaceMtu(r->oif);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().code, OsErrc::kNotFound) << gone.error().message;
    auto after = nl->LookupRoute(A("203.0.113.5"));
    ASSERT_FALSE(after);
    EXPECT_EQ(after.error().code, OsErrc::kNotFound) << after.error().message;
  });
}

}  // namespace
}  // namespace dvpn::tunnel::os
