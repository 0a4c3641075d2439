#pragma once
// Packets to and from a TUN device on an Asio executor (docs/full-tunnel.md "The data plane"):
// a read loop hands each packet to a callback; Write puts one packet into the device at once or
// drops it (counted) when the device's queue is full, as a router drops: packets are datagrams,
// and the senders' congestion control reacts to the loss. Neither direction allocates per
// packet.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "common/bytes.h"
#include "tunnel/os/tun_device.h"
#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

class TunIo : public std::enable_shared_from_this<TunIo> {
 public:
  // One packet read from the device (valid during the call).
  using PacketFn = std::function<void(std::span<uint8_t> packet)>;

  struct Counters {
    uint64_t read = 0;
    uint64_t read_bytes = 0;
    uint64_t written = 0;
    uint64_t written_bytes = 0;
    uint64_t write_dropped = 0;  // the device's queue was full, or the write failed
  };

  // Takes the device's descriptor. `mtu`: the largest packet read (longer reads are cut by the
  // kernel; the device's MTU keeps them from happening).
  static std::shared_ptr<TunIo> Make(const asio::any_io_executor& ex, os::TunDevice device,
                                     size_t mtu, PacketFn on_packet);

  void Start();  // the read loop, until Close
  void Close();
  // Writes one whole packet; false (counted) when the device did not take it.
  bool Write(ByteSpan packet);

  const Counters& counters() const { return counters_; }
  const std::string& name() const { return name_; }
  uint32_t index() const { return index_; }

 private:
  TunIo(const asio::any_io_executor& ex, int fd, std::string name, uint32_t index, size_t mtu,
        PacketFn on_packet);
  asio::awaitable<void> ReadLoop();

  asio::posix::stream_descriptor fd_;
  std::string name_;
  uint32_t index_;
  std::vector<uint8_t> buffer_;
  PacketFn on_packet_;
  Counters counters_;
};

}  // namespace dvpn::tunnel::session
