#pragma once
// RpcLedgerGateway: the settlement scheduler's LedgerGateway (settlement/ledger_gateway.h) over
// the dvpn.v1.Ledger gRPC service, through LedgerClient.
//
// Status codes map to the gateway's errors (GatewayErrcFor): UNAVAILABLE, DEADLINE_EXCEEDED,
// CANCELLED and the transport-only codes UNKNOWN, INTERNAL, ABORTED -> kUnreachable (no
// definite answer: the ledger's service never sends those for a refusal, but a connection cut
// mid-call surfaces as them); ALREADY_EXISTS -> kReplay; NOT_FOUND -> kUnknownChannel;
// RESOURCE_EXHAUSTED -> kBatchTooLarge; any other code -> kRejected.
//
// Every call is bounded by the earlier of its `deadline` and options.call_timeout. The channel
// made by MakeChannel (and the target constructor) tries to reconnect to a ledger that went away
// at least every options.max_reconnect_backoff (and re-resolves its name at most every second),
// so settlement resumes promptly when the ledger is back; a call made meanwhile fails at once
// with kUnreachable.
//
// Thread-safe. Holds a shared reference to its grpc::Channel.

#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/support/status_code_enum.h>

#include "settlement/ledger_gateway.h"

namespace dvpn::ledger::rpc {

class LedgerClient;

struct RpcGatewayOptions {
  std::chrono::milliseconds call_timeout{10'000};
  // gRPC waits at most this long between reconnection attempts to a ledger that went away
  // (its default grows to 120 s, which would delay settlement long after the ledger is back).
  std::chrono::milliseconds max_reconnect_backoff{5'000};
};

payments::GatewayErrc GatewayErrcFor(grpc::StatusCode code);

class RpcLedgerGateway final : public payments::LedgerGateway {
 public:
  // An insecure channel to `target` ("127.0.0.1:7400") with the reconnect backoff of `options`
  // and the message size limits of LedgerClient::MakeChannel.
  static std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                                    const RpcGatewayOptions& options);

  explicit RpcLedgerGateway(const std::string& target, RpcGatewayOptions options = {});
  RpcLedgerGateway(std::shared_ptr<grpc::Channel> channel, RpcGatewayOptions options = {});
  ~RpcLedgerGateway() override;

  payments::GatewayResult<payments::LedgerParams> GetParams(
      payments::GatewayDeadline deadline) override;
  payments::GatewayResult<uint64_t> LastNonce(const Address& account,
                                              payments::GatewayDeadline deadline) override;
  payments::GatewayResult<ChannelState> GetChannel(const ChannelId& channel,
                                                   payments::GatewayDeadline deadline) override;
  payments::GatewayResult<SettleBatchResult> SettleBatch(
      const SettleBatchRequest& request, payments::GatewayDeadline deadline) override;
  void CancelInFlight() override;

 private:
  // Runs `call` on a LedgerClient of its own whose per-call timeout ends at `deadline` (or
  // call_timeout, whichever is first), registered in `in_flight_` meanwhile.
  template <class T, class Call>
  payments::GatewayResult<T> WithDeadline(payments::GatewayDeadline deadline, Call&& call);

  std::shared_ptr<grpc::Channel> channel_;
  RpcGatewayOptions options_;
  std::mutex mu_;
  std::set<rpc::LedgerClient*> in_flight_;
};

}  // namespace dvpn::ledger::rpc
