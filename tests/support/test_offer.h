#pragma once
// The offer the marketplace tests (and the gossip fuzz target) start from: valid and live for
// `network`, with the fields a test does not exercise set to fixed plausible values. Unsigned:
// the test changes what it needs, then signs. Header-only; no gtest.

#include <cstdint>
#include <string>

#include "common/amount.h"
#include "marketplace/offer.h"

namespace dvpn::testing {

struct TestOfferFields {
  uint32_t offer_id = 1;
  uint64_t seq = 1;
  uint64_t issued_unix = 0;
  uint64_t lifetime_s = 3600;
  uint64_t price_micro = 10'000;  // per MB
  std::string region = "eu";
};

// Also: tunnel key 0xa4.., 100 Mbit/s, 8 sessions, one endpoint 127.0.0.1:7443.
inline marketplace::Offer UnsignedTestOffer(const payments::LedgerId& network,
                                            const TestOfferFields& f) {
  marketplace::Offer o;
  o.ledger = network;
  o.offer_id = f.offer_id;
  o.seq = f.seq;
  o.issued_unix = f.issued_unix;
  o.expires_unix = f.issued_unix + f.lifetime_s;
  o.tunnel_key.fill(0xa4);
  o.price_per_mb = Amount::FromMicro(f.price_micro);
  o.capacity_mbps = 100;
  o.max_sessions = 8;
  o.region = f.region;
  o.endpoints = {marketplace::Endpoint{"127.0.0.1", 7443}};
  return o;
}

}  // namespace dvpn::testing
