#include "tunnel/session/tunnel_connection.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "common/log.h"

namespace dvpn::tunnel::session {
namespace {

constexpr size_t kReadBufferSize = 256 * 1024;
// Control frames may exceed the write buffer limit by this much before the tunnel is closed.
constexpr size_t kWriteBufferSlack = 1024 * 1024;
// Most bytes read from one local socket per readiness wake-up (fairness between streams).
constexpr size_t kStreamChunk = 4 * kMaxFramePayload;

std::shared_ptr<spdlog::logger> Log() {
  static auto log = Logger("tunnel");
  return log;
}

}  // namespace

struct TunnelConnection::Stream {
  Stream(const asio::any_io_executor& ex, uint32_t stream_id)
      : id(stream_id), socket(ex), rx_signal(ex), tx_signal(ex), open_signal(ex) {}
  uint32_t id;
  tcp::socket socket;
  std::vector<uint8_t> rx;          // tunnel -> local, not yet written
  std::vector<uint8_t> rx_writing;  // being written to the local socket
  bool remote_fin = false;
  bool dead = false;  // reset or tunnel gone: pumps stop
  bool open_done = false;
  std::optional<OpenFailure> open_failure;
  asio::steady_timer rx_signal;
  asio::steady_timer tx_signal;
  asio::steady_timer open_signal;
};

TunnelConnection::TunnelConnection(tcp::socket socket, const SessionKeys& keys, Role role,
                                   ConnectionOptions options, std::string name)
    : socket_(std::move(socket)),
      role_(role),
      options_(options),
      name_(std::move(name)),
      sealer_(keys),
      opener_(keys),
      table_(role, options.table),
      write_signal_(socket_.get_executor()),
      room_signal_(socket_.get_executor()),
      keepalive_timer_(socket_.get_executor()) {
  rbuf_.resize(kReadBufferSize);
  wbuf_.resize(options_.write_buffer_limit + 4 * kMaxRecordSize);
  wbuf_flight_.resize(wbuf_.size());
  last_rx_ = last_rekey_ = std::chrono::steady_clock::now();
  error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
}

TunnelConnection::~TunnelConnection() = default;

uint64_t TunnelConnection::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void TunnelConnection::Start(OpenHandler on_open, ClosedHandler on_closed) {
  on_open_ = std::move(on_open);
  on_closed_ = std::move(on_closed);
  auto self = shared_from_this();
  auto ex = socket_.get_executor();
  asio::co_spawn(
      ex, [self]() { return self->ReadLoop(); }, asio::detached);
  asio::co_spawn(
      ex, [self]() { return self->WriteLoop(); }, asio::detached);
  asio::co_spawn(
      ex, [self]() { return self->KeepaliveLoop(); }, asio::detached);
}

// ---------------------------------------------------------------------------------------------
// Write path

void TunnelConnection::StartRecord() {
  if (wbuf_.size() < wused_ + kMaxRecordSize) wbuf_.resize(wused_ + 4 * kMaxRecordSize);
  rec_start_ = wused_;
  rec_plain_ = 0;
  rec_open_ = true;
  wused_ += kRecordHeaderSize;
}

void TunnelConnection::SealRecord() {
  if (!rec_open_) return;
  rec_open_ = false;
  if (rec_plain_ == 0) {
    wused_ = rec_start_;
    return;
  }
  std::span<uint8_t> out(wbuf_.data() + rec_start_, kMaxRecordSize);
  auto sealed = sealer_.Seal(out.subspan(kRecordHeaderSize, rec_plain_), out);
  if (!sealed) {
    // Cannot happen (sizes are ours; rekey happens long before the hard limit).
    Log()->error("{}: cannot seal a record: {}", name_, sealed.error().message);
    wused_ = rec_start_;
    Close(CloseReason::kInternal, "seal failed", false);
    return;
  }
  wused_ = rec_start_ + *sealed;
  if (sealer_.RekeyDue()) SealRekey();
}

void TunnelConnection::SealRekey() {
  SealRecord();
  if (wbuf_.size() < wused_ + kRecordOverhead) wbuf_.resize(wused_ + 4 * kMaxRecordSize);
  auto r = sealer_.SealRekey(std::span<uint8_t>(wbuf_.data() + wused_, kRecordOverhead));
  if (r) {
    wused_ += *r;
    last_rekey_ = std::chrono::steady_clock::now();
    Log()->debug("{}: rekeyed the send direction (generation {})", name_, sealer_.generation());
  }
  Notify(write_signal_);
}

template <class Fn>
void TunnelConnection::AppendFrame(size_t frame_size, Fn&& fn) {
  if (closing_ && writer_done_) return;
  if (wused_ + frame_size > options_.write_buffer_limit + kWriteBufferSlack) {
    // Only control frames get here (data waits for room): a peer that provokes them without
    // reading our answers must not grow our memory.
    if (!closing_)
      Close(CloseReason::kFlowControl, "the peer does not read (write buffer full)", false);
    return;
  }
  if (rec_open_ && kMaxRecordPlaintext - rec_plain_ < frame_size) SealRecord();
  if (!rec_open_) StartRecord();
  FrameWriter w(std::span<uint8_t>(wbuf_.data() + rec_start_ + kRecordHeaderSize + rec_plain_,
                                   kMaxRecordPlaintext - rec_plain_));
  auto r = fn(w);
  if (!r) {
    Log()->error("{}: cannot encode a frame: {}", name_, r.error().message);
    return;
  }
  rec_plain_ += w.size();
  wused_ += w.size();
  Notify(write_signal_);
}

void TunnelConnection::AppendData(uint32_t id, ByteSpan data) {
  while (!data.empty()) {
    if (rec_open_ && kMaxRecordPlaintext - rec_plain_ < kFrameHeaderSize + 1) SealRecord();
    if (!rec_open_) StartRecord();
    size_t room = kMaxRecordPlaintext - rec_plain_ - kFrameHeaderSize;
    size_t n = std::min({room, data.size(), kMaxFramePayload});
    AppendFrame(kFrameHeaderSize + n, [&](FrameWriter& w) { return w.Data(id, data.first(n)); });
    data = data.subspan(n);
  }
}

void TunnelConnection::AppendWindow(uint32_t id, const WindowUpdate& update, bool stream_too) {
  if (stream_too && update.stream_increment != 0) {
    AppendFrame(kWindowFrameSize,
                [&](FrameWriter& w) { return w.Window(id, update.stream_increment); });
  }
  if (update.tunnel_increment != 0) {
    AppendFrame(kWindowFrameSize,
                [&](FrameWriter& w) { return w.Window(0, update.tunnel_increment); });
  }
}

asio::awaitable<void> TunnelConnection::WriteLoop() {
  auto self = shared_from_this();
  for (;;) {
    while (wused_ == 0 && !closing_) co_await WaitSignal(write_signal_);
    if (wused_ == 0) break;  // closing, everything flushed
    SealRecord();
    std::swap(wbuf_, wbuf_flight_);
    size_t n = wused_;
    wused_ = 0;
    error_code ec;
    co_await asio::async_write(socket_, asio::buffer(wbuf_flight_.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!closing_) Close(CloseReason::kNormal, "write failed: " + ec.message(), false);
      break;
    }
    Notify(room_signal_);
  }
  writer_done_ = true;
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  keepalive_timer_.cancel();
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
  for (;;) {
    if (rbuf_.size() - end < kMaxRecordSize) {
      std::memmove(rbuf_.data(), rbuf_.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    error_code ec;
    size_t n =
        co_await socket_.async_read_some(asio::buffer(rbuf_.data() + end, rbuf_.size() - end),
                                         asio::redirect_error(asio::use_awaitable, ec));
    if (closing_) co_return;
    if (ec) {
      Close(CloseReason::kNormal,
            ec == asio::error::eof ? "the peer closed the connection"
                                   : "read failed: " + ec.message(),
            false);
      co_return;
    }
    end += n;
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
    if (begin == end) begin = end = 0;
  }
}

bool TunnelConnection::HandleRecord(ByteSpan plaintext) {
  FrameReader reader(plaintext);
  uint64_t now = NowMs();
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
    if (!HandleAction(*action)) return false;
  }
  return true;
}

bool TunnelConnection::HandleAction(const Action& a) {
  if (a.tunnel_credit != 0) {
    AppendFrame(kWindowFrameSize, [&](FrameWriter& w) { return w.Window(0, a.tunnel_credit); });
  }
  using Kind = Action::Kind;
  switch (a.kind) {
    case Kind::kNone:
      break;
    case Kind::kOpenRequested: {
      auto s = std::make_shared<Stream>(socket_.get_executor(), a.stream_id);
      streams_[a.stream_id] = s;
      if (on_open_) {
        on_open_(a.stream_id, a.destination);
      } else {
        RefuseStream(a.stream_id, OpenFailure::kGeneral);
      }
      break;
    }
    case Kind::kRefuseOpen:
      AppendFrame(kFrameHeaderSize + 1,
                  [&](FrameWriter& w) { return w.OpenFail(a.stream_id, a.failure); });
      break;
    case Kind::kOpened:
    case Kind::kOpenFailed: {
      auto s = FindStream(a.stream_id);
      if (a.kind == Kind::kOpenFailed) streams_.erase(a.stream_id);
      if (s) {
        s->open_done = true;
        if (a.kind == Kind::kOpenFailed) s->open_failure = a.failure;
        Notify(s->open_signal);
      }
      break;
    }
    case Kind::kData: {
      auto s = FindStream(a.stream_id);
      if (!s || s->dead) {
        auto u = table_.Consumed(a.stream_id, a.data.size());
        if (u) AppendWindow(a.stream_id, *u, false);
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
      AppendFrame(kPingFrameSize, [&](FrameWriter& w) { return w.Pong(a.ping_value); });
      break;
    case Kind::kPong:
      break;
    case Kind::kControl:
      Log()->debug("{}: control message of {} bytes ignored", name_, a.data.size());
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
    if (now - last_rekey_ > std::chrono::seconds(kRekeyAfterSeconds)) SealRekey();
    AppendFrame(kPingFrameSize, [&](FrameWriter& w) { return w.Ping(++ping); });
  }
}

// ---------------------------------------------------------------------------------------------
// Close

void TunnelConnection::Close(CloseReason reason, const std::string& why, bool send_close) {
  if (closing_) return;
  // Things a remote peer can trigger are logged at debug level; our own failures at warn.
  if (reason == CloseReason::kInternal) {
    Log()->warn("{}: tunnel closed: {}", name_, why);
  } else {
    Log()->debug("{}: tunnel closed: {}", name_, why);
  }
  if (send_close && !writer_done_) {
    std::string_view text = why;
    if (text.size() > kMaxCloseText) text = text.substr(0, kMaxCloseText);
    AppendFrame(kFrameHeaderSize + 1 + text.size(),
                [&](FrameWriter& w) { return w.Close(reason, text); });
  }
  closing_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) KillStream(s);
  Notify(write_signal_);
  Notify(room_signal_);
  keepalive_timer_.cancel();
  if (!send_close) {
    // Nothing more to say: stop reading now (the writer closes the socket after its flush).
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_receive, ignored);
  }
  // Bound the final flush: a peer that does not read cannot hold the tunnel open.
  auto timer = std::make_shared<asio::steady_timer>(socket_.get_executor());
  timer->expires_after(std::chrono::seconds(2));
  timer->async_wait([self = shared_from_this(), timer](error_code ec) {
    if (!ec || !self->writer_done_) {
      error_code ignored;
      self->socket_.close(ignored);
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
  error_code ignored;
  s->socket.close(ignored);
  Notify(s->rx_signal);
  Notify(s->tx_signal);
  Notify(s->open_signal);
  streams_.erase(s->id);
}

void TunnelConnection::ResetStream(const StreamPtr& s, ResetCode code) {
  if (s->dead) return;
  auto u = table_.Reset(s->id);
  if (u && !closing_) {
    AppendFrame(kFrameHeaderSize + 1, [&](FrameWriter& w) { return w.Reset(s->id, code); });
    AppendWindow(s->id, *u, false);
  }
  KillStream(s);
}

void TunnelConnection::CancelStream(uint32_t id) {
  if (auto s = FindStream(id)) ResetStream(s, ResetCode::kCancel);
}

asio::awaitable<Result<uint32_t, OpenFailure>> TunnelConnection::OpenStream(
    const Destination& destination) {
  auto self = shared_from_this();
  if (closing_) co_return Fail(OpenFailure::kGeneral, "the tunnel is closed");
  auto id = table_.Open();
  if (!id) co_return Fail(OpenFailure::kGeneral, "cannot open a stream: " + id.error().message);
  auto s = std::make_shared<Stream>(socket_.get_executor(), *id);
  streams_[*id] = s;
  bool encoded = true;
  AppendFrame(kFrameHeaderSize + EncodedDestinationSize(destination), [&](FrameWriter& w) {
    auto r = w.Open(*id, destination);
    if (!r) encoded = false;
    return r;
  });
  if (!encoded) {
    ResetStream(s, ResetCode::kInternal);
    co_return Fail(OpenFailure::kGeneral, "cannot encode the destination");
  }
  auto deadline = asio::steady_timer::clock_type::now() + options_.open_timeout;
  while (!s->open_done && !s->dead) {
    bool expired = co_await WaitSignal(s->open_signal, deadline);
    if (expired && !s->open_done) {
      ResetStream(s, ResetCode::kTimeout);
      co_return Fail(OpenFailure::kTtlExpired, "the exit did not answer in time");
    }
  }
  if (s->open_failure) {
    co_return Fail(*s->open_failure,
                   std::string("the exit refused: ") + OpenFailureName(*s->open_failure));
  }
  if (s->dead) co_return Fail(OpenFailure::kGeneral, "the tunnel closed");
  co_return *id;
}

void TunnelConnection::AttachStream(uint32_t id, tcp::socket socket, ByteSpan early) {
  auto s = FindStream(id);
  if (!s || s->dead) {
    error_code ignored;
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
  }
  StartPumps(s);
}

bool TunnelConnection::AcceptStream(uint32_t id, tcp::socket socket) {
  auto s = FindStream(id);
  if (closing_ || !s || s->dead || !table_.Accept(id)) {
    if (s && !s->dead) ResetStream(s, ResetCode::kInternal);
    return false;
  }
  AppendFrame(kFrameHeaderSize, [&](FrameWriter& w) { return w.OpenOk(id); });
  s->socket = std::move(socket);
  error_code ignored;
  s->socket.set_option(tcp::no_delay(true), ignored);
  s->socket.non_blocking(true, ignored);
  StartPumps(s);
  return true;
}

void TunnelConnection::RefuseStream(uint32_t id, OpenFailure failure) {
  streams_.erase(id);
  if (closing_ || !table_.Refuse(id)) return;
  AppendFrame(kFrameHeaderSize + 1, [&](FrameWriter& w) { return w.OpenFail(id, failure); });
}

void TunnelConnection::StartPumps(const StreamPtr& s) {
  auto self = shared_from_this();
  auto ex = socket_.get_executor();
  asio::co_spawn(
      ex, [self, s]() { return self->Uplink(s); }, asio::detached);
  asio::co_spawn(
      ex, [self, s]() { return self->Downlink(s); }, asio::detached);
}

asio::awaitable<void> TunnelConnection::Uplink(StreamPtr s) {
  // Waits until the local socket is readable, then reads straight into a DATA frame of the open
  // record (zero copy, no per-stream send buffer). The window and the write buffer are checked
  // in the same step as the read, so concurrent uplinks can never oversubscribe the peer's
  // windows, and the write buffer holds at most write_buffer_limit + one record of data.
  for (;;) {
    if (s->dead || closing_ || !table_.state(s->id)) co_return;
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
    // Read what is there (up to kStreamChunk per wake-up) while windows and room allow.
    size_t total = 0;
    while (!ec && total < kStreamChunk) {
      can = table_.CanSend(s->id);
      if (can == 0 || !CanQueueData()) break;
      if (rec_open_ && kMaxRecordPlaintext - rec_plain_ < kFrameHeaderSize + 1) SealRecord();
      if (!rec_open_) StartRecord();
      FrameWriter w(std::span<uint8_t>(wbuf_.data() + rec_start_ + kRecordHeaderSize + rec_plain_,
                                       kMaxRecordPlaintext - rec_plain_));
      auto area = w.BeginData(s->id, can);
      if (!area) break;  // cannot happen: the record has room for a header and a byte
      size_t n = s->socket.read_some(asio::buffer(area->data(), area->size()), ec);
      w.CommitData(n);
      if (n == 0) break;
      rec_plain_ += w.size();
      wused_ += w.size();
      (void)table_.Sent(s->id, n);
      total += n;
      Notify(write_signal_);
      if (n < area->size()) break;  // drained for now
    }
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec == asio::error::eof) {
      auto removed = table_.Fin(s->id);
      if (removed) {
        AppendFrame(kFrameHeaderSize, [&](FrameWriter& w) { return w.Fin(s->id); });
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
        AppendWindow(s->id, *u, !u->stream_removed);
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
