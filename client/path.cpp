#include "client/path.h"

#include <cassert>
#include <string>

namespace dvpn::tunnel_client {

const char* PathErrcName(PathErrc code) {
  switch (code) {
    case PathErrc::kNoHops: return "no hops";
    case PathErrc::kMultiHopNotBuilt: return "multi-hop not built";
    case PathErrc::kProviderRepeated: return "provider repeated";
  }
  return "unknown";
}

PathResult<void> CheckPathSpec(const PathSpec& spec) {
  if (spec.hops == 0) return Fail(PathErrc::kNoHops, "a path needs at least one hop");
  if (spec.hops > kMaxHopsBuilt) {
    return Fail(PathErrc::kMultiHopNotBuilt,
                "a path of " + std::to_string(spec.hops) +
                    " hops was asked for: multi-hop is not built yet (paths have " +
                    std::to_string(kMaxHopsBuilt) + " hop)");
  }
  return {};
}

PathProviders::PathProviders(uint32_t hops) : held_(hops) {}

PathResult<void> PathProviders::Claim(uint32_t hop, const HopProvider& provider) {
  std::lock_guard lock(mu_);
  assert(hop < held_.size());
  for (uint32_t i = 0; i < held_.size(); ++i) {
    if (i != hop && held_[i] == provider) {
      return Fail(PathErrc::kProviderRepeated,
                  "the provider already serves hop " + std::to_string(i + 1) + " of the path");
    }
  }
  held_[hop] = provider;
  return {};
}

bool PathProviders::HeldByOtherHop(uint32_t hop, const HopProvider& provider) const {
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < held_.size(); ++i) {
    if (i != hop && held_[i] == provider) return true;
  }
  return false;
}

void PathProviders::Release(uint32_t hop) {
  std::lock_guard lock(mu_);
  assert(hop < held_.size());
  held_[hop].reset();
}

}  // namespace dvpn::tunnel_client
