#include "tunnel/session/exit_server.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/log.h"

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

// accept() backs off this long after a failure (no descriptors), doubling up to the maximum.
constexpr std::chrono::milliseconds kAcceptBackoffMin{10};
constexpr std::chrono::milliseconds kAcceptBackoffMax{1'000};
// Freed tunnels are given back to the system at most this often (malloc_trim).
constexpr std::chrono::milliseconds kTrimDelay{1'000};

bool OutOfDescriptors(const error_code& ec) {
  return ec == asio::error::no_descriptors ||
         ec == error_code(ENFILE, boost::system::system_category()) ||
         ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
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
      replay_guard_(options.replay_capacity),
      rate_limiter_(options.rate_limit),
      max_pending_(std::max<size_t>(options.max_pending_handshakes, 1)),
      summary_timer_(io),
      trim_timer_(io) {
  if (options_.bandwidth) options_.connection.bandwidth = options_.bandwidth;
  auto watcher = HostAddressWatcher::Create(io, options_.host_addresses);
  if (!watcher) throw std::runtime_error(watcher.error().message);
  host_watcher_ = std::move(*watcher);
  options_.protected_ports.push_back(acceptor_.local_endpoint().port());
  ProtectPorts({});
}

void ExitServer::ProtectPorts(const std::vector<uint16_t>& ports) {
  options_.protected_ports.insert(options_.protected_ports.end(), ports.begin(), ports.end());
  if (!own_host_.SetProtectedPorts(options_.protected_ports)) {
    TunnelLog()->warn("exit: more than {} protected ports; the highest are not protected",
                      OwnHost::kMaxProtectedPorts);
  }
}

const OwnHost& ExitServer::own_host() {
  host_watcher_->Poll();
  if (host_watcher_->generation() != host_generation_) {
    host_generation_ = host_watcher_->generation();
    if (!own_host_.SetAddresses(host_watcher_->addresses())) {
      TunnelLog()->warn("exit: the host has more than {} addresses; only the lowest are refused",
                        OwnHost::kMaxAddresses);
    }
  }
  return own_host_;
}

void ExitServer::Start() {
  auto self = shared_from_this();
  // Keep descriptors in reserve for tunnels and their streams: connections that have not
  // finished a handshake may hold at most a sixteenth of the process's open-file limit.
  rlimit lim{};
  uint64_t nofile = 0;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    nofile = lim.rlim_cur;
    max_pending_ = std::clamp<size_t>(nofile / 16, 1, max_pending_);
  }
  TunnelLog()->info(
      "exit: at most {} tunnels, {} pending handshakes (msg1 within {} ms), open-file limit {}",
      options_.max_tunnels, max_pending_, options_.msg1_timeout.count(),
      nofile == 0 ? std::string("unlimited") : std::to_string(nofile));
  if (nofile != 0 && options_.max_tunnels > nofile / 4) {
    TunnelLog()->warn(
        "exit: the open-file limit ({}) leaves fewer than 4 descriptors per tunnel ({} tunnels): "
        "streams may fail to connect when many tunnels are open",
        nofile, options_.max_tunnels);
  }
  last_summary_ = std::chrono::steady_clock::now();
  host_watcher_->Start();
  asio::co_spawn(
      acceptor_.get_executor(), [self]() { return self->AcceptLoop(); },
      [](std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "exit accept loop", e); });
}

Result<void, ExitPacketsErrc> ExitServer::EnablePackets(ExitPacketsOptions options) {
  options.log_destinations = options_.log_destinations;
  auto packets = ExitPackets::Start(
      acceptor_.get_executor(), policy_, [this]() -> const OwnHost& { return own_host(); },
      std::move(options));
  if (!packets) return std::unexpected(packets.error());
  packets_ = std::move(*packets);
  return {};
}

void ExitServer::Stop(std::function<void()> on_idle) {
  error_code ignored;
  acceptor_.close(ignored);
  stopped_ = true;
  // Packet sessions end now (their tunnels are closing); the device, table and socket go.
  if (packets_) packets_->Stop();
  if (summary_armed_) {
    summary_timer_.cancel();
    WriteSummary();
  }
  trim_timer_.cancel();
  host_watcher_->Stop();
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
  auto backoff = kAcceptBackoffMin;
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      // Counted in the summary line (a flood must not make us write a line per attempt).
      Count(&Counters::accept_failed);
      TunnelLog()->debug("exit: accept failed: {}", ec.message());
      // Out of descriptors fails again at once: free the oldest unfinished handshake's and
      // pause (backing off) instead of spinning.
      if (OutOfDescriptors(ec) && EvictOldestPending()) Count(&Counters::pending_capped);
      asio::steady_timer pause(acceptor_.get_executor(), backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, kAcceptBackoffMax);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    backoff = kAcceptBackoffMin;
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (ec) continue;
    if (!rate_limiter_.Allow(SourceOf(remote.address()), MonotonicMs())) {
      Count(&Counters::rate_limited);
      TunnelLog()->debug("exit: handshake rate limit reached for a source; connection dropped");
      continue;
    }
    if (live_tunnels_ + msg2_in_flight_ >= options_.max_tunnels) {
      Count(&Counters::tunnel_limit);
      TunnelLog()->debug("exit: {} tunnels alive (the maximum); connection dropped",
                         live_tunnels_);
      continue;
    }
    if (pending_.size() >= max_pending_) {
      Count(&Counters::pending_capped);
      if (!EvictOldestPending()) {
        TunnelLog()->debug("exit: {} handshakes pending (the maximum); connection dropped",
                           pending_.size());
        continue;
      }
      TunnelLog()->debug("exit: {} handshakes pending (the maximum); the oldest one dropped",
                         pending_.size() + 1);
    }
    auto conn = std::make_shared<PendingConn>(std::move(socket));
    conn->pos = pending_.insert(pending_.end(), conn);
    conn->listed = true;
    asio::co_spawn(
        acceptor_.get_executor(), [self, conn]() { return self->Handshake(conn); },
        [](std::exception_ptr e) {
          if (e) LogTaskFailure(*TunnelLog(), "exit handshake", e);
        });
  }
}

bool ExitServer::EvictOldestPending() {
  for (auto& conn : pending_) {
    if (!conn->awaiting_msg1) continue;
    auto victim = conn;  // keeps it alive past Unlist
    Unlist(*victim);
    error_code ignored;
    victim->socket.close(ignored);  // its Handshake coroutine ends at its pending read
    return true;
  }
  return false;
}

void ExitServer::Unlist(PendingConn& conn) {
  if (!conn.listed) return;
  conn.listed = false;
  pending_.erase(conn.pos);
}

void ExitServer::Count(uint64_t Counters::*field) {
  ++(counters_.*field);
  if (summary_armed_ || stopped_) return;
  summary_armed_ = true;
  summary_timer_.expires_at(std::max(std::chrono::steady_clock::now(),
                                     last_summary_ + options_.log_summary_interval));
  summary_timer_.async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (ec || !self || !self->summary_armed_) return;
    self->WriteSummary();
  });
}

void ExitServer::WriteSummary() {
  summary_armed_ = false;
  auto now = std::chrono::steady_clock::now();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - last_summary_).count();
  last_summary_ = now;
  const Counters c = std::exchange(counters_, Counters{});
  TunnelLog()->log(
      c.accept_failed > 0 ? spdlog::level::warn : spdlog::level::info,
      "exit: in the last {} s: {} tunnels opened, {} closed, {} refused after the handshake; {} "
      "handshakes failed, {} dropped by the rate limit, {} by the pending cap, {} by the tunnel "
      "limit; {} accept failures",
      seconds, c.opened, c.closed, c.refused, c.failed, c.rate_limited, c.pending_capped,
      c.tunnel_limit, c.accept_failed);
}

void ExitServer::OnTunnelFreed() {
  if (live_tunnels_ > 0) --live_tunnels_;
  ++freed_since_trim_;
  if (trim_armed_ || stopped_) return;
  trim_armed_ = true;
  trim_timer_.expires_after(kTrimDelay);
  trim_timer_.async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (!self) return;
    self->trim_armed_ = false;
    if (ec || self->freed_since_trim_ == 0) return;
    self->freed_since_trim_ = 0;
    // A tunnel's buffers come from the heap, which glibc does not shrink by itself after a
    // burst (chunks below its dynamic mmap threshold stay mapped): give them back.
#ifdef __GLIBC__
    ::malloc_trim(0);
#endif
  });
}

asio::awaitable<void> ExitServer::Handshake(std::shared_ptr<PendingConn> conn) {
  auto self = shared_from_this();
  tcp::socket& socket = conn->socket;
  // Leaves pending_ however the handshake ends; counts it as failed unless a tunnel was made.
  struct PendingGuard {
    ExitServer* server;
    PendingConn* conn;
    bool succeeded = false;
    ~PendingGuard() {
      // An evicted connection (no longer listed) was counted by the pending cap.
      if (!succeeded && conn->listed) server->Count(&Counters::failed);
      server->Unlist(*conn);
    }
  } pending_guard{this, conn.get()};
  if (!socket.is_open()) co_return;  // evicted before it started
  ExitHandshake handshake(socket, {.static_key = &static_key_,
                                   .replay_guard = &replay_guard_,
                                   .clock = &clock_,
                                   .timeout = options_.handshake_timeout,
                                   .msg1_timeout = options_.msg1_timeout});
  auto hello = co_await handshake.ReadHello();
  if (!hello) co_return;
  conn->awaiting_msg1 = false;  // no longer the first to be evicted
  // Paid exits only: admission decides msg2's terms; its channel is released if unused.
  std::optional<PaidAdmission> admission;
  if (options_.payments) {
    admission.emplace(options_.payments, hello->hello);
    co_await admission->Decide();
    if (!socket.is_open()) co_return;  // the handshake timed out meanwhile
  }
  const auto msg2_sent = std::chrono::steady_clock::now();
  {
    // Checked again (with the handshakes between here and their tunnel) before msg2:
    // handshakes that were pending together may complete together.
    if (live_tunnels_ + msg2_in_flight_ >= options_.max_tunnels) {
      Count(&Counters::tunnel_limit);
      TunnelLog()->debug("exit: {} tunnels alive (the maximum); handshake dropped", live_tunnels_);
      co_return;
    }
    ++msg2_in_flight_;
    struct InFlight {
      size_t& n;
      ~InFlight() { --n; }
    } in_flight{msg2_in_flight_};
    auto keys = co_await handshake.Answer(admission ? ByteSpan(admission->params()) : ByteSpan());
    if (!keys) co_return;
    if (!socket.is_open()) co_return;
    pending_guard.succeeded = true;
    Unlist(*conn);
    Count(&Counters::opened);
    OpenTunnel(std::move(socket), *keys, hello->hello, admission ? &*admission : nullptr,
               msg2_sent);
  }
}

void ExitServer::OpenTunnel(tcp::socket socket, const SessionKeys& keys, const ClientHello& hello,
                            PaidAdmission* admission,
                            std::chrono::steady_clock::time_point msg2_sent) {
  auto self = shared_from_this();
  std::string name = "tunnel#" + std::to_string(next_tunnel_++);
  TunnelLog()->debug("exit: {} established ({}, client {})", name, CipherName(keys.cipher),
                     ToHex(hello.identity.bytes()).substr(0, 16));
  std::string peer;
  {
    error_code ignored;
    auto remote = socket.remote_endpoint(ignored);
    peer = remote.address().to_string() + ":" + std::to_string(remote.port());
  }
  // The tunnel counts against max_tunnels until it is freed (a closing tunnel lives up to 2 s
  // more, flushing), and its freeing may give memory back (OnTunnelFreed).
  std::shared_ptr<TunnelConnection> tunnel(
      new TunnelConnection(std::move(socket), keys, Role::kExit, options_.connection, name),
      [weak_server = weak_from_this()](TunnelConnection* t) {
        delete t;
        if (auto server = weak_server.lock()) server->OnTunnelFreed();
      });
  ++live_tunnels_;
  auto& entry = tunnels_[tunnel];
  entry.peer = std::move(peer);
  entry.started_unix_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
  std::weak_ptr<TunnelConnection> weak = tunnel;
  if (packets_) packets_->Serve(tunnel);
  std::shared_ptr<PayeeController> controller;
  std::optional<std::string> refusal;
  if (admission) {
    auto attached = admission->Attach(tunnel, msg2_sent);
    if (attached) {
      controller = std::move(*attached);
      entry.controller = controller;
    } else {
      refusal = std::move(attached.error().message);
    }
  }
  tunnel->Start(
      [self, weak](uint32_t id, const Destination& dest) {
        auto t = weak.lock();
        if (!t) return;
        asio::co_spawn(
            self->acceptor_.get_executor(),
            [self, t, id, dest]() { return self->ServeOpen(t, id, dest); },
            [t](std::exception_ptr e) {  // our bug: this tunnel ends, the exit goes on
              if (!e) return;
              LogTaskFailure(*TunnelLog(), "exit stream open", e);
              t->Close(CloseReason::kInternal, "internal error opening a stream", true);
            });
      },
      [self, weak, name, controller]() {
        TunnelLog()->debug("exit: {} closed", name);
        self->Count(&Counters::closed);
        if (controller) controller->OnClosed();
        if (auto t = weak.lock()) {
          if (self->packets_) self->packets_->End(t.get());
          if (self->tunnels_.erase(t) > 0) {
            self->closed_metered_bytes_ += t->data_bytes_sent() + t->data_bytes_received();
          }
        }
        if (self->tunnels_.empty() && self->on_idle_) std::exchange(self->on_idle_, nullptr)();
      });
  if (refusal) {
    Count(&Counters::refused);
    TunnelLog()->debug("exit: {} refused: payment required: {}", name, *refusal);
    tunnel->Close(CloseReason::kPaymentRequired, *refusal, true);
    return;
  }
  if (refusal_) {
    Count(&Counters::refused);
    TunnelLog()->debug("exit: {} refused: {}", name, *refusal_);
    tunnel->Close(CloseReason::kShutdown, *refusal_, true);
    return;
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
  const OwnHost& host = own_host();
  for (const auto& ep : candidates) {
    auto decision = policy_.Decide(ToIpAddress(ep.address()), ep.port(), host);
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
