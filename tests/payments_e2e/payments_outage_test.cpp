// End-to-end tests of paid tunnels when things break (docs/payments.md §6, §7, §9): the ledger
// going away during a session and at the exit's shutdown, an exit killed (kill -9) at random
// moments of a transfer, and the exact amount settled for a non-round transfer at a price whose
// byte products do not fit 64 bits. Real dvpn-ledger, dvpn-tunnel-exit and dvpn-tunnel-client on
// 127.0.0.1; the harness (harness.h) funds the client and opens the channel.
//
// Amounts come from the client's debug log ("invoice N: M bytes, due D; promising cumulative C",
// "receipt: cumulative X acknowledged", "paid session: ..., base B, ...") and from the ledger.

#include <cstdlib>
#include <regex>

#include "tests/payments_e2e/harness.h"

namespace dvpn::payments_e2e {
namespace {

using SteadyClock = std::chrono::steady_clock;

// What a client's log says about the payments of its sessions (all amounts in micro-credits).
struct ClientInvoice {
  uint64_t seq = 0;
  uint64_t bytes = 0;       // metered_bytes of the invoice
  uint64_t due = 0;         // amount_due (session-cumulative)
  uint64_t cumulative = 0;  // the channel-cumulative promise signed for it
};
struct ClientPayments {
  std::vector<ClientInvoice> invoices;  // in log order
  uint64_t max_promised = 0;            // highest "promising cumulative"
  uint64_t max_receipt = 0;             // highest "receipt: cumulative ... acknowledged"
  bool any_receipt = false;
  std::vector<uint64_t> bases;  // the base of each paid session, in order
};

uint64_t MicroOf(const std::string& text) {
  auto a = Amount::Parse(text);
  EXPECT_TRUE(a) << "not an amount: " << text;
  return a ? a->micro() : 0;
}

// Parses the client log at `path` from byte `offset` on (a later session's part of the log).
ClientPayments ParseClientLog(const std::string& path, size_t offset = 0) {
  static const std::regex kInvoice(
      R"(invoice (\d+): (\d+) bytes, due (\d+\.\d+); promising cumulative (\d+\.\d+))");
  static const std::regex kReceipt(R"(receipt: cumulative (\d+\.\d+) acknowledged)");
  static const std::regex kBase(R"(paid session: .* base (\d+\.\d+), invoice every)");
  ClientPayments out;
  const std::string text = ReadFile(path);
  std::istringstream in(offset < text.size() ? text.substr(offset) : std::string());
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (line.find("promising cumulative") != std::string::npos &&
        std::regex_search(line, m, kInvoice)) {
      ClientInvoice inv{std::stoull(m[1]), std::stoull(m[2]), MicroOf(m[3]), MicroOf(m[4])};
      out.max_promised = std::max(out.max_promised, inv.cumulative);
      out.invoices.push_back(inv);
    } else if (line.find("receipt: cumulative") != std::string::npos &&
               std::regex_search(line, m, kReceipt)) {
      out.max_receipt = std::max(out.max_receipt, MicroOf(m[1]));
      out.any_receipt = true;
    } else if (line.find("paid session:") != std::string::npos &&
               std::regex_search(line, m, kBase)) {
      out.bases.push_back(MicroOf(m[1]));
    }
  }
  return out;
}

// docs/payments.md §1 with price_per_minute = 0: floor(M * price_per_mb / 10^6), exact.
uint64_t ChargeFor(uint64_t bytes, uint64_t price_per_mb_micro) {
  const unsigned __int128 product =
      static_cast<unsigned __int128>(bytes) * static_cast<unsigned __int128>(price_per_mb_micro);
  return static_cast<uint64_t>(product / 1'000'000);
}

// The delays of the exit's "settlement failed, retry in N ms" lines, in order.
std::vector<uint64_t> RetryDelays(const std::string& exit_log) {
  static const std::regex kRetry(R"(settlement failed, retry in (\d+) ms)");
  std::vector<uint64_t> out;
  const std::string text = ReadFile(exit_log);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kRetry);
       it != std::sregex_iterator(); ++it) {
    out.push_back(std::stoull((*it)[1]));
  }
  return out;
}

// Polls `done` every 20 ms until it holds or `timeout` passes; returns its last value.
template <class F>
bool PollUntil(std::chrono::milliseconds timeout, F done) {
  const auto end = SteadyClock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (SteadyClock::now() >= end) return false;
    std::this_thread::sleep_for(20ms);
  }
}

bool ExitedWith(const std::optional<int>& status, int code) {
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == code;
}

// A "ledger" that accepts TCP connections on 127.0.0.1:`port` and never answers (a hung or
// black-holed server): gRPC calls to it wait for their deadline. Connections are accepted and
// held open until destruction.
class BlackHole {
 public:
  explicit BlackHole(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          ::listen(fd_, 16) == 0;
  }
  ~BlackHole() {
    for (int c : held_) ::close(c);
    ::close(fd_);
  }
  bool ok() const { return ok_; }
  // Accepts one connection if one is waiting (within `timeout`); true when one was.
  bool AcceptOne(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0) return false;
    held_.push_back(c);
    return true;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::vector<int> held_;
};

class PaymentsOutage : public PaymentsE2E {
 protected:
  // The harness's client (log client.log, appended to); its SOCKS port, 0 on failure.
  int StartClientChecked(int exit_port) {
    int socks = StartClient(exit_port);
    if (socks == 0) ADD_FAILURE() << "client did not start:\n" << Tail(dir_.File("client.log"));
    return socks;
  }

  // Starts the exit with `flags` (logging to `exit_log`) and a client to it; returns the
  // client's SOCKS port, 0 (with the failure recorded) when either did not start.
  int StartExitAndClient(const ExitFlags& flags, const std::string& exit_log = "exit.log") {
    const int exit_port = StartExit(flags, exit_log);
    return exit_port == 0 ? 0 : StartClientChecked(exit_port);
  }

  // SIGTERM to the client; it must stop within 10 s, with status 0 (docs/tunnel-cli.md).
  void StopClient() {
    ASSERT_TRUE(tunnel_client_);
    tunnel_client_->Signal(SIGTERM);
    auto st = tunnel_client_->WaitFor(10'000ms);
    ASSERT_TRUE(st) << "the client did not stop";
    EXPECT_TRUE(ExitedWith(st, 0)) << "client status " << *st;
  }

  // SIGTERM to the exit; returns its wait status (nullopt: still running after `timeout`).
  // SIGTERM to the exit: it must exit 0 within `bound_ms` (its settlement deadline + a margin).
  void ExpectExitStopsWithin(int64_t bound_ms) {
    const auto t0 = SteadyClock::now();
    const auto st = TerminateExit(30'000ms);
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count();
    ASSERT_TRUE(st) << "the exit did not stop";
    EXPECT_TRUE(ExitedWith(st, 0)) << Tail(dir_.File("exit.log"));
    EXPECT_LE(took, bound_ms) << "shutdown took " << took << " ms\n"
                              << Tail(dir_.File("exit.log"));
  }

  std::optional<int> TerminateExit(std::chrono::milliseconds timeout = 20'000ms) {
    if (!exit_ || !exit_->Signal(SIGTERM)) return std::nullopt;
    return exit_->WaitFor(timeout);
  }

  void KillLedger() {
    ASSERT_TRUE(ledger_ && ledger_->Signal(SIGKILL));
    ASSERT_TRUE(ledger_->WaitFor(10'000ms)) << "the ledger did not die";
  }

  // Starts dvpn-ledger again on the same address and SQLite file (the same ledger id).
  void RestartLedger() {
    ASSERT_FALSE(ledger_ && ledger_->running());
    StartLedger(ledger_target_);
  }

  // The provider's balance in micro-credits; nullopt when the ledger does not answer (unlike
  // the harness's ProviderBalance, a failed read is never mistaken for zero).
  std::optional<uint64_t> ProviderMicro() {
    auto a = client_->GetAccount(ProviderAddress());
    if (!a) return std::nullopt;
    return a->balance.micro();
  }

  // Polls the provider's balance until it differs from `before` (deadline `timeout`).
  std::optional<uint64_t> WaitForProviderBalanceChange(uint64_t before,
                                                       std::chrono::milliseconds timeout) {
    std::optional<uint64_t> now;
    PollUntil(timeout, [&] {
      now = ProviderMicro();
      return now && *now != before;
    });
    return now;
  }

  // The channel as the ledger has it now (nullopt, with a failure recorded, when unreadable).
  std::optional<ledger::ChannelState> Channel() {
    auto ch = client_->GetChannel(channel_);
    EXPECT_TRUE(ch) << ch.error().message;
    if (!ch) return std::nullopt;
    return *ch;
  }

  // Every SettleReceive movement of the provider, in order.
  std::vector<ledger::Movement> ProviderCredits() {
    std::vector<ledger::Movement> out;
    uint64_t after = 0;
    for (int page = 0; page < 100; ++page) {  // bounded
      auto h = client_->History(ProviderAddress(), after, 500);
      EXPECT_TRUE(h) << h.error().message;
      if (!h) break;
      for (const auto& m : h->movements) {
        if (m.kind == ledger::MovementKind::kSettleReceive) out.push_back(m);
      }
      if (h->next_after_seq == 0) break;
      after = h->next_after_seq;
    }
    return out;
  }

  // Waits until the client (log client.log) has been invoiced for at least `min_invoice_bytes`
  // and every promise it signed has been acknowledged by a Receipt (so the exit's store holds
  // the client's latest promise). Returns the log's view then.
  ClientPayments WaitAcknowledged(uint64_t min_invoice_bytes) {
    ClientPayments p;
    bool ok = PollUntil(20'000ms, [&] {
      p = ParseClientLog(dir_.File("client.log"));
      return !p.invoices.empty() && p.invoices.back().bytes >= min_invoice_bytes && p.any_receipt &&
             p.max_receipt == p.max_promised;
    });
    EXPECT_TRUE(ok) << "no acknowledged invoice for " << min_invoice_bytes << " bytes:\n"
                    << Tail(dir_.File("client.log"));
    return p;
  }

  // After the exit has stopped: the ledger paid the provider exactly `expected` in total, in one
  // credit of `expected` per settlement listed in `credits`, and the channel agrees.
  void ExpectSettledExactly(uint64_t expected, size_t credits) {
    EXPECT_EQ(ProviderMicro(), expected);
    const auto ch = Channel();
    ASSERT_TRUE(ch);
    EXPECT_EQ(ch->settled.micro(), expected);
    EXPECT_EQ(ch->Remaining().micro(), kDepositMicro - expected);
    const auto moves = ProviderCredits();
    uint64_t sum = 0;
    for (const auto& m : moves) sum += m.amount.micro();
    EXPECT_EQ(moves.size(), credits) << "settlements credited to the provider";
    EXPECT_EQ(sum, expected) << "the ledger's history of the provider's credits";
  }
};

// §9 "ledger unreachable": the session goes on (credit rests on the local store, not on the
// ledger: promises are still made durable and acknowledged), settlement fails and is retried
// with backoff, and the promises are settled exactly once when the ledger is back.
TEST_F(PaymentsOutage, LedgerOutageDuringASessionSettlesWhenItReturns) {
  ExitFlags flags;
  flags.settle_threshold = "0.05";  // 50,000 micro-credits = 5 MB at 0.01 per MB
  int socks = StartExitAndClient(flags);
  ASSERT_NE(socks, 0);
  ASSERT_EQ(ProviderMicro(), 0u);
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);

  // 3.1 MB metered while the ledger is up: below the threshold, nothing is settled yet.
  constexpr size_t kLeg = 1'550'000;  // each way
  ASSERT_EQ(EchoThrough(fd, kLeg), kLeg);
  const ClientPayments up = WaitAcknowledged(3'000'000);
  ASSERT_GE(up.max_receipt, 30'000u);
  ASSERT_LT(up.max_receipt, 50'000u);
  EXPECT_EQ(ProviderMicro(), 0u) << "settled below the threshold";
  EXPECT_TRUE(RetryDelays(dir_.File("exit.log")).empty());

  ASSERT_NO_FATAL_FAILURE(KillLedger());

  // 3.1 MB more with the ledger down: same tunnel, same stream; promises still acknowledged.
  ASSERT_EQ(EchoThrough(fd, kLeg), kLeg) << Tail(dir_.File("exit.log"));
  const ClientPayments down = WaitAcknowledged(6'000'000);
  const uint64_t latest = down.max_receipt;
  ASSERT_GT(latest, up.max_receipt) << "no promise was made durable while the ledger was down";
  ASSERT_GE(latest, 50'000u) << "the threshold was not reached";
  EXPECT_EQ(latest, down.invoices.back().cumulative);
  EXPECT_EQ(latest, ChargeFor(down.invoices.back().bytes, kPricePerMbMicro));
  EXPECT_EQ(ReadFile(dir_.File("client.log")).find("was lost"), std::string::npos);

  // The scheduler tries, fails, and backs off: 1 s * 2^(n-1), drawn from [d/2, d] (§7).
  std::vector<uint64_t> delays;
  ASSERT_TRUE(PollUntil(15'000ms,
                        [&] {
                          delays = RetryDelays(dir_.File("exit.log"));
                          return delays.size() >= 2;
                        }))
      << "settlement was not attempted and retried:\n"
      << Tail(dir_.File("exit.log"));
  EXPECT_GE(delays[0], 500u);
  EXPECT_LE(delays[0], 1000u);
  EXPECT_GE(delays[1], 1000u);
  EXPECT_LE(delays[1], 2000u);

  // The ledger comes back (same address, same database): the scheduler settles on its own.
  ASSERT_NO_FATAL_FAILURE(RestartLedger());
  const auto after = WaitForProviderBalanceChange(0, 30'000ms);
  ASSERT_TRUE(after) << "the ledger does not answer";
  ASSERT_EQ(*after, latest) << "provider gain after the outage\n" << Tail(dir_.File("exit.log"));
  const auto ch = Channel();
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->settled.micro(), latest);
  EXPECT_EQ(ch->deposit.micro(), kDepositMicro);
  EXPECT_EQ(kDepositMicro - ch->Remaining().micro(), latest) << "client's escrow drop";
  std::cerr << "settled " << Micro(latest).ToString() << " after " << delays.size()
            << "+ failed attempts during the outage\n";

  // Shutdown settles nothing more.
  ::close(fd);
  ASSERT_NO_FATAL_FAILURE(StopClient());
  EXPECT_TRUE(ExitedWith(TerminateExit(), 0)) << Tail(dir_.File("exit.log"));
  ExpectSettledExactly(latest, 1);
}

// The ledger is down when the exit is told to stop: the final settlement attempt is bounded by
// --shutdown-settle-timeout-ms and the exit still exits 0 with its promises on disk; restarted
// on the same --promise-db once the ledger is back, it settles them (once).
TEST_F(PaymentsOutage, LedgerDownAtShutdownSettlesAfterRestart) {
  constexpr uint64_t kShutdownTimeoutMs = 1500;
  ExitFlags flags;
  flags.extra = {"--shutdown-settle-timeout-ms", std::to_string(kShutdownTimeoutMs)};
  int socks = StartExitAndClient(flags);
  ASSERT_NE(socks, 0);
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  constexpr size_t kBytes = 1'300'000;  // each way: M = 2.6 MB
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);
  ::close(fd);
  const ClientPayments paid = WaitAcknowledged(2'000'000);
  const uint64_t latest = paid.max_receipt;
  ASSERT_EQ(latest, ChargeFor(paid.invoices.back().bytes, kPricePerMbMicro));
  ASSERT_GE(latest, 20'000u);
  ASSERT_NO_FATAL_FAILURE(StopClient());
  EXPECT_EQ(ProviderMicro(), 0u);

  ASSERT_NO_FATAL_FAILURE(KillLedger());
  ASSERT_NO_FATAL_FAILURE(ExpectExitStopsWithin(kShutdownTimeoutMs + 2500));
  const std::string exit_log = ReadFile(dir_.File("exit.log"));
  EXPECT_NE(exit_log.find("final settlement (deadline 1500 ms)"), std::string::npos);
  EXPECT_TRUE(
      std::regex_search(exit_log, std::regex(R"(settlement: 0 batch\(es\) settled, [1-9])")))
      << Tail(dir_.File("exit.log"));

  // Ledger back; nothing was paid meanwhile.
  ASSERT_NO_FATAL_FAILURE(RestartLedger());
  EXPECT_EQ(ProviderMicro(), 0u);
  ASSERT_TRUE(Channel());
  EXPECT_EQ(Channel()->settled.micro(), 0u);

  // Restarted on the same store; the promise is older than --settle-max-age-s: settled while
  // the exit runs, not only at its shutdown.
  flags.settle_max_age_s = 1;
  ASSERT_NE(StartExit(flags, "exit-restart.log"), 0);
  const auto after = WaitForProviderBalanceChange(0, 20'000ms);
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, latest) << Tail(dir_.File("exit-restart.log"));
  EXPECT_TRUE(ExitedWith(TerminateExit(), 0)) << Tail(dir_.File("exit-restart.log"));
  ExpectSettledExactly(latest, 1);
}

// The same with a ledger that hangs instead of refusing connections, and a settlement call
// waiting on it when SIGTERM arrives: the exit must still stop within
// --shutdown-settle-timeout-ms (plus a margin), docs/tunnel-cli.md.
// The settlement call in flight is cancelled at shutdown (LedgerGateway::CancelInFlight).
TEST_F(PaymentsOutage, HungLedgerAtShutdownDoesNotHoldTheExitPastItsDeadline) {
  constexpr uint64_t kShutdownTimeoutMs = 1500;
  ExitFlags flags;
  flags.settle_threshold = "0.02";
  flags.extra = {"--shutdown-settle-timeout-ms", std::to_string(kShutdownTimeoutMs)};
  int socks = StartExitAndClient(flags);
  ASSERT_NE(socks, 0);
  // The channel is admitted (read from the ledger); now the ledger hangs.
  ASSERT_NO_FATAL_FAILURE(KillLedger());
  const int ledger_port = std::stoi(ledger_target_.substr(ledger_target_.rfind(':') + 1));
  BlackHole hole(ledger_port);
  ASSERT_TRUE(hole.ok()) << "cannot take over the ledger's port";
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  constexpr size_t kBytes = 1'550'000;  // each way: 0.03 credits, above the threshold
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);
  ::close(fd);
  WaitAcknowledged(3'000'000);
  // The scheduler calls the ledger (a channel check or the settlement): it connects to the
  // black hole and waits for an answer that never comes.
  ASSERT_TRUE(hole.AcceptOne(10'000ms)) << "the exit never called the ledger:\n"
                                        << Tail(dir_.File("exit.log"));
  ASSERT_NO_FATAL_FAILURE(StopClient());
  ASSERT_NO_FATAL_FAILURE(ExpectExitStopsWithin(kShutdownTimeoutMs + 2500));
}

// "A kill -9 at any moment loses no promise it acknowledged": the exit is killed at random
// moments of transfers, several times on one promise store. After each kill the next session's
// base (the store's latest promise, which the client verifies) is at least the highest promise
// the client saw acknowledged and at most the highest it signed; the final settlement equals it.
TEST_F(PaymentsOutage, KillNineAtRandomMomentsLosesNoAcknowledgedPromise) {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("DVPN_OUTAGE_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::cerr << "DVPN_OUTAGE_SEED=" << seed << "\n";
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay_ms(100, 700);

  constexpr int kRounds = 3;
  uint64_t acknowledged = 0;  // highest receipt the client logged, over all rounds so far
  uint64_t signed_max = 0;    // highest promise the client signed, over all rounds so far
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string client_log = dir_.File("client.log");
    const size_t offset = ReadFile(client_log).size();  // this round's part of the log
    const std::string exit_log = "exit-" + std::to_string(round) + ".log";
    int socks = StartExitAndClient(ExitFlags{}, exit_log);
    ASSERT_NE(socks, 0);
    ClientPayments start;
    ASSERT_TRUE(PollUntil(10'000ms, [&] {
      start = ParseClientLog(client_log, offset);
      return !start.bases.empty();
    }));
    EXPECT_GE(start.bases.front(), acknowledged) << "an acknowledged promise was lost";
    EXPECT_LE(start.bases.front(), signed_max) << "a base the client never signed";

    // Move bytes until the exit dies (bounded: 10 s socket timeouts, at most 500 MB).
    std::atomic<uint64_t> moved{0};
    std::atomic<bool> stop{false};
    int fd = SocksConnect(socks, echo_.port());
    ASSERT_GE(fd, 0);
    std::thread mover([&] {
      constexpr size_t kChunk = 256 * 1024;
      while (!stop && moved < 500'000'000) {
        const size_t n = EchoThrough(fd, kChunk);
        moved += n;
        if (n != kChunk) break;
      }
    });
    // The random moment: 100..700 ms after the round's first receipt (so that every round
    // has something acknowledged to lose, however slow the machine).
    EXPECT_TRUE(PollUntil(10'000ms, [&] { return ParseClientLog(client_log, offset).any_receipt; }))
        << "no receipt in this round:\n"
        << Tail(client_log);
    const int delay = delay_ms(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    const bool killed = exit_->Signal(SIGKILL);
    stop = true;
    mover.join();
    ::close(fd);
    ASSERT_TRUE(killed);
    ASSERT_TRUE(exit_->WaitFor(10'000ms));
    // The client loses its tunnel and, with --max-reconnects 0, exits 1.
    auto cst = tunnel_client_->WaitFor(15'000ms);
    ASSERT_TRUE(cst) << "the client did not stop:\n" << Tail(client_log);
    EXPECT_TRUE(ExitedWith(cst, 1));
    const ClientPayments p = ParseClientLog(client_log, offset);
    acknowledged = std::max(acknowledged, p.max_receipt);
    signed_max = std::max(signed_max, p.max_promised);
    std::cerr << "round " << round << ": killed " << delay << " ms after the first receipt, "
              << 2 * moved << " bytes metered by the test; acknowledged "
              << Micro(acknowledged).ToString() << ", signed " << Micro(signed_max).ToString()
              << "\n";
    EXPECT_EQ(ProviderMicro(), 0u) << "nothing is settled before the end";
  }
  ASSERT_GT(acknowledged, 0u);

  // Restart once more: the handshake shows the stored promise; the shutdown settles it.
  int exit_port = StartExit(ExitFlags{}, "exit-final.log");
  ASSERT_NE(exit_port, 0);
  const size_t offset = ReadFile(dir_.File("client.log")).size();
  ASSERT_NE(StartClientChecked(exit_port), 0);
  ClientPayments last;
  ASSERT_TRUE(PollUntil(10'000ms, [&] {
    last = ParseClientLog(dir_.File("client.log"), offset);
    return !last.bases.empty();
  }));
  const uint64_t stored = last.bases.front();
  EXPECT_GE(stored, acknowledged);
  EXPECT_LE(stored, signed_max);
  // The exit was killed with unpaid bytes reserved (docs/payments.md §4): the final session
  // carries them, and a whole window carried is invoiced at once. Whatever the client pays for
  // them is acknowledged before it stops, so the settlement is exactly its latest promise.
  PollUntil(3'000ms, [&] {
    last = ParseClientLog(dir_.File("client.log"), offset);
    return !last.invoices.empty() && last.max_receipt == last.max_promised;
  });
  const uint64_t final_cumulative = std::max(stored, last.max_receipt);
  EXPECT_EQ(last.max_receipt, last.max_promised) << "a promise of the final session unacknowledged";
  std::cerr << "final session: base " << Micro(stored).ToString() << ", carried bytes paid "
            << Micro(final_cumulative - stored).ToString() << "\n";
  ASSERT_NO_FATAL_FAILURE(StopClient());
  EXPECT_TRUE(ExitedWith(TerminateExit(), 0)) << Tail(dir_.File("exit-final.log"));
  ExpectSettledExactly(final_cumulative, 1);
}

// The exact amount for a non-round transfer (docs/payments.md §1): a price just under the
// protocol's limit (999,999.987654 credits per MB), so that M * price exceeds 2^64 and only the
// 128-bit computation gives the right floor. The exit invoices at multiples of the interval
// (and when pausing), not at the end of a session (§4), so the last invoice's bytes are what is
// charged: the tail after it is never invoiced.
TEST_F(PaymentsOutage, NonRoundTransferAtAHugePriceSettlesTheExactCharge) {
  constexpr uint64_t kPrice = 999'999'987'654;  // micro-credits per MB
  constexpr uint64_t kInterval = 4'000'000;
  constexpr size_t kBytes = 10'123'457;            // each way: M = 20,246,914
  constexpr uint64_t kTopUp = 25'000'000'000'000;  // 25 million credits
  // Fund the escrow for ~2 * 10^13 micro-credits of traffic.
  Address client_addr = Address::FromPublicKey(payer_.public_key());
  auto d =
      client_->Deposit(ledger::MakeDeposit(operator_, ledger_id_, client_addr, Micro(kTopUp), 2));
  ASSERT_TRUE(d) << d.error().message;
  auto t = client_->TopUpChannel(
      ledger::MakeTopUpChannel(payer_, ledger_id_, channel_, Micro(kTopUp), 2, 0));
  ASSERT_TRUE(t) << t.error().message;
  const uint64_t deposit = kDepositMicro + kTopUp;
  ASSERT_EQ(t->deposit.micro(), deposit);

  ExitFlags flags;
  flags.price_per_mb = "999999.987654";
  flags.invoice_interval_bytes = kInterval;
  flags.extra = {"--credit-window-bytes", "8000000"};
  int socks = StartExitAndClient(flags);
  ASSERT_NE(socks, 0);
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes) << Tail(dir_.File("exit.log"));
  ::close(fd);
  const uint64_t metered = 2 * kBytes;
  const ClientPayments p = WaitAcknowledged(metered / kInterval * kInterval);
  ASSERT_FALSE(p.invoices.empty());
  for (const auto& inv : p.invoices) {  // every invoice: the exact floor, base 0
    EXPECT_EQ(inv.due, ChargeFor(inv.bytes, kPrice)) << "invoice " << inv.seq;
    EXPECT_EQ(inv.cumulative, inv.due) << "invoice " << inv.seq;
  }
  const ClientInvoice& last = p.invoices.back();
  ASSERT_GE(last.bytes, 20'000'000u);
  ASSERT_LE(last.bytes, metered);
  const uint64_t expected = ChargeFor(last.bytes, kPrice);
  // The case this test is about: the byte product does not fit 64 bits.
  ASSERT_GT(static_cast<unsigned __int128>(last.bytes) * kPrice,
            static_cast<unsigned __int128>(UINT64_MAX));
  EXPECT_EQ(p.max_receipt, expected);

  ASSERT_NO_FATAL_FAILURE(StopClient());
  EXPECT_TRUE(ExitedWith(TerminateExit(), 0)) << Tail(dir_.File("exit.log"));
  // --settle-threshold 1000 credits is crossed by the first invoice already, so the exit may
  // have settled during the session too; the total is what counts, and no value twice.
  const auto gain = ProviderMicro();
  ASSERT_TRUE(gain);
  EXPECT_EQ(*gain, expected);
  const auto ch = Channel();
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->settled.micro(), expected);
  EXPECT_EQ(deposit - ch->Remaining().micro(), expected);
  const auto credits = ProviderCredits();
  ASSERT_FALSE(credits.empty());
  uint64_t sum = 0;
  for (const auto& m : credits) sum += m.amount.micro();
  EXPECT_EQ(sum, expected);
  std::cerr << "metered " << metered << " bytes, last invoice at " << last.bytes
            << " bytes: settled " << Micro(expected).ToString() << " in " << credits.size()
            << " settlement(s); the uninvoiced tail of " << metered - last.bytes
            << " bytes would have been " << Micro(ChargeFor(metered, kPrice) - expected).ToString()
            << "\n";
}

// Prices above the protocol's limit (10^12 micro-credits per MB, §1) are refused: the session
// never starts and nothing is signed.
TEST_F(PaymentsOutage, PriceAboveTheProtocolLimitIsRefused) {
  ExitFlags flags;
  flags.price_per_mb = "1000000.000001";  // 10^12 + 1 micro-credits per MB
  // docs/tunnel-cli.md: terms outside the protocol's ranges make every session fail (the exit
  // itself starts).
  int exit_port = StartExit(flags, "exit.log");
  ASSERT_NE(exit_port, 0);
  StartClient(exit_port, {}, /*wait=*/false);
  ASSERT_TRUE(tunnel_client_);
  auto st = tunnel_client_->WaitFor(20'000ms);
  ASSERT_TRUE(st) << "the client did not stop";
  EXPECT_TRUE(ExitedWith(st, 4)) << Tail(dir_.File("client.log"));
  EXPECT_NE(ReadFile(dir_.File("client.log")).find("terms refused"), std::string::npos)
      << Tail(dir_.File("client.log"));
  EXPECT_EQ(ReadFile(dir_.File("client.log")).find("promising cumulative"), std::string::npos);
  EXPECT_TRUE(ExitedWith(TerminateExit(), 0));
  EXPECT_EQ(ProviderMicro(), 0u);
}

}  // namespace
}  // namespace dvpn::payments_e2e
