// Full-tunnel mode end to end (docs/full-tunnel.md): the real dvpn-ledger, a paid dvpn-node with
// `[tunnel] full_tunnel = true` in the namespace "provider", and the real dvpn-client with
// --full-tunnel in "user" (tests/support/topology.h), driven by dvpnctl over its Unix control
// socket. The servers live in "internet": HTTP (python3 -m http.server, one per family), UDP
// echo and a DNS responder (tests/support/udp_servers.h) on 172.31.3.1 and fd31:3::1, and
// listeners the exit must never let a client reach.
//
// The ledger runs in the test's own namespace on 127.0.0.1 (where the fixture's admin client
// funds accounts and reads balances); the daemons reach it at 172.31.3.200:7400, a relay
// (tests/support/tcp_forwarder.h) in "internet". It has an address of its own because the
// client routes the ledger outside the tunnel: had it shared 172.31.3.1 with the servers, the
// test traffic would bypass the exit. For the same reason the exit's endpoint 172.31.2.2 is
// reached outside the tunnel, so the "provider's own address" checks use its other addresses
// (172.31.2.3, fd31:2::2, the exit's TUN address).
//
// The operator's rules allow exactly: every port of 172.31.3.1 and fd31:3::1 (HTTP, echo, DNS,
// the flood's ports, and ping, which only an all-ports rule decides), and every port but 25 of
// 172.31.3.25 / fd31:3::25 (the port-25 check, with port 26 as the proof the address is open).
//
// Root only (namespaces, TUN, nftables); elsewhere every test skips and says why. Every wait
// has a deadline; processes are stopped by PID, namespaces and nft tables removed by their
// owners, also when a test fails.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <grpcpp/grpcpp.h>

#include "dvpn/v1/client.grpc.pb.h"
#include "tests/node_daemon/seller_harness.h"
#include "tests/support/netns.h"
#include "tests/support/socket_address.h"
#include "tests/support/tcp_forwarder.h"
#include "tests/support/topology.h"
#include "tests/support/udp_servers.h"

namespace dvpn::payments_e2e {
namespace {

using testing::Fd;
using testing::Netns;
using testing::Topology;

constexpr const char* kLedgerV4 = "172.31.3.200";  // the ledger's relay, outside the tunnel
constexpr int kLedgerPort = 7400;
constexpr const char* kPort25V4 = "172.31.3.25";
constexpr const char* kPort25V6 = "fd31:3::25";
constexpr const char* kMetadataV4 = "169.254.169.254";
constexpr const char* kProviderOtherV4 = "172.31.2.3";  // a second address of the exit's host
constexpr const char* kExitTunV4 = "10.231.0.1";        // the exit's TUN device (pool offset 1)
constexpr int kHttpPort = 8080;
constexpr int kEchoPort = 7777;
constexpr int kDnsPort = 53;
constexpr int kTunnelPort = 7443;  // TCP, and UDP (udp_port 0: the same number)
constexpr int kGossipPort = 7600;
constexpr int kForbiddenPort = 8081;  // listeners the exit must not let a client reach
constexpr int kFloodFirstPort = 40000;
constexpr int kFloodFlows = 5000;
constexpr const char* kDnsName = "exit-test.dvpn";
constexpr size_t kFileBytes = 4'000'000;
constexpr size_t kBigFileBytes = 12'000'000;
constexpr int kInnerMtu = 1420;

// An argv run as `ip netns exec <ns> argv...`.
std::vector<std::string> In(const Netns& ns, std::vector<std::string> argv) {
  std::vector<std::string> full = {"/usr/sbin/ip", "netns", "exec", ns.name()};
  full.insert(full.end(), argv.begin(), argv.end());
  return full;
}

struct RunResult {
  int code = -1;  // exit status; -1 when it did not end in time (it is killed) or did not start
  std::string output;
};

// Runs argv (argv[0] a path) to its end or `timeout`, its output in `log` (replaced).
RunResult RunFor(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
           const std::string& log) {
  std::remove(log.c_str());
  RunResult r;
  auto p = Subprocess::Spawn(argv, log);
  if (!p) {
    r.output = p.error();
    return r;
  }
  auto status = p->WaitFor(timeout);
  if (!status) p->KillAndReap();
  r.output = ReadFile(log);
  if (status && WIFEXITED(*status)) r.code = WEXITSTATUS(*status);
  return r;
}

// The value of "label:   value" in dvpnctl's status text ("" when absent).
std::string Field(const std::string& text, const std::string& label) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with(label + ":")) continue;
    const size_t start = line.find_first_not_of(' ', label.size() + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

// True when a TCP connection to ip:port from the calling thread's namespace succeeds within
// `timeout` (non-blocking connect, then poll).
bool TcpConnects(const std::string& ip, int port, std::chrono::milliseconds timeout) {
  auto to = testing::SocketAddress::Parse(ip, port);
  if (!to) return false;
  Fd fd(::socket(to->family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  if (::connect(fd.get(), to->get(), to->length) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  int error = 0;
  socklen_t len = sizeof error;
  return ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
}

// A TCP listener in a namespace that accepts, counts and closes every connection.
class AcceptCounter {
 public:
  AcceptCounter(const Netns& ns, const std::string& ip, int port)
      : listen_(testing::BoundSocketIn(&ns, SOCK_STREAM | SOCK_NONBLOCK, ip, port)) {
    if (listen_.valid()) thread_ = std::thread([this] { Loop(); });
  }
  ~AcceptCounter() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool listening() const { return listen_.valid(); }
  int accepted() const { return accepted_.load(); }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      Fd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c.valid()) ++accepted_;
    }
  }
  Fd listen_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

// An nftables table in a namespace, deleted with the object (the namespace's end would take it
// too; this keeps a test's rule from outliving the test's scope).
class NftTable {
 public:
  // Creates table inet `name` with `body` (nft commands after "add table"), or records why not.
  NftTable(const Netns& ns, std::string name, const std::string& commands)
      : ns_(ns), name_(std::move(name)) {
    auto ok = ns_.Shell("nft add table inet " + name_ + " && " + commands);
    created_ = ok.has_value();
    if (!ok) error_ = ok.error();
  }
  ~NftTable() { (void)ns_.Exec({"nft", "delete", "table", "inet", name_}); }
  bool created() const { return created_; }
  const std::string& error() const { return error_; }

 private:
  const Netns& ns_;
  std::string name_;
  bool created_ = false;
  std::string error_;
};

// VmRSS of a process in kB (0 when unreadable).
uint64_t RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"}) {
    if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
  }
  return "";
}

class FullTunnelTest : public SellerNodeTest {
 protected:
  // One dvpn-client in a namespace: its process and its control socket.
  struct Client {
    std::string tag;
    const Netns* ns = nullptr;
    std::string socket;
    std::optional<Subprocess> process;
    std::string log;
  };

  void SetUp() override {
    if (auto why = testing::NetnsUnavailable(); !why.empty()) GTEST_SKIP() << why;
    for (const char* tool : {"curl", "ping", "python3", "nft"}) {
      ASSERT_FALSE(FindTool(tool).empty())
          << "needs " << tool << " (scripts/install_deps.sh installs it)";
    }
    SellerNodeTest::SetUp();
    if (HasFatalFailure()) return;
    auto saved = payments::SaveKeystore(dir_.File("client.json"), payer_, kPassphrase,
                                        payments::KdfCost::MinimumForTests());
    ASSERT_TRUE(saved) << saved.error().message;
    provider_balance_before_ = ProviderBalance();

    auto topology = Topology::Create();
    ASSERT_TRUE(topology) << topology.error();
    topo_.emplace(*std::move(topology));
    auto ok = topo_->internet.Shell(
        std::string("ip addr add ") + kLedgerV4 + "/32 dev lo && ip addr add " + kPort25V4 +
        "/32 dev lo && ip addr add " + kPort25V6 + "/128 dev lo nodad && ip addr add " +
        kMetadataV4 + "/32 dev lo");
    ASSERT_TRUE(ok) << ok.error();
    // The exit forwards (what the full-tunnel drop-in sets on a real host) and has a second
    // address of its own.
    ok = topo_->provider.Shell(std::string("sysctl -qw net.ipv4.ip_forward=1 && ") +
                               "sysctl -qw net.ipv6.conf.all.forwarding=1 && ip addr add " +
                               kProviderOtherV4 + "/24 dev eth0");
    ASSERT_TRUE(ok) << ok.error();

    const int ledger_port = std::stoi(ledger_target_.substr(ledger_target_.rfind(':') + 1));
    auto relay = testing::TcpForwarder::Start(&topo_->internet, kLedgerV4, kLedgerPort, nullptr,
                                              "127.0.0.1", ledger_port);
    ASSERT_TRUE(relay) << relay.error();
    ledger_relay_ = *std::move(relay);

    // The files the HTTP servers serve: random bytes, so a mix-up cannot pass.
    std::filesystem::create_directories(dir_.File("www"));
    WriteRandomFile(dir_.File("www/blob.bin"), kFileBytes);
    WriteRandomFile(dir_.File("www/big.bin"), kBigFileBytes);
    for (const char* address : {Topology::kInternetV4, Topology::kInternetV6}) {
      auto p = Subprocess::Spawn(
          In(topo_->internet, {FindTool("python3"), "-m", "http.server", std::to_string(kHttpPort),
                               "--bind", address, "--directory", dir_.File("www")}),
          dir_.File(std::string("http-") + address + ".log"));
      ASSERT_TRUE(p) << p.error();
      http_servers_.push_back(*std::move(p));
    }
    for (const char* address : {Topology::kInternetV4, Topology::kInternetV6}) {
      bool up = false;
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while (!up && std::chrono::steady_clock::now() < deadline) {
        topo_->internet.RunInside([&] { up = TcpConnects(address, kHttpPort, 1000ms); });
        if (!up) std::this_thread::sleep_for(100ms);
      }
      ASSERT_TRUE(up) << "the HTTP server on " << address << " did not start:\n"
                      << ReadFile(dir_.File(std::string("http-") + address + ".log"));
    }
    const std::vector<std::string> servers = {Topology::kInternetV4, Topology::kInternetV6};
    auto echo = testing::UdpEchoServer::Start(topo_->internet, servers, kEchoPort);
    ASSERT_TRUE(echo) << echo.error();
    udp_echo_ = *std::move(echo);
    auto dns = testing::DnsResponder::Start(topo_->internet, servers, kDnsPort, kDnsName,
                                            Topology::kInternetV4, Topology::kInternetV6);
    ASSERT_TRUE(dns) << dns.error();
    dns_ = *std::move(dns);
  }

  void TearDown() override {
    // Clients first (their routes and TUN devices go with them), then the exit; the
    // namespaces, servers and relay go with the fixture's members.
    for (auto& c : clients_) {
      if (c->process) c->process->KillAndReap();
    }
    if (seller_) seller_->KillAndReap();
  }

  static void WriteRandomFile(const std::string& path, size_t bytes) {
    std::mt19937_64 rng(std::random_device{}());
    std::string data(bytes, '\0');
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
      const uint64_t v = rng();
      std::memcpy(data.data() + i, &v, 8);
    }
    std::ofstream(path, std::ios::binary) << data;
  }

  // node.toml for the exit in "provider"; `tunnel_extra` and `payments_extra` are appended to
  // their tables.
  std::string WriteExitConfig(const std::string& tunnel_extra = "",
                              const std::string& payments_extra = "") {
    const std::string path = dir_.File("node.toml");
    std::ofstream out(path);
    out << "[node]\nledger = \"" << kLedgerV4 << ":" << kLedgerPort << "\"\nkeystore = \""
        << dir_.File("provider.json") << "\"\ndata_dir = \"" << dir_.File("seller")
        << "\"\nlog_level = \"debug\"\n"
        << "[gossip]\nlisten = \"" << Topology::kProviderV4 << ":" << kGossipPort
        << "\"\nround_ms = 200\n"
        << "[offer]\nprice_per_mb = \"0.01\"\nregion = \"eu-test\"\nmax_sessions = 8\n"
        << "[tunnel]\nlisten = \"" << Topology::kProviderV4 << ":" << kTunnelPort
        << "\"\nstatic_key_file = \"" << dir_.File("exit.key") << "\"\n"
        << "allow = [\"172.31.3.1/32\", \"[fd31:3::1]/128\", "
        << "\"" << kPort25V4 << "/32:1-24\", \"" << kPort25V4 << "/32:26-65535\", "
        << "\"[" << kPort25V6 << "]/128:1-24\", \"[" << kPort25V6 << "]/128:26-65535\"]\n"
        << "full_tunnel = true\ntun_device = \"dvpnx0\"\ninner_ipv4 = \"10.231.0.0/16\"\n"
        << "udp_port = 0\n"
        << tunnel_extra << "[payments]\ninvoice_interval_bytes = " << kIntervalBytes << "\n"
        << payments_extra
        << "[settlement]\nthreshold = \"1000\"\nmax_age_s = 3600\nshutdown_grace_ms = 500\n"
        << "[control]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n";
    return path;
  }

  // Starts dvpn-node --config in "provider" (`ip netns exec` execs it: the PID is the node's)
  // and waits for its ports file. False, with the log's end recorded, otherwise.
  bool StartExitNode(const std::string& config) {
    const std::string ports = dir_.File("seller.ports");
    std::remove(ports.c_str());
    auto p = Subprocess::Spawn(
        In(topo_->provider, {DVPN_NODE_BIN, "--config", config, "--ports-file", ports}),
        dir_.File("seller.log"));
    if (!p) {
      ADD_FAILURE() << p.error();
      return false;
    }
    seller_.emplace(*std::move(p));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (ReadPorts(ports)) return true;
      if (seller_->WaitFor(50ms)) {
        ADD_FAILURE() << "dvpn-node exited:\n" << Tail(dir_.File("seller.log"));
        return false;
      }
    }
    ADD_FAILURE() << "dvpn-node did not start:\n" << Tail(dir_.File("seller.log"));
    return false;
  }

  // The exit with the default configuration and the client in "user", connected; nullptr (the
  // failing step recorded) otherwise.
  Client* StartAndConnect() {
    if (!StartExitNode(WriteExitConfig())) return nullptr;
    Client* c = StartClient(topo_->user, "client", dir_.File("client.json"));
    return c && Connect(*c) ? c : nullptr;
  }

  // The exit's /api/status (dashboard, in "provider"); the error text when it cannot be read.
  std::string ExitApiStatus() {
    auto ports = ReadPorts(dir_.File("seller.ports"));
    if (!ports) return "no ports file";
    auto got = topo_->provider.Exec(
        {"curl", "-s", "http://127.0.0.1:" + std::to_string(ports->http) + "/api/status"});
    return got.value_or(got.error());
  }
  // A number `"key":N` in `json` (0 when absent).
  static uint64_t JsonNumber(const std::string& json, const std::string& key) {
    const size_t at = json.find("\"" + key + "\":");
    return at == std::string::npos ? 0 : std::stoull(json.substr(at + key.size() + 3));
  }

  // dvpn-client in `ns` with --full-tunnel and its control on a Unix socket, `extra` flags
  // added (a --daily-cap there replaces the default 1 credit). Waits until dvpnctl reaches it;
  // nullptr (recorded) when it does not come up.
  Client* StartClient(const Netns& ns, const std::string& tag, const std::string& keystore,
                      const std::vector<std::string>& extra = {}) {
    auto c = std::make_unique<Client>();
    c->tag = tag;
    c->ns = &ns;
    c->socket = dir_.File(tag + "-control.sock");
    c->log = dir_.File(tag + ".log");
    std::vector<std::string> argv = {DVPN_CLIENT_BIN,
                                     "--keystore", keystore,
                                     "--ledger", std::string(kLedgerV4) + ":" +
                                                     std::to_string(kLedgerPort),
                                     "--bootstrap", std::string(Topology::kProviderV4) + ":" +
                                                        std::to_string(kGossipPort),
                                     "--max-price-per-mb", "0.05",
                                     "--socks", "127.0.0.1:0",
                                     "--socks-port-file", dir_.File(tag + "-socks.port"),
                                     "--control", "unix:" + c->socket,
                                     "--spend-file", dir_.File(tag + ".spend"),
                                     "--full-tunnel",
                                     "--tun-device", "dvpn0",
                                     "--log-level", "debug"};
    const bool own_cap =
        std::find(extra.begin(), extra.end(), "--daily-cap") != extra.end();
    if (!own_cap) argv.insert(argv.end(), {"--daily-cap", "1"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = Subprocess::Spawn(In(ns, argv), c->log);
    if (!p) {
      ADD_FAILURE() << p.error();
      return nullptr;
    }
    c->process.emplace(*std::move(p));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Ctl(*c, {"status"}).code == 0) {
        clients_.push_back(std::move(c));
        return clients_.back().get();
      }
      if (c->process->WaitFor(100ms)) {
        ADD_FAILURE() << tag << ": dvpn-client exited:\n" << Tail(c->log);
        return nullptr;
      }
    }
    ADD_FAILURE() << tag << ": no control socket:\n" << Tail(c->log);
    return nullptr;
  }

  // dvpnctl <command> --client unix:<socket> <args...>, from this namespace (the socket is a
  // file: any namespace reaches it).
  RunResult Ctl(const Client& c, const std::vector<std::string>& args,
          std::chrono::milliseconds timeout = 30s) {
    std::vector<std::string> argv = {DVPNCTL_BIN, args.at(0), "--client", "unix:" + c.socket};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    return RunFor(argv, timeout, dir_.File(c.tag + "-dvpnctl.log"));
  }

  // `dvpnctl connect --full-tunnel` and a check that the status says so. False (recorded)
  // otherwise.
  bool Connect(const Client& c) {
    const RunResult r = Ctl(c, {"connect", "--full-tunnel", "--wait", "60"}, 75s);
    if (r.code != 0) {
      ADD_FAILURE() << c.tag << ": dvpnctl connect: " << r.code << "\n"
                    << r.output << "\nclient log:\n"
                    << Tail(c.log) << "\nexit log:\n"
                    << Tail(dir_.File("seller.log"));
      return false;
    }
    const std::string status = Ctl(c, {"status"}).output;
    EXPECT_EQ(Field(status, "state"), "connected") << status;
    EXPECT_EQ(Field(status, "mode"), "full-tunnel") << status;
    return Field(status, "state") == "connected";
  }

  // Polls dvpnctl status until `label` reads `value` (true) or 30 s pass.
  bool WaitForField(const Client& c, const std::string& label, const std::string& value,
                    std::string* last = nullptr) {
    std::string status;
    const bool ok = testing::PollUntil(
        [&] {
          status = Ctl(c, {"status"}).output;
          return Field(status, label) == value;
        },
        30s, 200ms);
    if (last) *last = status;
    return ok;
  }

  // The client's numbers from ClientControl.GetStatus (gRPC over the Unix socket).
  v1::ClientStatus Status(const Client& c) {
    auto stub = v1::ClientControl::NewStub(
        grpc::CreateChannel("unix:" + c.socket, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    v1::ClientStatus out;
    const grpc::Status st = stub->GetStatus(&ctx, v1::GetClientStatusRequest(), &out);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  // curl in `ns` of http://<host>:8080/<file> to a file; its exit code and the bytes it wrote.
  struct Fetched {
    int code = -1;
    std::string body;
    std::string log;
  };
  Fetched Fetch(const Netns& ns, const std::string& host, const std::string& file,
                std::chrono::seconds max_time = 60s) {
    const std::string url = "http://" + std::string(host.find(':') != std::string::npos
                                                        ? "[" + host + "]"
                                                        : host) +
                            ":" + std::to_string(kHttpPort) + "/" + file;
    const std::string out = dir_.File("fetched-" + file);
    std::remove(out.c_str());
    const RunResult r = RunFor(In(ns, {FindTool("curl"), "-sS", "-g", "--max-time",
                                 std::to_string(max_time.count()), "-o", out, url}),
                         max_time + 15s, dir_.File("curl.log"));
    return {r.code, ReadFile(out), r.output};
  }

  // Fetches blob.bin over both families from `ns` and checks every byte.
  void ExpectFetchBothFamilies(const Netns& ns) {
    const std::string expected = ReadFile(dir_.File("www/blob.bin"));
    for (const char* host : {Topology::kInternetV4, Topology::kInternetV6}) {
      const Fetched f = Fetch(ns, host, "blob.bin");
      EXPECT_EQ(f.code, 0) << host << ": " << f.log;
      EXPECT_EQ(f.body.size(), expected.size()) << host;
      EXPECT_TRUE(f.body == expected) << host << ": the bytes differ";
    }
  }

  // A UDP echo round trip over both families from `ns`.
  void ExpectUdpEchoBothFamilies(const Netns& ns) {
    for (const char* host : {Topology::kInternetV4, Topology::kInternetV6}) {
      bool echoed = false;
      ns.RunInside([&] {
        echoed = testing::UdpEchoRoundTrip(host, kEchoPort, std::string("echo via ") + host);
      });
      EXPECT_TRUE(echoed) << "no UDP echo from " << host;
    }
  }

  RunResult Ping(const Netns& ns, std::vector<std::string> args) {
    std::vector<std::string> argv = {FindTool("ping")};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunFor(In(ns, argv), 30s, dir_.File("ping.log"));
  }

  // SIGTERM to the exit and its final settlement (bounded); true when it exited 0.
  bool StopExitNode() {
    if (!seller_ || !seller_->Signal(SIGTERM)) return false;
    auto st = seller_->WaitFor(40s);
    EXPECT_TRUE(st) << "dvpn-node did not stop:\n" << Tail(dir_.File("seller.log"));
    return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
  }

  static uint64_t MeteredMicro(uint64_t bytes) { return bytes * kPricePerMbMicro / 1'000'000; }

  // Declared before the servers and processes that use them, so destroyed after them.
  std::optional<Topology> topo_;
  std::unique_ptr<testing::TcpForwarder> ledger_relay_;
  std::vector<Subprocess> http_servers_;
  std::unique_ptr<testing::UdpEchoServer> udp_echo_;
  std::unique_ptr<testing::DnsResponder> dns_;
  std::vector<std::unique_ptr<Client>> clients_;
  Amount provider_balance_before_;
};

TEST_F(FullTunnelTest, CurlUdpDnsPingBothFamiliesAndTheSellerIsPaid) {
  Client* c = StartAndConnect();
  ASSERT_TRUE(c);
  std::string status;
  EXPECT_TRUE(WaitForField(*c, "transport", "udp", &status)) << status;
  const std::string inner = Field(status, "inner addresses");
  EXPECT_TRUE(inner.starts_with("10.231.")) << status;
  EXPECT_NE(inner.find(", fd"), std::string::npos) << status;

  ExpectFetchBothFamilies(topo_->user);
  ExpectUdpEchoBothFamilies(topo_->user);
  std::expected<std::vector<std::string>, std::string> a, aaaa;
  topo_->user.RunInside([&] {
    a = testing::DnsQuery(Topology::kInternetV4, kDnsPort, kDnsName, testing::kDnsTypeA);
    aaaa = testing::DnsQuery(Topology::kInternetV6, kDnsPort, kDnsName, testing::kDnsTypeAAAA);
  });
  ASSERT_TRUE(a) << a.error();
  EXPECT_EQ(*a, std::vector<std::string>{Topology::kInternetV4});
  ASSERT_TRUE(aaaa) << aaaa.error();
  EXPECT_EQ(*aaaa, std::vector<std::string>{Topology::kInternetV6});
  RunResult ping = Ping(topo_->user, {"-c", "3", "-i", "0.3", "-W", "3", Topology::kInternetV4});
  EXPECT_EQ(ping.code, 0) << ping.output;
  ping = Ping(topo_->user, {"-6", "-c", "3", "-i", "0.3", "-W", "3", Topology::kInternetV6});
  EXPECT_EQ(ping.code, 0) << ping.output;
  status = Ctl(*c, {"status"}).output;
  EXPECT_EQ(Field(status, "mode"), "full-tunnel") << status;
  EXPECT_EQ(Field(status, "transport"), "udp") << status;

  // The exit's data plane carried the downloads with its offloads: the TUN device handed over
  // super-packets (split before sealing), and the datagrams left in batches (fewer send calls
  // than datagrams). The sampler refreshes the status every second.
  std::string api;
  testing::PollUntil(
      [&] {
        api = ExitApiStatus();
        return JsonNumber(api, "tun_super_reads") > 0;
      },
      5s, 250ms);
  EXPECT_NE(api.find("\"offloads\":\"tun,gso,gro,mmsg\""), std::string::npos) << api;
  EXPECT_GT(JsonNumber(api, "tun_super_reads"), 0u) << api;
  EXPECT_LT(JsonNumber(api, "udp_send_calls"), JsonNumber(api, "udp_sent")) << api;
  // Packets that waited at the paid session's forwarding limit are counted apart from drops
  // (docs/full-tunnel.md "Held at the limit").
  EXPECT_NE(api.find("\"packets_held\":"), std::string::npos) << api;

  // Everything went through the exit: both files (and more) are metered.
  const v1::ClientStatus numbers = Status(*c);
  const uint64_t metered = numbers.bytes_sent() + numbers.bytes_received();
  EXPECT_GE(numbers.bytes_received(), 2 * kFileBytes);
  const RunResult off = Ctl(*c, {"disconnect"});
  EXPECT_EQ(off.code, 0) << off.output;
  EXPECT_EQ(Field(Ctl(*c, {"status"}).output, "state"), "disconnected");
  // Disconnect took away what connect added: the device (with its addresses and the four
  // half-space routes) and the host routes that kept the exit and the ledger outside.
  auto routes = topo_->user.Shell("ip -4 route show; ip -6 route show; ip link show");
  ASSERT_TRUE(routes) << routes.error();
  EXPECT_EQ(routes->find("dvpn0"), std::string::npos) << *routes;
  EXPECT_EQ(routes->find("0.0.0.0/1"), std::string::npos) << *routes;
  EXPECT_EQ(routes->find("proto static"), std::string::npos) << *routes;
  EXPECT_NE(routes->find("default via"), std::string::npos) << *routes;  // untouched

  // The seller settles at shutdown; it is paid price x metered bytes, short of at most one
  // invoice (the last interval may be unpaid when the client left).
  ASSERT_TRUE(StopExitNode()) << Tail(dir_.File("seller.log"));
  const uint64_t paid = ProviderBalance().CheckedSub(provider_balance_before_).value_or(Amount()).micro();
  EXPECT_LE(paid, MeteredMicro(metered) + 1) << "metered " << metered;
  EXPECT_GE(paid + MeteredMicro(kIntervalBytes) + 1, MeteredMicro(metered))
      << "metered " << metered;
  EXPECT_GT(paid, 0u);
}

// The exit crashes (SIGKILL: its TUN device goes with the process, its NAT table stays) and
// comes back: the client reconnects, gets a packet session again, keeps its device and routes,
// and traffic flows as before; the restarted exit replaced its NAT table whole.
TEST_F(FullTunnelTest, AfterAnExitCrashAndRestartTheClientReconnectsAndTrafficFlows) {
  const std::string config = WriteExitConfig();
  ASSERT_TRUE(StartExitNode(config));
  Client* c = StartClient(topo_->user, "client", dir_.File("client.json"));
  ASSERT_TRUE(c);
  ASSERT_TRUE(Connect(*c));
  ExpectFetchBothFamilies(topo_->user);

  ASSERT_TRUE(seller_->Signal(SIGKILL));
  ASSERT_TRUE(seller_->WaitFor(10s));
  EXPECT_TRUE(WaitForField(*c, "state", "connecting") || WaitForField(*c, "state", "reconnecting"));
  ASSERT_TRUE(StartExitNode(config));
  std::string status;
  ASSERT_TRUE(WaitForField(*c, "transport", "udp", &status)) << status << Tail(c->log);
  EXPECT_EQ(Field(status, "state"), "connected") << status;
  ExpectFetchBothFamilies(topo_->user);
  ExpectUdpEchoBothFamilies(topo_->user);
  auto tables = topo_->provider.Shell("nft list tables");
  ASSERT_TRUE(tables) << tables.error();
  size_t count = 0;
  for (size_t at = tables->find("dvpn_exit"); at != std::string::npos;
       at = tables->find("dvpn_exit", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 1u) << *tables;
}

TEST_F(FullTunnelTest, PolicyRefusesProviderOwnPrivateMetadataAndPort25) {
  AcceptCounter provider_v4(topo_->provider, "0.0.0.0", kForbiddenPort);
  AcceptCounter provider_v6(topo_->provider, "::", kForbiddenPort);
  AcceptCounter metadata(topo_->internet, kMetadataV4, 80);
  AcceptCounter smtp_v4(topo_->internet, kPort25V4, 25);
  AcceptCounter smtp_v6(topo_->internet, kPort25V6, 25);
  AcceptCounter open_v4(topo_->internet, kPort25V4, 26);
  AcceptCounter open_v6(topo_->internet, kPort25V6, 26);
  for (auto* l : {&provider_v4, &provider_v6, &metadata, &smtp_v4, &smtp_v6, &open_v4, &open_v6}) {
    ASSERT_TRUE(l->listening());
  }
  Client* c = StartAndConnect();
  ASSERT_TRUE(c);

  struct Target {
    std::string ip;
    int port;
  };
  const std::vector<Target> refused = {
      {kProviderOtherV4, kForbiddenPort}, {Topology::kProviderV6, kForbiddenPort},
      {kExitTunV4, kForbiddenPort},       {kProviderOtherV4, kGossipPort},
      {kMetadataV4, 80},                  {kPort25V4, 25},
      {kPort25V6, 25}};
  topo_->user.RunInside([&] {
    // The address is open on port 26: what refuses port 25 is the port, not the address.
    EXPECT_TRUE(TcpConnects(kPort25V4, 26, 10'000ms));
    EXPECT_TRUE(TcpConnects(kPort25V6, 26, 10'000ms));
    for (const auto& t : refused) {
      EXPECT_FALSE(TcpConnects(t.ip, t.port, 3000ms)) << t.ip << " port " << t.port;
    }
  });
  EXPECT_TRUE(testing::PollUntil([&] { return open_v4.accepted() + open_v6.accepted() == 2; },
                                 5000ms));
  std::this_thread::sleep_for(300ms);  // a late SYN would still be counted
  EXPECT_EQ(provider_v4.accepted() + provider_v6.accepted(), 0);
  EXPECT_EQ(metadata.accepted(), 0);
  EXPECT_EQ(smtp_v4.accepted() + smtp_v6.accepted(), 0);
  // A ping is refused too where no all-ports rule allows it.
  const RunResult ping = Ping(topo_->user, {"-c", "1", "-W", "2", kMetadataV4});
  EXPECT_NE(ping.code, 0) << ping.output;
}

TEST_F(FullTunnelTest, TcpFallbackCarriesTrafficWhenUdpIsDropped) {
  const std::string port = std::to_string(kTunnelPort);
  NftTable drop(topo_->user, "dvpntest",
                "nft add chain inet dvpntest out '{ type filter hook output priority 0; "
                "policy accept; }' && nft add rule inet dvpntest out ip daddr " +
                    std::string(Topology::kProviderV4) + " udp dport " + port +
                    " drop && nft add rule inet dvpntest out ip6 daddr " +
                    Topology::kProviderV6 + " udp dport " + port + " drop");
  ASSERT_TRUE(drop.created()) << drop.error();
  Client* c = StartAndConnect();
  ASSERT_TRUE(c);
  std::string status;
  EXPECT_TRUE(WaitForField(*c, "transport", "tcp", &status)) << status;
  ExpectFetchBothFamilies(topo_->user);
  ExpectUdpEchoBothFamilies(topo_->user);
  EXPECT_EQ(Field(Ctl(*c, {"status"}).output, "transport"), "tcp");
}

TEST_F(FullTunnelTest, ForcedTcpTransportCarriesTrafficWithoutAnyDrop) {
  ASSERT_TRUE(StartExitNode(WriteExitConfig()));
  Client* c = StartClient(topo_->user, "client", dir_.File("client.json"),
                          {"--full-tunnel-transport", "tcp"});
  ASSERT_TRUE(c);
  ASSERT_TRUE(Connect(*c));
  std::string status;
  EXPECT_TRUE(WaitForField(*c, "transport", "tcp", &status)) << status;
  ExpectFetchBothFamilies(topo_->user);
  ExpectUdpEchoBothFamilies(topo_->user);
  // Forced: it stays on TCP although UDP would work.
  std::this_thread::sleep_for(4s);
  EXPECT_EQ(Field(Ctl(*c, {"status"}).output, "transport"), "tcp");
}

// Offloads forced off at both ends (the plain fallback: one packet per system call, no vnet
// header): the same traffic flows, paid as before, and the exit's counters show one call per
// datagram and no super-packet.
TEST_F(FullTunnelTest, WithOffloadsOffTrafficFlowsOnePacketPerCall) {
  ASSERT_TRUE(StartExitNode(WriteExitConfig("packet_offloads = \"off\"\n")));
  Client* c = StartClient(topo_->user, "client", dir_.File("client.json"),
                          {"--packet-offloads", "off"});
  ASSERT_TRUE(c);
  ASSERT_TRUE(Connect(*c));
  std::string status;
  EXPECT_TRUE(WaitForField(*c, "transport", "udp", &status)) << status;
  ExpectFetchBothFamilies(topo_->user);
  ExpectUdpEchoBothFamilies(topo_->user);
  std::string api;
  testing::PollUntil(
      [&] {
        api = ExitApiStatus();
        return JsonNumber(api, "udp_sent") > 1000;
      },
      5s, 250ms);
  EXPECT_NE(api.find("\"offloads\":\"off\""), std::string::npos) << api;
  EXPECT_EQ(JsonNumber(api, "tun_super_reads"), 0u) << api;
  EXPECT_GT(JsonNumber(api, "udp_sent"), 1000u) << api;
  EXPECT_EQ(JsonNumber(api, "udp_send_calls"), JsonNumber(api, "udp_sent")) << api;
  EXPECT_EQ(JsonNumber(api, "tun_writes"), JsonNumber(api, "tun_written")) << api;
  EXPECT_EQ(Field(Ctl(*c, {"status"}).output, "state"), "connected");
}

TEST_F(FullTunnelTest, LargeDfPacketsGetTooBigAndTcpStillMoves) {
  Client* c = StartAndConnect();
  ASSERT_TRUE(c);
  auto too_big = [](const std::string& output) {
    return output.find("message too long") != std::string::npos ||
           output.find("Frag needed") != std::string::npos ||
           output.find("Packet too big") != std::string::npos ||
           output.find("mtu=" + std::to_string(kInnerMtu)) != std::string::npos;
  };
  // 1472 + 28 = 1500 bytes with DF: more than the tunnel's 1420.
  RunResult ping = Ping(topo_->user, {"-M", "do", "-s", "1472", "-c", "1", "-W", "3",
                                Topology::kInternetV4});
  EXPECT_NE(ping.code, 0) << ping.output;
  EXPECT_TRUE(too_big(ping.output)) << ping.output;
  ping = Ping(topo_->user, {"-6", "-M", "do", "-s", "1452", "-c", "1", "-W", "3",
                            Topology::kInternetV6});
  EXPECT_NE(ping.code, 0) << ping.output;
  EXPECT_TRUE(too_big(ping.output)) << ping.output;
  // Exactly the inner MTU passes.
  ping = Ping(topo_->user, {"-M", "do", "-s", std::to_string(kInnerMtu - 28), "-c", "2", "-W",
                            "3", Topology::kInternetV4});
  EXPECT_EQ(ping.code, 0) << ping.output;
  ExpectFetchBothFamilies(topo_->user);
}

TEST_F(FullTunnelTest, TwoClientsGetDistinctInnerAddressesAndCannotReachEachOther) {
  auto added = topo_->AddSecondUser();
  ASSERT_TRUE(added) << added.error();
  // A second funded account.
  const PrivateKey second = PrivateKey::Generate();
  auto d = client_->Deposit(ledger::MakeDeposit(
      operator_, ledger_id_, Address::FromPublicKey(second.public_key()), Micro(10'000'000), 2));
  ASSERT_TRUE(d) << d.error().message;
  auto saved = payments::SaveKeystore(dir_.File("client2.json"), second, kPassphrase,
                                      payments::KdfCost::MinimumForTests());
  ASSERT_TRUE(saved) << saved.error().message;

  ASSERT_TRUE(StartExitNode(WriteExitConfig()));
  Client* one = StartClient(topo_->user, "client", dir_.File("client.json"));
  ASSERT_TRUE(one);
  // The fixture opened the first client's channel; the second opens its own.
  Client* two =
      StartClient(*topo_->user2, "client2", dir_.File("client2.json"), {"--open-deposit", "2"});
  ASSERT_TRUE(two);
  ASSERT_TRUE(Connect(*one));
  ASSERT_TRUE(Connect(*two));
  auto inner = [&](const Client& c) {
    const std::string text = Field(Ctl(c, {"status"}).output, "inner addresses");
    const size_t comma = text.find(", ");
    return comma == std::string::npos
               ? std::pair<std::string, std::string>{}
               : std::pair<std::string, std::string>{text.substr(0, comma),
                                                     text.substr(comma + 2)};
  };
  const auto [one_v4, one_v6] = inner(*one);
  const auto [two_v4, two_v6] = inner(*two);
  ASSERT_FALSE(one_v4.empty() || one_v6.empty() || two_v4.empty() || two_v6.empty());
  EXPECT_NE(one_v4, two_v4);
  EXPECT_NE(one_v6, two_v6);

  ExpectFetchBothFamilies(topo_->user);
  ExpectFetchBothFamilies(*topo_->user2);

  AcceptCounter at_two_v4(*topo_->user2, "0.0.0.0", kForbiddenPort);
  AcceptCounter at_two_v6(*topo_->user2, "::", kForbiddenPort);
  AcceptCounter at_one_v4(topo_->user, "0.0.0.0", kForbiddenPort);
  ASSERT_TRUE(at_two_v4.listening() && at_two_v6.listening() && at_one_v4.listening());
  topo_->user.RunInside([&] {
    EXPECT_FALSE(TcpConnects(two_v4, kForbiddenPort, 3000ms));
    EXPECT_FALSE(TcpConnects(two_v6, kForbiddenPort, 3000ms));
  });
  topo_->user2->RunInside([&] { EXPECT_FALSE(TcpConnects(one_v4, kForbiddenPort, 3000ms)); });
  EXPECT_NE(Ping(topo_->user, {"-c", "1", "-W", "2", two_v4}).code, 0);
  EXPECT_NE(Ping(topo_->user, {"-6", "-c", "1", "-W", "2", two_v6}).code, 0);
  EXPECT_NE(Ping(*topo_->user2, {"-c", "1", "-W", "2", one_v4}).code, 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(at_two_v4.accepted() + at_two_v6.accepted() + at_one_v4.accepted(), 0);
}

// The client's daily cap stands for a client that stops paying: at 0.01 per MB a cap of 0.02
// pays 2 MB. The exit serves at most one credit window (1 MB here) unpaid, then pauses the
// session and ends it after the grace; a 12 MB download cannot finish.
TEST_F(FullTunnelTest, AClientThatStopsPayingIsCutOff) {
  constexpr uint64_t kCapMicro = 20'000;
  constexpr uint64_t kWindowBytes = 1'000'000;
  ASSERT_TRUE(StartExitNode(WriteExitConfig(
      "", "credit_window_bytes = " + std::to_string(kWindowBytes) + "\npayment_grace_ms = 2000\n")));
  Client* c = StartClient(topo_->user, "client", dir_.File("client.json"),
                          {"--daily-cap", "0.02"});
  ASSERT_TRUE(c);
  ASSERT_TRUE(Connect(*c));
  const Fetched f = Fetch(topo_->user, Topology::kInternetV4, "big.bin", 30s);
  EXPECT_LT(f.body.size(), kBigFileBytes) << "the whole file came without payment";
  const uint64_t paid_bytes = kCapMicro * 1'000'000 / kPricePerMbMicro;
  // What arrived is at most what was paid, one credit window and one invoice in flight.
  EXPECT_LE(f.body.size(), paid_bytes + kWindowBytes + kIntervalBytes) << f.log;
  const v1::ClientStatus numbers = Status(*c);
  EXPECT_LE(numbers.spent_today_micro(), kCapMicro);

  // The seller, settled, got at most the cap.
  ASSERT_TRUE(StopExitNode()) << Tail(dir_.File("seller.log"));
  const uint64_t paid = ProviderBalance().CheckedSub(provider_balance_before_).value_or(Amount()).micro();
  EXPECT_LE(paid, kCapMicro);
}

TEST_F(FullTunnelTest, FloodsLeaveTheExitAnswering) {
  constexpr uint64_t kRssGrowthBoundKb = 64 * 1024;
  constexpr uint64_t kRssBoundKb = 512 * 1024;
  Client* c = StartAndConnect();
  ASSERT_TRUE(c);
  ExpectUdpEchoBothFamilies(topo_->user);
  const uint64_t rss_before = RssKb(seller_->pid());
  ASSERT_GT(rss_before, 0u);
  // The client's inner IPv4 address: malformed packets from it pass the client and reach the
  // exit's parser.
  const std::string inner_text = Status(*c).inner_ipv4();
  std::array<uint8_t, 4> inner{};
  ASSERT_EQ(::inet_pton(AF_INET, inner_text.substr(0, inner_text.find('/')).c_str(), inner.data()),
            1)
      << inner_text;

  topo_->user.RunInside([&] {
    // Malformed packets into the tunnel (a raw socket: the kernel fills in only the IPv4
    // header's checksum and length): UDP with a wrong checksum, TCP with a header length beyond
    // the packet, fragments, an unknown IP option length.
    Fd raw(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
    ASSERT_TRUE(raw.valid()) << std::strerror(errno);
    auto to = testing::SocketAddress::Parse(Topology::kInternetV4, 7);
    ASSERT_TRUE(to);
    std::array<uint8_t, 4> dst{};
    ASSERT_EQ(::inet_pton(AF_INET, Topology::kInternetV4, dst.data()), 1);
    std::mt19937 junk_rng(7);
    for (int i = 0; i < 4000; ++i) {
      std::array<uint8_t, 64> p{};
      p[0] = 0x45;
      p[8] = 64;
      std::memcpy(&p[12], inner.data(), 4);
      std::memcpy(&p[16], dst.data(), 4);
      switch (i % 4) {
        case 0:  // UDP, checksum wrong
          p[9] = 17;
          p[21] = 7, p[23] = 7, p[25] = 44, p[26] = 0xde, p[27] = 0xad;
          break;
        case 1:  // TCP whose data offset runs past the packet
          p[9] = 6;
          p[32] = 0xf0;
          break;
        case 2:  // a fragment (more fragments, offset 0)
          p[9] = 17;
          p[6] = 0x20;
          break;
        default:  // random bytes after the header
          p[9] = static_cast<uint8_t>(junk_rng());
          for (size_t k = 20; k < p.size(); ++k) p[k] = static_cast<uint8_t>(junk_rng());
      }
      (void)::sendto(raw.get(), p.data(), p.size(), MSG_DONTWAIT, to->get(), to->length);
      // Paced so that the client's device queue (500 packets) takes them all.
      if (i % 50 == 49) std::this_thread::sleep_for(2ms);
    }
    // New UDP flows through the tunnel, one per destination port (the exit's flow table and
    // its new-flow bucket take them).
    auto flows = testing::SocketAddress::Parse(Topology::kInternetV4, 0);
    Fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(flows && udp.valid());
    for (int i = 0; i < kFloodFlows; ++i) {
      auto to = testing::SocketAddress::Parse(Topology::kInternetV4, kFloodFirstPort + i);
      (void)::sendto(udp.get(), "flood", 5, 0, to->get(), to->length);
    }
    // Junk straight at the exit's UDP port (outside the tunnel: the endpoint's host route).
    std::mt19937 rng(std::random_device{}());
    auto exit_udp = testing::SocketAddress::Parse(Topology::kProviderV4, kTunnelPort);
    Fd junk(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(junk.valid());
    std::vector<uint8_t> bytes(1400);
    for (int i = 0; i < 6000; ++i) {
      const size_t n = 1 + rng() % bytes.size();
      for (size_t k = 0; k < n; ++k) bytes[k] = static_cast<uint8_t>(rng());
      (void)::sendto(junk.get(), bytes.data(), n, MSG_DONTWAIT, exit_udp->get(),
                     exit_udp->length);
    }
  });
  // The new-flow bucket refills (200/s): a moment later the client's next flow is admitted.
  std::this_thread::sleep_for(3s);
  ASSERT_FALSE(seller_->WaitFor(0ms)) << "dvpn-node died:\n" << Tail(dir_.File("seller.log"));
  ExpectFetchBothFamilies(topo_->user);
  ExpectUdpEchoBothFamilies(topo_->user);
  const uint64_t rss_after = RssKb(seller_->pid());
  EXPECT_LT(rss_after, rss_before + kRssGrowthBoundKb) << rss_before << " kB before";
  EXPECT_LT(rss_after, kRssBoundKb);
  // The node's status counts the malformed packets it dropped (the dashboard's /api/status,
  // NodeControl's full_tunnel; the sampler refreshes it every second)...
  auto ports = ReadPorts(dir_.File("seller.ports"));
  ASSERT_TRUE(ports);
  uint64_t malformed = 0;
  std::string api;
  testing::PollUntil(
      [&] {
        auto got = topo_->provider.Exec(
            {"curl", "-s", "http://127.0.0.1:" + std::to_string(ports->http) + "/api/status"});
        api = got.value_or(got.error());
        const size_t at = api.find("\"malformed\":");
        malformed = at == std::string::npos ? 0 : std::stoull(api.substr(at + 12));
        return malformed >= 3000;
      },
      10s, 500ms);
  EXPECT_GE(malformed, 3000u) << api;
  EXPECT_NE(api.find("\"sessions\":1"), std::string::npos) << api;
  auto metrics = topo_->provider.Exec(
      {"curl", "-s", "http://127.0.0.1:" + std::to_string(ports->http) + "/metrics"});
  ASSERT_TRUE(metrics) << metrics.error();
  EXPECT_NE(metrics->find("dvpn_full_tunnel_dropped_total{reason=\"malformed\"}"),
            std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("dvpn_full_tunnel_held_total "), std::string::npos) << *metrics;
  // ... and so does its last summary line, written at its stop.
  ASSERT_TRUE(StopExitNode()) << Tail(dir_.File("seller.log"));
  std::ifstream log(dir_.File("seller.log"));
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  const size_t at = text.rfind(" malformed");
  ASSERT_NE(at, std::string::npos) << Tail(dir_.File("seller.log"));
  const size_t start = text.rfind(' ', at - 1);
  EXPECT_GE(std::stoull(text.substr(start + 1, at - start - 1)), 3000u)
      << text.substr(start, 200);
}

}  // namespace
}  // namespace dvpn::payments_e2e
