#include "tunnel/session/exit_server.h"

#include <array>
#include <utility>
#include <vector>

#include "common/log.h"
#include "payments/wire/control_codec.h"

namespace dvpn::tunnel::session {
namespace {

SourceKey SourceOf(const asio::ip::address& a) {
  if (a.is_v4()) return SourceKeyFromIpv4(a.to_v4().to_bytes());
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return SourceKeyFromIpv4(v6.to_v4().to_bytes());
  return SourceKeyFromIpv6(v6.to_bytes());
}

IpAddress ToIpAddress(const asio::ip::address& a) {
  if (a.is_v4()) return IpAddress::V4(a.to_v4().to_bytes());
  return IpAddress::V6(a.to_v6().to_bytes());
}

OpenFailure FailureFor(const error_code& ec, bool timed_out) {
  if (timed_out) return OpenFailure::kTtlExpired;
  if (ec == asio::error::connection_refused) return OpenFailure::kRefused;
  if (ec == asio::error::host_unreachable) return OpenFailure::kHostUnreachable;
  if (ec == asio::error::network_unreachable) return OpenFailure::kNetworkUnreachable;
  if (ec == asio::error::timed_out) return OpenFailure::kTtlExpired;
  return OpenFailure::kGeneral;
}

}  // namespace

ExitServer::ExitServer(asio::io_context& io, const tcp::endpoint& listen,
                       const X25519KeyPair& static_key, ExitPolicy policy, Options options)
    : acceptor_(io, listen),
      static_key_(static_key),
      policy_(std::move(policy)),
      options_(options),
      rate_limiter_(options.rate_limit) {
  if (options_.bandwidth) options_.connection.bandwidth = options_.bandwidth;
}

void ExitServer::Start() {
  auto self = shared_from_this();
  asio::co_spawn(
      acceptor_.get_executor(), [self]() { return self->AcceptLoop(); }, asio::detached);
}

void ExitServer::Stop(std::function<void()> on_idle) {
  error_code ignored;
  acceptor_.close(ignored);
  on_idle_ = std::move(on_idle);
  if (tunnels_.empty()) {
    if (on_idle_) asio::post(acceptor_.get_executor(), std::exchange(on_idle_, nullptr));
    return;
  }
  CloseAll(CloseReason::kShutdown, "exit shutting down");
}

void ExitServer::CloseAll(CloseReason reason, const std::string& why) {
  auto tunnels = tunnels_;  // Close may erase from tunnels_
  for (auto& [t, entry] : tunnels) t->Close(reason, why, true);
}

std::vector<ExitServer::TunnelInfo> ExitServer::Tunnels() const {
  std::vector<TunnelInfo> out;
  out.reserve(tunnels_.size());
  for (const auto& [t, entry] : tunnels_) {
    TunnelInfo info{.name = t->name(),
                    .peer = entry.peer,
                    .started_unix_ms = entry.started_unix_ms,
                    .bytes_sent = t->data_bytes_sent(),
                    .bytes_received = t->data_bytes_received(),
                    .payment = std::nullopt};
    if (entry.controller) info.payment = entry.controller->GetSnapshot();
    out.push_back(std::move(info));
  }
  return out;
}

uint64_t ExitServer::metered_bytes_total() const {
  uint64_t total = closed_metered_bytes_;
  for (const auto& [t, entry] : tunnels_) total += t->data_bytes_sent() + t->data_bytes_received();
  return total;
}

asio::awaitable<void> ExitServer::AcceptLoop() {
  auto self = shared_from_this();
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      TunnelLog()->warn("exit: accept failed: {}", ec.message());
      // Out of descriptors (or similar) fails again at once: pause instead of spinning.
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (ec) continue;
    if (!rate_limiter_.Allow(SourceOf(remote.address()), MonotonicMs())) {
      TunnelLog()->debug("exit: handshake rate limit reached for a source; connection dropped");
      continue;
    }
    if (tunnels_.size() >= options_.max_tunnels) {
      TunnelLog()->warn("exit: {} tunnels open (the maximum); connection dropped", tunnels_.size());
      continue;
    }
    asio::co_spawn(
        acceptor_.get_executor(),
        [self, s = std::move(socket)]() mutable { return self->Handshake(std::move(s)); },
        asio::detached);
  }
}

asio::awaitable<void> ExitServer::Handshake(tcp::socket socket) {
  auto self = shared_from_this();
  std::array<uint8_t, kMaxHandshakeMessage> buf{};
  SessionKeys keys;
  std::optional<ClientHello> hello;
  std::optional<ExitPayments::Admission> admission;
  std::optional<std::string> refusal;
  std::chrono::steady_clock::time_point msg2_sent;
  // A channel admitted but never served is released.
  struct ReleaseGuard {
    ExitPayments* payments = nullptr;
    std::optional<ExitPayments::Admission>* admission;
    bool armed = true;
    ~ReleaseGuard() {
      if (armed && payments && admission->has_value()) payments->Release((*admission)->channel.id);
    }
  } release_guard{options_.payments.get(), &admission};
  {
    Watchdog deadline(socket.get_executor(), options_.handshake_timeout, [&socket] {
      error_code ignored;
      socket.close(ignored);
    });

    error_code ec;
    co_await asio::async_read(socket, asio::buffer(buf.data(), kHandshakeHeaderSize),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      TunnelLog()->debug("exit: handshake aborted before msg1: {}", ec.message());
      co_return;
    }
    auto size = HandshakeMessageSize(ByteSpan(buf.data(), kHandshakeHeaderSize));
    if (!size || *size != kMsg1Size) {
      TunnelLog()->debug("exit: not a handshake (bad msg1 header); connection dropped");
      co_return;
    }
    co_await asio::async_read(
        socket, asio::buffer(buf.data() + kHandshakeHeaderSize, kMsg1Size - kHandshakeHeaderSize),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      TunnelLog()->debug("exit: msg1 truncated: {}", ec.message());
      co_return;
    }
    HandshakeResponder::Options responder_options;
    responder_options.static_key = &static_key_;
    responder_options.replay_guard = &replay_guard_;
    responder_options.clock = &clock_;
    HandshakeResponder responder(std::move(responder_options));
    ByteSpan msg1(buf.data(), kMsg1Size);
    if (!responder.CheckMac1(msg1)) {
      TunnelLog()->debug("exit: msg1 with a bad mac1 (client does not know our key); dropped");
      co_return;
    }
    auto h = responder.ReadMessage1(msg1);
    if (!h) {
      TunnelLog()->debug("exit: msg1 rejected: {}: {}", HandshakeErrcName(h.error().code),
                   h.error().message);
      co_return;
    }
    hello = *h;
    auto cipher = ChooseCipher(hello->ciphers, LocalCiphers());
    if (!cipher) {
      TunnelLog()->debug("exit: no common cipher; dropped");
      co_return;
    }
    std::vector<uint8_t> params;
    if (options_.payments) {
      auto admitted = co_await options_.payments->Admit(*hello);
      if (!socket.is_open()) {  // the handshake timed out meanwhile
        if (admitted) options_.payments->Release(hello->channel);
        co_return;
      }
      if (admitted) {
        params = payments::wire::EncodeTerms(admitted->terms);
        admission = std::move(*admitted);
      } else {
        refusal = admitted.error();
      }
    }
    msg2_sent = std::chrono::steady_clock::now();
    auto n = responder.WriteMessage2(buf, *cipher, params);
    if (!n) {
      TunnelLog()->warn("exit: cannot write msg2: {}", n.error().message);
      co_return;
    }
    co_await asio::async_write(socket, asio::buffer(buf.data(), *n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      TunnelLog()->debug("exit: cannot send msg2: {}", ec.message());
      co_return;
    }
    auto k = responder.TakeKeys();
    if (!k) co_return;
    keys = std::move(*k);
  }
  if (!socket.is_open()) co_return;
  std::string name = "tunnel#" + std::to_string(next_tunnel_++);
  TunnelLog()->info("exit: {} established ({}, client {})", name, CipherName(keys.cipher),
              ToHex(hello->identity.bytes()).substr(0, 16));
  std::string peer;
  {
    error_code ignored;
    auto remote = socket.remote_endpoint(ignored);
    peer = remote.address().to_string() + ":" + std::to_string(remote.port());
  }
  auto tunnel = std::make_shared<TunnelConnection>(std::move(socket), keys, Role::kExit,
                                                   options_.connection, name);
  auto& entry = tunnels_[tunnel];
  entry.peer = std::move(peer);
  entry.started_unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
  std::weak_ptr<TunnelConnection> weak = tunnel;
  std::shared_ptr<PayeeController> controller;
  if (admission) {
    payments::PayeeSession::Options po{.terms = admission->terms,
                                       .ledger = hello->ledger,
                                       .channel = hello->channel,
                                       .client = hello->identity,
                                       .deposit = admission->channel.deposit};
    auto session = payments::PayeeSession::Create(std::move(po));
    if (!session) {
      refusal = session.error().message;
    } else {
      release_guard.armed = false;
      controller = std::make_shared<PayeeController>(options_.payments, std::move(*session), tunnel,
                                                     admission->channel, msg2_sent);
      entry.controller = controller;
    }
  }
  tunnel->Start(
      [self, weak](uint32_t id, const Destination& dest) {
        auto t = weak.lock();
        if (!t) return;
        asio::co_spawn(
            self->acceptor_.get_executor(),
            [self, t, id, dest]() { return self->ServeOpen(t, id, dest); }, asio::detached);
      },
      [self, weak, name, controller]() {
        TunnelLog()->info("exit: {} closed", name);
        if (controller) controller->OnClosed();
        if (auto t = weak.lock()) {
          if (self->tunnels_.erase(t) > 0) {
            self->closed_metered_bytes_ += t->data_bytes_sent() + t->data_bytes_received();
          }
        }
        if (self->tunnels_.empty() && self->on_idle_) std::exchange(self->on_idle_, nullptr)();
      });
  if (refusal) {
    TunnelLog()->info("exit: {} refused: payment required: {}", name, *refusal);
    tunnel->Close(CloseReason::kPaymentRequired, *refusal, true);
    co_return;
  }
  if (refusal_) {
    TunnelLog()->info("exit: {} refused: {}", name, *refusal_);
    tunnel->Close(CloseReason::kShutdown, *refusal_, true);
    co_return;
  }
  if (controller) controller->Start();
}

asio::awaitable<void> ExitServer::ServeOpen(std::shared_ptr<TunnelConnection> tunnel, uint32_t id,
                                            Destination dest) {
  auto self = shared_from_this();
  auto ex = co_await asio::this_coro::executor;
  if (options_.log_destinations) {
    TunnelLog()->info("exit: {} stream {} -> {}", tunnel->name(), id, ToString(dest));
  }
  std::vector<tcp::endpoint> candidates;
  if (dest.kind == Destination::Kind::kDomain) {
    tcp::resolver resolver(ex);
    bool timed_out = false;
    error_code ec;
    tcp::resolver::results_type results;
    {
      Watchdog deadline(ex, options_.resolve_timeout, [&] {
        timed_out = true;
        resolver.cancel();
      });
      results = co_await resolver.async_resolve(dest.domain, std::to_string(dest.port),
                                                tcp::resolver::numeric_service,
                                                asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      if (options_.log_destinations) {
        TunnelLog()->info("exit: {} stream {}: cannot resolve: {}", tunnel->name(), id, ec.message());
      }
      tunnel->RefuseStream(id,
                           timed_out ? OpenFailure::kTtlExpired : OpenFailure::kHostUnreachable);
      co_return;
    }
    for (const auto& r : results) candidates.push_back(r.endpoint());
  } else if (dest.kind == Destination::Kind::kIpv4) {
    candidates.emplace_back(asio::ip::address_v4(dest.v4), dest.port);
  } else {
    candidates.emplace_back(asio::ip::address_v6(dest.v6), dest.port);
  }
  if (tunnel->closed()) co_return;

  std::vector<tcp::endpoint> allowed;
  for (const auto& ep : candidates) {
    auto decision = policy_.Decide(ToIpAddress(ep.address()), ep.port());
    if (decision.allowed) {
      allowed.push_back(ep);
    } else if (options_.log_destinations) {
      TunnelLog()->info("exit: {} stream {}: {} refused by rule \"{}\"", tunnel->name(), id,
                  ep.address().to_string(), decision.rule);
    }
  }
  if (candidates.empty()) {
    tunnel->RefuseStream(id, OpenFailure::kHostUnreachable);
    co_return;
  }
  if (allowed.empty()) {
    tunnel->RefuseStream(id, OpenFailure::kNotAllowed);
    co_return;
  }

  OpenFailure failure = OpenFailure::kGeneral;
  auto deadline_at = asio::steady_timer::clock_type::now() + options_.connect_timeout;
  for (const auto& ep : allowed) {
    tcp::socket upstream(ex);
    bool timed_out = false;
    error_code ec;
    {
      Watchdog deadline(ex, deadline_at, [&] {
        timed_out = true;
        error_code ignored;
        upstream.close(ignored);
      });
      co_await upstream.async_connect(ep, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!ec && upstream.is_open()) {
      if (!tunnel->AcceptStream(id, std::move(upstream))) co_return;
      co_return;
    }
    failure = FailureFor(ec, timed_out);
    if (options_.log_destinations) {
      TunnelLog()->info("exit: {} stream {}: connect to {} failed: {}", tunnel->name(), id,
                  ep.address().to_string(), timed_out ? "timeout" : ec.message());
    }
    if (timed_out || tunnel->closed()) break;
  }
  tunnel->RefuseStream(id, failure);
}

}  // namespace dvpn::tunnel::session
