#pragma once
// The provider's payment layer for the exit (docs/payments.md §2, §4): the handshake check of
// the hello's channel (ledger read off the io thread, cached briefly), the session terms for
// msg2, and PayeeController, which drives one tunnel's PayeeSession: invoices (sent after the
// DATA they count), pause/resume, promise checks, durability through the PromiseStore, receipts,
// deposit re-reads and the grace/time deadlines.
//
// Threading: everything here runs on the exit's io thread, except the ledger calls (each on a
// short-lived thread of its own, bounded by a deadline, its result posted back) and the store's
// callbacks (posted back to the io thread). Ownership: the config's pointers are borrowed and
// must outlive the ExitServer and every thread it started (the gateway calls are bounded by
// ledger_timeout).

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "common/result.h"
#include "ledger/types.h"
#include "settlement/ledger_gateway.h"
#include "payments/payee_session.h"
#include "settlement/promise_store.h"
#include "tunnel/handshake.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/metered_session.h"

namespace dvpn::tunnel::session {

struct ExitPaymentConfig {
  payments::Price price;
  uint64_t invoice_interval_bytes = payments::kDefaultInvoiceIntervalBytes;
  uint64_t credit_window_bytes = payments::kDefaultCreditWindowBytes;
  uint32_t payment_grace_ms = payments::kDefaultPaymentGraceMs;
  const payments::PrivateKey* provider_key = nullptr;  // the provider's account key
  payments::LedgerId ledger;
  payments::PromiseStore* store = nullptr;
  payments::LedgerGateway* gateway = nullptr;
  std::chrono::milliseconds ledger_timeout{5'000};     // each GetChannel call
  std::chrono::milliseconds channel_cache_ttl{2'000};  // a channel read is reused this long
};

// Why a paid session is not admitted; every one ends the handshake with CLOSE kPaymentRequired.
enum class AdmissionErrc {
  kRefused,  // the channel or the terms do not allow a session (another ledger, already live,
             // unknown, closed, too small)
  kLedger,   // the channel cannot be read from the ledger (and no cached read serves)
  kStore,    // the promise store is unavailable
};

// The payment side of one ExitServer: channel cache and the set of channels with a live session.
class ExitPayments : public std::enable_shared_from_this<ExitPayments> {
 public:
  explicit ExitPayments(ExitPaymentConfig config) : config_(std::move(config)) {}

  struct Admission {
    payments::SessionTerms terms;
    ledger::ChannelState channel;
  };
  // The provider's checks at the handshake (before msg2). Error: its message is the text for
  // CLOSE kPaymentRequired. On success the channel is marked live until Release().
  asio::awaitable<Result<Admission, AdmissionErrc>> Admit(const ClientHello& hello);
  void Release(const payments::ChannelId& channel) { live_.erase(channel); }

  // Off the io thread: GetChannel with the configured deadline; `done` runs on `ex`.
  void ReadChannel(asio::any_io_executor ex, const payments::ChannelId& channel,
                   std::function<void(payments::GatewayResult<ledger::ChannelState>)> done);

  const ExitPaymentConfig& config() const { return config_; }
  // Sessions admitted from now on get `price` in their terms; open sessions keep theirs.
  // io thread.
  void SetPrice(const payments::Price& price) { config_.price = price; }
  // Waits (bounded by `deadline`) until no ReadChannel thread is running any more, so that the
  // gateway and the io_context may be destroyed. Any thread; true when none is left.
  bool WaitForLedgerCalls(std::chrono::steady_clock::time_point deadline);

 private:
  ExitPaymentConfig config_;
  struct Cached {
    ledger::ChannelState state;
    std::chrono::steady_clock::time_point at;
  };
  std::map<payments::ChannelId, Cached> cache_;
  std::set<payments::ChannelId> live_;
  struct Inflight {
    std::mutex mu;
    std::condition_variable cv;
    size_t count = 0;
  };
  std::shared_ptr<Inflight> inflight_ = std::make_shared<Inflight>();
};

// Drives one paid tunnel (exit side). Created after msg2 was sent; Start() hooks the tunnel.
class PayeeController : public std::enable_shared_from_this<PayeeController> {
 public:
  PayeeController(std::shared_ptr<ExitPayments> payments, payments::PayeeSession session,
                  std::shared_ptr<MeteredSession> tunnel, ledger::ChannelState channel,
                  std::chrono::steady_clock::time_point msg2_sent);
  void Start();
  // The tunnel closed: stops the timer, releases the channel.
  void OnClosed();

  // The session's payment state for the operator (io thread).
  struct Snapshot {
    payments::ChannelId channel;
    payments::Price price;
    Amount accepted;  // cumulative promise accepted in this session (base included)
    bool paused = false;
  };
  Snapshot GetSnapshot() const {
    return Snapshot{session_.channel(), session_.terms().price, session_.accepted(),
                    session_.paused()};
  }

 private:
  uint64_t ElapsedMs() const;
  uint64_t Metered() const;
  void Apply(payments::PayeeActions actions);
  void OnControl(ByteSpan message);
  void HandlePromise(const payments::PromiseMessage& promise, bool after_read);
  void ReadDeposit(std::function<void()> then);
  void Rearm();
  void Send(const payments::ControlMessage& message);

  std::shared_ptr<ExitPayments> payments_;
  payments::PayeeSession session_;
  std::weak_ptr<MeteredSession> tunnel_;
  ledger::ChannelState channel_;
  std::chrono::steady_clock::time_point start_;
  asio::steady_timer timer_;
  std::optional<uint64_t> armed_deadline_;  // the session deadline timer_ waits for, if any
  bool deposit_reading_ = false;
  bool done_ = false;
};

}  // namespace dvpn::tunnel::session
