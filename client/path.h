#pragma once
// The client's path (docs/client.md "A path of hops"): the providers one connection's traffic
// crosses, in order. The SOCKS front end feeds the first hop; the last one is the exit. Each hop
// has its own provider, tunnel and payment session (client_runtime.cpp).
//
// PathSpec is what the caller of ClientRuntime asks for. CheckPathSpec says whether this build
// can build it: one hop today; a longer path is refused, never faked. PathProviders keeps the
// rule that a provider serves at most one hop of a path; each hop's OfferPicker asks it.
//
// Thread-safety: PathProviders locks a mutex (the pickers of different hops run on different
// threads); the rest is plain values and pure functions.

#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "common/bytes.h"
#include "common/result.h"

namespace dvpn::tunnel_client {

enum class PathErrc {
  kNoHops,            // a path of zero hops
  kMultiHopNotBuilt,  // more hops than this build can chain (kMaxHopsBuilt)
  kProviderRepeated,  // the provider already serves another hop of the path
};
const char* PathErrcName(PathErrc code);

template <class T>
using PathResult = Result<T, PathErrc>;

// The longest path this build can chain. A second hop needs a tunnel carried inside the first
// one's streams, which does not exist yet.
inline constexpr uint32_t kMaxHopsBuilt = 1;

struct PathSpec {
  uint32_t hops = 1;  // 1: the client talks to the exit directly
};

// kNoHops for zero hops; kMultiHopNotBuilt (the message says so and names the length asked for)
// for more than kMaxHopsBuilt.
[[nodiscard]] PathResult<void> CheckPathSpec(const PathSpec& spec);

// A provider as the path rule sees it: its account key (marketplace::Offer::provider).
using HopProvider = ByteArray<32>;

// Which provider each hop of one path uses. A provider may hold at most one hop: a path through
// the same provider twice would let that provider see both ends of the traffic (and pay it twice
// for the same bytes).
class PathProviders {
 public:
  explicit PathProviders(uint32_t hops);
  PathProviders(const PathProviders&) = delete;
  PathProviders& operator=(const PathProviders&) = delete;

  uint32_t hops() const { return static_cast<uint32_t>(held_.size()); }

  // Records `provider` as hop `hop`'s, replacing the hop's previous one. kProviderRepeated when
  // another hop holds it (nothing changes then). `hop` must be below hops().
  [[nodiscard]] PathResult<void> Claim(uint32_t hop, const HopProvider& provider);
  // True when a hop other than `hop` holds `provider`.
  bool HeldByOtherHop(uint32_t hop, const HopProvider& provider) const;
  // Hop `hop` no longer uses a provider (its provider failed; it picks again).
  void Release(uint32_t hop);

 private:
  mutable std::mutex mu_;
  std::vector<std::optional<HopProvider>> held_;  // one entry per hop; guarded by mu_
};

}  // namespace dvpn::tunnel_client
