#include "marketplace/provider_stats.h"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

#include "sqlite/connection.h"
#include "sqlite/statement.h"

namespace dvpn::marketplace {
namespace {

using sqlite::Connection;
using sqlite::Run;
using sqlite::SqliteErrc;
using sqlite::Statement;

constexpr const char* kFormat = "dvpn.provider_stats";
constexpr int64_t kSchemaVersion = 1;

uint64_t SaturatingInc(uint64_t v) {
  // Counters are stored in SQLite's int64: stop at its maximum.
  return v < static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? v + 1 : v;
}

double Ewma(const std::optional<double>& old, double sample) {
  if (!old) return sample;
  return kEwmaWeight * sample + (1 - kEwmaWeight) * *old;
}

StatsResult<double> CheckSample(double v, double max, const char* what) {
  if (!std::isfinite(v) || v < 0) {
    return Fail(StatsErrc::kInvalidArgument, std::string(what) + " must be a finite number >= 0");
  }
  return std::min(v, max);
}

}  // namespace

const char* StatsErrcName(StatsErrc code) {
  switch (code) {
    case StatsErrc::kStorage:
      return "storage";
    case StatsErrc::kInvalidArgument:
      return "invalid_argument";
  }
  return "unknown";
}

// Records in memory, with their order of last use, and (unless in memory only) the SQLite
// connection they are written through to. Every member is guarded by mu_.
struct ProviderStats::Impl {
  struct Entry {
    ProviderRecord record;
    uint64_t touch = 0;  // order of last record: the least recent is evicted first
  };

  Impl(const Clock& clock, size_t max) : clock_(&clock), max_providers_(max) {}
  ~Impl() {
    upsert_.reset();  // statements are finalized before conn_ closes
    erase_.reset();
  }

  // Every SQLite failure is reported as kStorage, prefixed with the file's path.
  std::unexpected<dvpn::Error<StatsErrc>> DbFail(const dvpn::Error<SqliteErrc>& e) const {
    return Fail(StatsErrc::kStorage, path_ + ": " + e.message);
  }
  std::unexpected<dvpn::Error<StatsErrc>> DbError(std::string_view what) const {
    return DbFail(conn_->LastError(what));
  }

  StatsResult<void> Exec(const char* sql, std::string_view what) {
    if (auto ok = conn_->Exec(sql, what); !ok) return DbFail(ok.error());
    return {};
  }

  StatsResult<void> Setup(const std::string& path);
  StatsResult<void> CheckSchema();
  StatsResult<void> Load();
  StatsResult<void> TrimToBound();

  // Writes `entry` for `provider` and deletes `evict` (if any) in one transaction.
  StatsResult<void> Write(const ProviderKey& provider, const Entry& entry,
                          const std::optional<ProviderKey>& evict);

  template <class F>
  StatsResult<void> Update(const ProviderKey& provider, F&& change);

  const Clock* clock_;
  size_t max_providers_;
  std::string path_;
  std::optional<Connection> conn_;  // empty: in memory only
  std::unique_ptr<Statement> upsert_;
  std::unique_ptr<Statement> erase_;

  mutable std::mutex mu_;
  std::map<ProviderKey, Entry> records_;
  std::set<std::pair<uint64_t, ProviderKey>> by_touch_;
  uint64_t last_touch_ = 0;
};

StatsResult<void> ProviderStats::Impl::Setup(const std::string& path) {
  path_ = path;
  // Created 0600 whatever the umask (which providers a user picks is theirs); SQLite gives the
  // -wal and -shm files the same mode.
  auto conn = Connection::Open(path, {.create = true, .busy_timeout_ms = 2000});
  if (!conn) {
    const dvpn::Error<SqliteErrc>& e = conn.error();
    if (e.code == SqliteErrc::kFile) return Fail(StatsErrc::kStorage, e.message);
    if (e.code == SqliteErrc::kOpen) {
      return Fail(StatsErrc::kStorage, path + ": open: " + e.message);
    }
    return DbFail(e);
  }
  conn_ = std::move(*conn);
  // Before anything writes (switching to WAL rewrites the header): a foreign, newer or
  // corrupt file is left as it is.
  if (auto ok = CheckSchema(); !ok) return ok;
  if (auto ok = Exec("PRAGMA journal_mode = WAL", "enable WAL"); !ok) return ok;
  // Losing the last sample or two to a power cut is harmless; an fsync per write is not
  // worth it.
  if (auto ok = Exec("PRAGMA synchronous = NORMAL", "set synchronous"); !ok) return ok;
  if (auto ok = Exec("BEGIN IMMEDIATE;"
                     "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
                     "INSERT OR IGNORE INTO meta VALUES ('format', 'dvpn.provider_stats');"
                     "INSERT OR IGNORE INTO meta VALUES ('schema_version', 1);"
                     "CREATE TABLE IF NOT EXISTS providers ("
                     "  provider BLOB PRIMARY KEY,"
                     "  handshake_ms REAL,"
                     "  throughput_mbps REAL,"
                     "  succeeded INTEGER NOT NULL,"
                     "  failed INTEGER NOT NULL,"
                     "  overcharges INTEGER NOT NULL,"
                     "  last_seen_unix INTEGER NOT NULL,"
                     "  touch INTEGER NOT NULL) WITHOUT ROWID;"
                     "COMMIT;",
                     "create schema");
      !ok) {
    conn_->Rollback();
    return ok;
  }
  upsert_ = std::make_unique<Statement>();
  if (upsert_->Prepare(conn_->db(),
                       "INSERT OR REPLACE INTO providers (provider, handshake_ms, throughput_mbps,"
                       " succeeded, failed, overcharges, last_seen_unix, touch)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)") != SQLITE_OK) {
    return DbError("prepare");
  }
  erase_ = std::make_unique<Statement>();
  if (erase_->Prepare(conn_->db(), "DELETE FROM providers WHERE provider = ?1") != SQLITE_OK) {
    return DbError("prepare");
  }
  if (auto ok = Load(); !ok) return ok;
  return TrimToBound();
}

StatsResult<void> ProviderStats::Impl::CheckSchema() {
  auto schema = conn_->ReadSchema();  // also where a file that is not a database is noticed
  if (!schema) return DbFail(schema.error());
  if (schema->tables == 0) return {};  // a new file
  if (!schema->has_meta || schema->format != kFormat) {
    return Fail(StatsErrc::kStorage, path_ + ": not a provider stats file");
  }
  const int64_t version = schema->schema_version.value_or(0);
  if (version > kSchemaVersion) {
    return Fail(StatsErrc::kStorage, path_ + ": schema version " + std::to_string(version) +
                                         " is newer than this build supports");
  }
  return {};
}

StatsResult<void> ProviderStats::Impl::Load() {
  Statement s;
  if (s.Prepare(conn_->db(),
                "SELECT provider, handshake_ms, throughput_mbps, succeeded, failed, overcharges,"
                " last_seen_unix, touch FROM providers") != SQLITE_OK) {
    return DbError("read providers");
  }
  Run r(s);
  auto real = [&](int i, double max) -> std::optional<std::optional<double>> {
    const int type = sqlite3_column_type(s.get(), i);
    if (type == SQLITE_NULL) return std::optional<double>();
    if (type != SQLITE_FLOAT && type != SQLITE_INTEGER) return std::nullopt;
    const double v = sqlite3_column_double(s.get(), i);
    if (!std::isfinite(v) || v < 0 || v > max) return std::nullopt;
    return std::optional<double>(v);
  };
  auto count = [&](int i) -> std::optional<uint64_t> {
    if (sqlite3_column_type(s.get(), i) != SQLITE_INTEGER || r.I64(i) < 0) return std::nullopt;
    return static_cast<uint64_t>(r.I64(i));
  };
  for (;;) {
    const int rc = r.Step();
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return DbError("read providers");
    auto key = r.Array<32>(0);
    auto hs = real(1, kMaxHandshakeMs);
    auto tp = real(2, kMaxThroughputMbps);
    auto ok = count(3), bad = count(4), over = count(5), seen = count(6), touch = count(7);
    if (!key || !hs || !tp || !ok || !bad || !over || !seen || !touch) {
      return Fail(StatsErrc::kStorage, path_ + ": invalid provider row");
    }
    Entry e{.record = {.handshake_ms = *hs,
                       .throughput_mbps = *tp,
                       .succeeded = *ok,
                       .failed = *bad,
                       .overcharges = *over,
                       .last_seen_unix = *seen},
            .touch = *touch};
    if (!by_touch_.emplace(e.touch, *key).second) {
      return Fail(StatsErrc::kStorage, path_ + ": invalid provider row (touch repeated)");
    }
    last_touch_ = std::max(last_touch_, e.touch);
    records_.emplace(*key, e);
  }
  return {};
}

StatsResult<void> ProviderStats::Impl::TrimToBound() {
  if (records_.size() <= max_providers_) return {};
  if (auto ok = Exec("BEGIN IMMEDIATE", "trim"); !ok) return ok;
  auto it = by_touch_.begin();
  for (size_t n = records_.size() - max_providers_; n > 0; --n, ++it) {
    Run r(*erase_);
    r.Blob(1, it->second);
    if (r.Step() != SQLITE_DONE) {
      auto err = DbError("trim");
      conn_->Rollback();
      return err;
    }
  }
  if (auto ok = Exec("COMMIT", "trim"); !ok) {
    conn_->Rollback();
    return ok;
  }
  for (auto del = by_touch_.begin(); del != it;) {
    records_.erase(del->second);
    del = by_touch_.erase(del);
  }
  return {};
}

StatsResult<void> ProviderStats::Impl::Write(const ProviderKey& provider, const Entry& entry,
                                             const std::optional<ProviderKey>& evict) {
  if (!conn_) return {};
  if (auto ok = Exec("BEGIN IMMEDIATE", "record"); !ok) return ok;
  auto body = [&]() -> StatsResult<void> {
    {
      Run r(*upsert_);
      r.Blob(1, provider);
      const ProviderRecord& rec = entry.record;
      if (rec.handshake_ms) {
        sqlite3_bind_double(upsert_->get(), 2, *rec.handshake_ms);
      } else {
        r.Null(2);
      }
      if (rec.throughput_mbps) {
        sqlite3_bind_double(upsert_->get(), 3, *rec.throughput_mbps);
      } else {
        r.Null(3);
      }
      r.I64(4, static_cast<int64_t>(rec.succeeded))
          .I64(5, static_cast<int64_t>(rec.failed))
          .I64(6, static_cast<int64_t>(rec.overcharges))
          .I64(7, static_cast<int64_t>(std::min<uint64_t>(rec.last_seen_unix, INT64_MAX)))
          .I64(8, static_cast<int64_t>(entry.touch));
      if (r.Step() != SQLITE_DONE) return DbError("record");
    }
    if (evict) {
      Run r(*erase_);
      r.Blob(1, *evict);
      if (r.Step() != SQLITE_DONE) return DbError("evict");
    }
    return Exec("COMMIT", "record");
  };
  auto ok = body();
  if (!ok) conn_->Rollback();
  return ok;
}

template <class F>
StatsResult<void> ProviderStats::Impl::Update(const ProviderKey& provider, F&& change) {
  std::lock_guard lock(mu_);
  auto it = records_.find(provider);
  const bool is_new = it == records_.end();
  Entry next = is_new ? Entry{} : it->second;
  change(next.record);
  next.record.last_seen_unix = clock_->NowSeconds();
  next.touch = last_touch_ + 1;
  std::optional<ProviderKey> evict;
  if (is_new && records_.size() >= max_providers_) evict = by_touch_.begin()->second;
  if (auto ok = Write(provider, next, evict); !ok) return ok;
  last_touch_ = next.touch;
  if (evict) {
    records_.erase(*evict);
    by_touch_.erase(by_touch_.begin());
  }
  if (!is_new) by_touch_.erase({it->second.touch, provider});
  by_touch_.emplace(next.touch, provider);
  records_[provider] = next;
  return {};
}

ProviderStats::ProviderStats(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProviderStats::ProviderStats(ProviderStats&&) noexcept = default;
ProviderStats& ProviderStats::operator=(ProviderStats&&) noexcept = default;
ProviderStats::~ProviderStats() = default;

StatsResult<ProviderStats> ProviderStats::Open(const std::string& path, const Clock& clock,
                                               ProviderStatsOptions options) {
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) {
    return Fail(StatsErrc::kInvalidArgument,
                "provider stats need a file path (use InMemory() for none)");
  }
  if (options.max_providers == 0) {
    return Fail(StatsErrc::kInvalidArgument, "max_providers must be at least 1");
  }
  auto impl = std::make_unique<Impl>(clock, options.max_providers);
  if (auto ok = impl->Setup(path); !ok) return std::unexpected(ok.error());
  return ProviderStats(std::move(impl));
}

ProviderStats ProviderStats::InMemory(const Clock& clock, ProviderStatsOptions options) {
  return ProviderStats(std::make_unique<Impl>(clock, std::max<size_t>(options.max_providers, 1)));
}

StatsResult<void> ProviderStats::RecordHandshake(const ProviderKey& provider, double ms) {
  auto v = CheckSample(ms, kMaxHandshakeMs, "handshake latency");
  if (!v) return std::unexpected(v.error());
  return impl_->Update(provider,
                       [&](ProviderRecord& r) { r.handshake_ms = Ewma(r.handshake_ms, *v); });
}

StatsResult<void> ProviderStats::RecordThroughput(const ProviderKey& provider, double mbps) {
  auto v = CheckSample(mbps, kMaxThroughputMbps, "throughput");
  if (!v) return std::unexpected(v.error());
  return impl_->Update(provider,
                       [&](ProviderRecord& r) { r.throughput_mbps = Ewma(r.throughput_mbps, *v); });
}

StatsResult<void> ProviderStats::RecordSessionOk(const ProviderKey& provider) {
  return impl_->Update(provider,
                       [](ProviderRecord& r) { r.succeeded = SaturatingInc(r.succeeded); });
}

StatsResult<void> ProviderStats::RecordSessionFailed(const ProviderKey& provider) {
  return impl_->Update(provider, [](ProviderRecord& r) { r.failed = SaturatingInc(r.failed); });
}

StatsResult<void> ProviderStats::RecordOvercharge(const ProviderKey& provider) {
  return impl_->Update(provider,
                       [](ProviderRecord& r) { r.overcharges = SaturatingInc(r.overcharges); });
}

std::optional<ProviderRecord> ProviderStats::Get(const ProviderKey& provider) const {
  std::lock_guard lock(impl_->mu_);
  auto it = impl_->records_.find(provider);
  if (it == impl_->records_.end()) return std::nullopt;
  return it->second.record;
}

size_t ProviderStats::size() const {
  std::lock_guard lock(impl_->mu_);
  return impl_->records_.size();
}

size_t ProviderStats::max_providers() const { return impl_->max_providers_; }

// --- Score and ranking ---

uint64_t ScorePrice(const Offer& offer) {
  // Both prices are <= 10^12 for a valid offer; saturate for anything else.
  const uint64_t per_mb = offer.price_per_mb.micro();
  const uint64_t per_minute = offer.price_per_minute.micro() / 10;
  return per_mb > UINT64_MAX - per_minute ? UINT64_MAX : per_mb + per_minute;
}

double Score(const Offer& offer, const ProviderRecord* m) {
  const double price = static_cast<double>(ScorePrice(offer)) + 1;
  double latency = 1;
  double reliability = 1;
  double throughput = 1 + 50.0 / 100;
  double overcharge = 1;
  if (m) {
    if (m->handshake_ms) latency = 1 + *m->handshake_ms / 200;
    const double failed = static_cast<double>(m->failed);
    const double total = static_cast<double>(m->succeeded) + failed + 1;
    reliability = 1 + 4 * failed / total;
    if (m->throughput_mbps) throughput = 1 + 50 / std::max(*m->throughput_mbps, 1.0);
    for (uint64_t i = 0; i < std::min<uint64_t>(m->overcharges, 6); ++i) overcharge *= 10;
  }
  return price * latency * reliability * throughput * overcharge;
}

double Score(const Offer& offer, const ProviderStats& stats) {
  const std::optional<ProviderRecord> m = stats.Get(offer.provider);
  return Score(offer, m ? &*m : nullptr);
}

namespace {

// The total order of RankOffers, smallest first.
std::tuple<double, uint64_t, const ProviderKey&, uint32_t, uint64_t> RankKey(const Offer& o,
                                                                             double score) {
  return {score, ScorePrice(o), o.provider, o.offer_id,
          std::numeric_limits<uint64_t>::max() - o.seq};
}

}  // namespace

std::vector<std::shared_ptr<const Offer>> RankOffers(
    std::vector<std::shared_ptr<const Offer>> offers, const ProviderStats& stats) {
  std::erase(offers, nullptr);
  std::vector<std::pair<double, std::shared_ptr<const Offer>>> scored;
  scored.reserve(offers.size());
  for (auto& o : offers) scored.emplace_back(Score(*o, stats), std::move(o));
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return RankKey(*a.second, a.first) < RankKey(*b.second, b.first);
  });
  offers.clear();
  for (auto& [score, o] : scored) offers.push_back(std::move(o));
  return offers;
}

// --- The choice ---

OfferQuery QueryFor(const ChoicePolicy& policy) {
  return OfferQuery{.max_price_per_mb = policy.max_price_per_mb,
                    .region = policy.region,
                    .min_capacity_mbps = policy.min_capacity_mbps,
                    .required_modes = policy.required_modes};
}

bool ProviderChooser::Eligible(const ChoicePolicy& p, const Offer& o, uint64_t now_unix) {
  // The offer filter's one home (marketplace/offer.h), then what only a choice asks.
  if (o.ledger != p.ledger || !Matches(QueryFor(p), o, now_unix)) return false;
  if (p.max_price_per_minute && o.price_per_minute > *p.max_price_per_minute) return false;
  if (p.provider && o.provider != *p.provider) return false;
  if (p.provider_address) {
    auto key = payments::PublicKey::Parse(o.provider);
    if (!key || payments::Address::FromPublicKey(*key) != *p.provider_address) return false;
  }
  if (CheckTime(o, now_unix) != TimeCheck::kOk) return false;
  return CheckFields(o).has_value();
}

ProviderChooser::ProviderChooser(ChoicePolicy policy,
                                 std::vector<std::shared_ptr<const Offer>> candidates,
                                 ProviderStats& stats)
    : policy_(std::move(policy)), stats_(&stats) {
  // One candidate per slot: the newest version given.
  std::map<std::pair<ProviderKey, uint32_t>, std::shared_ptr<const Offer>> slots;
  for (auto& o : candidates) {
    if (!o) continue;
    auto& held = slots[{o->provider, o->offer_id}];
    // Two versions with one seq (an equivocating provider): keep one whatever the input order.
    if (!held || held->seq < o->seq || (held->seq == o->seq && o->signature < held->signature)) {
      held = std::move(o);
    }
  }
  remaining_.reserve(slots.size());
  for (auto& [slot, o] : slots) remaining_.push_back(std::move(o));
}

std::shared_ptr<const Offer> ProviderChooser::Next(uint64_t now_unix) {
  std::optional<size_t> best;
  double best_score = 0;
  for (size_t i = 0; i < remaining_.size();) {
    const Offer& o = *remaining_[i];
    if (!Eligible(policy_, o, now_unix)) {
      // Expired (or otherwise out) for good; one from the future may become eligible later.
      if (CheckTime(o, now_unix) == TimeCheck::kFromTheFuture) {
        ++i;
        continue;
      }
      remaining_[i] = std::move(remaining_.back());
      remaining_.pop_back();
      continue;
    }
    const double score = Score(o, *stats_);
    if (!best || RankKey(o, score) < RankKey(*remaining_[*best], best_score)) {
      best = i;
      best_score = score;
    }
    ++i;
  }
  if (!best) return nullptr;
  std::shared_ptr<const Offer> chosen = std::move(remaining_[*best]);
  remaining_.erase(remaining_.begin() + static_cast<ptrdiff_t>(*best));
  return chosen;
}

StatsResult<void> ProviderChooser::Failed(const ProviderKey& provider, FailReason reason) {
  if (reason == FailReason::kOvercharge) {
    if (auto ok = stats_->RecordOvercharge(provider); !ok) return ok;
  }
  return stats_->RecordSessionFailed(provider);
}

StatsResult<void> ProviderChooser::Succeeded(const ProviderKey& provider) {
  return stats_->RecordSessionOk(provider);
}

}  // namespace dvpn::marketplace
