#pragma once
// TunnelConnection: one established tunnel (after the handshake), for either role: the mux and
// the stream pumps. Its records travel over a RecordTransport (record_transport.h; a TCP socket
// today), called once per read and once per write batch. It owns the transport, the record
// sealer/opener and the StreamTable, runs a read loop (large reads into a buffer grown on
// demand, whole records opened in place, frames dispatched to the table), a write loop
// (frames coalesced into records, records sealed just before one gathered write; one write in
// flight; tunnel frames such as WINDOW, PING/PONG and CONTROL go ahead of queued stream data), a
// keepalive/idle timer, and two pumps per attached stream (local socket <-> tunnel) with
// per-stream back-pressure (a local socket is not read while its send window is 0, the tunnel's
// write buffer is full or forwarding is paused). With a BandwidthLimiter (the exit's
// `[limits] bandwidth_mbps`), every byte read from or written to a local socket first takes
// tokens from it; back-pressure then reaches the peer through the same windows.
//
// Hooks for the payment layer (MeteredSession, the interface the controllers use): a control
// channel (SetControlHandler / SendControl), meters of the DATA payload bytes each way with an
// observer every N bytes (SetMeterObserver), a pause switch that stops new data both ways within
// the flow-control windows (SetForwardingPaused) and a forwarding limit.
// docs/tunnel.md, "Sessions", defines exactly which bytes are metered.
//
// Threading: every method must be called on the io_context's (single) thread; the object is
// not thread-safe. Callbacks run on that thread. Ownership: held by shared_ptr; its coroutines
// keep it alive until the tunnel closes. A protocol violation or I/O error ends the whole tunnel
// (one log line, a CLOSE frame where possible); the `on_closed` callback then runs once.

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "tunnel/destination.h"
#include "tunnel/handshake.h"
#include "tunnel/mux_frame.h"
#include "tunnel/record.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/metered_session.h"
#include "tunnel/session/record_transport.h"
#include "tunnel/stream_table.h"

namespace dvpn::tunnel::session {

class BandwidthLimiter;

struct ConnectionOptions {
  StreamTable::Options table;
  std::chrono::milliseconds keepalive_interval{15'000};  // PING when idle this long
  std::chrono::milliseconds idle_timeout{60'000};        // nothing received: close
  std::chrono::milliseconds open_timeout{30'000};        // client: OPEN unanswered
  size_t write_buffer_limit = 512 * 1024;                // stream data is not queued beyond this
  // Shared rate limit of the bytes this side reads from and writes to its local sockets (the
  // exit's upstream connections; many tunnels share one limiter). Null: none (no extra work on
  // the data path). Must belong to this connection's io_context thread.
  std::shared_ptr<BandwidthLimiter> bandwidth;
};

class TunnelConnection final : public MeteredSession,
                               public std::enable_shared_from_this<TunnelConnection> {
 public:
  // Exit: called for each accepted OPEN (the stream is kOpening). The callee must finish with
  // AcceptStream or RefuseStream (either may report that the stream is gone meanwhile).
  using OpenHandler = std::function<void(uint32_t id, const Destination& destination)>;
  using ClosedHandler = std::function<void()>;

  // Over a TCP connection (a TcpRecordTransport; TCP_NODELAY is set).
  TunnelConnection(tcp::socket socket, const SessionKeys& keys, Role role,
                   ConnectionOptions options, std::string name);
  // Over any record transport (not null).
  TunnelConnection(std::unique_ptr<RecordTransport> transport, const SessionKeys& keys, Role role,
                   ConnectionOptions options, std::string name);
  ~TunnelConnection();
  TunnelConnection(const TunnelConnection&) = delete;
  TunnelConnection& operator=(const TunnelConnection&) = delete;

  // Starts the loops. `on_open` is used by the exit only.
  void Start(OpenHandler on_open, ClosedHandler on_closed);

  // Client: opens a stream to `destination` and waits for the exit's answer (bounded by
  // options.open_timeout). Returns the stream id, or the failure to report to the SOCKS client.
  // (`destination` is taken by value: the coroutine keeps its own copy.)
  asio::awaitable<Result<uint32_t, OpenFailure>> OpenStream(Destination destination);
  // Client, pipelined open: sends OPEN and returns the new stream id at once, without waiting
  // for the exit (the stream is opening). Attach the local socket right away with
  // AttachStream: up to kMaxEarlyData bytes (its `early` bytes, then what the uplink reads) go
  // out before OPEN_OK; the rest waits for it. If the exit refuses (OPEN_FAIL) or does not
  // answer within options.open_timeout, the local socket is closed with a reset (RST) and the
  // early data is lost. Fails at once only like OpenStream's local failures (tunnel closed,
  // stream limit).
  Result<uint32_t, OpenFailure> OpenStreamEarly(const Destination& destination);
  // Client: attaches the local socket to a stream (opened, or opening after OpenStreamEarly)
  // and starts pumping; `early` (bytes the SOCKS client sent after its request) is sent first.
  void AttachStream(uint32_t id, tcp::socket socket, ByteSpan early);
  // Either side: abandons a stream (RESET to the peer).
  void CancelStream(uint32_t id);

  // Exit: the upstream connection for stream `id` succeeded: OPEN_OK, then pump. False when the
  // stream is gone (reset by the client, tunnel closed): the caller drops the socket.
  bool AcceptStream(uint32_t id, tcp::socket socket);
  // Exit: the upstream connection failed: OPEN_FAIL(failure).
  void RefuseStream(uint32_t id, OpenFailure failure);

  // Ends the tunnel (CLOSE frame with `reason` when `send_close`).
  void Close(CloseReason reason, const std::string& why, bool send_close) override;

  // ---- Control channel (payment messages) --------------------------------------------------
  // `handler` is called on the io thread for each CONTROL frame received, in order, while the
  // record that carried it is being processed; `message` (0..kMaxControlPayload bytes) is valid
  // only during the call. The handler may call any method of this object (SendControl, Close,
  // SetForwardingPaused, ...). An empty handler drops CONTROL frames (debug log). Replaces any
  // earlier handler; may be set before or after Start.
  void SetControlHandler(ControlHandler handler) override;
  // Queues one CONTROL frame carrying `message` (copied). It goes ahead of stream data already
  // queued: it is in the first record of the next write (never held back by DATA, windows or
  // SetForwardingPaused). False, and nothing is sent, when the tunnel is closed (or closing) or
  // `message` is longer than kMaxControlPayload. A peer that stops reading while control frames
  // pile up beyond the tunnel's slack (1 MiB) ends the tunnel (kFlowControl); SendControl then
  // returns false as well. Accepted messages are never dropped while the tunnel lives.
  using MeteredSession::SendControl;
  // Ordered variant. kUrgent is SendControl(message) above. kAfterData appends the CONTROL frame
  // to the stream-ordered data queue instead: the peer receives it only after every DATA frame
  // queued before it (so after every byte data_bytes_sent() counted at the time of the call);
  // it is not held back by windows or the pause (it carries no payload), only by the DATA ahead
  // of it. The data queue may then grow to the write buffer limit plus the control slack
  // (1 MiB); beyond that the tunnel ends (kFlowControl) and false is returned. Invoices use
  // kAfterData (docs/payments.md, section 3). (ControlOrder is MeteredSession's.)
  bool SendControl(ByteSpan message, ControlOrder order) override;

  // ---- Metering -----------------------------------------------------------------------------
  // Metered bytes are DATA frame payload bytes only (no frame or record headers, tags, control,
  // WINDOW, ... frames). Sent: payload bytes this side has put into DATA frames (queued for the
  // peer; counted when queued). Received: payload bytes of DATA frames accepted from the peer
  // (every DATA frame that passed the flow-control checks, including frames for a stream this
  // side already closed, whose bytes are then discarded). So one side's sent equals the other's
  // received once the frames in flight have arrived.
  uint64_t data_bytes_sent() const override { return data_sent_; }
  uint64_t data_bytes_received() const override { return data_received_; }
  // Calls `fn` once for every multiple of `every_bytes` that data_bytes_sent() +
  // data_bytes_received() crosses from now on (several calls when one step crosses several).
  // Calls are posted to the io thread (never inside frame handling or a pump), so they run soon
  // after the crossing; the counters may have moved further by then, and calls due when the
  // tunnel closes still run. `every_bytes` 0 or an empty `fn` removes the observer. Replaces any
  // earlier observer (calls already due for it are dropped).
  void SetMeterObserver(uint64_t every_bytes, std::function<void()> fn) override;

  // ---- Pause --------------------------------------------------------------------------------
  // While paused this side reads none of its local sockets (no new DATA originates here) and
  // withholds the WINDOW credit it owes the peer (so the peer's DATA stops once it has used the
  // windows it was granted: at most the tunnel window, 8 MiB, and a stream window, 512 KiB, per
  // stream). Data already received is still delivered to the local sockets; OPENs, FIN, RESET,
  // PING/PONG and CONTROL are handled as usual. Unpausing sends the withheld credit at once and
  // wakes the pumps. Idempotent.
  void SetForwardingPaused(bool paused) override;
  bool forwarding_paused() const { return paused_; }

  // ---- Forwarding limit (the exit of a paid session, docs/payments.md §4) -------------------
  // Caps what this tunnel meters. From the call on, the peer's tunnel credit is granted by hand
  // (StreamTable::ManualTunnelCredit: the peer starts with none; the client side calls
  // ZeroTunnelSendWindow), and data_bytes_sent() + data_bytes_received() + the tunnel credit
  // the peer holds never passes `limit`: local sockets are read only up to what is left, and
  // credit goes to the peer from half of what is left (all of it below 64 KiB). So the peer can
  // never make this side meter more than `limit`, whatever it sends. When the tunnel is held at
  // the limit (a read or a grant found nothing left), `on_blocked(limit)` is posted to the io
  // thread, once until the limit changes (it may have changed by the time the call runs: compare
  // `limit`). Call before Start.
  void LimitForwarding(uint64_t limit, std::function<void(uint64_t limit)> on_blocked) override;
  // Moves the limit (LimitForwarding must have been called); what it held resumes at once.
  void SetForwardingLimit(uint64_t limit) override;
  uint64_t forwarding_limit() const { return limit_; }
  // The peer of a side that called LimitForwarding: the tunnel send window starts at 0 and grows
  // by the WINDOW credit the exit grants. Call before Start.
  void ZeroTunnelSendWindow() override { table_.ZeroTunnelSendWindow(); }

  // ---- Packet mode (docs/full-tunnel.md; frames: docs/tunnel.md "Packet mode") -------------
  // Exit: decides the client's PACKET_SETUP (called at most once per tunnel, while the frame is
  // handled): the PACKET_READY fields, or the refusal (PACKET_FAIL with the code and, cut to
  // kMaxCloseText bytes, the message). Without a handler the exit
  // answers PACKET_FAIL 1 (not served). A READY that does not encode (a field out of range) is
  // sent as PACKET_FAIL 4 instead, and the handler's session must then be given up by its owner
  // (packet_mode_ready() stays false).
  using PacketSetupHandler =
      std::function<Result<PacketReadyFields, PacketFailure>(const PacketSetupFields& setup)>;
  void SetPacketSetupHandler(PacketSetupHandler handler);
  // Client: the exit's answer to RequestPacketMode (a refusal: PACKET_FAIL's reason and text);
  // when the tunnel ends first, kRefused "tunnel closed". Called once.
  using PacketAnswerHandler = std::function<void(Result<PacketReadyFields, PacketFailure> answer)>;
  // Client: sends PACKET_SETUP (once per tunnel). False, and `on_answer` is never called, when
  // the tunnel is closing, it was asked before, or `setup` does not encode.
  bool RequestPacketMode(const PacketSetupFields& setup, PacketAnswerHandler on_answer);
  // Either side: each PACKET frame received once packet mode is ready (one IP packet, a view
  // into the record valid during the call; not checked: the caller parses it).
  using PacketHandler = std::function<void(ByteSpan packet)>;
  void SetPacketHandler(PacketHandler handler);
  // Either side, once packet mode is ready: queues one IP packet (1..kMaxFramePayload bytes) as a
  // PACKET frame behind the stream data already queued, so an invoice queued after it
  // (kAfterData) reaches the peer after it. False, nothing queued, when packet mode is not
  // ready, the tunnel is closing, or the write buffer is full (dropped, as a router drops).
  bool SendPacketFrame(ByteSpan packet);
  bool packet_mode_ready() const { return table_.PacketModeReady(); }
  // Packet bytes go into the same meters as DATA (docs/full-tunnel.md "Payments").
  // MayForwardPacket: true when a packet of `n` bytes may be forwarded now: the tunnel is open,
  // not paused and, with a forwarding limit, the metered bytes plus the peer's credit plus `n`
  // stay within it (at the limit on_blocked is reported as for streams). CountPacket then counts
  // it as sent or received, once the packet went on its way. MeterPacket is both in one step.
  bool MayForwardPacket(size_t n);
  // Called, posted and at most one pending, when forwarding may have room again: the limit
  // rose or forwarding resumed (the exit's packet hold is released then, docs/full-tunnel.md
  // "Held at the limit"). Empty: none.
  void SetForwardRoomHandler(std::function<void()> fn) { on_room_ = std::move(fn); }
  void CountPacket(size_t n, bool sent) { CountData(n, sent); }
  bool MeterPacket(size_t n, bool sent) {
    if (!MayForwardPacket(n)) return false;
    CountPacket(n, sent);
    return true;
  }
  // The handshake's keys, for the session's datagram path (docs/tunnel.md "Datagram records").
  const SessionKeys& session_keys() const { return keys_; }
  // Called before each CONTROL frame is handed to the control handler. The client drains its
  // datagram socket there, so an invoice is checked after the packets the exit sent before it.
  void SetBeforeControl(std::function<void()> fn) { before_control_ = std::move(fn); }

  bool closed() const override { return closing_; }
  size_t stream_count() const { return streams_.size(); }
  const std::string& name() const override { return name_; }
  asio::any_io_executor executor() override { return ex_; }
  // Client: the session params of the handshake's msg2 (empty: a free session).
  void set_session_params(std::vector<uint8_t> params) { session_params_ = std::move(params); }
  const std::vector<uint8_t>& session_params() const override { return session_params_; }

 private:
  struct Stream;
  using StreamPtr = std::shared_ptr<Stream>;

  // Records queued for one write, unsealed until the write: each is header (2) || plaintext ||
  // room for the tag (16), back to back in `bytes`; the last one may still be open.
  struct RecordQueue {
    struct Record {
      size_t start;
      size_t plain;
    };
    std::vector<uint8_t> bytes;
    std::vector<Record> records;  // finished records (plaintext complete)
    size_t used = 0;              // bytes taken, the open record included
    size_t open_start = 0;
    size_t open_plain = 0;
    bool open = false;

    bool empty() const { return used == 0; }
    // Makes sure `n` more whole records fit without reallocating.
    void Reserve(size_t n);
    // The free plaintext area of the open record, after starting a new record when the open one
    // has fewer than `need` bytes free.
    std::span<uint8_t> Room(size_t need);
    void Commit(size_t n) {
      open_plain += n;
      used += n;
    }
    void Finish();
    void Clear();
  };

  asio::awaitable<void> ReadLoop();
  asio::awaitable<void> WriteLoop();
  // The writer's last steps (closes the socket, reports the tunnel closed, once).
  void FinishWriter();
  // The completion of each coroutine of this tunnel: an exception escaping one is our bug; it
  // is logged and ends this tunnel (CLOSE kInternal while the writer still runs), never the
  // process or another tunnel.
  void OnTaskEnd(const char* task, std::exception_ptr e);
  auto TaskDone(const char* task) {
    return [self = shared_from_this(), task](std::exception_ptr e) { self->OnTaskEnd(task, e); };
  }
  asio::awaitable<void> KeepaliveLoop();
  asio::awaitable<void> Uplink(StreamPtr s);
  asio::awaitable<void> Downlink(StreamPtr s);

  // Applies one record's frames; false when the tunnel ended.
  bool HandleRecord(ByteSpan plaintext);
  bool HandleAction(const Action& action);
  // Writes the DATA of the current read batch that is still in the read buffer straight to the
  // streams' local sockets (gathered, non-blocking); the rest is copied to the streams' buffers.
  void FlushDirect();
  void StartPumps(const StreamPtr& s);
  // Client: allocates a stream and queues its OPEN.
  Result<StreamPtr, OpenFailure> BeginOpen(const Destination& destination);
  // Client: waits for OPEN_OK / OPEN_FAIL (bounded by options.open_timeout; RESET on timeout).
  asio::awaitable<Result<uint32_t, OpenFailure>> AwaitOpen(StreamPtr s);
  // Makes the coming close of the stream's local socket send RST.
  static void AbortLocalSocket(Stream& s);
  // Local reset: RESET frame, socket closed, stream forgotten.
  void ResetStream(const StreamPtr& s, ResetCode code);
  // The peer reset / the tunnel ended: socket closed, stream forgotten.
  void KillStream(const StreamPtr& s);
  StreamPtr FindStream(uint32_t id);

  // Write path. Append* adds one whole frame to the control queue (tunnel frames: OPEN*,
  // WINDOW, PING, PONG, CONTROL; written first) or the data queue (DATA, FIN, RESET, CLOSE;
  // stream order) and wakes the writer. False when nothing was queued (tunnel closing, encoder
  // refused, or the control queue overflowed, which closes the tunnel).
  template <class Fn>
  bool AppendFrame(bool control, size_t frame_size, Fn&& fn);
  void AppendData(uint32_t id, ByteSpan data);
  // Reads the stream's local socket straight into DATA frames of the data queue (several
  // records per read with a scatter read); returns the payload bytes read.
  size_t ReadIntoRecords(Stream& s, size_t max, error_code& ec);
  // Sends (or, while paused, withholds) WINDOW credit.
  void GrantWindow(uint32_t id, const WindowUpdate& update, bool stream_too);
  void SendWindowFrames(uint32_t id, uint64_t increment);
  // Seals both queues into wire records (control first, REKEY records where due) and lists the
  // byte ranges to write in iov_.
  bool SealForWrite();
  bool CanQueueData() const { return data_.used < options_.write_buffer_limit; }
  void CountData(uint64_t n, bool sent);
  void RunMeterObserver();
  // What may still be metered under the forwarding limit, the peer's credit counted as used
  // (UINT64_MAX without a limit).
  uint64_t ForwardBudget() const;
  // Limited tunnels: grants pending tunnel credit within the budget.
  void ReleaseTunnelCredit();
  void ReportBlocked();
  // Exit: answers a PACKET_SETUP with the setup handler's decision.
  void AnswerPacketSetup(const PacketSetupFields& setup);

  std::unique_ptr<RecordTransport> transport_;
  asio::any_io_executor ex_;  // transport_->executor(), asked once
  Role role_;
  ConnectionOptions options_;
  std::string name_;
  RecordSealer sealer_;
  RecordOpener opener_;
  StreamTable table_;
  std::unordered_map<uint32_t, StreamPtr> streams_;
  OpenHandler on_open_;
  ClosedHandler on_closed_;
  ControlHandler on_control_;

  std::vector<uint8_t> rbuf_;
  std::vector<StreamPtr> direct_streams_;  // streams with DATA in `direct` (this batch)
  RecordQueue data_;                       // stream data being queued
  RecordQueue control_;                    // tunnel frames being queued (written first)
  RecordQueue data_flight_;                // being written
  RecordQueue control_flight_;             // being written
  std::vector<asio::const_buffer> iov_;
  std::array<uint8_t, 2 * kRecordOverhead> rekey_records_{};
  bool rekey_requested_ = false;

  asio::steady_timer write_signal_;   // wakes the writer
  asio::steady_timer room_signal_;    // wakes uplinks blocked on the buffer / tunnel window
  asio::steady_timer resume_signal_;  // wakes uplinks blocked by the pause
  asio::steady_timer keepalive_timer_;
  std::chrono::steady_clock::time_point last_rx_;
  std::chrono::steady_clock::time_point last_rekey_;
  bool closing_ = false;
  bool closed_notified_ = false;
  bool writer_done_ = false;

  // Metering and pause.
  uint64_t data_sent_ = 0;
  uint64_t data_received_ = 0;
  uint64_t meter_every_ = 0;
  uint64_t meter_marks_ = 0;  // multiples of meter_every_ already reported (or due)
  uint64_t meter_due_ = 0;    // observer calls owed
  uint64_t meter_generation_ = 0;
  bool meter_posted_ = false;
  std::shared_ptr<std::function<void()>> meter_fn_;
  bool paused_ = false;
  uint64_t withheld_tunnel_credit_ = 0;
  bool limited_ = false;
  uint64_t limit_ = UINT64_MAX;
  uint64_t credit_target_ = 64 * 1024;  // limited: the tunnel credit the peer may hold
  bool peer_opened_ = false;            // the peer asked for a stream (limited: credit from then)
  bool blocked_posted_ = false;
  std::shared_ptr<std::function<void(uint64_t)>> on_blocked_;
  std::function<void()> on_room_;
  bool room_posted_ = false;
  void PostRoom();
  BandwidthLimiter* limiter_ = nullptr;  // options_.bandwidth.get()
  std::vector<uint8_t> session_params_;
  // Packet mode.
  SessionKeys keys_;
  PacketSetupHandler on_packet_setup_;
  PacketAnswerHandler on_packet_answer_;
  PacketHandler on_packet_;
  std::function<void()> before_control_;
};

}  // namespace dvpn::tunnel::session
