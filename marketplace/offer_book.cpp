#include "marketplace/offer_book.h"

#include <algorithm>

namespace dvpn::marketplace {

OfferBook::OfferBook(OfferBookLimits limits) : limits_(limits) {}

uint64_t OfferBook::SeqOf(OfferKey key) const {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? 0 : it->second->seq;
}

std::shared_ptr<const Offer> OfferBook::Find(OfferKey key) const {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

void OfferBook::Notify(OfferChange::Kind kind, std::shared_ptr<const Offer> offer) {
  if (listener_) listener_(OfferChange{kind, std::move(offer)});
}

void OfferBook::Remove(OfferKey key, bool notify) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  auto offer = it->second;
  eviction_.erase(EvictionKeyOf(*offer, key));
  auto p = by_provider_.find(offer->provider);
  if (p != by_provider_.end()) {
    std::erase(p->second, key);
    if (p->second.empty()) by_provider_.erase(p);
  }
  if (offer->retired) --retired_count_;
  by_key_.erase(it);
  if (notify && !offer->retired) Notify(OfferChange::Kind::kRemoved, std::move(offer));
}

OfferBook::InsertResult OfferBook::Insert(std::shared_ptr<const Offer> offer) {
  const OfferKey key = OfferKeyOf(*offer);
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    if (it->second->seq >= offer->seq) return InsertResult::kStale;
    auto old = it->second;
    eviction_.erase(EvictionKeyOf(*old, key));
    eviction_.insert(EvictionKeyOf(*offer, key));
    if (old->retired) --retired_count_;
    if (offer->retired) ++retired_count_;
    it->second = offer;
    if (old->retired && !offer->retired) {
      Notify(OfferChange::Kind::kAdded, offer);
    } else if (!old->retired && offer->retired) {
      Notify(OfferChange::Kind::kRemoved, old);
    } else if (!offer->retired) {
      Notify(OfferChange::Kind::kUpdated, offer);
    }
    return InsertResult::kReplaced;
  }
  // A new slot: make room per provider (its oldest slot goes), then in total.
  auto& slots = by_provider_[offer->provider];
  if (slots.size() >= limits_.max_offers_per_provider) {
    auto oldest = std::min_element(slots.begin(), slots.end(), [&](OfferKey a, OfferKey b) {
      return by_key_.at(a)->issued_unix < by_key_.at(b)->issued_unix;
    });
    Remove(*oldest, true);  // may invalidate `slots` when it empties the entry
  }
  if (by_key_.size() >= limits_.max_offers) {
    const auto victim = *eviction_.begin();
    if (EvictionKeyOf(*offer, key) < victim) {
      if (auto p = by_provider_.find(offer->provider); p != by_provider_.end() && p->second.empty())
        by_provider_.erase(p);
      return InsertResult::kFull;
    }
    Remove(std::get<2>(victim), true);
  }
  by_provider_[offer->provider].push_back(key);
  eviction_.insert(EvictionKeyOf(*offer, key));
  if (offer->retired) ++retired_count_;
  by_key_.emplace(key, offer);
  if (!offer->retired) Notify(OfferChange::Kind::kAdded, std::move(offer));
  return InsertResult::kAdded;
}

size_t OfferBook::ExpireUpTo(uint64_t now_unix) {
  size_t n = 0;
  // Expired offers are spread over both halves of the eviction order (retired, then live).
  for (bool live : {false, true}) {
    auto it = eviction_.lower_bound({live, 0, 0});
    while (it != eviction_.end() && std::get<0>(*it) == live && std::get<1>(*it) <= now_unix) {
      const OfferKey key = std::get<2>(*it);
      ++it;
      Remove(key, true);
      ++n;
    }
  }
  return n;
}

std::vector<std::shared_ptr<const Offer>> OfferBook::Query(const OfferQuery& q,
                                                          uint64_t now_unix) const {
  std::vector<std::shared_ptr<const Offer>> out;
  for (const auto& [key, o] : by_key_) {
    if (Matches(q, *o, now_unix)) out.push_back(o);
  }
  return out;
}

std::vector<DigestEntry> OfferBook::Digest() const {
  std::vector<DigestEntry> out;
  out.reserve(by_key_.size());
  for (const auto& [key, o] : by_key_) out.push_back({key, o->seq});
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace dvpn::marketplace
