// The dvpn.v1.OfferBook service in process: a real GossipTransport (not listening) holds the
// book, offers are published into it, and a gRPC client on 127.0.0.1 asks and watches. A fake
// feed drives the cases that need exact timing (a watcher that falls behind).

#include "marketplace/rpc/offer_book_service.h"

#include <algorithm>

#include "tests/marketplace_e2e/node_harness.h"

namespace dvpn::marketplace_e2e {
namespace {

using marketplace::GossipConfig;
using marketplace::GossipTransport;
using marketplace::GossipTransportOptions;
using marketplace::OfferChange;
using marketplace::rpc::OfferBookServer;
using marketplace::rpc::OfferBookServerOptions;
using marketplace::rpc::OfferFeed;
using marketplace::rpc::TransportOfferFeed;

Offer Retired(const PrivateKey& key, uint32_t offer_id, uint64_t seq) {
  Offer o;
  o.ledger = TestNetwork();
  o.offer_id = offer_id;
  o.seq = seq;
  o.issued_unix = UnixNow();
  o.expires_unix = o.issued_unix + 3600;
  o.retired = true;
  marketplace::SignOffer(o, key);
  return o;
}

Offer Priced(const PrivateKey& key, uint64_t seq, uint64_t price, const std::string& region = "eu",
             uint32_t capacity = 100, uint64_t lifetime = 3600) {
  Offer o = MakeOffer(key, 1, seq, region, price, UnixNow(), lifetime);
  o.capacity_mbps = capacity;
  marketplace::SignOffer(o, key);
  return o;
}

class OfferBookServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GossipConfig config;
    config.network = TestNetwork();
    config.round = 100ms;
    config.slot_refresh_burst = 100;  // this test re-signs one slot many times
    GossipTransportOptions options;
    options.listen_address = "";  // no peers: only what we publish
    transport_ = std::make_unique<GossipTransport>(config, options);
    ASSERT_TRUE(transport_->Start());
    feed_ = std::make_unique<TransportOfferFeed>(*transport_);
    StartServer();
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    transport_->Stop();
  }

  void StartServer(uint32_t max_watchers = 2) {
    OfferBookServerOptions options;
    options.service.max_watchers = max_watchers;
    options.service.watch_poll = 50ms;
    auto server = OfferBookServer::Start(*feed_, TestNetwork(), options);
    ASSERT_TRUE(server) << server.error().message;
    server_ = std::move(*server);
    node_.grpc_port = server_->port();
    node_.channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                        grpc::InsecureChannelCredentials());
    node_.stub = v1::OfferBook::NewStub(node_.channel);
  }

  void Publish(const Offer& o) {
    auto f = transport_->Publish(o);
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message;
  }

  std::unique_ptr<GossipTransport> transport_;
  std::unique_ptr<TransportOfferFeed> feed_;
  std::unique_ptr<OfferBookServer> server_;
  Node node_;
};

TEST_F(OfferBookServiceTest, ListOffersFiltersRanksAndLimits) {
  auto a = PrivateKey::Generate(), b = PrivateKey::Generate(), c = PrivateKey::Generate();
  Publish(Priced(a, 1, 300, "eu-west", 1000));
  Publish(Priced(b, 1, 100, "us-east", 10));
  Publish(Priced(c, 1, 200, "eu-west", 100));
  Publish(Retired(PrivateKey::Generate(), 1, 1));  // a tombstone: never shown

  auto all = ListOffers(node_);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].offer().provider(), ProviderBytes(b));
  EXPECT_EQ((*all)[1].offer().provider(), ProviderBytes(c));
  EXPECT_EQ((*all)[2].offer().provider(), ProviderBytes(a));
  EXPECT_DOUBLE_EQ((*all)[0].score(), 101 * 1.5);
  EXPECT_EQ((*all)[0].provider_address(),
            payments::Address::FromPublicKey(b.public_key()).ToString());

  v1::OfferFilter f;
  f.set_limit(2);
  EXPECT_EQ(ListOffers(node_, f)->size(), 2u);
  f.set_limit(0);
  f.set_max_price_per_mb(200);
  EXPECT_EQ(ListOffers(node_, f)->size(), 2u);
  f.set_region("eu-west");
  ASSERT_EQ(ListOffers(node_, f)->size(), 1u);
  EXPECT_EQ(ListOffers(node_, f)->at(0).offer().provider(), ProviderBytes(c));
  f.clear_max_price_per_mb();
  f.set_min_capacity_mbps(500);
  ASSERT_EQ(ListOffers(node_, f)->size(), 1u);
  EXPECT_EQ(ListOffers(node_, f)->at(0).offer().provider(), ProviderBytes(a));

  // Bad filters.
  for (auto bad :
       {std::make_pair(1001u, std::string()), std::make_pair(0u, std::string("EU")),
        std::make_pair(0u, std::string(33, 'a')), std::make_pair(0u, std::string("e u"))}) {
    v1::OfferFilter g;
    g.set_limit(bad.first);
    g.set_region(bad.second);
    grpc::Status status;
    EXPECT_FALSE(ListOffers(node_, g, &status));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.second;
    EXPECT_FALSE(status.error_message().empty());
  }
}

// Offers of both formats pass through the node's book and gRPC unchanged (signatures verify),
// the reply says what each serves, and the filter can require modes.
TEST_F(OfferBookServiceTest, ListOffersShowsAndFiltersModes) {
  auto socks = PrivateKey::Generate(), full = PrivateKey::Generate();
  Publish(Priced(socks, 1, 100));  // format 1: SOCKS only
  Offer both = Priced(full, 1, 200);
  both.format = 2;
  both.modes = marketplace::kModeSocks | marketplace::kModeFullTunnel;
  marketplace::SignOffer(both, full);
  Publish(both);

  auto all = ListOffers(node_);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].offer().provider(), ProviderBytes(socks));
  EXPECT_EQ((*all)[0].modes(), 1u);
  EXPECT_EQ((*all)[0].offer().format(), 0u) << "format 1 goes on the wire as before";
  EXPECT_EQ((*all)[1].modes(), 3u);
  EXPECT_EQ((*all)[1].offer().format(), 2u);
  for (const auto& ranked : *all) {
    auto o = marketplace::FromProto(ranked.offer());
    ASSERT_TRUE(o) << o.error().message;
    EXPECT_TRUE(marketplace::VerifyOfferSignature(*o, marketplace::OfferDigest(*o)));
  }

  v1::OfferFilter f;
  f.set_required_modes(marketplace::kModeFullTunnel);
  auto full_only = ListOffers(node_, f);
  ASSERT_TRUE(full_only);
  ASSERT_EQ(full_only->size(), 1u);
  EXPECT_EQ(full_only->at(0).offer().provider(), ProviderBytes(full));
  f.set_required_modes(marketplace::kModeSocks);
  EXPECT_EQ(ListOffers(node_, f)->size(), 2u);

  for (uint32_t bad : {4u, 0x103u}) {
    f.set_required_modes(bad);
    grpc::Status status;
    EXPECT_FALSE(ListOffers(node_, f, &status));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(status.error_message().find("filter.required_modes"), std::string::npos)
        << status.error_message();
  }
}

TEST_F(OfferBookServiceTest, ListOffersDefaultLimitIs100) {
  for (int i = 0; i < 105; ++i) Publish(Priced(PrivateKey::Generate(), 1, 1000 + i));
  EXPECT_EQ(ListOffers(node_)->size(), 100u);
  EXPECT_EQ(ListOffers(node_, AllOffers())->size(), 105u);
  auto best = ListOffers(node_)->at(0);
  EXPECT_EQ(best.offer().price_per_mb(), 1000u);
}

std::vector<std::pair<v1::OfferEvent::Kind, uint64_t>> Kinds(
    const std::vector<v1::OfferEvent>& events, const PrivateKey& key) {
  std::vector<std::pair<v1::OfferEvent::Kind, uint64_t>> out;
  for (const auto& e : events)
    if (e.offer().offer().provider() == ProviderBytes(key))
      out.emplace_back(e.kind(), e.offer().offer().seq());
  return out;
}

TEST_F(OfferBookServiceTest, WatchSendsTheSnapshotThenEveryChange) {
  auto a = PrivateKey::Generate(), b = PrivateKey::Generate(), c = PrivateKey::Generate();
  Publish(Priced(a, 1, 100));
  Publish(Priced(PrivateKey::Generate(), 1, 9999));  // never matches the filter
  v1::OfferFilter f;
  f.set_max_price_per_mb(500);
  Watch watch(*node_.stub, f);
  ASSERT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::ADDED, a), 5s));

  Publish(Priced(b, 1, 200));
  ASSERT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::ADDED, b), 5s));
  Publish(Priced(a, 2, 150));               // still matches: UPDATED
  Publish(Priced(a, 3, 900));               // no longer matches: REMOVED (the version shown: 2)
  Publish(Priced(a, 4, 120));               // matches again: ADDED
  Publish(Retired(b, 1, 2));                // retired: REMOVED
  Publish(Priced(c, 1, 50, "eu", 100, 2));  // expires within 2 s: ADDED, then REMOVED
  ASSERT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::REMOVED, c), 10s));
  ASSERT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::REMOVED, b), 1s));

  using K = v1::OfferEvent;
  auto events = watch.events();
  EXPECT_EQ(Kinds(events, a), (std::vector<std::pair<K::Kind, uint64_t>>{
                                  {K::ADDED, 1}, {K::UPDATED, 2}, {K::REMOVED, 2}, {K::ADDED, 4}}));
  EXPECT_EQ(Kinds(events, b),
            (std::vector<std::pair<K::Kind, uint64_t>>{{K::ADDED, 1}, {K::REMOVED, 1}}));
  EXPECT_EQ(Kinds(events, c),
            (std::vector<std::pair<K::Kind, uint64_t>>{{K::ADDED, 1}, {K::REMOVED, 1}}));
  for (const auto& e : events) EXPECT_LE(e.offer().offer().price_per_mb(), 500u);
}

TEST_F(OfferBookServiceTest, WatchRefusesBadFiltersAndTooManyWatchers) {
  v1::OfferFilter bad;
  bad.set_region("Not A Region");
  {
    Watch w(*node_.stub, bad);
    auto end = w.WaitForEnd(5s);
    ASSERT_TRUE(end);
    EXPECT_EQ(end->error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto a = PrivateKey::Generate();
  Publish(Priced(a, 1, 100));
  auto w1 = std::make_unique<Watch>(*node_.stub);
  auto w2 = std::make_unique<Watch>(*node_.stub);
  ASSERT_TRUE(w1->WaitForEvent(EventFor(v1::OfferEvent::ADDED, a), 5s));
  ASSERT_TRUE(w2->WaitForEvent(EventFor(v1::OfferEvent::ADDED, a), 5s));
  {
    Watch w3(*node_.stub);
    auto end = w3.WaitForEnd(5s);
    ASSERT_TRUE(end);
    EXPECT_EQ(end->error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // A client that goes away frees its slot (the handler notices within a poll).
  w1.reset();
  EXPECT_TRUE(PollUntil(
      [&] {
        Watch w(*node_.stub);
        return w.WaitForEvent(EventFor(v1::OfferEvent::ADDED, a), 2s);
      },
      10s));
}

TEST_F(OfferBookServiceTest, ShutdownEndsWatchesPromptly) {
  Watch watch(*node_.stub);
  auto a = PrivateKey::Generate();
  Publish(Priced(a, 1, 100));
  ASSERT_TRUE(watch.WaitForEvent(EventFor(v1::OfferEvent::ADDED, a), 5s));
  auto start = SteadyClock::now();
  server_->Shutdown(std::chrono::milliseconds(5000));
  EXPECT_LT(SteadyClock::now() - start, 2s);
  auto end = watch.WaitForEnd(5s);
  ASSERT_TRUE(end);
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE);
}

// A feed whose snapshot the test answers by hand, so changes can pile up before it.
class FakeFeed final : public OfferFeed {
 public:
  std::future<std::vector<Offer>> QueryOffers(marketplace::OfferQuery) override {
    std::lock_guard lock(mu_);
    asked_ = true;
    cv_.notify_all();
    return answer_.get_future();
  }
  uint64_t AddListener(Listener l) override {
    std::lock_guard lock(mu_);
    listener_ = std::move(l);
    return 1;
  }
  void RemoveListener(uint64_t) override {
    std::lock_guard lock(mu_);
    listener_ = nullptr;
  }
  bool WaitAsked(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return asked_ && listener_; });
  }
  void Fire(const OfferChange& change) {
    std::lock_guard lock(mu_);
    if (listener_) listener_(change);
  }
  void Answer(std::vector<Offer> offers) { answer_.set_value(std::move(offers)); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool asked_ = false;
  Listener listener_;
  std::promise<std::vector<Offer>> answer_;
};

TEST(OfferBookServiceOverflow, AWatcherThatFallsBehindIsEndedWithResourceExhausted) {
  FakeFeed feed;
  OfferBookServerOptions options;
  options.service.watch_queue_limit = 4;
  options.service.watch_poll = 50ms;
  auto server = OfferBookServer::Start(feed, TestNetwork(), options);
  ASSERT_TRUE(server) << server.error().message;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::OfferBook::NewStub(channel);
  Watch watch(*stub);
  ASSERT_TRUE(feed.WaitAsked(5s));
  auto key = PrivateKey::Generate();
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    feed.Fire(OfferChange{OfferChange::Kind::kAdded,
                          std::make_shared<const Offer>(Priced(key, seq, 100))});
  }
  feed.Answer({});
  auto end = watch.WaitForEnd(5s);
  ASSERT_TRUE(end);
  EXPECT_EQ(end->error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << end->error_message();
  (*server)->Shutdown();
}

}  // namespace
}  // namespace dvpn::marketplace_e2e
