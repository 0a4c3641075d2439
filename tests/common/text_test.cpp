// Escaping text from outside before a person sees it (common/text.h).

#include <gtest/gtest.h>

#include <string>

#include "common/text.h"

namespace dvpn {
namespace {

TEST(Text, PrintableUtf8AcceptsTextAndRefusesControlsAndBadEncodings) {
  EXPECT_TRUE(IsPrintableUtf8(""));
  EXPECT_TRUE(IsPrintableUtf8("iban:DE89 3704 0044 0532 0130 00"));
  EXPECT_TRUE(IsPrintableUtf8("M\xc3\xbcller \xe2\x82\xac \xf0\x9f\x92\xb6"));
  for (const std::string& bad :
       {std::string("\x1b[2J"), std::string("a\nb"), std::string("\t"), std::string("a\0b", 3),
        std::string("\x7f"), std::string("\xc2\x9b"), std::string("\xc2\x80"), std::string("\xff"),
        std::string("\xc3"), std::string("\xc0\xaf"), std::string("\xe0\x80\xaf"),
        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("\x80")}) {
    EXPECT_FALSE(IsPrintableUtf8(bad)) << EscapeForLog(bad);
  }
}

TEST(Text, EscapeForLogWritesEveryNonPrintableByteAsHex) {
  EXPECT_EQ(EscapeForLog("plain text"), "plain text");
  EXPECT_EQ(EscapeForLog("\x1b[31mred\x1b[0m\r\n"), "\\x1b[31mred\\x1b[0m\\x0d\\x0a");
  EXPECT_EQ(EscapeForLog(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(EscapeForLog("back\\slash"), "back\\\\slash");  // reversible
  EXPECT_EQ(EscapeForLog("\xc2\x9b" "6n"), "\\xc2\\x9b6n");    // C1 CSI
  EXPECT_EQ(EscapeForLog("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(EscapeForLog("\xe2\x82\xac"), "\xe2\x82\xac");    // printable UTF-8 stays
  const std::string escaped = EscapeForLog(std::string(5000, '\x1b'), 100);
  EXPECT_EQ(escaped.find('\x1b'), std::string::npos);
  EXPECT_NE(escaped.find("...(5000 bytes)"), std::string::npos) << escaped;
  EXPECT_LE(escaped.size(), 100u * 4 + 20);
}

}  // namespace
}  // namespace dvpn
