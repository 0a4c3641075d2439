#pragma once
// The tunnel's 1-RTT authenticated key exchange (Noise-IK-like, libsodium X25519 + ChaCha20-
// Poly1305 + HKDF-SHA-256). docs/tunnel.md, "Handshake", is the normative byte layout.
//
//   msg1 (client -> provider, 237 bytes): header, e_c, AEAD{identity, ledger, channel,
//        timestamp, ciphers, BIP-340 signature}, mac1 (keyed BLAKE2b; checked before any DH)
//   msg2 (provider -> client, 55..567 bytes): header, e_p, AEAD{cipher, session params}
//
// The client is authenticated by its payment identity's signature over the transcript; the
// provider by its static X25519 key (only its holder can derive msg2's key). Session keys depend
// on the ephemeral-ephemeral DH (forward secrecy). Initiator and responder objects are
// single-use, not thread-safe; ReplayGuard is thread-safe and shared by all responders.

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"
#include "tunnel/kdf.h"

namespace dvpn::tunnel {

// Record ciphers; the values are the bits of the cipher set in msg1 and the byte in msg2.
enum class Cipher : uint8_t {
  kChaCha20Poly1305 = 0x01,  // ChaCha20-Poly1305-IETF, always available
  kAes256Gcm = 0x02,         // AES-256-GCM, only where crypto_aead_aes256gcm_is_available()
};
using CipherSet = uint8_t;  // bitwise OR of Cipher values
inline constexpr CipherSet kKnownCiphers = 0x03;

// Ciphers this machine can run (ChaCha always; AES-256-GCM with AES-NI).
CipherSet LocalCiphers();
// The responder's choice: AES-256-GCM when both sides have it, else ChaCha20-Poly1305;
// nullopt when the sets do not intersect.
std::optional<Cipher> ChooseCipher(CipherSet offered, CipherSet local);
const char* CipherName(Cipher c);

inline constexpr uint8_t kMsg1Type = 0x01;
inline constexpr uint8_t kMsg2Type = 0x02;
inline constexpr uint8_t kHandshakeVersion = 0x01;
inline constexpr size_t kHandshakeHeaderSize = 4;  // type u8, version u8, total length u16
inline constexpr size_t kAeadTagSize = 16;
inline constexpr size_t kMac1Size = 16;
inline constexpr size_t kHelloFieldsSize = 32 + 32 + 32 + 8 + 1;               // 105
inline constexpr size_t kHelloPlaintextSize = kHelloFieldsSize + 64;           // 169
inline constexpr size_t kMsg1Size = kHandshakeHeaderSize + 32 + kHelloPlaintextSize +
                                    kAeadTagSize + kMac1Size;                  // 237
inline constexpr size_t kMaxSessionParams = 512;
inline constexpr size_t kMinMsg2Size = kHandshakeHeaderSize + 32 + 1 + 2 + kAeadTagSize;  // 55
inline constexpr size_t kMaxMsg2Size = kMinMsg2Size + kMaxSessionParams;                  // 567
inline constexpr size_t kMaxHandshakeMessage = kMaxMsg2Size;
// A msg1 timestamp older than now - kTimestampPastWindowMs or newer than now +
// kTimestampFutureWindowMs (the responder's clock) is refused (kStaleTimestamp). Tight into the
// future: a timestamp far ahead is only ever useful to someone filling the replay table.
inline constexpr uint64_t kTimestampPastWindowMs = 120'000;
inline constexpr uint64_t kTimestampFutureWindowMs = 10'000;
// The replay guard's floor never refuses a timestamp newer than now - kReplayFloorLagMs.
inline constexpr uint64_t kReplayFloorLagMs = 10'000;

enum class HandshakeErrc {
  kBadLength,       // size differs from the header / the fixed size, or exceeds the maximum
  kBadType,         // wrong message type byte
  kBadVersion,      // unknown protocol version
  kBadMac1,         // msg1 not made with this provider's static key (no DH was done)
  kWeakKey,         // a DH result was all zero (low-order point)
  kDecryptFailed,   // AEAD authentication failed (tampered, or wrong keys)
  kBadIdentity,     // the client identity is not a valid BIP-340 public key
  kBadSignature,    // the client's signature does not verify
  kReplay,          // timestamp not newer than the last one seen for this client identity
  kStaleTimestamp,  // timestamp outside [now - past window, now + future window]
  kNoCommonCipher,  // no cipher both sides support; or msg2 chose a cipher not offered
  kBadParams,       // session params too long, or inconsistent payload length
  kBufferTooSmall,  // caller's output span is too small
  kWrongState,      // method called out of order (programming error of the caller)
};
const char* HandshakeErrcName(HandshakeErrc e);

// Length of the handshake message at the start of `buffered` once its 4-byte header is
// buffered; 0 when fewer bytes are buffered; kBadLength / kBadType / kBadVersion on a header
// no valid message has.
[[nodiscard]] Result<size_t, HandshakeErrc> HandshakeMessageSize(ByteSpan buffered);

// The result of a handshake. Keys are wiped on destruction; move-only.
struct SessionKeys {
  Cipher cipher = Cipher::kChaCha20Poly1305;
  Key32 send_key{};
  Key32 recv_key{};
  Hash32 session_id{};  // final transcript hash; the same on both sides

  SessionKeys() = default;
  SessionKeys(SessionKeys&& o) noexcept;
  SessionKeys& operator=(SessionKeys&& o) noexcept;
  SessionKeys(const SessionKeys&) = delete;
  SessionKeys& operator=(const SessionKeys&) = delete;
  ~SessionKeys();
};

struct X25519KeyPair {
  Key32 public_key{};
  Key32 secret_key{};
  static X25519KeyPair Generate();
  // The pair for a given secret (test vectors, key files).
  static X25519KeyPair FromSecret(const Key32& secret);
  ~X25519KeyPair();
};

// Client side.
class HandshakeInitiator {
 public:
  struct Options {
    Key32 provider_static;  // S_p, from the provider's offer
    const payments::PrivateKey* identity = nullptr;  // not owned; must outlive this object
    payments::LedgerId ledger;
    payments::ChannelId channel;
    uint64_t timestamp_ms = 0;  // strictly increasing per identity across handshakes
    CipherSet ciphers = 0;      // 0 means LocalCiphers()
    // Test hooks (test vectors): fixed ephemeral secret and BIP-340 aux randomness.
    std::optional<Key32> ephemeral_secret_for_test;
    std::optional<Hash32> signature_aux_for_test;
  };
  explicit HandshakeInitiator(Options options);

  // Writes msg1 (kMsg1Size bytes) into `out`. kBufferTooSmall, kWeakKey (S_p of low order),
  // kWrongState when called twice.
  [[nodiscard]] Result<size_t, HandshakeErrc> WriteMessage1(std::span<uint8_t> out);
  // Reads msg2 (exactly one whole message). On success the session keys (send =
  // client->provider) and, in `session_params`, the provider's opaque parameters.
  [[nodiscard]] Result<SessionKeys, HandshakeErrc> ReadMessage2(ByteSpan in);
  const std::vector<uint8_t>& session_params() const { return session_params_; }

 private:
  Options options_;
  X25519KeyPair ephemeral_;
  SymmetricState state_;
  bool wrote1_ = false;
  bool done_ = false;
  std::vector<uint8_t> session_params_;
};

// Refuses a msg1 whose timestamp is not newer than the newest accepted one for the same client
// identity. Bounded: at most `capacity` identities (about 130 bytes each). When full, the entry
// with the oldest timestamp is evicted (O(log n)): an expired one (older than now -
// kTimestampPastWindowMs, refused as stale anyway) silently; otherwise its timestamp raises a
// floor. A msg1 of an identity not in the table is refused when its timestamp is at or below
// min(floor, now - kReplayFloorLagMs): the cap is applied at check time, so no sequence of
// insertions, at any rate, makes the guard refuse a timestamp newer than now - 10 s of an
// identity nobody else holds the key of (docs/tunnel.md, "Replay guard", has the argument and
// its price). Thread-safe.
class ReplayGuard {
 public:
  explicit ReplayGuard(size_t capacity = 65536) : capacity_(capacity) {}
  // True, and records `timestamp_ms`, when it is newer than the last one accepted for
  // `identity` and (for an identity not in the table) above the capped floor. `now_ms` is the
  // responder's wall clock in Unix milliseconds.
  bool CheckAndUpdate(const ByteArray<32>& identity, uint64_t timestamp_ms, uint64_t now_ms);
  size_t size() const;
  // The floor as raised by evictions (before the cap); for tests and diagnostics.
  uint64_t floor_ms() const;

 private:
  struct KeyHash {
    size_t operator()(const ByteArray<32>& k) const;
  };
  using Map = std::unordered_map<ByteArray<32>, uint64_t, KeyHash>;
  void EvictOldest(uint64_t now_ms);
  mutable std::mutex mu_;
  size_t capacity_;
  uint64_t floor_ms_ = 0;
  Map latest_;
  // (timestamp, identity) of every entry of latest_, ordered; the identity points at the map's
  // key (unordered_map nodes do not move).
  std::set<std::pair<uint64_t, const ByteArray<32>*>> by_time_;
};

// What the provider learns from a valid msg1.
struct ClientHello {
  payments::PublicKey identity;
  payments::LedgerId ledger;
  payments::ChannelId channel;
  uint64_t timestamp_ms = 0;
  CipherSet ciphers = 0;
};

// Provider side.
class HandshakeResponder {
 public:
  struct Options {
    const X25519KeyPair* static_key = nullptr;  // not owned
    ReplayGuard* replay_guard = nullptr;        // not owned; shared by all responders
    const Clock* clock = nullptr;               // not owned; for the timestamp window
    std::optional<Key32> ephemeral_secret_for_test;
  };
  explicit HandshakeResponder(Options options);

  // Cheap pre-check (one keyed BLAKE2b, no DH): is `msg1` a whole msg1 whose mac1 was made
  // with this provider's static public key?
  bool CheckMac1(ByteSpan msg1) const;
  // Validates msg1 completely: kBadLength, kBadType, kBadVersion, kBadMac1 (before any DH),
  // kWeakKey, kDecryptFailed, kBadIdentity, kStaleTimestamp, kBadSignature,
  // kNoCommonCipher (no known cipher offered), kReplay (checked last, after the signature).
  [[nodiscard]] Result<ClientHello, HandshakeErrc> ReadMessage1(ByteSpan in);
  // Writes msg2 choosing `cipher` (must be in the client's set) with opaque `session_params`
  // (at most kMaxSessionParams). Returns the message size; the keys (send = provider->client)
  // are then available from TakeKeys().
  [[nodiscard]] Result<size_t, HandshakeErrc> WriteMessage2(std::span<uint8_t> out,
                                                            Cipher cipher,
                                                            ByteSpan session_params);
  // The session keys after WriteMessage2 succeeded (once).
  [[nodiscard]] Result<SessionKeys, HandshakeErrc> TakeKeys();

 private:
  Options options_;
  Hash32 mac1_key_{};
  SymmetricState state_;
  Key32 remote_ephemeral_{};
  CipherSet offered_ = 0;
  enum class Stage { kStart, kRead1, kWrote2, kDone } stage_ = Stage::kStart;
  SessionKeys keys_;
};

// mac1 key = BLAKE2b-256("dvpn.v1.mac1" || S_p) (unkeyed).
Hash32 Mac1Key(const Key32& provider_static);

}  // namespace dvpn::tunnel
