#include "provider/advertiser.h"

#include <algorithm>

#include "common/log.h"

namespace dvpn::node {

OfferAdvertiser::OfferAdvertiser(OfferTemplate offer, const payments::PrivateKey& key,
                                 PublishFn publish)
    : template_(std::move(offer)), key_(key), publish_(std::move(publish)) {}

Result<void, Errc> OfferAdvertiser::Check(const OfferTemplate& t, const payments::PrivateKey& key) {
  OfferAdvertiser probe(t, key, nullptr);
  auto offer = probe.Sign(false, 1'000'000'000'000);
  if (auto ok = marketplace::CheckFields(offer); !ok) {
    return Fail(Errc::kOfferRefused, std::move(ok.error().message));
  }
  return {};
}

marketplace::Offer OfferAdvertiser::Sign(bool retired, uint64_t now_unix_ms) {
  last_seq_ = std::max(now_unix_ms, last_seq_ + 1);
  marketplace::Offer o;
  o.ledger = template_.ledger;
  o.offer_id = template_.offer_id;
  o.seq = last_seq_;
  o.issued_unix = now_unix_ms / 1000;
  o.expires_unix = o.issued_unix + template_.lifetime_s;
  o.retired = retired;
  if (!retired) {
    o.tunnel_key = template_.tunnel_key;
    o.price_per_mb = template_.price_per_mb;
    o.price_per_minute = template_.price_per_minute;
    o.capacity_mbps = template_.capacity_mbps;
    o.max_sessions = template_.max_sessions;
    o.region = template_.region;
    o.endpoints = template_.endpoints;
    // A retirement stays format 1 so that nodes of every release take it.
    o.format = marketplace::FormatFor(template_.modes);
    o.modes = template_.modes;
  }
  marketplace::SignOffer(o, key_);
  return o;
}

Result<marketplace::Offer, Errc> OfferAdvertiser::PublishLive(uint64_t now_unix_ms) {
  if (source_) {
    auto resolved = ResolveEndpoints(source_->configured, source_->allow_loopback, source_->lookup);
    if (!resolved) {
      Logger("dvpn-node")->warn("offer endpoints: {}; keeping {}", resolved.error().message,
                                Describe(template_.endpoints));
    } else if (*resolved != template_.endpoints) {
      Logger("dvpn-node")->info("offer endpoints: {} now resolve to {} (were {})",
                                Describe(source_->configured), Describe(*resolved),
                                Describe(template_.endpoints));
      template_.endpoints = std::move(*resolved);
    }
  }
  auto offer = Sign(false, now_unix_ms);
  if (auto ok = publish_(offer); !ok) {
    return Fail(Errc::kOfferRefused, std::move(ok.error().message));
  }
  last_ = offer;
  return offer;
}

Result<marketplace::Offer, Errc> OfferAdvertiser::Retire(uint64_t now_unix_ms) {
  auto offer = Sign(true, now_unix_ms);
  if (auto ok = publish_(offer); !ok) {
    return Fail(Errc::kOfferRefused, std::move(ok.error().message));
  }
  last_ = offer;
  return offer;
}

}  // namespace dvpn::node
