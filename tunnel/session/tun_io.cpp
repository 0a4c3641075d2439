#include "tunnel/session/tun_io.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace dvpn::tunnel::session {

namespace {
constexpr int kReadsPerWakeup = 64;  // one busy device must not starve the executor
// ... and no more packets than this (a read may be a 64 KiB super-packet of 45 segments): a
// paid session's invoice and promise wait behind whatever one wakeup does, and at gigabit
// speeds that wait is what the credit window must cover (docs/full-tunnel.md "Held at the limit").
constexpr uint64_t kPacketsPerWakeup = 128;
}  // namespace

TunIo::TunIo(const asio::any_io_executor& ex, int fd, std::string name, uint32_t index, size_t mtu,
             bool vnet, PacketFn on_packet)
    : fd_(ex, fd),
      name_(std::move(name)),
      index_(index),
      mtu_(mtu),
      vnet_(vnet),
      buffer_(vnet ? ip::kMaxTunRead : mtu),
      scratch_(vnet ? mtu : 0),
      on_packet_(std::move(on_packet)) {
  if (vnet_) coalescer_ = std::make_unique<ip::TcpCoalescer>();
}

std::shared_ptr<TunIo> TunIo::Make(const asio::any_io_executor& ex, os::TunDevice device,
                                   size_t mtu, PacketFn on_packet) {
  const std::string name = device.name();
  const uint32_t index = device.index();
  const bool vnet = device.offloads().vnet_header;
  const int fd = device.Release();
  return std::shared_ptr<TunIo>(
      new TunIo(ex, fd, name, index, mtu, vnet, std::move(on_packet)));
}

void TunIo::Start() {
  asio::co_spawn(
      fd_.get_executor(), [self = shared_from_this()] { return self->ReadLoop(); },
      [](std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "tun read loop", e); });
}

void TunIo::Close() {
  if (coalescer_) coalescer_->Flush([](std::span<const uint8_t>) {});  // dropped with the device
  error_code ignored;
  fd_.close(ignored);  // the kernel deletes the device with its last descriptor
}

// One write system call of the pieces in `iov` (the vnet header, when the device has one,
// and the packet or super-packet), carrying `packet_bytes` of packets.
bool TunIo::WriteNow(std::span<const iovec> iov, size_t packet_bytes) {
  // A TUN write takes one whole packet or fails; the descriptor is non-blocking, so a full
  // queue is EAGAIN at once rather than a wait.
  size_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  ++counters_.writes;
  const ssize_t n = ::writev(fd_.native_handle(), iov.data(), static_cast<int>(iov.size()));
  if (n != static_cast<ssize_t>(total)) {
    ++counters_.write_dropped;
    return false;
  }
  counters_.written_bytes += packet_bytes;
  return true;
}

bool TunIo::Write(ByteSpan packet, const ip::PacketInfo* info) {
  if (!fd_.is_open() || packet.empty()) {
    ++counters_.write_dropped;
    return false;
  }
  if (vnet_ && info != nullptr) {
    if (!coalescer_->Add(packet, *info)) {
      Flush();
      if (!coalescer_->Add(packet, *info)) {
        ++counters_.write_dropped;
        return false;
      }
    }
    ++counters_.written;  // taken: a drop at the flush is counted there
    if (!flush_posted_) {
      flush_posted_ = true;
      asio::post(fd_.get_executor(), [self = shared_from_this()] {
        self->flush_posted_ = false;
        self->Flush();
      });
    }
    return true;
  }
  // At once: a device without the header, or a packet not parsed (written alone after an
  // all-zero header).
  static constexpr uint8_t kPlain[ip::kVnetHeaderSize] = {};
  const iovec plain{const_cast<uint8_t*>(kPlain), sizeof kPlain};
  const iovec body{const_cast<uint8_t*>(packet.data()), packet.size()};
  const iovec with_header[2] = {plain, body};
  if (!(vnet_ ? WriteNow(with_header, packet.size()) : WriteNow({&body, 1}, packet.size()))) {
    return false;
  }
  ++counters_.written;
  return true;
}

void TunIo::Flush() {
  if (!coalescer_ || coalescer_->empty()) return;
  if (!fd_.is_open()) {
    coalescer_->Flush([](std::span<const uint8_t>) {});
    return;
  }
  coalescer_->Flush([this](std::span<const uint8_t> write) {
    const iovec whole{const_cast<uint8_t*>(write.data()), write.size()};
    WriteNow({&whole, 1}, write.size() - ip::kVnetHeaderSize);
  });
}

void TunIo::OnRead(std::span<uint8_t> read) {
  if (!vnet_) {
    ++counters_.read;
    counters_.read_bytes += read.size();
    on_packet_(read);
    return;
  }
  auto n = ip::SplitTunRead(read, scratch_, mtu_, [this](std::span<uint8_t> packet) {
    ++counters_.read;
    counters_.read_bytes += packet.size();
    on_packet_(packet);
  });
  if (!n) {
    ++counters_.bad_reads;
  } else if (*n > 1) {
    ++counters_.super_reads;
  }
}

asio::awaitable<void> TunIo::ReadLoop() {
  auto self = shared_from_this();
  while (fd_.is_open()) {
    error_code ec;
    co_await fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                            asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // closed
    // Drain what is queued now (bounded).
    const uint64_t first = counters_.read;
    for (int i = 0; i < kReadsPerWakeup && fd_.is_open() &&
                    counters_.read - first < kPacketsPerWakeup;
         ++i) {
      const ssize_t n = ::read(fd_.native_handle(), buffer_.data(), buffer_.size());
      if (n <= 0) break;  // EAGAIN: empty; 0 or an error: wait again
      OnRead(std::span<uint8_t>(buffer_.data(), static_cast<size_t>(n)));
    }
  }
}

}  // namespace dvpn::tunnel::session
