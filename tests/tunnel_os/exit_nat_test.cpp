// The exit's NAT (tunnel/os/nftables) against the real kernel: an "exit" namespace with a TUN
// device and an uplink veth to an "internet" namespace. A packet written into the TUN device
// from an inner address leaves masqueraded to the uplink address, its answer comes back into
// the device, and a new connection from outside to an inner address is dropped.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "tests/support/netns.h"
#include "tests/tunnel_os/os_test_util.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/nftables.h"
#include "tunnel/os/tun_device.h"

namespace dvpn::tunnel::os {
namespace {

using dvpn::testing::AddVethPair;
using dvpn::testing::Netns;

ExitNatConfig Config() {
  return ExitNatConfig{.table = "dvpn_exit_test",
                       .tun_name = "dvpnx0",
                       .v4_pool = P("10.231.0.1/16"),
                       .v6_pool = P("fd00:231::1/64")};
}

TEST(ExitNatRuleset, MasqueradesThePoolsAndAdmitsOnlyAnswers) {
  auto text = ExitNatRuleset(Config());
  ASSERT_TRUE(text) << text.error().message;
  // Host bits of the pools are cleared; both families are masqueraded, except into the device.
  EXPECT_NE(text->find("oifname != \"dvpnx0\" ip saddr 10.231.0.0/16 masquerade"),
            std::string::npos)
      << *text;
  EXPECT_NE(text->find("oifname != \"dvpnx0\" ip6 saddr fd00:231::/64 masquerade"),
            std::string::npos)
      << *text;
  EXPECT_NE(text->find("oifname \"dvpnx0\" ct state established,related accept"),
            std::string::npos);
  EXPECT_NE(text->find("oifname \"dvpnx0\" counter drop"), std::string::npos);
  // The old table goes in the same transaction as the new one comes.
  EXPECT_EQ(text->find("add table inet dvpn_exit_test\ndelete table inet dvpn_exit_test\n"), 0u);
}

TEST(ExitNatRuleset, RefusesNamesOutsideTheGrammarAndMixedFamilies) {
  for (const char* table :
       {"", "Upper", "has space", "x;flush ruleset", "a_table_name_longer_than_thirty_two"}) {
    auto c = Config();
    c.table = table;
    auto r = ExitNatRuleset(c);
    ASSERT_FALSE(r) << table;
    EXPECT_EQ(r.error().code, OsErrc::kBadArgument);
  }
  for (const char* dev : {"", "x\"; flush ruleset", "much-too-long-device"}) {
    auto c = Config();
    c.tun_name = dev;
    EXPECT_FALSE(ExitNatRuleset(c)) << dev;
  }
  auto c = Config();
  std::swap(c.v4_pool, c.v6_pool);
  EXPECT_FALSE(ExitNatRuleset(c));
}

class ExitNatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_PRIVILEGE();
    if (auto nft = dvpn::testing::RunCommand({"nft", "--version"}); !nft) {
      GTEST_SKIP() << "needs nftables (`nft`): " << nft.error();
    }
    auto exit = Netns::Create("exit");
    ASSERT_TRUE(exit) << exit.error();
    exit_.emplace(std::move(*exit));
    auto internet = Netns::Create("inet");
    ASSERT_TRUE(internet) << internet.error();
    internet_.emplace(std::move(*internet));
    auto veth =
        AddVethPair(*exit_, "uplink", {"192.0.2.1/24"}, *internet_, "eth0", {"192.0.2.2/24"});
    ASSERT_TRUE(veth) << veth.error();
  }

  std::optional<Netns> exit_;
  std::optional<Netns> internet_;
};

TEST_F(ExitNatTest, PacketsFromThePoolLeaveMasqueradedAndOnlyAnswersComeBack) {
  // "internet": a UDP socket that answers once, and records whom it heard from.
  int server = -1;
  ASSERT_TRUE(internet_->RunInside([&] {
    server = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(7007);
    ::inet_pton(AF_INET, "192.0.2.2", &a.sin_addr);
    ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }));
  ASSERT_GE(server, 0);

  ASSERT_TRUE(exit_->RunInside([&] {
    auto nl = Netlink::Open();
    ASSERT_TRUE(nl) << nl.error().message;
    auto dev = UpDevice(*nl, "dvpnx0", 1420, {"10.231.0.1/16"});
    ASSERT_TRUE(dev);
    ASSERT_TRUE(EnableForwarding());
    // A table a crashed exit left behind is replaced whole, not added to.
    ASSERT_TRUE(exit_->Exec({"nft", "add", "table", "inet", "dvpn_exit_test"}));
    ASSERT_TRUE(exit_->Exec({"nft", "add", "chain", "inet", "dvpn_exit_test", "stale"}));
    auto nat = ExitNat::Install(Config());
    ASSERT_TRUE(nat) << nat.error().message;
    auto chains = exit_->Exec({"nft", "list", "table", "inet", "dvpn_exit_test"});
    ASSERT_TRUE(chains) << chains.error();
    EXPECT_EQ(chains->find("stale"), std::string::npos) << *chains;

    // A session's packet: 10.231.0.5:4444 -> 192.0.2.2:7007.
    const auto out = Ipv4Udp({10, 231, 0, 5}, {192, 0, 2, 2}, 4444, 7007, "hello");
    ASSERT_EQ(::write(dev->fd(), out.data(), out.size()), static_cast<ssize_t>(out.size()));

    // The internet sees the exit's uplink address, and answers.
    pollfd p{server, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 3000), 1) << "the packet did not leave the exit";
    char buf[64];
    sockaddr_in from{};
    socklen_t from_len = sizeof from;
    ASSERT_EQ(::recvfrom(server, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len),
              5);
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &from.sin_addr, text, sizeof text);
    EXPECT_STREQ(text, "192.0.2.1") << "not masqueraded";
    ASSERT_EQ(::sendto(server, "world", 5, 0, reinterpret_cast<sockaddr*>(&from), from_len), 5);

    // The answer comes back into the device, addressed to the inner address and port.
    std::vector<uint8_t> in;
    for (int i = 0; i < 10 && (in.empty() || in[0] >> 4 != 4); ++i) in = ReadPacket(dev->fd());
    ASSERT_GE(in.size(), 33u) << "no answer came back";
    EXPECT_EQ(std::vector<uint8_t>(in.begin() + 16, in.begin() + 20),
              (std::vector<uint8_t>{10, 231, 0, 5}));
    EXPECT_EQ((in[22] << 8) | in[23], 4444);
    EXPECT_EQ(std::string(in.end() - 5, in.end()), "world");

    // A new flow from outside to an inner address reaches the exit and is dropped there, at
    // the forward hook: it never comes out of the device.
    ASSERT_TRUE(internet_->Exec({"ip", "route", "add", "10.231.0.0/16", "via", "192.0.2.1"}));
    ASSERT_TRUE(internet_->RunInside([&] {
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(5353);
      ::inet_pton(AF_INET, "10.231.0.5", &to.sin_addr);
      EXPECT_EQ(::sendto(server, "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 1);
    }));
    for (std::vector<uint8_t> extra = ReadPacket(dev->fd(), 500); !extra.empty();
         extra = ReadPacket(dev->fd(), 500)) {
      if (extra.size() >= 24 && extra[0] >> 4 == 4) {
        EXPECT_NE((extra[22] << 8) | extra[23], 5353) << "an unsolicited packet got in";
      }
    }
    auto forward = exit_->Exec({"nft", "list", "chain", "inet", "dvpn_exit_test", "forward"});
    ASSERT_TRUE(forward) << forward.error();
    EXPECT_NE(forward->find("counter packets 1 "), std::string::npos) << *forward;

    ASSERT_TRUE(nat->Remove());
    auto listed = exit_->Exec({"nft", "list", "tables"});
    ASSERT_TRUE(listed) << listed.error();
    EXPECT_EQ(listed->find("dvpn_exit_test"), std::string::npos) << *listed;
  }));
  ::close(server);
}

}  // namespace
}  // namespace dvpn::tunnel::os
