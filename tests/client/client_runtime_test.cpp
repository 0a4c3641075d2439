// ClientRuntime on a path of one hop (client/client_runtime.h): to a free exit running in this
// process on 127.0.0.1 (port 0), the hop's status is the path's totals, and a lost tunnel reads
// "reconnecting" and then "connected" again; a hop whose provider cannot be reached ends the
// runtime with the hop marked failed.

#include "client/client_runtime.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <thread>

#include "payments/keys.h"
#include "tunnel/exit_policy.h"
#include "tunnel/session/exit_server.h"

namespace dvpn::tunnel_client {
namespace {

namespace session = tunnel::session;
using namespace std::chrono_literals;

// Polls `pred` until it holds or `timeout` passes (the runtime's state is read by polling, as
// dvpn-client's controller does).
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// A free exit on 127.0.0.1 with an io thread of its own.
class FreeExit {
 public:
  FreeExit() {
    auto policy = tunnel::ExitPolicy::FromStrings({}, {});
    EXPECT_TRUE(policy.has_value());
    server_ = std::make_shared<session::ExitServer>(
        io_, session::tcp::endpoint(session::asio::ip::address_v4::loopback(), 0), key_,
        std::move(*policy), session::ExitServer::Options{});
    server_->Start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FreeExit() {
    session::asio::post(io_, [this] { server_->Stop([this] { io_.stop(); }); });
    if (!WaitFor([this] { return io_.stopped(); }, 3s)) io_.stop();
    thread_.join();
    server_->DropTunnels();
  }

  session::tcp::endpoint endpoint() const { return server_->local_endpoint(); }
  const tunnel::Key32& key() const { return key_.public_key; }
  // Ends every tunnel (the server goes on accepting), as a restarting exit would.
  void DropEveryTunnel() {
    session::asio::post(io_, [this] {
      server_->CloseAll(tunnel::CloseReason::kShutdown, "test: tunnels dropped");
    });
  }

 private:
  session::asio::io_context io_{1};
  session::asio::executor_work_guard<session::asio::io_context::executor_type> work_{
      io_.get_executor()};
  tunnel::X25519KeyPair key_ = tunnel::X25519KeyPair::Generate();
  std::shared_ptr<session::ExitServer> server_;
  std::thread thread_;
};

ClientRuntimeConfig FixedProvider(const session::tcp::endpoint& provider, const tunnel::Key32& key,
                                  const payments::PrivateKey& identity) {
  ClientRuntimeConfig c;
  c.provider = provider;
  c.provider_key = key;
  c.socks = session::tcp::endpoint(session::asio::ip::address_v4::loopback(), 0);
  c.pay.identity = &identity;
  c.keeper.handshake_timeout = 5s;
  c.keeper.max_reconnects = 0;
  return c;
}

TEST(ClientRuntimeOneHop, HopStatusIsThePathsTotals) {
  FreeExit exit;
  const auto identity = payments::PrivateKey::Generate();
  auto runtime = ClientRuntime::Start(FixedProvider(exit.endpoint(), exit.key(), identity));
  ASSERT_TRUE(runtime.has_value()) << runtime.error().message;
  ClientRuntime& r = **runtime;
  ASSERT_TRUE(WaitFor([&] {
    auto st = r.Status();
    return st.state == ClientState::kConnected && st.socks_port != 0;
  })) << r.Status().last_error;

  const ClientStatus st = r.Status();
  ASSERT_EQ(st.hops.size(), 1u);
  const HopStatus& hop = st.hops[0];
  const std::string endpoint = "127.0.0.1:" + std::to_string(exit.endpoint().port());
  EXPECT_EQ(hop.state, ClientState::kConnected);
  EXPECT_EQ(hop.provider_endpoint, endpoint);
  EXPECT_EQ(st.provider_endpoint, endpoint);
  EXPECT_EQ(hop.provider_address, st.provider_address);
  EXPECT_EQ(hop.price_per_mb, st.price_per_mb);
  EXPECT_EQ(hop.bytes_sent, st.bytes_sent);
  EXPECT_EQ(hop.bytes_received, st.bytes_received);
  EXPECT_EQ(hop.reconnects, st.reconnects);
  EXPECT_TRUE(hop.spent.IsZero());  // a free session signs nothing

  r.Stop();
  EXPECT_TRUE(r.Finished());
  EXPECT_EQ(r.ExitCode(), kClientOk);
  const ClientStatus stopped = r.Status();
  EXPECT_EQ(stopped.state, ClientState::kStopped);
  ASSERT_EQ(stopped.hops.size(), 1u);
  EXPECT_EQ(stopped.hops[0].state, ClientState::kStopped);
  EXPECT_EQ(stopped.hops[0].provider_endpoint, endpoint);
}

TEST(ClientRuntimeOneHop, AHopThatComesBackReadsConnectedAgain) {
  FreeExit exit;
  const auto identity = payments::PrivateKey::Generate();
  auto config = FixedProvider(exit.endpoint(), exit.key(), identity);
  config.keeper.max_reconnects.reset();  // unlimited
  config.keeper.initial_backoff = 300ms;
  auto runtime = ClientRuntime::Start(std::move(config));
  ASSERT_TRUE(runtime.has_value()) << runtime.error().message;
  ClientRuntime& r = **runtime;
  ASSERT_TRUE(WaitFor([&] { return r.Status().state == ClientState::kConnected; }))
      << r.Status().last_error;

  exit.DropEveryTunnel();
  // Seen between tunnels (the backoff is at least 150 ms), or already back.
  ClientStatus between;
  ASSERT_TRUE(WaitFor([&] {
    between = r.Status();
    return between.state == ClientState::kReconnecting || between.reconnects == 1;
  }));
  if (between.state == ClientState::kReconnecting) {
    EXPECT_EQ(between.hops[0].state, ClientState::kReconnecting);
  }
  ClientStatus back;
  ASSERT_TRUE(WaitFor([&] {
    back = r.Status();
    return back.state == ClientState::kConnected && back.reconnects == 1;
  })) << ClientStateName(back.state) << ", " << back.reconnects << " reconnect(s)";
  ASSERT_EQ(back.hops.size(), 1u);
  EXPECT_EQ(back.hops[0].state, ClientState::kConnected);
  EXPECT_EQ(back.hops[0].reconnects, 1u);
  EXPECT_NE(back.socks_port, 0);
  r.Stop();
  EXPECT_EQ(r.ExitCode(), kClientOk);
}

TEST(ClientRuntimeOneHop, UnreachableHopEndsThePath) {
  // A port that nothing listens on: bound, then closed.
  session::asio::io_context io;
  session::tcp::acceptor probe(io, {session::asio::ip::address_v4::loopback(), 0});
  const auto closed = probe.local_endpoint();
  probe.close();

  const auto identity = payments::PrivateKey::Generate();
  tunnel::Key32 key{};
  key.fill(7);
  auto runtime = ClientRuntime::Start(FixedProvider(closed, key, identity));
  ASSERT_TRUE(runtime.has_value()) << runtime.error().message;
  ClientRuntime& r = **runtime;
  ASSERT_TRUE(WaitFor([&] { return r.Finished(); }));
  EXPECT_EQ(r.ExitCode(), kClientRuntimeFailure);
  const ClientStatus st = r.Status();
  EXPECT_EQ(st.state, ClientState::kFailed);
  EXPECT_FALSE(st.last_error.empty());
  EXPECT_EQ(st.socks_port, 0);
  ASSERT_EQ(st.hops.size(), 1u);
  EXPECT_EQ(st.hops[0].state, ClientState::kFailed);
  r.Stop();
}

}  // namespace
}  // namespace dvpn::tunnel_client
