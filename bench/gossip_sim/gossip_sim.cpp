// The gossip simulator (docs/marketplace.md §5): the real GossipNode over a simulated network
// with latency, loss and churn. Measures how fast a new offer reaches the live nodes (rounds and
// seconds to 99%, 99.99% and 100%) and the bytes each node sends per second at steady state
// with every provider refreshing its offer. Deterministic for a given --seed.
//
//   gossip_sim --nodes 10000 --providers 1000 --trials 5 --seed 1
//
// Prints one RESULT line per measurement and a summary; exits 1 when a trial did not reach
// every live node within --trial-timeout-s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>

#include <CLI/CLI.hpp>

#include "bench/gossip_sim/sim_network.h"

using namespace dvpn;
using namespace dvpn::marketplace;

namespace {

struct Provider {
  size_t node;
  std::shared_ptr<payments::PrivateKey> key;
  uint64_t seq = 0;
  uint64_t next_refresh_ms = 0;
};

Offer MakeOffer(const payments::LedgerId& ledger, const payments::PrivateKey& key, uint64_t seq,
                uint64_t now_unix, uint64_t lifetime_s, std::mt19937_64& rng) {
  Offer o;
  o.ledger = ledger;
  o.offer_id = 1;
  o.seq = seq;
  o.issued_unix = now_unix;
  o.expires_unix = now_unix + lifetime_s;
  for (auto& b : o.tunnel_key) b = static_cast<uint8_t>(rng());
  o.price_per_mb = Amount::FromMicro(1000 + rng() % 100000);
  o.capacity_mbps = 100 + rng() % 900;
  o.max_sessions = 64;
  o.region = "eu-west";
  o.endpoints = {Endpoint{"203.0.113." + std::to_string(rng() % 250) + ".example.net", 7443}};
  Hash32 aux;  // from the seeded generator, so that a seed gives the same signatures
  for (auto& b : aux) b = static_cast<uint8_t>(rng());
  SignOfferWithAux(o, key, aux);
  return o;
}

// A key from the seeded generator (not the OS's randomness): the run depends on the seed only.
payments::PrivateKey KeyFrom(std::mt19937_64& rng) {
  for (;;) {  // almost every 32-byte string is a valid key
    ByteArray<32> secret;
    for (auto& b : secret) b = static_cast<uint8_t>(rng());
    if (auto key = payments::PrivateKey::FromBytes(secret)) return std::move(*key);
  }
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gossip simulator: the real GossipNode over a simulated network"};
  size_t nodes = 1000, providers = 100, trials = 5, bootstrap = 3;
  uint64_t seed = 1, join_s = 60, warmup_s = 180, measure_s = 120, refresh_s = 600,
           lifetime_s = 3600, trial_timeout_s = 120;
  double loss = 0.01, churn_per_min = 0.01;
  uint32_t round_ms = 1000, fanout = 3, hot_rounds = 4;
  app.add_option("--nodes", nodes, "simulated nodes")->check(CLI::Range(2, 200000));
  app.add_option("--providers", providers, "nodes that advertise an offer")->check(CLI::Range(0, 200000));
  app.add_option("--trials", trials, "new offers whose spread is measured")->check(CLI::Range(1, 1000));
  app.add_option("--seed", seed, "seed of every random choice");
  app.add_option("--loss", loss, "probability that a frame is lost")->check(CLI::Range(0.0, 0.5));
  app.add_option("--churn-per-min", churn_per_min, "fraction of nodes replaced per minute")
      ->check(CLI::Range(0.0, 0.5));
  app.add_option("--bootstrap", bootstrap, "bootstrap peers per joining node")->check(CLI::Range(1, 16));
  app.add_option("--join-s", join_s, "nodes join spread over this many seconds");
  app.add_option("--warmup-s", warmup_s, "simulated seconds before measuring");
  app.add_option("--measure-s", measure_s, "steady-state window for bytes per node");
  app.add_option("--refresh-s", refresh_s, "providers re-advertise this often");
  app.add_option("--lifetime-s", lifetime_s, "offer lifetime")->check(CLI::Range(60, 86400));
  app.add_option("--trial-timeout-s", trial_timeout_s, "give up on a trial after this long");
  app.add_option("--round-ms", round_ms, "gossip round")->check(CLI::Range(10, 60000));
  app.add_option("--fanout", fanout, "peers per push")->check(CLI::Range(1, 32));
  app.add_option("--hot-rounds", hot_rounds, "rounds an offer stays hot")->check(CLI::Range(0, 100));
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped to a file
  providers = std::min(providers, nodes);

  const auto wall_start = std::chrono::steady_clock::now();
  sim::NetworkConfig nc;
  nc.seed = seed;
  nc.loss = loss;
  sim::Network net(nc);
  payments::LedgerId ledger;
  ledger.bytes.fill(0x5c);

  GossipConfig base;
  base.network = ledger;
  base.round = std::chrono::milliseconds(round_ms);
  base.fanout = fanout;
  base.hot_rounds = hot_rounds;

  // Reach times of the offer being traced: node -> ms.
  OfferKey traced = 0;
  std::vector<int64_t> reached;
  auto add_node = [&](std::vector<Endpoint> boot) {
    GossipConfig c = base;
    c.bootstrap = std::move(boot);
    const size_t i = net.AddNode(std::move(c));
    if (reached.size() <= i) reached.resize(i + 1, -1);
    net.node(i).SetBookListener([&, i](const OfferChange& ch) {
      if (ch.kind == OfferChange::Kind::kAdded && OfferKeyOf(*ch.offer) == traced &&
          reached[i] < 0)
        reached[i] = static_cast<int64_t>(net.now_ms());
    });
    return i;
  };
  auto random_live = [&](size_t count, size_t below) {
    std::vector<Endpoint> out;
    for (int tries = 0; out.size() < count && tries < 1000; ++tries) {
      const size_t j = net.rng()() % below;
      if (net.alive(j)) out.push_back(net.AddressOf(j));
    }
    return out;
  };

  // Joins, spread over join_s.
  std::vector<Provider> provs;
  for (size_t i = 0; i < nodes; ++i) {
    net.RunUntil(join_s * 1000 * i / nodes);
    add_node(i == 0 ? std::vector<Endpoint>{} : random_live(bootstrap, i));
  }
  for (size_t k = 0; k < providers; ++k) {
    Provider p;
    p.node = net.rng()() % nodes;
    p.key = std::make_shared<payments::PrivateKey>(KeyFrom(net.rng()));
    p.next_refresh_ms = join_s * 1000 + net.rng()() % 10000;  // first offer soon after joining
    provs.push_back(std::move(p));
  }

  double churn_debt = 0;
  uint64_t churned = 0;
  // One simulated second: churn, due refreshes, then the events.
  auto step = [&] {
    const uint64_t t = net.now_ms();
    churn_debt += churn_per_min * nodes / 60.0;
    while (churn_debt >= 1) {
      churn_debt -= 1;
      const size_t victim = net.rng()() % net.size();
      if (!net.alive(victim)) continue;
      net.KillNode(victim);
      add_node(random_live(bootstrap, net.size()));
      ++churned;
    }
    for (auto& p : provs) {
      if (p.next_refresh_ms > t || !net.alive(p.node)) continue;
      p.next_refresh_ms = t + refresh_s * 1000;
      auto offer = MakeOffer(ledger, *p.key, ++p.seq, net.now_unix(), lifetime_s, net.rng());
      (void)net.node(p.node).Publish(offer);
    }
    net.RunUntil(t + 1000);
  };
  while (net.now_ms() < (join_s + warmup_s) * 1000) step();

  size_t live = 0;
  double degree = 0;
  for (size_t i = 0; i < net.size(); ++i) {
    if (!net.alive(i)) continue;
    ++live;
    degree += net.node(i).stats().peers;
  }
  std::printf("network: %zu live nodes, mean degree %.1f, %zu providers, %llu churned so far\n",
              live, degree / live, providers, static_cast<unsigned long long>(churned));

  // Convergence trials: a new provider at a random live node publishes a new offer.
  std::vector<double> r99, r9999, r100, s99, s9999, s100;
  bool all_reached = true;
  for (size_t trial = 0; trial < trials; ++trial) {
    size_t origin;
    do origin = net.rng()() % net.size();
    while (!net.alive(origin));
    auto key = KeyFrom(net.rng());
    auto offer = MakeOffer(ledger, key, 1, net.now_unix(), lifetime_s, net.rng());
    traced = OfferKeyOf(offer);
    std::fill(reached.begin(), reached.end(), -1);
    const uint64_t t0 = net.now_ms();
    std::vector<bool> live_at_start(net.size());
    for (size_t i = 0; i < net.size(); ++i) live_at_start[i] = net.alive(i);
    if (auto ok = net.node(origin).Publish(offer); !ok) {
      std::fprintf(stderr, "publish failed: %s\n", ok.error().message.c_str());
      return 2;
    }
    auto count = [&](std::vector<double>* times) {
      size_t target = 0, got = 0;
      for (size_t i = 0; i < live_at_start.size(); ++i) {
        if (!live_at_start[i] || !net.alive(i)) continue;
        ++target;
        if (reached[i] >= 0) {
          ++got;
          if (times) times->push_back(static_cast<double>(reached[i] - static_cast<int64_t>(t0)));
        }
      }
      return std::pair{got, target};
    };
    while (net.now_ms() - t0 < trial_timeout_s * 1000) {
      step();
      auto [got, target] = count(nullptr);
      if (got == target) break;
    }
    std::vector<double> times;
    auto [got, target] = count(&times);
    std::sort(times.begin(), times.end());
    auto at = [&](double frac) -> double {
      const size_t need = static_cast<size_t>(std::ceil(frac * target));
      if (need == 0) return 0;
      if (times.size() < need) return -1;
      return times[need - 1];
    };
    const double t99 = at(0.99), t9999 = at(0.9999), t100 = at(1.0);
    if (t100 < 0) all_reached = false;
    auto rounds = [&](double ms) { return ms < 0 ? -1.0 : ms / round_ms; };
    std::printf(
        "RESULT trial=%zu nodes=%zu reached=%zu/%zu t99_s=%.2f t9999_s=%.2f t100_s=%.2f "
        "rounds99=%.2f rounds9999=%.2f rounds100=%.2f\n",
        trial, target, got, target, t99 / 1000, t9999 / 1000, t100 / 1000, rounds(t99),
        rounds(t9999), rounds(t100));
    if (t99 >= 0) r99.push_back(rounds(t99)), s99.push_back(t99 / 1000);
    if (t9999 >= 0) r9999.push_back(rounds(t9999)), s9999.push_back(t9999 / 1000);
    if (t100 >= 0) r100.push_back(rounds(t100)), s100.push_back(t100 / 1000);
  }

  // Steady state: bytes each node sends per second (payload + 4-byte frame headers).
  std::vector<uint64_t> bytes0(net.size()), frames0(net.size());
  std::vector<bool> live0(net.size());
  for (size_t i = 0; i < net.size(); ++i) {
    live0[i] = net.alive(i);
    if (!live0[i]) continue;
    auto s = net.node(i).stats();
    bytes0[i] = s.bytes_sent;
    frames0[i] = s.frames_sent;
  }
  const uint64_t m0 = net.now_ms();
  while (net.now_ms() - m0 < measure_s * 1000) step();
  std::vector<double> per_node;
  uint64_t accepted = 0, refused = 0;
  uint64_t by_verdict[kOfferVerdicts] = {};
  for (size_t i = 0; i < live0.size(); ++i) {
    if (!live0[i] || !net.alive(i)) continue;
    auto s = net.node(i).stats();
    const double b = (s.bytes_sent - bytes0[i]) + 4.0 * (s.frames_sent - frames0[i]);
    per_node.push_back(b / measure_s);
    accepted += s.verdicts[static_cast<size_t>(OfferVerdict::kAccepted)];
    for (size_t v = 0; v < kOfferVerdicts; ++v) by_verdict[v] += s.verdicts[v];
    for (size_t v = 1; v < kOfferVerdicts; ++v)
      if (v != static_cast<size_t>(OfferVerdict::kNotNewer)) refused += s.verdicts[v];
  }
  const double mean = std::accumulate(per_node.begin(), per_node.end(), 0.0) / per_node.size();
  std::printf(
      "RESULT steady nodes=%zu providers=%zu refresh_s=%llu bytes_per_node_s_mean=%.0f p50=%.0f "
      "p99=%.0f max=%.0f\n",
      per_node.size(), providers, static_cast<unsigned long long>(refresh_s), mean,
      Percentile(per_node, 0.5), Percentile(per_node, 0.99), Percentile(per_node, 1.0));
  std::printf("verdicts at the nodes live through the window (whole run):");
  for (size_t v = 0; v < kOfferVerdicts; ++v)
    if (by_verdict[v] != 0)
      std::printf(" %s=%llu", OfferVerdictName(static_cast<OfferVerdict>(v)),
                  static_cast<unsigned long long>(by_verdict[v]));
  std::printf("\n");
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  std::printf(
      "summary: rounds to 99%% median %.2f (max %.2f), to 99.99%% median %.2f (max %.2f), to "
      "100%% median %.2f (max %.2f); seconds to 99.99%% median %.2f; frames lost %llu of %llu; "
      "signatures verified %llu; offers accepted %llu, refused (invalid) %llu; churned %llu; "
      "wall %.1f s\n",
      Percentile(r99, 0.5), Percentile(r99, 1), Percentile(r9999, 0.5), Percentile(r9999, 1),
      Percentile(r100, 0.5), Percentile(r100, 1), Percentile(s9999, 0.5),
      static_cast<unsigned long long>(net.frames_lost()),
      static_cast<unsigned long long>(net.frames_lost() + net.frames_delivered()),
      static_cast<unsigned long long>(net.checker().verified()),
      static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(refused),
      static_cast<unsigned long long>(churned), wall);
  return all_reached ? 0 : 1;
}
