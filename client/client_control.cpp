#include "client/client_control.h"

#include <thread>

#include "common/log.h"
#include "marketplace/offer.h"

namespace dvpn::client {
namespace {

using namespace std::chrono_literals;
using tunnel_client::ClientState;

constexpr uint32_t kDefaultWaitMs = 15'000;
constexpr uint32_t kMaxWaitMs = 60'000;
constexpr std::chrono::milliseconds kPoll{50};
constexpr std::chrono::milliseconds kSupervisePoll{200};

}  // namespace

ClientController::ClientController(Factory factory, ConnectPolicy defaults,
                                   std::string wallet_address, Amount daily_cap,
                                   std::string socks_host, Options options)
    : factory_(std::move(factory)),
      defaults_(std::move(defaults)),
      wallet_address_(std::move(wallet_address)),
      daily_cap_(daily_cap),
      socks_host_(std::move(socks_host)),
      options_(options),
      supervisor_([this] { Supervise(); }) {}

ClientController::~ClientController() {
  Disconnect();
  {
    std::lock_guard lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  supervisor_.join();
}

v1::ClientStatus ClientController::StatusLocked() {
  if (!runtime_) {
    v1::ClientStatus s = last_.value_or(v1::ClientStatus());
    if (!last_) s.set_state(wanted_ ? "connecting" : "disconnected");
    if (wanted_) s.set_last_error(retry_error_);
    s.set_wallet_address(wallet_address_);
    s.set_daily_cap_micro(daily_cap_.micro());
    s.set_socks_address("");
    return s;
  }
  const tunnel_client::ClientStatus st = runtime_->Status();
  v1::ClientStatus s;
  s.set_state(tunnel_client::ClientStateName(st.state));
  s.set_wallet_address(wallet_address_);
  s.set_provider_address(st.provider_address);
  s.set_provider_endpoint(st.provider_endpoint);
  s.set_price_per_mb_micro(st.price_per_mb.micro());
  if (st.socks_port != 0 && !runtime_->Finished()) {
    s.set_socks_address(socks_host_ + ":" + std::to_string(st.socks_port));
  }
  s.set_bytes_sent(st.bytes_sent);
  s.set_bytes_received(st.bytes_received);
  s.set_spent_today_micro(st.spent_today.micro());
  s.set_spent_session_micro(st.spent_since_start.micro());
  s.set_daily_cap_micro(daily_cap_.micro());
  s.set_reconnects(st.reconnects);
  s.set_last_error(st.last_error);
  s.set_mode(st.full_tunnel ? "full-tunnel" : "socks");
  if (st.packets.ready) {
    s.set_inner_ipv4(st.packets.inner_ipv4);
    s.set_inner_ipv6(st.packets.inner_ipv6);
    s.set_transport(st.packets.transport);
  }
  if (NeedsRetryLocked()) {
    // Between attempts: still wanted, so "connecting", with why the last attempt ended.
    s.set_state("connecting");
    std::string why = st.last_error;
    if (retry_at_) {
      const auto left = std::chrono::ceil<std::chrono::seconds>(*retry_at_ -
                                                                std::chrono::steady_clock::now());
      why += "; trying again in " + std::to_string(std::max<int64_t>(left.count(), 0)) + " s";
    }
    s.set_last_error(why);
  }
  return s;
}

bool ClientController::NeedsRetryLocked() const {
  if (!wanted_) return false;
  if (!runtime_) return true;
  return runtime_->Finished() && runtime_->ExitCode() == tunnel_client::kClientRuntimeFailure;
}

Result<void, Errc> ClientController::StartLocked() {
  auto config = factory_(*wanted_);
  if (!config) return std::unexpected(std::move(config.error()));
  auto runtime = tunnel_client::ClientRuntime::Start(std::move(*config));
  if (!runtime) return std::unexpected(std::move(runtime.error()));
  runtime_ = std::move(*runtime);
  return {};
}

void ClientController::Supervise() {
  auto log = Logger("dvpn-client");
  std::unique_lock lock(mu_);
  while (!quit_) {
    cv_.wait_for(lock, kSupervisePoll);
    if (quit_) break;
    if (!wanted_) continue;
    if (runtime_ && !runtime_->Finished()) {
      if (runtime_->state() == ClientState::kConnected) backoff_ = options_.retry_first;
      continue;
    }
    if (!NeedsRetryLocked()) continue;  // a spend cap or refused terms: final
    const auto now = std::chrono::steady_clock::now();
    if (!retry_at_) {
      if (runtime_) retry_error_ = runtime_->Status().last_error;
      retry_at_ = now + backoff_;
      log->warn("not connected: {}; trying again in {} ms", retry_error_, backoff_.count());
      continue;
    }
    if (now < *retry_at_) continue;
    retry_at_.reset();
    backoff_ = std::min(backoff_ * 2, options_.retry_max);
    if (runtime_) {
      runtime_->Stop();  // finished already: joins its io thread
      runtime_.reset();
    }
    if (auto started = StartLocked(); !started) retry_error_ = started.error().message;
  }
}

Result<v1::ClientStatus, Errc> ClientController::Connect(
    const ConnectPolicy& policy, std::chrono::milliseconds wait) {
  std::lock_guard calls(calls_mu_);
  std::unique_lock lock(mu_);
  if (runtime_) {
    runtime_->Stop();
    runtime_.reset();
  }
  last_.reset();
  wanted_ = policy;
  backoff_ = options_.retry_first;
  retry_at_.reset();
  retry_error_.clear();
  if (auto started = StartLocked(); !started) {
    wanted_.reset();
    return std::unexpected(std::move(started.error()));
  }
  cv_.notify_all();
  // Retries may replace the runtime while this waits (mu_ is released in the wait).
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (runtime_ && !runtime_->Finished()) {
      auto st = runtime_->Status();
      if (st.state == ClientState::kConnected && st.socks_port != 0 &&
          (!st.full_tunnel || st.packets.ready)) {
        break;
      }
    } else if (!NeedsRetryLocked()) {
      break;  // ended for good
    }
    cv_.wait_for(lock, kPoll);
  }
  return StatusLocked();
}

v1::ClientStatus ClientController::Disconnect() {
  std::lock_guard calls(calls_mu_);
  std::lock_guard lock(mu_);
  const bool was_wanted = wanted_.has_value();
  wanted_.reset();
  retry_at_.reset();
  if (runtime_) {
    runtime_->Stop();
    v1::ClientStatus final_status = StatusLocked();
    final_status.set_state("disconnected");
    final_status.set_socks_address("");
    final_status.set_bytes_sent(0);
    final_status.set_bytes_received(0);
    last_ = final_status;
    runtime_.reset();
  } else if (was_wanted) {
    last_.reset();
  }
  retry_error_.clear();
  return StatusLocked();
}

v1::ClientStatus ClientController::Status() {
  std::lock_guard lock(mu_);
  return StatusLocked();
}

grpc::Status ClientControlService::Connect(grpc::ServerContext*, const v1::ConnectRequest* request,
                                           v1::ClientStatus* reply) {
  ConnectPolicy policy = controller_.defaults();
  auto max_price = marketplace::PriceFromMicro(request->max_price_per_mb_micro());
  if (!max_price) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "max_price_per_mb_micro: " + max_price.error().message);
  }
  if (max_price->micro() != 0) policy.max_price_per_mb = *max_price;
  if (!request->region().empty()) {
    if (auto ok = marketplace::CheckRegion(request->region()); !ok) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "region: " + ok.error().message);
    }
    policy.region = request->region();
  }
  if (!request->provider_address().empty()) {
    policy.provider = payments::Address::Parse(request->provider_address());
    if (!policy.provider) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "provider_address: not an address (dv and 48 hex digits)");
    }
  }
  if (request->full_tunnel()) policy.full_tunnel = true;
  const uint32_t wait = request->wait_ms() == 0 ? kDefaultWaitMs : request->wait_ms();
  if (wait > kMaxWaitMs) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "wait_ms: at most 60000");
  }
  auto status = controller_.Connect(policy, std::chrono::milliseconds(wait));
  if (!status) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, status.error().message);
  }
  *reply = std::move(*status);
  return grpc::Status::OK;
}

grpc::Status ClientControlService::Disconnect(grpc::ServerContext*, const v1::DisconnectRequest*,
                                              v1::ClientStatus* reply) {
  *reply = controller_.Disconnect();
  return grpc::Status::OK;
}

grpc::Status ClientControlService::GetStatus(grpc::ServerContext*,
                                             const v1::GetClientStatusRequest*,
                                             v1::ClientStatus* reply) {
  *reply = controller_.Status();
  return grpc::Status::OK;
}

}  // namespace dvpn::client
