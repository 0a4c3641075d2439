// The exit's UDP endpoint and a session's datagram path over loopback sockets: packets both
// ways, keepalive answers, the peer's address only from authenticated datagrams, no answer and
// no state for anything that does not authenticate, and a flood that changes nothing.

#include <chrono>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "tunnel/record.h"
#include "tunnel/session/datagram_endpoint.h"
#include "tunnel/session/datagram_path.h"

namespace dvpn::tunnel::session {
namespace {

using namespace std::chrono_literals;

SessionKeys Keys(uint8_t send, uint8_t recv) {
  SessionKeys k;
  k.cipher = Cipher::kChaCha20Poly1305;
  k.send_key.fill(send);
  k.recv_key.fill(recv);
  return k;
}

ByteSpan Bytes(const std::string& s) {
  return ByteSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
std::string Text(std::span<const uint8_t> b) { return std::string(b.begin(), b.end()); }

// The client's side: its own UDP socket, its path, and what it received.
struct ClientSide {
  ClientSide(asio::io_context& io, const SessionKeys& keys, uint32_t local, uint32_t remote,
             const udp::endpoint& exit)
      : socket(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    path = std::make_shared<DatagramPath>(
        keys, local, remote, DatagramPath::Options{},
        [this](ByteSpan d, const udp::endpoint& to) {
          error_code ec;
          socket.send_to(asio::buffer(d.data(), d.size()), to, 0, ec);
          return !ec;
        },
        [this](std::span<uint8_t> p) { packets.push_back(Text(p)); });
    path->SetPeer(exit);
    socket.non_blocking(true);
  }
  // Feeds whatever the socket holds to the path.
  void Drain() {
    std::vector<uint8_t> buf(65536);
    for (;;) {
      udp::endpoint from;
      error_code ec;
      const size_t n = socket.receive_from(asio::buffer(buf), from, 0, ec);
      if (ec) return;
      path->OnDatagram(std::span<uint8_t>(buf.data(), n), from);
    }
  }
  udp::socket socket;
  std::shared_ptr<DatagramPath> path;
  std::vector<std::string> packets;
};

class DatagramPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ep = DatagramEndpoint::Open(io_.get_executor(),
                                     udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    ASSERT_TRUE(ep) << ep.error().message;
    endpoint_ = *ep;
    endpoint_->Start();
    auto index = endpoint_->Reserve();
    ASSERT_TRUE(index);
    exit_index_ = *index;
    exit_path_ = std::make_shared<DatagramPath>(
        Keys(2, 1), exit_index_, kClientIndex, DatagramPath::Options{.answer_keepalives = true},
        [this](ByteSpan d, const udp::endpoint& to) { return endpoint_->SendTo(d, to); },
        [this](std::span<uint8_t> p) { exit_packets_.push_back(Text(p)); });
    ASSERT_TRUE(endpoint_->Attach(exit_index_, exit_path_));
    client_ =
        std::make_unique<ClientSide>(io_, Keys(1, 2), kClientIndex, exit_index_, ExitAddress());
  }
  void TearDown() override {
    if (endpoint_) endpoint_->Close();
    io_.run_for(20ms);
  }
  udp::endpoint ExitAddress() const {
    return udp::endpoint(asio::ip::make_address("127.0.0.1"), endpoint_->port());
  }
  // Runs the exit for a moment and lets the client read.
  void Pump() {
    for (int i = 0; i < 5; ++i) {
      io_.run_for(10ms);
      client_->Drain();
    }
  }

  static constexpr uint32_t kClientIndex = 0x1a2b3c4d;
  asio::io_context io_;
  std::shared_ptr<DatagramEndpoint> endpoint_;
  uint32_t exit_index_ = 0;
  std::shared_ptr<DatagramPath> exit_path_;
  std::vector<std::string> exit_packets_;
  std::unique_ptr<ClientSide> client_;
};

TEST_F(DatagramPathTest, KeepaliveTeachesTheExitThePeerAndPacketsFlowBothWays) {
  EXPECT_FALSE(exit_path_->SendPacket(Bytes("too early"))) << "no peer known yet";
  ASSERT_TRUE(client_->path->SendKeepalive());
  Pump();
  ASSERT_TRUE(exit_path_->peer());
  EXPECT_EQ(exit_path_->peer()->port(), client_->socket.local_endpoint().port());
  EXPECT_EQ(exit_path_->counters().keepalives_in, 1u);
  EXPECT_EQ(client_->path->counters().keepalives_in, 1u) << "the exit answers a keepalive";
  EXPECT_GT(client_->path->last_authenticated_ms(), 0u);

  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(client_->path->SendPacket(Bytes("up" + std::to_string(i))));
  Pump();
  ASSERT_EQ(exit_packets_.size(), 20u);
  EXPECT_EQ(exit_packets_.front(), "up0");
  EXPECT_EQ(exit_path_->counters().bytes_in, client_->path->counters().bytes_out);
  ASSERT_TRUE(exit_path_->SendPacket(Bytes("down")));
  Pump();
  ASSERT_EQ(client_->packets, std::vector<std::string>{"down"});
  EXPECT_EQ(endpoint_->counters().delivered, 21u);
}

TEST_F(DatagramPathTest, KeepaliveAnswersAreRateLimited) {
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(client_->path->SendKeepalive());
  Pump();
  EXPECT_EQ(exit_path_->counters().keepalives_in, 50u);
  EXPECT_EQ(exit_path_->counters().keepalives_out, 1u);
}

TEST_F(DatagramPathTest, OnlyAnAuthenticatedDatagramMovesThePeer) {
  ASSERT_TRUE(client_->path->SendKeepalive());
  Pump();
  const auto first = *exit_path_->peer();

  // A forgery under the session's index from another socket: refused, unanswered, peer kept.
  udp::socket attacker(io_, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  attacker.non_blocking(true);
  std::vector<uint8_t> forged(64, 0);
  forged[0] = 0x04;
  forged[4] = static_cast<uint8_t>(exit_index_ >> 24);
  forged[5] = static_cast<uint8_t>(exit_index_ >> 16);
  forged[6] = static_cast<uint8_t>(exit_index_ >> 8);
  forged[7] = static_cast<uint8_t>(exit_index_);
  forged[15] = 9;  // a fresh counter
  attacker.send_to(asio::buffer(forged), ExitAddress());
  Pump();
  EXPECT_EQ(exit_path_->counters().refused, 1u);
  EXPECT_EQ(*exit_path_->peer(), first);
  std::vector<uint8_t> buf(2048);
  udp::endpoint from;
  error_code ec;
  attacker.receive_from(asio::buffer(buf), from, 0, ec);
  EXPECT_EQ(ec, asio::error::would_block) << "something answered a forged datagram";

  // The client moves (a new source port, as after a NAT rebinding): the exit follows.
  udp::socket moved(io_, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  client_->socket = std::move(moved);
  client_->socket.non_blocking(true);
  ASSERT_TRUE(client_->path->SendPacket(Bytes("from the new port")));
  Pump();
  ASSERT_TRUE(exit_path_->peer());
  EXPECT_EQ(exit_path_->peer()->port(), client_->socket.local_endpoint().port());
  ASSERT_TRUE(exit_path_->SendPacket(Bytes("follows")));
  Pump();
  EXPECT_EQ(client_->packets, std::vector<std::string>{"follows"});
}

TEST_F(DatagramPathTest, AFloodOfJunkIsCountedUnansweredAndChangesNothing) {
  ASSERT_TRUE(client_->path->SendKeepalive());
  Pump();
  const auto sent_before = endpoint_->counters().sent;
  udp::socket attacker(io_, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::mt19937 rng(7);
  constexpr int kJunk = 6000;
  for (int i = 0; i < kJunk; ++i) {
    std::vector<uint8_t> d(1 + rng() % 1400);
    for (auto& b : d) b = static_cast<uint8_t>(rng());
    switch (i % 3) {
      case 0:
        break;  // random bytes: mostly malformed headers
      case 1:   // a well-formed header for an index nobody has
        d.resize(std::max<size_t>(d.size(), 48));
        d[0] = 0x04;
        d[1] = d[2] = d[3] = 0;
        if (((uint32_t{d[4]} << 24) | (uint32_t{d[5]} << 16) | (uint32_t{d[6]} << 8) | d[7]) ==
            exit_index_) {
          d[7] ^= 1;
        }
        break;
      case 2:  // the live session's index, random ciphertext
        d.resize(std::max<size_t>(d.size(), 48));
        d[0] = 0x04;
        d[1] = d[2] = d[3] = 0;
        d[4] = static_cast<uint8_t>(exit_index_ >> 24);
        d[5] = static_cast<uint8_t>(exit_index_ >> 16);
        d[6] = static_cast<uint8_t>(exit_index_ >> 8);
        d[7] = static_cast<uint8_t>(exit_index_);
        break;
    }
    error_code ec;
    attacker.send_to(asio::buffer(d), ExitAddress(), 0, ec);
    if (i % 50 == 0) io_.run_for(1ms);
  }
  for (int i = 0; i < 50 && endpoint_->counters().received < kJunk + 1; ++i) io_.run_for(10ms);
  const auto& c = endpoint_->counters();
  // Loopback may drop some under the burst; whatever arrived was sorted, none answered.
  EXPECT_GT(c.received, kJunk / 2);
  EXPECT_EQ(c.malformed + c.unknown_index + c.delivered, c.received);
  EXPECT_GT(c.malformed, 0u);
  EXPECT_GT(c.unknown_index, 0u);
  EXPECT_EQ(exit_path_->counters().opened, 1u) << "only the keepalive authenticated";
  EXPECT_EQ(c.sent, sent_before) << "the exit answered junk";
  EXPECT_EQ(endpoint_->sessions(), 1u);

  // The session still works.
  ASSERT_TRUE(client_->path->SendPacket(Bytes("still here")));
  Pump();
  ASSERT_FALSE(exit_packets_.empty());
  EXPECT_EQ(exit_packets_.back(), "still here");
}

TEST_F(DatagramPathTest, OversizedPacketsAreRefusedAtTheSender) {
  ASSERT_TRUE(client_->path->SendKeepalive());
  Pump();
  std::string big(client_->path->max_plaintext() + 1, 'x');
  EXPECT_FALSE(client_->path->SendPacket(Bytes(big)));
  EXPECT_EQ(client_->path->counters().send_failed, 1u);
  std::string fits(client_->path->max_plaintext(), 'y');
  EXPECT_TRUE(client_->path->SendPacket(Bytes(fits)));
  Pump();
  ASSERT_EQ(exit_packets_.size(), 1u);
  EXPECT_EQ(exit_packets_[0].size(), fits.size());
}

// Two paths without sockets: what `sender` seals is kept in `wire`, and the test hands the
// datagrams it chooses, in the order it chooses, to `receiver`.
struct WirePair {
  WirePair()
      : sender(Keys(2, 1), 5, 7, DatagramPath::Options{},
               [this](ByteSpan d, const udp::endpoint&) {
                 wire.emplace_back(d.begin(), d.end());
                 return true;
               },
               [](std::span<uint8_t>) {}),
        receiver(Keys(1, 2), 7, 5, DatagramPath::Options{},
                 [](ByteSpan, const udp::endpoint&) { return true; },
                 [this](std::span<uint8_t>) { ++delivered; }) {
    sender.SetPeer(peer);
  }
  void Deliver(size_t i) { receiver.OnDatagram(std::span<uint8_t>(wire[i]), peer); }

  std::vector<std::vector<uint8_t>> wire;
  const udp::endpoint peer{asio::ip::make_address("127.0.0.1"), 9};
  size_t delivered = 0;
  DatagramPath sender;
  DatagramPath receiver;
};

// The client's meter credits the exit for datagrams lost on the way (docs/full-tunnel.md
// "Payments"): the receiver counts the counters it never saw, and a late one fills its gap.
TEST(DatagramPathMissing, SkippedCountersAreMissingAndLateArrivalsFillTheGap) {
  WirePair w;
  auto& [wire, peer, delivered, sender, receiver] = w;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(sender.SendPacket(Bytes("packet")));
  auto deliver = [&](size_t i) { w.Deliver(i); };
  deliver(0);
  deliver(1);
  EXPECT_EQ(receiver.counters().missing, 0u);
  deliver(5);  // 2, 3, 4 are missing
  EXPECT_EQ(receiver.counters().missing, 3u);
  deliver(3);  // late: fills one
  EXPECT_EQ(receiver.counters().missing, 2u);
  deliver(3);  // a replay is refused and changes nothing
  EXPECT_EQ(receiver.counters().missing, 2u);
  EXPECT_EQ(receiver.counters().refused, 1u);
  deliver(9);  // 6, 7, 8
  EXPECT_EQ(receiver.counters().missing, 5u);
  EXPECT_EQ(delivered, 5u);  // 0, 1, 5, 3, 9
}

// The keys' timers: a new send epoch after kRekeyAfterSeconds; the receiver keeps the previous
// epoch's key kPreviousEpochSeconds after it first saw the new one, then drops it.
TEST(DatagramPathKeys, TickKeysRekeysOnTimeAndDropsThePreviousEpochLater) {
  WirePair w;
  auto& [wire, peer, delivered, sender, receiver] = w;
  const uint64_t t0 = MonotonicMs();
  ASSERT_TRUE(sender.SendPacket(Bytes("epoch 0")));
  sender.TickKeys(t0 + kRekeyAfterSeconds * 1000 - 5000);  // not yet
  ASSERT_TRUE(sender.SendPacket(Bytes("still epoch 0")));
  sender.TickKeys(t0 + kRekeyAfterSeconds * 1000 + 1000);
  ASSERT_TRUE(sender.SendPacket(Bytes("epoch 1")));
  ASSERT_EQ(wire.size(), 3u);
  EXPECT_EQ(wire[0][1], wire[1][1]);  // the epoch byte
  EXPECT_NE(wire[1][1], wire[2][1]);
  receiver.OnDatagram(std::span<uint8_t>(wire[2]), peer);
  EXPECT_TRUE(receiver.has_previous_epoch());
  const uint64_t t1 = MonotonicMs();
  receiver.TickKeys(t1);
  receiver.TickKeys(t1 + kPreviousEpochSeconds * 1000 - 1);
  EXPECT_TRUE(receiver.has_previous_epoch());
  receiver.OnDatagram(std::span<uint8_t>(wire[1]), peer);  // late, from the previous epoch
  EXPECT_EQ(delivered, 2u);
  receiver.TickKeys(t1 + kPreviousEpochSeconds * 1000);
  EXPECT_FALSE(receiver.has_previous_epoch());
  receiver.OnDatagram(std::span<uint8_t>(wire[0]), peer);  // its key is gone
  EXPECT_EQ(delivered, 2u);
}

TEST(DatagramEndpoint, ReservesDistinctIndicesUpToItsLimit) {
  asio::io_context io;
  auto ep = DatagramEndpoint::Open(io.get_executor(),
                                   udp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
                                   DatagramEndpoint::Options{.max_sessions = 64,
                                                             .max_datagram = kMaxUdpPayload,
                                                             .offloads = {}});
  ASSERT_TRUE(ep) << ep.error().message;
  std::set<uint32_t> seen;
  for (int i = 0; i < 64; ++i) {
    auto index = (*ep)->Reserve();
    ASSERT_TRUE(index);
    EXPECT_NE(*index, 0u);
    EXPECT_TRUE(seen.insert(*index).second);
  }
  auto full = (*ep)->Reserve();
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, EndpointErrc::kFull);
  (*ep)->Unregister(*seen.begin());
  EXPECT_TRUE((*ep)->Reserve());
  // A receiver that went away frees its index at the next full Reserve.
  auto index = *seen.rbegin();
  (*ep)->Unregister(index);
  auto again = (*ep)->Reserve();
  ASSERT_TRUE(again);
  {
    auto gone = std::make_shared<DatagramPath>(
        Keys(1, 2), *again, 1, DatagramPath::Options{},
        [](ByteSpan, const udp::endpoint&) { return true; }, [](std::span<uint8_t>) {});
    EXPECT_TRUE((*ep)->Attach(*again, gone));
    EXPECT_FALSE((*ep)->Attach(*again, gone)) << "attached twice";
  }
  EXPECT_TRUE((*ep)->Reserve()) << "the expired receiver's index was not freed";
  EXPECT_FALSE((*ep)->Attach(12345, {})) << "attached to an index never reserved";
  (*ep)->Close();
}

}  // namespace
}  // namespace dvpn::tunnel::session
