#pragma once
// Gateways for the settlement tests: LocalLedgerGateway puts a real in-process
// dvpn::ledger::Ledger behind the LedgerGateway interface; FaultyGateway wraps any gateway (the
// local one or RpcLedgerGateway) and injects the failures a provider sees in the field: the
// ledger unreachable, an answer lost after the ledger applied the batch, a call that hangs until
// its deadline. FaultyGateway never answers on the ledger's behalf: every definite answer comes
// from the wrapped ledger.
//
// Thread-safe (the knobs are atomics; the wrapped gateway is thread-safe).

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "ledger/ledger.h"
#include "settlement/ledger_gateway.h"

namespace dvpn::payments::testing {

inline GatewayErrc GatewayErrcForLedger(ledger::Errc code) {
  switch (code) {
    case ledger::Errc::kStorage:
      return GatewayErrc::kUnreachable;  // nothing applied; the same as not reaching it
    case ledger::Errc::kReplay:
      return GatewayErrc::kReplay;
    case ledger::Errc::kUnknownChannel:
      return GatewayErrc::kUnknownChannel;
    case ledger::Errc::kBatchTooLarge:
      return GatewayErrc::kBatchTooLarge;
    default:
      return GatewayErrc::kRejected;
  }
}

class LocalLedgerGateway final : public LedgerGateway {
 public:
  explicit LocalLedgerGateway(ledger::Ledger& ledger) : ledger_(ledger) {}

  GatewayResult<LedgerParams> GetParams(GatewayDeadline) override {
    return LedgerParams{ledger_.id(), ledger_.config().challenge_period_seconds,
                        ledger_.config().max_batch_items};
  }
  GatewayResult<uint64_t> LastNonce(const Address& account, GatewayDeadline) override {
    auto a = ledger_.GetAccount(account);
    if (!a) return Fail(GatewayErrcForLedger(a.error().code), a.error().message);
    return a->last_nonce;
  }
  GatewayResult<ledger::ChannelState> GetChannel(const ChannelId& channel,
                                                 GatewayDeadline) override {
    auto c = ledger_.GetChannel(channel);
    if (!c) return Fail(GatewayErrcForLedger(c.error().code), c.error().message);
    return *c;
  }
  GatewayResult<ledger::SettleBatchResult> SettleBatch(const ledger::SettleBatchRequest& request,
                                                       GatewayDeadline) override {
    auto r = ledger_.SettleBatch(request);
    if (!r) return Fail(GatewayErrcForLedger(r.error().code), r.error().message);
    return *r;
  }

 private:
  ledger::Ledger& ledger_;
};

class FaultyGateway final : public LedgerGateway {
 public:
  explicit FaultyGateway(LedgerGateway& inner) : inner_(inner) {}

  // Every call fails with kUnreachable without reaching the ledger.
  std::atomic<bool> down{false};
  // GetChannel only fails with kUnreachable (channel facts cannot be refreshed).
  std::atomic<bool> channel_reads_down{false};
  // The next N SettleBatch calls reach the ledger, which applies them, but the answer is lost:
  // the call fails with kUnreachable.
  std::atomic<int> lose_settle_answers{0};
  // Calls block until their deadline (or CancelInFlight), then fail with kUnreachable (a
  // black-holed ledger).
  std::atomic<bool> hang{false};
  // Overrides the max_batch_items GetParams reports (0: the ledger's own).
  std::atomic<uint32_t> report_max_batch{0};
  // Called after a SettleBatch reached the ledger and before its answer is returned or lost.
  std::function<void()> after_settle;

  std::atomic<int> settle_calls{0};    // SettleBatch calls made to this gateway
  std::atomic<int> settle_reached{0};  // ... that reached the wrapped ledger
  std::atomic<int> channel_reads{0};   // GetChannel calls that reached it
  std::atomic<int> hanging{0};         // calls blocked in `hang` right now

  void CancelInFlight() override { ++cancel_epoch_; }

  GatewayResult<LedgerParams> GetParams(GatewayDeadline deadline) override {
    if (auto f = Fault(deadline)) return *f;
    auto p = inner_.GetParams(deadline);
    if (p && report_max_batch.load() != 0) p->max_batch_items = report_max_batch.load();
    return p;
  }
  GatewayResult<uint64_t> LastNonce(const Address& account, GatewayDeadline deadline) override {
    if (auto f = Fault(deadline)) return *f;
    return inner_.LastNonce(account, deadline);
  }
  GatewayResult<ledger::ChannelState> GetChannel(const ChannelId& channel,
                                                 GatewayDeadline deadline) override {
    if (auto f = Fault(deadline)) return *f;
    if (channel_reads_down.load()) return Fail(GatewayErrc::kUnreachable, "injected: down");
    ++channel_reads;
    return inner_.GetChannel(channel, deadline);
  }
  GatewayResult<ledger::SettleBatchResult> SettleBatch(const ledger::SettleBatchRequest& request,
                                                       GatewayDeadline deadline) override {
    ++settle_calls;
    if (auto f = Fault(deadline)) return *f;
    ++settle_reached;
    auto r = inner_.SettleBatch(request, deadline);
    if (after_settle) after_settle();
    int lose = lose_settle_answers.load();
    while (lose > 0 && !lose_settle_answers.compare_exchange_weak(lose, lose - 1)) {
    }
    if (lose > 0) return Fail(GatewayErrc::kUnreachable, "injected: the answer was lost");
    return r;
  }

 private:
  std::optional<std::unexpected<Error<GatewayErrc>>> Fault(GatewayDeadline deadline) {
    if (hang.load()) {
      // Bounded by the caller's deadline, as the interface promises, and cut by a cancel.
      const int epoch = cancel_epoch_.load();
      ++hanging;
      while (std::chrono::steady_clock::now() < deadline && hang.load() &&
             cancel_epoch_.load() == epoch) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      --hanging;
      return Fail(GatewayErrc::kUnreachable, "injected: deadline exceeded or cancelled");
    }
    if (down.load()) return Fail(GatewayErrc::kUnreachable, "injected: ledger unreachable");
    return std::nullopt;
  }

  LedgerGateway& inner_;
  std::atomic<int> cancel_epoch_{0};
};

}  // namespace dvpn::payments::testing
