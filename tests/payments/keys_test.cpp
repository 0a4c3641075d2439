#include <gtest/gtest.h>

#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {
namespace {

TEST(Keys, SignVerifyAndRejectForgeries) {
  auto key = PrivateKey::Generate();
  auto other = PrivateKey::Generate();
  Hash32 digest = Sha256(AsBytes("hello"));
  Signature sig = key.Sign(digest);
  EXPECT_TRUE(key.public_key().Verify(digest, sig));
  EXPECT_FALSE(other.public_key().Verify(digest, sig));  // someone else's key

  Signature flipped = sig;
  for (size_t i = 0; i < sig.size(); i += 7) {
    flipped = sig;
    flipped[i] ^= 0x01;
    EXPECT_FALSE(key.public_key().Verify(digest, flipped)) << "byte " << i;
  }
  Hash32 other_digest = digest;
  other_digest[31] ^= 0x80;
  EXPECT_FALSE(key.public_key().Verify(other_digest, sig));
  EXPECT_FALSE(key.public_key().Verify(digest, Signature{}));  // all zero
}

TEST(Keys, InvalidKeysAreRefused) {
  ByteArray<32> zero{};
  EXPECT_FALSE(PrivateKey::FromBytes(zero).has_value());
  ByteArray<32> too_big;
  too_big.fill(0xff);  // >= curve order
  EXPECT_FALSE(PrivateKey::FromBytes(too_big).has_value());
  EXPECT_FALSE(PrivateKey::FromBytes(ByteSpan(zero.data(), 31)).has_value());

  EXPECT_FALSE(PublicKey::Parse(ByteSpan(zero.data(), 31)).has_value());
  ByteArray<32> not_on_curve{};
  not_on_curve[31] = 5;  // x = 5: x^3 + 7 = 132 is not a square mod p
  EXPECT_FALSE(PublicKey::Parse(not_on_curve).has_value());
  EXPECT_FALSE(PublicKey::Parse(too_big).has_value());  // x >= p
}

TEST(Keys, SecretRoundTripsAndMovedFromIsWiped) {
  auto key = PrivateKey::Generate();
  auto copy = PrivateKey::FromBytes(key.secret());
  ASSERT_TRUE(copy.has_value());
  EXPECT_EQ(copy->public_key(), key.public_key());
  PrivateKey moved = std::move(*copy);
  EXPECT_EQ(moved.public_key(), key.public_key());
  EXPECT_EQ(copy->secret(), ByteArray<32>{});
}

TEST(Address, TextRoundTripAndChecksum) {
  auto key = PrivateKey::Generate();
  Address addr = Address::FromPublicKey(key.public_key());
  std::string text = addr.ToString();
  ASSERT_EQ(text.size(), 50u);
  EXPECT_EQ(Address::Parse(text), addr);

  std::string upper = text;
  for (size_t i = 2; i < upper.size(); ++i) upper[i] = static_cast<char>(toupper(upper[i]));
  EXPECT_EQ(Address::Parse(upper), addr);

  for (size_t i = 2; i < text.size(); ++i) {
    std::string typo = text;
    typo[i] = typo[i] == '0' ? '1' : '0';
    EXPECT_FALSE(Address::Parse(typo).has_value()) << "typo at " << i;
  }
  EXPECT_FALSE(Address::Parse("xx" + text.substr(2)).has_value());
  EXPECT_FALSE(Address::Parse(text.substr(0, 49)).has_value());
  EXPECT_FALSE(Address::Parse(text + "0").has_value());
  EXPECT_FALSE(Address::Parse("").has_value());
}

TEST(SignedMessages, DomainSeparation) {
  auto op = PrivateKey::Generate();
  LedgerId a = LedgerIdFor("a", op.public_key());
  LedgerId b = LedgerIdFor("b", op.public_key());
  EXPECT_NE(a, b);
  ChannelId ch = ChannelIdFor(a, Address::FromPublicKey(op.public_key()), 1);
  // Same fields, different ledger or message type: different digests.
  EXPECT_NE(PromiseDigest(a, ch, Amount::FromMicro(5)), PromiseDigest(b, ch, Amount::FromMicro(5)));
  EXPECT_NE(PromiseDigest(a, ch, Amount::FromMicro(5)), PromiseDigest(a, ch, Amount::FromMicro(6)));
  EXPECT_NE(CloseChannelDigest(a, ch, Address{}, 5), TopUpChannelDigest(a, ch, Amount{}, 5, 0));
  EXPECT_NE(ChannelIdFor(a, Address{}, 1), ChannelIdFor(a, Address{}, 2));
}

}  // namespace
}  // namespace dvpn::payments
