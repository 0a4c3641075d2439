#pragma once
// A provider's signed offer (docs/protocol.md §6): the byte-exact encoding its signature
// covers, the field rules every reader applies, signing and verification. No protobuf here:
// marketplace/wire.h converts to and from dvpn.v1.Offer.
//
// Pure functions and value types; thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/amount.h"
#include "common/bytes.h"
#include "common/result.h"
#include "marketplace/errc.h"
#include "payments/keys.h"
#include "payments/metering.h"
#include "payments/signed_messages.h"

namespace dvpn::marketplace {

// Limits of protocol.md §6.
inline constexpr size_t kMaxOfferEncoding = 1400;
inline constexpr size_t kMaxRegion = 32;
inline constexpr size_t kMaxEndpoints = 4;
inline constexpr size_t kMaxHost = 253;
inline constexpr uint64_t kMaxOfferLifetimeS = 86400;
inline constexpr uint64_t kMaxClockSkewS = 120;
// The modes a seller serves (the offer's `modes`, format 2): bit 0 SOCKS (TCP streams), bit 1
// full tunnel (IP packets, docs/full-tunnel.md). A format-1 offer means kModeSocks.
inline constexpr uint8_t kModeSocks = 1;
inline constexpr uint8_t kModeFullTunnel = 2;
inline constexpr uint8_t kKnownModes = kModeSocks | kModeFullTunnel;
// micro-credits: the payment terms' own bound (payments/metering.h, protocol.md §5)
inline constexpr uint64_t kMaxOfferPrice = payments::kMaxPricePerMb.micro();
static_assert(payments::kMaxPricePerMinute.micro() == kMaxOfferPrice);

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  bool operator==(const Endpoint&) const = default;
  std::string ToString() const;  // "host:port", IPv6 hosts in brackets
};

// An endpoint host as protocol.md §6 allows it: 1..253 bytes of a-z A-Z 0-9 . - :
bool ValidHost(std::string_view host);

// The rules of protocol.md §6 for what users and sellers write, in one place (the offer's own
// check, CheckFields, and every flag, config key and RPC field use them). Error messages are one
// line for the user.
// Region: at most kMaxRegion bytes (kTooLarge) of a-z, 0-9 and '-' (kBadField); "" is no region.
[[nodiscard]] Result<void, Errc> CheckRegion(std::string_view region);
// A price of micro-credits as an offer or a filter may carry it: at most kMaxOfferPrice
// (kTooLarge "at most 1000000 credits").
[[nodiscard]] Result<Amount, Errc> PriceFromMicro(uint64_t micro);
// A price in credits ("0.25"): kBadField when it is not an amount, then PriceFromMicro.
[[nodiscard]] Result<Amount, Errc> ParsePrice(std::string_view text);
// The price a seller sets on its running offer: per MB above zero (kBadField "must be above
// zero (a seller's offer has a price)"), both at most kMaxOfferPrice (kTooLarge "at most
// 1000000 credits (1000000000000 micro)"). The caller names the field.
[[nodiscard]] Result<void, Errc> CheckSellerPrice(Amount per_mb, Amount per_minute);
// Offer format 1 or 2 (kBadField "format N is unknown (1 or 2)").
[[nodiscard]] Result<void, Errc> CheckFormat(uint32_t format);
// A set of modes as an offer (format 2) carries it: not 0, no bit but kKnownModes (kBadField;
// the caller names the field). A filter's required modes follow it too, 0 there meaning any.
[[nodiscard]] Result<void, Errc> CheckModes(uint32_t modes);
// The format a seller signs for `modes`: 1 when it serves SOCKS only (every release reads it),
// otherwise 2.
uint8_t FormatFor(uint8_t modes);
// A peer or offer endpoint HOST:PORT: host by ValidHost (kBadField; kTooLarge above kMaxHost
// bytes), port 1..65535 (kBadField).
[[nodiscard]] Result<Endpoint, Errc> ParseEndpoint(std::string_view text);

// Names an offer's slot in digests: 8 bytes of SHA-256(tag || provider || offer_id).
using OfferKey = uint64_t;

struct Offer {
  payments::LedgerId ledger;
  ByteArray<32> provider{};  // BIP-340 x-only public key
  uint32_t offer_id = 0;
  uint64_t seq = 0;
  uint64_t issued_unix = 0;
  uint64_t expires_unix = 0;
  bool retired = false;
  ByteArray<32> tunnel_key{};
  Amount price_per_mb;
  Amount price_per_minute;
  uint32_t capacity_mbps = 0;
  uint32_t max_sessions = 0;
  std::string region;
  std::vector<Endpoint> endpoints;
  // Format 1 (no modes on the wire: SOCKS only, so modes is kModeSocks) or 2 (modes signed).
  uint8_t format = 1;
  uint8_t modes = kModeSocks;
  payments::Signature signature{};

  bool operator==(const Offer&) const = default;
};

// The encoding the signature covers (protocol.md §6), in the offer's format (tag
// "dvpn.v1.Offer" or "dvpn.v1.Offer2"; format 2 appends modes). Call only on an offer that
// passed CheckFields (it asserts the length limits).
std::vector<uint8_t> EncodeOffer(const Offer& offer);
// SHA-256 of EncodeOffer: what is signed, and the name of this exact version.
Hash32 OfferDigest(const Offer& offer);
OfferKey OfferKeyOf(const ByteArray<32>& provider, uint32_t offer_id);
inline OfferKey OfferKeyOf(const Offer& o) { return OfferKeyOf(o.provider, o.offer_id); }

// The field rules of protocol.md §6 that need no clock and no signature check: format 1 or 2,
// modes (kModeSocks in format 1, CheckModes in format 2), sizes, characters, seq >= 1,
// lifetime, prices, endpoints (none when retired, 1..4 otherwise).
// Error kBadField (kTooLarge for a price above kMaxOfferPrice); the message names the field.
// Whether `provider` is a curve point is left to the signature check (a point decompression
// costs as much as a small part of a verification).
[[nodiscard]] Result<void, Errc> CheckFields(const Offer& offer);

// Why an offer is not usable at `now_unix` (expired, or issued too far in the future).
enum class TimeCheck { kOk, kExpired, kFromTheFuture };
TimeCheck CheckTime(const Offer& offer, uint64_t now_unix);

// What a client asks of the offers it is shown (OfferBook::Query, the OfferBook service's filter).
struct OfferQuery {
  std::optional<Amount> max_price_per_mb;  // none: any price
  std::string region;                      // empty: any
  uint32_t min_capacity_mbps = 0;
  uint8_t required_modes = 0;  // bits the offer's modes must all have; 0: any
};

// The offer filter, in one place: `offer` is live at `now_unix` (not retired, not expired) and
// within the query's price, region, capacity and modes.
bool Matches(const OfferQuery& query, const Offer& offer, uint64_t now_unix);

// Signs `offer` in place with `key` (sets provider to key's public key first).
void SignOffer(Offer& offer, const payments::PrivateKey& key);
// Deterministic signature for test vectors.
void SignOfferWithAux(Offer& offer, const payments::PrivateKey& key, const Hash32& aux);
// True when the signature is `provider`'s over OfferDigest. Call after CheckFields.
bool VerifyOfferSignature(const Offer& offer, const Hash32& digest);

}  // namespace dvpn::marketplace
