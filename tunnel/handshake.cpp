#include "tunnel/handshake.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace dvpn::tunnel {
namespace {

// Fails with kWeakKey when the result is all zero (peer key of small order).
bool Dh(const Key32& secret, const Key32& peer_public, Key32& out) {
  if (crypto_scalarmult(out.data(), secret.data(), peer_public.data()) != 0) return false;
  return !sodium_is_zero(out.data(), out.size());
}

const uint8_t kZeroNonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES] = {};

void AeadSeal(const Key32& k, ByteSpan ad, ByteSpan plaintext, uint8_t* out) {
  unsigned long long clen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, plaintext.data(), plaintext.size(),
                                            ad.data(), ad.size(), nullptr, kZeroNonce, k.data());
}

bool AeadOpen(const Key32& k, ByteSpan ad, ByteSpan ciphertext, uint8_t* out) {
  if (ciphertext.size() < kAeadTagSize) return false;
  unsigned long long mlen = 0;
  return crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, nullptr, ciphertext.data(),
                                                   ciphertext.size(), ad.data(), ad.size(),
                                                   kZeroNonce, k.data()) == 0;
}

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
uint16_t GetU16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

Hash32 ClientAuthDigest(const Hash32& h, ByteSpan fields) {
  Encoder enc;
  enc.Tag(kClientAuthTag).Raw(h).Raw(fields);
  return payments::Sha256(enc.bytes());
}

void Mac1(const Hash32& key, ByteSpan data, uint8_t* out) {
  crypto_generichash(out, kMac1Size, data.data(), data.size(), key.data(), key.size());
}

}  // namespace

CipherSet LocalCiphers() {
  EnsureSodium();
  CipherSet s = uint8_t(Cipher::kChaCha20Poly1305);
  if (crypto_aead_aes256gcm_is_available()) s |= uint8_t(Cipher::kAes256Gcm);
  return s;
}

std::optional<Cipher> ChooseCipher(CipherSet offered, CipherSet local) {
  CipherSet both = offered & local & kKnownCiphers;
  if (both & uint8_t(Cipher::kAes256Gcm)) return Cipher::kAes256Gcm;
  if (both & uint8_t(Cipher::kChaCha20Poly1305)) return Cipher::kChaCha20Poly1305;
  return std::nullopt;
}

const char* CipherName(Cipher c) {
  switch (c) {
    case Cipher::kChaCha20Poly1305: return "chacha20-poly1305";
    case Cipher::kAes256Gcm: return "aes-256-gcm";
  }
  return "unknown";
}

const char* HandshakeErrcName(HandshakeErrc e) {
  switch (e) {
    case HandshakeErrc::kBadLength: return "bad length";
    case HandshakeErrc::kBadType: return "bad message type";
    case HandshakeErrc::kBadVersion: return "unknown version";
    case HandshakeErrc::kBadMac1: return "bad mac1";
    case HandshakeErrc::kWeakKey: return "weak key";
    case HandshakeErrc::kDecryptFailed: return "decryption failed";
    case HandshakeErrc::kBadIdentity: return "bad client identity";
    case HandshakeErrc::kBadSignature: return "bad client signature";
    case HandshakeErrc::kReplay: return "replayed handshake";
    case HandshakeErrc::kStaleTimestamp: return "stale timestamp";
    case HandshakeErrc::kNoCommonCipher: return "no common cipher";
    case HandshakeErrc::kBadParams: return "bad session parameters";
    case HandshakeErrc::kBufferTooSmall: return "buffer too small";
    case HandshakeErrc::kWrongState: return "wrong state";
  }
  return "unknown";
}

Result<size_t, HandshakeErrc> HandshakeMessageSize(ByteSpan buffered) {
  if (buffered.size() < kHandshakeHeaderSize) return 0;
  if (buffered[0] != kMsg1Type && buffered[0] != kMsg2Type) {
    return Fail(HandshakeErrc::kBadType, "not a handshake message");
  }
  if (buffered[1] != kHandshakeVersion) return Fail(HandshakeErrc::kBadVersion, "version");
  size_t len = GetU16(buffered.data() + 2);
  bool ok = buffered[0] == kMsg1Type ? len == kMsg1Size
                                     : (len >= kMinMsg2Size && len <= kMaxMsg2Size);
  if (!ok) return Fail(HandshakeErrc::kBadLength, "handshake length " + std::to_string(len));
  return len;
}

SessionKeys::SessionKeys(SessionKeys&& o) noexcept { *this = std::move(o); }

SessionKeys& SessionKeys::operator=(SessionKeys&& o) noexcept {
  if (this != &o) {
    cipher = o.cipher;
    send_key = o.send_key;
    recv_key = o.recv_key;
    session_id = o.session_id;
    Wipe(o.send_key);
    Wipe(o.recv_key);
  }
  return *this;
}

SessionKeys::~SessionKeys() {
  Wipe(send_key);
  Wipe(recv_key);
}

X25519KeyPair X25519KeyPair::Generate() {
  EnsureSodium();
  Key32 secret;
  randombytes_buf(secret.data(), secret.size());
  X25519KeyPair kp = FromSecret(secret);
  Wipe(secret);
  return kp;
}

X25519KeyPair X25519KeyPair::FromSecret(const Key32& secret) {
  X25519KeyPair kp;
  kp.secret_key = secret;
  crypto_scalarmult_base(kp.public_key.data(), kp.secret_key.data());
  return kp;
}

X25519KeyPair::~X25519KeyPair() { Wipe(secret_key); }

Hash32 Mac1Key(const Key32& provider_static) {
  Hash32 key;
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, key.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kMac1Label.data()),
                            kMac1Label.size());
  crypto_generichash_update(&st, provider_static.data(), provider_static.size());
  crypto_generichash_final(&st, key.data(), key.size());
  return key;
}

// ---------------------------------------------------------------- initiator

HandshakeInitiator::HandshakeInitiator(Options options) : options_(std::move(options)) {
  if (options_.ciphers == 0) options_.ciphers = LocalCiphers();
  ephemeral_ = options_.ephemeral_secret_for_test
                   ? X25519KeyPair::FromSecret(*options_.ephemeral_secret_for_test)
                   : X25519KeyPair::Generate();
  if (options_.ephemeral_secret_for_test) Wipe(*options_.ephemeral_secret_for_test);
}

Result<size_t, HandshakeErrc> HandshakeInitiator::WriteMessage1(std::span<uint8_t> out) {
  if (wrote1_ || options_.identity == nullptr) {
    return Fail(HandshakeErrc::kWrongState, "msg1 already written or no identity");
  }
  if (out.size() < kMsg1Size) return Fail(HandshakeErrc::kBufferTooSmall, "msg1 buffer");
  uint8_t* p = out.data();
  p[0] = kMsg1Type;
  p[1] = kHandshakeVersion;
  PutU16(p + 2, uint16_t(kMsg1Size));
  std::memcpy(p + 4, ephemeral_.public_key.data(), 32);

  state_.MixHash(options_.provider_static);
  state_.MixHash(ByteSpan(p, 4));
  state_.MixHash(ephemeral_.public_key);
  Key32 dh;
  if (!Dh(ephemeral_.secret_key, options_.provider_static, dh)) {
    Wipe(dh);
    return Fail(HandshakeErrc::kWeakKey, "provider static key of small order");
  }
  Key32 k1 = state_.MixKey(dh);
  Wipe(dh);

  ByteArray<kHelloPlaintextSize> pt;
  uint8_t* f = pt.data();
  std::memcpy(f, options_.identity->public_key().bytes().data(), 32);
  std::memcpy(f + 32, options_.ledger.bytes.data(), 32);
  std::memcpy(f + 64, options_.channel.bytes.data(), 32);
  PutU64(f + 96, options_.timestamp_ms);
  f[104] = options_.ciphers;
  Hash32 digest = ClientAuthDigest(state_.h(), ByteSpan(f, kHelloFieldsSize));
  payments::Signature sig = options_.signature_aux_for_test
                                ? options_.identity->SignWithAux(digest,
                                                                 *options_.signature_aux_for_test)
                                : options_.identity->Sign(digest);
  std::memcpy(f + kHelloFieldsSize, sig.data(), sig.size());

  uint8_t* ct = p + 36;
  const size_t ct_len = kHelloPlaintextSize + kAeadTagSize;
  AeadSeal(k1, state_.h(), pt, ct);
  Wipe(k1);
  Wipe(pt);
  state_.MixHash(ByteSpan(ct, ct_len));
  Mac1(Mac1Key(options_.provider_static), ByteSpan(p, 36 + ct_len), p + 36 + ct_len);
  wrote1_ = true;
  return kMsg1Size;
}

Result<SessionKeys, HandshakeErrc> HandshakeInitiator::ReadMessage2(ByteSpan in) {
  if (!wrote1_ || done_) return Fail(HandshakeErrc::kWrongState, "msg2 not expected");
  auto size = HandshakeMessageSize(in);
  if (!size) return std::unexpected(size.error());
  if (*size == 0 || in[0] != kMsg2Type) return Fail(HandshakeErrc::kBadType, "not msg2");
  if (*size != in.size()) return Fail(HandshakeErrc::kBadLength, "msg2 length mismatch");
  done_ = true;  // one attempt: any failure ends the handshake

  SymmetricState st = state_;
  st.MixHash(in.subspan(0, 4));
  Key32 e_p;
  std::memcpy(e_p.data(), in.data() + 4, 32);
  st.MixHash(e_p);
  Key32 dh;
  if (!Dh(ephemeral_.secret_key, e_p, dh)) {
    Wipe(dh);
    return Fail(HandshakeErrc::kWeakKey, "provider ephemeral of small order");
  }
  Key32 k2 = st.MixKey(dh);
  Wipe(dh);
  ByteSpan ct = in.subspan(36);
  ByteArray<kMaxMsg2Size> pt;
  bool ok = AeadOpen(k2, st.h(), ct, pt.data());
  Wipe(k2);
  if (!ok) return Fail(HandshakeErrc::kDecryptFailed, "msg2 authentication failed");
  const size_t pt_len = ct.size() - kAeadTagSize;
  st.MixHash(ct);

  uint8_t cipher_byte = pt[0];
  size_t params_len = GetU16(pt.data() + 1);
  if (params_len != pt_len - 3) {
    return Fail(HandshakeErrc::kBadParams, "msg2 params length mismatch");
  }
  if (cipher_byte != uint8_t(Cipher::kChaCha20Poly1305) &&
      cipher_byte != uint8_t(Cipher::kAes256Gcm)) {
    return Fail(HandshakeErrc::kNoCommonCipher, "msg2 chose an unknown cipher");
  }
  if ((cipher_byte & options_.ciphers) == 0) {
    return Fail(HandshakeErrc::kNoCommonCipher, "msg2 chose a cipher the client did not offer");
  }
  session_params_.assign(pt.begin() + 3, pt.begin() + 3 + params_len);
  Wipe(pt);

  SessionKeys keys;
  keys.cipher = Cipher(cipher_byte);
  st.Split(keys.send_key, keys.recv_key);
  keys.session_id = st.h();
  Wipe(ephemeral_.secret_key);
  return keys;
}

// ---------------------------------------------------------------- replay guard

size_t ReplayGuard::KeyHash::operator()(const ByteArray<32>& k) const {
  size_t v;
  std::memcpy(&v, k.data(), sizeof v);  // identities are public keys: uniform enough
  return v;
}

bool ReplayGuard::CheckAndUpdate(const ByteArray<32>& identity, uint64_t timestamp_ms,
                                 uint64_t now_ms) {
  std::lock_guard lock(mu_);
  auto it = latest_.find(identity);
  if (it != latest_.end()) {
    if (timestamp_ms <= it->second) return false;
    by_time_.erase({it->second, &it->first});
    it->second = timestamp_ms;
    by_time_.emplace(timestamp_ms, &it->first);
    return true;
  }
  // The floor stands for evicted identities; capped here, at use, so that it never refuses a
  // timestamp newer than now - kReplayFloorLagMs whatever was evicted (docs/tunnel.md).
  const uint64_t cap = now_ms > kReplayFloorLagMs ? now_ms - kReplayFloorLagMs : 0;
  if (timestamp_ms <= std::min(floor_ms_, cap)) return false;
  if (capacity_ == 0) {
    if (timestamp_ms + kTimestampPastWindowMs >= now_ms) {
      floor_ms_ = std::max(floor_ms_, timestamp_ms);
    }
    return true;
  }
  while (latest_.size() >= capacity_) EvictOldest(now_ms);
  auto [pos, inserted] = latest_.emplace(identity, timestamp_ms);
  by_time_.emplace(timestamp_ms, &pos->first);
  return true;
}

void ReplayGuard::EvictOldest(uint64_t now_ms) {
  auto oldest = by_time_.begin();
  const uint64_t t = oldest->first;
  // An expired entry (every msg1 carrying t is stale now) needs no floor.
  if (t + kTimestampPastWindowMs >= now_ms) floor_ms_ = std::max(floor_ms_, t);
  latest_.erase(*oldest->second);
  by_time_.erase(oldest);
}

uint64_t ReplayGuard::floor_ms() const {
  std::lock_guard lock(mu_);
  return floor_ms_;
}

size_t ReplayGuard::size() const {
  std::lock_guard lock(mu_);
  return latest_.size();
}

// ---------------------------------------------------------------- responder

HandshakeResponder::HandshakeResponder(Options options) : options_(std::move(options)) {
  mac1_key_ = Mac1Key(options_.static_key->public_key);
}

bool HandshakeResponder::CheckMac1(ByteSpan msg1) const {
  if (msg1.size() != kMsg1Size) return false;
  uint8_t mac[kMac1Size];
  Mac1(mac1_key_, msg1.subspan(0, kMsg1Size - kMac1Size), mac);
  return sodium_memcmp(mac, msg1.data() + kMsg1Size - kMac1Size, kMac1Size) == 0;
}

Result<ClientHello, HandshakeErrc> HandshakeResponder::ReadMessage1(ByteSpan in) {
  if (stage_ != Stage::kStart) return Fail(HandshakeErrc::kWrongState, "msg1 already read");
  auto size = HandshakeMessageSize(in);
  if (!size) return std::unexpected(size.error());
  if (*size == 0 || in[0] != kMsg1Type) return Fail(HandshakeErrc::kBadType, "not msg1");
  if (in.size() != kMsg1Size) return Fail(HandshakeErrc::kBadLength, "msg1 length mismatch");
  if (!CheckMac1(in)) return Fail(HandshakeErrc::kBadMac1, "mac1 does not match our static key");
  stage_ = Stage::kDone;  // one attempt: any failure below ends this responder

  SymmetricState st;
  st.MixHash(options_.static_key->public_key);
  st.MixHash(in.subspan(0, 4));
  std::memcpy(remote_ephemeral_.data(), in.data() + 4, 32);
  st.MixHash(remote_ephemeral_);
  Key32 dh;
  if (!Dh(options_.static_key->secret_key, remote_ephemeral_, dh)) {
    Wipe(dh);
    return Fail(HandshakeErrc::kWeakKey, "client ephemeral of small order");
  }
  Key32 k1 = st.MixKey(dh);
  Wipe(dh);
  ByteSpan ct = in.subspan(36, kHelloPlaintextSize + kAeadTagSize);
  ByteArray<kHelloPlaintextSize> pt;
  bool ok = AeadOpen(k1, st.h(), ct, pt.data());
  Wipe(k1);
  if (!ok) return Fail(HandshakeErrc::kDecryptFailed, "msg1 authentication failed");

  const uint8_t* f = pt.data();
  auto identity = payments::PublicKey::Parse(ByteSpan(f, 32));
  if (!identity) return Fail(HandshakeErrc::kBadIdentity, "client identity is not a key");
  ClientHello hello{*identity, {}, {}, GetU64(f + 96), f[104]};
  std::memcpy(hello.ledger.bytes.data(), f + 32, 32);
  std::memcpy(hello.channel.bytes.data(), f + 64, 32);
  // Without a clock (tests of the message format) the window is not checked and the replay
  // guard's floor is not capped below the message's own time.
  const uint64_t now_ms =
      options_.clock != nullptr ? options_.clock->NowSeconds() * 1000 : hello.timestamp_ms;
  if (options_.clock != nullptr) {
    if (hello.timestamp_ms + kTimestampPastWindowMs < now_ms) {
      return Fail(HandshakeErrc::kStaleTimestamp, "client clock too far behind ours");
    }
    if (hello.timestamp_ms > now_ms + kTimestampFutureWindowMs) {
      return Fail(HandshakeErrc::kStaleTimestamp, "client clock too far ahead of ours");
    }
  }
  payments::Signature sig;
  std::memcpy(sig.data(), f + kHelloFieldsSize, sig.size());
  if (!identity->Verify(ClientAuthDigest(st.h(), ByteSpan(f, kHelloFieldsSize)), sig)) {
    return Fail(HandshakeErrc::kBadSignature, "client signature does not verify");
  }
  if ((hello.ciphers & kKnownCiphers) == 0) {
    return Fail(HandshakeErrc::kNoCommonCipher, "client offered no known cipher");
  }
  if (options_.replay_guard != nullptr &&
      !options_.replay_guard->CheckAndUpdate(identity->bytes(), hello.timestamp_ms, now_ms)) {
    return Fail(HandshakeErrc::kReplay, "timestamp not newer than the last handshake");
  }
  st.MixHash(ct);
  state_ = st;
  offered_ = hello.ciphers;
  stage_ = Stage::kRead1;
  return hello;
}

Result<size_t, HandshakeErrc> HandshakeResponder::WriteMessage2(std::span<uint8_t> out,
                                                                Cipher cipher,
                                                                ByteSpan session_params) {
  if (stage_ != Stage::kRead1) return Fail(HandshakeErrc::kWrongState, "msg1 not read");
  if (session_params.size() > kMaxSessionParams) {
    return Fail(HandshakeErrc::kBadParams, "session params too long");
  }
  if ((uint8_t(cipher) & offered_ & kKnownCiphers) == 0 ||
      (uint8_t(cipher) & LocalCiphers()) == 0) {
    return Fail(HandshakeErrc::kNoCommonCipher, "cipher not offered or not available");
  }
  const size_t total = kMinMsg2Size + session_params.size();
  if (out.size() < total) return Fail(HandshakeErrc::kBufferTooSmall, "msg2 buffer");
  stage_ = Stage::kDone;

  X25519KeyPair eph = options_.ephemeral_secret_for_test
                          ? X25519KeyPair::FromSecret(*options_.ephemeral_secret_for_test)
                          : X25519KeyPair::Generate();
  uint8_t* p = out.data();
  p[0] = kMsg2Type;
  p[1] = kHandshakeVersion;
  PutU16(p + 2, uint16_t(total));
  std::memcpy(p + 4, eph.public_key.data(), 32);
  state_.MixHash(ByteSpan(p, 4));
  state_.MixHash(eph.public_key);
  Key32 dh;
  if (!Dh(eph.secret_key, remote_ephemeral_, dh)) {
    Wipe(dh);
    return Fail(HandshakeErrc::kWeakKey, "client ephemeral of small order");
  }
  Key32 k2 = state_.MixKey(dh);
  Wipe(dh);
  ByteArray<3 + kMaxSessionParams> pt;
  pt[0] = uint8_t(cipher);
  PutU16(pt.data() + 1, uint16_t(session_params.size()));
  if (!session_params.empty()) {
    std::memcpy(pt.data() + 3, session_params.data(), session_params.size());
  }
  AeadSeal(k2, state_.h(), ByteSpan(pt.data(), 3 + session_params.size()), p + 36);
  Wipe(k2);
  state_.MixHash(ByteSpan(p + 36, total - 36));

  keys_.cipher = cipher;
  state_.Split(keys_.recv_key, keys_.send_key);
  keys_.session_id = state_.h();
  stage_ = Stage::kWrote2;
  return total;
}

Result<SessionKeys, HandshakeErrc> HandshakeResponder::TakeKeys() {
  if (stage_ != Stage::kWrote2) return Fail(HandshakeErrc::kWrongState, "no keys");
  stage_ = Stage::kDone;
  return std::move(keys_);
}

}  // namespace dvpn::tunnel
