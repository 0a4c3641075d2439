#pragma once
// A packet-mode session's flows at the exit (docs/full-tunnel.md "The exit"): what decides
// whether one IP packet of the session may pass. Packets from the client must come from the
// session's own inner addresses; the first packet of a new flow asks the exit policy (ports:
// Decide; none: DecidePortless) and, when allowed, takes a slot in the session's table and in
// the exit-wide budget, within a token bucket of new flows per second. Packets for the client
// (read from the exit's TUN device) pass only for a flow the session opened, so an address
// handed to a new session never receives the old session's answers; ICMP errors pass when the
// packet they quote belongs to such a flow. Flows end after an idle time that depends on the
// protocol (and TCP's FIN/RST). Pure, single-threaded (the session's executor).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>

#include "tunnel/exit_policy.h"
#include "tunnel/inner_pool.h"
#include "tunnel/ip/flow_key.h"
#include "tunnel/ip/packet.h"
#include "tunnel/rate_limit.h"

namespace dvpn::tunnel {

struct FlowLimits {
  size_t max_flows = 4096;              // per session
  uint32_t new_flows_per_second = 200;  // sustained, per session (refused attempts count too)
  uint32_t new_flows_burst = 500;
  uint64_t tcp_idle_ms = 300'000;    // an open TCP flow
  uint64_t tcp_closing_ms = 10'000;  // after FIN or RST
  uint64_t udp_idle_ms = 60'000;
  uint64_t other_idle_ms = 10'000;  // ICMP echo and other protocols
};

// The exit-wide bound on flows, shared by every session of the exit (same executor).
class FlowBudget {
 public:
  explicit FlowBudget(size_t max_flows) : max_(max_flows) {}
  bool Take() {
    if (used_ >= max_) return false;
    ++used_;
    return true;
  }
  void Give(size_t n) { used_ -= std::min(n, used_); }
  size_t used() const { return used_; }
  size_t max() const { return max_; }

 private:
  size_t max_;
  size_t used_ = 0;
};

enum class FlowVerdict : uint8_t {
  kForward,         // pass it
  kNotFromSession,  // client -> exit: the source is not the session's inner address (spoofing)
  kRefused,         // client -> exit: the exit policy refuses the destination
  kTooManyFlows,    // client -> exit: the session's or the exit's flow table is full
  kRateLimited,     // client -> exit: new flows faster than the session's bucket allows
  kNoFlow,          // exit -> client: no flow of the session's matches (dropped silently)
};
const char* FlowVerdictName(FlowVerdict v);

class SessionFlows {
 public:
  // `policy` and `budget` outlive this; `lease` is the session's inner addresses.
  SessionFlows(const ExitPolicy& policy, FlowBudget& budget, InnerLease lease, FlowLimits limits);
  ~SessionFlows();  // gives the session's flows back to the budget
  SessionFlows(const SessionFlows&) = delete;
  SessionFlows& operator=(const SessionFlows&) = delete;

  // A packet the client sent (parsed and checked by ip::ParsePacket). `host` gives the host as
  // the policy sees it now; it is asked only for a new flow (it may poll the host's addresses:
  // no work on the path of a known flow).
  using HostFn = std::function<const OwnHost&()>;
  FlowVerdict Outbound(const ip::PacketInfo& packet, uint64_t now_ms, const HostFn& host);
  // A packet for the client, read from the exit's TUN device: `bytes` is the whole packet (an
  // ICMP error's quoted packet is read from it).
  FlowVerdict Inbound(const ip::PacketInfo& packet, std::span<const uint8_t> bytes,
                      uint64_t now_ms);
  // Forgets the flows idle past their timeout; returns how many went.
  size_t Expire(uint64_t now_ms);

  size_t size() const { return flows_.size(); }
  const InnerLease& lease() const { return lease_; }

 private:
  enum class State : uint8_t { kOpen, kClosing };
  struct Flow {
    uint64_t last_ms = 0;
    State state = State::kOpen;
  };
  uint64_t IdleLimit(const ip::FlowKey& key, const Flow& flow) const;
  void Touch(Flow& flow, uint8_t protocol, uint8_t tcp_flags, uint64_t now_ms);
  bool IsOurs(const ip::Address& a) const;

  const ExitPolicy& policy_;
  FlowBudget& budget_;
  InnerLease lease_;
  FlowLimits limits_;
  TokenBucket new_flows_;
  std::unordered_map<ip::FlowKey, Flow, ip::FlowKeyHash> flows_;  // keyed client -> destination
};

// ip::Address as the policy's IpAddress, and back (the same layout).
IpAddress ToIpAddress(const ip::Address& a);
ip::Address ToPacketAddress(const IpAddress& a);

}  // namespace dvpn::tunnel
