// The client's side (docs/payments.md §2 client checks, §5 spend policy).

#include "payments/payer_session.h"

#include <gtest/gtest.h>

#include "tests/payments_session/test_util.h"

// In the namespace of the helpers of test_util.h.
namespace dvpn::payments::testing {
namespace {

class PayerTest : public ::testing::Test {
 protected:
  PayerSession::Options Options(const SessionTerms& terms) {
    PayerSession::Options o;
    o.terms = terms;
    o.policy = policy_;
    o.identity = &key_;
    o.ledger = TestLedger();
    o.channel = TestChannel();
    o.expected_payee = TestPayee();
    o.daily = daily_;
    return o;
  }
  PayResult<PayerSession> Accept(const SessionTerms& terms) {
    return PayerSession::Accept(Options(terms));
  }
  void ExpectRefused(const SessionTerms& terms, PaymentErrc code) {
    auto s = Accept(terms);
    ASSERT_FALSE(s) << "accepted";
    EXPECT_EQ(s.error().code, code) << s.error().message;
    EXPECT_EQ(s.error().close, CloseReason::kTermsRefused);
  }
  Signature SignPromise(const PrivateKey& key, const LedgerId& l, const ChannelId& c, Amount a) {
    return key.Sign(PromiseDigest(l, c, a));
  }

  PrivateKey key_ = PrivateKey::Generate();
  SpendPolicy policy_;
  std::shared_ptr<DailySpend> daily_ = std::make_shared<DailySpend>();
};

TEST_F(PayerTest, AcceptsTermsWithinPolicy) {
  auto s = Accept(MakeTerms(1000, 10));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->base(), Amount::Zero());
  EXPECT_EQ(s->last_signed(), Amount::Zero());
  EXPECT_EQ(s->session_spent(), Amount::Zero());
  // Without an expected payee, any payee is fine.
  auto o = Options(MakeTerms(1000));
  o.terms.payee = TestPayee(99);
  o.expected_payee.reset();
  EXPECT_TRUE(PayerSession::Accept(o));
}

TEST_F(PayerTest, RefusesTermsOutsideTheProtocolRanges) {
  SessionTerms t = MakeTerms(1000);
  t.version = 1;  // before unpaid bytes carried over and metered upload credit
  ExpectRefused(t, PaymentErrc::kBadTerms);
  t.version = 3;
  ExpectRefused(t, PaymentErrc::kBadTerms);
  t = MakeTerms(1000);
  t.carried_bytes = t.credit_window_bytes + 1;  // more than a window can never be carried
  policy_.max_carried_bytes = UINT64_MAX;
  ExpectRefused(t, PaymentErrc::kBadTerms);

  t = MakeTerms(kMaxPricePerMb.micro() + 1);
  policy_.max_price_per_mb = Amount::Max();
  ExpectRefused(t, PaymentErrc::kBadTerms);
  t = MakeTerms(1, kMaxPricePerMinute.micro() + 1);
  policy_.max_price_per_minute = Amount::Max();
  ExpectRefused(t, PaymentErrc::kBadTerms);
  EXPECT_TRUE(Accept(MakeTerms(kMaxPricePerMb.micro(), kMaxPricePerMinute.micro())));

  struct Case {
    uint64_t interval, window;
    uint32_t grace;
    bool ok;
  };
  for (Case c :
       {Case{65'535, 2'000'000, 10'000, false}, Case{65'536, 65'536, 10'000, true},
        Case{64'000'000, 64'000'000, 10'000, true}, Case{64'000'001, 256'000'000, 10'000, false},
        Case{1'000'000, 999'999, 10'000, false}, Case{1'000'000, 256'000'000, 10'000, true},
        Case{1'000'000, 256'000'001, 10'000, false}, Case{1'000'000, 2'000'000, 99, false},
        Case{1'000'000, 2'000'000, 100, true}, Case{1'000'000, 2'000'000, 600'000, true},
        Case{1'000'000, 2'000'000, 600'001, false}}) {
    t = MakeTerms(1000);
    t.invoice_interval_bytes = c.interval;
    t.credit_window_bytes = c.window;
    t.payment_grace_ms = c.grace;
    if (c.ok) {
      EXPECT_TRUE(Accept(t)) << c.interval << " " << c.window << " " << c.grace;
    } else {
      ExpectRefused(t, PaymentErrc::kBadTerms);
    }
  }
}

TEST_F(PayerTest, RefusesPricesAboveItsPolicyAndTheWrongPayee) {
  policy_.max_price_per_mb = Micro(1000);
  policy_.max_price_per_minute = Micro(50);
  EXPECT_TRUE(Accept(MakeTerms(1000, 50)));
  ExpectRefused(MakeTerms(1001, 0), PaymentErrc::kPolicy);
  ExpectRefused(MakeTerms(0, 51), PaymentErrc::kPolicy);
  SessionTerms t = MakeTerms(10);
  t.payee = TestPayee(4);
  ExpectRefused(t, PaymentErrc::kWrongPayee);
}

TEST_F(PayerTest, BasePromise) {
  SessionTerms t = MakeTerms(1000);
  t.base_cumulative = Micro(5000);
  t.base_signature = SignPromise(key_, TestLedger(), TestChannel(), Micro(5000));
  auto s = Accept(t);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->base(), Micro(5000));
  EXPECT_EQ(s->last_signed(), Micro(5000));
  // The first promise is channel-cumulative: base + the invoice.
  auto p = s->OnInvoice(Invoice{1, 1'000'000, 10, Micro(1000)}, 1'000'000, 10, 1);
  ASSERT_TRUE(p && p->has_value());
  EXPECT_EQ((*p)->cumulative, Micro(6000));
  EXPECT_EQ(s->session_spent(), Micro(1000));

  // Signed by someone else, for another channel, ledger or amount: refused.
  PrivateKey other = PrivateKey::Generate();
  t.base_signature = SignPromise(other, TestLedger(), TestChannel(), Micro(5000));
  ExpectRefused(t, PaymentErrc::kBadBase);
  t.base_signature = SignPromise(key_, TestLedger(), TestChannel(7), Micro(5000));
  ExpectRefused(t, PaymentErrc::kBadBase);
  t.base_signature = SignPromise(key_, TestLedger(7), TestChannel(), Micro(5000));
  ExpectRefused(t, PaymentErrc::kBadBase);
  t.base_signature = SignPromise(key_, TestLedger(), TestChannel(), Micro(5001));
  ExpectRefused(t, PaymentErrc::kBadBase);
  // A base without a signature, or a signature without a base.
  t.base_signature.reset();
  ExpectRefused(t, PaymentErrc::kBadTerms);
  t.base_cumulative = Amount::Zero();
  t.base_signature = SignPromise(key_, TestLedger(), TestChannel(), Amount::Zero());
  ExpectRefused(t, PaymentErrc::kBadTerms);
}

TEST_F(PayerTest, NoIdentityIsAProgrammingError) {
  auto o = Options(MakeTerms(1));
  o.identity = nullptr;
  auto s = PayerSession::Accept(o);
  ASSERT_FALSE(s);
  EXPECT_FALSE(s.error().close.has_value());
}

TEST_F(PayerTest, SignsFairInvoices) {
  auto s = Accept(MakeTerms(1000, 600));
  ASSERT_TRUE(s);
  Invoice inv{1, 1'000'000, 60'000, Micro(1000 + 600)};
  auto p = s->OnInvoice(inv, 1'000'000, 60'000, 1);
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_TRUE(p->has_value());
  const PromiseMessage& m = **p;
  EXPECT_EQ(m.invoice_seq, 1u);
  EXPECT_EQ(m.cumulative, Micro(1600));
  EXPECT_EQ(m.ledger, TestLedger());
  EXPECT_EQ(m.channel, TestChannel());
  EXPECT_TRUE(key_.public_key().Verify(PromiseDigest(TestLedger(), TestChannel(), Micro(1600)),
                                       m.signature));
  EXPECT_EQ(s->last_signed(), Micro(1600));

  // A stale or repeated seq is ignored, even when it asks more.
  EXPECT_FALSE(
      s->OnInvoice(Invoice{1, 2'000'000, 60'000, Micro(2600)}, 3'000'000, 60'000, 1)->has_value());
  EXPECT_FALSE(
      s->OnInvoice(Invoice{0, 2'000'000, 60'000, Micro(2600)}, 3'000'000, 60'000, 1)->has_value());
  // The same amount again (nothing new to sign), a lower amount, then more.
  EXPECT_FALSE(
      s->OnInvoice(Invoice{2, 1'000'000, 60'000, Micro(1600)}, 1'000'000, 60'000, 1)->has_value());
  EXPECT_FALSE(
      s->OnInvoice(Invoice{3, 1'000'000, 60'000, Micro(10)}, 1'000'000, 60'000, 1)->has_value());
  p = s->OnInvoice(Invoice{9, 2'000'000, 60'000, Micro(2600)}, 2'000'000, 60'000, 1);
  ASSERT_TRUE(p && p->has_value());
  EXPECT_EQ((*p)->cumulative, Micro(2600));
  EXPECT_EQ((*p)->invoice_seq, 9u);
  // Charging less than Charge is the provider's choice.
  p = s->OnInvoice(Invoice{10, 3'000'000, 60'000, Micro(2700)}, 3'000'000, 60'000, 1);
  ASSERT_TRUE(p && p->has_value());
  EXPECT_EQ((*p)->cumulative, Micro(2700));

  // Receipts: up to what was signed.
  EXPECT_TRUE(s->OnReceipt(Receipt{Micro(2600)}));
  EXPECT_EQ(s->acknowledged(), Micro(2600));
  EXPECT_FALSE(s->OnReceipt(Receipt{Micro(2701)}));
  EXPECT_TRUE(s->OnReceipt(Receipt{Micro(100)}));  // late, older: harmless
  EXPECT_EQ(s->acknowledged(), Micro(2600));
}

TEST_F(PayerTest, ToleranceEdges) {
  policy_.tolerance_bytes = 1000;
  policy_.tolerance_ms = 50;
  const uint64_t kPrice = 1'000'000;  // 1 micro per byte: amounts are easy to read
  {
    auto s = Accept(MakeTerms(kPrice));
    ASSERT_TRUE(s);
    // Exactly at meter + tolerance: fine.
    auto p = s->OnInvoice(Invoice{1, 11'000, 1'050, Micro(11'000)}, 10'000, 1'000, 1);
    ASSERT_TRUE(p && p->has_value()) << (p ? "" : p.error().message);
  }
  {
    auto s = Accept(MakeTerms(kPrice));
    auto p = s->OnInvoice(Invoice{1, 11'001, 1'000, Micro(11'000)}, 10'000, 1'000, 1);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, PaymentErrc::kOvercharge);
    EXPECT_EQ(p.error().close, CloseReason::kOvercharge);
    // Over: later invoices get nothing.
    EXPECT_TRUE(s->ended());
    p = s->OnInvoice(Invoice{2, 1, 1, Micro(1)}, 10'000, 1'000, 1);
    ASSERT_TRUE(p);
    EXPECT_FALSE(p->has_value());
    EXPECT_EQ(s->last_signed(), Amount::Zero());
  }
  {
    auto s = Accept(MakeTerms(kPrice));
    auto p = s->OnInvoice(Invoice{1, 100, 1'051, Micro(100)}, 10'000, 1'000, 1);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, PaymentErrc::kOvercharge);
  }
  {
    // The amount must not exceed Charge of the invoice's own figures.
    auto s = Accept(MakeTerms(kPrice));
    auto p = s->OnInvoice(Invoice{1, 5'000, 1'000, Micro(5'001)}, 10'000, 1'000, 1);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, PaymentErrc::kOvercharge);
    EXPECT_NE(p.error().message.find("cost"), std::string::npos) << p.error().message;
  }
  {
    // A meter near the top of uint64 does not wrap the tolerance.
    auto s = Accept(MakeTerms(1));
    auto p = s->OnInvoice(Invoice{1, UINT64_MAX, 0, Micro(UINT64_MAX / 1'000'000)}, UINT64_MAX - 5,
                          0, 1);
    ASSERT_TRUE(p && p->has_value());
  }
}

TEST_F(PayerTest, Overflow) {
  {
    // Charge itself overflows (only possible with a meter this large).
    auto s = Accept(MakeTerms(kMaxPricePerMb.micro()));
    auto p = s->OnInvoice(Invoice{1, UINT64_MAX, 0, Micro(1)}, UINT64_MAX, 0, 1);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, PaymentErrc::kOverflow);
    EXPECT_EQ(p.error().close, CloseReason::kPaymentError);
  }
  {
    // base + amount overflows.
    SessionTerms t = MakeTerms(1'000'000);
    t.base_cumulative = Micro(UINT64_MAX - 10);
    t.base_signature = SignPromise(key_, TestLedger(), TestChannel(), t.base_cumulative);
    auto s = Accept(t);
    ASSERT_TRUE(s);
    auto p = s->OnInvoice(Invoice{1, 10, 0, Micro(10)}, 10, 0, 1);
    ASSERT_TRUE(p && p->has_value());
    EXPECT_EQ((*p)->cumulative, Amount::Max());
    p = s->OnInvoice(Invoice{2, 11, 0, Micro(11)}, 11, 0, 1);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, PaymentErrc::kOverflow);
    EXPECT_EQ(p.error().close, CloseReason::kPaymentError);
  }
}

TEST_F(PayerTest, SessionCapStopsSigningExactlyAtTheCap) {
  policy_.session_cap = Micro(5000);
  SessionTerms t = MakeTerms(1'000'000);  // 1 micro per byte
  t.base_cumulative = Micro(100'000);     // the cap counts this session only, not the base
  t.base_signature = SignPromise(key_, TestLedger(), TestChannel(), t.base_cumulative);
  auto s = Accept(t);
  ASSERT_TRUE(s);
  auto p = s->OnInvoice(Invoice{1, 4999, 0, Micro(4999)}, 4999, 0, 1);
  ASSERT_TRUE(p && p->has_value());
  p = s->OnInvoice(Invoice{2, 5000, 0, Micro(5000)}, 5000, 0, 1);
  ASSERT_TRUE(p && p->has_value());
  EXPECT_EQ(s->session_spent(), Micro(5000));
  p = s->OnInvoice(Invoice{3, 5001, 0, Micro(5001)}, 5001, 0, 1);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, PaymentErrc::kSessionCap);
  EXPECT_EQ(p.error().close, CloseReason::kSpendCap);
  EXPECT_NE(p.error().message.find("session spending cap reached"), std::string::npos);
  EXPECT_EQ(s->last_signed(), Micro(105'000));
  EXPECT_EQ(daily_->SpentOn(1), Micro(5000));
}

TEST_F(PayerTest, DailyCapAcrossSessionsAndDays) {
  policy_.daily_cap = Micro(10'000);
  const uint64_t kDay = UtcDay(1'750'000'000);
  auto a = Accept(MakeTerms(1'000'000));
  auto b = Accept(MakeTerms(1'000'000));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->OnInvoice(Invoice{1, 6000, 0, Micro(6000)}, 6000, 0, kDay)->has_value());
  ASSERT_TRUE(b->OnInvoice(Invoice{1, 3000, 0, Micro(3000)}, 3000, 0, kDay)->has_value());
  ASSERT_TRUE(b->OnInvoice(Invoice{2, 4000, 0, Micro(4000)}, 4000, 0, kDay)->has_value());
  EXPECT_EQ(daily_->SpentOn(kDay), Micro(10'000));  // exactly at the cap
  auto p = a->OnInvoice(Invoice{2, 6001, 0, Micro(6001)}, 6001, 0, kDay);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, PaymentErrc::kDailyCap);
  EXPECT_EQ(p.error().close, CloseReason::kSpendCap);
  EXPECT_NE(p.error().message.find("daily spending cap reached"), std::string::npos);
  EXPECT_EQ(daily_->SpentOn(kDay), Micro(10'000));  // the refused one counted nothing

  // Spending recorded elsewhere counts; the next UTC day starts from zero.
  auto c = Accept(MakeTerms(1'000'000));
  ASSERT_TRUE(c->OnInvoice(Invoice{1, 9000, 0, Micro(9000)}, 9000, 0, kDay + 1)->has_value());
  daily_->Record(kDay + 1, Micro(1000));
  EXPECT_EQ(daily_->SpentOn(kDay + 1), Micro(10'000));
  EXPECT_FALSE(c->OnInvoice(Invoice{2, 9001, 0, Micro(9001)}, 9001, 0, kDay + 1));
  // A clock that went back a day counts against the latest day.
  EXPECT_EQ(daily_->SpentOn(kDay), Micro(10'000));
}

TEST(DailySpend, Basics) {
  DailySpend d;
  EXPECT_TRUE(d.TryAdd(5, Micro(10), Amount::Zero()));               // no cap
  EXPECT_TRUE(d.TryAdd(5, Amount::Max(), Amount::Zero()) == false);  // overflow refused
  EXPECT_EQ(d.SpentOn(5), Micro(10));
  EXPECT_FALSE(d.TryAdd(5, Micro(91), Micro(100)));
  EXPECT_TRUE(d.TryAdd(5, Micro(90), Micro(100)));
  EXPECT_EQ(d.SpentOn(6), Amount::Zero());
  EXPECT_TRUE(d.TryAdd(4, Amount::Zero(), Micro(100)));
  d.Record(5, Amount::Max());
  EXPECT_EQ(d.SpentOn(5), Amount::Max());  // saturates
  EXPECT_TRUE(d.TryAdd(6, Micro(100), Micro(100)));
  EXPECT_EQ(d.SpentOn(6), Micro(100));
}

}  // namespace
}  // namespace dvpn::payments::testing
