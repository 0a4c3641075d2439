#pragma once
// SqliteStore: the embedded Store over one SQLite file (WAL journal, synchronous=FULL, so a
// committed request survives a crash or power loss). The schema is versioned; opening an older
// file migrates it in a transaction, a newer one is refused.
//
// Not thread-safe (see Store).

#include <memory>
#include <string>

#include "ledger/store.h"

namespace dvpn::ledger {

// Opens (creating if needed) the database at `path`; ":memory:" for a private in-memory one.
// Fails with kStorage and SQLite's message when the file cannot be opened or migrated, or when
// it belongs to another ledger (its stored ledger id differs from `ledger_id`).
LedgerResult<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                     const LedgerId& ledger_id);

}  // namespace dvpn::ledger
