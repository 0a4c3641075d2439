#include "provider/seller_node.h"

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "cli/cli_util.h"
#include "common/log.h"
#include "common/port_file.h"
#include "common/private_file.h"
#include "marketplace/gossip_transport.h"
#include "marketplace/rpc/offer_book_service.h"
#include "marketplace/wire.h"
#include "payments/keystore.h"
#include "provider/advertiser.h"
#include "provider/dashboard.h"
#include "provider/node_control.h"
#include "provider/offer_refresh.h"
#include "provider/seller.h"
#include "settlement/ledger_gateway_rpc.h"

namespace dvpn::node {
namespace {

namespace mp = marketplace;
using namespace std::chrono_literals;
using cli::WaitForSignal;

constexpr std::chrono::seconds kLedgerTimeout{10};
constexpr std::chrono::milliseconds kRetireLinger{1000};
constexpr size_t kMaxChannelsShown = 1000;

int Fail(int code, const std::string& message) {
  std::cerr << "dvpn-node: " << message << "\n";
  return code;
}

// The provider's account key from the keystore; the passphrase from passphrase_file or
// $DVPN_PASSPHRASE. Errors name the key and say what is wrong (the passphrase never appears).
Result<payments::PrivateKey, cli::Errc> LoadProviderKey(const NodeConfig& c) {
  return cli::LoadKeystoreWithPassphrase(c.keystore, c.passphrase_file, "node.keystore",
                                         "node.passphrase_file",
                                         "set node.passphrase_file or $DVPN_PASSPHRASE");
}

// The running node: every part, and the NodeControl answers built from them.
class SellerNode final : public NodeBackend {
 public:
  SellerNode(const NodeConfig& config, payments::PrivateKey key, payments::LedgerId ledger)
      : config_(config),
        key_(std::move(key)),
        ledger_(ledger),
        provider_(payments::Address::FromPublicKey(key_.public_key()).ToString()),
        started_(std::chrono::steady_clock::now()) {}

  int Run(const SellerRunOptions& options, const sigset_t& signals,
          const tunnel::X25519KeyPair& tunnel_key, payments::LedgerGateway& gateway);

  v1::GetStatusResponse Status() override;
  v1::ListSessionsResponse Sessions() override;
  v1::GetEarningsResponse Earnings() override;
  v1::SettleNowResponse SettleNow(std::chrono::milliseconds timeout) override;
  Result<v1::Offer, Errc> SetPrice(const payments::Price& price) override;

 private:
  // Publishes a fresh live version (or, over the data cap, keeps the offer retired).
  void Refresh();
  void OnCap(bool over_cap);

  // The servers that answer the operator; they borrow the node, so they stop before it does.
  struct ControlServers {
    ControlServers(NodeBackend& node, mp::GossipTransport& transport)
        : control(node), feed(transport) {}
    NodeControlService control;
    mp::rpc::TransportOfferFeed feed;
    std::unique_ptr<mp::rpc::OfferBookServer> grpc;
    std::unique_ptr<DashboardServer> dashboard;
    void Stop();
  };
  // The steps of Run. Each returns kExitOk or, having said why on stderr, the exit code; Run
  // shuts down what the earlier steps started.
  int StartGossip();
  int StartAdvertising(const ByteArray<32>& tunnel_public_key);
  int StartControl(ControlServers& servers, const std::string& ports_file);

  const NodeConfig config_;
  const payments::PrivateKey key_;
  const payments::LedgerId ledger_;
  const std::string provider_;
  const std::chrono::steady_clock::time_point started_;
  std::shared_ptr<spdlog::logger> log_ = Logger("dvpn-node");

  std::unique_ptr<mp::GossipTransport> transport_;
  std::unique_ptr<Seller> seller_;
  std::mutex advertiser_mu_;  // guards advertiser_, over_cap_ (main, gRPC and sampler threads)
  std::optional<OfferAdvertiser> advertiser_;
  bool over_cap_ = false;
};

void SellerNode::Refresh() {
  std::lock_guard lock(advertiser_mu_);
  if (over_cap_) return;
  auto published = advertiser_->PublishLive(WallMs());
  if (!published) log_->warn("re-publishing the offer failed: {}", published.error().message);
}

void SellerNode::OnCap(bool over_cap) {
  std::lock_guard lock(advertiser_mu_);
  over_cap_ = over_cap;
  if (!advertiser_) return;  // not advertising yet: Run publishes or not by over_cap_
  auto published = over_cap ? advertiser_->Retire(WallMs()) : advertiser_->PublishLive(WallMs());
  if (!published)
    log_->warn("publishing the offer after a data cap change failed: {}",
               published.error().message);
}

v1::GetStatusResponse SellerNode::Status() {
  v1::GetStatusResponse s;
  s.set_version(DVPN_VERSION);
  s.set_uptime_s(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count()));
  s.set_provider_address(provider_);
  s.set_ledger_id(ledger_.bytes.data(), ledger_.bytes.size());
  {
    std::lock_guard lock(advertiser_mu_);
    if (advertiser_ && advertiser_->last()) mp::ToProto(*advertiser_->last(), s.mutable_offer());
  }
  auto totals = seller_->Totals();
  s.set_sessions_open(static_cast<uint32_t>(totals.sessions_open));
  if (totals.full_tunnel) {
    const FullTunnelTotals& ft = *totals.full_tunnel;
    v1::FullTunnelStatus* f = s.mutable_full_tunnel();
    f->set_sessions(static_cast<uint32_t>(ft.sessions));
    f->set_flows(ft.flows);
    f->set_packets_from_clients(ft.counters.from_client);
    f->set_packets_to_clients(ft.counters.to_client);
    f->set_packets_to_clients_tcp(ft.counters.to_client_tcp);
    f->set_packets_held(ft.counters.held);
    for (const auto& [reason, n] : tunnel::session::ExitPackets::Dropped(ft.counters)) {
      (*f->mutable_dropped())[reason] = n;
    }
    v1::FullTunnelIo* io = f->mutable_io();
    io->set_offloads(ft.io.offloads);
    io->set_tun_reads(ft.io.tun_reads);
    io->set_tun_super_reads(ft.io.tun_super_reads);
    io->set_tun_written(ft.io.tun_written);
    io->set_tun_writes(ft.io.tun_writes);
    io->set_udp_sent(ft.io.udp_sent);
    io->set_udp_send_calls(ft.io.udp_send_calls);
    io->set_udp_received(ft.io.udp_received);
    io->set_udp_receive_calls(ft.io.udp_receive_calls);
  }
  s.set_bytes_metered(totals.bytes_metered);
  s.set_month_bytes_metered(totals.month_bytes_metered);
  s.set_monthly_data_cap_bytes(config_.monthly_data_gb * 1'000'000'000);
  s.set_accepting(!totals.refusal.has_value());
  if (totals.refusal) s.set_not_accepting_reason(*totals.refusal);
  auto stats = transport_->Stats();
  if (stats.wait_for(1s) == std::future_status::ready) {
    auto st = stats.get();
    s.set_gossip_peers(static_cast<uint32_t>(st.node.peers));
    s.set_gossip_offers(static_cast<uint32_t>(st.live_offers));
    for (size_t v = 1; v < mp::kOfferVerdicts; ++v) {
      if (v == static_cast<size_t>(mp::OfferVerdict::kNotNewer)) continue;  // duplicates: normal
      (*s.mutable_gossip_offers_refused())[mp::OfferVerdictName(static_cast<mp::OfferVerdict>(v))] =
          st.node.verdicts[v];
    }
  }
  return s;
}

v1::ListSessionsResponse SellerNode::Sessions() {
  v1::ListSessionsResponse out;
  for (const auto& t : seller_->Sessions()) {
    auto* s = out.add_sessions();
    s->set_name(t.name);
    s->set_client_address(t.peer);
    s->set_started_unix_ms(t.started_unix_ms);
    s->set_bytes_sent(t.bytes_sent);
    s->set_bytes_received(t.bytes_received);
    if (t.payment) {
      s->set_channel_id(t.payment->channel.bytes.data(), t.payment->channel.bytes.size());
      s->set_accepted_micro(t.payment->accepted.micro());
      s->set_paused(t.payment->paused);
      s->set_price_per_mb_micro(t.payment->price.per_mb.micro());
    }
  }
  return out;
}

v1::GetEarningsResponse SellerNode::Earnings() {
  v1::GetEarningsResponse e;
  if (auto totals = seller_->Earnings()) {
    e.set_settled_micro(totals->settled.micro());
    e.set_unsettled_micro(totals->unsettled.micro());
    e.set_lost_micro(totals->lost.micro());
  }
  if (auto channels = seller_->Channels(kMaxChannelsShown)) {
    for (const auto& c : *channels) {
      auto* out = e.add_channels();
      out->set_channel_id(c.channel.bytes.data(), c.channel.bytes.size());
      out->set_cumulative_micro(c.cumulative.micro());
      out->set_settled_micro(c.settled_known.micro());
      out->set_unsettled_micro(c.Unsettled().micro());
      out->set_state(payments::ChannelSettleStateName(c.state));
      out->set_last_outcome(c.last_outcome);
    }
  }
  for (const auto& p : seller_->History()) {
    auto* out = e.add_history();
    out->set_t_unix_ms(p.t_unix_ms);
    out->set_settled_micro(p.settled.micro());
    out->set_unsettled_micro(p.unsettled.micro());
    out->set_bytes_metered(p.bytes_metered);
  }
  auto stats = seller_->SettlementStats();
  e.set_settlements_ok(stats.successes);
  e.set_settlements_failed(stats.failures);
  e.set_last_settlement_error(stats.last_error);
  return e;
}

v1::SettleNowResponse SellerNode::SettleNow(std::chrono::milliseconds timeout) {
  v1::SettleNowResponse r;
  r.set_completed(seller_->SettleNow(timeout));
  if (auto totals = seller_->Earnings()) {
    r.set_settled_micro(totals->settled.micro());
    r.set_unsettled_micro(totals->unsettled.micro());
  }
  r.set_last_error(seller_->SettlementStats().last_error);
  return r;
}

Result<v1::Offer, Errc> SellerNode::SetPrice(const payments::Price& price) {
  std::lock_guard lock(advertiser_mu_);
  if (over_cap_) {
    return dvpn::Fail(Errc::kOverCap,
                      "over the monthly data cap the offer is retired until the "
                      "month turns; nothing changed");
  }
  const OfferTemplate before = advertiser_->offer_template();
  advertiser_->SetPrice(price.per_mb, price.per_minute);
  auto published = advertiser_->PublishLive(WallMs());
  if (!published) {
    advertiser_->SetPrice(before.price_per_mb, before.price_per_minute);
    return dvpn::Fail(Errc::kOfferRefused,
                      "the offer at the new price was not published: " + published.error().message);
  }
  seller_->SetPrice(price);
  log_->info("price changed to {} per MB, {} per minute; offer seq {}", price.per_mb.ToString(),
             price.per_minute.ToString(), published->seq);
  v1::Offer out;
  mp::ToProto(*published, &out);
  return out;
}

int SellerNode::StartGossip() {
  mp::GossipConfig gossip;
  gossip.network = ledger_;
  gossip.listen_port = config_.advertise_port;
  gossip.bootstrap = config_.bootstrap;
  gossip.round = config_.round;
  gossip.anti_entropy = config_.anti_entropy;
  std::random_device rd;
  gossip.seed = (uint64_t{rd()} << 32) | rd();
  mp::GossipTransportOptions transport_options;
  transport_options.listen_address = config_.gossip_listen.host;
  transport_options.listen_port = config_.gossip_listen.port;
  transport_ = std::make_unique<mp::GossipTransport>(gossip, transport_options);
  if (auto started = transport_->Start(); !started) {
    return Fail(kExitRuntime, "gossip.listen " + config_.gossip_listen.ToString() + ": " +
                                  started.error().message);
  }
  return kExitOk;
}

int SellerNode::StartAdvertising(const ByteArray<32>& tunnel_public_key) {
  // The offer: the tunnel's key and where clients reach it.
  OfferTemplate offer{.ledger = ledger_,
                      .offer_id = config_.offer_id,
                      .tunnel_key = tunnel_public_key,
                      .price_per_mb = config_.price_per_mb,
                      .price_per_minute = config_.price_per_minute,
                      .capacity_mbps = config_.capacity_mbps,
                      .max_sessions = config_.max_sessions,
                      .region = config_.region,
                      .endpoints = config_.endpoints,
                      .lifetime_s = config_.lifetime_s,
                      .modes = static_cast<uint8_t>(
                          mp::kModeSocks | (config_.full_tunnel ? mp::kModeFullTunnel : 0))};
  if (offer.endpoints.empty()) {
    offer.endpoints.push_back({config_.tunnel_listen.host, seller_->tunnel_port()});
  }
  // Names become addresses here and before each refresh (endpoints.h).
  std::optional<OfferAdvertiser::EndpointSource> endpoint_source;
  const bool allow_loopback = IsLoopbackHost(config_.tunnel_listen.host);
  auto resolved = ResolveEndpoints(offer.endpoints, allow_loopback, SystemLookup());
  if (!resolved) return Fail(kExitConfig, "[offer] endpoints: " + resolved.error().message);
  if (HasNames(offer.endpoints)) {
    log_->info("offer endpoints: {} resolve to {}", Describe(offer.endpoints), Describe(*resolved));
    endpoint_source =
        OfferAdvertiser::EndpointSource{offer.endpoints, allow_loopback, SystemLookup()};
  }
  offer.endpoints = std::move(*resolved);
  if (auto ok = OfferAdvertiser::Check(offer, key_); !ok) {
    return Fail(kExitConfig, "[offer]: " + ok.error().message);
  }
  std::lock_guard lock(advertiser_mu_);
  advertiser_.emplace(offer, key_, GossipPublisher(*transport_));
  if (endpoint_source) advertiser_->SetEndpointSource(std::move(*endpoint_source));
  // A cap reached before start keeps the offer unpublished until the month turns.
  over_cap_ = seller_->Totals().refusal.has_value();
  if (over_cap_) return kExitOk;
  auto first = advertiser_->PublishLive(WallMs());
  if (!first) {
    return Fail(kExitRuntime, "the gossip node refused our offer: " + first.error().message);
  }
  return kExitOk;
}

int SellerNode::StartControl(ControlServers& servers, const std::string& ports_file) {
  mp::rpc::OfferBookServerOptions grpc_options;
  grpc_options.listen_address = config_.grpc_listen.ToString();
  grpc_options.extra_services.push_back(&servers.control);
  auto grpc = mp::rpc::OfferBookServer::Start(servers.feed, ledger_, grpc_options);
  if (!grpc) {
    return Fail(kExitRuntime, "control.grpc_listen " + config_.grpc_listen.ToString() + ": " +
                                  grpc.error().message);
  }
  servers.grpc = std::move(*grpc);
  DashboardSource source;
  source.status_json = [this] { return StatusJson(Status()); };
  source.earnings_json = [this] { return EarningsJson(Earnings()); };
  source.metrics_text = [this] { return MetricsText(Status(), Earnings()); };
  auto dashboard = DashboardServer::Start(config_.http_listen.ToString(), std::move(source));
  if (!dashboard) {
    return Fail(kExitRuntime, "control.http_listen " + config_.http_listen.ToString() + ": " +
                                  dashboard.error().message);
  }
  servers.dashboard = std::move(*dashboard);
  // Ports configured as 0 are known only now; the exit protects the configured ones already.
  if (!seller_->ProtectPorts({transport_->port(), static_cast<uint16_t>(servers.grpc->port()),
                              servers.dashboard->port()})) {
    return Fail(kExitRuntime, "the exit did not take the node's own ports");
  }
  if (ports_file.empty()) return kExitOk;
  const std::string text = "gossip=" + std::to_string(transport_->port()) +
                           "\ntunnel=" + std::to_string(seller_->tunnel_port()) +
                           "\ncontrol=" + std::to_string(servers.grpc->port()) +
                           "\nhttp=" + std::to_string(servers.dashboard->port()) + "\n";
  if (auto written = WriteFileAtomically(ports_file, text); !written) {
    return Fail(kExitRuntime, "--ports-file: " + written.error().message);
  }
  return kExitOk;
}

void SellerNode::ControlServers::Stop() {
  if (dashboard) dashboard->Stop();
  if (grpc) grpc->Shutdown(1000ms);
}

int SellerNode::Run(const SellerRunOptions& options, const sigset_t& signals,
                    const tunnel::X25519KeyPair& tunnel_key, payments::LedgerGateway& gateway) {
  if (int rc = StartGossip(); rc != kExitOk) return rc;
  // The exit, payments and settlement.
  auto seller = Seller::Start(config_, key_, tunnel_key, ledger_, gateway,
                              [this](bool over_cap) { OnCap(over_cap); });
  if (!seller) return Fail(kExitRuntime, seller.error().message);
  seller_ = std::move(*seller);
  // Control: NodeControl and OfferBook on one gRPC port, the dashboard on the HTTP port.
  ControlServers servers(*this, *transport_);
  int rc = StartAdvertising(tunnel_key.public_key);
  if (rc == kExitOk) rc = StartControl(servers, options.ports_file);
  if (rc != kExitOk) {
    servers.Stop();
    seller_->Shutdown(0ms, 0ms);
    return rc;
  }
  log_->info(
      "seller {} on ledger {}: tunnel on port {}, gossip on {}:{}, control gRPC on {}, "
      "dashboard http://{}:{}/, {} per MB",
      provider_, ToHex(ledger_.bytes), seller_->tunnel_port(), config_.gossip_listen.host,
      transport_->port(), servers.grpc->address(), config_.http_listen.host,
      servers.dashboard->port(), config_.price_per_mb.ToString());

  // A refresh that failed waits for the next one (Refresh logs why).
  const std::chrono::seconds refresh_every{std::max<uint64_t>(30, config_.lifetime_s / 3)};
  const RefreshSchedule schedule{refresh_every, refresh_every};
  const int sig = RefreshUntilSignal(signals, schedule, [this] {
    Refresh();
    return true;
  });
  log_->info("{} received: shutting down (sessions get {} ms, settlement {} ms)",
             sig == SIGINT ? "SIGINT" : "SIGTERM", config_.shutdown_grace_ms,
             config_.shutdown_timeout_ms);

  // Retire first, so the retirement spreads while the sessions drain.
  {
    std::lock_guard lock(advertiser_mu_);
    if (auto retired = advertiser_->Retire(WallMs()); !retired) {
      log_->warn("retiring the offer failed: {}", retired.error().message);
    }
  }
  const auto linger_end = std::chrono::steady_clock::now() + kRetireLinger;
  seller_->Shutdown(std::chrono::milliseconds(config_.shutdown_grace_ms),
                    std::chrono::milliseconds(config_.shutdown_timeout_ms));
  WaitForSignal(signals, linger_end);  // a second signal cuts the rest short
  servers.Stop();
  transport_->Stop();
  log_->info("stopped");
  return kExitOk;
}

}  // namespace

int RunSellerNode(const NodeConfig& config, const SellerRunOptions& options,
                  const sigset_t& signals) {
  auto key = LoadProviderKey(config);
  if (!key) return Fail(kExitConfig, key.error().message);
  // 0700 whatever the umask: the promise store, the tunnel key and the usage file live here.
  if (auto ok = CreatePrivateDirectories(config.data_dir); !ok) {
    return Fail(kExitConfig, "node.data_dir: " + ok.error().message);
  }
  tunnel::EnsureSodium();
  auto tunnel_key = cli::LoadOrCreateTunnelKey(config.StaticKeyPath());
  if (!tunnel_key) {
    return Fail(kExitConfig, "tunnel.static_key_file: " + tunnel_key.error().message);
  }

  ledger::rpc::RpcLedgerGateway gateway(config.ledger.ToString());
  auto params = gateway.GetParams(std::chrono::steady_clock::now() + kLedgerTimeout);
  if (!params) {
    return Fail(kExitRuntime,
                "node.ledger " + config.ledger.ToString() + ": " + params.error().message);
  }
  SellerNode node(config, std::move(*key), params->id);
  return node.Run(options, signals, *tunnel_key, gateway);
}

}  // namespace dvpn::node
