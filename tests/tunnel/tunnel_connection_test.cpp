// TunnelConnection over a real loopback TCP connection, both roles in this process: the control
// channel, the DATA meters and their observer, the forwarding pause, packet mode (refused
// without a handler, PACKET frames both ways, pause and limit), and control frames going
// ahead of queued stream data. Each side has its own io_context; the test drives both from its
// thread with bounded polling (every wait has a deadline).

#include "tunnel/session/tunnel_connection.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/tunnel/io_test_util.h"

namespace dvpn::tunnel::session {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 20s;  // deadline for anything that should happen

uint8_t PatternByte(uint64_t seed, uint64_t i) {
  return static_cast<uint8_t>((i * 131 + seed * 7 + (i >> 13)) & 0xFF);
}

// Writes `total` pattern bytes to a socket, then (optionally) shuts down its write side.
struct Writer {
  size_t total = 0;
  size_t written = 0;
  bool done = false;
  bool failed = false;
};
asio::awaitable<void> WritePattern(std::shared_ptr<tcp::socket> s, std::shared_ptr<Writer> w,
                                   uint64_t seed, bool shutdown_after) {
  std::vector<uint8_t> buf(64 * 1024);
  while (w->written < w->total) {
    size_t n = std::min(buf.size(), w->total - w->written);
    for (size_t i = 0; i < n; ++i) buf[i] = PatternByte(seed, w->written + i);
    error_code ec;
    co_await asio::async_write(*s, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      w->failed = true;
      co_return;
    }
    w->written += n;
  }
  if (shutdown_after) {
    error_code ignored;
    s->shutdown(tcp::socket::shutdown_send, ignored);
  }
  w->done = true;
}

// Reads until EOF, checking the pattern.
struct Reader {
  size_t got = 0;
  bool eof = false;
  bool corrupt = false;
  bool failed = false;
};
asio::awaitable<void> ReadPattern(std::shared_ptr<tcp::socket> s, std::shared_ptr<Reader> r,
                                  uint64_t seed) {
  std::vector<uint8_t> buf(64 * 1024);
  for (;;) {
    error_code ec;
    size_t n = co_await s->async_read_some(asio::buffer(buf),
                                           asio::redirect_error(asio::use_awaitable, ec));
    for (size_t i = 0; i < n; ++i) {
      if (buf[i] != PatternByte(seed, r->got + i)) r->corrupt = true;
    }
    r->got += n;
    if (ec == asio::error::eof) {
      r->eof = true;
      co_return;
    }
    if (ec) {
      r->failed = true;
      co_return;
    }
  }
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string Text(ByteSpan b) { return {b.begin(), b.end()}; }

class TunnelConnectionTest : public ::testing::Test {
 protected:
  // A stream from a test "application" socket through the client, the tunnel and the exit to a
  // test "upstream" socket.
  struct StreamEnds {
    uint32_t id = 0;
    std::shared_ptr<tcp::socket> app;       // on client_io_
    std::shared_ptr<tcp::socket> upstream;  // on exit_io_
  };

  void SetUp() override { Connect(ConnectionOptions{}); }

  void Connect(ConnectionOptions options) {
    auto pair = testing::MakeLoopbackTunnel(client_io_, exit_io_, options);
    client_ = std::move(pair.client);
    exit_ = std::move(pair.exit);

    upstream_listener_.emplace(exit_io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    app_listener_.emplace(client_io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    asio::co_spawn(exit_io_, AcceptUpstreams(), asio::detached);
    if (before_start_) before_start_();

    exit_->Start(
        [this](uint32_t id, const Destination&) {
          if (defer_accept_) {
            pending_opens_.push_back(id);
          } else {
            ConnectAndAccept(id);
          }
        },
        [this] { exit_closed_ = true; });
    client_->Start(nullptr, [this] { client_closed_ = true; });
  }

  void TearDown() override {
    if (client_) client_->Close(CloseReason::kNormal, "test over", true);
    if (exit_) exit_->Close(CloseReason::kNormal, "test over", true);
    RunUntil([&] { return client_closed_ && exit_closed_; }, 5s);
    error_code ignored;
    if (upstream_listener_) upstream_listener_->close(ignored);
    if (app_listener_) app_listener_->close(ignored);
    for (auto& s : upstreams_) s->close(ignored);
    // Let every coroutine see its socket closed and end (bounded).
    for (int i = 0; i < 100 && (client_io_.poll() + exit_io_.poll()) > 0; ++i) {
    }
  }

  // Exit side of an OPEN: connects to the upstream listener, then AcceptStream.
  void ConnectAndAccept(uint32_t id) {
    std::weak_ptr<TunnelConnection> weak_exit = exit_;
    auto socket = std::make_shared<tcp::socket>(exit_io_);
    socket->async_connect(upstream_listener_->local_endpoint(),
                          [weak_exit, id, socket](error_code ec) {
                            auto exit = weak_exit.lock();
                            if (!exit) return;
                            if (ec) {
                              exit->RefuseStream(id, OpenFailure::kRefused);
                            } else {
                              exit->AcceptStream(id, std::move(*socket));
                            }
                          });
  }

  // Client side of a pipelined open: OpenStreamEarly, then an app socket attached at once with
  // `early` as the bytes the SOCKS client sent after its request.
  StreamEnds OpenEarlyStream(ByteSpan early) {
    StreamEnds ends;
    destination_ = Destination::Ipv4({127, 0, 0, 1}, upstream_listener_->local_endpoint().port());
    auto id = client_->OpenStreamEarly(destination_);
    if (!id) {
      ADD_FAILURE() << "OpenStreamEarly: " << id.error().message;
      return ends;
    }
    ends.id = *id;
    ends.app = std::make_shared<tcp::socket>(client_io_);
    ends.app->connect(app_listener_->local_endpoint());
    client_->AttachStream(ends.id, app_listener_->accept(), early);
    return ends;
  }

  asio::awaitable<void> AcceptUpstreams() {
    for (;;) {
      auto s = std::make_shared<tcp::socket>(exit_io_);
      error_code ec;
      co_await upstream_listener_->async_accept(*s, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      upstreams_.push_back(s);
    }
  }

  // Runs both io_contexts (or only the client's) until `pred` holds or `timeout` passes.
  bool RunUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout = kWait,
                bool run_exit = true) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      RunSome(run_exit);
    }
    return true;
  }
  // Runs both io_contexts for `d` (to show that something does not happen).
  void RunFor(std::chrono::milliseconds d, bool run_exit = true) {
    auto deadline = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < deadline) RunSome(run_exit);
  }
  void RunSome(bool run_exit) {
    if (client_io_.stopped()) client_io_.restart();
    if (exit_io_.stopped()) exit_io_.restart();
    size_t n = client_io_.poll();
    if (run_exit) n += exit_io_.poll();
    if (n == 0) {
      client_io_.run_one_for(200us);
      if (run_exit) exit_io_.run_one_for(200us);
    }
  }

  // Opens a stream from the client to the upstream listener and attaches an app socket.
  StreamEnds OpenStream() {
    StreamEnds ends;
    auto opened = std::make_shared<std::optional<Result<uint32_t, OpenFailure>>>();
    const size_t upstreams_before = upstreams_.size();
    // OpenStream takes the destination by reference: it must outlive the coroutine.
    destination_ = Destination::Ipv4({127, 0, 0, 1}, upstream_listener_->local_endpoint().port());
    asio::co_spawn(client_io_, client_->OpenStream(destination_),
                   [opened](std::exception_ptr, Result<uint32_t, OpenFailure> r) { *opened = r; });
    EXPECT_TRUE(
        RunUntil([&] { return opened->has_value() && upstreams_.size() > upstreams_before; }));
    if (!opened->has_value() || !**opened) {
      ADD_FAILURE() << "OpenStream failed";
      return ends;
    }
    ends.id = ***opened;
    ends.upstream = upstreams_.back();
    ends.app = std::make_shared<tcp::socket>(client_io_);
    ends.app->connect(app_listener_->local_endpoint());
    tcp::socket local = app_listener_->accept();
    client_->AttachStream(ends.id, std::move(local), {});
    return ends;
  }

  // The readers of a transfer both ways on one stream: `up` is what the upstream side got,
  // `down` what the app side got.
  struct TwoWayReaders {
    std::shared_ptr<Reader> up;
    std::shared_ptr<Reader> down;
    bool Done() const { return up->eof && down->eof; }
  };

  // Starts writing `up` pattern bytes app -> upstream (pattern `seed`) and `down` bytes
  // upstream -> app (pattern `seed + 1`) on `ends`, both ways at once, each followed by a
  // half-close, and reading them at the other end. Nothing runs until the test runs the io.
  TwoWayReaders StartBothWays(const StreamEnds& ends, size_t up, size_t down, uint64_t seed) {
    auto w_up = std::make_shared<Writer>();
    auto w_down = std::make_shared<Writer>();
    TwoWayReaders r{std::make_shared<Reader>(), std::make_shared<Reader>()};
    w_up->total = up;
    w_down->total = down;
    asio::co_spawn(client_io_, WritePattern(ends.app, w_up, seed, true), asio::detached);
    asio::co_spawn(client_io_, ReadPattern(ends.app, r.down, seed + 1), asio::detached);
    asio::co_spawn(exit_io_, WritePattern(ends.upstream, w_down, seed + 1, true), asio::detached);
    asio::co_spawn(exit_io_, ReadPattern(ends.upstream, r.up, seed), asio::detached);
    return r;
  }

  // Runs until both directions of `r` reach EOF; checks that `up` and `down` bytes arrived
  // intact.
  void ExpectBothWaysArrive(const TwoWayReaders& r, size_t up, size_t down) {
    ASSERT_TRUE(RunUntil([&] { return r.Done(); }))
        << "up " << r.up->got << "/" << up << ", down " << r.down->got << "/" << down;
    EXPECT_EQ(r.up->got, up);
    EXPECT_EQ(r.down->got, down);
    EXPECT_FALSE(r.up->corrupt);
    EXPECT_FALSE(r.down->corrupt);
  }

  // Moves `up` bytes app -> upstream and `down` bytes upstream -> app on a new stream, both
  // ways at once, with half-closes; checks integrity.
  void TransferBothWays(size_t up, size_t down, uint64_t seed) {
    auto ends = OpenStream();
    ASSERT_NE(ends.id, 0u);
    ExpectBothWaysArrive(StartBothWays(ends, up, down, seed), up, down);
  }

  asio::io_context client_io_;
  asio::io_context exit_io_;
  std::shared_ptr<TunnelConnection> client_;
  std::shared_ptr<TunnelConnection> exit_;
  std::optional<tcp::acceptor> upstream_listener_;
  std::optional<tcp::acceptor> app_listener_;
  std::deque<std::shared_ptr<tcp::socket>> upstreams_;
  Destination destination_;
  bool defer_accept_ = false;  // the exit leaves OPENs in pending_opens_ for the test
  std::function<void()> before_start_;  // runs after both tunnels exist, before they start
  std::vector<uint32_t> pending_opens_;
  bool client_closed_ = false;
  bool exit_closed_ = false;
};

// ---- control channel -----------------------------------------------------------------------

TEST_F(TunnelConnectionTest, ControlRoundTripBothDirections) {
  std::vector<std::string> at_exit;
  std::vector<std::string> at_client;
  exit_->SetControlHandler([&](ByteSpan m) {
    at_exit.push_back(Text(m));
    EXPECT_TRUE(exit_->SendControl(Bytes("re:" + Text(m))));  // answering from the handler
  });
  client_->SetControlHandler([&](ByteSpan m) { at_client.push_back(Text(m)); });

  ASSERT_TRUE(client_->SendControl(Bytes("invoice?")));
  ASSERT_TRUE(client_->SendControl(Bytes("promise")));
  ASSERT_TRUE(RunUntil([&] { return at_client.size() == 2; }));
  EXPECT_EQ(at_exit, (std::vector<std::string>{"invoice?", "promise"}));
  EXPECT_EQ(at_client, (std::vector<std::string>{"re:invoice?", "re:promise"}));

  // The exit starts a conversation too; empty and maximum-size messages are fine.
  std::vector<uint8_t> big(kMaxControlPayload);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(exit_->SendControl(Bytes("invoice 7")));
  ASSERT_TRUE(exit_->SendControl({}));
  ASSERT_TRUE(exit_->SendControl(big));
  ASSERT_TRUE(RunUntil([&] { return at_client.size() == 5; }));
  EXPECT_EQ(at_client[2], "invoice 7");
  EXPECT_EQ(at_client[3], "");
  EXPECT_EQ(at_client[4], std::string(big.begin(), big.end()));
  // Control bytes are not metered.
  EXPECT_EQ(client_->data_bytes_sent() + client_->data_bytes_received(), 0u);
  EXPECT_EQ(exit_->data_bytes_sent() + exit_->data_bytes_received(), 0u);
}

TEST_F(TunnelConnectionTest, OversizeControlIsRefusedAndTheTunnelGoesOn) {
  std::vector<std::string> at_exit;
  exit_->SetControlHandler([&](ByteSpan m) { at_exit.push_back(Text(m)); });
  std::vector<uint8_t> too_big(kMaxControlPayload + 1, 0x42);
  EXPECT_FALSE(client_->SendControl(too_big));
  EXPECT_FALSE(exit_->SendControl(too_big));
  ASSERT_TRUE(client_->SendControl(Bytes("after")));
  ASSERT_TRUE(RunUntil([&] { return at_exit.size() == 1; }));
  EXPECT_EQ(at_exit[0], "after");
  EXPECT_FALSE(client_->closed());
  EXPECT_FALSE(exit_->closed());
}

TEST_F(TunnelConnectionTest, SendControlOnAClosedTunnelFails) {
  client_->Close(CloseReason::kNormal, "done", true);
  EXPECT_FALSE(client_->SendControl(Bytes("late")));
  ASSERT_TRUE(RunUntil([&] { return exit_->closed(); }));
  EXPECT_FALSE(exit_->SendControl(Bytes("late")));
}

TEST_F(TunnelConnectionTest, ControlHandlerMayCloseTheTunnel) {
  exit_->SetControlHandler(
      [&](ByteSpan) { exit_->Close(CloseReason::kPaymentRequired, "no payment", true); });
  ASSERT_TRUE(client_->SendControl(Bytes("bad promise")));
  ASSERT_TRUE(RunUntil([&] { return client_closed_ && exit_closed_; }));
}

// An exception escaping one of a tunnel's coroutines (here the read loop, through a handler it
// calls) is our bug: it is logged and ends that tunnel, both sides see it closed, and the
// process goes on (before issue 15 the coroutines were detached: the exception vanished, and
// the tunnel stayed half alive with no reader).
TEST_F(TunnelConnectionTest, AnExceptionInATunnelCoroutineClosesTheTunnelNotTheProcess) {
  exit_->SetControlHandler([](ByteSpan) { throw std::runtime_error("injected fault"); });
  ASSERT_TRUE(client_->SendControl(Bytes("boom")));
  ASSERT_TRUE(RunUntil([&] { return client_closed_ && exit_closed_; }));
  EXPECT_TRUE(exit_->closed());
  EXPECT_TRUE(client_->closed());
}

// ---- meters ----------------------------------------------------------------------------------

TEST_F(TunnelConnectionTest, MetersAgreeOnBothSidesAfterTransfersBothWays) {
  TransferBothWays(3 * 1024 * 1024 + 123, 5 * 1024 * 1024 + 7, 1);
  TransferBothWays(1, 70'000, 2);
  const uint64_t up = 3 * 1024 * 1024 + 123 + 1;
  const uint64_t down = 5 * 1024 * 1024 + 7 + 70'000;
  ASSERT_TRUE(RunUntil([&] {
    return exit_->data_bytes_received() == up && client_->data_bytes_received() == down;
  }));
  EXPECT_EQ(client_->data_bytes_sent(), up);
  EXPECT_EQ(exit_->data_bytes_received(), up);
  EXPECT_EQ(exit_->data_bytes_sent(), down);
  EXPECT_EQ(client_->data_bytes_received(), down);
}

TEST_F(TunnelConnectionTest, MeterObserverFiresAtEveryMultiple) {
  constexpr uint64_t kEvery = 100'000;  // not a multiple of the frame or record size
  std::vector<uint64_t> client_totals;
  std::vector<uint64_t> exit_totals;
  client_->SetMeterObserver(kEvery, [&] {
    client_totals.push_back(client_->data_bytes_sent() + client_->data_bytes_received());
  });
  exit_->SetMeterObserver(kEvery, [&] {
    exit_totals.push_back(exit_->data_bytes_sent() + exit_->data_bytes_received());
  });
  TransferBothWays(1'234'567, 2'345'678, 3);
  const uint64_t total = 1'234'567 + 2'345'678;
  ASSERT_TRUE(RunUntil([&] {
    return client_totals.size() == total / kEvery && exit_totals.size() == total / kEvery;
  })) << client_totals.size()
      << " " << exit_totals.size();
  RunFor(50ms);
  EXPECT_EQ(client_totals.size(), total / kEvery);
  EXPECT_EQ(exit_totals.size(), total / kEvery);
  // The k-th call comes after the k-th multiple was crossed.
  for (size_t k = 0; k < client_totals.size(); ++k) EXPECT_GE(client_totals[k], (k + 1) * kEvery);
  for (size_t k = 0; k < exit_totals.size(); ++k) EXPECT_GE(exit_totals[k], (k + 1) * kEvery);

  // Removing the observer stops the calls.
  client_->SetMeterObserver(0, nullptr);
  exit_->SetMeterObserver(0, nullptr);
  TransferBothWays(500'000, 500'000, 4);
  RunFor(50ms);
  EXPECT_EQ(client_totals.size(), total / kEvery);
  EXPECT_EQ(exit_totals.size(), total / kEvery);
}

// ---- pause -----------------------------------------------------------------------------------

// ---- forwarding limit (docs/payments.md §4, docs/tunnel.md "Forwarding limit") -------------

class LimitTest : public TunnelConnectionTest {
 protected:
  void SetUp() override {}
  void Start(uint64_t limit, bool client_follows_the_rule) {
    before_start_ = [this, limit, client_follows_the_rule] {
      exit_->LimitForwarding(limit, [this](uint64_t l) { blocked_at_.push_back(l); });
      if (client_follows_the_rule) client_->ZeroTunnelSendWindow();
    };
    Connect(ConnectionOptions{});
  }
  uint64_t ExitMeter() const { return exit_->data_bytes_sent() + exit_->data_bytes_received(); }
  std::vector<uint64_t> blocked_at_;
};

// Both ways at once, the exit never meters past its limit (uploads included: the client's credit
// comes out of it), says when it is held there, and moves on when the limit rises.
TEST_F(LimitTest, MeteredBytesNeverPassTheLimitInEitherDirection) {
  constexpr uint64_t kLimit = 300'000;
  Start(kLimit, true);
  auto ends = OpenStream();
  ASSERT_NE(ends.id, 0u);
  constexpr size_t kBytes = 2 * 1024 * 1024;
  const TwoWayReaders r = StartBothWays(ends, kBytes, kBytes, 7);

  uint64_t peak = 0;
  auto watch = [&] {
    peak = std::max(peak, ExitMeter());
    return !blocked_at_.empty();
  };
  ASSERT_TRUE(RunUntil(watch)) << "never held at the limit; meter " << ExitMeter();
  EXPECT_EQ(blocked_at_.front(), kLimit);
  RunFor(300ms);
  peak = std::max(peak, ExitMeter());
  EXPECT_LE(peak, kLimit);
  EXPECT_GT(exit_->data_bytes_sent(), 0u);
  EXPECT_GT(exit_->data_bytes_received(), 0u);
  EXPECT_FALSE(exit_closed_);

  // Raised step by step: every step is used and never passed.
  for (uint64_t limit = 2 * kLimit; limit < 2 * kBytes + 2 * kLimit; limit += 1'000'000) {
    exit_->SetForwardingLimit(limit);
    EXPECT_TRUE(RunUntil([&] {
      peak = std::max(peak, ExitMeter());
      return std::find(blocked_at_.begin(), blocked_at_.end(), limit) != blocked_at_.end() ||
             r.Done();
    }));
    EXPECT_LE(peak, limit);
  }
  ExpectBothWaysArrive(r, kBytes, kBytes);
}

// A client that opens no stream (a packet-mode session) is granted no upload credit: the whole
// limit is the exit's to forward packets in. Its first stream starts the credit, and the upload
// goes through.
TEST_F(LimitTest, NoUploadCreditBeforeTheFirstStream) {
  constexpr uint64_t kLimit = 1'000'000;
  Start(kLimit, true);
  RunFor(100ms);
  EXPECT_TRUE(exit_->MayForwardPacket(kLimit)) << "credit the client cannot use shrank the budget";
  EXPECT_FALSE(exit_->MayForwardPacket(kLimit + 1));
  EXPECT_TRUE(blocked_at_.empty() || blocked_at_.front() == kLimit);
  auto ends = OpenStream();
  ASSERT_NE(ends.id, 0u);
  constexpr size_t kBytes = 200'000;
  const TwoWayReaders r = StartBothWays(ends, kBytes, 0, 3);
  ExpectBothWaysArrive(r, kBytes, 0);
  EXPECT_FALSE(exit_->MayForwardPacket(kLimit - kBytes)) << "the client holds credit now";
}

// A client that ignores the rule (its send window not started at 0) sends DATA the exit never
// granted: a flow-control violation that ends the tunnel, never bytes past the limit.
TEST_F(LimitTest, PeerSendingBeyondItsCreditIsCut) {
  constexpr uint64_t kLimit = 100'000;
  Start(kLimit, false);
  auto ends = OpenStream();
  ASSERT_NE(ends.id, 0u);
  auto w_up = std::make_shared<Writer>();
  w_up->total = 4 * 1024 * 1024;
  asio::co_spawn(client_io_, WritePattern(ends.app, w_up, 9, true), asio::detached);
  ASSERT_TRUE(RunUntil([&] { return exit_closed_; })) << "meter " << ExitMeter();
  EXPECT_LE(ExitMeter(), kLimit);
}

class PauseTest : public TunnelConnectionTest, public ::testing::WithParamInterface<bool> {};

// Pauses one side, then: a new stream still opens; the paused side sends no DATA and the other
// side's DATA stops at the stream window; control still flows; already-received data is
// delivered. Resuming completes both transfers intact.
TEST_P(PauseTest, PauseStopsDataWithinTheWindowAndResumeCompletesTheTransfer) {
  const bool pause_exit = GetParam();
  TunnelConnection& paused = pause_exit ? *exit_ : *client_;
  TunnelConnection& other = pause_exit ? *client_ : *exit_;
  paused.SetForwardingPaused(true);
  EXPECT_TRUE(paused.forwarding_paused());

  auto ends = OpenStream();  // OPEN is handled while paused
  ASSERT_NE(ends.id, 0u);
  constexpr size_t kBytes = 2 * 1024 * 1024;
  const TwoWayReaders r = StartBothWays(ends, kBytes, kBytes, 5);

  // The other side sends exactly its stream window, which the paused side still delivers
  // locally; then nothing more moves.
  const uint64_t window = kInitialStreamWindow;
  ASSERT_TRUE(RunUntil([&] { return other.data_bytes_sent() == window; }));
  Reader& delivered_by_paused = pause_exit ? *r.up : *r.down;
  ASSERT_TRUE(RunUntil([&] { return delivered_by_paused.got == window; }));
  std::vector<std::string> at_other;
  other.SetControlHandler([&](ByteSpan m) { at_other.push_back(Text(m)); });
  ASSERT_TRUE(paused.SendControl(Bytes("pay me")));  // control flows while paused
  ASSERT_TRUE(RunUntil([&] { return at_other.size() == 1; }));
  RunFor(300ms);
  EXPECT_EQ(paused.data_bytes_sent(), 0u);
  EXPECT_EQ(other.data_bytes_received(), 0u);
  EXPECT_EQ(other.data_bytes_sent(), window);
  EXPECT_EQ(paused.data_bytes_received(), window);
  EXPECT_EQ(delivered_by_paused.got, window);
  EXPECT_EQ((pause_exit ? *r.down : *r.up).got, 0u);

  paused.SetForwardingPaused(false);
  ASSERT_NO_FATAL_FAILURE(ExpectBothWaysArrive(r, kBytes, kBytes));
  ASSERT_TRUE(RunUntil([&] {
    return paused.data_bytes_received() == kBytes && other.data_bytes_received() == kBytes;
  }));
  EXPECT_EQ(paused.data_bytes_sent(), kBytes);
  EXPECT_EQ(other.data_bytes_sent(), kBytes);
}

TEST_P(PauseTest, PauseAndResumeRepeatedlyDuringATransfer) {
  const bool pause_exit = GetParam();
  TunnelConnection& paused = pause_exit ? *exit_ : *client_;
  auto ends = OpenStream();
  ASSERT_NE(ends.id, 0u);
  constexpr size_t kBytes = 8 * 1024 * 1024;
  const TwoWayReaders r = StartBothWays(ends, kBytes, kBytes, 7);
  // Toggle every ~512 KiB of progress until both directions are done.
  uint64_t next = 512 * 1024;
  auto progress = [&] { return r.up->got + r.down->got; };
  while (!r.Done()) {
    ASSERT_TRUE(RunUntil([&] { return progress() >= next || r.Done(); }))
        << "stuck at " << progress() << ", paused " << paused.forwarding_paused();
    paused.SetForwardingPaused(true);
    RunFor(5ms);
    paused.SetForwardingPaused(false);
    next = progress() + 512 * 1024;
  }
  ExpectBothWaysArrive(r, kBytes, kBytes);
}

INSTANTIATE_TEST_SUITE_P(BothSides, PauseTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Exit" : "Client"; });

// ---- control frames go ahead of queued data -------------------------------------------------

class ControlPriorityTest : public TunnelConnectionTest {
 protected:
  void SetUp() override {
    ConnectionOptions options;
    // Large windows (both sides agree) so that the client's data queue, not the window, is what
    // fills up while the exit does not read.
    options.table.stream_window = 64 * 1024 * 1024;
    options.table.tunnel_window = 64 * 1024 * 1024;
    Connect(options);
  }

  // Streams 48 MiB from the client's application towards the exit while only the client's io
  // runs: it fills the TCP buffers, then its data queue (512 KiB), then stops reading its
  // application socket. Returns when the client's meter is stable.
  void FillTowardsTheExit(uint64_t seed, std::shared_ptr<Writer>* w_up,
                          std::shared_ptr<Reader>* r_up) {
    auto ends = OpenStream();
    ASSERT_NE(ends.id, 0u);
    *w_up = std::make_shared<Writer>();
    *r_up = std::make_shared<Reader>();
    (*w_up)->total = 48 * 1024 * 1024;
    asio::co_spawn(client_io_, WritePattern(ends.app, *w_up, seed, true), asio::detached);
    asio::co_spawn(exit_io_, ReadPattern(ends.upstream, *r_up, seed), asio::detached);
    uint64_t last = 0;
    ASSERT_TRUE(RunUntil(
        [&] {
          RunFor(100ms, false);
          bool stable = client_->data_bytes_sent() == last && last > 0;
          last = client_->data_bytes_sent();
          return stable;
        },
        kWait, false));
  }
};

TEST_F(ControlPriorityTest, ControlFrameOvertakesQueuedData) {
  std::shared_ptr<Reader> r_up;
  std::shared_ptr<Writer> w_up;
  ASSERT_NO_FATAL_FAILURE(FillTowardsTheExit(9, &w_up, &r_up));
  const uint64_t queued_by_client = client_->data_bytes_sent();
  uint64_t received_at_control = 0;
  bool got_control = false;
  exit_->SetControlHandler([&](ByteSpan) {
    got_control = true;
    received_at_control = exit_->data_bytes_received();
  });
  ASSERT_TRUE(client_->SendControl(Bytes("promise")));
  ASSERT_TRUE(RunUntil([&] { return got_control; }));
  // The data queue (write_buffer_limit = 512 KiB of records, so a little less payload) was still
  // queued behind the control frame. In first-in-first-out order the two would be equal.
  EXPECT_LE(received_at_control + 500 * 1024, queued_by_client)
      << "received " << received_at_control << " of " << queued_by_client;
  ASSERT_TRUE(RunUntil([&] { return r_up->eof; }));
  EXPECT_EQ(r_up->got, w_up->total);
  EXPECT_FALSE(r_up->corrupt);
}

// An after-data control message (an invoice) must not overtake DATA that was counted before it:
// several times while megabytes are queued toward a slow reader, the sender records its meter
// and sends an ordered control message; when each arrives, the receiver's meter is already at
// least that value.
TEST_F(ControlPriorityTest, AfterDataControlArrivesOnlyAfterTheDataCountedBeforeIt) {
  std::shared_ptr<Reader> r_up;
  std::shared_ptr<Writer> w_up;
  ASSERT_NO_FATAL_FAILURE(FillTowardsTheExit(11, &w_up, &r_up));
  std::vector<uint64_t> sent_at;      // client's meter when message i was sent
  std::vector<uint64_t> received_at;  // exit's meter when message i arrived
  exit_->SetControlHandler([&](ByteSpan m) {
    EXPECT_EQ(Text(m), "invoice " + std::to_string(received_at.size()));
    received_at.push_back(exit_->data_bytes_received());
  });
  sent_at.push_back(client_->data_bytes_sent());
  ASSERT_TRUE(client_->SendControl(Bytes("invoice 0"), TunnelConnection::ControlOrder::kAfterData));
  // More, while the transfer runs (a few bursts of both sides running).
  for (int i = 1; i < 6; ++i) {
    RunFor(20ms);
    sent_at.push_back(client_->data_bytes_sent());
    ASSERT_TRUE(client_->SendControl(Bytes("invoice " + std::to_string(i)),
                                     TunnelConnection::ControlOrder::kAfterData));
  }
  ASSERT_TRUE(RunUntil([&] { return received_at.size() == sent_at.size(); }));
  for (size_t i = 0; i < sent_at.size(); ++i) {
    EXPECT_GE(received_at[i], sent_at[i]) << "message " << i;
  }
  ASSERT_TRUE(RunUntil([&] { return r_up->eof; }));
  EXPECT_EQ(r_up->got, w_up->total);
  EXPECT_FALSE(r_up->corrupt);
}

}  // namespace
}  // namespace dvpn::tunnel::session

namespace dvpn::tunnel::session {
namespace {

// ---- early data (pipelined open) ------------------------------------------------------------

std::vector<uint8_t> PatternBytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = PatternByte(seed, i);
  return out;
}

TEST_F(TunnelConnectionTest, EarlyDataWaitsAtTheExitWithinItsBoundThenArrivesIntact) {
  defer_accept_ = true;
  constexpr size_t kEarly = 300;  // "bytes after the SOCKS request"
  constexpr size_t kTotal = 200'000;
  auto first = PatternBytes(11, kEarly);
  auto ends = OpenEarlyStream(first);
  ASSERT_NE(ends.id, 0u);
  // The application goes on writing before the exit has even connected.
  auto w_up = std::make_shared<Writer>();
  w_up->total = kTotal;
  w_up->written = kEarly;  // WritePattern continues the pattern after the early bytes
  asio::co_spawn(client_io_, WritePattern(ends.app, w_up, 11, true), asio::detached);
  ASSERT_TRUE(RunUntil([&] { return pending_opens_.size() == 1; }));
  // Exactly kMaxEarlyData bytes cross before OPEN_OK; then nothing more.
  ASSERT_TRUE(RunUntil([&] { return exit_->data_bytes_received() == kMaxEarlyData; }));
  RunFor(200ms);
  EXPECT_EQ(client_->data_bytes_sent(), kMaxEarlyData);
  EXPECT_EQ(exit_->data_bytes_received(), kMaxEarlyData);
  EXPECT_TRUE(upstreams_.empty());

  ConnectAndAccept(pending_opens_[0]);
  ASSERT_TRUE(RunUntil([&] { return upstreams_.size() == 1; }));
  auto r_up = std::make_shared<Reader>();
  asio::co_spawn(exit_io_, ReadPattern(upstreams_[0], r_up, 11), asio::detached);
  // And the other direction works as usual.
  auto w_down = std::make_shared<Writer>();
  auto r_down = std::make_shared<Reader>();
  w_down->total = 50'000;
  asio::co_spawn(exit_io_, WritePattern(upstreams_[0], w_down, 12, true), asio::detached);
  asio::co_spawn(client_io_, ReadPattern(ends.app, r_down, 12), asio::detached);
  ASSERT_TRUE(RunUntil([&] { return r_up->eof && r_down->eof; }))
      << "up " << r_up->got << ", down " << r_down->got;
  EXPECT_EQ(r_up->got, kTotal);
  EXPECT_FALSE(r_up->corrupt);
  EXPECT_EQ(r_down->got, 50'000u);
  EXPECT_FALSE(r_down->corrupt);
}

TEST_F(TunnelConnectionTest, EarlyFinIsSentOnlyAfterTheOpenSucceeds) {
  defer_accept_ = true;
  auto ends = OpenEarlyStream({});
  ASSERT_NE(ends.id, 0u);
  auto w_up = std::make_shared<Writer>();
  w_up->total = 100;
  asio::co_spawn(client_io_, WritePattern(ends.app, w_up, 13, true), asio::detached);
  ASSERT_TRUE(RunUntil([&] { return exit_->data_bytes_received() == 100; }));
  RunFor(100ms);  // the FIN must wait for OPEN_OK (a FIN now would end the tunnel)
  EXPECT_FALSE(exit_->closed());
  ASSERT_EQ(pending_opens_.size(), 1u);
  ConnectAndAccept(pending_opens_[0]);
  ASSERT_TRUE(RunUntil([&] { return upstreams_.size() == 1; }));
  auto r_up = std::make_shared<Reader>();
  asio::co_spawn(exit_io_, ReadPattern(upstreams_[0], r_up, 13), asio::detached);
  ASSERT_TRUE(RunUntil([&] { return r_up->eof; }));
  EXPECT_EQ(r_up->got, 100u);
  EXPECT_FALSE(r_up->corrupt);
  EXPECT_FALSE(exit_->closed());
}

class SmallWindowTest : public TunnelConnectionTest {
 protected:
  void SetUp() override {
    ConnectionOptions options;
    options.table.stream_window = 32 * 1024;
    options.table.tunnel_window = 64 * 1024;
    options.open_timeout = 300ms;
    Connect(options);
  }
};

TEST_F(SmallWindowTest, RefusedEarlyStreamResetsTheAppAndReturnsTheTunnelCredit) {
  defer_accept_ = true;
  // Six refused early streams discard 6 x 16377 bytes, more than the 64 KiB tunnel window: if
  // the exit did not return that credit, the transfer below would stall.
  for (int i = 0; i < 6; ++i) {
    const uint64_t before = exit_->data_bytes_received();
    auto ends = OpenEarlyStream({});
    ASSERT_NE(ends.id, 0u);
    auto w_up = std::make_shared<Writer>();
    w_up->total = 40'000;
    asio::co_spawn(client_io_, WritePattern(ends.app, w_up, 14, false), asio::detached);
    ASSERT_TRUE(RunUntil([&] {
      return pending_opens_.size() == size_t(i + 1) &&
             exit_->data_bytes_received() == before + kMaxEarlyData;
    }));
    exit_->RefuseStream(pending_opens_.back(), OpenFailure::kRefused);
    auto r = std::make_shared<Reader>();
    asio::co_spawn(client_io_, ReadPattern(ends.app, r, 0), asio::detached);
    ASSERT_TRUE(RunUntil([&] { return r->eof || r->failed; }));
    EXPECT_TRUE(r->failed) << "expected a reset, got an orderly EOF";
  }
  defer_accept_ = false;
  TransferBothWays(300'000, 300'000, 15);
  ASSERT_TRUE(RunUntil([&] {
    return exit_->data_bytes_received() == client_->data_bytes_sent() &&
           client_->data_bytes_received() == exit_->data_bytes_sent();
  }));
  EXPECT_FALSE(client_->closed());
  EXPECT_FALSE(exit_->closed());
}

TEST_F(SmallWindowTest, UnansweredEarlyStreamTimesOutWithAReset) {
  defer_accept_ = true;
  auto ends = OpenEarlyStream(PatternBytes(16, 10));
  ASSERT_NE(ends.id, 0u);
  auto r = std::make_shared<Reader>();
  asio::co_spawn(client_io_, ReadPattern(ends.app, r, 0), asio::detached);
  ASSERT_TRUE(RunUntil([&] { return r->eof || r->failed; }, 5s));
  EXPECT_TRUE(r->failed);
  // The exit learns it from the RESET: accepting now is refused.
  ASSERT_EQ(pending_opens_.size(), 1u);
  ASSERT_TRUE(RunUntil([&] { return exit_->stream_count() == 0; }));
}

}  // namespace
}  // namespace dvpn::tunnel::session

namespace dvpn::tunnel::session {
namespace {

// Until the session serves packet mode, an exit answers PACKET_SETUP with PACKET_FAIL 1 (not
// served) and the tunnel goes on. The client here is a raw socket with the record keys.
TEST(TunnelConnectionPacketMode, ExitRefusesPacketSetupAndTheTunnelGoesOn) {
  asio::io_context io;
  tcp::acceptor listener(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket raw(io);
  raw.connect(listener.local_endpoint());
  SessionKeys keys;
  keys.cipher = Cipher::kChaCha20Poly1305;
  keys.send_key.fill(0x22);
  keys.recv_key.fill(0x11);
  bool closed = false;
  auto exit = std::make_shared<TunnelConnection>(listener.accept(), keys, Role::kExit,
                                                 ConnectionOptions{}, "exit");
  exit->Start([](uint32_t, const Destination&) {}, [&] { closed = true; });

  // One record: PACKET_SETUP, then PING (answered only if the tunnel went on).
  std::vector<uint8_t> plaintext(64);
  FrameWriter w(plaintext);
  ASSERT_TRUE(
      w.PacketSetup({.receiver_index = 1, .max_datagram_plaintext = 1420, .wants_udp = true})
          .has_value());
  ASSERT_TRUE(w.Ping(5).has_value());
  RecordSealer sealer(keys.cipher, keys.recv_key);
  std::vector<uint8_t> record(w.size() + kRecordOverhead);
  ASSERT_TRUE(sealer.Seal(w.written(), record).has_value());
  asio::write(raw, asio::buffer(record));

  // Read records until the PONG, collecting the frame types.
  raw.non_blocking(true);
  RecordOpener opener(keys.cipher, keys.send_key);
  std::vector<uint8_t> in;
  std::vector<FrameType> types;
  PacketFailure failure{};
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::find(types.begin(), types.end(), FrameType::kPong) == types.end()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no PONG";
    io.poll();
    std::array<uint8_t, 4096> buf;
    error_code ec;
    const size_t n = raw.read_some(asio::buffer(buf), ec);
    ASSERT_TRUE(!ec || ec == asio::error::would_block) << ec.message();
    in.insert(in.end(), buf.begin(), buf.begin() + n);
    for (;;) {
      auto size = RecordSize(in);
      ASSERT_TRUE(size.has_value());
      if (*size == 0 || in.size() < *size) break;
      auto opened = opener.Open(std::span(in).first(*size));
      ASSERT_TRUE(opened.has_value());
      FrameReader reader(opened->plaintext);
      while (!reader.done()) {
        auto f = reader.Next();
        ASSERT_TRUE(f.has_value()) << f.error().message;
        types.push_back(f->type);
        if (f->type == FrameType::kPacketFail) failure = f->packet_failure;
      }
      in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(*size));
    }
  }
  EXPECT_EQ(types, (std::vector<FrameType>{FrameType::kPacketFail, FrameType::kPong}));
  EXPECT_EQ(failure, PacketFailure::kNotServed);
  EXPECT_FALSE(closed);
  exit->Close(CloseReason::kNormal, "test over", true);
  for (int i = 0; i < 100 && io.poll() > 0; ++i) {
  }
}

// ---- Packet mode over the TCP tunnel (the fallback transport) --------------------------------

class PacketModeTest : public TunnelConnectionTest {
 protected:
  void SetUp() override {}
  // The exit grants packet mode with `ready` (or refuses with `refusal`); the client asks.
  void Start(std::optional<PacketReadyFields> ready, uint64_t limit = 0) {
    before_start_ = [this, ready, limit] {
      if (limit != 0) {
        exit_->LimitForwarding(limit, [this](uint64_t l) { blocked_at_.push_back(l); });
        client_->ZeroTunnelSendWindow();
      }
      if (ready) {
        exit_->SetPacketSetupHandler(
            [this, ready](const PacketSetupFields& setup)
                -> Result<PacketReadyFields, PacketFailure> {
              asked_ = setup;
              return *ready;
            });
      }
      exit_->SetPacketHandler([this](ByteSpan p) { at_exit_.emplace_back(p.begin(), p.end()); });
      client_->SetPacketHandler(
          [this](ByteSpan p) { at_client_.emplace_back(p.begin(), p.end()); });
    };
    Connect(ConnectionOptions{});
    PacketSetupFields setup;
    setup.receiver_index = 77;
    setup.max_datagram_plaintext = 1420;
    setup.wants_udp = false;
    ASSERT_TRUE(client_->RequestPacketMode(
        setup, [this](Result<PacketReadyFields, PacketFailure> a) {
          answer_ = std::move(a);
        }));
    ASSERT_TRUE(RunUntil([&] { return answer_.has_value(); }));
  }
  static PacketReadyFields Ready() {
    PacketReadyFields r;
    r.mtu = 1420;
    r.ipv4 = {10, 231, 0, 2};
    r.ipv4_prefix = 16;
    r.ipv6[0] = 0xfd;
    r.ipv6[15] = 2;
    r.ipv6_prefix = 64;
    return r;
  }
  std::optional<PacketSetupFields> asked_;
  std::optional<Result<PacketReadyFields, PacketFailure>> answer_;
  std::vector<std::vector<uint8_t>> at_exit_;
  std::vector<std::vector<uint8_t>> at_client_;
  std::vector<uint64_t> blocked_at_;
};

TEST_F(PacketModeTest, WithoutAHandlerTheExitAnswersNotServed) {
  Start(std::nullopt);
  ASSERT_FALSE(answer_->has_value());
  EXPECT_EQ((*answer_).error().code, PacketFailure::kNotServed);
  EXPECT_FALSE(client_->packet_mode_ready());
  const std::vector<uint8_t> packet(100, 0x45);
  EXPECT_FALSE(client_->SendPacketFrame(packet));  // not in packet mode: nothing goes out
  EXPECT_FALSE(client_closed_);
}

TEST_F(PacketModeTest, GrantedPacketsTravelBothWaysInOrderAndCountInTheMeters) {
  Start(Ready());
  ASSERT_TRUE(answer_->has_value());
  EXPECT_EQ(**answer_, Ready());
  ASSERT_TRUE(asked_.has_value());
  EXPECT_EQ(asked_->receiver_index, 77u);
  ASSERT_TRUE(client_->packet_mode_ready());
  uint64_t sent = 0;
  for (int i = 0; i < 50; ++i) {
    std::vector<uint8_t> p(static_cast<size_t>(60 + i * 20), static_cast<uint8_t>(i));
    ASSERT_TRUE(client_->MeterPacket(p.size(), true));
    ASSERT_TRUE(client_->SendPacketFrame(p));
    ASSERT_TRUE(exit_->SendPacketFrame(p));
    ASSERT_TRUE(exit_->MeterPacket(p.size(), true));
    sent += p.size();
  }
  ASSERT_TRUE(RunUntil([&] { return at_exit_.size() == 50 && at_client_.size() == 50; }));
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(at_exit_[static_cast<size_t>(i)].size(), static_cast<size_t>(60 + i * 20));
    EXPECT_EQ(at_client_[static_cast<size_t>(i)][0], static_cast<uint8_t>(i));
  }
  EXPECT_EQ(client_->data_bytes_sent(), sent);
  EXPECT_EQ(exit_->data_bytes_sent(), sent);
}

TEST_F(PacketModeTest, PausedOrAtItsLimitTheExitForwardsNoPacket) {
  constexpr uint64_t kLimit = 200'000;
  Start(Ready(), kLimit);
  ASSERT_TRUE(exit_->packet_mode_ready());
  exit_->SetForwardingPaused(true);
  EXPECT_FALSE(exit_->MeterPacket(1000, false));
  EXPECT_FALSE(exit_->MayForwardPacket(1));
  exit_->SetForwardingPaused(false);
  // Under the limit every packet passes; the one that would cross it does not, and the payee
  // hears that the tunnel is held.
  uint64_t metered = 0;
  int refused = 0;
  for (int i = 0; i < 400; ++i) {
    if (exit_->MeterPacket(1000, false)) {
      metered += 1000;
    } else {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_LE(exit_->data_bytes_received() + exit_->data_bytes_sent(), kLimit);
  EXPECT_EQ(exit_->data_bytes_received(), metered);
  ASSERT_TRUE(RunUntil([&] { return !blocked_at_.empty(); }));
  EXPECT_EQ(blocked_at_.front(), kLimit);
  exit_->SetForwardingLimit(kLimit * 2);
  EXPECT_TRUE(exit_->MeterPacket(1000, false));
}

TEST_F(PacketModeTest, APendingRequestIsAnsweredWhenTheTunnelCloses) {
  before_start_ = [this] {
    // The exit never answers: its handler closes the tunnel instead.
    exit_->SetPacketSetupHandler(
        [this](const PacketSetupFields&) -> Result<PacketReadyFields, PacketFailure> {
          exit_->Close(CloseReason::kShutdown, "going away", true);
          return Fail(PacketFailure::kRefused, "x");
        });
  };
  Connect(ConnectionOptions{});
  PacketSetupFields setup;
  setup.receiver_index = 1;
  setup.max_datagram_plaintext = 1420;
  std::optional<Result<PacketReadyFields, PacketFailure>> answer;
  ASSERT_TRUE(client_->RequestPacketMode(setup, [&](auto a) { answer = std::move(a); }));
  ASSERT_TRUE(RunUntil([&] { return answer.has_value(); }));
  EXPECT_FALSE(answer->has_value());
  EXPECT_FALSE(client_->RequestPacketMode(setup, [](auto) {}));  // once per tunnel
}

}  // namespace
}  // namespace dvpn::tunnel::session
