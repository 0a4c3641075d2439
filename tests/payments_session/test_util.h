#pragma once
// Shared helpers of the payment-session tests: readable enums, fixed ids, terms, and a
// reference charge computed without __int128 (32-bit limbs, schoolbook multiply and long
// division), so the production Charge is checked against an independent computation.

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>

#include "payments/payment_session.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {

inline std::ostream& operator<<(std::ostream& out, PaymentErrc code) {
  return out << PaymentErrcName(code);
}
inline std::ostream& operator<<(std::ostream& out, CloseReason reason) {
  return out << CloseReasonName(reason);
}
}  // namespace dvpn::payments

namespace dvpn {
inline std::ostream& operator<<(std::ostream& out, Amount a) { return out << a.ToString(); }
}  // namespace dvpn

namespace dvpn::payments::testing {

inline LedgerId TestLedger(uint8_t tag = 1) {
  LedgerId id;
  id.bytes.fill(tag);
  return id;
}
inline ChannelId TestChannel(uint8_t tag = 2) {
  ChannelId id;
  id.bytes.fill(tag);
  return id;
}
inline Address TestPayee(uint8_t tag = 3) {
  ByteArray<20> bytes;
  bytes.fill(tag);
  return Address(bytes);
}

inline Amount Micro(uint64_t v) { return Amount::FromMicro(v); }

// Terms with the protocol defaults and the given price.
inline SessionTerms MakeTerms(uint64_t per_mb, uint64_t per_minute = 0) {
  SessionTerms t;
  t.price = Price{Micro(per_mb), Micro(per_minute)};
  t.payee = TestPayee();
  return t;
}

// floor(a * b / d) with 32-bit limbs; empty when the quotient does not fit in 64 bits.
inline std::optional<uint64_t> RefMulDiv(uint64_t a, uint64_t b, uint32_t d) {
  const uint64_t al[2] = {a & 0xffffffff, a >> 32};
  const uint64_t bl[2] = {b & 0xffffffff, b >> 32};
  std::array<uint64_t, 4> p{};  // product, 32 bits per limb, little-endian
  for (int i = 0; i < 2; ++i) {
    uint64_t carry = 0;
    for (int j = 0; j < 2; ++j) {
      const uint64_t prod = al[i] * bl[j];                          // at most (2^32 - 1)^2: fits
      const uint64_t cur = p[i + j] + (prod & 0xffffffff) + carry;  // below 2^34
      p[i + j] = cur & 0xffffffff;
      carry = (cur >> 32) + (prod >> 32);
    }
    for (int k = i + 2; k < 4 && carry != 0; ++k) {
      uint64_t cur = p[k] + carry;
      p[k] = cur & 0xffffffff;
      carry = cur >> 32;
    }
  }
  std::array<uint64_t, 4> q{};
  uint64_t rem = 0;
  for (int k = 3; k >= 0; --k) {
    uint64_t cur = (rem << 32) | p[k];  // rem < d < 2^32, so this fits
    q[k] = cur / d;
    rem = cur % d;
  }
  if (q[3] != 0 || q[2] != 0) return std::nullopt;
  return (q[1] << 32) | q[0];
}

// The charge of docs/payments.md §1, independently of payments/metering.cpp.
inline std::optional<uint64_t> RefCharge(uint64_t per_mb, uint64_t per_minute, uint64_t bytes,
                                         uint64_t ms) {
  auto a = RefMulDiv(bytes, per_mb, 1'000'000);
  auto b = RefMulDiv(ms, per_minute, 60'000);
  if (!a || !b || *a > UINT64_MAX - *b) return std::nullopt;
  return *a + *b;
}

}  // namespace dvpn::payments::testing
