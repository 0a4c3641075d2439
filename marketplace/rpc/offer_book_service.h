#pragma once
// OfferBookService: the dvpn.v1.OfferBook gRPC service (docs/marketplace.md §2), a thin adapter
// over a node's offer book. It validates the filter, asks the book (through an OfferFeed) for the
// live offers matching it, ranks them by Score with nothing measured (provider_stats.h), and
// converts them to protobuf. WatchOffers streams the current matches, then every change.
//
// OfferBookServer: a running grpc::Server around an OfferBookService (server reflection on).
//
// Thread-safety: handlers run on gRPC's threads concurrently. OfferFeed implementations must be
// thread-safe. OfferBookServer's methods may be called from any thread.
// Ownership: the service and the server borrow the feed, which must outlive them (for a
// TransportOfferFeed: stop the server before the transport).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/server.h>

#include "dvpn/v1/marketplace.grpc.pb.h"
#include "marketplace/gossip_transport.h"
#include "marketplace/offer_book.h"
#include "marketplace/provider_stats.h"
#include "payments/signed_messages.h"

namespace dvpn::marketplace::rpc {

// Where the service reads offers from: a query of the book and a stream of its changes.
class OfferFeed {
 public:
  using Listener = std::function<void(const OfferChange&)>;
  virtual ~OfferFeed() = default;
  // The live offers matching `query` at the current wall clock (any order); empty when the
  // node is not running. Never waits; the caller bounds its wait on the future.
  virtual std::future<std::vector<Offer>> QueryOffers(OfferQuery query) = 0;
  // Every change of the book from now on, in the order the book made them, on a thread that
  // must not be blocked (the listener only queues). Changes made before a later QueryOffers
  // is answered are reflected in that answer.
  virtual uint64_t AddListener(Listener listener) = 0;
  // Once it returns the listener is never called again (bounded wait).
  virtual void RemoveListener(uint64_t id) = 0;
};

// The feed of a running GossipTransport. The transport must outlive it.
class TransportOfferFeed final : public OfferFeed {
 public:
  explicit TransportOfferFeed(GossipTransport& transport) : transport_(transport) {}
  std::future<std::vector<Offer>> QueryOffers(OfferQuery query) override {
    return transport_.QueryOffers(std::move(query));
  }
  uint64_t AddListener(Listener listener) override {
    return transport_.AddBookListener(std::move(listener));
  }
  void RemoveListener(uint64_t id) override { transport_.RemoveBookListener(id); }

 private:
  GossipTransport& transport_;
};

inline constexpr uint32_t kDefaultOfferLimit = 100;
inline constexpr uint32_t kMaxOfferLimit = 1000;

struct OfferBookServiceOptions {
  // WatchOffers streams at once; more get RESOURCE_EXHAUSTED.
  uint32_t max_watchers = 64;
  // Changes queued for one watcher that it has not been sent yet. A watcher that falls further
  // behind (a client that does not read) has its stream ended with RESOURCE_EXHAUSTED.
  size_t watch_queue_limit = 4096;
  // How often an idle watcher rechecks cancellation (shutdown wakes it at once).
  std::chrono::milliseconds watch_poll{200};
  // Longest wait for the book to answer a query (the node's io thread); then UNAVAILABLE.
  std::chrono::milliseconds query_timeout{5000};
};

// The filter of a request, checked. INVALID_ARGUMENT (the message names the field) for a limit
// above kMaxOfferLimit, a region that breaks protocol.md §6's rule, or required modes with a
// bit CheckModes does not know.
struct CheckedFilter {
  OfferQuery query;
  uint32_t limit = kDefaultOfferLimit;
};
std::expected<CheckedFilter, grpc::Status> CheckFilter(const v1::OfferFilter& filter);

// True when `offer` is one the filter shows: for `network`, and Matches(query, offer, now_unix)
// (marketplace/offer.h: the one copy of the filter).
bool FilterMatches(const OfferQuery& query, const payments::LedgerId& network, const Offer& offer,
                   uint64_t now_unix);

// `offer` with its score (nothing measured), its provider's account address and its modes.
void ToRankedOffer(const Offer& offer, v1::RankedOffer* out);

class OfferBookService final : public v1::OfferBook::Service {
 public:
  // `network`: the node's ledger; only its offers are ever shown.
  OfferBookService(OfferFeed& feed, const payments::LedgerId& network,
                   OfferBookServiceOptions options = {});
  OfferBookService(const OfferBookService&) = delete;
  OfferBookService& operator=(const OfferBookService&) = delete;

  // Makes every WatchOffers stream end (UNAVAILABLE) at once and refuses new ones. Call before
  // grpc::Server::Shutdown so that shutdown does not wait for watchers.
  void BeginShutdown();

  // The matching live offers, best (lowest score) first, at most filter.limit (0: 100).
  // INVALID_ARGUMENT for a bad filter; UNAVAILABLE when the book does not answer in time.
  grpc::Status ListOffers(grpc::ServerContext* ctx, const v1::ListOffersRequest* req,
                          v1::ListOffersResponse* reply) override;

  // ADDED for every current match (ranked, best first; filter.limit does not apply to a watch:
  // every match is shown), then every change as it happens: ADDED (a new match), UPDATED (a
  // newer version of an offer shown that still matches), REMOVED (retired, expired, evicted, or
  // a newer version that no longer matches; the event carries the version last shown).
  // Ends with INVALID_ARGUMENT (bad filter), RESOURCE_EXHAUSTED (too many watchers, or this
  // watcher fell more than watch_queue_limit changes behind), CANCELLED (the client went away)
  // or UNAVAILABLE (the server is shutting down, or the book did not answer).
  grpc::Status WatchOffers(grpc::ServerContext* ctx, const v1::WatchOffersRequest* req,
                           grpc::ServerWriter<v1::OfferEvent>* writer) override;

 private:
  struct Watcher;

  OfferFeed& feed_;
  const payments::LedgerId network_;
  const OfferBookServiceOptions options_;
  std::atomic<uint32_t> watcher_count_{0};
  std::mutex watchers_mu_;
  bool shutting_down_ = false;   // guarded by watchers_mu_
  std::set<Watcher*> watchers_;  // guarded by watchers_mu_
};

struct OfferBookServerOptions {
  // "host:port"; port 0 picks a free port (see OfferBookServer::port()).
  std::string listen_address = "127.0.0.1:0";
  OfferBookServiceOptions service;
  // Other services served on the same port (dvpn-node's NodeControl); they must outlive the
  // server.
  std::vector<grpc::Service*> extra_services;
};

class OfferBookServer {
 public:
  // Builds and starts the server. Fails with kTransport (the message names the address) when
  // the address cannot be bound. `feed` must outlive the server.
  static Result<std::unique_ptr<OfferBookServer>, Errc> Start(
      OfferFeed& feed, const payments::LedgerId& network, const OfferBookServerOptions& options);

  ~OfferBookServer();  // Shutdown(1 s) if not done yet
  OfferBookServer(const OfferBookServer&) = delete;
  OfferBookServer& operator=(const OfferBookServer&) = delete;

  int port() const { return port_; }
  // "<listen host>:<bound port>".
  const std::string& address() const { return address_; }

  // Ends every watch stream, stops accepting calls and waits up to `grace` for calls in flight;
  // calls still running after that are cancelled. Idempotent.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

 private:
  OfferBookServer(OfferFeed& feed, const payments::LedgerId& network,
                  const OfferBookServerOptions& options);

  std::unique_ptr<OfferBookService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  std::mutex mu_;
  bool shut_down_ = false;  // guarded by mu_
};

}  // namespace dvpn::marketplace::rpc
