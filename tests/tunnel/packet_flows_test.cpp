// A packet-mode session's flows at the exit: the source must be the session's, new flows ask
// the exit policy within a rate and two bounds (the session's, the exit's), answers pass only
// for the session's own flows (ICMP errors by the flow they quote), idle flows expire.

#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tunnel/packet_flows.h"

namespace dvpn::tunnel {
namespace {

IpAddress A(const char* t) { return IpAddress::Parse(t).value(); }

// A checked IPv4 or IPv6 packet: protocol, addresses, and the transport bytes that follow the
// IP header (ports first for TCP/UDP; type, code, checksum, id for ICMP).
std::vector<uint8_t> Packet(uint8_t protocol, const char* src, const char* dst,
                            std::vector<uint8_t> l4) {
  const IpAddress s = A(src), d = A(dst);
  std::vector<uint8_t> p;
  if (s.family == IpAddress::Family::kV4) {
    p.assign(20, 0);
    p[0] = 0x45;
    p[8] = 64;
    p[9] = protocol;
    std::copy_n(s.bytes.begin(), 4, p.begin() + 12);
    std::copy_n(d.bytes.begin(), 4, p.begin() + 16);
  } else {
    p.assign(40, 0);
    p[0] = 0x60;
    p[6] = protocol;
    p[7] = 64;
    std::copy_n(s.bytes.begin(), 16, p.begin() + 8);
    std::copy_n(d.bytes.begin(), 16, p.begin() + 24);
  }
  p.insert(p.end(), l4.begin(), l4.end());
  const size_t total = p.size();
  if (s.family == IpAddress::Family::kV4) {
    p[2] = static_cast<uint8_t>(total >> 8);
    p[3] = static_cast<uint8_t>(total);
  } else {
    p[4] = static_cast<uint8_t>((total - 40) >> 8);
    p[5] = static_cast<uint8_t>(total - 40);
  }
  if (protocol == ip::kProtoUdp) {
    const size_t len = l4.size();
    const size_t at = total - len;
    p[at + 4] = static_cast<uint8_t>(len >> 8);
    p[at + 5] = static_cast<uint8_t>(len);
  }
  EXPECT_TRUE(ip::FillChecksums(p));
  return p;
}
std::vector<uint8_t> Tcp(const char* src, uint16_t sport, const char* dst, uint16_t dport,
                         uint8_t flags = ip::kTcpAck) {
  std::vector<uint8_t> l4(20, 0);
  l4[0] = static_cast<uint8_t>(sport >> 8);
  l4[1] = static_cast<uint8_t>(sport);
  l4[2] = static_cast<uint8_t>(dport >> 8);
  l4[3] = static_cast<uint8_t>(dport);
  l4[12] = 0x50;
  l4[13] = flags;
  return Packet(ip::kProtoTcp, src, dst, l4);
}
std::vector<uint8_t> Udp(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  std::vector<uint8_t> l4 = {static_cast<uint8_t>(sport >> 8),
                             static_cast<uint8_t>(sport),
                             static_cast<uint8_t>(dport >> 8),
                             static_cast<uint8_t>(dport),
                             0,
                             0,
                             0,
                             0,
                             'h',
                             'i'};
  return Packet(ip::kProtoUdp, src, dst, l4);
}
std::vector<uint8_t> Echo(const char* src, const char* dst, uint16_t id, bool reply) {
  const bool v6 = A(src).family == IpAddress::Family::kV6;
  const uint8_t type = v6 ? (reply ? 129 : 128) : (reply ? 0 : 8);
  return Packet(v6 ? ip::kProtoIcmpv6 : ip::kProtoIcmp, src, dst,
                {type, 0, 0, 0, static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), 0, 1});
}
// ICMPv4 "fragmentation needed" from `router` to `to`, quoting `offending`.
std::vector<uint8_t> FragNeeded(const char* router, const char* to,
                                const std::vector<uint8_t>& offending) {
  std::vector<uint8_t> l4 = {3, 4, 0, 0, 0, 0, 0x05, 0x00};
  l4.insert(l4.end(), offending.begin(),
            offending.begin() + std::min<size_t>(28, offending.size()));
  return Packet(ip::kProtoIcmp, router, to, l4);
}

ip::PacketInfo Info(const std::vector<uint8_t>& p) {
  auto info = ip::ParsePacket(p);
  EXPECT_TRUE(info) << (info ? "" : info.error().message);
  return info.value_or(ip::PacketInfo{});
}

class PacketFlowsTest : public ::testing::Test {
 protected:
  PacketFlowsTest()
      : policy_(ExitPolicy::FromStrings({}, {}).value()),
        budget_(1000),
        lease_{A("10.231.0.2"), A("fd00:231::2")} {}

  FlowVerdict Out(SessionFlows& f, const std::vector<uint8_t>& p, uint64_t now = 1000) {
    return f.Outbound(Info(p), now, [this]() -> const OwnHost& { return host_; });
  }
  FlowVerdict In(SessionFlows& f, const std::vector<uint8_t>& p, uint64_t now = 1000) {
    return f.Inbound(Info(p), p, now);
  }

  ExitPolicy policy_;
  FlowBudget budget_;
  InnerLease lease_;
  OwnHost host_;
};

TEST_F(PacketFlowsTest, OnlyTheSessionsOwnSourceAndOnlyAnswersToItsFlows) {
  SessionFlows f(policy_, budget_, lease_, FlowLimits{});
  EXPECT_EQ(Out(f, Tcp("10.231.0.3", 4000, "8.8.8.8", 443)), FlowVerdict::kNotFromSession);
  EXPECT_EQ(Out(f, Tcp("8.8.4.4", 4000, "8.8.8.8", 443)), FlowVerdict::kNotFromSession);
  EXPECT_EQ(Out(f, Tcp("10.231.0.2", 4000, "8.8.8.8", 443, ip::kTcpSyn)), FlowVerdict::kForward);
  EXPECT_EQ(Out(f, Udp("fd00:231::2", 5000, "2001:4860::8888", 53)), FlowVerdict::kForward);
  EXPECT_EQ(f.size(), 2u);
  EXPECT_EQ(budget_.used(), 2u);

  EXPECT_EQ(In(f, Tcp("8.8.8.8", 443, "10.231.0.2", 4000)), FlowVerdict::kForward);
  EXPECT_EQ(In(f, Udp("2001:4860::8888", 53, "fd00:231::2", 5000)), FlowVerdict::kForward);
  // Not one of its flows: another port, another remote, another session's address.
  EXPECT_EQ(In(f, Tcp("8.8.8.8", 443, "10.231.0.2", 4001)), FlowVerdict::kNoFlow);
  EXPECT_EQ(In(f, Tcp("8.8.4.4", 443, "10.231.0.2", 4000)), FlowVerdict::kNoFlow);
  EXPECT_EQ(In(f, Tcp("8.8.8.8", 443, "10.231.0.3", 4000)), FlowVerdict::kNoFlow);
  EXPECT_EQ(In(f, Udp("8.8.8.8", 9999, "10.231.0.2", 5000)), FlowVerdict::kNoFlow);
}

TEST_F(PacketFlowsTest, ThePolicyDecidesNewFlowsWithAndWithoutPorts) {
  SessionFlows f(policy_, budget_, lease_, FlowLimits{});
  for (const auto& refused :
       {Tcp("10.231.0.2", 1, "10.1.2.3", 80), Tcp("10.231.0.2", 1, "8.8.8.8", 25),
        Udp("10.231.0.2", 1, "169.254.169.254", 80), Udp("10.231.0.2", 1, "10.231.0.3", 80),
        Echo("10.231.0.2", "192.168.1.1", 7, false), Echo("fd00:231::2", "fd00:231::3", 7, false),
        Udp("fd00:231::2", 1, "::1", 53)}) {
    EXPECT_EQ(Out(f, refused), FlowVerdict::kRefused) << ip::Describe(refused);
  }
  EXPECT_EQ(f.size(), 0u);
  // A ping goes out and its reply comes back (the identifier is the flow's "port").
  EXPECT_EQ(Out(f, Echo("10.231.0.2", "8.8.8.8", 77, false)), FlowVerdict::kForward);
  EXPECT_EQ(In(f, Echo("8.8.8.8", "10.231.0.2", 77, true)), FlowVerdict::kForward);
  EXPECT_EQ(In(f, Echo("8.8.8.8", "10.231.0.2", 78, true)), FlowVerdict::kNoFlow);
  EXPECT_EQ(Out(f, Echo("fd00:231::2", "2001:4860::8888", 5, false)), FlowVerdict::kForward);
  EXPECT_EQ(In(f, Echo("2001:4860::8888", "fd00:231::2", 5, true)), FlowVerdict::kForward);
  // The exit's own host.
  const IpAddress own[] = {A("8.8.4.4")};
  host_.SetAddresses(own);
  EXPECT_EQ(Out(f, Tcp("10.231.0.2", 9, "8.8.4.4", 443)), FlowVerdict::kRefused);
}

TEST_F(PacketFlowsTest, ASessionAndTheExitHaveBoundsAndNewFlowsARate) {
  FlowLimits small;
  small.max_flows = 3;
  SessionFlows f(policy_, budget_, lease_, small);
  for (uint16_t port = 1; port <= 3; ++port) {
    EXPECT_EQ(Out(f, Udp("10.231.0.2", port, "8.8.8.8", 53)), FlowVerdict::kForward);
  }
  EXPECT_EQ(Out(f, Udp("10.231.0.2", 4, "8.8.8.8", 53)), FlowVerdict::kTooManyFlows);
  EXPECT_EQ(Out(f, Udp("10.231.0.2", 1, "8.8.8.8", 53)), FlowVerdict::kForward) << "known flow";

  FlowBudget exit_wide(2);
  SessionFlows a(policy_, exit_wide, lease_, FlowLimits{});
  SessionFlows b(policy_, exit_wide, InnerLease{A("10.231.0.9"), A("fd00:231::9")}, FlowLimits{});
  EXPECT_EQ(Out(a, Udp("10.231.0.2", 1, "8.8.8.8", 53)), FlowVerdict::kForward);
  EXPECT_EQ(Out(b, Udp("10.231.0.9", 1, "8.8.8.8", 53)), FlowVerdict::kForward);
  EXPECT_EQ(Out(b, Udp("10.231.0.9", 2, "8.8.8.8", 53)), FlowVerdict::kTooManyFlows);

  FlowLimits slow;
  slow.new_flows_per_second = 10;
  slow.new_flows_burst = 5;
  SessionFlows r(policy_, budget_, lease_, slow);
  // Refused attempts spend tokens too.
  EXPECT_EQ(Out(r, Udp("10.231.0.2", 1, "10.0.0.1", 53), 0), FlowVerdict::kRefused);
  for (uint16_t port = 2; port <= 5; ++port) {
    EXPECT_EQ(Out(r, Udp("10.231.0.2", port, "8.8.8.8", 53), 0), FlowVerdict::kForward);
  }
  EXPECT_EQ(Out(r, Udp("10.231.0.2", 6, "8.8.8.8", 53), 0), FlowVerdict::kRateLimited);
  EXPECT_EQ(Out(r, Udp("10.231.0.2", 6, "8.8.8.8", 53), 100), FlowVerdict::kForward)
      << "one token back after 100 ms at 10/s";
}

TEST_F(PacketFlowsTest, IdleFlowsExpireByProtocolAndGiveTheBudgetBack) {
  FlowLimits limits;
  limits.udp_idle_ms = 1000;
  limits.tcp_idle_ms = 5000;
  limits.tcp_closing_ms = 500;
  {
    SessionFlows f(policy_, budget_, lease_, limits);
    EXPECT_EQ(Out(f, Udp("10.231.0.2", 1, "8.8.8.8", 53), 0), FlowVerdict::kForward);
    EXPECT_EQ(Out(f, Tcp("10.231.0.2", 2, "8.8.8.8", 443), 0), FlowVerdict::kForward);
    EXPECT_EQ(Out(f, Tcp("10.231.0.2", 3, "8.8.8.8", 443), 0), FlowVerdict::kForward);
    EXPECT_EQ(In(f, Tcp("8.8.8.8", 443, "10.231.0.2", 3, ip::kTcpFin | ip::kTcpAck), 0),
              FlowVerdict::kForward);
    EXPECT_EQ(f.Expire(600), 1u) << "the closing TCP flow";
    EXPECT_EQ(f.Expire(1100), 1u) << "the UDP flow";
    EXPECT_EQ(In(f, Udp("8.8.8.8", 53, "10.231.0.2", 1), 1200), FlowVerdict::kNoFlow);
    // An answer keeps a flow alive.
    EXPECT_EQ(In(f, Tcp("8.8.8.8", 443, "10.231.0.2", 2), 4000), FlowVerdict::kForward);
    EXPECT_EQ(f.Expire(6000), 0u);
    EXPECT_EQ(f.Expire(9001), 1u);
    EXPECT_EQ(Out(f, Udp("10.231.0.2", 7, "8.8.8.8", 53), 9001), FlowVerdict::kForward);
    EXPECT_EQ(budget_.used(), 1u);
  }
  EXPECT_EQ(budget_.used(), 0u) << "the session's end gives its flows back";
}

TEST_F(PacketFlowsTest, IcmpErrorsPassForTheFlowTheyQuote) {
  SessionFlows f(policy_, budget_, lease_, FlowLimits{});
  const auto syn = Tcp("10.231.0.2", 4000, "8.8.8.8", 443, ip::kTcpSyn);
  EXPECT_EQ(Out(f, syn), FlowVerdict::kForward);
  EXPECT_EQ(In(f, FragNeeded("9.9.9.9", "10.231.0.2", syn)), FlowVerdict::kForward);
  const auto other = Tcp("10.231.0.2", 4001, "8.8.8.8", 443, ip::kTcpSyn);
  EXPECT_EQ(In(f, FragNeeded("9.9.9.9", "10.231.0.2", other)), FlowVerdict::kNoFlow);
  const auto not_ours = Tcp("10.231.0.3", 4000, "8.8.8.8", 443, ip::kTcpSyn);
  EXPECT_EQ(In(f, FragNeeded("9.9.9.9", "10.231.0.2", not_ours)), FlowVerdict::kNoFlow);
}

TEST_F(PacketFlowsTest, RandomFlowsKeepTheBudgetEqualToTheTables) {
  FlowBudget budget(300);
  FlowLimits limits;
  limits.max_flows = 200;
  limits.new_flows_burst = 0;  // no rate limit: the bounds are what is tested
  limits.udp_idle_ms = 50;
  SessionFlows a(policy_, budget, lease_, limits);
  SessionFlows b(policy_, budget, InnerLease{A("10.231.0.9"), A("fd00:231::9")}, limits);
  std::mt19937 rng(16);
  uint64_t now = 0;
  for (int step = 0; step < 20000; ++step) {
    now += rng() % 3;
    SessionFlows& s = rng() % 2 ? a : b;
    const bool is_a = &s == &a;
    const auto p = Udp(is_a ? "10.231.0.2" : "10.231.0.9", static_cast<uint16_t>(1 + rng() % 400),
                       "8.8.8.8", 53);
    const FlowVerdict v = Out(s, p, now);
    ASSERT_TRUE(v == FlowVerdict::kForward || v == FlowVerdict::kTooManyFlows);
    if (rng() % 50 == 0) s.Expire(now);
    ASSERT_EQ(budget.used(), a.size() + b.size());
    ASSERT_LE(a.size(), 200u);
    ASSERT_LE(budget.used(), 300u);
  }
}

}  // namespace
}  // namespace dvpn::tunnel
