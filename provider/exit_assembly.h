#pragma once
// ExitAssembly: a provider's tunnel exit put together once for dvpn-node's Seller and for
// dvpn-tunnel-exit: the exit policy, the ExitServer and, for paid sessions, the payment wiring
// (ExitPayments over the promise store, the ledger gateway and the provider key), the
// SettlementScheduler, and the end of an orderly shutdown, which commits every accepted
// promise and makes one final settlement attempt (docs/payments.md §6).
//
// Threading: Build and the accessors on any thread; the ExitServer lives on the io_context it
// is given and must only be touched there while that io_context runs. Settle() runs after the
// io_context has stopped. Ownership: the assembly owns the server, the payments, the store and
// the scheduler; the io_context, the tunnel key, the provider key and the gateway are borrowed
// and must outlive it.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "common/clock.h"
#include "common/result.h"
#include "payments/keys.h"
#include "payments/metering.h"
#include "settlement/ledger_gateway.h"
#include "settlement/promise_store.h"
#include "settlement/settlement.h"
#include "tunnel/handshake.h"
#include "tunnel/session/exit_server.h"
#include "tunnel/session/paid_exit.h"

namespace dvpn::node {

// Paid sessions: the terms the exit offers and where their promises go.
struct PaidExitSpec {
  tunnel::session::ExitPaymentConfig terms;  // price, intervals, keys, gateway (Build sets store)
  std::string promise_db;                    // SQLite file of the promise store
  payments::Durability durability = payments::Durability::kProcessCrash;
  payments::SettlementPolicy settle;
};

struct ExitSpec {
  std::string listen;                            // HOST:PORT (port 0: any free port)
  std::vector<std::string> policy_rules;         // cli::PolicyRules(deny, allow)
  tunnel::session::ExitServer::Options options;  // limits; `payments` is set by Build
  std::optional<PaidExitSpec> paid;              // free sessions without
  // Full-tunnel mode (docs/full-tunnel.md); without it PACKET_SETUP is answered "not served".
  // Its udp_listen port 0 means the tunnel's TCP port number, on the same address.
  std::optional<tunnel::session::ExitPacketsOptions> packets;
};

// Which part failed; the message says why (the caller names its flag or config key).
enum class ExitAssemblyErrc {
  kListenAddress,  // `listen` does not resolve
  kPolicy,         // a policy rule is invalid
  kPromiseStore,   // the promise store cannot be opened
  kListen,         // the port cannot be bound
  kPackets,        // full-tunnel mode cannot start (TUN device, nftables, UDP port, privileges)
};

class ExitAssembly {
 public:
  // Resolves the address, builds the policy (the listen address, when not a wildcard, is the
  // exit's own), opens the promise store and binds the port. Nothing runs until Start().
  [[nodiscard]] static Result<std::unique_ptr<ExitAssembly>, ExitAssemblyErrc> Build(
      tunnel::session::asio::io_context& io, const tunnel::X25519KeyPair& tunnel_key,
      ExitSpec spec);
  ~ExitAssembly();
  ExitAssembly(const ExitAssembly&) = delete;
  ExitAssembly& operator=(const ExitAssembly&) = delete;

  // Starts accepting tunnels and, for paid sessions, the settlement scheduler.
  void Start();

  // The end of the shutdown, once the io_context has stopped (no tunnel runs any more): drops
  // the tunnels, cuts short the channel reads still running and waits for them (at most 10 s),
  // commits every accepted promise and makes one final settlement attempt that ends by
  // `settle_timeout`; logs "final settlement (deadline N ms)" and the settlement totals on
  // `log`. Free sessions: only drops the tunnels.
  void Settle(std::chrono::milliseconds settle_timeout, spdlog::logger& log);

  const std::shared_ptr<tunnel::session::ExitServer>& server() const { return server_; }
  tunnel::session::tcp::endpoint listen_endpoint() const { return endpoint_; }
  // Null for free sessions.
  const std::shared_ptr<tunnel::session::ExitPayments>& payments() const { return payments_; }
  payments::PromiseStore* store() const { return store_.get(); }
  payments::SettlementScheduler* scheduler() const { return scheduler_.get(); }

 private:
  ExitAssembly() = default;

  SystemClock clock_;
  payments::LedgerGateway* gateway_ = nullptr;
  tunnel::session::tcp::endpoint endpoint_;
  std::shared_ptr<tunnel::session::ExitServer> server_;
  std::shared_ptr<tunnel::session::ExitPayments> payments_;
  std::unique_ptr<payments::PromiseStore> store_;
  std::unique_ptr<payments::SettlementScheduler> scheduler_;
};

}  // namespace dvpn::node
