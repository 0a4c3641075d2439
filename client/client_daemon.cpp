#include "client/client_daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/port_file.h"
#include "common/unix_socket.h"
#include "ledger/rpc/ledger_client.h"
#include "marketplace/gossip_transport.h"
#include "marketplace/provider_stats.h"
#include "marketplace/rpc/offer_book_service.h"
#include "tunnel/session/host_addresses.h"

namespace dvpn::client {

namespace {

namespace mp = marketplace;
using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kLedgerCallTimeout{5'000};
// --connect at start: the gossip node has just dialed its bootstrap peers. Wait until it knows
// an offer and no new one arrived for kOffersQuiet (the peers' books arrive in a few round
// trips), at most kOffersWait; the controller's retries cover a network with no offer yet.
constexpr std::chrono::milliseconds kOffersWait{10'000};
constexpr std::chrono::milliseconds kOffersQuiet{1'500};
constexpr std::chrono::milliseconds kOffersPoll{250};
constexpr std::chrono::milliseconds kConnectWait{15'000};

void WaitForOffers(mp::GossipTransport& gossip, spdlog::logger& log) {
  const auto start = std::chrono::steady_clock::now();
  size_t known = 0;
  auto changed = start;
  while (std::chrono::steady_clock::now() - start < kOffersWait) {
    auto offers = gossip.QueryOffers(mp::OfferQuery{});
    if (offers.wait_for(kOffersPoll) != std::future_status::ready) continue;
    const size_t now_known = offers.get().size();
    const auto now = std::chrono::steady_clock::now();
    if (now_known != known) {
      known = now_known;
      changed = now;
    } else if (known > 0 && now - changed >= kOffersQuiet) {
      break;
    }
    std::this_thread::sleep_for(kOffersPoll);
  }
  log.info("{} offer(s) known after {} ms of gossip", known,
           std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start)
               .count());
}

}  // namespace

struct ClientDaemon::State {
  ClientDaemonConfig config;
  std::shared_ptr<spdlog::logger> log = Logger("dvpn-client");
  SystemClock clock;
  std::shared_ptr<ledger::rpc::LedgerClient> ledger_client;
  payments::LedgerId ledger;
  std::string offers_from;  // the OfferBook the picker asks: a node's, or the local one
  std::unique_ptr<mp::GossipTransport> gossip;
  std::unique_ptr<mp::rpc::TransportOfferFeed> feed;
  std::unique_ptr<mp::rpc::OfferBookServer> book;
  std::unique_ptr<ClientController> controller;
  std::string control_socket;  // removed at Stop
  std::unique_ptr<ClientControlService> service;
  std::unique_ptr<grpc::Server> server;
  bool stopped = false;

  // A fresh runtime configuration for `policy`, sharing the wallet and the spend state.
  Result<tunnel_client::ClientRuntimeConfig, Errc> RuntimeConfig(const ConnectPolicy& policy);
  // Full tunnel: the ledger, the gossip peers and the offer book stay outside the tunnel
  // (docs/full-tunnel.md "On the machine"): their addresses, resolved now.
  std::vector<tunnel::IpAddress> OutsideAddresses() const;
};

std::vector<tunnel::IpAddress> ClientDaemon::State::OutsideAddresses() const {
  std::vector<std::string> hosts;
  for (const std::string& hp : {config.ledger, offers_from}) {
    if (auto parsed = ParseHostPort(hp, false)) hosts.push_back(parsed->host);
  }
  for (const auto& e : config.bootstrap) hosts.push_back(e.host);
  std::vector<tunnel::IpAddress> out;
  tunnel::session::asio::io_context io;
  tunnel::session::tcp::resolver resolver(io);
  for (const std::string& host : hosts) {
    if (auto literal = tunnel::IpAddress::Parse(host)) {
      out.push_back(*literal);
      continue;
    }
    tunnel::session::error_code ec;
    auto results = resolver.resolve(host, "", ec);
    if (ec) continue;  // not resolvable now: nothing to keep outside
    for (const auto& r : results) {
      out.push_back(tunnel::session::FromAsioAddress(r.endpoint().address()));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<tunnel_client::ClientRuntimeConfig, Errc> ClientDaemon::State::RuntimeConfig(
    const ConnectPolicy& policy) {
  tunnel_client::ClientRuntimeConfig c;
  c.pay = config.pay;
  c.pay.policy.max_price_per_mb = policy.max_price_per_mb;
  c.ledger_client = ledger_client;
  c.socks = config.socks;
  c.socks_port_file = config.socks_port_file;
  c.frontend.credentials = config.credentials;  // the runtime wipes its copy once listening
  tunnel_client::OfferPicker::Options po;
  po.offers_from = offers_from;
  po.policy.ledger = ledger;
  po.policy.max_price_per_mb = policy.max_price_per_mb;
  po.policy.region = policy.region;
  po.policy.provider_address = policy.provider;
  po.client = config.wallet;
  po.ledger = ledger_client;
  po.open_deposit = config.open_deposit;
  if (policy.full_tunnel) {
    if (config.control_socket.empty()) {
      // The daemon then holds CAP_NET_ADMIN: a loopback port would let any local user drive it.
      return Fail(Errc::kBadConfig,
                  "full-tunnel mode needs ClientControl on a Unix socket (--control unix:PATH)");
    }
    po.policy.required_modes = mp::kModeFullTunnel;
    tunnel::session::ClientPacketsOptions& ft = c.full_tunnel.emplace();
    ft.tun_name = config.tun_device;
    ft.allow_udp = config.full_tunnel_udp;
    ft.offloads = config.packet_offloads;
    ft.outside = OutsideAddresses();
  }
  c.picker = std::move(po);
  if (config.provider_stats.empty()) {
    c.stats = std::make_unique<mp::ProviderStats>(mp::ProviderStats::InMemory(clock));
  } else {
    auto opened = mp::ProviderStats::Open(config.provider_stats, clock);
    if (!opened) {
      return Fail(Errc::kBadConfig,
                  "--provider-stats " + config.provider_stats + ": " + opened.error().message);
    }
    c.stats = std::make_unique<mp::ProviderStats>(std::move(*opened));
  }
  return c;
}

ClientDaemon::ClientDaemon(std::unique_ptr<State> state) : state_(std::move(state)) {}

ClientDaemon::~ClientDaemon() { Stop(); }

Result<std::unique_ptr<ClientDaemon>, Errc> ClientDaemon::Start(ClientDaemonConfig config) {
  auto state = std::make_unique<State>();
  State& s = *state;
  s.config = std::move(config);
  const ClientDaemonConfig& c = s.config;
  const std::string wallet_address =
      payments::Address::FromPublicKey(c.wallet->public_key()).ToString();
  s.config.pay.identity = c.wallet;

  // The ledger.
  s.ledger_client = std::make_shared<ledger::rpc::LedgerClient>(c.ledger, kLedgerCallTimeout);
  auto info = s.ledger_client->GetInfo();
  if (!info) return Fail(Errc::kLedger, "--ledger " + c.ledger + ": " + info.error().message);
  s.ledger = info->id;
  s.config.pay.ledger = info->id;

  // The offers: a node's OfferBook, or our own light gossip node with a local OfferBook.
  s.offers_from = c.offers_from;
  if (!c.bootstrap.empty()) {
    mp::GossipConfig g;
    g.network = info->id;
    g.bootstrap = c.bootstrap;
    std::random_device rd;
    g.seed = (uint64_t{rd()} << 32) | rd();
    g.target_outbound = std::min<size_t>(g.target_outbound, 4);
    mp::GossipTransportOptions t;
    t.listen_address = "";  // light mode: never accepts connections
    s.gossip = std::make_unique<mp::GossipTransport>(g, t);
    if (auto started = s.gossip->Start(); !started) {
      return Fail(Errc::kBadConfig, "gossip: " + started.error().message);
    }
    s.feed = std::make_unique<mp::rpc::TransportOfferFeed>(*s.gossip);
    mp::rpc::OfferBookServerOptions o;
    o.listen_address = "127.0.0.1:0";
    auto server = mp::rpc::OfferBookServer::Start(*s.feed, info->id, o);
    if (!server) {
      return Fail(Errc::kBadConfig, "the local offer book: " + server.error().message);
    }
    s.book = std::move(*server);
    s.offers_from = "127.0.0.1:" + std::to_string(s.book->port());
  }

  // The controller and its service.
  s.controller = std::make_unique<ClientController>(
      [&s](const ConnectPolicy& policy) { return s.RuntimeConfig(policy); }, c.defaults,
      wallet_address, c.pay.policy.daily_cap, c.socks.address().to_string(),
      ClientController::Options{});
  s.service = std::make_unique<ClientControlService>(*s.controller);
  grpc::ServerBuilder builder;
  int control_port = 0;
  const bool on_socket = !c.control_socket.empty();
  const std::string listen = on_socket ? "unix:" + c.control_socket : c.control.ToString();
  if (on_socket) {
    if (auto ok = PrepareUnixSocketPath(c.control_socket); !ok) {
      return Fail(Errc::kBadConfig, "--control: " + ok.error().message);
    }
  }
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &control_port);
  builder.RegisterService(s.service.get());
  {
    // The socket file appears inside BuildAndStart: with this umask it is never, even for a
    // moment, open to other users (the mode is widened to the group below).
    const mode_t old_umask = ::umask(0177);
    s.server = builder.BuildAndStart();
    ::umask(old_umask);
  }
  auto daemon = std::unique_ptr<ClientDaemon>(new ClientDaemon(std::move(state)));
  if (!s.server || (!on_socket && control_port == 0)) {
    return Fail(Errc::kBadConfig, "--control " + listen + ": cannot listen");
  }
  if (on_socket) {
    s.control_socket = c.control_socket;
    if (auto ok = SetUnixSocketMode(c.control_socket, 0660); !ok) {
      return Fail(Errc::kBadConfig, "--control: " + ok.error().message);
    }
  } else if (auto written = WritePortFile(c.control_port_file, control_port); !written) {
    return Fail(Errc::kBadConfig, written.error().message);
  }
  s.log->info("wallet {}; ledger {}; offers from {}; ClientControl on {}", wallet_address, c.ledger,
              c.bootstrap.empty() ? s.offers_from : "gossip (light mode)",
              on_socket ? listen : c.control.host + ":" + std::to_string(control_port));
  return daemon;
}

Result<void, Errc> ClientDaemon::ConnectAtStart() {
  State& s = *state_;
  if (s.gossip) WaitForOffers(*s.gossip, *s.log);
  auto st = s.controller->Connect(s.config.defaults, kConnectWait);
  if (!st) return std::unexpected(st.error());
  s.log->info("connect: {}{}{}", st->state(),
              st->provider_address().empty() ? "" : " via " + st->provider_address(),
              st->last_error().empty() ? "" : " (" + st->last_error() + ")");
  return {};
}

void ClientDaemon::Stop() {
  State& s = *state_;
  if (s.stopped) return;
  s.stopped = true;
  s.controller->Disconnect();
  if (s.server) s.server->Shutdown(std::chrono::system_clock::now() + 1s);
  if (!s.control_socket.empty()) ::unlink(s.control_socket.c_str());
  if (s.book) s.book->Shutdown(1000ms);
  if (s.gossip) s.gossip->Stop();
}

}  // namespace dvpn::client
