#pragma once
// Conversions between the domain Offer and dvpn.v1.Offer, and the helpers that build the
// gossip messages of docs/protocol.md §7 (packed digest entries and pull keys).
// Pure functions; thread-safe.

#include <span>
#include <string>
#include <vector>

#include "dvpn/v1/marketplace.pb.h"
#include "marketplace/offer.h"
#include "marketplace/offer_book.h"

namespace dvpn::marketplace {

inline constexpr size_t kMaxGossipFrame = 65536;
inline constexpr size_t kMaxOffersPerMessage = 32;
inline constexpr size_t kMaxDigestEntries = 2048;  // per Digest part, and keys per Pull
inline constexpr size_t kMaxPeersPerMessage = 16;
inline constexpr uint32_t kGossipVersion = 1;

void ToProto(const Offer& offer, v1::Offer* out);
// Fails (the message names the field) with kTooLarge for a protobuf form larger than
// kMaxOfferEncoding, kBadField for wrong byte lengths, a port above 65535 or more than 4
// endpoints, an unknown format, modes on a format-1 offer (format 0 or absent is 1, read as
// SOCKS only) or bad modes on a format-2 one; then CheckFields' rules.
[[nodiscard]] Result<Offer, Errc> FromProto(const v1::Offer& in);

// Digest entries and pull keys packed as protocol.md §7 says. Unpacking fails on a length
// that is not a multiple of the entry size or more than kMaxDigestEntries entries.
std::string PackDigest(std::span<const DigestEntry> entries);
std::optional<std::vector<DigestEntry>> UnpackDigest(const std::string& bytes);
std::string PackKeys(std::span<const OfferKey> keys);
std::optional<std::vector<OfferKey>> UnpackKeys(const std::string& bytes);

// The serialized GossipMessage (the payload of one frame).
std::vector<uint8_t> Serialize(const v1::GossipMessage& m);

}  // namespace dvpn::marketplace
