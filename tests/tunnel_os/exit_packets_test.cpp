// ExitPackets, the exit's end of full-tunnel mode, in a namespace of its own: a real TUN device,
// a real tunnel over loopback carrying PACKET frames (the TCP transport), and an "uplink" TUN
// device standing for the internet, so the test sees exactly what the exit forwards and can
// answer as a destination would. NAT is left out (its own test: exit_nat_test.cpp); forwarding
// between the two devices is the kernel's.

#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "tests/tunnel/io_test_util.h"
#include "tests/tunnel_os/os_test_util.h"
#include "tunnel/exit_policy.h"
#include "tunnel/os/nftables.h"
#include "tunnel/session/exit_packets.h"
#include "tunnel/session/tunnel_connection.h"

namespace dvpn::tunnel::session {
namespace {

using namespace std::chrono_literals;
using os::A;
using os::P;

constexpr std::array<uint8_t, 4> kInner{10, 231, 0, 2};
constexpr std::array<uint8_t, 4> kAllowed{203, 0, 113, 7};  // allowed by an operator rule
constexpr std::array<uint8_t, 4> kPrivate{10, 1, 2, 3};     // refused by the defaults

// The next IPv4 packet the kernel puts into `fd` within `timeout_ms` (the device's own IPv6
// chatter, router solicitations and MLD reports, is skipped); empty when none.
std::vector<uint8_t> NextIpv4(int fd, int timeout_ms = 2000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {};
    auto p = os::ReadPacket(fd, static_cast<int>(left.count()));
    if (p.empty()) return {};
    if ((p[0] >> 4) == 4) return p;
  }
}

class ExitPacketsTest : public ::testing::Test {
 protected:
  // Everything of one test, built on the test's namespace thread.
  void Run(const std::function<void()>& body) {
    if (auto why = os::MissingPrivilege(); !why.empty()) GTEST_SKIP() << why;
    os::InFreshNetns([&] {
      auto nl = os::Netlink::Open();
      ASSERT_TRUE(nl) << nl.error().message;
      ASSERT_TRUE(nl->SetLinkUp(1, 0)) << "lo";  // the tunnel runs over loopback TCP
      ASSERT_TRUE(os::EnableForwarding());
      // The "internet": 203.0.113.0/24 behind a TUN device the test reads and writes.
      uplink_ = os::UpDevice(*nl, "dvpnup0", 1500, {"192.0.2.1/24"});
      ASSERT_TRUE(uplink_);
      ASSERT_TRUE(nl->AddRoute(os::Route{P("203.0.113.0/24"), uplink_->index(), std::nullopt, 0}));
      Build();
      if (HasFatalFailure()) return;
      body();
      if (!torn_down_) Teardown();
    });
  }

  void Build() {
    auto policy = ExitPolicy::FromStrings(std::vector<std::string>{"allow 203.0.113.7/32"},
                                          std::span<const IpAddress>{});
    ASSERT_TRUE(policy) << policy.error().message;
    policy_.emplace(std::move(*policy));
    ExitPacketsOptions options;
    options.tun_name = "dvpnxt0";
    options.v4_pool = P("10.231.0.0/16");
    options.v6_pool = P("fd31:aaaa::/64");
    options.udp_listen = udp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
    options.install_nat = false;
    options.hold = hold_;
    auto packets = ExitPackets::Start(io_.get_executor(), *policy_,
                                      [this]() -> const OwnHost& { return host_; }, options);
    ASSERT_TRUE(packets) << packets.error().message;
    packets_ = *packets;

    auto pair = testing::MakeLoopbackTunnel(io_, io_);
    client_ = std::move(pair.client);
    exit_ = std::move(pair.exit);
    packets_->Serve(exit_);
    exit_->Start(nullptr, [this] { exit_closed_ = true; });
    client_->Start(nullptr, [this] { client_closed_ = true; });
    client_->SetPacketHandler([this](ByteSpan p) { at_client_.emplace_back(p.begin(), p.end()); });
    PacketSetupFields setup;
    setup.receiver_index = 9;
    setup.max_datagram_plaintext = 1420;
    setup.wants_udp = false;  // the TCP transport: PACKET frames
    ASSERT_TRUE(client_->RequestPacketMode(setup, [this](Result<PacketReadyFields, PacketFailure> a) {
      ready_ = a.has_value() ? std::optional(*a) : std::nullopt;
      answered_ = true;
    }));
    ASSERT_TRUE(RunUntil([&] { return answered_; }));
    ASSERT_TRUE(ready_.has_value());
    ASSERT_EQ(ready_->ipv4, kInner);
    ASSERT_EQ(ready_->udp_port, 0);
    ASSERT_EQ(ready_->mtu, 1420);
  }

  void Teardown() {
    client_->Close(CloseReason::kNormal, "test over", true);
    exit_->Close(CloseReason::kNormal, "test over", true);
    RunUntil([&] { return client_closed_ && exit_closed_; }, 5s);
    packets_->End(exit_.get());
    EXPECT_EQ(packets_->session_count(), 0u);
    packets_->Stop();
    for (int i = 0; i < 100 && io_.poll() > 0; ++i) {
    }
  }

  bool RunUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.run_for(5ms);
      io_.restart();
    }
    return true;
  }
  // Runs the loop a little with nothing expected (what must not happen has had its chance).
  void Settle() { RunUntil([] { return false; }, 200ms); }

  bool Send(const std::vector<uint8_t>& p) { return client_->SendPacketFrame(p); }
  // Sends once the client's write buffer has room (within 5 s).
  bool SendSoon(const std::vector<uint8_t>& p) {
    return Send(p) || RunUntil([&] { return Send(p); });
  }
  const ExitPackets::Counters& C() const { return packets_->counters(); }

  asio::io_context io_;
  OwnHost host_;
  std::optional<ExitPolicy> policy_;
  std::optional<os::TunDevice> uplink_;
  std::shared_ptr<ExitPackets> packets_;
  std::shared_ptr<TunnelConnection> client_;
  std::shared_ptr<TunnelConnection> exit_;
  std::optional<PacketReadyFields> ready_;
  bool answered_ = false;
  bool client_closed_ = false;
  bool exit_closed_ = false;
  bool torn_down_ = false;
  PacketHoldLimits hold_;
  std::vector<std::vector<uint8_t>> at_client_;
};

// A packet of an allowed flow leaves through the kernel, the answer comes back to the client,
// and both are metered by the exit exactly as the client counts them.
TEST_F(ExitPacketsTest, AnAllowedFlowGoesOutAndItsAnswerComesBackMetered) {
  Run([&] {
    const auto out = os::Ipv4Udp(kInner, kAllowed, 40000, 53, "query");
    ASSERT_TRUE(Send(out));
    ASSERT_TRUE(RunUntil([&] { return C().from_client == 1; }));
    const auto forwarded = NextIpv4(uplink_->fd());
    ASSERT_EQ(forwarded.size(), out.size());
    EXPECT_EQ(0, std::memcmp(&forwarded[16], kAllowed.data(), 4));
    EXPECT_EQ(exit_->data_bytes_received(), out.size());

    const auto answer = os::Ipv4Udp(kAllowed, kInner, 53, 40000, "answer!");
    ASSERT_EQ(::write(uplink_->fd(), answer.data(), answer.size()),
              static_cast<ssize_t>(answer.size()));
    ASSERT_TRUE(RunUntil([&] { return at_client_.size() == 1; }));
    EXPECT_EQ(at_client_[0].size(), answer.size());
    EXPECT_EQ(C().to_client, 1u);
    EXPECT_EQ(C().to_client_tcp, 1u);
    EXPECT_EQ(exit_->data_bytes_sent(), answer.size());

    // Unsolicited: a packet to the client's address that no flow of its asked for.
    const auto stray = os::Ipv4Udp(kAllowed, kInner, 99, 4444, "stray");
    ASSERT_EQ(::write(uplink_->fd(), stray.data(), stray.size()),
              static_cast<ssize_t>(stray.size()));
    ASSERT_TRUE(RunUntil([&] { return C().no_flow == 1; }));
    Settle();
    EXPECT_EQ(at_client_.size(), 1u);
  });
}

// What the exit refuses from the client: another source, a destination the policy refuses (an
// ICMP "administratively prohibited" comes back), a packet above the MTU (ICMP "fragmentation
// needed" with the MTU), a bad checksum; and nothing at all while the session is paused.
TEST_F(ExitPacketsTest, SpoofedRefusedOversizedMalformedAndUnpaidPacketsDoNotLeave) {
  Run([&] {
    ASSERT_TRUE(Send(os::Ipv4Udp({10, 231, 0, 3}, kAllowed, 1, 53, "not mine")));
    ASSERT_TRUE(RunUntil([&] { return C().not_from_session == 1; }));

    ASSERT_TRUE(Send(os::Ipv4Udp(kInner, kPrivate, 40001, 80, "private")));
    ASSERT_TRUE(RunUntil([&] { return C().refused == 1 && at_client_.size() == 1; }));
    const auto& prohibited = at_client_[0];
    ASSERT_GE(prohibited.size(), 28u);
    EXPECT_EQ(prohibited[9], 1);    // ICMP
    EXPECT_EQ(prohibited[20], 3);   // destination unreachable
    EXPECT_EQ(prohibited[21], 13);  // administratively prohibited
    EXPECT_EQ(0, std::memcmp(&prohibited[12], std::array<uint8_t, 4>{10, 231, 0, 1}.data(), 4));

    ASSERT_TRUE(Send(os::Ipv4Udp(kInner, kAllowed, 40002, 53, std::string(1500, 'x'))));
    ASSERT_TRUE(RunUntil([&] { return C().too_big == 1 && at_client_.size() == 2; }));
    const auto& too_big = at_client_[1];
    EXPECT_EQ(too_big[20], 3);
    EXPECT_EQ(too_big[21], 4);  // fragmentation needed
    EXPECT_EQ((too_big[26] << 8) | too_big[27], 1420);

    auto bad = os::Ipv4Udp(kInner, kAllowed, 40003, 53, "checksum");
    bad[26] = 0xde;  // a UDP checksum that does not match
    bad[27] = 0xad;
    ASSERT_TRUE(Send(bad));
    ASSERT_TRUE(RunUntil([&] { return C().malformed == 1; }));

    // Paused: held (docs/full-tunnel.md "Held at the limit"), and dropped, never sent, once it
    // waited longer than the hold's 100 ms.
    exit_->SetForwardingPaused(true);
    ASSERT_TRUE(Send(os::Ipv4Udp(kInner, kAllowed, 40004, 53, "unpaid")));
    ASSERT_TRUE(RunUntil([&] { return C().held == 1; }));
    Settle();
    exit_->SetForwardingPaused(false);
    ASSERT_TRUE(RunUntil([&] { return C().unpaid == 1; }));

    Settle();
    EXPECT_EQ(C().from_client, 0u);
    EXPECT_TRUE(NextIpv4(uplink_->fd(), 100).empty()) << "something left the exit";
    EXPECT_EQ(exit_->data_bytes_received(), 0u);  // none of them was metered
  });
}

// A paying client meets the forwarding limit all the time: what meets it waits, both ways, and
// goes on in order when the limit rises; nothing is metered beyond the limit meanwhile.
TEST_F(ExitPacketsTest, PacketsAtTheLimitWaitAndGoOnInOrderWhenItRises) {
  hold_.max_age_ms = 30'000;  // this test's waits are not the point
  Run([&] {
    constexpr uint64_t kLimit = 64 * 1024;
    constexpr int kOut = 150;
    constexpr int kBack = 20;
    std::vector<uint64_t> blocked;
    exit_->LimitForwarding(kLimit, [&](uint64_t l) { blocked.push_back(l); });
    auto out = [](int i) {
      std::string text(1000, 'o');
      std::memcpy(text.data(), &i, sizeof i);
      return os::Ipv4Udp(kInner, kAllowed, 40000, 53, text);
    };
    for (int i = 0; i < kOut; ++i) ASSERT_TRUE(SendSoon(out(i))) << i;
    ASSERT_TRUE(RunUntil([&] { return C().from_client + C().held == kOut; }));
    const uint64_t passed = C().from_client;
    EXPECT_GT(passed, 0u);
    EXPECT_GT(C().held, 0u);
    EXPECT_EQ(C().unpaid, 0u);
    EXPECT_FALSE(blocked.empty()) << "the payee did not hear of the limit";
    EXPECT_LE(exit_->data_bytes_received(), kLimit);
    // The answers meet the same limit.
    for (int j = 0; j < kBack; ++j) {
      const auto back = os::Ipv4Udp(kAllowed, kInner, 53, 40000, "answer " + std::to_string(j));
      ASSERT_EQ(::write(uplink_->fd(), back.data(), back.size()),
                static_cast<ssize_t>(back.size()));
    }
    ASSERT_TRUE(RunUntil([&] { return C().held == kOut - passed + kBack; }));
    Settle();
    EXPECT_EQ(C().from_client, passed) << "a held packet went on before the limit rose";
    EXPECT_TRUE(at_client_.empty());
    EXPECT_LE(exit_->data_bytes_received() + exit_->data_bytes_sent(), kLimit);

    exit_->SetForwardingLimit(64ull << 20);
    ASSERT_TRUE(RunUntil([&] {
      return C().from_client == kOut && at_client_.size() == static_cast<size_t>(kBack);
    }));
    EXPECT_EQ(C().unpaid, 0u);
    const size_t size = out(0).size();
    EXPECT_EQ(exit_->data_bytes_received(), kOut * size);
    for (int i = 0; i < kOut; ++i) {
      const auto p = NextIpv4(uplink_->fd());
      ASSERT_EQ(p.size(), size) << "packet " << i;
      int seq = -1;
      std::memcpy(&seq, &p[28], sizeof seq);
      EXPECT_EQ(seq, i) << "out of order";
    }
    for (int j = 0; j < kBack; ++j) {
      const std::string text(at_client_[j].begin() + 28, at_client_[j].end());
      EXPECT_EQ(text, "answer " + std::to_string(j));
    }
  });
}

// A flood into a session that is not paid for: its hold stops at its bound, the rest is
// dropped and counted; the hold's buffer goes back when the session ends.
TEST_F(ExitPacketsTest, AFloodAtThePauseStopsAtTheHoldsBound) {
  Run([&] {
    exit_->SetForwardingPaused(true);
    const PacketHoldLimits bound;
    constexpr int kFlood = 5'000;
    const auto p = os::Ipv4Udp(kInner, kAllowed, 40000, 53, std::string(1372, 'f'));  // 1400 B
    for (int i = 0; i < kFlood; ++i) ASSERT_TRUE(SendSoon(p)) << i;
    ASSERT_TRUE(RunUntil([&] { return C().held + C().unpaid == kFlood; }, 20s));
    EXPECT_EQ(C().held, bound.session_bytes / p.size());
    EXPECT_GT(packets_->hold_bytes_in_use(), 0u);
    EXPECT_LE(packets_->hold_bytes_in_use(), bound.session_bytes);
    EXPECT_EQ(C().from_client, 0u);
    EXPECT_EQ(exit_->data_bytes_received(), 0u);
    Teardown();
    EXPECT_EQ(packets_->hold_bytes_in_use(), 0u);
    torn_down_ = true;
  });
}

}  // namespace
}  // namespace dvpn::tunnel::session
