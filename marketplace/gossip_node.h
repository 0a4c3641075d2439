#pragma once
// The gossip protocol's logic (docs/marketplace.md §1): peers, eager push, rounds,
// anti-entropy, validation cheapest-check-first, per-peer rate limits and scores, bans, and
// the offer book. It does no I/O: a host (the TCP transport in gossip_transport.h, or the
// simulator in bench/gossip_sim) delivers connections, frames and time, and carries out what
// the node asks through GossipHost. The same code runs in both.
//
// Not thread-safe: the host calls every method from one thread (and GossipHost calls come back
// on that thread, from inside those methods).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "marketplace/offer.h"
#include "marketplace/offer_book.h"

namespace dvpn::v1 {
class GossipMessage;
}

namespace dvpn::marketplace {

// A connection, named by the host; never reused while the host runs.
using PeerId = uint64_t;
using NodeId = ByteArray<16>;

// What the node needs from its host. Calls come from inside GossipNode's methods; the host
// never calls back into the node from inside them (Dial's outcome arrives later).
class GossipHost {
 public:
  virtual ~GossipHost() = default;
  // Queue one frame's payload (a serialized GossipMessage) to `peer`.
  virtual void Send(PeerId peer, std::vector<uint8_t> payload) = 0;
  // Open a connection; the host later calls OnConnected (outbound) or OnDialFailed.
  virtual void Dial(const Endpoint& to) = 0;
  // Close `peer` once the frames already queued to it are sent (best effort, bounded). The
  // node has forgotten it already; the host does not call OnDisconnected for it.
  virtual void Close(PeerId peer) = 0;
  // Monotonic milliseconds, and the wall clock in Unix seconds (offer times are wall clock).
  virtual uint64_t NowMs() = 0;
  virtual uint64_t NowUnix() = 0;
};

// Checks an offer's signature. The default verifies with libsecp256k1 every time; the
// simulator memoizes by digest (same bytes, same answer).
class SignatureChecker {
 public:
  virtual ~SignatureChecker() = default;
  virtual bool Check(const Offer& offer, const Hash32& digest);
};

// Bits of Hello.features (docs/marketplace.md §1, "Offer formats across releases"): what a
// node understands beyond gossip version 1. A peer is sent format-2 offers (and their keys in
// digests and Have) only when its Hello has kFeatureOfferFormat2.
inline constexpr uint32_t kFeatureOfferFormat2 = 1;
inline constexpr uint32_t kGossipFeatures = kFeatureOfferFormat2;  // what this release sets

struct GossipConfig {
  payments::LedgerId network;  // offers for another ledger are refused
  NodeId node_id{};            // random per process
  uint16_t listen_port = 0;    // advertised in Hello; 0: not listening
  std::vector<Endpoint> bootstrap;
  uint64_t seed = 0;           // the node's random choices
  // Advertised in Hello. Only tests change it (0 plays a node of an older release).
  uint32_t features = kGossipFeatures;

  size_t target_outbound = 8;
  size_t max_peers = 32;
  // Inbound slots (docs/marketplace.md §1, "Inbound slots"): a full node evicts an inbound peer
  // that brought nothing for a newcomer; a newcomer is safe from eviction for inbound_grace.
  // At most max_inbound_per_source inbound peers per IPv4 address or IPv6 /64 (loopback
  // exempt; 0: no limit).
  size_t max_inbound_per_source = 4;
  std::chrono::milliseconds inbound_grace{10000};
  size_t fanout = 3;
  uint32_t hot_rounds = 4;
  std::chrono::milliseconds round{1000};
  std::chrono::milliseconds anti_entropy{30000};
  std::chrono::milliseconds peer_exchange{60000};
  std::chrono::milliseconds hello_timeout{5000};
  std::chrono::milliseconds ping_after{30000};
  std::chrono::milliseconds idle_timeout{90000};
  std::chrono::milliseconds ban_time{600000};
  OfferBookLimits book;
  size_t max_addresses = 1024;
  double peer_offer_rate = 20;     // unsolicited offers per second per peer
  double peer_offer_burst = 200;
  uint32_t slot_refresh_burst = 3;  // new versions of one slot per slot_refresh_window
  std::chrono::milliseconds slot_refresh_window{60000};
  int ban_score = -100;
};

// Why an offer from a peer was not taken (docs/marketplace.md §1, validation table).
enum class OfferVerdict {
  kAccepted,
  kMalformed,      // 1: fields
  kExpired,        // 2
  kFromTheFuture,  // 2
  kWrongNetwork,   // 3
  kNotNewer,       // 4: duplicate or stale
  kRateLimited,    // 5
  kSlotTooBusy,    // 6
  kBadSignature,   // 7
  kBookFull,       // valid, but the book keeps what outlives it
};
inline constexpr size_t kOfferVerdicts = 10;
const char* OfferVerdictName(OfferVerdict v);
// The error a refused verdict is reported as (kAccepted has none: kBadField is returned).
Errc ErrcOf(OfferVerdict v);

struct GossipStats {
  uint64_t frames_sent = 0, frames_received = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;  // payload bytes (frames add 4 each)
  uint64_t offers_sent = 0;
  uint64_t verdicts[kOfferVerdicts] = {};
  uint64_t peers_banned = 0;
  uint64_t protocol_errors = 0;  // connections closed for a bad frame or hello
  uint64_t inbound_evicted = 0;  // inbound peers closed to make room for a newcomer
  uint64_t inbound_refused = 0;  // newcomers refused: every inbound peer was protected
  size_t peers = 0, outbound = 0, addresses = 0;
};

class GossipNode {
 public:
  GossipNode(GossipConfig config, GossipHost& host,
             std::shared_ptr<SignatureChecker> checker = nullptr);
  ~GossipNode();
  GossipNode(const GossipNode&) = delete;
  GossipNode& operator=(const GossipNode&) = delete;

  // Dials the bootstrap peers. Call once.
  void Start();
  // A connection is up: ours (`outbound`, to `remote`) or theirs (remote host, port unknown).
  void OnConnected(PeerId peer, bool outbound, const Endpoint& remote);
  void OnDialFailed(const Endpoint& to);
  // One frame's payload. May close the peer (through GossipHost::Close).
  void OnFrame(PeerId peer, ByteSpan payload);
  // The connection ended (not after our own Close).
  void OnDisconnected(PeerId peer);
  // Every config.round: hot offers, anti-entropy, expiry, dialling, timeouts.
  void Tick();

  // Publishes one of our own offers (already signed): stored and pushed like a received one.
  // Fails when it does not pass our own validation: CheckFields' error, or the verdict's code
  // (ErrcOf) with its name as the message ("bad signature", "not newer", ...).
  [[nodiscard]] Result<void, Errc> Publish(const Offer& offer);

  const OfferBook& book() const { return book_; }
  // Changes to the book (added, updated, removed), for watchers.
  void SetBookListener(std::function<void(const OfferChange&)> listener);
  GossipStats stats() const;
  const GossipConfig& config() const { return config_; }

 private:
  struct Peer;
  struct Hot;
  struct Address;

  void Handle(Peer& p, const v1::GossipMessage& m);
  void HandleHello(Peer& p, const v1::GossipMessage& m);
  void RefuseFull(Peer& p);  // sends Peers (other addresses to try), then drops
  // Makes room for an inbound newcomer whose Hello just passed: true when it may take a slot
  // (after evicting a peer when the per-source limit or max_peers is reached), false when
  // every peer it could replace is protected (docs/marketplace.md §1, "Inbound slots").
  bool AdmitInbound(const Peer& newcomer);
  // Among full inbound slots: the peer to evict, or null when all are protected.
  Peer* SelectInboundVictim(std::vector<Peer*> inbound, uint64_t now_ms);
  // Up to 16 random known addresses (never ours; with skip_its_own, not the peer's own either).
  void SendPeers(Peer& p, bool skip_its_own);
  void SendPeerRequest(Peer& p);  // and expect its Peers
  size_t OutboundCount() const;
  void HandleOffers(Peer& p, const v1::GossipMessage& m);
  void HandleDigest(Peer& p, const v1::GossipMessage& m);
  void HandlePull(Peer& p, const v1::GossipMessage& m);
  void HandleHave(Peer& p, const v1::GossipMessage& m);
  // Pulls `keys` from `p` (those not already awaited, within the per-peer bound).
  void SendPull(Peer& p, const std::vector<OfferKey>& keys);
  void HandlePeers(Peer& p, const v1::GossipMessage& m);
  OfferVerdict Validate(Peer* from, const Offer& offer, bool solicited, Hash32* digest);
  // Stores a validated offer; `spread`: push it at once and keep it hot for a few rounds.
  OfferVerdict Accept(Peer* from, std::shared_ptr<const Offer> offer, bool spread);
  void RefreshAnswerWindow(Peer& p);
  // Whether `p` may be sent `offer` (or its key in a digest or Have): format 1 always, format 2
  // only when p's Hello had kFeatureOfferFormat2 (docs/marketplace.md §1).
  static bool Reads(const Peer& p, const Offer& offer);
  // Sends those of `offers` that `p` reads (Reads), in messages of up to kMaxOffersPerMessage.
  void SendOffers(Peer& p, const std::vector<std::shared_ptr<const Offer>>& offers, bool answer);
  // Every (key, seq) we hold whose offer `p` reads, in parts.
  void SendDigest(Peer& p);
  void SendHello(Peer& p);
  void Send(Peer& p, const v1::GossipMessage& m);
  // Lowers the score; at the ban threshold bans and drops the peer. False when it was dropped
  // (`p` is gone then).
  bool Penalize(Peer& p, int points);
  void Drop(PeerId id, bool protocol_error);
  // Removes the peer (its address becomes dialable again after a back-off); false if unknown.
  bool Forget(PeerId id);
  void Ban(Peer& p);
  void MaintainPeers();
  void LearnAddress(const Endpoint& e, bool bootstrap);
  bool Banned(const Endpoint& e, const NodeId* id);
  Peer* FindPeer(PeerId id);
  std::vector<Peer*> ReadyPeers();

  GossipConfig config_;
  GossipHost& host_;
  std::shared_ptr<SignatureChecker> checker_;
  std::mt19937_64 rng_;
  OfferBook book_;
  std::unordered_map<PeerId, std::unique_ptr<Peer>> peers_;
  std::unordered_map<OfferKey, Hot> hot_;
  std::vector<Address> addresses_;
  std::unordered_set<std::string> dialing_;  // endpoints with a dial in progress
  std::unordered_map<std::string, uint64_t> banned_addresses_;  // endpoint text -> until (ms)
  std::vector<std::pair<NodeId, uint64_t>> banned_ids_;
  std::unordered_map<OfferKey, std::vector<uint64_t>> slot_changes_;  // recent change times (ms)
  GossipStats stats_;
  uint64_t netgroup_salt_ = 0;  // orders netgroups for protection; unknown to peers
  uint64_t next_anti_entropy_ms_ = 0;
  uint64_t round_ = 0;
};

}  // namespace dvpn::marketplace
