// Each hop's OfferPicker (client/offer_picker.h) against an in-process OfferBook served over
// gRPC on 127.0.0.1: the pickers of one path never choose the same provider for two hops. Free
// offers, so no ledger is needed; no connection is made to the offers' endpoints.

#include "client/offer_picker.h"

#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <vector>

#include "common/clock.h"
#include "marketplace/offer.h"
#include "marketplace/rpc/offer_book_service.h"

namespace dvpn::tunnel_client {
namespace {

namespace session = tunnel::session;

payments::LedgerId Network() {
  payments::LedgerId id;
  id.bytes.fill(0x5a);
  return id;
}

payments::PrivateKey ProviderKey(uint8_t n) {
  ByteArray<32> secret{};
  secret[0] = 0x21;
  secret[31] = n;
  return *payments::PrivateKey::FromBytes(secret);
}

// A free offer of provider `n` on 127.0.0.1:(7000 + n), valid for an hour from now. (Free
// offers of equal score rank by provider key: which one a picker prefers is not assumed.)
marketplace::Offer FreeOffer(uint8_t n) {
  marketplace::Offer o;
  o.ledger = Network();
  o.offer_id = 1;
  o.seq = 1;
  o.issued_unix = UnixSeconds() - 10;
  o.expires_unix = o.issued_unix + 3600;
  o.tunnel_key.fill(n);
  o.capacity_mbps = 100;
  o.max_sessions = 8;
  o.endpoints = {{"127.0.0.1", static_cast<uint16_t>(7000 + n)}};
  marketplace::SignOffer(o, ProviderKey(n));
  return o;
}

// The book: a fixed list of offers, no changes.
class FixedFeed final : public marketplace::rpc::OfferFeed {
 public:
  explicit FixedFeed(std::vector<marketplace::Offer> offers) : offers_(std::move(offers)) {}
  std::future<std::vector<marketplace::Offer>> QueryOffers(marketplace::OfferQuery) override {
    std::promise<std::vector<marketplace::Offer>> p;
    p.set_value(offers_);
    return p.get_future();
  }
  uint64_t AddListener(Listener) override { return 1; }
  void RemoveListener(uint64_t) override {}

 private:
  std::vector<marketplace::Offer> offers_;
};

class PathPickers : public ::testing::Test {
 protected:
  void Serve(std::vector<marketplace::Offer> offers) {
    feed_ = std::make_unique<FixedFeed>(std::move(offers));
    auto server = marketplace::rpc::OfferBookServer::Start(*feed_, Network(), {});
    ASSERT_TRUE(server.has_value()) << server.error().message;
    server_ = std::move(*server);
  }
  // The picker of hop `hop` of `path`.
  std::unique_ptr<OfferPicker> Picker(std::shared_ptr<PathProviders> path, uint32_t hop) {
    OfferPicker::Options o;
    o.offers_from = server_->address();
    o.policy.ledger = Network();
    o.policy.max_price_per_mb = Amount::FromMicro(1000);
    o.path = std::move(path);
    o.hop = hop;
    return std::make_unique<OfferPicker>(
        std::move(o), std::make_unique<marketplace::ProviderStats>(
                          marketplace::ProviderStats::InMemory(clock_)));
  }
  SystemClock clock_;
  std::unique_ptr<FixedFeed> feed_;
  std::unique_ptr<marketplace::rpc::OfferBookServer> server_;
};

TEST_F(PathPickers, EachHopGetsAProviderOfItsOwn) {
  Serve({FreeOffer(1), FreeOffer(2)});
  auto path = std::make_shared<PathProviders>(2);
  auto first = Picker(path, 0);
  auto second = Picker(path, 1);

  // Alone, both pickers would choose the same best offer; on one path the second skips it.
  auto t0 = first->Next();
  ASSERT_TRUE(t0.has_value()) << t0.error().message;
  auto t1 = second->Next();
  ASSERT_TRUE(t1.has_value()) << t1.error().message;
  EXPECT_NE(t0->endpoint, t1->endpoint);
  EXPECT_NE(first->current_offer()->provider, second->current_offer()->provider);
  EXPECT_EQ(Picker(nullptr, 0)->Next()->endpoint, t0->endpoint);
  EXPECT_TRUE(path->HeldByOtherHop(1, first->current_offer()->provider));
  EXPECT_TRUE(path->HeldByOtherHop(0, second->current_offer()->provider));

  // Asked again, each hop keeps its provider.
  EXPECT_EQ(first->Next()->endpoint, t0->endpoint);
  EXPECT_EQ(second->Next()->endpoint, t1->endpoint);
}

TEST_F(PathPickers, AHopFindsNoProviderWhenTheOnlyOneServesAnotherHop) {
  Serve({FreeOffer(1)});
  auto path = std::make_shared<PathProviders>(2);
  auto first = Picker(path, 0);
  auto second = Picker(path, 1);
  ASSERT_TRUE(first->Next().has_value());
  auto t1 = second->Next();
  ASSERT_FALSE(t1.has_value());
  EXPECT_EQ(t1.error().code, tunnel::session::ConnectErrc::kNoProvider);
  EXPECT_NE(t1.error().message.find("no provider left"), std::string::npos) << t1.error().message;
}

TEST_F(PathPickers, AFailedProviderIsReleasedForTheOtherHops) {
  Serve({FreeOffer(1), FreeOffer(2)});
  auto path = std::make_shared<PathProviders>(2);
  auto first = Picker(path, 0);
  auto t0 = first->Next();
  ASSERT_TRUE(t0.has_value()) << t0.error().message;
  const HopProvider failed = first->current_offer()->provider;
  first->Failed(*t0, session::ProviderFailure::kConnect, "refused");
  EXPECT_FALSE(path->HeldByOtherHop(1, failed));
  auto again = first->Next();  // the other offer
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_NE(again->endpoint, t0->endpoint);

  auto second = Picker(path, 1);  // may take the provider hop 0 left
  auto t1 = second->Next();
  ASSERT_TRUE(t1.has_value()) << t1.error().message;
  EXPECT_EQ(t1->endpoint, t0->endpoint);
  EXPECT_EQ(second->current_offer()->provider, failed);
}

TEST_F(PathPickers, OneHopPathChoosesAsAPickerOnItsOwn) {
  Serve({FreeOffer(1), FreeOffer(2)});
  auto alone = Picker(nullptr, 0);
  auto one_hop = Picker(std::make_shared<PathProviders>(1), 0);
  auto a = alone->Next();
  auto b = one_hop->Next();
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->endpoint, b->endpoint);
  EXPECT_EQ(a->provider_static, b->provider_static);
}

}  // namespace
}  // namespace dvpn::tunnel_client
