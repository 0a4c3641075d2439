#include "provider/node_control.h"

#include <nlohmann/json.hpp>

#include "common/bytes.h"
#include "marketplace/offer.h"

namespace dvpn::node {
namespace {

constexpr uint32_t kDefaultSettleTimeoutMs = 10'000;
constexpr uint32_t kMaxSettleTimeoutMs = 60'000;

// One sample line: name{labels} value.
void Metric(std::string& out, const std::string& name, const char* type, const char* help,
            uint64_t value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  out += name + " " + std::to_string(value) + "\n";
}

}  // namespace

grpc::Status NodeControlService::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                                           v1::GetStatusResponse* reply) {
  *reply = backend_.Status();
  return grpc::Status::OK;
}

grpc::Status NodeControlService::ListSessions(grpc::ServerContext*, const v1::ListSessionsRequest*,
                                              v1::ListSessionsResponse* reply) {
  *reply = backend_.Sessions();
  return grpc::Status::OK;
}

grpc::Status NodeControlService::GetEarnings(grpc::ServerContext*, const v1::GetEarningsRequest*,
                                             v1::GetEarningsResponse* reply) {
  *reply = backend_.Earnings();
  return grpc::Status::OK;
}

grpc::Status NodeControlService::SettleNow(grpc::ServerContext*,
                                           const v1::SettleNowRequest* request,
                                           v1::SettleNowResponse* reply) {
  uint32_t timeout = request->timeout_ms() == 0 ? kDefaultSettleTimeoutMs : request->timeout_ms();
  if (timeout > kMaxSettleTimeoutMs) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "timeout_ms: at most 60000");
  }
  *reply = backend_.SettleNow(std::chrono::milliseconds(timeout));
  return grpc::Status::OK;
}

grpc::Status NodeControlService::SetPrice(grpc::ServerContext*, const v1::SetPriceRequest* request,
                                          v1::SetPriceResponse* reply) {
  payments::Price price{Amount::FromMicro(request->price_per_mb_micro()),
                        Amount::FromMicro(request->price_per_minute_micro())};
  if (auto ok = marketplace::CheckSellerPrice(price.per_mb, price.per_minute); !ok) {
    // A zero price is the per-MB field's; a price too high may be either.
    const char* field =
        ok.error().code == marketplace::Errc::kTooLarge ? "price: " : "price_per_mb_micro: ";
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, field + ok.error().message);
  }
  auto offer = backend_.SetPrice(price);
  if (!offer) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, offer.error().message);
  }
  *reply->mutable_offer() = std::move(*offer);
  return grpc::Status::OK;
}

std::string StatusJson(const v1::GetStatusResponse& s) {
  nlohmann::json j;
  j["version"] = s.version();
  j["provider"] = s.provider_address();
  j["uptime_s"] = s.uptime_s();
  if (s.has_offer()) {
    const auto& o = s.offer();
    j["offer"] = {{"seq", o.seq()},
                  {"price_per_mb_micro", o.price_per_mb()},
                  {"price_per_minute_micro", o.price_per_minute()},
                  {"region", o.region()},
                  {"capacity_mbps", o.capacity_mbps()},
                  {"max_sessions", o.max_sessions()},
                  {"expires_unix", o.expires_unix()},
                  {"retired", o.retired()}};
  } else {
    j["offer"] = nullptr;
  }
  j["sessions_open"] = s.sessions_open();
  j["bytes_metered"] = s.bytes_metered();
  j["month_bytes_metered"] = s.month_bytes_metered();
  j["monthly_data_cap_bytes"] = s.monthly_data_cap_bytes();
  j["accepting"] = s.accepting();
  j["not_accepting_reason"] = s.not_accepting_reason();
  j["gossip"] = {{"peers", s.gossip_peers()}, {"offers", s.gossip_offers()}};
  if (s.has_full_tunnel()) {
    const v1::FullTunnelStatus& f = s.full_tunnel();
    nlohmann::json dropped = nlohmann::json::object();
    for (const auto& [reason, n] : f.dropped()) dropped[reason] = n;
    j["full_tunnel"] = {{"sessions", f.sessions()},
                        {"flows", f.flows()},
                        {"packets_from_clients", f.packets_from_clients()},
                        {"packets_to_clients", f.packets_to_clients()},
                        {"packets_to_clients_tcp", f.packets_to_clients_tcp()},
                        {"packets_held", f.packets_held()},
                        {"dropped", std::move(dropped)},
                        {"io",
                         {{"offloads", f.io().offloads()},
                          {"tun_reads", f.io().tun_reads()},
                          {"tun_super_reads", f.io().tun_super_reads()},
                          {"tun_written", f.io().tun_written()},
                          {"tun_writes", f.io().tun_writes()},
                          {"udp_sent", f.io().udp_sent()},
                          {"udp_send_calls", f.io().udp_send_calls()},
                          {"udp_received", f.io().udp_received()},
                          {"udp_receive_calls", f.io().udp_receive_calls()}}}};
  } else {
    j["full_tunnel"] = nullptr;
  }
  return j.dump();
}

std::string EarningsJson(const v1::GetEarningsResponse& e) {
  nlohmann::json j;
  j["settled_micro"] = e.settled_micro();
  j["unsettled_micro"] = e.unsettled_micro();
  j["lost_micro"] = e.lost_micro();
  j["settlements_ok"] = e.settlements_ok();
  j["settlements_failed"] = e.settlements_failed();
  auto points = nlohmann::json::array();
  for (const auto& p : e.history()) {
    points.push_back({{"t_unix_ms", p.t_unix_ms()},
                      {"settled_micro", p.settled_micro()},
                      {"unsettled_micro", p.unsettled_micro()},
                      {"bytes_metered", p.bytes_metered()}});
  }
  j["points"] = std::move(points);
  return j.dump();
}

std::string MetricsText(const v1::GetStatusResponse& s, const v1::GetEarningsResponse& e) {
  std::string out;
  Metric(out, "dvpn_uptime_seconds", "gauge", "Seconds since the node started.", s.uptime_s());
  Metric(out, "dvpn_sessions_open", "gauge", "Tunnels open now.", s.sessions_open());
  Metric(out, "dvpn_metered_bytes_total", "counter",
         "Metered tunnel bytes (both directions) since start.", s.bytes_metered());
  Metric(out, "dvpn_month_metered_bytes", "gauge",
         "Metered bytes this calendar month (the data cap's count).", s.month_bytes_metered());
  Metric(out, "dvpn_accepting", "gauge", "1 while new sessions are accepted.", s.accepting());
  Metric(out, "dvpn_offer_price_per_mb_micro", "gauge", "Advertised price per MB, micro-credits.",
         s.has_offer() ? s.offer().price_per_mb() : 0);
  Metric(out, "dvpn_earnings_settled_micro", "gauge",
         "Credits settled on the ledger, micro-credits.", e.settled_micro());
  Metric(out, "dvpn_earnings_unsettled_micro", "gauge",
         "Accepted promises not settled yet, micro-credits.", e.unsettled_micro());
  Metric(out, "dvpn_earnings_lost_micro", "gauge",
         "Unsettled value of channels that died, micro-credits.", e.lost_micro());
  out += "# HELP dvpn_settlements_total Settlement batches by result.\n"
         "# TYPE dvpn_settlements_total counter\n";
  out += "dvpn_settlements_total{result=\"ok\"} " + std::to_string(e.settlements_ok()) + "\n";
  out += "dvpn_settlements_total{result=\"failed\"} " + std::to_string(e.settlements_failed()) +
         "\n";
  Metric(out, "dvpn_gossip_peers", "gauge", "Gossip peers connected.", s.gossip_peers());
  Metric(out, "dvpn_gossip_offers", "gauge", "Offers in the node's book.", s.gossip_offers());
  out += "# HELP dvpn_gossip_offers_refused_total Offers refused by reason.\n"
         "# TYPE dvpn_gossip_offers_refused_total counter\n";
  for (const auto& [reason, count] : s.gossip_offers_refused()) {
    out += "dvpn_gossip_offers_refused_total{reason=\"" + reason + "\"} " +
           std::to_string(count) + "\n";
  }
  if (s.has_full_tunnel()) {
    const v1::FullTunnelStatus& f = s.full_tunnel();
    Metric(out, "dvpn_full_tunnel_sessions", "gauge", "Full-tunnel packet sessions now.",
           f.sessions());
    Metric(out, "dvpn_full_tunnel_flows", "gauge", "Full-tunnel flows of every session now.",
           f.flows());
    out += "# HELP dvpn_full_tunnel_packets_total Full-tunnel packets forwarded by direction.\n"
           "# TYPE dvpn_full_tunnel_packets_total counter\n";
    out += "dvpn_full_tunnel_packets_total{direction=\"from_clients\"} " +
           std::to_string(f.packets_from_clients()) + "\n";
    out += "dvpn_full_tunnel_packets_total{direction=\"to_clients\"} " +
           std::to_string(f.packets_to_clients()) + "\n";
    Metric(out, "dvpn_full_tunnel_held_total", "counter",
           "Full-tunnel packets that waited at a paid session's forwarding limit.",
           f.packets_held());
    out += "# HELP dvpn_full_tunnel_dropped_total Full-tunnel packets dropped by reason.\n"
           "# TYPE dvpn_full_tunnel_dropped_total counter\n";
    for (const auto& [reason, count] : f.dropped()) {
      out += "dvpn_full_tunnel_dropped_total{reason=\"" + reason + "\"} " +
             std::to_string(count) + "\n";
    }
    // Packets against the system calls that carried them: what the offloads save.
    const v1::FullTunnelIo& io = f.io();
    out += "# HELP dvpn_full_tunnel_io_packets_total Full-tunnel packets (datagrams) by operation.\n"
           "# TYPE dvpn_full_tunnel_io_packets_total counter\n";
    const std::pair<const char*, uint64_t> packets[] = {{"tun_read", io.tun_reads()},
                                                         {"tun_write", io.tun_written()},
                                                         {"udp_send", io.udp_sent()},
                                                         {"udp_receive", io.udp_received()}};
    for (const auto& [op, n] : packets) {
      out += std::string("dvpn_full_tunnel_io_packets_total{op=\"") + op + "\"} " +
             std::to_string(n) + "\n";
    }
    out += "# HELP dvpn_full_tunnel_io_calls_total Full-tunnel system calls by operation.\n"
           "# TYPE dvpn_full_tunnel_io_calls_total counter\n";
    const std::pair<const char*, uint64_t> calls[] = {{"tun_write", io.tun_writes()},
                                                       {"udp_send", io.udp_send_calls()},
                                                       {"udp_receive", io.udp_receive_calls()}};
    for (const auto& [op, n] : calls) {
      out += std::string("dvpn_full_tunnel_io_calls_total{op=\"") + op + "\"} " +
             std::to_string(n) + "\n";
    }
  }
  return out;
}

}  // namespace dvpn::node
