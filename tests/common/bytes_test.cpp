#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"

namespace dvpn {
namespace {

TEST(Hex, RoundTripAndCase) {
  std::vector<uint8_t> bytes = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
  EXPECT_EQ(ToHex(bytes), "00017f80abff");
  EXPECT_EQ(FromHex("00017f80abff"), bytes);
  EXPECT_EQ(FromHex("00017F80ABFF"), bytes);
  EXPECT_EQ(ToHex({}), "");
  EXPECT_EQ(FromHex(""), std::vector<uint8_t>{});
}

TEST(Hex, RefusesMalformed) {
  for (const char* bad : {"0", "abc", "0g", "g0", " 00", "00 ", "0x00", "-1", "zz"}) {
    EXPECT_FALSE(FromHex(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(Bytes, ToArrayChecksSize) {
  std::vector<uint8_t> four = {1, 2, 3, 4};
  auto arr = ToArray<4>(four);
  ASSERT_TRUE(arr.has_value());
  EXPECT_EQ((*arr)[3], 4);
  EXPECT_FALSE(ToArray<3>(four).has_value());
  EXPECT_FALSE(ToArray<5>(four).has_value());
}

TEST(Encoder, BigEndianFields) {
  Encoder enc;
  enc.U8(0x01).U16(0x0203).U32(0x04050607).U64(0x08090a0b0c0d0e0fULL);
  EXPECT_EQ(ToHex(enc.bytes()), "0102030405060708090a0b0c0d0e0f");
}

TEST(Encoder, Extremes) {
  Encoder enc;
  enc.U16(0xffff).U32(0).U64(UINT64_MAX);
  EXPECT_EQ(ToHex(enc.bytes()), "ffff00000000ffffffffffffffff");
}

TEST(Encoder, TagAndLengthPrefixedBytes) {
  Encoder enc;
  enc.Tag("ab").Bytes16(AsBytes("xyz")).Raw(AsBytes("!"));
  EXPECT_EQ(ToHex(enc.bytes()),
            "0261620003"
            "78797a"
            "21");

  Encoder empty;
  empty.Tag("").Bytes16({});
  EXPECT_EQ(ToHex(empty.bytes()), "000000");

  std::string big(300, 'q');
  Encoder large;
  large.Bytes16(AsBytes(big));
  ASSERT_EQ(large.bytes().size(), 302u);
  EXPECT_EQ(large.bytes()[0], 0x01);
  EXPECT_EQ(large.bytes()[1], 0x2c);
}

TEST(Clock, ManualClockMovesOnlyWhenTold) {
  ManualClock clock(100);
  EXPECT_EQ(clock.NowSeconds(), 100u);
  clock.Advance(5);
  EXPECT_EQ(clock.NowSeconds(), 105u);
  clock.Set(7);
  EXPECT_EQ(clock.NowSeconds(), 7u);
  SystemClock system;
  EXPECT_GT(system.NowSeconds(), 1'600'000'000u);
}

}  // namespace
}  // namespace dvpn
