#pragma once
// The exit's packet mode (docs/full-tunnel.md "The exit"): one TUN device, its NAT table, one UDP
// socket and the inner address pools serve every packet-mode session of the exit.
//
// A tunnel asks with PACKET_SETUP; Setup() leases the session its inner addresses, reserves a
// receiver index on the UDP socket and answers with PACKET_READY. From then on each packet from
// the client (a datagram that authenticated, or a PACKET frame of the TCP fallback) is parsed,
// must come from the session's inner address, passes the session's flow table (the exit policy
// per new flow, the bounds, the new-flow rate) and is metered before it is written to the TUN
// device; each packet the kernel routes back into the TUN device is given to the session that
// owns its destination address, passes only for a flow that session opened, is metered and goes
// to the client by UDP when the client's datagrams arrive (the last one at most 30 s ago), else
// in a PACKET frame. A refused flow gets ICMP "administratively prohibited" back through the
// tunnel, a packet above the inner MTU ICMP "too big"; every other drop is counted by reason and
// reported in a summary line, never logged one by one; no destination is logged unless the
// operator set log_destinations.
//
// Payments: a packet is forwarded only while its tunnel may forward it (not paused, within the
// forwarding limit: TunnelConnection::MayForwardPacket), so a client that stops paying stops
// getting packets through, both ways. What meets the limit waits in the session's PacketHold
// (bounded, 100 ms at most) and goes on in order when the limit rises (docs/full-tunnel.md
// "Held at the limit").
//
// Threading: the exit's single io thread; nothing here is thread-safe. Ownership: held by
// shared_ptr (the ExitServer and the setup handlers of its tunnels); Stop() releases the device,
// the table and the socket.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/result.h"
#include "tunnel/exit_policy.h"
#include "tunnel/inner_pool.h"
#include "tunnel/ip_prefix.h"
#include "tunnel/packet_flows.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/datagram_endpoint.h"
#include "tunnel/session/packet_hold.h"
#include "tunnel/session/tunnel_connection.h"
#include "tunnel/session/udp_batch.h"
#include "tunnel/ip/packet.h"

namespace dvpn::tunnel::session {

class TunIo;
class ExitPacketSession;

enum class ExitPacketsErrc {
  kBadConfig = 1,  // pools, MTU or names out of range
  kDevice,         // the TUN device, its addresses or link (privilege: CAP_NET_ADMIN)
  kNat,            // the nftables table, or forwarding
  kUdp,            // the datagram socket
};

struct ExitPacketsOptions {
  std::string tun_name = "dvpnx0";
  IpPrefix v4_pool;
  IpPrefix v6_pool;
  udp::endpoint udp_listen;  // the exit's datagram socket (port 0: any)
  bool serve_udp = true;     // false: PACKET_READY says no UDP (TCP fallback only)
  uint16_t mtu = 1420;       // the inner MTU both TUN devices use
  FlowLimits flow_limits;
  size_t max_flows = 262144;  // every session's flows together
  size_t max_sessions = 65536;
  std::string nft_table = "dvpn_exit";
  bool log_destinations = false;
  std::chrono::milliseconds summary_interval{60'000};
  // Whether the NAT table and IP forwarding are set up (tests of the packet path alone may
  // skip them; an exit always sets them).
  bool install_nat = true;
  PacketOffloads offloads;  // docs/full-tunnel.md "Offloads"
  PacketHoldLimits hold;    // docs/full-tunnel.md "Held at the limit"
};

class ExitPackets : public std::enable_shared_from_this<ExitPackets> {
 public:
  // Drops and passes, counted since the start (the summary line reports the change).
  struct Counters {
    uint64_t sessions_opened = 0;
    uint64_t sessions_refused = 0;  // PACKET_FAIL: pool empty, limit
    uint64_t from_client = 0;       // packets forwarded client -> TUN
    uint64_t from_client_bytes = 0;
    uint64_t to_client = 0;  // packets forwarded TUN -> client
    uint64_t to_client_bytes = 0;
    uint64_t to_client_tcp = 0;  // of which in PACKET frames
    uint64_t malformed = 0;      // did not parse (bad header, checksum, fragment, ...)
    uint64_t too_big = 0;        // above the inner MTU (answered "too big")
    uint64_t not_from_session = 0;
    uint64_t refused = 0;  // the exit policy (answered "prohibited")
    uint64_t too_many_flows = 0;
    uint64_t rate_limited = 0;
    uint64_t no_flow = 0;     // TUN -> client without a flow of the session
    uint64_t no_session = 0;  // TUN -> an inner address no session holds
    uint64_t held = 0;        // waited at the limit (paused, or over it) before going on
    uint64_t unpaid = 0;      // dropped at the limit: the hold was full, or they waited too long
    uint64_t send_dropped = 0;  // the UDP socket or the tunnel's buffer did not take it
    uint64_t tun_dropped = 0;   // the TUN device did not take it
  };

  // The drop counters by reason, as the summary line and the node's status name them.
  static std::vector<std::pair<const char*, uint64_t>> Dropped(const Counters& c);

  // Creates the TUN device (the pools' offset-1 addresses, the MTU, up), the NAT table and IP
  // forwarding (install_nat), and the UDP socket. `own_host` gives the host as the policy sees
  // it now (the exit server's). `policy` must outlive this.
  static Result<std::shared_ptr<ExitPackets>, ExitPacketsErrc> Start(
      const asio::any_io_executor& ex, const ExitPolicy& policy,
      std::function<const OwnHost&()> own_host, ExitPacketsOptions options);
  ~ExitPackets();

  // Installs the PACKET_SETUP handler on a new tunnel (before it starts).
  void Serve(const std::shared_ptr<TunnelConnection>& tunnel);
  // The tunnel ended: its session (if any) gives back its addresses and index.
  void End(const TunnelConnection* tunnel);
  // Closes the device, the socket and the table; sessions end. Idempotent.
  void Stop();

  const Counters& counters() const { return counters_; }
  // The data plane's system calls against the packets they carried: how much the offloads
  // and batches save (docs/full-tunnel.md "Offloads").
  struct IoCounters {
    std::string offloads;          // OffloadsInUse()
    uint64_t tun_reads = 0;        // packets read from the device (after splitting)
    uint64_t tun_super_reads = 0;  // reads that were split into more than one packet
    uint64_t tun_written = 0;      // packets taken for the device
    uint64_t tun_writes = 0;       // write system calls (joined packets count once)
    uint64_t udp_sent = 0;         // datagrams
    uint64_t udp_send_calls = 0;
    uint64_t udp_received = 0;
    uint64_t udp_receive_calls = 0;
  };
  IoCounters io() const;
  size_t session_count() const { return sessions_.size(); }
  uint16_t udp_port() const;
  // The offloads in use ("tun,gso,gro,mmsg", "off"): what was asked and the kernel gave.
  std::string OffloadsInUse() const;
  const std::string& tun_name() const { return options_.tun_name; }
  size_t flows_in_use() const { return budget_.used(); }
  size_t hold_bytes_in_use() const { return hold_budget_.used(); }

 private:
  friend class ExitPacketSession;
  ExitPackets(const asio::any_io_executor& ex, const ExitPolicy& policy,
              std::function<const OwnHost&()> own_host, ExitPacketsOptions options,
              InnerAddressPool pool);
  Result<PacketReadyFields, PacketFailure> Setup(
      const std::shared_ptr<TunnelConnection>& tunnel, const PacketSetupFields& setup);
  // A packet the kernel routed into the TUN device.
  void FromTun(std::span<uint8_t> packet);
  bool WriteTun(ByteSpan packet, const ip::PacketInfo* info = nullptr);
  asio::awaitable<void> TickLoop();
  // The summary line (at most once per summary_interval unless `force`; none when nothing
  // happened).
  void Summarize(uint64_t now_ms, bool force = false);

  asio::any_io_executor ex_;
  const ExitPolicy& policy_;
  std::function<const OwnHost&()> own_host_;
  ExitPacketsOptions options_;
  InnerAddressPool pool_;
  FlowBudget budget_;
  HoldBudget hold_budget_;  // before sessions_: every session's hold gives back to it
  std::shared_ptr<TunIo> tun_;
  std::shared_ptr<DatagramEndpoint> endpoint_;
  struct Nat;
  std::unique_ptr<Nat> nat_;
  std::unordered_map<const TunnelConnection*, std::shared_ptr<ExitPacketSession>> sessions_;
  // Inner address (16 bytes; IPv4 in the first 4, the family in the key's last byte) -> session.
  struct AddressKeyHash {
    size_t operator()(const std::array<uint8_t, 17>& k) const;
  };
  std::unordered_map<std::array<uint8_t, 17>, ExitPacketSession*, AddressKeyHash> by_address_;
  asio::steady_timer tick_;
  bool stopped_ = false;
  Counters counters_;
  Counters reported_;
  uint64_t last_summary_ms_ = 0;
  std::vector<uint8_t> icmp_buffer_;
};

}  // namespace dvpn::tunnel::session
