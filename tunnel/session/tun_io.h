#pragma once
// Packets to and from a TUN device on an Asio executor (docs/full-tunnel.md "The data plane"):
// a read loop hands each packet to a callback; Write puts one packet into the device or drops
// it (counted) when the device's queue is full, as a router drops: packets are datagrams, and
// the senders' congestion control reacts to the loss. Neither direction allocates per packet.
//
// With a device created with offloads (TunDevice::CreateWithOffloads; docs/full-tunnel.md
// "Offloads"), a read may be a TCP or UDP super-packet: it is split into ordinary packets
// (ip::SplitTunRead) before the callback sees them, so everything after the device (flows,
// policy, meters, sealing) sees packets of at most the MTU. Writes of TCP segments are queued
// and joined per flow (ip::TcpCoalescer); the queue is written at the end of the current batch
// of work (a Flush posted to the executor by the first queued packet), or at once when full.

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "common/bytes.h"
#include "tunnel/ip/offload.h"
#include "tunnel/ip/packet.h"
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
    uint64_t super_reads = 0;    // reads that were split into more than one packet
    uint64_t bad_reads = 0;      // reads SplitTunRead refused (dropped)
    uint64_t writes = 0;         // write system calls (joined packets count once)
  };

  // Takes the device's descriptor. `mtu`: the largest packet read (longer reads are cut by the
  // kernel; the device's MTU keeps them from happening).
  static std::shared_ptr<TunIo> Make(const asio::any_io_executor& ex, os::TunDevice device,
                                     size_t mtu, PacketFn on_packet);

  void Start();  // the read loop, until Close
  void Close();
  // Writes one whole packet; false (counted) when the device did not take it. With offloads
  // and `info` (ParsePacket(packet), so its checksums verified) a TCP segment is queued to be
  // joined (true: taken; a drop at the flush is counted).
  bool Write(ByteSpan packet, const ip::PacketInfo* info = nullptr);
  // Writes what is queued (also posted automatically; tests and shutdown call it).
  void Flush();
  bool offloads() const { return vnet_; }

  const Counters& counters() const { return counters_; }
  const std::string& name() const { return name_; }
  uint32_t index() const { return index_; }

 private:
  TunIo(const asio::any_io_executor& ex, int fd, std::string name, uint32_t index, size_t mtu,
        bool vnet, PacketFn on_packet);
  asio::awaitable<void> ReadLoop();
  void OnRead(std::span<uint8_t> read);
  bool WriteNow(std::span<const iovec> iov, size_t packet_bytes);

  asio::posix::stream_descriptor fd_;
  std::string name_;
  uint32_t index_;
  size_t mtu_;
  bool vnet_;
  std::vector<uint8_t> buffer_;
  std::vector<uint8_t> scratch_;  // offloads: the segment being handed over
  PacketFn on_packet_;
  std::unique_ptr<ip::TcpCoalescer> coalescer_;  // offloads only
  bool flush_posted_ = false;
  Counters counters_;
};

}  // namespace dvpn::tunnel::session
