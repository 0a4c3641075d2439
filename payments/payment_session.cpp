#include "payments/payment_session.h"

#include <string>

namespace dvpn::payments {

const char* CloseReasonName(CloseReason reason) {
  switch (reason) {
    case CloseReason::kPaymentRequired:
      return "payment required";
    case CloseReason::kPaymentTimeout:
      return "payment timeout";
    case CloseReason::kPaymentError:
      return "payment error";
    case CloseReason::kOvercharge:
      return "overcharge";
    case CloseReason::kSpendCap:
      return "spending cap";
    case CloseReason::kTermsRefused:
      return "terms refused";
  }
  return "unknown";
}

const char* PaymentErrcName(PaymentErrc code) {
  switch (code) {
    case PaymentErrc::kBadTerms:
      return "bad terms";
    case PaymentErrc::kPolicy:
      return "outside policy";
    case PaymentErrc::kWrongPayee:
      return "wrong payee";
    case PaymentErrc::kBadBase:
      return "bad base promise";
    case PaymentErrc::kChannelUnusable:
      return "channel unusable";
    case PaymentErrc::kWrongLedger:
      return "wrong ledger";
    case PaymentErrc::kWrongChannel:
      return "wrong channel";
    case PaymentErrc::kDuplicate:
      return "duplicate promise";
    case PaymentErrc::kReplayed:
      return "old or replayed promise";
    case PaymentErrc::kDepositReadNeeded:
      return "deposit read needed";
    case PaymentErrc::kExceedsEscrow:
      return "promise exceeds the escrow";
    case PaymentErrc::kBadSignature:
      return "bad signature";
    case PaymentErrc::kUnknownInvoice:
      return "unknown invoice";
    case PaymentErrc::kUnderpaid:
      return "underpaid";
    case PaymentErrc::kOvercharge:
      return "overcharge";
    case PaymentErrc::kSessionCap:
      return "session spending cap";
    case PaymentErrc::kDailyCap:
      return "daily spending cap";
    case PaymentErrc::kOverflow:
      return "overflow";
  }
  return "unknown";
}

namespace {

std::unexpected<Refusal> BadTerms(std::string message) {
  return std::unexpected(Refusal{PaymentErrc::kBadTerms, std::move(message), {}, false});
}

}  // namespace

PayResult<void> ValidateTerms(const SessionTerms& t) {
  using std::to_string;
  if (t.version != kTermsVersion) return BadTerms("terms version " + to_string(t.version));
  if (t.price.per_mb > kMaxPricePerMb) {
    return BadTerms("price per MB " + t.price.per_mb.ToString() + " above the protocol limit");
  }
  if (t.price.per_minute > kMaxPricePerMinute) {
    return BadTerms("price per minute " + t.price.per_minute.ToString() +
                    " above the protocol limit");
  }
  if (t.invoice_interval_bytes < kMinInvoiceIntervalBytes ||
      t.invoice_interval_bytes > kMaxInvoiceIntervalBytes) {
    return BadTerms("invoice interval " + to_string(t.invoice_interval_bytes) +
                    " bytes outside [65536, 64000000]");
  }
  if (t.credit_window_bytes < t.invoice_interval_bytes ||
      t.credit_window_bytes > kMaxCreditWindowBytes) {
    return BadTerms("credit window " + to_string(t.credit_window_bytes) +
                    " bytes outside [invoice interval, 256000000]");
  }
  if (t.payment_grace_ms < kMinPaymentGraceMs || t.payment_grace_ms > kMaxPaymentGraceMs) {
    return BadTerms("payment grace " + to_string(t.payment_grace_ms) + " ms outside [100, 600000]");
  }
  if (t.base_cumulative.IsZero() && t.base_signature.has_value()) {
    return BadTerms("a base signature without a base amount");
  }
  if (!t.base_cumulative.IsZero() && !t.base_signature.has_value()) {
    return BadTerms("a base amount without a signature");
  }
  if (t.carried_bytes > t.credit_window_bytes) {
    return BadTerms("carried " + to_string(t.carried_bytes) +
                    " unpaid bytes, above the credit window");
  }
  return {};
}

Amount DailySpend::SpentOn(uint64_t utc_day) const {
  std::lock_guard lock(mu_);
  return utc_day > day_ ? Amount::Zero() : spent_;
}

bool DailySpend::TryAdd(uint64_t utc_day, Amount amount, Amount cap) {
  std::lock_guard lock(mu_);
  if (utc_day > day_) {
    day_ = utc_day;
    spent_ = Amount::Zero();
  }
  auto total = spent_.CheckedAdd(amount);
  if (!total || (!cap.IsZero() && *total > cap)) return false;
  spent_ = *total;
  return true;
}

void DailySpend::Record(uint64_t utc_day, Amount amount) {
  std::lock_guard lock(mu_);
  if (utc_day > day_) {
    day_ = utc_day;
    spent_ = Amount::Zero();
  }
  spent_ = spent_.CheckedAdd(amount).value_or(Amount::Max());
}

}  // namespace dvpn::payments
