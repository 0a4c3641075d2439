#pragma once
// The offer's life in a running dvpn-node, written once for both modes (the seller's node and
// the marketplace node with --price-per-mb): publishing through the gossip transport with a
// deadline, and the main thread's loop that re-publishes the offer on time until SIGINT or
// SIGTERM (docs/node-cli.md, "Refresh").
//
// Threading: RefreshUntilSignal runs on the main thread, the one that receives the signals;
// the publish function may be called from any thread (the transport posts to its own).

#include <signal.h>

#include <chrono>
#include <functional>
#include <optional>

#include "marketplace/gossip_transport.h"
#include "provider/advertiser.h"

namespace dvpn::node {

// Publishes through `transport` (which must outlive the function) and waits 5 s at most for
// the gossip node's verdict. Error: the node's refusal, or that it did not answer in time.
OfferAdvertiser::PublishFn GossipPublisher(marketplace::GossipTransport& transport);

struct RefreshSchedule {
  std::chrono::seconds every{0};  // after a refresh that worked (and before the first)
  std::chrono::seconds retry{0};  // after one that failed
};

// Waits for SIGINT or SIGTERM in `signals` (blocked in every thread) and returns it. Meanwhile,
// with a schedule, calls `refresh` `every` after the start and after each refresh that
// returned true, `retry` after one that returned false. Without a schedule it only waits.
int RefreshUntilSignal(const sigset_t& signals, std::optional<RefreshSchedule> schedule,
                       const std::function<bool()>& refresh);

// Milliseconds since the Unix epoch: the issue time of the versions signed now.
uint64_t WallMs();

}  // namespace dvpn::node
