// The provider's side (docs/payments.md §2 provider checks, §4).

#include "payments/payee_session.h"

#include <gtest/gtest.h>

#include "tests/payments_session/test_util.h"

// In the namespace of the helpers of test_util.h.
namespace dvpn::payments::testing {
namespace {

template <class T>
std::vector<T> All(const PayeeActions& a) {
  std::vector<T> out;
  for (const auto& m : a.send) {
    if (auto* v = std::get_if<T>(&m)) out.push_back(*v);
  }
  return out;
}
bool HasNotice(const PayeeActions& a, NoticeCode code) {
  for (const Notice& n : All<Notice>(a)) {
    if (n.code == code) return true;
  }
  return false;
}

class PayeeTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kInterval = 100'000;
  static constexpr uint64_t kWindow = 250'000;
  static constexpr uint32_t kGrace = 5'000;

  PayeeTest() { terms_ = Terms(1'000'000); }  // 1 micro per byte

  SessionTerms Terms(uint64_t per_mb, uint64_t per_minute = 0) {
    SessionTerms t = MakeTerms(per_mb, per_minute);
    t.invoice_interval_bytes = kInterval;
    t.credit_window_bytes = kWindow;
    t.payment_grace_ms = kGrace;
    return t;
  }
  PayeeSession Make(Amount deposit = Micro(1'000'000'000)) {
    auto s = PayeeSession::Create({.terms = terms_,
                                   .ledger = TestLedger(),
                                   .channel = TestChannel(),
                                   .client = client_.public_key(),
                                   .deposit = deposit});
    EXPECT_TRUE(s) << s.error().message;
    // The whole window recorded as reservable up front: these tests are about one session's
    // credit; reservations have tests of their own (ReservationsAreDurableBeforeTheLimitRises).
    (void)s->OnReserved(terms_.credit_window_bytes, 0);
    return std::move(*s);
  }
  PromiseMessage Promise(uint64_t seq, Amount cumulative, const PrivateKey* key = nullptr,
                         LedgerId ledger = TestLedger(), ChannelId channel = TestChannel()) {
    PromiseMessage p;
    p.invoice_seq = seq;
    p.cumulative = cumulative;
    p.ledger = ledger;
    p.channel = channel;
    p.signature = (key ? *key : client_).Sign(PromiseDigest(ledger, channel, cumulative));
    return p;
  }
  // Checks and makes durable at once.
  PayeeActions Pay(PayeeSession& s, uint64_t seq, Amount cumulative, uint64_t now) {
    auto ok = s.CheckPromise(Promise(seq, cumulative), now);
    EXPECT_TRUE(ok) << ok.error().message;
    return s.OnDurable(cumulative, now);
  }

  PrivateKey client_ = PrivateKey::Generate();
  SessionTerms terms_;
  uint64_t now_ = 0;  // T passed to CheckPromise (the tests move it where freshness matters)
};

TEST_F(PayeeTest, CreateAndChannelChecks) {
  terms_.invoice_interval_bytes = 10;
  auto bad = PayeeSession::Create({.terms = terms_,
                                   .ledger = TestLedger(),
                                   .channel = TestChannel(),
                                   .client = client_.public_key(),
                                   .deposit = Micro(10)});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, PaymentErrc::kBadTerms);

  terms_ = Terms(1000);
  terms_.base_cumulative = Micro(10);
  terms_.base_signature = client_.Sign(PromiseDigest(TestLedger(), TestChannel(), Micro(10)));
  auto exhausted = PayeeSession::Create({.terms = terms_,
                                         .ledger = TestLedger(),
                                         .channel = TestChannel(),
                                         .client = client_.public_key(),
                                         .deposit = Micro(10)});
  ASSERT_FALSE(exhausted);
  EXPECT_EQ(exhausted.error().code, PaymentErrc::kChannelUnusable);
  EXPECT_EQ(exhausted.error().close, CloseReason::kPaymentRequired);

  ChannelFacts facts{TestPayee(), client_.public_key().bytes(), true, Micro(11)};
  EXPECT_TRUE(
      CheckChannelForSession(facts, TestPayee(), client_.public_key(), Micro(10), Micro(1)));
  auto expect_unusable = [&](ChannelFacts f, Amount base, Amount first_window = Micro(0)) {
    auto r = CheckChannelForSession(f, TestPayee(), client_.public_key(), base, first_window);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, PaymentErrc::kChannelUnusable);
    EXPECT_EQ(r.error().close, CloseReason::kPaymentRequired);
  };
  expect_unusable(facts, Micro(11));  // deposit not above the base
  // The escrow left must cover one credit window: 1 left, 2 needed.
  expect_unusable(facts, Micro(10), Micro(2));
  ChannelFacts f = facts;
  f.provider = TestPayee(9);
  expect_unusable(f, Micro(0));
  f = facts;
  f.client_key = PrivateKey::Generate().public_key().bytes();
  expect_unusable(f, Micro(0));
  f = facts;
  f.open_and_live = false;
  expect_unusable(f, Micro(0));
}

TEST_F(PayeeTest, InvoicesAtEachMultiple) {
  PayeeSession s = Make();
  EXPECT_TRUE(s.OnMetered(kInterval - 1, 10).empty());
  auto a = s.OnMetered(kInterval, 20);
  auto inv = All<Invoice>(a);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0], (Invoice{1, kInterval, 20, Micro(kInterval)}));
  EXPECT_TRUE(s.OnMetered(kInterval + 5, 30).empty());
  // Crossing two multiples at once: one invoice for the current meter.
  a = s.OnMetered(3 * kInterval + 7, 40);
  inv = All<Invoice>(a);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].seq, 2u);
  EXPECT_EQ(inv[0].metered_bytes, 3 * kInterval + 7);
  // Unpaid 300007 >= window 250000: paused too (the invoice just sent is for the same M, so no
  // second one).
  EXPECT_EQ(a.forwarding, Forwarding::kPause);
  EXPECT_TRUE(HasNotice(a, NoticeCode::kPaused));
  EXPECT_EQ(s.unpaid_bytes(), 3 * kInterval + 7);
  // The meter never goes back.
  EXPECT_TRUE(s.OnMetered(5, 41).empty());
  EXPECT_EQ(s.metered_bytes(), 3 * kInterval + 7);
}

TEST_F(PayeeTest, CreditOnlyAfterDurability) {
  PayeeSession s = Make();
  s.OnMetered(kInterval, 1);
  s.OnMetered(2 * kInterval, 2);
  auto ok = s.CheckPromise(Promise(1, Micro(kInterval)), now_);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->cumulative, Micro(kInterval));
  EXPECT_EQ(ok->channel, TestChannel());
  EXPECT_EQ(s.checked(), Micro(kInterval));
  EXPECT_EQ(s.accepted(), Amount::Zero());  // not yet durable
  EXPECT_EQ(s.paid_bytes(), 0u);

  auto a = s.OnDurable(Micro(kInterval), 3);
  auto receipts = All<Receipt>(a);
  ASSERT_EQ(receipts.size(), 1u);
  EXPECT_EQ(receipts[0].cumulative, Micro(kInterval));
  EXPECT_EQ(s.accepted(), Micro(kInterval));
  EXPECT_EQ(s.paid_bytes(), kInterval);
  // Unknown or stale durability reports change nothing.
  EXPECT_TRUE(s.OnDurable(Micro(kInterval), 4).empty());
  EXPECT_TRUE(s.OnDurable(Micro(kInterval + 1), 4).empty());  // never checked
  EXPECT_EQ(s.accepted(), Micro(kInterval));

  // Paying more than invoiced is the client's choice; paid_bytes moves to the latest invoice
  // fully covered.
  ASSERT_TRUE(s.CheckPromise(Promise(2, Micro(2 * kInterval + 50)), now_));
  s.OnDurable(Micro(2 * kInterval + 50), 5);
  EXPECT_EQ(s.paid_bytes(), 2 * kInterval);
  // An invoice already covered by accepted is paid at once (no promise needed).
  s.OnMetered(2 * kInterval + 50, 6);
  EXPECT_EQ(s.paid_bytes(), 2 * kInterval);  // no invoice: no multiple crossed
}

TEST_F(PayeeTest, PromiseChecksInOrder) {
  PayeeSession s = Make(Micro(1'000'000));
  s.OnMetered(kInterval, 1);  // invoice 1: 100000
  PrivateKey other = PrivateKey::Generate();
  // 1. Ledger / channel before anything else (even with a bad signature).
  auto r = s.CheckPromise(Promise(1, Micro(kInterval), &other, TestLedger(5)), now_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, PaymentErrc::kWrongLedger);
  EXPECT_TRUE(r.error().notify_peer);
  EXPECT_FALSE(r.error().close);
  EXPECT_EQ(r.error().message, "promise for another ledger");
  r = s.CheckPromise(Promise(1, Micro(kInterval), nullptr, TestLedger(), TestChannel(5)), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kWrongChannel);
  EXPECT_EQ(s.refusals(), 2);

  PayeeSession t = Make(Micro(1'000'000));
  t.OnMetered(kInterval, 1);
  // 5. Underpaid / unknown invoice.
  r = t.CheckPromise(Promise(1, Micro(kInterval - 1)), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kUnderpaid);
  r = t.CheckPromise(Promise(2, Micro(kInterval)), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kUnknownInvoice);
  EXPECT_EQ(t.refusals(), 2);
  EXPECT_EQ(t.checked(), Amount::Zero());
  // Naming no invoice (0) needs no particular amount.
  ASSERT_TRUE(t.CheckPromise(Promise(0, Micro(10)), now_));
  // 2. Equal: a silent duplicate; lower: replayed.
  r = t.CheckPromise(Promise(0, Micro(10)), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kDuplicate);
  EXPECT_FALSE(r.error().notify_peer);
  r = t.CheckPromise(Promise(0, Micro(9)), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kReplayed);
  EXPECT_EQ(r.error().close, CloseReason::kPaymentError);  // the third counted refusal
  EXPECT_NE(r.error().message.find("3 promises refused"), std::string::npos);
  EXPECT_TRUE(t.ended());
  r = t.CheckPromise(Promise(1, Micro(kInterval)), now_);
  EXPECT_FALSE(r);
  EXPECT_FALSE(r.error().close);
  EXPECT_FALSE(r.error().notify_peer);

  // 4. A bad signature ends the tunnel at once.
  PayeeSession u = Make(Micro(1'000'000));
  u.OnMetered(kInterval, 1);
  r = u.CheckPromise(Promise(1, Micro(kInterval), &other), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kBadSignature);
  EXPECT_EQ(r.error().close, CloseReason::kPaymentError);
  EXPECT_TRUE(u.ended());
  PayeeSession v = Make(Micro(1'000'000));
  PromiseMessage flipped = Promise(0, Micro(5));
  flipped.signature[10] ^= 1;
  EXPECT_EQ(v.CheckPromise(flipped, now_).error().code, PaymentErrc::kBadSignature);
  PayeeSession w = Make(Micro(1'000'000));
  PromiseMessage other_amount = Promise(0, Micro(5));
  other_amount.cumulative = Micro(6);
  EXPECT_EQ(w.CheckPromise(other_amount, now_).error().code, PaymentErrc::kBadSignature);
}

TEST_F(PayeeTest, PromiseAboveTheDepositIsReReadOnce) {
  PayeeSession s = Make(Micro(150'000));
  s.OnMetered(kInterval, 1);
  // 3. Above the (stale) deposit: re-read first, silently.
  auto r = s.CheckPromise(Promise(1, Micro(200'000)), now_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, PaymentErrc::kDepositReadNeeded);
  EXPECT_FALSE(r.error().notify_peer);
  EXPECT_EQ(s.refusals(), 0);
  s.UpdateDeposit(Micro(150'000), 2);
  r = s.CheckPromise(Promise(1, Micro(200'000)), now_);
  EXPECT_EQ(r.error().code, PaymentErrc::kExceedsEscrow);
  EXPECT_EQ(s.refusals(), 1);
  // A top-up shows on the next read.
  r = s.CheckPromise(Promise(1, Micro(200'000)), 2 + kDepositMaxAgeMs - 1);
  EXPECT_EQ(r.error().code, PaymentErrc::kExceedsEscrow);  // the read is still fresh
  // Then the read is old: read again, and a top-up shows.
  r = s.CheckPromise(Promise(1, Micro(200'000)), 2 + kDepositMaxAgeMs);
  EXPECT_EQ(r.error().code, PaymentErrc::kDepositReadNeeded);
  s.UpdateDeposit(Micro(300'000), 2 + kDepositMaxAgeMs);
  EXPECT_TRUE(s.CheckPromise(Promise(1, Micro(200'000)), now_));
  // At the deposit exactly is fine.
  EXPECT_TRUE(s.CheckPromise(Promise(1, Micro(300'000)), now_));
}

TEST_F(PayeeTest, PausesAtTheWindowAndResumesWhenPaid) {
  PayeeSession s = Make();
  s.OnMetered(kInterval, 10);      // invoice 1
  s.OnMetered(2 * kInterval, 20);  // invoice 2
  EXPECT_FALSE(s.paused());
  auto a = s.OnMetered(kWindow, 30);  // 250000 unpaid: pause, with an invoice for 250000
  EXPECT_EQ(a.forwarding, Forwarding::kPause);
  auto inv = All<Invoice>(a);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0], (Invoice{3, kWindow, 30, Micro(kWindow)}));
  ASSERT_TRUE(HasNotice(a, NoticeCode::kPaused));
  EXPECT_TRUE(s.paused());
  EXPECT_EQ(s.NextDeadlineMs(), 30 + kGrace);

  // Paying invoice 1 leaves 150000 unpaid, below the window: resumes.
  a = Pay(s, 1, Micro(kInterval), 1000);
  EXPECT_EQ(a.forwarding, Forwarding::kResume);
  EXPECT_TRUE(HasNotice(a, NoticeCode::kResumed));
  EXPECT_EQ(s.unpaid_bytes(), kWindow - kInterval);
  EXPECT_FALSE(s.paused());
  EXPECT_FALSE(s.NextDeadlineMs());
}

TEST_F(PayeeTest, ResumeAndGraceTimer) {
  PayeeSession s = Make();
  s.OnMetered(kInterval, 10);
  s.OnMetered(2 * kInterval, 20);
  auto a = s.OnMetered(3 * kInterval, 30);  // 300000 unpaid
  ASSERT_EQ(a.forwarding, Forwarding::kPause);
  // Paying invoice 1 leaves 200000 unpaid < window: resumes.
  a = Pay(s, 1, Micro(kInterval), 100);
  EXPECT_EQ(a.forwarding, Forwarding::kResume);
  EXPECT_TRUE(HasNotice(a, NoticeCode::kResumed));
  ASSERT_EQ(All<Receipt>(a).size(), 1u);
  EXPECT_FALSE(s.paused());

  // Pause again, then nothing: closes exactly at pause + grace.
  a = s.OnMetered(kInterval + kWindow, 200);
  ASSERT_EQ(a.forwarding, Forwarding::kPause);
  EXPECT_FALSE(s.OnMetered(kInterval + kWindow, 200 + kGrace - 1).end);
  // A payment that covers no further invoice is not progress: the timer keeps running.
  ASSERT_TRUE(s.CheckPromise(Promise(0, Micro(kInterval + 1)), now_));
  a = s.OnDurable(Micro(kInterval + 1), 200 + kGrace - 1);
  EXPECT_TRUE(s.paused());
  a = s.OnMetered(kInterval + kWindow, 200 + kGrace);
  ASSERT_TRUE(a.end);
  EXPECT_EQ(a.end->reason, CloseReason::kPaymentTimeout);
  EXPECT_EQ(a.end->text, "no payment for 5000 ms");
  EXPECT_TRUE(s.ended());
  EXPECT_TRUE(s.OnMetered(10 * kWindow, 99'999).empty());
  EXPECT_FALSE(s.NextDeadlineMs());
}

TEST_F(PayeeTest, ProgressRestartsTheGraceTimer) {
  terms_.credit_window_bytes = 4 * kInterval;
  PayeeSession s = Make();
  for (uint64_t k = 1; k <= 4; ++k) s.OnMetered(k * kInterval, k);
  ASSERT_TRUE(s.paused());  // 400000 unpaid, paused at t=4
  auto a = s.OnMetered(5 * kInterval, 5);
  EXPECT_TRUE(s.paused());
  a = Pay(s, 1, Micro(kInterval), 4000);  // invoice 1 paid, 400000 unpaid: timer restarts
  EXPECT_TRUE(s.paused());
  EXPECT_EQ(s.NextDeadlineMs(), 4000 + kGrace);
  EXPECT_FALSE(s.OnMetered(5 * kInterval, 4000 + kGrace - 1).end);
  a = s.OnMetered(5 * kInterval, 4000 + kGrace);
  ASSERT_TRUE(a.end);
  EXPECT_EQ(a.end->reason, CloseReason::kPaymentTimeout);
}

TEST_F(PayeeTest, EscrowExhaustion) {
  PayeeSession s = Make(Micro(250'000));  // covers 250000 bytes at 1 micro each
  s.OnMetered(kInterval, 10);
  ASSERT_TRUE(Pay(s, 1, Micro(kInterval), 20).send.size() == 1);
  s.OnMetered(2 * kInterval, 30);
  ASSERT_TRUE(Pay(s, 2, Micro(2 * kInterval), 40).send.size() == 1);
  // Invoice 3 asks 300000 > 250000: the provider wants a fresh read before pausing.
  auto a = s.OnMetered(3 * kInterval, 50);
  EXPECT_TRUE(a.read_deposit);
  EXPECT_FALSE(s.paused());
  EXPECT_FALSE(s.OnMetered(3 * kInterval + 1, 60).read_deposit);  // one read at a time
  a = s.UpdateDeposit(Micro(250'000), 70);
  EXPECT_EQ(a.forwarding, Forwarding::kPause);
  EXPECT_TRUE(HasNotice(a, NoticeCode::kEscrowLow));
  EXPECT_TRUE(HasNotice(a, NoticeCode::kPaused));
  EXPECT_TRUE(s.paused_for_escrow());
  // While paused it polls for top-ups.
  EXPECT_EQ(s.NextDeadlineMs(), 70 + kDepositMaxAgeMs);
  a = s.OnMetered(3 * kInterval + 1, 70 + kDepositMaxAgeMs);
  EXPECT_TRUE(a.read_deposit);
  // A top-up that covers it: resume.
  a = s.UpdateDeposit(Micro(1'000'000), 1100);
  EXPECT_EQ(a.forwarding, Forwarding::kResume);
  EXPECT_FALSE(s.paused());

  // Again, with no top-up: closes with kPaymentRequired after the grace time.
  PayeeSession t = Make(Micro(150'000));
  t.OnMetered(kInterval, 10);
  t.OnMetered(2 * kInterval, 20);
  a = t.UpdateDeposit(Micro(150'000), 30);
  ASSERT_EQ(a.forwarding, Forwarding::kPause);
  uint64_t now = 30;
  std::optional<SessionEnd> end;
  for (int i = 0; i < 100 && !end; ++i) {
    now = *t.NextDeadlineMs();
    a = t.OnMetered(2 * kInterval, now);
    end = a.end;
    if (!end && a.read_deposit) end = t.UpdateDeposit(Micro(150'000), now).end;
  }
  ASSERT_TRUE(end);
  EXPECT_EQ(end->reason, CloseReason::kPaymentRequired);
  EXPECT_EQ(now, 30 + kGrace);

  // A read showing less than the base itself, before any invoice: paused at once.
  terms_.base_cumulative = Micro(500);
  terms_.base_signature = client_.Sign(PromiseDigest(TestLedger(), TestChannel(), Micro(500)));
  PayeeSession u = Make(Micro(1000));
  a = u.UpdateDeposit(Micro(100), 5);
  EXPECT_EQ(a.forwarding, Forwarding::kPause);
  auto notices = All<Notice>(a);
  ASSERT_FALSE(notices.empty());
  EXPECT_EQ(notices[0].code, NoticeCode::kEscrowLow);
  EXPECT_EQ(notices[0].text, "channel escrow exhausted: 0.000500 owed in total, deposit 0.000100");
}

TEST_F(PayeeTest, TimePricing) {
  terms_ = Terms(0, 60'000);  // 1 micro per ms, bytes free
  PayeeSession s = Make();
  EXPECT_EQ(s.NextDeadlineMs(), kTimeInvoiceIntervalMs);
  EXPECT_TRUE(s.OnMetered(0, 59'999).empty());
  auto a = s.OnMetered(0, 60'000);
  auto inv = All<Invoice>(a);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].amount_due, Micro(60'000));
  a = s.OnMetered(0, 120'000);
  ASSERT_EQ(All<Invoice>(a).size(), 1u);
  // Two minutes unpaid: paused (with an invoice for now).
  EXPECT_EQ(a.forwarding, Forwarding::kPause);
  Pay(s, 2, Micro(120'000), 120'010);
  EXPECT_FALSE(s.paused());
  // A free price never invoices on time.
  terms_ = Terms(0, 0);
  PayeeSession f = Make();
  EXPECT_FALSE(f.NextDeadlineMs());
  EXPECT_TRUE(f.OnMetered(0, 10'000'000).empty());
  // Free bytes: invoices are covered at once, so forwarding never pauses.
  for (uint64_t k = 1; k <= 10; ++k) {
    a = f.OnMetered(k * kInterval, k);
    EXPECT_EQ(a.forwarding, Forwarding::kUnchanged);
  }
  EXPECT_EQ(f.paid_bytes(), 10 * kInterval);
}

TEST_F(PayeeTest, ChargeOverflowEndsTheSession) {
  terms_ = Terms(kMaxPricePerMb.micro());
  PayeeSession s = Make(Amount::Max());
  auto a = s.OnMetered(UINT64_MAX / 2, 1);
  ASSERT_TRUE(a.end);
  EXPECT_EQ(a.end->reason, CloseReason::kPaymentError);
  EXPECT_NE(a.end->text.find("overflows"), std::string::npos);
  EXPECT_TRUE(All<Invoice>(a).empty());
}

}  // namespace
}  // namespace dvpn::payments::testing
