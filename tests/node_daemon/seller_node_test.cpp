// dvpn-node in seller mode (docs/node.md) as a seller runs it: a real dvpn-ledger, the node from
// a TOML file with its keystore, a paying dvpn-tunnel-client, the NodeControl service, the
// dashboard's JSON and /metrics, a live price change, and the graceful shutdown that settles
// what is left. Bad configuration exits 2 with one line naming the problem.

#include <ctime>
#include <filesystem>

#include "tests/node_daemon/seller_harness.h"
#ifdef DVPN_WITH_CHROMIUM
#include "tests/node/chromium.h"
#endif

namespace dvpn::payments_e2e {
namespace {

TEST_F(SellerNodeTest, PaidTrafficEarningsPriceChangeAndGracefulShutdown) {
  auto ports = StartSeller(WriteConfig());
  ASSERT_TRUE(ports);
  auto stub = Control(ports->control);

  auto status = Ask<v1::GetStatusRequest, v1::GetStatusResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->GetStatus(c, r, o); });
  EXPECT_EQ(status.provider_address(), ProviderAddress().ToString());
  ASSERT_TRUE(status.has_offer());
  EXPECT_EQ(status.offer().price_per_mb(), kPricePerMbMicro);
  ASSERT_EQ(status.offer().endpoints_size(), 1);
  EXPECT_EQ(status.offer().endpoints(0).port(), static_cast<uint32_t>(ports->tunnel));
  EXPECT_TRUE(status.accepting());

  // A paying client moves 2 MB each way through the node's exit.
  int socks = StartClient(ports->tunnel);
  ASSERT_GT(socks, 0) << Tail(dir_.File("client.log"));
  constexpr size_t kBytes = 2'000'000;
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);

  // The promises for it arrive (the last invoice may be a little behind the data).
  const uint64_t expected_min = (2 * kBytes / kIntervalBytes) * kIntervalBytes * kPricePerMbMicro /
                                1'000'000;
  v1::GetEarningsResponse earnings;
  for (auto end = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < end;) {
    earnings = Earnings(*stub);
    if (earnings.unsettled_micro() >= expected_min) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(earnings.unsettled_micro(), expected_min) << Tail(dir_.File("seller.log"));
  EXPECT_EQ(earnings.settled_micro(), 0u);
  ASSERT_EQ(earnings.channels_size(), 1);
  EXPECT_EQ(earnings.channels(0).channel_id(), std::string(channel_.bytes.begin(), channel_.bytes.end()));

  auto sessions = Ask<v1::ListSessionsRequest, v1::ListSessionsResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->ListSessions(c, r, o); });
  ASSERT_EQ(sessions.sessions_size(), 1);
  const auto& s = sessions.sessions(0);
  EXPECT_GE(s.bytes_sent(), kBytes);
  EXPECT_GE(s.bytes_received(), kBytes);
  EXPECT_EQ(s.channel_id(), std::string(channel_.bytes.begin(), channel_.bytes.end()));
  EXPECT_EQ(s.price_per_mb_micro(), kPricePerMbMicro);
  EXPECT_GE(s.accepted_micro(), expected_min);
  EXPECT_TRUE(s.client_address().starts_with("127.0.0.1:")) << s.client_address();

  // A live price change: the offer is re-signed with a larger seq and the book shows it; the
  // open session keeps the price of its handshake.
  v1::SetPriceRequest price;
  price.set_price_per_mb_micro(2 * kPricePerMbMicro);
  auto changed = Ask<v1::SetPriceRequest, v1::SetPriceResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->SetPrice(c, r, o); }, price);
  EXPECT_EQ(changed.offer().price_per_mb(), 2 * kPricePerMbMicro);
  EXPECT_GT(changed.offer().seq(), status.offer().seq());
  {
    auto book = v1::OfferBook::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(ports->control), grpc::InsecureChannelCredentials()));
    auto offers = Ask<v1::ListOffersRequest, v1::ListOffersResponse>(
        [&](auto* c, const auto& r, auto* o) { return book->ListOffers(c, r, o); });
    ASSERT_EQ(offers.offers_size(), 1);
    EXPECT_EQ(offers.offers(0).offer().price_per_mb(), 2 * kPricePerMbMicro);
  }
  // Refused prices change nothing.
  {
    grpc::ClientContext ctx;
    v1::SetPriceRequest zero;
    v1::SetPriceResponse ignored;
    EXPECT_EQ(stub->SetPrice(&ctx, zero, &ignored).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  // SettleNow moves what the node holds to its account on the ledger.
  v1::SettleNowRequest settle;
  settle.set_timeout_ms(20'000);
  auto settled = Ask<v1::SettleNowRequest, v1::SettleNowResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->SettleNow(c, r, o); }, settle);
  EXPECT_TRUE(settled.completed());
  EXPECT_GE(settled.settled_micro(), expected_min);
  EXPECT_EQ(ProviderBalance().micro(), settled.settled_micro());

  // The dashboard's JSON and /metrics show the same figures as NodeControl.
  const std::string json = HttpGet(ports->http, "/api/earnings");
  EXPECT_NE(json.find("\"settled_micro\":" + std::to_string(settled.settled_micro())),
            std::string::npos)
      << json;
  const std::string metrics = HttpGet(ports->http, "/metrics");
  EXPECT_NE(metrics.find("\ndvpn_earnings_settled_micro " +
                         std::to_string(settled.settled_micro()) + "\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\ndvpn_sessions_open 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("dvpn_settlements_total{result=\"ok\"}"), std::string::npos);

#ifdef DVPN_WITH_CHROMIUM
  // The dashboard as a browser renders it: the chart carries the node's settled figure.
  if (!testing::FindChromium() && testing::ChromiumOptional()) {
    GTEST_LOG_(INFO) << "no Chromium; DVPN_NO_CHROMIUM=1: the browser check is skipped";
  } else {
    const std::string url = "http://127.0.0.1:" + std::to_string(ports->http) + "/";
    auto dom = testing::DumpDom(url, 3000, 60s);
    ASSERT_TRUE(dom) << dom.error();
    EXPECT_NE(dom->find("data-settled-micro=\"" + std::to_string(settled.settled_micro()) + "\""),
              std::string::npos)
        << dom->substr(0, 4000);
    auto shot = testing::Screenshot(url, DVPN_SCREENSHOT_DIR "/seller_dashboard.png", 1200, 900,
                                    3000, 60s);
    EXPECT_TRUE(shot) << shot.error();
  }
#endif

  // More traffic, then SIGTERM: the node drains, settles the rest and exits 0.
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);
  std::this_thread::sleep_for(500ms);  // the last promise of the transfer
  const auto before_stop = Earnings(*stub);
  ::close(fd);
  ASSERT_TRUE(seller_->Signal(SIGTERM));
  auto st = seller_->WaitFor(30s);
  ASSERT_TRUE(st) << "the node did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << Tail(dir_.File("seller.log"));
  const uint64_t total = before_stop.settled_micro() + before_stop.unsettled_micro();
  EXPECT_GT(total, settled.settled_micro());
  EXPECT_GE(ProviderBalance().micro(), total) << Tail(dir_.File("seller.log"));
  const std::string log = ReadFile(dir_.File("seller.log"));
  EXPECT_NE(log.find("final settlement"), std::string::npos);
}

// This month as the seller's usage file names it (UTC, "YYYY-MM").
std::string ThisMonth() {
  char month[16];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(month, sizeof month, "%Y-%m", &utc);
  return month;
}

// The monthly data cap: a node whose month already used its cap (the count survives restarts in
// <data_dir>/usage) refuses new sessions with a reason and does not advertise; the count of a
// past month does not count.
TEST_F(SellerNodeTest, MonthlyDataCapRefusesSessionsAndWithdrawsTheOffer) {
  WriteUsage(ThisMonth(), 1'000'000'000);
  auto ports = StartSeller(WriteConfig("[limits]\nmonthly_data_gb = 1\n"));
  ASSERT_TRUE(ports);
  auto stub = Control(ports->control);
  auto status = Ask<v1::GetStatusRequest, v1::GetStatusResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->GetStatus(c, r, o); });
  EXPECT_FALSE(status.accepting());
  EXPECT_NE(status.not_accepting_reason().find("monthly data cap reached"), std::string::npos);
  EXPECT_EQ(status.month_bytes_metered(), 1'000'000'000u);
  EXPECT_EQ(status.monthly_data_cap_bytes(), 1'000'000'000u);
  EXPECT_FALSE(status.has_offer()) << "over the cap the offer is not published";
  {
    grpc::ClientContext ctx;
    v1::SetPriceRequest price;
    price.set_price_per_mb_micro(kPricePerMbMicro);
    v1::SetPriceResponse ignored;
    EXPECT_EQ(stub->SetPrice(&ctx, price, &ignored).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  // A client that connects anyway is turned away, and no data passes.
  int socks = StartClient(ports->tunnel);
  if (socks > 0) {
    int fd = SocksConnect(socks, echo_.port());
    if (fd >= 0) {
      EXPECT_EQ(EchoThrough(fd, 100'000), 0u);
      ::close(fd);
    }
  }
  EXPECT_EQ(Earnings(*stub).unsettled_micro(), 0u);
  ASSERT_TRUE(seller_->Signal(SIGTERM));
  auto st = seller_->WaitFor(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0);

  // Last month's count is not this month's.
  WriteUsage("2000-01", 1'000'000'000);
  ports = StartSeller(WriteConfig("[limits]\nmonthly_data_gb = 1\n"));
  ASSERT_TRUE(ports);
  stub = Control(ports->control);
  status = Ask<v1::GetStatusRequest, v1::GetStatusResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->GetStatus(c, r, o); });
  EXPECT_TRUE(status.accepting()) << status.not_accepting_reason();
  EXPECT_EQ(status.month_bytes_metered(), 0u);
  EXPECT_TRUE(status.has_offer());
}

// [tunnel] full_tunnel = true: the offer says SOCKS and full tunnel (format 2), on the node's
// status and in its offer book (docs/node.md); the node still stops cleanly.
TEST_F(SellerNodeTest, FullTunnelSettingAdvertisesTheMode) {
  const std::string path = WriteConfig();
  std::string text = ReadFile(path);
  const auto at = text.find("[tunnel]\n");
  ASSERT_NE(at, std::string::npos);
  text.insert(at + 9, "full_tunnel = true\n");
  std::ofstream(path, std::ios::trunc) << text;
  auto ports = StartSeller(path);
  ASSERT_TRUE(ports);
  auto stub = Control(ports->control);
  auto status = Ask<v1::GetStatusRequest, v1::GetStatusResponse>(
      [&](auto* c, const auto& r, auto* o) { return stub->GetStatus(c, r, o); });
  ASSERT_TRUE(status.has_offer());
  EXPECT_EQ(status.offer().format(), 2u);
  EXPECT_EQ(status.offer().modes(), 3u);
  auto book = v1::OfferBook::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(ports->control), grpc::InsecureChannelCredentials()));
  v1::ListOffersRequest full_only;
  full_only.mutable_filter()->set_required_modes(v1::OFFER_MODE_FULL_TUNNEL);
  auto offers = Ask<v1::ListOffersRequest, v1::ListOffersResponse>(
      [&](auto* c, const auto& r, auto* o) { return book->ListOffers(c, r, o); }, full_only);
  ASSERT_EQ(offers.offers_size(), 1);
  EXPECT_EQ(offers.offers(0).modes(), 3u);
  ASSERT_TRUE(seller_->Signal(SIGTERM));
  auto st = seller_->WaitFor(30s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
}

// Crossing the cap during a session ends that session too (within the sampler's second).
TEST_F(SellerNodeTest, CrossingTheDataCapEndsOpenSessions) {
  WriteUsage(ThisMonth(), 999'000'000);  // 1 MB below the cap
  auto ports = StartSeller(WriteConfig("[limits]\nmonthly_data_gb = 1\n"));
  ASSERT_TRUE(ports);
  auto stub = Control(ports->control);
  int socks = StartClient(ports->tunnel);
  ASSERT_GT(socks, 0) << Tail(dir_.File("client.log"));
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(EchoThrough(fd, 1'000'000), 1'000'000u);  // 2 MB metered: over the cap
  ::close(fd);
  v1::GetStatusResponse status;
  for (auto end = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < end;) {
    status = Ask<v1::GetStatusRequest, v1::GetStatusResponse>(
        [&](auto* c, const auto& r, auto* o) { return stub->GetStatus(c, r, o); });
    if (!status.accepting() && status.sessions_open() == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_FALSE(status.accepting());
  EXPECT_EQ(status.sessions_open(), 0u) << "the open session outlived the cap";
  EXPECT_GE(status.month_bytes_metered(), 1'000'000'000u);
  EXPECT_NE(ReadFile(dir_.File("client.log")).find("monthly data cap reached"), std::string::npos)
      << "the client was not told why";
}

// [limits] bandwidth_mbps: the exit's throughput over all tunnels stays under the limit.
TEST_F(SellerNodeTest, BandwidthLimitHoldsAcrossTheExit) {
  auto ports = StartSeller(WriteConfig("[limits]\nbandwidth_mbps = 16\n"));  // 2,000,000 B/s
  ASSERT_TRUE(ports);
  int socks = StartClient(ports->tunnel);
  ASSERT_GT(socks, 0) << Tail(dir_.File("client.log"));
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  constexpr size_t kBytes = 3'000'000;  // 6 MB through the bucket: up to the echo and back
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(fd);
  // At most burst (256 KiB) + rate x t bytes pass in t: 6 MB needs at least 2.8 s.
  EXPECT_GE(seconds, (2.0 * kBytes - 262'144) / 2'000'000) << "the limit did not hold";
  EXPECT_LT(seconds, 60.0);
}

TEST_F(SellerNodeTest, BadConfigurationExits2WithOneLineNamingIt) {
  struct Case {
    std::string what;
    std::vector<std::string> args;  // after --config
    std::string expected;
    std::string passphrase = kPassphrase;
  };
  const std::string config = WriteConfig();
  const std::string unknown = dir_.File("unknown.toml");
  std::ofstream(unknown) << ReadFile(config) << "[offer2]\nprice = 1\n";
  const Case cases[] = {
      {"unknown key", {"--set", "offer.colour=red"}, "unknown key offer.colour"},
      {"unknown table", {}, "unknown table [offer2]"},
      {"bad port", {"--set", "tunnel.listen=127.0.0.1:99999"}, "tunnel.listen: bad port"},
      {"unreadable keystore",
       {"--set", "node.keystore=" + dir_.File("missing.json")},
       "node.keystore " + dir_.File("missing.json") + ": cannot read"},
      {"wrong passphrase", {}, "wrong passphrase", "not-the-passphrase"},
      {"control not on loopback",
       {"--set", "control.http_listen=0.0.0.0:8080"},
       "control.http_listen: 0.0.0.0:8080 is not a loopback address"},
      {"a relay flag with --config", {"--region", "x"}, "--region cannot be combined with --config"},
      {"missing file", {}, "cannot read"},
  };
  int n = 0;
  for (const auto& c : cases) {
    ::setenv("DVPN_PASSPHRASE", c.passphrase.c_str(), 1);
    const std::string file = c.what == "unknown table" ? unknown
                             : c.what == "missing file" ? dir_.File("none.toml")
                                                        : config;
    std::vector<std::string> argv = {DVPN_NODE_BIN, "--config", file};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const std::string log = dir_.File("bad" + std::to_string(++n) + ".log");
    auto p = Subprocess::Spawn(argv, log);
    ASSERT_TRUE(p);
    auto st = p->WaitFor(20s);
    ASSERT_TRUE(st) << c.what << ": still running";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 2) << c.what << ": " << ReadFile(log);
    const std::string out = ReadFile(log);
    EXPECT_NE(out.find(c.expected), std::string::npos) << c.what << ": " << out;
    EXPECT_EQ(out.find("terminate"), std::string::npos) << c.what << ": " << out;
  }
  ::setenv("DVPN_PASSPHRASE", kPassphrase, 1);
}

}  // namespace
}  // namespace dvpn::payments_e2e
