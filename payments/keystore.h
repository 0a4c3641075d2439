#pragma once
// Keystore: one secret key in a JSON file, encrypted with a passphrase. The key is derived with
// Argon2id (libsodium crypto_pwhash) and the secret sealed with XChaCha20-Poly1305; the public
// key and address are stored in clear so they can be read without the passphrase.
// File format: docs/protocol.md, "Keystore file". Functions are thread-safe.

#include <cstdint>
#include <string>

#include "common/result.h"
#include "payments/keys.h"

namespace dvpn::payments {

enum class KeystoreErrc {
  kIo,              // cannot read or write the file
  kDamaged,         // not a keystore, a field is missing or malformed, or the checksum fails
  kWrongPassphrase, // the file is intact but the passphrase does not open it
  kUnsupported,     // a version or algorithm this build does not know
  kExists,          // refusing to overwrite an existing file
};

template <class T>
using KeystoreResult = Result<T, KeystoreErrc>;

// Argon2id cost. Defaults: libsodium's "moderate" limits; tests may pass cheaper ones.
struct KdfCost {
  uint64_t opslimit;
  uint64_t memlimit_bytes;
  static KdfCost Moderate();
  static KdfCost Interactive();
  static KdfCost MinimumForTests();  // the smallest libsodium allows; never for real keys
};

// Writes `key` to `path` (mode 0600), refusing to overwrite an existing file.
KeystoreResult<void> SaveKeystore(const std::string& path, const PrivateKey& key,
                                  const std::string& passphrase,
                                  KdfCost cost = KdfCost::Moderate());

// Reads and decrypts. kWrongPassphrase only when the file is intact but does not open.
KeystoreResult<PrivateKey> LoadKeystore(const std::string& path, const std::string& passphrase);

// Reads the public key without the passphrase (checks it against the stored address).
KeystoreResult<PublicKey> LoadKeystorePublicKey(const std::string& path);

}  // namespace dvpn::payments
