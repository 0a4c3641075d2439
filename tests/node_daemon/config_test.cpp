// The seller's configuration file (provider/config.h, docs/node.md §2): defaults, every
// table read, overrides from --set, and bad input refused with one line naming the key and its
// position, never accepted silently.

#include "provider/config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dvpn::node {
namespace {

constexpr const char* kMinimal = R"(
[node]
ledger = "127.0.0.1:7400"
keystore = "/var/lib/dvpn/provider.keystore"

[offer]
price_per_mb = "0.25"

[tunnel]
listen = "127.0.0.1:7443"
)";

Result<NodeConfig, Errc> Parse(const std::string& text,
                               const std::vector<std::string>& overrides = {}) {
  return ParseNodeConfig(text, "node.toml", overrides);
}

// The error for `text`; fails the test when it parses.
std::string ErrorOf(const std::string& text, const std::vector<std::string>& overrides = {}) {
  auto c = Parse(text, overrides);
  EXPECT_FALSE(c.has_value()) << "accepted:\n" << text;
  return c ? std::string() : c.error().message;
}

TEST(NodeConfig, MinimalFileGetsTheDocumentedDefaults) {
  auto c = Parse(kMinimal);
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->ledger.ToString(), "127.0.0.1:7400");
  EXPECT_EQ(c->price_per_mb.micro(), 250'000u);
  EXPECT_EQ(c->price_per_minute.micro(), 0u);
  EXPECT_EQ(c->data_dir, "./dvpn-node-data");
  EXPECT_EQ(c->gossip_listen.ToString(), "0.0.0.0:7600");
  EXPECT_EQ(c->capacity_mbps, 100u);
  EXPECT_EQ(c->max_sessions, 64u);
  EXPECT_EQ(c->lifetime_s, 3600u);
  // The offer's endpoint defaults to the tunnel's (non-wildcard) listen address.
  ASSERT_EQ(c->endpoints.size(), 1u);
  EXPECT_EQ(c->endpoints[0].ToString(), "127.0.0.1:7443");
  EXPECT_EQ(c->grpc_listen.ToString(), "127.0.0.1:7601");
  EXPECT_EQ(c->http_listen.ToString(), "127.0.0.1:7602");
  EXPECT_EQ(c->settle_threshold.micro(), 1'000'000u);
  EXPECT_EQ(c->invoice_interval_bytes, 1'000'000u);
  EXPECT_EQ(c->promise_durability, payments::Durability::kProcessCrash);
  EXPECT_EQ(c->PromiseDbPath(), "./dvpn-node-data/promises.sqlite");
  EXPECT_EQ(c->StaticKeyPath(), "./dvpn-node-data/tunnel.key");
  EXPECT_FALSE(c->full_tunnel);
  EXPECT_EQ(c->tun_device, "dvpnx0");
  EXPECT_EQ(c->inner_ipv4.ToString(), "10.231.0.0/16");
  EXPECT_FALSE(c->inner_ipv6) << "derived from the tunnel key at start";
}

TEST(NodeConfig, EveryTableIsRead) {
  auto c = Parse(R"(
[node]
ledger = "ledger.example:7400"
keystore = "k.json"
passphrase_file = "/run/secrets/pass"
data_dir = "/var/lib/dvpn"
log_level = "debug"
[gossip]
listen = "[::]:7600"
advertise_port = 17600
bootstrap = ["10.0.0.1:7600", "seed.example:7600"]
round_ms = 500
anti_entropy_ms = 10000
[offer]
price_per_mb = 2
price_per_minute = "0.001"
region = "eu-west"
capacity_mbps = 250
max_sessions = 8
offer_id = 3
endpoints = ["203.0.113.7:7443", "vpn.example:443"]
lifetime_s = 600
[tunnel]
listen = "0.0.0.0:7443"
static_key_file = "/etc/dvpn/tunnel.key"
allow = ["0.0.0.0/0:443"]
deny = ["0.0.0.0/0:25"]
log_destinations = true
full_tunnel = true
tun_device = "exit7"
inner_ipv4 = "10.77.0.0/20"
inner_ipv6 = "fd31:4e7a:99::/64"
[limits]
bandwidth_mbps = 50
monthly_data_gb = 1000
max_pending_handshakes = 32
msg1_timeout_ms = 2000
[payments]
invoice_interval_bytes = 500000
credit_window_bytes = 4000000
payment_grace_ms = 2000
promise_durability = "power"
[settlement]
threshold = "0.5"
max_age_s = 60
shutdown_timeout_ms = 3000
shutdown_grace_ms = 1000
[control]
grpc_listen = "127.0.0.1:0"
http_listen = "[::1]:8080"
)");
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->passphrase_file, "/run/secrets/pass");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->gossip_listen.ToString(), "[::]:7600");
  EXPECT_EQ(c->advertise_port, 17600);
  ASSERT_EQ(c->bootstrap.size(), 2u);
  EXPECT_EQ(c->bootstrap[1].ToString(), "seed.example:7600");
  EXPECT_EQ(c->round.count(), 500);
  EXPECT_EQ(c->price_per_mb.micro(), 2'000'000u);
  EXPECT_EQ(c->price_per_minute.micro(), 1'000u);
  EXPECT_EQ(c->region, "eu-west");
  EXPECT_EQ(c->offer_id, 3u);
  ASSERT_EQ(c->endpoints.size(), 2u);
  EXPECT_EQ(c->allow, std::vector<std::string>{"0.0.0.0/0:443"});
  EXPECT_TRUE(c->log_destinations);
  EXPECT_TRUE(c->full_tunnel);
  EXPECT_EQ(c->tun_device, "exit7");
  EXPECT_EQ(c->inner_ipv4.ToString(), "10.77.0.0/20");
  ASSERT_TRUE(c->inner_ipv6);
  EXPECT_EQ(c->inner_ipv6->ToString(), "fd31:4e7a:99::/64");
  EXPECT_EQ(c->bandwidth_mbps, 50u);
  EXPECT_EQ(c->monthly_data_gb, 1000u);
  EXPECT_EQ(c->max_pending_handshakes, 32u);
  EXPECT_EQ(c->msg1_timeout_ms, 2000u);
  EXPECT_EQ(c->credit_window_bytes, 4'000'000u);
  EXPECT_EQ(c->promise_durability, payments::Durability::kPowerLoss);
  EXPECT_EQ(c->settle_threshold.micro(), 500'000u);
  EXPECT_EQ(c->shutdown_grace_ms, 1000u);
  EXPECT_EQ(c->http_listen.ToString(), "[::1]:8080");
  EXPECT_EQ(c->StaticKeyPath(), "/etc/dvpn/tunnel.key");
}

TEST(NodeConfig, OverridesReplaceFileValues) {
  auto c = Parse(kMinimal,
                 {"offer.price_per_mb=0.5", "offer.max_sessions=3", "tunnel.log_destinations=true",
                  "gossip.bootstrap=[\"127.0.0.1:9\"]", "node.data_dir=/tmp/x"});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->price_per_mb.micro(), 500'000u);
  EXPECT_EQ(c->max_sessions, 3u);
  EXPECT_TRUE(c->log_destinations);
  ASSERT_EQ(c->bootstrap.size(), 1u);
  EXPECT_EQ(c->data_dir, "/tmp/x");
  // An override may add a table the file does not have.
  auto d = Parse(kMinimal, {"limits.monthly_data_gb=7"});
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->monthly_data_gb, 7u);
}

TEST(NodeConfig, UnknownTableOrKeyIsNamedWithItsPosition) {
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "[offer2]\nx = 1\n"),
            "node.toml:11:1: unknown table [offer2] (known: node, gossip, offer, tunnel, limits, "
            "payments, settlement, control)");
  std::string typo = kMinimal;
  typo.replace(typo.find("price_per_mb"), 12, "price_per_MB");
  auto e = ErrorOf(typo);
  EXPECT_NE(e.find("node.toml:7:"), std::string::npos) << e;
  EXPECT_NE(e.find("offer.price_per_MB: unknown key"), std::string::npos) << e;
  EXPECT_NE(ErrorOf(kMinimal, {"offer.colour=red"}).find("unknown key offer.colour"),
            std::string::npos);
  EXPECT_NE(ErrorOf(kMinimal, {"price=1"}).find("expected TABLE.KEY=VALUE"), std::string::npos);
}

TEST(NodeConfig, BadValuesAreNamed) {
  struct Case {
    std::string override_;
    std::string expected;
  };
  const Case cases[] = {
      {"tunnel.listen=127.0.0.1:70000", "tunnel.listen: bad port in \"127.0.0.1:70000\""},
      {"tunnel.listen=localhost:7443", "tunnel.listen: \"localhost\" is not an IPv4 or IPv6"},
      {"node.ledger=127.0.0.1:0", "node.ledger: port 0"},
      {"node.ledger=127.0.0.1", "node.ledger: expected HOST:PORT"},
      {"gossip.bootstrap=[\"bad host!:1\"]", "gossip.bootstrap: host \"bad host!\""},
      {"offer.price_per_mb=abc", "offer.price_per_mb: not an amount of credits"},
      {"offer.price_per_mb=0.0000001", "offer.price_per_mb: not an amount of credits"},
      {"offer.price_per_mb=2000000", "offer.price_per_mb: at most 1000000 credits"},
      {"offer.region=EU", "offer.region: only a-z, 0-9 and '-'"},
      {"offer.max_sessions=0", "offer.max_sessions: 0 is out of range 1..1000000"},
      {"offer.capacity_mbps=yes", "offer.capacity_mbps: expected an integer"},
      {"offer.lifetime_s=10", "offer.lifetime_s: 10 is out of range 90..86400"},
      {"offer.endpoints=[\"a:1\",\"b:1\",\"c:1\",\"d:1\",\"e:1\"]",
       "offer.endpoints: at most 4 entries"},
      {"tunnel.log_destinations=1", "tunnel.log_destinations: expected true or false"},
      {"tunnel.full_tunnel=yes", "tunnel.full_tunnel: expected true or false"},
      {"tunnel.tun_device=tun 0", "tunnel.tun_device: expected 1 to 15 characters"},
      {"tunnel.tun_device=a-name-longer-than-15", "tunnel.tun_device: expected 1 to 15"},
      {"tunnel.inner_ipv4=fd00::/64", "tunnel.inner_ipv4: expected an IPv4 prefix"},
      {"tunnel.inner_ipv4=10.0.0.0/33", "tunnel.inner_ipv4: expected an IPv4 prefix"},
      {"tunnel.inner_ipv6=10.0.0.0/8", "tunnel.inner_ipv6: expected an IPv6 prefix"},
      {"tunnel.inner_ipv4=10.0.0.0/31", "tunnel.inner_ipv4 / tunnel.inner_ipv6: the pools"},
      {"payments.invoice_interval_bytes=100", "payments.invoice_interval_bytes: 100 is out of"},
      {"payments.promise_durability=disk", "payments.promise_durability: expected \"process\""},
      {"control.grpc_listen=0.0.0.0:7601", "control.grpc_listen: 0.0.0.0:7601 is not a loopback"},
      {"control.http_listen=10.0.0.1:80", "control.http_listen: 10.0.0.1:80 is not a loopback"},
      {"node.log_level=loud", "node.log_level: expected trace, debug"},
      {"limits.bandwidth_mbps=2000000", "limits.bandwidth_mbps: 2000000 is out of range"},
      {"limits.max_pending_handshakes=0", "limits.max_pending_handshakes: 0 is out of range"},
      {"limits.msg1_timeout_ms=99", "limits.msg1_timeout_ms: 99 is out of range 100..60000"},
  };
  for (const auto& c : cases) {
    auto e = ErrorOf(kMinimal, {c.override_});
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.override_ << " -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << "one line: " << e;
  }
}

TEST(NodeConfig, MoneyIsNeverAFloat) {
  std::string text = kMinimal;
  text.replace(text.find("\"0.25\""), 6, "0.25");
  auto e = ErrorOf(text);
  EXPECT_NE(e.find("node.toml:7:16: offer.price_per_mb: write the amount as a string"),
            std::string::npos)
      << e;
  // A negative integer is no amount either.
  text = kMinimal;
  text.replace(text.find("\"0.25\""), 6, "-1");
  EXPECT_NE(ErrorOf(text).find("offer.price_per_mb: expected an amount"), std::string::npos);
}

TEST(NodeConfig, RequiredKeysAndSyntaxErrors) {
  EXPECT_EQ(ErrorOf(""), "node.ledger: required (in [node])");
  EXPECT_EQ(ErrorOf("[node]\nledger = \"127.0.0.1:1\"\n"), "node.keystore: required (in [node])");
  auto e = ErrorOf("[node]\nledger = \"127.0.0.1:1\nkeystore = 1\n");
  EXPECT_EQ(e.rfind("node.toml:2:", 0), 0u) << e;  // the unterminated string's line
  EXPECT_NE(ErrorOf("[node]\nledger = 1\nledger = 2\n").find("node.toml:3:"), std::string::npos);
  // Not a table where one is expected.
  EXPECT_NE(ErrorOf("node = 3\n").find("node: expected a table [node]"), std::string::npos);
}

TEST(NodeConfig, WildcardTunnelNeedsExplicitEndpoints) {
  auto e = ErrorOf(kMinimal, {"tunnel.listen=0.0.0.0:7443"});
  EXPECT_NE(e.find("offer.endpoints: required when tunnel.listen is a wildcard"), std::string::npos)
      << e;
  auto c =
      Parse(kMinimal, {"tunnel.listen=0.0.0.0:7443", "offer.endpoints=[\"198.51.100.1:7443\"]"});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->endpoints[0].ToString(), "198.51.100.1:7443");
  // A specific address with port 0: the node advertises the port it binds (none known yet).
  auto any_port = Parse(kMinimal, {"tunnel.listen=127.0.0.1:0"});
  ASSERT_TRUE(any_port.has_value()) << any_port.error().message;
  EXPECT_TRUE(any_port->endpoints.empty());
}

TEST(NodeConfig, UnreadableOrHugeFile) {
  auto missing = LoadNodeConfig("/nonexistent/node.toml", {});
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::kIo);
  EXPECT_EQ(missing.error().message,
            "/nonexistent/node.toml: cannot read: No such file or directory");
}

}  // namespace
}  // namespace dvpn::node
