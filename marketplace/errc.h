#pragma once
// The marketplace's errors: every way an offer, a price, an endpoint or the gossip transport can
// be refused. The message beside the code (common/result.h) is the line shown to the user; the
// code is what a caller branches on.

#include "common/result.h"

namespace dvpn::marketplace {

enum class Errc {
  kBadField,        // a field breaks protocol.md §6 (characters, byte length, range, zero)
  kTooLarge,        // a size or an amount above its limit (encoding, region, price)
  kBadSignature,    // the offer's signature does not verify
  kExpired,         // the offer expired, or is issued too far in the future
  kWrongNetwork,    // the offer is for another ledger
  kNotNewer,        // a version as new is held already (duplicate or stale seq)
  kRefused,         // valid but not taken now: rate limited, slot too busy, book full
  kBadConfig,       // a transport or server option that cannot work (address, round)
  kNotRunning,      // the gossip transport is not running, or was started before
  kTransport,       // cannot listen, or the node did not answer in time
};

const char* ErrcName(Errc code);

}  // namespace dvpn::marketplace
