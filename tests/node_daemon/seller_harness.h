#pragma once
// Shared fixture of the node_daemon tests: the payments e2e fixture (a real dvpn-ledger, a funded
// client with a channel to the provider) plus a seller, dvpn-node --config, with the provider's
// keystore, and helpers for its ports, its NodeControl service and its HTTP endpoints.

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <grpcpp/grpcpp.h>

#include "dvpn/v1/marketplace.grpc.pb.h"
#include "dvpn/v1/node.grpc.pb.h"
#include "payments/keystore.h"
#include "tests/payments_e2e/harness.h"

namespace dvpn::payments_e2e {

constexpr const char* kPassphrase = "seller-test-passphrase";

// The node's ports, from its --ports-file.
struct NodePorts {
  int gossip = 0, tunnel = 0, control = 0, http = 0;
};

inline std::optional<NodePorts> ReadPorts(const std::string& path) {
  std::ifstream in(path);
  NodePorts p;
  std::string line;
  int seen = 0;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    int v = std::atoi(line.c_str() + eq + 1);
    const std::string k = line.substr(0, eq);
    int* slot = k == "gossip" ? &p.gossip : k == "tunnel" ? &p.tunnel
              : k == "control" ? &p.control : k == "http" ? &p.http : nullptr;
    if (slot && v > 0) {
      *slot = v;
      ++seen;
    }
  }
  if (seen != 4) return std::nullopt;
  return p;
}

// GET `path` from 127.0.0.1:`port`; the body ("" on any failure).
inline std::string HttpGet(int port, const std::string& path) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  std::string response;
  if (WriteAll(fd, reinterpret_cast<const uint8_t*>(request.data()), request.size())) {
    char buf[16384];
    for (int i = 0; i < 10'000; ++i) {  // bounded: a dashboard answer is small
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      response.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

class SellerNodeTest : public PaymentsE2E {
 protected:
  void SetUp() override {
    PaymentsE2E::SetUp();
    if (HasFatalFailure()) return;
    ::setenv("DVPN_PASSPHRASE", kPassphrase, 1);
    auto saved = payments::SaveKeystore(dir_.File("provider.json"), provider_, kPassphrase,
                                        payments::KdfCost::MinimumForTests());
    ASSERT_TRUE(saved) << saved.error().message;
  }

  // A seller's file: the fixture's ledger and provider key, everything on 127.0.0.1 port 0, no
  // automatic settlement (the test settles with SettleNow and at shutdown).
  std::string WriteConfig(const std::string& extra = "") {
    const std::string path = dir_.File("node.toml");
    std::ofstream out(path);
    out << "[node]\nledger = \"" << ledger_target_ << "\"\nkeystore = \""
        << dir_.File("provider.json") << "\"\ndata_dir = \"" << dir_.File("seller")
        << "\"\nlog_level = \"debug\"\n"
        << "[gossip]\nlisten = \"127.0.0.1:0\"\nround_ms = 200\n"
        << "[offer]\nprice_per_mb = \"0.01\"\nregion = \"eu-test\"\nmax_sessions = 4\n"
        << "[tunnel]\nlisten = \"127.0.0.1:0\"\nstatic_key_file = \"" << dir_.File("exit.key")
        << "\"\nallow = [\"127.0.0.1/32\"]\n"
        << "[payments]\ninvoice_interval_bytes = " << kIntervalBytes << "\n"
        << "[settlement]\nthreshold = \"1000\"\nmax_age_s = 3600\nshutdown_grace_ms = 500\n"
        << "[control]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n"
        << extra;
    return path;
  }

  // The seller's usage file (<data_dir>/usage) as if `month` ("YYYY-MM", UTC) had metered
  // `bytes` of data.
  void WriteUsage(const std::string& month, uint64_t bytes) {
    std::filesystem::create_directories(dir_.File("seller"));
    std::ofstream(dir_.File("seller/usage")) << month << " " << bytes << "\n";
  }

  std::optional<NodePorts> StartSeller(const std::string& config) {
    const std::string ports = dir_.File("seller.ports");
    std::remove(ports.c_str());
    auto p = Subprocess::Spawn({DVPN_NODE_BIN, "--config", config, "--ports-file", ports},
                               dir_.File("seller.log"));
    if (!p) {
      ADD_FAILURE() << p.error();
      return std::nullopt;
    }
    seller_.emplace(*std::move(p));
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto got = ReadPorts(ports)) return got;
      if (auto st = seller_->WaitFor(50ms)) {
        ADD_FAILURE() << "dvpn-node exited:\n" << Tail(dir_.File("seller.log"));
        return std::nullopt;
      }
    }
    ADD_FAILURE() << "dvpn-node did not start:\n" << Tail(dir_.File("seller.log"));
    return std::nullopt;
  }

  std::unique_ptr<v1::NodeControl::Stub> Control(int port) {
    return v1::NodeControl::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                        grpc::InsecureChannelCredentials()));
  }

  template <class Req, class Resp, class Call>
  static Resp Ask(Call call, const Req& req = Req()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    Resp resp;
    grpc::Status st = call(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  v1::GetEarningsResponse Earnings(v1::NodeControl::Stub& stub) {
    return Ask<v1::GetEarningsRequest, v1::GetEarningsResponse>(
        [&](auto* c, const auto& r, auto* o) { return stub.GetEarnings(c, r, o); });
  }

  std::optional<Subprocess> seller_;
};

}  // namespace dvpn::payments_e2e
