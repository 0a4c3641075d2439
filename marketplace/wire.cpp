#include "marketplace/wire.h"

namespace dvpn::marketplace {
namespace {

static_assert(kModeSocks == v1::OFFER_MODE_SOCKS && kModeFullTunnel == v1::OFFER_MODE_FULL_TUNNEL,
              "one meaning of the mode bits");

template <size_t N>
bool CopyBytes(const std::string& in, ByteArray<N>& out) {
  if (in.size() != N) return false;
  std::copy(in.begin(), in.end(), out.begin());
  return true;
}

std::string Str(ByteSpan b) { return std::string(b.begin(), b.end()); }

void PutU64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

}  // namespace

void ToProto(const Offer& o, v1::Offer* out) {
  out->set_ledger_id(Str(o.ledger.bytes));
  out->set_provider(Str(o.provider));
  out->set_offer_id(o.offer_id);
  out->set_seq(o.seq);
  out->set_issued_unix(o.issued_unix);
  out->set_expires_unix(o.expires_unix);
  out->set_retired(o.retired);
  out->set_tunnel_key(Str(o.tunnel_key));
  out->set_price_per_mb(o.price_per_mb.micro());
  out->set_price_per_minute(o.price_per_minute.micro());
  out->set_capacity_mbps(o.capacity_mbps);
  out->set_max_sessions(o.max_sessions);
  out->set_region(o.region);
  out->clear_endpoints();
  for (const auto& e : o.endpoints) {
    auto* pe = out->add_endpoints();
    pe->set_host(e.host);
    pe->set_port(e.port);
  }
  // Format 1 carries neither field: its protobuf bytes stay those of older releases.
  if (o.format == 1) {
    out->clear_format();
    out->clear_modes();
  } else {
    out->set_format(o.format);
    out->set_modes(o.modes);
  }
  out->set_signature(Str(o.signature));
}

Result<Offer, Errc> FromProto(const v1::Offer& in) {
  auto fail = [](std::string why) { return Fail(Errc::kBadField, std::move(why)); };
  if (in.ByteSizeLong() > kMaxOfferEncoding) {
    return Fail(Errc::kTooLarge, "offer larger than 1400 bytes");
  }
  Offer o;
  if (!CopyBytes(in.ledger_id(), o.ledger.bytes)) return fail("ledger_id is not 32 bytes");
  if (!CopyBytes(in.provider(), o.provider)) return fail("provider is not 32 bytes");
  if (!CopyBytes(in.signature(), o.signature)) return fail("signature is not 64 bytes");
  if (in.retired() && in.tunnel_key().empty()) {
    o.tunnel_key = {};
  } else if (!CopyBytes(in.tunnel_key(), o.tunnel_key)) {
    return fail("tunnel_key is not 32 bytes");
  }
  o.offer_id = in.offer_id();
  o.seq = in.seq();
  o.issued_unix = in.issued_unix();
  o.expires_unix = in.expires_unix();
  o.retired = in.retired();
  o.price_per_mb = Amount::FromMicro(in.price_per_mb());
  o.price_per_minute = Amount::FromMicro(in.price_per_minute());
  o.capacity_mbps = in.capacity_mbps();
  o.max_sessions = in.max_sessions();
  o.region = in.region();
  if (in.endpoints_size() > static_cast<int>(kMaxEndpoints)) return fail("more than 4 endpoints");
  for (const auto& e : in.endpoints()) {
    if (e.port() > 65535) return fail("endpoint port above 65535");
    o.endpoints.push_back(Endpoint{e.host(), static_cast<uint16_t>(e.port())});
  }
  const uint32_t format = in.format() == 0 ? 1 : in.format();
  if (auto ok = CheckFormat(format); !ok) return std::unexpected(std::move(ok.error()));
  o.format = static_cast<uint8_t>(format);
  if (format == 1) {
    // The format-1 signature does not cover modes: a relay must not be able to add them.
    if (in.modes() != 0) return fail("modes is set on a format-1 offer");
    o.modes = kModeSocks;
  } else {
    if (auto ok = CheckModes(in.modes()); !ok) return fail("modes: " + ok.error().message);
    o.modes = static_cast<uint8_t>(in.modes());
  }
  if (auto ok = CheckFields(o); !ok) return std::unexpected(std::move(ok.error()));
  return o;
}

std::string PackDigest(std::span<const DigestEntry> entries) {
  std::string out;
  out.reserve(entries.size() * 16);
  for (const auto& e : entries) {
    PutU64(out, e.key);
    PutU64(out, e.seq);
  }
  return out;
}

std::optional<std::vector<DigestEntry>> UnpackDigest(const std::string& bytes) {
  if (bytes.size() % 16 != 0 || bytes.size() / 16 > kMaxDigestEntries) return std::nullopt;
  std::vector<DigestEntry> out(bytes.size() / 16);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].key = GetU64(bytes.data() + 16 * i);
    out[i].seq = GetU64(bytes.data() + 16 * i + 8);
  }
  return out;
}

std::string PackKeys(std::span<const OfferKey> keys) {
  std::string out;
  out.reserve(keys.size() * 8);
  for (OfferKey k : keys) PutU64(out, k);
  return out;
}

std::optional<std::vector<OfferKey>> UnpackKeys(const std::string& bytes) {
  if (bytes.size() % 8 != 0 || bytes.size() / 8 > kMaxDigestEntries) return std::nullopt;
  std::vector<OfferKey> out(bytes.size() / 8);
  for (size_t i = 0; i < out.size(); ++i) out[i] = GetU64(bytes.data() + 8 * i);
  return out;
}

std::vector<uint8_t> Serialize(const v1::GossipMessage& m) {
  std::vector<uint8_t> out(m.ByteSizeLong());
  m.SerializeToArray(out.data(), static_cast<int>(out.size()));
  return out;
}

}  // namespace dvpn::marketplace
