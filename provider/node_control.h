#pragma once
// dvpn.v1.NodeControl (proto/dvpn/v1/node.proto, docs/node.md §3): the seller's control
// service, and the dashboard's JSON and Prometheus renderings of the same answers, so that
// every figure has one source.
//
// The service checks the caller's input and maps errors to gRPC codes; the work is done by a
// NodeBackend (the running node). Thread-safety: the backend's methods are called from gRPC's
// threads and must be thread-safe.

#include <chrono>
#include <string>

#include "dvpn/v1/node.grpc.pb.h"
#include "payments/metering.h"
#include "provider/errc.h"

namespace dvpn::node {

class NodeBackend {
 public:
  virtual ~NodeBackend() = default;
  virtual v1::GetStatusResponse Status() = 0;
  virtual v1::ListSessionsResponse Sessions() = 0;
  virtual v1::GetEarningsResponse Earnings() = 0;
  virtual v1::SettleNowResponse SettleNow(std::chrono::milliseconds timeout) = 0;
  // Re-signs and publishes the offer at `price` (already checked: marketplace::CheckSellerPrice)
  // and offers it to new sessions. Error kOverCap or kOfferRefused, saying why the offer could
  // not be published (nothing changed then).
  virtual Result<v1::Offer, Errc> SetPrice(const payments::Price& price) = 0;
};

class NodeControlService final : public v1::NodeControl::Service {
 public:
  explicit NodeControlService(NodeBackend& backend) : backend_(backend) {}

  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::GetStatusResponse* reply) override;
  grpc::Status ListSessions(grpc::ServerContext*, const v1::ListSessionsRequest*,
                            v1::ListSessionsResponse* reply) override;
  grpc::Status GetEarnings(grpc::ServerContext*, const v1::GetEarningsRequest*,
                           v1::GetEarningsResponse* reply) override;
  // timeout_ms 0 means 10 s; above 60 s is INVALID_ARGUMENT.
  grpc::Status SettleNow(grpc::ServerContext*, const v1::SettleNowRequest* request,
                         v1::SettleNowResponse* reply) override;
  // INVALID_ARGUMENT for a price marketplace::CheckSellerPrice refuses (a zero price per MB, or
  // above 1,000,000 credits); FAILED_PRECONDITION when the offer could not be published.
  grpc::Status SetPrice(grpc::ServerContext*, const v1::SetPriceRequest* request,
                        v1::SetPriceResponse* reply) override;

 private:
  NodeBackend& backend_;
};

// GET /api/status and /api/earnings (docs/node.md §4): money as integer micro-credits.
std::string StatusJson(const v1::GetStatusResponse& status);
std::string EarningsJson(const v1::GetEarningsResponse& earnings);
// GET /metrics: Prometheus text exposition format 0.0.4.
std::string MetricsText(const v1::GetStatusResponse& status,
                        const v1::GetEarningsResponse& earnings);

}  // namespace dvpn::node
