#pragma once
// A TCP relay between two network namespaces, for the full-tunnel end-to-end tests: the ledger
// runs in the test's own namespace on 127.0.0.1 (where the test's admin client reaches it) and
// the daemons in the namespaces of tests/support/topology.h reach it through a forwarder that
// listens on an address of the "internet" namespace. Each accepted connection gets a connection
// to the target made from the target's namespace, and bytes are copied both ways (a half-close
// is passed on) until both sides have ended.
//
// One thread accepts; one thread per connection copies (at most kMaxConnections at once; more
// are closed at accept). The namespaces must outlive the forwarder. Every wait is a poll of at most 100 ms, so the destructor stops
// accepting, closes every connection and joins every thread within a moment.

#include <atomic>
#include <expected>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/net_util.h"
#include "tests/support/netns.h"

namespace dvpn::testing {

class TcpForwarder {
 public:
  static constexpr int kMaxConnections = 64;

  // Listens on listen_ip:listen_port (0: any port) in `listen_ns` and relays to
  // target_ip:target_port reached from `target_ns`; a null namespace is this process's. An
  // error message when the address does not parse or the socket cannot listen.
  static std::expected<std::unique_ptr<TcpForwarder>, std::string> Start(
      const Netns* listen_ns, const std::string& listen_ip, int listen_port,
      const Netns* target_ns, const std::string& target_ip, int target_port);

  ~TcpForwarder();
  TcpForwarder(const TcpForwarder&) = delete;
  TcpForwarder& operator=(const TcpForwarder&) = delete;

  int port() const { return port_; }
  // Connections accepted so far.
  int accepted() const { return accepted_.load(); }

 private:
  TcpForwarder() = default;
  void AcceptLoop();
  void Relay(Fd client);

  const Netns* target_ns_ = nullptr;
  std::string target_ip_;
  int target_port_ = 0;
  Fd listen_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> open_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> relays_;  // guarded by mu_
};

}  // namespace dvpn::testing
