// handshake_bench: tunnel handshakes per second on one core, in process, with the real
// HandshakeInitiator / HandshakeResponder, a real ReplayGuard and the system clock (issue 3,
// "Handshakes per second on one core"). Three figures, each the median over --reps repetitions:
//
// (a) full: one whole handshake, both sides on this thread: initiator (fresh ephemeral key,
//     msg1 with its BIP-340 signature), the responder's mac1 check, msg1 read (DH, AEAD,
//     signature verification, replay guard), cipher choice, msg2 write, key split, and the
//     initiator's msg2 read. The two sides' keys are compared (outside the timed loop).
// (b) responder only: what one exit core can accept per second: for each pre-made msg1 (made
//     before timing), a fresh HandshakeResponder + CheckMac1 + ReadMessage1 + ChooseCipher +
//     WriteMessage2 + TakeKeys, exactly the exit's per-handshake crypto (ExitServer::Handshake,
//     without the socket I/O and the per-source rate limiter).
// (c) strangers: rejecting a msg1 whose mac1 was made for another provider key, as the exit does
//     it: a fresh HandshakeResponder (it derives the mac1 key) + CheckMac1 -> false. No DH.
//
// Client identities: --identities keys used round robin; each identity's timestamps are
// max(now_ms, last + 1), so the shared ReplayGuard accepts every msg1 (as real clients do).
//
// Prints a table and one machine-readable line:
//   RESULT full_per_sec=<a> responder_per_sec=<b> initiator_per_sec=<derived> bad_mac1_per_sec=<c>
//          x25519_per_sec=.. verify_per_sec=..
// (the last two: the primitives that dominate, measured once for reference).
// Exits 1 when any handshake fails or a stranger's msg1 is accepted (so the smoke test can fail).

#include <sodium.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/clock.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"

namespace {

using dvpn::payments::PrivateKey;
using dvpn::tunnel::HandshakeInitiator;
using dvpn::tunnel::HandshakeResponder;
using dvpn::tunnel::ReplayGuard;
using dvpn::tunnel::X25519KeyPair;
using SteadyClock = std::chrono::steady_clock;

struct Options {
  uint32_t full = 2000;          // full handshakes per repetition
  uint32_t responder = 4000;     // responder-only handshakes per repetition
  uint32_t strangers = 200'000;  // bad-mac1 rejections per repetition
  uint32_t reps = 5;
  uint32_t identities = 256;
};

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double Seconds(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  if (n == 0) return 0;
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Client identities with the replay-guard-safe timestamp rule of real clients.
class Clients {
 public:
  explicit Clients(uint32_t n) : last_ms_(n, 0) {
    keys_.reserve(n);
    for (uint32_t i = 0; i < n; ++i) keys_.push_back(PrivateKey::Generate());
    ledger_.bytes.fill(0x44);
    channel_.bytes.fill(0x55);
  }

  // Initiator options for the next handshake of client `i % n`.
  HandshakeInitiator::Options Next(uint64_t i, const dvpn::tunnel::Key32& provider_static) {
    size_t k = i % keys_.size();
    last_ms_[k] = std::max(NowMs(), last_ms_[k] + 1);
    HandshakeInitiator::Options o;
    o.provider_static = provider_static;
    o.identity = &keys_[k];
    o.ledger = ledger_;
    o.channel = channel_;
    o.timestamp_ms = last_ms_[k];
    return o;
  }

 private:
  std::vector<PrivateKey> keys_;
  std::vector<uint64_t> last_ms_;
  dvpn::payments::LedgerId ledger_;
  dvpn::payments::ChannelId channel_;
};

struct Provider {
  X25519KeyPair key = X25519KeyPair::Generate();
  ReplayGuard guard;
  dvpn::SystemClock clock;

  HandshakeResponder Responder() {
    HandshakeResponder::Options o;
    o.static_key = &key;
    o.replay_guard = &guard;
    o.clock = &clock;
    return HandshakeResponder(std::move(o));
  }

  // The exit's share of one handshake: checks mac1, reads `msg1`, chooses a cipher from `local`,
  // writes msg2 into `msg2` (its size in `*msg2_size`) and takes the session keys. nullopt when
  // a step fails (a refused msg1 is reported on stderr).
  std::optional<dvpn::tunnel::SessionKeys> Respond(dvpn::ByteSpan msg1, std::span<uint8_t> msg2,
                                                   dvpn::tunnel::CipherSet local,
                                                   size_t* msg2_size) {
    HandshakeResponder responder = Responder();
    if (!responder.CheckMac1(msg1)) return std::nullopt;
    auto hello = responder.ReadMessage1(msg1);
    if (!hello) {
      std::fprintf(stderr, "msg1 rejected: %s\n", hello.error().message.c_str());
      return std::nullopt;
    }
    auto cipher = dvpn::tunnel::ChooseCipher(hello->ciphers, local);
    if (!cipher) return std::nullopt;
    auto n2 = responder.WriteMessage2(msg2, *cipher, {});
    if (!n2) return std::nullopt;
    auto keys = responder.TakeKeys();
    if (!keys) return std::nullopt;
    *msg2_size = *n2;
    return *std::move(keys);
  }
};

using Msg1 = std::array<uint8_t, dvpn::tunnel::kMsg1Size>;

// (a) Full handshakes: returns handshakes per second, or a negative value on failure.
double RunFull(uint32_t count, Clients& clients, Provider& provider, uint64_t& seq) {
  Msg1 msg1{};
  std::array<uint8_t, dvpn::tunnel::kMaxMsg2Size> msg2{};
  const auto local = dvpn::tunnel::LocalCiphers();
  uint32_t ok = 0;
  bool keys_match = true;
  auto start = SteadyClock::now();
  for (uint32_t i = 0; i < count; ++i) {
    HandshakeInitiator initiator(clients.Next(seq++, provider.key.public_key));
    if (!initiator.WriteMessage1(msg1)) break;
    size_t n2 = 0;
    auto provider_keys = provider.Respond(msg1, msg2, local, &n2);
    if (!provider_keys) break;
    auto client_keys = initiator.ReadMessage2(dvpn::ByteSpan(msg2.data(), n2));
    if (!client_keys) {
      std::fprintf(stderr, "msg2 rejected: %s\n", client_keys.error().message.c_str());
      break;
    }
    // A cheap check that stays in the loop (the compiler cannot drop the work).
    keys_match = keys_match && client_keys->send_key == provider_keys->recv_key &&
                 client_keys->session_id == provider_keys->session_id;
    ++ok;
  }
  double s = Seconds(start);
  if (ok != count || !keys_match) {
    std::fprintf(stderr, "full handshake: %u of %u succeeded%s\n", ok, count,
                 keys_match ? "" : ", keys differ");
    return -1;
  }
  return count / s;
}

// (b) Responder share over pre-made msg1s (made here, untimed, just before the timed loop so
// every timestamp is fresh).
double RunResponder(uint32_t count, Clients& clients, Provider& provider, uint64_t& seq) {
  std::vector<Msg1> pool(count);
  for (uint32_t i = 0; i < count; ++i) {
    HandshakeInitiator initiator(clients.Next(seq++, provider.key.public_key));
    if (!initiator.WriteMessage1(pool[i])) return -1;
  }
  std::array<uint8_t, dvpn::tunnel::kMaxMsg2Size> msg2{};
  const auto local = dvpn::tunnel::LocalCiphers();
  uint32_t ok = 0;
  uint8_t sink = 0;
  auto start = SteadyClock::now();
  for (uint32_t i = 0; i < count; ++i) {
    size_t n2 = 0;
    auto keys = provider.Respond(pool[i], msg2, local, &n2);
    if (!keys) break;
    sink ^= keys->send_key[0];
    ++ok;
  }
  double s = Seconds(start);
  if (ok != count) {
    std::fprintf(stderr, "responder: %u of %u accepted\n", ok, count);
    return -1;
  }
  asm volatile("" : : "r"(sink));
  return count / s;
}

// (c) Strangers: msg1s made for another provider's key (so mac1 is wrong), cycled.
double RunStrangers(uint32_t count, const std::vector<Msg1>& strangers, Provider& provider) {
  uint32_t refused = 0;
  auto start = SteadyClock::now();
  for (uint32_t i = 0; i < count; ++i) {
    HandshakeResponder responder = provider.Responder();
    if (!responder.CheckMac1(strangers[i % strangers.size()])) ++refused;
  }
  double s = Seconds(start);
  if (refused != count) {
    std::fprintf(stderr, "strangers: %u of %u refused\n", refused, count);
    return -1;
  }
  return count / s;
}

// The primitives that dominate a handshake, for reading the figures above: X25519 (the
// responder does 3: DH(s_p, e_c), its ephemeral key, DH(e_p, e_c); the initiator 3 as well) and
// one BIP-340 signature (initiator) / verification (responder). Operations per second.
struct Primitives {
  double x25519 = 0;
  double sign = 0;
  double verify = 0;
};

Primitives MeasurePrimitives(uint32_t count) {
  Primitives p;
  X25519KeyPair a = X25519KeyPair::Generate();
  X25519KeyPair b = X25519KeyPair::Generate();
  uint8_t out[crypto_scalarmult_BYTES];
  uint8_t acc = 0;
  auto start = SteadyClock::now();
  for (uint32_t i = 0; i < count; ++i) {
    if (crypto_scalarmult(out, a.secret_key.data(), b.public_key.data()) != 0) return p;
    acc ^= out[i % sizeof(out)];
  }
  p.x25519 = count / Seconds(start);
  PrivateKey key = PrivateKey::Generate();
  dvpn::Hash32 digest{};
  std::vector<dvpn::payments::Signature> sigs;
  start = SteadyClock::now();
  for (uint32_t i = 0; i < count; ++i) {
    digest[0] = static_cast<uint8_t>(i);
    sigs.push_back(key.Sign(digest));
  }
  p.sign = count / Seconds(start);
  uint32_t good = 0;
  start = SteadyClock::now();
  for (uint32_t i = 0; i < count; ++i) {
    digest[0] = static_cast<uint8_t>(i);
    good += key.public_key().Verify(digest, sigs[i]) ? 1 : 0;
  }
  p.verify = good == count ? count / Seconds(start) : 0;
  asm volatile("" : : "r"(acc));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"handshake_bench: tunnel handshakes per second on one core"};
  app.add_option("--full", opt.full, "full handshakes per repetition")->capture_default_str();
  app.add_option("--responder", opt.responder, "responder-only handshakes per repetition")
      ->capture_default_str();
  app.add_option("--strangers", opt.strangers, "bad-mac1 rejections per repetition")
      ->capture_default_str();
  app.add_option("--reps", opt.reps, "repetitions (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--identities", opt.identities, "client identities, used round robin")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  CLI11_PARSE(app, argc, argv);
  if (opt.full == 0 || opt.responder == 0 || opt.strangers == 0) {
    std::fprintf(stderr, "counts must be positive\n");
    return 2;
  }
  dvpn::tunnel::EnsureSodium();

  Clients clients(opt.identities);
  Provider provider;
  uint64_t seq = 0;

  // Stranger msg1s: well-formed, signed, but made for a key that is not the provider's.
  std::vector<Msg1> strangers(64);
  {
    X25519KeyPair other = X25519KeyPair::Generate();
    for (auto& m : strangers) {
      HandshakeInitiator initiator(clients.Next(seq++, other.public_key));
      if (!initiator.WriteMessage1(m)) return 1;
    }
  }

  // Warm-up (caches, lazy initialisation), not reported.
  if (RunFull(std::min<uint32_t>(opt.full, 50), clients, provider, seq) < 0) return 1;

  std::vector<double> full, responder, bad;
  for (uint32_t r = 0; r < opt.reps; ++r) {
    double f = RunFull(opt.full, clients, provider, seq);
    double p = RunResponder(opt.responder, clients, provider, seq);
    double b = RunStrangers(opt.strangers, strangers, provider);
    if (f < 0 || p < 0 || b < 0) return 1;
    std::printf("rep %u: full %.0f /s, responder %.0f /s, bad mac1 %.0f /s\n", r + 1, f, p, b);
    full.push_back(f);
    responder.push_back(p);
    bad.push_back(b);
  }
  double f = Median(full), p = Median(responder), b = Median(bad);
  // The initiator's share, from the two measured figures: 1/f = 1/p + 1/i.
  double i = (1 / f - 1 / p) > 0 ? 1 / (1 / f - 1 / p) : 0;
  auto row = [](const char* what, double per_sec, const std::vector<double>& reps) {
    auto [lo, hi] = std::minmax_element(reps.begin(), reps.end());
    if (reps.empty()) {
      std::printf("%-48s %10.0f /s %9.2f us\n", what, per_sec, 1e6 / per_sec);
    } else {
      std::printf("%-48s %10.0f /s %9.2f us   [%.0f .. %.0f]\n", what, per_sec, 1e6 / per_sec, *lo,
                  *hi);
    }
  };
  std::printf("\nhandshake_bench: 1 thread, %u client identities, %u reps (median, min..max)\n",
              opt.identities, opt.reps);
  std::printf("%-48s %13s %12s\n", "", "rate", "per op");
  row("full handshake (initiator + responder)", f, full);
  row("responder only (one exit core accepts)", p, responder);
  row("initiator only (derived: 1/full - 1/responder)", i, {});
  row("reject bad mac1 (stranger; no DH)", b, bad);
  Primitives prim = MeasurePrimitives(std::min<uint32_t>(opt.responder, 2000));
  std::printf("primitives, for reference (1 run):\n");
  row("  X25519 scalar multiplication", prim.x25519, {});
  row("  BIP-340 sign (payments::PrivateKey::Sign)", prim.sign, {});
  row("  BIP-340 verify (payments::PublicKey::Verify)", prim.verify, {});
  std::printf(
      "RESULT full_per_sec=%.0f responder_per_sec=%.0f initiator_per_sec=%.0f "
      "bad_mac1_per_sec=%.0f x25519_per_sec=%.0f verify_per_sec=%.0f\n",
      f, p, i, b, prim.x25519, prim.verify);
  return 0;
}
