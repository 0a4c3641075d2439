#include "tunnel/session/exit_packets.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "tunnel/ip/icmp.h"
#include "tunnel/ip/packet.h"
#include "tunnel/os/netlink.h"
#include "tunnel/os/nftables.h"
#include "tunnel/os/tun_device.h"
#include "tunnel/session/datagram_path.h"
#include "tunnel/session/tun_io.h"

namespace dvpn::tunnel::session {

namespace {

// The client's datagrams count as arriving while the last one that authenticated is at most
// this old; otherwise the exit sends in PACKET frames (docs/full-tunnel.md "The data plane").
constexpr uint64_t kUdpSilenceMs = 30'000;
constexpr uint64_t kExpireEveryMs = 5'000;

std::array<uint8_t, 17> AddressKey(const ip::Address& a) {
  std::array<uint8_t, 17> k{};
  std::memcpy(k.data(), a.bytes.data(), 16);
  k[16] = static_cast<uint8_t>(a.family);
  return k;
}

}  // namespace

size_t ExitPackets::AddressKeyHash::operator()(const std::array<uint8_t, 17>& k) const {
  uint64_t a = 0;
  uint64_t b = 0;
  std::memcpy(&a, k.data(), 8);
  std::memcpy(&b, k.data() + 8, 8);
  return static_cast<size_t>((a * 0x9E3779B97F4A7C15ULL) ^ (b + k[16]) * 0xC2B2AE3D27D4EB4FULL);
}

struct ExitPackets::Nat {
  os::ExitNat table;
};

// One packet-mode session: its inner addresses, flows, datagram path and tunnel.
class ExitPacketSession {
 public:
  ExitPacketSession(ExitPackets& exit, const std::shared_ptr<TunnelConnection>& tunnel,
                    InnerLease lease, uint16_t mtu)
      : exit_(exit),
        tunnel_(tunnel),
        lease_(lease),
        flows_(exit.policy_, exit.budget_, lease, exit.options_.flow_limits),
        mtu_(mtu),
        hold_(exit.hold_budget_, exit.options_.hold) {
    last_expire_ms_ = MonotonicMs();
  }

  // A packet from the client (an opened datagram or a PACKET frame).
  void FromClient(ByteSpan packet, bool via_udp) {
    auto tunnel = tunnel_.lock();
    if (!tunnel || tunnel->closed()) return;
    client_uses_udp_ = via_udp;  // answered the same way
    auto& c = exit_.counters_;
    if (packet.size() > mtu_) {
      ++c.too_big;
      Answer(*tunnel, packet, /*too_big=*/true);
      return;
    }
    auto info = ip::ParsePacket(packet);
    if (!info) {
      ++c.malformed;
      return;
    }
    const uint64_t now = MonotonicMs();
    switch (flows_.Outbound(*info, now, exit_.own_host_)) {
      case FlowVerdict::kForward:
        break;
      case FlowVerdict::kRefused:
        ++c.refused;
        if (exit_.options_.log_destinations) {
          TunnelLog()->info("exit: {} packet flow refused by policy: {} proto {} port {}",
                            tunnel->name(), info->dst.ToString(), info->protocol, info->dst_port);
        }
        Answer(*tunnel, packet, /*too_big=*/false);
        return;
      case FlowVerdict::kNotFromSession:
        ++c.not_from_session;
        return;
      case FlowVerdict::kTooManyFlows:
        ++c.too_many_flows;
        return;
      case FlowVerdict::kRateLimited:
        ++c.rate_limited;
        return;
      case FlowVerdict::kNoFlow:
        return;  // not an outbound verdict
    }
    // Behind the packets already held (the order of each flow is kept), or held itself.
    if (!hold_.empty() || !tunnel->MayForwardPacket(packet.size())) {
      Hold(packet, /*to_client=*/false, *info);
      return;
    }
    WriteNow(*tunnel, packet, *info);
  }

  // A packet the kernel routed to this session's inner address.
  void ToClient(std::span<uint8_t> packet, const ip::PacketInfo& info) {
    auto tunnel = tunnel_.lock();
    if (!tunnel || tunnel->closed()) return;
    if (flows_.Inbound(info, packet, MonotonicMs()) != FlowVerdict::kForward) {
      ++exit_.counters_.no_flow;
      return;
    }
    SendMetered(*tunnel, packet, info);
  }

  // The limit rose or forwarding resumed: the held packets go on, in order, for as long as each
  // fits; what waited too long is dropped.
  void Release() {
    auto tunnel = tunnel_.lock();
    if (!tunnel || tunnel->closed() || hold_.empty()) return;
    exit_.counters_.unpaid += hold_.DropExpired(MonotonicMs());
    while (!hold_.empty()) {
      const auto f = hold_.front();
      if (!tunnel->MayForwardPacket(f.packet.size())) break;
      if (f.to_client) {
        SendNow(*tunnel, f.packet);
      } else {
        WriteNow(*tunnel, f.packet, *f.info);
      }
      hold_.Pop();
    }
  }

  // Every second: flow expiry, the datagram keys' timers. False once the tunnel is gone.
  bool Tick(uint64_t now) {
    auto tunnel = tunnel_.lock();
    if (!tunnel || tunnel->closed()) return false;
    if (now - last_expire_ms_ >= kExpireEveryMs) {
      last_expire_ms_ = now;
      flows_.Expire(now);
    }
    if (path_) path_->TickKeys(now);
    Release();  // also drops what waited too long
    hold_.Trim();
    return true;
  }

  void SetPath(std::shared_ptr<DatagramPath> path, uint32_t index) {
    path_ = std::move(path);
    index_ = index;
  }
  uint32_t index() const { return index_; }
  const InnerLease& lease() const { return lease_; }
  const std::shared_ptr<DatagramPath>& path() const { return path_; }

 private:
  bool UdpActive(uint64_t now) const {
    if (!path_) return false;
    const uint64_t last = path_->last_authenticated_ms();
    return client_uses_udp_ && last != 0 && now - last <= kUdpSilenceMs;
  }

  // Sends to the client by UDP or in a PACKET frame, within what the tunnel may forward (held
  // otherwise).
  void SendMetered(TunnelConnection& tunnel, ByteSpan packet, const ip::PacketInfo& info) {
    if (!hold_.empty() || !tunnel.MayForwardPacket(packet.size())) {
      Hold(packet, /*to_client=*/true, info);
      return;
    }
    SendNow(tunnel, packet);
  }

  void Hold(ByteSpan packet, bool to_client, const ip::PacketInfo& info) {
    if (hold_.Push(packet, to_client, info, MonotonicMs())) {
      ++exit_.counters_.held;
    } else {
      ++exit_.counters_.unpaid;
    }
  }

  // Client -> TUN, within the limit: metered once the exit took it (the client counted it when
  // it sent it), also when our own device's queue is full.
  void WriteNow(TunnelConnection& tunnel, ByteSpan packet, const ip::PacketInfo& info) {
    auto& c = exit_.counters_;
    tunnel.CountPacket(packet.size(), /*sent=*/false);
    ++c.from_client;
    c.from_client_bytes += packet.size();
    if (!exit_.WriteTun(packet, &info)) ++c.tun_dropped;
  }

  // TUN -> client, within the limit.
  void SendNow(TunnelConnection& tunnel, ByteSpan packet) {
    auto& c = exit_.counters_;
    const bool udp = UdpActive(MonotonicMs());
    const bool sent = udp ? path_->SendPacket(packet) : tunnel.SendPacketFrame(packet);
    if (!sent) {
      ++c.send_dropped;
      return;
    }
    tunnel.CountPacket(packet.size(), /*sent=*/true);
    ++c.to_client;
    c.to_client_bytes += packet.size();
    if (!udp) ++c.to_client_tcp;
  }

  // ICMP "too big" or "administratively prohibited" to the client, from the exit's inner
  // address of the packet's family.
  void Answer(TunnelConnection& tunnel, ByteSpan offending, bool too_big) {
    const auto src = ip::SourceAddress(offending);
    if (!src) return;
    const ip::Address from = ToPacketAddress(src->family == ip::Family::kV4
                                                 ? exit_.pool_.exit_v4().address
                                                 : exit_.pool_.exit_v6().address);
    auto& out = exit_.icmp_buffer_;
    auto n = too_big ? ip::BuildTooBig(offending, from, mtu_, out)
                     : ip::BuildProhibited(offending, from, out);
    if (!n) return;  // the ICMP rules say no answer (an ICMP error, a fragment, ...)
    SendMetered(tunnel, ByteSpan(out.data(), *n), ip::PacketInfo{});  // to the client: unused
  }

  ExitPackets& exit_;
  std::weak_ptr<TunnelConnection> tunnel_;
  InnerLease lease_;
  SessionFlows flows_;
  uint16_t mtu_;
  std::shared_ptr<DatagramPath> path_;
  uint32_t index_ = 0;
  uint64_t last_expire_ms_ = 0;
  bool client_uses_udp_ = false;  // the client's last packet came as a datagram
  PacketHold hold_;
};

Result<std::shared_ptr<ExitPackets>, ExitPacketsErrc> ExitPackets::Start(
    const asio::any_io_executor& ex, const ExitPolicy& policy,
    std::function<const OwnHost&()> own_host, ExitPacketsOptions options) {
  if (options.mtu < kMinPacketMtu || options.mtu > kMaxPacketMtu) {
    return Fail(ExitPacketsErrc::kBadConfig, "the inner MTU must be 1280.." +
                                                 std::to_string(kMaxPacketMtu));
  }
  auto pool = InnerAddressPool::Make(options.v4_pool, options.v6_pool);
  if (!pool) return Fail(ExitPacketsErrc::kBadConfig, "inner pools: " + pool.error().message);
  auto device = options.offloads.tun ? os::TunDevice::CreateWithOffloads(options.tun_name)
                                     : os::TunDevice::Create(options.tun_name);
  if (!device) {
    return Fail(ExitPacketsErrc::kDevice,
                "TUN device " + options.tun_name + ": " + device.error().message);
  }
  {
    auto nl = os::Netlink::Open();
    if (!nl) return Fail(ExitPacketsErrc::kDevice, "netlink: " + nl.error().message);
    for (const IpPrefix& p : {pool->exit_v4(), pool->exit_v6()}) {
      if (auto r = nl->AddAddress(device->index(), p); !r) {
        return Fail(ExitPacketsErrc::kDevice,
                    "address " + p.ToString() + " on " + device->name() + ": " + r.error().message);
      }
    }
    if (auto r = nl->SetLinkUp(device->index(), options.mtu); !r) {
      return Fail(ExitPacketsErrc::kDevice, "link " + device->name() + ": " + r.error().message);
    }
  }
  std::shared_ptr<ExitPackets> self(
      new ExitPackets(ex, policy, std::move(own_host), options, std::move(*pool)));
  if (options.install_nat) {
    if (auto r = os::EnableForwarding(); !r) {
      return Fail(ExitPacketsErrc::kNat, "IP forwarding: " + r.error().message);
    }
    os::ExitNatConfig nat;
    nat.table = options.nft_table;
    nat.tun_name = device->name();
    nat.v4_pool = options.v4_pool;
    nat.v6_pool = options.v6_pool;
    auto table = os::ExitNat::Install(nat);
    if (!table) return Fail(ExitPacketsErrc::kNat, "nftables: " + table.error().message);
    self->nat_ = std::make_unique<Nat>(Nat{std::move(*table)});
  }
  if (options.serve_udp) {
    DatagramEndpoint::Options ep;
    ep.max_sessions = options.max_sessions;
    ep.offloads = options.offloads;
    auto endpoint = DatagramEndpoint::Open(ex, options.udp_listen, ep);
    if (!endpoint) return Fail(ExitPacketsErrc::kUdp, endpoint.error().message);
    self->endpoint_ = std::move(*endpoint);
    self->endpoint_->Start();
  }
  self->tun_ = TunIo::Make(ex, std::move(*device), options.mtu,
                           [raw = self.get()](std::span<uint8_t> packet) { raw->FromTun(packet); });
  self->tun_->Start();
  asio::co_spawn(ex, [self]() { return self->TickLoop(); }, [](std::exception_ptr e) {
    if (e) LogTaskFailure(*TunnelLog(), "exit packet timers", e);
  });
  TunnelLog()->info("exit: full-tunnel mode on {} ({}, {}), mtu {}, udp port {}, offloads {}",
                    self->tun_->name(), self->pool_.exit_v4().ToString(),
                    self->pool_.exit_v6().ToString(), options.mtu, self->udp_port(),
                    self->OffloadsInUse());
  return self;
}

ExitPackets::ExitPackets(const asio::any_io_executor& ex, const ExitPolicy& policy,
                         std::function<const OwnHost&()> own_host, ExitPacketsOptions options,
                         InnerAddressPool pool)
    : ex_(ex),
      policy_(policy),
      own_host_(std::move(own_host)),
      options_(std::move(options)),
      pool_(std::move(pool)),
      budget_(options_.max_flows),
      hold_budget_(options_.hold.total_bytes),
      tick_(ex),
      icmp_buffer_(ip::kMaxIcmpv6Answer) {
  last_summary_ms_ = MonotonicMs();
}

ExitPackets::~ExitPackets() = default;

std::string ExitPackets::OffloadsInUse() const {
  PacketOffloads used = options_.offloads;
  used.tun = tun_ && tun_->offloads();
  return used.ToString();
}

ExitPackets::IoCounters ExitPackets::io() const {
  IoCounters io;
  io.offloads = OffloadsInUse();
  if (tun_) {
    const auto& t = tun_->counters();
    io.tun_reads = t.read;
    io.tun_super_reads = t.super_reads;
    io.tun_written = t.written;
    io.tun_writes = t.writes;
  }
  if (endpoint_) {
    const auto e = endpoint_->counters();
    io.udp_sent = e.sent;
    io.udp_send_calls = e.send_calls;
    io.udp_received = e.received;
    io.udp_receive_calls = e.receive_calls;
  }
  return io;
}

uint16_t ExitPackets::udp_port() const { return endpoint_ ? endpoint_->port() : 0; }

void ExitPackets::Serve(const std::shared_ptr<TunnelConnection>& tunnel) {
  std::weak_ptr<TunnelConnection> weak_tunnel = tunnel;
  tunnel->SetPacketSetupHandler(
      [self = shared_from_this(), weak_tunnel](const PacketSetupFields& setup)
          -> Result<PacketReadyFields, PacketFailure> {
        auto t = weak_tunnel.lock();
        if (!t) return Fail(PacketFailure::kRefused, "tunnel gone");
        return self->Setup(t, setup);
      });
}

Result<PacketReadyFields, PacketFailure> ExitPackets::Setup(
    const std::shared_ptr<TunnelConnection>& tunnel, const PacketSetupFields& setup) {
  auto refuse = [this](PacketFailure f, std::string text) {
    ++counters_.sessions_refused;
    return Fail(f, std::move(text));
  };
  if (stopped_) return refuse(PacketFailure::kNotServed, "packet mode stopped");
  if (sessions_.contains(tunnel.get())) return refuse(PacketFailure::kRefused, "asked twice");
  if (sessions_.size() >= options_.max_sessions) {
    return refuse(PacketFailure::kLimit, "too many packet-mode sessions");
  }
  auto lease = pool_.Acquire();
  if (!lease) return refuse(PacketFailure::kNoAddress, "no free inner address");
  const bool udp = setup.wants_udp && endpoint_ != nullptr;
  uint16_t mtu = options_.mtu;
  if (udp) mtu = std::min(mtu, setup.max_datagram_plaintext);
  auto session = std::make_shared<ExitPacketSession>(*this, tunnel, *lease, mtu);
  uint32_t index = 0;
  if (udp) {
    auto reserved = endpoint_->Reserve();
    if (!reserved) {
      (void)pool_.Release(*lease);
      return refuse(PacketFailure::kLimit, "too many packet-mode sessions");
    }
    index = *reserved;
    DatagramPath::Options path_options;
    path_options.max_plaintext = mtu;
    path_options.answer_keepalives = true;
    auto path = std::make_shared<DatagramPath>(
        tunnel->session_keys(), index, setup.receiver_index, path_options, endpoint_->sink(),
        // The session owns the path, and the endpoint holds it only weakly.
        [raw = session.get()](std::span<uint8_t> packet) { raw->FromClient(packet, true); });
    endpoint_->Attach(index, path);
    session->SetPath(std::move(path), index);
  }
  std::weak_ptr<ExitPacketSession> weak_session = session;
  tunnel->SetPacketHandler([weak_session](ByteSpan packet) {
    if (auto s = weak_session.lock()) s->FromClient(packet, false);
  });
  tunnel->SetForwardRoomHandler([weak_session] {
    if (auto s = weak_session.lock()) s->Release();
  });
  by_address_[AddressKey(ToPacketAddress(lease->v4))] = session.get();
  by_address_[AddressKey(ToPacketAddress(lease->v6))] = session.get();
  sessions_[tunnel.get()] = session;
  ++counters_.sessions_opened;

  PacketReadyFields ready;
  ready.receiver_index = index;
  ready.udp_port = udp ? endpoint_->port() : 0;
  ready.mtu = mtu;
  std::memcpy(ready.ipv4.data(), lease->v4.bytes.data(), 4);
  ready.ipv4_prefix = options_.v4_pool.length;
  std::memcpy(ready.ipv6.data(), lease->v6.bytes.data(), 16);
  ready.ipv6_prefix = options_.v6_pool.length;
  TunnelLog()->debug("exit: {} packet mode: {}, {}, {}", tunnel->name(),
                     lease->v4.ToString(), lease->v6.ToString(), udp ? "udp" : "tcp only");
  return ready;
}

void ExitPackets::End(const TunnelConnection* tunnel) {
  auto it = sessions_.find(tunnel);
  if (it == sessions_.end()) return;
  auto session = std::move(it->second);
  sessions_.erase(it);
  by_address_.erase(AddressKey(ToPacketAddress(session->lease().v4)));
  by_address_.erase(AddressKey(ToPacketAddress(session->lease().v6)));
  if (endpoint_ && session->index() != 0) endpoint_->Unregister(session->index());
  (void)pool_.Release(session->lease());
}

void ExitPackets::FromTun(std::span<uint8_t> packet) {
  auto info = ip::ParsePacket(packet);
  if (!info) {
    ++counters_.malformed;
    return;
  }
  if (packet.size() > options_.mtu) {
    // The device's MTU keeps this from happening; answered as a router would.
    ++counters_.too_big;
    const IpAddress& own = info->family == ip::Family::kV4 ? pool_.exit_v4().address
                                                           : pool_.exit_v6().address;
    auto n = ip::BuildTooBig(packet, ToPacketAddress(own), options_.mtu, icmp_buffer_);
    if (n) WriteTun(ByteSpan(icmp_buffer_.data(), *n));
    return;
  }
  auto it = by_address_.find(AddressKey(info->dst));
  if (it == by_address_.end()) {
    ++counters_.no_session;
    return;
  }
  it->second->ToClient(packet, *info);
}

bool ExitPackets::WriteTun(ByteSpan packet, const ip::PacketInfo* info) {
  return tun_ && tun_->Write(packet, info);
}

asio::awaitable<void> ExitPackets::TickLoop() {
  auto self = shared_from_this();
  while (!stopped_) {
    tick_.expires_after(std::chrono::seconds(1));
    error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopped_) break;
    const uint64_t now = MonotonicMs();
    std::vector<const TunnelConnection*> gone;
    for (auto& [tunnel, session] : sessions_) {
      if (!session->Tick(now)) gone.push_back(tunnel);
    }
    for (auto* t : gone) End(t);
    Summarize(now);
  }
}

std::vector<std::pair<const char*, uint64_t>> ExitPackets::Dropped(const Counters& c) {
  return {{"malformed", c.malformed},         {"too_big", c.too_big},
          {"spoofed", c.not_from_session},    {"refused", c.refused},
          {"flow_limit", c.too_many_flows},   {"flow_rate", c.rate_limited},
          {"no_flow", c.no_flow},             {"no_session", c.no_session},
          {"unpaid", c.unpaid},               {"send", c.send_dropped},
          {"tun", c.tun_dropped}};
}

void ExitPackets::Summarize(uint64_t now, bool force) {
  if (!force &&
      now - last_summary_ms_ < static_cast<uint64_t>(options_.summary_interval.count())) {
    return;
  }
  last_summary_ms_ = now;
  const Counters& c = counters_;
  const Counters& r = reported_;
  // "N malformed, N too big, ...": each reason's drops since the last line.
  const auto now_dropped = Dropped(c);
  const auto then_dropped = Dropped(r);
  uint64_t dropped = 0;
  std::string reasons;
  for (size_t i = 0; i < now_dropped.size(); ++i) {
    const uint64_t n = now_dropped[i].second - then_dropped[i].second;
    dropped += n;
    std::string name = now_dropped[i].first;
    std::replace(name.begin(), name.end(), '_', ' ');
    reasons += (i == 0 ? "" : ", ") + std::to_string(n) + " " + name;
  }
  if (c.from_client == r.from_client && c.to_client == r.to_client && dropped == 0 &&
      c.sessions_opened == r.sessions_opened) {
    return;
  }
  TunnelLog()->info(
      "exit: packets: {} sessions ({} new, {} refused), {} flows; in {} ({} B), out {} ({} B, {} "
      "by tcp); {} held at the limit; dropped: {}",
      sessions_.size(), c.sessions_opened - r.sessions_opened,
      c.sessions_refused - r.sessions_refused, budget_.used(), c.from_client - r.from_client,
      c.from_client_bytes - r.from_client_bytes, c.to_client - r.to_client,
      c.to_client_bytes - r.to_client_bytes, c.to_client_tcp - r.to_client_tcp, c.held - r.held,
      reasons);
  reported_ = counters_;
}

void ExitPackets::Stop() {
  if (stopped_) return;
  stopped_ = true;
  tick_.cancel();
  Summarize(MonotonicMs(), /*force=*/true);  // the last period's counts
  std::vector<const TunnelConnection*> all;
  for (auto& [t, s] : sessions_) all.push_back(t);
  for (auto* t : all) End(t);
  if (tun_) tun_->Close();
  if (endpoint_) endpoint_->Close();
  if (nat_) (void)nat_->table.Remove();
}

}  // namespace dvpn::tunnel::session
