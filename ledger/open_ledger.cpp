#include "ledger/open_ledger.h"

#include <exception>

#include "common/bytes.h"
#include "ledger/sqlite_store.h"
#include "payments/keystore.h"
#include "payments/signed_messages.h"

namespace dvpn::ledger {

LedgerResult<PublicKey> ParseOperatorKey(const std::string& hex) {
  auto bytes = FromHex(hex);
  if (!bytes) {
    return Fail(Errc::kInvalidArgument, "not hex (expected 64 hex digits, an x-only public key)");
  }
  auto key = PublicKey::Parse(*bytes);
  if (!key) {
    return Fail(Errc::kInvalidArgument,
                "not a valid secp256k1 x-only public key (expected 32 bytes, 64 hex digits)");
  }
  return *key;
}

LedgerResult<PublicKey> ReadOperatorKey(const std::string& keystore) {
  auto key = payments::LoadKeystorePublicKey(keystore);
  if (!key) {
    return Fail(Errc::kInvalidArgument,
                "cannot read the operator key from " + keystore + ": " + key.error().message);
  }
  return *key;
}

LedgerResult<std::unique_ptr<Ledger>> OpenLedger(const LedgerConfig& config, const std::string& db,
                                                 const Clock& clock) {
  const LedgerId id = payments::LedgerIdFor(config.name, config.operator_key);
  auto store = OpenSqliteStore(db, id);
  if (!store) {
    return Fail(Errc::kStorage, "cannot use database " + db + ": " + store.error().message);
  }
  try {
    return std::make_unique<Ledger>(config, *std::move(store), clock);
  } catch (const std::exception& e) {
    return Fail(Errc::kStorage, "cannot load the ledger from " + db + ": " + e.what());
  }
}

}  // namespace dvpn::ledger
