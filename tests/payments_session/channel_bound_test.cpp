// Unpaid traffic per channel (docs/payments.md §4, "Unpaid traffic per channel"): the bytes a
// channel receives beyond what its client signed for stay within one credit window across any
// sequence of sessions, hang-ups, exit crashes and partial payments; the exit's durable record
// never forgets bytes it served; an honest client accepts an honest exit's carried bytes.
//
// The exit side is the real PayeeSession driven like PayeeController drives it, over a model of
// the tunnel's forwarding limit (TunnelConnection::LimitForwarding: metered bytes plus the upload
// credit granted never pass the limit) and of the promise store's channel debt (a value that
// survives crashes). The client side is the real PayerSession. Price: 1 micro-credit per byte, so
// amounts and bytes compare directly.

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <random>

#include "payments/payee_session.h"
#include "payments/payer_session.h"
#include "test_util.h"

// In the namespace of the helpers of test_util.h.
namespace dvpn::payments::testing {
namespace {

SessionTerms BaseTerms(uint64_t interval, uint64_t window) {
  SessionTerms t = testing::MakeTerms(1'000'000);  // 1 micro per byte
  t.invoice_interval_bytes = interval;
  t.credit_window_bytes = window;
  t.payment_grace_ms = 1'000;
  return t;
}

// A provider's session on the test channel, with a deposit far above anything the tests spend.
auto RichPayee(const SessionTerms& t, const PrivateKey& client,
               Amount deposit = Micro(1'000'000'000)) {
  return PayeeSession::Create({.terms = t,
                               .ledger = TestLedger(),
                               .channel = TestChannel(),
                               .client = client.public_key(),
                               .deposit = deposit});
}

// ---- the pieces, one by one ------------------------------------------------------------------

TEST(ChannelBound, ReservationIsDurableBeforeTheLimitRises) {
  PrivateKey client = PrivateKey::Generate();
  SessionTerms t = BaseTerms(100'000, 400'000);
  auto s = RichPayee(t, client);
  ASSERT_TRUE(s);
  // Nothing recorded yet: nothing may be served.
  EXPECT_EQ(s->ForwardingLimit(), 0u);
  auto a = s->OnMetered(0, 0);
  ASSERT_TRUE(a.reserve);
  EXPECT_EQ(*a.reserve, 200'000u);  // two steps of a quarter window
  EXPECT_EQ(s->ForwardingLimit(), 0u) << "the limit rose before the record was durable";
  EXPECT_FALSE(s->OnMetered(0, 1).reserve) << "one reservation at a time";
  a = s->OnReserved(200'000, 2);
  EXPECT_EQ(s->ForwardingLimit(), 200'000u);
  EXPECT_FALSE(a.reserve);
  // Within a step of the record: the next one is asked for; the limit stays until it is durable.
  a = s->OnMetered(120'000, 3);
  ASSERT_TRUE(a.reserve);
  EXPECT_EQ(*a.reserve, 320'000u);
  EXPECT_EQ(s->ForwardingLimit(), 200'000u);
  a = s->OnReserved(320'000, 4);
  EXPECT_EQ(s->ForwardingLimit(), 320'000u);
  a = s->OnMetered(250'000, 5);
  ASSERT_TRUE(a.reserve);
  EXPECT_EQ(*a.reserve, 400'000u);  // never above the window
  (void)s->OnReserved(400'000, 6);
  EXPECT_EQ(s->ForwardingLimit(), 400'000u);
  EXPECT_FALSE(s->OnMetered(399'000, 7).reserve);
  // A store that cannot record ends the session.
  auto s2 = RichPayee(t, client);
  ASSERT_TRUE(s2->OnMetered(0, 0).reserve);
  auto failed = s2->OnReserveFailed("disk full");
  ASSERT_TRUE(failed.end);
  EXPECT_EQ(failed.end->reason, CloseReason::kPaymentError);
}

TEST(ChannelBound, CarriedBytesAreInvoicedBeforeAnythingNew) {
  PrivateKey client = PrivateKey::Generate();
  SessionTerms t = BaseTerms(100'000, 400'000);
  t.carried_bytes = 400'000;  // a whole window unpaid from before
  auto s = RichPayee(t, client);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ForwardingLimit(), 0u);
  auto a = s->OnMetered(0, 0);
  EXPECT_FALSE(a.reserve) << "the carried window is the record already";
  EXPECT_EQ(a.forwarding, Forwarding::kPause);
  ASSERT_FALSE(a.send.empty());
  const auto* inv = std::get_if<Invoice>(&a.send.front());
  ASSERT_NE(inv, nullptr);
  EXPECT_EQ(inv->metered_bytes, 400'000u);
  EXPECT_EQ(inv->amount_due, Micro(400'000));
  // The client pays the carried bytes: the window opens again.
  PromiseMessage p{inv->seq, Micro(400'000), {}, TestLedger(), TestChannel()};
  p.signature = client.Sign(PromiseDigest(TestLedger(), TestChannel(), p.cumulative));
  ASSERT_TRUE(s->CheckPromise(p, 1));
  a = s->OnDurable(Micro(400'000), 2);
  EXPECT_EQ(a.forwarding, Forwarding::kResume);
  EXPECT_EQ(s->ForwardingLimit(), 400'000u);
  EXPECT_EQ(s->UnpaidChannelBytes(), 0u);
}

TEST(ChannelBound, AdmissionNeedsEscrowForOneWindow) {
  SessionTerms t = BaseTerms(100'000, 400'000);
  EXPECT_EQ(FirstWindowCharge(t), Micro(400'000));
  t.price.per_minute = Micro(60'000);  // 1 micro per ms: two minutes more
  EXPECT_EQ(FirstWindowCharge(t), Micro(400'000 + 120'000));
  t.price.per_minute = Amount::Max();  // Charge overflows: nothing can be admitted
  EXPECT_EQ(FirstWindowCharge(t), Amount::Max());
}

TEST(ChannelBound, ClientAcceptsCarriedBytesOnlyWithinItsRecord) {
  PrivateKey key = PrivateKey::Generate();
  SessionTerms t = BaseTerms(100'000, 4'000'000);
  SpendPolicy policy;
  policy.max_carried_bytes = 3'000'000;
  policy.carry_slack_bytes = 100'000;
  auto accept = [&](uint64_t carried, std::optional<uint64_t> known) {
    SessionTerms terms = t;
    terms.carried_bytes = carried;
    return PayerSession::Accept({.terms = terms,
                                 .policy = policy,
                                 .identity = &key,
                                 .ledger = TestLedger(),
                                 .channel = TestChannel(),
                                 .expected_payee = TestPayee(),
                                 .known_unpaid_bytes = known});
  };
  EXPECT_TRUE(accept(3'000'000, std::nullopt));  // no record: up to max_carried_bytes
  auto r = accept(3'000'001, std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, PaymentErrc::kPolicy);
  EXPECT_EQ(r.error().close, CloseReason::kTermsRefused);
  EXPECT_TRUE(accept(600'000, 500'000));  // its record plus the slack
  EXPECT_FALSE(accept(600'001, 500'000));
  EXPECT_FALSE(accept(3'000'001, 2'950'000));  // never above max_carried_bytes
  EXPECT_TRUE(accept(100'000, 0));  // nothing known unpaid: the slack alone
  EXPECT_FALSE(accept(100'001, 0));

  // The carried bytes count in the client's meter: an invoice for them is fair.
  auto s = accept(200'000, 150'000);
  ASSERT_TRUE(s);
  auto promise = s->OnInvoice(Invoice{1, 200'000, 0, Micro(200'000)}, 0, 0, 1);
  ASSERT_TRUE(promise) << promise.error().message;
  ASSERT_TRUE(promise->has_value());
  EXPECT_EQ((*promise)->cumulative, Micro(200'000));
  // Beyond carried + own meter + tolerance it is an overcharge.
  auto s2 = accept(200'000, 150'000);
  auto over = s2->OnInvoice(Invoice{1, 200'000 + 65'537, 0, Micro(200'000)}, 0, 0, 1);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, PaymentErrc::kOvercharge);
  // UnpaidBytes: carried + own - the latest invoice covered by an acknowledged promise.
  EXPECT_EQ(s->UnpaidBytes(50'000), 250'000u) << "nothing acknowledged yet";
  ASSERT_TRUE(s->OnReceipt(Receipt{Micro(200'000)}));
  EXPECT_EQ(s->UnpaidBytes(50'000), 50'000u);
}

// ---- the whole-channel property ----------------------------------------------------------------

enum class Payer { kHonest, kPartial, kNever };

class ChannelModel {
 public:
  explicit ChannelModel(uint64_t seed) : rng_(seed), seed_(seed) {}

  void RunSessions(int sessions) {
    window_ = Between(kMinInvoiceIntervalBytes, 600'000);
    interval_ = Between(kMinInvoiceIntervalBytes, window_);
    for (int i = 0; i < sessions && !::testing::Test::HasFatalFailure(); ++i) RunSession();
  }

 private:
  uint64_t Between(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  bool Chance(int percent) { return Between(1, 100) <= static_cast<uint64_t>(percent); }

  // What the channel received beyond what its client signed for, in bytes (= micro-credits).
  uint64_t Unsigned() const {
    const uint64_t paid = accepted_.micro();
    return served_ > paid ? served_ - paid : 0;
  }
  void CheckBound(const char* where) {
    ASSERT_LE(Unsigned(), window_) << where << ": more than one credit window unpaid; seed "
                                   << seed_;
  }

  void RunSession() {
    SessionTerms t = BaseTerms(interval_, window_);
    t.payee = TestPayee();
    t.carried_bytes = std::min(store_debt_, window_);
    // The durable record never forgets what was served and not paid.
    ASSERT_GE(t.carried_bytes, Unsigned()) << "the exit forgot unpaid bytes; seed " << seed_;
    if (!accepted_.IsZero()) {
      t.base_cumulative = accepted_;
      t.base_signature = key_.Sign(PromiseDigest(TestLedger(), TestChannel(), accepted_));
    }
    auto payee = RichPayee(t, key_, Amount::FromMicro(uint64_t{1} << 50));
    ASSERT_TRUE(payee) << payee.error().message;
    SpendPolicy policy;
    policy.max_carried_bytes = window_;
    policy.carry_slack_bytes = 65'536;
    auto payer = PayerSession::Accept({.terms = t,
                                       .policy = policy,
                                       .identity = &key_,
                                       .ledger = TestLedger(),
                                       .channel = TestChannel(),
                                       .expected_payee = TestPayee(),
                                       .known_unpaid_bytes = known_});
    if (!payer) {
      // Only after an exit crash (its record is a reservation above what was served) may an
      // honest client refuse; it then forgets its record, as a restarted client would.
      ASSERT_TRUE(crashed_since_known_)
          << "an honest client refused an honest exit's carried bytes: "
          << payer.error().message << "; seed " << seed_;
      known_.reset();
      return;
    }
    crashed_since_known_ = false;

    const Payer mode = Chance(50) ? Payer::kHonest : (Chance(50) ? Payer::kPartial : Payer::kNever);
    const int pay_invoices = static_cast<int>(Between(0, 3));
    int invoices_paid = 0;
    uint64_t m = 0;       // the tunnel's meter (sent + received DATA)
    uint64_t credit = 0;  // upload credit the client holds
    uint64_t client_own = 0;
    uint64_t now = 0;
    bool reported = false;
    uint64_t reported_limit = 0;
    std::deque<Amount> durable_queue;  // promises checked, on their way to the disk
    std::optional<SessionEnd> end;

    auto apply = [&](PayeeActions a, auto&& self) -> void {
      if (a.end) end = a.end;
      if (a.reserve && !end) {
        store_debt_ = *a.reserve;  // durable first
        self(payee->OnReserved(*a.reserve, now), self);
      }
      for (const ControlMessage& msg : a.send) {
        const auto* inv = std::get_if<Invoice>(&msg);
        if (!inv || end) continue;
        const bool pay = mode == Payer::kHonest ||
                         (mode == Payer::kPartial && invoices_paid < pay_invoices);
        if (!pay) continue;
        auto promise = payer->OnInvoice(*inv, client_own, now, 1);
        ASSERT_TRUE(promise) << promise.error().message << "; seed " << seed_;
        if (!promise->has_value()) continue;
        ++invoices_paid;
        auto checked = payee->CheckPromise(**promise, now);
        ASSERT_TRUE(checked) << checked.error().message << "; seed " << seed_;
        durable_queue.push_back((*promise)->cumulative);
      }
    };

    for (int step = 0; step < 20'000 && !end; ++step) {
      if (::testing::Test::HasFatalFailure()) return;
      const uint64_t limit = payee->ForwardingLimit();
      ASSERT_LE(m + credit, limit) << "the limit went down; seed " << seed_;
      switch (Between(0, 5)) {
        case 0:
        case 1: {  // the exit reads its upstream into the tunnel
          const uint64_t budget = limit > m + credit ? limit - m - credit : 0;
          if (budget == 0) {
            if (!reported || reported_limit != limit) {
              reported = true;
              reported_limit = limit;
              apply(payee->OnLimitReached(limit, m, now), apply);
            }
            break;
          }
          const uint64_t n = std::min(budget, Between(1, interval_ / 2));
          m += n;
          served_ += n;
          client_own += n;
          apply(payee->OnMetered(m, now), apply);
          break;
        }
        case 2: {  // the exit grants upload credit up to half of what is left (all when small)
          const uint64_t room = limit > m ? limit - m : 0;
          const uint64_t target = room < 65'536 ? room : room / 2;
          if (target > credit) credit = target;
          break;
        }
        case 3: {  // the client uploads within its credit
          if (credit == 0) break;
          const uint64_t n = Between(1, credit);
          credit -= n;
          m += n;
          served_ += n;
          client_own += n;
          apply(payee->OnMetered(m, now), apply);
          break;
        }
        case 4:  // a promise becomes durable
          if (!durable_queue.empty()) {
            const Amount c = durable_queue.front();
            durable_queue.pop_front();
            accepted_ = std::max(accepted_, c);
            apply(payee->OnDurable(c, now), apply);
            (void)payer->OnReceipt(Receipt{c});
          }
          break;
        default:
          now += Between(1, 300);
          apply(payee->OnMetered(m, now), apply);
      }
      CheckBound("during a session");
      if (::testing::Test::HasFatalFailure()) return;
      if (Chance(1)) break;  // the client hangs up
    }
    if (Chance(15)) {
      // The exit crashes: promises on their way to the disk may be lost; the last reservation
      // stays recorded.
      crashed_since_known_ = true;
      while (!durable_queue.empty()) {
        if (Chance(50)) accepted_ = std::max(accepted_, durable_queue.front());
        durable_queue.pop_front();
      }
    } else {
      // The tunnel ends: the exact unpaid bytes are recorded; the store's queue still commits
      // the promises in it (their receipts never reach the client).
      payee->OnMetered(m, now);
      store_debt_ = payee->UnpaidChannelBytes();
      while (!durable_queue.empty()) {
        accepted_ = std::max(accepted_, durable_queue.front());
        durable_queue.pop_front();
      }
    }
    CheckBound("at the end of a session");
    // Some DATA the exit counted was still in flight when the tunnel ended (never received).
    const uint64_t lost = std::min(client_own, Between(0, 32'768));
    known_ = payer->UnpaidBytes(client_own - lost);
  }

  std::mt19937_64 rng_;
  uint64_t seed_;
  PrivateKey key_ = PrivateKey::Generate();
  uint64_t window_ = 0;
  uint64_t interval_ = 0;
  uint64_t served_ = 0;      // DATA bytes the exit metered over every session
  Amount accepted_;          // the latest durable promise (the next base)
  uint64_t store_debt_ = 0;  // the exit's durable channel debt record
  std::optional<uint64_t> known_;
  bool crashed_since_known_ = false;
};

TEST(ChannelBound, AnySequenceOfSessionsStaysWithinOneWindow) {
  for (uint64_t seed = 1; seed <= 200 && !::testing::Test::HasFatalFailure(); ++seed) {
    ChannelModel model(seed);
    model.RunSessions(30);
  }
}

}  // namespace
}  // namespace dvpn::payments::testing
