#pragma once
// Key derivation for the tunnel's secure channel (docs/tunnel.md, "Handshake"): HMAC-SHA-256,
// HKDF (RFC 5869) built on it, and the Noise-style symmetric state (chaining key `ck`,
// transcript hash `h`) that the handshake drives. libsodium 1.0.18 has HMAC-SHA-256 but no
// HKDF, so HKDF is written here and checked against the RFC 5869 test vectors.
//
// Pure functions and a value type; thread-safe for distinct objects. Secrets held here are
// wiped on destruction.

#include <cstdint>
#include <span>
#include <string_view>

#include "common/bytes.h"

namespace dvpn::tunnel {

inline constexpr size_t kKeySize = 32;
using Key32 = ByteArray<kKeySize>;

// HMAC-SHA-256(key, data). Any key length.
Hash32 HmacSha256(ByteSpan key, ByteSpan data);

// RFC 5869 HKDF-Extract with HMAC-SHA-256. An empty salt means 32 zero bytes.
Hash32 HkdfExtract(ByteSpan salt, ByteSpan ikm);
// RFC 5869 HKDF-Expand: fills `out` (at most 255 * 32 bytes; asserted, our own sizes).
void HkdfExpand(ByteSpan prk, ByteSpan info, std::span<uint8_t> out);
// Extract then Expand.
void Hkdf(ByteSpan salt, ByteSpan ikm, ByteSpan info, std::span<uint8_t> out);

// Initialises libsodium once (CPU feature detection, e.g. AES-NI); safe to call often.
void EnsureSodium();

// Wipes secrets (sodium_memzero; not optimised away).
void Wipe(std::span<uint8_t> secret);

// KDF labels (the `info` of each HKDF call). Normative: docs/tunnel.md.
inline constexpr std::string_view kProtocolLabel = "dvpn.v1.tunnel.handshake";
inline constexpr std::string_view kMixKeyLabel = "dvpn.v1.tunnel.mixkey";
inline constexpr std::string_view kSplitLabel = "dvpn.v1.tunnel.split";
inline constexpr std::string_view kRekeyLabel = "dvpn.v1.tunnel.rekey";
inline constexpr std::string_view kMac1Label = "dvpn.v1.mac1";
inline constexpr std::string_view kClientAuthTag = "dvpn.v1.TunnelClientAuth";

// next = HKDF(salt = empty, ikm = key, info = "dvpn.v1.tunnel.rekey", 32 bytes).
Key32 NextRecordKey(const Key32& key);

// The handshake's running state, as in the Noise framework: h = SHA-256 over the transcript,
// ck = the chaining key that absorbs every DH result. Not thread-safe; one per handshake.
class SymmetricState {
 public:
  // h = ck = SHA-256("dvpn.v1.tunnel.handshake").
  SymmetricState();
  ~SymmetricState();
  SymmetricState(const SymmetricState&) = default;
  SymmetricState& operator=(const SymmetricState&) = default;

  // h = SHA-256(h || data).
  void MixHash(ByteSpan data);
  // (ck, k) = HKDF(salt = ck, ikm = dh, info = "dvpn.v1.tunnel.mixkey", 64 bytes); returns k.
  Key32 MixKey(ByteSpan dh);
  // (k1, k2) = HKDF(salt = ck, ikm = empty, info = "dvpn.v1.tunnel.split", 64 bytes).
  // k1 protects client -> provider records, k2 provider -> client.
  void Split(Key32& client_to_provider, Key32& provider_to_client) const;

  const Hash32& h() const { return h_; }
  const Hash32& ck() const { return ck_; }

 private:
  Hash32 h_{};
  Hash32 ck_{};
};

}  // namespace dvpn::tunnel
