#pragma once
// StreamTable: the bookkeeping of one side of one tunnel's multiplexed streams: which streams
// exist, their states, their flow-control windows in both directions and the tunnel-wide
// window, and the limits on streams. No I/O and no frame encoding: the session decodes frames,
// feeds them to OnFrame() and follows the returned Action; for its own decisions it calls the
// local methods (Open, Accept, Refuse, Sent, Consumed, Fin, Reset) and writes the frames they
// call for. Rules: docs/tunnel.md, "Streams and frames".
//
// Ids: only the client opens streams. It numbers them 1, 2, 3, ... (never reused in a tunnel);
// the exit accepts an OPEN only with an id above every id seen before. A frame for an id at or
// below that mark which is no longer in the table belongs to a stream closed locally while the
// frame was in flight and is dropped (DATA still counts against, and is credited back to, the
// tunnel window); a frame for an id above the mark is a protocol violation.
//
// Flow control: each stream starts with a receive window of options.stream_window bytes in each
// direction and the tunnel with options.tunnel_window bytes (DATA counts against both). The
// receiver returns credit with WINDOW frames as its consumer drains (Consumed()). DATA beyond
// either window is a protocol violation. So bytes buffered for a stream are at most
// stream_window and for the whole tunnel at most tunnel_window: memory is bounded by design.
//
// Packet mode (docs/tunnel.md, "Packet mode"): the client asks once (StartPacketSetup, then
// PACKET_SETUP), the exit answers once (AnswerPacketSetup, then PACKET_READY or PACKET_FAIL);
// PACKET frames are allowed only once READY went out (exit) or came in (client). They are not
// flow-controlled: the table checks only that they are allowed, and counts nothing.
//
// Errors: every error returned by OnFrame() is a protocol violation by the peer (or a frame that
// does not fit this role): the session sends CLOSE and ends the tunnel; the table must not be
// used afterwards. Errors from local methods are limits or caller mistakes; the tunnel goes on.
//
// Thread-safety: none. One table per tunnel, owned by the session and used on its strand only.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/bytes.h"
#include "common/result.h"
#include "tunnel/destination.h"
#include "tunnel/mux_frame.h"
#include "tunnel/rate_limit.h"

namespace dvpn::tunnel {

// Protocol constants: both sides must use the same initial windows.
inline constexpr uint32_t kInitialStreamWindow = 512 * 1024;
inline constexpr uint32_t kInitialTunnelWindow = 8 * 1024 * 1024;
// No window may grow beyond this (as in HTTP/2); a WINDOW that would is a violation.
inline constexpr uint64_t kMaxWindow = (uint64_t{1} << 31) - 1;
// Early data: the client may send up to this many DATA payload bytes on a stream that is still
// opening (after OPEN, before OPEN_OK), counted in the windows as usual. The exit buffers them
// and delivers them once connected, or discards them (crediting the tunnel window) on OPEN_FAIL.
inline constexpr size_t kMaxEarlyData = kMaxFramePayload;

enum class MuxErrc {
  // Peer violations (from OnFrame): the tunnel must end.
  kUnexpectedFrame = 1,  // frame not allowed in the stream's state or for this side's role
  kUnknownStream,        // frame for a stream id that was never opened
  kBadStreamId,          // OPEN whose id is not above every earlier id
  kFlowControl,          // DATA beyond the stream's or the tunnel's receive window
  kWindowOverflow,       // WINDOW growing a send window beyond kMaxWindow
  kBadDestination,       // OPEN whose destination does not decode (DecodeFrame checks it)
  // Local call failures: the tunnel goes on.
  kTooManyStreams,  // Open(): options.max_streams streams exist
  kIdsExhausted,    // Open(): every id was used; open a new tunnel
  kNoSuchStream,    // the id is not in the table (closed, reset, or never opened)
  kBadState,        // not allowed in the stream's state or for this role
  kBadArgument,     // Sent() beyond CanSend(), Consumed() beyond the buffered bytes
};
const char* MuxErrcName(MuxErrc code);
// True for the codes OnFrame returns (the tunnel must end).
bool IsPeerViolation(MuxErrc code);

enum class Role : uint8_t { kClient, kExit };

enum class StreamState : uint8_t {
  kOpening,           // client: OPEN sent, no answer yet; exit: OPEN received, not answered
  kOpen,              // both directions carry DATA
  kHalfClosedLocal,   // this side sent FIN; the peer may still send
  kHalfClosedRemote,  // the peer sent FIN; this side may still send
  kClosed,            // FIN both ways; kept only until the consumer drains what is buffered
};
const char* StreamStateName(StreamState state);

// Credit to return to the peer: the session writes WINDOW(stream id, stream_increment) and
// WINDOW(0, tunnel_increment) for each non-zero field.
struct WindowUpdate {
  uint32_t stream_increment = 0;
  uint32_t tunnel_increment = 0;
  // Consumed(): the kClosed stream drained and left the table; forget the id.
  bool stream_removed = false;
  bool empty() const { return stream_increment == 0 && tunnel_increment == 0; }
};

// What the session must do after a frame. Fields not named by `kind` are zero / empty.
struct Action {
  enum class Kind : uint8_t {
    kNone,           // nothing (e.g. a frame for a stream closed locally: dropped)
    kOpenRequested,  // exit: connect to `destination`; then Accept() and send OPEN_OK, or
                     // Refuse() and send OPEN_FAIL. The stream is kOpening until then.
    kRefuseOpen,     // exit: a limit refused the OPEN: send OPEN_FAIL(stream_id, failure).
                     // The stream was never added.
    kOpened,         // client: OPEN_OK; the stream is open (reply SOCKS success)
    kOpenFailed,     // client: OPEN_FAIL with `failure`; the stream was removed
    kData,           // deliver `data` (a view into the record) to the stream's consumer; it
                     // counts as buffered until Consumed() is called for it
    kWindow,         // the send window of stream_id (0: of the tunnel) grew: CanSend() may
                     // now allow more (for 0, on every stream)
    kRemoteFin,      // the peer sends no more: after the buffered data, shut down the local
                     // write side
    kReset,          // the peer reset the stream (reset_code): discard its buffered data and
                     // close the local socket; the stream was removed
    kPing,           // send PONG(ping_value)
    kPong,           // the peer answered PING(ping_value)
    kControl,        // `data` is a control message
    kClose,          // the peer closes the tunnel (close_reason, `data` = UTF-8 text)
    kPacketSetup,    // exit: the client asks for packet mode (`packet_setup`); answer with
                     // AnswerPacketSetup(), then PACKET_READY or PACKET_FAIL
    kPacketReady,    // client: packet mode granted (`packet_ready`); PACKET may flow now
    kPacketFailed,   // client: packet mode refused (`packet_failure`, one of the known values;
                     // `data` = UTF-8 text); the tunnel goes on
    kPacket,         // `data` is one IP packet (a view into the record)
  };
  Kind kind = Kind::kNone;
  uint32_t stream_id = 0;
  ByteSpan data;
  Destination destination;
  OpenFailure failure = OpenFailure::kGeneral;
  ResetCode reset_code = ResetCode::kCancel;
  CloseReason close_reason = CloseReason::kNormal;
  uint64_t ping_value = 0;
  PacketSetupFields packet_setup;
  PacketReadyFields packet_ready;
  PacketFailure packet_failure = PacketFailure::kRefused;
  // The stream left the table with this frame (kOpenFailed, kReset, and kRemoteFin when both
  // sides are done and nothing is buffered): forget the id.
  bool stream_removed = false;
  // When non-zero, send WINDOW(0, tunnel_credit) (credit for DATA that was dropped).
  uint32_t tunnel_credit = 0;
};

class StreamTable {
 public:
  struct Options {
    size_t max_streams = 4096;              // concurrent streams (every state counts)
    uint32_t new_streams_per_second = 200;  // exit: sustained OPEN rate...
    uint32_t new_streams_burst = 500;       // ...and bucket size (0 disables rate limiting)
    // Protocol constants; configurable for tests only (both sides must agree).
    uint32_t stream_window = kInitialStreamWindow;
    uint32_t tunnel_window = kInitialTunnelWindow;
  };

  StreamTable(Role role, Options options);
  StreamTable(const StreamTable&) = delete;
  StreamTable& operator=(const StreamTable&) = delete;

  // Applies one decoded frame received at `now_ms` (a monotonic millisecond clock, used for
  // the OPEN rate limit; going backwards counts as no time passing). Returns what to do, or a
  // peer violation (see MuxErrc): the tunnel must end.
  [[nodiscard]] Result<Action, MuxErrc> OnFrame(const Frame& frame, uint64_t now_ms);

  // Client: allocates the next stream id (state kOpening); the caller sends OPEN(id, dest).
  // Fails with kBadState (exit role), kTooManyStreams, kIdsExhausted.
  [[nodiscard]] Result<uint32_t, MuxErrc> Open();
  // Exit: the connection for a kOpening stream succeeded: the stream is kOpen; send OPEN_OK.
  // Fails with kNoSuchStream (e.g. the client reset it meanwhile: close the connection),
  // kBadState.
  [[nodiscard]] Result<void, MuxErrc> Accept(uint32_t id);
  // Exit: the connection for a kOpening stream failed: the stream is removed (early data it
  // buffered is discarded); send OPEN_FAIL(id, failure) and the returned tunnel credit.
  // Fails with kNoSuchStream, kBadState.
  [[nodiscard]] Result<WindowUpdate, MuxErrc> Refuse(uint32_t id);

  // How many DATA payload bytes may be sent on `id` now: the smaller of the stream's and the
  // tunnel's send windows; 0 when the stream cannot send (unknown, FIN sent, or opening on the
  // exit). A client stream that is still opening may send early data: up to kMaxEarlyData
  // bytes in all before OPEN_OK.
  size_t CanSend(uint32_t id) const;
  // Records that DATA frames carrying `n` bytes were sent on `id`. Fails with kNoSuchStream,
  // kBadState, kBadArgument (n > CanSend(id)); nothing changes on failure.
  [[nodiscard]] Result<void, MuxErrc> Sent(uint32_t id, size_t n);

  // Records that the consumer drained `n` bytes delivered by kData on `id`. Returns the
  // WINDOW credit to send (stream credit in batches of at least half the stream window, tunnel
  // credit in batches of at least a quarter of the tunnel window). May remove a
  // kClosed stream whose buffer became empty. Fails with kNoSuchStream, kBadArgument
  // (n > buffered bytes).
  [[nodiscard]] Result<WindowUpdate, MuxErrc> Consumed(uint32_t id, size_t n);

  // Half-closes the sending direction of `id`; the caller sends FIN. Returns true when the
  // stream was removed (the peer had finished too and nothing is buffered). Fails with
  // kNoSuchStream, kBadState (opening, or FIN already sent).
  [[nodiscard]] Result<bool, MuxErrc> Fin(uint32_t id);
  // Aborts `id` in any state and removes it; the caller sends RESET and discards the stream's
  // buffered data, whose credit is returned (send the WINDOW it names). Fails with kNoSuchStream.
  [[nodiscard]] Result<WindowUpdate, MuxErrc> Reset(uint32_t id);

  // ---- Packet mode ------------------------------------------------------------------------
  // Client: records that it asks for packet mode with `setup`; the caller sends PACKET_SETUP
  // with it. The answer is checked against it (a UDP grant must fit the request). Fails with
  // kBadState (exit role, or asked before in this tunnel).
  [[nodiscard]] Result<void, MuxErrc> StartPacketSetup(const PacketSetupFields& setup);
  // Exit: records its answer to the pending PACKET_SETUP; the caller sends PACKET_READY (`ready`)
  // or PACKET_FAIL. Fails with kBadState (client role, no setup waiting, answered already).
  [[nodiscard]] Result<void, MuxErrc> AnswerPacketSetup(bool ready);
  // True when this side may send PACKET frames (and accepts them): the exit sent READY / the
  // client received it.
  bool PacketModeReady() const { return packet_state_ == PacketState::kReady; }

  // Observers.
  Role role() const { return role_; }
  std::optional<StreamState> state(uint32_t id) const;
  size_t stream_count() const { return streams_.size(); }
  size_t buffered_bytes() const { return tunnel_buffered_; }  // received, not yet consumed
  size_t buffered_bytes(uint32_t id) const;
  uint64_t tunnel_send_window() const { return tunnel_send_; }
  uint64_t tunnel_receive_window() const { return tunnel_recv_; }  // credit the peer has
  uint32_t last_stream_id() const { return last_id_; }
  uint64_t tunnel_pending_credit() const { return tunnel_pending_; }

  // ---- Metered credit (paid sessions of terms version 2, docs/payments.md §4) -------------
  // Receiver: from now on tunnel credit is never returned by itself; what Consumed, Reset,
  // Refuse and dropped DATA free stays pending until ReleaseTunnelCredit. The credit the peer
  // holds now (the initial window, before any frame) becomes pending too, so the peer may send
  // nothing until credit is released. Call before any frame is received.
  void ManualTunnelCredit();
  // Receiver in manual mode: grants min(`max`, pending) bytes of tunnel credit; returns the
  // increment to send in a WINDOW(0) frame (0: nothing).
  uint32_t ReleaseTunnelCredit(uint64_t max);
  // Sender: the tunnel's send window starts at 0 instead of the initial window (the receiver
  // uses ManualTunnelCredit). Call before anything is sent.
  void ZeroTunnelSendWindow() { tunnel_send_ = 0; }

  // Checks the internal invariants (window accounting, limits); empty when they hold, else a
  // description of the first broken one. For tests and fuzzing.
  std::string CheckInvariants() const;

 private:
  struct Stream {
    StreamState state = StreamState::kOpening;
    uint64_t send = 0;      // bytes this side may still send
    uint64_t recv = 0;      // bytes the peer may still send (credit granted, unused)
    uint64_t buffered = 0;  // received, not consumed
    uint64_t pending = 0;   // consumed, credit not yet returned
    uint64_t early = 0;     // early data sent (client) / received (exit) while opening
  };

  bool CanReceive(const Stream& s) const {
    return s.state == StreamState::kOpen || s.state == StreamState::kHalfClosedLocal;
  }
  // A client stream still opening, which may send early data.
  bool CanSendEarly(const Stream& s) const;
  bool CanSendState(const Stream& s) const {
    return s.state == StreamState::kOpen || s.state == StreamState::kHalfClosedRemote;
  }
  Stream* Find(uint32_t id);
  const Stream* Find(uint32_t id) const;
  // Drops a stream; its buffered bytes become tunnel credit. Returns the tunnel credit due now.
  uint32_t Remove(uint32_t id);
  // Adds `n` to the tunnel's pending credit; returns the increment to send now (or 0).
  uint32_t AddTunnelCredit(uint64_t n);

  Result<Action, MuxErrc> OnOpen(const Frame& f, uint64_t now_ms);
  Result<Action, MuxErrc> OnData(const Frame& f);
  Result<Action, MuxErrc> OnWindow(const Frame& f);
  Result<Action, MuxErrc> OnPacketFrame(const Frame& f);

  // Packet mode, the same four states on both sides.
  enum class PacketState : uint8_t {
    kNone,       // nothing asked
    kRequested,  // client: PACKET_SETUP sent; exit: received, not answered
    kReady,      // READY sent (exit) / received (client)
    kFailed,     // FAIL sent / received: never again in this tunnel
  };

  Role role_;
  Options options_;
  std::unordered_map<uint32_t, Stream> streams_;
  uint32_t last_id_ = 0;  // client: last id allocated; exit: highest id seen in an OPEN
  uint64_t tunnel_send_ = 0;
  uint64_t tunnel_recv_ = 0;
  uint64_t tunnel_buffered_ = 0;
  uint64_t tunnel_pending_ = 0;
  bool manual_tunnel_credit_ = false;
  PacketState packet_state_ = PacketState::kNone;
  PacketSetupFields packet_setup_;  // the client's request (either side), once asked
  // OPEN rate limit (exit): milli-tokens, refilled from the clock.
  TokenBucket open_tokens_;  // new streams: options.new_streams_per_second / _burst
};

}  // namespace dvpn::tunnel
