#include "payments/keys.h"

#include <cassert>
#include <cstring>
#include <stdexcept>

#include <secp256k1.h>
#include <secp256k1_extrakeys.h>
#include <secp256k1_schnorrsig.h>
#include <sodium.h>

namespace dvpn::payments {
namespace {

// One context for signing and verification, randomized once against side channels.
// libsecp256k1 contexts are safe for concurrent use by const operations.
const secp256k1_context* Context() {
  static secp256k1_context* ctx = [] {
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
    secp256k1_context* c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    unsigned char seed[32];
    randombytes_buf(seed, sizeof seed);
    if (!secp256k1_context_randomize(c, seed)) throw std::runtime_error("secp256k1 randomize");
    sodium_memzero(seed, sizeof seed);
    return c;
  }();
  return ctx;
}

}  // namespace

Hash32 Sha256(ByteSpan data) {
  Hash32 out;
  crypto_hash_sha256(out.data(), data.data(), data.size());
  return out;
}

std::optional<PublicKey> PublicKey::Parse(ByteSpan bytes) {
  if (bytes.size() != 32) return std::nullopt;
  PublicKey key;
  secp256k1_xonly_pubkey parsed;
  static_assert(sizeof(parsed) == 64);
  if (!secp256k1_xonly_pubkey_parse(Context(), &parsed, bytes.data())) return std::nullopt;
  std::memcpy(key.bytes_.data(), bytes.data(), 32);
  std::memcpy(key.parsed_.data(), &parsed, 64);
  return key;
}

bool PublicKey::Verify(const Hash32& digest, const Signature& sig) const {
  secp256k1_xonly_pubkey parsed;
  std::memcpy(&parsed, parsed_.data(), 64);
  return secp256k1_schnorrsig_verify(Context(), sig.data(), digest.data(), digest.size(),
                                     &parsed) == 1;
}

static_assert(sizeof(secp256k1_keypair) == 96, "PrivateKey::keypair_ holds a secp256k1_keypair");

PrivateKey::PrivateKey(const ByteArray<32>& secret, const PublicKey& pub,
                       const ByteArray<96>& keypair)
    : secret_(secret), keypair_(keypair), public_key_(pub) {}

PrivateKey::PrivateKey(PrivateKey&& other) noexcept
    : secret_(other.secret_), keypair_(other.keypair_), public_key_(other.public_key_) {
  other.Wipe();
}

PrivateKey& PrivateKey::operator=(PrivateKey&& other) noexcept {
  if (this != &other) {
    secret_ = other.secret_;
    keypair_ = other.keypair_;
    public_key_ = other.public_key_;
    other.Wipe();
  }
  return *this;
}

PrivateKey::~PrivateKey() { Wipe(); }

void PrivateKey::Wipe() {
  sodium_memzero(secret_.data(), secret_.size());
  sodium_memzero(keypair_.data(), keypair_.size());
}

std::optional<PrivateKey> PrivateKey::FromBytes(ByteSpan bytes) {
  if (bytes.size() != 32) return std::nullopt;
  secp256k1_keypair keypair;
  if (!secp256k1_keypair_create(Context(), &keypair, bytes.data())) return std::nullopt;
  secp256k1_xonly_pubkey xonly;
  int parity = 0;
  int ok = secp256k1_keypair_xonly_pub(Context(), &xonly, &parity, &keypair);
  assert(ok);
  (void)ok;
  ByteArray<32> pub_bytes;
  secp256k1_xonly_pubkey_serialize(Context(), pub_bytes.data(), &xonly);
  auto pub = PublicKey::Parse(pub_bytes);
  assert(pub.has_value());
  ByteArray<32> secret;
  std::memcpy(secret.data(), bytes.data(), 32);
  ByteArray<96> pair;
  std::memcpy(pair.data(), &keypair, pair.size());
  sodium_memzero(&keypair, sizeof keypair);
  PrivateKey key(secret, *pub, pair);
  sodium_memzero(secret.data(), secret.size());
  sodium_memzero(pair.data(), pair.size());
  return key;
}

PrivateKey PrivateKey::Generate() {
  Context();  // initialises libsodium
  for (;;) {  // a random 32-byte string is a valid key with probability 1 - 2^-128
    ByteArray<32> candidate;
    randombytes_buf(candidate.data(), candidate.size());
    auto key = FromBytes(candidate);
    sodium_memzero(candidate.data(), candidate.size());
    if (key) return std::move(*key);
  }
}

Signature PrivateKey::SignWithAux(const Hash32& digest, const Hash32& aux) const {
  // The keypair was made once (a point multiplication saved per signature).
  secp256k1_keypair keypair;
  std::memcpy(&keypair, keypair_.data(), sizeof keypair);
  Signature sig;
  int ok =
      secp256k1_schnorrsig_sign32(Context(), sig.data(), digest.data(), &keypair, aux.data());
  assert(ok);
  (void)ok;
  sodium_memzero(&keypair, sizeof keypair);
  return sig;
}

Signature PrivateKey::Sign(const Hash32& digest) const {
  Hash32 aux;
  randombytes_buf(aux.data(), aux.size());
  return SignWithAux(digest, aux);
}

Address Address::FromPublicKey(const PublicKey& key) {
  Encoder enc;
  enc.Tag("dvpn.v1.Address").Raw(key.bytes());
  Hash32 h = Sha256(enc.bytes());
  ByteArray<20> out;
  std::memcpy(out.data(), h.data(), 20);
  return Address(out);
}

std::string Address::ToString() const {
  Hash32 check = Sha256(bytes_);
  ByteArray<24> full;
  std::memcpy(full.data(), bytes_.data(), 20);
  std::memcpy(full.data() + 20, check.data(), 4);
  return "dv" + ToHex(full);
}

std::optional<Address> Address::Parse(std::string_view text) {
  if (text.size() != 2 + 48 || text.substr(0, 2) != "dv") return std::nullopt;
  auto raw = FromHex(text.substr(2));
  if (!raw) return std::nullopt;
  ByteArray<20> bytes;
  std::memcpy(bytes.data(), raw->data(), 20);
  Hash32 check = Sha256(bytes);
  if (std::memcmp(check.data(), raw->data() + 20, 4) != 0) return std::nullopt;
  return Address(bytes);
}

}  // namespace dvpn::payments
