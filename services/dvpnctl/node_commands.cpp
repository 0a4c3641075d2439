#include "services/dvpnctl/node_commands.h"

#include <cstdio>
#include <iostream>

#include <grpcpp/grpcpp.h>

#include "dvpn/v1/marketplace.grpc.pb.h"
#include "dvpn/v1/node.grpc.pb.h"
#include "services/dvpnctl/output.h"

namespace dvpn::ctl {
namespace {

std::string Credits(uint64_t micro) { return Amount::FromMicro(micro).ToString(); }

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// A node call's failure: unreachable or too slow is kUnreachable, anything else kRefused.
Error<Exit> NodeFailure(const std::string& node, const grpc::Status& status) {
  const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  if (unreachable) {
    return {Exit::kUnreachable, "cannot reach the node at " + node + ": " + status.error_message()};
  }
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return {Exit::kRefused, "the service at " + node + " is not a seller's dvpn-node (--config)"};
  }
  return {Exit::kRefused, "the node refused: " + status.error_message()};
}

std::shared_ptr<grpc::Channel> ChannelTo(const std::string& node) {
  return grpc::CreateChannel(node, grpc::InsecureChannelCredentials());
}

void SetDeadline(grpc::ClientContext& ctx, const Options& options) {
  ctx.set_deadline(std::chrono::system_clock::now() + options.timeout);
}

}  // namespace

CliResult<void> ListOffers(const Options& options, const std::string& node,
                           const OffersQuery& query) {
  v1::ListOffersRequest request;
  if (!query.max_price.empty()) {
    auto price = Amount::Parse(query.max_price);
    if (!price) return Fail(Exit::kUsage, "--max-price: not an amount of credits: " + query.max_price);
    request.mutable_filter()->set_max_price_per_mb(price->micro());
  }
  request.mutable_filter()->set_region(query.region);
  request.mutable_filter()->set_limit(query.limit);
  auto stub = v1::OfferBook::NewStub(ChannelTo(node));
  grpc::ClientContext ctx;
  SetDeadline(ctx, options);
  v1::ListOffersResponse response;
  if (auto st = stub->ListOffers(&ctx, request, &response); !st.ok()) {
    return std::unexpected(NodeFailure(node, st));
  }
  if (options.json) {
    Json out = Json::array();
    for (const auto& ranked : response.offers()) {
      const auto& o = ranked.offer();
      Json j;
      j["provider"] = ranked.provider_address();
      j["offer_id"] = o.offer_id();
      j["seq"] = o.seq();
      PutAmount(j, "price_per_mb", Amount::FromMicro(o.price_per_mb()));
      PutAmount(j, "price_per_minute", Amount::FromMicro(o.price_per_minute()));
      j["region"] = o.region();
      j["capacity_mbps"] = o.capacity_mbps();
      j["max_sessions"] = o.max_sessions();
      Json endpoints = Json::array();
      for (const auto& e : o.endpoints()) endpoints.push_back(e.host() + ":" + std::to_string(e.port()));
      j["endpoints"] = endpoints;
      j["expires"] = UtcTime(o.expires_unix());
      j["score"] = ranked.score();
      out.push_back(std::move(j));
    }
    std::cout << out.dump(2) << "\n";
    return {};
  }
  if (response.offers().empty()) {
    std::cout << "no offers match\n";
    return {};
  }
  std::printf("%-50s %12s %12s %-10s %8s  %s\n", "provider", "per MB", "per minute", "region",
              "Mbit/s", "endpoint");
  for (const auto& ranked : response.offers()) {
    const auto& o = ranked.offer();
    std::string endpoint = o.endpoints().empty()
                               ? "-"
                               : o.endpoints(0).host() + ":" + std::to_string(o.endpoints(0).port());
    std::printf("%-50s %12s %12s %-10s %8u  %s\n", ranked.provider_address().c_str(),
                Credits(o.price_per_mb()).c_str(), Credits(o.price_per_minute()).c_str(),
                o.region().empty() ? "-" : o.region().c_str(), o.capacity_mbps(), endpoint.c_str());
  }
  return {};
}

CliResult<void> ShowEarnings(const Options& options, const std::string& node) {
  auto stub = v1::NodeControl::NewStub(ChannelTo(node));
  v1::GetStatusResponse status;
  v1::GetEarningsResponse earnings;
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, options);
    if (auto st = stub->GetStatus(&ctx, v1::GetStatusRequest(), &status); !st.ok()) {
      return std::unexpected(NodeFailure(node, st));
    }
  }
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, options);
    if (auto st = stub->GetEarnings(&ctx, v1::GetEarningsRequest(), &earnings); !st.ok()) {
      return std::unexpected(NodeFailure(node, st));
    }
  }
  if (options.json) {
    Json j;
    j["provider"] = status.provider_address();
    PutAmount(j, "settled", Amount::FromMicro(earnings.settled_micro()));
    PutAmount(j, "unsettled", Amount::FromMicro(earnings.unsettled_micro()));
    PutAmount(j, "lost", Amount::FromMicro(earnings.lost_micro()));
    j["settlements_ok"] = earnings.settlements_ok();
    j["settlements_failed"] = earnings.settlements_failed();
    j["last_settlement_error"] = earnings.last_settlement_error();
    j["sessions_open"] = status.sessions_open();
    j["bytes_metered"] = status.bytes_metered();
    Json channels = Json::array();
    for (const auto& c : earnings.channels()) {
      Json cj;
      cj["channel_id"] = Hex(c.channel_id());
      PutAmount(cj, "cumulative", Amount::FromMicro(c.cumulative_micro()));
      PutAmount(cj, "settled", Amount::FromMicro(c.settled_micro()));
      PutAmount(cj, "unsettled", Amount::FromMicro(c.unsettled_micro()));
      cj["state"] = c.state();
      channels.push_back(std::move(cj));
    }
    j["channels"] = channels;
    std::cout << j.dump(2) << "\n";
    return {};
  }
  Lines lines = {
      {"provider", status.provider_address()},
      {"settled", Credits(earnings.settled_micro())},
      {"unsettled", Credits(earnings.unsettled_micro())},
      {"lost", Credits(earnings.lost_micro())},
      {"settlements", std::to_string(earnings.settlements_ok()) + " ok, " +
                          std::to_string(earnings.settlements_failed()) + " failed"},
      {"sessions open", std::to_string(status.sessions_open())},
      {"traffic", std::to_string(status.bytes_metered()) + " metered bytes"},
  };
  if (!earnings.last_settlement_error().empty()) {
    lines.emplace_back("last error", earnings.last_settlement_error());
  }
  std::cout << FormatLines(lines);
  for (const auto& c : earnings.channels()) {
    std::printf("channel %s  unsettled %s  (promised %s, settled %s, %s)\n",
                Hex(c.channel_id()).substr(0, 16).c_str(), Credits(c.unsettled_micro()).c_str(),
                Credits(c.cumulative_micro()).c_str(), Credits(c.settled_micro()).c_str(),
                c.state().c_str());
  }
  return {};
}

}  // namespace dvpn::ctl
