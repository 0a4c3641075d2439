#include "client/client_runtime.h"

#include <atomic>
#include <future>
#include <mutex>

#include "common/clock.h"
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

struct ClientRuntime::State {
  explicit State(ClientRuntimeConfig c) : config(std::move(c)), grace(io), sampler(io) {}

  ClientRuntimeConfig config;
  session::asio::io_context io{1};
  std::shared_ptr<spdlog::logger> log = Logger("dvpn-tunnel-client");
  std::shared_ptr<OfferPicker> picker;
  std::unique_ptr<EscrowTopUp> top_up;
  std::shared_ptr<session::TunnelSlot> slot = std::make_shared<session::TunnelSlot>();
  std::shared_ptr<session::TunnelKeeper> keeper;
  std::shared_ptr<session::SocksFrontend> frontend;
  session::asio::steady_timer grace;
  session::asio::steady_timer sampler;
  bool stopping = false;  // io thread
  bool auth_required = false;
  int payment_exit_code = 0;  // io thread: set when the payment layer ended the client for good

  // Throughput of the chosen provider, for its score: the busiest second seen on its tunnels
  // (only seconds that moved at least 1 MB count: an idle tunnel says nothing of capacity).
  struct ThroughputSample {
    std::optional<session::ProviderTarget> target;
    const session::TunnelConnection* tunnel = nullptr;
    uint64_t bytes = 0;
    double best_mbps = 0;
  } sample;

  std::atomic<bool> finished{false};
  std::atomic<int> exit_code{kClientOk};
  Amount spent_at_start;

  mutable std::mutex mu;  // guards the status fields below
  ClientState state = ClientState::kConnecting;
  std::string provider_address;
  std::string provider_endpoint;
  Amount price_per_mb;
  uint16_t socks_port = 0;
  std::string last_error;

  void SetState(ClientState s) {
    std::lock_guard lock(mu);
    state = s;
  }
  void ReportThroughput() {
    if (picker && sample.target && sample.best_mbps > 0) {
      picker->MeasuredThroughput(*sample.target, sample.best_mbps);
    }
    sample.best_mbps = 0;
  }
  // Ends the runtime with `code` at once (io thread).
  void Fail(int code, const std::string& why) {
    exit_code = code;
    {
      std::lock_guard lock(mu);
      last_error = why;
    }
    if (frontend) frontend->Stop();
    keeper->Stop();
    io.stop();
  }
  void SampleTick() {
    sampler.expires_after(1s);
    sampler.async_wait([this](const session::error_code& ec) {
      if (ec) return;
      if (auto t = slot->current()) {
        const uint64_t bytes = t->data_bytes_sent() + t->data_bytes_received();
        if (t.get() == sample.tunnel && bytes - sample.bytes >= 1'000'000) {
          sample.best_mbps = std::max(sample.best_mbps, (bytes - sample.bytes) * 8.0 / 1e6);
        }
        sample.tunnel = t.get();
        sample.bytes = bytes;
      }
      SampleTick();
    });
  }
  void StartSocks();
  void OnGaveUp(const std::string& why);
  void OnPaymentFinal(payments::CloseReason reason, const std::string& why);
};

void ClientRuntime::State::StartSocks() {
  SetState(ClientState::kConnected);
  if (frontend) return;  // a reconnect: the SOCKS server is already up
  try {
    frontend = std::make_shared<session::SocksFrontend>(io, config.socks, slot,
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

void ClientRuntime::State::OnPaymentFinal(payments::CloseReason reason, const std::string& why) {
  if (picker && reason != payments::CloseReason::kSpendCap) {
    // An overcharge or refused terms: this provider failed; the keeper moves on when the
    // tunnel (already closed by the payment layer) is gone.
    keeper->ProviderFailed(reason == payments::CloseReason::kOvercharge
                               ? session::ProviderFailure::kOvercharge
                               : session::ProviderFailure::kRefused,
                           why);
    return;
  }
  payment_exit_code =
      reason == payments::CloseReason::kSpendCap ? kClientSpendCap : kClientPaymentRefused;
  keeper->Halt(why);
}

Result<std::unique_ptr<ClientRuntime>, client::Errc> ClientRuntime::Start(
    ClientRuntimeConfig config) {
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

  State* raw = s.get();  // the io thread's callbacks run while `s` lives (joined in Stop)
  session::TunnelKeeper::Options keeper_options = std::move(c.keeper);
  if (c.provider) {
    keeper_options.provider = *c.provider;
    keeper_options.handshake.provider_static = c.provider_key;
    std::lock_guard lock(s->mu);
    s->provider_endpoint = c.provider->address().to_string() + ":" +
                           std::to_string(c.provider->port());
    if (c.pay.expected_payee) s->provider_address = c.pay.expected_payee->ToString();
  }
  if (c.picker) {
    s->picker = std::make_shared<OfferPicker>(std::move(*c.picker), std::move(c.stats));
    keeper_options.picker = s->picker;
    // The chosen provider's channel and payee become the payment layer's for that session.
    keeper_options.on_target = [raw](const session::ProviderTarget& t) {
      if (raw->sample.target && raw->sample.target->provider_static != t.provider_static) {
        raw->ReportThroughput();
      }
      raw->sample.target = t;
      raw->config.pay.channel = t.channel;
      raw->config.pay.expected_payee.reset();
      std::lock_guard lock(raw->mu);
      raw->provider_address.clear();
      raw->provider_endpoint.clear();
      if (auto offer = raw->picker->current_offer()) {
        if (auto key = payments::PublicKey::Parse(offer->provider)) {
          raw->config.pay.expected_payee = payments::Address::FromPublicKey(*key);
          raw->provider_address = raw->config.pay.expected_payee->ToString();
        }
        raw->price_per_mb = offer->price_per_mb;
        if (!offer->endpoints.empty()) raw->provider_endpoint = offer->endpoints[0].ToString();
      }
    };
  }
  keeper_options.handshake.identity = c.pay.identity;
  keeper_options.handshake.ledger = c.pay.ledger;
  keeper_options.handshake.channel = c.pay.channel;
  keeper_options.on_tunnel = [raw](const std::shared_ptr<session::TunnelConnection>& t) {
    session::PayerController::Attach(
        t, raw->config.pay,
        [raw](payments::CloseReason r, const std::string& why) { raw->OnPaymentFinal(r, why); });
  };
  s->keeper = std::make_shared<session::TunnelKeeper>(s->io.get_executor(), s->slot,
                                                      std::move(keeper_options));
  s->keeper->Start([raw] { raw->StartSocks(); },
                   [raw](const std::string& why) { raw->OnGaveUp(why); });
  if (s->picker) s->SampleTick();  // every ending runs io.stop(): the timer needs no cancel

  auto runtime = std::unique_ptr<ClientRuntime>(new ClientRuntime(s));
  runtime->io_thread_ = std::thread([s] {
    s->io.run();
    s->ReportThroughput();
    if (s->config.pay.journal) {  // a clean stop gives back the unused part of today's reservation
      const uint64_t today = Today();
      if (auto t = s->config.pay.journal->Trim(today, s->config.pay.daily->SpentOn(today)); !t) {
        s->log->warn("{}", t.error());
      }
    }
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
  if (!s->finished) {
    // The tunnel's counters live on the io thread.
    auto counts = std::make_shared<std::promise<std::tuple<uint64_t, uint64_t, uint64_t, bool>>>();
    auto future = counts->get_future();
    session::asio::post(s->io, [s, counts] {
      auto t = s->slot->current();
      counts->set_value({t ? t->data_bytes_sent() : 0, t ? t->data_bytes_received() : 0,
                         s->keeper->reconnects(), t != nullptr});
    });
    if (future.wait_for(kStatusTimeout) == std::future_status::ready) {
      auto [sent, received, reconnects, up] = future.get();
      out.bytes_sent = sent;
      out.bytes_received = received;
      out.reconnects = reconnects;
      std::lock_guard lock(s->mu);
      if (!up && s->state == ClientState::kConnected) s->state = ClientState::kReconnecting;
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
  out.provider_address = s->provider_address;
  out.provider_endpoint = s->provider_endpoint;
  out.price_per_mb = s->price_per_mb;
  out.socks_port = s->socks_port;
  out.last_error = s->last_error;
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
    s->keeper->Stop([s] { s->io.stop(); });
    s->grace.expires_after(kShutdownGrace);
    s->grace.async_wait([s](const session::error_code&) { s->io.stop(); });
  });
  io_thread_.join();
}

}  // namespace dvpn::tunnel_client
