#include "marketplace/offer.h"

#include <cassert>
#include <cstdio>

#include "common/host_port.h"

namespace dvpn::marketplace {
namespace {

bool HostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == ':';
}

}  // namespace

bool ValidHost(std::string_view host) {
  if (host.empty() || host.size() > kMaxHost) return false;
  for (char c : host)
    if (!HostChar(c)) return false;
  return true;
}

std::string Endpoint::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::vector<uint8_t> EncodeOffer(const Offer& o) {
  assert(o.region.size() <= kMaxRegion && o.endpoints.size() <= kMaxEndpoints);
  assert(o.format == 1 || o.format == 2);
  Encoder enc;
  enc.Tag(o.format == 1 ? "dvpn.v1.Offer" : "dvpn.v1.Offer2")
      .Raw(o.ledger.bytes)
      .Raw(o.provider)
      .U32(o.offer_id)
      .U64(o.seq)
      .U64(o.issued_unix)
      .U64(o.expires_unix)
      .U8(o.retired ? 1 : 0)
      .Raw(o.tunnel_key)
      .U64(o.price_per_mb.micro())
      .U64(o.price_per_minute.micro())
      .U32(o.capacity_mbps)
      .U32(o.max_sessions)
      .Bytes16(AsBytes(o.region))
      .U8(static_cast<uint8_t>(o.endpoints.size()));
  for (const auto& e : o.endpoints) {
    assert(e.host.size() <= kMaxHost);
    enc.Bytes16(AsBytes(e.host)).U16(e.port);
  }
  if (o.format == 2) enc.U8(o.modes);
  return enc.bytes();
}

Hash32 OfferDigest(const Offer& offer) { return payments::Sha256(EncodeOffer(offer)); }

OfferKey OfferKeyOf(const ByteArray<32>& provider, uint32_t offer_id) {
  Encoder enc;
  enc.Tag("dvpn.v1.OfferKey").Raw(provider).U32(offer_id);
  const Hash32 h = payments::Sha256(enc.bytes());
  OfferKey key = 0;
  for (int i = 0; i < 8; ++i) key = (key << 8) | h[i];
  return key;
}

Result<void, Errc> CheckRegion(std::string_view region) {
  if (region.size() > kMaxRegion) {
    return Fail(Errc::kTooLarge, "at most " + std::to_string(kMaxRegion) + " bytes");
  }
  for (char c : region) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return Fail(Errc::kBadField, "only a-z, 0-9 and '-' (e.g. eu-west)");
    }
  }
  return {};
}

Result<Amount, Errc> PriceFromMicro(uint64_t micro) {
  if (micro > kMaxOfferPrice) return Fail(Errc::kTooLarge, "at most 1000000 credits");
  return Amount::FromMicro(micro);
}

Result<Amount, Errc> ParsePrice(std::string_view text) {
  auto a = Amount::Parse(std::string(text));
  if (!a) return Fail(Errc::kBadField, "not an amount of credits: \"" + std::string(text) + "\"");
  return PriceFromMicro(a->micro());
}

Result<void, Errc> CheckSellerPrice(Amount per_mb, Amount per_minute) {
  if (per_mb.micro() == 0) {
    return Fail(Errc::kBadField, "must be above zero (a seller's offer has a price)");
  }
  if (per_mb.micro() > kMaxOfferPrice || per_minute.micro() > kMaxOfferPrice) {
    return Fail(Errc::kTooLarge, "at most 1000000 credits (1000000000000 micro)");
  }
  return {};
}

Result<void, Errc> CheckFormat(uint32_t format) {
  if (format != 1 && format != 2) {
    return Fail(Errc::kBadField, "format " + std::to_string(format) + " is unknown (1 or 2)");
  }
  return {};
}

Result<void, Errc> CheckModes(uint32_t modes) {
  if (modes == 0) return Fail(Errc::kBadField, "none set (1 SOCKS, 2 full tunnel)");
  if ((modes & ~uint32_t{kKnownModes}) != 0) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%#x", modes);
    return Fail(Errc::kBadField,
                std::string("unknown bit in ") + hex + " (known: 1 SOCKS, 2 full tunnel)");
  }
  return {};
}

uint8_t FormatFor(uint8_t modes) { return modes == kModeSocks ? 1 : 2; }

Result<Endpoint, Errc> ParseEndpoint(std::string_view text) {
  auto hp = ParseHostPort(text, false);
  if (!hp) return Fail(Errc::kBadField, std::move(hp.error().message));
  if (hp->host.size() > kMaxHost) {
    return Fail(Errc::kTooLarge, "host longer than " + std::to_string(kMaxHost) + " bytes");
  }
  if (!ValidHost(hp->host)) {
    return Fail(Errc::kBadField,
                "host \"" + hp->host +
                    "\": only letters, digits, '.', '-' and ':' (a name or an IP)");
  }
  return Endpoint{hp->host, hp->port};
}

Result<void, Errc> CheckFields(const Offer& o) {
  auto fail = [](std::string why) { return Fail(Errc::kBadField, std::move(why)); };
  if (auto ok = CheckFormat(o.format); !ok) return ok;
  if (o.format == 1 && o.modes != kModeSocks) {
    return fail("modes: a format-1 offer serves SOCKS only (modes 1)");
  }
  if (auto ok = CheckModes(o.modes); !ok) return fail("modes: " + ok.error().message);
  if (o.seq == 0) return fail("seq must be at least 1");
  if (o.expires_unix <= o.issued_unix) return fail("expires_unix must be after issued_unix");
  if (o.expires_unix - o.issued_unix > kMaxOfferLifetimeS)
    return fail("lifetime longer than 24 hours");
  if (auto ok = CheckRegion(o.region); !ok) return fail("region: " + ok.error().message);
  if (o.price_per_mb.micro() > kMaxOfferPrice)
    return Fail(Errc::kTooLarge, "price_per_mb above 10^12");
  if (o.price_per_minute.micro() > kMaxOfferPrice)
    return Fail(Errc::kTooLarge, "price_per_minute above 10^12");
  if (o.retired) {
    if (!o.endpoints.empty()) return fail("a retired offer has no endpoints");
    return {};
  }
  if (o.endpoints.empty() || o.endpoints.size() > kMaxEndpoints)
    return fail("an offer has 1 to 4 endpoints");
  for (const auto& e : o.endpoints) {
    if (!ValidHost(e.host))
      return fail("endpoint host: 1 to 253 bytes of a-z A-Z 0-9 . - : only");
    if (e.port == 0) return fail("endpoint port 0");
  }
  if (o.tunnel_key == ByteArray<32>{}) return fail("tunnel_key is all zero");
  return {};
}

TimeCheck CheckTime(const Offer& o, uint64_t now_unix) {
  if (o.expires_unix <= now_unix) return TimeCheck::kExpired;
  if (o.issued_unix > now_unix + kMaxClockSkewS) return TimeCheck::kFromTheFuture;
  return TimeCheck::kOk;
}

bool Matches(const OfferQuery& q, const Offer& o, uint64_t now_unix) {
  if (o.retired || o.expires_unix <= now_unix) return false;
  if (q.max_price_per_mb && o.price_per_mb > *q.max_price_per_mb) return false;
  if (!q.region.empty() && o.region != q.region) return false;
  if ((o.modes & q.required_modes) != q.required_modes) return false;
  return o.capacity_mbps >= q.min_capacity_mbps;
}

void SignOffer(Offer& offer, const payments::PrivateKey& key) {
  offer.provider = key.public_key().bytes();
  offer.signature = key.Sign(OfferDigest(offer));
}

void SignOfferWithAux(Offer& offer, const payments::PrivateKey& key, const Hash32& aux) {
  offer.provider = key.public_key().bytes();
  offer.signature = key.SignWithAux(OfferDigest(offer), aux);
}

bool VerifyOfferSignature(const Offer& offer, const Hash32& digest) {
  auto key = payments::PublicKey::Parse(offer.provider);
  return key && key->Verify(digest, offer.signature);
}

}  // namespace dvpn::marketplace
