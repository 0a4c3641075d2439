#include "ctl/daemon_commands.h"

#include <cstdio>
#include <iostream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "dvpn/v1/client.grpc.pb.h"
#include "dvpn/v1/marketplace.grpc.pb.h"
#include "dvpn/v1/node.grpc.pb.h"
#include "ctl/output_internal.h"

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
    return {Exit::kRefused, "the service at " + node + " does not offer that (a seller's node is "
                            "dvpn-node --config; connect/status need dvpn-client)"};
  }
  return {Exit::kRefused, "refused by " + node + ": " + status.error_message()};
}

std::shared_ptr<grpc::Channel> ChannelTo(const std::string& node) {
  return grpc::CreateChannel(node, grpc::InsecureChannelCredentials());
}

void SetDeadline(grpc::ClientContext& ctx, const Options& options) {
  ctx.set_deadline(std::chrono::system_clock::now() + options.timeout);
}

// The names of the mode bits an offer serves (RankedOffer.modes), in bit order.
std::vector<const char*> ModeNames(uint32_t modes) {
  std::vector<const char*> out;
  if (modes & v1::OFFER_MODE_SOCKS) out.push_back("socks");
  if (modes & v1::OFFER_MODE_FULL_TUNNEL) out.push_back("full-tunnel");
  return out;
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
  if (query.full_tunnel) request.mutable_filter()->set_required_modes(v1::OFFER_MODE_FULL_TUNNEL);
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
      Json modes = Json::array();
      for (const char* name : ModeNames(ranked.modes())) modes.push_back(name);
      j["modes"] = modes;
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
  std::printf("%-50s %12s %12s %-10s %8s %-17s  %s\n", "provider", "per MB", "per minute",
              "region", "Mbit/s", "modes", "endpoint");
  for (const auto& ranked : response.offers()) {
    const auto& o = ranked.offer();
    std::string endpoint = o.endpoints().empty()
                               ? "-"
                               : o.endpoints(0).host() + ":" + std::to_string(o.endpoints(0).port());
    std::string modes;
    for (const char* name : ModeNames(ranked.modes())) {
      modes += (modes.empty() ? "" : "+") + std::string(name);
    }
    std::printf("%-50s %12s %12s %-10s %8u %-17s  %s\n", ranked.provider_address().c_str(),
                Credits(o.price_per_mb()).c_str(), Credits(o.price_per_minute()).c_str(),
                o.region().empty() ? "-" : o.region().c_str(), o.capacity_mbps(),
                modes.empty() ? "-" : modes.c_str(), endpoint.c_str());
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

namespace {

Json StatusJson(const v1::ClientStatus& s) {
  Json j;
  j["state"] = s.state();
  j["wallet"] = s.wallet_address();
  j["provider"] = s.provider_address();
  j["endpoint"] = s.provider_endpoint();
  PutAmount(j, "price_per_mb", Amount::FromMicro(s.price_per_mb_micro()));
  j["socks"] = s.socks_address();
  j["bytes_sent"] = s.bytes_sent();
  j["bytes_received"] = s.bytes_received();
  PutAmount(j, "spent_session", Amount::FromMicro(s.spent_session_micro()));
  PutAmount(j, "spent_today", Amount::FromMicro(s.spent_today_micro()));
  PutAmount(j, "daily_cap", Amount::FromMicro(s.daily_cap_micro()));
  j["reconnects"] = s.reconnects();
  j["last_error"] = s.last_error();
  j["mode"] = s.mode();
  j["inner_ipv4"] = s.inner_ipv4();
  j["inner_ipv6"] = s.inner_ipv6();
  j["transport"] = s.transport();
  return j;
}

void PrintStatus(const Options& options, const v1::ClientStatus& s) {
  if (options.json) {
    std::cout << StatusJson(s).dump(2) << "\n";
    return;
  }
  Lines lines = {{"state", s.state()}, {"wallet", s.wallet_address()}};
  if (!s.provider_address().empty()) {
    lines.emplace_back("provider", s.provider_address());
    lines.emplace_back("endpoint", s.provider_endpoint());
    lines.emplace_back("price", Credits(s.price_per_mb_micro()) + " per MB");
  }
  if (!s.socks_address().empty()) lines.emplace_back("socks5", s.socks_address());
  if (!s.mode().empty()) lines.emplace_back("mode", s.mode());
  if (!s.inner_ipv4().empty()) {
    lines.emplace_back("inner addresses", s.inner_ipv4() + ", " + s.inner_ipv6());
  }
  if (!s.transport().empty()) lines.emplace_back("transport", s.transport());
  lines.emplace_back("traffic", std::to_string(s.bytes_received()) + " bytes in, " +
                                    std::to_string(s.bytes_sent()) + " out");
  lines.emplace_back("spent", Credits(s.spent_session_micro()) + " this connection, " +
                                  Credits(s.spent_today_micro()) + " today" +
                                  (s.daily_cap_micro() ? " (cap " + Credits(s.daily_cap_micro()) + ")"
                                                       : ""));
  if (!s.last_error().empty()) lines.emplace_back("last error", s.last_error());
  std::cout << FormatLines(lines);
}

CliResult<v1::ClientStatus> AskStatus(v1::ClientControl::Stub& stub, const Options& options,
                                      const std::string& client) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options);
  v1::ClientStatus status;
  if (auto st = stub.GetStatus(&ctx, v1::GetClientStatusRequest(), &status); !st.ok()) {
    return std::unexpected(NodeFailure(client, st));
  }
  return status;
}

}  // namespace

CliResult<void> Connect(const Options& options, const std::string& client,
                        const ConnectArgs& args) {
  v1::ConnectRequest request;
  if (!args.max_price.empty()) {
    auto price = Amount::Parse(args.max_price);
    if (!price || price->IsZero()) {
      return Fail(Exit::kUsage, "--max-price: not an amount of credits: " + args.max_price);
    }
    request.set_max_price_per_mb_micro(price->micro());
  }
  request.set_region(args.region);
  request.set_provider_address(args.provider);
  request.set_wait_ms(args.wait_s * 1000);
  request.set_full_tunnel(args.full_tunnel);
  auto stub = v1::ClientControl::NewStub(ChannelTo(client));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options.timeout +
                   std::chrono::seconds(args.wait_s));
  v1::ClientStatus status;
  if (auto st = stub->Connect(&ctx, request, &status); !st.ok()) {
    return std::unexpected(NodeFailure(client, st));
  }
  PrintStatus(options, status);
  if (status.state() != "connected") {
    return Fail(Exit::kRefused, "not connected (" + status.state() + ")" +
                                    (status.last_error().empty() ? "" : ": " + status.last_error()));
  }
  return {};
}

CliResult<void> Disconnect(const Options& options, const std::string& client) {
  auto stub = v1::ClientControl::NewStub(ChannelTo(client));
  grpc::ClientContext ctx;
  SetDeadline(ctx, options);
  v1::ClientStatus status;
  if (auto st = stub->Disconnect(&ctx, v1::DisconnectRequest(), &status); !st.ok()) {
    return std::unexpected(NodeFailure(client, st));
  }
  PrintStatus(options, status);
  return {};
}

CliResult<void> ClientStatus(const Options& options, const std::string& client,
                             uint32_t watch_s, bool check) {
  auto stub = v1::ClientControl::NewStub(ChannelTo(client));
  DVPNCTL_TRY(first, AskStatus(*stub, options, client));
  if (watch_s == 0) {
    PrintStatus(options, first);
    if (check && (first.state() != "connected" || first.socks_address().empty())) {
      return Fail(Exit::kRefused, "not connected (" + first.state() + ")" +
                                      (first.last_error().empty() ? "" : ": " + first.last_error()));
    }
    return {};
  }
  // The live view: one line a second, rates from the change of the counters.
  v1::ClientStatus last = first;
  auto last_time = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < watch_s; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    DVPNCTL_TRY(now, AskStatus(*stub, options, client));
    const auto t = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(t - last_time).count();
    auto rate = [&](uint64_t now_bytes, uint64_t then_bytes) {
      return now_bytes >= then_bytes ? (now_bytes - then_bytes) * 8.0 / 1e6 / secs : 0.0;
    };
    const double down = rate(now.bytes_received(), last.bytes_received());
    const double up = rate(now.bytes_sent(), last.bytes_sent());
    if (options.json) {
      Json j = StatusJson(now);
      j["down_mbps"] = down;
      j["up_mbps"] = up;
      std::cout << j.dump() << "\n";
    } else {
      std::printf("%-12s down %8.2f Mbit/s  up %8.2f Mbit/s  spent %s (today %s)  %s\n",
                  now.state().c_str(), down, up, Credits(now.spent_session_micro()).c_str(),
                  Credits(now.spent_today_micro()).c_str(), now.provider_address().c_str());
    }
    std::cout.flush();
    last = now;
    last_time = t;
  }
  return {};
}

}  // namespace dvpn::ctl
