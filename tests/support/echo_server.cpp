#include "tests/support/echo_server.h"

#include <poll.h>
#include <sys/socket.h>

namespace dvpn::testing {

EchoServer::EchoServer(std::chrono::milliseconds io_timeout, int backlog)
    : io_timeout_(io_timeout) {
  listen_ = ListenLoopback(SOCK_STREAM, backlog, &port_);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

EchoServer::~EchoServer() {
  stop_ = true;
  ::shutdown(listen_.get(), SHUT_RDWR);
  acceptor_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : workers_) t.join();
}

void EchoServer::AcceptLoop() {
  while (!stop_) {
    // Polled, so that the destructor's stop_ is seen within 100 ms.
    pollfd p{listen_.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept(listen_.get(), nullptr, nullptr);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(mu_);
    workers_.emplace_back([fd, timeout = io_timeout_] {
      Fd conn(fd);
      SetTimeouts(fd, timeout);
      std::vector<uint8_t> buf(65536);
      for (;;) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r <= 0 || !WriteAll(fd, buf.data(), static_cast<size_t>(r))) break;
      }
      ::shutdown(fd, SHUT_WR);
    });
  }
}

}  // namespace dvpn::testing
