// The client's choice of provider from marketplace offers (docs/marketplace.md §3,
// dvpn-tunnel-client --offers-from), with real processes on 127.0.0.1: dvpn-ledger, one paid
// dvpn-tunnel-exit, dvpn-node processes advertising three providers' offers (gossiped to the
// client's own node), and dvpn-tunnel-client.
//
//   cheap   0.005/MB  its exit is down (nothing listens at its endpoint)
//   honest  0.01/MB   the running exit (the fixture's provider)
//   pricey  0.5/MB    above the client's limit of 0.1/MB
//
// The client must try the cheapest first, fail over to the honest one when the connection
// fails, move data through it, record the failure in its --provider-stats file, and never
// choose (nor open a channel to) the provider above its price limit.
#include "tests/payments_e2e/harness.h"
#include "tests/payments_e2e/provider_stats_util.h"

namespace dvpn::payments_e2e {
namespace {

using ProviderChoiceE2E = PaymentsE2E;

TEST_F(ProviderChoiceE2E, FailsOverFromADeadCheapExitAndNeverChoosesAboveTheLimit) {
  const ByteArray<32> cheap_secret = RandomSecret(), pricey_secret = RandomSecret();
  const auto cheap = *PrivateKey::FromBytes(cheap_secret);
  const auto pricey = *PrivateKey::FromBytes(pricey_secret);
  // The client also holds a channel to the cheap provider: only its dead exit makes it fail.
  auto open =
      ledger::MakeOpenChannel(payer_, ledger_id_, Address::FromPublicKey(cheap.public_key()),
                              Micro(1'000'000), 2, ServerTime() + 86'400);
  ASSERT_TRUE(client_->OpenChannel(open));

  const auto [exit_port, client_grpc] = StartExitWithHonestOffer();
  ASSERT_NE(client_grpc, 0);
  ASSERT_NE(
      StartNode("cheap", BootstrapTo("client-node", Advertise(cheap_secret, std::string(64, 'a'),
                                                              testing::UnusedLoopbackPort(), "0.005"))),
      0);
  ASSERT_NE(
      StartNode("pricey", BootstrapTo("client-node", Advertise(pricey_secret, std::string(64, 'b'),
                                                               exit_port, "0.5"))),
      0);

  // The client's node must hold the three offers before the client asks it.
  ASSERT_TRUE(WaitForOffers(client_grpc, 3)) << "the offers did not reach the client's node";

  const std::string stats_file = dir_.File("provider-stats.db");
  const int socks = StartOffersClient(client_grpc, stats_file,
                                      {"--open-deposit", "1", "--handshake-timeout-ms", "3000"});
  ASSERT_NE(socks, 0);

  // Data flows through the honest exit.
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0) << Tail(dir_.File("client.log"));
  EXPECT_EQ(EchoThrough(fd, 3'000'000), 3'000'000u);
  ::close(fd);

  tunnel_client_->Signal(SIGTERM);
  ASSERT_TRUE(tunnel_client_->WaitFor(10'000ms));
  const std::string log = ReadFile(dir_.File("client.log"));
  if (std::getenv("DVPN_SHOW_LOGS")) std::printf("%s\n", log.c_str());
  const std::string cheap_name = "provider " + ToHex(cheap.public_key().bytes()).substr(0, 16);
  const std::string honest_name = "provider " + ToHex(provider_.public_key().bytes()).substr(0, 16);
  const std::string pricey_name = "provider " + ToHex(pricey.public_key().bytes()).substr(0, 16);
  const auto chose_cheap = log.find("chose " + cheap_name);
  const auto chose_honest = log.find("chose " + honest_name);
  ASSERT_NE(chose_cheap, std::string::npos) << Tail(dir_.File("client.log"));
  ASSERT_NE(chose_honest, std::string::npos) << Tail(dir_.File("client.log"));
  EXPECT_LT(chose_cheap, chose_honest) << "the cheapest first";
  EXPECT_EQ(log.find(pricey_name), std::string::npos) << "never above the limit";

  // No channel was ever opened to the provider above the limit.
  auto channels = client_->ListChannels(Address::FromPublicKey(payer_.public_key()));
  ASSERT_TRUE(channels);
  for (const auto& c : *channels)
    EXPECT_NE(c.provider, Address::FromPublicKey(pricey.public_key()));

  // The measurements survived the client: the failure of the cheap one, the honest handshake.
  auto cheap_record = StoredRecord(stats_file, cheap);
  ASSERT_TRUE(cheap_record);
  EXPECT_GE(cheap_record->failed, 1u);
  auto honest_record = StoredRecord(stats_file, provider_);
  ASSERT_TRUE(honest_record);
  EXPECT_GE(honest_record->succeeded, 1u);
  EXPECT_TRUE(honest_record->handshake_ms.has_value());
}

}  // namespace
}  // namespace dvpn::payments_e2e
