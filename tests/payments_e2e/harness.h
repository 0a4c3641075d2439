#pragma once
// Shared harness of the paid-tunnel end-to-end tests (docs/payments.md): a real dvpn-ledger, a paid
// dvpn-tunnel-exit and a dvpn-tunnel-client on 127.0.0.1; the test funds the client, opens the
// channel (LedgerClient + ledger/requests.h) and moves bytes through the SOCKS5 front end to a
// loopback echo server. Every socket has timeouts, every wait a deadline; every child is
// stopped by PID (Subprocess kills leftovers).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/amount.h"
#include "common/bytes.h"
#include "ledger/requests.h"
#include "ledger/rpc/ledger_client.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"
#include "tests/support/echo_server.h"
#include "tests/support/net_util.h"
#include "tests/support/subprocess.h"

#ifdef DVPN_NODE_BIN
#include <grpcpp/grpcpp.h>

#include "dvpn/v1/marketplace.grpc.pb.h"
#endif

namespace dvpn::payments_e2e {

using dvpn::testing::ReadExactly;
using dvpn::testing::ReadFile;
using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using dvpn::testing::WriteAll;
using ledger::rpc::LedgerClient;
using payments::Address;
using payments::PrivateKey;
using namespace std::chrono_literals;

constexpr Amount Micro(uint64_t v) { return Amount::FromMicro(v); }
// A child's log, its end.
inline std::string Tail(const std::string& path) { return dvpn::testing::FileTail(path); }

// A blocking connection to 127.0.0.1:`port` with 10 s timeouts, as a raw descriptor (the
// tests close it themselves); -1 on failure.
inline int ConnectLoopback(int port) { return testing::ConnectLoopback(port, 10s).Release(); }

// SOCKS5 CONNECT to 127.0.0.1:`port` through the client at `socks_port`; -1 on failure. With a
// `user`, only RFC 1929 username/password (method 02) is offered, with `password`.
inline int SocksConnect(int socks_port, int port, const std::string& user = "",
                        const std::string& password = "") {
  int fd = ConnectLoopback(socks_port);
  if (fd < 0) return -1;
  const uint8_t method = user.empty() ? 0 : 2;
  uint8_t greet[] = {5, 1, method};
  uint8_t reply[10];
  std::vector<uint8_t> auth = {1, static_cast<uint8_t>(user.size())};
  auth.insert(auth.end(), user.begin(), user.end());
  auth.push_back(static_cast<uint8_t>(password.size()));
  auth.insert(auth.end(), password.begin(), password.end());
  uint8_t req[] = {
      5, 1, 0, 1, 127, 0, 0, 1, static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port & 0xFF)};
  if (!WriteAll(fd, greet, 3) || !ReadExactly(fd, reply, 2) || reply[1] != method ||
      (method == 2 &&
       (!WriteAll(fd, auth.data(), auth.size()) || !ReadExactly(fd, reply, 2) || reply[1] != 0)) ||
      !WriteAll(fd, req, sizeof(req)) || !ReadExactly(fd, reply, 10) || reply[1] != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `n` bytes and reads the echo back, interleaved in chunks. Returns the bytes echoed.
inline size_t EchoThrough(int fd, size_t n) {
  std::vector<uint8_t> out(64 * 1024, 0x5A);
  std::vector<uint8_t> in(64 * 1024);
  size_t done = 0;
  while (done < n) {
    size_t k = std::min(out.size(), n - done);
    if (!WriteAll(fd, out.data(), k) || !ReadExactly(fd, in.data(), k)) break;
    done += k;
  }
  return done;
}

constexpr uint64_t kPricePerMbMicro = 10'000;  // 0.01 credits per MB
constexpr uint64_t kIntervalBytes = 1'000'000;
constexpr uint64_t kDepositMicro = 5'000'000;

class PaymentsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartLedger("127.0.0.1:0"));
    // Fund the client and open the channel to the provider.
    Address client_addr = Address::FromPublicKey(payer_.public_key());
    auto d = client_->Deposit(
        ledger::MakeDeposit(operator_, ledger_id_, client_addr, Micro(10'000'000), 1));
    ASSERT_TRUE(d) << d.error().message;
    auto open = ledger::MakeOpenChannel(payer_, ledger_id_, ProviderAddress(), Micro(kDepositMicro),
                                        1, ServerTime() + 86'400);
    auto c = client_->OpenChannel(open);
    ASSERT_TRUE(c) << c.error().message;
    channel_ = c->id;
    // The exit's static key (created by the exit itself).
    auto pk = Subprocess::Spawn(
        {DVPN_TUNNEL_EXIT_BIN, "--static-key-file", dir_.File("exit.key"), "--print-public-key"},
        dir_.File("pubkey.out"));
    ASSERT_TRUE(pk);
    auto st = pk->WaitFor(10'000ms);
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
    exit_pub_ = ReadFile(dir_.File("pubkey.out")).substr(0, 64);
  }

  Address ProviderAddress() const { return Address::FromPublicKey(provider_.public_key()); }

  // Starts `argv` in `slot` (killing what it held first), logging to `log`, and waits up to
  // `timeout` for the port it writes to `port_file`. Returns that port, or 0 with the failure
  // and the log's end recorded.
  static int Launch(std::optional<Subprocess>& slot, const std::vector<std::string>& argv,
                    const std::string& log, const std::string& port_file,
                    std::chrono::milliseconds timeout = 15'000ms) {
    slot.reset();
    auto p = Subprocess::Spawn(argv, log);
    if (!p) {
      ADD_FAILURE() << p.error();
      return 0;
    }
    slot.emplace(*std::move(p));
    auto port = testing::WaitForPortFile(port_file, timeout, *slot);
    if (!port) {
      ADD_FAILURE() << argv[0] << " did not start:\n" << Tail(log);
      return 0;
    }
    return *port;
  }

  // Starts dvpn-ledger on `listen` with the test's SQLite file (a restart on the same address
  // keeps the ledger id) and (re)connects client_ to it.
  void StartLedger(const std::string& listen) {
    std::string port_file = dir_.File("ledger.port");
    std::remove(port_file.c_str());
    const int port = Launch(
        ledger_,
        {DVPN_LEDGER_BIN, "--db", dir_.File("ledger.db"), "--listen", listen, "--port-file",
         port_file, "--name", "pay-e2e", "--operator-pubkey", ToHex(operator_.public_key().bytes()),
         "--log-level", "warn"},
        dir_.File("ledger.log"), port_file);
    ASSERT_NE(port, 0) << "the ledger did not start on " << listen;
    ledger_target_ = "127.0.0.1:" + std::to_string(port);
    client_ = std::make_unique<LedgerClient>(ledger_target_, 5000ms);
    ASSERT_TRUE(client_->WaitForConnected(5000ms));
    auto info = client_->GetInfo();
    ASSERT_TRUE(info) << info.error().message;
    if (ledger_id_ != payments::LedgerId{}) {
      ASSERT_EQ(info->id.bytes, ledger_id_.bytes) << "the restarted ledger is another ledger";
    }
    ledger_id_ = info->id;
  }

  // The exit's payment flags (it refuses a flag given twice, so tests set them here).
  struct ExitFlags {
    std::string price_per_mb = "0.01";  // kPricePerMbMicro
    uint64_t invoice_interval_bytes = kIntervalBytes;
    std::string settle_threshold = "1000";  // credits: no settlement before shutdown
    uint64_t settle_max_age_s = 3600;
    std::vector<std::string> extra;         // any other flags
  };

  // Starts the paid exit (replacing a previous one: killed if still running), logging to
  // `log_name`; returns its port (0 on failure).
  int StartExit(const ExitFlags& f, const std::string& log_name = "exit.log") {
    std::string port_file = dir_.File("exit.port");
    std::remove(port_file.c_str());
    std::vector<std::string> argv = {DVPN_TUNNEL_EXIT_BIN,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--port-file",
                                     port_file,
                                     "--static-key-file",
                                     dir_.File("exit.key"),
                                     "--allow",
                                     "127.0.0.1/32",
                                     "--price-per-mb",
                                     f.price_per_mb,
                                     "--invoice-interval-bytes",
                                     std::to_string(f.invoice_interval_bytes),
                                     "--ledger",
                                     ledger_target_,
                                     "--identity-key-file",
                                     testing::WriteSecretFile(dir_.File("provider.key"),
                                                              ToHex(provider_secret_)),
                                     "--promise-db",
                                     dir_.File("promises.db"),
                                     "--settle-threshold",
                                     f.settle_threshold,
                                     "--settle-max-age-s",
                                     std::to_string(f.settle_max_age_s),
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), f.extra.begin(), f.extra.end());
    return Launch(exit_, argv, dir_.File(log_name), port_file);
  }
  int StartExit(std::vector<std::string> extra = {}) {
    return StartExit(ExitFlags{.extra = std::move(extra)});
  }

  // Starts the client; returns its SOCKS port (0 when it did not come up).
  int StartClient(int exit_port, std::vector<std::string> extra = {}, bool wait = true) {
    std::string port_file = dir_.File("socks.port");
    std::remove(port_file.c_str());
    std::vector<std::string> argv = {DVPN_TUNNEL_CLIENT_BIN,
                                     "--provider",
                                     "127.0.0.1:" + std::to_string(exit_port),
                                     "--provider-key",
                                     exit_pub_,
                                     "--socks",
                                     "127.0.0.1:0",
                                     "--socks-port-file",
                                     port_file,
                                     "--identity-key-file",
                                     testing::WriteSecretFile(dir_.File("payer.key"),
                                                              ToHex(payer_secret_)),
                                     "--channel",
                                     ToHex(channel_.bytes),
                                     "--ledger-id",
                                     ToHex(ledger_id_.bytes),
                                     "--payee",
                                     ProviderAddress().ToString(),
                                     "--max-reconnects",
                                     "0",
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = Subprocess::Spawn(argv, dir_.File("client.log"));
    if (!p) return 0;
    tunnel_client_.emplace(*std::move(p));
    if (!wait) return 0;
    auto port = testing::WaitForPortFile(port_file, 15'000ms, *tunnel_client_);
    return port ? *port : 0;
  }

#ifdef DVPN_NODE_BIN
  // Starts a dvpn-node on 127.0.0.1 (gossip and gRPC on port 0, fast rounds), logging to
  // <name>.log; returns its gRPC port (0 on failure) and records its gossip port.
  int StartNode(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> argv = {
        DVPN_NODE_BIN, "--ledger-id", ToHex(ledger_id_.bytes), "--gossip-listen", "127.0.0.1:0",
        "--grpc-listen", "127.0.0.1:0", "--port-file", dir_.File(name + ".port"),
        "--grpc-port-file", dir_.File(name + ".grpc"), "--round-ms", "200",
        "--anti-entropy-ms", "1000", "--log-level", "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = Subprocess::Spawn(argv, dir_.File(name + ".log"));
    if (!p) {
      ADD_FAILURE() << p.error();
      return 0;
    }
    nodes_.push_back(*std::move(p));
    auto gossip = testing::WaitForPortFile(dir_.File(name + ".port"), 15'000ms, nodes_.back());
    auto grpc = testing::WaitForPortFile(dir_.File(name + ".grpc"), 15'000ms, nodes_.back());
    if (!gossip || !grpc) {
      ADD_FAILURE() << name << " did not start:\n" << Tail(dir_.File(name + ".log"));
      return 0;
    }
    gossip_ports_[name] = *gossip;
    return *grpc;
  }

  // dvpn-node flags that advertise a provider's offer (region eu-test, 500 Mbit/s).
  std::vector<std::string> Advertise(const ByteArray<32>& secret, const std::string& tunnel_key,
                                     int endpoint_port, const std::string& price) {
    const std::string key_file = testing::WriteSecretFile(
        dir_.File("identity-" + ToHex(secret).substr(0, 16) + ".key"), ToHex(secret));
    return {"--identity-key-file", key_file,
            "--tunnel-key",       tunnel_key,
            "--endpoint",         "127.0.0.1:" + std::to_string(endpoint_port),
            "--price-per-mb",     price,
            "--region",           "eu-test",
            "--capacity-mbps",    "500"};
  }

  // `flags` plus --bootstrap to the node started as `node`.
  std::vector<std::string> BootstrapTo(const std::string& node, std::vector<std::string> flags) {
    flags.push_back("--bootstrap");
    flags.push_back("127.0.0.1:" + std::to_string(gossip_ports_.at(node)));
    return flags;
  }

  // Waits (bounded) until the node with gRPC port `grpc_port` lists `count` offers.
  static bool WaitForOffers(int grpc_port, int count) {
    auto stub = v1::OfferBook::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials()));
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 2s);
      v1::ListOffersRequest req;
      v1::ListOffersResponse resp;
      if (stub->ListOffers(&ctx, req, &resp).ok() && resp.offers_size() == count) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  // What StartExitWithHonestOffer started: the fixture's paid exit and the offer book of the
  // client's node.
  struct HonestMarket {
    int exit_port = 0;
    int client_grpc = 0;  // gRPC port of the node "client-node"
  };

  // Starts the fixture's paid exit, a dvpn-node "client-node" (the offer book a client asks)
  // and a node "honest" advertising that exit at 0.01/MB, bootstrapped to the client's node.
  // client_grpc is 0 (and the failure recorded) when something did not start.
  HonestMarket StartExitWithHonestOffer() {
    HonestMarket m;
    m.exit_port = StartExit();
    if (m.exit_port == 0) return m;
    const int client_grpc = StartNode("client-node", {});
    if (client_grpc == 0) return m;
    if (StartNode("honest", BootstrapTo("client-node", Advertise(provider_secret_, exit_pub_,
                                                                 m.exit_port, "0.01"))) != 0) {
      m.client_grpc = client_grpc;
    }
    return m;
  }

  // Starts a client that chooses its provider from the offers of the node with gRPC port
  // `offers_grpc` (0.1/MB at most), with its measurements in `stats_file` and `extra` flags;
  // returns its SOCKS port (0, with the failure recorded, when it did not come up).
  int StartOffersClient(int offers_grpc, const std::string& stats_file,
                        std::vector<std::string> extra) {
    const std::string port_file = dir_.File("socks.port");
    std::remove(port_file.c_str());
    std::vector<std::string> argv = {
        DVPN_TUNNEL_CLIENT_BIN, "--offers-from", "127.0.0.1:" + std::to_string(offers_grpc),
        "--max-price-per-mb", "0.1", "--ledger", ledger_target_, "--provider-stats", stats_file,
        "--identity-key-file",
        testing::WriteSecretFile(dir_.File("payer.key"), ToHex(payer_secret_)), "--socks",
        "127.0.0.1:0", "--socks-port-file", port_file, "--log-level", "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Launch(tunnel_client_, argv, dir_.File("client.log"), port_file, 30'000ms);
  }

  std::vector<Subprocess> nodes_;
  std::map<std::string, int> gossip_ports_;
#endif

  uint64_t ServerTime() {
    auto info = client_->GetInfo();
    EXPECT_TRUE(info);
    return info ? info->server_time_unix : 0;
  }

  Amount ProviderBalance() {
    auto a = client_->GetAccount(ProviderAddress());
    return a ? a->balance : Amount();
  }

  TempDir dir_;
  PrivateKey operator_ = PrivateKey::Generate();
  ByteArray<32> provider_secret_ = RandomSecret();
  ByteArray<32> payer_secret_ = RandomSecret();
  PrivateKey provider_ = *PrivateKey::FromBytes(provider_secret_);
  PrivateKey payer_ = *PrivateKey::FromBytes(payer_secret_);
  std::optional<Subprocess> ledger_;
  std::optional<Subprocess> exit_;
  std::optional<Subprocess> tunnel_client_;
  std::unique_ptr<LedgerClient> client_;
  std::string ledger_target_;
  payments::LedgerId ledger_id_;
  payments::ChannelId channel_;
  std::string exit_pub_;
  testing::EchoServer echo_{10s, 16};

  static ByteArray<32> RandomSecret() {
    std::random_device rd;
    for (;;) {  // almost every 32-byte string is a valid key
      ByteArray<32> b{};
      for (auto& x : b) x = static_cast<uint8_t>(rd());
      if (PrivateKey::FromBytes(b)) return b;
    }
  }
};

}  // namespace dvpn::payments_e2e
