// Signed offers (docs/protocol.md §6): the test vectors printed in the document, the field
// rules, the protobuf round trip, and that a signature binds every field.
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "marketplace/offer.h"
#include "marketplace/wire.h"

namespace dvpn::marketplace {
namespace {

payments::PrivateKey KeyOf(uint8_t fill) {
  ByteArray<32> secret;
  secret.fill(fill);
  return *payments::PrivateKey::FromBytes(secret);
}

payments::LedgerId TestLedger() { return payments::LedgerIdFor("dvpn-test", KeyOf(0x11).public_key()); }

// The two offers of protocol.md §6 "Test vectors", signed with zero aux randomness.
Offer LiveVectorOffer() {
  Offer o;
  o.ledger = TestLedger();
  o.offer_id = 1;
  o.seq = 5;
  o.issued_unix = 1'900'000'000;
  o.expires_unix = 1'900'003'600;
  o.tunnel_key.fill(0xa4);
  o.price_per_mb = Amount::FromMicro(250'000);
  o.capacity_mbps = 800;
  o.max_sessions = 64;
  o.region = "eu-west";
  o.endpoints = {{"exit1.example.net", 7443}, {"192.0.2.7", 7443}};
  SignOfferWithAux(o, KeyOf(0x33), Hash32{});
  return o;
}

// The live offer in format 2, serving SOCKS and full tunnel (protocol.md §6 `offer2`).
Offer Format2VectorOffer() {
  Offer o = LiveVectorOffer();
  o.format = 2;
  o.modes = kModeSocks | kModeFullTunnel;
  SignOfferWithAux(o, KeyOf(0x33), Hash32{});
  return o;
}

Offer RetiredVectorOffer() {
  Offer o;
  o.ledger = TestLedger();
  o.offer_id = 1;
  o.seq = 6;
  o.issued_unix = 1'900'000'100;
  o.expires_unix = 1'900'003'700;
  o.retired = true;
  SignOfferWithAux(o, KeyOf(0x33), Hash32{});
  return o;
}

std::map<std::string, std::string> ComputedVectors() {
  std::map<std::string, std::string> v;
  for (auto [name, offer] : {std::pair{"offer", LiveVectorOffer()},
                             std::pair{"offer2", Format2VectorOffer()},
                             std::pair{"retired", RetiredVectorOffer()}}) {
    v[std::string(name) + ".encoding"] = ToHex(EncodeOffer(offer));
    v[std::string(name) + ".digest"] = ToHex(OfferDigest(offer));
    v[std::string(name) + ".sig"] = ToHex(offer.signature);
  }
  char key[17];
  std::snprintf(key, sizeof key, "%016llx",
                static_cast<unsigned long long>(OfferKeyOf(LiveVectorOffer())));
  v["offer.key"] = key;
  return v;
}

std::map<std::string, std::string> DocumentVectors() {
  std::ifstream in(DVPN_PROTOCOL_MD);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  auto begin = doc.find("<!-- offer-vectors:begin -->");
  auto end = doc.find("<!-- offer-vectors:end -->");
  std::map<std::string, std::string> out;
  if (begin == std::string::npos || end == std::string::npos) return out;
  const std::string block = doc.substr(begin, end - begin);
  std::regex line(R"(([\w.]+) = ([0-9a-f]+))");
  for (std::sregex_iterator it(block.begin(), block.end(), line), last; it != last; ++it)
    out[(*it)[1]] += (*it)[2];  // long values may wrap over several "name = part" lines
  return out;
}

TEST(OfferVectors, MatchTheDocument) {
  const auto computed = ComputedVectors();
  if (std::getenv("DVPN_PRINT_OFFER_VECTORS")) {
    for (const auto& [k, v] : computed) std::printf("%s = %s\n", k.c_str(), v.c_str());
  }
  const auto doc = DocumentVectors();
  ASSERT_EQ(doc.size(), computed.size()) << "offer vectors block of " << DVPN_PROTOCOL_MD;
  for (const auto& [k, v] : computed) EXPECT_EQ(doc.at(k), v) << k;
}

TEST(Offer, SignatureVerifiesAndBindsEveryField) {
  const Offer good = LiveVectorOffer();
  ASSERT_TRUE(CheckFields(good));
  EXPECT_TRUE(VerifyOfferSignature(good, OfferDigest(good)));
  std::vector<std::function<void(Offer&)>> changes = {
      [](Offer& o) { o.ledger.bytes[0] ^= 1; },
      [](Offer& o) { o.offer_id++; },
      [](Offer& o) { o.seq++; },
      [](Offer& o) { o.issued_unix++; },
      [](Offer& o) { o.expires_unix++; },
      [](Offer& o) { o.retired = true; o.endpoints.clear(); },
      [](Offer& o) { o.tunnel_key[5] ^= 1; },
      [](Offer& o) { o.price_per_mb = Amount::FromMicro(o.price_per_mb.micro() - 1); },
      [](Offer& o) { o.price_per_minute = Amount::FromMicro(1); },
      [](Offer& o) { o.capacity_mbps++; },
      [](Offer& o) { o.max_sessions++; },
      [](Offer& o) { o.region = "eu-east"; },
      [](Offer& o) { o.endpoints[1].port = 7444; },
      [](Offer& o) { o.endpoints[0].host = "exit2.example.net"; },
      [](Offer& o) { o.endpoints.pop_back(); },
      [](Offer& o) { o.provider = KeyOf(0x22).public_key().bytes(); },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    Offer o = good;
    changes[i](o);
    EXPECT_FALSE(VerifyOfferSignature(o, OfferDigest(o))) << "change " << i;
  }
  // Format 2: the modes too.
  const Offer good2 = Format2VectorOffer();
  ASSERT_TRUE(CheckFields(good2));
  EXPECT_TRUE(VerifyOfferSignature(good2, OfferDigest(good2)));
  for (uint8_t modes : {kModeSocks, kModeFullTunnel}) {
    Offer o = good2;
    o.modes = modes;
    ASSERT_TRUE(CheckFields(o));
    EXPECT_FALSE(VerifyOfferSignature(o, OfferDigest(o))) << "modes " << int(modes);
  }
}

// Format 1 is today's encoding, understood as SOCKS only; format 2 is the same fields under
// another tag, then modes u8 (protocol.md §6).
TEST(OfferFormats, Format1IsSocksOnlyAndFormat2AppendsTheModes) {
  const Offer v1 = LiveVectorOffer();
  EXPECT_EQ(v1.format, 1);
  EXPECT_EQ(v1.modes, kModeSocks);
  const Offer v2 = Format2VectorOffer();
  EXPECT_EQ(v2.format, 2);
  EXPECT_EQ(v2.modes, kModeSocks | kModeFullTunnel);

  const auto e1 = EncodeOffer(v1);
  const auto e2 = EncodeOffer(v2);
  const std::string tag1 = "\x0d" "dvpn.v1.Offer";
  const std::string tag2 = "\x0e" "dvpn.v1.Offer2";
  ASSERT_EQ(std::string(e1.begin(), e1.begin() + tag1.size()), tag1);
  ASSERT_EQ(std::string(e2.begin(), e2.begin() + tag2.size()), tag2);
  // After the tags: the same fields, then one byte of modes.
  ASSERT_EQ(e2.size(), e1.size() + 2);
  EXPECT_TRUE(std::equal(e1.begin() + tag1.size(), e1.end(), e2.begin() + tag2.size()));
  EXPECT_EQ(e2.back(), kModeSocks | kModeFullTunnel);

  // A format-2 offer carrying SOCKS only is valid too, and still not format 1's encoding.
  Offer socks2 = LiveVectorOffer();
  socks2.format = 2;
  EXPECT_TRUE(CheckFields(socks2));
  EXPECT_NE(OfferDigest(socks2), OfferDigest(v1));
}

// A signature made for one format never verifies as the other.
TEST(OfferFormats, AWrongFormatSignatureIsRefused) {
  Offer as1 = Format2VectorOffer();  // signed as format 2, read as format 1
  as1.format = 1;
  as1.modes = kModeSocks;
  ASSERT_TRUE(CheckFields(as1));
  EXPECT_FALSE(VerifyOfferSignature(as1, OfferDigest(as1)));

  Offer as2 = LiveVectorOffer();  // signed as format 1, read as format 2 (SOCKS only)
  as2.format = 2;
  ASSERT_TRUE(CheckFields(as2));
  EXPECT_FALSE(VerifyOfferSignature(as2, OfferDigest(as2)));

  Offer retired2 = RetiredVectorOffer();  // a retired offer may be either format
  retired2.format = 2;
  retired2.modes = kModeSocks;
  SignOfferWithAux(retired2, KeyOf(0x33), Hash32{});
  ASSERT_TRUE(CheckFields(retired2));
  EXPECT_TRUE(VerifyOfferSignature(retired2, OfferDigest(retired2)));
  Offer retired_as1 = retired2;
  retired_as1.format = 1;
  EXPECT_FALSE(VerifyOfferSignature(retired_as1, OfferDigest(retired_as1)));
}

TEST(OfferFormats, ModesRules) {
  EXPECT_TRUE(CheckModes(kModeSocks));
  EXPECT_TRUE(CheckModes(kModeFullTunnel));
  EXPECT_TRUE(CheckModes(kModeSocks | kModeFullTunnel));
  EXPECT_EQ(CheckModes(0).error().code, Errc::kBadField);
  EXPECT_EQ(CheckModes(0).error().message, "none set (1 SOCKS, 2 full tunnel)");
  EXPECT_EQ(CheckModes(4).error().message, "unknown bit in 0x4 (known: 1 SOCKS, 2 full tunnel)");
  EXPECT_FALSE(CheckModes(0x83));
  EXPECT_FALSE(CheckModes(0x100 | kModeSocks)) << "above a byte";

  struct Case {
    const char* what;
    std::function<void(Offer&)> change;
  } cases[] = {
      {"format 2, modes 0", [](Offer& o) { o.modes = 0; }},
      {"format 2, unknown bit", [](Offer& o) { o.modes = kModeSocks | 4; }},
      {"format 2, high bit", [](Offer& o) { o.modes = 0x80; }},
      {"format 1 with full tunnel", [](Offer& o) { o.format = 1; }},
      {"format 0", [](Offer& o) { o.format = 0; }},
      {"format 3", [](Offer& o) { o.format = 3; }},
      {"retired format 2, modes 0", [](Offer& o) {
         o.retired = true;
         o.endpoints.clear();
         o.modes = 0;
       }},
  };
  for (const auto& c : cases) {
    Offer o = Format2VectorOffer();
    c.change(o);
    EXPECT_FALSE(CheckFields(o)) << c.what;
  }
  Offer no_modes1 = LiveVectorOffer();
  no_modes1.modes = 0;
  EXPECT_FALSE(CheckFields(no_modes1)) << "format 1 means SOCKS: modes 1";
}

TEST(Offer, FieldRules) {
  struct Case {
    const char* what;
    std::function<void(Offer&)> change;
  } cases[] = {
      {"seq 0", [](Offer& o) { o.seq = 0; }},
      {"expiry before issue", [](Offer& o) { o.expires_unix = o.issued_unix; }},
      {"lifetime over a day", [](Offer& o) { o.expires_unix = o.issued_unix + 86401; }},
      {"long region", [](Offer& o) { o.region = std::string(33, 'a'); }},
      {"upper-case region", [](Offer& o) { o.region = "EU"; }},
      {"price too high", [](Offer& o) { o.price_per_mb = Amount::FromMicro(kMaxOfferPrice + 1); }},
      {"minute price too high",
       [](Offer& o) { o.price_per_minute = Amount::FromMicro(kMaxOfferPrice + 1); }},
      {"no endpoint", [](Offer& o) { o.endpoints.clear(); }},
      {"five endpoints", [](Offer& o) { o.endpoints.resize(5, {"a.example", 1}); }},
      {"empty host", [](Offer& o) { o.endpoints[0].host = ""; }},
      {"long host", [](Offer& o) { o.endpoints[0].host = std::string(254, 'a'); }},
      {"host with a space", [](Offer& o) { o.endpoints[0].host = "a b"; }},
      {"host with a slash", [](Offer& o) { o.endpoints[0].host = "a/b"; }},
      {"port 0", [](Offer& o) { o.endpoints[0].port = 0; }},
      {"zero tunnel key", [](Offer& o) { o.tunnel_key = {}; }},
      {"retired with endpoints", [](Offer& o) { o.retired = true; }},
  };
  for (const auto& c : cases) {
    Offer o = LiveVectorOffer();
    c.change(o);
    EXPECT_FALSE(CheckFields(o)) << c.what;
  }
  EXPECT_TRUE(CheckFields(RetiredVectorOffer()));
  Offer longest = LiveVectorOffer();
  longest.region = std::string(32, 'z');
  longest.endpoints.assign(4, Endpoint{std::string(253, 'h'), 65535});
  longest.price_per_mb = longest.price_per_minute = Amount::FromMicro(kMaxOfferPrice);
  longest.offer_id = longest.capacity_mbps = longest.max_sessions = UINT32_MAX;
  longest.seq = longest.issued_unix = UINT64_MAX - kMaxOfferLifetimeS;
  longest.expires_unix = UINT64_MAX;
  for (uint8_t format : {1, 2}) {
    longest.format = format;
    longest.modes = format == 1 ? kModeSocks : kModeSocks | kModeFullTunnel;
    ASSERT_TRUE(CheckFields(longest));
    // protocol.md §6 states these sizes.
    EXPECT_EQ(EncodeOffer(longest).size(), format == 1 ? 1226u : 1228u);
    EXPECT_LE(EncodeOffer(longest).size(), kMaxOfferEncoding);
    v1::Offer pb;
    ToProto(longest, &pb);
    EXPECT_TRUE(FromProto(pb)) << "the largest valid offer fits the protobuf size limit, format "
                               << int(format);
  }
}

TEST(Offer, TimeRules) {
  const Offer o = LiveVectorOffer();
  EXPECT_EQ(CheckTime(o, o.issued_unix), TimeCheck::kOk);
  EXPECT_EQ(CheckTime(o, o.issued_unix - kMaxClockSkewS), TimeCheck::kOk);
  EXPECT_EQ(CheckTime(o, o.issued_unix - kMaxClockSkewS - 1), TimeCheck::kFromTheFuture);
  EXPECT_EQ(CheckTime(o, o.expires_unix - 1), TimeCheck::kOk);
  EXPECT_EQ(CheckTime(o, o.expires_unix), TimeCheck::kExpired);
}

TEST(OfferWire, RoundTripAndBadFields) {
  for (const Offer& o : {LiveVectorOffer(), Format2VectorOffer(), RetiredVectorOffer()}) {
    v1::Offer pb;
    ToProto(o, &pb);
    std::string bytes;
    ASSERT_TRUE(pb.SerializeToString(&bytes));
    v1::Offer back;
    ASSERT_TRUE(back.ParseFromString(bytes));
    auto decoded = FromProto(back);
    ASSERT_TRUE(decoded) << decoded.error().message;
    EXPECT_EQ(*decoded, o);
    EXPECT_TRUE(VerifyOfferSignature(*decoded, OfferDigest(*decoded)));
  }
  v1::Offer pb;
  ToProto(LiveVectorOffer(), &pb);
  auto refuse = [&](std::function<void(v1::Offer&)> change, const char* what) {
    v1::Offer bad = pb;
    change(bad);
    EXPECT_FALSE(FromProto(bad)) << what;
  };
  refuse([](v1::Offer& o) { o.set_provider("short"); }, "short provider");
  refuse([](v1::Offer& o) { o.set_ledger_id(std::string(33, 'x')); }, "long ledger id");
  refuse([](v1::Offer& o) { o.set_signature(""); }, "no signature");
  refuse([](v1::Offer& o) { o.set_tunnel_key(std::string(31, 'k')); }, "short tunnel key");
  refuse([](v1::Offer& o) { o.mutable_endpoints(0)->set_port(65536); }, "port above 65535");
  refuse([](v1::Offer& o) { for (int i = 0; i < 3; ++i) *o.add_endpoints() = o.endpoints(0); },
         "five endpoints");
  refuse([](v1::Offer& o) { o.set_region(std::string(2000, 'a')); }, "oversized");
  refuse([](v1::Offer& o) { o.set_seq(0); }, "seq 0");

  // The codes callers branch on.
  v1::Offer big = pb;
  big.set_region(std::string(2000, 'a'));
  EXPECT_EQ(FromProto(big).error().code, Errc::kTooLarge);
  v1::Offer zero_seq = pb;
  zero_seq.set_seq(0);
  EXPECT_EQ(FromProto(zero_seq).error().code, Errc::kBadField);
  EXPECT_EQ(FromProto(zero_seq).error().message, "seq must be at least 1");
}

// Format 1 goes on the wire as before (no format, no modes); format 2 carries both. A reader
// takes an offer without them (an older node's) as format 1, SOCKS only.
TEST(OfferWire, FormatsOnTheWire) {
  v1::Offer pb1;
  ToProto(LiveVectorOffer(), &pb1);
  EXPECT_EQ(pb1.format(), 0u);
  EXPECT_EQ(pb1.modes(), 0u);
  v1::Offer pb2;
  ToProto(Format2VectorOffer(), &pb2);
  EXPECT_EQ(pb2.format(), 2u);
  EXPECT_EQ(pb2.modes(), 3u);

  // Format 1 written explicitly reads the same.
  v1::Offer explicit1 = pb1;
  explicit1.set_format(1);
  auto read1 = FromProto(explicit1);
  ASSERT_TRUE(read1) << read1.error().message;
  EXPECT_EQ(*read1, LiveVectorOffer());
  EXPECT_EQ(read1->modes, kModeSocks);

  const struct {
    uint32_t format, modes;
    const char* what;
  } refused[] = {
      // A relay cannot add modes that the format-1 signature does not cover.
      {0, 3, "modes on a format-1 offer"},
      {1, 1, "modes on a format-1 offer, even SOCKS"},
      {2, 0, "format 2 without modes"},
      {2, 7, "unknown mode bit"},
      {2, 0x101, "modes above a byte"},
      {3, 3, "format 3"},
  };
  for (const auto& c : refused) {
    v1::Offer bad = pb2;
    bad.set_format(c.format);
    bad.set_modes(c.modes);
    auto r = FromProto(bad);
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code, Errc::kBadField) << c.what;
    if (c.format == 3) {
      EXPECT_EQ(r.error().message, "format 3 is unknown (1 or 2)");
    }
  }

  // What a node of an older release forwards: the format-2 offer without fields 16 and 17. It
  // reads as format 1 and its signature fails.
  v1::Offer stripped = pb2;
  stripped.clear_format();
  stripped.clear_modes();
  auto old = FromProto(stripped);
  ASSERT_TRUE(old) << old.error().message;
  EXPECT_EQ(old->format, 1);
  EXPECT_FALSE(VerifyOfferSignature(*old, OfferDigest(*old)));
}

// The rules users and sellers write (flags, config keys, RPC fields), with their codes and the
// messages users see.
TEST(OfferRules, RegionPriceAndEndpoint) {
  EXPECT_TRUE(CheckRegion(""));
  EXPECT_TRUE(CheckRegion("eu-west"));
  EXPECT_EQ(CheckRegion(std::string(kMaxRegion + 1, 'a')).error().code, Errc::kTooLarge);
  EXPECT_EQ(CheckRegion("EU").error().code, Errc::kBadField);
  EXPECT_EQ(CheckRegion("EU").error().message, "only a-z, 0-9 and '-' (e.g. eu-west)");

  EXPECT_EQ(*PriceFromMicro(kMaxOfferPrice), Amount::FromMicro(kMaxOfferPrice));
  EXPECT_EQ(*PriceFromMicro(0), Amount::Zero());
  EXPECT_EQ(PriceFromMicro(kMaxOfferPrice + 1).error().code, Errc::kTooLarge);
  EXPECT_EQ(PriceFromMicro(kMaxOfferPrice + 1).error().message, "at most 1000000 credits");
  EXPECT_EQ(kMaxOfferPrice, payments::kMaxPricePerMb.micro()) << "one price cap";

  EXPECT_EQ(*ParsePrice("0.25"), Amount::FromMicro(250'000));
  EXPECT_EQ(ParsePrice("x").error().code, Errc::kBadField);
  EXPECT_EQ(ParsePrice("1000000.000001").error().code, Errc::kTooLarge);

  EXPECT_EQ(*ParseEndpoint("192.0.2.1:7443"), (Endpoint{"192.0.2.1", 7443}));
  EXPECT_EQ(ParseEndpoint("192.0.2.1:0").error().code, Errc::kBadField);
  EXPECT_EQ(ParseEndpoint("a_b:1").error().code, Errc::kBadField);
  EXPECT_EQ(ParseEndpoint(std::string(kMaxHost + 1, 'a') + ":1").error().code, Errc::kTooLarge);
}

// The price a seller sets on its running offer (NodeControl.SetPrice asks this rule).
TEST(OfferRules, SellerPrice) {
  const Amount cap = Amount::FromMicro(kMaxOfferPrice);
  const Amount over = Amount::FromMicro(kMaxOfferPrice + 1);
  EXPECT_TRUE(CheckSellerPrice(Amount::FromMicro(1), Amount::Zero()));
  EXPECT_TRUE(CheckSellerPrice(cap, cap));
  auto zero = CheckSellerPrice(Amount::Zero(), Amount::FromMicro(5));
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, Errc::kBadField);
  EXPECT_EQ(zero.error().message, "must be above zero (a seller's offer has a price)");
  for (auto [per_mb, per_minute] : {std::pair{over, Amount::Zero()}, std::pair{cap, over}}) {
    auto high = CheckSellerPrice(per_mb, per_minute);
    ASSERT_FALSE(high);
    EXPECT_EQ(high.error().code, Errc::kTooLarge);
    EXPECT_EQ(high.error().message, "at most 1000000 credits (1000000000000 micro)");
  }
}

// The offer filter (OfferBook::Query and the OfferBook service both ask Matches).
TEST(OfferRules, QueryMatches) {
  Offer o = LiveVectorOffer();  // 0.25 per MB, eu-west, 800 Mbit/s, expires 1'900'003'600
  const uint64_t now = o.issued_unix;
  EXPECT_TRUE(Matches(OfferQuery{}, o, now));
  EXPECT_FALSE(Matches(OfferQuery{}, o, o.expires_unix)) << "expired";
  EXPECT_FALSE(Matches(OfferQuery{}, RetiredVectorOffer(), now)) << "retired";

  OfferQuery q;
  q.max_price_per_mb = Amount::FromMicro(250'000);
  EXPECT_TRUE(Matches(q, o, now));
  q.max_price_per_mb = Amount::FromMicro(249'999);
  EXPECT_FALSE(Matches(q, o, now));

  q = OfferQuery{};
  q.region = "eu-west";
  EXPECT_TRUE(Matches(q, o, now));
  q.region = "us-east";
  EXPECT_FALSE(Matches(q, o, now));

  q = OfferQuery{};
  q.min_capacity_mbps = 800;
  EXPECT_TRUE(Matches(q, o, now));
  q.min_capacity_mbps = 801;
  EXPECT_FALSE(Matches(q, o, now));

  // Modes: every bit asked must be served; a format-1 offer serves SOCKS only.
  const Offer both = Format2VectorOffer();
  Offer full_only = Format2VectorOffer();
  full_only.modes = kModeFullTunnel;
  q = OfferQuery{};
  EXPECT_TRUE(Matches(q, o, now));
  EXPECT_TRUE(Matches(q, both, now));
  EXPECT_TRUE(Matches(q, full_only, now));
  q.required_modes = kModeSocks;
  EXPECT_TRUE(Matches(q, o, now));
  EXPECT_TRUE(Matches(q, both, now));
  EXPECT_FALSE(Matches(q, full_only, now));
  q.required_modes = kModeFullTunnel;
  EXPECT_FALSE(Matches(q, o, now));
  EXPECT_TRUE(Matches(q, both, now));
  EXPECT_TRUE(Matches(q, full_only, now));
  q.required_modes = kModeSocks | kModeFullTunnel;
  EXPECT_FALSE(Matches(q, o, now));
  EXPECT_TRUE(Matches(q, both, now));
  EXPECT_FALSE(Matches(q, full_only, now));
}

TEST(OfferWire, DigestAndKeyPacking) {
  std::vector<DigestEntry> entries = {{1, 2}, {0xffffffffffffffffull, 7}, {0x0102030405060708, 9}};
  auto packed = PackDigest(entries);
  EXPECT_EQ(packed.size(), 48u);
  EXPECT_EQ(static_cast<uint8_t>(packed[32]), 0x01);  // big-endian key of the third entry
  auto back = UnpackDigest(packed);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, entries);
  EXPECT_FALSE(UnpackDigest(packed.substr(0, 47)));
  EXPECT_FALSE(UnpackDigest(std::string(16 * (kMaxDigestEntries + 1), '\0')));
  std::vector<OfferKey> keys = {5, 6, 0x8000000000000000ull};
  auto keys_back = UnpackKeys(PackKeys(keys));
  ASSERT_TRUE(keys_back);
  EXPECT_EQ(*keys_back, keys);
  EXPECT_FALSE(UnpackKeys(std::string(7, '\0')));
  EXPECT_FALSE(UnpackKeys(std::string(8 * (kMaxDigestEntries + 1), '\0')));
}

}  // namespace
}  // namespace dvpn::marketplace
