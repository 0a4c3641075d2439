// The protobuf codec of session terms and CONTROL messages (docs/payments.md §2-3).

#include "payments/wire/control_codec.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "dvpn/v1/tunnel.pb.h"
#include "tests/payments_session/test_util.h"

namespace dvpn::payments::wire {
namespace {

using testing::Micro;

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

template <class M>
std::vector<uint8_t> Proto(const M& m) {
  return Bytes(m.SerializeAsString());
}

SessionTerms FullTerms() {
  SessionTerms t = testing::MakeTerms(UINT64_MAX, UINT64_MAX);
  t.version = UINT32_MAX;
  t.invoice_interval_bytes = UINT64_MAX;
  t.credit_window_bytes = UINT64_MAX;
  t.payment_grace_ms = UINT32_MAX;
  t.base_cumulative = Amount::Max();
  Signature sig;
  sig.fill(0xab);
  t.base_signature = sig;
  return t;
}

TEST(Codec, TermsRoundTrip) {
  SessionTerms t = testing::MakeTerms(1500, 20);
  auto enc = EncodeTerms(t);
  auto dec = DecodeTerms(enc);
  ASSERT_TRUE(dec) << dec.error().message;
  ASSERT_TRUE(dec->has_value());
  EXPECT_EQ(**dec, t);

  // Every field at its largest still fits in the 512 bytes of msg2 params.
  SessionTerms big = FullTerms();
  enc = EncodeTerms(big);
  EXPECT_LE(enc.size(), kMaxTermsSize);
  EXPECT_LE(enc.size(), 200u);
  dec = DecodeTerms(enc);
  ASSERT_TRUE(dec && dec->has_value());
  EXPECT_EQ(**dec, big);
}

TEST(Codec, EmptyParamsAreAFreeSession) {
  auto dec = DecodeTerms({});
  ASSERT_TRUE(dec);
  EXPECT_FALSE(dec->has_value());
}

TEST(Codec, TermsFieldValidation) {
  dvpn::v1::SessionTerms m;
  m.set_version(1);
  m.set_payee(std::string(20, 'p'));
  ASSERT_TRUE(DecodeTerms(Proto(m)));

  m.set_payee(std::string(19, 'p'));
  EXPECT_EQ(DecodeTerms(Proto(m)).error().code, CodecErrc::kBadField);
  m.set_payee(std::string(21, 'p'));
  EXPECT_EQ(DecodeTerms(Proto(m)).error().code, CodecErrc::kBadField);
  m.clear_payee();
  EXPECT_EQ(DecodeTerms(Proto(m)).error().code, CodecErrc::kBadField);  // payee is required
  m.set_payee(std::string(20, 'p'));

  m.set_base_signature(std::string(63, 's'));
  EXPECT_EQ(DecodeTerms(Proto(m)).error().code, CodecErrc::kBadField);
  m.set_base_signature(std::string(65, 's'));
  EXPECT_EQ(DecodeTerms(Proto(m)).error().code, CodecErrc::kBadField);
  m.set_base_signature(std::string(64, 's'));
  auto ok = DecodeTerms(Proto(m));
  ASSERT_TRUE(ok && ok->has_value());
  EXPECT_TRUE((*ok)->base_signature.has_value());

  // Too large, even if it would parse (unknown fields padding it out).
  auto padded = Proto(m);
  padded.push_back(0x7a);  // field 15, length-delimited
  padded.push_back(0x80);
  padded.push_back(0x04);  // length 512
  padded.resize(padded.size() + 512, 0);
  EXPECT_EQ(DecodeTerms(padded).error().code, CodecErrc::kTooLarge);

  EXPECT_EQ(DecodeTerms(Bytes("\xff\xff\xff")).error().code, CodecErrc::kMalformed);
  EXPECT_EQ(DecodeTerms(Bytes("\x3a\x14")).error().code, CodecErrc::kMalformed);  // truncated
}

TEST(Codec, ControlRoundTrip) {
  Invoice inv{7, 123'456'789, 98'765, Micro(4242)};
  PromiseMessage p;
  p.invoice_seq = 7;
  p.cumulative = Micro(99'999);
  p.signature.fill(0x5a);
  p.ledger = testing::TestLedger(9);
  p.channel = testing::TestChannel(8);
  Receipt r{Micro(99'999)};
  Notice n{NoticeCode::kPromiseRefused, "underpaid: invoice 7 asks 1.000000"};
  Notice unknown_code{static_cast<NoticeCode>(77), ""};
  Invoice max_inv{UINT64_MAX, UINT64_MAX, UINT64_MAX, Amount::Max()};
  for (const ControlMessage& msg :
       {ControlMessage(inv), ControlMessage(p), ControlMessage(r), ControlMessage(n),
        ControlMessage(unknown_code), ControlMessage(max_inv), ControlMessage(Invoice{}),
        ControlMessage(Receipt{})}) {
    auto enc = EncodeControl(msg);
    EXPECT_LE(enc.size(), kMaxControlSize);
    auto dec = DecodeControl(enc);
    ASSERT_TRUE(dec) << dec.error().message;
    ASSERT_TRUE(dec->has_value());
    EXPECT_EQ(**dec, msg);
  }
}

TEST(Codec, NoticeTextIsCutAtACharacterBoundary) {
  std::string text(kMaxNoticeText - 1, 'a');
  text += "\xc3\xa9";  // é would end one byte past the limit
  auto dec = DecodeControl(EncodeControl(Notice{NoticeCode::kPaused, text}));
  ASSERT_TRUE(dec && dec->has_value());
  EXPECT_EQ(std::get<Notice>(**dec).text, std::string(kMaxNoticeText - 1, 'a'));

  // Our own text that is not UTF-8 is sanitized rather than sent as is.
  dec = DecodeControl(EncodeControl(Notice{NoticeCode::kPaused,
                                           "a\xff"
                                           "b\xc3"}));
  ASSERT_TRUE(dec && dec->has_value());
  EXPECT_EQ(std::get<Notice>(**dec).text, "a?b?");

  // A huge text from our side still encodes within the frame limit.
  auto enc = EncodeControl(Notice{NoticeCode::kPaused, std::string(100'000, 'x')});
  EXPECT_LE(enc.size(), kMaxControlSize);

  // A peer's long (but in-limit) text is cut on decode.
  dvpn::v1::Control m;
  m.mutable_notice()->set_text(std::string(5000, 'y'));
  dec = DecodeControl(Proto(m));
  ASSERT_TRUE(dec && dec->has_value());
  EXPECT_EQ(std::get<Notice>(**dec).text.size(), kMaxNoticeText);
}

TEST(Codec, NoticeTextMustBeUtf8) {
  // Hand-encoded. (The field is `bytes` on the wire so that protobuf does not log on bad input;
  // the codec checks UTF-8 itself.)
  // Control.notice (field 4, len 4) { text (field 2, len 2) = C0 80 (overlong NUL) }.
  std::vector<uint8_t> overlong = {0x22, 0x04, 0x12, 0x02, 0xc0, 0x80};
  auto dec = DecodeControl(overlong);
  ASSERT_FALSE(dec);
  EXPECT_EQ(dec.error().code, CodecErrc::kBadField);
  // A surrogate half (ED A0 80) is not UTF-8 either.
  std::vector<uint8_t> surrogate = {0x22, 0x05, 0x12, 0x03, 0xed, 0xa0, 0x80};
  EXPECT_FALSE(DecodeControl(surrogate));
  // A 4-byte character is.
  std::vector<uint8_t> emoji = {0x22, 0x06, 0x12, 0x04, 0xf0, 0x9f, 0x98, 0x80};
  dec = DecodeControl(emoji);
  ASSERT_TRUE(dec && dec->has_value()) << (dec ? "" : dec.error().message);
  EXPECT_EQ(std::get<Notice>(**dec).text, "\xf0\x9f\x98\x80");
}

TEST(Codec, PromiseFieldLengths) {
  auto valid = [] {
    dvpn::v1::Control m;
    auto* p = m.mutable_promise();
    p->set_invoice_seq(1);
    p->set_cumulative(5);
    p->set_signature(std::string(64, 's'));
    p->set_ledger(std::string(32, 'l'));
    p->set_channel(std::string(32, 'c'));
    return m;
  };
  ASSERT_TRUE(DecodeControl(Proto(valid())));
  for (int field = 0; field < 3; ++field) {
    for (int delta : {-1, 1, -1000}) {
      dvpn::v1::Control m = valid();
      auto* p = m.mutable_promise();
      std::string* s = field == 0   ? p->mutable_signature()
                       : field == 1 ? p->mutable_ledger()
                                    : p->mutable_channel();
      if (delta == -1000) {
        s->clear();
      } else {
        s->resize(s->size() + delta, 'x');
      }
      auto dec = DecodeControl(Proto(m));
      ASSERT_FALSE(dec) << field << " " << delta;
      EXPECT_EQ(dec.error().code, CodecErrc::kBadField);
    }
  }
}

TEST(Codec, UnknownMessagesAreIgnoredAndGarbageIsAnError) {
  // An empty payload and an unknown oneof case (field 5) are "nothing to do".
  auto dec = DecodeControl({});
  ASSERT_TRUE(dec);
  EXPECT_FALSE(dec->has_value());
  std::vector<uint8_t> future = {0x2a, 0x02, 0x08, 0x01};  // field 5 { field 1 = 1 }
  dec = DecodeControl(future);
  ASSERT_TRUE(dec);
  EXPECT_FALSE(dec->has_value());

  EXPECT_EQ(DecodeControl(Bytes("\x0a\x05\x08")).error().code, CodecErrc::kMalformed);
  EXPECT_EQ(DecodeControl(Bytes("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")).error().code,
            CodecErrc::kMalformed);
  std::vector<uint8_t> big(kMaxControlSize + 1, 0);
  EXPECT_EQ(DecodeControl(big).error().code, CodecErrc::kTooLarge);
  // Exactly at the limit is fine as far as size goes (here: an unknown field, ignored).
  std::vector<uint8_t> at_limit = {0x32, 0xfd, 0x3f};  // field 6, length 8189
  at_limit.resize(kMaxControlSize, 0);
  dec = DecodeControl(at_limit);
  ASSERT_TRUE(dec) << dec.error().message;
  EXPECT_FALSE(dec->has_value());
}

// Random bytes, and valid messages with random bytes changed, never crash the decoders, and
// whatever decodes re-encodes to the same message.
TEST(Codec, RandomInputIsHandled) {
  std::mt19937_64 rng(99);
  PromiseMessage promise;
  promise.cumulative = Micro(77);
  promise.signature.fill(1);
  const std::vector<std::vector<uint8_t>> seeds = {
      EncodeControl(Invoice{3, 4, 5, Micro(6)}), EncodeControl(promise),
      EncodeControl(Receipt{Micro(9)}), EncodeControl(Notice{NoticeCode::kPaused, "paused"}),
      EncodeTerms(testing::MakeTerms(10, 20))};
  int decoded = 0, refused = 0;
  for (int i = 0; i < 50'000; ++i) {
    std::vector<uint8_t> in;
    if (rng() % 4 == 0) {
      in.resize(rng() % 64);
      for (auto& b : in) b = static_cast<uint8_t>(rng());
    } else {
      in = seeds[rng() % seeds.size()];
      for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
        switch (rng() % 3) {
          case 0:
            in[rng() % in.size()] = static_cast<uint8_t>(rng());
            break;
          case 1:
            in.resize(rng() % (in.size() + 1));
            if (in.empty()) in.push_back(0);
            break;
          default:
            in.insert(in.begin() + static_cast<long>(rng() % in.size()),
                      static_cast<uint8_t>(rng()));
        }
      }
    }
    auto dec = DecodeControl(in);
    if (!dec) ++refused;
    if (dec && dec->has_value()) {
      ++decoded;
      auto again = DecodeControl(EncodeControl(**dec));
      ASSERT_TRUE(again && again->has_value());
      EXPECT_EQ(**again, **dec);
    }
    auto terms = DecodeTerms(in);
    if (terms && terms->has_value()) {
      auto again = DecodeTerms(EncodeTerms(**terms));
      ASSERT_TRUE(again && again->has_value());
      EXPECT_EQ(**again, **terms);
    }
  }
  EXPECT_GT(decoded, 1'000);
  EXPECT_GT(refused, 1'000);
}

}  // namespace
}  // namespace dvpn::payments::wire
