#include "payments/metering.h"

#include <string>

namespace dvpn::payments {

Result<Amount, MeteringErrc> Charge(const Price& price, uint64_t metered_bytes,
                                    uint64_t elapsed_ms) {
  using u128 = unsigned __int128;
  // Each product is at most (2^64 - 1)^2 < 2^128, so neither can wrap; each quotient is below
  // 2^108, and their sum below 2^109.
  const u128 bytes_term = u128{metered_bytes} * price.per_mb.micro() / kBytesPerMb;
  const u128 time_term = u128{elapsed_ms} * price.per_minute.micro() / kMsPerMinute;
  const u128 total = bytes_term + time_term;
  if (total > UINT64_MAX) {
    return Fail(MeteringErrc::kOverflow, "charge overflows: " + std::to_string(metered_bytes) +
                                             " bytes at " + std::to_string(price.per_mb.micro()) +
                                             "u/MB and " + std::to_string(elapsed_ms) + " ms at " +
                                             std::to_string(price.per_minute.micro()) + "u/min");
  }
  return Amount::FromMicro(static_cast<uint64_t>(total));
}

}  // namespace dvpn::payments
