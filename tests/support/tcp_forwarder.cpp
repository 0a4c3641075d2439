#include "tests/support/tcp_forwarder.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "tests/support/socket_address.h"

namespace dvpn::testing {

namespace {

constexpr int kPollMs = 100;
constexpr std::chrono::seconds kConnectTimeout{5};

// A connect with a deadline on a blocking socket: poll for writability, then SO_ERROR.
bool ConnectWithin(int fd, const SocketAddress& to, std::chrono::milliseconds timeout) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int r = ::connect(fd, to.get(), to.length);
  if (r != 0 && errno != EINPROGRESS) return false;
  if (r != 0) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    int error = 0;
    socklen_t len = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error != 0) return false;
  }
  ::fcntl(fd, F_SETFL, flags);
  return true;
}

}  // namespace

std::expected<std::unique_ptr<TcpForwarder>, std::string> TcpForwarder::Start(
    const Netns* listen_ns, const std::string& listen_ip, int listen_port,
    const Netns* target_ns, const std::string& target_ip, int target_port) {
  if (!SocketAddress::Parse(target_ip, target_port)) {
    return std::unexpected("TcpForwarder: bad target " + target_ip);
  }
  std::unique_ptr<TcpForwarder> f(new TcpForwarder());
  f->target_ns_ = target_ns;
  f->target_ip_ = target_ip;
  f->target_port_ = target_port;
  f->listen_ = BoundSocketIn(listen_ns, SOCK_STREAM, listen_ip, listen_port);
  if (!f->listen_.valid()) {
    return std::unexpected("TcpForwarder: cannot listen on " + listen_ip + ":" +
                           std::to_string(listen_port) + ": " + std::strerror(errno));
  }
  f->port_ = BoundPort(f->listen_.get());
  f->acceptor_ = std::thread([raw = f.get()] { raw->AcceptLoop(); });
  return f;
}

TcpForwarder::~TcpForwarder() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : relays_) t.join();
}

void TcpForwarder::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_.get(), POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    Fd client(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client.valid()) continue;
    ++accepted_;
    if (open_.load() >= kMaxConnections) continue;  // closed by Fd
    ++open_;
    std::lock_guard<std::mutex> lock(mu_);
    relays_.emplace_back([this, c = std::move(client)]() mutable { Relay(std::move(c)); });
  }
}

void TcpForwarder::Relay(Fd client) {
  struct Done {
    std::atomic<int>& open;
    ~Done() { --open; }
  } done{open_};
  const auto to = SocketAddress::Parse(target_ip_, target_port_);
  Fd target = SocketIn(target_ns_, to->family(), SOCK_STREAM);
  if (!target.valid() || !ConnectWithin(target.get(), *to, kConnectTimeout)) return;
  // A peer that stops reading ends its relay instead of blocking it for ever.
  SetTimeouts(client.get(), std::chrono::seconds(30));
  SetTimeouts(target.get(), std::chrono::seconds(30));

  // Two directions: [0] client -> target, [1] target -> client. A direction ends at EOF (the
  // other side then gets a FIN) or on an error (both end).
  std::array<int, 2> from = {client.get(), target.get()};
  std::array<int, 2> into = {target.get(), client.get()};
  std::array<bool, 2> open = {true, true};
  std::array<char, 64 * 1024> buffer;
  while (!stop_ && (open[0] || open[1])) {
    std::array<pollfd, 2> p{};
    for (int i = 0; i < 2; ++i) p[i] = {open[i] ? from[i] : -1, POLLIN, 0};
    if (::poll(p.data(), 2, kPollMs) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || p[i].revents == 0) continue;
      const ssize_t n = ::recv(from[i], buffer.data(), buffer.size(), 0);
      if (n == 0) {
        ::shutdown(into[i], SHUT_WR);
        open[i] = false;
        continue;
      }
      if (n < 0 || !WriteAll(into[i], reinterpret_cast<const uint8_t*>(buffer.data()),
                             static_cast<size_t>(n))) {
        return;  // both sockets close
      }
    }
  }
}

}  // namespace dvpn::testing
