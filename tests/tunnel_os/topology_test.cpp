// The full-tunnel tests' three namespaces route as drawn: "user" and "provider" reach the
// servers on "internet" and each other through it, IPv4 and IPv6, and the host sees none of it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/topology.h"
#include "tests/tunnel_os/os_test_util.h"

namespace dvpn::tunnel::os {
namespace {

using dvpn::testing::Netns;
using dvpn::testing::Topology;

// A UDP socket bound to `address`:7 inside `ns`.
int BoundUdp(const Netns& ns, const char* address) {
  int fd = -1;
  EXPECT_TRUE(ns.RunInside([&] {
    const IpAddress a = A(address);
    if (a.family == IpAddress::Family::kV4) {
      fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(7);
      std::copy_n(a.bytes.begin(), 4, reinterpret_cast<uint8_t*>(&sa.sin_addr));
      EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << address;
    } else {
      fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in6 sa{};
      sa.sin6_family = AF_INET6;
      sa.sin6_port = htons(7);
      std::copy_n(a.bytes.begin(), 16, reinterpret_cast<uint8_t*>(&sa.sin6_addr));
      EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << address;
    }
  }));
  return fd;
}

// Sends one datagram from namespace `from` to `to_address`:7 and waits for it on `server`.
bool Reaches(const Netns& from, const char* to_address, int server) {
  const IpAddress a = A(to_address);
  bool sent = false;
  EXPECT_TRUE(from.RunInside([&] {
    if (a.family == IpAddress::Family::kV4) {
      const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(7);
      std::copy_n(a.bytes.begin(), 4, reinterpret_cast<uint8_t*>(&sa.sin_addr));
      sent = ::sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 1;
      ::close(fd);
    } else {
      const int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in6 sa{};
      sa.sin6_family = AF_INET6;
      sa.sin6_port = htons(7);
      std::copy_n(a.bytes.begin(), 16, reinterpret_cast<uint8_t*>(&sa.sin6_addr));
      sent = ::sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 1;
      ::close(fd);
    }
  }));
  if (!sent) return false;
  pollfd p{server, POLLIN, 0};
  if (::poll(&p, 1, 3000) != 1) return false;
  char buf[8];
  return ::recv(server, buf, sizeof buf, 0) == 1;
}

TEST(Topology, UserAndProviderReachTheInternetAndEachOtherBothFamilies) {
  SKIP_WITHOUT_PRIVILEGE();
  auto created = Topology::Create();
  ASSERT_TRUE(created) << created.error();
  auto t = std::make_optional(std::move(*created));
  for (const char* server_address : {Topology::kInternetV4, Topology::kInternetV6}) {
    const int server = BoundUdp(t->internet, server_address);
    ASSERT_GE(server, 0);
    EXPECT_TRUE(Reaches(t->user, server_address, server)) << "user -> " << server_address;
    EXPECT_TRUE(Reaches(t->provider, server_address, server)) << "provider -> " << server_address;
    ::close(server);
  }
  for (const char* provider_address : {Topology::kProviderV4, Topology::kProviderV6}) {
    const int server = BoundUdp(t->provider, provider_address);
    ASSERT_GE(server, 0);
    EXPECT_TRUE(Reaches(t->user, provider_address, server)) << "user -> " << provider_address;
    ::close(server);
  }
  const std::string names[] = {t->user.name(), t->provider.name(), t->internet.name()};
  t.reset();
  auto listed = dvpn::testing::RunCommand({"ip", "netns", "list"});
  ASSERT_TRUE(listed) << listed.error();
  for (const auto& n : names) EXPECT_EQ(listed->find(n), std::string::npos) << n << " left behind";
}

}  // namespace
}  // namespace dvpn::tunnel::os
