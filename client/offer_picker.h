#pragma once
// OfferPicker: the client's choice of provider from marketplace offers (docs/marketplace.md §3,
// --offers-from). It asks a node's OfferBook (gRPC) for the offers under the policy, ranks
// them with what this client measured (ProviderStats, optionally kept in a file across
// restarts), and hands the best to the TunnelKeeper; after a failure (no connection, a refused
// handshake, an overcharge) it records the failure and moves to the next, never to an offer
// above the price limit. When the offers run out it asks the node once more before giving up.
//
// Paid offers need a channel to their provider: with a ledger client it uses the client's
// open channel to that provider (the one with most escrow left), or opens one with
// `open_deposit` when set; an offer whose provider has no usable channel is skipped.
//
// Each hop of a path has a picker of its own (client/path.h); with `path` set it skips the
// providers that another hop of the path holds and records its choice as hop `hop`'s.
//
// Thread-safety: all methods lock one mutex; Next() blocks on gRPC calls (bounded deadlines).

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "client/errc.h"
#include "client/path.h"
#include "ledger/rpc/ledger_client.h"
#include "marketplace/provider_stats.h"
#include "tunnel/session/client.h"

namespace dvpn::tunnel_client {

class OfferPicker : public tunnel::session::ProviderPicker {
 public:
  struct Options {
    std::string offers_from;          // HOST:PORT of a node's OfferBook service
    marketplace::ChoicePolicy policy;
    const payments::PrivateKey* client = nullptr;  // the paying account (channels)
    std::shared_ptr<ledger::rpc::LedgerClient> ledger;  // null: free offers only
    Amount open_deposit;              // zero: never open a channel
    uint64_t channel_lifetime_s = 7 * 24 * 3600;
    std::chrono::milliseconds call_timeout{5000};
    // The path this picker chooses for (null: a picker on its own) and its hop there.
    std::shared_ptr<PathProviders> path;
    uint32_t hop = 0;
  };

  OfferPicker(Options options, std::unique_ptr<marketplace::ProviderStats> stats);
  ~OfferPicker() override;

  Result<tunnel::session::ProviderTarget, tunnel::session::ConnectErrc> Next() override;
  void Failed(const tunnel::session::ProviderTarget& target,
              tunnel::session::ProviderFailure failure, const std::string& why) override;
  void Connected(const tunnel::session::ProviderTarget& target,
                 std::chrono::milliseconds handshake) override;

  // The best throughput seen on a tunnel to `target` (megabits per second over a busy second);
  // recorded in the stats.
  void MeasuredThroughput(const tunnel::session::ProviderTarget& target, double mbps);

  // The offer behind the current target (null before the first Next).
  std::shared_ptr<const marketplace::Offer> current_offer() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dvpn::tunnel_client
