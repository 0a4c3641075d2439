#pragma once
// Batched datagram I/O for full-tunnel mode (docs/full-tunnel.md "Offloads"): many sealed
// datagrams leave in one system call (sendmmsg, and with UDP_SEGMENT one buffer of equal-size
// datagrams per message), and many arrive in one (recvmmsg, and with UDP_GRO several datagrams
// of one sender in one buffer, split here again by the size the kernel reports). Every
// mechanism can be switched off (PacketOffloads), and a kernel that refuses one is answered
// with the plain way, so the same code runs on Debian 12's 6.1 kernel and on newer ones.
//
// No heap allocation after construction; one executor, like the socket's owner.

#include <sys/socket.h>

#include <array>
#include <memory>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/result.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/packet_offloads.h"

namespace dvpn::tunnel::session {

using udp = asio::ip::udp;

// Where sealed datagrams go: room for one (Prepare), then Commit with its size and peer.
class DatagramSink {
 public:
  virtual ~DatagramSink() = default;
  // A buffer of at least `max` bytes for one datagram (valid until Commit).
  virtual std::span<uint8_t> Prepare(size_t max) = 0;
  // Queues (or sends) the first `size` bytes of the last Prepare'd buffer to `to`. False when
  // it was refused at once (counted); a queued datagram may still be dropped at Flush.
  virtual bool Commit(size_t size, const udp::endpoint& to) = 0;
};

// A queue of datagrams to send on one socket, sent by Flush: in runs of equal size to one
// peer (the last of a run may be shorter) that leave as one message with UDP_SEGMENT when gso
// is on, in one sendmmsg when mmsg is on. A socket whose kernel refuses UDP_SEGMENT (EIO,
// EINVAL) turns gso off for good and the run is sent again datagram by datagram. A full
// socket buffer drops what did not fit (counted): packets are datagrams.
class UdpSendBatch final : public DatagramSink {
 public:
  static constexpr size_t kMaxMessages = 64;
  static constexpr size_t kMaxRunSegments = 64;       // the kernel's UDP_MAX_SEGMENTS floor
  static constexpr size_t kMaxRunBytes = 65000;       // one UDP payload with GSO
  static constexpr size_t kArenaBytes = 1024 * 1024;  // datagrams queued before a Flush

  struct Counters {
    uint64_t datagrams = 0;  // sent
    uint64_t dropped = 0;    // refused by the socket
    uint64_t calls = 0;      // system calls made by Flush
    uint64_t gso_runs = 0;   // messages that carried more than one datagram
  };

  // `fd` is the socket's (non-blocking); `connected` sockets send without an address. The
  // first datagram queued posts a Flush to `ex`, so the queue leaves at the end of the current
  // batch of work (or earlier, when it is full).
  UdpSendBatch(const asio::any_io_executor& ex, int fd, bool connected, PacketOffloads offloads);
  ~UdpSendBatch() override;
  UdpSendBatch(const UdpSendBatch&) = delete;
  UdpSendBatch& operator=(const UdpSendBatch&) = delete;

  std::span<uint8_t> Prepare(size_t max) override;
  bool Commit(size_t size, const udp::endpoint& to) override;
  // Sends everything queued.
  void Flush();
  // The socket is closing: forgets what is queued, and from now on refuses (counted) what is
  // committed, so nothing is ever sent on a descriptor number the kernel may give another
  // socket.
  void Close() {
    closed_ = true;
    runs_ = 0;
    used_ = 0;
  }
  bool empty() const { return runs_ == 0; }
  bool gso() const { return gso_; }
  const Counters& counters() const { return counters_; }

 private:
  struct Run {
    size_t offset = 0;   // into arena_
    size_t bytes = 0;    // all datagrams of the run
    size_t segment = 0;  // the size of each but the last
    size_t count = 0;
    bool closed = false;  // the last datagram was shorter: nothing more joins
    sockaddr_storage peer{};
    socklen_t peer_len = 0;
  };
  void SendRuns(size_t from);
  bool SendOne(size_t index, bool as_gso);

  asio::any_io_executor ex_;
  std::shared_ptr<bool> alive_;  // a posted Flush runs only while the batch exists
  bool flush_posted_ = false;
  bool closed_ = false;
  int fd_;
  bool connected_;
  bool gso_;
  bool mmsg_;
  std::vector<uint8_t> arena_;
  size_t used_ = 0;
  std::array<Run, kMaxMessages> run_{};
  size_t runs_ = 0;
  Counters counters_;
};

// Reads datagrams in batches: recvmmsg (mmsg) into up to kMessages buffers, each large enough
// for a UDP_GRO burst (gro) or one datagram, and splits GRO bursts by the segment size the
// kernel reports in its control message. Turns UDP_GRO on for the socket in the constructor.
class UdpReceiveBatch {
 public:
  static constexpr size_t kMessages = 32;
  // What a receive loop reads in one wakeup at most (Read's max_datagrams): one call may bring
  // kMessages GRO bursts of up to 45 datagrams, and the tunnel's CONTROL frames (invoices,
  // promises) wait behind one wakeup's work.
  static constexpr size_t kDatagramsPerWakeup = 128;

  // `max_datagram`: the largest single datagram accepted.
  UdpReceiveBatch(int fd, PacketOffloads offloads, size_t max_datagram);

  // Reads without waiting what the socket holds, at most `max_calls` system calls and no
  // further call once `max_datagrams` were read (one call may bring up to kMessages GRO bursts);
  // gives each datagram to fn(std::span<uint8_t> datagram, const udp::endpoint& from) (the
  // buffer is reused after the call). Returns the number of datagrams; stops at the first
  // would-block.
  template <class Fn>
  size_t Read(size_t max_calls, Fn&& fn, size_t max_datagrams = SIZE_MAX) {
    size_t datagrams = 0;
    for (size_t call = 0; call < max_calls && datagrams < max_datagrams; ++call) {
      const int n = Receive();
      if (n <= 0) break;
      for (int m = 0; m < n; ++m) {
        const Message& msg = message_[m];
        udp::endpoint from;
        if (!connected_from_) FromSockaddr(m, from);
        std::span<uint8_t> all(msg.buffer, msg.length);
        const size_t seg = msg.segment ? msg.segment : all.size();
        for (size_t off = 0; off < all.size(); off += seg) {
          fn(all.subspan(off, std::min(seg, all.size() - off)), from);
          ++datagrams;
        }
      }
      if (static_cast<size_t>(n) < batch_) break;  // drained
    }
    return datagrams;
  }
  // Datagrams from a connected socket: `from` is left default (the owner knows its peer).
  void SetConnected() { connected_from_ = true; }
  bool gro() const { return gro_; }
  uint64_t calls() const { return calls_; }

 private:
  struct Message {
    uint8_t* buffer = nullptr;
    size_t length = 0;
    size_t segment = 0;  // UDP_GRO: the size of each datagram but the last; 0 = one datagram
  };
  int Receive();  // fills message_[0..n), returns n (0 on would-block or error)
  void FromSockaddr(int m, udp::endpoint& from) const;

  int fd_;
  bool gro_;
  bool mmsg_;
  bool connected_from_ = false;
  size_t batch_;
  size_t buffer_size_;
  std::vector<uint8_t> storage_;
  std::array<Message, kMessages> message_{};
  std::array<sockaddr_storage, kMessages> from_{};
  std::array<std::array<uint8_t, 64>, kMessages> control_{};
  uint64_t calls_ = 0;
};

}  // namespace dvpn::tunnel::session
