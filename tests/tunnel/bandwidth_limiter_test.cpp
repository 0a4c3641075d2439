// BandwidthLimiter: the token bucket with explicit time points (grants, debt and waits, burst,
// refunds, exact refill, FIFO fairness, the rate bound over a long random run), Acquire on a
// real io_context (no suspension when tokens are there, waits otherwise, cancellation and
// destruction while waiting, two waiters interleave), and an ExitServer with a 4 MB/s limit on
// loopback moving 8 MB through two streams of one tunnel: it takes at least as long as the
// limit allows, and the data arrives intact with the meters unchanged.

#include "tunnel/session/bandwidth_limiter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/tunnel/io_test_util.h"

namespace dvpn::tunnel::session {
namespace {

using namespace std::chrono_literals;
using testing::RunUntil;
using Limiter = BandwidthLimiter;
using TimePoint = Limiter::TimePoint;

const TimePoint kT0 = TimePoint() + 1000s;

Limiter::Options Opts(uint64_t rate, uint64_t burst, uint64_t grant) {
  return {.rate_bytes_per_s = rate, .burst_bytes = burst, .max_grant_bytes = grant};
}

// ---- the bucket, with explicit time ----------------------------------------------------------

TEST(BandwidthLimiterTest, DefaultsFollowTheRate) {
  EXPECT_EQ(Limiter::BytesPerSecondFromMbps(32), 4'000'000u);
  Limiter a(4'000'000, kT0);
  EXPECT_EQ(a.rate(), 4'000'000u);
  EXPECT_EQ(a.burst(), 400'000u);     // rate / 10
  EXPECT_EQ(a.max_grant(), 40'000u);  // rate / 100
  Limiter slow(100'000, kT0);
  EXPECT_EQ(slow.burst(), Limiter::kMinBurst);
  EXPECT_EQ(slow.max_grant(), Limiter::kMinGrant);
  Limiter fast(Limiter::BytesPerSecondFromMbps(10'000), kT0);
  EXPECT_EQ(fast.max_grant(), Limiter::kMaxGrant);
  Limiter zero(0, kT0);  // taken as 1 byte/s, never a division by zero
  EXPECT_EQ(zero.rate(), 1u);
  Limiter small_burst(Opts(1000, 100, 500), kT0);
  EXPECT_EQ(small_burst.max_grant(), 100u);  // capped at the burst
}

TEST(BandwidthLimiterTest, GrantsAtOnceWithinTheBurstAndCapsEachGrant) {
  Limiter l(Opts(1000, 10'000, 4000), kT0);
  EXPECT_EQ(l.Available(kT0), 10'000);
  auto r = l.Reserve(3000, kT0);
  EXPECT_EQ(r.bytes, 3000u);
  EXPECT_EQ(r.ready_at, kT0);
  r = l.Reserve(1'000'000, kT0);
  EXPECT_EQ(r.bytes, 4000u);  // max_grant
  EXPECT_EQ(r.ready_at, kT0);
  EXPECT_EQ(l.Available(kT0), 3000);
  EXPECT_EQ(l.Reserve(0, kT0).bytes, 0u);
}

TEST(BandwidthLimiterTest, DebtIsPaidBackAtTheRate) {
  Limiter l(Opts(1000, 1000, 500), kT0);
  EXPECT_EQ(l.Reserve(500, kT0).ready_at, kT0);
  EXPECT_EQ(l.Reserve(500, kT0).ready_at, kT0);  // the bucket is now empty
  auto r = l.Reserve(500, kT0);
  EXPECT_EQ(r.bytes, 500u);
  EXPECT_EQ(r.ready_at, kT0 + 500ms);
  EXPECT_EQ(l.Available(kT0), -500);
  EXPECT_EQ(l.Available(kT0 + 250ms), -250);
  // A reservation made while in debt queues behind it.
  r = l.Reserve(100, kT0 + 250ms);
  EXPECT_EQ(r.ready_at, kT0 + 600ms);
  EXPECT_EQ(l.Available(kT0 + 600ms), 0);
  EXPECT_EQ(l.Available(kT0 + 601ms), 1);
}

TEST(BandwidthLimiterTest, IdleTimeFillsTheBucketOnlyUpToTheBurst) {
  Limiter l(Opts(1000, 2000, 2000), kT0);
  l.Reserve(2000, kT0);
  EXPECT_EQ(l.Available(kT0 + 1h), 2000);
  EXPECT_EQ(l.Reserve(2000, kT0 + 1h).ready_at, kT0 + 1h);
  auto r = l.Reserve(2000, kT0 + 1h);
  EXPECT_EQ(r.ready_at, kT0 + 1h + 2s);
}

TEST(BandwidthLimiterTest, RefundReturnsTokensUpToTheBurst) {
  Limiter l(Opts(1000, 1000, 1000), kT0);
  l.Reserve(1000, kT0);
  l.Reserve(1000, kT0);
  EXPECT_EQ(l.Available(kT0), -1000);
  l.Refund(600);
  EXPECT_EQ(l.Available(kT0), -400);
  EXPECT_EQ(l.Reserve(100, kT0).ready_at, kT0 + 500ms);
  l.Refund(100'000);
  EXPECT_EQ(l.Available(kT0), 1000);
}

TEST(BandwidthLimiterTest, RefillInTinyStepsDoesNotDrift) {
  // 7 bytes/s checked every 0.3 ms for 3 s: a byte takes ~142.857 ms, far more than a step.
  Limiter l(Opts(7, 1000, 1000), kT0);
  l.Reserve(1000, kT0);
  TimePoint t = kT0;
  for (int i = 0; i < 10'000; ++i) {
    t += 300us;
    l.Available(t);
  }
  EXPECT_EQ(l.Available(kT0 + 3s), 21);
  // And a fast one in odd steps: 1'000'003 bytes/s, 10'000 steps of 37 us = 0.37 s.
  Limiter f(Opts(1'000'003, 1'000'000, 1'000'000), kT0);
  f.Reserve(1'000'000, kT0);
  t = kT0;
  for (int i = 0; i < 10'000; ++i) {
    t += 37us;
    f.Available(t);
  }
  EXPECT_EQ(f.Available(kT0 + 370ms), 370'001);  // floor(0.37 * 1'000'003)
}

// Busy pumps served in the order of their grants' ready times (what the timers do): each one
// asks again as soon as its grant is ready. Returns who got each grant, in order.
std::vector<int> SimulateBusyPumps(Limiter& l, int pumps, int grants_each) {
  struct Pending {
    int pump;
    TimePoint ready;
    uint64_t seq;
  };
  std::vector<Pending> pending;
  uint64_t seq = 0;
  for (int p = 0; p < pumps; ++p) pending.push_back({p, l.Reserve(1'000'000, kT0).ready_at, seq++});
  std::vector<int> left(pumps, grants_each);
  std::vector<int> order;
  while (!pending.empty()) {
    auto it = std::min_element(pending.begin(), pending.end(), [](const auto& a, const auto& b) {
      return a.ready < b.ready || (a.ready == b.ready && a.seq < b.seq);
    });
    Pending p = *it;
    pending.erase(it);
    order.push_back(p.pump);
    if (--left[p.pump] > 0) {
      pending.push_back({p.pump, l.Reserve(1'000'000, p.ready).ready_at, seq++});
    }
  }
  return order;
}

TEST(BandwidthLimiterTest, BusyPumpsTakeTurns) {
  Limiter l(Opts(1000, 1000, 500), kT0);
  auto order = SimulateBusyPumps(l, 2, 20);
  ASSERT_EQ(order.size(), 40u);
  // After the burst (the first two grants), strict alternation.
  for (size_t i = 2; i < order.size(); ++i) EXPECT_NE(order[i], order[i - 1]) << "grant " << i;
  // Three pumps: each gets a third of every window of three grants.
  Limiter l3(Opts(1000, 500, 500), kT0);
  order = SimulateBusyPumps(l3, 3, 10);
  for (size_t i = 0; i + 3 <= order.size(); i += 3) {
    std::vector<int> w(order.begin() + i, order.begin() + i + 3);
    std::sort(w.begin(), w.end());
    EXPECT_EQ(w, (std::vector<int>{0, 1, 2})) << "window at " << i;
  }
}

TEST(BandwidthLimiterTest, GrantedBytesNeverExceedBurstPlusRateTimesTime) {
  // Random reservers and refunds over 60 simulated seconds; every grant is "used" at its ready
  // time minus what is refunded. The used total at any ready time t is at most
  // burst + rate * (t - t0).
  const uint64_t rate = 123'457;
  const uint64_t burst = 50'000;
  Limiter l(Opts(rate, burst, 9000), kT0);
  std::mt19937_64 rng(7);
  struct Use {
    TimePoint at;
    int64_t bytes;
  };
  std::vector<Use> uses;
  TimePoint now = kT0;
  while (now < kT0 + 60s) {
    now += std::chrono::microseconds(rng() % 20'000);
    const size_t want = 1 + rng() % 20'000;
    auto r = l.Reserve(want, now);
    ASSERT_GE(r.ready_at, now);
    ASSERT_LE(r.bytes, 9000u);
    int64_t used = static_cast<int64_t>(r.bytes);
    if (rng() % 3 == 0) {
      const size_t unused = rng() % (r.bytes + 1);
      l.Refund(unused);
      used -= static_cast<int64_t>(unused);
    }
    uses.push_back({r.ready_at, used});
  }
  std::sort(uses.begin(), uses.end(), [](const Use& a, const Use& b) { return a.at < b.at; });
  int64_t total = 0;
  for (const auto& u : uses) {
    total += u.bytes;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(u.at - kT0).count();
    // Exact integer form of total <= burst + rate * ns / 10^9.
    const auto lhs = static_cast<unsigned __int128>(total) * 1'000'000'000u;
    const auto rhs = static_cast<unsigned __int128>(burst) * 1'000'000'000u +
                     static_cast<unsigned __int128>(rate) * static_cast<uint64_t>(ns);
    ASSERT_TRUE(lhs <= rhs) << "at +" << ns << " ns, " << total << " bytes";
  }
  // The limiter kept the pace: far more than the burst went through.
  EXPECT_GT(total, static_cast<int64_t>(rate) * 30);
}

// ---- Acquire on a real io_context --------------------------------------------------------------

struct AcquireResult {
  std::optional<size_t> bytes;
  std::chrono::steady_clock::time_point at;
};

void SpawnAcquire(asio::io_context& io, Limiter& l, size_t max,
                  std::shared_ptr<asio::steady_timer> timer, std::shared_ptr<AcquireResult> out) {
  asio::co_spawn(
      io,
      [&l, max, timer, out]() -> asio::awaitable<void> {
        out->bytes = co_await l.Acquire(max, *timer);
        out->at = std::chrono::steady_clock::now();
      },
      asio::detached);
}

TEST(BandwidthLimiterAcquireTest, CompletesWithoutWaitingWhenTokensAreThere) {
  asio::io_context io;
  Limiter l(Opts(1000, 100'000, 50'000));
  auto timer = std::make_shared<asio::steady_timer>(io);
  auto out = std::make_shared<AcquireResult>();
  SpawnAcquire(io, l, 30'000, timer, out);
  io.poll();  // starts the coroutine; no timer may be involved
  ASSERT_TRUE(out->bytes.has_value());
  EXPECT_EQ(*out->bytes, 30'000u);
}

TEST(BandwidthLimiterAcquireTest, WaitsUntilTheDebtIsPaid) {
  asio::io_context io;
  Limiter l(Opts(1'000'000, 20'000, 20'000));
  const auto drained = std::chrono::steady_clock::now();
  ASSERT_EQ(l.Reserve(20'000, drained).bytes, 20'000u);  // empty at `drained`
  auto timer = std::make_shared<asio::steady_timer>(io);
  auto out = std::make_shared<AcquireResult>();
  SpawnAcquire(io, l, 20'000, timer, out);  // ready 20 ms after `drained`
  io.poll();
  EXPECT_FALSE(out->bytes.has_value());
  ASSERT_TRUE(RunUntil(io, [&] { return out->bytes.has_value(); }));
  EXPECT_EQ(*out->bytes, 20'000u);
  EXPECT_GE(out->at - drained, 19ms);  // a timer never fires early
}

TEST(BandwidthLimiterAcquireTest, CancellingTheTimerEndsTheWaitAndRefunds) {
  asio::io_context io;
  Limiter l(Opts(10, 1000, 1000));  // 10 bytes/s: the second grant is 100 s away
  l.Reserve(1000, Limiter::Clock::now());
  auto timer = std::make_shared<asio::steady_timer>(io);
  auto out = std::make_shared<AcquireResult>();
  SpawnAcquire(io, l, 1000, timer, out);
  io.poll();
  ASSERT_FALSE(out->bytes.has_value());
  EXPECT_LT(l.Available(Limiter::Clock::now()), -500);  // the waiter holds 1000 bytes of debt
  timer->cancel();                                      // e.g. the stream closed
  ASSERT_TRUE(RunUntil(
      io, [&] { return out->bytes.has_value(); }, 5s));
  EXPECT_EQ(*out->bytes, 0u);
  EXPECT_GE(l.Available(Limiter::Clock::now()), 0);  // the debt went back
}

TEST(BandwidthLimiterAcquireTest, DestroyingTheIoContextWhileWaitingIsSafe) {
  // Like a tunnel torn down with its io_context: the coroutine frame (holding the timer's
  // owner) is destroyed without resuming. ASan/LSan check that nothing leaks or dangles.
  Limiter l(Opts(10, 1000, 1000));
  l.Reserve(1000, Limiter::Clock::now());
  auto out = std::make_shared<AcquireResult>();
  {
    auto io = std::make_unique<asio::io_context>();
    auto timer = std::make_shared<asio::steady_timer>(*io);
    SpawnAcquire(*io, l, 1000, timer, out);
    timer.reset();  // only the coroutine holds it now
    io->poll();
    EXPECT_FALSE(out->bytes.has_value());
    io.reset();
  }
  EXPECT_FALSE(out->bytes.has_value());
  // The limiter is still usable.
  EXPECT_EQ(l.Reserve(10, Limiter::Clock::now()).bytes, 10u);
}

TEST(BandwidthLimiterAcquireTest, TwoBusyWaitersInterleave) {
  asio::io_context io;
  // 1 MB/s in 10 KB grants, burst of one grant: 2 x 15 grants take about 0.3 s.
  Limiter l(Opts(1'000'000, 10'000, 10'000));
  std::vector<int> order;
  int finished = 0;
  std::vector<std::shared_ptr<asio::steady_timer>> timers;
  for (int who = 0; who < 2; ++who) {
    auto timer = std::make_shared<asio::steady_timer>(io);
    timers.push_back(timer);
    asio::co_spawn(
        io,
        [&, who, timer]() -> asio::awaitable<void> {
          for (int i = 0; i < 15; ++i) {
            const size_t got = co_await l.Acquire(1'000'000, *timer);
            if (got != 10'000) break;
            order.push_back(who);
          }
          ++finished;
        },
        asio::detached);
  }
  ASSERT_TRUE(RunUntil(
      io, [&] { return finished == 2; }, 20s));
  ASSERT_EQ(order.size(), 30u);
  // FIFO by reservation: after the first grant, the two take turns.
  int switches = 0;
  for (size_t i = 1; i < order.size(); ++i) switches += order[i] != order[i - 1];
  EXPECT_GE(switches, 26) << "one waiter ran ahead of the other";
}

// ---- an ExitServer with a limit, over loopback -------------------------------------------------

uint8_t PatternByte(uint64_t seed, uint64_t i) {
  return static_cast<uint8_t>((i * 131 + seed * 7 + (i >> 13)) & 0xFF);
}

struct Flow {
  size_t total = 0;
  size_t written = 0;
  size_t got = 0;
  bool write_failed = false;
  bool eof = false;
  bool corrupt = false;
  bool read_failed = false;
};

asio::awaitable<void> WritePattern(std::shared_ptr<tcp::socket> s, std::shared_ptr<Flow> f,
                                   uint64_t seed) {
  std::vector<uint8_t> buf(64 * 1024);
  while (f->written < f->total) {
    const size_t n = std::min(buf.size(), f->total - f->written);
    for (size_t i = 0; i < n; ++i) buf[i] = PatternByte(seed, f->written + i);
    error_code ec;
    co_await asio::async_write(*s, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      f->write_failed = true;
      co_return;
    }
    f->written += n;
  }
  error_code ignored;
  s->shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> ReadPattern(std::shared_ptr<tcp::socket> s, std::shared_ptr<Flow> f,
                                  uint64_t seed) {
  std::vector<uint8_t> buf(64 * 1024);
  for (;;) {
    error_code ec;
    const size_t n = co_await s->async_read_some(asio::buffer(buf),
                                                 asio::redirect_error(asio::use_awaitable, ec));
    for (size_t i = 0; i < n; ++i) {
      if (buf[i] != PatternByte(seed, f->got + i)) f->corrupt = true;
    }
    f->got += n;
    if (ec == asio::error::eof) {
      f->eof = true;
      co_return;
    }
    if (ec) {
      f->read_failed = true;
      co_return;
    }
  }
}

class LimitedExitTest : public ::testing::Test, protected testing::ExitAndClient {
 protected:
  void StartExit(std::shared_ptr<BandwidthLimiter> limiter) {
    ExitServer::Options options;
    options.bandwidth = std::move(limiter);
    ASSERT_TRUE(ExitAndClient::StartExit(tcp::endpoint(asio::ip::address_v4::loopback(), 0),
                                         {"allow 127.0.0.1/32"}, options));
    upstream_listener_.emplace(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    app_listener_.emplace(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    asio::co_spawn(io_, AcceptUpstreams(), asio::detached);
  }

  asio::awaitable<void> AcceptUpstreams() {
    for (;;) {
      auto s = std::make_shared<tcp::socket>(io_);
      error_code ec;
      co_await upstream_listener_->async_accept(*s, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      upstreams_.push_back(s);
    }
  }

  struct Ends {
    std::shared_ptr<tcp::socket> app;
    std::shared_ptr<tcp::socket> upstream;
  };
  // A stream from an app socket through the tunnel and the exit to an upstream socket.
  Ends OpenStream() {
    Ends ends;
    const size_t before = upstreams_.size();
    destination_ = Destination::Ipv4({127, 0, 0, 1}, upstream_listener_->local_endpoint().port());
    std::optional<Result<uint32_t, OpenFailure>> opened;
    asio::co_spawn(io_, client_->OpenStream(destination_),
                   [&](std::exception_ptr, Result<uint32_t, OpenFailure> r) { opened = r; });
    if (!RunUntil(io_, [&] { return opened.has_value() && upstreams_.size() > before; }) ||
        !*opened) {
      ADD_FAILURE() << "the stream did not open";
      return ends;
    }
    ends.upstream = upstreams_.back();
    ends.app = std::make_shared<tcp::socket>(io_);
    ends.app->connect(app_listener_->local_endpoint());
    client_->AttachStream(**opened, app_listener_->accept(), {});
    return ends;
  }

  // Starts `each_way` pattern bytes up (app -> upstream) and as many down on every stream of
  // `ends`, all at once, each direction with its own pattern. Returns the flows: up, then down,
  // for each stream in turn.
  std::vector<std::shared_ptr<Flow>> StartFlows(const std::vector<Ends>& ends, size_t each_way) {
    std::vector<std::shared_ptr<Flow>> flows;
    for (size_t i = 0; i < ends.size(); ++i) {
      auto up = std::make_shared<Flow>();
      auto down = std::make_shared<Flow>();
      up->total = down->total = each_way;
      const uint64_t seed = 10 * (i + 1);
      asio::co_spawn(io_, WritePattern(ends[i].app, up, seed), asio::detached);
      asio::co_spawn(io_, ReadPattern(ends[i].upstream, up, seed), asio::detached);
      asio::co_spawn(io_, WritePattern(ends[i].upstream, down, seed + 1), asio::detached);
      asio::co_spawn(io_, ReadPattern(ends[i].app, down, seed + 1), asio::detached);
      flows.push_back(up);
      flows.push_back(down);
    }
    return flows;
  }

  void TearDown() override {
    Shutdown(5s, [this] {
      error_code ignored;
      if (upstream_listener_) upstream_listener_->close(ignored);
      if (app_listener_) app_listener_->close(ignored);
      for (auto& s : upstreams_) s->close(ignored);
    });
  }

  std::optional<tcp::acceptor> upstream_listener_;
  std::optional<tcp::acceptor> app_listener_;
  std::deque<std::shared_ptr<tcp::socket>> upstreams_;
  Destination destination_;
};

TEST_F(LimitedExitTest, TwoStreamsStayUnderTheExitWideLimit) {
  constexpr uint64_t kRate = 4'000'000;   // 32 Mbit/s
  constexpr size_t kEachWay = 2'000'000;  // per stream and direction: 8 MB in all
  constexpr size_t kTotal = 4 * kEachWay;
  auto limiter = std::make_shared<BandwidthLimiter>(kRate);
  StartExit(limiter);
  ConnectClient();
  ASSERT_TRUE(client_);
  std::vector<Ends> ends{OpenStream(), OpenStream()};
  ASSERT_TRUE(ends[0].app && ends[1].app);

  // Each stream carries kEachWay up (app -> upstream) and kEachWay down, all at once.
  const auto start = std::chrono::steady_clock::now();
  const auto flows = StartFlows(ends, kEachWay);
  auto all_done = [&] {
    return std::all_of(flows.begin(), flows.end(),
                       [](const auto& f) { return f->eof || f->read_failed || f->write_failed; });
  };
  ASSERT_TRUE(RunUntil(io_, all_done, 30s)) << "the transfer did not finish in 30 s";
  const auto elapsed = std::chrono::steady_clock::now() - start;
  for (const auto& f : flows) {
    EXPECT_FALSE(f->write_failed || f->read_failed);
    EXPECT_EQ(f->got, kEachWay);
    EXPECT_FALSE(f->corrupt);
  }
  // Every byte went through the bucket, which started full: at most burst + rate * t bytes in
  // t. So 8 MB need at least (8 MB - burst) / rate = 1.9 s. (Only the lower bound: a loaded
  // machine may be slower.)
  const auto min_elapsed = std::chrono::nanoseconds(
      static_cast<int64_t>((kTotal - limiter->burst()) * 1'000'000'000ull / kRate));
  EXPECT_GE(elapsed, min_elapsed)
      << "8 MB took " << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
      << " ms: faster than the limit allows";
  // Metering is unchanged: the exit counted exactly the payload bytes, both ways.
  EXPECT_EQ(server_->metered_bytes_total(), kTotal);
  EXPECT_EQ(client_->data_bytes_sent(), 2 * kEachWay);
  EXPECT_EQ(client_->data_bytes_received(), 2 * kEachWay);
}

TEST_F(LimitedExitTest, ClosingTheTunnelWhileStreamsWaitForTokensIsClean) {
  // A tiny limit (the burst, then 50 KB/s) so the pumps wait on the limiter when the tunnel
  // goes: the waits end at once and the server is idle again.
  auto limiter = std::make_shared<BandwidthLimiter>(
      BandwidthLimiter::Options{.rate_bytes_per_s = 50'000, .burst_bytes = 64 * 1024});
  StartExit(limiter);
  ConnectClient();
  ASSERT_TRUE(client_);
  std::vector<Ends> ends{OpenStream(), OpenStream()};
  ASSERT_TRUE(ends[0].app && ends[1].app);
  const auto flows = StartFlows(ends, 4'000'000);
  // Some data moves, then the limiter is in debt (the pumps wait for tokens).
  ASSERT_TRUE(RunUntil(io_, [&] {
    return limiter->Available(BandwidthLimiter::Clock::now()) < 0 &&
           flows[0]->got + flows[1]->got + flows[2]->got + flows[3]->got > 0;
  }));
  bool idle = false;
  server_->Stop([&] { idle = true; });
  ASSERT_TRUE(RunUntil(
      io_, [&] { return idle && client_closed_; }, 10s));
  EXPECT_EQ(server_->tunnel_count(), 0u);
  // Every pump waiting for tokens ended, so the exit's tunnel object is gone: only the test
  // and the server's options still hold the limiter.
  EXPECT_TRUE(RunUntil(
      io_, [&] { return limiter.use_count() == 3; }, 5s))
      << "use_count " << limiter.use_count() << ": a pump is still waiting";
}

}  // namespace
}  // namespace dvpn::tunnel::session
