#pragma once
// LedgerGateway: the few ledger calls the provider's settlement scheduler (settlement/settlement.h)
// makes, in domain types, behind an interface so the scheduler does not care whether the ledger
// is a dvpn-ledger process over gRPC (settlement/ledger_gateway_rpc.h) or an in-process
// dvpn::ledger::Ledger (tests).
//
// The one distinction the scheduler needs from every failure is whether the ledger gave a
// definite answer. kUnreachable means it did not: the call may not have arrived, or it may
// have been applied and the answer lost. Everything else is the ledger's own refusal, and a
// refused request changed nothing (docs/ledger.md).
//
// Implementations must be thread-safe and must return by `deadline` (plus a small slack): the
// scheduler's shutdown is bounded by it.

#include <chrono>
#include <cstdint>

#include "common/result.h"
#include "ledger/types.h"

namespace dvpn::payments {

enum class GatewayErrc {
  kUnreachable,     // no definite answer: transport failure, timeout, ledger storage failure
  kReplay,          // the nonce is not above the account's last nonce (nothing applied)
  kUnknownChannel,  // GetChannel: no such channel on this ledger
  kBatchTooLarge,   // SettleBatch: more promises than the ledger accepts in one call
  kRejected,        // any other definite refusal (wrong ledger, bad signature, malformed, ...)
};

const char* GatewayErrcName(GatewayErrc code);

template <class T>
using GatewayResult = Result<T, GatewayErrc>;

using GatewayDeadline = std::chrono::steady_clock::time_point;

// Static facts about the ledger the gateway talks to.
struct LedgerParams {
  LedgerId id;
  uint64_t challenge_period_seconds = 0;
  uint32_t max_batch_items = 0;
};

class LedgerGateway {
 public:
  virtual ~LedgerGateway() = default;

  // Fails with kUnreachable (or kRejected).
  virtual GatewayResult<LedgerParams> GetParams(GatewayDeadline deadline) = 0;
  // The last nonce the ledger accepted from `account` (0 for an account never seen).
  virtual GatewayResult<uint64_t> LastNonce(const Address& account, GatewayDeadline deadline) = 0;
  // Fails with kUnknownChannel, kUnreachable (or kRejected).
  virtual GatewayResult<ledger::ChannelState> GetChannel(const ChannelId& channel,
                                                         GatewayDeadline deadline) = 0;
  // The ledger's answer, one item per promise in request order. Fails with kUnreachable (the
  // batch may or may not have been applied), kReplay, kBatchTooLarge, kRejected (applied
  // nothing).
  virtual GatewayResult<ledger::SettleBatchResult> SettleBatch(
      const ledger::SettleBatchRequest& request, GatewayDeadline deadline) = 0;
  // Makes the calls in flight return kUnreachable now instead of at their deadline; later calls
  // are not affected. Used at shutdown, so that a ledger that does not answer cannot hold the
  // process past its own deadline. Any thread. The default does nothing (calls that return
  // quickly anyway).
  virtual void CancelInFlight() {}
};

inline const char* GatewayErrcName(GatewayErrc code) {
  switch (code) {
    case GatewayErrc::kUnreachable:
      return "unreachable";
    case GatewayErrc::kReplay:
      return "replay";
    case GatewayErrc::kUnknownChannel:
      return "unknown channel";
    case GatewayErrc::kBatchTooLarge:
      return "batch too large";
    case GatewayErrc::kRejected:
      return "rejected";
  }
  return "?";
}

}  // namespace dvpn::payments
