#pragma once
// The exit's one UDP socket for packet-mode sessions (docs/full-tunnel.md "The data plane",
// docs/tunnel.md "Datagram records"): every session receives through it, found by the receiver
// index in the datagram's header before any key is tried. Datagrams that are malformed or name
// no registered index are dropped and counted; nothing is ever sent in answer to them. Sending
// is fire and forget (a full socket buffer drops the datagram, counted): packets are datagrams.
//
// Runs on one executor (a single-threaded io_context or a strand); every method is called there.

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/bytes.h"
#include "common/result.h"
#include "tunnel/datagram.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/udp_batch.h"

namespace dvpn::tunnel::session {

// The kernel buffers of a datagram socket that carries a tunnel's packets: a burst of a TCP
// flow inside the tunnel must not overflow them while the reader is busy (every datagram lost
// there is a retransmission inside, and bytes the sender metered). Asks for `bytes` each way with
// SO_RCVBUFFORCE / SO_SNDBUFFORCE (CAP_NET_ADMIN, which both ends of full-tunnel mode hold), else
// with SO_RCVBUF / SO_SNDBUF (capped by net.core.rmem_max / wmem_max). Best effort.
inline constexpr int kDatagramSocketBuffer = 4 * 1024 * 1024;
void GrowDatagramBuffers(udp::socket& socket, int bytes = kDatagramSocketBuffer);

enum class EndpointErrc {
  kBind = 1,  // the socket cannot be opened or bound
  kFull,      // Reserve: max_sessions indices are taken
};

class DatagramEndpoint : public std::enable_shared_from_this<DatagramEndpoint> {
 public:
  struct Options {
    size_t max_sessions = 65536;  // registered receiver indices at once
    // Largest datagram read; longer ones are cut by the kernel, fail to authenticate and are
    // dropped. Both sides' max plaintext (PACKET_SETUP) stays below this.
    size_t max_datagram = kMaxDatagramPlaintext + kDatagramOverhead;
    // Batched sends and receives (mmsg), UDP_SEGMENT (gso) and UDP_GRO (gro); tun is not
    // the endpoint's.
    PacketOffloads offloads;
  };

  // What a session gives the endpoint to receive its datagrams (docs: DatagramPath).
  class Receiver {
   public:
    virtual ~Receiver() = default;
    // One datagram whose header names this receiver's index, from `from`; not yet
    // authenticated. The buffer is the endpoint's and is reused once this returns.
    virtual void OnDatagram(std::span<uint8_t> datagram, const udp::endpoint& from) = 0;
  };

  struct Counters {
    uint64_t received = 0;       // datagrams read from the socket
    uint64_t malformed = 0;      // header refused (ParseDatagramHeader)
    uint64_t unknown_index = 0;  // no session registered under the index
    uint64_t delivered = 0;      // handed to a receiver (which may still refuse them)
    uint64_t sent = 0;
    uint64_t send_dropped = 0;  // the socket refused (buffer full, unreachable, ...)
    uint64_t send_calls = 0;    // system calls that sent (batches)
    uint64_t receive_calls = 0;
  };

  static Result<std::shared_ptr<DatagramEndpoint>, EndpointErrc> Open(
      const asio::any_io_executor& ex, const udp::endpoint& listen, Options options);
  static Result<std::shared_ptr<DatagramEndpoint>, EndpointErrc> Open(
      const asio::any_io_executor& ex, const udp::endpoint& listen) {
    return Open(ex, listen, Options{});
  }

  // Starts the receive loop (it ends at Close).
  void Start();
  void Close();
  uint16_t port() const { return port_; }

  // Reserves a fresh random receiver index (not 0, not in use) for a session that will Attach
  // its receiver under it (the receiver needs the index to be built). kFull at max_sessions.
  Result<uint32_t, EndpointErrc> Reserve();
  // Delivers the datagrams for `index` to `receiver`, held weakly: once it is gone its index is
  // freed. False when `index` was not reserved.
  bool Attach(uint32_t index, std::weak_ptr<Receiver> receiver);
  // Frees the index (the session ended).
  void Unregister(uint32_t index);
  size_t sessions() const { return receivers_.size(); }

  // Queues one datagram to `to` (sent at the end of the current batch of work); false
  // (counted) when it was refused at once.
  bool SendTo(ByteSpan datagram, const udp::endpoint& to);
  // Where the sessions' paths seal their datagrams (sent like SendTo's).
  DatagramSink& sink() { return *send_; }
  // Sends what is queued now.
  void Flush() { send_->Flush(); }

  Counters counters() const;

 private:
  DatagramEndpoint(udp::socket socket, Options options);
  asio::awaitable<void> ReceiveLoop();
  void Dispatch(std::span<uint8_t> datagram, const udp::endpoint& from);

  udp::socket socket_;
  Options options_;
  uint16_t port_ = 0;
  std::unique_ptr<UdpSendBatch> send_;
  std::unique_ptr<UdpReceiveBatch> receive_;
  struct Entry {
    std::weak_ptr<Receiver> receiver;
    bool attached = false;  // a reserved index has no receiver yet
  };
  std::unordered_map<uint32_t, Entry> receivers_;
  std::mt19937 index_rng_;
  Counters counters_;
};

}  // namespace dvpn::tunnel::session
