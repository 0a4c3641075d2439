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

}  // namespace
}  // namespace dvpn::payments_e2e
