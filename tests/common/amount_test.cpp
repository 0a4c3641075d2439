#include <gtest/gtest.h>

#include <cstdint>

#include "common/amount.h"

namespace dvpn {
namespace {

TEST(Amount, CheckedAddAtTheLimit) {
  EXPECT_EQ(Amount::Max().CheckedAdd(Amount::Zero()), Amount::Max());
  EXPECT_EQ(Amount::FromMicro(UINT64_MAX - 1).CheckedAdd(Amount::FromMicro(1)), Amount::Max());
  EXPECT_FALSE(Amount::Max().CheckedAdd(Amount::FromMicro(1)).has_value());
  EXPECT_FALSE(Amount::FromMicro(1ull << 63).CheckedAdd(Amount::FromMicro(1ull << 63)));
  EXPECT_EQ(Amount::FromMicro(2).CheckedAdd(Amount::FromMicro(3)), Amount::FromMicro(5));
}

TEST(Amount, CheckedSubNeverGoesNegative) {
  EXPECT_EQ(Amount::FromMicro(5).CheckedSub(Amount::FromMicro(5)), Amount::Zero());
  EXPECT_FALSE(Amount::FromMicro(5).CheckedSub(Amount::FromMicro(6)).has_value());
  EXPECT_FALSE(Amount::Zero().CheckedSub(Amount::Max()).has_value());
  EXPECT_EQ(Amount::Max().CheckedSub(Amount::Max()), Amount::Zero());
}

TEST(Amount, CheckedMul) {
  EXPECT_EQ(Amount::FromMicro(7).CheckedMul(0), Amount::Zero());
  EXPECT_EQ(Amount::Max().CheckedMul(1), Amount::Max());
  EXPECT_FALSE(Amount::Max().CheckedMul(2).has_value());
  EXPECT_FALSE(Amount::FromMicro(1ull << 32).CheckedMul(1ull << 32).has_value());
  EXPECT_EQ(Amount::FromMicro(1ull << 31).CheckedMul(1ull << 32), Amount::FromMicro(1ull << 63));
}

TEST(Amount, Ordering) {
  EXPECT_LT(Amount::Zero(), Amount::FromMicro(1));
  EXPECT_LT(Amount::FromMicro(1ull << 63), Amount::Max());  // unsigned compare
  EXPECT_EQ(Min(Amount::FromMicro(3), Amount::FromMicro(2)), Amount::FromMicro(2));
  EXPECT_TRUE(Amount().IsZero());
}

TEST(Amount, Format) {
  EXPECT_EQ(Amount::Zero().ToString(), "0.000000");
  EXPECT_EQ(Amount::FromMicro(1).ToString(), "0.000001");
  EXPECT_EQ(Amount::FromMicro(12'000'345).ToString(), "12.000345");
  EXPECT_EQ(Amount::FromMicro(1'000'000).ToString(), "1.000000");
  EXPECT_EQ(Amount::Max().ToString(), "18446744073709.551615");
}

TEST(Amount, ParseAccepts) {
  EXPECT_EQ(Amount::Parse("12"), Amount::FromMicro(12'000'000));
  EXPECT_EQ(Amount::Parse("12.5"), Amount::FromMicro(12'500'000));
  EXPECT_EQ(Amount::Parse("0.000001"), Amount::FromMicro(1));
  EXPECT_EQ(Amount::Parse("0"), Amount::Zero());
  EXPECT_EQ(Amount::Parse("007"), Amount::FromMicro(7'000'000));
  EXPECT_EQ(Amount::Parse("12345u"), Amount::FromMicro(12345));
  EXPECT_EQ(Amount::Parse("0u"), Amount::Zero());
  EXPECT_EQ(Amount::Parse("18446744073709551615u"), Amount::Max());
  EXPECT_EQ(Amount::Parse("18446744073709.551615"), Amount::Max());
}

TEST(Amount, ParseRefuses) {
  for (const char* bad : {"",
                          ".",
                          "1.",
                          ".5",
                          "-1",
                          "+1",
                          " 1",
                          "1 ",
                          "1e6",
                          "1.0000001",
                          "0x10",
                          "1,5",
                          "1..2",
                          "u",
                          "-1u",
                          "1.5u",
                          "18446744073709551616u",
                          "18446744073709.551616",
                          "18446744073710",
                          "99999999999999999999999",
                          "nan",
                          "inf",
                          "1.2.3",
                          "１"}) {
    EXPECT_FALSE(Amount::Parse(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(Amount, FormatParseRoundTrip) {
  for (uint64_t micro : std::initializer_list<uint64_t>{0, 1, 999'999, 1'000'000, 123'456'789,
                                                        UINT64_MAX, UINT64_MAX - 1, 1ull << 63}) {
    Amount a = Amount::FromMicro(micro);
    EXPECT_EQ(Amount::Parse(a.ToString()), a) << micro;
    EXPECT_EQ(Amount::Parse(std::to_string(micro) + "u"), a) << micro;
  }
}

}  // namespace
}  // namespace dvpn
