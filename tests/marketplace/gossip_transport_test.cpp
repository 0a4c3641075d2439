// GossipTransport over real sockets on 127.0.0.1: offers spread between transports, and the
// framing and hello rules of docs/protocol.md §7 hold against raw TCP clients. Every wait polls
// a condition with a deadline.

#include "marketplace/gossip_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "marketplace/wire.h"
#include "tests/support/test_offer.h"

namespace dvpn::marketplace {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 10s;  // generous bound for anything that should take well under 1 s

payments::LedgerId TestNetwork() {
  payments::LedgerId id;
  id.bytes.fill(0x5a);
  return id;
}

GossipConfig TestConfig() {
  GossipConfig c;
  c.network = TestNetwork();
  c.round = 100ms;
  c.hello_timeout = 2000ms;
  return c;
}

uint64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Offer SignedOffer(const payments::PrivateKey& key, uint32_t offer_id = 1, uint64_t seq = 1) {
  Offer o = dvpn::testing::UnsignedTestOffer(TestNetwork(), {.offer_id = offer_id,
                                                             .seq = seq,
                                                             .issued_unix = UnixNow(),
                                                             .price_micro = 250'000,
                                                             .region = "eu-west"});
  SignOffer(o, key);
  return o;
}

// Polls `cond` every 10 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = kWait) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

template <class T>
T Get(std::future<T> f) {
  EXPECT_EQ(f.wait_for(kWait), std::future_status::ready);
  return f.get();
}

GossipTransportStats StatsOf(GossipTransport& t) { return Get(t.Stats()); }

size_t OffersOf(GossipTransport& t) { return Get(t.QueryOffers({})).size(); }

std::unique_ptr<GossipTransport> StartTransport(GossipConfig config,
                                                GossipTransportOptions options = {}) {
  auto t = std::make_unique<GossipTransport>(std::move(config), std::move(options));
  auto started = t->Start();
  EXPECT_TRUE(started.has_value()) << (started ? "" : started.error().message);
  EXPECT_NE(t->port(), 0);
  return t;
}

Endpoint Local(const GossipTransport& t) { return Endpoint{"127.0.0.1", t.port()}; }

// A blocking TCP client with bounded waits (poll), speaking raw frames.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }

  bool SendRaw(const std::vector<uint8_t>& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  static std::vector<uint8_t> Frame(uint32_t length, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> out(4 + payload.size());
    out[0] = static_cast<uint8_t>(length >> 24);
    out[1] = static_cast<uint8_t>(length >> 16);
    out[2] = static_cast<uint8_t>(length >> 8);
    out[3] = static_cast<uint8_t>(length);
    std::copy(payload.begin(), payload.end(), out.begin() + 4);
    return out;
  }
  bool SendFrame(const std::vector<uint8_t>& payload) {
    return SendRaw(Frame(static_cast<uint32_t>(payload.size()), payload));
  }

  // Reads exactly `n` bytes; false on EOF, error or timeout.
  bool ReadExact(uint8_t* out, size_t n, Clock::time_point deadline) {
    size_t got = 0;
    while (got < n) {
      if (!WaitReadable(deadline)) return false;
      ssize_t r = ::recv(fd_, out + got, n - got, 0);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  }
  // One frame's payload, or nothing on EOF, error, timeout or a bad length.
  std::optional<std::vector<uint8_t>> ReadFrame(std::chrono::milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    uint8_t h[4];
    if (!ReadExact(h, 4, deadline)) return std::nullopt;
    uint32_t len = (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | h[3];
    if (len == 0 || len > kMaxGossipFrame) return std::nullopt;
    std::vector<uint8_t> payload(len);
    if (!ReadExact(payload.data(), len, deadline)) return std::nullopt;
    return payload;
  }
  // Reads (and discards) until the server closes: EOF or a reset. False on timeout.
  bool ReadUntilClosed(std::chrono::milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    uint8_t buf[4096];
    for (;;) {
      if (!WaitReadable(deadline)) return false;
      ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
      if (r == 0) return true;
      if (r < 0) return errno == ECONNRESET || errno == EPIPE;
    }
  }

 private:
  bool WaitReadable(Clock::time_point deadline) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  int fd_ = -1;
  bool connected_ = false;
};

v1::GossipMessage HelloFrom(const NodeId& id) {
  v1::GossipMessage m;
  auto* h = m.mutable_hello();
  h->set_version(kGossipVersion);
  h->set_node_id(std::string(id.begin(), id.end()));
  h->set_listen_port(0);
  auto net = TestNetwork();
  h->set_network(std::string(net.bytes.begin(), net.bytes.end()));
  return m;
}

// Reads frames until one of `kind` arrives (nothing on EOF, a bad frame or the deadline).
std::optional<v1::GossipMessage> ReadUntil(RawClient& c, v1::GossipMessage::BodyCase kind,
                                           std::chrono::milliseconds timeout = kWait) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto frame = c.ReadFrame(left);
    if (!frame) return std::nullopt;
    v1::GossipMessage m;
    if (!m.ParseFromArray(frame->data(), static_cast<int>(frame->size()))) return std::nullopt;
    if (m.body_case() == kind) return m;
  }
  return std::nullopt;
}

// The node answers a fresh connection with its Hello: it is alive and framing works.
void ExpectHelloFrom(GossipTransport& t) {
  RawClient c(t.port());
  ASSERT_TRUE(c.connected());
  auto frame = c.ReadFrame();
  ASSERT_TRUE(frame.has_value());
  v1::GossipMessage m;
  ASSERT_TRUE(m.ParseFromArray(frame->data(), static_cast<int>(frame->size())));
  ASSERT_TRUE(m.has_hello());
  EXPECT_EQ(m.hello().version(), kGossipVersion);
  EXPECT_EQ(m.hello().node_id(), std::string(t.node_id().begin(), t.node_id().end()));
  EXPECT_EQ(m.hello().listen_port(), t.port());
}

// ---------------------------------------------------------------------------------------------

TEST(GossipTransport, StartsOnceAndAnswersWhenStopped) {
  GossipTransport t(TestConfig());
  ASSERT_TRUE(t.Start().has_value());
  EXPECT_NE(t.port(), 0);
  EXPECT_FALSE(t.Start().has_value());
  t.Stop();
  t.Stop();
  auto published = Get(t.Publish(SignedOffer(payments::PrivateKey::Generate())));
  ASSERT_FALSE(published.has_value());
  EXPECT_EQ(published.error().message, "the gossip node is not running");
  EXPECT_TRUE(Get(t.QueryOffers({})).empty());
  EXPECT_EQ(StatsOf(t).connections, 0u);
}

TEST(GossipTransport, RefusesBadListenAddress) {
  GossipTransportOptions o;
  o.listen_address = "not-an-address";
  GossipTransport t(TestConfig(), o);
  EXPECT_FALSE(t.Start().has_value());
}

TEST(GossipTransport, OfferReachesBootstrappedPeer) {
  auto a = StartTransport(TestConfig());
  auto config_b = TestConfig();
  config_b.bootstrap = {Local(*a)};
  auto b = StartTransport(config_b);
  EXPECT_NE(a->node_id(), b->node_id());

  std::mutex mu;
  std::vector<OfferChange> changes;
  b->AddBookListener([&](const OfferChange& c) {
    std::lock_guard lock(mu);
    changes.push_back(c);
  });

  ASSERT_TRUE(WaitFor([&] { return StatsOf(*a).node.peers == 1 && StatsOf(*b).node.peers == 1; }));
  auto key = payments::PrivateKey::Generate();
  Offer offer = SignedOffer(key);
  auto published = Get(a->Publish(offer));
  ASSERT_TRUE(published.has_value()) << published.error().message;

  ASSERT_TRUE(WaitFor([&] { return OffersOf(*b) == 1; }));
  auto got = Get(b->QueryOffers({}));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], offer);
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].kind, OfferChange::Kind::kAdded);
    EXPECT_EQ(*changes[0].offer, offer);
  }
  auto sb = StatsOf(*b);
  EXPECT_EQ(sb.offers, 1u);
  EXPECT_GE(sb.node.frames_received, 2u);
  EXPECT_EQ(sb.bad_frames, 0u);
  EXPECT_EQ(sb.dials, 1u);
  EXPECT_EQ(StatsOf(*a).accepted, 1u);

  // A filter that excludes it.
  OfferQuery cheap;
  cheap.max_price_per_mb = Amount::FromMicro(1000);
  EXPECT_TRUE(Get(b->QueryOffers(cheap)).empty());
}

TEST(GossipTransport, OfferCrossesAChain) {
  auto a = StartTransport(TestConfig());
  auto config_b = TestConfig();
  config_b.bootstrap = {Local(*a)};
  auto b = StartTransport(config_b);
  auto config_c = TestConfig();
  config_c.bootstrap = {Local(*b)};
  auto c = StartTransport(config_c);

  ASSERT_TRUE(WaitFor([&] { return StatsOf(*c).node.peers >= 1 && StatsOf(*a).node.peers >= 1; }));
  auto key = payments::PrivateKey::Generate();
  Offer offer = SignedOffer(key, 7, 3);
  ASSERT_TRUE(Get(c->Publish(offer)).has_value());
  ASSERT_TRUE(WaitFor([&] { return OffersOf(*a) == 1 && OffersOf(*b) == 1; }));
  EXPECT_EQ(Get(a->QueryOffers({}))[0], offer);

  // A newer version replaces it everywhere.
  Offer newer = SignedOffer(key, 7, 4);
  newer.price_per_mb = Amount::FromMicro(200'000);
  SignOffer(newer, key);
  ASSERT_TRUE(Get(c->Publish(newer)).has_value());
  ASSERT_TRUE(WaitFor([&] {
    auto got = Get(a->QueryOffers({}));
    return got.size() == 1 && got[0].seq == 4;
  }));
}

TEST(GossipTransport, OversizedFrameClosesTheConnection) {
  auto a = StartTransport(TestConfig());
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  // The length alone decides: no payload follows.
  ASSERT_TRUE(c.SendRaw(RawClient::Frame(70000, {})));
  EXPECT_TRUE(c.ReadUntilClosed());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*a).connections == 0; }));
  EXPECT_EQ(StatsOf(*a).bad_frames, 1u);
  ExpectHelloFrom(*a);
}

TEST(GossipTransport, ZeroLengthFrameClosesTheConnection) {
  auto a = StartTransport(TestConfig());
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.SendRaw(RawClient::Frame(0, {})));
  EXPECT_TRUE(c.ReadUntilClosed());
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*a).bad_frames == 1; }));
  ExpectHelloFrom(*a);
}

TEST(GossipTransport, ZeroLengthAfterHelloClosesTheConnection) {
  auto a = StartTransport(TestConfig());
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  NodeId id{};
  id.fill(0x77);
  ASSERT_TRUE(c.SendFrame(Serialize(HelloFrom(id))));
  // The node asks a new peer for addresses once the hellos are done.
  ASSERT_TRUE(ReadUntil(c, v1::GossipMessage::kPeerRequest).has_value());
  ASSERT_EQ(StatsOf(*a).node.peers, 1u);
  ASSERT_TRUE(c.SendRaw(RawClient::Frame(0, {})));
  EXPECT_TRUE(c.ReadUntilClosed());
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*a).node.peers == 0; }));
}

TEST(GossipTransport, FramesAreReassembledWhateverTheSegments) {
  auto a = StartTransport(TestConfig());
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  NodeId id{};
  id.fill(0x42);
  v1::GossipMessage ping;
  ping.mutable_ping()->set_nonce(7);
  // Two frames in one write.
  std::vector<uint8_t> hello_and_ping;
  for (const auto& m : {HelloFrom(id), ping}) {
    auto payload = Serialize(m);
    auto f = RawClient::Frame(static_cast<uint32_t>(payload.size()), payload);
    hello_and_ping.insert(hello_and_ping.end(), f.begin(), f.end());
  }
  ASSERT_TRUE(c.SendRaw(hello_and_ping));
  auto pong = ReadUntil(c, v1::GossipMessage::kPong);
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->pong().nonce(), 7u);
  // One frame a byte at a time.
  ping.mutable_ping()->set_nonce(8);
  auto payload = Serialize(ping);
  for (uint8_t b : RawClient::Frame(static_cast<uint32_t>(payload.size()), payload)) {
    ASSERT_TRUE(c.SendRaw({b}));
  }
  pong = ReadUntil(c, v1::GossipMessage::kPong);
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->pong().nonce(), 8u);
  EXPECT_EQ(StatsOf(*a).bad_frames, 0u);
}

TEST(GossipTransport, GarbagePayloadClosesTheConnection) {
  auto a = StartTransport(TestConfig());
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  // Field 1 with wire type 7: not protobuf.
  ASSERT_TRUE(c.SendFrame({0x0f, 0xff, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_TRUE(c.ReadUntilClosed());
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*a).connections == 0; }));
  ExpectHelloFrom(*a);
}

TEST(GossipTransport, FirstMessageOtherThanHelloClosesTheConnection) {
  auto a = StartTransport(TestConfig());
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  v1::GossipMessage ping;
  ping.mutable_ping()->set_nonce(42);
  ASSERT_TRUE(c.SendFrame(Serialize(ping)));
  EXPECT_TRUE(c.ReadUntilClosed());
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*a).connections == 0; }));
  ExpectHelloFrom(*a);
}

TEST(GossipTransport, SilentClientIsClosedAfterTheHelloTimeout) {
  auto config = TestConfig();
  config.hello_timeout = 300ms;
  auto a = StartTransport(config);
  auto start = Clock::now();
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  EXPECT_TRUE(c.ReadUntilClosed(5s));
  EXPECT_GE(Clock::now() - start, 250ms);
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*a).connections == 0; }));
}

TEST(GossipTransport, SendQueueOverflowClosesAndTellsTheNode) {
  GossipTransportOptions o;
  o.send_queue_limit = 16;  // smaller than our own Hello
  auto a = StartTransport(TestConfig(), o);
  RawClient c(a->port());
  ASSERT_TRUE(c.connected());
  EXPECT_TRUE(c.ReadUntilClosed());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*a).connections == 0; }));
  auto s = StatsOf(*a);
  EXPECT_EQ(s.send_overflows, 1u);
  EXPECT_EQ(s.node.peers, 0u);
}

TEST(GossipTransport, FailedDialIsReported) {
  // A port that was free a moment ago: the connection is refused.
  uint16_t closed_port;
  {
    GossipTransport probe(TestConfig());
    ASSERT_TRUE(probe.Start().has_value());
    closed_port = probe.port();
  }
  auto config = TestConfig();
  config.bootstrap = {Endpoint{"127.0.0.1", closed_port}};
  auto a = StartTransport(config);
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*a).dials_failed >= 1; }));
  EXPECT_EQ(StatsOf(*a).node.peers, 0u);
}

TEST(GossipTransport, DialsLocalhostByName) {
  auto a = StartTransport(TestConfig());
  auto config_b = TestConfig();
  config_b.bootstrap = {Endpoint{"localhost", a->port()}};
  auto b = StartTransport(config_b);
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*b).node.peers == 1; }));
}

TEST(GossipTransport, StopIsPromptWithConnectionsOpen) {
  auto a = StartTransport(TestConfig());
  auto config_b = TestConfig();
  config_b.bootstrap = {Local(*a)};
  auto b = StartTransport(config_b);
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*a).node.peers == 1; }));
  RawClient idle(a->port());  // half-open: never says hello
  ASSERT_TRUE(idle.connected());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*a).connections == 2; }));

  auto start = Clock::now();
  a->Stop();
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_TRUE(idle.ReadUntilClosed(2s));
  // B sees A go.
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*b).node.peers == 0; }));
  start = Clock::now();
  b.reset();  // the destructor stops too
  EXPECT_LT(Clock::now() - start, 1s);
}

// docs/marketplace.md §1, "Inbound slots": 40 connections that only say hello and ping hold
// every inbound slot of a seller; an honest node bootstrapping to it still gets in (an idle
// connection is evicted for it) and learns the seller's offers.
TEST(GossipTransport, IdleConnectionsHoldingEverySlotDoNotKeepANewcomerOut) {
  auto config = TestConfig();
  config.inbound_grace = 1000ms;
  auto seller = StartTransport(config);
  auto key = payments::PrivateKey::Generate();
  const Offer offer = SignedOffer(key);
  ASSERT_TRUE(Get(seller->Publish(offer)).has_value());

  std::vector<std::unique_ptr<RawClient>> attackers;
  for (int i = 0; i < 40; ++i) {
    attackers.push_back(std::make_unique<RawClient>(seller->port()));
    ASSERT_TRUE(attackers.back()->connected());
    NodeId id{};
    id.fill(static_cast<uint8_t>(i + 1));
    ASSERT_TRUE(attackers.back()->SendFrame(Serialize(HelloFrom(id))));
  }
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*seller).node.peers == config.max_peers; }));
  // Let the grace of every attacker connection pass, pinging all along (time has to pass here:
  // the grace is a duration, not an event).
  const auto past_grace = Clock::now() + config.inbound_grace + 200ms;
  for (uint64_t nonce = 1; Clock::now() < past_grace; ++nonce) {
    v1::GossipMessage ping;
    ping.mutable_ping()->set_nonce(nonce);
    for (auto& a : attackers) a->SendFrame(Serialize(ping));  // refused ones fail: ignored
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(StatsOf(*seller).node.peers, config.max_peers) << "the attacker holds every slot";

  auto honest_config = TestConfig();
  honest_config.bootstrap = {Local(*seller)};
  auto honest = StartTransport(honest_config);
  ASSERT_TRUE(WaitFor([&] { return OffersOf(*honest) == 1; }, 4s))
      << "the newcomer did not learn the seller's offer book";
  EXPECT_EQ(Get(honest->QueryOffers({}))[0], offer);
  auto s = StatsOf(*seller);
  EXPECT_GE(s.node.inbound_evicted, 1u);
  EXPECT_EQ(s.node.peers, config.max_peers);
}

TEST(GossipTransport, RemovedListenerIsNotCalled) {
  auto a = StartTransport(TestConfig());
  std::atomic<int> calls{0};
  uint64_t id = a->AddBookListener([&](const OfferChange&) { ++calls; });
  auto key = payments::PrivateKey::Generate();
  ASSERT_TRUE(Get(a->Publish(SignedOffer(key, 1))).has_value());
  EXPECT_EQ(calls.load(), 1);
  a->RemoveBookListener(id);
  ASSERT_TRUE(Get(a->Publish(SignedOffer(key, 2))).has_value());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(OffersOf(*a), 2u);
}

}  // namespace
}  // namespace dvpn::marketplace
