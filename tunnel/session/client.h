#pragma once
// Client side of the tunnel: ConnectTunnel (TCP connect + handshake initiator, bounded by a
// timeout) and SocksFrontend (a SOCKS5 server on a local address whose CONNECTs become tunnel
// streams; domain names are passed to the exit unresolved).
//
// Threading: single io_context thread; not thread-safe. SocksFrontend is owned by the caller
// and must outlive its io_context's run (its coroutines hold a shared_ptr to it).

#include <chrono>
#include <expected>
#include <memory>
#include <string>

#include "tunnel/handshake.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/tunnel_connection.h"
#include "tunnel/socks5.h"

namespace dvpn::tunnel::session {

// Connects to the exit at `provider`, runs the handshake (msg1, msg2) within `timeout` and
// returns the started-to-be tunnel (call Start on it). The error says what failed, e.g. a wrong
// provider key shows as the exit closing the connection or msg2 failing to authenticate.
asio::awaitable<std::expected<std::shared_ptr<TunnelConnection>, std::string>> ConnectTunnel(
    tcp::endpoint provider, HandshakeInitiator::Options handshake, ConnectionOptions options,
    std::chrono::milliseconds timeout);

class SocksFrontend : public std::enable_shared_from_this<SocksFrontend> {
 public:
  struct Options {
    std::chrono::milliseconds negotiation_timeout{30'000};  // greeting..request
  };

  // Binds and listens on `listen` (throws boost::system::system_error when it cannot).
  SocksFrontend(asio::io_context& io, const tcp::endpoint& listen,
                std::shared_ptr<TunnelConnection> tunnel, Options options);

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  void Start();
  void Stop();

 private:
  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Serve(tcp::socket socket);

  tcp::acceptor acceptor_;
  std::shared_ptr<TunnelConnection> tunnel_;
  Options options_;
};

}  // namespace dvpn::tunnel::session
