// dvpn-client as a user runs it (docs/client.md): a real ledger and seller node, the client in
// light gossip mode (it only dials the seller's gossip port), driven through ClientControl:
// a price limit below every offer never connects, Connect chooses the seller's offer and
// serves SOCKS5, spending shows in the status and matches what the seller accepted,
// Disconnect closes the SOCKS port; bad requests and bad flags get clear errors. Started with
// --connect before any seller exists, it keeps trying until one appears, and its SOCKS port
// wants the password.

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>

#include <grpcpp/grpcpp.h>

#include "dvpn/v1/client.grpc.pb.h"
#include "tests/node_daemon/seller_harness.h"

namespace dvpn::payments_e2e {
namespace {

class ClientDaemonTest : public SellerNodeTest {
 protected:
  void SetUp() override {
    SellerNodeTest::SetUp();
    if (HasFatalFailure()) return;
    auto saved = payments::SaveKeystore(dir_.File("client.json"), payer_, kPassphrase,
                                        payments::KdfCost::MinimumForTests());
    ASSERT_TRUE(saved) << saved.error().message;
  }

  std::vector<std::string> ClientArgs(int gossip_port) {
    return {DVPN_CLIENT_BIN,
            "--keystore",
            dir_.File("client.json"),
            "--ledger",
            ledger_target_,
            "--bootstrap",
            "127.0.0.1:" + std::to_string(gossip_port),
            "--max-price-per-mb",
            "0.05",
            "--socks",
            "127.0.0.1:0",
            "--socks-port-file",
            dir_.File("client-socks.port"),
            "--control",
            "127.0.0.1:0",
            "--control-port-file",
            dir_.File("client-control.port"),
            "--daily-cap",
            "1",
            "--spend-file",
            dir_.File("client.spend"),
            "--log-level",
            "debug"};
  }

  struct Client {
    Subprocess process;
    int control_port = 0;
    std::unique_ptr<v1::ClientControl::Stub> stub;
  };
  // dvpn-client with `args`, once its control port is written.
  std::optional<Client> StartClient(const std::vector<std::string>& args) {
    auto p = Subprocess::Spawn(args, dir_.File("dvpn-client.log"));
    if (!p) {
      ADD_FAILURE() << p.error();
      return std::nullopt;
    }
    Client c{std::move(*p), 0, nullptr};
    auto port = testing::WaitForPortFile(dir_.File("client-control.port"), 20'000ms, c.process);
    if (!port) {
      ADD_FAILURE() << "no control port:\n" << Tail(dir_.File("dvpn-client.log"));
      return std::nullopt;
    }
    c.control_port = *port;
    c.stub = v1::ClientControl::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(*port),
                                                            grpc::InsecureChannelCredentials()));
    return c;
  }

  // dvpnctl with `args`: its exit code (-1 when it did not end within 20 s).
  int RunCtl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {DVPNCTL_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Subprocess::Spawn(argv, dir_.File("dvpnctl.log"));
    if (!p) return -1;
    auto st = p->WaitFor(20s);
    if (!st) return -1;
    return WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  }

  v1::ClientStatus Call(
      const std::function<grpc::Status(grpc::ClientContext*, v1::ClientStatus*)>& call) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 40s);
    v1::ClientStatus out;
    grpc::Status st = call(&ctx, &out);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }
};

TEST_F(ClientDaemonTest, ConnectPaysTheChosenSellerAndDisconnectClosesTheSocksPort) {
  auto ports = StartSeller(WriteConfig());
  ASSERT_TRUE(ports);
  auto started = StartClient(ClientArgs(ports->gossip));
  ASSERT_TRUE(started);
  Subprocess& client = started->process;
  auto& stub = started->stub;

  auto status =
      Call([&](auto* c, auto* o) { return stub->GetStatus(c, v1::GetClientStatusRequest(), o); });
  EXPECT_EQ(status.state(), "disconnected");
  EXPECT_EQ(status.wallet_address(), Address::FromPublicKey(payer_.public_key()).ToString());
  EXPECT_EQ(status.daily_cap_micro(), 1'000'000u);

  // Bad requests change nothing.
  {
    grpc::ClientContext ctx;
    v1::ConnectRequest bad;
    bad.set_provider_address("dv00");
    v1::ClientStatus ignored;
    EXPECT_EQ(stub->Connect(&ctx, bad, &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::ConnectRequest bad;
    bad.set_wait_ms(70'000);
    v1::ClientStatus ignored;
    EXPECT_EQ(stub->Connect(&ctx, bad, &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  // A limit below the only offer: never connected, no SOCKS port.
  v1::ConnectRequest cheap;
  cheap.set_max_price_per_mb_micro(kPricePerMbMicro / 2);
  cheap.set_wait_ms(3000);
  status = Call([&](auto* c, auto* o) { return stub->Connect(c, cheap, o); });
  EXPECT_NE(status.state(), "connected");
  EXPECT_TRUE(status.socks_address().empty());
  EXPECT_TRUE(status.provider_address().empty()) << status.provider_address();

  // The default policy (0.05 per MB) takes the seller's offer (0.01).
  v1::ConnectRequest normal;
  normal.set_wait_ms(30'000);
  status = Call([&](auto* c, auto* o) { return stub->Connect(c, normal, o); });
  ASSERT_EQ(status.state(), "connected") << status.last_error() << "\n"
                                         << Tail(dir_.File("dvpn-client.log"));
  EXPECT_EQ(status.provider_address(), ProviderAddress().ToString());
  EXPECT_EQ(status.price_per_mb_micro(), kPricePerMbMicro);
  ASSERT_FALSE(status.socks_address().empty());
  const int socks = std::stoi(status.socks_address().substr(status.socks_address().rfind(':') + 1));

  constexpr size_t kBytes = 2'000'000;
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);
  ::close(fd);

  // What the client says it spent is what the seller accepted (both settle within a moment).
  auto control = Control(ports->control);
  const uint64_t expected_min =
      (2 * kBytes / kIntervalBytes) * kIntervalBytes * kPricePerMbMicro / 1'000'000;
  uint64_t seller_unsettled = 0;
  for (auto end = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < end;) {
    status =
        Call([&](auto* c, auto* o) { return stub->GetStatus(c, v1::GetClientStatusRequest(), o); });
    seller_unsettled = Earnings(*control).unsettled_micro();
    if (status.spent_session_micro() >= expected_min &&
        status.spent_session_micro() == seller_unsettled) {
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(status.spent_session_micro(), expected_min);
  EXPECT_EQ(status.spent_session_micro(), seller_unsettled);
  EXPECT_EQ(status.spent_today_micro(), status.spent_session_micro());
  EXPECT_GE(status.bytes_received(), kBytes);

  // Disconnect: the SOCKS port closes; the spending so far is still reported.
  status = Call([&](auto* c, auto* o) { return stub->Disconnect(c, v1::DisconnectRequest(), o); });
  EXPECT_EQ(status.state(), "disconnected");
  EXPECT_TRUE(status.socks_address().empty());
  EXPECT_EQ(status.spent_today_micro(), seller_unsettled);
  EXPECT_LT(ConnectLoopback(socks), 0) << "the SOCKS port still accepts after Disconnect";

  ASSERT_TRUE(client.Signal(SIGTERM));
  auto st = client.WaitFor(20s);
  ASSERT_TRUE(st) << "dvpn-client did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << Tail(dir_.File("dvpn-client.log"));
}

// docker/ starts the client with --connect as soon as its bootstrap peer answers health checks:
// it must not give up when no offer is known yet. Here no seller exists at all when the client
// starts; the client reports "connecting" with the reason, keeps trying, and connects once the
// seller appears. Its SOCKS port wants the password it was given and nothing else.
TEST_F(ClientDaemonTest, ConnectAtStartKeepsTryingUntilASellerAppearsAndSocksWantsThePassword) {
  const int gossip_port = testing::UnusedLoopbackPort();  // where a seller will listen later
  ASSERT_NE(gossip_port, 0);
  std::ofstream(dir_.File("socks.password")) << "correct horse\n";
  auto args = ClientArgs(gossip_port);
  args.insert(args.end(), {"--connect", "--socks-user", "alice", "--socks-password-file",
                           dir_.File("socks.password")});
  auto started = StartClient(args);
  ASSERT_TRUE(started);
  Subprocess& client = started->process;
  auto& stub = started->stub;
  auto status_now = [&] {
    return Call(
        [&](auto* c, auto* o) { return stub->GetStatus(c, v1::GetClientStatusRequest(), o); });
  };

  // No seller: the first attempt fails (after the wait for offers) and is retried.
  v1::ClientStatus status;
  for (auto end = std::chrono::steady_clock::now() + 40s; std::chrono::steady_clock::now() < end;) {
    status = status_now();
    if (status.last_error().find("trying again") != std::string::npos) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(status.state(), "connecting") << status.last_error();
  EXPECT_NE(status.last_error().find("trying again"), std::string::npos)
      << status.last_error() << "\n"
      << Tail(dir_.File("dvpn-client.log"));
  ASSERT_FALSE(client.WaitFor(0ms)) << "dvpn-client exited:\n"
                                    << Tail(dir_.File("dvpn-client.log"));
  // The health check the container runs.
  const std::string control = "127.0.0.1:" + std::to_string(started->control_port);
  EXPECT_EQ(RunCtl({"status", "--check", "--client", control}), 1);

  // The seller appears on the port the client was told.
  std::string config = ReadFile(WriteConfig());
  const std::string any = "[gossip]\nlisten = \"127.0.0.1:0\"";
  ASSERT_NE(config.find(any), std::string::npos);
  config.replace(config.find(any), any.size(),
                 "[gossip]\nlisten = \"127.0.0.1:" + std::to_string(gossip_port) + "\"");
  std::ofstream(dir_.File("node.toml")) << config;
  auto ports = StartSeller(dir_.File("node.toml"));
  ASSERT_TRUE(ports);
  for (auto end = std::chrono::steady_clock::now() + 60s; std::chrono::steady_clock::now() < end;) {
    status = status_now();
    if (status.state() == "connected" && !status.socks_address().empty()) break;
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(status.state(), "connected") << status.last_error() << "\n"
                                         << Tail(dir_.File("dvpn-client.log"));
  EXPECT_EQ(status.provider_address(), ProviderAddress().ToString());
  EXPECT_EQ(RunCtl({"status", "--check", "--client", control}), 0);
  const int socks = std::stoi(status.socks_address().substr(status.socks_address().rfind(':') + 1));

  EXPECT_LT(SocksConnect(socks, echo_.port()), 0) << "no authentication was accepted";
  EXPECT_LT(SocksConnect(socks, echo_.port(), "alice", "wrong"), 0) << "a wrong password worked";
  int fd = SocksConnect(socks, echo_.port(), "alice", "correct horse");
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoThrough(fd, 100'000), 100'000u);
  ::close(fd);

  ASSERT_TRUE(client.Signal(SIGTERM));
  auto st = client.WaitFor(20s);
  ASSERT_TRUE(st) << "dvpn-client did not stop";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << Tail(dir_.File("dvpn-client.log"));
}

// ClientControl on a Unix socket (what full-tunnel mode needs: the daemon then holds
// CAP_NET_ADMIN): the socket is 0660, dvpnctl works through it, another user is refused by the
// file's mode, a stale socket is replaced, a live one or a non-socket is refused, and the
// socket goes away with the daemon.
TEST_F(ClientDaemonTest, ControlOnAUnixSocketIsForItsOwnerAndGroupOnly) {
  // The folder lets anyone in, so only the socket's own mode keeps other users out.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  const std::string socket_path = dir_.File("control.sock");
  auto with_socket = [&](const std::string& path) {
    auto args = ClientArgs(1);
    auto it = std::find(args.begin(), args.end(), "--control");
    *(it + 1) = "unix:" + path;
    return args;
  };
  // A stale socket (its process is gone) is replaced.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, socket_path.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);  // bound, never listened: nothing accepts
  }
  auto p = Subprocess::Spawn(with_socket(socket_path), dir_.File("dvpn-client.log"));
  ASSERT_TRUE(p);
  struct stat st {};
  for (auto end = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < end;) {
    if (RunCtl({"status", "--client", "unix:" + socket_path}) == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(RunCtl({"status", "--client", "unix:" + socket_path}), 0)
      << Tail(dir_.File("dvpn-client.log")) << ReadFile(dir_.File("dvpnctl.log"));
  ASSERT_EQ(::lstat(socket_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  auto stub = v1::ClientControl::NewStub(
      grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials()));
  auto status =
      Call([&](auto* c, auto* o) { return stub->GetStatus(c, v1::GetClientStatusRequest(), o); });
  EXPECT_EQ(status.state(), "disconnected");

  // Another user (nobody, not in our group) cannot connect. dvpnctl runs from a copy in the
  // open folder, so that the refusal is the socket's and not the build folder's mode; the same
  // copy must work for nobody on its own first.
  if (::access("/usr/bin/setpriv", X_OK) == 0 && ::geteuid() == 0) {
    const std::string ctl = dir_.File("dvpnctl");
    std::filesystem::copy_file(DVPNCTL_BIN, ctl);
    ASSERT_EQ(::chmod(ctl.c_str(), 0755), 0);
    auto as_nobody = [&](std::vector<std::string> args) {
      std::vector<std::string> argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                       "--clear-groups", ctl};
      argv.insert(argv.end(), args.begin(), args.end());
      auto p = Subprocess::Spawn(argv, dir_.File("dvpnctl-nobody.log"));
      if (!p) return -1;
      auto code = p->WaitFor(20s);
      return code && WIFEXITED(*code) ? WEXITSTATUS(*code) : -1;
    };
    ASSERT_EQ(as_nobody({"--help"}), 0)
        << "nobody cannot run dvpnctl here: " << ReadFile(dir_.File("dvpnctl-nobody.log"));
    EXPECT_NE(as_nobody({"status", "--client", "unix:" + socket_path}), 0)
        << "another user drove the daemon: " << ReadFile(dir_.File("dvpnctl-nobody.log"));
    EXPECT_NE(ReadFile(dir_.File("dvpnctl-nobody.log")).find("ermission denied"), std::string::npos)
        << ReadFile(dir_.File("dvpnctl-nobody.log"));
  } else {
    ADD_FAILURE() << "cannot check another user here (needs root and setpriv)";
  }

  // A second daemon on the live socket, or on a path holding a file, cannot listen (exit 1).
  std::ofstream(dir_.File("not-a-socket")) << "data\n";
  for (const auto& [path, expected] : std::vector<std::pair<std::string, std::string>>{
           {socket_path, "another process listens on it"},
           {dir_.File("not-a-socket"), "something else is there"}}) {
    const std::string log = dir_.File("second-client.log");
    auto args = with_socket(path);
    *(std::find(args.begin(), args.end(), "--socks-port-file") + 1) = dir_.File("second.port");
    auto second = Subprocess::Spawn(args, log);
    ASSERT_TRUE(second);
    auto code = second->WaitFor(20s);
    ASSERT_TRUE(code);
    EXPECT_TRUE(WIFEXITED(*code) && WEXITSTATUS(*code) == 1) << ReadFile(log);
    EXPECT_NE(ReadFile(log).find(expected), std::string::npos) << ReadFile(log);
  }

  ASSERT_TRUE(p->Signal(SIGTERM));
  auto code = p->WaitFor(20s);
  ASSERT_TRUE(code);
  EXPECT_TRUE(WIFEXITED(*code) && WEXITSTATUS(*code) == 0) << Tail(dir_.File("dvpn-client.log"));
  EXPECT_NE(::lstat(socket_path.c_str(), &st), 0) << "the socket outlived the daemon";
}

TEST_F(ClientDaemonTest, BadFlagsExit2WithOneLine) {
  struct Case {
    std::string what;
    std::vector<std::string> replace;  // flag, value pairs replacing ClientArgs' values
    std::string expected;
    std::string passphrase = kPassphrase;
  };
  const Case cases[] = {
      {"wrong passphrase", {}, "wrong passphrase", "not-it"},
      {"unreadable keystore", {"--keystore", dir_.File("none.json")}, "--keystore"},
      {"control not on loopback", {"--control", "0.0.0.0:0"}, "is not a loopback address"},
      {"bad price", {"--max-price-per-mb", "abc"}, "--max-price-per-mb: not an amount"},
      {"bad socks port", {"--socks", "127.0.0.1:99999"}, "--socks"},
      {"socks beyond loopback without a password",
       {"--socks", "0.0.0.0:0"},
       "--socks: 0.0.0.0:0 is not a loopback address: whoever reaches it spends your credits"},
  };
  int n = 0;
  for (const auto& c : cases) {
    ::setenv("DVPN_PASSPHRASE", c.passphrase.c_str(), 1);
    auto args = ClientArgs(1);
    for (size_t i = 0; i + 1 < c.replace.size(); i += 2) {
      auto it = std::find(args.begin(), args.end(), c.replace[i]);
      ASSERT_NE(it, args.end());
      *(it + 1) = c.replace[i + 1];
    }
    const std::string log = dir_.File("bad-client" + std::to_string(++n) + ".log");
    auto p = Subprocess::Spawn(args, log);
    ASSERT_TRUE(p);
    auto st = p->WaitFor(20s);
    ASSERT_TRUE(st) << c.what << ": still running";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 2) << c.what << ": " << ReadFile(log);
    EXPECT_NE(ReadFile(log).find(c.expected), std::string::npos) << c.what << ": " << ReadFile(log);
  }
  ::setenv("DVPN_PASSPHRASE", kPassphrase, 1);
  // Neither offers source, or both.
  auto args = ClientArgs(1);
  args.erase(std::find(args.begin(), args.end(), "--bootstrap"),
             std::find(args.begin(), args.end(), "--bootstrap") + 2);
  auto p = Subprocess::Spawn(args, dir_.File("bad-client-src.log"));
  ASSERT_TRUE(p);
  auto st = p->WaitFor(20s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 2);
  EXPECT_NE(ReadFile(dir_.File("bad-client-src.log")).find("--bootstrap"), std::string::npos);
}

}  // namespace
}  // namespace dvpn::payments_e2e
