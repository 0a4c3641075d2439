// payments_bench: the per-invoice CPU cost of a paid tunnel session (issue 4, "Promises signed and
// verified per second"), measured with Google Benchmark on one thread, in process:
//
//   BM_PromiseSign         ledger::MakePromise: PromiseDigest + BIP-340 sign (payments/keys.h)
//   BM_PromiseVerify       the ledger's promise check (ledger/ledger.cpp, VerifyPromises):
//                          PublicKey::Verify(PromiseDigest(ledger, channel, cumulative), sig)
//   BM_PayerOnInvoice      the client's whole per-invoice step, PayerSession::OnInvoice: checks
//                          against its meter, tolerance, caps, DailySpend, then signs
//   BM_PayeeCheckPromise   the provider's per-promise check, PayeeSession::CheckPromise (ledger,
//                          channel, monotonic, escrow, signature, covers the named invoice)
//   BM_PayeeStep           the provider's whole per-invoice step minus the promise store:
//                          OnMetered (makes the invoice) + CheckPromise + OnDurable (receipt)
//   BM_Encode/Decode...    payments/wire/control_codec.h for a Promise, an Invoice, a Receipt
//   BM_PaymentRoundTrip    one whole invoice -> promise -> receipt exchange, both sides, with
//                          every CONTROL message encoded and decoded: the CPU that one invoice
//                          interval (default 1 MB) of a paid tunnel costs both processes
//                          together, apart from the SQLite commit and the frame crypto.
//
// Every benchmark reports items_per_second (items = promises or messages). The raw
// libsecp256k1 verification rate and batch settlement through the ledger are measured by
// bench/settle (settle_bench), not here. Figures: docs/BENCHMARKS.md; scripts/bench_payments.sh
// runs this with repetitions and prints the medians.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "common/amount.h"
#include "ledger/requests.h"
#include "payments/keys.h"
#include "payments/metering.h"
#include "payments/payee_session.h"
#include "payments/payer_session.h"
#include "payments/payment_session.h"
#include "payments/signed_messages.h"
#include "payments/wire/control_codec.h"

namespace {

using dvpn::Amount;
using dvpn::Hash32;
using namespace dvpn::payments;

constexpr uint64_t kPricePerMbMicro = 10'000;  // 0.01 credits per MB, as in the e2e tests
constexpr uint64_t kInterval = kDefaultInvoiceIntervalBytes;
// Pre-signed promises per provider session; a session is rebuilt (untimed) after this many.
constexpr uint64_t kPromisesPerSession = 1024;

// One client, one provider, one ledger and one channel with an escrow no benchmark exhausts.
struct Fixture {
  PrivateKey client = PrivateKey::Generate();
  PrivateKey provider = PrivateKey::Generate();
  LedgerId ledger = LedgerIdFor("payments-bench", PrivateKey::Generate().public_key());
  ChannelId channel = ChannelIdFor(ledger, Address::FromPublicKey(client.public_key()), 1);
  SessionTerms terms;
  std::vector<Invoice> invoices;         // seq 1..kPromisesPerSession, one MB apart
  std::vector<PromiseMessage> promises;  // the client's answers to them

  Fixture() {
    terms.price.per_mb = Amount::FromMicro(kPricePerMbMicro);
    terms.payee = Address::FromPublicKey(provider.public_key());
    // The provider side makes the invoices, the client side answers them: real shapes.
    PayeeSession payee = NewPayee();
    PayerSession payer = NewPayer();
    for (uint64_t i = 1; i <= kPromisesPerSession; ++i) {
      auto actions = payee.OnMetered(i * kInterval, 0);
      const Invoice* invoice = nullptr;
      for (const auto& m : actions.send) {
        if (auto* inv = std::get_if<Invoice>(&m)) invoice = inv;
      }
      if (invoice == nullptr) std::abort();
      auto p = payer.OnInvoice(*invoice, invoice->metered_bytes, 0, 20'000);
      if (!p || !*p) std::abort();
      invoices.push_back(*invoice);
      promises.push_back(**p);
    }
  }

  PayeeSession NewPayee() const {
    auto s =
        PayeeSession::Create(PayeeSession::Options{.terms = terms,
                                                   .ledger = ledger,
                                                   .channel = channel,
                                                   .client = client.public_key(),
                                                   .deposit = Amount::FromMicro(UINT64_MAX / 2)});
    if (!s) std::abort();
    return *std::move(s);
  }

  PayerSession NewPayer() const {
    PayerSession::Options o;
    o.terms = terms;
    o.identity = &client;
    o.ledger = ledger;
    o.channel = channel;
    o.expected_payee = terms.payee;
    auto s = PayerSession::Accept(std::move(o));
    if (!s) std::abort();
    return *std::move(s);
  }
};

const Fixture& F() {
  static const Fixture* f = new Fixture();
  return *f;
}

void PerItem(benchmark::State& state) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// ---- signatures --------------------------------------------------------------------------

void BM_PromiseSign(benchmark::State& state) {
  const Fixture& f = F();
  uint64_t cumulative = 0;
  for (auto _ : state) {
    cumulative += kPricePerMbMicro;
    SignedPromise p =
        dvpn::ledger::MakePromise(f.client, f.ledger, f.channel, Amount::FromMicro(cumulative));
    benchmark::DoNotOptimize(p);
  }
  PerItem(state);
}
BENCHMARK(BM_PromiseSign);

// What the ledger does for each promise of a SettleBatch (ledger/ledger.cpp VerifyPromises):
// the digest of (ledger, channel, cumulative) and a BIP-340 check against the channel's client
// key. Over 256 promises of 16 clients so that no single key or digest stays hot.
void BM_PromiseVerify(benchmark::State& state) {
  const Fixture& f = F();
  struct Item {
    PublicKey key;
    SignedPromise promise;
  };
  std::vector<Item> items;
  std::vector<PrivateKey> keys;
  for (int k = 0; k < 16; ++k) keys.push_back(PrivateKey::Generate());
  for (uint64_t i = 0; i < 256; ++i) {
    const PrivateKey& key = keys[i % keys.size()];
    ChannelId ch = ChannelIdFor(f.ledger, Address::FromPublicKey(key.public_key()), i + 1);
    items.push_back(Item{key.public_key(),
                         dvpn::ledger::MakePromise(key, f.ledger, ch, Amount::FromMicro(i + 1))});
  }
  size_t i = 0;
  uint64_t bad = 0;
  for (auto _ : state) {
    const Item& it = items[i];
    i = (i + 1) % items.size();
    const Hash32 digest = PromiseDigest(f.ledger, it.promise.channel, it.promise.cumulative);
    bad += it.key.Verify(digest, it.promise.signature) ? 0 : 1;
  }
  if (bad != 0) state.SkipWithError("a valid promise did not verify");
  PerItem(state);
}
BENCHMARK(BM_PromiseVerify);

// ---- the client's per-invoice step -------------------------------------------------------

void BM_PayerOnInvoice(benchmark::State& state) {
  const Fixture& f = F();
  PayerSession payer = f.NewPayer();
  uint64_t seq = 0;
  for (auto _ : state) {
    ++seq;
    const Invoice invoice{seq, seq * kInterval, 0, Amount::FromMicro(seq * kPricePerMbMicro)};
    auto p = payer.OnInvoice(invoice, invoice.metered_bytes, 0, 20'000);
    if (!p || !*p) {
      state.SkipWithError("a fair invoice was not answered with a promise");
      break;
    }
    benchmark::DoNotOptimize(p);
  }
  PerItem(state);
}
BENCHMARK(BM_PayerOnInvoice);

// ---- the provider's per-promise check ----------------------------------------------------

// A provider session with kPromisesPerSession invoices outstanding (as if no promise had come
// back yet; elapsed time stays 0, so the pause this causes never times out).
PayeeSession PayeeWithInvoices(const Fixture& f) {
  PayeeSession s = f.NewPayee();
  for (uint64_t i = 1; i <= kPromisesPerSession; ++i) (void)s.OnMetered(i * kInterval, 0);
  return s;
}

void BM_PayeeCheckPromise(benchmark::State& state) {
  const Fixture& f = F();
  std::optional<PayeeSession> payee(PayeeWithInvoices(f));
  size_t i = 0;
  for (auto _ : state) {
    if (i == f.promises.size()) {
      state.PauseTiming();
      payee.emplace(PayeeWithInvoices(f));
      i = 0;
      state.ResumeTiming();
    }
    auto r = payee->CheckPromise(f.promises[i++], 0);
    if (!r) {
      state.SkipWithError(("promise refused: " + r.error().message).c_str());
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  PerItem(state);
}
BENCHMARK(BM_PayeeCheckPromise);

// OnMetered at the next MB (one invoice), CheckPromise of the client's answer, OnDurable (one
// receipt): the io-thread work of one invoice interval at the exit, store and codec excluded.
void BM_PayeeStep(benchmark::State& state) {
  const Fixture& f = F();
  std::optional<PayeeSession> payee(f.NewPayee());
  size_t i = 0;
  for (auto _ : state) {
    if (i == f.promises.size()) {
      state.PauseTiming();
      payee.emplace(f.NewPayee());
      i = 0;
      state.ResumeTiming();
    }
    auto sent = payee->OnMetered((i + 1) * kInterval, 0);
    auto r = payee->CheckPromise(f.promises[i], 0);
    if (!r) {
      state.SkipWithError(("promise refused: " + r.error().message).c_str());
      break;
    }
    auto receipt = payee->OnDurable(r->cumulative, 0);
    benchmark::DoNotOptimize(sent);
    benchmark::DoNotOptimize(receipt);
    ++i;
  }
  PerItem(state);
}
BENCHMARK(BM_PayeeStep);

// ---- the CONTROL codec -------------------------------------------------------------------

template <class Message>
Message Sample(const Fixture& f) {
  if constexpr (std::is_same_v<Message, PromiseMessage>) {
    return f.promises[500];
  } else if constexpr (std::is_same_v<Message, Invoice>) {
    return f.invoices[500];
  } else {
    return Receipt{f.promises[500].cumulative};
  }
}

template <class Message>
void BM_Encode(benchmark::State& state) {
  const ControlMessage m = Sample<Message>(F());
  size_t bytes = 0;
  for (auto _ : state) {
    auto encoded = wire::EncodeControl(m);
    bytes = encoded.size();
    benchmark::DoNotOptimize(encoded);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  PerItem(state);
}

template <class Message>
void BM_Decode(benchmark::State& state) {
  const ControlMessage m = Sample<Message>(F());
  const std::vector<uint8_t> encoded = wire::EncodeControl(m);
  for (auto _ : state) {
    auto decoded = wire::DecodeControl(encoded);
    if (!decoded || !*decoded || !std::holds_alternative<Message>(**decoded)) {
      state.SkipWithError("the message did not decode to itself");
      break;
    }
    benchmark::DoNotOptimize(decoded);
  }
  PerItem(state);
}
BENCHMARK_TEMPLATE(BM_Encode, PromiseMessage)->Name("BM_EncodePromise");
BENCHMARK_TEMPLATE(BM_Decode, PromiseMessage)->Name("BM_DecodePromise");
BENCHMARK_TEMPLATE(BM_Encode, Invoice)->Name("BM_EncodeInvoice");
BENCHMARK_TEMPLATE(BM_Decode, Invoice)->Name("BM_DecodeInvoice");
BENCHMARK_TEMPLATE(BM_Encode, Receipt)->Name("BM_EncodeReceipt");
BENCHMARK_TEMPLATE(BM_Decode, Receipt)->Name("BM_DecodeReceipt");

// ---- one whole exchange ------------------------------------------------------------------

// Decodes `bytes` into a T, or nullopt.
template <class T>
std::optional<T> DecodeAs(const std::vector<uint8_t>& bytes) {
  auto d = wire::DecodeControl(bytes);
  if (!d || !*d) return std::nullopt;
  if (auto* m = std::get_if<T>(&**d)) return *m;
  return std::nullopt;
}

void BM_PaymentRoundTrip(benchmark::State& state) {
  const Fixture& f = F();
  std::optional<PayeeSession> payee(f.NewPayee());
  std::optional<PayerSession> payer(f.NewPayer());
  uint64_t n = 0;
  for (auto _ : state) {
    if (n == kPromisesPerSession) {  // keep the sessions' bookkeeping at its honest size
      state.PauseTiming();
      payee.emplace(f.NewPayee());
      payer.emplace(f.NewPayer());
      n = 0;
      state.ResumeTiming();
    }
    ++n;
    // Provider: the meter crossed the next MB.
    auto actions = payee->OnMetered(n * kInterval, 0);
    std::vector<uint8_t> invoice_bytes;
    for (const auto& m : actions.send) {
      if (std::holds_alternative<Invoice>(m)) invoice_bytes = wire::EncodeControl(m);
    }
    // Client: decode, check, sign, encode.
    auto invoice = DecodeAs<Invoice>(invoice_bytes);
    if (!invoice) {
      state.SkipWithError("no invoice");
      break;
    }
    auto promise = payer->OnInvoice(*invoice, invoice->metered_bytes, 0, 20'000);
    if (!promise || !*promise) {
      state.SkipWithError("invoice not paid");
      break;
    }
    auto promise_bytes = wire::EncodeControl(**promise);
    // Provider: decode, check, (store), receipt.
    auto received = DecodeAs<PromiseMessage>(promise_bytes);
    auto checked = received ? payee->CheckPromise(*received, 0)
                            : PayResult<SignedPromise>(std::unexpected(Refusal{}));
    if (!checked) {
      state.SkipWithError("promise refused");
      break;
    }
    auto durable = payee->OnDurable(checked->cumulative, 0);
    std::vector<uint8_t> receipt_bytes;
    for (const auto& m : durable.send) {
      if (std::holds_alternative<Receipt>(m)) receipt_bytes = wire::EncodeControl(m);
    }
    // Client: the receipt.
    auto receipt = DecodeAs<Receipt>(receipt_bytes);
    if (!receipt || !payer->OnReceipt(*receipt)) {
      state.SkipWithError("bad receipt");
      break;
    }
  }
  PerItem(state);
}
BENCHMARK(BM_PaymentRoundTrip);

}  // namespace

BENCHMARK_MAIN();
