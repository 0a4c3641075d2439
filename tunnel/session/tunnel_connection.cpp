#include "tunnel/session/tunnel_connection.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "common/log.h"
#include "tunnel/session/bandwidth_limiter.h"

namespace dvpn::tunnel::session {
namespace {

constexpr size_t kReadBufferSize = 256 * 1024;
// The read buffer starts at this size when data arrives, doubles (up to kReadBufferSize) when a
// read fills it, and is released when a read shorter than kReleaseReadBelow leaves it empty, so
// an idle tunnel holds no read buffer (docs/tunnel.md, "Limits": memory under a flood).
constexpr size_t kInitialReadBuffer = 32 * 1024;
constexpr size_t kReleaseReadBelow = 4 * 1024;
static_assert(kInitialReadBuffer > kMaxRecordSize);
// The control queue (tunnel frames) may hold this much before the tunnel is closed: only a peer
// that provokes frames (PONG, WINDOW, OPEN_FAIL) without reading our answers gets there.
constexpr size_t kControlQueueLimit = 1024 * 1024;
// Most DATA frames filled by one scatter read of a local socket.
constexpr size_t kMaxReadSegments = 16;
// Most bytes read from one local socket per readiness wake-up (fairness between streams).
constexpr size_t kStreamChunk = kMaxReadSegments * kMaxFramePayload;
// A DATA frame is appended to the open record only when it can carry at least this much;
// otherwise the record is finished and the frame starts a new one.
constexpr size_t kMinDataRoom = 1024;

}  // namespace

struct TunnelConnection::Stream {
  Stream(const asio::any_io_executor& ex, uint32_t stream_id)
      : id(stream_id), socket(ex), rx_signal(ex), tx_signal(ex), open_signal(ex) {}
  uint32_t id;
  tcp::socket socket;
  std::vector<uint8_t> rx;          // tunnel -> local, not yet written
  std::vector<uint8_t> rx_writing;  // being written to the local socket
  // DATA of the current tunnel read batch, still in the read buffer, to be written straight to
  // the local socket at the end of the batch (only while rx and rx_writing are empty).
  std::vector<asio::const_buffer> direct;
  bool pumping = false;  // the local socket is attached and its pumps run
  bool remote_fin = false;
  bool dead = false;  // reset or tunnel gone: pumps stop
  bool open_done = false;
  std::optional<OpenFailure> open_failure;
  uint64_t withheld_credit = 0;  // stream WINDOW credit held back while paused
  asio::steady_timer rx_signal;
  asio::steady_timer tx_signal;
  asio::steady_timer open_signal;
  // With a bandwidth limiter only (allocated by StartPumps): the timers the uplink and the
  // downlink wait on for tokens; KillStream cancels them.
  struct LimitTimers {
    explicit LimitTimers(const asio::any_io_executor& ex) : uplink(ex), downlink(ex) {}
    asio::steady_timer uplink;
    asio::steady_timer downlink;
  };
  std::unique_ptr<LimitTimers> limit;
};

// ---------------------------------------------------------------------------------------------
// RecordQueue

void TunnelConnection::RecordQueue::Reserve(size_t n) {
  const size_t need = used + (n + 1) * kMaxRecordSize;
  if (bytes.size() < need) bytes.resize(std::max(need, bytes.size() + bytes.size() / 2));
}

std::span<uint8_t> TunnelConnection::RecordQueue::Room(size_t need) {
  if (open && kMaxRecordPlaintext - open_plain < need) Finish();
  if (!open) {
    Reserve(1);
    open_start = used;
    open_plain = 0;
    open = true;
    used += kRecordHeaderSize;
  }
  return std::span<uint8_t>(bytes.data() + open_start + kRecordHeaderSize + open_plain,
                            kMaxRecordPlaintext - open_plain);
}

void TunnelConnection::RecordQueue::Finish() {
  if (!open) return;
  open = false;
  if (open_plain == 0) {
    used = open_start;
    return;
  }
  records.push_back({open_start, open_plain});
  used += kRecordTagSize;
}

void TunnelConnection::RecordQueue::Clear() {
  used = 0;
  records.clear();
  open = false;
}

// ---------------------------------------------------------------------------------------------

TunnelConnection::TunnelConnection(tcp::socket socket, const SessionKeys& keys, Role role,
                                   ConnectionOptions options, std::string name)
    : TunnelConnection(std::make_unique<TcpRecordTransport>(std::move(socket)), keys, role,
                       std::move(options), std::move(name)) {}

TunnelConnection::TunnelConnection(std::unique_ptr<RecordTransport> transport,
                                   const SessionKeys& keys, Role role, ConnectionOptions options,
                                   std::string name)
    : transport_(std::move(transport)),
      ex_(transport_->executor()),
      role_(role),
      options_(options),
      name_(std::move(name)),
      sealer_(keys),
      opener_(keys),
      table_(role, options.table),
      write_signal_(ex_),
      room_signal_(ex_),
      resume_signal_(ex_),
      keepalive_timer_(ex_),
      limiter_(options_.bandwidth.get()) {
  last_rx_ = last_rekey_ = std::chrono::steady_clock::now();
  keys_.cipher = keys.cipher;
  keys_.send_key = keys.send_key;
  keys_.recv_key = keys.recv_key;
  keys_.session_id = keys.session_id;
}

TunnelConnection::~TunnelConnection() = default;

void TunnelConnection::Start(OpenHandler on_open, ClosedHandler on_closed) {
  on_open_ = std::move(on_open);
  on_closed_ = std::move(on_closed);
  auto self = shared_from_this();
  auto ex = ex_;
  asio::co_spawn(ex, [self]() { return self->ReadLoop(); }, TaskDone("read loop"));
  asio::co_spawn(ex, [self]() { return self->WriteLoop(); }, TaskDone("write loop"));
  asio::co_spawn(ex, [self]() { return self->KeepaliveLoop(); }, TaskDone("keepalive"));
}

void TunnelConnection::OnTaskEnd(const char* task, std::exception_ptr e) {
  if (!e) return;
  LogTaskFailure(*TunnelLog(), (name_ + " " + task).c_str(), e);
  const bool writer_gone = std::string_view(task) == "write loop";
  Close(CloseReason::kInternal, std::string(task) + " failed", !writer_gone && !writer_done_);
  if (writer_gone && !writer_done_) FinishWriter();
}

// ---------------------------------------------------------------------------------------------
// Control channel, metering, pause

void TunnelConnection::SetControlHandler(ControlHandler handler) {
  on_control_ = std::move(handler);
}

bool TunnelConnection::SendControl(ByteSpan message, ControlOrder order) {
  if (closing_ || message.size() > kMaxControlPayload) return false;
  const size_t frame_size = kFrameHeaderSize + message.size();
  if (order == ControlOrder::kAfterData) {
    // Stream-ordered: behind every DATA frame already queued (and so already counted).
    if (data_.used + frame_size > options_.write_buffer_limit + kControlQueueLimit) {
      Close(CloseReason::kFlowControl, "the peer does not read (data queue full)", false);
      return false;
    }
    return AppendFrame(false, frame_size, [&](FrameWriter& w) { return w.Control(message); });
  }
  return AppendFrame(true, frame_size, [&](FrameWriter& w) { return w.Control(message); });
}

void TunnelConnection::SetMeterObserver(uint64_t every_bytes, std::function<void()> fn) {
  ++meter_generation_;
  meter_due_ = 0;
  if (every_bytes == 0 || !fn) {
    meter_every_ = 0;
    meter_fn_.reset();
    return;
  }
  meter_every_ = every_bytes;
  meter_marks_ = (data_sent_ + data_received_) / every_bytes;
  meter_fn_ = std::make_shared<std::function<void()>>(std::move(fn));
}

void TunnelConnection::CountData(uint64_t n, bool sent) {
  (sent ? data_sent_ : data_received_) += n;
  if (meter_every_ == 0) return;
  const uint64_t marks = (data_sent_ + data_received_) / meter_every_;
  if (marks <= meter_marks_) return;
  meter_due_ += marks - meter_marks_;
  meter_marks_ = marks;
  if (!meter_posted_) {
    meter_posted_ = true;
    asio::post(ex_, [self = shared_from_this()]() { self->RunMeterObserver(); });
  }
}

void TunnelConnection::RunMeterObserver() {
  meter_posted_ = false;
  const uint64_t generation = meter_generation_;
  while (meter_due_ > 0 && meter_generation_ == generation && meter_fn_) {
    --meter_due_;
    auto fn = meter_fn_;  // the observer may replace itself
    (*fn)();
  }
}

void TunnelConnection::SetForwardingPaused(bool paused) {
  if (paused == paused_) return;
  paused_ = paused;
  if (paused) {
    TunnelLog()->debug("{}: forwarding paused", name_);
    return;
  }
  TunnelLog()->debug("{}: forwarding resumed", name_);
  for (auto& [id, s] : streams_) {
    if (s->withheld_credit != 0) {
      SendWindowFrames(id, s->withheld_credit);
      s->withheld_credit = 0;
    }
  }
  if (withheld_tunnel_credit_ != 0) {
    SendWindowFrames(0, withheld_tunnel_credit_);
    withheld_tunnel_credit_ = 0;
  }
  ReleaseTunnelCredit();
  Notify(resume_signal_);
  PostRoom();
}

void TunnelConnection::PostRoom() {
  if (!on_room_ || room_posted_ || closing_) return;
  room_posted_ = true;
  asio::post(ex_, [self = shared_from_this()] {
    self->room_posted_ = false;
    if (!self->closing_ && self->on_room_) self->on_room_();
  });
}

void TunnelConnection::LimitForwarding(uint64_t limit,
                                       std::function<void(uint64_t limit)> on_blocked) {
  limited_ = true;
  limit_ = limit;
  table_.ManualTunnelCredit();
  on_blocked_ = std::make_shared<std::function<void(uint64_t)>>(std::move(on_blocked));
  ReleaseTunnelCredit();
}

void TunnelConnection::SetForwardingLimit(uint64_t limit) {
  if (!limited_ || limit == limit_) return;
  limit_ = limit;
  blocked_posted_ = false;
  ReleaseTunnelCredit();
  Notify(resume_signal_);
  PostRoom();
}

uint64_t TunnelConnection::ForwardBudget() const {
  if (!limited_) return UINT64_MAX;
  const uint64_t used = data_sent_ + data_received_ + table_.tunnel_receive_window();
  return used >= limit_ ? 0 : limit_ - used;
}

void TunnelConnection::ReleaseTunnelCredit() {
  // A peer that opened no stream has nothing to upload (a packet-mode session's packets use no
  // credit): credit it held would only shrink the budget (docs/payments.md §4).
  if (!limited_ || paused_ || closing_ || !peer_opened_) return;
  constexpr uint64_t kSmall = 64 * 1024;
  const uint64_t pending = table_.tunnel_pending_credit();
  if (pending == 0) return;
  const uint64_t held = table_.tunnel_receive_window();  // credit the peer holds
  // The peer's credit follows its use (like a congestion window): it starts at 64 KiB and
  // doubles each time the peer has used three quarters of it. Credit the peer holds is metered
  // budget this side cannot read into, so a peer that does not upload must not hold much.
  if (held < credit_target_ / 4) credit_target_ = std::min<uint64_t>(credit_target_ * 2, kMaxWindow);
  // Small grants only when the peer is nearly out of credit (fewer WINDOW frames).
  if (pending < kSmall && held >= kSmall) return;
  // At most half of what is left under the limit (all of it when that is small), so the other
  // half stays for this side's reads.
  const uint64_t metered = data_sent_ + data_received_;
  const uint64_t room = limit_ > metered ? limit_ - metered : 0;
  const uint64_t target = std::min(credit_target_, room < kSmall ? room : room / 2);
  if (target <= held) {
    if (room <= held) ReportBlocked();
    return;
  }
  if (const uint32_t inc = table_.ReleaseTunnelCredit(target - held); inc != 0) {
    SendWindowFrames(0, inc);
  }
}

void TunnelConnection::ReportBlocked() {
  if (blocked_posted_ || !on_blocked_ || !*on_blocked_ || closing_) return;
  blocked_posted_ = true;
  asio::post(ex_, [self = shared_from_this(), fn = on_blocked_, l = limit_] {
    if (!self->closing_) (*fn)(l);
  });
}

void TunnelConnection::SendWindowFrames(uint32_t id, uint64_t increment) {
  // Withheld credit never exceeds a window (< 2^31), so this is one frame in practice.
  while (increment > 0) {
    const uint32_t step = static_cast<uint32_t>(std::min<uint64_t>(increment, kMaxWindow));
    if (!AppendFrame(true, kWindowFrameSize, [&](FrameWriter& w) { return w.Window(id, step); }))
      return;
    increment -= step;
  }
}

void TunnelConnection::GrantWindow(uint32_t id, const WindowUpdate& update, bool stream_too) {
  const uint32_t stream_increment = stream_too ? update.stream_increment : 0;
  if (paused_) {
    if (stream_increment != 0) {
      if (auto s = FindStream(id)) s->withheld_credit += stream_increment;
    }
    withheld_tunnel_credit_ += update.tunnel_increment;
    return;
  }
  if (stream_increment != 0) SendWindowFrames(id, stream_increment);
  if (update.tunnel_increment != 0) SendWindowFrames(0, update.tunnel_increment);
  ReleaseTunnelCredit();  // limited tunnels: the table keeps tunnel credit pending
}

// ---------------------------------------------------------------------------------------------
// Write path

template <class Fn>
bool TunnelConnection::AppendFrame(bool control, size_t frame_size, Fn&& fn) {
  if (closing_) return false;
  RecordQueue& q = control ? control_ : data_;
  if (control && q.used + frame_size > kControlQueueLimit) {
    // A peer that provokes tunnel frames without reading our answers must not grow our memory.
    Close(CloseReason::kFlowControl, "the peer does not read (control queue full)", false);
    return false;
  }
  FrameWriter w(q.Room(frame_size));
  auto r = fn(w);
  if (!r) {
    TunnelLog()->error("{}: cannot encode a frame: {}", name_, r.error().message);
    return false;
  }
  q.Commit(w.size());
  Notify(write_signal_);
  return true;
}

void TunnelConnection::AppendData(uint32_t id, ByteSpan data) {
  while (!data.empty()) {
    auto room = data_.Room(kFrameHeaderSize + std::min(data.size(), kMinDataRoom));
    const size_t n = std::min({room.size() - kFrameHeaderSize, data.size(), kMaxFramePayload});
    if (!AppendFrame(false, kFrameHeaderSize + n,
                     [&](FrameWriter& w) { return w.Data(id, data.first(n)); }))
      return;
    data = data.subspan(n);
  }
}

size_t TunnelConnection::ReadIntoRecords(Stream& s, size_t max, error_code& ec) {
  RecordQueue& q = data_;
  if (q.open && kMaxRecordPlaintext - q.open_plain < kFrameHeaderSize + kMinDataRoom) q.Finish();
  q.Reserve(kMaxReadSegments + 2);  // no reallocation below: the pointers stay valid
  // Plan: one DATA frame in the open record's free space (if any), then fresh full-size records
  // laid out back to back where the queue will put them.
  struct Segment {
    uint8_t* frame;
    size_t cap;
  };
  std::array<Segment, kMaxReadSegments> seg;
  std::array<asio::mutable_buffer, kMaxReadSegments> bufs;
  size_t count = 0;
  size_t planned = 0;
  size_t next_start = q.used;
  if (q.open) {
    uint8_t* frame = q.bytes.data() + q.open_start + kRecordHeaderSize + q.open_plain;
    const size_t cap = std::min(kMaxRecordPlaintext - q.open_plain - kFrameHeaderSize, max);
    seg[0] = {frame, cap};
    bufs[0] = asio::mutable_buffer(frame + kFrameHeaderSize, cap);
    planned = cap;
    count = 1;
    next_start = q.open_start + kMaxRecordSize;  // used only when this record fills up
  }
  while (planned < max && count < kMaxReadSegments) {
    uint8_t* frame = q.bytes.data() + next_start + kRecordHeaderSize;
    const size_t cap = std::min(max - planned, kMaxFramePayload);
    seg[count] = {frame, cap};
    bufs[count] = asio::mutable_buffer(frame + kFrameHeaderSize, cap);
    ++count;
    planned += cap;
    next_start += kMaxRecordSize;
  }
  const size_t n =
      s.socket.read_some(std::span<const asio::mutable_buffer>(bufs.data(), count), ec);
  // Commit the frames the read filled: all full but the last.
  size_t left = n;
  for (size_t i = 0; i < count && left > 0; ++i) {
    const size_t take = std::min(left, seg[i].cap);
    auto area = q.Room(kFrameHeaderSize + take);
    FrameWriter w(area);
    auto reserved = w.BeginData(s.id, take);
    if (area.data() != seg[i].frame || !reserved || reserved->size() != take) {
      // Cannot happen: the plan above mirrors RecordQueue's layout.
      Close(CloseReason::kInternal, "scatter read layout mismatch", false);
      ec = asio::error::fault;
      return 0;
    }
    w.CommitData(take);
    q.Commit(w.size());
    left -= take;
  }
  return n;
}

bool TunnelConnection::SealForWrite() {
  iov_.clear();
  size_t rekeys = 0;
  auto emit_rekey = [&]() -> bool {
    if (rekeys == rekey_records_.size() / kRecordOverhead) return false;  // cannot happen
    std::span<uint8_t> out(rekey_records_.data() + rekeys * kRecordOverhead, kRecordOverhead);
    auto r = sealer_.SealRekey(out);
    if (!r) return false;
    ++rekeys;
    iov_.emplace_back(out.data(), *r);
    last_rekey_ = std::chrono::steady_clock::now();
    TunnelLog()->debug("{}: rekeyed the send direction (generation {})", name_, sealer_.generation());
    return true;
  };
  auto seal_queue = [&](RecordQueue& q) -> bool {
    bool extend = false;  // the last iov_ entry ends where the next record of q starts
    for (const auto& rec : q.records) {
      if (sealer_.RekeyDue()) {
        if (!emit_rekey()) return false;
        extend = false;
      }
      std::span<uint8_t> out(q.bytes.data() + rec.start, rec.plain + kRecordOverhead);
      auto sealed = sealer_.Seal(out.subspan(kRecordHeaderSize, rec.plain), out);
      if (!sealed) {
        TunnelLog()->error("{}: cannot seal a record: {}", name_, sealed.error().message);
        return false;
      }
      if (extend) {
        iov_.back() = asio::const_buffer(iov_.back().data(), iov_.back().size() + *sealed);
      } else {
        iov_.emplace_back(out.data(), *sealed);
      }
      extend = true;
    }
    return true;
  };
  if (rekey_requested_) {
    rekey_requested_ = false;
    if (!emit_rekey()) return false;
  }
  return seal_queue(control_flight_) && seal_queue(data_flight_);
}

asio::awaitable<void> TunnelConnection::WriteLoop() {
  auto self = shared_from_this();
  auto idle = [this] { return data_.empty() && control_.empty() && !rekey_requested_; };
  for (;;) {
    while (idle() && !closing_) co_await WaitSignal(write_signal_);
    if (idle()) break;  // closing, everything flushed
    data_.Finish();
    control_.Finish();
    std::swap(data_, data_flight_);
    std::swap(control_, control_flight_);
    if (!SealForWrite()) {
      // Cannot happen (sizes are ours; rekey happens long before the hard limit).
      if (!closing_) Close(CloseReason::kInternal, "cannot seal records", false);
      break;
    }
    // The whole batch in one call to the transport (one gathered write on TCP).
    const std::span<const asio::const_buffer> batch(iov_.data(), iov_.size());
    const error_code ec = (co_await transport_->WriteAll(batch)).ec;
    data_flight_.Clear();
    control_flight_.Clear();
    if (ec) {
      if (!closing_) Close(CloseReason::kNormal, "write failed: " + ec.message(), false);
      break;
    }
    Notify(room_signal_);
  }
  FinishWriter();
}

void TunnelConnection::FinishWriter() {
  writer_done_ = true;
  transport_->Close(true);
  keepalive_timer_.cancel();
  // The packet handlers may hold what holds this tunnel. (Not in Close: a handler may be the
  // caller; the writer never runs inside one.)
  on_packet_ = nullptr;
  on_packet_setup_ = nullptr;
  on_room_ = nullptr;
  before_control_ = nullptr;
  if (!closed_notified_) {
    closed_notified_ = true;
    if (on_closed_) {
      auto cb = std::move(on_closed_);
      cb();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Read path

asio::awaitable<void> TunnelConnection::ReadLoop() {
  auto self = shared_from_this();
  size_t begin = 0;
  size_t end = 0;
  size_t last_read = 0;
  bool filled = false;  // the last read filled the buffer
  for (;;) {
    if (begin == end && last_read < kReleaseReadBelow && !rbuf_.empty()) {
      std::vector<uint8_t>().swap(rbuf_);  // light traffic: hold no buffer while waiting
    }
    if (rbuf_.empty()) {
      co_await transport_->WaitReadable();  // an error shows again in the read below
      if (closing_) co_return;
      rbuf_.resize(kInitialReadBuffer);
    } else if (filled && rbuf_.size() < kReadBufferSize) {
      rbuf_.resize(std::min(rbuf_.size() * 2, kReadBufferSize));  // the last read filled it
    }
    if (rbuf_.size() - end < kMaxRecordSize) {
      std::memmove(rbuf_.data(), rbuf_.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    const auto [ec, n] = co_await transport_->ReadSome(
        std::span<uint8_t>(rbuf_.data() + end, rbuf_.size() - end));
    if (closing_) co_return;
    if (ec) {
      Close(CloseReason::kNormal,
            ec == asio::error::eof ? "the peer closed the connection"
                                   : "read failed: " + ec.message(),
            false);
      co_return;
    }
    end += n;
    last_read = n;
    filled = end == rbuf_.size();
    last_rx_ = std::chrono::steady_clock::now();
    while (end > begin) {
      auto size = RecordSize(ByteSpan(rbuf_.data() + begin, end - begin));
      if (!size) {
        Close(CloseReason::kProtocolError, "bad record header: " + size.error().message, true);
        co_return;
      }
      if (*size == 0 || *size > end - begin) break;
      auto record = opener_.Open(std::span<uint8_t>(rbuf_.data() + begin, *size));
      if (!record) {
        Close(CloseReason::kProtocolError, "record rejected: " + record.error().message, true);
        co_return;
      }
      begin += *size;
      if (!record->rekey && !HandleRecord(record->plaintext)) co_return;
      if (closing_) co_return;
    }
    FlushDirect();  // before the read buffer is reused
    if (closing_) co_return;
    if (begin == end) begin = end = 0;
  }
}

bool TunnelConnection::HandleRecord(ByteSpan plaintext) {
  FrameReader reader(plaintext);
  uint64_t now = MonotonicMs();
  while (!reader.done()) {
    auto frame = reader.Next();
    if (!frame) {
      Close(CloseReason::kProtocolError, "bad frame: " + frame.error().message, true);
      return false;
    }
    auto action = table_.OnFrame(*frame, now);
    if (!action) {
      Close(action.error().code == MuxErrc::kFlowControl ? CloseReason::kFlowControl
                                                         : CloseReason::kProtocolError,
            std::string("stream rule broken: ") + MuxErrcName(action.error().code) + ": " +
                action.error().message,
            true);
      return false;
    }
    if (frame->type == FrameType::kData) CountData(frame->payload.size(), false);
    if (!HandleAction(*action) || closing_) return false;
  }
  return true;
}

bool TunnelConnection::HandleAction(const Action& a) {
  if (a.tunnel_credit != 0) GrantWindow(0, WindowUpdate{0, a.tunnel_credit, false}, false);
  using Kind = Action::Kind;
  switch (a.kind) {
    case Kind::kNone:
      break;
    case Kind::kOpenRequested: {
      auto s = std::make_shared<Stream>(ex_, a.stream_id);
      streams_[a.stream_id] = s;
      if (!peer_opened_) {  // the first stream: the peer's upload credit starts now
        peer_opened_ = true;
        ReleaseTunnelCredit();
      }
      if (on_open_) {
        on_open_(a.stream_id, a.destination);
      } else {
        RefuseStream(a.stream_id, OpenFailure::kGeneral);
      }
      break;
    }
    case Kind::kRefuseOpen:
      AppendFrame(true, kFrameHeaderSize + 1,
                  [&](FrameWriter& w) { return w.OpenFail(a.stream_id, a.failure); });
      break;
    case Kind::kOpened:
    case Kind::kOpenFailed: {
      auto s = FindStream(a.stream_id);
      if (a.kind == Kind::kOpenFailed) streams_.erase(a.stream_id);
      if (s) {
        s->open_done = true;
        Notify(s->open_signal);
        if (a.kind == Kind::kOpenFailed) {
          s->open_failure = a.failure;
          if (s->pumping) {
            // An early stream (OpenStreamEarly): its data is lost; reset the local socket.
            AbortLocalSocket(*s);
            KillStream(s);
          }
        } else {
          Notify(s->tx_signal);  // an early stream's uplink waits for the full windows
        }
      }
      break;
    }
    case Kind::kData: {
      auto s = FindStream(a.stream_id);
      if (!s || s->dead) {
        auto u = table_.Consumed(a.stream_id, a.data.size());
        if (u) GrantWindow(a.stream_id, *u, false);
        break;
      }
      if (s->pumping && s->rx.empty() && s->rx_writing.empty() && !limiter_) {
        // Nothing queued before it: written from the read buffer at the end of the batch.
        if (s->direct.empty()) direct_streams_.push_back(s);
        s->direct.emplace_back(a.data.data(), a.data.size());
        break;
      }
      s->rx.insert(s->rx.end(), a.data.begin(), a.data.end());
      Notify(s->rx_signal);
      break;
    }
    case Kind::kWindow:
      if (a.stream_id == 0) {
        Notify(room_signal_);
      } else if (auto s = FindStream(a.stream_id)) {
        Notify(s->tx_signal);
      }
      break;
    case Kind::kRemoteFin: {
      auto s = FindStream(a.stream_id);
      if (a.stream_removed) streams_.erase(a.stream_id);
      if (s) {
        s->remote_fin = true;
        Notify(s->rx_signal);
      }
      break;
    }
    case Kind::kReset:
      if (auto s = FindStream(a.stream_id)) KillStream(s);
      break;
    case Kind::kPing:
      AppendFrame(true, kPingFrameSize, [&](FrameWriter& w) { return w.Pong(a.ping_value); });
      break;
    case Kind::kPong:
      break;
    case Kind::kControl:
      if (before_control_) before_control_();
      if (on_control_) {
        auto handler = on_control_;  // the handler may replace itself
        handler(a.data);
      } else {
        TunnelLog()->debug("{}: control message of {} bytes ignored", name_, a.data.size());
      }
      break;
    case Kind::kPacketSetup:
      AnswerPacketSetup(a.packet_setup);
      break;
    case Kind::kPacketReady:
    case Kind::kPacketFailed: {
      auto answer = std::exchange(on_packet_answer_, nullptr);
      if (!answer) break;
      if (a.kind == Kind::kPacketReady) {
        answer(a.packet_ready);
      } else {
        std::string text(a.data.begin(), a.data.end());
        answer(Fail(a.packet_failure, std::move(text)));
      }
      break;
    }
    case Kind::kPacket:
      if (on_packet_) on_packet_(a.data);
      break;
    case Kind::kClose: {
      std::string text(a.data.begin(), a.data.end());
      Close(a.close_reason,
            "the peer closed the tunnel (reason " +
                std::to_string(static_cast<int>(a.close_reason)) + ": " + text + ")",
            false);
      return false;
    }
  }
  return true;
}

void TunnelConnection::FlushDirect() {
  for (auto& s : direct_streams_) {
    if (s->dead || closing_) {
      s->direct.clear();
      continue;
    }
    size_t total = 0;
    for (const auto& b : s->direct) total += b.size();
    // One gathered, non-blocking write; whatever the socket does not take now is copied to rx
    // and left to the downlink.
    error_code ec;
    size_t n = 0;
    while (n < total && !ec) {
      size_t skip = n;
      size_t first = 0;
      while (skip >= s->direct[first].size()) skip -= s->direct[first++].size();
      std::array<asio::const_buffer, 64> bufs;
      size_t count = 0;
      for (size_t i = first; i < s->direct.size() && count < bufs.size(); ++i, ++count) {
        bufs[count] = s->direct[i] + (i == first ? skip : 0);
      }
      size_t w = s->socket.write_some(std::span<const asio::const_buffer>(bufs.data(), count), ec);
      if (w == 0) break;
      n += w;
    }
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      s->direct.clear();
      ResetStream(s, role_ == Role::kExit ? ResetCode::kConnectionLost : ResetCode::kCancel);
      continue;
    }
    if (n < total) {
      size_t skip = n;
      for (const auto& b : s->direct) {
        if (skip >= b.size()) {
          skip -= b.size();
          continue;
        }
        auto p = static_cast<const uint8_t*>(b.data());
        s->rx.insert(s->rx.end(), p + skip, p + b.size());
        skip = 0;
      }
      Notify(s->rx_signal);
    }
    s->direct.clear();
    if (n > 0) {
      auto u = table_.Consumed(s->id, n);
      if (u) {
        GrantWindow(s->id, *u, !u->stream_removed);
        if (u->stream_removed) streams_.erase(s->id);
      }
    }
  }
  direct_streams_.clear();
}

// ---------------------------------------------------------------------------------------------
// Keepalive

asio::awaitable<void> TunnelConnection::KeepaliveLoop() {
  auto self = shared_from_this();
  uint64_t ping = 0;
  while (!closing_) {
    keepalive_timer_.expires_after(options_.keepalive_interval);
    error_code ec;
    co_await keepalive_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (closing_) co_return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_rx_ > options_.idle_timeout) {
      Close(CloseReason::kIdleTimeout, "idle timeout", true);
      co_return;
    }
    if (now - last_rekey_ > std::chrono::seconds(kRekeyAfterSeconds)) {
      last_rekey_ = now;
      rekey_requested_ = true;
      Notify(write_signal_);
    }
    AppendFrame(true, kPingFrameSize, [&](FrameWriter& w) { return w.Ping(++ping); });
  }
}

// ---------------------------------------------------------------------------------------------
// Packet mode

void TunnelConnection::SetPacketSetupHandler(PacketSetupHandler handler) {
  on_packet_setup_ = std::move(handler);
}

void TunnelConnection::SetPacketHandler(PacketHandler handler) { on_packet_ = std::move(handler); }

void TunnelConnection::AnswerPacketSetup(const PacketSetupFields& setup) {
  Result<PacketReadyFields, PacketFailure> answer =
      Fail(PacketFailure::kNotServed, "packet mode not served");
  if (on_packet_setup_) answer = on_packet_setup_(setup);
  if (answer) {
    // Checked before the table moves to ready: a READY that would not encode becomes a FAIL.
    std::array<uint8_t, kFrameHeaderSize + kPacketReadySize> probe{};
    FrameWriter w(probe);
    if (!w.PacketReady(*answer)) {
      TunnelLog()->error("{}: packet mode answer out of range; refused", name_);
      answer = Fail(PacketFailure::kRefused, "internal error");
    }
  }
  if (!table_.AnswerPacketSetup(answer.has_value())) return;  // cannot fail: a setup is pending
  if (answer) {
    const PacketReadyFields ready = *answer;
    AppendFrame(true, kFrameHeaderSize + kPacketReadySize,
                [&](FrameWriter& w) { return w.PacketReady(ready); });
    return;
  }
  std::string_view text = answer.error().message;
  if (text.size() > kMaxCloseText) text = text.substr(0, kMaxCloseText);
  const PacketFailure failure = answer.error().code;
  AppendFrame(true, kFrameHeaderSize + 1 + text.size(),
              [&](FrameWriter& w) { return w.PacketFail(failure, text); });
}

bool TunnelConnection::RequestPacketMode(const PacketSetupFields& setup,
                                         PacketAnswerHandler on_answer) {
  if (closing_) return false;
  std::array<uint8_t, kFrameHeaderSize + kPacketSetupSize> probe{};
  FrameWriter w(probe);
  if (!w.PacketSetup(setup)) return false;
  if (!table_.StartPacketSetup(setup)) return false;
  on_packet_answer_ = std::move(on_answer);
  return AppendFrame(true, kFrameHeaderSize + kPacketSetupSize,
                     [&](FrameWriter& fw) { return fw.PacketSetup(setup); });
}

bool TunnelConnection::SendPacketFrame(ByteSpan packet) {
  if (closing_ || !table_.PacketModeReady() || packet.empty() || packet.size() > kMaxFramePayload ||
      !CanQueueData()) {
    return false;
  }
  return AppendFrame(false, kFrameHeaderSize + packet.size(),
                     [&](FrameWriter& w) { return w.Packet(packet); });
}

bool TunnelConnection::MayForwardPacket(size_t n) {
  if (closing_ || paused_) return false;
  if (limited_ && ForwardBudget() < n) {
    ReportBlocked();
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Close

void TunnelConnection::Close(CloseReason reason, const std::string& why, bool send_close) {
  if (closing_) return;
  // Things a remote peer can trigger are logged at debug level; our own failures at warn.
  if (reason == CloseReason::kInternal) {
    TunnelLog()->warn("{}: tunnel closed: {}", name_, why);
  } else {
    TunnelLog()->debug("{}: tunnel closed: {}", name_, why);
  }
  if (send_close && !writer_done_) {
    std::string_view text = why;
    if (text.size() > kMaxCloseText) text = text.substr(0, kMaxCloseText);
    AppendFrame(false, kFrameHeaderSize + 1 + text.size(),
                [&](FrameWriter& w) { return w.Close(reason, text); });
  }
  closing_ = true;
  if (auto answer = std::exchange(on_packet_answer_, nullptr)) {
    asio::post(ex_, [answer = std::move(answer)] {
      answer(Fail(PacketFailure::kRefused, "tunnel closed"));
    });
  }
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) KillStream(s);
  Notify(write_signal_);
  Notify(room_signal_);
  Notify(resume_signal_);
  keepalive_timer_.cancel();
  if (!send_close) {
    // Nothing more to say: stop reading now (the writer closes the socket after its flush).
    transport_->ShutdownReceive();
  }
  // Bound the final flush: a peer that does not read cannot hold the tunnel open.
  auto timer = std::make_shared<asio::steady_timer>(ex_);
  timer->expires_after(std::chrono::seconds(2));
  timer->async_wait([self = shared_from_this(), timer](error_code ec) {
    if (!ec || !self->writer_done_) {
      self->transport_->Close(false);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Streams

TunnelConnection::StreamPtr TunnelConnection::FindStream(uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second;
}

void TunnelConnection::KillStream(const StreamPtr& s) {
  s->dead = true;
  s->direct.clear();
  error_code ignored;
  s->socket.close(ignored);
  Notify(s->rx_signal);
  Notify(s->tx_signal);
  Notify(s->open_signal);
  if (s->limit) {
    s->limit->uplink.cancel();
    s->limit->downlink.cancel();
  }
  if (paused_ || limited_) Notify(resume_signal_);  // its uplink may wait for the resume: let it end
  streams_.erase(s->id);
}

void TunnelConnection::ResetStream(const StreamPtr& s, ResetCode code) {
  if (s->dead) return;
  auto u = table_.Reset(s->id);
  if (u && !closing_) {
    AppendFrame(false, kFrameHeaderSize + 1, [&](FrameWriter& w) { return w.Reset(s->id, code); });
    GrantWindow(s->id, *u, false);
  }
  KillStream(s);
}

void TunnelConnection::CancelStream(uint32_t id) {
  if (auto s = FindStream(id)) ResetStream(s, ResetCode::kCancel);
}

Result<TunnelConnection::StreamPtr, OpenFailure> TunnelConnection::BeginOpen(
    const Destination& destination) {
  if (closing_) return Fail(OpenFailure::kGeneral, "the tunnel is closed");
  auto id = table_.Open();
  if (!id) return Fail(OpenFailure::kGeneral, "cannot open a stream: " + id.error().message);
  auto s = std::make_shared<Stream>(ex_, *id);
  streams_[*id] = s;
  bool encoded = true;
  AppendFrame(true, kFrameHeaderSize + EncodedDestinationSize(destination), [&](FrameWriter& w) {
    auto r = w.Open(*id, destination);
    if (!r) encoded = false;
    return r;
  });
  if (!encoded) {
    ResetStream(s, ResetCode::kInternal);
    return Fail(OpenFailure::kGeneral, "cannot encode the destination");
  }
  return s;
}

asio::awaitable<Result<uint32_t, OpenFailure>> TunnelConnection::AwaitOpen(StreamPtr s) {
  auto self = shared_from_this();
  auto deadline = asio::steady_timer::clock_type::now() + options_.open_timeout;
  while (!s->open_done && !s->dead) {
    bool expired = co_await WaitSignal(s->open_signal, deadline);
    if (expired && !s->open_done && !s->dead) {
      if (s->pumping) AbortLocalSocket(*s);  // early stream: the SOCKS client sees a reset
      ResetStream(s, ResetCode::kTimeout);
      co_return Fail(OpenFailure::kTtlExpired, "the exit did not answer in time");
    }
  }
  if (s->open_failure) {
    co_return Fail(*s->open_failure,
                   std::string("the exit refused: ") + OpenFailureName(*s->open_failure));
  }
  if (s->dead) co_return Fail(OpenFailure::kGeneral, "the tunnel closed");
  co_return s->id;
}

asio::awaitable<Result<uint32_t, OpenFailure>> TunnelConnection::OpenStream(
    Destination destination) {
  auto self = shared_from_this();
  auto s = BeginOpen(destination);
  if (!s) co_return std::unexpected(std::move(s.error()));
  co_return co_await AwaitOpen(*s);
}

Result<uint32_t, OpenFailure> TunnelConnection::OpenStreamEarly(const Destination& destination) {
  auto s = BeginOpen(destination);
  if (!s) return std::unexpected(std::move(s.error()));
  // Enforce open_timeout in the background; the outcome reaches the local socket (a reset on
  // failure) once it is attached.
  asio::co_spawn(
      ex_,
      [self = shared_from_this(), st = *s]() -> asio::awaitable<void> {
        auto r = co_await self->AwaitOpen(st);
        if (!r) {
          TunnelLog()->debug("{}: early stream {} failed: {}", self->name_, st->id, r.error().message);
        }
      },
      TaskDone("early open"));
  return (*s)->id;
}

void TunnelConnection::AbortLocalSocket(Stream& s) {
  // SO_LINGER 0: close() sends RST, so the application sees a reset rather than an orderly EOF.
  error_code ignored;
  if (s.socket.is_open()) s.socket.set_option(asio::socket_base::linger(true, 0), ignored);
}

void TunnelConnection::AttachStream(uint32_t id, tcp::socket socket, ByteSpan early) {
  auto s = FindStream(id);
  if (!s || s->dead) {
    // Reset, refused (an early stream) or the tunnel closed: the application sees a reset.
    error_code ignored;
    socket.set_option(asio::socket_base::linger(true, 0), ignored);
    socket.close(ignored);
    return;
  }
  s->socket = std::move(socket);
  error_code ignored;
  s->socket.set_option(tcp::no_delay(true), ignored);
  s->socket.non_blocking(true, ignored);
  if (!early.empty()) {
    if (table_.CanSend(id) < early.size()) {
      ResetStream(s, ResetCode::kInternal);
      return;
    }
    AppendData(id, early);
    (void)table_.Sent(id, early.size());
    CountData(early.size(), true);
  }
  StartPumps(s);
}

bool TunnelConnection::AcceptStream(uint32_t id, tcp::socket socket) {
  auto s = FindStream(id);
  if (closing_ || !s || s->dead || !table_.Accept(id)) {
    if (s && !s->dead) ResetStream(s, ResetCode::kInternal);
    return false;
  }
  AppendFrame(true, kFrameHeaderSize, [&](FrameWriter& w) { return w.OpenOk(id); });
  s->socket = std::move(socket);
  error_code ignored;
  s->socket.set_option(tcp::no_delay(true), ignored);
  s->socket.non_blocking(true, ignored);
  StartPumps(s);
  return true;
}

void TunnelConnection::RefuseStream(uint32_t id, OpenFailure failure) {
  streams_.erase(id);  // drops early data it buffered
  if (closing_) return;
  auto u = table_.Refuse(id);
  if (!u) return;
  AppendFrame(true, kFrameHeaderSize + 1, [&](FrameWriter& w) { return w.OpenFail(id, failure); });
  GrantWindow(id, *u, false);
}

void TunnelConnection::StartPumps(const StreamPtr& s) {
  s->pumping = true;
  auto self = shared_from_this();
  auto ex = ex_;
  if (limiter_ && !s->limit) s->limit = std::make_unique<Stream::LimitTimers>(ex);
  asio::co_spawn(ex, [self, s]() { return self->Uplink(s); }, TaskDone("uplink"));
  asio::co_spawn(ex, [self, s]() { return self->Downlink(s); }, TaskDone("downlink"));
}

asio::awaitable<void> TunnelConnection::Uplink(StreamPtr s) {
  // Waits until the local socket is readable, then reads straight into DATA frames of the data
  // queue (zero copy, no per-stream send buffer; one scatter read fills up to 16 records). The
  // window and the write buffer are checked in the same step as the read, so concurrent uplinks
  // can never oversubscribe the peer's windows, and the data queue holds at most
  // write_buffer_limit + one read of data.
  for (;;) {
    if (s->dead || closing_ || !table_.state(s->id)) co_return;
    if (paused_ || ForwardBudget() == 0) {
      if (!paused_) ReportBlocked();
      co_await WaitSignal(resume_signal_);
      continue;
    }
    size_t can = table_.CanSend(s->id);
    if (can == 0 || !CanQueueData()) {
      // Back-pressure: the local socket is not read while the stream cannot send.
      if (can == 0 && table_.tunnel_send_window() > 0) {
        co_await WaitSignal(s->tx_signal);
      } else {
        co_await WaitSignal(room_signal_);
      }
      continue;
    }
    error_code ec;
    co_await s->socket.async_wait(tcp::socket::wait_read,
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (s->dead || closing_) co_return;
    // Bytes this wake-up may read: kStreamChunk, or what the bandwidth limiter grants.
    size_t budget = kStreamChunk;
    if (limiter_ && !ec) {
      can = table_.CanSend(s->id);
      if (can == 0 || !CanQueueData() || paused_) continue;  // wait at the top of the loop
      // (Computed before the co_await: g++ 12 cannot keep an initializer_list across it.)
      const size_t want = std::min({can, kStreamChunk, options_.write_buffer_limit - data_.used});
      budget = co_await limiter_->Acquire(want, s->limit->uplink);
      if (s->dead || closing_) {
        limiter_->Refund(budget);
        co_return;
      }
      if (budget == 0) continue;
    }
    // Read what is there (up to the budget per wake-up) while windows and room allow.
    size_t total = 0;
    while (!ec && total < budget && !paused_) {
      can = table_.CanSend(s->id);
      const uint64_t left = ForwardBudget();
      if (can == 0 || !CanQueueData() || left == 0) break;
      const size_t max = std::min({can, budget - total, options_.write_buffer_limit - data_.used,
                                   static_cast<size_t>(std::min<uint64_t>(left, SIZE_MAX))});
      const size_t n = ReadIntoRecords(*s, max, ec);
      if (n == 0) break;
      (void)table_.Sent(s->id, n);
      CountData(n, true);
      total += n;
      Notify(write_signal_);
      if (n < max) break;  // drained for now
    }
    if (limiter_ && total < budget) limiter_->Refund(budget - total);
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec == asio::error::eof) {
      // An early stream may not send FIN before OPEN_OK: wait for the answer.
      while (!s->dead && !closing_ && table_.state(s->id) == StreamState::kOpening) {
        co_await WaitSignal(s->tx_signal);
      }
      if (s->dead || closing_) co_return;
      auto removed = table_.Fin(s->id);
      if (removed) {
        AppendFrame(false, kFrameHeaderSize, [&](FrameWriter& w) { return w.Fin(s->id); });
        if (*removed) streams_.erase(s->id);
      }
      co_return;
    }
    if (ec) {
      ResetStream(s, role_ == Role::kExit ? ResetCode::kConnectionLost : ResetCode::kCancel);
      co_return;
    }
  }
}

asio::awaitable<void> TunnelConnection::Downlink(StreamPtr s) {
  for (;;) {
    if (s->dead || closing_) co_return;
    if (!s->rx.empty() && limiter_) {
      // Limited: the buffer is written in the pieces the limiter grants; WINDOW credit goes
      // back after each piece, so the peer's sending follows the limited rate.
      std::swap(s->rx, s->rx_writing);
      size_t done = 0;
      while (done < s->rx_writing.size()) {
        const size_t grant =
            co_await limiter_->Acquire(s->rx_writing.size() - done, s->limit->downlink);
        if (s->dead || closing_) {
          limiter_->Refund(grant);
          co_return;
        }
        if (grant == 0) continue;
        error_code ec;
        co_await asio::async_write(s->socket, asio::buffer(s->rx_writing.data() + done, grant),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (s->dead || closing_) co_return;
        if (ec) {
          ResetStream(s, role_ == Role::kExit ? ResetCode::kConnectionLost : ResetCode::kCancel);
          co_return;
        }
        done += grant;
        auto u = table_.Consumed(s->id, grant);
        if (u) {
          GrantWindow(s->id, *u, !u->stream_removed);
          if (u->stream_removed) streams_.erase(s->id);
        }
      }
      s->rx_writing.clear();
      continue;
    }
    if (!s->rx.empty()) {
      std::swap(s->rx, s->rx_writing);
      error_code ec;
      co_await asio::async_write(s->socket, asio::buffer(s->rx_writing),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (s->dead || closing_) co_return;
      if (ec) {
        ResetStream(s, role_ == Role::kExit ? ResetCode::kConnectionLost : ResetCode::kCancel);
        co_return;
      }
      size_t n = s->rx_writing.size();
      s->rx_writing.clear();
      auto u = table_.Consumed(s->id, n);
      if (u) {
        GrantWindow(s->id, *u, !u->stream_removed);
        if (u->stream_removed) streams_.erase(s->id);
      }
      continue;
    }
    if (s->remote_fin) {
      error_code ignored;
      s->socket.shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    co_await WaitSignal(s->rx_signal);
  }
}

}  // namespace dvpn::tunnel::session
