#include "payments/payee_session.h"

#include <algorithm>
#include <utility>

namespace dvpn::payments {
namespace {

using std::to_string;

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

// The first multiple of `interval` above `m` (UINT64_MAX when it does not fit).
uint64_t NextMultiple(uint64_t m, uint64_t interval) {
  uint64_t next;
  if (__builtin_mul_overflow(m / interval + 1, interval, &next)) return UINT64_MAX;
  return next;
}

std::unexpected<Refusal> Unusable(std::string message) {
  return std::unexpected(Refusal{PaymentErrc::kChannelUnusable, std::move(message),
                                 CloseReason::kPaymentRequired, false});
}

}  // namespace

PayResult<void> CheckChannelForSession(const ChannelFacts& channel, const Address& self,
                                       const PublicKey& client, Amount base,
                                       Amount first_window) {
  if (channel.provider != self) return Unusable("the channel belongs to another provider");
  if (channel.client_key != client.bytes()) {
    return Unusable("the channel's client key is not the hello's identity");
  }
  if (!channel.open_and_live) return Unusable("the channel is closing, closed or expired");
  if (channel.deposit <= base) {
    return Unusable("the channel's escrow is exhausted (deposit " + channel.deposit.ToString() +
                    ", promised " + base.ToString() + ")");
  }
  const Amount left = *channel.deposit.CheckedSub(base);
  if (left < first_window) {
    return Unusable("the channel's escrow left (" + left.ToString() +
                    ") does not cover one credit window (" + first_window.ToString() +
                    "): top it up");
  }
  return {};
}

Amount FirstWindowCharge(const SessionTerms& terms) {
  const uint64_t ms = terms.price.per_minute.IsZero() ? 0 : kTimeCreditWindowMs;
  auto due = Charge(terms.price, terms.credit_window_bytes, ms);
  return due ? *due : Amount::Max();
}

PayeeSession::PayeeSession(Options options)
    : options_(std::move(options)),
      checked_(options_.terms.base_cumulative),
      accepted_(options_.terms.base_cumulative),
      metered_(options_.terms.carried_bytes),
      next_invoice_bytes_(
          NextMultiple(options_.terms.carried_bytes, options_.terms.invoice_interval_bytes)),
      next_invoice_ms_(options_.terms.price.per_minute.IsZero() ? UINT64_MAX
                                                                : kTimeInvoiceIntervalMs),
      reserved_(options_.terms.carried_bytes) {}

void PayeeSession::Meter(uint64_t metered_bytes) {
  metered_ = std::max(metered_, SaturatingAdd(options_.terms.carried_bytes, metered_bytes));
}

uint64_t PayeeSession::CreditEnd() const {
  return SaturatingAdd(paid_bytes_, std::min(options_.terms.credit_window_bytes, reserved_));
}

uint64_t PayeeSession::ForwardingLimit() const {
  // reserved_ >= carried and the window >= carried (ValidateTerms), so this does not wrap.
  return CreditEnd() - options_.terms.carried_bytes;
}

PayResult<PayeeSession> PayeeSession::Create(Options options) {
  if (auto ok = ValidateTerms(options.terms); !ok) return std::unexpected(ok.error());
  if (options.deposit <= options.terms.base_cumulative) {
    return Unusable("the channel's escrow is exhausted (deposit " + options.deposit.ToString() +
                    ", promised " + options.terms.base_cumulative.ToString() + ")");
  }
  return PayeeSession(std::move(options));
}

PayeeActions PayeeSession::OnMetered(uint64_t metered_bytes, uint64_t elapsed_ms) {
  PayeeActions actions;
  if (ended_) return actions;
  Meter(metered_bytes);
  Advance(elapsed_ms);
  if (metered_ >= next_invoice_bytes_ || elapsed_ >= next_invoice_ms_) {
    if (!MakeInvoice(actions)) return actions;
  }
  Evaluate(actions);
  return actions;
}

bool PayeeSession::MakeInvoice(PayeeActions& actions) {
  const SessionTerms& t = options_.terms;
  auto due = Charge(t.price, metered_, elapsed_);
  if (!due) {
    End(actions, CloseReason::kPaymentError, "cannot invoice: " + due.error().message);
    return false;
  }
  Invoice invoice{++last_seq_, metered_, elapsed_, *due};
  actions.send.emplace_back(invoice);
  last_invoice_ = invoice;
  next_invoice_bytes_ = NextMultiple(metered_, t.invoice_interval_bytes);
  if (!t.price.per_minute.IsZero()) {
    next_invoice_ms_ = SaturatingAdd(elapsed_, kTimeInvoiceIntervalMs);
  }
  auto total = base().CheckedAdd(*due);
  escrow_short_ = !total || *total > options_.deposit;

  // Amounts never decrease with seq, so an invoice already covered by accepted covers all the
  // earlier ones too (an honest client does not re-sign an amount it already signed).
  if (*due <= *accepted_.CheckedSub(base())) {
    outstanding_.clear();
    if (metered_ > paid_bytes_ && paused_) pause_since_ms_ = elapsed_;
    paid_bytes_ = metered_;
    paid_elapsed_ = elapsed_;
  } else {
    outstanding_.push_back(invoice);
    if (outstanding_.size() > kMaxOutstandingInvoices) outstanding_.pop_front();
  }
  return true;
}

bool PayeeSession::DepositFresh() const {
  return deposit_read_at_ms_ && elapsed_ - *deposit_read_at_ms_ < kDepositMaxAgeMs;
}

void PayeeSession::Evaluate(PayeeActions& actions) {
  if (ended_) return;
  const SessionTerms& t = options_.terms;

  // Escrow: a shortfall pauses only once confirmed by a fresh read of the channel.
  if (escrow_short_) {
    if (DepositFresh()) {
      if (!escrow_paused_) {
        escrow_paused_ = true;
        const Amount due = last_invoice_ ? last_invoice_->amount_due : Amount::Zero();
        const auto owed = base().CheckedAdd(due);
        actions.send.emplace_back(
            Notice{NoticeCode::kEscrowLow,
                   "channel escrow exhausted: " + (owed ? owed->ToString() : std::string("more")) +
                       " owed in total, deposit " + options_.deposit.ToString()});
        if (paused_) pause_since_ms_ = elapsed_;  // the escrow's own grace time starts now
      }
    } else if (!deposit_requested_at_ms_ ||
               elapsed_ - *deposit_requested_at_ms_ >= kDepositMaxAgeMs) {
      actions.read_deposit = true;
      deposit_requested_at_ms_ = elapsed_;
    }
  }

  // Reservation: the durable bound on the channel's unpaid bytes stays ahead of them by at least
  // a step (a quarter window), rising to the window; the tunnel is held at the bound meanwhile.
  const uint64_t window = t.credit_window_bytes;
  if (reserve_requested_ == 0 && reserved_ < window) {
    const uint64_t step = std::max<uint64_t>(window / 4, 1);
    const uint64_t unpaid = metered_ - paid_bytes_;
    const uint64_t headroom = reserved_ > unpaid ? reserved_ - unpaid : 0;
    if (headroom < step || AtLimit()) {
      reserve_requested_ = std::min(
          window, std::max(SaturatingAdd(unpaid, 2 * step), SaturatingAdd(reserved_, step)));
      actions.reserve = reserve_requested_;
    }
  }

  const bool time_priced = !t.price.per_minute.IsZero();
  auto credit_short = [&] {
    // At the limit with the whole window reserved: the upload credit the client holds fills
    // the rest of the window.
    const bool held =
        AtLimit() && reserve_requested_ == 0 && reserved_ >= window && metered_ > paid_bytes_;
    return metered_ - paid_bytes_ >= window || held ||
           (time_priced && elapsed_ - paid_elapsed_ >= kTimeCreditWindowMs);
  };
  bool want_pause = credit_short() || escrow_paused_;

  if (want_pause && !paused_) {
    // First an invoice for the current M, T, so that paying it is enough to resume (unless the
    // latest invoice already asks exactly that). An overpaying client may have covered it
    // already, and then there is no reason to pause.
    const bool same = last_invoice_ && last_invoice_->metered_bytes == metered_ &&
                      (!time_priced || last_invoice_->elapsed_ms == elapsed_);
    if (!same) {
      if (!MakeInvoice(actions)) return;
      want_pause = credit_short() || escrow_paused_;
    }
  }
  if (want_pause && !paused_) {
    paused_ = true;
    pause_since_ms_ = elapsed_;
    actions.forwarding = Forwarding::kPause;
    std::string why = escrow_paused_
                          ? "channel escrow exhausted"
                          : to_string(metered_ - paid_bytes_) + " unpaid bytes (credit window " +
                                to_string(t.credit_window_bytes) + ")";
    if (time_priced && !escrow_paused_) {
      why += ", " + to_string(elapsed_ - paid_elapsed_) + " unpaid ms";
    }
    actions.send.emplace_back(Notice{NoticeCode::kPaused, "forwarding paused: " + why});
  } else if (!want_pause && paused_) {
    paused_ = false;
    actions.forwarding = Forwarding::kResume;
    actions.send.emplace_back(Notice{NoticeCode::kResumed, "forwarding resumed"});
  }

  if (paused_ && elapsed_ - pause_since_ms_ >= t.payment_grace_ms) {
    if (escrow_paused_) {
      End(actions, CloseReason::kPaymentRequired,
          "channel escrow exhausted: no top-up for " + to_string(t.payment_grace_ms) + " ms");
    } else {
      End(actions, CloseReason::kPaymentTimeout,
          "no payment for " + to_string(t.payment_grace_ms) + " ms");
    }
  }
}

void PayeeSession::End(PayeeActions& actions, CloseReason reason, std::string text) {
  ended_ = true;
  actions.end = SessionEnd{reason, std::move(text)};
}

std::unexpected<Refusal> PayeeSession::Refuse(PaymentErrc code, std::string message) {
  Refusal refusal{code, std::move(message), std::nullopt, true};
  if (++refusals_ >= 3) {
    ended_ = true;
    refusal.close = CloseReason::kPaymentError;
    refusal.message = "3 promises refused, the last: " + refusal.message;
  }
  return std::unexpected(std::move(refusal));
}

PayResult<SignedPromise> PayeeSession::CheckPromise(const PromiseMessage& p, uint64_t elapsed_ms) {
  Advance(elapsed_ms);
  if (ended_) {
    return std::unexpected(
        Refusal{PaymentErrc::kDuplicate, "the session has ended", std::nullopt, false});
  }
  // 1. The session's ledger and channel.
  if (p.ledger != options_.ledger) {
    return Refuse(PaymentErrc::kWrongLedger, "promise for another ledger");
  }
  if (p.channel != options_.channel) {
    return Refuse(PaymentErrc::kWrongChannel, "promise for another channel");
  }
  // 2. Above the latest checked promise.
  if (p.cumulative == checked_) {
    return std::unexpected(Refusal{PaymentErrc::kDuplicate,
                                   "duplicate promise " + p.cumulative.ToString(), std::nullopt,
                                   false});
  }
  if (p.cumulative < checked_) {
    return Refuse(PaymentErrc::kReplayed, "old or replayed promise (" + p.cumulative.ToString() +
                                              " below " + checked_.ToString() + ")");
  }
  // 3. Within the escrow, against a fresh deposit.
  if (p.cumulative > options_.deposit) {
    if (!DepositFresh()) {
      deposit_requested_at_ms_ = elapsed_;
      return std::unexpected(Refusal{PaymentErrc::kDepositReadNeeded,
                                     "promise above the cached deposit: re-read the channel",
                                     std::nullopt, false});
    }
    return Refuse(PaymentErrc::kExceedsEscrow, "promise exceeds the escrow (" +
                                                   p.cumulative.ToString() + " above deposit " +
                                                   options_.deposit.ToString() + ")");
  }
  // 4. The session's client signed it.
  if (!options_.client.Verify(PromiseDigest(p.ledger, p.channel, p.cumulative), p.signature)) {
    ended_ = true;
    return std::unexpected(Refusal{PaymentErrc::kBadSignature, "bad promise signature",
                                   CloseReason::kPaymentError, true});
  }
  // 5. It covers the invoice it names. Invoices no longer kept were covered by accepted, which
  // this promise exceeds (checked >= accepted).
  if (p.invoice_seq > last_seq_) {
    return Refuse(PaymentErrc::kUnknownInvoice,
                  "promise for invoice " + to_string(p.invoice_seq) + ", never sent");
  }
  const Amount paid = *p.cumulative.CheckedSub(base());
  if (p.invoice_seq != 0 && !outstanding_.empty() && p.invoice_seq >= outstanding_.front().seq) {
    const Invoice& named = outstanding_[p.invoice_seq - outstanding_.front().seq];
    if (paid < named.amount_due) {
      return Refuse(PaymentErrc::kUnderpaid, "underpaid: invoice " + to_string(named.seq) +
                                                 " asks " + named.amount_due.ToString() +
                                                 ", promise pays " + paid.ToString());
    }
  }
  checked_ = p.cumulative;
  return SignedPromise{p.channel, p.cumulative, p.signature};
}

PayeeActions PayeeSession::OnDurable(Amount cumulative, uint64_t elapsed_ms) {
  PayeeActions actions;
  if (ended_) return actions;
  Advance(elapsed_ms);
  if (cumulative > checked_ || cumulative <= accepted_) return actions;
  accepted_ = cumulative;
  const Amount paid = *accepted_.CheckedSub(base());
  bool progress = false;
  while (!outstanding_.empty() && outstanding_.front().amount_due <= paid) {
    paid_bytes_ = outstanding_.front().metered_bytes;
    paid_elapsed_ = outstanding_.front().elapsed_ms;
    outstanding_.pop_front();
    progress = true;
  }
  actions.send.emplace_back(Receipt{accepted_});
  if (progress && paused_) pause_since_ms_ = elapsed_;
  Evaluate(actions);
  return actions;
}

PayeeActions PayeeSession::UpdateDeposit(Amount deposit, uint64_t elapsed_ms) {
  PayeeActions actions;
  if (ended_) return actions;
  Advance(elapsed_ms);
  const bool grew = deposit > options_.deposit;
  options_.deposit = deposit;
  deposit_read_at_ms_ = elapsed_;
  deposit_requested_at_ms_.reset();
  const Amount due = last_invoice_ ? last_invoice_->amount_due : Amount::Zero();
  auto total = base().CheckedAdd(due);
  escrow_short_ = !total || *total > deposit;
  if (escrow_paused_ && !escrow_short_) {
    escrow_paused_ = false;
    pause_since_ms_ = elapsed_;
  } else if (escrow_paused_ && grew) {
    pause_since_ms_ = elapsed_;  // a top-up showed: progress
  }
  Evaluate(actions);
  return actions;
}

uint64_t PayeeSession::UnpaidChannelBytes() const {
  uint64_t covered = paid_bytes_;
  const Amount paid = *checked_.CheckedSub(base());
  for (const Invoice& invoice : outstanding_) {
    if (invoice.amount_due > paid) break;  // amounts never decrease with seq
    covered = std::max(covered, invoice.metered_bytes);
  }
  return metered_ - covered;
}

PayeeActions PayeeSession::OnLimitReached(uint64_t limit, uint64_t metered_bytes,
                                          uint64_t elapsed_ms) {
  if (limit != ForwardingLimit()) return OnMetered(metered_bytes, elapsed_ms);  // stale
  PayeeActions actions;
  if (ended_) return actions;
  Meter(metered_bytes);
  Advance(elapsed_ms);
  limit_reached_ = true;
  limit_at_report_ = CreditEnd();
  if (metered_ >= next_invoice_bytes_ || elapsed_ >= next_invoice_ms_) {
    if (!MakeInvoice(actions)) return actions;
  }
  Evaluate(actions);
  return actions;
}

PayeeActions PayeeSession::OnReserved(uint64_t reserved, uint64_t elapsed_ms) {
  PayeeActions actions;
  if (ended_) return actions;
  Advance(elapsed_ms);
  reserved_ = std::max(reserved_, std::min(reserved, options_.terms.credit_window_bytes));
  reserve_requested_ = 0;
  Evaluate(actions);
  return actions;
}

PayeeActions PayeeSession::OnReserveFailed(const std::string& why) {
  PayeeActions actions;
  if (ended_) return actions;
  reserve_requested_ = 0;
  End(actions, CloseReason::kPaymentError, "cannot record the channel's unpaid traffic: " + why);
  return actions;
}

std::optional<uint64_t> PayeeSession::NextDeadlineMs() const {
  if (ended_) return std::nullopt;
  const SessionTerms& t = options_.terms;
  uint64_t next = UINT64_MAX;
  if (paused_) next = std::min(next, SaturatingAdd(pause_since_ms_, t.payment_grace_ms));
  if (!t.price.per_minute.IsZero()) {
    next = std::min(next, next_invoice_ms_);
    if (!paused_) next = std::min(next, SaturatingAdd(paid_elapsed_, kTimeCreditWindowMs));
  }
  if (escrow_short_) {
    // The next channel read: when the latest read (or request) is kDepositMaxAgeMs old.
    const uint64_t last =
        std::max(deposit_read_at_ms_.value_or(0), deposit_requested_at_ms_.value_or(0));
    next = std::min(next, SaturatingAdd(last, kDepositMaxAgeMs));
  }
  if (next == UINT64_MAX) return std::nullopt;
  return next;
}

}  // namespace dvpn::payments
