#pragma once
// Read-side shapes of the Ledger API that have no counterpart in the domain (ledger/types.h):
// what GetInfo and History answer. Plain values.

#include <cstdint>
#include <string>
#include <vector>

#include "ledger/types.h"

namespace dvpn::ledger::rpc {

// GetInfo: static facts about the ledger plus its current totals.
struct LedgerInfo {
  LedgerId id;
  std::string name;
  PublicKey operator_key;
  Address operator_address;
  uint64_t challenge_period_seconds = 0;
  uint32_t max_batch_items = 0;
  Totals totals;
  uint64_t server_time_unix = 0;
};

// One page of History.
struct HistoryPage {
  std::vector<Movement> movements;  // ascending seq
  uint64_t next_after_seq = 0;      // pass as after_seq for the next page; 0: no more
};

}  // namespace dvpn::ledger::rpc
