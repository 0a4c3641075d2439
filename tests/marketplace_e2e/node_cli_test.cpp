// dvpn-node's command line (docs/node-cli.md): bad configuration is refused with exit code 2 and
// a message naming the flag, never a crash; a runtime failure (the port is taken) exits 1; a
// node stops cleanly (exit 0) on SIGTERM and SIGINT. Also the provider's OfferAdvertiser: seq
// only grows, the retired version follows protocol.md §6.

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "provider/advertiser.h"
#include "provider/node_flags.h"
#include "tests/marketplace_e2e/node_harness.h"

namespace dvpn::marketplace_e2e {
namespace {

std::string LedgerHex() { return ToHex(TestNetwork().bytes); }

struct Outcome {
  std::optional<int> status;
  std::string output;
};

Outcome RunNode(const TempDir& dir, const std::vector<std::string>& args) {
  static int n = 0;
  const std::string log = dir.File("run" + std::to_string(++n) + ".log");
  std::vector<std::string> argv = {DVPN_NODE_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Subprocess::Spawn(argv, log);
  if (!p) return {};
  auto status = p->WaitFor(10s);
  if (!status) p->KillAndReap();
  return {status, ReadFile(log)};
}

// A provider's flags; an override replaces the flag's value (or adds the flag).
std::vector<std::string> Provider(const TempDir& dir, const std::vector<std::string>& overrides) {
  std::vector<std::pair<std::string, std::string>> flags = {
      {"--ledger-id", LedgerHex()},
      {"--price-per-mb", "0.1"},
      {"--identity-key-file",
       dvpn::testing::WriteSecretFile(dir.File("provider.key"), std::string(64, '3'))},
      {"--tunnel-key", std::string(64, 'a')}};
  for (size_t i = 0; i + 1 < overrides.size(); i += 2) {
    auto it = std::find_if(flags.begin(), flags.end(),
                           [&](const auto& f) { return f.first == overrides[i]; });
    if (it != flags.end() && overrides[i] != "--endpoint") {
      it->second = overrides[i + 1];
    } else {
      flags.emplace_back(overrides[i], overrides[i + 1]);
    }
  }
  std::vector<std::string> args;
  for (const auto& [flag, value] : flags) {
    args.push_back(flag);
    args.push_back(value);
  }
  return args;
}

TEST(NodeCli, BadConfigurationExitsWith2NamingTheProblem) {
  TempDir dir;
  ::setenv("DVPN_PASSPHRASE", "not the passphrase", 1);
  std::ofstream(dir.File("garbage.json")) << "{ not a keystore";
  dvpn::testing::WriteSecretFile(dir.File("open.key"), std::string(64, '3'));
  ::chmod(dir.File("open.key").c_str(), 0644);
  const std::string ok_endpoint = "127.0.0.1:7443";
  struct Case {
    std::vector<std::string> args;
    std::string expect;  // in the output
  };
  const std::vector<Case> cases = {
      {{"--ledger-id", LedgerHex(), "--bogus"}, "--bogus"},
      {{}, "--ledger-id"},
      {{"--ledger-id", "abc"}, "--ledger-id"},
      {{"--ledger-id", std::string(64, 'g')}, "--ledger-id"},
      {{"--ledger-id", LedgerHex(), "--gossip-listen", "localhost:0"}, "--gossip-listen"},
      {{"--ledger-id", LedgerHex(), "--gossip-listen", "127.0.0.1:70000"}, "--gossip-listen"},
      {{"--ledger-id", LedgerHex(), "--bootstrap", "nohost"}, "--bootstrap"},
      {{"--ledger-id", LedgerHex(), "--bootstrap", "h:0"}, "--bootstrap"},
      {{"--ledger-id", LedgerHex(), "--grpc-listen", "7000"}, "--grpc-listen"},
      {{"--ledger-id", LedgerHex(), "--round-ms", "0"}, "--round-ms"},
      {{"--ledger-id", LedgerHex(), "--log-level", "loud"}, "--log-level"},
      {{"--ledger-id", LedgerHex(), "--endpoint", ok_endpoint}, "--endpoint"},  // not a provider
      {{"--ledger-id", LedgerHex(), "--full-tunnel"}, "--full-tunnel needs --price-per-mb"},
      {Provider(dir, {"--endpoint", "nohost"}), "--endpoint"},
      {Provider(dir, {"--endpoint", "bad host!:80"}), "--endpoint"},
      {Provider(dir, {"--endpoint", "127.0.0.1:0"}), "--endpoint"},
      {Provider(dir, {}), "--endpoint"},  // none
      {Provider(dir, {"--endpoint", "a:1", "--endpoint", "b:1", "--endpoint", "c:1", "--endpoint", "d:1",
                 "--endpoint", "e:1"}),
       "--endpoint"},
      {{"--ledger-id", LedgerHex(), "--price-per-mb", "0.1", "--identity-key-file",
        dvpn::testing::WriteSecretFile(dir.File("provider.key"), std::string(64, '3')),
        "--endpoint", ok_endpoint},
       "--tunnel-key"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--tunnel-key", "zz"}), "--tunnel-key"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--price-per-mb", "lots"}), "--price-per-mb"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--region", "EU West"}), "--region"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--offer-lifetime-s", "100000"}), "--offer-lifetime-s"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--refresh-s", "5"}), "--refresh-s"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--refresh-s", "4000"}), "--refresh-s"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--identity-key-file",
                      dvpn::testing::WriteSecretFile(dir.File("short.key"), "00")}),
       "--identity-key-file"},
      // A secret on the command line is refused, naming what to use instead.
      {Provider(dir, {"--endpoint", ok_endpoint, "--identity-key-hex", std::string(64, '3')}),
       "--identity-key-file FILE"},
      // A key file others may read is refused with the fix.
      {Provider(dir, {"--endpoint", ok_endpoint, "--identity-key-file", dir.File("open.key")}),
       "chmod 600"},
      {Provider(dir, {"--endpoint", ok_endpoint, "--identity-key-file", dir.File("none.key")}),
       "--identity-key-file"},
      {{"--ledger-id", LedgerHex(), "--price-per-mb", "0.1", "--tunnel-key", std::string(64, 'a'),
        "--endpoint", ok_endpoint, "--keystore", dir.File("missing.json")},
       "--keystore"},
      {{"--ledger-id", LedgerHex(), "--price-per-mb", "0.1", "--tunnel-key", std::string(64, 'a'),
        "--endpoint", ok_endpoint, "--keystore", dir.File("garbage.json")},
       "--keystore"},
      {{"--ledger-id", LedgerHex(), "--price-per-mb", "0.1", "--tunnel-key", std::string(64, 'a'),
        "--endpoint", ok_endpoint, "--keystore", dir.path()},
       "--keystore"},
  };
  for (const auto& c : cases) {
    std::string shown;
    for (const auto& a : c.args) shown += a + " ";
    auto out = RunNode(dir, c.args);
    ASSERT_TRUE(out.status.has_value()) << shown << ": still running";
    EXPECT_TRUE(WIFEXITED(*out.status) && WEXITSTATUS(*out.status) == 2)
        << shown << ": status " << *out.status << "\n"
        << out.output;
    EXPECT_NE(out.output.find(c.expect), std::string::npos) << shown << "\n" << out.output;
  }
  ::unsetenv("DVPN_PASSPHRASE");
}

TEST(NodeCli, StopsCleanlyOnSigtermAndSigintAndExits1WhenThePortIsTaken) {
  TempDir dir;
  Network net(dir);
  Node* a = net.Start("a", {});
  ASSERT_NE(a, nullptr);
  Node* b = net.Start(
      "b", {a->gossip_port},
      {"--price-per-mb", "0.1", "--identity-key-file",
       dvpn::testing::WriteSecretFile(dir.File("b.key"), std::string(64, '3')), "--tunnel-key",
       std::string(64, 'a'), "--endpoint", "127.0.0.1:7443", "--retire-linger-ms", "0"});
  ASSERT_NE(b, nullptr);

  // The gossip port of `a` is taken: a runtime failure, exit 1.
  auto taken = RunNode(dir, {"--ledger-id", LedgerHex(), "--gossip-listen",
                             "127.0.0.1:" + std::to_string(a->gossip_port)});
  ASSERT_TRUE(taken.status);
  EXPECT_TRUE(WIFEXITED(*taken.status) && WEXITSTATUS(*taken.status) == 1) << taken.output;
  EXPECT_NE(taken.output.find("cannot listen"), std::string::npos) << taken.output;

  ASSERT_TRUE(b->proc->Signal(SIGINT));
  auto sb = b->proc->WaitFor(10s);
  ASSERT_TRUE(sb);
  EXPECT_TRUE(WIFEXITED(*sb) && WEXITSTATUS(*sb) == 0) << FileTail(b->log);
  auto sa = Network::Stop(*a);
  ASSERT_TRUE(sa);
  EXPECT_TRUE(WIFEXITED(*sa) && WEXITSTATUS(*sa) == 0) << FileTail(a->log);
  const std::string log = ReadFile(b->log);
  EXPECT_NE(log.find("published offer 1"), std::string::npos) << log;
  EXPECT_NE(log.find("retired offer 1"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

// ---------------------------------------------------------------------------------------------
// OfferAdvertiser

node::OfferTemplate Template() {
  node::OfferTemplate t;
  t.ledger = TestNetwork();
  t.offer_id = 7;
  t.tunnel_key.fill(0xa4);
  t.price_per_mb = Amount::FromMicro(250'000);
  t.capacity_mbps = 100;
  t.max_sessions = 8;
  t.region = "eu-west";
  t.endpoints = {marketplace::Endpoint{"127.0.0.1", 7443}};
  t.lifetime_s = 600;
  return t;
}

TEST(OfferAdvertiser, SeqOnlyGrowsAndTheRetiredVersionIsEmpty) {
  auto key = PrivateKey::Generate();
  std::vector<Offer> published;
  bool refuse = false;
  node::OfferAdvertiser ad(Template(), key,
                           [&](const Offer& o) -> Result<void, marketplace::Errc> {
                             if (refuse) return Fail(marketplace::Errc::kRefused, "slot too busy");
                             published.push_back(o);
                             return {};
                           });
  const uint64_t t0 = 1'900'000'000'000;  // ms
  auto first = ad.PublishLive(t0);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->seq, t0);
  EXPECT_EQ(first->issued_unix, t0 / 1000);
  EXPECT_EQ(first->expires_unix, t0 / 1000 + 600);
  EXPECT_TRUE(marketplace::CheckFields(*first));
  EXPECT_TRUE(marketplace::VerifyOfferSignature(*first, marketplace::OfferDigest(*first)));
  EXPECT_EQ(first->provider, key.public_key().bytes());

  // The same millisecond, or a clock that went back: still a larger seq.
  auto second = ad.PublishLive(t0);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->seq, t0 + 1);
  auto third = ad.PublishLive(t0 - 5000);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->seq, t0 + 2);

  // A refused version is not "last", but its seq is never reused.
  refuse = true;
  EXPECT_FALSE(ad.PublishLive(t0 + 10));
  EXPECT_EQ(ad.last()->seq, t0 + 2);
  refuse = false;

  auto retired = ad.Retire(t0 + 20);
  ASSERT_TRUE(retired);
  EXPECT_EQ(retired->seq, t0 + 20);
  EXPECT_TRUE(retired->retired);
  EXPECT_EQ(retired->offer_id, 7u);
  EXPECT_EQ(retired->tunnel_key, ByteArray<32>{});
  EXPECT_TRUE(retired->endpoints.empty());
  EXPECT_TRUE(retired->region.empty());
  EXPECT_EQ(retired->price_per_mb, Amount::Zero());
  EXPECT_GE(retired->expires_unix, first->expires_unix);
  EXPECT_TRUE(marketplace::CheckFields(*retired));
  EXPECT_TRUE(marketplace::VerifyOfferSignature(*retired, marketplace::OfferDigest(*retired)));
  EXPECT_EQ(published.size(), 4u);
}

// A seller that serves full tunnel signs format 2 with its modes; one that does not signs
// format 1 as before; the retired version is format 1 either way (protocol.md §6).
TEST(OfferAdvertiser, FullTunnelSignsFormat2AndRetiresInFormat1) {
  auto key = PrivateKey::Generate();
  auto publish = [](const Offer&) -> Result<void, marketplace::Errc> { return {}; };
  const uint64_t t0 = 1'900'000'000'000;  // ms

  node::OfferAdvertiser socks(Template(), key, publish);
  auto plain = socks.PublishLive(t0);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->format, 1);
  EXPECT_EQ(plain->modes, marketplace::kModeSocks);

  auto t = Template();
  t.modes = marketplace::kModeSocks | marketplace::kModeFullTunnel;
  EXPECT_TRUE(node::OfferAdvertiser::Check(t, key));
  node::OfferAdvertiser full(t, key, publish);
  auto live = full.PublishLive(t0);
  ASSERT_TRUE(live);
  EXPECT_EQ(live->format, 2);
  EXPECT_EQ(live->modes, marketplace::kModeSocks | marketplace::kModeFullTunnel);
  EXPECT_TRUE(marketplace::CheckFields(*live));
  EXPECT_TRUE(marketplace::VerifyOfferSignature(*live, marketplace::OfferDigest(*live)));
  auto retired = full.Retire(t0 + 10);
  ASSERT_TRUE(retired);
  EXPECT_EQ(retired->format, 1);
  EXPECT_EQ(retired->modes, marketplace::kModeSocks);
  EXPECT_TRUE(marketplace::CheckFields(*retired));
  EXPECT_TRUE(marketplace::VerifyOfferSignature(*retired, marketplace::OfferDigest(*retired)));

  t.modes = 0;
  EXPECT_FALSE(node::OfferAdvertiser::Check(t, key)) << "an offer serves some mode";
}

// dvpn-node --full-tunnel (provider mode) puts the full-tunnel bit in the offer's template.
TEST(MarketNodeFlags, FullTunnelAdvertisesTheMode) {
  TempDir dir;
  node::MarketNodeFlags f;
  f.ledger_id = LedgerHex();
  f.price_per_mb = "0.1";
  f.identity_key_file =
      dvpn::testing::WriteSecretFile(dir.File("provider.key"), std::string(64, '3'));
  f.tunnel_key = std::string(64, 'a');
  f.endpoints = {"127.0.0.1:7443"};
  auto s = node::ValidateMarketNodeFlags(f);
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_TRUE(s->offer);
  EXPECT_EQ(s->offer->modes, marketplace::kModeSocks);
  f.full_tunnel = true;
  s = node::ValidateMarketNodeFlags(f);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->offer->modes, marketplace::kModeSocks | marketplace::kModeFullTunnel);
}

TEST(OfferAdvertiser, CheckNamesTheBadField) {
  auto key = PrivateKey::Generate();
  EXPECT_TRUE(node::OfferAdvertiser::Check(Template(), key));
  auto t = Template();
  t.endpoints.clear();
  EXPECT_FALSE(node::OfferAdvertiser::Check(t, key));
  t = Template();
  t.tunnel_key = {};
  EXPECT_FALSE(node::OfferAdvertiser::Check(t, key));
}

}  // namespace
}  // namespace dvpn::marketplace_e2e
