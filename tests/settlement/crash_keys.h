#pragma once
// Deterministic keys and ids shared by promise_store_writer and promise_store_crash_test.

#include <string>

#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace dvpn::payments::crash {

inline PrivateKey ClientKey(int index) {
  const std::string seed = "dvpn promise store crash test client " + std::to_string(index);
  return *PrivateKey::FromBytes(Sha256(AsBytes(seed)));
}

inline LedgerId Ledger() {
  static const PublicKey op =
      PrivateKey::FromBytes(Sha256(AsBytes("dvpn crash operator")))->public_key();
  return LedgerIdFor("crash-test", op);
}

inline ChannelId Channel(const PrivateKey& client) {
  return ChannelIdFor(Ledger(), Address::FromPublicKey(client.public_key()), 1);
}

}  // namespace dvpn::payments::crash
