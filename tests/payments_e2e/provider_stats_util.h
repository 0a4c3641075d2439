#pragma once
// Reading what a client that chooses from offers recorded in its --provider-stats file, for the
// end-to-end tests that check it after the client stopped.

#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "marketplace/provider_stats.h"
#include "payments/keys.h"

namespace dvpn::payments_e2e {

// The record of `provider` in `stats_file`; nullopt, with the failure recorded, when the file
// does not open.
inline std::optional<marketplace::ProviderRecord> StoredRecord(
    const std::string& stats_file, const payments::PrivateKey& provider) {
  SystemClock clock;
  auto stats = marketplace::ProviderStats::Open(stats_file, clock);
  if (!stats) {
    ADD_FAILURE() << "cannot open " << stats_file;
    return std::nullopt;
  }
  return stats->Get(provider.public_key().bytes());
}

}  // namespace dvpn::payments_e2e
