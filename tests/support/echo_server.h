#pragma once
// A loopback TCP echo server for the end-to-end tests that move bytes through a tunnel: one
// thread accepts, one thread per connection echoes every byte and, after the peer's FIN,
// finishes echoing and half-closes (so a test also sees the FIN come back through the tunnel).
// Each connection's socket has `io_timeout` on sends and receives, which bounds a worker whose
// peer went silent; the destructor stops accepting and joins every worker. For tens of
// connections, not thousands.

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/support/net_util.h"

namespace dvpn::testing {

class EchoServer {
 public:
  explicit EchoServer(std::chrono::milliseconds io_timeout = std::chrono::seconds(30),
                      int backlog = 256);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  // On 127.0.0.1.
  int port() const { return port_; }

 private:
  void AcceptLoop();

  const std::chrono::milliseconds io_timeout_;
  Fd listen_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;  // guarded by mu_
};

}  // namespace dvpn::testing
