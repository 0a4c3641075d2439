#pragma once
// Identities: secp256k1 key pairs with BIP-340 Schnorr signatures (libsecp256k1), and the
// account Address derived from a public key. Signatures are always over a 32-byte digest of a
// domain-separated encoding (payments/signed_messages.h); nothing here hashes for the caller.
//
// All types are values and thread-safe for concurrent const use.

#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.h"

namespace dvpn::payments {

using Signature = ByteArray<64>;

// SHA-256 (libsodium).
Hash32 Sha256(ByteSpan data);

// A BIP-340 x-only public key (32 bytes), validated on construction so verification never
// sees an invalid point.
class PublicKey {
 public:
  // Empty when `bytes` is not 32 bytes or is not the x coordinate of a curve point.
  static std::optional<PublicKey> Parse(ByteSpan bytes);

  const ByteArray<32>& bytes() const { return bytes_; }
  // True when `sig` is a valid BIP-340 signature by this key over `digest`.
  bool Verify(const Hash32& digest, const Signature& sig) const;

  bool operator==(const PublicKey& o) const { return bytes_ == o.bytes_; }

 private:
  PublicKey() = default;
  ByteArray<32> bytes_{};
  ByteArray<64> parsed_{};  // secp256k1_xonly_pubkey, kept to avoid re-parsing on each verify
};

// A secret key. The bytes are wiped when the object is destroyed. Movable, not copyable.
class PrivateKey {
 public:
  // A fresh key from the operating system's CSPRNG (libsodium randombytes).
  static PrivateKey Generate();
  // Empty when `bytes` is not 32 bytes or not a valid secp256k1 secret key.
  static std::optional<PrivateKey> FromBytes(ByteSpan bytes);

  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  PrivateKey(const PrivateKey&) = delete;
  PrivateKey& operator=(const PrivateKey&) = delete;
  ~PrivateKey();

  const PublicKey& public_key() const { return public_key_; }
  // The secret itself; only the keystore should need this.
  const ByteArray<32>& secret() const { return secret_; }

  // BIP-340 signature over `digest` with fresh auxiliary randomness.
  Signature Sign(const Hash32& digest) const;
  // BIP-340 signature with caller-chosen auxiliary randomness (deterministic; test vectors).
  Signature SignWithAux(const Hash32& digest, const Hash32& aux) const;

 private:
  PrivateKey(const ByteArray<32>& secret, const PublicKey& pub, const ByteArray<96>& keypair);
  void Wipe();
  ByteArray<32> secret_{};
  ByteArray<96> keypair_{};  // libsecp256k1's keypair of secret_ (holds the secret too)
  PublicKey public_key_;
};

// Account address: the first 20 bytes of SHA-256("dvpn.v1.Address" tag encoding || pubkey).
// Text form: "dv" followed by 48 lowercase hex digits: the 20 address bytes and a 4-byte
// checksum, the first 4 bytes of SHA-256 over the 20 address bytes.
class Address {
 public:
  Address() = default;
  explicit Address(const ByteArray<20>& bytes) : bytes_(bytes) {}
  static Address FromPublicKey(const PublicKey& key);
  // Empty on a wrong prefix, length, non-hex digit or checksum mismatch.
  static std::optional<Address> Parse(std::string_view text);

  const ByteArray<20>& bytes() const { return bytes_; }
  std::string ToString() const;

  auto operator<=>(const Address&) const = default;

 private:
  ByteArray<20> bytes_{};
};

}  // namespace dvpn::payments
