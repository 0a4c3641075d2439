// settle_bench: promises settled per second through SettleBatch, end to end, beside the raw
// BIP-340 verification rate of the same machine measured in the same run.
//
// (a) raw: secp256k1_schnorrsig_verify called directly on one thread over pre-made signatures
//     (and, for comparison, through payments::PublicKey::Verify).
// (b) end to end: an in-process LedgerServer on 127.0.0.1:0 over a SQLite file in a temp dir
//     (WAL, synchronous=FULL), driven through LedgerClient over real loopback gRPC. N channels
//     from N clients to one provider; each timed call is one SettleBatch of `batch` promises,
//     each promise raising its channel's cumulative (so every item moves credits and commits).
//     The client-side work inside the timed region is the request encoding only: promises and
//     batch signatures are made beforehand.
//
// Prints human-readable figures and one machine-readable line:
//   RESULT verify_per_sec=<a> settle_per_sec=<b median> ratio=<b/a> ...
// Exits 1 when a batch does not settle exactly as expected (so the smoke test can fail).

#include <secp256k1.h>
#include <secp256k1_extrakeys.h>
#include <secp256k1_schnorrsig.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/clock.h"
#include "common/log.h"
#include "ledger/ledger.h"
#include "ledger/requests.h"
#include "ledger/rpc/ledger_client.h"
#include "ledger/rpc/ledger_service.h"
#include "ledger/sqlite_store.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace {

using dvpn::Amount;
using dvpn::Hash32;
using dvpn::payments::PrivateKey;
using dvpn::payments::PublicKey;
using dvpn::payments::Signature;
using Clock = std::chrono::steady_clock;

struct Options {
  uint32_t channels = 1000;
  uint32_t batch = 1000;
  uint32_t batches = 10;
  uint32_t verify_ms = 2000;
  unsigned verify_threads = 0;
  std::string dir;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Sample {
  Hash32 digest;
  Signature sig;
  PublicKey key;
};

std::vector<Sample> MakeSamples(size_t n) {
  std::vector<Sample> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto key = PrivateKey::Generate();
    Hash32 digest = dvpn::payments::Sha256(dvpn::AsBytes("sample " + std::to_string(i)));
    out.push_back(Sample{digest, key.Sign(digest), key.public_key()});
  }
  return out;
}

// Verifications per second on this thread for about `ms`, calling libsecp256k1 directly.
double RawSecpRate(const std::vector<Sample>& samples, uint32_t ms) {
  secp256k1_context* ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
  std::vector<secp256k1_xonly_pubkey> keys(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    if (!secp256k1_xonly_pubkey_parse(ctx, &keys[i], samples[i].key.bytes().data())) {
      std::fprintf(stderr, "bad sample key\n");
      std::exit(1);
    }
  }
  uint64_t count = 0, ok = 0;
  auto start = Clock::now();
  auto end = start + std::chrono::milliseconds(ms);
  Clock::time_point now;
  do {
    for (size_t i = 0; i < samples.size(); ++i) {
      ok += secp256k1_schnorrsig_verify(ctx, samples[i].sig.data(), samples[i].digest.data(), 32,
                                        &keys[i]);
    }
    count += samples.size();
    now = Clock::now();
  } while (now < end);
  secp256k1_context_destroy(ctx);
  if (ok != count) {
    std::fprintf(stderr, "raw verification failed on valid signatures\n");
    std::exit(1);
  }
  return double(count) / Seconds(now - start);
}

// The same through payments::PublicKey::Verify (what the ledger calls).
double PublicKeyRate(const std::vector<Sample>& samples, uint32_t ms) {
  uint64_t count = 0, ok = 0;
  auto start = Clock::now();
  auto end = start + std::chrono::milliseconds(ms);
  Clock::time_point now;
  do {
    for (const Sample& s : samples) ok += s.key.Verify(s.digest, s.sig) ? 1 : 0;
    count += samples.size();
    now = Clock::now();
  } while (now < end);
  if (ok != count) {
    std::fprintf(stderr, "PublicKey::Verify failed on valid signatures\n");
    std::exit(1);
  }
  return double(count) / Seconds(now - start);
}

int Run(const Options& opt) {
  using namespace dvpn::ledger;
  std::printf(
      "settle_bench: %u channels, %u batches of %u promises, verify_threads=%u, "
      "%u hardware threads\n",
      opt.channels, opt.batches, opt.batch, opt.verify_threads,
      std::thread::hardware_concurrency());

  // (a) raw verification, one core.
  auto samples = MakeSamples(256);
  double raw = RawSecpRate(samples, opt.verify_ms);
  double via_key = PublicKeyRate(samples, std::max<uint32_t>(opt.verify_ms / 2, 1));
  std::printf("raw BIP-340 verify (secp256k1_schnorrsig_verify, 1 thread): %.0f /s\n", raw);
  std::printf("  via payments::PublicKey::Verify:                          %.0f /s\n", via_key);

  // (b) the ledger, in process, over loopback gRPC.
  auto op = PrivateKey::Generate();
  auto provider = PrivateKey::Generate();
  LedgerConfig config{.name = "settle-bench",
                      .operator_key = op.public_key(),
                      .challenge_period_seconds = 3600,
                      .max_batch_items = std::max<uint32_t>(opt.batch, 1),
                      .verify_threads = opt.verify_threads};
  LedgerId id = dvpn::payments::LedgerIdFor(config.name, config.operator_key);
  std::string db = opt.dir + "/settle_bench.db";
  auto store = OpenSqliteStore(db, id);
  if (!store) {
    std::fprintf(stderr, "cannot open %s: %s\n", db.c_str(), store.error().message.c_str());
    return 1;
  }
  dvpn::SystemClock clock;
  Ledger ledger(config, *std::move(store), clock);
  rpc::LedgerServerOptions server_options;
  auto server = rpc::LedgerServer::Start(ledger, clock, server_options);
  if (!server) {
    std::fprintf(stderr, "%s\n", server.error().message.c_str());
    return 1;
  }
  rpc::LedgerClient client((*server)->address(), std::chrono::seconds(60));

  auto setup_start = Clock::now();
  Address provider_addr = Address::FromPublicKey(provider.public_key());
  std::vector<PrivateKey> clients;
  std::vector<ChannelId> channels;
  constexpr uint64_t kEscrow = 1'000'000'000;  // never exhausted by the bench
  uint64_t op_nonce = 0;
  for (uint32_t i = 0; i < opt.channels; ++i) {
    clients.push_back(PrivateKey::Generate());
    Address a = Address::FromPublicKey(clients.back().public_key());
    auto d = client.Deposit(MakeDeposit(op, id, a, Amount::FromMicro(kEscrow), ++op_nonce));
    if (!d) {
      std::fprintf(stderr, "deposit failed: %s\n", d.error().message.c_str());
      return 1;
    }
    auto c = client.OpenChannel(MakeOpenChannel(clients.back(), id, provider_addr,
                                                Amount::FromMicro(kEscrow), 1,
                                                clock.NowSeconds() + 86'400));
    if (!c) {
      std::fprintf(stderr, "channel open failed: %s\n", c.error().message.c_str());
      return 1;
    }
    channels.push_back(c->id);
  }
  std::printf("setup: %u deposits + %u channel opens in %.2f s\n", opt.channels, opt.channels,
              Seconds(Clock::now() - setup_start));

  // Pre-signed batches: batch b raises every channel it touches by one round.
  auto sign_start = Clock::now();
  const uint32_t total = opt.batches + 1;  // the first is a warm-up
  std::vector<uint64_t> round(opt.channels, 0);
  const uint64_t expected_moved_per_item = 1000;
  uint32_t next = 0;
  // One batch whose promises raise the next opt.batch channels (round robin) by one round.
  auto next_batch = [&](uint64_t nonce) {
    std::vector<dvpn::payments::SignedPromise> promises;
    promises.reserve(opt.batch);
    for (uint32_t k = 0; k < opt.batch; ++k) {
      uint32_t ch = next++ % opt.channels;
      ++round[ch];
      promises.push_back(MakePromise(clients[ch], id, channels[ch],
                                     Amount::FromMicro(round[ch] * expected_moved_per_item)));
    }
    return MakeSettleBatch(provider, id, nonce, std::move(promises));
  };
  std::vector<SettleBatchRequest> requests;
  for (uint32_t b = 0; b < total; ++b) requests.push_back(next_batch(b + 1));
  // The timed gRPC batches, then the same number again straight into Ledger::SettleBatch (no
  // gRPC, no proto conversion): the difference is what the RPC layer costs.
  std::vector<SettleBatchRequest> direct;
  for (uint32_t b = 0; b < opt.batches; ++b) direct.push_back(next_batch(total + b + 1));

  std::printf("signed %u promises in %.2f s (not timed)\n", (total + opt.batches) * opt.batch,
              Seconds(Clock::now() - sign_start));

  std::vector<double> rates;
  for (uint32_t b = 0; b < total; ++b) {
    auto start = Clock::now();
    auto r = client.SettleBatch(requests[b]);
    auto took = Clock::now() - start;
    if (!r) {
      std::fprintf(stderr, "batch %u failed: %s\n", b, r.error().message.c_str());
      return 1;
    }
    if (r->items.size() != opt.batch ||
        r->total_moved != Amount::FromMicro(uint64_t(opt.batch) * expected_moved_per_item)) {
      std::fprintf(stderr, "batch %u settled %s, expected %llu micro\n", b,
                   r->total_moved.ToString().c_str(),
                   static_cast<unsigned long long>(opt.batch * expected_moved_per_item));
      return 1;
    }
    double rate = opt.batch / Seconds(took);
    if (b > 0) rates.push_back(rate);
    std::printf("  batch %2u: %4u promises in %7.2f ms = %8.0f promises/s%s\n", b, opt.batch,
                Seconds(took) * 1000, rate, b == 0 ? " (warm-up)" : "");
  }
  (*server)->Shutdown(std::chrono::milliseconds(1000));

  std::vector<double> direct_rates;
  for (const SettleBatchRequest& req : direct) {
    auto start = Clock::now();
    auto r = ledger.SettleBatch(req);
    auto took = Clock::now() - start;
    if (!r || r->total_moved != Amount::FromMicro(uint64_t(opt.batch) * expected_moved_per_item)) {
      std::fprintf(stderr, "direct batch did not settle as expected\n");
      return 1;
    }
    direct_rates.push_back(opt.batch / Seconds(took));
  }
  double direct_rate = Median(direct_rates);
  std::printf(
      "Ledger::SettleBatch in process (no gRPC), median of %zu batches: %.0f promises/s "
      "(%.2f ms per batch)\n",
      direct_rates.size(), direct_rate, opt.batch / direct_rate * 1000);

  double settle = rates.empty() ? 0 : Median(rates);
  double ratio = raw > 0 ? settle / raw : 0;
  std::printf(
      "settlement, median of %zu batches: %.0f promises/s = %.0f%% of one core's raw "
      "verification rate\n",
      rates.size(), settle, ratio * 100);
  std::printf(
      "RESULT verify_per_sec=%.0f verify_via_publickey_per_sec=%.0f settle_per_sec=%.0f "
      "ratio=%.3f direct_settle_per_sec=%.0f channels=%u batch=%u batches=%u "
      "verify_threads=%u\n",
      raw, via_key, settle, ratio, direct_rate, opt.channels, opt.batch, opt.batches,
      opt.verify_threads);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"settle_bench: SettleBatch throughput vs raw BIP-340 verification"};
  app.add_option("--channels", opt.channels, "channels (one client each)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1'000'000u));
  app.add_option("--batch", opt.batch, "promises per SettleBatch")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100'000u));
  app.add_option("--batches", opt.batches, "timed batches (after one warm-up)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 10'000u));
  app.add_option("--verify-ms", opt.verify_ms, "duration of the raw verification measurement")
      ->capture_default_str()
      ->check(CLI::Range(1u, 600'000u));
  app.add_option("--verify-threads", opt.verify_threads,
                 "ledger threads verifying one batch (0: one per core)")
      ->capture_default_str();
  app.add_option("--dir", opt.dir, "directory for the SQLite file (default: a fresh temp dir)");
  CLI11_PARSE(app, argc, argv);

  dvpn::SetLogLevel("warn");
  bool own_dir = opt.dir.empty();
  if (own_dir) {
    std::string templ = (std::filesystem::temp_directory_path() / "settle-bench-XXXXXX").string();
    if (!mkdtemp(templ.data())) {
      std::perror("mkdtemp");
      return 1;
    }
    opt.dir = templ;
  }
  int rc = Run(opt);
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(opt.dir, ec);
  }
  return rc;
}
