#include "tunnel/session/client_packets.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "common/clock.h"
#include "common/log.h"
#include "tunnel/datagram.h"
#include "tunnel/ip/packet.h"
#include "tunnel/ip_prefix.h"
#include "tunnel/os/full_tunnel_routes.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/tun_device.h"
#include "tunnel/session/datagram_path.h"
#include "tunnel/session/host_addresses.h"
#include "tunnel/session/tun_io.h"

namespace dvpn::tunnel::session {

namespace {

constexpr uint64_t kKeepaliveEveryMs = 10'000;
constexpr uint64_t kProbeAnswerMs = 3'000;
constexpr uint64_t kQuietMs = 1'000;  // nothing from the exit while sending: probe
constexpr uint64_t kUdpSilenceMs = 30'000;
constexpr size_t kDrainCalls = 1024;  // receive calls before one CONTROL message (each up to 32)
constexpr size_t kReadCalls = 8;    // receive calls per wakeup

// Whether `a` is one of the inner addresses PACKET_READY handed out.
bool IsInner(const ip::Address& a, const PacketReadyFields& r) {
  return a.family == ip::Family::kV4 ? std::memcmp(a.bytes.data(), r.ipv4.data(), 4) == 0
                                     : std::memcmp(a.bytes.data(), r.ipv6.data(), 16) == 0;
}

IpPrefix V4Prefix(const PacketReadyFields& r) {
  return IpPrefix{IpAddress::V4(r.ipv4), r.ipv4_prefix};
}
IpPrefix V6Prefix(const PacketReadyFields& r) {
  return IpPrefix{IpAddress::V6(r.ipv6), r.ipv6_prefix};
}

// What a datagram adds on the path: the outer IPv6 and UDP headers (IPv6's, the larger, whatever
// the exit's family: one inner MTU for both) and the datagram record's header and tag.
constexpr uint32_t kDatagramPathOverhead = kIpv6UdpHeaders + kDatagramOverhead;  // 80

// The MTU of the device the kernel routes `to` through now; kPathMtu when it cannot say.
uint32_t PathMtu(const asio::ip::address& to) {
  auto nl = os::Netlink::Open();
  if (!nl) return kPathMtu;
  auto route = nl->LookupRoute(FromAsioAddress(to));
  if (!route || route->local) return kPathMtu;
  auto mtu = os::InterfaceMtu(route->oif);
  return mtu ? *mtu : static_cast<uint32_t>(kPathMtu);
}

}  // namespace

// One tunnel's packet session at the client: its UDP socket and datagram path.
class ClientPacketPath : public std::enable_shared_from_this<ClientPacketPath> {
 public:
  ClientPacketPath(ClientPackets& owner, const std::shared_ptr<TunnelConnection>& tunnel,
                   const PacketReadyFields& ready)
      : owner_(owner),
        tunnel_(tunnel),
        ready_(ready),
        socket_(tunnel->executor()),
        timer_(tunnel->executor()) {}

  void Start(const tcp::endpoint& exit, uint32_t local_index) {
    auto tunnel = tunnel_.lock();
    if (!tunnel) return;
    std::weak_ptr<ClientPacketPath> weak = shared_from_this();
    tunnel->SetPacketHandler([weak](ByteSpan packet) {
      if (auto self = weak.lock()) self->Deliver(packet);
    });
    if (ready_.udp_port == 0) return;  // the exit offers no UDP: PACKET frames only
    const udp::endpoint peer(exit.address(), ready_.udp_port);
    error_code ec;
    socket_.open(peer.protocol(), ec);
    if (!ec) socket_.connect(peer, ec);
    if (!ec) socket_.non_blocking(true, ec);
    if (!ec) GrowDatagramBuffers(socket_);
    if (ec) {
      socket_.close(ec);
      TunnelLog()->warn("{}: full tunnel: no UDP socket ({}); packets go by TCP", tunnel->name(),
                        ec.message());
      return;
    }
    DatagramPath::Options options;
    options.max_plaintext = ready_.mtu;
    const PacketOffloads offloads = owner_.options_.offloads;
    send_ = std::make_unique<UdpSendBatch>(tunnel->executor(), socket_.native_handle(),
                                           /*connected=*/true, offloads);
    receive_ = std::make_unique<UdpReceiveBatch>(socket_.native_handle(), offloads,
                                                 ready_.mtu + kDatagramOverhead);
    receive_->SetConnected();
    path_ = std::make_unique<DatagramPath>(
        tunnel->session_keys(), local_index, ready_.receiver_index, options, *send_,
        [this](std::span<uint8_t> packet) { Deliver(packet); });
    path_->SetPeer(peer);
    tunnel->SetBeforeControl([weak] {
      if (auto self = weak.lock()) self->Drain();
    });
    Probe();
    auto self = shared_from_this();
    asio::co_spawn(tunnel->executor(), [self]() { return self->ReceiveLoop(); },
                   [](std::exception_ptr e) {
                     if (e) LogTaskFailure(*TunnelLog(), "full-tunnel receive", e);
                   });
    asio::co_spawn(tunnel->executor(), [self]() { return self->TimerLoop(); },
                   [](std::exception_ptr e) {
                     if (e) LogTaskFailure(*TunnelLog(), "full-tunnel timers", e);
                   });
  }

  void Close() {
    closed_ = true;
    if (send_) send_->Close();
    error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
  }

  // A packet from the TUN device.
  bool Send(ByteSpan packet) {
    auto tunnel = tunnel_.lock();
    if (!tunnel || tunnel->closed() || closed_) return false;
    if (!tunnel->MayForwardPacket(packet.size())) return false;
    const bool udp = UdpActive();
    if (udp) {
      // Sending into silence: ask at once (at most once a second) rather than at the next
      // keepalive, so a path that stopped carrying UDP falls back within about 4 s.
      const uint64_t now = MonotonicMs();
      if (now - path_->last_authenticated_ms() > kQuietMs && now - probe_sent_ms_ >= kQuietMs) {
        Probe();
      }
    }
    const bool sent = udp ? path_->SendPacket(packet) : tunnel->SendPacketFrame(packet);
    if (!sent) return false;
    tunnel->CountPacket(packet.size(), /*sent=*/true);
    ++packets_sent_;
    return true;
  }

  bool UdpActive() const {
    if (!path_ || closed_) return false;
    const uint64_t now = MonotonicMs();
    const uint64_t last = path_->last_authenticated_ms();
    if (last == 0 || now - last > kUdpSilenceMs) return false;
    // A keepalive unanswered for 3 s: UDP stopped getting through.
    return !(probe_sent_ms_ > last && now - probe_sent_ms_ > kProbeAnswerMs);
  }
  bool closed() const { return closed_ || tunnel_.expired(); }
  const PacketReadyFields& ready() const { return ready_; }
  uint64_t packets_sent() const { return packets_sent_; }
  uint64_t packets_received() const { return packets_received_; }
  uint64_t refused() const { return refused_; }

 private:
  void Probe() {
    probe_sent_ms_ = MonotonicMs();
    if (path_) path_->SendKeepalive();
  }

  // A packet from the exit (opened datagram or PACKET frame): metered and written to the device.
  void Deliver(ByteSpan packet) {
    auto tunnel = tunnel_.lock();
    if (!tunnel || closed_) return;
    // Only packets for the inner addresses reach the device: an exit must not use the machine
    // as a router (to its LAN, or anywhere its forwarding would take them). Not metered: an
    // exit that invoices them is caught overcharging.
    const auto dst = ip::DestinationAddress(packet);
    if (!dst || !IsInner(*dst, ready_)) {
      ++refused_;
      return;
    }
    tunnel->CountPacket(packet.size(), /*sent=*/false);
    ++packets_received_;
    bytes_received_ += packet.size();
    CreditMissing(*tunnel);
    // A packet whose checksums verify may be joined with others of its flow for one write
    // (the kernel then trusts the joined checksum); any other is written as it came, for the
    // kernel to check and drop.
    if (!owner_.tun_offloads_) {
      owner_.WriteTun(packet, nullptr);
      return;
    }
    const auto info = ip::ParsePacket(packet);
    owner_.WriteTun(packet, info ? &*info : nullptr);
  }

  // Datagrams the exit skipped count at the average packet size, within kMaxMissingShare.
  void CreditMissing(TunnelConnection& tunnel) {
    if (!path_) return;
    const auto& c = path_->counters();
    if (c.missing == 0 || c.packets_in == 0) return;
    const double average = static_cast<double>(c.bytes_in) / static_cast<double>(c.packets_in);
    const auto allowance = static_cast<uint64_t>(
        std::min(static_cast<double>(c.missing) * average,
                 kMaxMissingShare * static_cast<double>(bytes_received_)));
    if (allowance > credited_missing_) {
      tunnel.CountPacket(allowance - credited_missing_, /*sent=*/false);
      credited_missing_ = allowance;
    }
  }

  // Reads what the socket holds now, up to `calls` system calls.
  size_t Read(size_t calls, size_t max_datagrams = SIZE_MAX) {
    const udp::endpoint& peer = *path_->peer();
    return receive_->Read(calls, [&](std::span<uint8_t> datagram, const udp::endpoint&) {
      path_->OnDatagram(datagram, peer);  // a connected socket: only the exit's come
    }, max_datagrams);
  }

  // Reads what the socket holds now (before a CONTROL message is handled).
  void Drain() {
    if (!path_ || closed_) return;
    Read(kDrainCalls);
  }

  asio::awaitable<void> ReceiveLoop() {
    auto self = shared_from_this();
    while (!closed_) {
      error_code ec;
      co_await socket_.async_wait(udp::socket::wait_read,
                                  asio::redirect_error(asio::use_awaitable, ec));
      if (closed_) break;
      if (ec) {
        if (ec == asio::error::operation_aborted) break;
        continue;
      }
      // ICMP port unreachable on a connected socket, and the like (UDP is not there now),
      // wakes this too: the receive call reports the error, which clears it.
      Read(kReadCalls, UdpReceiveBatch::kDatagramsPerWakeup);
    }
  }

  asio::awaitable<void> TimerLoop() {
    auto self = shared_from_this();
    bool was_udp = false;
    while (!closed_) {
      timer_.expires_after(std::chrono::seconds(1));
      error_code ec;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      auto tunnel = tunnel_.lock();
      if (closed_ || !tunnel || tunnel->closed()) break;
      const uint64_t now = MonotonicMs();
      if (now - probe_sent_ms_ >= kKeepaliveEveryMs) Probe();
      path_->TickKeys(now);
      const bool udp = UdpActive();
      if (udp != was_udp) {
        TunnelLog()->info("{}: full tunnel: packets go by {}", tunnel->name(),
                          udp ? "UDP" : "TCP (no answer by UDP)");
        was_udp = udp;
      }
    }
  }

  ClientPackets& owner_;
  std::weak_ptr<TunnelConnection> tunnel_;
  PacketReadyFields ready_;
  udp::socket socket_;
  asio::steady_timer timer_;
  std::unique_ptr<UdpSendBatch> send_;
  std::unique_ptr<UdpReceiveBatch> receive_;
  std::unique_ptr<DatagramPath> path_;
  uint64_t probe_sent_ms_ = 0;
  uint64_t packets_sent_ = 0;
  uint64_t packets_received_ = 0;
  uint64_t bytes_received_ = 0;
  uint64_t credited_missing_ = 0;
  uint64_t refused_ = 0;  // packets from the exit not for the inner addresses
  bool closed_ = false;
};

Result<std::shared_ptr<ClientPackets>, ClientPacketsErrc> ClientPackets::Start(
    const asio::any_io_executor& ex, ClientPacketsOptions options) {
  auto device = options.offloads.tun ? os::TunDevice::CreateWithOffloads(options.tun_name)
                                     : os::TunDevice::Create(options.tun_name);
  if (!device) {
    return Fail(ClientPacketsErrc::kDevice,
                "TUN device " + options.tun_name + ": " + device.error().message);
  }
  std::shared_ptr<ClientPackets> self(new ClientPackets(ex, std::move(options)));
  self->tun_index_ = device->index();
  self->tun_offloads_ = device->offloads().vnet_header;
  // A new tunnel's inner addresses replace the old ones without a moment with none (Configure).
  if (auto nl = os::Netlink::Open(); !nl || !nl->PromoteSecondaries(device->index())) {
    return Fail(ClientPacketsErrc::kDevice,
                "TUN device " + device->name() + ": cannot set promote_secondaries");
  }
  self->tun_ = TunIo::Make(ex, std::move(*device), kMaxPacketMtu,
                           [raw = self.get()](std::span<uint8_t> p) { raw->FromTun(p); });
  self->tun_->Start();
  return self;
}

ClientPackets::ClientPackets(const asio::any_io_executor& ex, ClientPacketsOptions options)
    : ex_(ex), options_(std::move(options)) {}

ClientPackets::~ClientPackets() { Stop(); }

void ClientPackets::Attach(const std::shared_ptr<TunnelConnection>& tunnel,
                           const tcp::endpoint& exit) {
  if (stopped_) return;
  if (path_) path_->Close();
  path_.reset();
  std::mt19937 rng(std::random_device{}());
  uint32_t index = 0;
  while (index == 0) index = static_cast<uint32_t>(rng());
  PacketSetupFields setup;
  setup.receiver_index = index;
  setup.max_datagram_plaintext = static_cast<uint16_t>(kDefaultMaxDatagramPlaintext);
  setup.wants_udp = options_.allow_udp;
  if (setup.wants_udp) {
    // The inner MTU follows the path to the exit: a sealed datagram must fit it unfragmented.
    const uint32_t path_mtu = PathMtu(exit.address());
    if (path_mtu < kMinPacketMtu + kDatagramPathOverhead) {
      TunnelLog()->warn("{}: full tunnel: the path to the exit has MTU {}; datagrams would be "
                        "fragmented, so packets go by TCP",
                        tunnel->name(), path_mtu);
      setup.wants_udp = false;
    } else {
      setup.max_datagram_plaintext = static_cast<uint16_t>(
          std::min<uint32_t>(path_mtu - kDatagramPathOverhead, kMaxDatagramPlaintext));
    }
  }
  std::weak_ptr<ClientPackets> weak = shared_from_this();
  std::weak_ptr<TunnelConnection> weak_tunnel = tunnel;
  const bool asked = tunnel->RequestPacketMode(
      setup, [weak, weak_tunnel, exit, index](
                 Result<PacketReadyFields, PacketFailure> answer) {
        auto self = weak.lock();
        auto t = weak_tunnel.lock();
        if (!self || !t || self->stopped_) return;
        if (!answer) {
          if (t->closed()) return;  // the tunnel ended first: the keeper reconnects
          self->last_error_ = "the exit refused full-tunnel mode: " + answer.error().message;
          TunnelLog()->warn("{}: {}", t->name(), self->last_error_);
          t->Close(CloseReason::kShutdown, "full-tunnel mode refused", true);
          if (self->on_refused_) self->on_refused_(self->last_error_);
          return;
        }
        self->OnReady(t, exit, index, *answer);
      });
  if (!asked) last_error_ = "cannot ask for full-tunnel mode on this tunnel";
}

void ClientPackets::OnReady(const std::shared_ptr<TunnelConnection>& tunnel,
                            const tcp::endpoint& exit, uint32_t local_index,
                            const PacketReadyFields& ready) {
  if (!Configure(exit, ready)) {
    tunnel->Close(CloseReason::kInternal, "full tunnel: " + last_error_, true);
    return;
  }
  path_ = std::make_shared<ClientPacketPath>(*this, tunnel, ready);
  path_->Start(exit, local_index);
  last_error_.clear();
  TunnelLog()->info("{}: full tunnel up: {}, {}, mtu {}", tunnel->name(),
                    V4Prefix(ready).ToString(), V6Prefix(ready).ToString(), ready.mtu);
}

bool ClientPackets::Configure(const tcp::endpoint& exit, const PacketReadyFields& ready) {
  auto nl = os::Netlink::Open();
  if (!nl) {
    last_error_ = "netlink: " + nl.error().message;
    return false;
  }
  const bool same = configured_ && configured_->ipv4 == ready.ipv4 &&
                    configured_->ipv6 == ready.ipv6 &&
                    configured_->ipv4_prefix == ready.ipv4_prefix &&
                    configured_->ipv6_prefix == ready.ipv6_prefix;
  if (!same) {
    // The new addresses first, then the old ones go: a device left without an address of a
    // family loses every route of that family through it (the kernel flushes them), and the
    // machine's packets would leave outside the tunnel.
    for (const IpPrefix& p : {V4Prefix(ready), V6Prefix(ready)}) {
      if (auto r = nl->AddAddress(tun_index_, p); !r && r.error().code != os::OsErrc::kExists) {
        last_error_ = "address " + p.ToString() + ": " + r.error().message;
        return false;
      }
    }
    if (configured_) {
      if (configured_->ipv4 != ready.ipv4 || configured_->ipv4_prefix != ready.ipv4_prefix) {
        (void)nl->DeleteAddress(tun_index_, V4Prefix(*configured_));
      }
      if (configured_->ipv6 != ready.ipv6 || configured_->ipv6_prefix != ready.ipv6_prefix) {
        (void)nl->DeleteAddress(tun_index_, V6Prefix(*configured_));
      }
    }
  }
  if (auto r = nl->SetLinkUp(tun_index_, ready.mtu); !r) {
    last_error_ = "link up: " + r.error().message;
    return false;
  }
  configured_ = ready;
  const IpAddress exit_address = FromAsioAddress(exit.address());
  if (!routes_ || routed_exit_ != exit_address) {
    if (routes_) (void)routes_->Remove();
    routes_.reset();
    std::vector<IpAddress> outside = options_.outside;
    outside.push_back(exit_address);
    auto routes = os::FullTunnelRoutes::Install(tun_index_, outside);
    if (!routes) {
      last_error_ = "routes: " + routes.error().message;
      return false;
    }
    routes_ = std::make_unique<os::FullTunnelRoutes>(std::move(*routes));
    routed_exit_ = exit_address;
  }
  return true;
}

void ClientPackets::FromTun(std::span<uint8_t> packet) {
  // Only packets from the inner addresses go to the exit (the kernel's own link-local chatter,
  // router solicitations and the like, would be refused there and paid for here).
  const auto src = ip::SourceAddress(packet);
  if (!path_ || path_->closed() || !src || !configured_) {
    ++dropped_;
    return;
  }
  if (!IsInner(*src, *configured_) || !path_->Send(packet)) ++dropped_;
}

bool ClientPackets::WriteTun(ByteSpan packet, const ip::PacketInfo* info) {
  return tun_ && tun_->Write(packet, info);
}

void ClientPackets::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (path_) path_->Close();
  path_.reset();
  if (routes_) (void)routes_->Remove();
  routes_.reset();
  if (tun_) tun_->Close();  // the kernel deletes the device and its addresses
}

ClientPacketsStatus ClientPackets::status() const {
  ClientPacketsStatus s;
  s.dropped = dropped_;
  s.last_error = last_error_;
  if (path_ && !path_->closed()) {
    s.ready = true;
    s.inner_ipv4 = V4Prefix(path_->ready()).ToString();
    s.inner_ipv6 = V6Prefix(path_->ready()).ToString();
    s.mtu = path_->ready().mtu;
    s.transport = path_->UdpActive() ? "udp" : "tcp";
    s.packets_sent = path_->packets_sent();
    s.packets_received = path_->packets_received();
    s.dropped += path_->refused();
  }
  return s;
}

}  // namespace dvpn::tunnel::session
