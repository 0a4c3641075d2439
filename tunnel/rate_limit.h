#pragma once
// Per-source token bucket for handshakes (docs/tunnel.md, "Handshake", DoS resistance): each
// source may start `burst` handshakes at once and `per_second` more every second. Pure: the
// caller passes the time. Memory is bounded: at most `max_sources` buckets; when full, the
// least recently used bucket is dropped (that source then starts again with a full bucket, which
// is what any new source gets anyway). Integer arithmetic only (milli-tokens).
// Not thread-safe: one per acceptor, used on its strand.

#include <cstdint>
#include <list>
#include <unordered_map>

#include "common/bytes.h"

namespace dvpn::tunnel {

// A source: an IPv4 address (v4-mapped) or an IPv6 /64 prefix, in 16 bytes.
using SourceKey = ByteArray<16>;
SourceKey SourceKeyFromIpv4(const ByteArray<4>& addr);
// Keeps the first 8 bytes (/64): one host usually owns a whole /64.
SourceKey SourceKeyFromIpv6(const ByteArray<16>& addr);

// One token bucket: `burst` tokens at the start, `per_second` more each second up to `burst`.
// burst 0: no limit; per_second 0 with a burst: `burst` tokens in all. Time is a monotonic
// millisecond clock; going backwards counts as no time passing.
class TokenBucket {
 public:
  TokenBucket(uint32_t per_second, uint32_t burst) : per_second_(per_second), burst_(burst) {}
  // Takes a token when there is one.
  bool Take(uint64_t now_ms);

 private:
  uint32_t per_second_;
  uint32_t burst_;
  bool started_ = false;
  uint64_t milli_tokens_ = 0;
  uint64_t last_ms_ = 0;
};

class HandshakeRateLimiter {
 public:
  struct Options {
    uint32_t per_second = 10;  // sustained handshakes per second per source
    uint32_t burst = 20;       // bucket size
    size_t max_sources = 65536;
  };
  explicit HandshakeRateLimiter(Options options);

  // True (and takes a token) when `source` may start a handshake at `now_ms` (a monotonic
  // millisecond clock; going backwards is treated as no time passing).
  bool Allow(const SourceKey& source, uint64_t now_ms);
  size_t size() const { return map_.size(); }

 private:
  struct Bucket {
    SourceKey key;
    uint64_t milli_tokens;
    uint64_t last_ms;
  };
  struct KeyHash {
    size_t operator()(const SourceKey& k) const;
  };
  Options options_;
  std::list<Bucket> lru_;  // front = most recently used
  std::unordered_map<SourceKey, std::list<Bucket>::iterator, KeyHash> map_;
};

}  // namespace dvpn::tunnel
