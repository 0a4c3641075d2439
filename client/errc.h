#pragma once
// The user's side's errors (client/: dvpn::client and dvpn::tunnel_client). The message beside
// the code (common/result.h) is the line shown to the user; the code is what a caller branches
// on.

#include "common/result.h"

namespace dvpn::client {

enum class Errc {
  kBadConfig,  // a configuration that cannot work (a top-up without a ledger, a zero amount,
               // a file that cannot be opened)
  kLedger,     // the ledger did not answer as needed
  kChannel,    // no usable channel: not ours, not open, none to the provider
  kOffers,     // the offer node did not answer the offer list
};

}  // namespace dvpn::client
