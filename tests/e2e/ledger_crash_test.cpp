// Crash safety with real processes: build/bin/dvpn-ledger is started on 127.0.0.1:0 over a
// SQLite file, a provider streams settlement batches with growing cumulative promises, and the
// ledger is killed with SIGKILL at random moments and restarted on the same file. After each
// restart the state must be consistent and no acknowledged settlement may be lost; re-sending
// every batch sent so far (fresh nonces) must then leave each channel settled at exactly
// min(highest promise, escrow): every credit moved once, none twice.
//
// Also: the executable's start-up refusals (exit 2) and its clean SIGTERM shutdown (exit 0).

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/amount.h"
#include "ledger/requests.h"
#include "ledger/rpc/ledger_client.h"
#include "payments/keystore.h"
#include "tests/support/ledger_process.h"
#include "tests/support/subprocess.h"

#ifndef DVPN_LEDGER_BIN
#error "DVPN_LEDGER_BIN must name the dvpn-ledger executable"
#endif

namespace dvpn {
// Readable amounts in assertion failures.
void PrintTo(const Amount& amount, std::ostream* os) { *os << amount.ToString() << " credits"; }
}  // namespace dvpn

namespace dvpn::ledger {
namespace {

using dvpn::testing::Subprocess;
using dvpn::testing::FileTail;
using dvpn::testing::TempDir;
using payments::PrivateKey;
using rpc::LedgerClient;
using std::chrono::milliseconds;

constexpr Amount Micro(uint64_t v) { return Amount::FromMicro(v); }

struct Channel {
  PrivateKey client;
  ChannelId id;
  Amount deposit;
  uint64_t step = 0;     // cumulative grows by this much per round
  Amount max_sent;       // highest cumulative ever sent (acknowledged or not)
  Amount acked_settled;  // channel_settled in the last acknowledged reply
};

class CrashTest : public ::testing::Test {
 protected:
  static constexpr int kChannels = 12;
  static constexpr int kKills = 8;

  void SetUp() override {
    operator_hex_ = ToHex(operator_.public_key().bytes());
    ledger_ = std::make_unique<dvpn::testing::LedgerProcess>(
        dir_, dvpn::testing::LedgerProcessOptions{.binary = DVPN_LEDGER_BIN,
                                                 .name = "crash-test",
                                                 .operator_hex = operator_hex_,
                                                 .extra = {}});
    ASSERT_TRUE(ledger_->Start());
    auto info = ledger_->client().GetInfo();
    ASSERT_TRUE(info) << info.error().message;
    id_ = info->id;
    EXPECT_EQ(id_, payments::LedgerIdFor("crash-test", operator_.public_key()));
    uint64_t op_nonce = 0;
    uint64_t now = info->server_time_unix;
    for (int i = 0; i < kChannels; ++i) {
      // Every third channel has a small escrow that the promises soon exceed (the cap); the
      // others never run out.
      Amount escrow = i % 3 == 0 ? Micro(15'000 + 1'000 * uint64_t(i)) : Micro(900'000);
      Channel ch{PrivateKey::Generate(), {}, escrow, 300 + 50 * uint64_t(i), {}, {}};
      Address addr = Address::FromPublicKey(ch.client.public_key());
      Amount funds = Micro(1'000'000);
      auto d = ledger_->client().Deposit(MakeDeposit(operator_, id_, addr, funds, ++op_nonce));
      ASSERT_TRUE(d) << d.error().message;
      deposited_ = *deposited_.CheckedAdd(funds);
      auto open = MakeOpenChannel(ch.client, id_, provider_addr_, ch.deposit, 1, now + 86'400);
      auto c = ledger_->client().OpenChannel(open);
      ASSERT_TRUE(c) << c.error().message;
      ch.id = c->id;
      accounts_.push_back(addr);
      channels_.push_back(std::move(ch));
    }
    // Some credits leave too, so "deposits - withdrawals" is not just deposits.
    auto w = ledger_->client().Withdraw(
        MakeWithdraw(channels_[0].client, id_, Micro(12'345), 2, "bank:0"));
    ASSERT_TRUE(w) << w.error().message;
    withdrawn_ = Micro(12'345);
    accounts_.push_back(provider_addr_);
    accounts_.push_back(Address::FromPublicKey(operator_.public_key()));
  }

  void TearDown() override {
    // Every child is killed by PID (Subprocess's destructor), also when an assertion failed.
    ledger_.reset();
  }

  // The next batch: round `round` of every channel in a shuffled order, plus one older promise
  // again (settling an old promise must move nothing).
  std::vector<SignedPromise> NextBatch(uint64_t round) {
    std::vector<SignedPromise> batch;
    for (Channel& ch : channels_) {
      Amount cumulative = Micro(ch.step * round);
      batch.push_back(MakePromise(ch.client, id_, ch.id, cumulative));
      ch.max_sent = std::max(ch.max_sent, cumulative);
    }
    if (round > 1) {
      Channel& ch = channels_[rng_() % channels_.size()];
      batch.push_back(MakePromise(ch.client, id_, ch.id, Micro(ch.step * (round / 2))));
    }
    std::shuffle(batch.begin(), batch.end(), rng_);
    return batch;
  }

  // Records what an acknowledged reply says each channel has settled.
  void Acknowledge(const SettleBatchResult& result) {
    for (const SettleItemResult& item : result.items) {
      for (Channel& ch : channels_) {
        if (ch.id == item.channel)
          ch.acked_settled = std::max(ch.acked_settled, item.channel_settled);
      }
    }
  }

  // Conservation and the money rules, seen through the wallet API. When `exact`, every channel
  // must be settled at min(max sent, deposit).
  void CheckConsistent(const std::string& when, bool exact) {
    SCOPED_TRACE(when);
    LedgerClient& client = ledger_->client();
    auto info = client.GetInfo();
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_EQ(info->totals.deposited, deposited_);
    EXPECT_EQ(info->totals.withdrawn, withdrawn_);
    Amount held;  // balances + escrow over every account that ever held credits
    for (const Address& a : accounts_) {
      auto acct = client.GetAccount(a);
      ASSERT_TRUE(acct) << acct.error().message;
      held = *held.CheckedAdd(acct->balance);
      held = *held.CheckedAdd(acct->escrowed);
    }
    EXPECT_EQ(held, *deposited_.CheckedSub(withdrawn_)) << "credits created or destroyed";
    Amount settled_sum;
    for (const Channel& ch : channels_) {
      auto c = client.GetChannel(ch.id);
      ASSERT_TRUE(c) << c.error().message;
      EXPECT_EQ(c->deposit, ch.deposit);
      EXPECT_LE(c->settled, c->deposit);
      EXPECT_LE(c->settled, ch.max_sent) << "settled more than was ever promised";
      EXPECT_GE(c->settled, ch.acked_settled) << "an acknowledged settlement was lost";
      if (exact) {
        EXPECT_EQ(c->settled, std::min(ch.max_sent, ch.deposit));
      }
      settled_sum = *settled_sum.CheckedAdd(c->settled);
    }
    auto provider = client.GetAccount(provider_addr_);
    ASSERT_TRUE(provider);
    EXPECT_EQ(provider->balance, settled_sum);
  }

  // Re-sends every batch sent so far with fresh nonces; all must be answered.
  void ResendAll() {
    for (const auto& promises : sent_) {
      auto r = ledger_->client().SettleBatch(MakeSettleBatch(provider_, id_, ++nonce_, promises));
      ASSERT_TRUE(r) << r.error().message;
      Acknowledge(*r);
    }
  }

  TempDir dir_;
  PrivateKey operator_ = PrivateKey::Generate();
  PrivateKey provider_ = PrivateKey::Generate();
  Address provider_addr_ = Address::FromPublicKey(provider_.public_key());
  std::string operator_hex_;
  LedgerId id_;
  std::vector<Channel> channels_;
  std::vector<Address> accounts_;
  Amount deposited_;
  Amount withdrawn_;
  uint64_t nonce_ = 0;
  std::vector<std::vector<SignedPromise>> sent_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::unique_ptr<dvpn::testing::LedgerProcess> ledger_;
};

TEST_F(CrashTest, KillNineWhileSettlingMovesEachCreditOnce) {
  const auto test_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(50);
  uint64_t round = 0;
  int failed_calls = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    SCOPED_TRACE("kill " + std::to_string(kill));
    ASSERT_LT(std::chrono::steady_clock::now(), test_deadline) << "test is too slow";

    // Stream batches until the ledger dies under us.
    std::atomic<bool> killed{false};
    int delay_ms = 20 + int(rng_() % 230);
    std::thread killer([&, delay_ms] {
      std::this_thread::sleep_for(milliseconds(delay_ms));  // a random moment, on purpose
      killed.store(true);
      ledger_->proc().Signal(SIGKILL);
    });
    int batches = 0;
    while (batches < 5000) {
      sent_.push_back(NextBatch(++round));  // counted as sent before it is on the wire
      auto r =
          ledger_->client().SettleBatch(MakeSettleBatch(provider_, id_, ++nonce_, sent_.back()));
      ++batches;
      if (!r) {
        EXPECT_TRUE(killed.load()) << "refused while alive: " << r.error().message;
        EXPECT_TRUE(r.error().code == grpc::StatusCode::UNAVAILABLE ||
                    r.error().code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                    r.error().code == grpc::StatusCode::INTERNAL)
            << int(r.error().code) << " " << r.error().message;
        ++failed_calls;
        break;
      }
      Acknowledge(*r);
    }
    killer.join();
    auto status = ledger_->proc().WaitFor(milliseconds(5000));
    ASSERT_TRUE(status) << "dvpn-ledger did not die";
    ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << "dvpn-ledger ended by itself, status " << *status << "; log:\n"
        << FileTail(ledger_->log(), 4000);
    EXPECT_GT(batches, 0);

    // Restart on the same file: consistent, nothing acknowledged lost.
    ASSERT_TRUE(ledger_->Start());
    CheckConsistent("after restart " + std::to_string(kill), /*exact=*/false);
    // Every batch once more: exactly min(promised, escrow) per channel afterwards.
    ResendAll();
    CheckConsistent("after re-sending " + std::to_string(sent_.size()) + " batches",
                    /*exact=*/true);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(failed_calls, kKills) << "every kill should have cut a call short";

  // The provider got exactly the sum of min(highest promise, escrow), and some channels hit
  // their escrow (the cap was exercised).
  Amount expected;
  int capped = 0;
  for (const Channel& ch : channels_) {
    expected = *expected.CheckedAdd(std::min(ch.max_sent, ch.deposit));
    if (ch.max_sent > ch.deposit) ++capped;
  }
  auto provider = ledger_->client().GetAccount(provider_addr_);
  ASSERT_TRUE(provider);
  EXPECT_EQ(provider->balance, expected);
  EXPECT_GT(capped, 0) << "no channel reached its escrow; raise the steps";
  std::printf("%d kills, %zu batches streamed (%d channels), %d channels capped, provider got %s\n",
              kKills, sent_.size(), kChannels, capped, provider->balance.ToString().c_str());

  // And the process still shuts down cleanly.
  ASSERT_TRUE(ledger_->proc().Signal(SIGTERM));
  auto status = ledger_->proc().WaitFor(milliseconds(10'000));
  ASSERT_TRUE(status) << "no exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
}

// --- start-up and shutdown of the executable --------------------------------------------------

int RunToExit(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {DVPN_LEDGER_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  auto proc = Subprocess::Spawn(argv, log);
  if (!proc) {
    ADD_FAILURE() << proc.error();
    return -1;
  }
  auto status = proc->WaitFor(milliseconds(10'000));
  if (!status) {
    ADD_FAILURE() << "still running after 10 s: " << FileTail(log, 4000);
    return -1;
  }
  return WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
}

TEST(LedgerExecutable, RefusesToStartOnBadConfiguration) {
  TempDir dir;
  std::string log = dir.File("out.log");
  std::string key = ToHex(PrivateKey::Generate().public_key().bytes());
  std::string db = dir.File("l.db");
  EXPECT_EQ(RunToExit({"--db", db, "--listen", "127.0.0.1:0"}, log), 2) << "no operator key";
  EXPECT_NE(FileTail(log, 4000).find("operator key"), std::string::npos) << FileTail(log, 4000);
  EXPECT_EQ(RunToExit({"--db", db, "--operator-pubkey", "abcd"}, log), 2);
  EXPECT_EQ(RunToExit({"--db", db, "--operator-pubkey", std::string(64, 'f')}, log), 2)
      << "not a curve point";
  EXPECT_EQ(RunToExit({"--db", db, "--operator-pubkey", key, "--max-batch", "0"}, log), 2);
  EXPECT_EQ(RunToExit({"--db", db, "--operator-pubkey", key, "--no-such-flag"}, log), 2);
  EXPECT_EQ(RunToExit({"--db", db, "--operator-pubkey", key, "--log-level", "loud"}, log), 2);
  EXPECT_EQ(RunToExit({"--db", db, "--operator-pubkey", key, "--name", std::string(65, 'n')}, log),
            2);
  EXPECT_EQ(RunToExit({"--help"}, log), 0);

  // A database that belongs to another ledger (other name, same key) is refused.
  {
    std::string port_file = dir.File("port");
    auto proc = Subprocess::Spawn({DVPN_LEDGER_BIN, "--db", db, "--listen", "127.0.0.1:0",
                                   "--port-file", port_file, "--operator-pubkey", key},
                                  log);
    ASSERT_TRUE(proc) << proc.error();
    ASSERT_TRUE(dvpn::testing::WaitForPortFile(port_file, milliseconds(10'000))) << FileTail(log, 4000);
    ASSERT_TRUE(proc->Signal(SIGINT));
    auto status = proc->WaitFor(milliseconds(10'000));
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "SIGINT: clean exit";
  }
  EXPECT_EQ(RunToExit({"--db", db, "--listen", "127.0.0.1:0", "--operator-pubkey", key, "--name",
                       "someone-else"},
                      log),
            2);
  std::string other_key = ToHex(PrivateKey::Generate().public_key().bytes());
  EXPECT_EQ(RunToExit({"--db", db, "--listen", "127.0.0.1:0", "--operator-pubkey", other_key}, log),
            2);
}

TEST(LedgerExecutable, ReadsTheOperatorKeyFromAKeystore) {
  TempDir dir;
  std::string log = dir.File("out.log");
  auto op = PrivateKey::Generate();
  std::string keystore = dir.File("operator.json");
  auto saved =
      payments::SaveKeystore(keystore, op, "correct horse", payments::KdfCost::MinimumForTests());
  ASSERT_TRUE(saved) << saved.error().message;
  std::string port_file = dir.File("port");
  auto proc =
      Subprocess::Spawn({DVPN_LEDGER_BIN, "--db", dir.File("l.db"), "--listen", "127.0.0.1:0",
                         "--port-file", port_file, "--operator-keystore", keystore},
                        log);
  ASSERT_TRUE(proc) << proc.error();
  auto port = dvpn::testing::WaitForPortFile(port_file, milliseconds(10'000));
  ASSERT_TRUE(port) << FileTail(log, 4000);
  LedgerClient client("127.0.0.1:" + std::to_string(*port), milliseconds(5000));
  auto info = client.GetInfo();
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->operator_key, op.public_key());
  EXPECT_EQ(info->name, "dvpn-local");
  ASSERT_TRUE(proc->Signal(SIGTERM));
  auto status = proc->WaitFor(milliseconds(10'000));
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);

  // A damaged keystore, or none at all, is refused.
  {
    std::ofstream junk(dir.File("junk.json"));
    junk << "{not json";
  }
  EXPECT_EQ(
      RunToExit({"--db", dir.File("l.db"), "--operator-keystore", dir.File("junk.json")}, log), 2);
  EXPECT_EQ(RunToExit({"--db", dir.File("l.db"), "--operator-keystore", dir.File("missing")}, log),
            2);
  // Both key flags at once is ambiguous.
  EXPECT_EQ(RunToExit({"--db", dir.File("l.db"), "--operator-keystore", keystore,
                       "--operator-pubkey", ToHex(op.public_key().bytes())},
                      log),
            2);
}

}  // namespace
}  // namespace dvpn::ledger
