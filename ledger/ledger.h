#pragma once
// Ledger: the settlement authority. Applies signed requests to accounts and escrow channels
// under the money rules of docs/ledger.md:
//  - credits enter only through an operator-signed Deposit and leave only through an
//    account-signed Withdraw; every other operation conserves the sum of balances and escrow;
//  - a provider never collects more than the client signed for, nor more than the escrow;
//  - settling the same (or an older) promise again moves nothing;
//  - a refused request changes nothing; an accepted one is durable when the call returns.
//
// Thread-safe: calls are serialised internally (writes) and may come from any thread.
// Owns its Store; reads the injected Clock.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "ledger/store.h"
#include "ledger/types.h"

namespace dvpn::ledger {

struct LedgerConfig {
  std::string name = "dvpn-local";  // with the operator key, determines the ledger id
  PublicKey operator_key;
  uint64_t challenge_period_seconds = 3600;
  uint32_t max_batch_items = 5000;
  // Signature checks of one SettleBatch run on this many threads (0: hardware concurrency).
  unsigned verify_threads = 0;
};

class Ledger {
 public:
  Ledger(LedgerConfig config, std::unique_ptr<Store> store, const Clock& clock);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  const LedgerId& id() const { return id_; }
  const LedgerConfig& config() const { return config_; }

  // Fails with kWrongLedger, kBadSignature, kNotPermitted (signer is not the operator),
  // kReplay, kInvalidArgument (zero amount), kOverflow (total supply would not fit).
  LedgerResult<AccountState> Deposit(const DepositRequest& req);
  // Fails with kWrongLedger, kBadSignature, kReplay, kInvalidArgument, kInsufficientBalance
  // (an address never seen has a zero balance).
  LedgerResult<AccountState> Withdraw(const WithdrawRequest& req);
  // Fails with kWrongLedger, kBadSignature, kReplay, kInvalidArgument (zero amount, expiry not
  // in the future or beyond 2^63-1, provider == client), kInsufficientBalance.
  LedgerResult<ChannelState> OpenChannel(const OpenChannelRequest& req);
  // Fails as OpenChannel, plus kUnknownChannel, kNotPermitted (not the client),
  // kChannelNotOpen (closing, closed, or past its settlement deadline), kOverflow,
  // kInvalidArgument (zero amount, new expiry earlier than the current one).
  LedgerResult<ChannelState> TopUpChannel(const TopUpChannelRequest& req);
  // Client: an open channel enters the challenge period (closing). Provider: the channel closes
  // at once and its remaining escrow returns to the client. Fails with kWrongLedger,
  // kBadSignature, kReplay, kUnknownChannel, kNotPermitted, kChannelNotOpen.
  LedgerResult<ChannelState> CloseChannel(const CloseChannelRequest& req);
  // The request as a whole fails with kWrongLedger, kBadSignature, kReplay, kBatchTooLarge,
  // kInvalidArgument (empty batch); otherwise every item gets its own outcome.
  LedgerResult<SettleBatchResult> SettleBatch(const SettleBatchRequest& req);

  // Closes every channel whose challenge period (or expiry plus challenge period) has ended,
  // returning the remaining escrow to its client. Returns how many were closed.
  LedgerResult<size_t> FinalizeDueChannels();

  // Never fails for an unknown address: an address never seen has a zero balance.
  LedgerResult<AccountState> GetAccount(const Address& address);
  LedgerResult<ChannelState> GetChannel(const ChannelId& id);
  LedgerResult<std::vector<ChannelState>> ListChannels(const Address& address, uint32_t limit);
  LedgerResult<std::vector<Movement>> History(const Address& address, uint64_t after_seq,
                                              uint32_t limit);
  LedgerResult<Totals> GetTotals();

  // Blocks until a movement with seq > after_seq has committed or `deadline` passes.
  // Returns the last committed seq.
  uint64_t WaitForMovementAfter(uint64_t after_seq,
                                std::chrono::steady_clock::time_point deadline);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  LedgerConfig config_;
  LedgerId id_;
};

}  // namespace dvpn::ledger
