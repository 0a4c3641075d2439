// Crash safety of the promise store with a real process: promise_store_writer submits promises
// from several threads and prints each one the store acknowledged as durable; it is killed with
// SIGKILL at random moments, the file is reopened, and every acknowledged promise must be there
// (the row at least as high, its signature valid), and no row may ever go down. Repeated on the
// same file, so each run also starts from a file recovered after a crash.

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "settlement/promise_store.h"
#include "tests/settlement/crash_keys.h"
#include "tests/support/subprocess.h"

#ifndef DVPN_STORE_WRITER_BIN
#error "DVPN_STORE_WRITER_BIN must name the promise_store_writer executable"
#endif

namespace dvpn::payments {
namespace {

using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using std::chrono::milliseconds;

struct LogScan {
  int acks = 0;
  std::vector<uint64_t> max_acked;
  std::vector<std::string> errors;
  bool ready = false;
};

LogScan Scan(const std::string& path, int channels) {
  LogScan scan;
  scan.max_acked.assign(channels, 0);
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  for (;;) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // only complete lines count
    std::istringstream line(text.substr(pos, nl - pos));
    pos = nl + 1;
    std::string word;
    line >> word;
    if (word == "ready") {
      scan.ready = true;
    } else if (word == "ack") {
      int c = -1;
      uint64_t v = 0;
      line >> c >> v;
      if (c >= 0 && c < channels) {
        scan.max_acked[c] = std::max(scan.max_acked[c], v);
        ++scan.acks;
      }
    } else if (word == "error") {
      scan.errors.push_back(line.str());
    }
  }
  return scan;
}

// `durability`: "process" (promises appended by the submitting threads, no fsync) or "power"
// (group commits with fsync on the writer thread); kill -9 must lose nothing acknowledged in
// either.
void KillNineLosesNoAcknowledgedPromise(const std::string& durability) {
  constexpr int kChannels = 24, kThreads = 3, kKills = 6;
  TempDir dir;
  const std::string db = dir.File("promises.db");
  std::mt19937_64 rng(std::random_device{}());
  std::vector<uint64_t> acked(kChannels, 0), stored(kChannels, 0);
  int total_acks = 0;
  const auto test_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);

  for (int kill = 0; kill < kKills; ++kill) {
    SCOPED_TRACE("kill " + std::to_string(kill));
    ASSERT_LT(std::chrono::steady_clock::now(), test_deadline) << "test is too slow";
    const std::string log = dir.File("writer-" + std::to_string(kill) + ".log");
    auto proc = Subprocess::Spawn(
        {DVPN_STORE_WRITER_BIN, db, std::to_string(kChannels), std::to_string(kThreads),
         durability},
        log);
    ASSERT_TRUE(proc) << proc.error();

    // Let it acknowledge a random number of promises, then kill it at a random moment.
    const int want = 20 + static_cast<int>(rng() % 300);
    const auto wait_end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (Scan(log, kChannels).acks < want) {
      ASSERT_LT(std::chrono::steady_clock::now(), wait_end)
          << "the writer acknowledged too little; log has " << Scan(log, kChannels).acks;
      std::this_thread::sleep_for(milliseconds(2));
    }
    std::this_thread::sleep_for(milliseconds(rng() % 25));  // a random moment, on purpose
    ASSERT_TRUE(proc->Signal(SIGKILL));
    auto status = proc->WaitFor(milliseconds(10'000));
    ASSERT_TRUE(status) << "the writer did not die";
    ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << "the writer ended by itself, status " << *status;

    LogScan scan = Scan(log, kChannels);
    EXPECT_TRUE(scan.ready);
    EXPECT_TRUE(scan.errors.empty()) << scan.errors.front();
    total_acks += scan.acks;
    for (int c = 0; c < kChannels; ++c) acked[c] = std::max(acked[c], scan.max_acked[c]);

    // Reopen (WAL recovery) and check every acknowledged promise.
    SystemClock clock;
    auto store = PromiseStore::Open(db, clock);
    ASSERT_TRUE(store) << store.error().message;
    for (int c = 0; c < kChannels; ++c) {
      PrivateKey key = crash::ClientKey(c);
      const ChannelId id = crash::Channel(key);
      auto row = (*store)->Get(id);
      ASSERT_TRUE(row) << row.error().message;
      if (acked[c] == 0) continue;
      ASSERT_TRUE(*row) << "channel " << c << ": acknowledged " << acked[c] << ", row missing";
      const StoredChannel& r = **row;
      EXPECT_GE(r.cumulative.micro(), acked[c]) << "channel " << c << ": an acknowledged promise "
                                                << "was lost";
      EXPECT_GE(r.cumulative.micro(), stored[c]) << "channel " << c << ": the row went down";
      EXPECT_TRUE(
          key.public_key().Verify(PromiseDigest(crash::Ledger(), id, r.cumulative), r.signature))
          << "channel " << c << ": the stored signature does not match its cumulative";
      stored[c] = r.cumulative.micro();
    }
    if (::testing::Test::HasFailure()) return;
  }
  std::printf("%s: %d kills, %d acknowledged promises, all found after each restart\n",
              durability.c_str(), kKills, total_acks);
}

TEST(PromiseStoreCrash, KillNineLosesNoAcknowledgedPromise) {
  KillNineLosesNoAcknowledgedPromise("process");
}

TEST(PromiseStoreCrash, KillNineLosesNoAcknowledgedPromiseWithPowerDurability) {
  KillNineLosesNoAcknowledgedPromise("power");
}

}  // namespace
}  // namespace dvpn::payments
