#pragma once
// RecordTransport: the connection a TunnelConnection's records travel over, seen from the mux
// and the stream pumps (docs/tunnel.md, "Layers"). The connection reads what arrives into its
// own (lazily grown) buffer and opens the records in place; it seals a batch of records in
// place and hands the whole batch to one WriteAll. So the seam costs one virtual call per read
// and per write batch, never one per record or byte, and no copy.
//
// TcpRecordTransport, today's only implementation, is the ordered byte stream of stream
// records (tunnel/record.h) over a TCP socket, unchanged on the wire.
//
// Threading: the io thread of `executor()`. Ownership: owned by its TunnelConnection (unique_ptr);
// one ReadSome and one WriteAll in flight at most.

#include <cstddef>
#include <cstdint>
#include <span>

#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

struct TransportIo {
  error_code ec;  // asio::error::eof when the peer closed
  size_t bytes = 0;
};

class RecordTransport {
 public:
  virtual ~RecordTransport() = default;

  virtual asio::any_io_executor executor() = 0;
  // Waits until bytes can be read or the transport failed (the next ReadSome then says how),
  // so that an idle reader holds no buffer.
  virtual asio::awaitable<void> WaitReadable() = 0;
  // Reads what has arrived, at most `into.size()` bytes; at least one unless it fails.
  virtual asio::awaitable<TransportIo> ReadSome(std::span<uint8_t> into) = 0;
  // Writes every byte of `buffers` in order (one gathered write); `bytes` is the total written.
  virtual asio::awaitable<TransportIo> WriteAll(std::span<const asio::const_buffer> buffers) = 0;
  // Stops receiving: a pending or later ReadSome fails. Sending goes on.
  virtual void ShutdownReceive() = 0;
  // Closes (after shutting both directions down when `shutdown_first`); pending operations end
  // with an error. Idempotent.
  virtual void Close(bool shutdown_first) = 0;

 protected:
  RecordTransport() = default;
  RecordTransport(const RecordTransport&) = delete;
  RecordTransport& operator=(const RecordTransport&) = delete;
};

// Stream records over a connected TCP socket (TCP_NODELAY is set).
class TcpRecordTransport final : public RecordTransport {
 public:
  explicit TcpRecordTransport(tcp::socket socket);

  asio::any_io_executor executor() override { return socket_.get_executor(); }
  asio::awaitable<void> WaitReadable() override;
  asio::awaitable<TransportIo> ReadSome(std::span<uint8_t> into) override;
  asio::awaitable<TransportIo> WriteAll(std::span<const asio::const_buffer> buffers) override;
  void ShutdownReceive() override;
  void Close(bool shutdown_first) override;

 private:
  tcp::socket socket_;
};

}  // namespace dvpn::tunnel::session
