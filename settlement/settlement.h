#pragma once
// SettlementScheduler: turns the promises in the provider's PromiseStore into credits on the
// ledger (docs/payments.md §7). A thread that, whenever a trigger holds (unsettled value above a
// threshold, a promise older than a maximum age, a channel deadline within a margin, an
// operator's SettleNow, shutdown), sends the latest promise of every channel with unsettled
// value in SettleBatch calls of at most `max_batch` promises, each signed by the provider with
// a nonce above both the stored one and the ledger's, and records every item's outcome in the
// store. When the ledger cannot be reached it retries with exponential backoff and jitter,
// re-signing with a fresh nonce: whatever an unanswered batch applied answers kAlreadySettled
// the second time, so nothing is paid twice.
//
// It also keeps the store's channel facts fresh: channels whose deposit or deadline is unknown,
// or was learned more than `channel_refresh_interval` ago, are read with GetChannel (a few per
// pass), which finds closing channels' deadlines, top-ups, and channels that died.
//
// One scheduler per store and provider key (two would race for nonces; the ledger would refuse
// one of them with kReplay, which is retried, but nothing is gained).
//
// Thread-safety: all public methods may be called from any thread. Ownership: the store,
// gateway, key and clock are borrowed and must outlive the scheduler.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/amount.h"
#include "common/clock.h"
#include "payments/keys.h"
#include "settlement/ledger_gateway.h"
#include "settlement/promise_store.h"

namespace dvpn::payments {

struct SettlementPolicy {
  Amount settle_threshold = Amount::FromMicro(Amount::kMicroPerCredit);  // 1 credit
  std::chrono::seconds settle_max_age{600};
  std::chrono::seconds settle_deadline_margin{600};
  // Promises per SettleBatch call; lowered to the ledger's own limit when that is smaller.
  uint32_t max_batch = 1000;
  // Retry delays after a failed attempt: initial, doubling up to max; each delay is drawn
  // uniformly from [d/2, d] (jitter).
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{60'000};
  // The triggers are looked at again at least this often (and at once on Wake/SettleNow).
  std::chrono::milliseconds poll_interval{1000};
  // Deadline of each ledger call.
  std::chrono::milliseconds call_timeout{10'000};
  std::chrono::seconds channel_refresh_interval{300};
  uint32_t max_refresh_per_pass = 50;
  uint64_t jitter_seed = 0;  // 0: from std::random_device
};

enum class SettleTrigger { kNone, kThreshold, kMaxAge, kDeadline, kSettleNow, kShutdown };

const char* SettleTriggerName(SettleTrigger trigger);

// The policy's time- and value-based triggers (not SettleNow/Shutdown) for the store's
// overview at `now_unix`, most urgent first: deadline, then age, then threshold. kNone when
// nothing is unsettled or no trigger holds. Pure.
SettleTrigger EvaluateTriggers(const SettleOverview& overview, uint64_t now_unix,
                               const SettlementPolicy& policy);

struct SchedulerStats {
  uint64_t steps = 0;      // looks at the triggers completed (each after its pass, if any)
  uint64_t passes = 0;     // settlement passes started (one per trigger that fired)
  uint64_t attempts = 0;   // batches tried (nonce read + SettleBatch), whatever the result
  uint64_t successes = 0;  // batches the ledger answered item by item
  uint64_t failures = 0;   // batches that got no answer (unreachable) or were refused whole
  uint64_t consecutive_failures = 0;
  uint64_t items_recorded = 0;  // item outcomes written to the store
  std::string last_error;       // empty until a failure
  SettleTrigger last_trigger = SettleTrigger::kNone;
  // When the next retry is due while backing off after a failure.
  std::optional<std::chrono::steady_clock::time_point> next_attempt;
  bool running = false;
};

class SettlementScheduler {
 public:
  // Settles the promises of `ledger` in `store` through `gateway`, signing as `provider_key`.
  SettlementScheduler(PromiseStore& store, LedgerGateway& gateway, const PrivateKey& provider_key,
                      LedgerId ledger, const Clock& clock, SettlementPolicy policy = {});
  // Stops the thread without a final settlement (call Shutdown for one).
  ~SettlementScheduler();
  SettlementScheduler(const SettlementScheduler&) = delete;
  SettlementScheduler& operator=(const SettlementScheduler&) = delete;

  // Starts the thread. Once only; no effect after Shutdown.
  void Start();
  // Looks at the triggers now (e.g. after the clock moved or many promises arrived).
  void Wake();
  // Settles everything with unsettled value now, even while backing off after failures.
  void SettleNow();
  // Makes one final attempt to settle everything, every ledger call bounded by `deadline`
  // (no call starts after it), then stops the thread and returns. A ledger call already
  // running is cancelled (LedgerGateway::CancelInFlight) and the pass it belongs to stops, so
  // the whole shutdown ends by `deadline` plus a small slack. Idempotent.
  void Shutdown(std::chrono::steady_clock::time_point deadline);

  SchedulerStats Stats() const;

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Failure {
    GatewayErrc code;     // kRejected also for local (promise store) failures
    std::string message;  // for a person: last_error and the attempt log
  };

  void Loop();
  // One look at the triggers (and channel facts); settles when one holds.
  void Step(bool final, bool settle_now);
  void StepInner(bool final, bool settle_now);
  void RefreshChannels(uint64_t now);
  // Settles every settleable channel, batch by batch. False when an attempt failed.
  bool SettlePass(SettleTrigger trigger, uint64_t channels, std::optional<SteadyTime> hard_end);
  // One batch; nullopt on success.
  std::optional<Failure> SettleBatch(const std::vector<StoredChannel>& rows, SteadyTime deadline);
  std::optional<Failure> EnsureParams(SteadyTime deadline);
  void RecordFailure(const Failure& failure, bool schedule_retry);
  void RecordSuccess();
  SteadyTime CallDeadline(std::optional<SteadyTime> hard_end) const;
  bool StopRequested() const;

  PromiseStore& store_;
  LedgerGateway& gateway_;
  const PrivateKey& key_;
  const Address provider_;
  const LedgerId ledger_;
  const Clock& clock_;
  const SettlementPolicy policy_;

  // Thread-only state.
  std::optional<LedgerParams> params_;
  uint32_t batch_limit_;
  std::optional<SettleTrigger> retry_trigger_;  // set while a failed pass awaits its retry
  std::mt19937_64 rng_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool started_ = false;
  bool wake_ = false;
  bool settle_now_ = false;
  bool shutdown_ = false;
  SteadyTime shutdown_deadline_{};
  std::optional<SteadyTime> retry_at_;
  SchedulerStats stats_;
  std::mutex join_mu_;
  std::thread thread_;
};

}  // namespace dvpn::payments
