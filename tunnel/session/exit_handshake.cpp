#include "tunnel/session/exit_handshake.h"

#include "common/log.h"

namespace dvpn::tunnel::session {
namespace {

HandshakeResponder::Options ResponderOptions(const ExitHandshake::Options& o) {
  HandshakeResponder::Options r;
  r.static_key = o.static_key;
  r.replay_guard = o.replay_guard;
  r.clock = o.clock;
  return r;
}

}  // namespace

ExitHandshake::ExitHandshake(tcp::socket& socket, const Options& options)
    : socket_(socket), options_(options), responder_(ResponderOptions(options)) {
  deadline_.emplace(socket_.get_executor(), options_.timeout, [&socket] {
    error_code ignored;
    socket.close(ignored);
  });
}

asio::awaitable<Result<ExitHandshake::Hello, ExitHandshakeErrc>> ExitHandshake::ReadHello() {
  {
    // A connection that does not deliver msg1 soon holds a descriptor for nothing.
    Watchdog msg1_deadline(socket_.get_executor(), options_.msg1_timeout, [this] {
      error_code ignored;
      socket_.close(ignored);
    });
    error_code ec;
    co_await asio::async_read(socket_, asio::buffer(buf_.data(), kHandshakeHeaderSize),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      TunnelLog()->debug("exit: handshake aborted before msg1: {}", ec.message());
      co_return Fail(ExitHandshakeErrc::kConnection, "no msg1");
    }
    auto size = HandshakeMessageSize(ByteSpan(buf_.data(), kHandshakeHeaderSize));
    if (!size || *size != kMsg1Size) {
      TunnelLog()->debug("exit: not a handshake (bad msg1 header); connection dropped");
      co_return Fail(ExitHandshakeErrc::kRejected, "bad msg1 header");
    }
    co_await asio::async_read(
        socket_,
        asio::buffer(buf_.data() + kHandshakeHeaderSize, kMsg1Size - kHandshakeHeaderSize),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      TunnelLog()->debug("exit: msg1 truncated: {}", ec.message());
      co_return Fail(ExitHandshakeErrc::kConnection, "msg1 truncated");
    }
  }
  ByteSpan msg1(buf_.data(), kMsg1Size);
  if (!responder_.CheckMac1(msg1)) {
    TunnelLog()->debug("exit: msg1 with a bad mac1 (client does not know our key); dropped");
    co_return Fail(ExitHandshakeErrc::kRejected, "bad mac1");
  }
  auto hello = responder_.ReadMessage1(msg1);
  if (!hello) {
    TunnelLog()->debug("exit: msg1 rejected: {}: {}", HandshakeErrcName(hello.error().code),
                       hello.error().message);
    co_return Fail(ExitHandshakeErrc::kRejected, HandshakeErrcName(hello.error().code));
  }
  cipher_ = ChooseCipher(hello->ciphers, LocalCiphers());
  if (!cipher_) {
    TunnelLog()->debug("exit: no common cipher; dropped");
    co_return Fail(ExitHandshakeErrc::kRejected, "no common cipher");
  }
  co_return Hello{*hello, *cipher_};
}

asio::awaitable<Result<SessionKeys, ExitHandshakeErrc>> ExitHandshake::Answer(
    ByteSpan session_params) {
  if (!cipher_) co_return Fail(ExitHandshakeErrc::kInternal, "Answer before ReadHello");
  auto n = responder_.WriteMessage2(buf_, *cipher_, session_params);
  if (!n) {
    TunnelLog()->warn("exit: cannot write msg2: {}", n.error().message);
    co_return Fail(ExitHandshakeErrc::kInternal, "cannot write msg2");
  }
  error_code ec;
  co_await asio::async_write(socket_, asio::buffer(buf_.data(), *n),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    TunnelLog()->debug("exit: cannot send msg2: {}", ec.message());
    co_return Fail(ExitHandshakeErrc::kConnection, "cannot send msg2");
  }
  auto keys = responder_.TakeKeys();
  deadline_.reset();
  if (!keys) co_return Fail(ExitHandshakeErrc::kInternal, "no session keys");
  co_return std::move(*keys);
}

}  // namespace dvpn::tunnel::session
