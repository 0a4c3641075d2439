#include "tunnel/session/host_addresses.h"

#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

namespace dvpn::tunnel::session {

IpAddress FromAsioAddress(const asio::ip::address& a) {
  if (a.is_v4()) return IpAddress::V4(a.to_v4().to_bytes());
  if (a.to_v6().is_v4_mapped()) {
    return IpAddress::V4(asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_bytes());
  }
  return IpAddress::V6(a.to_v6().to_bytes());
}
namespace {

// One drain of the netlink socket reads at most this many messages before re-reading the list
// (a storm of notifications costs one re-read per batch, and other work runs in between).
constexpr int kMaxReadsPerWake = 64;

void LogException(std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "host addresses", e); }

}  // namespace

Result<std::vector<IpAddress>, HostAddressErrc> ReadHostAddresses() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return dvpn::Fail(HostAddressErrc::kCannotRead,
                      std::string("cannot read the host's addresses (getifaddrs): ") +
                          std::strerror(errno));
  }
  std::vector<IpAddress> out;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      std::array<uint8_t, 4> b{};
      std::memcpy(b.data(), &sin->sin_addr, 4);
      out.push_back(IpAddress::V4(b));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      std::array<uint8_t, 16> b{};
      std::memcpy(b.data(), &sin6->sin6_addr, 16);
      out.push_back(IpAddress::V6(b));
    }
  }
  freeifaddrs(list);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<std::shared_ptr<HostAddressWatcher>, HostAddressErrc> HostAddressWatcher::Create(
    asio::io_context& io, Options options) {
  auto addresses = ReadHostAddresses();
  if (!addresses) return std::unexpected(addresses.error());
  auto watcher = std::shared_ptr<HostAddressWatcher>(
      new HostAddressWatcher(io, options, std::move(*addresses)));
  if (options.watch_netlink) watcher->OpenNetlink();
  return watcher;
}

HostAddressWatcher::HostAddressWatcher(asio::io_context& io, Options options,
                                       std::vector<IpAddress> addresses)
    : options_(options), netlink_(io), timer_(io), addresses_(std::move(addresses)) {}

void HostAddressWatcher::OpenNetlink() {
  error_code ec;
  netlink_.open(asio::generic::raw_protocol(AF_NETLINK, NETLINK_ROUTE), ec);
  if (!ec) {
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    local.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    netlink_.bind(asio::generic::raw_protocol::endpoint(&local, sizeof local, NETLINK_ROUTE), ec);
  }
  if (!ec) netlink_.non_blocking(true, ec);
  if (ec) {
    TunnelLog()->warn(
        "exit: cannot watch the host's addresses over netlink ({}); re-reading them every {} ms",
        ec.message(), options_.resync_interval.count());
    error_code ignored;
    netlink_.close(ignored);
  }
}

void HostAddressWatcher::Start() {
  auto self = shared_from_this();
  if (netlink_.is_open()) {
    asio::co_spawn(
        netlink_.get_executor(), [self] { return self->NetlinkLoop(); }, LogException);
  }
  asio::co_spawn(
      timer_.get_executor(), [self] { return self->ResyncLoop(); }, LogException);
}

void HostAddressWatcher::Stop() {
  stopped_ = true;
  error_code ignored;
  netlink_.close(ignored);
  timer_.cancel();
}

asio::awaitable<void> HostAddressWatcher::NetlinkLoop() {
  auto self = shared_from_this();
  while (!stopped_ && netlink_.is_open()) {
    error_code ec;
    co_await netlink_.async_wait(asio::socket_base::wait_read,
                                 asio::redirect_error(asio::use_awaitable, ec));
    if (stopped_ || ec == asio::error::operation_aborted) co_return;
    if (DrainNetlink()) Refresh();
  }
}

void HostAddressWatcher::Poll() {
  if (!stopped_ && netlink_.is_open() && DrainNetlink()) Refresh();
}

bool HostAddressWatcher::DrainNetlink() {
  std::array<uint8_t, 8192> buf;  // the messages are only drained, not parsed
  bool changed = false;
  error_code ec;
  for (int i = 0; i < kMaxReadsPerWake; ++i) {
    netlink_.receive(asio::buffer(buf), 0, ec);
    if (ec) break;
    changed = true;
  }
  if (!ec || ec == asio::error::would_block || ec == asio::error::try_again) return changed;
  // ENOBUFS: the kernel dropped notifications; the re-read repairs that.
  if (ec == asio::error::no_buffer_space) return true;
  TunnelLog()->warn(
      "exit: netlink watch of the host's addresses failed ({}); re-reading them every {} ms",
      ec.message(), options_.resync_interval.count());
  error_code ignored;
  netlink_.close(ignored);
  return true;
}

asio::awaitable<void> HostAddressWatcher::ResyncLoop() {
  auto self = shared_from_this();
  while (!stopped_) {
    timer_.expires_after(options_.resync_interval);
    error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopped_) co_return;
    Refresh();
  }
}

void HostAddressWatcher::Refresh() {
  auto now = ReadHostAddresses();
  if (!now) {
    TunnelLog()->warn("exit: {}; keeping the last list", now.error().message);
    return;
  }
  if (*now == addresses_) return;
  addresses_ = std::move(*now);
  ++generation_;
  TunnelLog()->debug("exit: the host has {} addresses now", addresses_.size());
}

}  // namespace dvpn::tunnel::session
