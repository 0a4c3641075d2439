#pragma once
// Store: where the ledger keeps its state. The Ledger runs each request inside one
// transaction (Begin ... Commit, or Rollback on any refusal), so a request applies whole or not
// at all, also across a crash. SqliteStore (ledger/sqlite_store.h) is the embedded default;
// a server database can implement the same interface.
//
// Not thread-safe: the Ledger serialises all calls.

#include <cstdint>
#include <optional>
#include <vector>

#include "ledger/types.h"

namespace dvpn::ledger {

struct AccountRow {
  Address address;
  Amount balance;
  uint64_t last_nonce = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual LedgerResult<void> Begin() = 0;
  virtual LedgerResult<void> Commit() = 0;
  virtual void Rollback() = 0;

  // Empty optional when the account has never been seen.
  virtual LedgerResult<std::optional<AccountRow>> GetAccount(const Address& address) = 0;
  virtual LedgerResult<void> PutAccount(const AccountRow& row) = 0;

  virtual LedgerResult<std::optional<ChannelState>> GetChannel(const ChannelId& id) = 0;
  virtual LedgerResult<void> PutChannel(const ChannelState& channel) = 0;
  // Channels as client or provider, newest first.
  virtual LedgerResult<std::vector<ChannelState>> ChannelsOf(const Address& address,
                                                             uint32_t limit) = 0;
  // Sum of Remaining() over the address's channels as client that are not closed.
  virtual LedgerResult<Amount> EscrowedBy(const Address& client) = 0;
  // Channels not closed whose challenge deadline (closing) or expiry+challenge (open) is
  // <= now_unix, at most `limit`.
  virtual LedgerResult<std::vector<ChannelId>> ChannelsDue(uint64_t now_unix,
                                                           uint64_t challenge_period,
                                                           uint32_t limit) = 0;

  // Appends and returns the assigned sequence number.
  virtual LedgerResult<uint64_t> AppendMovement(const Movement& movement) = 0;
  // Movements of `address` with seq > after_seq, ascending, at most `limit`.
  virtual LedgerResult<std::vector<Movement>> History(const Address& address, uint64_t after_seq,
                                                      uint32_t limit) = 0;
  virtual LedgerResult<uint64_t> LastSeq() = 0;

  virtual LedgerResult<Totals> GetTotals() = 0;
  virtual LedgerResult<void> PutTotals(const Totals& totals) = 0;
};

}  // namespace dvpn::ledger
