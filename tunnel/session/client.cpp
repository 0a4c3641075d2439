#include "tunnel/session/client.h"

#include <thread>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>

#include "common/log.h"
#include "tunnel/kdf.h"

namespace dvpn::tunnel::session {
namespace {

uint64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Seconds(std::chrono::steady_clock::duration d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100) + " s";
}

// Pause after a failed accept (e.g. EMFILE: out of descriptors) so that a listening socket that
// stays readable does not spin the loop.
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

}  // namespace

asio::awaitable<Result<std::shared_ptr<TunnelConnection>, ConnectErrc>> ConnectTunnel(
    tcp::endpoint provider, HandshakeInitiator::Options handshake, ConnectionOptions options,
    std::chrono::milliseconds timeout) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket socket(ex);
  std::array<uint8_t, kMaxHandshakeMessage> buf{};
  SessionKeys keys;
  std::vector<uint8_t> params;
  {
    bool expired = false;
    Watchdog deadline(ex, timeout, [&] {
      expired = true;
      error_code ignored;
      socket.close(ignored);
    });
    error_code ec;
    co_await socket.async_connect(provider, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (expired) co_return Fail(ConnectErrc::kTimeout, "connect timed out");
      co_return Fail(ConnectErrc::kConnect, "connect failed: " + ec.message());
    }
    HandshakeInitiator initiator(std::move(handshake));
    auto n = initiator.WriteMessage1(buf);
    if (!n) {
      co_return Fail(ConnectErrc::kHandshake, "cannot build the handshake: " + n.error().message);
    }
    co_await asio::async_write(socket, asio::buffer(buf.data(), *n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      co_await asio::async_read(socket, asio::buffer(buf.data(), kHandshakeHeaderSize),
                                asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      // The exit answers no msg1 it refuses (it cannot authenticate itself cheaply to an
      // unauthenticated sender), so every refusal looks the same from here: say all the causes.
      if (expired) co_return Fail(ConnectErrc::kTimeout, "handshake timed out");
      co_return Fail(ConnectErrc::kHandshake,
                     "the exit closed the handshake without answering (" + ec.message() +
                         "): a wrong provider key, this machine's clock more than 10 s ahead of "
                         "or 120 s behind the exit's, or the exit refusing handshakes (busy, or "
                         "too many from this address)");
    }
    auto size = HandshakeMessageSize(ByteSpan(buf.data(), kHandshakeHeaderSize));
    if (!size || *size < kHandshakeHeaderSize || *size > buf.size()) {
      co_return Fail(ConnectErrc::kHandshake, "bad handshake reply header");
    }
    co_await asio::async_read(
        socket, asio::buffer(buf.data() + kHandshakeHeaderSize, *size - kHandshakeHeaderSize),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return Fail(ConnectErrc::kHandshake, "handshake reply truncated: " + ec.message());
    auto k = initiator.ReadMessage2(ByteSpan(buf.data(), *size));
    if (!k) {
      co_return Fail(ConnectErrc::kHandshake, std::string("handshake failed: ") +
                                                  HandshakeErrcName(k.error().code) + ": " +
                                                  k.error().message);
    }
    keys = std::move(*k);
    params = initiator.session_params();
  }
  if (!socket.is_open()) co_return Fail(ConnectErrc::kTimeout, "handshake timed out");
  TunnelLog()->info("tunnel to {} established ({})",
              provider.address().to_string() + ":" + std::to_string(provider.port()),
              CipherName(keys.cipher));
  auto tunnel = std::make_shared<TunnelConnection>(std::move(socket), keys, Role::kClient,
                                                   options, "client");
  tunnel->set_session_params(std::move(params));
  co_return tunnel;
}

// ---------------------------------------------------------------------------------------------
// TunnelKeeper

std::chrono::milliseconds ReconnectDelay(uint32_t attempt, std::chrono::milliseconds initial,
                                         std::chrono::milliseconds max, std::mt19937_64& rng) {
  if (attempt == 0) attempt = 1;
  int64_t cap = std::max<int64_t>(max.count(), 0);
  int64_t delay = std::clamp<int64_t>(initial.count(), 0, cap);
  if (delay == 0) return std::chrono::milliseconds(0);
  for (uint32_t i = 1; i < attempt && delay < cap; ++i) delay = std::min(cap, delay * 2);
  if (delay <= 1) return std::chrono::milliseconds(delay);
  std::uniform_int_distribution<int64_t> jitter(delay / 2, delay);
  return std::chrono::milliseconds(jitter(rng));
}

TunnelKeeper::TunnelKeeper(asio::any_io_executor ex, std::shared_ptr<TunnelSlot> slot,
                           Options options)
    : ex_(std::move(ex)),
      slot_(std::move(slot)),
      options_(std::move(options)),
      wake_(ex_),
      rng_(std::random_device{}()) {}

std::string TunnelKeeper::ProviderText() const {
  const tcp::endpoint& ep = target_ ? target_->endpoint : options_.provider;
  const auto& a = ep.address();
  std::string host = a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
  std::string text = host + ":" + std::to_string(ep.port());
  if (target_ && !target_->name.empty()) text += " (" + target_->name + ")";
  return text;
}

void TunnelKeeper::ProviderFailed(ProviderFailure failure, const std::string& why) {
  if (!options_.picker || !target_) return;
  options_.picker->Failed(*target_, failure, why);
}

void TunnelKeeper::Start(UpHandler on_up, GaveUpHandler on_gave_up) {
  on_up_ = std::move(on_up);
  on_gave_up_ = std::move(on_gave_up);
  auto self = shared_from_this();
  // An exception escaping Run is our bug: logged, and the keeper gives up (the runtime ends and
  // says why) rather than leave a client that silently stopped reconnecting.
  asio::co_spawn(ex_, [self]() { return self->Run(); }, [self](std::exception_ptr e) {
    if (!e) return;
    LogTaskFailure(*TunnelLog(), "tunnel keeper", e);
    if (self->on_gave_up_) {
      auto cb = std::move(self->on_gave_up_);
      cb("internal error in the tunnel keeper (see the log)");
    }
  });
}

void TunnelKeeper::Stop(std::function<void()> on_stopped) {
  if (stopped_) return;
  stopped_ = true;
  Notify(wake_);
  slot_->Clear();
  if (tunnel_ && !tunnel_closed_) {
    on_stopped_ = std::move(on_stopped);
    tunnel_->Close(CloseReason::kNormal, "client shutting down", true);
    return;
  }
  if (on_stopped) on_stopped();
}

void TunnelKeeper::Halt(const std::string& why) {
  if (stopped_) return;
  stopped_ = true;
  slot_->Clear();
  Notify(wake_);
  if (on_gave_up_) on_gave_up_(why);
}

asio::awaitable<Result<std::shared_ptr<TunnelConnection>, ConnectErrc>> TunnelKeeper::Connect() {
  HandshakeInitiator::Options hs = options_.handshake;
  tcp::endpoint endpoint = options_.provider;
  if (options_.picker) {
    auto target = co_await PickTarget();
    if (!target) {
      no_provider_left_ = true;
      co_return std::unexpected(target.error());
    }
    target_ = *target;
    if (options_.on_target) options_.on_target(*target_);
    endpoint = target_->endpoint;
    hs.provider_static = target_->provider_static;
    hs.channel = target_->channel;
  }
  last_timestamp_ms_ = std::max(WallClockMs(), last_timestamp_ms_ + 1);
  hs.timestamp_ms = last_timestamp_ms_;
  const auto started = std::chrono::steady_clock::now();
  auto t = co_await ConnectTunnel(endpoint, std::move(hs), options_.connection,
                                  options_.handshake_timeout);
  if (options_.picker && !stopped_) {
    if (t) {
      options_.picker->Connected(*target_, std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::steady_clock::now() - started));
    } else {
      options_.picker->Failed(*target_, ProviderFailure::kConnect, t.error().message);
    }
  }
  co_return t;
}

asio::awaitable<Result<ProviderTarget, ConnectErrc>> TunnelKeeper::PickTarget() {
  // Next() may block on the network: run it on a helper thread and wait here without blocking
  // the io thread. The result outlives this frame if the keeper goes away first.
  using Picked = Result<ProviderTarget, ConnectErrc>;
  auto result = std::make_shared<std::optional<Picked>>();
  auto done = std::make_shared<asio::steady_timer>(ex_, asio::steady_timer::time_point::max());
  std::thread([picker = options_.picker, result, done, ex = ex_]() mutable {
    Picked r = picker->Next();
    asio::post(ex, [result, done, r = std::move(r)]() mutable {
      *result = std::move(r);
      done->cancel();
    });
  }).detach();
  error_code ec;
  co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (!result->has_value()) co_return Fail(ConnectErrc::kNoProvider, "stopped");
  co_return std::move(**result);
}

asio::awaitable<void> TunnelKeeper::Run() {
  auto self = shared_from_this();
  std::weak_ptr<TunnelKeeper> weak = self;
  auto give_up = [this](const std::string& why) {
    if (stopped_) return;
    stopped_ = true;
    slot_->Clear();
    if (on_gave_up_) on_gave_up_(why);
  };
  // Makes `t` the current tunnel and starts it; its close wakes the loop below.
  std::chrono::steady_clock::time_point established;
  auto install = [&](std::shared_ptr<TunnelConnection> t) {
    tunnel_ = t;
    tunnel_closed_ = false;
    established = std::chrono::steady_clock::now();
    slot_->Set(t);
    TunnelConnection* raw = t.get();
    t->Start(nullptr, [weak, raw]() {
      auto keeper = weak.lock();
      if (!keeper || keeper->tunnel_.get() != raw) return;
      keeper->tunnel_closed_ = true;
      Notify(keeper->wake_);
      if (keeper->on_stopped_) {
        auto cb = std::move(keeper->on_stopped_);
        keeper->on_stopped_ = nullptr;
        cb();
      }
    });
    if (options_.on_tunnel) options_.on_tunnel(t);
  };

  auto first = co_await Connect();
  // With a picker, a failed first attempt moves on to the next provider until none is left.
  while (options_.picker && !first && !no_provider_left_ && !stopped_) {
    TunnelLog()->warn("cannot establish the tunnel to {}: {}; trying the next provider",
                      ProviderText(), first.error().message);
    first = co_await Connect();
  }
  if (stopped_) {
    if (first) (*first)->Close(CloseReason::kNormal, "client shutting down", false);
    co_return;
  }
  if (!first) {
    give_up(no_provider_left_ ? first.error().message
                              : "cannot establish the tunnel to " + ProviderText() + ": " +
                                    first.error().message);
    co_return;
  }
  install(*first);
  if (stopped_) co_return;  // the payment layer refused the session (Halt)
  if (on_up_) on_up_();

  uint32_t step = 0;  // backoff exponent, carried over tunnels that die young
  auto next_delay = [&] {
    step = std::min<uint32_t>(step + 1, 64);
    return ReconnectDelay(step, options_.initial_backoff, options_.max_backoff, rng_);
  };
  for (;;) {
    while (!tunnel_closed_ && !stopped_) co_await WaitSignal(wake_);
    if (stopped_) co_return;
    auto lost_at = std::chrono::steady_clock::now();
    auto lived = lost_at - established;
    slot_->Clear();
    tunnel_.reset();
    if (options_.max_reconnects && *options_.max_reconnects == 0) {
      give_up("the tunnel to " + ProviderText() + " was lost after " + Seconds(lived) +
              " (reconnecting is disabled)");
      co_return;
    }
    if (lived >= options_.stable_after) step = 0;
    uint64_t attempt = 1;
    auto delay = next_delay();
    TunnelLog()->warn("the tunnel to {} was lost after {}; its streams are closed; reconnecting in {} ms",
                ProviderText(), Seconds(lived), delay.count());
    for (;;) {
      auto deadline = asio::steady_timer::clock_type::now() + delay;
      while (!stopped_ && asio::steady_timer::clock_type::now() < deadline) {
        co_await WaitSignal(wake_, deadline);
      }
      if (stopped_) co_return;
      auto t = co_await Connect();
      if (stopped_) {
        if (t) (*t)->Close(CloseReason::kNormal, "client shutting down", false);
        co_return;
      }
      if (t) {
        ++reconnects_;
        install(*t);
        TunnelLog()->info("the tunnel to {} is back (reconnect attempt {}, down for {})", ProviderText(),
                    attempt, Seconds(std::chrono::steady_clock::now() - lost_at));
        break;
      }
      if (no_provider_left_) {
        give_up("the tunnel was lost and no provider is left to try: " + t.error().message);
        co_return;
      }
      if (options_.max_reconnects && attempt >= *options_.max_reconnects) {
        give_up("the tunnel to " + ProviderText() + " was lost and " + std::to_string(attempt) +
                " reconnect attempt(s) failed; the last one: " + t.error().message);
        co_return;
      }
      ++attempt;
      delay = next_delay();
      TunnelLog()->warn("reconnect attempt {} to {} failed: {}; next attempt in {} ms", attempt - 1,
                        ProviderText(), t.error().message, delay.count());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SocksFrontend

SocksFrontend::SocksFrontend(asio::io_context& io, const tcp::endpoint& listen,
                             std::shared_ptr<TunnelSlot> slot, Options options)
    : acceptor_(io), slot_(std::move(slot)), negotiation_timeout_(options.negotiation_timeout),
      fast_reply_(options.fast_reply) {
  if (options.credentials) {
    auto& c = *options.credentials;
    bool ok =
        !c.user.empty() && c.user.size() <= 255 && !c.password.empty() && c.password.size() <= 255;
    if (ok) {
      EnsureSodium();
      randombytes_buf(digest_key_.data(), digest_key_.size());
      digest_ = CredentialDigest(c.user, c.password);
      require_auth_ = true;
    }
    c.password.resize(c.password.capacity());  // no reallocation: wipe the whole buffer
    sodium_memzero(c.password.data(), c.password.size());
    c.password.clear();
    if (!ok) {
      throw std::invalid_argument("SOCKS user name and password must be 1..255 bytes each");
    }
  }
  acceptor_ = tcp::acceptor(io, listen);
}

Hash32 SocksFrontend::CredentialDigest(std::string_view user, std::string_view password) const {
  // Keyed BLAKE2b over len(user) || user || password (user is at most 255 bytes), so that the
  // comparison below is over fixed-size values and leaks neither content nor length.
  crypto_generichash_state state;
  crypto_generichash_init(&state, digest_key_.data(), digest_key_.size(), 32);
  uint8_t len = static_cast<uint8_t>(std::min<size_t>(user.size(), 255));
  crypto_generichash_update(&state, &len, 1);
  crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(user.data()), user.size());
  crypto_generichash_update(&state, reinterpret_cast<const uint8_t*>(password.data()),
                            password.size());
  Hash32 out{};
  crypto_generichash_final(&state, out.data(), out.size());
  sodium_memzero(&state, sizeof(state));
  return out;
}

bool SocksFrontend::CheckCredentials(std::string_view user, std::string_view password) const {
  if (user.size() > 255 || password.size() > 255) return false;
  Hash32 candidate = CredentialDigest(user, password);
  return sodium_memcmp(candidate.data(), digest_.data(), digest_.size()) == 0;
}

void SocksFrontend::Start() {
  auto self = shared_from_this();
  asio::co_spawn(
      acceptor_.get_executor(), [self]() { return self->AcceptLoop(); },
      [](std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "socks accept loop", e); });
}

void SocksFrontend::Stop() {
  error_code ignored;
  acceptor_.close(ignored);
}

asio::awaitable<void> SocksFrontend::AcceptLoop() {
  auto self = shared_from_this();
  asio::steady_timer pause(acceptor_.get_executor());
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      TunnelLog()->warn("socks: accept failed: {}", ec.message());
      pause.expires_after(kAcceptRetryDelay);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    asio::co_spawn(
        acceptor_.get_executor(),
        [self, s = std::move(socket)]() mutable { return self->Serve(std::move(s)); },
        // The connection's socket closes with the coroutine's frame.
        [](std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "socks connection", e); });
  }
}

asio::awaitable<void> SocksFrontend::Serve(tcp::socket socket) {
  auto self = shared_from_this();
  Socks5ServerOptions parser_options;
  if (require_auth_) {
    parser_options.allow_no_auth = false;
    parser_options.check_credentials = [this](std::string_view user, std::string_view password) {
      return CheckCredentials(user, password);
    };
  }
  Socks5ServerParser parser(std::move(parser_options));
  std::array<uint8_t, 1024> buf{};
  size_t have = 0;
  bool requested = false;
  {
    Watchdog deadline(socket.get_executor(), negotiation_timeout_, [&socket] {
      error_code ignored;
      socket.close(ignored);
    });
    while (!requested) {
      error_code ec;
      size_t n = co_await socket.async_read_some(asio::buffer(buf.data() + have, buf.size() - have),
                                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;  // the client went away (or the negotiation timed out)
      have += n;
      while (have > 0 && !requested) {
        auto p = parser.Feed(ByteSpan(buf.data(), have));
        if (!p) {
          TunnelLog()->debug("socks: {}", p.error().message);
          // The buffer may hold the password the client sent: wipe it.
          Wipe(std::span<uint8_t>(buf.data(), buf.size()));
          auto reply = parser.error_reply();
          if (!reply.empty()) {
            co_await asio::async_write(socket, asio::buffer(reply.data(), reply.size()),
                                       asio::redirect_error(asio::use_awaitable, ec));
          }
          co_return;
        }
        std::memmove(buf.data(), buf.data() + p->consumed, have - p->consumed);
        have -= p->consumed;
        if (p->event == Socks5ServerParser::Event::kReply) {
          co_await asio::async_write(socket, asio::buffer(p->reply.data(), p->reply.size()),
                                     asio::redirect_error(asio::use_awaitable, ec));
          if (ec) co_return;
        } else if (p->event == Socks5ServerParser::Event::kRequest) {
          requested = true;
        } else {
          break;  // need more
        }
      }
    }
  }
  // Bytes consumed by the parser (e.g. an RFC 1929 password) may still sit in the buffer
  // behind `have`: wipe them.
  Wipe(std::span<uint8_t>(buf.data() + have, buf.size() - have));
  if (!socket.is_open()) co_return;
  // The tunnel serving this request: the current one, kept for the stream's whole life even if
  // the keeper replaces it meanwhile.
  auto tunnel = slot_->current();
  error_code ec;
  if (!tunnel) {
    TunnelLog()->debug("socks: no tunnel is up; request refused (general failure)");
    auto reply = EncodeSocks5Failure(Socks5Reply::kGeneralFailure);
    co_await asio::async_write(socket, asio::buffer(reply.bytes().data(), reply.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  // Fast reply: the stream opens with early data and CONNECT succeeds at once (only local
  // failures are reported); otherwise the reply waits for the exit's answer.
  Result<uint32_t, OpenFailure> opened;
  if (fast_reply_) {
    opened = tunnel->OpenStreamEarly(parser.request());
  } else {
    opened = co_await tunnel->OpenStream(parser.request());
  }
  if (!opened) {
    TunnelLog()->debug("socks: stream refused: {}", opened.error().message);
    auto reply = EncodeSocks5Failure(opened.error().code);
    co_await asio::async_write(socket, asio::buffer(reply.bytes().data(), reply.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  auto reply = EncodeSocks5Success(Destination::Ipv4({0, 0, 0, 0}, 0));
  co_await asio::async_write(socket, asio::buffer(reply.bytes().data(), reply.size()),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    tunnel->CancelStream(*opened);
    co_return;
  }
  tunnel->AttachStream(*opened, std::move(socket), ByteSpan(buf.data(), have));
}

}  // namespace dvpn::tunnel::session
