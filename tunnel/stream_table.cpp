#include "tunnel/stream_table.h"

#include <algorithm>
#include <cassert>

namespace dvpn::tunnel {

const char* MuxErrcName(MuxErrc code) {
  switch (code) {
    case MuxErrc::kUnexpectedFrame:
      return "unexpected frame";
    case MuxErrc::kUnknownStream:
      return "unknown stream";
    case MuxErrc::kBadStreamId:
      return "bad stream id";
    case MuxErrc::kFlowControl:
      return "flow control violation";
    case MuxErrc::kWindowOverflow:
      return "window overflow";
    case MuxErrc::kBadDestination:
      return "bad destination";
    case MuxErrc::kTooManyStreams:
      return "too many streams";
    case MuxErrc::kIdsExhausted:
      return "stream ids exhausted";
    case MuxErrc::kNoSuchStream:
      return "no such stream";
    case MuxErrc::kBadState:
      return "bad state";
    case MuxErrc::kBadArgument:
      return "bad argument";
  }
  return "unknown";
}

bool IsPeerViolation(MuxErrc code) {
  switch (code) {
    case MuxErrc::kUnexpectedFrame:
    case MuxErrc::kUnknownStream:
    case MuxErrc::kBadStreamId:
    case MuxErrc::kFlowControl:
    case MuxErrc::kWindowOverflow:
    case MuxErrc::kBadDestination:
      return true;
    default:
      return false;
  }
}

const char* StreamStateName(StreamState state) {
  switch (state) {
    case StreamState::kOpening:
      return "opening";
    case StreamState::kOpen:
      return "open";
    case StreamState::kHalfClosedLocal:
      return "half-closed (local)";
    case StreamState::kHalfClosedRemote:
      return "half-closed (remote)";
    case StreamState::kClosed:
      return "closed";
  }
  return "unknown";
}

StreamTable::StreamTable(Role role, Options options)
    : role_(role),
      options_(options),
      tunnel_send_(options.tunnel_window),
      tunnel_recv_(options.tunnel_window),
      open_tokens_(options.new_streams_per_second, options.new_streams_burst) {
  assert(options_.stream_window > 0 && options_.tunnel_window > 0);
  assert(options_.stream_window <= kMaxWindow && options_.tunnel_window <= kMaxWindow);
}

StreamTable::Stream* StreamTable::Find(uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

const StreamTable::Stream* StreamTable::Find(uint32_t id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

uint32_t StreamTable::AddTunnelCredit(uint64_t n) {
  tunnel_pending_ += n;
  if (manual_tunnel_credit_) return 0;
  const uint64_t threshold = std::max<uint64_t>(1, options_.tunnel_window / 4);
  if (tunnel_pending_ < threshold) return 0;
  const uint64_t inc = tunnel_pending_;
  tunnel_pending_ = 0;
  tunnel_recv_ += inc;
  return static_cast<uint32_t>(inc);  // <= tunnel_window by the accounting invariant
}

void StreamTable::ManualTunnelCredit() {
  manual_tunnel_credit_ = true;
  tunnel_pending_ += tunnel_recv_;
  tunnel_recv_ = 0;
}

uint32_t StreamTable::ReleaseTunnelCredit(uint64_t max) {
  const uint64_t inc = std::min(max, tunnel_pending_);
  tunnel_pending_ -= inc;
  tunnel_recv_ += inc;
  return static_cast<uint32_t>(inc);  // <= tunnel_window by the accounting invariant
}

uint32_t StreamTable::Remove(uint32_t id) {
  auto it = streams_.find(id);
  assert(it != streams_.end());
  const uint64_t dropped = it->second.buffered;
  tunnel_buffered_ -= dropped;
  streams_.erase(it);
  return dropped == 0 ? 0 : AddTunnelCredit(dropped);
}

Result<Action, MuxErrc> StreamTable::OnFrame(const Frame& f, uint64_t now_ms) {
  Action a;
  a.kind = Action::Kind::kNone;
  a.stream_id = f.stream_id;
  // A stream frame for an id that is not in the table: dropped when the id was used before
  // (the stream was closed locally while the frame was in flight), a violation otherwise.
  auto missing = [&]() -> Result<Action, MuxErrc> {
    if (f.stream_id > last_id_ || f.stream_id == 0) {
      return Fail(MuxErrc::kUnknownStream, std::string(FrameTypeName(f.type)) +
                                               " for unknown stream " +
                                               std::to_string(f.stream_id));
    }
    return a;
  };

  switch (f.type) {
    case FrameType::kOpen:
      return OnOpen(f, now_ms);
    case FrameType::kData:
      return OnData(f);
    case FrameType::kWindow:
      return OnWindow(f);

    case FrameType::kOpenOk:
    case FrameType::kOpenFail: {
      if (role_ != Role::kClient) {
        return Fail(MuxErrc::kUnexpectedFrame, "the client sent an OPEN answer");
      }
      Stream* s = Find(f.stream_id);
      if (!s) return missing();
      if (s->state != StreamState::kOpening) {
        return Fail(MuxErrc::kUnexpectedFrame, "OPEN answer for a stream already open");
      }
      if (f.type == FrameType::kOpenOk) {
        s->state = StreamState::kOpen;
        a.kind = Action::Kind::kOpened;
      } else {
        Remove(f.stream_id);  // nothing can be buffered while opening
        a.kind = Action::Kind::kOpenFailed;
        a.failure = f.failure;
        a.stream_removed = true;
      }
      return a;
    }

    case FrameType::kFin: {
      Stream* s = Find(f.stream_id);
      if (!s) return missing();
      if (!CanReceive(*s)) {
        return Fail(MuxErrc::kUnexpectedFrame,
                    std::string("FIN on a stream that is ") + StreamStateName(s->state));
      }
      s->state =
          s->state == StreamState::kOpen ? StreamState::kHalfClosedRemote : StreamState::kClosed;
      a.kind = Action::Kind::kRemoteFin;
      if (s->state == StreamState::kClosed && s->buffered == 0) {
        Remove(f.stream_id);
        a.stream_removed = true;
      }
      return a;
    }

    case FrameType::kReset: {
      if (!Find(f.stream_id)) return missing();
      a.kind = Action::Kind::kReset;
      a.reset_code = f.reset_code;
      a.tunnel_credit = Remove(f.stream_id);
      a.stream_removed = true;
      return a;
    }

    case FrameType::kPing:
      a.kind = Action::Kind::kPing;
      a.ping_value = f.ping_value;
      return a;
    case FrameType::kPong:
      a.kind = Action::Kind::kPong;
      a.ping_value = f.ping_value;
      return a;
    case FrameType::kControl:
      a.kind = Action::Kind::kControl;
      a.data = f.payload;
      return a;
    case FrameType::kClose:
      a.kind = Action::Kind::kClose;
      a.close_reason = f.close_reason;
      a.data = f.payload;
      return a;
    case FrameType::kPacketSetup:
    case FrameType::kPacketReady:
    case FrameType::kPacketFail:
    case FrameType::kPacket:
      return OnPacketFrame(f);
  }
  return Fail(MuxErrc::kUnexpectedFrame, "unknown frame type");
}

Result<Action, MuxErrc> StreamTable::OnPacketFrame(const Frame& f) {
  Action a;
  auto unexpected = [&](const char* why) -> Result<Action, MuxErrc> {
    return Fail(MuxErrc::kUnexpectedFrame, std::string(FrameTypeName(f.type)) + ": " + why);
  };
  switch (f.type) {
    case FrameType::kPacketSetup:
      if (role_ != Role::kExit) return unexpected("only the client asks for packet mode");
      if (packet_state_ != PacketState::kNone) return unexpected("packet mode asked twice");
      packet_state_ = PacketState::kRequested;
      packet_setup_ = f.packet_setup;
      a.kind = Action::Kind::kPacketSetup;
      a.packet_setup = f.packet_setup;
      return a;
    case FrameType::kPacketReady: {
      if (role_ != Role::kClient) return unexpected("only the exit answers packet mode");
      if (packet_state_ != PacketState::kRequested) return unexpected("no setup waiting");
      const PacketReadyFields& r = f.packet_ready;
      if (r.udp_port != 0 && !packet_setup_.wants_udp) return unexpected("UDP not asked for");
      if (r.udp_port != 0 && r.mtu > packet_setup_.max_datagram_plaintext) {
        return unexpected("mtu above the client's max datagram plaintext");
      }
      packet_state_ = PacketState::kReady;
      a.kind = Action::Kind::kPacketReady;
      a.packet_ready = r;
      return a;
    }
    case FrameType::kPacketFail:
      if (role_ != Role::kClient) return unexpected("only the exit answers packet mode");
      if (packet_state_ != PacketState::kRequested) return unexpected("no setup waiting");
      packet_state_ = PacketState::kFailed;
      a.kind = Action::Kind::kPacketFailed;
      a.packet_failure = KnownPacketFailure(f.packet_failure);
      a.data = f.payload;
      return a;
    case FrameType::kPacket:
      // Not flow-controlled: no window changes (datagram semantics, docs/tunnel.md).
      if (packet_state_ != PacketState::kReady) return unexpected("not in packet mode");
      a.kind = Action::Kind::kPacket;
      a.data = f.payload;
      return a;
    default:
      break;
  }
  return unexpected("not a packet-mode frame");
}

Result<void, MuxErrc> StreamTable::StartPacketSetup(const PacketSetupFields& setup) {
  if (role_ != Role::kClient) return Fail(MuxErrc::kBadState, "only the client asks for packets");
  if (packet_state_ != PacketState::kNone) {
    return Fail(MuxErrc::kBadState, "packet mode asked before in this tunnel");
  }
  packet_state_ = PacketState::kRequested;
  packet_setup_ = setup;
  return {};
}

Result<void, MuxErrc> StreamTable::AnswerPacketSetup(bool ready) {
  if (role_ != Role::kExit) return Fail(MuxErrc::kBadState, "only the exit answers packet mode");
  if (packet_state_ != PacketState::kRequested) {
    return Fail(MuxErrc::kBadState, "no packet-mode setup waiting for an answer");
  }
  packet_state_ = ready ? PacketState::kReady : PacketState::kFailed;
  return {};
}

Result<Action, MuxErrc> StreamTable::OnOpen(const Frame& f, uint64_t now_ms) {
  if (role_ != Role::kExit) return Fail(MuxErrc::kUnexpectedFrame, "the exit sent OPEN");
  if (f.stream_id <= last_id_) {
    return Fail(MuxErrc::kBadStreamId, "OPEN id " + std::to_string(f.stream_id) + " not above " +
                                           std::to_string(last_id_));
  }
  auto dest = DecodeDestination(f.payload);
  if (!dest) return Fail(MuxErrc::kBadDestination, "OPEN: " + dest.error().message);
  last_id_ = f.stream_id;

  Action a;
  a.stream_id = f.stream_id;
  if (streams_.size() >= options_.max_streams || !open_tokens_.Take(now_ms)) {
    a.kind = Action::Kind::kRefuseOpen;
    a.failure = OpenFailure::kGeneral;
    return a;
  }
  Stream s;
  s.state = StreamState::kOpening;
  s.send = options_.stream_window;
  s.recv = options_.stream_window;
  streams_.emplace(f.stream_id, s);
  a.kind = Action::Kind::kOpenRequested;
  a.destination = std::move(*dest);
  return a;
}

Result<Action, MuxErrc> StreamTable::OnData(const Frame& f) {
  const uint64_t len = f.payload.size();
  Action a;
  a.stream_id = f.stream_id;
  Stream* s = Find(f.stream_id);
  if (!s) {
    if (f.stream_id > last_id_ || f.stream_id == 0) {
      return Fail(MuxErrc::kUnknownStream,
                  "DATA for unknown stream " + std::to_string(f.stream_id));
    }
    // A stream closed locally: drop the bytes but keep the tunnel window honest.
    if (len > tunnel_recv_) return Fail(MuxErrc::kFlowControl, "DATA beyond the tunnel window");
    tunnel_recv_ -= len;
    a.kind = Action::Kind::kNone;
    a.tunnel_credit = AddTunnelCredit(len);
    return a;
  }
  const bool early = s->state == StreamState::kOpening && role_ == Role::kExit;
  if (!CanReceive(*s) && !early) {
    return Fail(MuxErrc::kUnexpectedFrame,
                std::string("DATA on a stream that is ") + StreamStateName(s->state));
  }
  if (early) {
    if (len > kMaxEarlyData - s->early) {
      return Fail(MuxErrc::kFlowControl, "early DATA beyond kMaxEarlyData");
    }
    s->early += len;
  }
  if (len > s->recv) return Fail(MuxErrc::kFlowControl, "DATA beyond the stream window");
  if (len > tunnel_recv_) return Fail(MuxErrc::kFlowControl, "DATA beyond the tunnel window");
  s->recv -= len;
  tunnel_recv_ -= len;
  s->buffered += len;
  tunnel_buffered_ += len;
  a.kind = Action::Kind::kData;
  a.data = f.payload;
  return a;
}

Result<Action, MuxErrc> StreamTable::OnWindow(const Frame& f) {
  Action a;
  a.stream_id = f.stream_id;
  a.kind = Action::Kind::kWindow;
  uint64_t* window = &tunnel_send_;
  if (f.stream_id != 0) {
    Stream* s = Find(f.stream_id);
    if (!s) {
      if (f.stream_id > last_id_) {
        return Fail(MuxErrc::kUnknownStream,
                    "WINDOW for unknown stream " + std::to_string(f.stream_id));
      }
      a.kind = Action::Kind::kNone;
      return a;
    }
    window = &s->send;
  }
  if (*window + f.window_increment > kMaxWindow) {
    return Fail(MuxErrc::kWindowOverflow, "WINDOW beyond 2^31-1");
  }
  *window += f.window_increment;
  return a;
}

Result<uint32_t, MuxErrc> StreamTable::Open() {
  if (role_ != Role::kClient) return Fail(MuxErrc::kBadState, "only the client opens streams");
  if (streams_.size() >= options_.max_streams) {
    return Fail(MuxErrc::kTooManyStreams, "stream limit reached");
  }
  if (last_id_ == UINT32_MAX) return Fail(MuxErrc::kIdsExhausted, "stream ids exhausted");
  const uint32_t id = ++last_id_;
  Stream s;
  s.state = StreamState::kOpening;
  s.send = options_.stream_window;
  s.recv = options_.stream_window;
  streams_.emplace(id, s);
  return id;
}

Result<void, MuxErrc> StreamTable::Accept(uint32_t id) {
  if (role_ != Role::kExit) return Fail(MuxErrc::kBadState, "only the exit accepts streams");
  Stream* s = Find(id);
  if (!s) return Fail(MuxErrc::kNoSuchStream, "no stream " + std::to_string(id));
  if (s->state != StreamState::kOpening) return Fail(MuxErrc::kBadState, "stream not opening");
  s->state = StreamState::kOpen;
  return {};
}

Result<WindowUpdate, MuxErrc> StreamTable::Refuse(uint32_t id) {
  if (role_ != Role::kExit) return Fail(MuxErrc::kBadState, "only the exit refuses streams");
  Stream* s = Find(id);
  if (!s) return Fail(MuxErrc::kNoSuchStream, "no stream " + std::to_string(id));
  if (s->state != StreamState::kOpening) return Fail(MuxErrc::kBadState, "stream not opening");
  WindowUpdate u;
  u.tunnel_increment = Remove(id);  // credit for discarded early data
  u.stream_removed = true;
  return u;
}

bool StreamTable::CanSendEarly(const Stream& s) const {
  return s.state == StreamState::kOpening && role_ == Role::kClient;
}

size_t StreamTable::CanSend(uint32_t id) const {
  const Stream* s = Find(id);
  if (!s) return 0;
  if (CanSendEarly(*s)) {
    return static_cast<size_t>(std::min({s->send, tunnel_send_, kMaxEarlyData - s->early}));
  }
  if (!CanSendState(*s)) return 0;
  return static_cast<size_t>(std::min(s->send, tunnel_send_));
}

Result<void, MuxErrc> StreamTable::Sent(uint32_t id, size_t n) {
  Stream* s = Find(id);
  if (!s) return Fail(MuxErrc::kNoSuchStream, "no stream " + std::to_string(id));
  const bool early = CanSendEarly(*s);
  if (!CanSendState(*s) && !early) {
    return Fail(MuxErrc::kBadState,
                std::string("cannot send on a stream that is ") + StreamStateName(s->state));
  }
  if (n > std::min(s->send, tunnel_send_) || (early && n > kMaxEarlyData - s->early)) {
    return Fail(MuxErrc::kBadArgument, "sent beyond the send window");
  }
  s->send -= n;
  tunnel_send_ -= n;
  if (early) s->early += n;
  return {};
}

Result<WindowUpdate, MuxErrc> StreamTable::Consumed(uint32_t id, size_t n) {
  Stream* s = Find(id);
  if (!s) return Fail(MuxErrc::kNoSuchStream, "no stream " + std::to_string(id));
  if (n > s->buffered) return Fail(MuxErrc::kBadArgument, "consumed more than buffered");
  WindowUpdate u;
  if (n == 0) return u;
  s->buffered -= n;
  tunnel_buffered_ -= n;
  s->pending += n;
  const uint64_t threshold = std::max<uint64_t>(1, options_.stream_window / 2);
  if (CanReceive(*s) && s->pending >= threshold) {
    u.stream_increment = static_cast<uint32_t>(s->pending);
    s->recv += s->pending;
    s->pending = 0;
  }
  if (s->state == StreamState::kClosed && s->buffered == 0) {
    Remove(id);
    u.stream_removed = true;
  }
  u.tunnel_increment = AddTunnelCredit(n);
  return u;
}

Result<bool, MuxErrc> StreamTable::Fin(uint32_t id) {
  Stream* s = Find(id);
  if (!s) return Fail(MuxErrc::kNoSuchStream, "no stream " + std::to_string(id));
  if (!CanSendState(*s)) {
    return Fail(MuxErrc::kBadState,
                std::string("cannot FIN a stream that is ") + StreamStateName(s->state));
  }
  s->state = s->state == StreamState::kOpen ? StreamState::kHalfClosedLocal : StreamState::kClosed;
  if (s->state == StreamState::kClosed && s->buffered == 0) {
    Remove(id);
    return true;
  }
  return false;
}

Result<WindowUpdate, MuxErrc> StreamTable::Reset(uint32_t id) {
  if (!Find(id)) return Fail(MuxErrc::kNoSuchStream, "no stream " + std::to_string(id));
  WindowUpdate u;
  u.tunnel_increment = Remove(id);
  u.stream_removed = true;
  return u;
}

std::optional<StreamState> StreamTable::state(uint32_t id) const {
  const Stream* s = Find(id);
  if (!s) return std::nullopt;
  return s->state;
}

size_t StreamTable::buffered_bytes(uint32_t id) const {
  const Stream* s = Find(id);
  return s ? static_cast<size_t>(s->buffered) : 0;
}

std::string StreamTable::CheckInvariants() const {
  if (streams_.size() > options_.max_streams) return "more streams than max_streams";
  if (tunnel_send_ > kMaxWindow) return "tunnel send window above kMaxWindow";
  if (tunnel_recv_ + tunnel_buffered_ + tunnel_pending_ != options_.tunnel_window) {
    return "tunnel receive accounting: recv + buffered + pending != tunnel_window";
  }
  uint64_t sum = 0;
  for (const auto& [id, s] : streams_) {
    const std::string at = " (stream " + std::to_string(id) + ")";
    if (id == 0 || id > last_id_) return "stream id outside 1..last_id" + at;
    if (s.send > kMaxWindow) return "send window above kMaxWindow" + at;
    if (s.recv + s.buffered + s.pending != options_.stream_window) {
      return "stream receive accounting: recv + buffered + pending != stream_window" + at;
    }
    if (s.state == StreamState::kOpening &&
        (role_ == Role::kClient ? s.buffered != 0 : s.buffered > s.early)) {
      return "data while opening beyond the early data" + at;
    }
    if (s.early > kMaxEarlyData) return "early data above kMaxEarlyData" + at;
    if (s.state == StreamState::kClosed && s.buffered == 0) return "drained closed stream" + at;
    sum += s.buffered;
  }
  if (sum != tunnel_buffered_) return "sum of stream buffers != tunnel buffered";
  if (tunnel_buffered_ > options_.tunnel_window) return "tunnel buffer above tunnel_window";
  return {};
}

}  // namespace dvpn::tunnel
