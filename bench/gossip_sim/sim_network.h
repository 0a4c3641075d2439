#pragma once
// A deterministic simulated network for GossipNode (docs/marketplace.md §5): many nodes in one
// process, every frame delivered as bytes after a per-pair latency, lost with a configured
// probability, nodes leaving and joining. Simulated time; one seeded generator for every
// random choice, so a run is reproducible from its seed. Used by bench/gossip_sim and by the
// gossip tests.
//
// Not thread-safe; single-threaded by design.

#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <unordered_map>
#include <vector>

#include "marketplace/gossip_node.h"

namespace dvpn::marketplace::sim {

struct NetworkConfig {
  uint64_t seed = 1;
  uint32_t min_latency_ms = 10;
  uint32_t max_latency_ms = 100;
  double loss = 0.01;             // probability that a frame is lost
  uint64_t start_unix = 1'900'000'000;
};

// Signature checks memoized by digest across all simulated nodes: the same bytes give the same
// answer, and without the memo the nodes would re-verify every offer thousands of times.
class MemoChecker : public SignatureChecker {
 public:
  bool Check(const Offer& offer, const Hash32& digest) override;
  uint64_t verified() const { return verified_; }

 private:
  std::unordered_map<uint64_t, std::vector<std::pair<Hash32, bool>>> memo_;
  uint64_t verified_ = 0;
};

class Network {
 public:
  explicit Network(NetworkConfig config);
  ~Network();

  // Adds a live node (index returned). Its address is 10.a.b.c:7000 from its index; `config`
  // gets network-specific fields (listen port, seed) filled in. Start() is called for it.
  size_t AddNode(GossipConfig config);
  // Takes a node down: its connections close (peers learn it after the latency).
  void KillNode(size_t index);
  bool alive(size_t index) const;
  GossipNode& node(size_t index);
  Endpoint AddressOf(size_t index) const;
  size_t size() const { return nodes_.size(); }

  // Runs events up to `until_ms` (simulated), ticking every live node each round.
  void RunUntil(uint64_t until_ms);
  uint64_t now_ms() const { return now_ms_; }
  uint64_t now_unix() const { return config_.start_unix + now_ms_ / 1000; }
  std::mt19937_64& rng() { return rng_; }
  MemoChecker& checker() { return *checker_; }

  uint64_t frames_delivered() const { return frames_delivered_; }
  uint64_t frames_lost() const { return frames_lost_; }

 private:
  struct Node;
  class Host;
  struct Event {
    uint64_t at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  void Schedule(uint64_t delay_ms, std::function<void()> fn);
  uint32_t Latency(size_t a, size_t b) const;
  void Dial(size_t from, const Endpoint& to);
  void Send(size_t from, PeerId peer, std::vector<uint8_t> payload);
  void Close(size_t from, PeerId peer);
  void ScheduleTick(size_t index, uint64_t delay_ms);

  NetworkConfig config_;
  std::mt19937_64 rng_;
  std::shared_ptr<MemoChecker> checker_;
  std::vector<std::unique_ptr<Node>> nodes_;
  // A connection end: (node, its PeerId) -> the other end.
  struct End {
    size_t node;
    PeerId peer;
  };
  std::unordered_map<PeerId, End> other_end_;
  std::unordered_map<PeerId, size_t> owner_;
  PeerId next_peer_ = 1;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t next_seq_ = 0;
  uint64_t now_ms_ = 0;
  uint64_t frames_delivered_ = 0;
  uint64_t frames_lost_ = 0;
};

}  // namespace dvpn::marketplace::sim
