#pragma once
// EscrowTopUp: the client's "top up when the escrow runs low" policy (docs/payments.md §5,
// --top-up-amount / --top-up-below). It knows the channel's deposit as last read from the
// ledger; when the cumulative signed comes within `below` of it, or the provider says the
// escrow is low, it re-reads the channel and, if it is still low, adds `amount` with a signed
// TopUpChannel. Top-ups move the client's own balance into its escrow (refunded at close), so
// they are not spending and the spending caps do not count them.
//
// Thread-safety: OnEscrowUse may be called from any thread and never blocks; the ledger calls
// run on the object's own worker thread, one at a time, each bounded by the LedgerClient's
// deadline. Ownership: shares the LedgerClient; borrows the key (must outlive the object).

#include <condition_variable>
#include <cstdint>
#include <expected>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "client/errc.h"
#include "common/amount.h"
#include "ledger/rpc/ledger_client.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace dvpn::tunnel_client {

class EscrowTopUp {
 public:
  struct Options {
    const payments::PrivateKey* client = nullptr;  // the channel's client key
    payments::LedgerId ledger;
    payments::ChannelId channel;
    Amount amount;  // added per top-up; non-zero
    Amount below;   // top up when deposit - cumulative signed < below
  };

  EscrowTopUp(std::shared_ptr<ledger::rpc::LedgerClient> ledger, Options options);
  ~EscrowTopUp();  // stops and joins the worker (a call in flight ends by its deadline)
  EscrowTopUp(const EscrowTopUp&) = delete;
  EscrowTopUp& operator=(const EscrowTopUp&) = delete;

  // Reads the channel once (blocking, bounded) and starts the worker. Error: why the channel
  // cannot be used: kLedger (unreachable ledger, unknown channel), kChannel (another client's
  // channel, not open), kBadConfig (a zero amount).
  [[nodiscard]] Result<void, client::Errc> Start();

  // `cumulative` was just signed, or (escrow_low) the provider reported the escrow short.
  void OnEscrowUse(Amount cumulative, bool escrow_low);

  uint64_t top_ups() const;

 private:
  void Run();
  // False when a ledger call failed (the worker then waits before the next try).
  bool MaybeTopUp(Amount cumulative, bool escrow_low);

  std::shared_ptr<ledger::rpc::LedgerClient> ledger_;
  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool pending_ = false;
  bool pending_low_ = false;
  Amount pending_cumulative_;
  Amount deposit_;  // as last read
  uint64_t top_ups_ = 0;
  std::thread worker_;
};

}  // namespace dvpn::tunnel_client
