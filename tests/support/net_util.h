#pragma once
// Small blocking-socket helpers shared by the end-to-end tests that talk to the real executables
// from plain sockets: an owning descriptor, loopback connections and listeners, timeouts, whole
// reads and writes, the open-file limit and a bounded poll. Header-only; Linux.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>

namespace dvpn::testing {

// A file descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives the descriptor up to the caller (who closes it); -1 when invalid.
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// Send and receive timeouts of a blocking socket.
inline void SetTimeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = t.count() / 1000;
  tv.tv_usec = (t.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// 127.0.0.1:`port` (0: any port, when binding).
inline sockaddr_in LoopbackAddress(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// The port a bound IPv4 socket has.
inline int LocalPort(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// A blocking TCP connection to 127.0.0.1:`port` with `timeout` on sends and receives, from
// `source` when it is not empty (a local address such as 127.1.2.3). Invalid on failure.
inline Fd ConnectLoopback(int port, std::chrono::milliseconds timeout,
                          const std::string& source = "") {
  Fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (!fd.valid()) return Fd();
  SetTimeouts(fd.get(), timeout);
  if (!source.empty()) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, source.c_str(), &local.sin_addr);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) return Fd();
  }
  const sockaddr_in addr = LoopbackAddress(port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Fd();
  }
  return fd;
}

// A socket of `type` (SOCK_STREAM, possibly with flags such as SOCK_NONBLOCK) listening on
// 127.0.0.1 with `backlog`, on a port the kernel picks (stored in `*port`).
inline Fd ListenLoopback(int type, int backlog, int* port) {
  Fd fd(::socket(AF_INET, type, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const sockaddr_in addr = LoopbackAddress(0);
  ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  ::listen(fd.get(), backlog);
  *port = LocalPort(fd.get());
  return fd;
}

// A loopback TCP port nobody listens on: bound, then released (the kernel does not hand a port
// it just released to the next bind to port 0 at once).
inline int UnusedLoopbackPort() {
  Fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  const sockaddr_in addr = LoopbackAddress(0);
  ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  return LocalPort(fd.get());
}

// Writes all `n` bytes (false on error or timeout; never SIGPIPE).
inline bool WriteAll(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly `n` bytes (false on EOF, error or timeout).
inline bool ReadExactly(int fd, uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, data, n, 0);
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
inline uint64_t RaiseOwnFileLimit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur != lim.rlim_max) {
    rlimit want = lim;
    want.rlim_cur = lim.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &want) == 0) lim = want;
  }
  return lim.rlim_cur;
}

// Polls `condition` every `every` until it holds or `timeout` passes.
template <class F>
bool PollUntil(F condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds every = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

}  // namespace dvpn::testing
