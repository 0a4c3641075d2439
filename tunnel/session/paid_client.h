#pragma once
// The client's payment layer (docs/payments.md §2, §5): PayerController checks the terms a
// provider put in msg2 against the client's spend policy and answers each invoice with a signed
// cumulative promise (or ends the tunnel with the reason PayerSession gives). A spending cap
// reached is final: `on_final` is told so that the tunnel keeper stops reconnecting.
//
// Threading: io thread only (the tunnel's). Ownership: shared_ptr, held by the tunnel's
// handlers; the identity key and the DailySpend are borrowed / shared.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "payments/payer_session.h"
#include "payments/spend_journal.h"
#include "tunnel/session/metered_session.h"

namespace dvpn::tunnel::session {

// What this process knows of its channels' unpaid bytes (PayerSession::UnpaidBytes of their
// latest session, kept current while it runs), so that the carried bytes a provider claims in
// the next session's terms can be checked (docs/payments.md §5). Thread-safe.
class CarryBook {
 public:
  std::optional<uint64_t> Get(const payments::ChannelId& channel) const;
  void Set(const payments::ChannelId& channel, uint64_t unpaid_bytes);

 private:
  static constexpr size_t kMaxChannels = 1024;  // a client uses a handful; beyond, forget all
  mutable std::mutex mu_;
  std::map<payments::ChannelId, uint64_t> known_;
};

struct ClientPaymentConfig {
  payments::SpendPolicy policy;
  const payments::PrivateKey* identity = nullptr;  // the channel's client key; not owned
  payments::LedgerId ledger;
  payments::ChannelId channel;
  std::optional<payments::Address> expected_payee;
  std::shared_ptr<payments::DailySpend> daily;  // shared by every tunnel of the process
  // Optional (--spend-file): today's spending is made durable before each promise goes out
  // (docs/payments.md §5); a journal that cannot be written ends the session (kSpendCap).
  std::shared_ptr<payments::SpendJournal> journal;
  // Optional: called on the io thread after each promise went out (its cumulative) and when the
  // provider says the escrow is low (the last cumulative signed, escrow_low = true). The
  // top-up policy listens here. Must not block.
  std::function<void(Amount cumulative, bool escrow_low)> on_escrow_use;
  // Optional: the process's record of unpaid bytes per channel (shared by its reconnects).
  // Null: no record, so a provider's carried bytes are accepted up to
  // policy.max_carried_bytes.
  std::shared_ptr<CarryBook> carry;
};

class PayerController : public std::enable_shared_from_this<PayerController> {
 public:
  // Called once when the session ends for a reason that must not be retried by reconnecting
  // (spending cap, overcharge, terms refused); `why` is one line for the user.
  using FinalHandler = std::function<void(payments::CloseReason reason, const std::string& why)>;

  // Attaches the payment layer to a tunnel whose msg2 params are `tunnel->session_params()`.
  // Empty params: a free session, nothing attached, returns null. Terms that do not decode or
  // are refused: the tunnel is closed (kTermsRefused), `on_final` is called, returns null.
  // Call on the io thread, right after the tunnel started.
  static std::shared_ptr<PayerController> Attach(const std::shared_ptr<MeteredSession>& tunnel,
                                                 const ClientPaymentConfig& config,
                                                 FinalHandler on_final);

  const payments::PayerSession& session() const { return session_; }

 private:
  PayerController(payments::PayerSession session, std::shared_ptr<MeteredSession> tunnel,
                  const ClientPaymentConfig& config, FinalHandler on_final);
  void OnControl(ByteSpan message);
  void End(payments::CloseReason reason, const std::string& why);
  void NoteUnpaid(const MeteredSession& t);
  uint64_t ElapsedMs() const;

  payments::PayerSession session_;
  std::weak_ptr<MeteredSession> tunnel_;
  FinalHandler on_final_;
  std::shared_ptr<payments::SpendJournal> journal_;
  std::shared_ptr<payments::DailySpend> daily_;
  std::function<void(Amount, bool)> on_escrow_use_;
  std::shared_ptr<CarryBook> carry_;
  payments::ChannelId channel_;
  std::chrono::steady_clock::time_point start_;
  // Notices are the provider's to send at will (a paid session at gigabit speed pauses and
  // resumes tens of times a second): at most one info line per kNoticeLogEveryMs, the others
  // counted into the next one and logged at debug.
  static constexpr uint64_t kNoticeLogEveryMs = 10'000;
  uint64_t notice_logged_ms_ = 0;
  uint64_t notices_unlogged_ = 0;
};

}  // namespace dvpn::tunnel::session
