#pragma once
// The offer book (docs/marketplace.md §2): every offer a node holds, keyed by (provider,
// offer_id), newest seq kept, bounded in total and per provider (§1 "Memory bounds"), with the
// queries clients use and the digest anti-entropy exchanges. Retired offers are kept as
// tombstones until they expire (so an older version cannot come back) but never shown.
//
// It checks nothing about signatures or clocks: callers insert offers that passed validation.
// Not thread-safe: one owner (the gossip node's thread) uses it.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "marketplace/offer.h"

namespace dvpn::marketplace {

struct OfferBookLimits {
  size_t max_offers = 20000;
  size_t max_offers_per_provider = 4;
};

struct OfferChange {
  enum class Kind { kAdded, kUpdated, kRemoved };
  Kind kind;
  std::shared_ptr<const Offer> offer;  // for kRemoved: the version that was shown
};

struct DigestEntry {
  OfferKey key = 0;
  uint64_t seq = 0;
  auto operator<=>(const DigestEntry&) const = default;
};

class OfferBook {
 public:
  enum class InsertResult {
    kAdded,     // a slot not held before
    kReplaced,  // a newer version of a slot held
    kStale,     // the held version is as new or newer: nothing changed
    kFull,      // the book is full of offers that outlive this one: refused
  };

  explicit OfferBook(OfferBookLimits limits = {});

  // The seq held for `key`, 0 when none.
  uint64_t SeqOf(OfferKey key) const;
  std::shared_ptr<const Offer> Find(OfferKey key) const;

  // Stores `offer` (validated by the caller) unless a version as new is held; evicts to stay
  // within the limits. Reports changes to the listener.
  InsertResult Insert(std::shared_ptr<const Offer> offer);

  // Drops every offer with expires_unix <= now_unix. Returns how many.
  size_t ExpireUpTo(uint64_t now_unix);

  // The offers that Matches(q, offer, now_unix) (offer.h), in no particular order.
  std::vector<std::shared_ptr<const Offer>> Query(const OfferQuery& q, uint64_t now_unix) const;

  // Every slot held (tombstones included), sorted by key.
  std::vector<DigestEntry> Digest() const;

  size_t size() const { return by_key_.size(); }
  size_t live_count() const { return by_key_.size() - retired_count_; }

  void SetListener(std::function<void(const OfferChange&)> listener) {
    listener_ = std::move(listener);
  }

 private:
  // Eviction order: retired before live, then soonest expiry first, then key.
  using EvictionKey = std::tuple<bool, uint64_t, OfferKey>;
  static EvictionKey EvictionKeyOf(const Offer& o, OfferKey key) {
    return {!o.retired, o.expires_unix, key};
  }
  void Remove(OfferKey key, bool notify);
  void Notify(OfferChange::Kind kind, std::shared_ptr<const Offer> offer);

  OfferBookLimits limits_;
  std::unordered_map<OfferKey, std::shared_ptr<const Offer>> by_key_;
  std::set<EvictionKey> eviction_;
  std::map<ByteArray<32>, std::vector<OfferKey>> by_provider_;
  size_t retired_count_ = 0;
  std::function<void(const OfferChange&)> listener_;
};

}  // namespace dvpn::marketplace
