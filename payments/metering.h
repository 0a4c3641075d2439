#pragma once
// The charge function of a paid tunnel session (docs/payments.md §1): what a session owes for
// `M` metered bytes and `T` elapsed milliseconds at a fixed price. Pure functions on integers;
// thread-safe.

#include <cstdint>

#include "common/amount.h"
#include "common/result.h"

namespace dvpn::payments {

// 1 MB = 10^6 bytes (decimal, like the price lists users read); 1 minute = 60,000 ms.
inline constexpr uint64_t kBytesPerMb = 1'000'000;
inline constexpr uint64_t kMsPerMinute = 60'000;

// Prices above these are refused by both sides at the handshake (docs/payments.md §1).
inline constexpr Amount kMaxPricePerMb = Amount::FromMicro(1'000'000'000'000);
inline constexpr Amount kMaxPricePerMinute = Amount::FromMicro(1'000'000'000'000);

// A session's price, fixed at the handshake.
struct Price {
  Amount per_mb;      // micro-credits per 10^6 metered bytes
  Amount per_minute;  // micro-credits per 60,000 ms; zero when unused
  bool operator==(const Price&) const = default;
};

enum class MeteringErrc {
  kOverflow,  // the charge does not fit in a uint64 of micro-credits
};

// Charge(M, T) = floor(M * per_mb / 10^6) + floor(T * per_minute / 60000), computed exactly
// (128-bit intermediates; defined for every uint64 input). Never above the exact rational
// amount and less than one micro-credit below it per term. kOverflow when the sum does not fit.
[[nodiscard]] Result<Amount, MeteringErrc> Charge(const Price& price, uint64_t metered_bytes,
                                                  uint64_t elapsed_ms);

}  // namespace dvpn::payments
