#include "settlement/ledger_gateway_rpc.h"

#include <algorithm>
#include <utility>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "ledger/rpc/ledger_client.h"

namespace dvpn::ledger::rpc {
namespace {

using payments::GatewayDeadline;
using payments::GatewayErrc;
using payments::GatewayResult;

// As LedgerClient::MakeChannel: a SettleBatch of max_batch_items promises and its reply fit.
constexpr int kMaxMessageBytes = 16 << 20;

}  // namespace

GatewayErrc GatewayErrcFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::ABORTED:
      return GatewayErrc::kUnreachable;
    case grpc::StatusCode::ALREADY_EXISTS:
      return GatewayErrc::kReplay;
    case grpc::StatusCode::NOT_FOUND:
      return GatewayErrc::kUnknownChannel;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return GatewayErrc::kBatchTooLarge;
    default:
      return GatewayErrc::kRejected;
  }
}

std::shared_ptr<grpc::Channel> RpcLedgerGateway::MakeChannel(const std::string& target,
                                                             const RpcGatewayOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  const int max_backoff =
      static_cast<int>(std::clamp<int64_t>(options.max_reconnect_backoff.count(), 100, 120'000));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(max_backoff, 1000));
  // After a failed connection gRPC re-resolves the name before trying again, and by default at
  // most every 30 s: the settlement would wait that long after the ledger is back.
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, std::min(max_backoff, 1000));
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is left alone: gRPC also uses it as the minimum connect
  // timeout, and a small one makes connection attempts to a busy ledger fail over and over.
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

RpcLedgerGateway::RpcLedgerGateway(const std::string& target, RpcGatewayOptions options)
    : RpcLedgerGateway(MakeChannel(target, options), options) {}

RpcLedgerGateway::RpcLedgerGateway(std::shared_ptr<grpc::Channel> channel,
                                   RpcGatewayOptions options)
    : channel_(std::move(channel)), options_(options) {}

RpcLedgerGateway::~RpcLedgerGateway() = default;

template <class T, class Call>
GatewayResult<T> RpcLedgerGateway::WithDeadline(GatewayDeadline deadline, Call&& call) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left <= std::chrono::milliseconds(0)) {
    return Fail(GatewayErrc::kUnreachable, "deadline passed before the call");
  }
  // Stubs are cheap; the connection is the shared channel's.
  LedgerClient client(channel_, std::min(left, options_.call_timeout));
  {
    std::lock_guard lock(mu_);
    in_flight_.insert(&client);
  }
  auto result = call(client);
  {
    std::lock_guard lock(mu_);
    in_flight_.erase(&client);
  }
  if (!result) return Fail(GatewayErrcFor(result.error().code), std::move(result.error().message));
  return std::move(*result);
}

void RpcLedgerGateway::CancelInFlight() {
  std::lock_guard lock(mu_);
  for (LedgerClient* client : in_flight_) client->CancelCalls();
}

GatewayResult<payments::LedgerParams> RpcLedgerGateway::GetParams(GatewayDeadline deadline) {
  return WithDeadline<payments::LedgerParams>(
      deadline,
      [](LedgerClient& c) -> RpcResult<payments::LedgerParams> {
        auto info = c.GetInfo();
        if (!info) return std::unexpected(info.error());
        return payments::LedgerParams{info->id, info->challenge_period_seconds,
                                      info->max_batch_items};
      });
}

GatewayResult<uint64_t> RpcLedgerGateway::LastNonce(const Address& account,
                                                    GatewayDeadline deadline) {
  return WithDeadline<uint64_t>(deadline,
                                [&](LedgerClient& c) -> RpcResult<uint64_t> {
                                  auto acct = c.GetAccount(account);
                                  if (!acct) return std::unexpected(acct.error());
                                  return acct->last_nonce;
                                });
}

GatewayResult<ChannelState> RpcLedgerGateway::GetChannel(const ChannelId& channel,
                                                         GatewayDeadline deadline) {
  return WithDeadline<ChannelState>(deadline,
                                    [&](LedgerClient& c) { return c.GetChannel(channel); });
}

GatewayResult<SettleBatchResult> RpcLedgerGateway::SettleBatch(const SettleBatchRequest& request,
                                                               GatewayDeadline deadline) {
  return WithDeadline<SettleBatchResult>(deadline,
                                         [&](LedgerClient& c) { return c.SettleBatch(request); });
}

}  // namespace dvpn::ledger::rpc
