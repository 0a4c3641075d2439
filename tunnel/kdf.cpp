#include "tunnel/kdf.h"

#include <sodium.h>

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>

namespace dvpn::tunnel {

Hash32 HmacSha256(ByteSpan key, ByteSpan data) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  crypto_auth_hmacsha256_update(&st, data.data(), data.size());
  Hash32 out;
  crypto_auth_hmacsha256_final(&st, out.data());
  sodium_memzero(&st, sizeof st);
  return out;
}

Hash32 HkdfExtract(ByteSpan salt, ByteSpan ikm) {
  static const Hash32 kZeroSalt{};
  return HmacSha256(salt.empty() ? ByteSpan(kZeroSalt) : salt, ikm);
}

void HkdfExpand(ByteSpan prk, ByteSpan info, std::span<uint8_t> out) {
  assert(out.size() <= 255 * 32);
  Hash32 t{};
  size_t t_len = 0;
  size_t done = 0;
  for (uint8_t i = 1; done < out.size(); ++i) {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, prk.data(), prk.size());
    crypto_auth_hmacsha256_update(&st, t.data(), t_len);
    crypto_auth_hmacsha256_update(&st, info.data(), info.size());
    crypto_auth_hmacsha256_update(&st, &i, 1);
    crypto_auth_hmacsha256_final(&st, t.data());
    sodium_memzero(&st, sizeof st);
    t_len = t.size();
    size_t n = std::min(t.size(), out.size() - done);
    std::memcpy(out.data() + done, t.data(), n);
    done += n;
  }
  sodium_memzero(t.data(), t.size());
}

void Hkdf(ByteSpan salt, ByteSpan ikm, ByteSpan info, std::span<uint8_t> out) {
  Hash32 prk = HkdfExtract(salt, ikm);
  HkdfExpand(prk, info, out);
  sodium_memzero(prk.data(), prk.size());
}

void EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) std::abort();
}

void Wipe(std::span<uint8_t> secret) { sodium_memzero(secret.data(), secret.size()); }

Key32 NextRecordKey(const Key32& key) {
  Key32 next;
  Hkdf({}, key, AsBytes(kRekeyLabel), next);
  return next;
}

SymmetricState::SymmetricState() {
  EnsureSodium();
  crypto_hash_sha256(h_.data(), reinterpret_cast<const uint8_t*>(kProtocolLabel.data()),
                     kProtocolLabel.size());
  ck_ = h_;
}

SymmetricState::~SymmetricState() {
  Wipe(h_);
  Wipe(ck_);
}

void SymmetricState::MixHash(ByteSpan data) {
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, h_.data(), h_.size());
  crypto_hash_sha256_update(&st, data.data(), data.size());
  crypto_hash_sha256_final(&st, h_.data());
}

Key32 SymmetricState::MixKey(ByteSpan dh) {
  ByteArray<64> okm;
  Hkdf(ck_, dh, AsBytes(kMixKeyLabel), okm);
  Key32 k;
  std::memcpy(ck_.data(), okm.data(), 32);
  std::memcpy(k.data(), okm.data() + 32, 32);
  Wipe(okm);
  return k;
}

void SymmetricState::Split(Key32& client_to_provider, Key32& provider_to_client) const {
  ByteArray<64> okm;
  Hkdf(ck_, {}, AsBytes(kSplitLabel), okm);
  std::memcpy(client_to_provider.data(), okm.data(), 32);
  std::memcpy(provider_to_client.data(), okm.data() + 32, 32);
  Wipe(okm);
}

}  // namespace dvpn::tunnel
