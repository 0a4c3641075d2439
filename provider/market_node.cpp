#include "provider/market_node.h"

#include <memory>

#include "cli/cli_util.h"
#include "cli/program.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/port_file.h"
#include "provider/offer_refresh.h"

namespace dvpn::node {

namespace {

namespace mp = marketplace;

// A refresh the node refused (e.g. the slot's refresh limit) is tried again this much later.
constexpr std::chrono::seconds kRetryRefresh{5};

std::string Describe(const mp::Offer& o) {
  std::string endpoints;
  for (const auto& e : o.endpoints) endpoints += (endpoints.empty() ? "" : ",") + e.ToString();
  return "offer " + std::to_string(o.offer_id) + " seq " + std::to_string(o.seq) + ": " +
         o.price_per_mb.ToString() + " per MB, " + o.price_per_minute.ToString() +
         " per minute, region " + (o.region.empty() ? "-" : o.region) + ", " +
         std::to_string(o.capacity_mbps) + " Mbit/s, " + std::to_string(o.max_sessions) +
         " sessions, endpoints " + endpoints +
         ((o.modes & mp::kModeFullTunnel) ? ", SOCKS and full tunnel (format 2)" : "") +
         ", expires in " +
         std::to_string(o.expires_unix - o.issued_unix) + " s";
}

}  // namespace

int RunMarketNode(MarketNodeSettings& s, const sigset_t& signals) {
  auto log = Logger("dvpn-node");

  mp::GossipTransport transport(s.gossip, s.transport);
  if (auto started = transport.Start(); !started) {
    return cli::Fail("dvpn-node", started.error().message);
  }
  if (auto written = WritePortFile(s.port_file, transport.port()); !written) {
    return cli::Fail("dvpn-node", "--port-file: " + written.error().message);
  }
  mp::rpc::TransportOfferFeed feed(transport);
  auto server = mp::rpc::OfferBookServer::Start(feed, s.gossip.network, s.grpc);
  if (!server) {
    return cli::Fail("dvpn-node", "--grpc-listen: " + server.error().message);
  }
  if (auto written = WritePortFile(s.grpc_port_file, (*server)->port()); !written) {
    return cli::Fail("dvpn-node", "--grpc-port-file: " + written.error().message);
  }
  log->info("node {} on network {}: gossip on {}:{}, OfferBook gRPC on {}, {} bootstrap peer(s)",
            ToHex(transport.node_id()), ToHex(s.gossip.network.bytes), s.transport.listen_address,
            transport.port(), (*server)->address(), s.gossip.bootstrap.size());

  std::optional<OfferAdvertiser> advertiser;
  if (s.offer) {
    advertiser.emplace(*s.offer, *s.key, GossipPublisher(transport));
    if (s.endpoint_source) advertiser->SetEndpointSource(std::move(*s.endpoint_source));
    auto first = advertiser->PublishLive(WallMs());
    if (!first) {
      return cli::Fail("dvpn-node", "the node refused our offer: " + first.error().message);
    }
    log->info("published {} (provider {})", Describe(*first),
              payments::Address::FromPublicKey(s.key->public_key()).ToString());
  }

  std::optional<RefreshSchedule> schedule;
  if (advertiser) schedule = RefreshSchedule{s.refresh, kRetryRefresh};
  const int sig = RefreshUntilSignal(signals, schedule, [&] {
    auto refreshed = advertiser->PublishLive(WallMs());
    if (refreshed) {
      log->info("published {}", Describe(*refreshed));
      return true;
    }
    log->warn("re-publishing the offer failed: {}; trying again in {} s", refreshed.error().message,
              kRetryRefresh.count());
    return false;
  });
  log->info("{} received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");

  if (advertiser) {
    auto retired = advertiser->Retire(WallMs());
    if (retired) {
      log->info("retired offer {} seq {}; gossiping for up to {} ms so the retirement spreads",
                retired->offer_id, retired->seq, s.retire_linger.count());
      // A second signal cuts the linger short.
      cli::WaitForSignal(signals, std::chrono::steady_clock::now() + s.retire_linger);
    } else {
      log->warn("retiring the offer failed: {}", retired.error().message);
    }
  }
  (*server)->Shutdown(std::chrono::milliseconds(2000));
  transport.Stop();
  log->info("stopped");
  return cli::kExitOk;
}

}  // namespace dvpn::node
