#pragma once
// The protobuf form of the payment protocol (proto/dvpn/v1/tunnel.proto): session terms in
// handshake msg2's params and the CONTROL frame payloads (docs/payments.md §2-3). The only
// place that touches dvpn.v1.SessionTerms / dvpn.v1.Control; everything else works on the
// domain types of payments/payment_session.h. Pure functions; thread-safe.

#include <cstdint>
#include <optional>
#include <vector>

#include "common/bytes.h"
#include "common/result.h"
#include "payments/payment_session.h"

namespace dvpn::payments::wire {

inline constexpr size_t kMaxTermsSize = 512;     // msg2 params
inline constexpr size_t kMaxControlSize = 8192;  // one CONTROL frame's payload

enum class CodecErrc {
  kTooLarge,   // above kMaxTermsSize / kMaxControlSize
  kMalformed,  // not a protobuf of the expected message
  kBadField,   // a field of the wrong length (ids 32, signatures 64, addresses 20) or bad UTF-8
};

// Encoded terms; always within kMaxTermsSize (at most about 180 bytes).
std::vector<uint8_t> EncodeTerms(const SessionTerms& terms);

// Empty `params`: a free session (nullopt). Otherwise the terms, or kTooLarge / kMalformed /
// kBadField (payee not 20 bytes, base signature neither empty nor 64 bytes). Values are not
// range-checked here (ValidateTerms does that, and a newer version may mean other ranges).
[[nodiscard]] Result<std::optional<SessionTerms>, CodecErrc> DecodeTerms(ByteSpan params);

// Encoded message; always within kMaxControlSize (a Notice's text is cut to kMaxNoticeText
// bytes at a character boundary, and bytes that are not UTF-8 become '?').
std::vector<uint8_t> EncodeControl(const ControlMessage& message);

// One CONTROL payload. nullopt: a message this build does not know (an unset or unknown
// `oneof` case), to be ignored. Errors end the tunnel (kProtocolError / kPaymentError):
// kTooLarge, kMalformed, kBadField (a Promise's signature not 64 bytes, ledger or channel not
// 32; a Notice text that is not UTF-8). A Notice's text is cut to kMaxNoticeText bytes.
[[nodiscard]] Result<std::optional<ControlMessage>, CodecErrc> DecodeControl(ByteSpan payload);

}  // namespace dvpn::payments::wire
