#include "tunnel/packet_flows.h"

#include <sodium.h>

namespace dvpn::tunnel {

namespace {

constexpr uint8_t kIcmpDestinationUnreachable = 3;
constexpr uint8_t kIcmpTimeExceeded = 11;
constexpr uint8_t kIcmpParameterProblem = 12;
constexpr uint8_t kIcmp6DestinationUnreachable = 1;
constexpr uint8_t kIcmp6PacketTooBig = 2;
constexpr uint8_t kIcmp6TimeExceeded = 3;
constexpr uint8_t kIcmp6ParameterProblem = 4;

bool HasPorts(uint8_t protocol) { return protocol == ip::kProtoTcp || protocol == ip::kProtoUdp; }

// The ICMP errors that carry the packet they answer, which the client needs back (path MTU
// discovery, traceroute, unreachable destinations).
bool IsQuotingError(const ip::PacketInfo& p) {
  if (p.family == ip::Family::kV4) {
    return p.protocol == ip::kProtoIcmp &&
           (p.icmp_type == kIcmpDestinationUnreachable || p.icmp_type == kIcmpTimeExceeded ||
            p.icmp_type == kIcmpParameterProblem);
  }
  return p.protocol == ip::kProtoIcmpv6 &&
         (p.icmp_type == kIcmp6DestinationUnreachable || p.icmp_type == kIcmp6PacketTooBig ||
          p.icmp_type == kIcmp6TimeExceeded || p.icmp_type == kIcmp6ParameterProblem);
}

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// The flow of the packet an ICMP error quotes (the client's own packet, as it left the exit:
// its header and at least 8 bytes). Lenient on purpose: the quote is cut short. nullopt when
// too little is quoted to name a flow.
std::optional<ip::FlowKey> QuotedFlow(std::span<const uint8_t> quote) {
  if (quote.empty()) return std::nullopt;
  ip::FlowKey k;
  size_t l4 = 0;
  if ((quote[0] >> 4) == 4) {
    const size_t ihl = static_cast<size_t>(quote[0] & 0x0f) * 4;
    if (ihl < 20 || quote.size() < ihl) return std::nullopt;
    k.family = ip::Family::kV4;
    k.protocol = quote[9];
    std::copy_n(quote.begin() + 12, 4, k.src.bytes.begin());
    std::copy_n(quote.begin() + 16, 4, k.dst.bytes.begin());
    l4 = ihl;
  } else if ((quote[0] >> 4) == 6) {
    if (quote.size() < 40) return std::nullopt;
    k.family = ip::Family::kV6;
    k.protocol = quote[6];  // extension headers are not walked: such a quote names no ports
    std::copy_n(quote.begin() + 8, 16, k.src.bytes.begin());
    std::copy_n(quote.begin() + 24, 16, k.dst.bytes.begin());
    l4 = 40;
  } else {
    return std::nullopt;
  }
  k.src.family = k.dst.family = k.family;
  if (HasPorts(k.protocol)) {
    if (quote.size() < l4 + 4) return std::nullopt;
    k.src_port = Get16(&quote[l4]);
    k.dst_port = Get16(&quote[l4 + 2]);
  } else if (k.protocol == ip::kProtoIcmp || k.protocol == ip::kProtoIcmpv6) {
    if (quote.size() < l4 + 6) return std::nullopt;
    k.src_port = k.dst_port = Get16(&quote[l4 + 4]);  // an echo's identifier
  }
  return k;
}

}  // namespace

const char* FlowVerdictName(FlowVerdict v) {
  switch (v) {
    case FlowVerdict::kForward:
      return "forward";
    case FlowVerdict::kNotFromSession:
      return "not from the session";
    case FlowVerdict::kRefused:
      return "refused by the exit policy";
    case FlowVerdict::kTooManyFlows:
      return "too many flows";
    case FlowVerdict::kRateLimited:
      return "new flows rate-limited";
    case FlowVerdict::kNoFlow:
      return "no flow";
  }
  return "unknown";
}

IpAddress ToIpAddress(const ip::Address& a) {
  IpAddress out;
  out.family = a.family == ip::Family::kV4 ? IpAddress::Family::kV4 : IpAddress::Family::kV6;
  out.bytes = a.bytes;
  return out;
}

SessionFlows::SessionFlows(const ExitPolicy& policy, FlowBudget& budget, InnerLease lease,
                           FlowLimits limits)
    : policy_(policy),
      budget_(budget),
      lease_(lease),
      limits_(limits),
      new_flows_(limits.new_flows_per_second, limits.new_flows_burst),
      // A per-session random seed: a client cannot aim its flows at one bucket of the table.
      flows_(16, ip::FlowKeyHash{(uint64_t{randombytes_random()} << 32) | randombytes_random()}) {}

SessionFlows::~SessionFlows() { budget_.Give(flows_.size()); }

bool SessionFlows::IsOurs(const ip::Address& a) const {
  const IpAddress x = ToIpAddress(a);
  return x == lease_.v4 || x == lease_.v6;
}

uint64_t SessionFlows::IdleLimit(const ip::FlowKey& key, const Flow& flow) const {
  if (key.protocol == ip::kProtoTcp) {
    return flow.state == State::kClosing ? limits_.tcp_closing_ms : limits_.tcp_idle_ms;
  }
  if (key.protocol == ip::kProtoUdp) return limits_.udp_idle_ms;
  return limits_.other_idle_ms;
}

void SessionFlows::Touch(Flow& flow, uint8_t protocol, uint8_t tcp_flags, uint64_t now_ms) {
  flow.last_ms = std::max(flow.last_ms, now_ms);
  if (protocol == ip::kProtoTcp && (tcp_flags & (ip::kTcpFin | ip::kTcpRst))) {
    flow.state = State::kClosing;
  }
}

ip::Address ToPacketAddress(const IpAddress& a) {
  ip::Address out;
  out.family = a.family == IpAddress::Family::kV4 ? ip::Family::kV4 : ip::Family::kV6;
  out.bytes = a.bytes;
  return out;
}

FlowVerdict SessionFlows::Outbound(const ip::PacketInfo& p, uint64_t now_ms, const HostFn& host) {
  if (!IsOurs(p.src)) return FlowVerdict::kNotFromSession;
  const ip::FlowKey key = ip::MakeFlowKey(p);
  if (auto it = flows_.find(key); it != flows_.end()) {
    Touch(it->second, p.protocol, p.tcp_flags, now_ms);
    return FlowVerdict::kForward;
  }
  // A new flow: every attempt, allowed or not, spends a token, so a client cannot make the
  // exit evaluate its policy faster than the bucket allows.
  if (!new_flows_.Take(now_ms)) return FlowVerdict::kRateLimited;
  const IpAddress dst = ToIpAddress(p.dst);
  const OwnHost& own = host();
  const ExitDecision d = HasPorts(p.protocol) ? policy_.Decide(dst, p.dst_port, own)
                                              : policy_.DecidePortless(dst, own);
  if (!d.allowed) return FlowVerdict::kRefused;
  if (flows_.size() >= limits_.max_flows) {
    Expire(now_ms);
    if (flows_.size() >= limits_.max_flows) return FlowVerdict::kTooManyFlows;
  }
  if (!budget_.Take()) return FlowVerdict::kTooManyFlows;
  Flow& flow = flows_[key];
  Touch(flow, p.protocol, p.tcp_flags, now_ms);
  return FlowVerdict::kForward;
}

FlowVerdict SessionFlows::Inbound(const ip::PacketInfo& p, std::span<const uint8_t> bytes,
                                  uint64_t now_ms) {
  if (!IsOurs(p.dst)) return FlowVerdict::kNoFlow;
  if (IsQuotingError(p)) {
    // The error quotes the client's packet (as it left: from the client's inner address).
    auto quoted = QuotedFlow(bytes.subspan(std::min<size_t>(p.payload_offset, bytes.size())));
    if (!quoted || !IsOurs(quoted->src)) return FlowVerdict::kNoFlow;
    return flows_.contains(*quoted) ? FlowVerdict::kForward : FlowVerdict::kNoFlow;
  }
  auto it = flows_.find(ip::MakeFlowKey(p).Reversed());
  if (it == flows_.end()) return FlowVerdict::kNoFlow;
  Touch(it->second, p.protocol, p.tcp_flags, now_ms);
  return FlowVerdict::kForward;
}

size_t SessionFlows::Expire(uint64_t now_ms) {
  const size_t before = flows_.size();
  std::erase_if(flows_, [&](const auto& entry) {
    return now_ms > entry.second.last_ms &&
           now_ms - entry.second.last_ms >= IdleLimit(entry.first, entry.second);
  });
  const size_t gone = before - flows_.size();
  budget_.Give(gone);
  return gone;
}

}  // namespace dvpn::tunnel
