#pragma once
// Small types shared by the two ends of a paid tunnel session (docs/payments.md §2-5, §8): the
// session terms, the four CONTROL messages in domain form, why a payment step was refused, the
// client's spend policy and its per-day spending. The protobuf form lives in
// payments/wire/control_codec.h; the state machines in payee_session.h (provider) and
// payer_session.h (client). Value types are thread-compatible; DailySpend is thread-safe.

#include <cstdint>
#include <expected>
#include <mutex>
#include <optional>
#include <string>
#include <variant>

#include "common/amount.h"
#include "payments/keys.h"
#include "payments/metering.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {

// ---- Session terms (handshake msg2, docs/payments.md §2) ------------------------------------

// Version 2: the channel's unpaid bytes carry over between sessions (`carried_bytes`) and the
// client's tunnel send window starts at 0 (the exit grants upload credit from its credit window).
inline constexpr uint32_t kTermsVersion = 2;
inline constexpr uint64_t kDefaultInvoiceIntervalBytes = 1'000'000;
inline constexpr uint64_t kDefaultCreditWindowBytes = 2'000'000;
inline constexpr uint32_t kDefaultPaymentGraceMs = 10'000;
// The ranges both sides accept (docs/payments.md §2).
inline constexpr uint64_t kMinInvoiceIntervalBytes = 65'536;      // 64 KiB
inline constexpr uint64_t kMaxInvoiceIntervalBytes = 64'000'000;  // 64 MB
inline constexpr uint64_t kMaxCreditWindowBytes = 256'000'000;    // 256 MB
inline constexpr uint32_t kMinPaymentGraceMs = 100;
inline constexpr uint32_t kMaxPaymentGraceMs = 600'000;
// With a per-minute price the provider also invoices every minute of elapsed time and pauses
// when two minutes of time are unpaid, so time is paid for on an idle tunnel too (§4).
inline constexpr uint64_t kTimeInvoiceIntervalMs = 60'000;
inline constexpr uint64_t kTimeCreditWindowMs = 120'000;

struct SessionTerms {
  uint32_t version = kTermsVersion;
  Price price;
  uint64_t invoice_interval_bytes = kDefaultInvoiceIntervalBytes;
  uint64_t credit_window_bytes = kDefaultCreditWindowBytes;
  uint32_t payment_grace_ms = kDefaultPaymentGraceMs;
  Address payee;  // the provider's account
  // The session's base B: the latest promise the provider holds for the channel. Zero with no
  // signature when there is none; a non-zero base always has the client's signature.
  Amount base_cumulative;
  std::optional<Signature> base_signature;
  // Bytes served on this channel by earlier sessions and not covered by a promise (the provider's
  // durable record, docs/payments.md §4 "Unpaid traffic per channel"). The session's invoices
  // count them as if metered in this session; at most credit_window_bytes.
  uint64_t carried_bytes = 0;

  bool operator==(const SessionTerms&) const = default;
};

// ---- CONTROL messages (docs/payments.md §3) ------------------------------------------------

// Provider -> client. All fields session-cumulative.
struct Invoice {
  uint64_t seq = 0;  // 1, 2, ... strictly increasing
  uint64_t metered_bytes = 0;
  uint64_t elapsed_ms = 0;
  Amount amount_due;  // Charge(metered_bytes, elapsed_ms)
  bool operator==(const Invoice&) const = default;
};

// Client -> provider: a signed channel-cumulative promise.
struct PromiseMessage {
  uint64_t invoice_seq = 0;  // the invoice it answers; 0 for none
  Amount cumulative;         // B + paid
  Signature signature{};     // BIP-340 over PromiseDigest(ledger, channel, cumulative)
  LedgerId ledger;
  ChannelId channel;
  bool operator==(const PromiseMessage&) const = default;
};

// Provider -> client: the channel's latest promise is durable at `cumulative`.
struct Receipt {
  Amount cumulative;
  bool operator==(const Receipt&) const = default;
};

// Values of dvpn.v1.Notice.Code. Other values may arrive from newer peers and are kept as is.
enum class NoticeCode : uint32_t {
  kUnspecified = 0,
  kPaused = 1,
  kResumed = 2,
  kPromiseRefused = 3,
  kEscrowLow = 4,
};
inline constexpr size_t kMaxNoticeText = 256;  // bytes; longer text is cut when encoding

// Either way: a payment state change worth a log line.
struct Notice {
  NoticeCode code = NoticeCode::kUnspecified;
  std::string text;
  bool operator==(const Notice&) const = default;
};

using ControlMessage = std::variant<Invoice, PromiseMessage, Receipt, Notice>;

// ---- Outcomes ------------------------------------------------------------------------------

// Why a tunnel ends for payment reasons; values are the CLOSE codes of docs/payments.md §8 (the
// tunnel layer maps them onto its own CloseReason).
enum class CloseReason : uint8_t {
  kPaymentRequired = 5,  // provider: channel unusable, or escrow exhausted (tunnel value 5)
  kPaymentTimeout = 7,   // provider: paused for the grace time without payment
  kPaymentError = 8,     // either: bad signature, repeated refusals, overflow, bad message
  kOvercharge = 9,       // client: an invoice beyond its meter and tolerance
  kSpendCap = 10,        // client: a spending cap reached
  kTermsRefused = 11,    // client: terms outside its policy
};
const char* CloseReasonName(CloseReason reason);

enum class PaymentErrc {
  // Terms and channel (handshake).
  kBadTerms,         // outside the protocol's ranges (version, limits, base inconsistent)
  kPolicy,           // within the protocol but above the client's policy (price)
  kWrongPayee,       // payee is not the provider the client expected
  kBadBase,          // the base signature is not the client's over the base promise
  kChannelUnusable,  // provider: the channel cannot carry this session (§2)
  // Promise checks (provider, docs/payments.md §4, in this order).
  kWrongLedger,        // 1. promise for another ledger
  kWrongChannel,       // 1. promise for another channel
  kDuplicate,          // 2. equal to the latest checked promise: ignored silently
  kReplayed,           // 2. below the latest checked promise
  kDepositReadNeeded,  // 3. above the cached deposit: re-read the channel, then check again
  kExceedsEscrow,      // 3. above the deposit just read
  kBadSignature,       // 4. not the session's client's signature (ends the tunnel)
  kUnknownInvoice,     // 5. names an invoice never sent
  kUnderpaid,          // 5. does not cover the invoice it names
  // Invoice checks (client, docs/payments.md §5).
  kOvercharge,
  kSessionCap,
  kDailyCap,
  kOverflow,  // an amount does not fit in a uint64
};
const char* PaymentErrcName(PaymentErrc code);

// Why a payment step did not go through, and what the session must do about it.
struct Refusal {
  PaymentErrc code = PaymentErrc::kBadTerms;
  std::string message;               // for a person; also the Notice / CLOSE text. No secrets.
  std::optional<CloseReason> close;  // set: the tunnel must end with this reason and `message`
  bool notify_peer = false;          // provider: send Notice kPromiseRefused with `message`
};

template <class T>
using PayResult = std::expected<T, Refusal>;

// kBadTerms unless the terms are within the protocol's ranges (docs/payments.md §2): version 1,
// prices ≤ 10^12, interval in [64 KiB, 64 MB], window in [interval, 256 MB], grace in [100 ms,
// 10 min], and a non-zero base with a signature or a zero base without one. Both sides use it:
// the client before its own policy, the provider on the terms it offers. Never closes by itself
// (`close` is unset; the caller knows which reason applies).
[[nodiscard]] PayResult<void> ValidateTerms(const SessionTerms& terms);

// ---- The client's spend policy (docs/payments.md §5) ---------------------------------------

struct SpendPolicy {
  Amount max_price_per_mb = kMaxPricePerMb;
  Amount max_price_per_minute = kMaxPricePerMinute;
  uint64_t tolerance_bytes = 65'536;
  uint64_t tolerance_ms = 2'000;
  Amount session_cap;  // zero: no cap
  Amount daily_cap;    // zero: no cap
  // Carried bytes (SessionTerms::carried_bytes) the client accepts to pay for: for a channel it
  // has no record of, at most max_carried_bytes; for a channel whose previous session this
  // process saw end, at most what its own meter left unpaid plus carry_slack_bytes (frames the
  // provider had queued when the tunnel broke count at the provider only). Never above either.
  uint64_t max_carried_bytes = 4'000'000;
  uint64_t carry_slack_bytes = 1'048'576;
  // Used by executables that hold a ledger connection, not by PayerSession.
  Amount top_up_amount;
  Amount low_escrow_threshold;
};

// The client's top-up rule (docs/payments.md §5, --top-up-below): the escrow runs low when
// what the deposit leaves after `signed_total` is below `below`; a total at or above the
// deposit leaves nothing. The one place the rule is written (client/escrow_top_up.cpp asks it).
inline bool EscrowRunsLow(Amount deposit, Amount signed_total, Amount below) {
  return deposit.CheckedSub(signed_total).value_or(Amount::Zero()) < below;
}

// The UTC day number of a Unix time (days since 1970-01-01).
inline constexpr uint64_t UtcDay(uint64_t unix_seconds) { return unix_seconds / 86'400; }

// What one process spent per UTC day, shared by all its client sessions (reconnects included).
// Only the latest day is kept: a later day starts from zero; an earlier day (a clock that went
// back) counts towards the latest one, which can only make the cap stricter. Thread-safe.
class DailySpend {
 public:
  DailySpend() = default;
  DailySpend(const DailySpend&) = delete;
  DailySpend& operator=(const DailySpend&) = delete;

  // The total counted for `utc_day` (see above for days other than the latest).
  Amount SpentOn(uint64_t utc_day) const;
  // Adds `amount` to `utc_day` when the day's total stays ≤ `cap` (zero cap: no limit) and fits
  // in a uint64; otherwise changes nothing and returns false.
  [[nodiscard]] bool TryAdd(uint64_t utc_day, Amount amount, Amount cap);
  // Adds `amount` unconditionally (spending recorded elsewhere, e.g. read back at start-up);
  // saturates at Amount::Max().
  void Record(uint64_t utc_day, Amount amount);

 private:
  mutable std::mutex mu_;
  uint64_t day_ = 0;
  Amount spent_;
};

}  // namespace dvpn::payments
