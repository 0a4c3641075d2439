#pragma once
// PayeeSession: the provider's side of a paid tunnel session (docs/payments.md §4). It decides
// when to invoice, checks promises, extends credit only for promises the store reported
// durable, pauses forwarding at the credit window or when the channel's escrow is exhausted,
// and ends the session when the grace time passes without payment.
//
// Pure logic: no clock, sockets, threads or storage inside. The caller passes the session's
// meter (metered bytes M and elapsed milliseconds T since msg2 was sent; T is also the clock
// of the grace timer) and carries out the returned PayeeActions in order. Thread-compatible:
// one tunnel drives it.
//
// The caller's loop:
//   - after counting DATA bytes, and at NextDeadlineMs() when idle: OnMetered(M, T);
//   - on a Promise: CheckPromise(promise, T). Success: hand the SignedPromise to the promise store
//   and,
//     when the store reports it durable, call OnDurable(cumulative, T). Refusal: see Refusal
//     (kDepositReadNeeded: re-read the channel, UpdateDeposit(), then CheckPromise() again);
//   - when an action asks for it (read_deposit), re-read the channel from the ledger and call
//     UpdateDeposit(deposit, T).

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/amount.h"
#include "payments/keys.h"
#include "payments/payment_session.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {

// A provider re-reads the channel when a promise or the amount due is above the deposit it
// knows, unless its deposit is younger than this (docs/payments.md §4, check 3); while paused
// for escrow it re-reads at this period to see top-ups.
inline constexpr uint64_t kDepositMaxAgeMs = 1'000;
// Invoices not yet covered by a durable promise are kept to check promises against (honest
// sessions keep at most window / interval + a few); beyond this the oldest are forgotten.
inline constexpr size_t kMaxOutstandingInvoices = 8'192;

// What the provider knows of the channel at the handshake (from the ledger, cached briefly).
struct ChannelFacts {
  Address provider;
  ByteArray<32> client_key{};
  bool open_and_live = false;  // status open (not closing) and not past expiry + challenge
  Amount deposit;
};

// The provider's checks of docs/payments.md §2 at the handshake (the ledger id is compared by
// the caller): the channel's provider is `self`, its client key is the hello's identity, it is
// open and live, and the escrow it has left above the base covers `first_window` (what the
// session may use before it must pay: FirstWindowCharge). kChannelUnusable with close =
// kPaymentRequired otherwise.
[[nodiscard]] PayResult<void> CheckChannelForSession(const ChannelFacts& channel,
                                                     const Address& self, const PublicKey& client,
                                                     Amount base, Amount first_window);

// What a session with `terms` can be owed before forwarding stops for payment: Charge of one
// credit window of bytes (and, with a per-minute price, of kTimeCreditWindowMs). Saturates at
// Amount::Max() (such terms cannot be admitted).
[[nodiscard]] Amount FirstWindowCharge(const SessionTerms& terms);

enum class Forwarding {
  kUnchanged,
  kPause,   // stop reading upstream sockets and withhold WINDOW grants (docs/tunnel.md §Pause)
  kResume,  // forward again
};

struct SessionEnd {
  CloseReason reason;
  std::string text;  // for the CLOSE frame and the log
};

// What the session must do, in this order: send `send` as CONTROL frames, apply `forwarding`,
// start a channel re-read when `read_deposit`, and when `end` is set send CLOSE and end the
// tunnel (nothing the session does afterwards matters).
struct PayeeActions {
  std::vector<ControlMessage> send;
  Forwarding forwarding = Forwarding::kUnchanged;
  bool read_deposit = false;
  // Record durably that the channel's unpaid bytes may reach this many (the store's channel debt,
  // docs/payments.md §4), then call OnReserved(reserve): the forwarding limit rises only then.
  std::optional<uint64_t> reserve;
  std::optional<SessionEnd> end;

  bool empty() const {
    return send.empty() && forwarding == Forwarding::kUnchanged && !read_deposit && !reserve &&
           !end;
  }
};

class PayeeSession {
 public:
  struct Options {
    SessionTerms terms;  // as offered in msg2, base included
    LedgerId ledger;
    ChannelId channel;
    PublicKey client;  // the hello's identity (the channel's client key)
    Amount deposit;    // the channel's deposit as last read
  };

  // kBadTerms when the terms are outside the protocol's ranges (a provider configuration
  // error); kChannelUnusable (close kPaymentRequired) when the deposit is not above the base.
  [[nodiscard]] static PayResult<PayeeSession> Create(Options options);

  // Metered bytes (M, as the tunnel counts them) are this session's; the session's own meter is
  // carried + M (carried = terms.carried_bytes, the channel's unpaid bytes from earlier
  // sessions), and invoices, paid_bytes and the credit window are in that meter.
  //
  // The meter moved (or a deadline passed). Sends an Invoice when M crossed a multiple of the
  // invoice interval (one invoice for the current M even if several multiples were crossed),
  // and with a per-minute price also each kTimeInvoiceIntervalMs of T; pauses forwarding when
  // unpaid bytes reach the credit window (or, with a per-minute price, unpaid time reaches
  // kTimeCreditWindowMs) or when the escrow cannot cover the amount due; ends the session when
  // paused for the grace time without progress, or on a Charge overflow (kPaymentError). M and
  // T never go back: smaller values are taken as the last ones. Cheap when nothing is due.
  PayeeActions OnMetered(uint64_t metered_bytes, uint64_t elapsed_ms);

  // The checks of docs/payments.md §4 in order. Success: the promise to store (not credited
  // until OnDurable). Refusals (each `notify_peer` unless said otherwise):
  //   kWrongLedger / kWrongChannel, kReplayed, kExceedsEscrow, kUnknownInvoice, kUnderpaid:
  //     counted; the third counted refusal of the session carries close = kPaymentError;
  //   kDuplicate: equal to the latest checked promise; silent, not counted;
  //   kDepositReadNeeded: above a deposit older than kDepositMaxAgeMs; silent, not counted:
  //     re-read the channel, call UpdateDeposit(), then call CheckPromise() again;
  //   kBadSignature: close = kPaymentError at once.
  // `elapsed_ms` is T now (it dates the cached deposit). After the session ended every call is
  // refused silently (kDuplicate, no close).
  [[nodiscard]] PayResult<SignedPromise> CheckPromise(const PromiseMessage& promise,
                                                      uint64_t elapsed_ms);

  // The promise store reports `cumulative` durable. When it is a checked promise above
  // `accepted`, accepted advances, paid_bytes moves to the latest invoice it covers, a Receipt
  // is sent and forwarding resumes if unpaid is now below the window. Anything else (above the
  // latest checked promise, or not above accepted) changes nothing.
  PayeeActions OnDurable(Amount cumulative, uint64_t elapsed_ms);

  // A fresh read of the channel's deposit (after read_deposit or kDepositReadNeeded). Lifts an
  // escrow pause when the deposit now covers B + the amount due; starts one when it does not.
  PayeeActions UpdateDeposit(Amount deposit, uint64_t elapsed_ms);

  // The tunnel stopped at `limit` (its metered bytes plus the upload credit it granted reached
  // it). When that is still ForwardingLimit(): asks for a larger reservation when one is
  // missing, else invoices and pauses as at the credit window (the upload credit the client
  // holds counts as served). A report about an older, lower limit only moves the meter.
  PayeeActions OnLimitReached(uint64_t limit, uint64_t metered_bytes, uint64_t elapsed_ms);

  // The store made `reserved` durable (after actions.reserve). A failure to record ends the
  // session: OnReserveFailed.
  PayeeActions OnReserved(uint64_t reserved, uint64_t elapsed_ms);
  PayeeActions OnReserveFailed(const std::string& why);

  // The most this tunnel may meter (sent + received DATA bytes, upload credit granted included)
  // before it must stop: paid_bytes + min(credit window, reserved) - carried. Never decreases.
  uint64_t ForwardingLimit() const;
  // The channel's unpaid bytes for the next session to carry: carried + M - the metered bytes of
  // the latest invoice covered by the latest *checked* promise. A checked promise is in the
  // store's queue, which commits it even when the tunnel is gone (counting it only once durable
  // would make the client pay those bytes twice); if the store then fails, the provider loses
  // what it covered, as with any promise lost to its own storage.
  uint64_t UnpaidChannelBytes() const;
  uint64_t reserved_bytes() const { return reserved_; }
  uint64_t carried_bytes() const { return options_.terms.carried_bytes; }

  // The elapsed time at which OnMetered must be called even if no byte moves (grace expiry,
  // time invoices, deposit polling); empty when nothing is scheduled.
  std::optional<uint64_t> NextDeadlineMs() const;

  const SessionTerms& terms() const { return options_.terms; }
  const ChannelId& channel() const { return options_.channel; }
  Amount base() const { return options_.terms.base_cumulative; }
  Amount deposit() const { return options_.deposit; }
  // The latest promise that passed the checks (handed to the store; maybe not yet durable).
  Amount checked() const { return checked_; }
  // The latest durable promise: what credit is extended against.
  Amount accepted() const { return accepted_; }
  // metered_bytes of the latest invoice fully covered by accepted.
  uint64_t paid_bytes() const { return paid_bytes_; }
  // The session's own meter (carried + M).
  uint64_t metered_bytes() const { return metered_; }
  uint64_t unpaid_bytes() const { return metered_ - paid_bytes_; }
  bool paused() const { return paused_; }
  bool paused_for_escrow() const { return escrow_paused_; }
  bool ended() const { return ended_; }
  int refusals() const { return refusals_; }
  // The latest invoice sent, if any.
  const std::optional<Invoice>& last_invoice() const { return last_invoice_; }

 private:
  explicit PayeeSession(Options options);

  // Sends an invoice for the current M, T. False when Charge overflowed (the session ended).
  bool MakeInvoice(PayeeActions& actions);
  // Pause, resume, escrow, deposit reads and grace expiry for the current state.
  void Evaluate(PayeeActions& actions);
  void End(PayeeActions& actions, CloseReason reason, std::string text);
  std::unexpected<Refusal> Refuse(PaymentErrc code, std::string message);
  bool DepositFresh() const;
  void Advance(uint64_t elapsed_ms) { elapsed_ = elapsed_ms > elapsed_ ? elapsed_ms : elapsed_; }
  void Meter(uint64_t metered_bytes);
  // The credit limit in the session's meter: paid_bytes + min(window, reserved).
  uint64_t CreditEnd() const;
  // The tunnel reported it is held at the current limit (a report about a lower one is stale).
  bool AtLimit() const { return limit_reached_ && CreditEnd() == limit_at_report_; }

  Options options_;
  Amount checked_;
  Amount accepted_;
  uint64_t metered_ = 0;
  uint64_t elapsed_ = 0;
  uint64_t paid_bytes_ = 0;
  uint64_t paid_elapsed_ = 0;
  uint64_t next_invoice_bytes_ = 0;
  uint64_t next_invoice_ms_ = UINT64_MAX;
  uint64_t last_seq_ = 0;
  std::optional<Invoice> last_invoice_;
  std::deque<Invoice> outstanding_;  // sent, not covered by accepted; contiguous seqs
  bool escrow_short_ = false;        // B + the latest amount due is above the known deposit
  bool paused_ = false;
  bool escrow_paused_ = false;
  uint64_t pause_since_ms_ = 0;  // grace timer start: the pause, or the latest progress
  std::optional<uint64_t> deposit_read_at_ms_;
  std::optional<uint64_t> deposit_requested_at_ms_;  // a read asked for and not answered
  int refusals_ = 0;
  bool ended_ = false;
  uint64_t reserved_ = 0;           // durable bound on the channel's unpaid bytes
  uint64_t reserve_requested_ = 0;  // a reservation asked for and not answered (0: none)
  bool limit_reached_ = false;      // the tunnel reported it stopped at the limit...
  uint64_t limit_at_report_ = 0;    // ...which was this CreditEnd() (stale once it rose)
};

}  // namespace dvpn::payments
