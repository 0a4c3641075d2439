// End-to-end tests of paid tunnels: honest sessions, spending caps, refused terms, a provider
// killed with acknowledged promises. The harness (ledger, exit, client, echo server) is in
// harness.h.

#include "tests/payments_e2e/harness.h"

namespace dvpn::payments_e2e {
namespace {

TEST_F(PaymentsE2E, HonestSessionSettlesOnShutdown) {
  int exit_port = StartExit();
  ASSERT_NE(exit_port, 0);
  int socks = StartClient(exit_port);
  ASSERT_NE(socks, 0) << Tail(dir_.File("client.log"));
  const Amount before = ProviderBalance();
  constexpr size_t kBytes = 4'000'000;  // each way: M = 8 MB
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoThrough(fd, kBytes), kBytes) << Tail(dir_.File("exit.log"));
  ::close(fd);
  ASSERT_TRUE(exit_->Signal(SIGTERM));
  auto st = exit_->WaitFor(30'000ms);
  ASSERT_TRUE(st) << "exit did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << Tail(dir_.File("exit.log"));
  const uint64_t gain = ProviderBalance().micro() - before.micro();
  const uint64_t charge = 2 * kBytes * kPricePerMbMicro / 1'000'000;  // 80,000
  EXPECT_LE(gain, charge);
  EXPECT_GE(gain + kIntervalBytes * kPricePerMbMicro / 1'000'000, charge)
      << "gain " << gain << "\n"
      << Tail(dir_.File("exit.log"));
  std::cerr << "provider gained " << gain << " micro-credits for M = " << 2 * kBytes << " (Charge "
            << charge << ")\n";
  auto ch = client_->GetChannel(channel_);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->settled.micro(), gain);
  EXPECT_EQ(kDepositMicro - ch->Remaining().micro(), gain);
  tunnel_client_->Signal(SIGTERM);
  tunnel_client_->WaitFor(10'000ms);
}

TEST_F(PaymentsE2E, SessionCapStopsTheClient) {
  int exit_port = StartExit();
  ASSERT_NE(exit_port, 0);
  int socks = StartClient(exit_port, {"--session-cap", "0.02"});  // ~2 MB at 0.01 per MB
  ASSERT_NE(socks, 0);
  std::thread mover([&] {
    int fd = SocksConnect(socks, echo_.port());
    if (fd >= 0) {
      EchoThrough(fd, 8'000'000);
      ::close(fd);
    }
  });
  auto st = tunnel_client_->WaitFor(60'000ms);
  mover.join();
  ASSERT_TRUE(st) << "the client did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 3) << Tail(dir_.File("client.log"));
  EXPECT_NE(ReadFile(dir_.File("client.log")).find("session spending cap reached"),
            std::string::npos);
  exit_->Signal(SIGTERM);
  exit_->WaitFor(30'000ms);
}

TEST_F(PaymentsE2E, TermsAboveTheClientsPriceAreRefused) {
  int exit_port = StartExit();
  ASSERT_NE(exit_port, 0);
  StartClient(exit_port, {"--max-price-per-mb", "0.001"}, /*wait=*/false);
  ASSERT_TRUE(tunnel_client_);
  auto st = tunnel_client_->WaitFor(30'000ms);
  ASSERT_TRUE(st) << "the client did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 4) << Tail(dir_.File("client.log"));
  EXPECT_NE(ReadFile(dir_.File("client.log")).find("terms refused"), std::string::npos);
  exit_->Signal(SIGTERM);
  exit_->WaitFor(30'000ms);
}

TEST_F(PaymentsE2E, KilledExitSettlesAcknowledgedPromisesAfterRestart) {
  int exit_port = StartExit();
  ASSERT_NE(exit_port, 0);
  int socks = StartClient(exit_port);
  ASSERT_NE(socks, 0);
  const Amount before = ProviderBalance();
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoThrough(fd, 3'000'000), 3'000'000u);
  ::close(fd);
  // Wait (bounded) for a receipt: a promise the exit made durable.
  const std::string kReceipt = "receipt: cumulative ";
  std::optional<Amount> acknowledged;
  for (auto end = std::chrono::steady_clock::now() + 20s;
       std::chrono::steady_clock::now() < end && !acknowledged;) {
    auto log = ReadFile(dir_.File("client.log"));
    auto pos = log.rfind(kReceipt);
    if (pos != std::string::npos) {
      auto start = pos + kReceipt.size();
      acknowledged = Amount::Parse(log.substr(start, log.find(' ', start) - start));
    }
    if (!acknowledged) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(acknowledged) << Tail(dir_.File("client.log"));
  ASSERT_GT(acknowledged->micro(), 0u);
  ASSERT_TRUE(exit_->Signal(SIGKILL));
  ASSERT_TRUE(exit_->WaitFor(10'000ms));
  tunnel_client_->Signal(SIGTERM);
  tunnel_client_->WaitFor(10'000ms);
  EXPECT_EQ(ProviderBalance(), before) << "nothing settled before the kill";
  // Restart on the same promise store; its shutdown settles what it holds.
  ASSERT_NE(StartExit(), 0);
  ASSERT_TRUE(exit_->Signal(SIGTERM));
  auto st = exit_->WaitFor(30'000ms);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
  std::cerr << "acknowledged before kill -9: " << acknowledged->ToString() << ", settled after "
            << "restart: " << Micro(ProviderBalance().micro() - before.micro()).ToString() << "\n";
  EXPECT_GE(ProviderBalance().micro() - before.micro(), acknowledged->micro())
      << Tail(dir_.File("exit.log"));
}

// The client tops the channel up when its escrow runs low (--top-up-amount/--top-up-below with
// --ledger): at 1 credit per MB the 5-credit deposit covers 5 MB, the session moves 7 MB
// (3.5 MB each way) without a pause for lack of escrow, and every top-up came from the client's
// balance into the escrow (balance + escrow unchanged until settlement).
TEST_F(PaymentsE2E, ClientTopsUpALowEscrowAndTheSessionGoesOn) {
  ExitFlags flags;
  flags.price_per_mb = "1";
  int exit_port = StartExit(flags);
  ASSERT_NE(exit_port, 0);
  int socks = StartClient(exit_port, {"--ledger", ledger_target_, "--top-up-amount", "2",
                                      "--top-up-below", "2"});
  ASSERT_NE(socks, 0) << Tail(dir_.File("client.log"));
  const Address payer = Address::FromPublicKey(payer_.public_key());
  auto account_before = client_->GetAccount(payer);
  ASSERT_TRUE(account_before);
  constexpr size_t kBytes = 3'500'000;
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoThrough(fd, kBytes), kBytes) << Tail(dir_.File("exit.log"));
  ::close(fd);
  auto ch = client_->GetChannel(channel_);
  ASSERT_TRUE(ch);
  EXPECT_GE(ch->deposit.micro(), 7'000'000u) << Tail(dir_.File("client.log"));
  const uint64_t topped = ch->deposit.micro() - kDepositMicro;
  EXPECT_EQ(topped % 2'000'000, 0u);
  auto account_after = client_->GetAccount(payer);
  ASSERT_TRUE(account_after);
  EXPECT_EQ(account_before->balance.micro() - account_after->balance.micro(), topped);
  EXPECT_NE(ReadFile(dir_.File("client.log")).find("topped up the channel by 2"),
            std::string::npos);
  ASSERT_TRUE(exit_->Signal(SIGTERM));
  ASSERT_TRUE(exit_->WaitFor(30'000ms));
  ch = client_->GetChannel(channel_);
  ASSERT_TRUE(ch);
  EXPECT_LE(ch->settled.micro(), 7'000'000u);
  EXPECT_GE(ch->settled.micro(), 6'000'000u) << "one invoice interval at most unpaid";
  tunnel_client_->Signal(SIGTERM);
  tunnel_client_->WaitFor(10'000ms);
}

// --daily-cap with --spend-file holds across a restart of the client: a first run spends part
// of the cap and stops cleanly; a second run the same day stops with exit code 3 once the
// day's total (both runs) reaches the cap; the provider never gets more than the cap.
TEST_F(PaymentsE2E, DailyCapHoldsAcrossClientRestartsWithASpendFile) {
  int exit_port = StartExit();
  ASSERT_NE(exit_port, 0);
  const std::vector<std::string> cap = {"--daily-cap", "0.05", "--spend-file",
                                        dir_.File("spend")};
  int socks = StartClient(exit_port, cap);  // 0.05 credits: 5 MB at 0.01 per MB
  ASSERT_NE(socks, 0) << Tail(dir_.File("client.log"));
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoThrough(fd, 1'500'000), 1'500'000u);  // M = 3 MB: 0.03 due
  ::close(fd);
  // Wait (bounded) until the 3 MB invoice was paid, then stop the client cleanly.
  bool paid = false;
  for (auto end = std::chrono::steady_clock::now() + 20s;
       std::chrono::steady_clock::now() < end && !paid;) {
    paid = ReadFile(dir_.File("client.log")).find("promising cumulative 0.03") != std::string::npos;
    if (!paid) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(paid) << Tail(dir_.File("client.log"));
  ASSERT_TRUE(tunnel_client_->Signal(SIGTERM));
  auto st = tunnel_client_->WaitFor(10'000ms);
  ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
  const std::string journal = ReadFile(dir_.File("spend"));
  EXPECT_TRUE(journal.starts_with("dvpn-daily-spend v1 ")) << journal;
  EXPECT_TRUE(journal.ends_with(" 30000\n")) << "trimmed to what was spent: " << journal;

  socks = StartClient(exit_port, cap);
  ASSERT_NE(socks, 0) << Tail(dir_.File("client.log"));
  std::thread mover([&] {
    int fd2 = SocksConnect(socks, echo_.port());
    if (fd2 >= 0) {
      EchoThrough(fd2, 4'000'000);  // would be 8 MB more: far past the cap
      ::close(fd2);
    }
  });
  st = tunnel_client_->WaitFor(60'000ms);
  mover.join();
  ASSERT_TRUE(st) << "the client did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 3) << Tail(dir_.File("client.log"));
  EXPECT_NE(ReadFile(dir_.File("client.log")).find("daily spending cap reached"),
            std::string::npos);
  ASSERT_TRUE(exit_->Signal(SIGTERM));
  ASSERT_TRUE(exit_->WaitFor(30'000ms));
  auto ch = client_->GetChannel(channel_);
  ASSERT_TRUE(ch);
  EXPECT_LE(ch->settled.micro(), 50'000u) << "never more than the daily cap";
  EXPECT_GE(ch->settled.micro(), 40'000u);
}

}  // namespace
}  // namespace dvpn::payments_e2e
