#include "provider/exit_assembly.h"

#include <exception>
#include <utility>

#include "cli/cli_util.h"
#include "tunnel/exit_policy.h"

namespace dvpn::node {

namespace session = tunnel::session;

namespace {

// Channel reads still running when the exit stops are waited for this long at most.
constexpr std::chrono::seconds kLedgerCallsWait{10};

// The listen address is the exit's own when it names one host (docs/tunnel.md, "The exit's own
// host"); a wildcard leaves that to the host address watcher.
std::vector<tunnel::IpAddress> OwnAddresses(const session::tcp::endpoint& endpoint) {
  std::vector<tunnel::IpAddress> own;
  if (!endpoint.address().is_unspecified()) {
    auto a = endpoint.address();
    own.push_back(a.is_v4() ? tunnel::IpAddress::V4(a.to_v4().to_bytes())
                            : tunnel::IpAddress::V6(a.to_v6().to_bytes()));
  }
  return own;
}

}  // namespace

ExitAssembly::~ExitAssembly() = default;

Result<std::unique_ptr<ExitAssembly>, ExitAssemblyErrc> ExitAssembly::Build(
    session::asio::io_context& io, const tunnel::X25519KeyPair& tunnel_key, ExitSpec spec) {
  auto a = std::unique_ptr<ExitAssembly>(new ExitAssembly());
  auto endpoint = cli::ResolveHostPort(io, spec.listen);
  if (!endpoint) return Fail(ExitAssemblyErrc::kListenAddress, endpoint.error().message);
  a->endpoint_ = *endpoint;
  auto policy = tunnel::ExitPolicy::FromStrings(spec.policy_rules, OwnAddresses(*endpoint));
  if (!policy) return Fail(ExitAssemblyErrc::kPolicy, policy.error().message);

  if (spec.paid) {
    const PaidExitSpec& paid = *spec.paid;
    payments::PromiseStoreOptions store_options;
    store_options.durability = paid.durability;
    auto store = payments::PromiseStore::Open(paid.promise_db, a->clock_, store_options);
    if (!store) return Fail(ExitAssemblyErrc::kPromiseStore, store.error().message);
    a->store_ = std::move(*store);
    a->gateway_ = paid.terms.gateway;

    session::ExitPaymentConfig pay = paid.terms;
    pay.store = a->store_.get();
    a->payments_ = std::make_shared<session::ExitPayments>(pay);
    spec.options.payments = a->payments_;
  }

  try {
    a->server_ = std::make_shared<session::ExitServer>(io, *endpoint, tunnel_key,
                                                       std::move(*policy), spec.options);
  } catch (const std::exception& e) {
    return Fail(ExitAssemblyErrc::kListen, e.what());
  }
  if (spec.packets) {
    session::ExitPacketsOptions packets = std::move(*spec.packets);
    const auto tcp_listen = a->server_->local_endpoint();
    if (packets.udp_listen.port() == 0) {
      packets.udp_listen = session::udp::endpoint(tcp_listen.address(), tcp_listen.port());
    } else {
      packets.udp_listen = session::udp::endpoint(tcp_listen.address(), packets.udp_listen.port());
    }
    if (auto r = a->server_->EnablePackets(std::move(packets)); !r) {
      return Fail(ExitAssemblyErrc::kPackets, "full-tunnel mode: " + r.error().message);
    }
  }
  if (spec.paid) {
    const session::ExitPaymentConfig& terms = spec.paid->terms;
    a->scheduler_ = std::make_unique<payments::SettlementScheduler>(
        *a->store_, *terms.gateway, *terms.provider_key, terms.ledger, a->clock_,
        spec.paid->settle);
  }
  return a;
}

void ExitAssembly::Start() {
  server_->Start();
  if (scheduler_) scheduler_->Start();
}

void ExitAssembly::Settle(std::chrono::milliseconds settle_timeout, spdlog::logger& log) {
  server_->DropTunnels();
  if (!payments_) return;
  // Channel reads still running would post to the stopped io_context and use the gateway: cut
  // them short (no session needs them now) and wait until their threads are gone.
  gateway_->CancelInFlight();
  payments_->WaitForLedgerCalls(std::chrono::steady_clock::now() + kLedgerCallsWait);
  // Promises still on their way to the disk are committed first, then one final settlement.
  store_->Close();
  log.info("final settlement (deadline {} ms)", settle_timeout.count());
  scheduler_->Shutdown(std::chrono::steady_clock::now() + settle_timeout);
  auto stats = scheduler_->Stats();
  log.info("settlement: {} batch(es) settled, {} failed{}{}", stats.successes, stats.failures,
           stats.last_error.empty() ? "" : "; last error: ", stats.last_error);
}

}  // namespace dvpn::node
