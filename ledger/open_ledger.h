#pragma once
// Starting a ledger from its files and keys, as dvpn-ledger does: the operator's public key
// from its hex form, and the ledger opened over its SQLite file. The executable names its
// flags in front of these messages.

#include <memory>
#include <string>

#include "common/clock.h"
#include "ledger/ledger.h"
#include "ledger/types.h"

namespace dvpn::ledger {

// An x-only secp256k1 public key from 64 hex digits. Fails with kInvalidArgument and a message
// that says which of the two is wrong (not hex, or not a valid key).
LedgerResult<PublicKey> ParseOperatorKey(const std::string& hex);

// The operator's public key from a dvpnctl keystore file (no passphrase needed: the public key
// is stored in the clear). Fails with kInvalidArgument and a message naming the file.
LedgerResult<PublicKey> ReadOperatorKey(const std::string& keystore);

// Opens (creating if missing) the SQLite file `db` for the ledger that `config` names and loads
// the Ledger over it; `clock` must outlive it. Fails with kStorage and a message naming the
// file: it cannot be used (unreadable, another ledger's) or the ledger cannot be loaded from it.
LedgerResult<std::unique_ptr<Ledger>> OpenLedger(const LedgerConfig& config, const std::string& db,
                                                 const Clock& clock);

}  // namespace dvpn::ledger
