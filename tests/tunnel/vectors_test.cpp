// Checks the test vectors printed in docs/tunnel.md (between "tunnel-vectors" markers) against
// this implementation, so the document and the code cannot drift apart. Also checks HKDF
// against RFC 5869. Set DVPN_PRINT_VECTORS=1 to print the current values.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/tunnel/doc_vectors.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "tunnel/record.h"

namespace dvpn::tunnel {
namespace {

std::map<std::string, std::string> ReadVectors() {
  return testing::ReadDocVectors(DVPN_TUNNEL_MD, "tunnel-vectors");
}

template <size_t N>
ByteArray<N> Fill(uint8_t b) {
  ByteArray<N> a;
  a.fill(b);
  return a;
}

TEST(TunnelVectors, HkdfMatchesRfc5869Case1) {
  auto ikm = *FromHex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  auto salt = *FromHex("000102030405060708090a0b0c");
  auto info = *FromHex("f0f1f2f3f4f5f6f7f8f9");
  EXPECT_EQ(ToHex(HkdfExtract(salt, ikm)),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
  std::vector<uint8_t> okm(42);
  Hkdf(salt, ikm, info, okm);
  EXPECT_EQ(ToHex(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(TunnelVectors, HkdfMatchesRfc5869Case3) {  // empty salt and info
  auto ikm = *FromHex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  std::vector<uint8_t> okm(42);
  Hkdf({}, ikm, {}, okm);
  EXPECT_EQ(ToHex(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(TunnelVectors, MatchTheDocument) {
  const auto provider = X25519KeyPair::FromSecret(Fill<32>(0x70));
  ByteArray<32> id_secret = Fill<32>(0x22);
  const auto client = *payments::PrivateKey::FromBytes(id_secret);
  HandshakeInitiator::Options co;
  co.provider_static = provider.public_key;
  co.identity = &client;
  co.ledger.bytes = Fill<32>(0x44);
  co.channel.bytes = Fill<32>(0x55);
  co.timestamp_ms = 1'900'000'000'000;
  co.ciphers = 0x03;
  co.ephemeral_secret_for_test = Fill<32>(0x71);
  co.signature_aux_for_test = Hash32{};
  HandshakeInitiator initiator(std::move(co));
  ReplayGuard guard;
  ManualClock clock(1'900'000'000);
  HandshakeResponder responder({&provider, &guard, &clock, Fill<32>(0x72)});

  std::vector<uint8_t> msg1(kMsg1Size), msg2(kMaxMsg2Size);
  ASSERT_TRUE(initiator.WriteMessage1(msg1));
  ASSERT_TRUE(responder.ReadMessage1(msg1));
  const std::string params = "price=1000u/MiB";
  auto n2 = responder.WriteMessage2(msg2, Cipher::kChaCha20Poly1305, AsBytes(params));
  ASSERT_TRUE(n2);
  msg2.resize(*n2);
  auto pkeys = responder.TakeKeys();
  auto ckeys = initiator.ReadMessage2(msg2);
  ASSERT_TRUE(pkeys && ckeys);

  std::map<std::string, std::string> got;
  got["provider.static_secret"] = ToHex(provider.secret_key);
  got["provider.static_public"] = ToHex(provider.public_key);
  got["client.identity_secret"] = ToHex(id_secret);
  got["client.identity_public"] = ToHex(client.public_key().bytes());
  got["mac1_key"] = ToHex(Mac1Key(provider.public_key));
  got["msg1"] = ToHex(msg1);
  got["msg2"] = ToHex(msg2);
  got["key.client_to_provider"] = ToHex(ckeys->send_key);
  got["key.provider_to_client"] = ToHex(ckeys->recv_key);
  got["session_id"] = ToHex(ckeys->session_id);
  EXPECT_EQ(pkeys->recv_key, ckeys->send_key);

  // Records: "hello" as the first two client->provider records, then a REKEY record, then
  // "hello" again under the next key.
  RecordSealer sealer(Cipher::kChaCha20Poly1305, ckeys->send_key);
  std::vector<uint8_t> rec(5 + kRecordOverhead);
  ASSERT_TRUE(sealer.Seal(AsBytes("hello"), rec));
  got["record.chacha.0"] = ToHex(rec);
  ASSERT_TRUE(sealer.Seal(AsBytes("hello"), rec));
  got["record.chacha.1"] = ToHex(rec);
  std::vector<uint8_t> rk(kRecordOverhead);
  ASSERT_TRUE(sealer.SealRekey(rk));
  got["record.chacha.rekey"] = ToHex(rk);
  got["key.client_to_provider.next"] = ToHex(NextRecordKey(ckeys->send_key));
  ASSERT_TRUE(sealer.Seal(AsBytes("hello"), rec));
  got["record.chacha.after_rekey"] = ToHex(rec);
  const bool have_aes = (LocalCiphers() & uint8_t(Cipher::kAes256Gcm)) != 0;
  if (have_aes) {
    RecordSealer aes(Cipher::kAes256Gcm, ckeys->send_key);
    ASSERT_TRUE(aes.Seal(AsBytes("hello"), rec));
    got["record.aes.0"] = ToHex(rec);
  }

  if (std::getenv("DVPN_PRINT_VECTORS")) {
    for (auto& [k, v] : got) std::cout << k << " = " << v << "\n";
  }
  auto want = ReadVectors();
  ASSERT_EQ(want.size(), 16u) << "tunnel-vectors block of " << DVPN_TUNNEL_MD
                              << " not found or changed";
  for (auto& [k, v] : got) EXPECT_EQ(want[k], v) << k;
  if (!have_aes) GTEST_SKIP() << "no AES-NI: record.aes.0 not checked";
}

}  // namespace
}  // namespace dvpn::tunnel
