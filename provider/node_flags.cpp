#include "provider/node_flags.h"

#include <random>

#include "cli/cli_util.h"
#include "cli/flags.h"
#include "common/bytes.h"
#include "common/host_port.h"
#include "marketplace/offer.h"
#include "provider/endpoints.h"

namespace dvpn::node {

namespace {

namespace mp = marketplace;

// The network keeps at most 3 versions of a slot per minute (docs/marketplace.md §1, check 6):
// refreshing at most every 30 s leaves room in any minute for the retired version.
constexpr uint64_t kMinRefreshS = 30;
constexpr uint64_t kMinLifetimeS = 90;  // so that lifetime/3 >= kMinRefreshS

std::optional<ByteArray<32>> Hex32(const std::string& text) {
  auto bytes = FromHex(text);
  if (!bytes || bytes->size() != 32) return std::nullopt;
  return ToArray<32>(*bytes);
}

// Provider mode (--price-per-mb given): the offer template, its refresh and the account key.
Result<void, Errc> AddProviderMode(const MarketNodeFlags& f, MarketNodeSettings& s) {
  OfferTemplate t;
  t.ledger = s.gossip.network;
  auto price = mp::ParsePrice(f.price_per_mb);
  if (!price) return Fail(Errc::kBadConfig, "--price-per-mb: " + price.error().message);
  t.price_per_mb = *price;
  if (!f.price_per_minute.empty()) {
    auto per_minute = mp::ParsePrice(f.price_per_minute);
    if (!per_minute)
      return Fail(Errc::kBadConfig, "--price-per-minute: " + per_minute.error().message);
    t.price_per_minute = *per_minute;
  }
  if (f.tunnel_key.empty())
    return Fail(Errc::kBadConfig, "--tunnel-key is required with --price-per-mb");
  auto tunnel_key = Hex32(f.tunnel_key);
  if (!tunnel_key || *tunnel_key == ByteArray<32>{}) {
    return Fail(Errc::kBadConfig,
                "--tunnel-key: expected 64 hex digits (an X25519 public key, not zero)");
  }
  t.tunnel_key = *tunnel_key;
  if (f.endpoints.empty() || f.endpoints.size() > mp::kMaxEndpoints) {
    return Fail(Errc::kBadConfig, "--endpoint: give 1 to " + std::to_string(mp::kMaxEndpoints) +
                                      " (where clients reach the tunnel)");
  }
  for (const auto& text : f.endpoints) {
    auto e = mp::ParseEndpoint(text);
    if (!e) return Fail(Errc::kBadConfig, "--endpoint: " + e.error().message);
    t.endpoints.push_back(*e);
  }
  // Names become addresses here and before each refresh (endpoints.h). The exit is another
  // process here: only "localhost" and loopback literals may advertise loopback.
  {
    auto resolved = ResolveEndpoints(t.endpoints, false, SystemLookup());
    if (!resolved) return Fail(Errc::kBadConfig, "--endpoint " + resolved.error().message);
    if (HasNames(t.endpoints)) {
      s.endpoint_source = OfferAdvertiser::EndpointSource{t.endpoints, false, SystemLookup()};
    }
    t.endpoints = std::move(*resolved);
  }
  if (auto ok = mp::CheckRegion(f.region); !ok)
    return Fail(Errc::kBadConfig, "--region: " + ok.error().message);
  t.region = f.region;
  t.capacity_mbps = f.capacity_mbps;
  t.max_sessions = f.max_sessions;
  t.offer_id = f.offer_id;
  t.lifetime_s = f.offer_lifetime_s;
  if (f.full_tunnel) t.modes |= mp::kModeFullTunnel;
  const uint64_t refresh = f.refresh_s.value_or(f.offer_lifetime_s / 3);
  if (refresh < kMinRefreshS || refresh >= f.offer_lifetime_s) {
    return Fail(Errc::kBadConfig,
                "--refresh-s: expected " + std::to_string(kMinRefreshS) + ".." +
                    std::to_string(f.offer_lifetime_s - 1) +
                    " (below the lifetime; peers take at most 3 versions of an offer a "
                    "minute)");
  }
  s.refresh = std::chrono::seconds(refresh);
  s.retire_linger = std::chrono::milliseconds(f.retire_linger_ms);

  auto key = cli::LoadAccountKey(f.identity_key_file, f.keystore);
  if (!key) return Fail(Errc::kBadConfig, key.error().message);
  if (auto ok = OfferAdvertiser::Check(t, *key); !ok) {
    return Fail(Errc::kOfferRefused, "the offer is invalid: " + ok.error().message);
  }
  s.key = std::move(*key);
  s.offer = std::move(t);
  return {};
}

}  // namespace

void AddMarketNodeFlags(CLI::App& app, MarketNodeFlags& f) {
  app.add_option("--ledger-id", f.ledger_id,
                 "the network: the id of the ledger this node trades on, 64 hex digits "
                 "(required without --config)");
  app.add_option("--gossip-listen", f.gossip_listen,
                 "IP:PORT to accept gossip connections on (an IPv4 or IPv6 literal; port 0: any "
                 "free port)")
      ->capture_default_str();
  app.add_option("--advertise-port", f.advertise_port,
                 "gossip port announced to peers (default: the bound one; e.g. behind a port "
                 "forward)")
      ->check(CLI::Range(1u, 65535u));
  app.add_option("--bootstrap", f.bootstrap,
                 "HOST:PORT of a gossip peer to start from (repeatable)");
  app.add_option("--grpc-listen", f.grpc_listen,
                 "HOST:PORT for the OfferBook gRPC service (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--port-file", f.port_file, "write the bound gossip port to this file");
  app.add_option("--grpc-port-file", f.grpc_port_file, "write the bound gRPC port to this file");
  cli::AddLogLevel(app, f.log_level);
  app.add_option("--seed", f.seed, "seed of the node's random choices (default: random)");
  cli::AddBounded(app, "--round-ms", f.round_ms, "gossip round (10..60000)", 10, 60000);
  cli::AddBounded(app, "--anti-entropy-ms", f.anti_entropy_ms,
                  "digest exchange with one random peer every this often (100..3600000)", 100,
                  3600000);
  cli::AddBounded(app, "--hello-timeout-ms", f.hello_timeout_ms,
                  "a connection without a Hello this long is closed (100..60000)", 100, 60000);

  // Provider mode.
  app.add_option("--price-per-mb", f.price_per_mb,
                 "price per 10^6 metered bytes in credits (decimal, e.g. 0.25); enables provider "
                 "mode: the node advertises this offer");
  app.add_option("--price-per-minute", f.price_per_minute,
                 "price per minute of session in credits (decimal; default 0)");
  cli::AddAccountKeyFlags(app, f.identity_key_hex, f.identity_key_file, f.keystore,
                          "provider account", "");
  app.add_option("--tunnel-key", f.tunnel_key,
                 "the tunnel's static X25519 public key, 64 hex digits "
                 "(dvpn-tunnel-exit --print-public-key)");
  app.add_option("--endpoint", f.endpoints,
                 "HOST:PORT where clients reach the tunnel (repeatable, 1 to 4)");
  app.add_option("--region", f.region, "self-declared region, e.g. eu-west (a-z, 0-9, '-')");
  app.add_option("--capacity-mbps", f.capacity_mbps, "advertised capacity, Mbit/s")
      ->capture_default_str();
  app.add_option("--max-sessions", f.max_sessions, "sessions accepted at once")
      ->capture_default_str();
  app.add_option("--offer-id", f.offer_id, "the provider's slot number for this offer")
      ->capture_default_str();
  cli::AddBounded(app, "--offer-lifetime-s", f.offer_lifetime_s,
                  "each version of the offer expires this long after it is signed (90..86400)",
                  kMinLifetimeS, mp::kMaxOfferLifetimeS);
  app.add_option("--refresh-s", f.refresh_s,
                 "re-publish every this many seconds (30..lifetime-1; default: lifetime/3)");
  app.add_flag("--full-tunnel", f.full_tunnel,
               "advertise full-tunnel mode besides SOCKS (offer format 2: nodes of older "
               "releases do not pass it on); the exit must serve it");
  cli::AddBounded(app, "--retire-linger-ms", f.retire_linger_ms,
                  "at shutdown, keep gossiping this long after retiring the offer (0..60000)", 0,
                  60000);
  app.footer(
      "Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 refused to start (bad flag, key or "
      "offer), 1 runtime failure (cannot listen, port file, offer refused by the node).");
}

Result<MarketNodeSettings, Errc> ValidateMarketNodeFlags(const MarketNodeFlags& f) {
  if (!f.identity_key_hex.empty()) {
    return Fail(Errc::kBadConfig, std::string(cli::kIdentityKeyHexRemoved));
  }
  MarketNodeSettings s;
  auto network = Hex32(f.ledger_id);
  if (!network)
    return Fail(Errc::kBadConfig, "--ledger-id: expected 64 hex digits (the ledger id)");
  s.gossip.network.bytes = *network;

  auto listen = ParseListenAddress(f.gossip_listen);
  if (!listen) return Fail(Errc::kBadConfig, "--gossip-listen: " + listen.error().message);
  s.transport.listen_address = listen->host;
  s.transport.listen_port = static_cast<uint16_t>(listen->port);
  s.gossip.listen_port = static_cast<uint16_t>(f.advertise_port);
  for (const auto& b : f.bootstrap) {
    auto e = mp::ParseEndpoint(b);
    if (!e) return Fail(Errc::kBadConfig, "--bootstrap: " + e.error().message);
    s.gossip.bootstrap.push_back(*e);
  }
  if (f.seed) {
    s.gossip.seed = *f.seed;
  } else {
    std::random_device rd;
    s.gossip.seed = (uint64_t{rd()} << 32) | rd();
  }
  s.gossip.round = std::chrono::milliseconds(f.round_ms);
  s.gossip.anti_entropy = std::chrono::milliseconds(f.anti_entropy_ms);
  s.gossip.hello_timeout = std::chrono::milliseconds(f.hello_timeout_ms);

  auto grpc = ParseHostPort(f.grpc_listen, true);
  if (!grpc) return Fail(Errc::kBadConfig, "--grpc-listen: " + grpc.error().message);
  s.grpc.listen_address = f.grpc_listen;
  s.port_file = f.port_file;
  s.grpc_port_file = f.grpc_port_file;

  const bool provider = !f.price_per_mb.empty();
  if (!provider) {
    const std::pair<bool, const char*> provider_only[] = {
        {!f.price_per_minute.empty(), "--price-per-minute"},
        {!f.keystore.empty(), "--keystore"},
        {!f.identity_key_file.empty(), "--identity-key-file"},
        {!f.tunnel_key.empty(), "--tunnel-key"},
        {!f.endpoints.empty(), "--endpoint"},
        {!f.region.empty(), "--region"},
        {f.refresh_s.has_value(), "--refresh-s"},
        {f.full_tunnel, "--full-tunnel"},
    };
    for (const auto& [given, name] : provider_only) {
      if (given)
        return Fail(Errc::kBadConfig, std::string(name) + " needs --price-per-mb (provider mode)");
    }
    return s;
  }

  if (auto ok = AddProviderMode(f, s); !ok) return std::unexpected(ok.error());
  return s;
}

}  // namespace dvpn::node
