// dvpn-client: the privacy user's daemon (docs/client.md). A wallet (dvpnctl keystore), the
// offers of the network (an embedded gossip node that only dials out to --bootstrap peers, or a
// node's OfferBook with --offers-from), provider choice by policy, the SOCKS5 port, spend
// limits, reconnect and failover (ClientRuntime), and dvpn.v1.ClientControl on 127.0.0.1 so
// that dvpnctl (connect, disconnect, status) or a wallet app drives it.
// Wiring only: flags -> wallet -> ledger -> offers source -> controller -> gRPC -> signals.
//
// Exit codes: 0 clean shutdown (SIGINT/SIGTERM); 2 refused to start (bad flag, keystore,
// passphrase, spend file); 1 runtime failure (ledger unreachable, cannot listen).

#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "common/host_port.h"
#include "common/log.h"
#include "common/port_file.h"
#include "ledger/rpc/ledger_client.h"
#include "marketplace/gossip_transport.h"
#include "marketplace/rpc/offer_book_service.h"
#include "payments/keystore.h"
#include "payments/spend_journal.h"
#include "client/client_control.h"
#include "tunnel/kdf.h"
#include "cli/cli_util.h"
#include "cli/program.h"
#include "tunnel/session/client.h"

namespace {

namespace session = dvpn::tunnel::session;
namespace cli = dvpn::cli;
namespace mp = dvpn::marketplace;
using namespace std::chrono_literals;

using dvpn::cli::kExitRuntime;
using dvpn::cli::kExitConfig;
constexpr std::chrono::milliseconds kLedgerCallTimeout{5'000};
constexpr long kSignalPollNs = 200'000'000;

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

int Refuse(const std::string& message) { return dvpn::cli::Refuse("dvpn-client", message); }

int Fail(const std::string& message) { return dvpn::cli::Fail("dvpn-client", message); }

struct Flags {
  std::string keystore;
  std::string passphrase_file;
  std::string ledger;
  std::vector<std::string> bootstrap;
  std::string offers_from;
  std::string max_price_per_mb;
  std::string region;
  std::string provider;
  std::string socks = "127.0.0.1:1080";
  std::string socks_port_file;
  std::string socks_user;
  std::string socks_password_file;
  std::string session_cap;
  std::string daily_cap;
  std::string spend_file;
  std::string open_deposit;
  std::string provider_stats;
  std::string control = "127.0.0.1:7700";
  std::string control_port_file;
  bool connect = false;
  std::string log_level = "info";
};

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"dvpn-client: a dVPN user's daemon (wallet, provider choice, SOCKS5, control)"};
  app.add_option("--keystore", f.keystore, "the wallet: a dvpnctl keystore")->required();
  app.add_option("--passphrase-file", f.passphrase_file,
                 "the keystore's passphrase on the file's first line (else $DVPN_PASSPHRASE)");
  app.add_option("--ledger", f.ledger, "the ledger's gRPC HOST:PORT")->required();
  app.add_option("--bootstrap", f.bootstrap,
                 "a gossip peer HOST:PORT to learn offers from (repeatable; light mode: the "
                 "client's gossip node only dials out)");
  app.add_option("--offers-from", f.offers_from,
                 "instead of gossip: a dvpn-node's OfferBook gRPC HOST:PORT");
  app.add_option("--max-price-per-mb", f.max_price_per_mb,
                 "the highest price per MB to choose (credits)")
      ->required();
  app.add_option("--region", f.region, "only offers from this region");
  app.add_option("--provider", f.provider, "only this provider's offers (its dv... address)");
  app.add_option("--socks", f.socks, "the SOCKS5 address (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--socks-port-file", f.socks_port_file, "write the SOCKS port here once up");
  app.add_option("--socks-user", f.socks_user,
                 "require SOCKS5 username/password (RFC 1929) with this user name; the password "
                 "comes from --socks-password-file or $DVPN_SOCKS_PASSWORD (required when --socks "
                 "is not a loopback address)");
  app.add_option("--socks-password-file", f.socks_password_file,
                 "file whose first line is the SOCKS password (with --socks-user)");
  app.add_option("--session-cap", f.session_cap, "sign at most this much per session (credits)");
  app.add_option("--daily-cap", f.daily_cap, "sign at most this much per UTC day (credits)");
  app.add_option("--spend-file", f.spend_file, "keep today's spending here (with --daily-cap)");
  app.add_option("--open-deposit", f.open_deposit,
                 "open a channel with this deposit to a chosen provider that has none (credits)");
  app.add_option("--provider-stats", f.provider_stats,
                 "keep what this client measured of each provider in this SQLite file");
  app.add_option("--control", f.control, "ClientControl gRPC HOST:PORT (loopback only)")
      ->capture_default_str();
  app.add_option("--control-port-file", f.control_port_file, "write the control port here");
  app.add_flag("--connect", f.connect,
               "connect at start, and keep trying until connected (else wait for "
               "ClientControl.Connect)");
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.set_version_flag("--version", "dvpn-client " DVPN_VERSION);
  app.footer("Exit codes: 0 clean shutdown, 2 refused to start, 1 runtime failure. "
             "docs/client.md.");
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;
  if (auto e = dvpn::cli::StartLogging(f.log_level)) return Refuse(*e);
  if (f.bootstrap.empty() == f.offers_from.empty()) {
    return Refuse("give --bootstrap (gossip) or --offers-from (a node's OfferBook), one of them");
  }
  dvpn::tunnel::EnsureSodium();

  // The policy's defaults.
  dvpn::client::ConnectPolicy defaults;
  {
    auto price = mp::ParsePrice(f.max_price_per_mb);
    if (!price) return Refuse("--max-price-per-mb: " + price.error().message);
    defaults.max_price_per_mb = *price;
    if (auto ok = mp::CheckRegion(f.region); !ok) {
      return Refuse("--region: " + ok.error().message);
    }
    defaults.region = f.region;
    if (!f.provider.empty()) {
      defaults.provider = dvpn::payments::Address::Parse(f.provider);
      if (!defaults.provider) return Refuse("--provider: not an address: " + f.provider);
    }
  }
  auto control = dvpn::ParseListenAddress(f.control);
  if (!control) return Refuse("--control: " + control.error().message);
  if (control->host != "127.0.0.1" && control->host != "::1") {
    return Refuse("--control: " + f.control + " is not a loopback address (no authentication)");
  }

  // The wallet.
  auto wallet = cli::LoadKeystoreWithPassphrase(f.keystore, f.passphrase_file, "--keystore",
                                                "--passphrase-file",
                                                "--passphrase-file or $DVPN_PASSPHRASE");
  if (!wallet) return Refuse(wallet.error().message);
  const dvpn::payments::PrivateKey identity = std::move(*wallet);
  const std::string wallet_address =
      dvpn::payments::Address::FromPublicKey(identity.public_key()).ToString();

  // Spend limits shared by every connection of this process.
  dvpn::tunnel::session::ClientPaymentConfig pay_base;
  pay_base.identity = &identity;
  pay_base.daily = std::make_shared<dvpn::payments::DailySpend>();
  {
    const auto& amount = cli::ParseAmountFlag;
    if (auto e = amount(f.session_cap, "--session-cap", &pay_base.policy.session_cap))
      return Refuse(*e);
    if (auto e = amount(f.daily_cap, "--daily-cap", &pay_base.policy.daily_cap)) return Refuse(*e);
    if (!f.spend_file.empty()) {
      if (pay_base.policy.daily_cap.IsZero()) return Refuse("--spend-file needs --daily-cap");
      auto journal = dvpn::payments::SpendJournal::Open(f.spend_file, pay_base.policy.daily_cap);
      if (!journal) return Refuse("--spend-file: " + journal.error());
      pay_base.journal = std::make_shared<dvpn::payments::SpendJournal>(std::move(*journal));
      const uint64_t today = dvpn::payments::UtcDay(dvpn::UnixSeconds());
      pay_base.daily->Record(today, pay_base.journal->ReservedFor(today));
    }
  }
  dvpn::Amount open_deposit;
  if (auto e = cli::ParseAmountFlag(f.open_deposit, "--open-deposit", &open_deposit)) {
    return Refuse(*e);
  }
  session::asio::io_context resolver_io(1);
  auto socks_ep = cli::ResolveHostPort(resolver_io, f.socks);
  if (!socks_ep) return Refuse("--socks: " + socks_ep.error().message);
  // Whoever reaches the SOCKS port spends this wallet's credits: beyond loopback, only with a
  // password.
  auto credentials = cli::LoadSocksCredentials(f.socks_user, f.socks_password_file);
  if (!credentials) return Refuse(credentials.error().message);
  if (!socks_ep->address().is_loopback() && !*credentials) {
    return Refuse("--socks: " + f.socks + " is not a loopback address: whoever reaches it spends " +
                  "your credits; add --socks-user and --socks-password-file (or $" +
                  cli::kSocksPasswordEnv + ")");
  }

  auto log = dvpn::Logger("dvpn-client");
  cli::RaiseOpenFileLimit(*log);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The ledger.
  auto ledger_client =
      std::make_shared<dvpn::ledger::rpc::LedgerClient>(f.ledger, kLedgerCallTimeout);
  auto info = ledger_client->GetInfo();
  if (!info) return Fail("--ledger " + f.ledger + ": " + info.error().message);
  pay_base.ledger = info->id;

  // The offers: a node's OfferBook, or our own light gossip node with a local OfferBook.
  std::unique_ptr<mp::GossipTransport> gossip;
  std::unique_ptr<mp::rpc::TransportOfferFeed> feed;
  std::unique_ptr<mp::rpc::OfferBookServer> book;
  std::string offers_from = f.offers_from;
  if (!f.bootstrap.empty()) {
    mp::GossipConfig g;
    g.network = info->id;
    for (const auto& b : f.bootstrap) {
      auto e = mp::ParseEndpoint(b);
      if (!e) return Refuse("--bootstrap: " + e.error().message);
      g.bootstrap.push_back(*e);
    }
    std::random_device rd;
    g.seed = (uint64_t{rd()} << 32) | rd();
    g.target_outbound = std::min<size_t>(g.target_outbound, 4);
    mp::GossipTransportOptions t;
    t.listen_address = "";  // light mode: never accepts connections
    gossip = std::make_unique<mp::GossipTransport>(g, t);
    if (auto started = gossip->Start(); !started) {
      return Fail("gossip: " + started.error().message);
    }
    feed = std::make_unique<mp::rpc::TransportOfferFeed>(*gossip);
    mp::rpc::OfferBookServerOptions o;
    o.listen_address = "127.0.0.1:0";
    auto server = mp::rpc::OfferBookServer::Start(*feed, info->id, o);
    if (!server) return Fail("the local offer book: " + server.error().message);
    book = std::move(*server);
    offers_from = "127.0.0.1:" + std::to_string(book->port());
  }

  // Each Connect gets a fresh runtime configuration sharing the wallet and the spend state.
  dvpn::SystemClock clock;
  auto factory = [&](const dvpn::client::ConnectPolicy& policy)
      -> dvpn::Result<dvpn::tunnel_client::ClientRuntimeConfig, dvpn::client::Errc> {
    dvpn::tunnel_client::ClientRuntimeConfig c;
    c.pay = pay_base;
    c.pay.policy.max_price_per_mb = policy.max_price_per_mb;
    c.ledger_client = ledger_client;
    c.socks = *socks_ep;
    c.socks_port_file = f.socks_port_file;
    c.frontend.credentials = *credentials;  // the runtime wipes its copy once listening
    dvpn::tunnel_client::OfferPicker::Options po;
    po.offers_from = offers_from;
    po.policy.ledger = info->id;
    po.policy.max_price_per_mb = policy.max_price_per_mb;
    po.policy.region = policy.region;
    po.policy.provider_address = policy.provider;
    po.client = &identity;
    po.ledger = ledger_client;
    po.open_deposit = open_deposit;
    c.picker = std::move(po);
    if (f.provider_stats.empty()) {
      c.stats = std::make_unique<mp::ProviderStats>(mp::ProviderStats::InMemory(clock));
    } else {
      auto opened = mp::ProviderStats::Open(f.provider_stats, clock);
      if (!opened) {
        return dvpn::Fail(dvpn::client::Errc::kBadConfig, "--provider-stats " + f.provider_stats +
                                                              ": " + opened.error().message);
      }
      c.stats = std::make_unique<mp::ProviderStats>(std::move(*opened));
    }
    return c;
  };
  dvpn::client::ClientController controller(factory, defaults, wallet_address,
                                             pay_base.policy.daily_cap,
                                             socks_ep->address().to_string(), {});
  dvpn::client::ClientControlService service(controller);
  grpc::ServerBuilder builder;
  int control_port = 0;
  builder.AddListeningPort(control->ToString(), grpc::InsecureServerCredentials(), &control_port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server || control_port == 0) return Fail("--control " + f.control + ": cannot listen");
  if (auto written = dvpn::WritePortFile(f.control_port_file, control_port); !written) {
    return Fail(written.error().message);
  }
  log->info("wallet {}; ledger {}; offers from {}; ClientControl on {}:{}", wallet_address,
            f.ledger, f.bootstrap.empty() ? offers_from : "gossip (light mode)", control->host,
            control_port);
  if (f.connect) {
    if (gossip) WaitForOffers(*gossip, *log);
    auto st = controller.Connect(defaults, kConnectWait);
    if (!st) return Fail(st.error().message);
    log->info("connect: {}{}{}", st->state(),
              st->provider_address().empty() ? "" : " via " + st->provider_address(),
              st->last_error().empty() ? "" : " (" + st->last_error() + ")");
  }

  for (;;) {
    timespec tick{0, kSignalPollNs};
    int sig = ::sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) {
      log->info("signal {}: shutting down", sig);
      break;
    }
  }
  controller.Disconnect();
  server->Shutdown(std::chrono::system_clock::now() + 1s);
  if (book) book->Shutdown(1000ms);
  if (gossip) gossip->Stop();
  return 0;
}
