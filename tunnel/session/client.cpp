#include "tunnel/session/client.h"

#include <array>
#include <cstring>

#include "common/log.h"

namespace dvpn::tunnel::session {
namespace {

std::shared_ptr<spdlog::logger> Log() {
  static auto log = Logger("tunnel");
  return log;
}

}  // namespace

asio::awaitable<std::expected<std::shared_ptr<TunnelConnection>, std::string>> ConnectTunnel(
    tcp::endpoint provider, HandshakeInitiator::Options handshake, ConnectionOptions options,
    std::chrono::milliseconds timeout) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket socket(ex);
  std::array<uint8_t, kMaxHandshakeMessage> buf{};
  SessionKeys keys;
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
      co_return std::unexpected(expired ? std::string("connect timed out")
                                        : "connect failed: " + ec.message());
    }
    HandshakeInitiator initiator(std::move(handshake));
    auto n = initiator.WriteMessage1(buf);
    if (!n) co_return std::unexpected("cannot build the handshake: " + n.error().message);
    co_await asio::async_write(socket, asio::buffer(buf.data(), *n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      co_await asio::async_read(socket, asio::buffer(buf.data(), kHandshakeHeaderSize),
                                asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      co_return std::unexpected(
          expired ? std::string("handshake timed out")
                  : "the exit closed the connection during the handshake (wrong provider key?): " +
                        ec.message());
    }
    auto size = HandshakeMessageSize(ByteSpan(buf.data(), kHandshakeHeaderSize));
    if (!size || *size < kHandshakeHeaderSize || *size > buf.size()) {
      co_return std::unexpected(std::string("bad handshake reply header"));
    }
    co_await asio::async_read(
        socket, asio::buffer(buf.data() + kHandshakeHeaderSize, *size - kHandshakeHeaderSize),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return std::unexpected("handshake reply truncated: " + ec.message());
    auto k = initiator.ReadMessage2(ByteSpan(buf.data(), *size));
    if (!k) {
      co_return std::unexpected(std::string("handshake failed: ") +
                                HandshakeErrcName(k.error().code) + ": " + k.error().message);
    }
    keys = std::move(*k);
  }
  if (!socket.is_open()) co_return std::unexpected(std::string("handshake timed out"));
  Log()->info("tunnel to {} established ({})",
              provider.address().to_string() + ":" + std::to_string(provider.port()),
              CipherName(keys.cipher));
  co_return std::make_shared<TunnelConnection>(std::move(socket), keys, Role::kClient, options,
                                               "client");
}

SocksFrontend::SocksFrontend(asio::io_context& io, const tcp::endpoint& listen,
                             std::shared_ptr<TunnelConnection> tunnel, Options options)
    : acceptor_(io, listen), tunnel_(std::move(tunnel)), options_(options) {}

void SocksFrontend::Start() {
  auto self = shared_from_this();
  asio::co_spawn(
      acceptor_.get_executor(), [self]() { return self->AcceptLoop(); }, asio::detached);
}

void SocksFrontend::Stop() {
  error_code ignored;
  acceptor_.close(ignored);
}

asio::awaitable<void> SocksFrontend::AcceptLoop() {
  auto self = shared_from_this();
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      Log()->warn("socks: accept failed: {}", ec.message());
      continue;
    }
    asio::co_spawn(
        acceptor_.get_executor(),
        [self, s = std::move(socket)]() mutable { return self->Serve(std::move(s)); },
        asio::detached);
  }
}

asio::awaitable<void> SocksFrontend::Serve(tcp::socket socket) {
  auto self = shared_from_this();
  Socks5ServerParser parser(Socks5ServerOptions{});
  std::array<uint8_t, 1024> buf{};
  size_t have = 0;
  bool requested = false;
  {
    Watchdog deadline(socket.get_executor(), options_.negotiation_timeout, [&socket] {
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
          Log()->debug("socks: {}", p.error().message);
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
  if (!socket.is_open()) co_return;
  if (tunnel_->closed()) {
    auto reply = EncodeSocks5Failure(Socks5Reply::kGeneralFailure);
    error_code ec;
    co_await asio::async_write(socket, asio::buffer(reply.bytes().data(), reply.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  auto opened = co_await tunnel_->OpenStream(parser.request());
  error_code ec;
  if (!opened) {
    Log()->debug("socks: stream refused: {}", opened.error().message);
    auto reply = EncodeSocks5Failure(opened.error().code);
    co_await asio::async_write(socket, asio::buffer(reply.bytes().data(), reply.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  auto reply = EncodeSocks5Success(Destination::Ipv4({0, 0, 0, 0}, 0));
  co_await asio::async_write(socket, asio::buffer(reply.bytes().data(), reply.size()),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    tunnel_->CancelStream(*opened);
    co_return;
  }
  tunnel_->AttachStream(*opened, std::move(socket), ByteSpan(buf.data(), have));
}

}  // namespace dvpn::tunnel::session
