#include "tunnel/session/tun_io.h"

#include <unistd.h>

#include <cerrno>

namespace dvpn::tunnel::session {

TunIo::TunIo(const asio::any_io_executor& ex, int fd, std::string name, uint32_t index, size_t mtu,
             PacketFn on_packet)
    : fd_(ex, fd),
      name_(std::move(name)),
      index_(index),
      buffer_(mtu),
      on_packet_(std::move(on_packet)) {}

std::shared_ptr<TunIo> TunIo::Make(const asio::any_io_executor& ex, os::TunDevice device,
                                   size_t mtu, PacketFn on_packet) {
  const std::string name = device.name();
  const uint32_t index = device.index();
  const int fd = device.Release();
  return std::shared_ptr<TunIo>(new TunIo(ex, fd, name, index, mtu, std::move(on_packet)));
}

void TunIo::Start() {
  asio::co_spawn(
      fd_.get_executor(), [self = shared_from_this()] { return self->ReadLoop(); },
      [](std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "tun read loop", e); });
}

void TunIo::Close() {
  error_code ignored;
  fd_.close(ignored);  // the kernel deletes the device with its last descriptor
}

bool TunIo::Write(ByteSpan packet) {
  if (!fd_.is_open() || packet.empty()) {
    ++counters_.write_dropped;
    return false;
  }
  // A TUN write takes one whole packet or fails; the descriptor is non-blocking, so a full
  // queue is EAGAIN at once rather than a wait.
  const ssize_t n = ::write(fd_.native_handle(), packet.data(), packet.size());
  if (n != static_cast<ssize_t>(packet.size())) {
    ++counters_.write_dropped;
    return false;
  }
  ++counters_.written;
  counters_.written_bytes += packet.size();
  return true;
}

asio::awaitable<void> TunIo::ReadLoop() {
  auto self = shared_from_this();
  while (fd_.is_open()) {
    error_code ec;
    co_await fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                            asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // closed
    // Drain what is queued now (bounded, so one busy device cannot starve the executor).
    for (int i = 0; i < 64 && fd_.is_open(); ++i) {
      const ssize_t n = ::read(fd_.native_handle(), buffer_.data(), buffer_.size());
      if (n <= 0) break;  // EAGAIN: empty; 0 or an error: wait again
      ++counters_.read;
      counters_.read_bytes += static_cast<uint64_t>(n);
      on_packet_(std::span<uint8_t>(buffer_.data(), static_cast<size_t>(n)));
    }
  }
}

}  // namespace dvpn::tunnel::session
