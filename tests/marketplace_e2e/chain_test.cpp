// The marketplace on loopback (issue 5): at least 10 real dvpn-node processes joined as a chain
// (node i bootstraps only to node i-1), a client on node 0's OfferBook gRPC service, and a raw
// gossip peer played by the test as the attacker. Shows that an offer from the end of the chain
// reaches the client in bounded time, a retired offer disappears everywhere, forged and expired
// offers are never stored or forwarded (and their sender is cut off), and a flooding peer is
// rate-limited and dropped while an honest offer still arrives.

#include <algorithm>

#include <boost/asio/ip/address.hpp>

#include "tests/marketplace_e2e/node_harness.h"

namespace dvpn::marketplace_e2e {
namespace {

constexpr int kChain = 10;
// Bound for an offer to cross the chain (it takes about a second with 200 ms rounds).
constexpr auto kSpread = 20s;

std::vector<std::string> ProviderFlags(const TempDir& dir, const PrivateKey& key,
                                       const std::string& region,
                                       const std::string& price = "0.25") {
  const std::string hex = ToHex(key.secret());
  const std::string key_file =
      dvpn::testing::WriteSecretFile(dir.File("key-" + hex.substr(0, 16)), hex);
  return {"--price-per-mb",      price,
          "--identity-key-file", key_file,
          "--tunnel-key",       std::string(64, 'a') /* any non-zero X25519 public key */,
          "--endpoint",         "127.0.0.1:7443",
          "--endpoint",         "localhost:7444",  // a name: the node signs its address
          "--region",           region,
          "--capacity-mbps",    "800",
          "--max-sessions",     "32",
          "--retire-linger-ms", "1500"};
}

class ChainTest : public ::testing::Test {
 protected:
  // Every node still running stops cleanly on SIGTERM: exit 0 (under the sanitizers, also no
  // error and no leak).
  void TearDown() override {
    for (auto& n : net_.nodes())
      if (n->proc && n->proc->running()) n->proc->Signal(SIGTERM);
    for (auto& n : net_.nodes()) {
      if (!n->proc || !n->proc->running()) continue;
      auto status = Network::Stop(*n);
      ASSERT_TRUE(status) << n->name << " did not stop\n" << FileTail(n->log);
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << n->name << ": status " << *status << "\n"
          << FileTail(n->log);
    }
  }

  // True when every running node lists exactly one offer of `provider`.
  bool EveryNodeHas(const PrivateKey& provider) {
    for (auto& n : net_.nodes()) {
      if (!n->proc || !n->proc->running()) continue;
      if (OffersOf(*n, provider).size() != 1) return false;
    }
    return true;
  }
  bool NoNodeHas(const PrivateKey& provider) {
    for (auto& n : net_.nodes()) {
      if (!n->proc || !n->proc->running()) continue;
      auto list = ListOffers(*n, AllOffers());
      if (!list) return false;  // unanswered: not proven yet
      for (const auto& r : *list)
        if (r.offer().provider() == ProviderBytes(provider)) return false;
    }
    return true;
  }

  TempDir dir_;
  Network net_{dir_};
};

TEST_F(ChainTest, OfferFromTheLastNodeReachesTheClientOnTheFirst) {
  ASSERT_TRUE(net_.StartChain(kChain - 1)) << net_.Logs();
  Watch watch(*net_[0].stub);
  auto provider = PrivateKey::Generate();
  const auto start = SteadyClock::now();
  Node* last =
      net_.Start("provider", {net_[kChain - 2].gossip_port}, ProviderFlags(dir_, provider, "chain-end"));
  ASSERT_NE(last, nullptr);
  ASSERT_EQ(net_.size(), static_cast<size_t>(kChain));

  ASSERT_TRUE(PollUntil([&] { return OffersOf(net_[0], provider).size() == 1; }, kSpread))
      << net_.Logs();
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start);
  std::cout << "the offer reached node 0 " << took.count() << " ms after the provider (node "
            << kChain - 1 << ") was started\n";

  // What the client sees is the provider's signed offer, ranked.
  auto got = OffersOf(net_[0], provider).at(0);
  EXPECT_EQ(got.offer().price_per_mb(), 250'000u);
  EXPECT_EQ(got.offer().region(), "chain-end");
  EXPECT_EQ(got.offer().capacity_mbps(), 800u);
  EXPECT_EQ(got.offer().max_sessions(), 32u);
  // The name was resolved by the node (docs/node.md "Endpoints"): 127.0.0.1, and ::1 where
  // the machine's hosts file also gives localhost an IPv6 address.
  ASSERT_GE(got.offer().endpoints_size(), 2);
  EXPECT_EQ(got.offer().endpoints(0).host(), "127.0.0.1");
  EXPECT_EQ(got.offer().endpoints(1).host(), "127.0.0.1");
  EXPECT_EQ(got.offer().endpoints(1).port(), 7444u);
  for (const auto& e : got.offer().endpoints()) {
    boost::system::error_code ec;
    boost::asio::ip::make_address(e.host(), ec);
    EXPECT_FALSE(ec) << "a name in a signed offer: " << e.host();
  }
  EXPECT_FALSE(got.offer().retired());
  EXPECT_EQ(got.provider_address(),
            payments::Address::FromPublicKey(provider.public_key()).ToString());
  EXPECT_DOUBLE_EQ(got.score(), (250'000.0 + 1) * 1.5);  // nothing measured
  auto parsed = marketplace::FromProto(got.offer());
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_TRUE(marketplace::VerifyOfferSignature(*parsed, marketplace::OfferDigest(*parsed)));

  // The watch on node 0 (opened before the provider started) saw it arrive.
  EXPECT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::ADDED, provider), 5s));

  // Filters on node 0.
  v1::OfferFilter f;
  f.set_max_price_per_mb(249'999);
  EXPECT_TRUE(ListOffers(net_[0], f)->empty());
  f.set_max_price_per_mb(250'000);
  EXPECT_EQ(ListOffers(net_[0], f)->size(), 1u);
  f.set_region("eu-west");
  EXPECT_TRUE(ListOffers(net_[0], f)->empty());
  f.set_region("chain-end");
  f.set_min_capacity_mbps(801);
  EXPECT_TRUE(ListOffers(net_[0], f)->empty());
  f.set_min_capacity_mbps(800);
  EXPECT_EQ(ListOffers(net_[0], f)->size(), 1u);
  grpc::Status status;
  f.set_limit(1001);
  EXPECT_FALSE(ListOffers(net_[0], f, &status));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Every node of the chain has it too.
  EXPECT_TRUE(PollUntil([&] { return EveryNodeHas(provider); }, kSpread)) << net_.Logs();
}

TEST_F(ChainTest, RetiredOfferDisappearsEverywhere) {
  ASSERT_TRUE(net_.StartChain(kChain - 1)) << net_.Logs();
  auto provider = PrivateKey::Generate();
  Node* last =
      net_.Start("provider", {net_[kChain - 2].gossip_port}, ProviderFlags(dir_, provider, "retiring"));
  ASSERT_NE(last, nullptr);
  ASSERT_TRUE(PollUntil([&] { return EveryNodeHas(provider); }, kSpread)) << net_.Logs();

  Watch watch(*net_[0].stub);
  ASSERT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::ADDED, provider), 5s));

  // SIGTERM: the provider signs a retired version, lingers 1.5 s, and exits 0.
  auto status = Network::Stop(*last, 15s);
  ASSERT_TRUE(status.has_value()) << FileTail(last->log);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << FileTail(last->log);
  const std::string log = ReadFile(last->log);
  EXPECT_NE(log.find("retired offer"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;

  // Gone from every one of the 9 remaining nodes, and node 0's watcher was told.
  EXPECT_TRUE(PollUntil([&] { return NoNodeHas(provider); }, kSpread)) << net_.Logs();
  EXPECT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::REMOVED, provider), 5s));
}

TEST_F(ChainTest, ForgedAndExpiredOffersAreNeverStoredOrForwarded) {
  ASSERT_TRUE(net_.StartChain(kChain - 1)) << net_.Logs();
  auto honest = PrivateKey::Generate();
  ASSERT_NE(net_.Start("provider", {net_[kChain - 2].gossip_port}, ProviderFlags(dir_, honest, "honest")),
            nullptr);
  ASSERT_TRUE(PollUntil([&] { return EveryNodeHas(honest); }, kSpread)) << net_.Logs();
  const auto before = OffersOf(net_[0], honest).at(0).offer();

  // The attacker joins a middle node.
  Node& target = net_[kChain / 2];
  RawPeer attacker;
  ASSERT_TRUE(attacker.Connect(target.gossip_port));
  ASSERT_TRUE(attacker.SendHello(TestNetwork()));

  auto expired_key = PrivateKey::Generate();
  const uint64_t now = UnixNow();
  Offer expired = MakeOffer(expired_key, 1, 1, "expired", 1, now - 7200, 3600);  // signed
  // Forged: valid fields, a signature that does not cover them.
  auto forger = PrivateKey::Generate();
  Offer forged = MakeOffer(forger, 1, 1, "forged", 1);
  forged.price_per_mb = Amount::FromMicro(2);
  // Forged in the honest provider's name: a newer seq at a lower price, not signed by it.
  Offer impersonation = MakeOffer(honest, before.offer_id(), before.seq() + 1000, "honest", 1);
  impersonation.signature[0] ^= 0x01;

  // Expired (-10) and two forgeries (-25 each): the connection survives (score -60).
  ASSERT_TRUE(attacker.SendOffers({expired}));
  ASSERT_TRUE(attacker.SendOffers({forged}));
  ASSERT_TRUE(attacker.SendOffers({impersonation}));
  EXPECT_TRUE(attacker.Alive(5s)) << "closed before the score reached the ban threshold";
  // Repeated forgeries: banned at -100 and the connection closed.
  for (uint32_t i = 2; i <= 6; ++i) {
    Offer more = MakeOffer(forger, i, 1, "forged", 1);
    more.price_per_mb = Amount::FromMicro(3);
    if (!attacker.SendOffers({more})) break;  // already closed
  }
  EXPECT_TRUE(attacker.WaitClosed(10s)) << FileTail(target.log);
  // The ban holds: the same node id is refused at once.
  RawPeer again(attacker.node_id());
  ASSERT_TRUE(again.Connect(target.gossip_port));
  ASSERT_TRUE(again.SendHello(TestNetwork()));
  EXPECT_TRUE(again.WaitClosed(10s));

  // An honest offer published later, from the other end of the chain, crosses the attacked
  // node and reaches every node: the forgeries had the same time to spread.
  auto later = PrivateKey::Generate();
  ASSERT_NE(net_.Start("late-provider", {net_[0].gossip_port}, ProviderFlags(dir_, later, "later")),
            nullptr);
  ASSERT_TRUE(PollUntil([&] { return EveryNodeHas(later); }, kSpread)) << net_.Logs();
  // Once more anti-entropy round (2 s) for anything stored anywhere to be exchanged.
  std::this_thread::sleep_for(2500ms);

  for (auto& n : net_.nodes()) {
    auto list = ListOffers(*n, AllOffers());
    ASSERT_TRUE(list) << n->name;
    ASSERT_EQ(list->size(), 2u) << n->name << " holds more than the two honest offers";
    for (const auto& r : *list) {
      EXPECT_TRUE(r.offer().provider() == ProviderBytes(honest) ||
                  r.offer().provider() == ProviderBytes(later))
          << n->name;
      if (r.offer().provider() == ProviderBytes(honest)) {
        EXPECT_EQ(r.offer().seq(), before.seq()) << n->name << ": the impersonation got in";
        EXPECT_EQ(r.offer().price_per_mb(), before.price_per_mb()) << n->name;
      }
    }
  }
}

TEST_F(ChainTest, FloodingPeerIsDroppedWhileHonestOffersStillArrive) {
  // The attacked node runs no periodic anti-entropy during the test: a node that sends its
  // digest to a peer lets that peer answer with up to a book's worth of offers outside the rate
  // limit (docs/marketplace.md §1, "solicited"), so a flooder it happened to pick would not be
  // rate-limited. That is a separate weakness (reported); this test is about the rate limit.
  const int target_index = kChain / 2;
  ASSERT_TRUE(net_.StartChain(kChain, {{target_index, {"--anti-entropy-ms", "600000"}}}))
      << net_.Logs();

  // Valid offers, each from a fresh provider key, correctly signed: only the rate limit stops
  // them (20 per second per peer, burst 200).
  constexpr int kFlood = 1500;
  std::vector<Offer> flood;
  flood.reserve(kFlood);
  for (int i = 0; i < kFlood; ++i) {
    auto key = PrivateKey::Generate();
    flood.push_back(MakeOffer(key, 1, 1, "flood", 1000));
  }

  Node& target = net_[target_index];
  RawPeer attacker;
  ASSERT_TRUE(attacker.Connect(target.gossip_port));
  ASSERT_TRUE(attacker.SendHello(TestNetwork()));

  // The honest provider joins at the far end while the flood runs.
  auto honest = PrivateKey::Generate();
  ASSERT_NE(net_.Start("provider", {net_[kChain - 1].gossip_port}, ProviderFlags(dir_, honest, "honest")),
            nullptr);

  int sent = 0;
  constexpr int kPerMessage = 8;
  for (int i = 0; i < kFlood; i += kPerMessage) {
    std::vector<Offer> batch(flood.begin() + i, flood.begin() + std::min(kFlood, i + kPerMessage));
    if (!attacker.SendOffers(batch)) break;
    sent += static_cast<int>(batch.size());
  }
  std::cout << "the flooder sent " << sent << " offers before its connection failed\n";
  EXPECT_TRUE(attacker.WaitClosed(10s)) << "the flooding peer was not dropped\n"
                                        << FileTail(target.log);

  // The honest offer reaches node 0 (the far end of the chain from the provider).
  EXPECT_TRUE(PollUntil([&] { return OffersOf(net_[0], honest).size() == 1; }, kSpread))
      << net_.Logs();

  // The flood was rate-limited: the attacked node took at most the burst and what the rate
  // allowed while the flood lasted, far from all of it.
  v1::OfferFilter f = AllOffers();
  f.set_region("flood");
  auto taken = ListOffers(target, f);
  ASSERT_TRUE(taken);
  std::cout << "the attacked node took " << taken->size() << " of the flood's offers\n";
  EXPECT_LE(taken->size(), 400u);
  EXPECT_LT(taken->size(), static_cast<size_t>(kFlood));

  // The ban holds for that node id.
  RawPeer again(attacker.node_id());
  ASSERT_TRUE(again.Connect(target.gossip_port));
  ASSERT_TRUE(again.SendHello(TestNetwork()));
  EXPECT_TRUE(again.WaitClosed(10s));

  // Every node still answers, and the honest offer reaches them all.
  EXPECT_TRUE(PollUntil([&] { return EveryNodeHas(honest); }, kSpread)) << net_.Logs();
}

}  // namespace
}  // namespace dvpn::marketplace_e2e
