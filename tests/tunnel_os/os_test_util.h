#pragma once
// What the tunnel/os tests share: the skip rule, a fresh namespace per test, prefixes from text,
// reading a packet from a TUN device with a deadline, and a hand-built IPv4 UDP packet.

#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/netns.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/tun_device.h"

namespace dvpn::tunnel::os {

// Why this machine cannot run the tests (not root, no /dev/net/tun, no `ip`), or empty.
inline std::string MissingPrivilege() { return dvpn::testing::NetnsUnavailable(); }

#define SKIP_WITHOUT_PRIVILEGE()                                          \
  do {                                                                    \
    if (auto why = MissingPrivilege(); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

// Runs `body` on a thread of its own in a new, empty network namespace.
inline void InFreshNetns(const std::function<void()>& body) {
  std::thread t([&] {
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    body();
  });
  t.join();
}

inline IpPrefix P(const char* text) {
  auto p = IpPrefix::Parse(text);
  EXPECT_TRUE(p) << text;
  return p.value_or(IpPrefix{});
}
inline IpAddress A(const char* text) { return P(text).address; }

// A TUN device that is up with `mtu` (0: the kernel's) and `addresses` ("a/len"). A failing
// step fails the test and gives nullopt.
inline std::optional<TunDevice> UpDevice(Netlink& nl, const char* name, uint32_t mtu,
                                         std::initializer_list<const char*> addresses) {
  auto dev = TunDevice::Create(name);
  if (!dev) {
    ADD_FAILURE() << name << ": " << dev.error().message;
    return std::nullopt;
  }
  if (auto ok = nl.SetLinkUp(dev->index(), mtu); !ok) {
    ADD_FAILURE() << name << ": " << ok.error().message;
    return std::nullopt;
  }
  for (const char* a : addresses) {
    if (auto ok = nl.AddAddress(dev->index(), P(a)); !ok) {
      ADD_FAILURE() << name << " " << a << ": " << ok.error().message;
      return std::nullopt;
    }
  }
  return std::move(*dev);
}

// Waits up to `timeout_ms` for `fd` to be readable; reads one packet (empty: none came).
inline std::vector<uint8_t> ReadPacket(int fd, int timeout_ms = 2000) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return {};
  std::vector<uint8_t> buf(65536);
  const ssize_t n = ::read(fd, buf.data(), buf.size());
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

inline uint16_t HeaderChecksum(const uint8_t* h, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += (h[i] << 8) | h[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// An IPv4 UDP packet (UDP checksum 0: allowed for IPv4).
inline std::vector<uint8_t> Ipv4Udp(std::array<uint8_t, 4> src, std::array<uint8_t, 4> dst,
                                    uint16_t sport, uint16_t dport, const std::string& payload) {
  const size_t total = 20 + 8 + payload.size();
  std::vector<uint8_t> p(total, 0);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(total >> 8);
  p[3] = static_cast<uint8_t>(total);
  p[8] = 64;
  p[9] = 17;
  std::memcpy(&p[12], src.data(), 4);
  std::memcpy(&p[16], dst.data(), 4);
  const uint16_t c = HeaderChecksum(p.data(), 20);
  p[10] = static_cast<uint8_t>(c >> 8);
  p[11] = static_cast<uint8_t>(c);
  p[20] = static_cast<uint8_t>(sport >> 8);
  p[21] = static_cast<uint8_t>(sport);
  p[22] = static_cast<uint8_t>(dport >> 8);
  p[23] = static_cast<uint8_t>(dport);
  p[24] = static_cast<uint8_t>((8 + payload.size()) >> 8);
  p[25] = static_cast<uint8_t>(8 + payload.size());
  std::memcpy(&p[28], payload.data(), payload.size());
  return p;
}

}  // namespace dvpn::tunnel::os
