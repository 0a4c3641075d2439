// Helper process for promise_store_crash_test: opens a promise store and, from several threads,
// submits ever greater signed promises for a fixed set of channels. After each promise is
// reported durable it writes "ack <channel> <cumulative>" to stdout in one write(2), so every
// line the parent reads was acknowledged after its commit. Runs until killed (or for at most
// 60 s). The client keys are derived from the channel index, so the parent can check the
// signatures it finds.
//
// Usage: promise_store_writer <db path> <channels> <threads>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "ledger/requests.h"
#include "settlement/promise_store.h"
#include "tests/settlement/crash_keys.h"

using namespace dvpn;
using namespace dvpn::payments;

namespace {

void WriteLine(const std::string& line) {
  // One write per line: lines of concurrent writers never interleave (O_APPEND file).
  ssize_t n = ::write(STDOUT_FILENO, line.data(), line.size());
  (void)n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s <db> <channels> <threads> process|power\n", argv[0]);
    return 2;
  }
  const std::string durability = argv[4];
  if (durability != "process" && durability != "power") return 2;
  const std::string path = argv[1];
  const int channels = std::atoi(argv[2]);
  const int threads = std::atoi(argv[3]);
  if (channels < 1 || threads < 1 || channels > 1000 || threads > 64) return 2;

  SystemClock clock;
  auto store = PromiseStore::Open(
      path, clock,
      PromiseStoreOptions{.durability = durability == "power" ? Durability::kPowerLoss
                                                              : Durability::kProcessCrash,
                          .max_pending = 256});
  if (!store) {
    std::fprintf(stderr, "open: %s\n", store.error().message.c_str());
    return 1;
  }
  const LedgerId ledger = crash::Ledger();
  std::vector<PrivateKey> keys;
  std::vector<ChannelId> ids;
  std::vector<uint64_t> start(channels, 0);
  for (int c = 0; c < channels; ++c) {
    keys.push_back(crash::ClientKey(c));
    ids.push_back(crash::Channel(keys.back()));
    auto row = (*store)->Get(ids.back());
    if (!row) return 1;
    if (*row) start[c] = (*row)->cumulative.micro();
  }
  WriteLine("ready\n");

  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(std::random_device{}() + t);
      std::vector<uint64_t> next;
      for (int c = t; c < channels; c += threads) next.push_back(start[c]);
      size_t k = 0;
      while (std::chrono::steady_clock::now() < end && !next.empty()) {
        const int c = t + static_cast<int>(k % next.size()) * threads;
        uint64_t& cumulative = next[k % next.size()];
        ++k;
        cumulative += 1 + rng() % 5000;
        SignedPromise p =
            ledger::MakePromise(keys[c], ledger, ids[c], Amount::FromMicro(cumulative));
        AcceptedPromise a{ledger, ids[c], keys[c].public_key(), p.cumulative, p.signature, {}, {}};
        const uint64_t value = cumulative;
        for (;;) {
          auto ok = (*store)->Submit(a, [c, value](StoreResult<SubmitResult> r) {
            if (r && r->durable_cumulative.micro() >= value) {
              WriteLine("ack " + std::to_string(c) + " " + std::to_string(value) + "\n");
            } else if (!r) {
              WriteLine("error " + r.error().message + "\n");
            }
          });
          if (ok) break;
          if (ok.error().code != StoreErrc::kQueueFull) return;
          std::this_thread::yield();
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}
