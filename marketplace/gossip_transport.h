#pragma once
// GossipTransport: a GossipNode (gossip_node.h) on real TCP connections (Boost.Asio), framed
// as docs/protocol.md §7 says: u32 big-endian length (1..65536) || payload. It listens, accepts,
// dials what the node asks (numeric IPv4/IPv6 hosts, "localhost", other names through the
// system resolver; resolve + connect bounded by connect_timeout), reads each frame into a
// per-connection buffer of at most 64 KiB, and queues at most send_queue_limit bytes per
// connection. It ticks the node every config.round.
//
// A bad frame length (0 or over 64 KiB), a read or write error, the peer's EOF, or a send
// queue over its limit closes the connection and tells the node (OnDisconnected). When the node
// itself closes a peer (GossipHost::Close), the frames already queued for it get a short,
// bounded flush and the node is not told again.
//
// Threading: the node, its book and every connection live on one io thread that the transport
// owns. The public methods are thread-safe and may be called from any thread; those returning a
// future post their work to the io thread. Never wait on one of those futures (nor call
// Stop or RemoveBookListener) from the io thread itself, that is from inside a book listener.
// Ownership: the transport owns the node, the sockets and the io thread; the destructor stops.

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "marketplace/gossip_node.h"

namespace dvpn::marketplace {

struct GossipTransportOptions {
  // Where gossip connections are accepted: an IPv4 or IPv6 literal; empty: do not listen.
  std::string listen_address = "127.0.0.1";
  uint16_t listen_port = 0;                         // 0: any free port (see port())
  std::chrono::milliseconds connect_timeout{5000};  // one dial: resolve and connect
  size_t send_queue_limit = 1 << 20;  // bytes queued per connection (frame headers included)
  // Open sockets of any kind (before and after the hellos); an inbound connection beyond this
  // is closed at once, before the node hears of it. (The node's max_peers is checked by the node
  // on every connection it is given.)
  size_t max_connections = 256;
  std::chrono::milliseconds close_flush{1000};   // node-initiated close: queued frames get this
  std::chrono::milliseconds stop_timeout{2000};  // Stop(): graceful, then the loop is stopped
};

struct GossipTransportStats {
  GossipStats node;
  size_t offers = 0;       // held in the book, retired tombstones included
  size_t live_offers = 0;  // held and not retired
  size_t connections = 0;  // open sockets, before and after the hellos
  uint64_t accepted = 0;   // inbound connections handed to the node
  uint64_t refused = 0;    // inbound connections closed at once (max_connections)
  uint64_t dials = 0, dials_failed = 0;
  uint64_t bad_frames = 0;      // length 0 or over 64 KiB: closed
  uint64_t send_overflows = 0;  // send queue over the limit: closed
};

class GossipTransport {
 public:
  using BookListener = std::function<void(const OfferChange&)>;

  // `config.node_id` all zero: a random one is chosen. `config.listen_port` 0: the bound
  // port is advertised in Hello (set it to advertise another port, e.g. behind a port forward).
  explicit GossipTransport(GossipConfig config, GossipTransportOptions options = {},
                           std::shared_ptr<SignatureChecker> checker = nullptr);
  ~GossipTransport();  // Stop()
  GossipTransport(const GossipTransport&) = delete;
  GossipTransport& operator=(const GossipTransport&) = delete;

  // Binds and listens, starts the io thread, starts the node (which dials its bootstrap peers).
  // Fails, with nothing started: kBadConfig when the address is not a literal or the round is
  // not positive, kTransport when it cannot be bound, kNotRunning when called a second time
  // (also after Stop: a transport runs once).
  [[nodiscard]] Result<void, Errc> Start();
  // Closes the listener and every connection, stops the timers and joins the io thread, within
  // about options.stop_timeout. Idempotent. Afterwards the futures below answer at once with
  // their "not running" values.
  void Stop();

  // The bound listening port (0 before Start or when not listening).
  uint16_t port() const;
  const NodeId& node_id() const;

  // Publishes one of our own signed offers (GossipNode::Publish). The error says why it was
  // refused, or kNotRunning "the gossip node is not running".
  std::future<Result<void, Errc>> Publish(Offer offer);
  // Copies of the live offers matching `query` (OfferBook::Query at the current wall clock);
  // empty when not running.
  std::future<std::vector<Offer>> QueryOffers(OfferQuery query);
  // Node and transport counters; all zero when not running.
  std::future<GossipTransportStats> Stats();

  // Registers `listener` for every change of the book from now on; it runs on the io thread
  // (it must not block, and must not wait on this transport's futures). Returns its id.
  uint64_t AddBookListener(BookListener listener);
  // Once this returns the listener is not running and is never called again (from another
  // thread it waits, bounded by options.stop_timeout, for a call in progress to finish).
  void RemoveBookListener(uint64_t id);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dvpn::marketplace
