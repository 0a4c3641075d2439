#include "bench/gossip_sim/sim_network.h"

#include <cstring>
#include <unordered_set>

namespace dvpn::marketplace::sim {

bool MemoChecker::Check(const Offer& offer, const Hash32& digest) {
  uint64_t k = 0;
  std::memcpy(&k, digest.data(), sizeof k);
  auto& bucket = memo_[k];
  for (const auto& [d, ok] : bucket)
    if (d == digest) return ok;
  ++verified_;
  const bool ok = VerifyOfferSignature(offer, digest);
  bucket.emplace_back(digest, ok);
  return ok;
}

class Network::Host : public GossipHost {
 public:
  Host(Network& net, size_t index) : net_(net), index_(index) {}
  void Send(PeerId peer, std::vector<uint8_t> payload) override {
    net_.Send(index_, peer, std::move(payload));
  }
  void Dial(const Endpoint& to) override { net_.Dial(index_, to); }
  void Close(PeerId peer) override { net_.Close(index_, peer); }
  uint64_t NowMs() override { return net_.now_ms(); }
  uint64_t NowUnix() override { return net_.now_unix(); }

 private:
  Network& net_;
  size_t index_;
};

struct Network::Node {
  std::unique_ptr<Host> host;
  std::unique_ptr<GossipNode> gossip;
  bool alive = true;
  uint64_t round_ms = 1000;
  std::unordered_set<PeerId> ends;  // connection ends this node owns
};

Network::Network(NetworkConfig config)
    : config_(config), rng_(config.seed), checker_(std::make_shared<MemoChecker>()) {}

Network::~Network() = default;

Endpoint Network::AddressOf(size_t i) const {
  return Endpoint{"10." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) +
                      "." + std::to_string(i & 255),
                  7000};
}

static std::optional<size_t> IndexOf(const Endpoint& e) {
  unsigned a, b, c, d;
  if (std::sscanf(e.host.c_str(), "%u.%u.%u.%u", &a, &b, &c, &d) != 4 || a != 10 || e.port != 7000)
    return std::nullopt;
  return (static_cast<size_t>(b) << 16) | (c << 8) | d;
}

size_t Network::AddNode(GossipConfig config) {
  const size_t index = nodes_.size();
  config.listen_port = 7000;
  config.seed = rng_();
  for (auto& byte : config.node_id) byte = static_cast<uint8_t>(rng_());
  auto node = std::make_unique<Node>();
  node->host = std::make_unique<Host>(*this, index);
  node->round_ms = static_cast<uint64_t>(config.round.count());
  node->gossip = std::make_unique<GossipNode>(std::move(config), *node->host, checker_);
  nodes_.push_back(std::move(node));
  nodes_[index]->gossip->Start();
  ScheduleTick(index, rng_() % nodes_[index]->round_ms);
  return index;
}

bool Network::alive(size_t index) const { return index < nodes_.size() && nodes_[index]->alive; }

GossipNode& Network::node(size_t index) { return *nodes_[index]->gossip; }

void Network::Schedule(uint64_t delay_ms, std::function<void()> fn) {
  events_.push(Event{now_ms_ + delay_ms, next_seq_++, std::move(fn)});
}

uint32_t Network::Latency(size_t a, size_t b) const {
  // A fixed latency per unordered pair: one FIFO path each way, as over TCP.
  uint64_t x = (std::min(a, b) * 0x9E3779B97F4A7C15ull) ^ (std::max(a, b) + config_.seed);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  const uint32_t span = config_.max_latency_ms - config_.min_latency_ms + 1;
  return config_.min_latency_ms + static_cast<uint32_t>(x % span);
}

void Network::ScheduleTick(size_t index, uint64_t delay_ms) {
  Schedule(delay_ms, [this, index] {
    if (!nodes_[index]->alive) return;
    nodes_[index]->gossip->Tick();
    ScheduleTick(index, nodes_[index]->round_ms);
  });
}

void Network::Dial(size_t from, const Endpoint& to) {
  auto target = IndexOf(to);
  const uint32_t lat = target && *target < nodes_.size() ? Latency(from, *target) : 50;
  Schedule(lat, [this, from, to, target, lat] {
    if (!nodes_[from]->alive) return;
    if (!target || !alive(*target) || *target == from) {
      Schedule(lat, [this, from, to] {
        if (nodes_[from]->alive) nodes_[from]->gossip->OnDialFailed(to);
      });
      return;
    }
    const PeerId a = next_peer_++, b = next_peer_++;
    other_end_[a] = End{*target, b};
    other_end_[b] = End{from, a};
    nodes_[from]->ends.insert(a);
    nodes_[*target]->ends.insert(b);
    // The dialler learns of the connection before any frame the acceptor sends reaches it.
    Schedule(lat, [this, from, to, a] {
      if (nodes_[from]->alive && other_end_.contains(a))
        nodes_[from]->gossip->OnConnected(a, true, to);
    });
    Endpoint remote = AddressOf(from);
    remote.port = 0;  // an ephemeral port: the node learns the listen port from the Hello
    nodes_[*target]->gossip->OnConnected(b, false, remote);
  });
}

void Network::Send(size_t from, PeerId peer, std::vector<uint8_t> payload) {
  auto it = other_end_.find(peer);
  if (it == other_end_.end()) return;
  const End to = it->second;
  if (std::uniform_real_distribution<double>(0, 1)(rng_) < config_.loss) {
    ++frames_lost_;
    return;
  }
  Schedule(Latency(from, to.node), [this, to, payload = std::move(payload)] {
    if (!nodes_[to.node]->alive || !other_end_.contains(to.peer)) return;
    ++frames_delivered_;
    nodes_[to.node]->gossip->OnFrame(to.peer, payload);
  });
}

void Network::Close(size_t from, PeerId peer) {
  auto it = other_end_.find(peer);
  if (it == other_end_.end()) return;
  const End to = it->second;
  other_end_.erase(it);
  nodes_[from]->ends.erase(peer);
  // Frames already on their way arrive first (same path, earlier sequence), then the close.
  Schedule(Latency(from, to.node), [this, to] {
    if (other_end_.erase(to.peer) == 0) return;
    nodes_[to.node]->ends.erase(to.peer);
    if (nodes_[to.node]->alive) nodes_[to.node]->gossip->OnDisconnected(to.peer);
  });
}

void Network::KillNode(size_t index) {
  if (!alive(index)) return;
  nodes_[index]->alive = false;
  auto ends = nodes_[index]->ends;
  for (PeerId p : ends) Close(index, p);
}

void Network::RunUntil(uint64_t until_ms) {
  while (!events_.empty() && events_.top().at <= until_ms) {
    // priority_queue::top is const: move the callback out before popping.
    Event e = std::move(const_cast<Event&>(events_.top()));
    events_.pop();
    now_ms_ = e.at;
    e.fn();
  }
  now_ms_ = until_ms;
}

}  // namespace dvpn::marketplace::sim
