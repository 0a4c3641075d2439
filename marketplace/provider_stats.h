#pragma once
// What a client measured of each provider, the score that ranks offers by it, and the choice
// of provider with failover (docs/marketplace.md §3).
//
// - ProviderStats: per provider key, handshake latency and throughput (EWMAs, weight 0.3 for
//   the newest sample) and counts of sessions that succeeded, failed and overcharge attempts.
//   Kept in one SQLite file across restarts (or in memory only), bounded to `max_providers`
//   (least recently recorded dropped first).
// - Score / RankOffers: lower is better; ties by lower price, then provider key, offer id.
// - ProviderChooser: yields the best eligible offer under a ChoicePolicy, and after a
//   failure the next one not yet yielded, re-ranked with what the failure taught.
//
// Latency and throughput are doubles (measurements, not money); prices stay Amount.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/amount.h"
#include "common/clock.h"
#include "common/result.h"
#include "marketplace/offer.h"
#include "marketplace/offer_book.h"

namespace dvpn::marketplace {

enum class StatsErrc {
  kStorage,          // SQLite failed, or the file is unreadable, corrupt or not a stats file
  kInvalidArgument,  // a caller bug: negative or non-finite sample, empty path, zero bound
};
const char* StatsErrcName(StatsErrc code);

template <class T>
using StatsResult = Result<T, StatsErrc>;

using ProviderKey = ByteArray<32>;  // the provider's BIP-340 x-only account key

// Samples are clamped to these (a stuck handshake or a bogus meter must not swamp the EWMA).
inline constexpr double kMaxHandshakeMs = 600'000;
inline constexpr double kMaxThroughputMbps = 1'000'000;
inline constexpr double kEwmaWeight = 0.3;  // of the newest sample
inline constexpr size_t kDefaultMaxProviders = 10'000;

// What is known of one provider.
struct ProviderRecord {
  std::optional<double> handshake_ms = std::nullopt;     // EWMA; empty when never measured
  std::optional<double> throughput_mbps = std::nullopt;  // EWMA; empty when never measured
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t overcharges = 0;     // invoices refused as above the client's own meter
  uint64_t last_seen_unix = 0;  // when something was last recorded (the injected clock)

  bool operator==(const ProviderRecord&) const = default;
};

struct ProviderStatsOptions {
  size_t max_providers = kDefaultMaxProviders;  // >= 1
};

// The client's measurements. Thread-safe: every method takes an internal mutex. Reads are
// served from memory; each Record* writes its row through to the file in one transaction
// before it returns (writes are rare: a few per session). The clock must outlive the object;
// a moved-from object may only be destroyed or assigned to.
class ProviderStats {
 public:
  // Opens or creates the stats file at `path` and loads it. Errors: kInvalidArgument for an
  // empty path or max_providers == 0; kStorage when the file cannot be opened or created,
  // is not an SQLite database, belongs to something else, has a newer schema, or holds an
  // invalid row. A file holding more providers than the bound is trimmed (least recent first).
  [[nodiscard]] static StatsResult<ProviderStats> Open(const std::string& path, const Clock& clock,
                                                       ProviderStatsOptions options = {});
  // Nothing persisted; for callers without a path (and for ranking with no measurements).
  // max_providers == 0 is taken as 1.
  static ProviderStats InMemory(const Clock& clock, ProviderStatsOptions options = {});

  ProviderStats(ProviderStats&&) noexcept;
  ProviderStats& operator=(ProviderStats&&) noexcept;
  ~ProviderStats();

  // Each records one fact about `provider` (creating its record, evicting the least recently
  // recorded provider when full) and sets its last_seen_unix. Errors: kInvalidArgument for a
  // negative or non-finite sample (nothing changes); kStorage when the write fails (memory
  // keeps the old values, so memory and file never disagree).
  [[nodiscard]] StatsResult<void> RecordHandshake(const ProviderKey& provider, double ms);
  [[nodiscard]] StatsResult<void> RecordThroughput(const ProviderKey& provider, double mbps);
  [[nodiscard]] StatsResult<void> RecordSessionOk(const ProviderKey& provider);
  [[nodiscard]] StatsResult<void> RecordSessionFailed(const ProviderKey& provider);
  [[nodiscard]] StatsResult<void> RecordOvercharge(const ProviderKey& provider);

  // The record of `provider`; empty when nothing is known (never seen, or evicted).
  std::optional<ProviderRecord> Get(const ProviderKey& provider) const;
  size_t size() const;
  size_t max_providers() const;

 private:
  struct Impl;
  explicit ProviderStats(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The price term of the score: price_per_mb + price_per_minute / 10 (integer micro-credits,
// division rounding down; a minute is taken as ~10 MB).
uint64_t ScorePrice(const Offer& offer);

// docs/marketplace.md §3, lower is better:
//   (price + 1) * latency * reliability * throughput * overcharge
// `measured` null means nothing is known of the provider.
double Score(const Offer& offer, const ProviderRecord* measured);
double Score(const Offer& offer, const ProviderStats& stats);

// `offers` sorted best first: by score, then ScorePrice, then provider key bytes, then
// offer_id, then newer seq. Null entries are dropped. Filters nothing.
std::vector<std::shared_ptr<const Offer>> RankOffers(
    std::vector<std::shared_ptr<const Offer>> offers, const ProviderStats& stats);

// What a client accepts.
struct ChoicePolicy {
  payments::LedgerId ledger = {};  // offers for another ledger are never chosen
  Amount max_price_per_mb = {};    // required: offers above are never chosen
  // Empty: no limit beyond the protocol's 10^12 (as the payment session's default).
  std::optional<Amount> max_price_per_minute = std::nullopt;
  std::string region = {};  // empty: any; otherwise exact match
  uint32_t min_capacity_mbps = 0;
  // The modes the client connects in (offer modes bits, all required; 0: any). A SOCKS client
  // takes only offers that serve SOCKS; a full-tunnel client sets kModeFullTunnel.
  uint8_t required_modes = kModeSocks;
  std::optional<ProviderKey> provider = std::nullopt;  // only this provider's offers, when set
  // Only the offers of the provider with this account address, when set (a user names a
  // provider by the address dvpnctl offers shows).
  std::optional<payments::Address> provider_address = std::nullopt;
};

// The offer book query that asks for what `policy` may choose (the chooser checks again).
OfferQuery QueryFor(const ChoicePolicy& policy);

// Why the offer just tried did not work out (docs/marketplace.md §3).
enum class FailReason {
  kConnectFailed,     // no connection / tunnel handshake to any endpoint
  kHandshakeRefused,  // the provider refused the payment handshake (kPaymentRequired)
  kOvercharge,        // an invoice above the client's own meter was refused (kOvercharge)
};

// One choice of provider with failover. Next() yields the best eligible candidate not yet
// yielded, ranked by Score with the stats as they are at that call, so a provider that just
// failed falls behind (its other offers stay candidates, at their new rank). Eligible: for
// the policy's ledger, Matches(QueryFor(policy)) (not retired, price_per_mb <= max_price_per_mb,
// region, capacity and modes as asked), price_per_minute within its limit, provider as asked,
// fields valid (CheckFields), and neither expired nor from the future at the `now_unix` given
// to Next. Duplicates of a slot
// (provider, offer_id) count once: the highest seq (for two with one seq, the smaller
// signature bytes, so the input order never matters).
//
// Single-threaded (one caller drives a choice). `stats` must outlive the chooser.
class ProviderChooser {
 public:
  ProviderChooser(ChoicePolicy policy, std::vector<std::shared_ptr<const Offer>> candidates,
                  ProviderStats& stats);

  // The best eligible candidate not yet yielded; null when none is left.
  std::shared_ptr<const Offer> Next(uint64_t now_unix);

  // Records in the stats why `provider` failed: kConnectFailed and kHandshakeRefused count a
  // failed session; kOvercharge counts an overcharge attempt and a failed session. Then call
  // Next() for the next candidate. Errors are the stats' (the choice goes on regardless).
  [[nodiscard]] StatsResult<void> Failed(const ProviderKey& provider, FailReason reason);
  // Records a session that worked.
  [[nodiscard]] StatsResult<void> Succeeded(const ProviderKey& provider);

  // True when `offer` may be chosen under `policy` at `now_unix` (the rule above).
  static bool Eligible(const ChoicePolicy& policy, const Offer& offer, uint64_t now_unix);

 private:
  ChoicePolicy policy_;
  std::vector<std::shared_ptr<const Offer>> remaining_;
  ProviderStats* stats_;
};

}  // namespace dvpn::marketplace
