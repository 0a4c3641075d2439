#include "marketplace/gossip_node.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "dvpn/v1/marketplace.pb.h"
#include "marketplace/wire.h"

namespace dvpn::marketplace {
namespace {

// Penalties of docs/marketplace.md §1 (validation table, scores).
constexpr int kPenaltyMalformed = -50;
constexpr int kPenaltyExpired = -10;
constexpr int kPenaltyJustExpired = -1;
constexpr int kPenaltyWrongNetwork = -10;
constexpr int kPenaltyRateLimited = -5;
constexpr int kPenaltyBadSignature = -25;
constexpr int kMaxEarnedScore = 100;
constexpr uint64_t kPeerRequestMinGapMs = 10000;
// What one peer may make us send back per window (digest parts answered, keys pulled): a
// 30-byte digest can ask for a whole book, so answers are budgeted like offers are.
constexpr uint64_t kAnswerWindowMs = 10000;
constexpr uint32_t kDigestPartsPerWindow = 16;
constexpr uint32_t kPullKeysPerWindow = 4096;
// Keys awaited from one peer at a time: what it answers for them skips the rate limit.
constexpr size_t kMaxPulledPerPeer = 4096;
constexpr uint32_t kMaxDigestParts = 16;
constexpr uint64_t kDialBackoffFirstMs = 5000;
constexpr uint64_t kDialBackoffMaxMs = 300000;

// Inbound eviction (docs/marketplace.md §1, "Inbound slots"): how many peers each protection
// keeps out of the candidates.
constexpr size_t kProtectOffers = 8;
constexpr size_t kProtectNetgroups = 4;
constexpr size_t kProtectUptimeDivisor = 2;

std::string EndpointText(const Endpoint& e) { return e.ToString(); }

// Where an inbound connection comes from: its source (IPv4 address, IPv6 /64) and netgroup
// (IPv4 /16, IPv6 /32), as opaque strings; a host that is not an address literal (only the
// simulator or a test would give one) is its own source and netgroup.
struct SourceOf {
  std::string source;
  std::string netgroup;
  bool loopback = false;
};

SourceOf ClassifyHost(const std::string& host) {
  SourceOf out;
  unsigned char b[16];
  if (::inet_pton(AF_INET, host.c_str(), b) == 1) {
    out.source = "4:" + std::string(reinterpret_cast<char*>(b), 4);
    out.netgroup = "4:" + std::string(reinterpret_cast<char*>(b), 2);
    out.loopback = b[0] == 127;
    return out;
  }
  if (::inet_pton(AF_INET6, host.c_str(), b) == 1) {
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static constexpr unsigned char kLoopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                     0, 0, 0, 0, 0, 0, 0, 1};
    if (std::memcmp(b, kMapped, 12) == 0) {
      out.source = "4:" + std::string(reinterpret_cast<char*>(b + 12), 4);
      out.netgroup = "4:" + std::string(reinterpret_cast<char*>(b + 12), 2);
      out.loopback = b[12] == 127;
      return out;
    }
    out.source = "6:" + std::string(reinterpret_cast<char*>(b), 8);
    out.netgroup = "6:" + std::string(reinterpret_cast<char*>(b), 4);
    out.loopback = std::memcmp(b, kLoopback6, 16) == 0;
    return out;
  }
  out.source = out.netgroup = "h:" + host;
  return out;
}

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

bool SignatureChecker::Check(const Offer& offer, const Hash32& digest) {
  return VerifyOfferSignature(offer, digest);
}

const char* OfferVerdictName(OfferVerdict v) {
  switch (v) {
    case OfferVerdict::kAccepted: return "accepted";
    case OfferVerdict::kMalformed: return "malformed";
    case OfferVerdict::kExpired: return "expired";
    case OfferVerdict::kFromTheFuture: return "from the future";
    case OfferVerdict::kWrongNetwork: return "wrong network";
    case OfferVerdict::kNotNewer: return "not newer";
    case OfferVerdict::kRateLimited: return "rate limited";
    case OfferVerdict::kSlotTooBusy: return "slot too busy";
    case OfferVerdict::kBadSignature: return "bad signature";
    case OfferVerdict::kBookFull: return "book full";
  }
  return "?";
}

Errc ErrcOf(OfferVerdict v) {
  switch (v) {
    case OfferVerdict::kExpired:
    case OfferVerdict::kFromTheFuture: return Errc::kExpired;
    case OfferVerdict::kWrongNetwork: return Errc::kWrongNetwork;
    case OfferVerdict::kNotNewer: return Errc::kNotNewer;
    case OfferVerdict::kRateLimited:
    case OfferVerdict::kSlotTooBusy:
    case OfferVerdict::kBookFull: return Errc::kRefused;
    case OfferVerdict::kBadSignature: return Errc::kBadSignature;
    case OfferVerdict::kAccepted:
    case OfferVerdict::kMalformed: break;
  }
  return Errc::kBadField;
}

struct GossipNode::Peer {
  PeerId id = 0;
  bool outbound = false;
  Endpoint remote;  // outbound: what we dialled; inbound: their host and (after Hello) port
  bool hello = false;
  NodeId node_id{};
  uint32_t features = 0;  // its Hello's (kFeatureOfferFormat2, ...)
  uint64_t connected_ms = 0;
  uint64_t last_frame_ms = 0;
  std::string source, netgroup;  // inbound only (ClassifyHost)
  bool loopback = false;
  uint32_t offers_brought = 0;  // new, valid offers we stored from it
  uint64_t last_offer_ms = 0;   // when the last of them arrived
  uint64_t last_sent_ms = 0;
  int score = 0;
  int earned = 0;
  double tokens = 0;
  uint64_t tokens_ms = 0;
  std::unordered_set<OfferKey> pulled;  // keys we pulled from this peer and still await
  uint64_t answer_window_ms = 0;     // start of the current answer budget window
  uint32_t digest_parts_answered = 0;
  uint32_t pull_keys_answered = 0;
  uint64_t their_peer_request_ms = 0;
  bool peers_requested = false;      // we sent PeerRequest and await Peers
  uint64_t our_peer_request_ms = 0;
  std::vector<std::shared_ptr<const Offer>> outbox;  // due this round
};

struct GossipNode::Hot {
  uint64_t seq = 0;
  uint32_t rounds_left = 0;
  std::vector<PeerId> have;  // peers known to hold this version or a newer one
};

struct GossipNode::Address {
  Endpoint endpoint;
  std::string text;
  bool bootstrap = false;
  bool connected = false;
  bool self = false;
  uint64_t next_try_ms = 0;
  uint64_t backoff_ms = kDialBackoffFirstMs;
};

GossipNode::GossipNode(GossipConfig config, GossipHost& host,
                       std::shared_ptr<SignatureChecker> checker)
    : config_(std::move(config)),
      host_(host),
      checker_(checker ? std::move(checker) : std::make_shared<SignatureChecker>()),
      rng_(config_.seed),
      book_(config_.book) {
  // Not drawn from rng_ (that would shift every seeded run): the node id is random per process.
  uint64_t id_bits = 0;
  std::memcpy(&id_bits, config_.node_id.data(), sizeof id_bits);
  netgroup_salt_ = Mix(id_bits ^ Mix(config_.seed ^ 0x6e6574677270ull));
}

GossipNode::~GossipNode() = default;

void GossipNode::SetBookListener(std::function<void(const OfferChange&)> listener) {
  book_.SetListener(std::move(listener));
}

GossipStats GossipNode::stats() const {
  GossipStats s = stats_;
  s.peers = peers_.size();
  s.outbound = OutboundCount();
  s.addresses = addresses_.size();
  return s;
}

GossipNode::Peer* GossipNode::FindPeer(PeerId id) {
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second.get();
}

std::vector<GossipNode::Peer*> GossipNode::ReadyPeers() {
  std::vector<Peer*> out;
  out.reserve(peers_.size());
  for (auto& [id, p] : peers_)
    if (p->hello) out.push_back(p.get());
  // unordered_map order depends on the library; sort so a seed gives one run.
  std::sort(out.begin(), out.end(), [](Peer* a, Peer* b) { return a->id < b->id; });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Connections

void GossipNode::Start() {
  for (const auto& e : config_.bootstrap) LearnAddress(e, true);
  next_anti_entropy_ms_ = host_.NowMs() + config_.anti_entropy.count();
  MaintainPeers();
}

void GossipNode::OnConnected(PeerId id, bool outbound, const Endpoint& remote) {
  const uint64_t now = host_.NowMs();
  auto peer = std::make_unique<Peer>();
  peer->id = id;
  peer->outbound = outbound;
  peer->remote = remote;
  peer->connected_ms = peer->last_frame_ms = peer->last_sent_ms = now;
  peer->tokens = config_.peer_offer_burst;
  peer->tokens_ms = now;
  if (!outbound) {
    SourceOf from = ClassifyHost(remote.host);
    peer->source = std::move(from.source);
    peer->netgroup = std::move(from.netgroup);
    peer->loopback = from.loopback;
  }
  if (outbound) {
    const std::string text = EndpointText(remote);
    dialing_.erase(text);
    for (auto& a : addresses_) {
      if (a.text == text) {
        a.connected = true;
        a.backoff_ms = kDialBackoffFirstMs;
      }
    }
  }
  Peer& p = *peer;
  peers_.emplace(id, std::move(peer));
  SendHello(p);
}

void GossipNode::RefuseFull(Peer& p) {
  SendPeers(p, false);  // full: tell the dialler where else to go, then close
  Drop(p.id, false);
}

bool GossipNode::AdmitInbound(const Peer& newcomer) {
  const uint64_t now = host_.NowMs();
  const auto grace = static_cast<uint64_t>(config_.inbound_grace.count());
  size_t ready = 0;
  std::vector<Peer*> inbound;
  for (auto& [id, q] : peers_) {
    if (!q->hello || q.get() == &newcomer) continue;
    ++ready;
    if (!q->outbound) inbound.push_back(q.get());
  }
  // unordered_map order depends on the library; sort so a seed gives one run.
  std::sort(inbound.begin(), inbound.end(), [](Peer* a, Peer* b) { return a->id < b->id; });
  auto evict = [&](Peer* victim) {
    ++stats_.inbound_evicted;
    Drop(victim->id, false);
  };
  auto younger = [](const Peer* a, const Peer* b) {
    return a->connected_ms != b->connected_ms ? a->connected_ms > b->connected_ms : a->id > b->id;
  };

  if (config_.max_inbound_per_source != 0 && !newcomer.loopback) {
    std::vector<Peer*> same;
    for (Peer* q : inbound)
      if (q->source == newcomer.source) same.push_back(q);
    if (same.size() >= config_.max_inbound_per_source) {
      std::erase_if(same, [&](Peer* q) {
        return now - q->connected_ms < grace || q->offers_brought != 0;
      });
      if (same.empty()) return false;
      evict(*std::min_element(same.begin(), same.end(), younger));
      return true;
    }
  }
  if (ready < config_.max_peers) return true;
  Peer* victim = SelectInboundVictim(std::move(inbound), now);
  if (!victim) return false;
  evict(victim);
  return true;
}

GossipNode::Peer* GossipNode::SelectInboundVictim(std::vector<Peer*> c, uint64_t now) {
  const auto grace = static_cast<uint64_t>(config_.inbound_grace.count());
  auto older = [](const Peer* a, const Peer* b) {
    return a->connected_ms != b->connected_ms ? a->connected_ms < b->connected_ms : a->id < b->id;
  };
  // a. The grace: a newcomer gets its bootstrap exchange.
  std::erase_if(c, [&](Peer* q) { return now - q->connected_ms < grace; });
  // b. Those that most recently brought new, valid offers.
  std::stable_sort(c.begin(), c.end(), [](Peer* a, Peer* b) {
    if ((a->offers_brought != 0) != (b->offers_brought != 0)) return a->offers_brought != 0;
    return a->last_offer_ms > b->last_offer_ms;
  });
  size_t k = 0;
  while (k < c.size() && k < kProtectOffers && c[k]->offers_brought != 0) ++k;
  c.erase(c.begin(), c.begin() + static_cast<ptrdiff_t>(k));
  // c. The longest-connected peer of each of a few netgroups, in an order peers cannot predict.
  std::map<uint64_t, Peer*> by_group;  // salted hash of the netgroup -> its oldest candidate
  for (Peer* q : c) {
    const uint64_t h = Mix(netgroup_salt_ ^ std::hash<std::string>{}(q->netgroup));
    auto [it, fresh] = by_group.emplace(h, q);
    if (!fresh && older(q, it->second)) it->second = q;
  }
  std::vector<Peer*> keep;
  for (const auto& [h, q] : by_group) {
    if (keep.size() == kProtectNetgroups) break;
    keep.push_back(q);
  }
  std::erase_if(c, [&](Peer* q) { return std::find(keep.begin(), keep.end(), q) != keep.end(); });
  // d. Half of the rest by uptime.
  std::sort(c.begin(), c.end(), older);
  c.erase(c.begin(), c.begin() + static_cast<ptrdiff_t>(c.size() / kProtectUptimeDivisor));
  if (c.empty()) return nullptr;
  // The youngest candidate of the netgroup that holds the most of them.
  struct Group {
    size_t count = 0;
    Peer* youngest = nullptr;
  };
  std::map<std::string, Group> groups;
  for (Peer* q : c) {
    Group& g = groups[q->netgroup];
    ++g.count;
    if (!g.youngest || older(g.youngest, q)) g.youngest = q;
  }
  const Group* best = nullptr;
  for (const auto& [name, g] : groups) {
    if (!best || g.count > best->count ||
        (g.count == best->count && older(best->youngest, g.youngest)))
      best = &g;
  }
  return best->youngest;
}

void GossipNode::SendPeers(Peer& p, bool skip_its_own) {
  v1::GossipMessage m;
  auto* list = m.mutable_peers();
  std::vector<size_t> idx(addresses_.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), rng_);
  const std::string theirs = skip_its_own ? EndpointText(p.remote) : std::string();
  for (size_t i : idx) {
    if (list->peers_size() >= static_cast<int>(kMaxPeersPerMessage)) break;
    const auto& a = addresses_[i];
    if (a.self || (skip_its_own && a.text == theirs)) continue;
    auto* e = list->add_peers();
    e->set_host(a.endpoint.host);
    e->set_port(a.endpoint.port);
  }
  Send(p, m);
}

void GossipNode::SendPeerRequest(Peer& p) {
  v1::GossipMessage m;
  m.mutable_peer_request();
  p.peers_requested = true;
  p.our_peer_request_ms = host_.NowMs();
  Send(p, m);
}

size_t GossipNode::OutboundCount() const {
  size_t n = 0;
  for (const auto& [id, p] : peers_) n += p->outbound ? 1 : 0;
  return n;
}

void GossipNode::OnDialFailed(const Endpoint& to) {
  const std::string text = EndpointText(to);
  dialing_.erase(text);
  const uint64_t now = host_.NowMs();
  for (auto& a : addresses_) {
    if (a.text != text) continue;
    a.next_try_ms = now + a.backoff_ms;
    a.backoff_ms = std::min(a.backoff_ms * 2, kDialBackoffMaxMs);
  }
}

void GossipNode::OnDisconnected(PeerId id) { Forget(id); }

bool GossipNode::Forget(PeerId id) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return false;
  if (it->second->outbound) {  // its address may be dialled again, after a growing pause
    const std::string text = EndpointText(it->second->remote);
    const uint64_t now = host_.NowMs();
    for (auto& a : addresses_) {
      if (a.text != text) continue;
      a.connected = false;
      a.next_try_ms = now + a.backoff_ms;
      a.backoff_ms = std::min(a.backoff_ms * 2, kDialBackoffMaxMs);
    }
  }
  peers_.erase(it);
  return true;
}

void GossipNode::Drop(PeerId id, bool protocol_error) {
  if (!Forget(id)) return;
  if (protocol_error) ++stats_.protocol_errors;
  host_.Close(id);
}

bool GossipNode::Penalize(Peer& p, int points) {
  p.score += points;
  if (p.score > config_.ban_score) return true;
  Ban(p);
  return false;
}

void GossipNode::Ban(Peer& p) {
  const uint64_t until = host_.NowMs() + config_.ban_time.count();
  ++stats_.peers_banned;
  if (p.hello) banned_ids_.emplace_back(p.node_id, until);
  // Only an address we dialled is known to be the peer's: an inbound peer's listen port is its
  // own claim, and banning it could shut out an honest node on the same host.
  if (p.outbound) banned_addresses_[EndpointText(p.remote)] = until;
  Drop(p.id, false);
}

bool GossipNode::Banned(const Endpoint& e, const NodeId* id) {
  const uint64_t now = host_.NowMs();
  if (auto it = banned_addresses_.find(EndpointText(e));
      it != banned_addresses_.end() && it->second > now)
    return true;
  if (id) {
    for (const auto& [bid, until] : banned_ids_)
      if (bid == *id && until > now) return true;
  }
  return false;
}

void GossipNode::LearnAddress(const Endpoint& e, bool bootstrap) {
  if (e.port == 0 || e.host.empty() || e.host.size() > kMaxHost) return;
  const std::string text = EndpointText(e);
  for (auto& a : addresses_) {
    if (a.text == text) {
      a.bootstrap = a.bootstrap || bootstrap;
      return;
    }
  }
  Address a{.endpoint = e, .text = text, .bootstrap = bootstrap};
  if (addresses_.size() < config_.max_addresses) {
    addresses_.push_back(std::move(a));
    return;
  }
  // Full: replace a random address that is neither a bootstrap peer nor connected.
  std::vector<size_t> replaceable;
  for (size_t i = 0; i < addresses_.size(); ++i)
    if (!addresses_[i].bootstrap && !addresses_[i].connected) replaceable.push_back(i);
  if (replaceable.empty()) return;
  addresses_[replaceable[rng_() % replaceable.size()]] = std::move(a);
}

void GossipNode::MaintainPeers() {
  size_t outbound = dialing_.size() + OutboundCount();
  if (outbound >= config_.target_outbound) return;
  const uint64_t now = host_.NowMs();
  std::unordered_set<std::string> linked;  // peers that dialled us, by their listen address
  for (const auto& [id, p] : peers_)
    if (!p->outbound && p->hello && p->remote.port != 0) linked.insert(EndpointText(p->remote));
  std::vector<size_t> bootstrap, others;
  for (size_t i = 0; i < addresses_.size(); ++i) {
    const auto& a = addresses_[i];
    if (a.connected || a.self || a.next_try_ms > now || dialing_.contains(a.text)) continue;
    if (linked.contains(a.text)) continue;
    if (Banned(a.endpoint, nullptr)) continue;
    (a.bootstrap ? bootstrap : others).push_back(i);
  }
  std::shuffle(bootstrap.begin(), bootstrap.end(), rng_);
  std::shuffle(others.begin(), others.end(), rng_);
  bootstrap.insert(bootstrap.end(), others.begin(), others.end());
  for (size_t i : bootstrap) {
    if (outbound >= config_.target_outbound) break;
    auto& a = addresses_[i];
    dialing_.insert(a.text);
    ++outbound;
    host_.Dial(a.endpoint);
  }
}

// ---------------------------------------------------------------------------------------------
// Frames

void GossipNode::Send(Peer& p, const v1::GossipMessage& m) {
  auto bytes = Serialize(m);
  ++stats_.frames_sent;
  stats_.bytes_sent += bytes.size();
  p.last_sent_ms = host_.NowMs();
  host_.Send(p.id, std::move(bytes));
}

void GossipNode::SendHello(Peer& p) {
  v1::GossipMessage m;
  auto* h = m.mutable_hello();
  h->set_version(kGossipVersion);
  h->set_node_id(std::string(config_.node_id.begin(), config_.node_id.end()));
  h->set_listen_port(config_.listen_port);
  h->set_network(std::string(config_.network.bytes.begin(), config_.network.bytes.end()));
  h->set_features(config_.features);
  Send(p, m);
}

void GossipNode::OnFrame(PeerId id, ByteSpan payload) {
  Peer* p = FindPeer(id);
  if (!p) return;
  ++stats_.frames_received;
  stats_.bytes_received += payload.size();
  p->last_frame_ms = host_.NowMs();
  v1::GossipMessage m;
  if (payload.empty() || payload.size() > kMaxGossipFrame ||
      !m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    Drop(id, true);
    return;
  }
  if (!p->hello && m.body_case() != v1::GossipMessage::kHello) {
    Drop(id, true);
    return;
  }
  Handle(*p, m);
}

void GossipNode::Handle(Peer& p, const v1::GossipMessage& m) {
  switch (m.body_case()) {
    case v1::GossipMessage::kHello: return HandleHello(p, m);
    case v1::GossipMessage::kOffers: return HandleOffers(p, m);
    case v1::GossipMessage::kDigest: return HandleDigest(p, m);
    case v1::GossipMessage::kPull: return HandlePull(p, m);
    case v1::GossipMessage::kHave: return HandleHave(p, m);
    case v1::GossipMessage::kPeerRequest: {
      const uint64_t now = host_.NowMs();
      if (p.their_peer_request_ms != 0 && now - p.their_peer_request_ms < kPeerRequestMinGapMs) {
        Penalize(p, kPenaltyRateLimited);
        return;
      }
      p.their_peer_request_ms = now;
      SendPeers(p, true);
      return;
    }
    case v1::GossipMessage::kPeers: return HandlePeers(p, m);
    case v1::GossipMessage::kPing: {
      v1::GossipMessage out;
      out.mutable_pong()->set_nonce(m.ping().nonce());
      Send(p, out);
      return;
    }
    case v1::GossipMessage::kPong: return;
    case v1::GossipMessage::BODY_NOT_SET: return;  // a newer peer's message: ignored
  }
}

void GossipNode::HandleHello(Peer& p, const v1::GossipMessage& m) {
  const auto& h = m.hello();
  auto node_id = ToArray<16>(AsBytes(h.node_id()));
  auto network = ToArray<32>(AsBytes(h.network()));
  if (p.hello || h.version() != kGossipVersion || !node_id || !network ||
      *network != config_.network.bytes || h.listen_port() > 65535) {
    Drop(p.id, true);
    return;
  }
  if (*node_id == config_.node_id) {  // we dialled ourselves
    const std::string text = EndpointText(p.remote);
    for (auto& a : addresses_)
      if (a.text == text) a.self = true;
    Drop(p.id, false);
    return;
  }
  if (!p.outbound) p.remote.port = static_cast<uint16_t>(h.listen_port());
  if (Banned(p.remote, &*node_id)) {
    Drop(p.id, false);
    return;
  }
  // One connection per pair of nodes: keep the one dialled by the smaller node id.
  for (auto& [other_id, other] : peers_) {
    if (other.get() == &p || !other->hello || other->node_id != *node_id) continue;
    const NodeId& dialer_new = p.outbound ? config_.node_id : *node_id;
    const NodeId& dialer_old = other->outbound ? config_.node_id : *node_id;
    if (dialer_old <= dialer_new) {
      Drop(p.id, false);
    } else {
      Drop(other_id, false);
      HandleHello(p, m);
    }
    return;
  }
  if (!p.outbound && !AdmitInbound(p)) {
    ++stats_.inbound_refused;
    RefuseFull(p);
    return;
  }
  p.hello = true;
  p.node_id = *node_id;
  p.features = h.features();
  if (!p.outbound && p.remote.port != 0) LearnAddress(p.remote, false);
  if (p.outbound) SendDigest(p);
  if (OutboundCount() < config_.target_outbound) SendPeerRequest(p);
}

void GossipNode::HandlePeers(Peer& p, const v1::GossipMessage& m) {
  if (!p.peers_requested) return;  // unsolicited addresses are not learned
  p.peers_requested = false;
  int n = 0;
  for (const auto& e : m.peers().peers()) {
    if (++n > static_cast<int>(kMaxPeersPerMessage)) break;
    if (e.port() == 0 || e.port() > 65535) continue;
    if (ValidHost(e.host())) LearnAddress(Endpoint{e.host(), static_cast<uint16_t>(e.port())}, false);
  }
  MaintainPeers();
}

// ---------------------------------------------------------------------------------------------
// Offers

OfferVerdict GossipNode::Validate(Peer* from, const Offer& o, bool solicited, Hash32* digest) {
  const uint64_t now_unix = host_.NowUnix();
  switch (CheckTime(o, now_unix)) {
    case TimeCheck::kOk: break;
    case TimeCheck::kExpired:
      if (from) {
        const bool in_flight = now_unix - o.expires_unix < kMaxClockSkewS;
        Penalize(*from, in_flight ? kPenaltyJustExpired : kPenaltyExpired);
      }
      return OfferVerdict::kExpired;
    case TimeCheck::kFromTheFuture:
      if (from) Penalize(*from, kPenaltyExpired);
      return OfferVerdict::kFromTheFuture;
  }
  if (o.ledger != config_.network) {
    if (from) Penalize(*from, kPenaltyWrongNetwork);
    return OfferVerdict::kWrongNetwork;
  }
  const OfferKey key = OfferKeyOf(o);
  const uint64_t held = book_.SeqOf(key);
  if (held >= o.seq) {
    if (from) {
      if (auto it = hot_.find(key); it != hot_.end() && it->second.seq == held) {
        auto& have = it->second.have;
        if (std::find(have.begin(), have.end(), from->id) == have.end()) have.push_back(from->id);
      }
    }
    return OfferVerdict::kNotNewer;
  }
  if (from) {
    if (!solicited) {
      const uint64_t now = host_.NowMs();
      from->tokens = std::min(config_.peer_offer_burst,
                              from->tokens + (now - from->tokens_ms) * config_.peer_offer_rate / 1000.0);
      from->tokens_ms = now;
      if (from->tokens < 1) {
        Penalize(*from, kPenaltyRateLimited);
        return OfferVerdict::kRateLimited;
      }
      from->tokens -= 1;
    }
  }
  {
    const uint64_t now = host_.NowMs();
    auto& times = slot_changes_[key];
    std::erase_if(times, [&](uint64_t t) { return now - t >= static_cast<uint64_t>(config_.slot_refresh_window.count()); });
    if (times.size() >= config_.slot_refresh_burst) return OfferVerdict::kSlotTooBusy;
  }
  *digest = OfferDigest(o);
  if (!checker_->Check(o, *digest)) {
    if (from) Penalize(*from, kPenaltyBadSignature);
    return OfferVerdict::kBadSignature;
  }
  return OfferVerdict::kAccepted;
}

void GossipNode::HandleOffers(Peer& p, const v1::GossipMessage& m) {
  const auto& offers = m.offers().offers();
  if (offers.size() > static_cast<int>(kMaxOffersPerMessage)) {
    Drop(p.id, true);
    return;
  }
  const PeerId id = p.id;
  for (const auto& po : offers) {
    Peer* from = FindPeer(id);
    if (!from) return;  // banned by an earlier offer of this message
    auto offer = FromProto(po);
    if (!offer) {
      ++stats_.verdicts[static_cast<size_t>(OfferVerdict::kMalformed)];
      Penalize(*from, kPenaltyMalformed);
      continue;
    }
    Hash32 digest{};
    // Only an offer we pulled from this very peer skips the rate limit (and is not pushed on:
    // anti-entropy carries it); anything else is unsolicited, whatever the peer claims.
    const bool solicited = m.offers().answer() && from->pulled.erase(OfferKeyOf(*offer)) > 0;
    OfferVerdict v = Validate(from, *offer, solicited, &digest);
    if (v == OfferVerdict::kAccepted) {
      from = FindPeer(id);
      // What anti-entropy brings is not pushed on: the peers' own exchanges carry it.
      v = Accept(from, std::make_shared<const Offer>(std::move(*offer)), !solicited);
    }
    ++stats_.verdicts[static_cast<size_t>(v)];
  }
}

OfferVerdict GossipNode::Accept(Peer* from, std::shared_ptr<const Offer> offer, bool spread) {
  const OfferKey key = OfferKeyOf(*offer);
  const auto result = book_.Insert(offer);
  if (result == OfferBook::InsertResult::kFull) return OfferVerdict::kBookFull;
  if (result == OfferBook::InsertResult::kStale) return OfferVerdict::kNotNewer;
  slot_changes_[key].push_back(host_.NowMs());
  if (from) {  // what protects an inbound peer from eviction
    if (from->offers_brought < UINT32_MAX) ++from->offers_brought;
    from->last_offer_ms = host_.NowMs();
  }
  if (from && from->earned < kMaxEarnedScore) {
    ++from->earned;
    ++from->score;
  }
  if (!spread) {
    hot_.erase(key);
    return OfferVerdict::kAccepted;
  }
  Hot& hot = hot_[key];
  hot.seq = offer->seq;
  hot.rounds_left = config_.hot_rounds;
  hot.have.clear();
  if (from) hot.have.push_back(from->id);
  // Eager push: at once, to `fanout` random peers not known to have it.
  auto targets = ReadyPeers();
  std::erase_if(targets, [&](Peer* q) {
    return !Reads(*q, *offer) ||
           std::find(hot.have.begin(), hot.have.end(), q->id) != hot.have.end();
  });
  std::shuffle(targets.begin(), targets.end(), rng_);
  if (targets.size() > config_.fanout) targets.resize(config_.fanout);
  for (Peer* q : targets) {
    hot.have.push_back(q->id);
    SendOffers(*q, {offer}, false);
  }
  return OfferVerdict::kAccepted;
}

Result<void, Errc> GossipNode::Publish(const Offer& offer) {
  if (auto fields = CheckFields(offer); !fields) return fields;
  Hash32 digest{};
  const OfferVerdict v = Validate(nullptr, offer, false, &digest);
  if (v != OfferVerdict::kAccepted) return Fail(ErrcOf(v), OfferVerdictName(v));
  const OfferVerdict a = Accept(nullptr, std::make_shared<const Offer>(offer), true);
  if (a != OfferVerdict::kAccepted) return Fail(ErrcOf(a), OfferVerdictName(a));
  return {};
}

bool GossipNode::Reads(const Peer& p, const Offer& offer) {
  return offer.format < 2 || (p.features & kFeatureOfferFormat2) != 0;
}

void GossipNode::SendOffers(Peer& p, const std::vector<std::shared_ptr<const Offer>>& all,
                            bool answer) {
  // The last gate: a peer that does not read format 2 would fail its signature and penalize us.
  std::vector<std::shared_ptr<const Offer>> offers;
  offers.reserve(all.size());
  for (const auto& o : all)
    if (Reads(p, *o)) offers.push_back(o);
  for (size_t i = 0; i < offers.size(); i += kMaxOffersPerMessage) {
    v1::GossipMessage m;
    auto* list = m.mutable_offers();
    list->set_answer(answer);
    for (size_t j = i; j < std::min(offers.size(), i + kMaxOffersPerMessage); ++j)
      ToProto(*offers[j], list->add_offers());
    stats_.offers_sent += list->offers_size();
    Send(p, m);
  }
}

// ---------------------------------------------------------------------------------------------
// Anti-entropy

void GossipNode::SendDigest(Peer& p) {
  auto entries = book_.Digest();
  // An offer it would not be sent is not listed either: it would pull it again and again.
  if ((p.features & kFeatureOfferFormat2) == 0) {
    std::erase_if(entries, [&](const DigestEntry& e) {
      auto o = book_.Find(e.key);
      return o && !Reads(p, *o);
    });
  }
  const size_t parts = std::max<size_t>(1, (entries.size() + kMaxDigestEntries - 1) / kMaxDigestEntries);
  for (size_t part = 0; part < parts; ++part) {
    const size_t begin = part * kMaxDigestEntries;
    const size_t end = std::min(entries.size(), begin + kMaxDigestEntries);
    v1::GossipMessage m;
    auto* d = m.mutable_digest();
    d->set_part(static_cast<uint32_t>(part));
    d->set_parts(static_cast<uint32_t>(parts));
    d->set_range_first(part == 0 ? 0 : entries[begin].key);
    d->set_range_last(part + 1 == parts ? UINT64_MAX : entries[end].key - 1);
    d->set_entries(PackDigest(std::span(entries).subspan(begin, end - begin)));
    Send(p, m);
  }
}

void GossipNode::HandleDigest(Peer& p, const v1::GossipMessage& m) {
  const auto& d = m.digest();
  auto entries = UnpackDigest(d.entries());
  bool ok = entries && d.parts() >= 1 && d.parts() <= kMaxDigestParts && d.part() < d.parts() &&
            d.range_first() <= d.range_last();
  for (size_t i = 0; ok && entries && i < entries->size(); ++i) {
    const auto& e = (*entries)[i];
    ok = e.key >= d.range_first() && e.key <= d.range_last() &&
         (i == 0 || (*entries)[i - 1].key < e.key);
  }
  if (!ok) {
    Drop(p.id, true);
    return;
  }
  RefreshAnswerWindow(p);
  if (++p.digest_parts_answered > kDigestPartsPerWindow) {
    Penalize(p, kPenaltyRateLimited);
    return;
  }
  const uint64_t now_unix = host_.NowUnix();
  std::vector<DigestEntry> give;  // what we hold newer or they lack: announced, they pull
  std::vector<OfferKey> want;
  const auto mine = book_.Digest();
  auto lo = std::lower_bound(mine.begin(), mine.end(), DigestEntry{d.range_first(), 0});
  auto theirs = entries->begin();
  for (auto it = lo; it != mine.end() && it->key <= d.range_last(); ++it) {
    while (theirs != entries->end() && theirs->key < it->key) want.push_back((theirs++)->key);
    const bool they_hold = theirs != entries->end() && theirs->key == it->key;
    if (they_hold && theirs->seq >= it->seq) {
      if (auto h = hot_.find(it->key); h != hot_.end() && h->second.seq == it->seq) {
        auto& have = h->second.have;
        if (std::find(have.begin(), have.end(), p.id) == have.end()) have.push_back(p.id);
      }
    }
    if (!they_hold || theirs->seq < it->seq) {
      // Not announced when it would not be sent; when the peer holds an older version of the
      // slot, its Have lists that, and we do not pull it (ours is newer): the exchange settles.
      auto o = book_.Find(it->key);
      if (o && o->expires_unix > now_unix && Reads(p, *o)) give.push_back(*it);
    } else if (theirs->seq > it->seq) {
      want.push_back(it->key);
    }
    if (they_hold) ++theirs;
  }
  while (theirs != entries->end()) want.push_back((theirs++)->key);
  for (size_t i = 0; i < give.size(); i += kMaxDigestEntries) {
    v1::GossipMessage out;
    const size_t n = std::min(kMaxDigestEntries, give.size() - i);
    out.mutable_have()->set_entries(PackDigest(std::span(give).subspan(i, n)));
    Send(p, out);
  }
  SendPull(p, want);
}

void GossipNode::HandleHave(Peer& p, const v1::GossipMessage& m) {
  auto entries = UnpackDigest(m.have().entries());
  if (!entries) {
    Drop(p.id, true);
    return;
  }
  std::vector<OfferKey> want;
  for (const auto& e : *entries)
    if (book_.SeqOf(e.key) < e.seq) want.push_back(e.key);
  SendPull(p, want);
}

void GossipNode::SendPull(Peer& p, const std::vector<OfferKey>& keys) {
  std::vector<OfferKey> ask;
  for (OfferKey k : keys) {
    if (p.pulled.size() >= kMaxPulledPerPeer || ask.size() >= kMaxDigestEntries) break;
    if (p.pulled.insert(k).second) ask.push_back(k);
  }
  if (ask.empty()) return;
  v1::GossipMessage out;
  out.mutable_pull()->set_keys(PackKeys(ask));
  Send(p, out);
}

void GossipNode::RefreshAnswerWindow(Peer& p) {
  const uint64_t now = host_.NowMs();
  if (now - p.answer_window_ms < kAnswerWindowMs) return;
  p.answer_window_ms = now;
  p.digest_parts_answered = 0;
  p.pull_keys_answered = 0;
}

void GossipNode::HandlePull(Peer& p, const v1::GossipMessage& m) {
  auto keys = UnpackKeys(m.pull().keys());
  if (!keys) {
    Drop(p.id, true);
    return;
  }
  RefreshAnswerWindow(p);
  p.pull_keys_answered += static_cast<uint32_t>(keys->size());
  if (p.pull_keys_answered > kPullKeysPerWindow) {
    Penalize(p, kPenaltyRateLimited);
    return;
  }
  const uint64_t now_unix = host_.NowUnix();
  std::vector<std::shared_ptr<const Offer>> give;
  for (OfferKey k : *keys) {
    auto o = book_.Find(k);  // SendOffers leaves out what p cannot read
    if (o && o->expires_unix > now_unix) give.push_back(o);
  }
  if (!give.empty()) SendOffers(p, give, true);
}

// ---------------------------------------------------------------------------------------------
// Rounds

void GossipNode::Tick() {
  ++round_;
  const uint64_t now = host_.NowMs();
  book_.ExpireUpTo(host_.NowUnix());

  // Hot offers: up to `fanout` more peers each, one Offers message per peer.
  auto ready = ReadyPeers();
  for (auto it = hot_.begin(); it != hot_.end();) {
    auto held = book_.Find(it->first);
    Hot& hot = it->second;
    if (!held || held->seq != hot.seq || hot.rounds_left == 0) {
      it = hot_.erase(it);
      continue;
    }
    --hot.rounds_left;
    std::vector<Peer*> targets;
    for (Peer* q : ready)
      if (Reads(*q, *held) &&
          std::find(hot.have.begin(), hot.have.end(), q->id) == hot.have.end())
        targets.push_back(q);
    std::shuffle(targets.begin(), targets.end(), rng_);
    if (targets.size() > config_.fanout) targets.resize(config_.fanout);
    for (Peer* q : targets) {
      hot.have.push_back(q->id);
      q->outbox.push_back(held);
    }
    ++it;
  }
  for (Peer* q : ready) {
    if (q->outbox.empty()) continue;
    std::vector<std::shared_ptr<const Offer>> out;
    out.swap(q->outbox);
    SendOffers(*q, out, false);
  }

  // Timeouts and keep-alives (collect first: Drop changes peers_).
  std::vector<PeerId> dead;
  for (auto& [id, p] : peers_) {
    if (!p->hello && now - p->connected_ms >= static_cast<uint64_t>(config_.hello_timeout.count()))
      dead.push_back(id);
    else if (now - p->last_frame_ms >= static_cast<uint64_t>(config_.idle_timeout.count()))
      dead.push_back(id);
  }
  for (PeerId id : dead) Drop(id, false);
  for (Peer* q : ReadyPeers()) {
    if (now - q->last_sent_ms >= static_cast<uint64_t>(config_.ping_after.count())) {
      v1::GossipMessage m;
      m.mutable_ping()->set_nonce(rng_());
      Send(*q, m);
    }
  }

  // Anti-entropy with one random peer.
  if (now >= next_anti_entropy_ms_) {
    next_anti_entropy_ms_ = now + config_.anti_entropy.count();
    auto peers = ReadyPeers();
    if (!peers.empty()) SendDigest(*peers[rng_() % peers.size()]);
  }

  // Peer exchange while short of outbound peers.
  if (OutboundCount() < config_.target_outbound) {
    auto peers = ReadyPeers();
    std::erase_if(peers, [&](Peer* q) {
      return q->our_peer_request_ms != 0 &&
             now - q->our_peer_request_ms < static_cast<uint64_t>(config_.peer_exchange.count());
    });
    if (!peers.empty()) SendPeerRequest(*peers[rng_() % peers.size()]);
  }
  MaintainPeers();

  // Forget what no longer matters.
  std::erase_if(banned_ids_, [&](const auto& b) { return b.second <= now; });
  std::erase_if(banned_addresses_, [&](const auto& b) { return b.second <= now; });
  if (round_ % 16 == 0) {
    std::erase_if(slot_changes_, [&](const auto& s) {
      return s.second.empty() ||
             now - s.second.back() >= static_cast<uint64_t>(config_.slot_refresh_window.count());
    });
  }
}

}  // namespace dvpn::marketplace
