// The handshake: agreement, authentication failures, tampering, replay, cipher negotiation.
#include "tunnel/handshake.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <vector>

#include "tunnel/record.h"

namespace dvpn::tunnel {
namespace {

payments::PrivateKey KeyOf(uint8_t fill) {
  ByteArray<32> secret;
  secret.fill(fill);
  return *payments::PrivateKey::FromBytes(secret);
}

class HandshakeTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kNowSeconds = 1'900'000'000;

  HandshakeInitiator::Options ClientOptions(uint64_t ts_ms = kNowSeconds * 1000) {
    HandshakeInitiator::Options o;
    o.provider_static = provider_.public_key;
    o.identity = &client_;
    o.ledger.bytes.fill(0x44);
    o.channel.bytes.fill(0x55);
    o.timestamp_ms = ts_ms;
    return o;
  }
  HandshakeResponder::Options ServerOptions() {
    return {&provider_, &guard_, &clock_, std::nullopt};
  }
  std::vector<uint8_t> Msg1(HandshakeInitiator& c) {
    std::vector<uint8_t> m(kMsg1Size);
    auto n = c.WriteMessage1(m);
    EXPECT_TRUE(n.has_value());
    return m;
  }

  X25519KeyPair provider_ = X25519KeyPair::Generate();
  payments::PrivateKey client_ = KeyOf(0x22);
  ReplayGuard guard_{1024};
  ManualClock clock_{kNowSeconds};
};

TEST_F(HandshakeTest, BothSidesAgreeOnKeys) {
  HandshakeInitiator client(ClientOptions());
  HandshakeResponder server(ServerOptions());
  auto m1 = Msg1(client);
  ASSERT_TRUE(server.CheckMac1(m1));
  auto hello = server.ReadMessage1(m1);
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->identity, client_.public_key());
  EXPECT_EQ(hello->channel.bytes[0], 0x55);
  EXPECT_EQ(hello->ledger.bytes[31], 0x44);
  EXPECT_EQ(hello->timestamp_ms, kNowSeconds * 1000);
  std::vector<uint8_t> m2(kMaxMsg2Size);
  const std::vector<uint8_t> params = {1, 2, 3, 4, 5};
  auto cipher = ChooseCipher(hello->ciphers, LocalCiphers());
  ASSERT_TRUE(cipher);
  auto n2 = server.WriteMessage2(m2, *cipher, params);
  ASSERT_TRUE(n2) << n2.error().message;
  EXPECT_EQ(*n2, kMinMsg2Size + params.size());
  auto skeys = server.TakeKeys();
  ASSERT_TRUE(skeys);
  auto ckeys = client.ReadMessage2(std::span(m2).first(*n2));
  ASSERT_TRUE(ckeys) << ckeys.error().message;
  EXPECT_EQ(client.session_params(), params);
  EXPECT_EQ(ckeys->send_key, skeys->recv_key);
  EXPECT_EQ(ckeys->recv_key, skeys->send_key);
  EXPECT_NE(ckeys->send_key, ckeys->recv_key);
  EXPECT_EQ(ckeys->session_id, skeys->session_id);
  EXPECT_EQ(ckeys->cipher, *cipher);
  // A second handshake gives fresh keys (ephemeral keys differ).
  HandshakeInitiator client2(ClientOptions(kNowSeconds * 1000 + 1));
  HandshakeResponder server2(ServerOptions());
  auto m1b = Msg1(client2);
  ASSERT_TRUE(server2.ReadMessage1(m1b));
  ASSERT_TRUE(server2.WriteMessage2(m2, *cipher, {}));
  auto k2 = server2.TakeKeys();
  ASSERT_TRUE(k2);
  EXPECT_NE(k2->send_key, skeys->send_key);
}

TEST_F(HandshakeTest, WrongStaticKeyFailsMac1BeforeAnyDh) {
  auto options = ClientOptions();
  options.provider_static = X25519KeyPair::Generate().public_key;  // not this provider
  HandshakeInitiator client(std::move(options));
  HandshakeResponder server(ServerOptions());
  auto m1 = Msg1(client);
  EXPECT_FALSE(server.CheckMac1(m1));
  auto r = server.ReadMessage1(m1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, HandshakeErrc::kBadMac1);
  // kBadMac1 is returned before the responder commits to the message: it is still usable.
  HandshakeInitiator good(ClientOptions());
  EXPECT_TRUE(server.ReadMessage1(Msg1(good)));
}

TEST_F(HandshakeTest, EveryTamperedByteOfMsg1IsRefused) {
  HandshakeInitiator client(ClientOptions());
  auto m1 = Msg1(client);
  for (size_t i = 0; i < m1.size(); ++i) {
    auto bad = m1;
    bad[i] ^= 0x01;
    HandshakeResponder server(ServerOptions());
    auto r = server.ReadMessage1(bad);
    ASSERT_FALSE(r) << "byte " << i;
    // Header bytes give a header error; everything else is caught by mac1 before any DH.
    if (i >= 4) {
      EXPECT_EQ(r.error().code, HandshakeErrc::kBadMac1) << i;
    }
  }
  EXPECT_EQ(guard_.size(), 0u);
}

TEST_F(HandshakeTest, TamperedMsg1WithValidMac1FailsDecryption) {
  // An attacker who knows S_p can recompute mac1; the AEAD still catches the change.
  HandshakeInitiator client(ClientOptions());
  auto m1 = Msg1(client);
  Hash32 key = Mac1Key(provider_.public_key);
  for (size_t i = 4; i < kMsg1Size - kMac1Size; i += 7) {
    auto bad = m1;
    bad[i] ^= 0x80;
    crypto_generichash(bad.data() + kMsg1Size - kMac1Size, kMac1Size, bad.data(),
                       kMsg1Size - kMac1Size, key.data(), key.size());
    HandshakeResponder server(ServerOptions());
    auto r = server.ReadMessage1(bad);
    ASSERT_FALSE(r) << i;
    EXPECT_TRUE(r.error().code == HandshakeErrc::kDecryptFailed ||
                r.error().code == HandshakeErrc::kWeakKey)
        << i << " " << HandshakeErrcName(r.error().code);
  }
}

TEST_F(HandshakeTest, EveryTamperedByteOfMsg2IsRefused) {
  const std::vector<uint8_t> params = {9, 8, 7};
  for (size_t i = 0; i < kMinMsg2Size + params.size(); ++i) {
    HandshakeInitiator client(ClientOptions(kNowSeconds * 1000 + i));
    HandshakeResponder server(ServerOptions());
    auto m1 = Msg1(client);
    ASSERT_TRUE(server.ReadMessage1(m1));
    std::vector<uint8_t> m2(kMaxMsg2Size);
    auto n = server.WriteMessage2(m2, Cipher::kChaCha20Poly1305, params);
    ASSERT_TRUE(n);
    m2.resize(*n);
    m2[i] ^= 0x04;
    auto r = client.ReadMessage2(m2);
    ASSERT_FALSE(r) << "byte " << i;
  }
}

TEST_F(HandshakeTest, TruncatedOversizedAndGarbageMessages) {
  HandshakeInitiator client(ClientOptions());
  auto m1 = Msg1(client);
  for (size_t len : {size_t{0}, size_t{1}, size_t{3}, size_t{4}, size_t{100}, kMsg1Size - 1}) {
    HandshakeResponder server(ServerOptions());
    EXPECT_FALSE(server.ReadMessage1(std::span(m1).first(len))) << len;
  }
  auto longer = m1;
  longer.push_back(0);
  HandshakeResponder s1(ServerOptions());
  EXPECT_EQ(s1.ReadMessage1(longer).error().code, HandshakeErrc::kBadLength);
  std::vector<uint8_t> garbage(kMsg1Size, 0x41);
  HandshakeResponder s2(ServerOptions());
  EXPECT_EQ(s2.ReadMessage1(garbage).error().code, HandshakeErrc::kBadType);
  garbage[0] = kMsg1Type;
  HandshakeResponder s3(ServerOptions());
  EXPECT_EQ(s3.ReadMessage1(garbage).error().code, HandshakeErrc::kBadVersion);
  garbage[1] = kHandshakeVersion;
  HandshakeResponder s4(ServerOptions());
  EXPECT_EQ(s4.ReadMessage1(garbage).error().code, HandshakeErrc::kBadLength);
  garbage[2] = 0;
  garbage[3] = uint8_t(kMsg1Size);
  HandshakeResponder s5(ServerOptions());
  EXPECT_EQ(s5.ReadMessage1(garbage).error().code, HandshakeErrc::kBadMac1);

  // Stream framing helper.
  EXPECT_EQ(*HandshakeMessageSize(std::span(m1).first(3)), 0u);
  EXPECT_EQ(*HandshakeMessageSize(m1), kMsg1Size);
  const uint8_t huge_msg2[] = {kMsg2Type, kHandshakeVersion, 0xff, 0xff};
  EXPECT_EQ(HandshakeMessageSize(huge_msg2).error().code, HandshakeErrc::kBadLength);

  // msg2 truncated / garbage on the client side.
  ASSERT_TRUE(client.ReadMessage2(std::span(m1).first(10)).error().code ==
              HandshakeErrc::kBadType);
}

TEST_F(HandshakeTest, ReplayedMsg1IsRefused) {
  HandshakeInitiator client(ClientOptions());
  auto m1 = Msg1(client);
  HandshakeResponder s1(ServerOptions());
  ASSERT_TRUE(s1.ReadMessage1(m1));
  HandshakeResponder s2(ServerOptions());
  auto r = s2.ReadMessage1(m1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, HandshakeErrc::kReplay);
  // An older timestamp from the same identity is refused too; a newer one is accepted.
  HandshakeInitiator older(ClientOptions(kNowSeconds * 1000 - 1));
  HandshakeResponder s3(ServerOptions());
  EXPECT_EQ(s3.ReadMessage1(Msg1(older)).error().code, HandshakeErrc::kReplay);
  HandshakeInitiator newer(ClientOptions(kNowSeconds * 1000 + 1));
  HandshakeResponder s4(ServerOptions());
  EXPECT_TRUE(s4.ReadMessage1(Msg1(newer)));
}

TEST_F(HandshakeTest, TimestampOutsideWindowIsRefused) {
  const uint64_t now = kNowSeconds * 1000;
  for (uint64_t ts : {now - kTimestampPastWindowMs - 1, now + kTimestampFutureWindowMs + 1,
                      now + 118'000}) {
    HandshakeInitiator client(ClientOptions(ts));
    HandshakeResponder server(ServerOptions());
    EXPECT_EQ(server.ReadMessage1(Msg1(client)).error().code, HandshakeErrc::kStaleTimestamp)
        << int64_t(ts - now);
  }
  // The edges are accepted (each by a new identity: the guard would refuse an older one).
  uint8_t fill = 0x30;
  for (uint64_t ts : {now - kTimestampPastWindowMs, now + kTimestampFutureWindowMs}) {
    payments::PrivateKey key = KeyOf(fill++);
    auto options = ClientOptions(ts);
    options.identity = &key;
    HandshakeInitiator client(std::move(options));
    HandshakeResponder server(ServerOptions());
    EXPECT_TRUE(server.ReadMessage1(Msg1(client))) << int64_t(ts - now);
  }
}

ByteArray<32> Id(uint32_t n) {
  ByteArray<32> k{};
  for (int i = 0; i < 4; ++i) k[i] = uint8_t(n >> (8 * i));
  k[31] = 1;
  return k;
}

TEST_F(HandshakeTest, ReplayGuardStaysBoundedAndNeverReopensAReplay) {
  const uint64_t now = kNowSeconds * 1000;
  ReplayGuard guard(3);
  // Entries older than the floor's lag: their eviction raises the floor, which blocks them.
  const uint64_t t0 = now - 60'000;
  EXPECT_TRUE(guard.CheckAndUpdate(Id(1), t0 + 100, now));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(2), t0 + 200, now));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(3), t0 + 300, now));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(4), t0 + 400, now));  // evicts id 1, floor = t0 + 100
  EXPECT_EQ(guard.size(), 3u);
  EXPECT_EQ(guard.floor_ms(), t0 + 100);
  EXPECT_FALSE(guard.CheckAndUpdate(Id(1), t0 + 100, now));  // the evicted replay is refused
  EXPECT_FALSE(guard.CheckAndUpdate(Id(3), t0 + 300, now));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(3), t0 + 301, now));
  // The oldest is evicted, not the least recently used: id 2 (t0 + 200) goes next.
  EXPECT_TRUE(guard.CheckAndUpdate(Id(5), t0 + 500, now));
  EXPECT_EQ(guard.floor_ms(), t0 + 200);
  EXPECT_FALSE(guard.CheckAndUpdate(Id(2), t0 + 200, now));
  EXPECT_EQ(guard.size(), 3u);
}

TEST_F(HandshakeTest, ReplayGuardExpiredEntriesLeaveNoFloor) {
  const uint64_t now = kNowSeconds * 1000;
  ReplayGuard guard(2);
  EXPECT_TRUE(guard.CheckAndUpdate(Id(1), now - 200'000, now - 190'000));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(2), now - 1'000, now));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(3), now, now));  // evicts id 1: expired, no floor
  EXPECT_EQ(guard.floor_ms(), 0u);
}

TEST_F(HandshakeTest, ReplayGuardFloorNeverRefusesARecentTimestamp) {
  // Whatever is evicted, at any rate, a new identity dated after now - kReplayFloorLagMs is
  // accepted; one dated at or below min(floor, now - lag) is not.
  const uint64_t now = kNowSeconds * 1000;
  ReplayGuard guard(16);
  for (uint32_t i = 0; i < 10'000; ++i) {
    ASSERT_TRUE(guard.CheckAndUpdate(Id(i), now + kTimestampFutureWindowMs, now)) << i;
  }
  EXPECT_EQ(guard.floor_ms(), now + kTimestampFutureWindowMs);
  EXPECT_EQ(guard.size(), 16u);
  EXPECT_TRUE(guard.CheckAndUpdate(Id(1'000'000), now, now));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(1'000'001), now - kReplayFloorLagMs + 1, now));
  EXPECT_FALSE(guard.CheckAndUpdate(Id(1'000'002), now - kReplayFloorLagMs, now));
  // Later the floor (raised to now + 10 s) is in the past and blocks evicted replays fully.
  const uint64_t later = now + 60'000;
  EXPECT_FALSE(guard.CheckAndUpdate(Id(3), now + kTimestampFutureWindowMs, later));
  EXPECT_TRUE(guard.CheckAndUpdate(Id(3), now + kTimestampFutureWindowMs + 1, later));
}

// The lock-out attack of issue 13, scaled down to a 64-entry table: anyone who knows S_p (it is
// in the offer) makes valid msg1s with fresh identities dated ahead of the exit's clock, many
// times the table's size; then a fresh honest client must still be accepted. (The old guard
// raised its floor to now + 118 s here and refused the honest client with kReplay.)
TEST_F(HandshakeTest, ValidHandshakeFloodCannotLockOutAFreshClient) {
  ReplayGuard guard(64);
  const uint64_t now = kNowSeconds * 1000;
  int accepted = 0;
  for (int i = 0; i < 4 * 64; ++i) {
    payments::PrivateKey attacker = payments::PrivateKey::Generate();
    // Half dated as far ahead as the old window allowed, half as far as the new one allows.
    auto options = ClientOptions(now + (i % 2 == 0 ? 118'000 : 10'000));
    options.identity = &attacker;
    HandshakeInitiator client(std::move(options));
    HandshakeResponder server({&provider_, &guard, &clock_, std::nullopt});
    if (server.ReadMessage1(Msg1(client))) ++accepted;
  }
  EXPECT_GE(accepted, 2 * 64);  // the flood did fill the table
  for (uint64_t skew : {uint64_t{0}, uint64_t{5'000}}) {
    HandshakeInitiator honest(ClientOptions(now - skew));
    HandshakeResponder server({&provider_, &guard, &clock_, std::nullopt});
    auto r = server.ReadMessage1(Msg1(honest));
    EXPECT_TRUE(r) << "honest client " << skew << " ms behind refused: "
                   << HandshakeErrcName(r.error().code);
    client_ = KeyOf(uint8_t(0x60 + skew / 1000));  // the next one is a new identity
  }
}

// Builds a msg1 by hand (the spec, independently of HandshakeInitiator) with a signature made
// by `signer` over the transcript digest, or over a wrong digest when `corrupt_digest`.
std::vector<uint8_t> HandMadeMsg1(const Key32& provider_static, const payments::PublicKey& claimed,
                                  const payments::PrivateKey& signer, uint64_t ts_ms,
                                  bool corrupt_digest) {
  Key32 eph_secret;
  eph_secret.fill(0x66);
  X25519KeyPair eph = X25519KeyPair::FromSecret(eph_secret);
  std::vector<uint8_t> m(kMsg1Size);
  m[0] = kMsg1Type;
  m[1] = kHandshakeVersion;
  m[2] = 0;
  m[3] = uint8_t(kMsg1Size);
  std::copy(eph.public_key.begin(), eph.public_key.end(), m.begin() + 4);
  SymmetricState st;
  st.MixHash(provider_static);
  st.MixHash(std::span(m).first(4));
  st.MixHash(eph.public_key);
  Key32 dh;
  EXPECT_EQ(crypto_scalarmult(dh.data(), eph.secret_key.data(), provider_static.data()), 0);
  Key32 k1 = st.MixKey(dh);
  std::vector<uint8_t> pt(kHelloPlaintextSize, 0);
  std::copy(claimed.bytes().begin(), claimed.bytes().end(), pt.begin());
  std::fill(pt.begin() + 32, pt.begin() + 64, 0x44);
  std::fill(pt.begin() + 64, pt.begin() + 96, 0x55);
  for (int i = 0; i < 8; ++i) pt[96 + i] = uint8_t(ts_ms >> (56 - 8 * i));
  pt[104] = 0x03;
  Encoder enc;
  enc.Tag(kClientAuthTag).Raw(st.h()).Raw(std::span(pt).first(kHelloFieldsSize));
  if (corrupt_digest) enc.U8(0);
  auto sig = signer.Sign(payments::Sha256(enc.bytes()));
  std::copy(sig.begin(), sig.end(), pt.begin() + kHelloFieldsSize);
  const uint8_t nonce[12] = {};
  unsigned long long clen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(m.data() + 36, &clen, pt.data(), pt.size(),
                                            st.h().data(), 32, nullptr, nonce, k1.data());
  Hash32 key = Mac1Key(provider_static);
  crypto_generichash(m.data() + kMsg1Size - kMac1Size, kMac1Size, m.data(),
                     kMsg1Size - kMac1Size, key.data(), key.size());
  return m;
}

TEST_F(HandshakeTest, ForgedSignatureIsRefused) {
  payments::PrivateKey mallory = KeyOf(0x23);
  const uint64_t ts = kNowSeconds * 1000;
  // Claims client_'s identity but signs with another key.
  HandshakeResponder s1(ServerOptions());
  auto r1 = s1.ReadMessage1(
      HandMadeMsg1(provider_.public_key, client_.public_key(), mallory, ts, false));
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error().code, HandshakeErrc::kBadSignature);
  // Right key, wrong digest (not bound to this transcript).
  HandshakeResponder s2(ServerOptions());
  auto r2 = s2.ReadMessage1(
      HandMadeMsg1(provider_.public_key, client_.public_key(), client_, ts, true));
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code, HandshakeErrc::kBadSignature);
  EXPECT_EQ(guard_.size(), 0u);  // failures leave no replay-guard state
  // The hand-made message with a correct signature is accepted: the builder follows the spec.
  HandshakeResponder s3(ServerOptions());
  auto r3 = s3.ReadMessage1(
      HandMadeMsg1(provider_.public_key, client_.public_key(), client_, ts, false));
  ASSERT_TRUE(r3) << r3.error().message;
}

TEST_F(HandshakeTest, CipherNegotiation) {
  const uint8_t chacha = uint8_t(Cipher::kChaCha20Poly1305), aes = uint8_t(Cipher::kAes256Gcm);
  EXPECT_EQ(ChooseCipher(chacha | aes, chacha | aes), Cipher::kAes256Gcm);
  EXPECT_EQ(ChooseCipher(chacha | aes, chacha), Cipher::kChaCha20Poly1305);  // no AES-NI here
  EXPECT_EQ(ChooseCipher(chacha, chacha | aes), Cipher::kChaCha20Poly1305);
  EXPECT_EQ(ChooseCipher(aes, chacha), std::nullopt);
  EXPECT_EQ(ChooseCipher(0xfc, chacha | aes), std::nullopt);

  // A client without AES: the responder cannot pick AES, and ChaCha works end to end.
  auto options = ClientOptions();
  options.ciphers = chacha;
  HandshakeInitiator client(std::move(options));
  HandshakeResponder server(ServerOptions());
  auto hello = server.ReadMessage1(Msg1(client));
  ASSERT_TRUE(hello);
  std::vector<uint8_t> m2(kMaxMsg2Size);
  EXPECT_EQ(server.WriteMessage2(m2, Cipher::kAes256Gcm, {}).error().code,
            HandshakeErrc::kNoCommonCipher);
  auto n = server.WriteMessage2(m2, Cipher::kChaCha20Poly1305, {});
  ASSERT_TRUE(n);
  auto keys = client.ReadMessage2(std::span(m2).first(*n));
  ASSERT_TRUE(keys);
  EXPECT_EQ(keys->cipher, Cipher::kChaCha20Poly1305);
}

TEST_F(HandshakeTest, SessionParamsAreBounded) {
  HandshakeInitiator client(ClientOptions());
  HandshakeResponder server(ServerOptions());
  ASSERT_TRUE(server.ReadMessage1(Msg1(client)));
  std::vector<uint8_t> m2(kMaxMsg2Size + 10);
  std::vector<uint8_t> too_long(kMaxSessionParams + 1, 7);
  EXPECT_EQ(server.WriteMessage2(m2, Cipher::kChaCha20Poly1305, too_long).error().code,
            HandshakeErrc::kBadParams);
  std::vector<uint8_t> max(kMaxSessionParams, 7);
  auto n = server.WriteMessage2(m2, Cipher::kChaCha20Poly1305, max);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, kMaxMsg2Size);
  auto keys = client.ReadMessage2(std::span(m2).first(*n));
  ASSERT_TRUE(keys);
  EXPECT_EQ(client.session_params(), max);
}

TEST_F(HandshakeTest, LowOrderEphemeralIsRefused) {
  // A msg1 whose e_c is a small-order point (here 0): mac1 is valid (anyone who knows S_p can
  // compute it), the DH result is zero, and the responder refuses with kWeakKey.
  HandshakeInitiator client(ClientOptions());
  auto m1 = Msg1(client);
  std::fill(m1.begin() + 4, m1.begin() + 36, 0);
  Hash32 key = Mac1Key(provider_.public_key);
  crypto_generichash(m1.data() + kMsg1Size - kMac1Size, kMac1Size, m1.data(),
                     kMsg1Size - kMac1Size, key.data(), key.size());
  HandshakeResponder server(ServerOptions());
  EXPECT_EQ(server.ReadMessage1(m1).error().code, HandshakeErrc::kWeakKey);
  // And a client given a small-order S_p refuses to write msg1.
  auto options = ClientOptions();
  options.provider_static = Key32{};
  HandshakeInitiator bad(std::move(options));
  std::vector<uint8_t> out(kMsg1Size);
  EXPECT_EQ(bad.WriteMessage1(out).error().code, HandshakeErrc::kWeakKey);
}

}  // namespace
}  // namespace dvpn::tunnel
