#pragma once
// An IPv4 or IPv6 socket address from text, and sockets made inside a network namespace: what
// the namespace tests' own servers and clients share. Header-only; Linux.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <optional>
#include <string>

#include "tests/support/net_util.h"
#include "tests/support/netns.h"

namespace dvpn::testing {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;

  int family() const { return storage.ss_family; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }

  // "172.31.3.1" or "fd31:3::1" (no brackets) and a port; nullopt for anything else.
  static std::optional<SocketAddress> Parse(const std::string& ip, int port) {
    SocketAddress a;
    if (ip.find(':') == std::string::npos) {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
      v4->sin_family = AF_INET;
      v4->sin_port = htons(static_cast<uint16_t>(port));
      if (::inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) != 1) return std::nullopt;
      a.length = sizeof(sockaddr_in);
    } else {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(static_cast<uint16_t>(port));
      if (::inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) != 1) return std::nullopt;
      a.length = sizeof(sockaddr_in6);
    }
    return a;
  }

  int port() const {
    return family() == AF_INET ? ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port)
                               : ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
};

// A socket(family, type) that belongs to `ns` (this process's namespace when null): made on a
// thread that joined it. Invalid when either step fails.
inline Fd SocketIn(const Netns* ns, int family, int type) {
  if (ns == nullptr) return Fd(::socket(family, type | SOCK_CLOEXEC, 0));
  int fd = -1;
  if (!ns->RunInside([&] { fd = ::socket(family, type | SOCK_CLOEXEC, 0); })) return Fd();
  return Fd(fd);
}

// A socket of `type` in `ns` bound to ip:port (SO_REUSEADDR; IPv6 sockets IPv6-only), and
// listening with `backlog` when it is a stream socket. Invalid on failure.
inline Fd BoundSocketIn(const Netns* ns, int type, const std::string& ip, int port,
                        int backlog = 128) {
  auto address = SocketAddress::Parse(ip, port);
  if (!address) return Fd();
  Fd fd = SocketIn(ns, address->family(), type);
  if (!fd.valid()) return Fd();
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (address->family() == AF_INET6) {
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd.get(), address->get(), address->length) != 0) return Fd();
  if ((type & 0xF) == SOCK_STREAM && ::listen(fd.get(), backlog) != 0) return Fd();
  return fd;
}

// The port a bound socket of either family has (0 on failure).
inline int BoundPort(int fd) {
  SocketAddress a;
  a.length = sizeof a.storage;
  if (::getsockname(fd, a.get(), &a.length) != 0) return 0;
  return a.port();
}

}  // namespace dvpn::testing
