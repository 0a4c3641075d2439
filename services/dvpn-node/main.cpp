// dvpn-node: a marketplace node (docs/marketplace.md). It gossips signed offers with its peers
// over TCP (GossipTransport), serves its offer book to local clients over gRPC
// (dvpn.v1.OfferBook), and, in provider mode (--price-per-mb), advertises the provider's own
// offer: published at start, re-published before it expires, retired at shutdown.
// Wiring only: flags -> settings -> transport -> gRPC server -> advertiser -> signal loop.
// Flags, examples and exit codes: docs/node-cli.md.
//
// Exit codes: 0 clean shutdown (SIGINT/SIGTERM); 2 refused to start (bad flag or value, key,
// offer fields); 1 runtime failure (cannot listen, cannot write a port file, the node refused
// our own offer).

#include <arpa/inet.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/amount.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/port_file.h"
#include "marketplace/gossip_transport.h"
#include "marketplace/offer.h"
#include "marketplace/rpc/offer_book_service.h"
#include "payments/keys.h"
#include "provider/advertiser.h"
#include "provider/config.h"
#include "provider/seller_node.h"
#include "cli/cli_util.h"
#include "cli/program.h"

namespace {

namespace mp = dvpn::marketplace;
using namespace std::chrono_literals;
using dvpn::cli::WaitForSignal;

using dvpn::cli::kExitRuntime;
using dvpn::cli::kExitConfig;
constexpr std::chrono::milliseconds kPublishTimeout{5000};
// A refresh the node refused (e.g. the slot's refresh limit) is tried again this much later.
constexpr std::chrono::seconds kRetryRefresh{5};
// The network keeps at most 3 versions of a slot per minute (docs/marketplace.md §1, check 6):
// refreshing at most every 30 s leaves room in any minute for the retired version.
constexpr uint64_t kMinRefreshS = 30;
constexpr uint64_t kMinLifetimeS = 90;  // so that lifetime/3 >= kMinRefreshS

// The flags as typed.
struct Flags {
  std::string ledger_id;
  std::string gossip_listen = "127.0.0.1:0";
  uint32_t advertise_port = 0;
  std::vector<std::string> bootstrap;
  std::string grpc_listen = "127.0.0.1:0";
  std::string port_file;
  std::string grpc_port_file;
  std::string log_level = "info";
  std::optional<uint64_t> seed;
  uint32_t round_ms = 1000;
  uint32_t anti_entropy_ms = 30000;
  uint32_t hello_timeout_ms = 5000;
  // Provider mode.
  std::string price_per_mb;
  std::string price_per_minute;
  std::string keystore;
  std::string identity_key_hex;  // refused: see kIdentityKeyHexRemoved
  std::string identity_key_file;
  std::string tunnel_key;
  std::vector<std::string> endpoints;
  std::string region;
  uint32_t capacity_mbps = 100;
  uint32_t max_sessions = 64;
  uint32_t offer_id = 1;
  uint64_t offer_lifetime_s = 3600;
  std::optional<uint64_t> refresh_s;
  uint32_t retire_linger_ms = 2000;
};

// What the node runs with, every value checked.
struct Settings {
  mp::GossipConfig gossip;
  mp::GossipTransportOptions transport;
  mp::rpc::OfferBookServerOptions grpc;
  std::string port_file;
  std::string grpc_port_file;
  // Provider mode only.
  std::optional<dvpn::node::OfferTemplate> offer;
  std::optional<dvpn::node::OfferAdvertiser::EndpointSource> endpoint_source;  // names given
  std::optional<dvpn::payments::PrivateKey> key;
  std::chrono::seconds refresh{0};
  std::chrono::milliseconds retire_linger{0};
};

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-node", message); }

using dvpn::marketplace::CheckRegion;
using dvpn::marketplace::ParseEndpoint;
using dvpn::ParseHostPort;
using dvpn::ParseListenAddress;
using dvpn::marketplace::ParsePrice;

std::optional<dvpn::ByteArray<32>> Hex32(const std::string& text) {
  auto bytes = dvpn::FromHex(text);
  if (!bytes || bytes->size() != 32) return std::nullopt;
  return dvpn::ToArray<32>(*bytes);
}

void AddFlags(CLI::App& app, Flags& f) {
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
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.add_option("--seed", f.seed, "seed of the node's random choices (default: random)");
  app.add_option("--round-ms", f.round_ms, "gossip round (10..60000)")
      ->capture_default_str()
      ->check(CLI::Range(10u, 60000u));
  app.add_option("--anti-entropy-ms", f.anti_entropy_ms,
                 "digest exchange with one random peer every this often (100..3600000)")
      ->capture_default_str()
      ->check(CLI::Range(100u, 3600000u));
  app.add_option("--hello-timeout-ms", f.hello_timeout_ms,
                 "a connection without a Hello this long is closed (100..60000)")
      ->capture_default_str()
      ->check(CLI::Range(100u, 60000u));

  // Provider mode.
  app.add_option("--price-per-mb", f.price_per_mb,
                 "price per 10^6 metered bytes in credits (decimal, e.g. 0.25); enables provider "
                 "mode: the node advertises this offer");
  app.add_option("--price-per-minute", f.price_per_minute,
                 "price per minute of session in credits (decimal; default 0)");
  app.add_option("--keystore", f.keystore,
                 "provider account keystore (passphrase from $DVPN_PASSPHRASE)");
  app.add_option("--identity-key-hex", f.identity_key_hex,
                 "refused: a secret on the command line is readable by every local user");
  app.add_option("--identity-key-file", f.identity_key_file,
                 "file holding the provider account secret key, 64 hex digits, mode 0600 "
                 "(instead of --keystore; or $DVPN_IDENTITY_KEY_HEX)");
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
  app.add_option("--offer-lifetime-s", f.offer_lifetime_s,
                 "each version of the offer expires this long after it is signed (90..86400)")
      ->capture_default_str()
      ->check(CLI::Range(kMinLifetimeS, mp::kMaxOfferLifetimeS));
  app.add_option("--refresh-s", f.refresh_s,
                 "re-publish every this many seconds (30..lifetime-1; default: lifetime/3)");
  app.add_option("--retire-linger-ms", f.retire_linger_ms,
                 "at shutdown, keep gossiping this long after retiring the offer (0..60000)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 60000u));
  app.footer(
      "Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 refused to start (bad flag, key or "
      "offer), 1 runtime failure (cannot listen, port file, offer refused by the node).");
}

// Checks every flag and builds the settings; loads the provider key. The error names the flag.
std::expected<Settings, std::string> Validate(const Flags& f) {
  if (!f.identity_key_hex.empty()) {
    return std::unexpected(std::string(dvpn::cli::kIdentityKeyHexRemoved));
  }
  Settings s;
  auto network = Hex32(f.ledger_id);
  if (!network) return std::unexpected("--ledger-id: expected 64 hex digits (the ledger id)");
  s.gossip.network.bytes = *network;

  auto listen = ParseListenAddress(f.gossip_listen);
  if (!listen) return std::unexpected("--gossip-listen: " + listen.error().message);
  s.transport.listen_address = listen->host;
  s.transport.listen_port = static_cast<uint16_t>(listen->port);
  s.gossip.listen_port = static_cast<uint16_t>(f.advertise_port);
  for (const auto& b : f.bootstrap) {
    auto e = ParseEndpoint(b);
    if (!e) return std::unexpected("--bootstrap: " + e.error().message);
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
  if (!grpc) return std::unexpected("--grpc-listen: " + grpc.error().message);
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
    };
    for (const auto& [given, name] : provider_only) {
      if (given)
        return std::unexpected(std::string(name) + " needs --price-per-mb (provider mode)");
    }
    return s;
  }

  dvpn::node::OfferTemplate t;
  t.ledger = s.gossip.network;
  auto price = ParsePrice(f.price_per_mb);
  if (!price) return std::unexpected("--price-per-mb: " + price.error().message);
  t.price_per_mb = *price;
  if (!f.price_per_minute.empty()) {
    auto per_minute = ParsePrice(f.price_per_minute);
    if (!per_minute) return std::unexpected("--price-per-minute: " + per_minute.error().message);
    t.price_per_minute = *per_minute;
  }
  if (f.tunnel_key.empty()) return std::unexpected("--tunnel-key is required with --price-per-mb");
  auto tunnel_key = Hex32(f.tunnel_key);
  if (!tunnel_key || *tunnel_key == dvpn::ByteArray<32>{}) {
    return std::unexpected("--tunnel-key: expected 64 hex digits (an X25519 public key, not zero)");
  }
  t.tunnel_key = *tunnel_key;
  if (f.endpoints.empty() || f.endpoints.size() > mp::kMaxEndpoints) {
    return std::unexpected("--endpoint: give 1 to " + std::to_string(mp::kMaxEndpoints) +
                           " (where clients reach the tunnel)");
  }
  for (const auto& text : f.endpoints) {
    auto e = ParseEndpoint(text);
    if (!e) return std::unexpected("--endpoint: " + e.error().message);
    t.endpoints.push_back(*e);
  }
  // Names become addresses here and before each refresh (endpoints.h). The exit is another
  // process here: only "localhost" and loopback literals may advertise loopback.
  {
    auto resolved = dvpn::node::ResolveEndpoints(t.endpoints, false, dvpn::node::SystemLookup());
    if (!resolved) return std::unexpected("--endpoint " + resolved.error().message);
    if (dvpn::node::HasNames(t.endpoints)) {
      s.endpoint_source =
          dvpn::node::OfferAdvertiser::EndpointSource{t.endpoints, false, dvpn::node::SystemLookup()};
    }
    t.endpoints = std::move(*resolved);
  }
  if (auto ok = CheckRegion(f.region); !ok) {
    return std::unexpected("--region: " + ok.error().message);
  }
  t.region = f.region;
  t.capacity_mbps = f.capacity_mbps;
  t.max_sessions = f.max_sessions;
  t.offer_id = f.offer_id;
  t.lifetime_s = f.offer_lifetime_s;
  const uint64_t refresh = f.refresh_s.value_or(f.offer_lifetime_s / 3);
  if (refresh < kMinRefreshS || refresh >= f.offer_lifetime_s) {
    return std::unexpected("--refresh-s: expected " + std::to_string(kMinRefreshS) + ".." +
                           std::to_string(f.offer_lifetime_s - 1) +
                           " (below the lifetime; peers take at most 3 versions of an offer a "
                           "minute)");
  }
  s.refresh = std::chrono::seconds(refresh);
  s.retire_linger = std::chrono::milliseconds(f.retire_linger_ms);

  auto key = dvpn::cli::LoadAccountKey(f.identity_key_file, f.keystore);
  if (!key) return std::unexpected(key.error().message);
  if (auto ok = dvpn::node::OfferAdvertiser::Check(t, *key); !ok) {
    return std::unexpected("the offer is invalid: " + ok.error().message);
  }
  s.key = std::move(*key);
  s.offer = std::move(t);
  return s;
}

uint64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}


std::string Describe(const mp::Offer& o) {
  std::string endpoints;
  for (const auto& e : o.endpoints) endpoints += (endpoints.empty() ? "" : ",") + e.ToString();
  return "offer " + std::to_string(o.offer_id) + " seq " + std::to_string(o.seq) + ": " +
         o.price_per_mb.ToString() + " per MB, " + o.price_per_minute.ToString() +
         " per minute, region " + (o.region.empty() ? "-" : o.region) + ", " +
         std::to_string(o.capacity_mbps) + " Mbit/s, " + std::to_string(o.max_sessions) +
         " sessions, endpoints " + endpoints + ", expires in " +
         std::to_string(o.expires_unix - o.issued_unix) + " s";
}

int Run(Settings& s, const sigset_t& signals) {
  auto log = dvpn::Logger("dvpn-node");

  mp::GossipTransport transport(s.gossip, s.transport);
  if (auto started = transport.Start(); !started) {
    std::cerr << "dvpn-node: " << started.error().message << "\n";
    return kExitRuntime;
  }
  if (auto written = dvpn::WritePortFile(s.port_file, transport.port()); !written) {
    std::cerr << "dvpn-node: --port-file: " << written.error().message << "\n";
    return kExitRuntime;
  }
  mp::rpc::TransportOfferFeed feed(transport);
  auto server = mp::rpc::OfferBookServer::Start(feed, s.gossip.network, s.grpc);
  if (!server) {
    std::cerr << "dvpn-node: --grpc-listen: " << server.error().message << "\n";
    return kExitRuntime;
  }
  if (auto written = dvpn::WritePortFile(s.grpc_port_file, (*server)->port()); !written) {
    std::cerr << "dvpn-node: --grpc-port-file: " << written.error().message << "\n";
    return kExitRuntime;
  }
  log->info("node {} on network {}: gossip on {}:{}, OfferBook gRPC on {}, {} bootstrap peer(s)",
            dvpn::ToHex(transport.node_id()), dvpn::ToHex(s.gossip.network.bytes),
            s.transport.listen_address, transport.port(), (*server)->address(),
            s.gossip.bootstrap.size());

  std::optional<dvpn::node::OfferAdvertiser> advertiser;
  auto next_refresh = std::chrono::steady_clock::time_point::max();
  if (s.offer) {
    advertiser.emplace(*s.offer, *s.key, [&transport](const mp::Offer& o) {
      auto published = transport.Publish(o);
      if (published.wait_for(kPublishTimeout) != std::future_status::ready) {
        return dvpn::Result<void, mp::Errc>(
            dvpn::Fail(mp::Errc::kTransport, "the gossip node did not answer in time"));
      }
      return published.get();
    });
    if (s.endpoint_source) advertiser->SetEndpointSource(std::move(*s.endpoint_source));
    auto first = advertiser->PublishLive(WallMs());
    if (!first) {
      std::cerr << "dvpn-node: the node refused our offer: " << first.error().message << "\n";
      return kExitRuntime;
    }
    log->info("published {} (provider {})", Describe(*first),
              dvpn::payments::Address::FromPublicKey(s.key->public_key()).ToString());
    next_refresh = std::chrono::steady_clock::now() + s.refresh;
  }

  int sig = 0;
  while (sig == 0) {
    sig = WaitForSignal(signals, next_refresh);
    if (sig != 0 || !advertiser) continue;
    auto refreshed = advertiser->PublishLive(WallMs());
    if (refreshed) {
      log->info("published {}", Describe(*refreshed));
      next_refresh = std::chrono::steady_clock::now() + s.refresh;
    } else {
      log->warn("re-publishing the offer failed: {}; trying again in {} s",
                refreshed.error().message, kRetryRefresh.count());
      next_refresh = std::chrono::steady_clock::now() + kRetryRefresh;
    }
  }
  log->info("{} received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");

  if (advertiser) {
    auto retired = advertiser->Retire(WallMs());
    if (retired) {
      log->info("retired offer {} seq {}; gossiping for up to {} ms so the retirement spreads",
                retired->offer_id, retired->seq, s.retire_linger.count());
      // A second signal cuts the linger short.
      WaitForSignal(signals, std::chrono::steady_clock::now() + s.retire_linger);
    } else {
      log->warn("retiring the offer failed: {}", retired.error().message);
    }
  }
  (*server)->Shutdown(std::chrono::milliseconds(2000));
  transport.Stop();
  log->info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{
      "dvpn-node: a dVPN provider's daemon (--config: tunnel exit, payments, settlement, offer, "
      "control service and dashboard) or a marketplace node (flags: gossip of signed offers, "
      "gRPC OfferBook)"};
  std::string config_path;
  std::vector<std::string> overrides;
  std::string ports_file;
  app.add_option("--config", config_path,
                 "seller mode: the node's TOML file (docs/node.md); the flags below are then "
                 "refused except --set and --ports-file");
  app.add_option("--set", overrides,
                 "seller mode: override a file key, TABLE.KEY=VALUE (repeatable), e.g. "
                 "--set offer.price_per_mb=0.3");
  app.add_option("--ports-file", ports_file,
                 "seller mode: write the bound ports (gossip, tunnel, control, http) to this file");
  app.set_version_flag("--version", "dvpn-node " DVPN_VERSION);
  AddFlags(app, flags);
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;

  // Block the shutdown signals before any thread starts, so every thread inherits the mask and
  // only the main thread's sigtimedwait receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);

  if (!config_path.empty()) {
    for (const CLI::Option* o : app.get_options()) {
      const std::string name = o->get_name();
      if (o->count() > 0 && name != "--config" && name != "--set" && name != "--ports-file") {
        return Refuse(name + " cannot be combined with --config (write it in the file, or use "
                             "--set TABLE.KEY=VALUE)");
      }
    }
    auto config = dvpn::node::LoadNodeConfig(config_path, overrides);
    if (!config) return Refuse(config.error().message);
    (void)dvpn::cli::StartLogging(config->log_level);  // the config checked the level
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    try {
      return dvpn::node::RunSellerNode(*config, {.ports_file = ports_file}, signals);
    } catch (const std::exception& e) {
      std::cerr << "dvpn-node: " << e.what() << "\n";
      return kExitRuntime;
    }
  }
  if (!overrides.empty() || !ports_file.empty()) {
    return Refuse("--set and --ports-file need --config (seller mode)");
  }
  if (flags.ledger_id.empty()) return Refuse("--ledger-id is required (or give --config)");
  if (auto e = dvpn::cli::StartLogging(flags.log_level)) return Refuse(*e);
  auto settings = Validate(flags);
  if (!settings) return Refuse(settings.error());
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    return Run(*settings, signals);
  } catch (const std::exception& e) {
    std::cerr << "dvpn-node: " << e.what() << "\n";
    return kExitRuntime;
  }
}
