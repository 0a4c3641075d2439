#pragma once
// TunnelConnection: one established tunnel (after the handshake) over a TCP socket, for either
// role. It owns the socket, the record sealer/opener and the StreamTable, runs a read loop
// (large reads, whole records opened in place, frames dispatched to the table), a write loop
// (frames coalesced into records, records into one large write; one write in flight), a
// keepalive/idle timer, and two pumps per attached stream (local socket <-> tunnel) with
// per-stream back-pressure (a local socket is not read while its send window is 0 or the
// tunnel's write buffer is full).
//
// Threading: every method must be called on the io_context's (single) thread; the object is
// not thread-safe. Ownership: held by shared_ptr; its coroutines keep it alive until the
// tunnel closes. A protocol violation or I/O error ends the whole tunnel (one log line, a CLOSE
// frame where possible); the `on_closed` callback then runs once.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "tunnel/destination.h"
#include "tunnel/handshake.h"
#include "tunnel/mux_frame.h"
#include "tunnel/record.h"
#include "tunnel/session/asio.h"
#include "tunnel/stream_table.h"

namespace dvpn::tunnel::session {

struct ConnectionOptions {
  StreamTable::Options table;
  std::chrono::milliseconds keepalive_interval{15'000};  // PING when idle this long
  std::chrono::milliseconds idle_timeout{60'000};        // nothing received: close
  std::chrono::milliseconds open_timeout{30'000};        // client: OPEN unanswered
  size_t write_buffer_limit = 512 * 1024;                // stream data is not queued beyond this
};

class TunnelConnection : public std::enable_shared_from_this<TunnelConnection> {
 public:
  // Exit: called for each accepted OPEN (the stream is kOpening). The callee must finish with
  // AcceptStream or RefuseStream (either may report that the stream is gone meanwhile).
  using OpenHandler = std::function<void(uint32_t id, const Destination& destination)>;
  using ClosedHandler = std::function<void()>;

  TunnelConnection(tcp::socket socket, const SessionKeys& keys, Role role,
                   ConnectionOptions options, std::string name);
  ~TunnelConnection();
  TunnelConnection(const TunnelConnection&) = delete;
  TunnelConnection& operator=(const TunnelConnection&) = delete;

  // Starts the loops. `on_open` is used by the exit only.
  void Start(OpenHandler on_open, ClosedHandler on_closed);

  // Client: opens a stream to `destination` and waits for the exit's answer (bounded by
  // options.open_timeout). Returns the stream id, or the failure to report to the SOCKS client.
  asio::awaitable<Result<uint32_t, OpenFailure>> OpenStream(const Destination& destination);
  // Client: attaches the local socket to an opened stream and starts pumping; `early` (bytes
  // the SOCKS client sent after its request) is sent first.
  void AttachStream(uint32_t id, tcp::socket socket, ByteSpan early);
  // Either side: abandons a stream (RESET to the peer).
  void CancelStream(uint32_t id);

  // Exit: the upstream connection for stream `id` succeeded: OPEN_OK, then pump. False when the
  // stream is gone (reset by the client, tunnel closed): the caller drops the socket.
  bool AcceptStream(uint32_t id, tcp::socket socket);
  // Exit: the upstream connection failed: OPEN_FAIL(failure).
  void RefuseStream(uint32_t id, OpenFailure failure);

  // Ends the tunnel (CLOSE frame with `reason` when `send_close`).
  void Close(CloseReason reason, const std::string& why, bool send_close);

  bool closed() const { return closing_; }
  size_t stream_count() const { return streams_.size(); }
  const std::string& name() const { return name_; }

 private:
  struct Stream;
  using StreamPtr = std::shared_ptr<Stream>;

  asio::awaitable<void> ReadLoop();
  asio::awaitable<void> WriteLoop();
  asio::awaitable<void> KeepaliveLoop();
  asio::awaitable<void> Uplink(StreamPtr s);
  asio::awaitable<void> Downlink(StreamPtr s);

  // Applies one record's frames; false when the tunnel ended.
  bool HandleRecord(ByteSpan plaintext);
  bool HandleAction(const Action& action);
  void StartPumps(const StreamPtr& s);
  // Local reset: RESET frame, socket closed, stream forgotten.
  void ResetStream(const StreamPtr& s, ResetCode code);
  // The peer reset / the tunnel ended: socket closed, stream forgotten.
  void KillStream(const StreamPtr& s);
  StreamPtr FindStream(uint32_t id);

  // Write path. Each Append* adds one whole frame to the current record (sealing it and
  // starting another when full) and wakes the writer.
  template <class Fn>
  void AppendFrame(size_t frame_size, Fn&& fn);
  void AppendData(uint32_t id, ByteSpan data);
  void AppendWindow(uint32_t id, const WindowUpdate& update, bool stream_too);
  void StartRecord();
  void SealRecord();
  void SealRekey();
  bool CanQueueData() const { return wused_ < options_.write_buffer_limit; }
  uint64_t NowMs() const;

  tcp::socket socket_;
  Role role_;
  ConnectionOptions options_;
  std::string name_;
  RecordSealer sealer_;
  RecordOpener opener_;
  StreamTable table_;
  std::unordered_map<uint32_t, StreamPtr> streams_;
  OpenHandler on_open_;
  ClosedHandler on_closed_;

  std::vector<uint8_t> rbuf_;
  std::vector<uint8_t> wbuf_;         // sealed records, then the open record
  std::vector<uint8_t> wbuf_flight_;  // the records being written
  size_t wused_ = 0;
  size_t rec_start_ = 0;
  size_t rec_plain_ = 0;
  bool rec_open_ = false;

  asio::steady_timer write_signal_;  // wakes the writer
  asio::steady_timer room_signal_;   // wakes uplinks blocked on the buffer / tunnel window
  asio::steady_timer keepalive_timer_;
  std::chrono::steady_clock::time_point last_rx_;
  std::chrono::steady_clock::time_point last_rekey_;
  bool closing_ = false;
  bool closed_notified_ = false;
  bool writer_done_ = false;
};

}  // namespace dvpn::tunnel::session
