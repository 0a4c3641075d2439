#include "tunnel/rate_limit.h"

#include <algorithm>
#include <cstring>

namespace dvpn::tunnel {

SourceKey SourceKeyFromIpv4(const ByteArray<4>& addr) {
  SourceKey k{};
  k[10] = 0xff;
  k[11] = 0xff;
  std::memcpy(k.data() + 12, addr.data(), 4);
  return k;
}

SourceKey SourceKeyFromIpv6(const ByteArray<16>& addr) {
  SourceKey k{};
  std::memcpy(k.data(), addr.data(), 8);
  return k;
}

size_t HandshakeRateLimiter::KeyHash::operator()(const SourceKey& k) const {
  // FNV-1a; sources are attacker-chosen, but the table is bounded so collisions cost only time.
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : k) h = (h ^ b) * 1099511628211ull;
  return size_t(h);
}

HandshakeRateLimiter::HandshakeRateLimiter(Options options) : options_(options) {
  options_.max_sources = std::max<size_t>(options_.max_sources, 1);
}

bool HandshakeRateLimiter::Allow(const SourceKey& source, uint64_t now_ms) {
  const uint64_t capacity = uint64_t(options_.burst) * 1000;
  auto it = map_.find(source);
  if (it == map_.end()) {
    if (map_.size() >= options_.max_sources) {
      map_.erase(lru_.back().key);
      lru_.pop_back();
    }
    lru_.push_front(Bucket{source, capacity, now_ms});
    it = map_.emplace(source, lru_.begin()).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second);
  }
  Bucket& b = *it->second;
  if (now_ms > b.last_ms) {
    // per_second tokens per 1000 ms = per_second milli-tokens per ms.
    uint64_t elapsed = std::min<uint64_t>(now_ms - b.last_ms, 1'000'000'000);
    b.milli_tokens = std::min(capacity, b.milli_tokens + elapsed * options_.per_second);
    b.last_ms = now_ms;
  }
  if (b.milli_tokens < 1000) return false;
  b.milli_tokens -= 1000;
  return true;
}

bool TokenBucket::Take(uint64_t now_ms) {
  if (burst_ == 0) return true;
  const uint64_t capacity = uint64_t{burst_} * 1000;
  if (!started_) {
    started_ = true;
    milli_tokens_ = capacity;
    last_ms_ = now_ms;
  } else if (now_ms > last_ms_) {
    const uint64_t elapsed = now_ms - last_ms_;
    last_ms_ = now_ms;
    const uint64_t rate = per_second_;  // milli-tokens per millisecond
    if (rate != 0) {
      milli_tokens_ = elapsed >= capacity / rate + 1
                          ? capacity
                          : std::min(capacity, milli_tokens_ + elapsed * rate);
    }
  }
  if (milli_tokens_ < 1000) return false;
  milli_tokens_ -= 1000;
  return true;
}

}  // namespace dvpn::tunnel
