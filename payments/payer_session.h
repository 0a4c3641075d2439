#pragma once
// PayerSession: the client's side of a paid tunnel session (docs/payments.md §2, §5). It checks
// the provider's terms against the client's spend policy, then answers each invoice with a
// signed cumulative promise when the invoice is within the client's own meter plus tolerance
// and within its spending caps, and refuses (with the CLOSE reason to send) otherwise.
//
// Pure logic: no clock, sockets or threads inside; the caller passes its own meter (metered
// bytes and elapsed milliseconds since it read msg2) and the UTC day. Thread-compatible: one
// tunnel drives it. The identity key is not owned and must outlive the session; the DailySpend
// is shared (thread-safe) between the sessions of one process.

#include <cstdint>
#include <deque>
#include <utility>
#include <memory>
#include <optional>

#include "payments/keys.h"
#include "payments/payment_session.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {

class PayerSession {
 public:
  struct Options {
    SessionTerms terms;  // as decoded from msg2
    SpendPolicy policy;
    const PrivateKey* identity = nullptr;  // the channel's client key; not owned
    LedgerId ledger;
    ChannelId channel;
    std::optional<Address> expected_payee;  // the channel's or the offer's provider, if known
    // Spending of this process per UTC day; null: a private one (the daily cap then applies to
    // this session alone).
    std::shared_ptr<DailySpend> daily;
    // The channel's unpaid bytes when this process last saw a session of it end
    // (UnpaidBytes() of that session); empty when it has no record. Bounds the carried bytes
    // it accepts (SpendPolicy::carry_slack_bytes).
    std::optional<uint64_t> known_unpaid_bytes;
  };

  // The client checks of docs/payments.md §2, in order: the protocol ranges (kBadTerms), the
  // price against the policy (kPolicy), the carried bytes against the policy and the known
  // unpaid bytes (kPolicy), the payee (kWrongPayee), the base signature: the client's own over
  // PromiseDigest(ledger, channel, base) (kBadBase). Every refusal carries
  // close = kTermsRefused. A null identity is a programming error (kBadTerms, no close).
  [[nodiscard]] static PayResult<PayerSession> Accept(Options options);

  // Handles an Invoice read from the tunnel (docs/payments.md §5). The client's meter is the
  // terms' carried bytes plus its own count of this session's DATA bytes. `own_metered_bytes` and
  // `own_elapsed_ms` are the client's meter when it read the invoice; `utc_day` is today
  // (UtcDay(unix seconds)). Returns:
  //  - a promise to send: the invoice is fair and within the caps; it is now counted as spent;
  //  - nothing: the invoice is stale (seq not above the last one), or asks for no more than
  //    what was already signed;
  //  - kOvercharge (close kOvercharge): metered bytes or elapsed time beyond the client's own
  //    plus tolerance, or an amount above Charge of the invoice's own figures;
  //  - kSessionCap / kDailyCap (close kSpendCap): signing would pass a cap; nothing is signed;
  //  - kOverflow (close kPaymentError): the charge or B + amount does not fit in a uint64.
  // After a refusal the session is over and every later invoice returns nothing.
  [[nodiscard]] PayResult<std::optional<PromiseMessage>> OnInvoice(const Invoice& invoice,
                                                                   uint64_t own_metered_bytes,
                                                                   uint64_t own_elapsed_ms,
                                                                   uint64_t utc_day);

  // Records a Receipt. Returns false (and records nothing) for a receipt above what this session
  // signed, which an honest provider never sends.
  bool OnReceipt(const Receipt& receipt);

  const SessionTerms& terms() const { return options_.terms; }
  Amount base() const { return options_.terms.base_cumulative; }
  // The highest channel-cumulative amount signed in this session (the base before the first).
  Amount last_signed() const { return last_signed_; }
  // last_signed() - base(): what this session has committed to pay.
  Amount session_spent() const;
  // The highest cumulative the provider acknowledged as durable (the base before any receipt).
  Amount acknowledged() const { return acknowledged_; }
  uint64_t last_invoice_seq() const { return last_seq_; }
  // The channel's unpaid bytes by the client's meter: carried + own - metered bytes of the latest
  // invoice whose promise the provider acknowledged (Receipt) (0 when negative). What the next
  // session may carry (Options::known_unpaid_bytes).
  uint64_t UnpaidBytes(uint64_t own_metered_bytes) const;
  bool ended() const { return ended_; }

 private:
  explicit PayerSession(Options options);
  // An invoice of `metered_bytes` is covered by the promise `cumulative` (signed now or before).
  void NoteCovered(Amount cumulative, uint64_t metered_bytes);

  Options options_;
  Amount last_signed_;
  Amount acknowledged_;
  uint64_t last_seq_ = 0;
  // Promises signed and not yet acknowledged, with the metered bytes of the invoice each paid
  // (oldest first; at most kMaxUnacknowledged, older ones forgotten), and the metered bytes of
  // the latest invoice covered by an acknowledged promise.
  static constexpr size_t kMaxUnacknowledged = 256;
  std::deque<std::pair<Amount, uint64_t>> unacknowledged_;
  uint64_t acked_metered_ = 0;
  bool ended_ = false;
};

}  // namespace dvpn::payments
