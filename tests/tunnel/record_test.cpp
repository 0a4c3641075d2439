// Encrypted records: round trips, tampering, framing limits, rekey, nonce uniqueness.
#include "tunnel/record.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <set>
#include <vector>

#include "tests/tunnel/cipher_test_util.h"

namespace dvpn::tunnel {
namespace {

using testing::Ciphers;
using testing::KeyFill;

class RecordTest : public ::testing::TestWithParam<Cipher> {};

std::vector<uint8_t> SealOne(RecordSealer& s, const std::vector<uint8_t>& pt) {
  std::vector<uint8_t> out(pt.size() + kRecordOverhead);
  auto n = s.Seal(pt, out);
  EXPECT_TRUE(n);
  EXPECT_EQ(*n, out.size());
  return out;
}

TEST_P(RecordTest, RoundTripAtManySizes) {
  RecordSealer sealer(GetParam(), KeyFill(1));
  RecordOpener opener(GetParam(), KeyFill(1));
  for (size_t size : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{1000}, size_t{4096},
                      kMaxRecordPlaintext - 1, kMaxRecordPlaintext}) {
    std::vector<uint8_t> pt(size);
    for (size_t i = 0; i < size; ++i) pt[i] = uint8_t(i * 7 + size);
    auto rec = SealOne(sealer, pt);
    EXPECT_EQ(*RecordSize(rec), rec.size());
    if (size >= 16) {
      EXPECT_NE(std::vector<uint8_t>(rec.begin() + 2, rec.end() - 16), pt);
    }
    auto opened = opener.Open(rec);
    ASSERT_TRUE(opened) << size;
    EXPECT_FALSE(opened->rekey);
    EXPECT_EQ(std::vector<uint8_t>(opened->plaintext.begin(), opened->plaintext.end()), pt);
  }
}

TEST_P(RecordTest, SealInPlace) {
  RecordSealer sealer(GetParam(), KeyFill(2));
  RecordOpener opener(GetParam(), KeyFill(2));
  std::vector<uint8_t> buf(100 + kRecordOverhead);
  for (size_t i = 0; i < 100; ++i) buf[2 + i] = uint8_t(i);
  auto n = sealer.Seal(std::span(buf).subspan(2, 100), buf);
  ASSERT_TRUE(n);
  auto opened = opener.Open(std::span(buf).first(*n));
  ASSERT_TRUE(opened);
  for (size_t i = 0; i < 100; ++i) ASSERT_EQ(opened->plaintext[i], uint8_t(i));
}

TEST_P(RecordTest, EveryTamperedByteFailsAndClosesTheStream) {
  RecordSealer sealer(GetParam(), KeyFill(3));
  auto rec = SealOne(sealer, std::vector<uint8_t>(40, 0xab));
  for (size_t i = 0; i < rec.size(); ++i) {
    RecordOpener opener(GetParam(), KeyFill(3));
    auto bad = rec;
    bad[i] ^= 0x01;
    auto r = opener.Open(bad);
    ASSERT_FALSE(r) << i;
    EXPECT_TRUE(opener.closed());
    auto again = opener.Open(rec);  // even the genuine record is refused now
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, RecordErrc::kClosed);
  }
}

TEST_P(RecordTest, TruncatedOversizedReorderedReplayed) {
  RecordSealer sealer(GetParam(), KeyFill(4));
  auto r0 = SealOne(sealer, {1, 2, 3});
  auto r1 = SealOne(sealer, {4, 5, 6});
  {
    RecordOpener o(GetParam(), KeyFill(4));
    EXPECT_EQ(o.Open(std::span(r0).first(r0.size() - 1)).error().code, RecordErrc::kTruncated);
  }
  {
    RecordOpener o(GetParam(), KeyFill(4));
    std::vector<uint8_t> longer = r0;
    longer.push_back(0);
    EXPECT_EQ(o.Open(longer).error().code, RecordErrc::kTruncated);
  }
  {
    RecordOpener o(GetParam(), KeyFill(4));
    EXPECT_EQ(o.Open(r1).error().code, RecordErrc::kBadTag);  // reordered
  }
  {
    RecordOpener o(GetParam(), KeyFill(4));
    ASSERT_TRUE(o.Open(r0));
    auto again = r0;
    EXPECT_EQ(o.Open(again).error().code, RecordErrc::kBadTag);  // replayed
  }
  {
    RecordOpener o(GetParam(), KeyFill(5));
    EXPECT_EQ(o.Open(r0).error().code, RecordErrc::kBadTag);  // wrong key
  }
  // Oversized / undersized headers are refused from the 2 header bytes alone.
  const uint8_t too_big[] = {0x40, 0x11};  // 16401
  EXPECT_EQ(RecordSize(too_big).error().code, RecordErrc::kBadLength);
  const uint8_t too_small[] = {0x00, 0x0f};
  EXPECT_EQ(RecordSize(too_small).error().code, RecordErrc::kBadLength);
  const uint8_t rekey_with_data[] = {0x80, 0x11};
  EXPECT_EQ(RecordSize(rekey_with_data).error().code, RecordErrc::kBadLength);
  const uint8_t max_ok[] = {uint8_t(kMaxRecordCiphertext >> 8), uint8_t(kMaxRecordCiphertext)};
  EXPECT_EQ(*RecordSize(max_ok), kMaxRecordSize);
  EXPECT_EQ(*RecordSize(std::span(max_ok).first(1)), 0u);
  // Sealer limits.
  std::vector<uint8_t> big(kMaxRecordPlaintext + 1), out(kMaxRecordSize + 64);
  EXPECT_EQ(sealer.Seal(big, out).error().code, RecordErrc::kTooLarge);
  std::vector<uint8_t> small_out(10);
  EXPECT_EQ(sealer.Seal(std::vector<uint8_t>(1), small_out).error().code,
            RecordErrc::kBufferTooSmall);
}

TEST_P(RecordTest, RekeyRoundTrip) {
  RecordSealer sealer(GetParam(), KeyFill(6));
  RecordOpener opener(GetParam(), KeyFill(6));
  std::vector<uint8_t> out(kRecordOverhead);
  for (int gen = 0; gen < 3; ++gen) {
    for (int i = 0; i < 5; ++i) {
      std::vector<uint8_t> pt(10, uint8_t(gen * 10 + i));
      auto rec = SealOne(sealer, pt);
      auto opened = opener.Open(rec);
      ASSERT_TRUE(opened);
      EXPECT_EQ(opened->plaintext[0], pt[0]);
    }
    auto n = sealer.SealRekey(out);
    ASSERT_TRUE(n);
    EXPECT_EQ(out[0] & 0x80, 0x80);
    auto opened = opener.Open(out);
    ASSERT_TRUE(opened);
    EXPECT_TRUE(opened->rekey);
    EXPECT_TRUE(opened->plaintext.empty());
    EXPECT_EQ(sealer.counter(), 0u);
    EXPECT_EQ(opener.generation(), uint64_t(gen + 1));
  }
  // An opener that missed the rekey cannot read the new generation.
  RecordOpener stale(GetParam(), KeyFill(6));
  auto rec = SealOne(sealer, {1});
  auto copy = rec;
  EXPECT_FALSE(stale.Open(copy));
  // The rekeyed key is NextRecordKey applied three times.
  Key32 k = KeyFill(6);
  for (int i = 0; i < 3; ++i) k = NextRecordKey(k);
  RecordSealer direct(GetParam(), k);
  EXPECT_EQ(SealOne(direct, {1}), rec);
}

TEST_P(RecordTest, RekeyDueAndHardLimit) {
  RecordSealer sealer(GetParam(), KeyFill(7));
  EXPECT_FALSE(sealer.RekeyDue());
  sealer.SetCounterForTest(kRekeyAfterRecords);
  EXPECT_TRUE(sealer.RekeyDue());
  sealer.SetCounterForTest(kMaxRecordsPerKey - 1);
  std::vector<uint8_t> out(64);
  EXPECT_EQ(sealer.Seal(std::vector<uint8_t>(1), out).error().code, RecordErrc::kRekeyRequired);
  ASSERT_TRUE(sealer.SealRekey(out));
  EXPECT_TRUE(sealer.Seal(std::vector<uint8_t>(1), out));
  RecordOpener opener(GetParam(), KeyFill(7));
  opener.SetCounterForTest(kMaxRecordsPerKey);
  EXPECT_EQ(opener.Open(std::span(out).first(19)).error().code, RecordErrc::kRekeyRequired);
}

TEST_P(RecordTest, NonceNeverRepeats) {
  // Equal plaintexts give different ciphertexts at every counter value, across rekeys.
  RecordSealer sealer(GetParam(), KeyFill(8));
  std::set<std::vector<uint8_t>> seen;
  std::vector<uint8_t> rk(kRecordOverhead);
  for (int i = 0; i < 2000; ++i) {
    if (i % 500 == 499) {
      ASSERT_TRUE(sealer.SealRekey(rk));
    }
    EXPECT_TRUE(seen.insert(SealOne(sealer, std::vector<uint8_t>(16, 0))).second) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Ciphers, RecordTest, ::testing::ValuesIn(Ciphers()), [](const auto& info) {
  return info.param == Cipher::kAes256Gcm ? "Aes256Gcm" : "ChaCha20";
});

// AES-256-GCM records use libsodium below a size threshold and OpenSSL above it (record.cpp):
// every size must give exactly the bytes of the reference AEAD (libsodium's one-shot call with
// nonce = 4 zero bytes || counter, AD = header), and tampering must fail on both paths.
TEST(RecordAesTest, BothImplementationsGiveTheReferenceBytes) {
  if (!(LocalCiphers() & uint8_t(Cipher::kAes256Gcm))) GTEST_SKIP() << "no AES-NI";
  const Key32 key = KeyFill(0x5C);
  RecordSealer sealer(Cipher::kAes256Gcm, key);
  RecordOpener opener(Cipher::kAes256Gcm, key);
  uint64_t counter = 0;
  for (size_t size : {size_t{0}, size_t{1}, size_t{71}, size_t{2047}, size_t{2048}, size_t{2049},
                      size_t{9999}, kMaxRecordPlaintext}) {
    std::vector<uint8_t> pt(size);
    for (size_t i = 0; i < size; ++i) pt[i] = uint8_t(i * 13 + size);
    auto record = SealOne(sealer, pt);
    // Reference.
    uint8_t nonce[12] = {};
    for (int i = 11; i >= 4; --i) nonce[i] = uint8_t(counter >> (8 * (11 - i)));
    std::vector<uint8_t> expect(size + kRecordTagSize);
    unsigned long long clen = 0;
    ASSERT_EQ(crypto_aead_aes256gcm_encrypt(expect.data(), &clen, pt.data(), pt.size(),
                                            record.data(), 2, nullptr, nonce, key.data()),
              0);
    ASSERT_EQ(clen, expect.size());
    EXPECT_EQ(std::vector<uint8_t>(record.begin() + 2, record.end()), expect) << "size " << size;
    ++counter;
    auto opened = opener.Open(record);
    ASSERT_TRUE(opened) << "size " << size;
    EXPECT_EQ(std::vector<uint8_t>(opened->plaintext.begin(), opened->plaintext.end()), pt);
  }
  // A tampered record fails on either path (the opener is closed afterwards, so one each).
  for (size_t size : {size_t{100}, size_t{8000}}) {
    RecordSealer s(Cipher::kAes256Gcm, key);
    RecordOpener o(Cipher::kAes256Gcm, key);
    std::vector<uint8_t> pt(size, 0x33);
    auto record = SealOne(s, pt);
    record[2 + size / 2] ^= 1;
    auto opened = o.Open(record);
    ASSERT_FALSE(opened);
    EXPECT_EQ(opened.error().code, RecordErrc::kBadTag);
    // No unauthenticated plaintext is left behind in the buffer (decrypted in place it would be
    // all 0x33 but one byte; ciphertext or zeros match 0x33 about once in 256 bytes).
    size_t same = std::count(record.begin() + 2, record.begin() + 2 + size, uint8_t{0x33});
    EXPECT_LT(same, size / 8) << "size " << size;
  }
}

TEST(RecordSessionTest, RecordsOverHandshakeKeys) {
  SessionKeys c, p;
  c.cipher = p.cipher = Cipher::kChaCha20Poly1305;
  c.send_key = p.recv_key = KeyFill(9);
  c.recv_key = p.send_key = KeyFill(10);
  RecordSealer cs(c), ps(p);
  RecordOpener co(c), po(p);
  std::vector<uint8_t> buf(64);
  auto n = cs.Seal(std::vector<uint8_t>{42}, buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(po.Open(std::span(buf).first(*n))->plaintext[0], 42);
  n = ps.Seal(std::vector<uint8_t>{43}, buf);
  EXPECT_EQ(co.Open(std::span(buf).first(*n))->plaintext[0], 43);
}

}  // namespace
}  // namespace dvpn::tunnel
