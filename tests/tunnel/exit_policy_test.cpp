#include "tunnel/exit_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dvpn::tunnel {
namespace {

IpAddress Ip(std::string_view text) {
  auto a = IpAddress::Parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddress{});
}

// The first, a middle and the last address of a network, computed here bit by bit (not with the
// policy's own matching code).
std::vector<IpAddress> Samples(std::string_view network, unsigned prefix) {
  IpAddress first = Ip(network);
  const unsigned bits = first.family == IpAddress::Family::kV4 ? 32 : 128;
  IpAddress last = first;
  for (unsigned b = prefix; b < bits; ++b) last.bytes[b / 8] |= uint8_t(0x80 >> (b % 8));
  IpAddress middle = first;
  if (prefix < bits) middle.bytes[prefix / 8] |= uint8_t(0x80 >> (prefix % 8));  // top host bit
  if (bits - prefix >= 2) middle.bytes[(bits - 1) / 8] |= 0x01;                  // and the lowest
  return {first, middle, last};
}

// IPv6 forms that carry an IPv4 address: mapped, NAT64 well-known prefix, 6to4.
std::vector<IpAddress> Embeddings(const IpAddress& v4) {
  IpAddress mapped = Ip("::ffff:0:0");
  IpAddress nat64 = Ip("64:ff9b::");
  IpAddress six_to_four = Ip("2002::1");
  for (int i = 0; i < 4; ++i) {
    mapped.bytes[12 + i] = v4.bytes[i];
    nat64.bytes[12 + i] = v4.bytes[i];
    six_to_four.bytes[2 + i] = v4.bytes[i];
  }
  return {mapped, nat64, six_to_four};
}

struct Range {
  const char* network;
  unsigned prefix;
};

const Range kDefaultDeniedV4[] = {
    {"0.0.0.0", 8},      {"10.0.0.0", 8},    {"100.64.0.0", 10},      {"127.0.0.0", 8},
    {"169.254.0.0", 16}, {"172.16.0.0", 12}, {"192.0.0.0", 24},       {"192.0.2.0", 24},
    {"192.168.0.0", 16}, {"198.18.0.0", 15}, {"198.51.100.0", 24},    {"203.0.113.0", 24},
    {"224.0.0.0", 4},    {"240.0.0.0", 4},   {"255.255.255.255", 32},
};

const Range kDefaultDeniedV6[] = {
    {"::", 128},        {"::1", 128}, {"fc00::", 7},       {"fe80::", 10}, {"ff00::", 8},
    {"2001:db8::", 32}, {"::", 96},   {"64:ff9b:1::", 48}, {"100::", 64},  {"fec0::", 10},
};

TEST(ExitPolicy, DefaultsRefuseEveryIpv4Range) {
  ExitPolicy policy({}, {});
  for (const Range& r : kDefaultDeniedV4) {
    for (const IpAddress& a : Samples(r.network, r.prefix)) {
      auto d = policy.Decide(a, 443);
      EXPECT_FALSE(d.allowed) << a.ToString() << " in " << r.network << "/" << r.prefix;
      EXPECT_TRUE(d.rule_index.has_value());
      EXPECT_TRUE(d.rule.starts_with("default: ")) << d.rule;
      for (const IpAddress& e : Embeddings(a)) {
        EXPECT_FALSE(policy.Decide(e, 443).allowed) << e.ToString();
      }
    }
  }
}

TEST(ExitPolicy, DefaultsRefuseEveryIpv6Range) {
  ExitPolicy policy({}, {});
  for (const Range& r : kDefaultDeniedV6) {
    for (const IpAddress& a : Samples(r.network, r.prefix)) {
      auto d = policy.Decide(a, 443);
      EXPECT_FALSE(d.allowed) << a.ToString() << " in " << r.network << "/" << r.prefix;
      EXPECT_TRUE(d.rule.starts_with("default: ")) << d.rule;
    }
  }
}

TEST(ExitPolicy, PublicAddressesAllowed) {
  ExitPolicy policy({}, {});
  for (const char* text :
       {"93.184.216.34", "1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.15.255.255",
        "172.32.0.0", "192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255",
        "2606:2800:220:1:248:1893:25c8:1946", "2a00:1450:4001::200e", "::ffff:93.184.216.34",
        "64:ff9b::808:808", "2002:5db8:d822::1"}) {
    auto d = policy.Decide(Ip(text), 443);
    EXPECT_TRUE(d.allowed) << text << " denied by " << d.rule;
  }
  auto d = policy.Decide(Ip("1.1.1.1"), 80);
  EXPECT_FALSE(d.rule_index.has_value());
  EXPECT_EQ(d.rule, "default allow");
}

TEST(ExitPolicy, SmtpAndPortZeroRefused) {
  ExitPolicy policy({}, {});
  for (const char* text : {"93.184.216.34", "2606:2800:220:1::1", "::ffff:1.1.1.1"}) {
    EXPECT_FALSE(policy.Decide(Ip(text), 25).allowed) << text;
    EXPECT_FALSE(policy.Decide(Ip(text), 0).allowed) << text;
    EXPECT_TRUE(policy.Decide(Ip(text), 24).allowed) << text;
    EXPECT_TRUE(policy.Decide(Ip(text), 26).allowed) << text;
    EXPECT_TRUE(policy.Decide(Ip(text), 65535).allowed) << text;
  }
  EXPECT_EQ(policy.Decide(Ip("1.1.1.1"), 25).rule, "default: SMTP (port 25)");
}

TEST(ExitPolicy, ProviderOwnAddressesRefused) {
  const IpAddress own[] = {Ip("93.184.216.34"), Ip("2606:2800:220:1::7"), Ip("::ffff:8.8.4.4")};
  ExitPolicy policy({}, own);
  for (const char* text : {"93.184.216.34", "2606:2800:220:1::7", "::ffff:93.184.216.34",
                           "64:ff9b::5db8:d822", "8.8.4.4", "::ffff:8.8.4.4"}) {
    auto d = policy.Decide(Ip(text), 443);
    EXPECT_FALSE(d.allowed) << text;
    EXPECT_EQ(d.rule, "default: provider's own address") << text;
  }
  EXPECT_TRUE(policy.Decide(Ip("93.184.216.35"), 443).allowed);
  EXPECT_TRUE(policy.Decide(Ip("2606:2800:220:1::8"), 443).allowed);
}

TEST(ExitPolicy, OperatorRulesComeFirstInOrder) {
  auto policy = ExitPolicy::FromStrings(
      std::vector<std::string>{"allow 127.0.0.1/32:8080", "deny 1.1.1.0/24", "allow 1.1.0.0/16:443",
                               "allow [::1]/128:1-65535", "deny *:8443"},
      {});
  ASSERT_TRUE(policy) << policy.error().message;
  // The loopback test server opened explicitly; neighbours stay closed.
  auto d = policy->Decide(Ip("127.0.0.1"), 8080);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.rule_index, 1u);  // after the own-port rule
  EXPECT_EQ(d.rule, "allow 127.0.0.1/32:8080");
  EXPECT_TRUE(policy->Decide(Ip("::ffff:127.0.0.1"), 8080).allowed);  // decided as 127.0.0.1
  EXPECT_FALSE(policy->Decide(Ip("127.0.0.1"), 8081).allowed);
  EXPECT_FALSE(policy->Decide(Ip("127.0.0.2"), 8080).allowed);
  // First match wins: 1.1.1.1:443 hits the deny before the allow.
  EXPECT_FALSE(policy->Decide(Ip("1.1.1.1"), 443).allowed);
  EXPECT_EQ(policy->Decide(Ip("1.1.1.1"), 443).rule_index, 2u);
  EXPECT_TRUE(policy->Decide(Ip("1.1.2.1"), 443).allowed);
  // [::1] for every port but 0 (the range starts at 1, so the default refuses port 0).
  EXPECT_TRUE(policy->Decide(Ip("::1"), 22).allowed);
  EXPECT_FALSE(policy->Decide(Ip("::1"), 0).allowed);
  // "*" covers both families.
  EXPECT_FALSE(policy->Decide(Ip("8.8.8.8"), 8443).allowed);
  EXPECT_FALSE(policy->Decide(Ip("2a00:1450:4001::200e"), 8443).allowed);
  EXPECT_TRUE(policy->Decide(Ip("8.8.8.8"), 8444).allowed);
  // Operator rules sit after the own-port rule and before the defaults in rules().
  EXPECT_EQ(policy->rules().size(), 1 + 5 + DefaultExitRules({}).size());
  EXPECT_EQ(policy->rules()[0].target, ExitRule::Target::kOwnProtectedPort);
  EXPECT_EQ(policy->rules()[1].label, "allow 127.0.0.1/32:8080");
}

TEST(ExitPolicy, OperatorAllowlist) {
  auto policy = ExitPolicy::FromStrings(
      std::vector<std::string>{"allow *:443", "allow *:80", "deny 0.0.0.0/0", "deny [::]/0"}, {});
  ASSERT_TRUE(policy);
  EXPECT_TRUE(policy->Decide(Ip("1.1.1.1"), 443).allowed);
  EXPECT_FALSE(policy->Decide(Ip("1.1.1.1"), 22).allowed);
  EXPECT_FALSE(policy->Decide(Ip("2a00:1450:4001::200e"), 22).allowed);
  // "allow *:443" is the operator's explicit choice and overrides the defaults for port 443.
  EXPECT_TRUE(policy->Decide(Ip("10.0.0.1"), 443).allowed);
}

TEST(ExitRuleParse, Valid) {
  auto r = ParseExitRule("  allow [::1]/128:1-65535 ");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->action, ExitRule::Action::kAllow);
  EXPECT_EQ(r->network, Ip("::1"));
  EXPECT_EQ(r->prefix_len, 128);
  EXPECT_EQ(r->port_first, 1);
  EXPECT_EQ(r->port_last, 65535);
  EXPECT_EQ(r->label, "allow [::1]/128:1-65535");

  r = ParseExitRule("deny 0.0.0.0/0:25");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->action, ExitRule::Action::kDeny);
  EXPECT_EQ(r->prefix_len, 0);
  EXPECT_EQ(r->port_first, 25);
  EXPECT_EQ(r->port_last, 25);

  r = ParseExitRule("deny\t10.1.2.3");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prefix_len, 32);
  EXPECT_EQ(r->port_first, 0);
  EXPECT_EQ(r->port_last, 65535);

  r = ParseExitRule("allow [2001:db8::]/32");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prefix_len, 32);
  r = ParseExitRule("deny *");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->any_family);
  r = ParseExitRule("allow 172.16.0.0/12:0-0");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->port_last, 0);
}

TEST(ExitRuleParse, Errors) {
  for (const char* bad : {"",
                          "   ",
                          "permit 1.2.3.4",
                          "Allow 1.2.3.4",
                          "allow",
                          "allow ",
                          "allow 1.2.3",
                          "allow 1.2.3.256",
                          "allow 01.2.3.4x",
                          "allow 1.2.3.4/33",
                          "allow 1.2.3.4/-1",
                          "allow 1.2.3.4/",
                          "allow 10.1.0.0/8",
                          "allow ::1",
                          "allow [::1",
                          "allow [1.2.3.4]",
                          "allow [::1]/129",
                          "allow [::1]/64",
                          "allow 1.2.3.4:70000",
                          "allow 1.2.3.4:20-10",
                          "allow 1.2.3.4:",
                          "allow 1.2.3.4:+80",
                          "allow 1.2.3.4:80-",
                          "allow 1.2.3.4:-80",
                          "allow */8",
                          "allow *x",
                          "allow 1.2.3.4 extra",
                          "allow 1.2.3.4:80 :81",
                          "allow [::1]x",
                          "allow 1.2.3.4:0x50",
                          "allow 1.2.3.4:80-90-100"}) {
    auto r = ParseExitRule(bad);
    ASSERT_FALSE(r) << "accepted \"" << bad << "\"";
    EXPECT_EQ(r.error().code, ExitPolicyErrc::kBadRule);
    EXPECT_NE(r.error().message.find(std::string("\"") + bad), std::string::npos)
        << r.error().message;
  }
  auto policy = ExitPolicy::FromStrings(std::vector<std::string>{"allow *:80", "alow *:81"}, {});
  ASSERT_FALSE(policy);
  EXPECT_TRUE(policy.error().message.starts_with("rule 2: ")) << policy.error().message;
  EXPECT_NE(policy.error().message.find("unknown action"), std::string::npos);
}

// ---- the exit's own host (docs/tunnel.md, "The exit's own host") -----------------------------

OwnHost Host(std::initializer_list<const char*> addresses, std::vector<uint16_t> ports = {}) {
  std::vector<IpAddress> a;
  for (const char* text : addresses) a.push_back(Ip(text));
  OwnHost host;
  EXPECT_TRUE(host.SetAddresses(a));
  EXPECT_TRUE(host.SetProtectedPorts(ports));
  return host;
}

TEST(OwnHost, LoopbackAndUnspecifiedAreAlwaysOwn) {
  const OwnHost empty;
  for (const char* text : {"127.0.0.1", "127.1.2.3", "127.255.255.255", "0.0.0.0", "0.1.2.3",
                           "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0"}) {
    EXPECT_TRUE(empty.IsOwnAddress(Ip(text))) << text;
  }
  for (const char* text : {"128.0.0.1", "126.255.255.255", "1.0.0.0", "::2", "::ffff:8.8.8.8",
                           "1::1", "93.184.216.34"}) {
    EXPECT_FALSE(empty.IsOwnAddress(Ip(text))) << text;
  }
}

TEST(OwnHost, AddressesAreNormalisedAndEveryFormMatches) {
  // A mapped address given by the interface list counts as its IPv4 address, and the other way.
  OwnHost host = Host({"93.184.216.34", "::ffff:8.8.4.4", "2606:2800:220:1::7", "fe80::1"});
  for (const char* text : {"93.184.216.34", "::ffff:93.184.216.34", "8.8.4.4", "::ffff:8.8.4.4",
                           "2606:2800:220:1::7", "fe80::1"}) {
    EXPECT_TRUE(host.IsOwnAddress(Ip(text))) << text;
  }
  for (const char* text : {"93.184.216.35", "2606:2800:220:1::8", "::93.184.216.34"}) {
    EXPECT_FALSE(host.IsOwnAddress(Ip(text))) << text;
  }
  EXPECT_EQ(host.addresses().size(), 4u);
  OwnHost twice = Host({"8.8.4.4", "::ffff:8.8.4.4", "8.8.4.4"});
  EXPECT_EQ(twice.addresses().size(), 1u);
}

TEST(OwnHost, BoundedSets) {
  std::vector<IpAddress> many;
  for (uint32_t i = 0; i < OwnHost::kMaxAddresses + 10; ++i) {
    many.push_back(IpAddress::V4({44, uint8_t(i >> 16), uint8_t(i >> 8), uint8_t(i)}));
  }
  OwnHost host;
  EXPECT_FALSE(host.SetAddresses(many));
  EXPECT_EQ(host.addresses().size(), OwnHost::kMaxAddresses);
  EXPECT_TRUE(host.IsOwnAddress(many.front()));  // the lowest are kept
  EXPECT_TRUE(host.SetAddresses({}));
  EXPECT_TRUE(host.addresses().empty());

  std::vector<uint16_t> ports;
  for (uint16_t p = 0; p < OwnHost::kMaxProtectedPorts + 5; ++p) ports.push_back(p);
  EXPECT_FALSE(host.SetProtectedPorts(ports));
  EXPECT_EQ(host.protected_ports().size(), OwnHost::kMaxProtectedPorts);
  EXPECT_FALSE(host.IsProtectedPort(0));  // 0 is not a port of ours
  EXPECT_TRUE(host.IsProtectedPort(1));
  EXPECT_TRUE(host.SetProtectedPorts(std::vector<uint16_t>{7601, 7443, 7601, 0}));
  EXPECT_EQ(host.protected_ports(), (std::vector<uint16_t>{7443, 7601}));
}

// The exit listens on 0.0.0.0: none of the host's addresses, in any form, is reachable through
// it by default. (Before: only the listen address was refused, so these were allowed.)
TEST(ExitPolicy, EveryOwnAddressOfTheHostRefused) {
  ExitPolicy policy({}, {});
  const OwnHost host = Host({"93.184.216.34", "2606:2800:220:1::7"});
  for (const char* text : {"93.184.216.34", "::ffff:93.184.216.34", "64:ff9b::5db8:d822",
                           "2002:5db8:d822::1", "2606:2800:220:1::7"}) {
    auto d = policy.Decide(Ip(text), 443, host);
    EXPECT_FALSE(d.allowed) << text;
    EXPECT_EQ(d.rule, "default: the exit host's own address") << text;
  }
  EXPECT_TRUE(policy.Decide(Ip("93.184.216.35"), 443, host).allowed);
  EXPECT_TRUE(policy.Decide(Ip("2606:2800:220:1::8"), 443, host).allowed);
  // Without the host (the 2-argument form), the addresses are ordinary public ones.
  EXPECT_TRUE(policy.Decide(Ip("93.184.216.34"), 443).allowed);
  // The list is the host's now: a new list decides at once.
  const OwnHost later = Host({"93.184.216.35"});
  EXPECT_FALSE(policy.Decide(Ip("93.184.216.35"), 443, later).allowed);
  EXPECT_TRUE(policy.Decide(Ip("93.184.216.34"), 443, later).allowed);
}

// An operator may open an own address on purpose (the local network's web server on loopback),
// but never a port of the node itself, on any own address, whatever the rules say.
TEST(ExitPolicy, OwnPortsNeverAllowedOwnAddressesOnlyWhenTheOperatorSays) {
  const OwnHost host = Host({"93.184.216.34", "2606:2800:220:1::7"}, {7443, 7601, 7602, 7600});
  auto policy =
      ExitPolicy::FromStrings(std::vector<std::string>{"allow 127.0.0.1/32", "allow [::1]/128",
                                                       "allow 93.184.216.34", "allow *:7601"},
                              {});
  ASSERT_TRUE(policy) << policy.error().message;
  EXPECT_TRUE(policy->Decide(Ip("127.0.0.1"), 8080, host).allowed);
  EXPECT_TRUE(policy->Decide(Ip("::ffff:127.0.0.1"), 8080, host).allowed);
  EXPECT_TRUE(policy->Decide(Ip("93.184.216.34"), 8080, host).allowed);
  EXPECT_FALSE(policy->Decide(Ip("127.0.0.2"), 8080, host).allowed);  // only what was allowed
  for (const char* text : {"127.0.0.1", "127.9.9.9", "0.0.0.0", "::ffff:127.0.0.1", "::1",
                           "::", "93.184.216.34", "::ffff:93.184.216.34", "2606:2800:220:1::7",
                           "64:ff9b::7f00:1", "2002:7f00:1::1", "64:ff9b::5db8:d822"}) {
    for (uint16_t port : {7443, 7600, 7601, 7602}) {
      auto d = policy->Decide(Ip(text), port, host);
      EXPECT_FALSE(d.allowed) << text << " port " << port;
      EXPECT_EQ(d.rule_index, 0u) << text << " port " << port;
      EXPECT_EQ(d.rule, "never allowed: the node's own port on an own address");
    }
  }
  // Protected ports are the node's own on its own addresses only: elsewhere they are ports.
  EXPECT_TRUE(policy->Decide(Ip("1.1.1.1"), 7601, host).allowed);
  EXPECT_TRUE(policy->Decide(Ip("2a00:1450:4001::200e"), 7443, host).allowed);
}

TEST(ExitPolicy, AddressesGivenAtConstructionAreOwnForTheOwnPorts) {
  const IpAddress own[] = {Ip("93.184.216.34")};
  auto policy = ExitPolicy::FromStrings(std::vector<std::string>{"allow *"}, own);
  ASSERT_TRUE(policy);
  const OwnHost host = Host({}, {7601});
  EXPECT_FALSE(policy->Decide(Ip("93.184.216.34"), 7601, host).allowed);
  EXPECT_FALSE(policy->Decide(Ip("::ffff:93.184.216.34"), 7601, host).allowed);
  EXPECT_TRUE(policy->Decide(Ip("93.184.216.34"), 7602, host).allowed);  // the operator's allow
}

TEST(IpAddress, ParseAndPrint) {
  EXPECT_EQ(Ip("192.0.2.1").ToString(), "192.0.2.1");
  EXPECT_EQ(Ip("2001:DB8::1").ToString(), "2001:db8::1");
  EXPECT_FALSE(IpAddress::Parse("1.2.3.4.5"));
  EXPECT_FALSE(IpAddress::Parse("[::1]"));
  EXPECT_FALSE(IpAddress::Parse(std::string(100, '1')));
  EXPECT_FALSE(IpAddress::Parse(std::string_view("1.2.3.4\0", 8)));

  Destination d;
  d.kind = Destination::Kind::kIpv4;
  d.v4 = {10, 0, 0, 1};
  EXPECT_EQ(IpAddress::FromDestination(d), Ip("10.0.0.1"));
  d.kind = Destination::Kind::kDomain;
  d.domain = "example.com";
  EXPECT_FALSE(IpAddress::FromDestination(d));
}

}  // namespace
}  // namespace dvpn::tunnel

namespace dvpn::tunnel {
namespace {

// Packets without ports (ICMP echo in full-tunnel mode): whole-address rules decide, rules for
// particular ports (the defaults for 0 and 25, an operator's :80) say nothing.
TEST(ExitPolicyPortless, OnlyRulesForEveryPortDecide) {
  auto addr = [](const char* t) { return IpAddress::Parse(t).value(); };
  const std::string rules[] = {"deny 1.1.1.0/24:80", "deny 9.9.9.9", "allow 10.200.0.0/16"};
  auto policy = ExitPolicy::FromStrings(rules, {});
  ASSERT_TRUE(policy) << policy.error().message;
  const OwnHost none;
  EXPECT_TRUE(policy->DecidePortless(addr("8.8.8.8"), none).allowed);
  EXPECT_TRUE(policy->DecidePortless(addr("1.1.1.1"), none).allowed) << "a port-80 rule";
  EXPECT_FALSE(policy->Decide(addr("1.1.1.1"), 80).allowed);
  EXPECT_FALSE(policy->DecidePortless(addr("9.9.9.9"), none).allowed);
  EXPECT_TRUE(policy->DecidePortless(addr("10.200.1.1"), none).allowed) << "operator allow";
  // The defaults for ranges still hold; so do the host's own addresses.
  for (const char* refused :
       {"10.1.1.1", "127.0.0.1", "198.51.100.7", "169.254.169.254", "192.168.1.1", "100.64.0.1",
        "224.0.0.1", "::1", "fe80::1", "fd00::1"}) {
    EXPECT_FALSE(policy->DecidePortless(addr(refused), none).allowed) << refused;
  }
  OwnHost host;
  const IpAddress own[] = {addr("8.8.4.4")};
  host.SetAddresses(own);
  EXPECT_FALSE(policy->DecidePortless(addr("8.8.4.4"), host).allowed) << "the exit's own host";
  // IPv4-mapped addresses are decided as their IPv4 address.
  EXPECT_FALSE(policy->DecidePortless(addr("::ffff:9.9.9.9"), none).allowed);
}

}  // namespace
}  // namespace dvpn::tunnel
