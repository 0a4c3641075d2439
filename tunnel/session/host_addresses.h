#pragma once
// HostAddressWatcher: knows every address of every interface of this host and keeps the list
// current, so the exit policy can refuse the exit's own host (docs/tunnel.md, "The exit's own
// host"). Reads the list with getifaddrs at construction; then a NETLINK_ROUTE socket
// subscribed to RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR wakes it on every address change and it
// re-reads the whole list (the notifications themselves are not parsed); a periodic re-read
// (`resync_interval`) repairs lost notifications and stands in when netlink is unavailable.
//
// Threading: constructed on any thread; Start(), Stop() and the accessors on the io_context's
// thread (the exit's). Owned through shared_ptr: its pending operations hold it; Stop() ends
// them. The addresses are those of the network namespace of the thread that constructs it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "tunnel/exit_policy.h"
#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

enum class HostAddressErrc {
  kCannotRead = 1,  // getifaddrs failed (e.g. AF_NETLINK forbidden); message has errno text
};

// An Asio address as the policy's IpAddress; an IPv4-mapped IPv6 address as the IPv4 one.
IpAddress FromAsioAddress(const asio::ip::address& a);

// Every IPv4 and IPv6 address of every interface now (up or down), as getifaddrs reports them.
[[nodiscard]] Result<std::vector<IpAddress>, HostAddressErrc> ReadHostAddresses();

class HostAddressWatcher : public std::enable_shared_from_this<HostAddressWatcher> {
 public:
  struct Options {
    // The whole list is re-read at least this often, notifications or not.
    std::chrono::milliseconds resync_interval{5000};
    // False: no netlink subscription, the periodic re-read only (tests of the fallback).
    bool watch_netlink = true;
  };

  // Reads the addresses once and opens the netlink socket (a socket that cannot be opened is
  // logged and leaves the periodic re-read). Fails with kCannotRead when getifaddrs fails.
  [[nodiscard]] static Result<std::shared_ptr<HostAddressWatcher>, HostAddressErrc> Create(
      asio::io_context& io, Options options);

  HostAddressWatcher(const HostAddressWatcher&) = delete;
  HostAddressWatcher& operator=(const HostAddressWatcher&) = delete;

  // Starts the netlink wait and the periodic re-read.
  void Start();
  // Closes the socket and the timer; the last list stays.
  void Stop();
  // Reads what notifications are already queued on the netlink socket, without waiting, and
  // re-reads the list if there were any: a change the kernel announced before this call is in
  // addresses() after it, even if the io loop has not run the watcher yet. One non-blocking
  // recv when nothing changed.
  void Poll();

  // The list as last read; `generation()` changes whenever it changes.
  const std::vector<IpAddress>& addresses() const { return addresses_; }
  uint64_t generation() const { return generation_; }
  bool watching_netlink() const { return netlink_.is_open(); }

 private:
  HostAddressWatcher(asio::io_context& io, Options options, std::vector<IpAddress> addresses);
  void OpenNetlink();
  asio::awaitable<void> NetlinkLoop();
  asio::awaitable<void> ResyncLoop();
  // Reads queued notifications (at most kMaxReadsPerWake); true when there were any or some
  // were lost. Closes the socket on an unexpected error (the periodic re-read remains).
  bool DrainNetlink();
  // Re-reads the list; a failed read keeps the last one (logged).
  void Refresh();

  Options options_;
  asio::generic::raw_protocol::socket netlink_;
  asio::steady_timer timer_;
  std::vector<IpAddress> addresses_;  // sorted
  uint64_t generation_ = 1;
  bool stopped_ = false;
};

}  // namespace dvpn::tunnel::session
