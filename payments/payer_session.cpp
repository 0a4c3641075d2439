#include "payments/payer_session.h"

#include <algorithm>
#include <string>
#include <utility>

namespace dvpn::payments {
namespace {

using std::to_string;

std::unexpected<Refusal> Refuse(PaymentErrc code, std::string message,
                                std::optional<CloseReason> close) {
  return std::unexpected(Refusal{code, std::move(message), close, false});
}

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

}  // namespace

PayerSession::PayerSession(Options options)
    : options_(std::move(options)),
      last_signed_(options_.terms.base_cumulative),
      acknowledged_(options_.terms.base_cumulative) {
  if (!options_.daily) options_.daily = std::make_shared<DailySpend>();
}

PayResult<PayerSession> PayerSession::Accept(Options options) {
  if (options.identity == nullptr) {
    return Refuse(PaymentErrc::kBadTerms, "no client identity", std::nullopt);
  }
  const SessionTerms& t = options.terms;
  const SpendPolicy& p = options.policy;
  if (auto ok = ValidateTerms(t); !ok) {
    return Refuse(ok.error().code, ok.error().message, CloseReason::kTermsRefused);
  }
  if (t.price.per_mb > p.max_price_per_mb) {
    return Refuse(PaymentErrc::kPolicy,
                  "price per MB " + t.price.per_mb.ToString() + " above the limit " +
                      p.max_price_per_mb.ToString(),
                  CloseReason::kTermsRefused);
  }
  if (t.price.per_minute > p.max_price_per_minute) {
    return Refuse(PaymentErrc::kPolicy,
                  "price per minute " + t.price.per_minute.ToString() + " above the limit " +
                      p.max_price_per_minute.ToString(),
                  CloseReason::kTermsRefused);
  }
  const uint64_t carry_allowed =
      options.known_unpaid_bytes
          ? std::min(p.max_carried_bytes,
                     SaturatingAdd(*options.known_unpaid_bytes, p.carry_slack_bytes))
          : p.max_carried_bytes;
  if (t.carried_bytes > carry_allowed) {
    return Refuse(PaymentErrc::kPolicy,
                  "the provider claims " + to_string(t.carried_bytes) +
                      " unpaid bytes from earlier sessions of this channel; at most " +
                      to_string(carry_allowed) + " accepted",
                  CloseReason::kTermsRefused);
  }
  if (options.expected_payee && t.payee != *options.expected_payee) {
    return Refuse(PaymentErrc::kWrongPayee,
                  "payee " + t.payee.ToString() + " is not the expected provider " +
                      options.expected_payee->ToString(),
                  CloseReason::kTermsRefused);
  }
  if (t.base_signature) {
    Hash32 digest = PromiseDigest(options.ledger, options.channel, t.base_cumulative);
    if (!options.identity->public_key().Verify(digest, *t.base_signature)) {
      return Refuse(PaymentErrc::kBadBase,
                    "base promise " + t.base_cumulative.ToString() +
                        " is not signed by this client for this channel",
                    CloseReason::kTermsRefused);
    }
  }
  return PayerSession(std::move(options));
}

PayResult<std::optional<PromiseMessage>> PayerSession::OnInvoice(const Invoice& invoice,
                                                                 uint64_t own_metered_bytes,
                                                                 uint64_t own_elapsed_ms,
                                                                 uint64_t utc_day) {
  if (ended_ || invoice.seq <= last_seq_) return std::nullopt;
  last_seq_ = invoice.seq;
  const SpendPolicy& policy = options_.policy;
  const std::string what = "invoice " + to_string(invoice.seq) + ": ";

  // Overcharge: the invoice's figures beyond the client's own plus tolerance, or an amount
  // above what those figures cost. Since the figures are then within the bounds,
  // Charge(min(figure, bound)) is Charge(figure).
  own_metered_bytes = SaturatingAdd(own_metered_bytes, options_.terms.carried_bytes);
  const uint64_t byte_bound = SaturatingAdd(own_metered_bytes, policy.tolerance_bytes);
  const uint64_t time_bound = SaturatingAdd(own_elapsed_ms, policy.tolerance_ms);
  std::optional<Refusal> refusal;
  if (invoice.metered_bytes > byte_bound) {
    refusal = Refusal{PaymentErrc::kOvercharge,
                      "overcharge: " + what + to_string(invoice.metered_bytes) + " bytes, own meter " +
                          to_string(own_metered_bytes) + " + tolerance " +
                          to_string(policy.tolerance_bytes),
                      CloseReason::kOvercharge, false};
  } else if (invoice.elapsed_ms > time_bound) {
    refusal =
        Refusal{PaymentErrc::kOvercharge,
                "overcharge: " + what + to_string(invoice.elapsed_ms) + " ms, own clock " +
                    to_string(own_elapsed_ms) + " + tolerance " + to_string(policy.tolerance_ms),
                CloseReason::kOvercharge, false};
  }
  if (refusal) {
    ended_ = true;
    return std::unexpected(std::move(*refusal));
  }
  auto fair = Charge(options_.terms.price, invoice.metered_bytes, invoice.elapsed_ms);
  if (!fair) {
    ended_ = true;
    return Refuse(PaymentErrc::kOverflow, what + fair.error().message, CloseReason::kPaymentError);
  }
  if (invoice.amount_due > *fair) {
    ended_ = true;
    return Refuse(PaymentErrc::kOvercharge,
                  "overcharge: " + what + "asks " + invoice.amount_due.ToString() + " for " +
                      to_string(invoice.metered_bytes) + " bytes and " +
                      to_string(invoice.elapsed_ms) + " ms, which cost " + fair->ToString(),
                  CloseReason::kOvercharge);
  }

  const Amount paid = invoice.amount_due;
  auto cumulative = base().CheckedAdd(paid);
  if (!cumulative) {
    ended_ = true;
    return Refuse(PaymentErrc::kOverflow, what + "base + amount due overflows",
                  CloseReason::kPaymentError);
  }
  if (*cumulative <= last_signed_) {  // nothing new to sign: already covered
    NoteCovered(*cumulative, invoice.metered_bytes);
    return std::nullopt;
  }

  if (!policy.session_cap.IsZero() && paid > policy.session_cap) {
    ended_ = true;
    return Refuse(PaymentErrc::kSessionCap,
                  "session spending cap reached (cap " + policy.session_cap.ToString() + ", " +
                      what + "asks " + paid.ToString() + ")",
                  CloseReason::kSpendCap);
  }
  const Amount increment = *cumulative->CheckedSub(last_signed_);
  if (!options_.daily->TryAdd(utc_day, increment, policy.daily_cap)) {
    ended_ = true;
    return Refuse(PaymentErrc::kDailyCap,
                  "daily spending cap reached (cap " + policy.daily_cap.ToString() +
                      ", spent today " + options_.daily->SpentOn(utc_day).ToString() + ", " + what +
                      "adds " + increment.ToString() + ")",
                  CloseReason::kSpendCap);
  }

  PromiseMessage promise;
  promise.invoice_seq = invoice.seq;
  promise.cumulative = *cumulative;
  promise.signature =
      options_.identity->Sign(PromiseDigest(options_.ledger, options_.channel, *cumulative));
  promise.ledger = options_.ledger;
  promise.channel = options_.channel;
  last_signed_ = *cumulative;
  NoteCovered(*cumulative, invoice.metered_bytes);
  return promise;
}

void PayerSession::NoteCovered(Amount cumulative, uint64_t metered_bytes) {
  if (cumulative <= acknowledged_) {
    acked_metered_ = std::max(acked_metered_, metered_bytes);
    return;
  }
  unacknowledged_.emplace_back(cumulative, metered_bytes);
  if (unacknowledged_.size() > kMaxUnacknowledged) unacknowledged_.pop_front();
}

uint64_t PayerSession::UnpaidBytes(uint64_t own_metered_bytes) const {
  const uint64_t meter = SaturatingAdd(own_metered_bytes, options_.terms.carried_bytes);
  return meter > acked_metered_ ? meter - acked_metered_ : 0;
}

bool PayerSession::OnReceipt(const Receipt& receipt) {
  if (receipt.cumulative > last_signed_) return false;
  if (receipt.cumulative > acknowledged_) acknowledged_ = receipt.cumulative;
  while (!unacknowledged_.empty() && unacknowledged_.front().first <= acknowledged_) {
    acked_metered_ = std::max(acked_metered_, unacknowledged_.front().second);
    unacknowledged_.pop_front();
  }
  return true;
}

Amount PayerSession::session_spent() const { return *last_signed_.CheckedSub(base()); }

}  // namespace dvpn::payments
