#pragma once
// Seller: the selling half of dvpn-node (docs/node.md §1). It runs the tunnel exit
// (ExitServer with the exit policy) on an io thread of its own, with paid sessions
// (ExitPayments), the promise store and the settlement scheduler; it counts the calendar
// month's metered bytes against the data cap (kept in <data_dir>/usage) and records earnings
// over time for the dashboard.
//
// Thread-safety: every public method may be called from any thread (reads of the exit's state
// are posted to its io thread and waited for, bounded). Ownership: the Seller owns the exit,
// the store and the scheduler; the provider key, the gateway and the clock are borrowed and
// must outlive it.

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/amount.h"
#include "common/clock.h"
#include "payments/keys.h"
#include "settlement/ledger_gateway.h"
#include "payments/metering.h"
#include "settlement/promise_store.h"
#include "settlement/settlement.h"
#include "provider/config.h"
#include "tunnel/handshake.h"
#include "tunnel/session/exit_server.h"

namespace dvpn::node {

struct EarningsPoint {
  uint64_t t_unix_ms = 0;
  Amount settled;
  Amount unsettled;
  uint64_t bytes_metered = 0;
};

// Full-tunnel mode's counts (the exit's ExitPackets).
struct FullTunnelTotals {
  size_t sessions = 0;
  size_t flows = 0;
  tunnel::session::ExitPackets::Counters counters;
  tunnel::session::ExitPackets::IoCounters io;
};

struct SellerTotals {
  std::optional<FullTunnelTotals> full_tunnel;  // only when the node serves the mode
  size_t sessions_open = 0;
  uint64_t bytes_metered = 0;        // since start
  uint64_t month_bytes_metered = 0;  // this calendar month (UTC), across restarts
  std::optional<std::string> refusal;  // why new sessions are refused, if they are
};

class Seller {
 public:
  // Called (on the sampler thread) when the data cap starts or stops refusing new sessions:
  // the node retires or re-publishes its offer.
  using CapListener = std::function<void(bool over_cap)>;

  // Opens the promise store, binds the tunnel's port, starts the exit, the scheduler and the
  // sampler. The error names the part that failed (e.g. "tunnel.listen 0.0.0.0:7443: Address
  // already in use"): kIo (the promise store), kBadConfig (tunnel.listen, the exit policy),
  // kListen (the tunnel's port).
  static Result<std::unique_ptr<Seller>, Errc> Start(
      const NodeConfig& config, const payments::PrivateKey& provider_key,
      const tunnel::X25519KeyPair& tunnel_key, const payments::LedgerId& ledger,
      payments::LedgerGateway& gateway, CapListener on_cap);
  ~Seller();  // Shutdown with no waits if not done yet
  Seller(const Seller&) = delete;
  Seller& operator=(const Seller&) = delete;

  uint16_t tunnel_port() const { return tunnel_port_; }
  // Adds ports of the node's services bound after the exit started (configured as port 0) to
  // those its tunnel never reaches (docs/tunnel.md, "The exit's own host"). Waits for the io
  // thread (bounded); false when it did not answer.
  bool ProtectPorts(const std::vector<uint16_t>& ports);

  SellerTotals Totals();
  std::vector<tunnel::session::ExitServer::TunnelInfo> Sessions();
  // Sessions that start from now on are offered `price`; open ones keep theirs.
  void SetPrice(const payments::Price& price);
  payments::Price price() const;

  payments::StoreResult<payments::Earnings> Earnings();
  // Channels with their settlement state, most unsettled first, at most `limit`.
  payments::StoreResult<std::vector<payments::StoredChannel>> Channels(size_t limit);
  std::vector<EarningsPoint> History() const;
  payments::SchedulerStats SettlementStats() const;
  // Asks the scheduler for a pass now and waits up to `timeout` for it to finish. True when a
  // pass ended in time (successful or not: see SettlementStats).
  bool SettleNow(std::chrono::milliseconds timeout);

  // The graceful stop of docs/node.md §5: refuse new tunnels, give open ones `grace` to end
  // (then CLOSE kShutdown), commit every accepted promise, one final settlement bounded by
  // `settle_timeout`. Idempotent.
  void Shutdown(std::chrono::milliseconds grace, std::chrono::milliseconds settle_timeout);

 private:
  struct State;
  explicit Seller(std::unique_ptr<State> state);
  void SamplerLoop();
  void Sample();
  // Runs `fn` on the io thread and waits for it (bounded); false when it did not run in time.
  bool OnIoThread(const std::function<void()>& fn);

  std::unique_ptr<State> state_;
  uint16_t tunnel_port_ = 0;
  std::thread io_thread_;
  std::thread sampler_thread_;
};

}  // namespace dvpn::node
