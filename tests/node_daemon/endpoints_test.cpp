// A seller's endpoints become addresses before they are signed (provider/endpoints.h,
// docs/node.md "Endpoints"): the rules against a table of names, the system resolver on names
// every machine resolves the same way, and the advertiser re-resolving on refresh.

#include <gtest/gtest.h>

#include <map>

#include "payments/keys.h"
#include "provider/advertiser.h"
#include "provider/endpoints.h"

namespace dvpn::node {
namespace {

namespace ip = boost::asio::ip;
using marketplace::Endpoint;

// A fixed table of names (the rules, not the resolver, are under test here).
struct Table {
  std::map<std::string, std::vector<std::string>> names;
  int calls = 0;
  HostLookup Lookup() {
    return [this](const std::string& name) -> Result<std::vector<ip::address>, node::Errc> {
      ++calls;
      auto it = names.find(name);
      if (it == names.end()) return Fail(node::Errc::kBadEndpoint, "Name or service not known");
      std::vector<ip::address> out;
      for (const auto& a : it->second) out.push_back(ip::make_address(a));
      return out;
    };
  }
};

TEST(ResolveEndpoints, LiteralsAreKeptAndNamesBecomeTheirFirstV4AndV6Address) {
  Table t;
  t.names["exit.example"] = {"203.0.113.7", "203.0.113.8", "2001:db8::7", "2001:db8::8"};
  auto out = ResolveEndpoints({{"198.51.100.1", 7443}, {"exit.example", 7444}}, false, t.Lookup());
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_EQ(*out, (std::vector<Endpoint>{{"198.51.100.1", 7443},
                                         {"203.0.113.7", 7444},
                                         {"2001:db8::7", 7444}}));
  EXPECT_EQ(t.calls, 1) << "a literal is never looked up";
}

TEST(ResolveEndpoints, DuplicatesGoAndAtMostFourRemain) {
  Table t;
  t.names["a.example"] = {"203.0.113.1", "2001:db8::1"};
  t.names["b.example"] = {"203.0.113.2", "2001:db8::2"};
  t.names["c.example"] = {"203.0.113.3"};
  auto out = ResolveEndpoints(
      {{"203.0.113.1", 1}, {"a.example", 1}, {"b.example", 1}, {"c.example", 1}}, false,
      t.Lookup());
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_EQ(*out, (std::vector<Endpoint>{{"203.0.113.1", 1},
                                         {"2001:db8::1", 1},
                                         {"203.0.113.2", 1},
                                         {"2001:db8::2", 1}}));
}

TEST(ResolveEndpoints, ANameOnLoopbackIsRefusedUnlessTheTunnelIsLocalOrTheNameIsLocalhost) {
  Table t;
  t.names["myhost"] = {"127.0.1.1"};  // Debian's /etc/hosts entry for the machine's own name
  t.names["localhost"] = {"127.0.0.1", "::1"};
  auto refused = ResolveEndpoints({{"myhost", 7443}}, false, t.Lookup());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kBadEndpoint);
  EXPECT_NE(refused.error().message.find("myhost: resolves to 127.0.1.1 (loopback)"),
            std::string::npos)
      << refused.error().message;

  auto local = ResolveEndpoints({{"myhost", 7443}}, true, t.Lookup());
  ASSERT_TRUE(local) << local.error().message;
  EXPECT_EQ(*local, (std::vector<Endpoint>{{"127.0.1.1", 7443}}));

  auto named = ResolveEndpoints({{"localhost", 7443}}, false, t.Lookup());
  ASSERT_TRUE(named) << named.error().message;
  EXPECT_EQ(*named, (std::vector<Endpoint>{{"127.0.0.1", 7443}, {"::1", 7443}}));
}

TEST(ResolveEndpoints, WildcardsAndUnknownNamesAreRefusedWithTheHost) {
  Table t;
  t.names["zero.example"] = {"0.0.0.0"};
  for (const auto& [endpoints, expected] :
       std::vector<std::pair<std::vector<Endpoint>, std::string>>{
           {{{"0.0.0.0", 1}}, "0.0.0.0: a wildcard address"},
           {{{"::", 1}}, ":: a wildcard address"},
           {{{"zero.example", 1}}, "zero.example: resolves to the wildcard address 0.0.0.0"},
           {{{"203.0.113.1", 1}, {"nowhere.example", 1}},
            "nowhere.example: cannot resolve: Name or service not known"},
       }) {
    auto out = ResolveEndpoints(endpoints, true, t.Lookup());
    ASSERT_FALSE(out) << expected;
    EXPECT_NE(out.error().message.find(expected), std::string::npos) << out.error().message;
  }
}

TEST(ResolveEndpoints, TheSystemResolverAnswersLocalhostAndRefusesAnInvalidName) {
  auto local = ResolveEndpoints({{"localhost", 7443}}, false, SystemLookup());
  ASSERT_TRUE(local) << local.error().message;
  ASSERT_FALSE(local->empty());
  for (const auto& e : *local) {
    EXPECT_TRUE(ip::make_address(e.host).is_loopback()) << e.host;
    EXPECT_EQ(e.port, 7443);
  }
  // RFC 6761: .invalid never resolves.
  auto none = ResolveEndpoints({{"dvpn-test.invalid", 7443}}, true, SystemLookup());
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("dvpn-test.invalid: cannot resolve"), std::string::npos)
      << none.error().message;
  EXPECT_TRUE(HasNames({{"127.0.0.1", 1}, {"localhost", 1}}));
  EXPECT_FALSE(HasNames({{"127.0.0.1", 1}, {"::1", 1}}));
}

TEST(OfferAdvertiserEndpoints, EachRefreshSignsTheAddressTheNameHasThenAndKeepsItOnFailure) {
  Table t;
  t.names["exit.example"] = {"203.0.113.7"};
  auto key = payments::PrivateKey::Generate();
  OfferTemplate offer;
  offer.ledger.bytes[0] = 1;
  offer.tunnel_key[0] = 1;
  offer.price_per_mb = Amount::FromMicro(10'000);
  offer.region = "test";
  offer.capacity_mbps = 10;
  offer.max_sessions = 1;
  offer.endpoints = {{"203.0.113.7", 7443}};
  std::vector<marketplace::Offer> published;
  OfferAdvertiser advertiser(offer, key, [&](const marketplace::Offer& o) {
    published.push_back(o);
    return Result<void, marketplace::Errc>();
  });
  advertiser.SetEndpointSource({{{"exit.example", 7443}}, false, t.Lookup()});

  ASSERT_TRUE(advertiser.PublishLive(1'000'000));
  t.names["exit.example"] = {"203.0.113.99"};  // the seller's address changed
  ASSERT_TRUE(advertiser.PublishLive(2'000'000));
  t.names.clear();  // the resolver fails: the last address stays
  ASSERT_TRUE(advertiser.PublishLive(3'000'000));
  ASSERT_EQ(published.size(), 3u);
  EXPECT_EQ(published[0].endpoints, (std::vector<Endpoint>{{"203.0.113.7", 7443}}));
  EXPECT_EQ(published[1].endpoints, (std::vector<Endpoint>{{"203.0.113.99", 7443}}));
  EXPECT_EQ(published[2].endpoints, (std::vector<Endpoint>{{"203.0.113.99", 7443}}));
  for (const auto& o : published) {
    EXPECT_TRUE(marketplace::VerifyOfferSignature(o, marketplace::OfferDigest(o)));
  }
}

}  // namespace
}  // namespace dvpn::node
