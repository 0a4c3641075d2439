// Randomized whole sessions: a PayeeSession (provider) and a PayerSession (client) exchange
// traffic and CONTROL messages through the protobuf codec over two ordered, delayed streams,
// with a promise store that reports durability after random delays and a ledger that answers
// channel reads after random delays. Every run is seeded; a failure prints its seed.
//
// Properties (docs/payments.md §4-5):
//  - honest pair: the client's signed cumulative - base equals the last invoice's amount, which
//    is Charge of its own figures; the provider credits exactly that; both meters agree; no
//    refusal, no close; unpaid bytes never exceed the credit window + the largest chunk + the
//    uploads in flight (the upload window), and every pause is followed by a resume;
//  - inflating provider: the client refuses exactly the invoices beyond its meter + tolerance
//    (or priced above Charge), and never signs more than base + Charge(meter + tolerance);
//  - cheating client: every promise gets exactly the verdict of an independent model of the
//    ordered checks; the provider credits only promises the client validly signed for this
//    channel; a client that stops paying is paused at the window and cut off exactly when the
//    grace time has passed without progress;
//  - spending caps: signing stops exactly at the session cap and at the daily cap shared by two
//    sessions.

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "payments/payee_session.h"
#include "payments/payer_session.h"
#include "payments/wire/control_codec.h"
#include "tests/payments_session/test_util.h"

// In the namespace of the helpers of test_util.h.
namespace dvpn::payments::testing {
namespace {

constexpr uint64_t kDay = 20'000;

enum class ClientMode { kHonest, kStopsPaying, kCheats };
enum class ProviderMode { kHonest, kInflates };

enum class Cheat {
  kNone,
  kSkip,          // the promise is not sent
  kReplay,        // an older promise of this session is sent again
  kOtherChannel,  // validly signed, for another channel
  kOtherLedger,   // validly signed, for another ledger
  kForge,         // a flipped bit in the signature
  kWrongKey,      // signed by another key
  kUnderpay,      // validly signed, below the invoice it names
  kOverEscrow,    // validly signed, above the deposit
  kOverpay,       // validly signed, more than asked (legitimate)
  kUnknownSeq,    // validly signed, naming an invoice never sent
};
constexpr int kCheatKinds = 10;

struct Item {
  uint64_t at = 0;
  enum Kind { kData, kWindow, kControl } kind = kData;
  uint64_t n = 0;
  std::vector<uint8_t> bytes = {};
  bool sig_ok = true;  // test bookkeeping for a promise: signed by the client over its fields
};

struct SessionSetup {
  SessionTerms terms;
  SpendPolicy policy;
  Amount deposit;
  uint64_t target_bytes = 0;
  uint64_t max_chunk = 0;
  uint64_t upload_window = 0;  // 0: downloads only
  uint64_t max_latency_ms = 0;
  uint64_t max_store_delay_ms = 0;
  uint64_t msg2_latency_ms = 0;
  ClientMode client = ClientMode::kHonest;
  ProviderMode provider = ProviderMode::kHonest;
  int cheat_percent = 0;
  int stop_after_promises = 0;  // kStopsPaying
};

class Sim {
 public:
  Sim(uint64_t seed, const PrivateKey& client_key, std::shared_ptr<DailySpend> daily)
      : seed_(seed), rng_(seed), key_(client_key), daily_(std::move(daily)) {}

  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  uint64_t Between(uint64_t lo, uint64_t hi) { return lo + Rand(hi - lo + 1); }
  bool Chance(int percent) { return Rand(100) < static_cast<uint64_t>(percent); }
  std::mt19937_64& rng() { return rng_; }

  // Random terms, policy and network for one session.
  SessionSetup RandomSetup(ClientMode client, ProviderMode provider) {
    SessionSetup s;
    SessionTerms& t = s.terms;
    switch (Rand(4)) {
      case 0:
        t.price.per_mb = Micro(Rand(10));
        break;
      case 1:
        t.price.per_mb = Micro(Rand(1'000'000));
        break;
      case 2:
        t.price.per_mb = Micro(Rand(kMaxPricePerMb.micro() + 1));
        break;
      default:
        t.price.per_mb = Micro(Between(1, 3'000));
        break;
    }
    t.price.per_minute = Chance(50) ? Amount::Zero() : Micro(Rand(2'000'000));
    t.invoice_interval_bytes = Between(kMinInvoiceIntervalBytes, 400'000);
    t.credit_window_bytes = t.invoice_interval_bytes * Between(1, 4) + Rand(100'000);
    t.payment_grace_ms = static_cast<uint32_t>(Between(1'000, 8'000));
    t.payee = TestPayee();
    if (Chance(50)) {
      t.base_cumulative = Micro(Between(1, 1'000'000'000'000));
      t.base_signature = key_.Sign(PromiseDigest(TestLedger(), TestChannel(), t.base_cumulative));
    }
    s.deposit = Micro(t.base_cumulative.micro() + 1'000'000'000'000'000);
    s.max_chunk = std::max<uint64_t>(1, t.invoice_interval_bytes / Between(2, 24));
    s.upload_window = Chance(25) ? 0 : s.max_chunk * Between(1, 4);
    s.target_bytes = t.invoice_interval_bytes * Between(2, 14) + Rand(t.invoice_interval_bytes);
    s.max_latency_ms = Between(0, 60);
    s.max_store_delay_ms = Between(0, 120);
    s.msg2_latency_ms = Rand(s.max_latency_ms + 1);
    s.policy.tolerance_bytes = Chance(50) ? 65'536 : Between(0, 10'000);
    s.policy.tolerance_ms = Chance(50) ? 2'000 : Between(s.max_latency_ms, 3'000);
    s.client = client;
    s.provider = provider;
    return s;
  }

  void Run(const SessionSetup& setup) {
    setup_ = setup;
    const SessionTerms& t = setup.terms;
    auto payee = PayeeSession::Create({.terms = t,
                                       .ledger = TestLedger(),
                                       .channel = TestChannel(),
                                       .client = key_.public_key(),
                                       .deposit = setup.deposit});
    ASSERT_TRUE(payee) << payee.error().message;
    (void)payee->OnReserved(t.credit_window_bytes, 0);  // one session: the whole window reserved
    payee_.emplace(std::move(*payee));
    // The terms travel in msg2 and are decoded by the client.
    auto decoded = wire::DecodeTerms(wire::EncodeTerms(t));
    ASSERT_TRUE(decoded && decoded->has_value());
    auto payer = PayerSession::Accept({.terms = **decoded,
                                       .policy = setup.policy,
                                       .identity = &key_,
                                       .ledger = TestLedger(),
                                       .channel = TestChannel(),
                                       .expected_payee = TestPayee(),
                                       .daily = daily_});
    ASSERT_TRUE(payer) << payer.error().message;
    payer_.emplace(std::move(*payer));
    base_ = t.base_cumulative;
    m_checked_ = base_;
    m_deposit_known_ = setup.deposit;  // not fresh: the model asks for a read first
    if (base_ > Amount::Zero()) valid_signed_.insert(base_.micro());
    client_credit_ = setup.upload_window;
    now_ = setup.msg2_latency_ms;  // the client starts when it reads msg2

    for (int step = 0; step < 200'000 && !closed_; ++step) {
      if (::testing::Test::HasFatalFailure()) return;
      const bool generating =
          sent_total_ < setup.target_bytes || setup.client == ClientMode::kStopsPaying;
      if (!generating) {
        if (Quiet()) break;
        Advance(now_ + 5);
        continue;
      }
      switch (Rand(3)) {
        case 0:
          if (!payee_->paused()) ProviderSends(Between(1, setup.max_chunk));
          break;
        case 1:
          if (client_credit_ > 0) {
            ClientSends(Between(1, std::min(setup.max_chunk, client_credit_)));
          }
          break;
        default:
          Advance(now_ + Between(1, 15));
      }
    }
    ASSERT_TRUE(closed_ || Quiet()) << "session did not settle; seed " << seed_;
  }

  // ---- results ------------------------------------------------------------------------------
  const PayeeSession& payee() const { return *payee_; }
  const PayerSession& payer() const { return *payer_; }
  const SessionSetup& setup() const { return setup_; }
  uint64_t provider_meter() const { return m_p_; }
  uint64_t client_meter() const { return m_c_; }
  const std::optional<SessionEnd>& provider_end() const { return provider_end_; }
  const std::optional<Refusal>& client_end() const { return client_end_; }
  const std::vector<PaymentErrc>& refusals() const { return refusals_; }
  const std::optional<Invoice>& last_invoice_sent() const { return last_invoice_sent_; }
  const std::optional<Invoice>& last_invoice_read() const { return last_invoice_read_; }
  const std::vector<Amount>& amounts_read() const { return amounts_read_; }
  uint64_t max_unpaid() const { return max_unpaid_; }
  uint64_t unpaid_bound() const {
    return setup_.terms.credit_window_bytes - 1 + setup_.max_chunk + setup_.upload_window;
  }
  int pauses() const { return pauses_; }
  int resumes() const { return resumes_; }
  int tampered() const { return tampered_; }
  int tampered_accepted() const { return tampered_accepted_; }
  std::map<PaymentErrc, int> verdicts() const { return verdicts_; }
  uint64_t now() const { return now_; }
  uint64_t client_elapsed() const { return now_ - setup_.msg2_latency_ms; }
  bool closed() const { return closed_; }

 private:
  uint64_t Latency() { return Rand(setup_.max_latency_ms + 1); }

  void Push(std::deque<Item>& q, Item item) {
    // Ordered streams: an item never overtakes the one before it.
    item.at = std::max(now_ + Latency(), q.empty() ? 0 : q.back().at);
    q.push_back(std::move(item));
  }

  bool Quiet() const {
    return p2c_.empty() && c2p_.empty() && store_.empty() && !read_at_ && waiting_for_read_.empty();
  }

  // ---- the provider -------------------------------------------------------------------------

  void ProviderSends(uint64_t n) {
    m_p_ += n;
    sent_total_ += n;
    Push(p2c_, Item{.kind = Item::kData, .n = n});
    Apply(payee_->OnMetered(m_p_, now_));
  }

  void Apply(const PayeeActions& a) {
    if (closed_) return;
    for (const ControlMessage& m : a.send) {
      ControlMessage out = m;
      if (auto* inv = std::get_if<Invoice>(&out)) {
        honest_invoices_[inv->seq] = *inv;
        if (setup_.provider == ProviderMode::kInflates && Chance(30)) Tamper(*inv);
        sent_invoices_[inv->seq] = *inv;
        last_invoice_sent_ = *inv;
      }
      Push(p2c_, Item{.kind = Item::kControl, .bytes = wire::EncodeControl(out)});
    }
    if (a.forwarding == Forwarding::kPause) {
      ++pauses_;
      EXPECT_TRUE(payee_->paused());
    } else if (a.forwarding == Forwarding::kResume) {
      ++resumes_;
      EXPECT_FALSE(payee_->paused());
      if (withheld_ > 0) Push(p2c_, Item{.kind = Item::kWindow, .n = withheld_});
      withheld_ = 0;
    }
    if (a.read_deposit && !read_at_) read_at_ = now_ + Between(1, 30);
    CheckProviderInvariants();
    if (a.end) {
      provider_end_ = a.end;
      closed_ = true;
      CheckCutOff();
    }
  }

  void Tamper(Invoice& inv) {
    ++tampered_;
    const uint64_t tol = setup_.policy.tolerance_bytes;
    switch (Rand(5)) {
      case 0:
        inv.metered_bytes += Rand(2 * tol + 2);
        break;
      case 1:
        inv.metered_bytes += inv.metered_bytes * Between(1, 20) / 10 + 1;
        break;
      case 2:
        inv.amount_due = Micro(inv.amount_due.micro() + Between(1, inv.amount_due.micro() / 2 + 1));
        break;
      case 3:
        inv.elapsed_ms += Rand(2 * setup_.policy.tolerance_ms + 2);
        break;
      default: {
        // More bytes, priced consistently.
        inv.metered_bytes += Rand(2 * tol + 2);
        auto c = Charge(setup_.terms.price, inv.metered_bytes, inv.elapsed_ms);
        if (c) inv.amount_due = *c;
      }
    }
  }

  void CheckProviderInvariants() {
    const PayeeSession& s = *payee_;
    // Only durable promises are credited, and only promises the client validly signed.
    if (s.accepted() != base_) {
      EXPECT_TRUE(valid_signed_.count(s.accepted().micro()))
          << "credited " << s.accepted() << " that the client never signed; seed " << seed_;
    }
    EXPECT_LE(s.accepted(), s.checked());
    // Durability before credit: nothing is credited above what the store reported durable.
    EXPECT_LE(s.accepted(), std::max(durable_, base_)) << "seed " << seed_;
    EXPECT_LE(s.accepted(), s.deposit());
    max_unpaid_ = std::max(max_unpaid_, s.unpaid_bytes());
    EXPECT_LE(s.unpaid_bytes(), unpaid_bound()) << "seed " << seed_;
    // Grace bookkeeping: the start of a pause, and any progress while paused.
    if (s.paused() && !was_paused_) pause_clock_ = now_;
    if (s.paused() && s.paid_bytes() > last_paid_bytes_) pause_clock_ = now_;
    was_paused_ = s.paused();
    last_paid_bytes_ = s.paid_bytes();
    if (s.paused()) {
      // An escrow pause restarts the clock when it is confirmed.
      if (s.paused_for_escrow() && !was_escrow_paused_) pause_clock_ = now_;
    }
    was_escrow_paused_ = s.paused_for_escrow();
  }

  // A provider-side close for lack of payment happens exactly grace ms after the pause or the
  // latest progress.
  void CheckCutOff() {
    if (provider_end_->reason != CloseReason::kPaymentTimeout) return;
    EXPECT_EQ(now_, pause_clock_ + setup_.terms.payment_grace_ms) << "seed " << seed_;
  }

  void ProviderReceives(const Item& item) {
    if (item.kind == Item::kData) {
      m_p_ += item.n;
      if (payee_->paused()) {
        withheld_ += item.n;
      } else {
        Push(p2c_, Item{.kind = Item::kWindow, .n = item.n});
      }
      Apply(payee_->OnMetered(m_p_, now_));
      return;
    }
    auto msg = wire::DecodeControl(item.bytes);
    ASSERT_TRUE(msg && msg->has_value()) << "seed " << seed_;
    auto* p = std::get_if<PromiseMessage>(&**msg);
    ASSERT_NE(p, nullptr) << "the client only sends promises";
    HandlePromise(*p, item.sig_ok);
  }

  // The ordered checks of docs/payments.md §4, written independently of payee_session.cpp.
  struct Verdict {
    std::optional<PaymentErrc> code;  // empty: accepted
    bool counted = false;
  };
  Verdict Model(const PromiseMessage& p, bool sig_ok) const {
    auto counted = [](PaymentErrc c) { return Verdict{c, true}; };
    if (p.ledger != TestLedger()) return counted(PaymentErrc::kWrongLedger);
    if (p.channel != TestChannel()) return counted(PaymentErrc::kWrongChannel);
    if (p.cumulative == m_checked_) return Verdict{PaymentErrc::kDuplicate, false};
    if (p.cumulative < m_checked_) return counted(PaymentErrc::kReplayed);
    if (p.cumulative > m_deposit_known_) {
      const bool fresh = m_read_at_ && now_ - *m_read_at_ < kDepositMaxAgeMs;
      return fresh ? counted(PaymentErrc::kExceedsEscrow)
                   : Verdict{PaymentErrc::kDepositReadNeeded, false};
    }
    if (!sig_ok) return Verdict{PaymentErrc::kBadSignature, false};
    if (p.invoice_seq > max_seq_sent()) return counted(PaymentErrc::kUnknownInvoice);
    if (p.invoice_seq != 0 && p.cumulative.micro() - base_.micro() <
                                  sent_invoices_.at(p.invoice_seq).amount_due.micro()) {
      return counted(PaymentErrc::kUnderpaid);
    }
    return Verdict{};
  }
  uint64_t max_seq_sent() const {
    return sent_invoices_.empty() ? 0 : sent_invoices_.rbegin()->first;
  }

  void HandlePromise(const PromiseMessage& p, bool sig_ok) {
    const bool check_model = setup_.provider == ProviderMode::kHonest;
    const Verdict want = Model(p, sig_ok);
    auto got = payee_->CheckPromise(p, now_);
    if (check_model) {
      if (want.code) {
        EXPECT_FALSE(got) << "accepted a promise the model refuses (" << PaymentErrcName(*want.code)
                          << "); seed " << seed_;
        if (!got) {
          EXPECT_EQ(got.error().code, *want.code) << got.error().message << "; seed " << seed_;
        }
      } else {
        EXPECT_TRUE(got) << got.error().message << "; seed " << seed_;
      }
    }
    if (got) {
      ++accepted_promises_;
      m_checked_ = p.cumulative;
      store_.push_back({std::max(now_ + Rand(setup_.max_store_delay_ms + 1),
                                 store_.empty() ? 0 : store_.back().first),
                        p.cumulative});
      return;
    }
    const Refusal& r = got.error();
    ++verdicts_[r.code];
    if (r.code == PaymentErrc::kDepositReadNeeded) {
      waiting_for_read_.push_back({p, sig_ok});
      if (!read_at_) read_at_ = now_ + Between(1, 30);
      return;
    }
    if (r.code != PaymentErrc::kDuplicate) refusals_.push_back(r.code);
    if (want.counted) ++m_refusals_;
    if (check_model) {
      const bool fatal = r.code == PaymentErrc::kBadSignature || m_refusals_ >= 3;
      EXPECT_EQ(r.close.has_value(), fatal) << r.message << "; seed " << seed_;
      if (r.close) {
        EXPECT_EQ(*r.close, CloseReason::kPaymentError);
      }
      EXPECT_EQ(r.notify_peer, r.code != PaymentErrc::kDuplicate);
    }
    if (r.notify_peer) {
      Push(p2c_,
           Item{.kind = Item::kControl,
                .bytes = wire::EncodeControl(Notice{NoticeCode::kPromiseRefused, r.message})});
    }
    if (r.close) {
      provider_end_ = SessionEnd{*r.close, r.message};
      closed_ = true;
    }
  }

  void DepositRead() {
    read_at_.reset();
    m_deposit_known_ = setup_.deposit;
    m_read_at_ = now_;
    Apply(payee_->UpdateDeposit(setup_.deposit, now_));
    auto waiting = std::move(waiting_for_read_);
    waiting_for_read_.clear();
    for (auto& [p, sig_ok] : waiting) {
      if (closed_) return;
      HandlePromise(p, sig_ok);
    }
  }

  // ---- the client ---------------------------------------------------------------------------

  void ClientSends(uint64_t n) {
    client_credit_ -= n;
    m_c_ += n;
    sent_total_ += n;
    Push(c2p_, Item{.kind = Item::kData, .n = n});
  }

  void ClientReceives(const Item& item) {
    if (item.kind == Item::kData) {
      m_c_ += item.n;
      return;
    }
    if (item.kind == Item::kWindow) {
      client_credit_ += item.n;
      return;
    }
    auto msg = wire::DecodeControl(item.bytes);
    ASSERT_TRUE(msg && msg->has_value()) << "seed " << seed_;
    if (auto* inv = std::get_if<Invoice>(&**msg)) {
      OnInvoice(*inv);
    } else if (auto* r = std::get_if<Receipt>(&**msg)) {
      // A cheating client signs some promises behind its PayerSession's back (overpayments).
      const bool plausible = payer_->OnReceipt(*r);
      if (setup_.client != ClientMode::kCheats) {
        EXPECT_TRUE(plausible) << "seed " << seed_;
      }
    } else if (auto* n = std::get_if<Notice>(&**msg)) {
      notices_.push_back(n->code);
    }
  }

  static uint64_t Sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

  void OnInvoice(Invoice inv) {
    if (setup_.provider == ProviderMode::kInflates && Chance(10)) {
      // An inflating provider right at the client's limits (modelled in flight, where the
      // client's meter is known): one below, at, or one above meter + tolerance.
      ++tampered_;
      const uint64_t edge = Rand(3);  // limit - 1, limit, limit + 1
      auto near = [&](uint64_t limit) { return limit + edge < 1 ? 0 : limit + edge - 1; };
      if (Chance(50)) {
        inv.metered_bytes = std::max(inv.metered_bytes, near(m_c_ + setup_.policy.tolerance_bytes));
      } else {
        inv.elapsed_ms =
            std::max(inv.elapsed_ms, near(client_elapsed() + setup_.policy.tolerance_ms));
      }
      if (Chance(50)) {
        auto c = Charge(setup_.terms.price, inv.metered_bytes, inv.elapsed_ms);
        if (c) inv.amount_due = Micro(c->micro() + Rand(2));  // at Charge or one above
      }
    }
    last_invoice_read_ = inv;
    amounts_read_.push_back(inv.amount_due);
    const SpendPolicy& pol = setup_.policy;
    const uint64_t t_c = client_elapsed();
    // Beyond tolerance, by the rule, recomputed here with the reference charge.
    auto fair = RefCharge(setup_.terms.price.per_mb.micro(), setup_.terms.price.per_minute.micro(),
                          inv.metered_bytes, inv.elapsed_ms);
    const bool over = inv.metered_bytes > Sat(m_c_, pol.tolerance_bytes) ||
                      inv.elapsed_ms > Sat(t_c, pol.tolerance_ms) ||
                      (fair && inv.amount_due.micro() > *fair);
    const Amount before = payer_->last_signed();
    // The caps, by the rule: refused exactly when signing would pass one.
    const uint64_t cumulative = base_.micro() + inv.amount_due.micro();
    const bool new_amount = cumulative > before.micro();
    const bool over_session = !pol.session_cap.IsZero() && inv.amount_due > pol.session_cap;
    const bool over_daily =
        !pol.daily_cap.IsZero() &&
        daily_->SpentOn(kDay).micro() + (cumulative - before.micro()) > pol.daily_cap.micro();
    auto r = payer_->OnInvoice(inv, m_c_, t_c, kDay);
    if (!over && new_amount) {
      if (over_session) {
        EXPECT_TRUE(!r && r.error().code == PaymentErrc::kSessionCap) << "seed " << seed_;
      } else if (over_daily) {
        EXPECT_TRUE(!r && r.error().code == PaymentErrc::kDailyCap) << "seed " << seed_;
      } else {
        EXPECT_TRUE(r && r->has_value())
            << "an invoice within the caps was not paid; seed " << seed_;
      }
    }
    if (over) {
      EXPECT_FALSE(r) << "signed an overcharge; seed " << seed_;
      if (!r) {
        EXPECT_EQ(r.error().code, PaymentErrc::kOvercharge);
        EXPECT_EQ(r.error().close, CloseReason::kOvercharge);
      }
    }
    if (!r) {
      client_end_ = r.error();
      closed_ = true;
      return;
    }
    if (!r->has_value()) {
      EXPECT_LE(base_.micro() + inv.amount_due.micro(), before.micro()) << "seed " << seed_;
      return;
    }
    const PromiseMessage& p = **r;
    if (!(honest_invoices_.at(inv.seq) == inv)) ++tampered_accepted_;
    // Never more than base + Charge(own meter + tolerance).
    auto bound = RefCharge(setup_.terms.price.per_mb.micro(), setup_.terms.price.per_minute.micro(),
                           Sat(m_c_, pol.tolerance_bytes), Sat(t_c, pol.tolerance_ms));
    if (bound) {
      EXPECT_LE(p.cumulative.micro(), base_.micro() + *bound) << "seed " << seed_;
    }
    EXPECT_EQ(p.cumulative.micro(), base_.micro() + inv.amount_due.micro());
    valid_signed_.insert(p.cumulative.micro());
    history_.push_back(p);
    ++promises_signed_;
    SendPromise(p);
  }

  void SendPromise(const PromiseMessage& honest) {
    if (setup_.client == ClientMode::kStopsPaying &&
        promises_signed_ > static_cast<uint64_t>(setup_.stop_after_promises)) {
      return;
    }
    Cheat cheat = Cheat::kNone;
    if (setup_.client == ClientMode::kCheats && Chance(setup_.cheat_percent)) {
      cheat = static_cast<Cheat>(1 + Rand(kCheatKinds));
    }
    auto send = [&](const PromiseMessage& p, bool sig_ok) {
      Push(c2p_, Item{.kind = Item::kControl, .bytes = wire::EncodeControl(p), .sig_ok = sig_ok});
    };
    auto signed_for = [&](PromiseMessage p) {
      p.signature = key_.Sign(PromiseDigest(p.ledger, p.channel, p.cumulative));
      if (p.ledger == TestLedger() && p.channel == TestChannel()) {
        valid_signed_.insert(p.cumulative.micro());
      }
      return p;
    };
    PromiseMessage bad = honest;
    bool also_honest = Chance(50);
    bool sig_ok = true;
    switch (cheat) {
      case Cheat::kNone:
        also_honest = true;
        break;
      case Cheat::kSkip:
        also_honest = false;
        break;
      case Cheat::kReplay:
        bad = history_[Rand(history_.size())];
        break;
      case Cheat::kOtherChannel:
        bad.channel = TestChannel(static_cast<uint8_t>(Between(3, 250)));
        bad = signed_for(bad);
        break;
      case Cheat::kOtherLedger:
        bad.ledger = TestLedger(static_cast<uint8_t>(Between(3, 250)));
        bad = signed_for(bad);
        break;
      case Cheat::kForge:
        bad.signature[Rand(64)] ^= static_cast<uint8_t>(1 << Rand(8));
        sig_ok = false;
        break;
      case Cheat::kWrongKey:
        bad.signature = other_key_.Sign(PromiseDigest(bad.ledger, bad.channel, bad.cumulative));
        sig_ok = false;
        break;
      case Cheat::kUnderpay:
        if (bad.cumulative.micro() == base_.micro()) break;
        // Often one micro short, the edge.
        bad.cumulative =
            Micro(bad.cumulative.micro() -
                  (Chance(50) ? 1 : Between(1, bad.cumulative.micro() - base_.micro())));
        bad = signed_for(bad);
        break;
      case Cheat::kOverEscrow:
        // Often right at the deposit's edge (deposit - 1 and deposit are fine, + 1 is not).
        bad.cumulative =
            Micro(setup_.deposit.micro() + (Chance(50) ? Rand(3) - 1 : Between(1, 1'000'000)));
        bad = signed_for(bad);
        break;
      case Cheat::kOverpay:
        bad.cumulative = Micro(bad.cumulative.micro() + Between(1, 1'000'000));
        bad = signed_for(bad);
        also_honest = false;  // the overpayment covers it
        break;
      case Cheat::kUnknownSeq:
        bad.invoice_seq += Between(1, 100);
        bad = signed_for(bad);
        break;
    }
    if (cheat != Cheat::kNone && cheat != Cheat::kSkip) send(bad, sig_ok);
    if (also_honest) send(honest, true);
  }

  // ---- time ---------------------------------------------------------------------------------

  void Advance(uint64_t to) {
    for (int guard = 0; guard < 100'000 && !closed_; ++guard) {
      if (::testing::Test::HasFatalFailure()) return;
      uint64_t next = UINT64_MAX;
      if (!p2c_.empty()) next = std::min(next, p2c_.front().at);
      if (!c2p_.empty()) next = std::min(next, c2p_.front().at);
      if (!store_.empty()) next = std::min(next, store_.front().first);
      if (read_at_) next = std::min(next, *read_at_);
      auto deadline = payee_->NextDeadlineMs();
      if (deadline) next = std::min(next, std::max(*deadline, now_));
      if (next > to) break;
      now_ = std::max(now_, next);
      if (!p2c_.empty() && p2c_.front().at <= now_) {
        Item item = std::move(p2c_.front());
        p2c_.pop_front();
        ClientReceives(item);
      } else if (!c2p_.empty() && c2p_.front().at <= now_) {
        Item item = std::move(c2p_.front());
        c2p_.pop_front();
        ProviderReceives(item);
      } else if (!store_.empty() && store_.front().first <= now_) {
        Amount c = store_.front().second;
        store_.pop_front();
        durable_ = std::max(durable_, c);
        Apply(payee_->OnDurable(c, now_));
      } else if (read_at_ && *read_at_ <= now_) {
        DepositRead();
      } else {
        Apply(payee_->OnMetered(m_p_, now_));
        auto again = payee_->NextDeadlineMs();
        ASSERT_TRUE(closed_ || !again || *again > now_)
            << "deadline " << *again << " does not move past " << now_ << "; seed " << seed_;
      }
    }
    if (!closed_) now_ = std::max(now_, to);
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  const PrivateKey& key_;
  PrivateKey other_key_ = PrivateKey::Generate();
  std::shared_ptr<DailySpend> daily_;
  SessionSetup setup_;
  std::optional<PayeeSession> payee_;
  std::optional<PayerSession> payer_;
  Amount base_;

  uint64_t now_ = 0;
  std::deque<Item> p2c_, c2p_;
  std::deque<std::pair<uint64_t, Amount>> store_;  // (durable at, cumulative)
  Amount durable_;
  std::optional<uint64_t> read_at_;
  std::vector<std::pair<PromiseMessage, bool>> waiting_for_read_;
  uint64_t m_p_ = 0, m_c_ = 0, sent_total_ = 0;
  uint64_t client_credit_ = 0, withheld_ = 0;
  bool closed_ = false;

  std::map<uint64_t, Invoice> sent_invoices_;    // as sent (maybe tampered)
  std::map<uint64_t, Invoice> honest_invoices_;  // as the PayeeSession made them
  std::optional<Invoice> last_invoice_sent_, last_invoice_read_;
  std::vector<Amount> amounts_read_;
  std::vector<PromiseMessage> history_;
  std::set<uint64_t> valid_signed_;
  uint64_t promises_signed_ = 0, accepted_promises_ = 0;
  std::optional<SessionEnd> provider_end_;
  std::optional<Refusal> client_end_;
  std::vector<PaymentErrc> refusals_;
  std::map<PaymentErrc, int> verdicts_;
  std::vector<NoticeCode> notices_;
  uint64_t max_unpaid_ = 0;
  int pauses_ = 0, resumes_ = 0, tampered_ = 0, tampered_accepted_ = 0;
  bool was_paused_ = false, was_escrow_paused_ = false;
  uint64_t pause_clock_ = 0, last_paid_bytes_ = 0;

  // The model of the provider's checks.
  Amount m_checked_;
  Amount m_deposit_known_;  // as of the latest read (the creation value is not fresh)
  std::optional<uint64_t> m_read_at_;
  int m_refusals_ = 0;
};

// A few client keys reused across runs (key generation is not what is being tested).
const PrivateKey& Key(uint64_t i) {
  static const std::vector<PrivateKey>* keys = [] {
    auto* v = new std::vector<PrivateKey>;
    for (int k = 0; k < 4; ++k) v->push_back(PrivateKey::Generate());
    return v;
  }();
  return (*keys)[i % keys->size()];
}

TEST(SessionProperty, HonestPair) {
  int paused_sessions = 0, time_priced = 0, with_base = 0;
  for (uint64_t seed = 1; seed <= 2000; ++seed) {
    Sim sim(seed, Key(seed), std::make_shared<DailySpend>());
    SessionSetup setup = sim.RandomSetup(ClientMode::kHonest, ProviderMode::kHonest);
    sim.Run(setup);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing seed " << seed;
      return;
    }
    ASSERT_FALSE(sim.provider_end()) << sim.provider_end()->text << "; seed " << seed;
    ASSERT_FALSE(sim.client_end()) << sim.client_end()->message << "; seed " << seed;
    EXPECT_TRUE(sim.refusals().empty()) << "seed " << seed;
    EXPECT_EQ(sim.provider_meter(), sim.client_meter()) << "seed " << seed;
    const PayerSession& payer = sim.payer();
    const PayeeSession& payee = sim.payee();
    ASSERT_EQ(sim.last_invoice_sent().has_value(), sim.last_invoice_read().has_value());
    if (auto last = sim.last_invoice_sent()) {
      EXPECT_EQ(*last, *sim.last_invoice_read());
      auto charge =
          RefCharge(setup.terms.price.per_mb.micro(), setup.terms.price.per_minute.micro(),
                    last->metered_bytes, last->elapsed_ms);
      ASSERT_TRUE(charge);
      EXPECT_EQ(last->amount_due.micro(), *charge) << "seed " << seed;
      EXPECT_EQ(payer.session_spent(), last->amount_due) << "seed " << seed;
      EXPECT_EQ(payee.paid_bytes(), last->metered_bytes) << "seed " << seed;
    } else {
      EXPECT_EQ(payer.session_spent(), Amount::Zero());
    }
    EXPECT_EQ(payee.accepted(), payer.last_signed()) << "seed " << seed;
    EXPECT_EQ(payer.acknowledged(), payer.last_signed()) << "seed " << seed;
    EXPECT_FALSE(payee.paused()) << "seed " << seed;
    EXPECT_EQ(sim.pauses(), sim.resumes()) << "seed " << seed;
    EXPECT_LE(sim.max_unpaid(), sim.unpaid_bound());
    if (setup.upload_window == 0) {
      EXPECT_LT(sim.max_unpaid(), setup.terms.credit_window_bytes + setup.max_chunk);
    }
    paused_sessions += sim.pauses() > 0;
    time_priced += !setup.terms.price.per_minute.IsZero();
    with_base += !setup.terms.base_cumulative.IsZero();
  }
  // The runs covered the interesting cases.
  EXPECT_GT(paused_sessions, 100);
  EXPECT_GT(time_priced, 300);
  EXPECT_GT(with_base, 300);
}

TEST(SessionProperty, InflatingProviderIsRefusedExactlyBeyondTolerance) {
  int overcharges = 0, tampered = 0, tampered_accepted = 0;
  for (uint64_t seed = 10'001; seed <= 12'000; ++seed) {
    Sim sim(seed, Key(seed), std::make_shared<DailySpend>());
    SessionSetup setup = sim.RandomSetup(ClientMode::kHonest, ProviderMode::kInflates);
    sim.Run(setup);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing seed " << seed;
      return;
    }
    tampered += sim.tampered();
    tampered_accepted += sim.tampered_accepted();
    if (sim.client_end()) {
      EXPECT_EQ(sim.client_end()->code, PaymentErrc::kOvercharge) << "seed " << seed;
      ++overcharges;
    }
    // The provider never credits more than the client signed.
    EXPECT_LE(sim.payee().accepted(), sim.payer().last_signed());
  }
  EXPECT_GT(overcharges, 300);
  EXPECT_GT(tampered, 1000);
  EXPECT_GT(tampered_accepted, 20);  // inflation within the tolerance is paid, by design
}

TEST(SessionProperty, CheatingClientGetsExactlyTheModelsVerdicts) {
  std::map<PaymentErrc, int> seen;
  int bad_signature_ends = 0, repeated_refusal_ends = 0;
  for (uint64_t seed = 20'001; seed <= 22'000; ++seed) {
    Sim sim(seed, Key(seed), std::make_shared<DailySpend>());
    SessionSetup setup = sim.RandomSetup(ClientMode::kCheats, ProviderMode::kHonest);
    setup.cheat_percent = static_cast<int>(sim.Between(5, 40));
    sim.Run(setup);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing seed " << seed;
      return;
    }
    for (auto [code, n] : sim.verdicts()) seen[code] += n;
    if (sim.provider_end()) {
      const SessionEnd& end = *sim.provider_end();
      if (end.reason == CloseReason::kPaymentError) {
        if (end.text == "bad promise signature") {
          ++bad_signature_ends;
        } else {
          EXPECT_NE(end.text.find("3 promises refused"), std::string::npos) << end.text;
          ++repeated_refusal_ends;
        }
      } else {
        // Skipped payments can starve the provider into a timeout; nothing else ends it.
        EXPECT_EQ(end.reason, CloseReason::kPaymentTimeout) << end.text << "; seed " << seed;
      }
    }
  }
  for (PaymentErrc code :
       {PaymentErrc::kWrongLedger, PaymentErrc::kWrongChannel, PaymentErrc::kDuplicate,
        PaymentErrc::kReplayed, PaymentErrc::kDepositReadNeeded, PaymentErrc::kExceedsEscrow,
        PaymentErrc::kBadSignature, PaymentErrc::kUnknownInvoice, PaymentErrc::kUnderpaid}) {
    EXPECT_GT(seen[code], 20) << PaymentErrcName(code);
  }
  EXPECT_GT(bad_signature_ends, 50);
  EXPECT_GT(repeated_refusal_ends, 50);
}

TEST(SessionProperty, ClientThatStopsPayingIsCutOffAfterTheGraceTime) {
  for (uint64_t seed = 30'001; seed <= 30'600; ++seed) {
    Sim sim(seed, Key(seed), std::make_shared<DailySpend>());
    SessionSetup setup = sim.RandomSetup(ClientMode::kStopsPaying, ProviderMode::kHonest);
    setup.stop_after_promises = static_cast<int>(sim.Rand(4));
    setup.terms.price.per_mb = Micro(sim.Between(1'000, 1'000'000));  // every invoice costs
    sim.Run(setup);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing seed " << seed;
      return;
    }
    // Cut off (the exact time is checked inside the run), never beyond the window.
    ASSERT_TRUE(sim.provider_end()) << "seed " << seed;
    EXPECT_EQ(sim.provider_end()->reason, CloseReason::kPaymentTimeout) << "seed " << seed;
    EXPECT_EQ(sim.provider_end()->text,
              "no payment for " + std::to_string(setup.terms.payment_grace_ms) + " ms");
    EXPECT_GE(sim.pauses(), 1);
    EXPECT_LE(sim.max_unpaid(), sim.unpaid_bound());
    EXPECT_GE(sim.max_unpaid(),
              std::min(setup.terms.credit_window_bytes, setup.terms.invoice_interval_bytes));
    EXPECT_LE(sim.payee().accepted(), sim.payer().last_signed());
  }
}

// One honest session with caps. Deterministic for a seed: run once without caps to learn the
// invoice amounts, then again with a cap right at one of them (one below, at, one above), so
// the off-by-one edges are exercised, not just random caps.
std::unique_ptr<Sim> CappedRun(uint64_t seed, uint64_t key, std::shared_ptr<DailySpend> daily,
                               Amount session_cap, Amount daily_cap) {
  auto sim = std::make_unique<Sim>(seed, Key(key), std::move(daily));
  SessionSetup setup = sim->RandomSetup(ClientMode::kHonest, ProviderMode::kHonest);
  setup.terms.price.per_mb = Micro(sim->Between(1, 1'000'000));
  setup.policy.session_cap = session_cap;
  setup.policy.daily_cap = daily_cap;
  sim->Run(setup);
  return sim;
}

Amount Near(Amount a, std::mt19937_64& rng) {
  const uint64_t v = a.micro() + rng() % 3;  // a - 1, a, a + 1
  return Micro(v <= 1 ? 1 : v - 1);
}

TEST(SessionProperty, SessionCapStopsSigningExactlyAtTheCap) {
  int capped = 0, uncapped = 0;
  std::mt19937_64 rng(4);
  for (uint64_t seed = 40'001; seed <= 40'500; ++seed) {
    auto dry =
        CappedRun(seed, seed, std::make_shared<DailySpend>(), Amount::Zero(), Amount::Zero());
    ASSERT_FALSE(::testing::Test::HasFailure()) << "seed " << seed;
    const auto& amounts = dry->amounts_read();
    if (amounts.empty()) continue;
    const Amount cap = Near(amounts[rng() % amounts.size()], rng);
    auto sim = CappedRun(seed, seed, std::make_shared<DailySpend>(), cap, Amount::Zero());
    // Inside the run every invoice was checked against the rule: refused exactly when its
    // amount is above the cap, signed otherwise.
    ASSERT_FALSE(::testing::Test::HasFailure()) << "seed " << seed;
    EXPECT_LE(sim->payer().session_spent(), cap);
    if (sim->client_end()) {
      ++capped;
      EXPECT_EQ(sim->client_end()->code, PaymentErrc::kSessionCap) << "seed " << seed;
      EXPECT_EQ(sim->client_end()->close, CloseReason::kSpendCap);
      EXPECT_GT(sim->last_invoice_read()->amount_due, cap) << "seed " << seed;
    } else {
      ++uncapped;
      EXPECT_LE(sim->last_invoice_read()->amount_due, cap);
    }
  }
  EXPECT_GT(capped, 150);
  EXPECT_GT(uncapped, 20);
}

TEST(SessionProperty, DailyCapAcrossTwoSessions) {
  int capped_first = 0, capped_second = 0;
  std::mt19937_64 rng(5);
  for (uint64_t seed = 50'001; seed <= 50'300; ++seed) {
    // Dry run: what the first session spends, and what the second is invoiced.
    auto dry_daily = std::make_shared<DailySpend>();
    auto dry_a = CappedRun(seed * 2, seed, dry_daily, Amount::Zero(), Amount::Zero());
    auto dry_b = CappedRun(seed * 2 + 1, seed, dry_daily, Amount::Zero(), Amount::Zero());
    ASSERT_FALSE(::testing::Test::HasFailure()) << "seed " << seed;
    const Amount spent_a = dry_a->payer().session_spent();
    const auto& amounts_b = dry_b->amounts_read();
    const Amount cap =
        Near(amounts_b.empty() ? spent_a : *spent_a.CheckedAdd(amounts_b[rng() % amounts_b.size()]),
             rng);

    auto daily = std::make_shared<DailySpend>();
    auto a = CappedRun(seed * 2, seed, daily, Amount::Zero(), cap);
    ASSERT_FALSE(::testing::Test::HasFailure()) << "seed " << seed;
    Amount total = a->payer().session_spent();
    EXPECT_EQ(daily->SpentOn(kDay), total);
    if (a->client_end()) {
      ++capped_first;
      EXPECT_EQ(a->client_end()->code, PaymentErrc::kDailyCap) << "seed " << seed;
      EXPECT_GT(a->last_invoice_read()->amount_due, cap);
    } else {
      auto b = CappedRun(seed * 2 + 1, seed, daily, Amount::Zero(), cap);
      ASSERT_FALSE(::testing::Test::HasFailure()) << "seed " << seed;
      total = *total.CheckedAdd(b->payer().session_spent());
      EXPECT_EQ(daily->SpentOn(kDay), total);
      if (b->client_end()) {
        ++capped_second;
        EXPECT_EQ(b->client_end()->code, PaymentErrc::kDailyCap) << "seed " << seed;
        EXPECT_EQ(b->client_end()->close, CloseReason::kSpendCap);
        // The refused invoice would have taken the day past the cap.
        EXPECT_GT(*spent_a.CheckedAdd(b->last_invoice_read()->amount_due), cap);
      }
    }
    EXPECT_LE(total, cap);
  }
  EXPECT_GT(capped_second, 100);
}

}  // namespace
}  // namespace dvpn::payments::testing
