#include "tunnel/mux_frame.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string>

#include "tunnel/datagram.h"

namespace dvpn::tunnel {
namespace {

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((uint16_t{p[0]} << 8) | p[1]); }
uint32_t Get32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint64_t Get64(const uint8_t* p) { return (uint64_t{Get32(p)} << 32) | Get32(p + 4); }
void Put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void Put64(uint8_t* p, uint64_t v) {
  Put32(p, static_cast<uint32_t>(v >> 32));
  Put32(p + 4, static_cast<uint32_t>(v));
}
void PutHeader(uint8_t* p, FrameType type, uint32_t stream_id, size_t len) {
  p[0] = static_cast<uint8_t>(type);
  Put32(p + 1, stream_id);
  p[5] = static_cast<uint8_t>(len >> 8);
  p[6] = static_cast<uint8_t>(len);
}

bool IsTunnelFrame(FrameType type) {
  return type == FrameType::kPing || type == FrameType::kPong || type == FrameType::kControl ||
         type == FrameType::kClose || type == FrameType::kPacketSetup ||
         type == FrameType::kPacketReady || type == FrameType::kPacketFail ||
         type == FrameType::kPacket;
}

std::string_view AsText(ByteSpan bytes) {
  return std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// The field rules of PACKET_SETUP and PACKET_READY, shared by the decoder and the writer.
Result<void, FrameErrc> CheckPacketSetup(const PacketSetupFields& s) {
  if (s.receiver_index == 0) return Fail(FrameErrc::kBadField, "PACKET_SETUP receiver index 0");
  if (s.max_datagram_plaintext < kMinPacketMtu ||
      s.max_datagram_plaintext > kMaxDatagramPlaintext) {
    return Fail(FrameErrc::kBadField, "PACKET_SETUP max datagram plaintext out of range");
  }
  return {};
}

Result<void, FrameErrc> CheckPacketReady(const PacketReadyFields& r) {
  if ((r.udp_port == 0) != (r.receiver_index == 0)) {
    return Fail(FrameErrc::kBadField, "PACKET_READY: receiver index 0 exactly when no UDP port");
  }
  if (r.mtu < kMinPacketMtu || r.mtu > kMaxPacketMtu) {
    return Fail(FrameErrc::kBadField, "PACKET_READY mtu out of range");
  }
  if (r.ipv4_prefix > 32 || r.ipv6_prefix > 128) {
    return Fail(FrameErrc::kBadField, "PACKET_READY prefix length");
  }
  return {};
}

// CLOSE and PACKET_FAIL: reason u8 || 0..kMaxCloseText bytes of UTF-8. Sets `text` and returns
// the reason byte.
Result<uint8_t, FrameErrc> DecodeReasonAndText(ByteSpan p, ByteSpan& text) {
  if (p.size() < 1 || p.size() > 1 + kMaxCloseText) {
    return Fail(FrameErrc::kBadLength, "reason and text length");
  }
  text = p.subspan(1);
  if (!IsValidUtf8(text)) return Fail(FrameErrc::kBadField, "text not UTF-8");
  return p[0];
}

}  // namespace

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kOpen:
      return "OPEN";
    case FrameType::kOpenOk:
      return "OPEN_OK";
    case FrameType::kOpenFail:
      return "OPEN_FAIL";
    case FrameType::kData:
      return "DATA";
    case FrameType::kWindow:
      return "WINDOW";
    case FrameType::kFin:
      return "FIN";
    case FrameType::kReset:
      return "RESET";
    case FrameType::kPing:
      return "PING";
    case FrameType::kPong:
      return "PONG";
    case FrameType::kControl:
      return "CONTROL";
    case FrameType::kClose:
      return "CLOSE";
    case FrameType::kPacketSetup:
      return "PACKET_SETUP";
    case FrameType::kPacketReady:
      return "PACKET_READY";
    case FrameType::kPacketFail:
      return "PACKET_FAIL";
    case FrameType::kPacket:
      return "PACKET";
  }
  return "UNKNOWN";
}

PacketFailure KnownPacketFailure(PacketFailure failure) {
  switch (failure) {
    case PacketFailure::kNotServed:
    case PacketFailure::kNoAddress:
    case PacketFailure::kLimit:
    case PacketFailure::kRefused:
      return failure;
  }
  return PacketFailure::kRefused;
}

bool IsValidUtf8(ByteSpan text) {
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t c = text[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte, overlong lead (C0, C1) or > F4
    }
    if (text.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const uint8_t cc = text[i + k];
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

Result<DecodedFrame, FrameErrc> DecodeFrame(ByteSpan in) {
  if (in.size() < kFrameHeaderSize) return Fail(FrameErrc::kTruncated, "frame header truncated");
  const uint8_t type_byte = in[0];
  if (type_byte < 1 || type_byte > static_cast<uint8_t>(FrameType::kPacket)) {
    return Fail(FrameErrc::kUnknownType, "unknown frame type " + std::to_string(type_byte));
  }
  DecodedFrame out;
  Frame& f = out.frame;
  f.type = static_cast<FrameType>(type_byte);
  f.stream_id = Get32(in.data() + 1);
  const size_t len = Get16(in.data() + 5);
  if (len > kMaxFramePayload) return Fail(FrameErrc::kBadLength, "frame payload too long");
  if (in.size() - kFrameHeaderSize < len) {
    return Fail(FrameErrc::kTruncated, "frame payload truncated");
  }
  const ByteSpan p = in.subspan(kFrameHeaderSize, len);
  out.size = kFrameHeaderSize + len;

  if (f.type == FrameType::kWindow) {
    // Either scope: stream id 0 is the tunnel-wide window.
  } else if (IsTunnelFrame(f.type)) {
    if (f.stream_id != 0) return Fail(FrameErrc::kBadStreamId, "tunnel frame with a stream id");
  } else if (f.stream_id == 0) {
    return Fail(FrameErrc::kBadStreamId, "stream frame with stream id 0");
  }

  auto need = [&](size_t n) -> bool { return len == n; };
  switch (f.type) {
    case FrameType::kOpen: {
      auto d = ValidateDestinationPrefix(p);
      if (!d) {
        if (d.error().code == DestinationErrc::kTruncated) {
          return Fail(FrameErrc::kBadLength, "OPEN destination truncated");
        }
        return Fail(FrameErrc::kBadField, "OPEN destination: " + d.error().message);
      }
      if (*d != len) return Fail(FrameErrc::kBadLength, "bytes after OPEN destination");
      f.payload = p;
      break;
    }
    case FrameType::kOpenOk:
    case FrameType::kFin:
      if (!need(0)) return Fail(FrameErrc::kBadLength, "payload on an empty frame");
      break;
    case FrameType::kOpenFail:
      if (!need(1)) return Fail(FrameErrc::kBadLength, "OPEN_FAIL length");
      if (!IsValidOpenFailure(p[0])) return Fail(FrameErrc::kBadField, "OPEN_FAIL code");
      f.failure = static_cast<OpenFailure>(p[0]);
      break;
    case FrameType::kData:
      if (len == 0) return Fail(FrameErrc::kBadLength, "empty DATA");
      f.payload = p;
      break;
    case FrameType::kWindow:
      if (!need(4)) return Fail(FrameErrc::kBadLength, "WINDOW length");
      f.window_increment = Get32(p.data());
      if (f.window_increment == 0) return Fail(FrameErrc::kBadField, "zero WINDOW increment");
      break;
    case FrameType::kReset:
      if (!need(1)) return Fail(FrameErrc::kBadLength, "RESET length");
      f.reset_code = static_cast<ResetCode>(p[0]);
      break;
    case FrameType::kPing:
    case FrameType::kPong:
      if (!need(8)) return Fail(FrameErrc::kBadLength, "PING/PONG length");
      f.ping_value = Get64(p.data());
      break;
    case FrameType::kControl:
      if (len > kMaxControlPayload) return Fail(FrameErrc::kBadLength, "CONTROL too long");
      f.payload = p;
      break;
    case FrameType::kClose: {
      auto reason = DecodeReasonAndText(p, f.payload);
      if (!reason) return Fail(reason.error().code, "CLOSE: " + reason.error().message);
      f.close_reason = static_cast<CloseReason>(*reason);
      break;
    }
    case FrameType::kPacketSetup: {
      if (!need(kPacketSetupSize)) return Fail(FrameErrc::kBadLength, "PACKET_SETUP length");
      if (p[0] != kPacketModeVersion) return Fail(FrameErrc::kBadField, "PACKET_SETUP version");
      if ((p[7] & ~kPacketSetupWantsUdp) != 0) {
        return Fail(FrameErrc::kBadField, "PACKET_SETUP unknown flags");
      }
      f.packet_setup.receiver_index = Get32(p.data() + 1);
      f.packet_setup.max_datagram_plaintext = Get16(p.data() + 5);
      f.packet_setup.wants_udp = (p[7] & kPacketSetupWantsUdp) != 0;
      if (auto ok = CheckPacketSetup(f.packet_setup); !ok) {
        return std::unexpected(std::move(ok.error()));
      }
      break;
    }
    case FrameType::kPacketReady: {
      if (!need(kPacketReadySize)) return Fail(FrameErrc::kBadLength, "PACKET_READY length");
      PacketReadyFields& r = f.packet_ready;
      r.receiver_index = Get32(p.data());
      r.udp_port = Get16(p.data() + 4);
      r.mtu = Get16(p.data() + 6);
      std::memcpy(r.ipv4.data(), p.data() + 8, 4);
      r.ipv4_prefix = p[12];
      std::memcpy(r.ipv6.data(), p.data() + 13, 16);
      r.ipv6_prefix = p[29];
      if (auto ok = CheckPacketReady(r); !ok) return std::unexpected(std::move(ok.error()));
      break;
    }
    case FrameType::kPacketFail: {
      auto reason = DecodeReasonAndText(p, f.payload);
      if (!reason) return Fail(reason.error().code, "PACKET_FAIL: " + reason.error().message);
      if (*reason == 0) return Fail(FrameErrc::kBadField, "PACKET_FAIL reason 0");
      f.packet_failure = static_cast<PacketFailure>(*reason);
      break;
    }
    case FrameType::kPacket:
      if (len == 0) return Fail(FrameErrc::kBadLength, "empty PACKET");
      f.payload = p;
      break;
  }
  return out;
}

Result<Frame, FrameErrc> FrameReader::Next() {
  auto d = DecodeFrame(rest_);
  if (!d) {
    rest_ = {};
    return std::unexpected(std::move(d.error()));
  }
  rest_ = rest_.subspan(d->size);
  return d->frame;
}

Result<std::span<uint8_t>, FrameErrc> FrameWriter::Reserve(FrameType type, uint32_t stream_id,
                                                           size_t payload_len) {
  assert(pending_data_ == 0 && "CommitData before appending another frame");
  if (remaining() < kFrameHeaderSize + payload_len) {
    return Fail(FrameErrc::kBufferTooSmall, "no room for frame");
  }
  uint8_t* p = out_.data() + used_;
  PutHeader(p, type, stream_id, payload_len);
  used_ += kFrameHeaderSize + payload_len;
  return std::span<uint8_t>(p + kFrameHeaderSize, payload_len);
}

namespace {
Result<void, FrameErrc> NeedStream(uint32_t id) {
  if (id == 0) return Fail(FrameErrc::kBadStreamId, "stream id 0");
  return {};
}
}  // namespace

Result<void, FrameErrc> FrameWriter::Open(uint32_t stream_id, const Destination& dest) {
  if (auto ok = NeedStream(stream_id); !ok) return ok;
  if (dest.kind == Destination::Kind::kDomain &&
      (dest.domain.empty() || dest.domain.size() > kMaxDomainLength ||
       dest.domain.find('\0') != std::string::npos)) {
    return Fail(FrameErrc::kBadField, "invalid domain");
  }
  auto p = Reserve(FrameType::kOpen, stream_id, EncodedDestinationSize(dest));
  if (!p) return std::unexpected(std::move(p.error()));
  auto n = EncodeDestination(dest, *p);
  assert(n && *n == p->size());
  (void)n;
  return {};
}

Result<void, FrameErrc> FrameWriter::OpenOk(uint32_t stream_id) {
  if (auto ok = NeedStream(stream_id); !ok) return ok;
  auto p = Reserve(FrameType::kOpenOk, stream_id, 0);
  if (!p) return std::unexpected(std::move(p.error()));
  return {};
}

Result<void, FrameErrc> FrameWriter::OpenFail(uint32_t stream_id, OpenFailure failure) {
  if (auto ok = NeedStream(stream_id); !ok) return ok;
  if (!IsValidOpenFailure(static_cast<uint8_t>(failure))) {
    return Fail(FrameErrc::kBadField, "OPEN_FAIL code");
  }
  auto p = Reserve(FrameType::kOpenFail, stream_id, 1);
  if (!p) return std::unexpected(std::move(p.error()));
  (*p)[0] = static_cast<uint8_t>(failure);
  return {};
}

Result<void, FrameErrc> FrameWriter::Data(uint32_t stream_id, ByteSpan data) {
  if (auto ok = NeedStream(stream_id); !ok) return ok;
  if (data.empty() || data.size() > kMaxFramePayload) {
    return Fail(FrameErrc::kBadLength, "DATA length must be 1..kMaxFramePayload");
  }
  auto p = Reserve(FrameType::kData, stream_id, data.size());
  if (!p) return std::unexpected(std::move(p.error()));
  std::memmove(p->data(), data.data(), data.size());
  return {};
}

Result<void, FrameErrc> FrameWriter::Window(uint32_t stream_id, uint32_t increment) {
  if (increment == 0) return Fail(FrameErrc::kBadField, "zero WINDOW increment");
  auto p = Reserve(FrameType::kWindow, stream_id, 4);
  if (!p) return std::unexpected(std::move(p.error()));
  Put32(p->data(), increment);
  return {};
}

Result<void, FrameErrc> FrameWriter::Fin(uint32_t stream_id) {
  if (auto ok = NeedStream(stream_id); !ok) return ok;
  auto p = Reserve(FrameType::kFin, stream_id, 0);
  if (!p) return std::unexpected(std::move(p.error()));
  return {};
}

Result<void, FrameErrc> FrameWriter::Reset(uint32_t stream_id, ResetCode code) {
  if (auto ok = NeedStream(stream_id); !ok) return ok;
  auto p = Reserve(FrameType::kReset, stream_id, 1);
  if (!p) return std::unexpected(std::move(p.error()));
  (*p)[0] = static_cast<uint8_t>(code);
  return {};
}

Result<void, FrameErrc> FrameWriter::Ping(uint64_t value) {
  auto p = Reserve(FrameType::kPing, 0, 8);
  if (!p) return std::unexpected(std::move(p.error()));
  Put64(p->data(), value);
  return {};
}

Result<void, FrameErrc> FrameWriter::Pong(uint64_t value) {
  auto p = Reserve(FrameType::kPong, 0, 8);
  if (!p) return std::unexpected(std::move(p.error()));
  Put64(p->data(), value);
  return {};
}

Result<void, FrameErrc> FrameWriter::CopyTunnelFrame(FrameType type, ByteSpan bytes) {
  auto p = Reserve(type, 0, bytes.size());
  if (!p) return std::unexpected(std::move(p.error()));
  if (!bytes.empty()) std::memmove(p->data(), bytes.data(), bytes.size());
  return {};
}

Result<void, FrameErrc> FrameWriter::Control(ByteSpan message) {
  if (message.size() > kMaxControlPayload) return Fail(FrameErrc::kBadLength, "CONTROL too long");
  return CopyTunnelFrame(FrameType::kControl, message);
}

Result<void, FrameErrc> FrameWriter::ReasonAndText(FrameType type, uint8_t reason,
                                                   std::string_view text) {
  if (text.size() > kMaxCloseText) return Fail(FrameErrc::kBadLength, "reason text too long");
  if (!IsValidUtf8(AsBytes(text))) return Fail(FrameErrc::kBadField, "reason text not UTF-8");
  auto p = Reserve(type, 0, 1 + text.size());
  if (!p) return std::unexpected(std::move(p.error()));
  (*p)[0] = reason;
  if (!text.empty()) std::memcpy(p->data() + 1, text.data(), text.size());
  return {};
}

Result<void, FrameErrc> FrameWriter::Close(CloseReason reason, std::string_view text) {
  return ReasonAndText(FrameType::kClose, static_cast<uint8_t>(reason), text);
}

Result<void, FrameErrc> FrameWriter::PacketSetup(const PacketSetupFields& setup) {
  if (auto ok = CheckPacketSetup(setup); !ok) return ok;
  auto p = Reserve(FrameType::kPacketSetup, 0, kPacketSetupSize);
  if (!p) return std::unexpected(std::move(p.error()));
  uint8_t* b = p->data();
  b[0] = kPacketModeVersion;
  Put32(b + 1, setup.receiver_index);
  Put16(b + 5, setup.max_datagram_plaintext);
  b[7] = setup.wants_udp ? kPacketSetupWantsUdp : 0;
  return {};
}

Result<void, FrameErrc> FrameWriter::PacketReady(const PacketReadyFields& ready) {
  if (auto ok = CheckPacketReady(ready); !ok) return ok;
  auto p = Reserve(FrameType::kPacketReady, 0, kPacketReadySize);
  if (!p) return std::unexpected(std::move(p.error()));
  uint8_t* b = p->data();
  Put32(b, ready.receiver_index);
  Put16(b + 4, ready.udp_port);
  Put16(b + 6, ready.mtu);
  std::memcpy(b + 8, ready.ipv4.data(), 4);
  b[12] = ready.ipv4_prefix;
  std::memcpy(b + 13, ready.ipv6.data(), 16);
  b[29] = ready.ipv6_prefix;
  return {};
}

Result<void, FrameErrc> FrameWriter::PacketFail(PacketFailure failure, std::string_view text) {
  if (static_cast<uint8_t>(failure) == 0) return Fail(FrameErrc::kBadField, "PACKET_FAIL reason 0");
  return ReasonAndText(FrameType::kPacketFail, static_cast<uint8_t>(failure), text);
}

Result<void, FrameErrc> FrameWriter::Packet(ByteSpan packet) {
  if (packet.empty() || packet.size() > kMaxFramePayload) {
    return Fail(FrameErrc::kBadLength, "PACKET length must be 1..kMaxFramePayload");
  }
  return CopyTunnelFrame(FrameType::kPacket, packet);
}

Result<void, FrameErrc> FrameWriter::Append(const Frame& f) {
  switch (f.type) {
    case FrameType::kOpen: {
      // The payload is an encoded destination; validate it before copying.
      if (auto ok = NeedStream(f.stream_id); !ok) return ok;
      auto d = ValidateDestinationPrefix(f.payload);
      if (!d || *d != f.payload.size()) return Fail(FrameErrc::kBadField, "OPEN destination");
      auto p = Reserve(FrameType::kOpen, f.stream_id, f.payload.size());
      if (!p) return std::unexpected(std::move(p.error()));
      std::memmove(p->data(), f.payload.data(), f.payload.size());
      return {};
    }
    case FrameType::kOpenOk:
      return OpenOk(f.stream_id);
    case FrameType::kOpenFail:
      return OpenFail(f.stream_id, f.failure);
    case FrameType::kData:
      return Data(f.stream_id, f.payload);
    case FrameType::kWindow:
      return Window(f.stream_id, f.window_increment);
    case FrameType::kFin:
      return Fin(f.stream_id);
    case FrameType::kReset:
      return Reset(f.stream_id, f.reset_code);
    case FrameType::kPing:
      return Ping(f.ping_value);
    case FrameType::kPong:
      return Pong(f.ping_value);
    case FrameType::kControl:
      return Control(f.payload);
    case FrameType::kClose:
      return Close(f.close_reason, AsText(f.payload));
    case FrameType::kPacketSetup:
      return PacketSetup(f.packet_setup);
    case FrameType::kPacketReady:
      return PacketReady(f.packet_ready);
    case FrameType::kPacketFail:
      return PacketFail(f.packet_failure, AsText(f.payload));
    case FrameType::kPacket:
      return Packet(f.payload);
  }
  return Fail(FrameErrc::kUnknownType, "unknown frame type");
}

Result<std::span<uint8_t>, FrameErrc> FrameWriter::BeginReserved(FrameType type, uint32_t stream_id,
                                                                 size_t max_len) {
  assert(pending_data_ == 0 && "Commit before another Begin");
  if (remaining() <= kFrameHeaderSize || max_len == 0) {
    return Fail(FrameErrc::kBufferTooSmall,
                std::string("no room for a ") + FrameTypeName(type) + " frame");
  }
  const size_t cap = std::min({max_len, kMaxFramePayload, remaining() - kFrameHeaderSize});
  pending_data_ = cap;
  pending_stream_ = stream_id;
  pending_type_ = type;
  return out_.subspan(used_ + kFrameHeaderSize, cap);
}

void FrameWriter::CommitReserved(FrameType type, size_t len) {
  assert(len <= pending_data_ && type == pending_type_);
  if (len > 0 && len <= pending_data_ && type == pending_type_) {
    PutHeader(out_.data() + used_, type, pending_stream_, len);
    used_ += kFrameHeaderSize + len;
  }
  pending_data_ = 0;
  pending_stream_ = 0;
}

Result<std::span<uint8_t>, FrameErrc> FrameWriter::BeginData(uint32_t stream_id, size_t max_len) {
  if (auto ok = NeedStream(stream_id); !ok) return std::unexpected(std::move(ok.error()));
  return BeginReserved(FrameType::kData, stream_id, max_len);
}

void FrameWriter::CommitData(size_t len) { CommitReserved(FrameType::kData, len); }

Result<std::span<uint8_t>, FrameErrc> FrameWriter::BeginPacket(size_t max_len) {
  return BeginReserved(FrameType::kPacket, 0, max_len);
}

void FrameWriter::CommitPacket(size_t len) { CommitReserved(FrameType::kPacket, len); }

}  // namespace dvpn::tunnel
