#pragma once
// The seller's errors (provider/, namespace dvpn::node): what its configuration, endpoints,
// offer publishing and dashboard report. The message beside the code (common/result.h) is the
// line shown to the operator and stays as it was; the code is what a caller branches on.

#include "common/result.h"

namespace dvpn::node {

enum class Errc {
  kBadConfig,     // a configuration key, override or address that is not acceptable
  kIo,            // a file or database could not be read or opened
  kBadEndpoint,   // an offer endpoint refused: wildcard, loopback, does not resolve
  kOfferRefused,  // the offer failed the field rules or the gossip node refused it
  kOverCap,       // over the monthly data cap: the offer stays retired
  kListen,        // a listener could not be bound, or was started before
  kLedger,        // the ledger did not answer (its id, at start)
};

}  // namespace dvpn::node
