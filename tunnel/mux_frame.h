#pragma once
// Mux frames: the plaintext inside the tunnel's encrypted records (docs/tunnel.md, "Streams
// and frames" and "Packet mode", is normative). A record's plaintext is a sequence of one or more
// whole frames; a frame never spans two records.
//
//   frame = type u8 || stream_id u32 BE || length u16 BE || payload (length bytes)
//
//   type            stream_id  payload
//   1 OPEN          != 0       Destination encoding (tunnel/destination.h), exactly
//   2 OPEN_OK       != 0       empty
//   3 OPEN_FAIL     != 0       OpenFailure u8 (1..8)
//   4 DATA          != 0       1..kMaxFramePayload bytes
//   5 WINDOW        any        increment u32 BE, > 0 (stream_id 0: the tunnel-wide window)
//   6 FIN           != 0       empty
//   7 RESET         != 0       ResetCode u8 (any value; unknown values mean kCancel)
//   8 PING          0          opaque u64 BE
//   9 PONG          0          the PING's u64, echoed
//  10 CONTROL       0          0..kMaxControlPayload opaque bytes (protobuf, next issue)
//  11 CLOSE         0          CloseReason u8 || 0..kMaxCloseText bytes of UTF-8 text
//  12 PACKET_SETUP  0          version u8 (1) || receiver index u32 (!= 0) || max datagram
//                              plaintext u16 (1280..65475) || flags u8 (bit 0: wants UDP)
//  13 PACKET_READY  0          receiver index u32 || udp port u16 || mtu u16 (1280..16377) ||
//                              IPv4 b[4] || prefix u8 (<= 32) || IPv6 b[16] || prefix u8 (<= 128);
//                              udp port 0 (no UDP) iff receiver index 0
//  14 PACKET_FAIL   0          PacketFailure u8 (!= 0) || 0..kMaxCloseText bytes of UTF-8 text
//  15 PACKET        0          one IP packet, 1..kMaxFramePayload bytes (not parsed here)
//
// Decoding is zero-copy (spans into the caller's record) and allocation-free; encoding appends
// into a caller-owned buffer with a bounds check. Free functions and small value types only;
// thread-compatible.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/bytes.h"
#include "common/result.h"
#include "tunnel/destination.h"
#include "tunnel/record.h"

namespace dvpn::tunnel {

enum class FrameType : uint8_t {
  kOpen = 1,
  kOpenOk = 2,
  kOpenFail = 3,
  kData = 4,
  kWindow = 5,
  kFin = 6,
  kReset = 7,
  kPing = 8,
  kPong = 9,
  kControl = 10,
  kClose = 11,
  kPacketSetup = 12,  // packet mode (docs/tunnel.md, "Packet mode")
  kPacketReady = 13,
  kPacketFail = 14,
  kPacket = 15,
};
const char* FrameTypeName(FrameType type);

// Why a stream was reset. Carried as a byte; receivers treat unknown values like kCancel.
enum class ResetCode : uint8_t {
  kCancel = 0,          // the local application went away (client closed, SOCKS peer gone)
  kConnectionLost = 1,  // the exit's upstream TCP connection failed or was reset
  kTimeout = 2,         // idle or connect timeout at the sender
  kRefused = 3,         // the stream cannot be accepted (limits); also sent for a late OPEN_OK
  kInternal = 4,        // a local error at the sender
};

// Why a tunnel is being closed. Carried as a byte; unknown values are accepted.
enum class CloseReason : uint8_t {
  kNormal = 0,         // orderly shutdown
  kProtocolError = 1,  // the peer broke the framing or stream rules
  kFlowControl = 2,    // the peer sent beyond its window
  kIdleTimeout = 3,
  kShutdown = 4,         // the node is going away
  kPaymentRequired = 5,  // payment layer (docs/payments.md §8): channel unusable, escrow gone
  kInternal = 6,
  kPaymentTimeout = 7,  // provider: paused for the grace time without payment
  kPaymentError = 8,    // either: bad signature, repeated refusals, overflow, bad message
  kOvercharge = 9,      // client: an invoice beyond its meter and tolerance
  kSpendCap = 10,       // client: a spending cap reached
  kTermsRefused = 11,   // client: terms outside its policy
};

// Why the exit refused packet mode. Carried as a byte; 0 is invalid, other unknown values are
// accepted and read as kRefused (KnownPacketFailure).
enum class PacketFailure : uint8_t {
  kNotServed = 1,  // the exit does not offer packet mode
  kNoAddress = 2,  // no free inner address in the exit's pools
  kLimit = 3,      // a limit (packet-mode sessions, flows)
  kRefused = 4,    // anything else
};
// `failure` if it is one of the values above, else kRefused.
PacketFailure KnownPacketFailure(PacketFailure failure);

// PACKET_SETUP's payload: what the client asks for.
struct PacketSetupFields {
  uint32_t receiver_index = 0;          // the client's, != 0
  uint16_t max_datagram_plaintext = 0;  // kMinPacketMtu..kMaxDatagramPlaintext
  bool wants_udp = false;               // flags bit 0
  bool operator==(const PacketSetupFields&) const = default;
};

// PACKET_READY's payload: what the exit grants.
struct PacketReadyFields {
  uint32_t receiver_index = 0;  // the exit's; 0 exactly when udp_port is 0
  uint16_t udp_port = 0;        // 0: no UDP, the packets travel in PACKET frames
  uint16_t mtu = 0;             // kMinPacketMtu..kMaxPacketMtu: both TUN devices' inner MTU
  std::array<uint8_t, 4> ipv4{};
  uint8_t ipv4_prefix = 0;  // <= 32
  std::array<uint8_t, 16> ipv6{};
  uint8_t ipv6_prefix = 0;  // <= 128
  bool operator==(const PacketReadyFields&) const = default;
};

inline constexpr size_t kFrameHeaderSize = 7;  // type, stream id, length
// Largest payload of one frame: one DATA frame of this size fills a record exactly.
inline constexpr size_t kMaxFramePayload = kMaxRecordPlaintext - kFrameHeaderSize;
static_assert(kMaxFramePayload <= 0xFFFF, "the length field is a u16");
inline constexpr size_t kMaxControlPayload = 8192;
inline constexpr size_t kMaxCloseText = 256;
static_assert(kMaxControlPayload <= kMaxFramePayload && 1 + kMaxCloseText <= kMaxFramePayload &&
              kMaxDestinationEncoding <= kMaxFramePayload);
// Packet mode.
inline constexpr uint8_t kPacketModeVersion = 1;
inline constexpr uint8_t kPacketSetupWantsUdp = 0x01;  // PACKET_SETUP flags bit 0
inline constexpr size_t kPacketSetupSize = 8;          // PACKET_SETUP payload
inline constexpr size_t kPacketReadySize = 30;         // PACKET_READY payload
// Inner MTU bounds: IPv6's minimum link MTU, and a packet must fit one PACKET frame (the TCP
// fallback). The client's max datagram plaintext is kMinPacketMtu..kMaxDatagramPlaintext
// (tunnel/datagram.h).
inline constexpr uint16_t kMinPacketMtu = 1280;
inline constexpr uint16_t kMaxPacketMtu = static_cast<uint16_t>(kMaxFramePayload);
// Encoded size of a frame with no payload / a fixed payload; handy for buffer budgeting.
inline constexpr size_t kWindowFrameSize = kFrameHeaderSize + 4;
inline constexpr size_t kPingFrameSize = kFrameHeaderSize + 8;

enum class FrameErrc {
  kTruncated = 1,   // input ends inside a header or before `length` payload bytes
  kUnknownType,     // type byte is not 1..15
  kBadLength,       // length not allowed for the type (wrong fixed size, empty DATA, too long)
  kBadStreamId,     // stream id 0 on a stream frame, or non-zero on a tunnel frame
  kBadField,        // invalid payload content: destination, failure code, zero WINDOW, UTF-8
  kBufferTooSmall,  // encoding: the output buffer has no room; nothing was written
};

// One decoded frame: a view into the record it came from (valid while that buffer is).
// Fields not used by `type` are zero / empty.
struct Frame {
  FrameType type = FrameType::kData;
  uint32_t stream_id = 0;
  // The raw payload: DATA bytes, CONTROL bytes, OPEN destination encoding, PACKET bytes; for
  // CLOSE and PACKET_FAIL the text after the reason byte; empty otherwise.
  ByteSpan payload;
  uint32_t window_increment = 0;                    // WINDOW
  uint64_t ping_value = 0;                          // PING, PONG
  OpenFailure failure = OpenFailure::kGeneral;      // OPEN_FAIL
  ResetCode reset_code = ResetCode::kCancel;        // RESET
  CloseReason close_reason = CloseReason::kNormal;  // CLOSE
  PacketSetupFields packet_setup;                   // PACKET_SETUP
  PacketReadyFields packet_ready;                   // PACKET_READY
  // PACKET_FAIL: the byte as sent (non-zero; unknown values kept for a faithful re-encoding).
  PacketFailure packet_failure = PacketFailure::kRefused;
};

struct DecodedFrame {
  Frame frame;
  size_t size = 0;  // bytes of input used (header + payload)
};

// Decodes the frame at the start of `in` and checks every field (a frame that decodes is
// well-formed; whether it is allowed now is the StreamTable's business). Fails with kTruncated,
// kUnknownType, kBadLength, kBadStreamId, kBadField. Never allocates.
[[nodiscard]] Result<DecodedFrame, FrameErrc> DecodeFrame(ByteSpan in);

// Iterates over the frames of one record plaintext:
//   FrameReader reader(plaintext);
//   while (!reader.done()) { auto f = reader.Next(); if (!f) end session; ... }
// After an error, done() is true (the rest of the record cannot be trusted).
class FrameReader {
 public:
  explicit FrameReader(ByteSpan record_plaintext) : rest_(record_plaintext) {}
  bool done() const { return rest_.empty(); }
  [[nodiscard]] Result<Frame, FrameErrc> Next();

 private:
  ByteSpan rest_;
};

// Appends frames to a caller-owned buffer (typically the plaintext area of the next record).
// Each method either appends one whole frame and returns success, or appends nothing and fails
// with kBufferTooSmall (no room), kBadLength (payload too long / empty DATA), kBadStreamId or
// kBadField (invalid argument, e.g. a zero WINDOW or an invalid domain). Never allocates.
class FrameWriter {
 public:
  explicit FrameWriter(std::span<uint8_t> out) : out_(out) {}

  [[nodiscard]] Result<void, FrameErrc> Open(uint32_t stream_id, const Destination& dest);
  [[nodiscard]] Result<void, FrameErrc> OpenOk(uint32_t stream_id);
  [[nodiscard]] Result<void, FrameErrc> OpenFail(uint32_t stream_id, OpenFailure failure);
  [[nodiscard]] Result<void, FrameErrc> Data(uint32_t stream_id, ByteSpan data);
  [[nodiscard]] Result<void, FrameErrc> Window(uint32_t stream_id, uint32_t increment);
  [[nodiscard]] Result<void, FrameErrc> Fin(uint32_t stream_id);
  [[nodiscard]] Result<void, FrameErrc> Reset(uint32_t stream_id, ResetCode code);
  [[nodiscard]] Result<void, FrameErrc> Ping(uint64_t value);
  [[nodiscard]] Result<void, FrameErrc> Pong(uint64_t value);
  [[nodiscard]] Result<void, FrameErrc> Control(ByteSpan message);
  [[nodiscard]] Result<void, FrameErrc> Close(CloseReason reason, std::string_view text);
  // Packet mode; kBadField for a field outside its range (see the table above).
  [[nodiscard]] Result<void, FrameErrc> PacketSetup(const PacketSetupFields& setup);
  [[nodiscard]] Result<void, FrameErrc> PacketReady(const PacketReadyFields& ready);
  // `failure` may be any non-zero byte; text as for Close.
  [[nodiscard]] Result<void, FrameErrc> PacketFail(PacketFailure failure, std::string_view text);
  // kBadLength unless 1..kMaxFramePayload bytes.
  [[nodiscard]] Result<void, FrameErrc> Packet(ByteSpan packet);
  // Re-encodes a decoded (or hand-built) frame; same failures as the typed methods.
  [[nodiscard]] Result<void, FrameErrc> Append(const Frame& frame);

  // Zero-copy DATA: reserves a DATA frame whose payload the caller fills in place (e.g. by
  // reading a socket straight into it), then Commit()s the bytes actually written. Returns the
  // payload span (at most `max_len` and kMaxFramePayload bytes, less if the buffer is shorter);
  // kBufferTooSmall when not even one payload byte fits. Until Commit, other appends are not
  // allowed (asserted).
  [[nodiscard]] Result<std::span<uint8_t>, FrameErrc> BeginData(uint32_t stream_id, size_t max_len);
  // Finishes the reserved DATA frame with `len` (1..reserved) payload bytes; `len` 0 drops the
  // frame.
  void CommitData(size_t len);
  // The same for a PACKET frame (stream 0): a TUN device is read straight into the record.
  [[nodiscard]] Result<std::span<uint8_t>, FrameErrc> BeginPacket(size_t max_len);
  void CommitPacket(size_t len);

  size_t size() const { return used_; }  // bytes written so far
  size_t remaining() const { return out_.size() - used_; }
  std::span<uint8_t> written() const { return out_.first(used_); }

 private:
  // Writes a header and returns the payload area, or kBufferTooSmall.
  Result<std::span<uint8_t>, FrameErrc> Reserve(FrameType type, uint32_t stream_id,
                                                size_t payload_len);
  // CLOSE and PACKET_FAIL: reason u8 || UTF-8 text.
  Result<void, FrameErrc> ReasonAndText(FrameType type, uint8_t reason, std::string_view text);
  // A tunnel frame (stream id 0) whose payload is `bytes`, copied.
  Result<void, FrameErrc> CopyTunnelFrame(FrameType type, ByteSpan bytes);

  std::span<uint8_t> out_;
  size_t used_ = 0;
  // Reserves a DATA or PACKET frame's payload area (BeginData, BeginPacket).
  Result<std::span<uint8_t>, FrameErrc> BeginReserved(FrameType type, uint32_t stream_id,
                                                      size_t max_len);
  void CommitReserved(FrameType type, size_t len);

  size_t pending_data_ = 0;  // payload capacity of a reserved DATA/PACKET frame, 0 when none
  uint32_t pending_stream_ = 0;
  FrameType pending_type_ = FrameType::kData;
};

// True when `text` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(ByteSpan text);

}  // namespace dvpn::tunnel
