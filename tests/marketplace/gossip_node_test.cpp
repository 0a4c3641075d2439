// The gossip logic (docs/marketplace.md §1): one node driven by a scripted host (every frame it
// sends is inspected; attackers are played frame by frame), and small networks in the
// simulator (bench/gossip_sim/sim_network.h) for spreading, retirement and catch-up.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>

#include "bench/gossip_sim/sim_network.h"
#include "dvpn/v1/marketplace.pb.h"
#include "marketplace/gossip_node.h"
#include "marketplace/wire.h"
#include "tests/support/test_offer.h"

namespace dvpn::marketplace {
namespace {

constexpr uint64_t kStartUnix = 1'900'000'000;

payments::LedgerId Network() {
  payments::LedgerId id;
  id.bytes.fill(0x5c);
  return id;
}

Offer MakeOffer(const payments::PrivateKey& key, uint64_t seq, uint64_t issued = kStartUnix,
                uint32_t slot = 1) {
  Offer o = dvpn::testing::UnsignedTestOffer(
      Network(), {.offer_id = slot, .seq = seq, .issued_unix = issued});
  SignOffer(o, key);
  return o;
}

class ScriptedHost : public GossipHost {
 public:
  void Send(PeerId peer, std::vector<uint8_t> payload) override {
    v1::GossipMessage m;
    EXPECT_TRUE(m.ParseFromArray(payload.data(), static_cast<int>(payload.size())));
    EXPECT_LE(payload.size(), kMaxGossipFrame);
    sent.emplace_back(peer, std::move(m));
  }
  void Dial(const Endpoint& to) override { dials.push_back(to); }
  void Close(PeerId peer) override { closed.push_back(peer); }
  uint64_t NowMs() override { return now_ms; }
  uint64_t NowUnix() override { return kStartUnix + now_ms / 1000; }

  // Offers sent to `peer` since the last call.
  std::vector<Offer> TakeOffers(PeerId peer) {
    std::vector<Offer> out;
    std::erase_if(sent, [&](const auto& s) {
      if (s.first != peer || !s.second.has_offers()) return false;
      for (const auto& o : s.second.offers().offers()) out.push_back(*FromProto(o));
      return true;
    });
    return out;
  }
  bool Closed(PeerId peer) const { return std::find(closed.begin(), closed.end(), peer) != closed.end(); }

  std::vector<std::pair<PeerId, v1::GossipMessage>> sent;
  std::vector<Endpoint> dials;
  std::vector<PeerId> closed;
  uint64_t now_ms = 0;
};

// features 0: the Hello of a release before issue 16 (no features field).
std::vector<uint8_t> HelloFrom(uint8_t id, payments::LedgerId network = Network(),
                               uint32_t features = 0) {
  v1::GossipMessage m;
  auto* h = m.mutable_hello();
  h->set_version(kGossipVersion);
  h->set_node_id(std::string(16, static_cast<char>(id)));
  h->set_listen_port(7000 + id);
  h->set_network(std::string(network.bytes.begin(), network.bytes.end()));
  if (features != 0) h->set_features(features);
  return Serialize(m);
}

std::vector<uint8_t> OffersFrame(const std::vector<Offer>& offers) {
  v1::GossipMessage m;
  for (const auto& o : offers) ToProto(o, m.mutable_offers()->add_offers());
  return Serialize(m);
}

class GossipNodeTest : public ::testing::Test {
 protected:
  GossipNodeTest() : node_(Config(), host_) {}
  static GossipConfig Config() {
    GossipConfig c;
    c.network = Network();
    c.node_id.fill(0xee);
    c.listen_port = 7000;
    c.seed = 1;
    return c;
  }
  // A peer that has said hello.
  void Connect(PeerId peer, uint8_t id) {
    node_.OnConnected(peer, false, Endpoint{"127.0.0.1", 0});
    node_.OnFrame(peer, HelloFrom(id));
  }
  ScriptedHost host_;
  GossipNode node_;
};

TEST_F(GossipNodeTest, ValidOfferIsStoredAndPushedToOtherPeers) {
  Connect(1, 1);
  Connect(2, 2);
  auto key = payments::PrivateKey::Generate();
  node_.OnFrame(1, OffersFrame({MakeOffer(key, 1)}));
  EXPECT_EQ(node_.book().live_count(), 1u);
  EXPECT_EQ(host_.TakeOffers(2).size(), 1u) << "eager push to the other peer";
  EXPECT_TRUE(host_.TakeOffers(1).empty()) << "never back to the peer it came from";
  EXPECT_EQ(node_.stats().verdicts[static_cast<size_t>(OfferVerdict::kAccepted)], 1u);
}

TEST_F(GossipNodeTest, ForgedExpiredFutureAndForeignOffersAreNeverStoredOrForwarded) {
  Connect(1, 1);
  Connect(2, 2);
  auto key = payments::PrivateKey::Generate();
  Offer forged = MakeOffer(key, 1);
  forged.price_per_mb = Amount::FromMicro(1);  // changed after signing
  Offer expired = MakeOffer(key, 2, kStartUnix - 7200);
  Offer future = MakeOffer(key, 3, kStartUnix + 3600);
  Offer foreign = MakeOffer(key, 4);
  foreign.ledger.bytes[0] ^= 1;
  SignOffer(foreign, key);
  node_.OnFrame(1, OffersFrame({forged, expired, future, foreign}));
  EXPECT_EQ(node_.book().size(), 0u);
  EXPECT_TRUE(host_.TakeOffers(2).empty());
  auto s = node_.stats();
  EXPECT_EQ(s.verdicts[static_cast<size_t>(OfferVerdict::kBadSignature)], 1u);
  EXPECT_EQ(s.verdicts[static_cast<size_t>(OfferVerdict::kExpired)], 1u);
  EXPECT_EQ(s.verdicts[static_cast<size_t>(OfferVerdict::kFromTheFuture)], 1u);
  EXPECT_EQ(s.verdicts[static_cast<size_t>(OfferVerdict::kWrongNetwork)], 1u);
  EXPECT_FALSE(host_.Closed(1)) << "-55 so far: not yet banned";
  node_.OnFrame(1, OffersFrame({forged, forged}));  // -25 each: past -100
  EXPECT_TRUE(host_.Closed(1));
  EXPECT_EQ(node_.stats().peers_banned, 1u);
  // The honest peer's offer still arrives and spreads.
  Connect(3, 3);
  node_.OnFrame(2, OffersFrame({MakeOffer(key, 5)}));
  EXPECT_EQ(node_.book().live_count(), 1u);
  EXPECT_EQ(host_.TakeOffers(3).size(), 1u);
  // The banned node id cannot come back.
  node_.OnConnected(4, false, Endpoint{"127.0.0.1", 0});
  node_.OnFrame(4, HelloFrom(1));
  EXPECT_TRUE(host_.Closed(4));
}

TEST_F(GossipNodeTest, FloodIsRateLimitedThenDroppedWhileHonestOffersArrive) {
  Connect(1, 1);  // the flooder
  Connect(2, 2);  // honest
  std::vector<payments::PrivateKey> keys;
  for (int i = 0; i < 400; ++i) keys.push_back(payments::PrivateKey::Generate());
  size_t sent = 0;
  for (size_t i = 0; i < keys.size() && !host_.Closed(1); i += 20) {
    std::vector<Offer> batch;
    for (size_t j = i; j < i + 20; ++j) batch.push_back(MakeOffer(keys[j], 1));
    node_.OnFrame(1, OffersFrame(batch));
    sent += batch.size();
    if (i % 100 == 0) node_.OnFrame(2, OffersFrame({MakeOffer(keys[i], 2, kStartUnix, 2)}));
  }
  EXPECT_TRUE(host_.Closed(1)) << "the flooder is dropped";
  const auto s = node_.stats();
  EXPECT_EQ(s.peers_banned, 1u);
  EXPECT_GT(s.verdicts[static_cast<size_t>(OfferVerdict::kRateLimited)], 0u);
  // Accepted from the flooder: at most the burst (200) plus what the rate refilled (no time
  // passed here: nothing), then +1 each bought 20 more penalties of -5 before the ban.
  EXPECT_LE(s.verdicts[static_cast<size_t>(OfferVerdict::kAccepted)], 200u + 3u);
  EXPECT_LT(sent, keys.size()) << "cut off before the flood ended";
  // The honest peer's offers (slot 2 of a few keys) were all taken.
  size_t honest = 0;
  for (size_t i = 0; i < keys.size(); i += 100)
    honest += node_.book().SeqOf(OfferKeyOf(keys[i].public_key().bytes(), 2)) == 2 ? 1 : 0;
  EXPECT_EQ(honest, (sent + 99) / 100);
}

TEST_F(GossipNodeTest, SlotRefreshLimitDropsRapidResigningWithoutPenalty) {
  Connect(1, 1);
  auto key = payments::PrivateKey::Generate();
  for (uint64_t seq = 1; seq <= 10; ++seq) node_.OnFrame(1, OffersFrame({MakeOffer(key, seq)}));
  const auto s = node_.stats();
  EXPECT_EQ(s.verdicts[static_cast<size_t>(OfferVerdict::kAccepted)], 3u);
  EXPECT_EQ(s.verdicts[static_cast<size_t>(OfferVerdict::kSlotTooBusy)], 7u);
  EXPECT_FALSE(host_.Closed(1));
  host_.now_ms += 60'000;
  node_.OnFrame(1, OffersFrame({MakeOffer(key, 11, kStartUnix + 60)}));
  EXPECT_EQ(node_.book().SeqOf(OfferKeyOf(key.public_key().bytes(), 1)), 11u);
}

TEST_F(GossipNodeTest, BadFramesAndHellosCloseTheConnection) {
  node_.OnConnected(1, false, {"127.0.0.1", 0});
  node_.OnFrame(1, std::vector<uint8_t>{0xff, 0xff, 0xff});
  EXPECT_TRUE(host_.Closed(1)) << "unparsable payload";
  node_.OnConnected(2, false, {"127.0.0.1", 0});
  v1::GossipMessage ping;
  ping.mutable_ping()->set_nonce(1);
  node_.OnFrame(2, Serialize(ping));
  EXPECT_TRUE(host_.Closed(2)) << "first message not Hello";
  node_.OnConnected(3, false, {"127.0.0.1", 0});
  payments::LedgerId other;
  other.bytes.fill(0x01);
  node_.OnFrame(3, HelloFrom(3, other));
  EXPECT_TRUE(host_.Closed(3)) << "another network";
  node_.OnConnected(4, false, {"127.0.0.1", 0});
  node_.OnFrame(4, HelloFrom(0xee));
  EXPECT_TRUE(host_.Closed(4)) << "ourselves";
  Connect(5, 5);
  node_.OnFrame(5, HelloFrom(5));
  EXPECT_TRUE(host_.Closed(5)) << "a second Hello";
  Connect(6, 6);
  v1::GossipMessage digest;
  digest.mutable_digest()->set_parts(1);
  digest.mutable_digest()->set_range_last(UINT64_MAX);
  digest.mutable_digest()->set_entries(std::string(15, 'x'));
  node_.OnFrame(6, Serialize(digest));
  EXPECT_TRUE(host_.Closed(6)) << "digest entries not a multiple of 16";
  node_.OnConnected(7, false, {"127.0.0.1", 0});
  host_.now_ms += 5000;
  node_.Tick();
  EXPECT_TRUE(host_.Closed(7)) << "no Hello within 5 s";
  EXPECT_EQ(node_.stats().peers, 0u);
}

// Our own offer refused: the verdict's name is the message, its code what a caller branches on.
TEST_F(GossipNodeTest, PublishReportsWhyAnOfferIsRefused) {
  auto key = payments::PrivateKey::Generate();
  ASSERT_TRUE(node_.Publish(MakeOffer(key, 2)));
  auto stale = node_.Publish(MakeOffer(key, 2));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, Errc::kNotNewer);
  EXPECT_EQ(stale.error().message, "not newer");

  Offer forged = MakeOffer(key, 3);
  forged.capacity_mbps += 1;  // after signing
  auto bad = node_.Publish(forged);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::kBadSignature);

  Offer zero_seq = MakeOffer(key, 0);
  EXPECT_EQ(node_.Publish(zero_seq).error().code, Errc::kBadField);
}

TEST_F(GossipNodeTest, DigestAnswersWithWhatThePeerLacksAndPullsWhatItHasNewer) {
  Connect(1, 1);
  auto a = payments::PrivateKey::Generate(), b = payments::PrivateKey::Generate();
  ASSERT_TRUE(node_.Publish(MakeOffer(a, 3)));
  ASSERT_TRUE(node_.Publish(MakeOffer(b, 1)));
  host_.sent.clear();
  const OfferKey ka = OfferKeyOf(a.public_key().bytes(), 1);
  const OfferKey kb = OfferKeyOf(b.public_key().bytes(), 1);
  const OfferKey kc = 42;  // something the node never heard of
  std::vector<DigestEntry> theirs = {{ka, 2}, {kb, 5}, {kc, 1}};
  std::sort(theirs.begin(), theirs.end());
  v1::GossipMessage m;
  m.mutable_digest()->set_parts(1);
  m.mutable_digest()->set_range_last(UINT64_MAX);
  m.mutable_digest()->set_entries(PackDigest(theirs));
  node_.OnFrame(1, Serialize(m));
  EXPECT_TRUE(host_.TakeOffers(1).empty()) << "announced with Have, sent when pulled";
  std::vector<OfferKey> pulled;
  std::vector<DigestEntry> announced;
  for (const auto& [peer, msg] : host_.sent) {
    if (msg.has_pull()) pulled = *UnpackKeys(msg.pull().keys());
    if (msg.has_have()) announced = *UnpackDigest(msg.have().entries());
  }
  EXPECT_EQ(announced, (std::vector<DigestEntry>{{ka, 3}})) << "ours is newer: announced";
  std::sort(pulled.begin(), pulled.end());
  std::vector<OfferKey> want = {kb, kc};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(pulled, want);
}

TEST_F(GossipNodeTest, OnlyPulledKeysSkipTheRateLimit) {
  Connect(1, 1);
  std::vector<payments::PrivateKey> keys;
  for (int i = 0; i < 260; ++i) keys.push_back(payments::PrivateKey::Generate());
  // The peer announces one offer; the node pulls exactly that key.
  v1::GossipMessage have;
  have.mutable_have()->set_entries(
      PackDigest(std::vector<DigestEntry>{{OfferKeyOf(keys[0].public_key().bytes(), 1), 1}}));
  node_.OnFrame(1, Serialize(have));
  bool pulled = false;
  for (const auto& [peer, msg] : host_.sent) pulled = pulled || msg.has_pull();
  EXPECT_TRUE(pulled);
  // Offers marked "answer" that were never pulled count against the limit like any others.
  for (size_t i = 1; i < keys.size() && !host_.Closed(1); i += 20) {
    v1::GossipMessage m;
    m.mutable_offers()->set_answer(true);
    for (size_t j = i; j < std::min(keys.size(), i + 20); ++j)
      ToProto(MakeOffer(keys[j], 1), m.mutable_offers()->add_offers());
    node_.OnFrame(1, Serialize(m));
  }
  EXPECT_GT(node_.stats().verdicts[static_cast<size_t>(OfferVerdict::kRateLimited)], 0u);
  EXPECT_LE(node_.book().size(), 201u);
}

// --- offer formats across releases (docs/marketplace.md §1) ----------------------------

// A seller serving full tunnel: format 2, modes 3.
Offer MakeFormat2(const payments::PrivateKey& key, uint64_t seq, uint32_t slot = 1) {
  Offer o = dvpn::testing::UnsignedTestOffer(
      Network(), {.offer_id = slot, .seq = seq, .issued_unix = kStartUnix});
  o.format = 2;
  o.modes = kModeSocks | kModeFullTunnel;
  SignOffer(o, key);
  return o;
}

// A retirement, signed in format 1 as sellers always do.
Offer MakeRetired(const payments::PrivateKey& key, uint64_t seq, uint64_t issued,
                  uint32_t slot = 1) {
  Offer o = MakeOffer(key, seq, issued, slot);
  o.retired = true;
  o.endpoints.clear();
  SignOffer(o, key);
  return o;
}

class OfferFormatsTest : public GossipNodeTest {
 protected:
  void ConnectWith(PeerId peer, uint8_t id, uint32_t features) {
    node_.OnConnected(peer, false, Endpoint{"127.0.0.1", 0});
    node_.OnFrame(peer, HelloFrom(id, Network(), features));
  }
  // Ours: after the hellos the node sends the peer its digest.
  void ConnectOutbound(PeerId peer, uint8_t id, uint32_t features) {
    node_.OnConnected(peer, true, Endpoint{"10.0.0." + std::to_string(id), 7000});
    node_.OnFrame(peer, HelloFrom(id, Network(), features));
  }
  // Every digest, or every Have, entry sent to `peer` so far.
  std::vector<DigestEntry> EntriesTo(PeerId peer, bool have) {
    std::vector<DigestEntry> out;
    for (const auto& [to, m] : host_.sent) {
      if (to != peer) continue;
      if (!have && m.has_digest()) {
        auto e = *UnpackDigest(m.digest().entries());
        out.insert(out.end(), e.begin(), e.end());
      }
      if (have && m.has_have()) {
        auto e = *UnpackDigest(m.have().entries());
        out.insert(out.end(), e.begin(), e.end());
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  static size_t CountFormat(const std::vector<Offer>& offers, uint8_t format) {
    return static_cast<size_t>(std::count_if(offers.begin(), offers.end(),
                                             [&](const Offer& o) { return o.format == format; }));
  }
};

TEST_F(OfferFormatsTest, Format2OffersArePushedOnlyToPeersWhoseHelloHasTheBit) {
  ConnectWith(1, 1, 0);                     // an older release
  ConnectWith(2, 2, kFeatureOfferFormat2);  // this release
  ConnectWith(3, 3, kFeatureOfferFormat2);  // brings the offers
  ASSERT_FALSE(host_.sent.empty());
  ASSERT_TRUE(host_.sent.front().second.has_hello());
  EXPECT_EQ(host_.sent.front().second.hello().features(), kFeatureOfferFormat2)
      << "a node of this release says it reads format 2";
  auto full = payments::PrivateKey::Generate(), socks = payments::PrivateKey::Generate();
  node_.OnFrame(3, OffersFrame({MakeFormat2(full, 2), MakeOffer(socks, 1)}));
  ASSERT_EQ(node_.book().live_count(), 2u);
  for (int round = 0; round < 6; ++round) {  // pushes, then the hot rounds
    host_.now_ms += 1000;
    node_.Tick();
  }
  auto to_old = host_.TakeOffers(1);
  EXPECT_EQ(CountFormat(to_old, 2), 0u) << "its signature would fail there: -25 for us";
  EXPECT_EQ(CountFormat(to_old, 1), 1u) << "format 1 still reaches it";
  auto to_new = host_.TakeOffers(2);
  EXPECT_EQ(CountFormat(to_new, 2), 1u);
  EXPECT_EQ(CountFormat(to_new, 1), 1u);
  // The seller retires its full-tunnel offer: the retirement (format 1) goes to everyone.
  node_.OnFrame(3, OffersFrame({MakeRetired(full, 3, host_.NowUnix())}));
  host_.now_ms += 1000;
  node_.Tick();
  to_old = host_.TakeOffers(1);
  ASSERT_EQ(to_old.size(), 1u);
  EXPECT_TRUE(to_old[0].retired);
  EXPECT_EQ(host_.TakeOffers(2).size(), 1u);
}

TEST_F(OfferFormatsTest, PeerWithoutTheBitIsNeitherShownNorSentFormat2OffersByAntiEntropy) {
  auto full = payments::PrivateKey::Generate(), socks = payments::PrivateKey::Generate();
  ASSERT_TRUE(node_.Publish(MakeFormat2(full, 2)));
  ASSERT_TRUE(node_.Publish(MakeOffer(socks, 1)));
  const OfferKey kf = OfferKeyOf(full.public_key().bytes(), 1);
  const OfferKey ks = OfferKeyOf(socks.public_key().bytes(), 1);
  std::vector<DigestEntry> both = {{kf, 2}, {ks, 1}};
  std::sort(both.begin(), both.end());
  const std::vector<DigestEntry> socks_only = {{ks, 1}};

  ConnectOutbound(1, 1, 0);
  ConnectOutbound(2, 2, kFeatureOfferFormat2);
  EXPECT_EQ(EntriesTo(1, false), socks_only) << "our digest to an older peer";
  EXPECT_EQ(EntriesTo(2, false), both);

  // Their digests (empty): our Have lists what they lack.
  v1::GossipMessage digest;
  digest.mutable_digest()->set_parts(1);
  digest.mutable_digest()->set_range_last(UINT64_MAX);
  node_.OnFrame(1, Serialize(digest));
  node_.OnFrame(2, Serialize(digest));
  EXPECT_EQ(EntriesTo(1, true), socks_only);
  EXPECT_EQ(EntriesTo(2, true), both);

  // Pulls of both keys (an older peer could learn the key elsewhere): answered with what it reads.
  v1::GossipMessage pull;
  pull.mutable_pull()->set_keys(PackKeys(std::vector<OfferKey>{kf, ks}));
  node_.OnFrame(1, Serialize(pull));
  node_.OnFrame(2, Serialize(pull));
  auto to_old = host_.TakeOffers(1);
  ASSERT_EQ(to_old.size(), 1u);
  EXPECT_EQ(to_old[0].format, 1u);
  EXPECT_EQ(CountFormat(host_.TakeOffers(2), 2), 1u);
  EXPECT_FALSE(host_.Closed(1));
}

// Two nodes joined by one connection (peer id 1 on both sides), frames queued in order.
class Link {
 public:
  class Side : public GossipHost {
   public:
    Side(Link& link, size_t index) : link_(link), index_(index) {}
    void Send(PeerId, std::vector<uint8_t> payload) override {
      link_.queue.emplace_back(1 - index_, std::move(payload));
    }
    void Dial(const Endpoint&) override {}
    void Close(PeerId) override { link_.closed = true; }
    uint64_t NowMs() override { return link_.now_ms; }
    uint64_t NowUnix() override { return kStartUnix + link_.now_ms / 1000; }

   private:
    Link& link_;
    size_t index_;
  };
  uint64_t now_ms = 0;
  bool closed = false;
  std::deque<std::pair<size_t, std::vector<uint8_t>>> queue;  // (to, payload)
  Side sides[2] = {Side(*this, 0), Side(*this, 1)};
};

// Two real nodes, one playing a release before issue 16: its Hello has no features and it
// reads offers without the fields it does not know (format and modes are dropped on the way to
// it, as its protobuf parser would). Anti-entropy between them settles: no format-2 offer is
// sent to it, so it never pulls, penalizes or bans; format-1 versions still reach it.
TEST(OfferFormatsAcrossReleases, AntiEntropyWithAnOlderNodeSettles) {
  Link link;
  auto config = [](uint8_t id, uint32_t features) {
    GossipConfig c;
    c.network = Network();
    c.node_id.fill(id);
    c.seed = id;
    c.features = features;
    c.anti_entropy = std::chrono::milliseconds(5000);
    return c;
  };
  GossipNode ours(config(1, kGossipFeatures), link.sides[0]);
  GossipNode old(config(2, 0), link.sides[1]);
  GossipNode* nodes[2] = {&ours, &old};
  size_t format2_to_old = 0, pulls = 0;
  auto pump = [&] {
    while (!link.queue.empty() && !link.closed) {
      auto [to, payload] = std::move(link.queue.front());
      link.queue.pop_front();
      v1::GossipMessage m;
      ASSERT_TRUE(m.ParseFromArray(payload.data(), static_cast<int>(payload.size())));
      if (m.has_pull()) ++pulls;
      if (to == 1 && m.has_offers()) {
        for (auto& o : *m.mutable_offers()->mutable_offers()) {
          if (o.format() == 2) ++format2_to_old;
          o.clear_format();
          o.clear_modes();
        }
        payload = Serialize(m);
      }
      nodes[to]->OnFrame(1, payload);
    }
  };
  ours.OnConnected(1, true, Endpoint{"10.0.0.2", 7002});
  old.OnConnected(1, false, Endpoint{"10.0.0.1", 0});
  pump();

  auto seller = payments::PrivateKey::Generate(), socks = payments::PrivateKey::Generate();
  const OfferKey kf = OfferKeyOf(seller.public_key().bytes(), 1);
  ASSERT_TRUE(ours.Publish(MakeOffer(seller, 1)));  // SOCKS only, format 1
  ASSERT_TRUE(ours.Publish(MakeOffer(socks, 1)));
  pump();
  ASSERT_EQ(old.book().SeqOf(kf), 1u);
  ASSERT_TRUE(ours.Publish(MakeFormat2(seller, 2)));  // the seller turns on full tunnel
  pump();

  auto run = [&](uint64_t ms) {
    for (uint64_t end = link.now_ms + ms; link.now_ms < end && !link.closed;) {
      link.now_ms += 1000;
      ours.Tick();
      old.Tick();
      pump();
    }
  };
  run(20'000);  // four anti-entropy periods each way
  const size_t pulls_before = pulls;
  run(40'000);
  EXPECT_FALSE(link.closed);
  EXPECT_EQ(format2_to_old, 0u);
  EXPECT_EQ(pulls, pulls_before) << "settled: nothing left to pull either way";
  EXPECT_EQ(old.stats().verdicts[static_cast<size_t>(OfferVerdict::kBadSignature)], 0u);
  EXPECT_EQ(old.stats().peers_banned, 0u);
  EXPECT_EQ(old.book().SeqOf(kf), 1u) << "the older node keeps the format-1 version";
  EXPECT_EQ(ours.book().SeqOf(kf), 2u);
  EXPECT_EQ(old.book().live_count(), 2u);

  // The retirement (format 1) reaches the older node.
  ASSERT_TRUE(ours.Publish(MakeRetired(seller, 3, kStartUnix + link.now_ms / 1000)));
  pump();
  EXPECT_EQ(old.book().SeqOf(kf), 3u);
  EXPECT_EQ(old.stats().verdicts[static_cast<size_t>(OfferVerdict::kBadSignature)], 0u);
}

// --- inbound slots (docs/marketplace.md §1, "Inbound slots") -----------------------------

class InboundSlotsTest : public GossipNodeTest {
 protected:
  // An inbound connection from `host` that says hello; true when it was let in.
  bool ConnectFrom(PeerId peer, uint8_t id, const std::string& host) {
    node_.OnConnected(peer, false, Endpoint{host, 0});
    node_.OnFrame(peer, HelloFrom(id));
    return !host_.Closed(peer);
  }
  void Ping(PeerId peer) {
    v1::GossipMessage m;
    m.mutable_ping()->set_nonce(peer);
    node_.OnFrame(peer, Serialize(m));
  }
  // 32 idle inbound peers (all the slots), each from its own source, that only ping.
  void FillWithIdlePeers() {
    for (PeerId i = 0; i < 32; ++i) {
      ASSERT_TRUE(ConnectFrom(100 + i, static_cast<uint8_t>(1 + i),
                              "10." + std::to_string(i % 8) + "." + std::to_string(i) + ".1"));
      Ping(100 + i);
    }
    ASSERT_EQ(node_.stats().peers, 32u);
  }
};

TEST_F(InboundSlotsTest, IdlePeersHoldingEverySlotMakeRoomForANewcomerThatBootstraps) {
  auto seller = payments::PrivateKey::Generate();
  ASSERT_TRUE(node_.Publish(MakeOffer(seller, 1)));
  FillWithIdlePeers();
  // Within their grace every slot is protected: the newcomer is refused (with addresses).
  EXPECT_FALSE(ConnectFrom(199, 199, "192.0.2.1"));
  EXPECT_EQ(node_.stats().inbound_refused, 1u);
  host_.now_ms += 10'000;
  for (PeerId i = 0; i < 32; ++i) Ping(100 + i);  // still pinging: alive, but nothing useful
  host_.sent.clear();
  host_.closed.clear();
  ASSERT_TRUE(ConnectFrom(200, 200, "192.0.2.1")) << "an idle peer must make room";
  ASSERT_EQ(host_.closed.size(), 1u) << "exactly one idle peer evicted";
  EXPECT_GE(host_.closed[0], 100u);
  EXPECT_LT(host_.closed[0], 132u);
  EXPECT_EQ(node_.stats().peers, 32u);
  EXPECT_EQ(node_.stats().inbound_evicted, 1u);
  // The bootstrap exchange: its (empty) digest, our Have, its pull, our offers.
  v1::GossipMessage digest;
  digest.mutable_digest()->set_parts(1);
  digest.mutable_digest()->set_range_last(UINT64_MAX);
  node_.OnFrame(200, Serialize(digest));
  std::vector<DigestEntry> announced;
  for (const auto& [peer, msg] : host_.sent)
    if (peer == 200 && msg.has_have()) announced = *UnpackDigest(msg.have().entries());
  const OfferKey key = OfferKeyOf(seller.public_key().bytes(), 1);
  ASSERT_EQ(announced, (std::vector<DigestEntry>{{key, 1}}));
  v1::GossipMessage pull;
  pull.mutable_pull()->set_keys(PackKeys(std::vector<OfferKey>{key}));
  node_.OnFrame(200, Serialize(pull));
  auto got = host_.TakeOffers(200);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].provider, seller.public_key().bytes());
}

TEST_F(InboundSlotsTest, PeersThatBringOffersAndNewcomersInTheirGraceAreKept) {
  FillWithIdlePeers();
  auto key = payments::PrivateKey::Generate();
  node_.OnFrame(105, OffersFrame({MakeOffer(key, 1)}));  // a useful peer
  ASSERT_EQ(node_.book().live_count(), 1u);
  host_.now_ms += 10'000;
  std::unordered_map<PeerId, uint64_t> connected_at;
  for (PeerId i = 0; i < 32; ++i) connected_at[100 + i] = 0;
  // 40 newcomers, one a second: each gets in, and what is evicted for it is never the peer
  // that brought an offer, nor a newcomer still in its grace.
  for (PeerId n = 0; n < 40; ++n) {
    host_.closed.clear();
    const PeerId id = 200 + n;
    connected_at[id] = host_.now_ms;
    ASSERT_TRUE(ConnectFrom(id, static_cast<uint8_t>(150 + n), "192.0.2." + std::to_string(n)))
        << "newcomer " << n;
    ASSERT_EQ(host_.closed.size(), 1u) << "newcomer " << n;
    const PeerId victim = host_.closed[0];
    EXPECT_NE(victim, 105u) << "the peer that brought an offer";
    EXPECT_GE(host_.now_ms - connected_at[victim], 10'000u) << "evicted within its grace";
    host_.now_ms += 1000;
    for (const auto& [peer, at] : connected_at) Ping(peer);  // unknown peers are ignored
  }
  EXPECT_EQ(node_.stats().peers, 32u);
  EXPECT_EQ(node_.stats().inbound_evicted, 40u);
}

TEST_F(InboundSlotsTest, OneSourceHoldsAtMostFourSlotsButLoopbackIsExempt) {
  for (PeerId i = 1; i <= 4; ++i)
    ASSERT_TRUE(ConnectFrom(i, static_cast<uint8_t>(i), "203.0.113.9"));
  ASSERT_TRUE(ConnectFrom(5, 5, "203.0.113.10"));
  // A fifth from the same source, within the others' grace: refused, though slots are free.
  EXPECT_FALSE(ConnectFrom(6, 6, "203.0.113.9"));
  host_.now_ms += 10'000;
  host_.closed.clear();
  // Past their grace it takes the slot of that source's youngest peer, no one else's.
  ASSERT_TRUE(ConnectFrom(7, 7, "203.0.113.9"));
  EXPECT_EQ(host_.closed, (std::vector<PeerId>{4}));
  EXPECT_EQ(node_.stats().peers, 5u);
  // IPv6: one /64 is one source.
  for (PeerId i = 10; i < 14; ++i)
    ASSERT_TRUE(ConnectFrom(i, static_cast<uint8_t>(i), "2001:db8:0:1::" + std::to_string(i)));
  EXPECT_FALSE(ConnectFrom(14, 14, "2001:db8:0:1:ffff::1"));
  EXPECT_TRUE(ConnectFrom(15, 15, "2001:db8:0:2::1"));
  // Loopback (this host, or a local proxy) is not limited.
  for (PeerId i = 20; i < 28; ++i)
    EXPECT_TRUE(ConnectFrom(i, static_cast<uint8_t>(i), "127.0.0.1"));
}

// --- small networks in the simulator ---------------------------------------------------------

GossipConfig SimConfig(std::vector<Endpoint> bootstrap) {
  GossipConfig c;
  c.network = Network();
  c.bootstrap = std::move(bootstrap);
  c.anti_entropy = std::chrono::milliseconds(5000);
  return c;
}

TEST(GossipSim, ChainOfBootstrapsSpreadsAndRetires) {
  sim::Network net({.seed = 3, .loss = 0.01, .start_unix = kStartUnix});
  const size_t n = 60;
  for (size_t i = 0; i < n; ++i)
    net.AddNode(SimConfig(i == 0 ? std::vector<Endpoint>{} : std::vector{net.AddressOf(i - 1)}));
  net.RunUntil(30'000);
  auto key = payments::PrivateKey::Generate();
  ASSERT_TRUE(net.node(n - 1).Publish(MakeOffer(key, 1, net.now_unix())));
  net.RunUntil(net.now_ms() + 10'000);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(net.node(i).book().live_count(), 1u) << "node " << i;
  Offer retired = MakeOffer(key, 2, net.now_unix());
  retired.retired = true;
  retired.endpoints.clear();
  SignOffer(retired, key);
  ASSERT_TRUE(net.node(n - 1).Publish(retired));
  net.RunUntil(net.now_ms() + 10'000);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(net.node(i).book().live_count(), 0u) << "node " << i;
    EXPECT_TRUE(net.node(i).book().Query({}, net.now_unix()).empty());
  }
}

// Push alone (anti-entropy far away) reaches every node within a few rounds: eager push and
// the hot rounds do the spreading, anti-entropy only repairs.
TEST(GossipSim, PushAloneReachesEveryNodeWithinThreeRounds) {
  sim::Network net({.seed = 6, .loss = 0.01, .start_unix = kStartUnix});
  const size_t n = 300;
  for (size_t i = 0; i < n; ++i) {
    GossipConfig c = SimConfig(i == 0 ? std::vector<Endpoint>{}
                                      : std::vector{net.AddressOf(net.rng()() % i)});
    c.anti_entropy = std::chrono::milliseconds(3'600'000);
    net.AddNode(std::move(c));
  }
  net.RunUntil(60'000);
  for (int trial = 0; trial < 3; ++trial) {
    auto key = payments::PrivateKey::Generate();
    ASSERT_TRUE(net.node(trial * 50).Publish(MakeOffer(key, 1, net.now_unix())));
    net.RunUntil(net.now_ms() + 3'000);
    size_t have = 0;
    for (size_t i = 0; i < n; ++i)
      have += net.node(i).book().SeqOf(OfferKeyOf(key.public_key().bytes(), 1)) == 1 ? 1 : 0;
    EXPECT_EQ(have, n) << "trial " << trial;
  }
}

TEST(GossipSim, LateJoinerCatchesUpByAntiEntropy) {
  sim::Network net({.seed = 4, .loss = 0.0, .start_unix = kStartUnix});
  for (size_t i = 0; i < 20; ++i)
    net.AddNode(SimConfig(i == 0 ? std::vector<Endpoint>{} : std::vector{net.AddressOf(0)}));
  net.RunUntil(20'000);
  std::vector<payments::PrivateKey> keys;
  for (int i = 0; i < 12; ++i) {
    keys.push_back(payments::PrivateKey::Generate());
    ASSERT_TRUE(net.node(i).Publish(MakeOffer(keys.back(), 1, net.now_unix())));
  }
  net.RunUntil(net.now_ms() + 30'000);  // long past the hot rounds: nothing is pushed any more
  const size_t late = net.AddNode(SimConfig({net.AddressOf(5)}));
  net.RunUntil(net.now_ms() + 3'000);
  EXPECT_EQ(net.node(late).book().live_count(), 12u);
}

TEST(GossipSim, HeavyLossStillReachesEveryone) {
  sim::Network net({.seed = 5, .loss = 0.10, .start_unix = kStartUnix});
  const size_t n = 100;
  for (size_t i = 0; i < n; ++i)
    net.AddNode(SimConfig(i == 0 ? std::vector<Endpoint>{}
                                 : std::vector{net.AddressOf(net.rng()() % i)}));
  net.RunUntil(40'000);
  auto key = payments::PrivateKey::Generate();
  ASSERT_TRUE(net.node(7).Publish(MakeOffer(key, 1, net.now_unix())));
  net.RunUntil(net.now_ms() + 20'000);
  size_t have = 0;
  for (size_t i = 0; i < n; ++i) have += net.node(i).book().live_count();
  EXPECT_EQ(have, n);
}

}  // namespace
}  // namespace dvpn::marketplace
