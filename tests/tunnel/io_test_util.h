#pragma once
// Driving an io_context from a test's thread with a deadline (no sleeps), and an ExitServer with
// a client tunnel to it on one such io_context: what the tunnel tests that run the exit in
// process (bandwidth_limiter_test, exit_own_host_test) share.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "payments/keys.h"
#include "tests/support/wall_clock.h"
#include "tunnel/exit_policy.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/client.h"
#include "tunnel/session/exit_server.h"
#include "tunnel/session/tunnel_connection.h"

namespace dvpn::tunnel::testing {

// The two ends of one tunnel over a loopback TCP connection, with fixed test keys; not started.
struct LoopbackTunnel {
  std::shared_ptr<session::TunnelConnection> client;
  std::shared_ptr<session::TunnelConnection> exit;
};
inline LoopbackTunnel MakeLoopbackTunnel(session::asio::io_context& client_io,
                                         session::asio::io_context& exit_io,
                                         const session::ConnectionOptions& options = {}) {
  namespace asio = session::asio;
  using session::tcp;
  tcp::acceptor listener(exit_io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket client_socket(client_io);
  client_socket.connect(listener.local_endpoint());
  tcp::socket exit_socket = listener.accept();
  SessionKeys client_keys;
  SessionKeys exit_keys;
  client_keys.cipher = exit_keys.cipher = Cipher::kChaCha20Poly1305;
  client_keys.send_key.fill(0x11);
  client_keys.recv_key.fill(0x22);
  exit_keys.send_key.fill(0x22);
  exit_keys.recv_key.fill(0x11);
  return {std::make_shared<session::TunnelConnection>(std::move(client_socket), client_keys,
                                                      Role::kClient, options, "client"),
          std::make_shared<session::TunnelConnection>(std::move(exit_socket), exit_keys,
                                                      Role::kExit, options, "exit")};
}

// Runs `io` (restarted when it has stopped) one handler at a time until `pred` holds; false
// when `timeout` passes first.
inline bool RunUntil(boost::asio::io_context& io, const std::function<bool()>& pred,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_one_for(std::chrono::milliseconds(5));
  }
  return true;
}

// An ExitServer and a client TunnelConnection to it, both on io_, which the test's thread runs
// (RunUntil). Failures are recorded with ADD_FAILURE. The test calls Shutdown before io_ goes.
class ExitAndClient {
 protected:
  // Starts the exit on `listen` with the policy `rules`. False when they do not parse.
  bool StartExit(const session::tcp::endpoint& listen, const std::vector<std::string>& rules,
                 session::ExitServer::Options options) {
    auto policy = ExitPolicy::FromStrings(rules, {});
    if (!policy) {
      ADD_FAILURE() << "bad exit policy";
      return false;
    }
    server_ = std::make_shared<session::ExitServer>(io_, listen, exit_key_, *policy, options);
    server_->Start();
    return true;
  }

  // Connects client_ to the exit's port on 127.0.0.1 within `timeout` and starts it. False
  // when no tunnel came up.
  bool ConnectClient(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    HandshakeInitiator::Options hs;
    hs.provider_static = exit_key_.public_key;
    hs.identity = &identity_;
    hs.timestamp_ms = dvpn::testing::UnixMillis();
    using Connected = Result<std::shared_ptr<session::TunnelConnection>, session::ConnectErrc>;
    // Held by the completion too: it may outlive a failed wait.
    auto connected = std::make_shared<std::optional<Connected>>();
    const session::tcp::endpoint exit(boost::asio::ip::address_v4::loopback(),
                                      server_->local_endpoint().port());
    boost::asio::co_spawn(io_,
                          session::ConnectTunnel(exit, hs, session::ConnectionOptions{}, timeout),
                          [connected](std::exception_ptr e, auto r) {
                            if (!e) *connected = std::move(r);
                          });
    if (!RunUntil(io_, [&] { return connected->has_value(); }, timeout + std::chrono::seconds(1)) ||
        !**connected) {
      ADD_FAILURE() << "no tunnel to the exit"
                    << (connected->has_value() ? ": " + (*connected)->error().message : "");
      return false;
    }
    client_ = ***connected;
    client_->Start(nullptr, [this] { client_closed_ = true; });
    return true;
  }

  // Closes the client and stops the exit, running io_ until both are done (at most
  // `timeout`); then `close_sockets` closes the test's own sockets, every handler runs to see
  // them closed (bounded), and the exit drops what is left.
  void Shutdown(std::chrono::milliseconds timeout, const std::function<void()>& close_sockets) {
    if (client_) client_->Close(CloseReason::kNormal, "test over", true);
    bool idle = false;
    if (server_) server_->Stop([&] { idle = true; });
    RunUntil(io_, [&] { return idle && (!client_ || client_closed_); }, timeout);
    close_sockets();
    for (int i = 0; i < 100 && io_.poll() > 0; ++i) {
    }
    if (server_) server_->DropTunnels();
  }

  boost::asio::io_context io_;
  X25519KeyPair exit_key_ = X25519KeyPair::Generate();
  payments::PrivateKey identity_ = payments::PrivateKey::Generate();
  std::shared_ptr<session::ExitServer> server_;
  std::shared_ptr<session::TunnelConnection> client_;
  bool client_closed_ = false;
};

}  // namespace dvpn::tunnel::testing
