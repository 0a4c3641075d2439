#pragma once
// OfferAdvertiser: the provider side of dvpn-node. It turns what the provider sells (its flags)
// into signed offers (docs/protocol.md §6) for one slot (provider key, offer_id), publishes the
// first version at start, a fresh version before the previous one expires, and a retired version
// at shutdown. docs/node-cli.md explains the choice of seq.
//
// seq: the wall clock in milliseconds, and always at least one more than the last seq this
// object signed. Nothing is stored: a restarted node signs a larger seq than before as long as
// the wall clock did not go back by more than the time the node was down.
//
// Single-threaded: the node's main thread drives it. Publishing goes through `publish`, which
// the caller bounds (the gossip transport's future with a deadline).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/amount.h"
#include "marketplace/offer.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"
#include "provider/endpoints.h"
#include "provider/errc.h"

namespace dvpn::node {

// The fields of the provider's offer that do not change from one version to the next.
struct OfferTemplate {
  payments::LedgerId ledger;
  uint32_t offer_id = 1;
  ByteArray<32> tunnel_key{};
  Amount price_per_mb;
  Amount price_per_minute;
  uint32_t capacity_mbps = 0;
  uint32_t max_sessions = 0;
  std::string region;
  std::vector<marketplace::Endpoint> endpoints;  // addresses: what the offer carries
  uint64_t lifetime_s = 3600;  // each version expires this long after it is issued
  // What the seller serves. SOCKS only: live versions in format 1, as every release reads
  // them; anything else (full tunnel): format 2 (protocol.md §6). Retired versions are format 1.
  uint8_t modes = marketplace::kModeSocks;
};

class OfferAdvertiser {
 public:
  // The gossip node's answer (marketplace::GossipTransport::Publish, bounded by the caller).
  using PublishFn =
      std::function<Result<void, marketplace::Errc>(const marketplace::Offer&)>;

  // `key` must outlive the advertiser.
  OfferAdvertiser(OfferTemplate offer, const payments::PrivateKey& key, PublishFn publish);

  // Checks a live version of `offer` with the readers' field rules (CheckFields). Error
  // kOfferRefused, CheckFields' message (it names the field); nothing is published.
  [[nodiscard]] static Result<void, Errc> Check(const OfferTemplate& offer,
                                                const payments::PrivateKey& key);

  // Signs and publishes a new live version issued at `now_unix_ms`. Returns it, or kOfferRefused
  // with the node's reason (nothing changes then: the next call signs a larger seq anyway).
  Result<marketplace::Offer, Errc> PublishLive(uint64_t now_unix_ms);
  // Signs and publishes the retired version of the slot (protocol.md §6 "Retiring"), valid for
  // one lifetime so it outlives every live version signed before.
  Result<marketplace::Offer, Errc> Retire(uint64_t now_unix_ms);

  // The price of the versions signed from now on (the next PublishLive advertises it).
  void SetPrice(Amount per_mb, Amount per_minute) {
    template_.price_per_mb = per_mb;
    template_.price_per_minute = per_minute;
  }
  const OfferTemplate& offer_template() const { return template_; }

  // Endpoints written with names (endpoints.h): each PublishLive resolves `configured` again
  // first and signs the addresses found; when that fails it keeps the last addresses (a warning
  // in the log) rather than stop advertising.
  struct EndpointSource {
    std::vector<marketplace::Endpoint> configured;
    bool allow_loopback = false;
    HostLookup lookup;
  };
  void SetEndpointSource(EndpointSource source) { source_ = std::move(source); }

  // The last version published, if any.
  const std::optional<marketplace::Offer>& last() const { return last_; }

 private:
  marketplace::Offer Sign(bool retired, uint64_t now_unix_ms);

  OfferTemplate template_;
  const payments::PrivateKey& key_;
  PublishFn publish_;
  std::optional<EndpointSource> source_;
  uint64_t last_seq_ = 0;
  std::optional<marketplace::Offer> last_;
};

}  // namespace dvpn::node
