#include "tunnel/session/bandwidth_limiter.h"

#include <algorithm>

namespace dvpn::tunnel::session {
namespace {

using u128 = unsigned __int128;
constexpr uint64_t kNsPerSecond = 1'000'000'000;
// Sanity caps that keep every product below in range (far above any real link).
constexpr uint64_t kMaxRate = uint64_t{1} << 40;   // ~1 TB/s
constexpr uint64_t kMaxBurst = uint64_t{1} << 50;  // ~1 PB
// A reservation's wait is never computed as longer than this (only a rate of a few bytes per
// second with a huge debt could get there).
constexpr int64_t kMaxWaitNs = int64_t{365} * 24 * 3600 * 1'000'000'000;

BandwidthLimiter::Options Defaults(BandwidthLimiter::Options o) {
  o.rate_bytes_per_s = std::clamp<uint64_t>(o.rate_bytes_per_s, 1, kMaxRate);
  if (o.burst_bytes == 0) {
    o.burst_bytes = std::max(o.rate_bytes_per_s / 10, BandwidthLimiter::kMinBurst);
  }
  o.burst_bytes = std::min(o.burst_bytes, kMaxBurst);
  if (o.max_grant_bytes == 0) {
    o.max_grant_bytes = std::clamp(o.rate_bytes_per_s / 100, BandwidthLimiter::kMinGrant,
                                   BandwidthLimiter::kMaxGrant);
  }
  o.max_grant_bytes = std::min(o.max_grant_bytes, o.burst_bytes);
  return o;
}

}  // namespace

BandwidthLimiter::BandwidthLimiter(uint64_t rate_bytes_per_s, TimePoint now)
    : BandwidthLimiter(Options{.rate_bytes_per_s = rate_bytes_per_s}, now) {}

BandwidthLimiter::BandwidthLimiter(const Options& options, TimePoint now) {
  const Options o = Defaults(options);
  rate_ = o.rate_bytes_per_s;
  burst_ = o.burst_bytes;
  max_grant_ = o.max_grant_bytes;
  tokens_ = static_cast<int64_t>(burst_);
  last_ = now;
}

void BandwidthLimiter::Refill(TimePoint now) {
  if (now <= last_) return;
  const int64_t burst = static_cast<int64_t>(burst_);
  if (tokens_ >= burst) {
    last_ = now;
    fraction_ = 0;
    return;
  }
  // Exact: the part of a byte not yet credited is carried in fraction_ (no drift however often
  // this runs).
  const u128 units = static_cast<u128>((now - last_).count()) * rate_ + fraction_;
  const u128 earned = units / kNsPerSecond;
  last_ = now;
  if (earned >= static_cast<u128>(burst - tokens_)) {
    tokens_ = burst;
    fraction_ = 0;
    return;
  }
  tokens_ += static_cast<int64_t>(earned);
  fraction_ = static_cast<uint64_t>(units % kNsPerSecond);
}

BandwidthLimiter::Reservation BandwidthLimiter::Reserve(size_t max, TimePoint now) {
  Refill(now);
  Reservation r;
  r.bytes = static_cast<size_t>(std::min<uint64_t>(max, max_grant_));
  tokens_ -= static_cast<int64_t>(r.bytes);
  if (tokens_ >= 0) {
    r.ready_at = std::max(now, last_);
    return r;
  }
  // The debt (less the fraction of a byte already earned) is paid back at `rate` after last_.
  const u128 units = static_cast<u128>(-tokens_) * kNsPerSecond - fraction_;
  const u128 wait_ns = (units + rate_ - 1) / rate_;
  r.ready_at =
      last_ + std::chrono::nanoseconds(static_cast<int64_t>(std::min<u128>(wait_ns, kMaxWaitNs)));
  return r;
}

void BandwidthLimiter::Refund(size_t bytes) {
  const int64_t burst = static_cast<int64_t>(burst_);
  const uint64_t headroom = static_cast<uint64_t>(burst - std::min(tokens_, burst));
  tokens_ += static_cast<int64_t>(std::min<uint64_t>(bytes, headroom));
}

int64_t BandwidthLimiter::Available(TimePoint now) {
  Refill(now);
  return tokens_;
}

asio::awaitable<size_t> BandwidthLimiter::Acquire(size_t max, asio::steady_timer& timer) {
  if (max == 0) co_return 0;
  const TimePoint now = Clock::now();
  const Reservation r = Reserve(max, now);
  if (r.ready_at <= now) co_return r.bytes;
  timer.expires_at(r.ready_at);
  error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    // Cancelled (the stream or tunnel is closing): the tokens go back to the others.
    Refund(r.bytes);
    co_return 0;
  }
  co_return r.bytes;
}

}  // namespace dvpn::tunnel::session
