#include "settlement/settlement.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "common/io_thread.h"
#include "common/log.h"
#include "ledger/requests.h"

namespace dvpn::payments {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr int kMaxReplayRetries = 3;

// A failed gateway call, named: "unreachable: nonce: connection refused".
std::string Describe(const Error<GatewayErrc>& e, const char* what) {
  return std::string(GatewayErrcName(e.code)) + ": " + what + ": " + e.message;
}

std::string Short(const ChannelId& id) { return ToHex(ByteSpan(id.bytes.data(), 8)); }

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? std::numeric_limits<uint64_t>::max() : sum;
}

// The last moment the ledger lets the provider settle the channel (docs/ledger.md, "Live").
uint64_t DeadlineOf(const ledger::ChannelState& ch, uint64_t challenge_period) {
  switch (ch.status) {
    case ledger::ChannelStatus::kOpen:
      return SaturatingAdd(ch.expiry_unix, challenge_period);
    case ledger::ChannelStatus::kClosing:
      return ch.close_deadline_unix;
    case ledger::ChannelStatus::kClosed:
      return 0;
  }
  return 0;
}

const char* OutcomeName(ledger::SettleOutcome outcome) {
  using ledger::SettleOutcome;
  switch (outcome) {
    case SettleOutcome::kSettled:
      return "settled";
    case SettleOutcome::kSettledCapped:
      return "settled (capped at the escrow)";
    case SettleOutcome::kAlreadySettled:
      return "already settled";
    case SettleOutcome::kEscrowExhausted:
      return "escrow exhausted";
    case SettleOutcome::kBadSignature:
      return "bad signature";
    case SettleOutcome::kUnknownChannel:
      return "unknown channel";
    case SettleOutcome::kNotYourChannel:
      return "not our channel";
    case SettleOutcome::kChannelClosed:
      return "channel closed";
  }
  return "?";
}

// How one item's outcome changes the channel's row (docs/payments.md §7).
ChannelUpdate UpdateFor(const ledger::SettleItemResult& item) {
  using ledger::SettleOutcome;
  ChannelUpdate u;
  u.channel = item.channel;
  u.settled = item.channel_settled;
  u.outcome = OutcomeName(item.outcome);
  if (!item.moved.IsZero()) u.outcome += " +" + item.moved.ToString();
  switch (item.outcome) {
    case SettleOutcome::kSettled:
      // A known deposit below what is now settled was topped up since.
      u.deposit_at_least = item.channel_settled;
      u.state = ChannelSettleState::kActive;
      break;
    case SettleOutcome::kSettledCapped:
      u.deposit = item.channel_settled;  // settled == deposit now
      u.state = ChannelSettleState::kActive;
      break;
    case SettleOutcome::kAlreadySettled:
      break;
    case SettleOutcome::kEscrowExhausted:
      u.deposit = item.channel_settled;
      u.state = ChannelSettleState::kExhausted;
      break;
    case SettleOutcome::kBadSignature:
    case SettleOutcome::kUnknownChannel:
    case SettleOutcome::kNotYourChannel:
    case SettleOutcome::kChannelClosed:
      u.state = ChannelSettleState::kDead;
      if (!item.message.empty()) u.outcome += ": " + item.message;
      break;
  }
  return u;
}

}  // namespace

const char* SettleTriggerName(SettleTrigger trigger) {
  switch (trigger) {
    case SettleTrigger::kNone:
      return "none";
    case SettleTrigger::kThreshold:
      return "threshold";
    case SettleTrigger::kMaxAge:
      return "max age";
    case SettleTrigger::kDeadline:
      return "deadline";
    case SettleTrigger::kSettleNow:
      return "settle now";
    case SettleTrigger::kShutdown:
      return "shutdown";
  }
  return "?";
}

SettleTrigger EvaluateTriggers(const SettleOverview& overview, uint64_t now_unix,
                               const SettlementPolicy& policy) {
  if (overview.channels == 0 || overview.total_unsettled.IsZero()) return SettleTrigger::kNone;
  const auto margin =
      static_cast<uint64_t>(std::max<int64_t>(0, policy.settle_deadline_margin.count()));
  const auto max_age = static_cast<uint64_t>(std::max<int64_t>(0, policy.settle_max_age.count()));
  if (overview.nearest_deadline_unix &&
      *overview.nearest_deadline_unix < SaturatingAdd(now_unix, margin)) {
    return SettleTrigger::kDeadline;
  }
  if (overview.oldest_unsettled_since_unix &&
      SaturatingAdd(*overview.oldest_unsettled_since_unix, max_age) <= now_unix) {
    return SettleTrigger::kMaxAge;
  }
  if (overview.total_unsettled >= policy.settle_threshold) return SettleTrigger::kThreshold;
  return SettleTrigger::kNone;
}

SettlementScheduler::SettlementScheduler(PromiseStore& store, LedgerGateway& gateway,
                                         const PrivateKey& provider_key, LedgerId ledger,
                                         const Clock& clock, SettlementPolicy policy)
    : store_(store),
      gateway_(gateway),
      key_(provider_key),
      provider_(Address::FromPublicKey(provider_key.public_key())),
      ledger_(ledger),
      clock_(clock),
      policy_(policy),
      batch_limit_(std::max<uint32_t>(policy.max_batch, 1)),
      rng_(policy.jitter_seed != 0
               ? policy.jitter_seed
               : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()) {}

SettlementScheduler::~SettlementScheduler() {
  {
    std::lock_guard lock(mu_);
    if (!shutdown_) {
      shutdown_ = true;
      shutdown_deadline_ = SteadyTime{};  // already passed: no final attempt
    }
    cv_.notify_all();
  }
  std::lock_guard join(join_mu_);
  if (thread_.joinable()) thread_.join();
}

void SettlementScheduler::Start() {
  std::lock_guard lock(mu_);
  if (started_ || shutdown_) return;
  started_ = true;
  stats_.running = true;
  thread_ = std::thread([this] {
    NameThisThread("settlement");
    Loop();
  });
}

void SettlementScheduler::Wake() {
  std::lock_guard lock(mu_);
  wake_ = true;
  cv_.notify_all();
}

void SettlementScheduler::SettleNow() {
  std::lock_guard lock(mu_);
  settle_now_ = true;
  cv_.notify_all();
}

void SettlementScheduler::Shutdown(SteadyTime deadline) {
  {
    std::lock_guard lock(mu_);
    if (!shutdown_) {
      shutdown_ = true;
      shutdown_deadline_ = deadline;
      // A call in flight (bounded only by call_timeout) must not hold the final pass past
      // `deadline`. Under mu_: the loop cannot have begun the final pass, whose calls must
      // not be cancelled.
      gateway_.CancelInFlight();
    }
    cv_.notify_all();
  }
  std::lock_guard join(join_mu_);
  if (thread_.joinable()) thread_.join();
}

SchedulerStats SettlementScheduler::Stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool SettlementScheduler::StopRequested() const {
  std::lock_guard lock(mu_);
  return shutdown_;
}

SettlementScheduler::SteadyTime SettlementScheduler::CallDeadline(
    std::optional<SteadyTime> hard_end) const {
  SteadyTime d = steady_clock::now() + policy_.call_timeout;
  return hard_end ? std::min(d, *hard_end) : d;
}

void SettlementScheduler::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    const bool final = shutdown_;
    const bool settle_now = settle_now_;
    settle_now_ = false;
    wake_ = false;
    lock.unlock();
    Step(final, settle_now);
    lock.lock();
    if (final) break;
    SteadyTime until = steady_clock::now() + policy_.poll_interval;
    if (retry_at_) until = std::min(until, *retry_at_);
    cv_.wait_until(lock, until, [&] { return wake_ || settle_now_ || shutdown_; });
  }
  stats_.running = false;
  stats_.next_attempt.reset();
}

void SettlementScheduler::Step(bool final, bool settle_now) {
  StepInner(final, settle_now);
  std::lock_guard lock(mu_);
  ++stats_.steps;
}

void SettlementScheduler::StepInner(bool final, bool settle_now) {
  auto log = Logger("settlement");
  const uint64_t now = clock_.NowSeconds();
  bool backing_off;
  std::optional<SteadyTime> hard_end;
  {
    std::lock_guard lock(mu_);
    backing_off = retry_at_ && steady_clock::now() < *retry_at_;
    if (final) hard_end = shutdown_deadline_;
  }
  if (final && steady_clock::now() >= *hard_end) return;  // no time left for a last attempt
  if (!final && !backing_off) RefreshChannels(now);

  auto overview = store_.Overview(ledger_);
  if (!overview) {
    log->error("settlement: cannot read the promise store: {}", overview.error().message);
    return;
  }
  SettleTrigger trigger = final        ? SettleTrigger::kShutdown
                          : settle_now ? SettleTrigger::kSettleNow
                                       : EvaluateTriggers(*overview, now, policy_);
  // A failed pass is retried (after its backoff) even when no trigger holds any more, e.g.
  // after a SettleNow or when the threshold was crossed by promises since settled elsewhere.
  if (trigger == SettleTrigger::kNone && retry_trigger_) trigger = *retry_trigger_;
  if (overview->channels == 0) retry_trigger_.reset();
  if (trigger == SettleTrigger::kNone || overview->channels == 0) return;
  if (backing_off && !final && !settle_now) return;
  {
    std::lock_guard lock(mu_);
    ++stats_.passes;
    stats_.last_trigger = trigger;
  }
  log->debug("settlement: {} (unsettled {} in {} channels)", SettleTriggerName(trigger),
             overview->total_unsettled.ToString(), overview->channels);
  if (SettlePass(trigger, overview->channels, hard_end)) {
    retry_trigger_.reset();
  } else {
    retry_trigger_ = trigger;
  }
}

std::optional<SettlementScheduler::Failure> SettlementScheduler::EnsureParams(SteadyTime deadline) {
  if (params_) return std::nullopt;
  auto params = gateway_.GetParams(deadline);
  if (!params) return Failure{params.error().code, Describe(params.error(), "ledger info")};
  if (params->id != ledger_) {
    return Failure{GatewayErrc::kRejected, "the ledger reached is " + ToHex(params->id.bytes) +
                                               ", not the ledger " + ToHex(ledger_.bytes) +
                                               " the promises are for"};
  }
  params_ = *params;
  if (params_->max_batch_items > 0) batch_limit_ = std::min(batch_limit_, params_->max_batch_items);
  return std::nullopt;
}

void SettlementScheduler::RefreshChannels(uint64_t now) {
  if (policy_.max_refresh_per_pass == 0) return;
  const auto interval =
      static_cast<uint64_t>(std::max<int64_t>(0, policy_.channel_refresh_interval.count()));
  const uint64_t before = now >= interval ? now - interval : 0;
  auto rows = store_.NeedingInfo(ledger_, before, policy_.max_refresh_per_pass);
  if (!rows || rows->empty()) return;
  if (EnsureParams(CallDeadline(std::nullopt))) return;  // not reachable now; later
  std::vector<ChannelUpdate> updates;
  for (const StoredChannel& row : *rows) {
    if (StopRequested()) break;
    auto ch = gateway_.GetChannel(row.channel, CallDeadline(std::nullopt));
    ChannelUpdate u;
    u.channel = row.channel;
    u.info_checked_unix = now;
    if (ch) {
      u.settled = ch->settled;
      u.deposit = ch->deposit;
      u.deadline_unix = DeadlineOf(*ch, params_->challenge_period_seconds);
      if (ch->provider != provider_) {
        u.state = ChannelSettleState::kDead;
        u.outcome = "not our channel (ledger)";
      } else if (ch->status == ledger::ChannelStatus::kClosed) {
        u.state = ChannelSettleState::kDead;
        u.outcome = "channel closed (ledger)";
      }
    } else if (ch.error().code == GatewayErrc::kUnknownChannel) {
      u.state = ChannelSettleState::kDead;
      u.outcome = "unknown channel (ledger)";
    } else if (ch.error().code == GatewayErrc::kUnreachable) {
      break;  // try again later; do not wait out a timeout per channel
    } else {
      u.outcome = "channel check refused: " + ch.error().message;
    }
    updates.push_back(std::move(u));
  }
  if (updates.empty()) return;
  if (auto ok = store_.ApplyUpdates(updates); !ok) {
    Logger("settlement")->error("settlement: cannot record channel facts: {}", ok.error().message);
  }
}

bool SettlementScheduler::SettlePass(SettleTrigger trigger, uint64_t channels,
                                     std::optional<SteadyTime> hard_end) {
  const bool final = trigger == SettleTrigger::kShutdown;
  if (auto f = EnsureParams(CallDeadline(hard_end))) {
    RecordFailure(*f, !final);
    return false;
  }
  // Promises that arrive during the pass may keep rows settleable; a bound keeps a busy
  // provider from looping here.
  uint64_t batches_left = channels / batch_limit_ + 2;
  int replays = 0;
  while (batches_left > 0) {
    if (hard_end && steady_clock::now() >= *hard_end) return false;
    if (!final && StopRequested()) return false;  // the final pass follows
    auto rows = store_.Settleable(ledger_, batch_limit_);
    if (!rows) {
      RecordFailure(Failure{GatewayErrc::kRejected, "promise store: " + rows.error().message},
                    !final);
      return false;
    }
    if (rows->empty()) break;
    auto failure = SettleBatch(*rows, CallDeadline(hard_end));
    if (!failure) {
      --batches_left;
      replays = 0;
      continue;
    }
    if (failure->code == GatewayErrc::kReplay && ++replays <= kMaxReplayRetries) {
      RecordFailure(*failure, /*schedule_retry=*/false);
      continue;  // someone used the nonce meanwhile: read it again and re-sign
    }
    if (failure->code == GatewayErrc::kBatchTooLarge && batch_limit_ > 1) {
      RecordFailure(*failure, /*schedule_retry=*/false);
      batch_limit_ = std::max<uint32_t>(1, batch_limit_ / 2);
      batches_left = SaturatingAdd(batches_left, 1);
      continue;
    }
    RecordFailure(*failure, !final);
    return false;
  }
  RecordSuccess();
  return true;
}

std::optional<SettlementScheduler::Failure> SettlementScheduler::SettleBatch(
    const std::vector<StoredChannel>& rows, SteadyTime deadline) {
  {
    std::lock_guard lock(mu_);
    ++stats_.attempts;
  }
  auto ledger_nonce = gateway_.LastNonce(provider_, deadline);
  if (!ledger_nonce) {
    return Failure{ledger_nonce.error().code, Describe(ledger_nonce.error(), "nonce")};
  }
  auto stored_nonce = store_.LastNonce();
  if (!stored_nonce) {
    return Failure{GatewayErrc::kRejected, "promise store: " + stored_nonce.error().message};
  }
  const uint64_t last = std::max(*ledger_nonce, *stored_nonce);
  if (last == std::numeric_limits<uint64_t>::max()) {
    return Failure{GatewayErrc::kRejected, "the provider's nonces are used up"};
  }
  const uint64_t nonce = last + 1;
  std::vector<SignedPromise> promises;
  promises.reserve(rows.size());
  for (const StoredChannel& row : rows) promises.push_back(row.Promise());
  // The nonce is on disk before the request leaves, so no restart reuses it.
  auto attempt = store_.BeginAttempt(nonce, static_cast<uint32_t>(promises.size()));
  if (!attempt) {
    return Failure{GatewayErrc::kRejected, "promise store: " + attempt.error().message};
  }
  auto request = ledger::MakeSettleBatch(key_, ledger_, nonce, std::move(promises));
  auto answer = gateway_.SettleBatch(request, deadline);
  if (!answer) {
    Failure f{answer.error().code, Describe(answer.error(), "settle batch")};
    if (auto ok = store_.FinishAttempt(*attempt, Amount::Zero(), f.message, {}); !ok) {
      Logger("settlement")->error("settlement: cannot log attempt: {}", ok.error().message);
    }
    return f;
  }
  const auto& items = answer->items;
  bool well_formed = items.size() == request.promises.size();
  for (size_t i = 0; well_formed && i < items.size(); ++i) {
    well_formed = items[i].channel == request.promises[i].channel;
  }
  if (!well_formed) {
    Failure f{GatewayErrc::kRejected, "the ledger's answer does not match the batch (" +
                                          std::to_string(items.size()) + " items for " +
                                          std::to_string(request.promises.size()) + ")"};
    (void)store_.FinishAttempt(*attempt, Amount::Zero(), f.message, {});
    return f;
  }
  std::vector<ChannelUpdate> updates;
  updates.reserve(items.size());
  size_t counts[9] = {};
  for (const ledger::SettleItemResult& item : items) {
    updates.push_back(UpdateFor(item));
    const auto index = static_cast<size_t>(item.outcome);
    if (index < std::size(counts)) ++counts[index];
    if (updates.back().state == ChannelSettleState::kDead) {
      Logger("settlement")
          ->warn("settlement: channel {} is dead: {}", Short(item.channel), updates.back().outcome);
    }
  }
  std::string summary = "ok: moved " + answer->total_moved.ToString();
  for (size_t i = 1; i < std::size(counts); ++i) {
    if (counts[i] == 0) continue;
    summary +=
        ", " + std::to_string(counts[i]) + " " + OutcomeName(static_cast<ledger::SettleOutcome>(i));
  }
  if (auto ok = store_.FinishAttempt(*attempt, answer->total_moved, summary, updates); !ok) {
    // The ledger applied the batch; the next pass re-sends it and reads kAlreadySettled.
    return Failure{GatewayErrc::kRejected,
                   "promise store: cannot record the settlement: " + ok.error().message};
  }
  {
    std::lock_guard lock(mu_);
    ++stats_.successes;
    stats_.items_recorded += items.size();
  }
  Logger("settlement")
      ->info("settlement: batch of {} with nonce {}: {}", items.size(), nonce, summary);
  return std::nullopt;
}

void SettlementScheduler::RecordFailure(const Failure& failure, bool schedule_retry) {
  std::lock_guard lock(mu_);
  ++stats_.failures;
  ++stats_.consecutive_failures;
  stats_.last_error = failure.message;
  if (!schedule_retry) return;
  // initial * 2^(n-1), capped; then uniform in [d/2, d].
  milliseconds d = std::max(policy_.backoff_initial, milliseconds(1));
  for (uint64_t i = 1; i < stats_.consecutive_failures && d < policy_.backoff_max; ++i) d *= 2;
  d = std::min(d, std::max(policy_.backoff_max, milliseconds(1)));
  const auto half = d.count() / 2;
  const auto delay = milliseconds(
      half + static_cast<int64_t>(rng_() % static_cast<uint64_t>(d.count() - half + 1)));
  retry_at_ = steady_clock::now() + delay;
  stats_.next_attempt = retry_at_;
  Logger("settlement")
      ->warn("settlement failed, retry in {} ms: {}", delay.count(), failure.message);
}

void SettlementScheduler::RecordSuccess() {
  std::lock_guard lock(mu_);
  stats_.consecutive_failures = 0;
  retry_at_.reset();
  stats_.next_attempt.reset();
}

}  // namespace dvpn::payments
