// TunIo against a real TUN device in a fresh namespace: packets the kernel routes into the
// device reach the read callback; packets written reach a local socket; a bad write is counted.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/tunnel_os/os_test_util.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/tun_device.h"
#include "tunnel/session/tun_io.h"

namespace dvpn::tunnel::os {
namespace {

using namespace std::chrono_literals;
using session::TunIo;

TEST(TunIo, ReadsWhatTheKernelRoutesInAndWritesWhatItShouldDeliver) {
  SKIP_WITHOUT_PRIVILEGE();
  InFreshNetns([] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl);
    auto dev = UpDevice(*nl, "dvpnt0", 1420, {"10.9.0.1/24"});
    ASSERT_TRUE(dev);
    const uint32_t index = dev->index();

    session::asio::io_context io;
    std::vector<std::vector<uint8_t>> seen;
    auto tun = TunIo::Make(io.get_executor(), std::move(*dev), 1420,
                           [&](std::span<uint8_t> p) { seen.emplace_back(p.begin(), p.end()); });
    EXPECT_EQ(tun->index(), index);
    EXPECT_EQ(tun->name(), "dvpnt0");
    tun->Start();

    // In: a datagram to an address behind the device.
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(s, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    ::inet_pton(AF_INET, "10.9.0.2", &to.sin_addr);
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(::sendto(s, "abc", 3, 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 3);
    }
    for (int i = 0; i < 50 && tun->counters().read < 3; ++i) io.run_for(10ms);
    size_t udp4 = 0;
    for (const auto& p : seen) udp4 += p.size() == 31 && (p[0] >> 4) == 4 && p[9] == 17;
    EXPECT_EQ(udp4, 3u);

    // Out: a packet for this machine's address reaches a bound socket.
    ::close(s);
    const int r = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(r, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_port = htons(7777);
    ::inet_pton(AF_INET, "10.9.0.1", &local.sin_addr);
    ASSERT_EQ(::bind(r, reinterpret_cast<sockaddr*>(&local), sizeof local), 0);
    const auto packet = Ipv4Udp({10, 9, 0, 2}, {10, 9, 0, 1}, 5555, 7777, "through TunIo");
    EXPECT_TRUE(tun->Write(packet));
    char buf[64];
    pollfd p{r, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 2000), 1);
    EXPECT_EQ(::recv(r, buf, sizeof buf, 0), 13);
    EXPECT_EQ(tun->counters().written, 1u);
    EXPECT_EQ(tun->counters().written_bytes, packet.size());

    EXPECT_FALSE(tun->Write({}));
    EXPECT_EQ(tun->counters().write_dropped, 1u);
    tun->Close();
    EXPECT_FALSE(tun->Write(packet));
    io.run_for(20ms);  // the read loop ends
    EXPECT_EQ(::if_nametoindex("dvpnt0"), 0u) << "the device outlived TunIo::Close";
    ::close(r);
  });
}

}  // namespace
}  // namespace dvpn::tunnel::os
