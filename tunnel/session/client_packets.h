#pragma once
// The client's full-tunnel mode (docs/full-tunnel.md "What a user gets", "The data plane", "On
// the machine"): one TUN device for the life of the connection, and on each new tunnel of the
// keeper a packet session: PACKET_SETUP, then the device gets the inner addresses and MTU of
// PACKET_READY, the routes send all IPv4 and IPv6 through it (host routes keep the exit, the
// ledger and the gossip peers outside), and packets travel as datagrams on a UDP socket of the
// session (or in PACKET frames of the TCP tunnel).
//
// Transport: the client sends a keepalive datagram at once and every 10 s; UDP is in use while
// the exit's datagrams authenticate (the last at most 30 s ago, and no keepalive unanswered for
// more than 3 s; a keepalive goes out at once when packets are being sent and nothing came back
// for 1 s); otherwise, and before the first answer, packets go in PACKET frames. The exit
// answers by the way the client's last packet came. `allow_udp = false` forces the TCP
// fallback (PACKET_SETUP without "wants UDP").
//
// Metering (docs/full-tunnel.md "Payments"): IP packet bytes each way go into the tunnel's
// meters: sent when sealed or queued, received when opened; datagrams of the exit that never
// arrived (counters it skipped) count at the average packet size, up to kMaxMissingShare of the
// received bytes. Before each CONTROL message the UDP socket is drained, so an invoice is checked
// after the packets the exit sent before it.
//
// Threading: the client's single io thread. Ownership: shared_ptr; Stop() removes the routes and
// the device.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "tunnel/exit_policy.h"
#include "tunnel/ip/packet.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/udp_batch.h"
#include "tunnel/session/tunnel_connection.h"

namespace dvpn::tunnel::os {
class FullTunnelRoutes;
}

namespace dvpn::tunnel::session {

class TunIo;
class ClientPacketPath;

// The share of the received packet bytes that datagrams the exit skipped may add to the meter.
inline constexpr double kMaxMissingShare = 0.05;

enum class ClientPacketsErrc {
  kDevice = 1,  // the TUN device cannot be created (CAP_NET_ADMIN, /dev/net/tun)
};

struct ClientPacketsOptions {
  std::string tun_name = "dvpn0";
  bool allow_udp = true;  // false: the TCP fallback only
  // Addresses that stay outside the tunnel besides the exit's (the ledger, gossip peers).
  std::vector<IpAddress> outside;
  PacketOffloads offloads;  // docs/full-tunnel.md "Offloads"
};

struct ClientPacketsStatus {
  bool ready = false;      // a packet session is up
  std::string inner_ipv4;  // "10.231.0.2/16"
  std::string inner_ipv6;
  std::string transport;  // "udp", "tcp" or "" (no session)
  uint16_t mtu = 0;
  uint64_t packets_sent = 0;
  uint64_t packets_received = 0;
  uint64_t dropped = 0;  // TUN reads without a session, refused sends, exit packets not for us
  std::string last_error;
};

class ClientPackets : public std::enable_shared_from_this<ClientPackets> {
 public:
  static Result<std::shared_ptr<ClientPackets>, ClientPacketsErrc> Start(
      const asio::any_io_executor& ex, ClientPacketsOptions options);
  ~ClientPackets();

  // Called with why, when an exit refuses packet mode (the caller moves to another provider).
  void SetRefusedHandler(std::function<void(const std::string& why)> fn) {
    on_refused_ = std::move(fn);
  }
  // A new tunnel (started) to the exit at `exit`: asks for packet mode on it.
  void Attach(const std::shared_ptr<TunnelConnection>& tunnel, const tcp::endpoint& exit);
  // Removes the routes and the device. Idempotent.
  void Stop();

  ClientPacketsStatus status() const;

 private:
  friend class ClientPacketPath;
  ClientPackets(const asio::any_io_executor& ex, ClientPacketsOptions options);
  void OnReady(const std::shared_ptr<TunnelConnection>& tunnel, const tcp::endpoint& exit,
               uint32_t local_index, const PacketReadyFields& ready);
  bool Configure(const tcp::endpoint& exit, const PacketReadyFields& ready);
  void FromTun(std::span<uint8_t> packet);
  bool WriteTun(ByteSpan packet, const ip::PacketInfo* info);

  asio::any_io_executor ex_;
  ClientPacketsOptions options_;
  std::shared_ptr<TunIo> tun_;
  uint32_t tun_index_ = 0;
  bool tun_offloads_ = false;  // the device has the vnet header (TunIo joins segments)
  std::unique_ptr<os::FullTunnelRoutes> routes_;
  std::optional<IpAddress> routed_exit_;  // the exit the routes keep outside
  std::optional<PacketReadyFields> configured_;
  std::shared_ptr<ClientPacketPath> path_;  // the current tunnel's
  std::function<void(const std::string&)> on_refused_;
  uint64_t dropped_ = 0;
  std::string last_error_;
  bool stopped_ = false;
};

}  // namespace dvpn::tunnel::session
