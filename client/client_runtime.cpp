#include "client/client_runtime.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <future>
#include <mutex>

#include "common/clock.h"
#include "common/io_thread.h"
#include "common/log.h"
#include "common/port_file.h"
#include "payments/spend_journal.h"
#include "cli/cli_util.h"

namespace dvpn::tunnel_client {
namespace {

namespace session = tunnel::session;
using namespace std::chrono_literals;

// After Stop(), at most this long for the tunnel's CLOSE frame to go out.
constexpr std::chrono::milliseconds kShutdownGrace{1000};
// A payment failure's CLOSE frame (kSpendCap / kTermsRefused / kOvercharge) gets this long.
constexpr std::chrono::milliseconds kCloseGrace{300};
constexpr std::chrono::milliseconds kStatusTimeout{2000};

uint64_t Today() { return payments::UtcDay(UnixSeconds()); }

}  // namespace

const char* ClientStateName(ClientState state) {
  switch (state) {
    case ClientState::kConnecting: return "connecting";
    case ClientState::kConnected: return "connected";
    case ClientState::kReconnecting: return "reconnecting";
    case ClientState::kStopped: return "stopped";
    case ClientState::kFailed: return "failed";
  }
  return "unknown";
}

// One hop of the path: its provider, its tunnel and its payment session. Io thread, except the
// fields marked "mu" (State::mu).
struct ClientRuntime::Hop {
  explicit Hop(session::ClientPaymentConfig p) : pay(std::move(p)) {}

  session::ClientPaymentConfig pay;  // this hop's channel and payee (from its target)
  std::shared_ptr<OfferPicker> picker;  // offers mode
  std::shared_ptr<session::TunnelSlot> slot = std::make_shared<session::TunnelSlot>();
  std::shared_ptr<session::TunnelKeeper> keeper;
  // The payment session of the current tunnel (null: a free session, or none yet), and what
  // the hop's earlier sessions signed.
  std::shared_ptr<session::PayerController> payer;
  Amount spent_before;
  bool up = false;  // its first tunnel came up
  std::optional<session::tcp::endpoint> endpoint;  // of the provider being tried (io thread)

  // Throughput of the hop's provider, for its score: the busiest second seen on its tunnels
  // (only seconds that moved at least 1 MB count: an idle tunnel says nothing of capacity).
  struct ThroughputSample {
    std::optional<session::ProviderTarget> target;
    const session::TunnelConnection* tunnel = nullptr;
    uint64_t bytes = 0;
    double best_mbps = 0;
  } sample;

  std::string provider_address;   // mu
  std::string provider_endpoint;  // mu
  Amount price_per_mb;            // mu

  void ReportThroughput() {
    if (picker && sample.target && sample.best_mbps > 0) {
      picker->MeasuredThroughput(*sample.target, sample.best_mbps);
    }
    sample.best_mbps = 0;
  }
  void Sample() {
    if (auto t = slot->current()) {
      const uint64_t bytes = t->data_bytes_sent() + t->data_bytes_received();
      if (t.get() == sample.tunnel && bytes - sample.bytes >= 1'000'000) {
        sample.best_mbps = std::max(sample.best_mbps, (bytes - sample.bytes) * 8.0 / 1e6);
      }
      sample.tunnel = t.get();
      sample.bytes = bytes;
    }
  }
  // The chosen provider's channel and payee become the payment layer's for that session.
  void OnTarget(const session::ProviderTarget& t, std::mutex& mu) {
    if (sample.target && sample.target->provider_static != t.provider_static) ReportThroughput();
    sample.target = t;
    pay.channel = t.channel;
    pay.expected_payee.reset();
    std::lock_guard lock(mu);
    provider_address.clear();
    provider_endpoint.clear();
    if (auto offer = picker->current_offer()) {
      if (auto key = payments::PublicKey::Parse(offer->provider)) {
        pay.expected_payee = payments::Address::FromPublicKey(*key);
        provider_address = pay.expected_payee->ToString();
      }
      price_per_mb = offer->price_per_mb;
      if (!offer->endpoints.empty()) provider_endpoint = offer->endpoints[0].ToString();
    }
  }
  // What this hop signed in this runtime, its current session included.
  Amount Spent() const {
    if (!payer) return spent_before;
    return spent_before.CheckedAdd(payer->session().session_spent()).value_or(spent_before);
  }
};

struct ClientRuntime::State {
  explicit State(ClientRuntimeConfig c) : config(std::move(c)), grace(io), sampler(io) {}

  ClientRuntimeConfig config;
  session::asio::io_context io{1};
  std::shared_ptr<spdlog::logger> log = Logger("dvpn-tunnel-client");
  std::unique_ptr<EscrowTopUp> top_up;
  std::shared_ptr<PathProviders> path;
  std::vector<std::unique_ptr<Hop>> hops;  // in path order; fixed after Start
  std::shared_ptr<session::SocksFrontend> frontend;
  std::shared_ptr<session::ClientPackets> packets;  // full-tunnel mode
  session::asio::steady_timer grace;
  session::asio::steady_timer sampler;
  bool stopping = false;  // io thread
  bool auth_required = false;
  int payment_exit_code = 0;  // io thread: set when the payment layer ended the client for good

  std::atomic<bool> finished{false};
  std::atomic<int> exit_code{kClientOk};
  Amount spent_at_start;

  mutable std::mutex mu;  // guards the status fields below and the hops' "mu" fields
  ClientState state = ClientState::kConnecting;
  uint16_t socks_port = 0;
  std::string last_error;

  void SetState(ClientState s) {
    std::lock_guard lock(mu);
    state = s;
  }
  void ReportThroughput() {
    for (auto& hop : hops) hop->ReportThroughput();
  }
  // Ends the runtime with `code` at once (io thread).
  void Fail(int code, const std::string& why) {
    exit_code = code;
    {
      std::lock_guard lock(mu);
      last_error = why;
    }
    if (frontend) frontend->Stop();
    if (packets) packets->Stop();
    for (auto& hop : hops) hop->keeper->Stop();
    io.stop();
  }
  void SampleTick() {
    sampler.expires_after(1s);
    sampler.async_wait([this](const session::error_code& ec) {
      if (ec) return;
      for (auto& hop : hops) hop->Sample();
      SampleTick();
    });
  }
  // Each hop's state, metered bytes, reconnects and spending (the other fields empty), and
  // the path's state brought up to date: decided here, where the tunnels live (on a caller's
  // thread a tunnel that came up after the look would read as lost).
  std::vector<HopStatus> LiveHops() {
    std::vector<HopStatus> out(hops.size());
    bool every_hop_up = true;
    for (size_t i = 0; i < hops.size(); ++i) {
      const Hop& hop = *hops[i];
      auto t = hop.slot->current();
      out[i].state = t        ? ClientState::kConnected
                     : hop.up ? ClientState::kReconnecting
                              : ClientState::kConnecting;
      out[i].bytes_sent = t ? t->data_bytes_sent() : 0;
      out[i].bytes_received = t ? t->data_bytes_received() : 0;
      out[i].reconnects = hop.keeper->reconnects();
      out[i].spent = hop.Spent();
      every_hop_up = every_hop_up && t != nullptr;
    }
    std::lock_guard lock(mu);
    if (state == ClientState::kConnected && !every_hop_up) {
      state = ClientState::kReconnecting;
    } else if (state == ClientState::kReconnecting && every_hop_up) {
      state = ClientState::kConnected;
    }
    return out;
  }
  void BuildHop(uint32_t index);
  void OnHopUp(Hop& hop);
  void StartSocks();
  void OnGaveUp(const std::string& why);
  void OnPaymentFinal(Hop& hop, payments::CloseReason reason, const std::string& why);
};

void ClientRuntime::State::BuildHop(uint32_t index) {
  // Hop 0 connects straight to its provider. A later hop would be reached through the streams
  // of the hop before it, which is not built: CheckPathSpec refuses such paths first.
  static_assert(kMaxHopsBuilt == 1, "a hop past the first needs its transport built here");
  assert(index == 0);
  ClientRuntimeConfig& c = config;
  auto hop = std::make_unique<Hop>(c.pay);
  Hop* h = hop.get();  // owned by `hops` until the state goes, after the io thread ended
  session::TunnelKeeper::Options keeper_options = std::move(c.keeper);
  if (c.provider) {
    h->endpoint = *c.provider;
    keeper_options.provider = *c.provider;
    keeper_options.handshake.provider_static = c.provider_key;
    std::lock_guard lock(mu);
    h->provider_endpoint = c.provider->address().to_string() + ":" +
                           std::to_string(c.provider->port());
    if (h->pay.expected_payee) h->provider_address = h->pay.expected_payee->ToString();
  }
  if (c.picker) {
    OfferPicker::Options picker_options = std::move(*c.picker);
    picker_options.path = path;
    picker_options.hop = index;
    h->picker = std::make_shared<OfferPicker>(std::move(picker_options), std::move(c.stats));
    keeper_options.picker = h->picker;
    keeper_options.on_target = [this, h](const session::ProviderTarget& t) {
      h->endpoint = t.endpoint;
      h->OnTarget(t, mu);
    };
  }
  keeper_options.handshake.identity = h->pay.identity;
  keeper_options.handshake.ledger = h->pay.ledger;
  keeper_options.handshake.channel = h->pay.channel;
  keeper_options.on_tunnel = [this, h](const std::shared_ptr<session::TunnelConnection>& t) {
    h->spent_before = h->Spent();
    h->payer = session::PayerController::Attach(
        t, h->pay,
        [this, h](payments::CloseReason r, const std::string& why) { OnPaymentFinal(*h, r, why); });
    // The last hop is the exit: full-tunnel mode asks it for packets on every new tunnel.
    if (packets && h->endpoint && h == hops.back().get()) {
      packets->Attach(t, *h->endpoint);
    }
  };
  h->keeper = std::make_shared<session::TunnelKeeper>(io.get_executor(), h->slot,
                                                      std::move(keeper_options));
  hops.push_back(std::move(hop));
}

void ClientRuntime::State::OnHopUp(Hop& hop) {
  hop.up = true;
  for (const auto& h : hops) {
    if (!h->up) return;
  }
  StartSocks();
}

void ClientRuntime::State::StartSocks() {
  SetState(ClientState::kConnected);
  if (frontend) return;  // a reconnect: the SOCKS server is already up
  try {
    frontend = std::make_shared<session::SocksFrontend>(io, config.socks, hops.front()->slot,
                                                        std::move(config.frontend));
    if (config.frontend.credentials) cli::WipeString(config.frontend.credentials->password);
  } catch (const std::exception& e) {
    log->error("cannot listen on {}: {}", config.socks.address().to_string(), e.what());
    Fail(kClientRuntimeFailure, std::string("cannot listen for SOCKS: ") + e.what());
    return;
  }
  frontend->Start();
  const uint16_t port = frontend->local_endpoint().port();
  {
    std::lock_guard lock(mu);
    socks_port = port;
  }
  log->info("SOCKS5 server listening on {}:{} ({})", config.socks.address().to_string(), port,
            auth_required ? "username/password required" : "no authentication");
  if (!config.socks_port_file.empty()) {
    if (auto written = WritePortFile(config.socks_port_file, port); !written) {
      log->error("{}", written.error().message);
      Fail(kClientRuntimeFailure, written.error().message);
    }
  }
}

void ClientRuntime::State::OnGaveUp(const std::string& why) {
  log->error("{}", why);
  {
    std::lock_guard lock(mu);
    last_error = why;
  }
  if (stopping) return;
  if (payment_exit_code != 0) {
    // Let the CLOSE frame (kSpendCap / kTermsRefused / kOvercharge) go out first.
    exit_code = payment_exit_code;
    if (frontend) frontend->Stop();
    grace.expires_after(kCloseGrace);
    grace.async_wait([this](const session::error_code&) { io.stop(); });
    return;
  }
  Fail(kClientRuntimeFailure, why);
}

void ClientRuntime::State::OnPaymentFinal(Hop& hop, payments::CloseReason reason,
                                          const std::string& why) {
  if (hop.picker && reason != payments::CloseReason::kSpendCap) {
    // An overcharge or refused terms: this provider failed; the hop's keeper moves on when the
    // tunnel (already closed by the payment layer) is gone.
    hop.keeper->ProviderFailed(reason == payments::CloseReason::kOvercharge
                                   ? session::ProviderFailure::kOvercharge
                                   : session::ProviderFailure::kRefused,
                               why);
    return;
  }
  payment_exit_code =
      reason == payments::CloseReason::kSpendCap ? kClientSpendCap : kClientPaymentRefused;
  hop.keeper->Halt(why);
}

Result<std::unique_ptr<ClientRuntime>, client::Errc> ClientRuntime::Start(
    ClientRuntimeConfig config) {
  if (auto built = CheckPathSpec(config.path); !built) {
    return dvpn::Fail(client::Errc::kBadConfig, built.error().message);
  }
  auto s = std::make_shared<State>(std::move(config));
  ClientRuntimeConfig& c = s->config;
  s->spent_at_start = c.pay.daily ? c.pay.daily->SpentOn(Today()) : Amount();
  s->auth_required = c.frontend.credentials.has_value();
  if (!c.pay.carry) c.pay.carry = std::make_shared<session::CarryBook>();

  if (!c.pay.policy.top_up_amount.IsZero()) {
    if (!c.ledger_client) {
      return dvpn::Fail(client::Errc::kBadConfig, "a top-up needs the ledger");
    }
    s->top_up = std::make_unique<EscrowTopUp>(
        c.ledger_client, EscrowTopUp::Options{.client = c.pay.identity,
                                              .ledger = c.pay.ledger,
                                              .channel = c.pay.channel,
                                              .amount = c.pay.policy.top_up_amount,
                                              .below = c.pay.policy.low_escrow_threshold});
    if (auto started = s->top_up->Start(); !started) {
      return std::unexpected(std::move(started.error()));
    }
    c.pay.on_escrow_use = [t = s->top_up.get()](Amount cumulative, bool low) {
      t->OnEscrowUse(cumulative, low);
    };
  }

  // The io thread's callbacks hold the state and its hops by raw pointer: they run while `s`
  // lives (joined in Stop).
  if (c.full_tunnel) {
    auto packets = session::ClientPackets::Start(s->io.get_executor(), *c.full_tunnel);
    if (!packets) {
      return dvpn::Fail(client::Errc::kBadConfig, "full tunnel: " + packets.error().message);
    }
    s->packets = std::move(*packets);
  }
  s->path = std::make_shared<PathProviders>(c.path.hops);
  for (uint32_t i = 0; i < c.path.hops; ++i) s->BuildHop(i);
  if (s->packets && s->hops.back()->picker) {
    // An exit that refuses packet mode failed for this client: the keeper moves on.
    s->packets->SetRefusedHandler([h = s->hops.back().get()](const std::string& why) {
      h->keeper->ProviderFailed(session::ProviderFailure::kRefused, why);
    });
  }
  State* raw = s.get();
  for (auto& hop : s->hops) {
    hop->keeper->Start([raw, h = hop.get()] { raw->OnHopUp(*h); },
                       [raw](const std::string& why) { raw->OnGaveUp(why); });
  }
  for (const auto& hop : s->hops) {
    if (!hop->picker) continue;
    s->SampleTick();  // every ending runs io.stop(): the timer needs no cancel
    break;
  }

  auto runtime = std::unique_ptr<ClientRuntime>(new ClientRuntime(s));
  runtime->io_thread_ = std::thread([s] {
    NameThisThread("client-io");
    s->io.run();
    s->ReportThroughput();
    if (s->config.pay.journal) {  // a clean stop gives back the unused part of today's reservation
      const uint64_t today = Today();
      if (auto t = s->config.pay.journal->Trim(today, s->config.pay.daily->SpentOn(today)); !t) {
        s->log->warn("{}", t.error().message);
      }
    }
    if (s->packets) s->packets->Stop();  // the routes and the device go with the connection
    s->SetState(s->exit_code == kClientOk ? ClientState::kStopped : ClientState::kFailed);
    s->finished = true;
  });
  return runtime;
}

ClientRuntime::ClientRuntime(std::shared_ptr<State> state) : state_(std::move(state)) {}

ClientRuntime::~ClientRuntime() { Stop(); }

ClientStatus ClientRuntime::Status() {
  ClientStatus out;
  // Handlers posted to the io thread hold the state by raw pointer: one left in the queue when
  // the io thread ends would otherwise keep the state (and its io_context) alive in a cycle.
  // The state outlives the io thread (Stop joins it before the runtime lets go of the state).
  State* s = state_.get();
  out.hops.resize(s->hops.size());
  if (!s->finished) {
    // The tunnels' counters and the payment sessions live on the io thread.
    auto live = std::make_shared<std::promise<std::vector<HopStatus>>>();
    auto future = live->get_future();
    auto packets = std::make_shared<session::ClientPacketsStatus>();
    session::asio::post(s->io, [s, live, packets] {
      if (s->packets) *packets = s->packets->status();
      live->set_value(s->LiveHops());
    });
    if (future.wait_for(kStatusTimeout) == std::future_status::ready) {
      out.hops = future.get();
      out.packets = *packets;
      for (const HopStatus& h : out.hops) out.reconnects += h.reconnects;
      out.bytes_sent = out.hops.front().bytes_sent;
      out.bytes_received = out.hops.front().bytes_received;
    }
  }
  if (s->config.pay.daily) {
    out.spent_today = s->config.pay.daily->SpentOn(Today());
    // A new UTC day starts from zero: then everything counted today is since start.
    out.spent_since_start =
        out.spent_today.CheckedSub(s->spent_at_start).value_or(out.spent_today);
  }
  std::lock_guard lock(s->mu);
  out.state = s->state;
  for (size_t i = 0; i < s->hops.size(); ++i) {
    const Hop& hop = *s->hops[i];
    HopStatus& h = out.hops[i];
    if (s->finished) {  // the io thread ended: its objects may be read here
      h.state = s->state;
      h.spent = hop.Spent();
    }
    h.provider_address = hop.provider_address;
    h.provider_endpoint = hop.provider_endpoint;
    h.price_per_mb = hop.price_per_mb;
    out.price_per_mb = out.price_per_mb.CheckedAdd(hop.price_per_mb).value_or(out.price_per_mb);
  }
  out.provider_address = out.hops.back().provider_address;
  out.provider_endpoint = out.hops.back().provider_endpoint;
  out.socks_port = s->socks_port;
  out.last_error = s->last_error;
  out.full_tunnel = s->config.full_tunnel.has_value();
  if (out.last_error.empty()) out.last_error = out.packets.last_error;
  return out;
}

ClientState ClientRuntime::state() const {
  std::lock_guard lock(state_->mu);
  return state_->state;
}

bool ClientRuntime::Finished() const { return state_->finished; }

int ClientRuntime::ExitCode() const { return state_->exit_code; }

void ClientRuntime::Stop() {
  State* s = state_.get();  // raw: see Status()
  if (!io_thread_.joinable()) return;
  session::asio::post(s->io, [s] {
    if (s->stopping) return;
    s->stopping = true;
    s->log->info("shutting down");
    if (s->frontend) s->frontend->Stop();
    auto left = std::make_shared<size_t>(s->hops.size());
    for (auto& hop : s->hops) {
      hop->keeper->Stop([s, left] {
        if (--*left == 0) s->io.stop();
      });
    }
    s->grace.expires_after(kShutdownGrace);
    s->grace.async_wait([s](const session::error_code&) { s->io.stop(); });
  });
  io_thread_.join();
}

}  // namespace dvpn::tunnel_client
