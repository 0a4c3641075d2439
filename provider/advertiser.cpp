#include "provider/advertiser.h"

#include <algorithm>

#include "common/log.h"

namespace dvpn::node {

OfferAdvertiser::OfferAdvertiser(OfferTemplate offer, const payments::PrivateKey& key,
                                 PublishFn publish)
    : template_(std::move(offer)), key_(key), publish_(std::move(publish)) {}

std::expected<void, std::string> OfferAdvertiser::Check(const OfferTemplate& t,
                                                        const payments::PrivateKey& key) {
  OfferAdvertiser probe(t, key, nullptr);
  auto offer = probe.Sign(false, 1'000'000'000'000);
  return marketplace::CheckFields(offer);
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
  }
  marketplace::SignOffer(o, key_);
  return o;
}

std::expected<marketplace::Offer, std::string> OfferAdvertiser::PublishLive(uint64_t now_unix_ms) {
  if (source_) {
    auto resolved = ResolveEndpoints(source_->configured, source_->allow_loopback, source_->lookup);
    if (!resolved) {
      Logger("dvpn-node")->warn("offer endpoints: {}; keeping {}", resolved.error(),
                                Describe(template_.endpoints));
    } else if (*resolved != template_.endpoints) {
      Logger("dvpn-node")->info("offer endpoints: {} now resolve to {} (were {})",
                                Describe(source_->configured), Describe(*resolved),
                                Describe(template_.endpoints));
      template_.endpoints = std::move(*resolved);
    }
  }
  auto offer = Sign(false, now_unix_ms);
  if (auto ok = publish_(offer); !ok) return std::unexpected(ok.error());
  last_ = offer;
  return offer;
}

std::expected<marketplace::Offer, std::string> OfferAdvertiser::Retire(uint64_t now_unix_ms) {
  auto offer = Sign(true, now_unix_ms);
  if (auto ok = publish_(offer); !ok) return std::unexpected(ok.error());
  last_ = offer;
  return offer;
}

}  // namespace dvpn::node
