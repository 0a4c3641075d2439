#include "tests/support/topology.h"

#include <tuple>

namespace dvpn::testing {

std::expected<Topology, std::string> Topology::Create() {
  auto user = Netns::Create("user");
  if (!user) return std::unexpected(user.error());
  auto provider = Netns::Create("provider");
  if (!provider) return std::unexpected(provider.error());
  auto internet = Netns::Create("internet");
  if (!internet) return std::unexpected(internet.error());
  Topology t{std::move(*user), std::move(*provider), std::move(*internet), std::nullopt};
  if (auto ok = AddVethPair(t.user, "eth0", {"172.31.1.2/24", "fd31:1::2/64"}, t.internet,
                            "to-user", {"172.31.1.1/24", "fd31:1::1/64"});
      !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = AddVethPair(t.provider, "eth0", {"172.31.2.2/24", "fd31:2::2/64"}, t.internet,
                            "to-provider", {"172.31.2.1/24", "fd31:2::1/64"});
      !ok) {
    return std::unexpected(ok.error());
  }
  const std::string internet_setup =
      "ip addr add 172.31.3.1/32 dev lo && ip addr add fd31:3::1/128 dev lo && "
      "sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1";
  if (auto ok = t.internet.Shell(internet_setup); !ok) return std::unexpected(ok.error());
  for (auto [ns, gw4, gw6] : {std::tuple{&t.user, "172.31.1.1", "fd31:1::1"},
                              std::tuple{&t.provider, "172.31.2.1", "fd31:2::1"}}) {
    if (auto ok = ns->Shell(std::string("ip route add default via ") + gw4 +
                            " && ip -6 route add default via " + gw6);
        !ok) {
      return std::unexpected(ok.error());
    }
  }
  return t;
}

std::expected<void, std::string> Topology::AddSecondUser() {
  if (user2) return std::unexpected("user2 exists already");
  auto ns = Netns::Create("user2");
  if (!ns) return std::unexpected(ns.error());
  if (auto ok = AddVethPair(*ns, "eth0", {"172.31.4.2/24", "fd31:4::2/64"}, internet, "to-user2",
                            {"172.31.4.1/24", "fd31:4::1/64"});
      !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = ns->Shell("ip route add default via 172.31.4.1 && "
                          "ip -6 route add default via fd31:4::1");
      !ok) {
    return std::unexpected(ok.error());
  }
  user2.emplace(*std::move(ns));
  return {};
}

}  // namespace dvpn::testing
