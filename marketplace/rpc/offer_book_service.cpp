#include "marketplace/rpc/offer_book_service.h"

#include <condition_variable>
#include <deque>
#include <unordered_map>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>

#include "common/clock.h"
#include "common/counted_slot.h"
#include "common/log.h"
#include "marketplace/wire.h"
#include "payments/keys.h"

namespace dvpn::marketplace::rpc {
namespace {

spdlog::logger& Log() {
  static auto logger = Logger("offerbook");
  return *logger;
}

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// Scores with nothing measured: the node ranks for no client in particular.
const ProviderStats& NothingMeasured() {
  static const SystemClock clock;
  static const ProviderStats stats = ProviderStats::InMemory(clock);
  return stats;
}

enum class Wait { kReady, kCancelled, kShutdown, kTimedOut };

}  // namespace

std::expected<CheckedFilter, grpc::Status> CheckFilter(const v1::OfferFilter& f) {
  CheckedFilter out;
  if (f.limit() > kMaxOfferLimit) {
    return std::unexpected(Invalid("filter.limit: at most " + std::to_string(kMaxOfferLimit) +
                                   " (0: the default, " + std::to_string(kDefaultOfferLimit) +
                                   ")"));
  }
  out.limit = f.limit() == 0 ? kDefaultOfferLimit : f.limit();
  if (auto ok = CheckRegion(f.region()); !ok) {
    return std::unexpected(Invalid("filter.region: " + ok.error().message));
  }
  out.query.region = f.region();
  if (f.max_price_per_mb() != 0)
    out.query.max_price_per_mb = Amount::FromMicro(f.max_price_per_mb());
  out.query.min_capacity_mbps = f.min_capacity_mbps();
  if (f.required_modes() != 0) {
    if (auto ok = CheckModes(f.required_modes()); !ok) {
      return std::unexpected(Invalid("filter.required_modes: " + ok.error().message));
    }
    out.query.required_modes = static_cast<uint8_t>(f.required_modes());
  }
  return out;
}

bool FilterMatches(const OfferQuery& q, const payments::LedgerId& network, const Offer& o,
                   uint64_t now_unix) {
  return o.ledger == network && Matches(q, o, now_unix);
}

void ToRankedOffer(const Offer& offer, v1::RankedOffer* out) {
  ToProto(offer, out->mutable_offer());
  out->set_score(Score(offer, nullptr));
  out->set_modes(offer.modes);
  // Offers in the book passed the signature check, so the key parses; if not, no address.
  if (auto key = payments::PublicKey::Parse(offer.provider)) {
    out->set_provider_address(payments::Address::FromPublicKey(*key).ToString());
  }
}

// ---------------------------------------------------------------------------------------------
// OfferBookService

// One WatchOffers stream: the changes the feed reported that the handler has not sent yet.
struct OfferBookService::Watcher {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<OfferChange> queue;  // guarded by mu; at most watch_queue_limit
  bool overflow = false;          // guarded by mu
  bool shutdown = false;          // guarded by mu
};

OfferBookService::OfferBookService(OfferFeed& feed, const payments::LedgerId& network,
                                   OfferBookServiceOptions options)
    : feed_(feed), network_(network), options_(options) {}

void OfferBookService::BeginShutdown() {
  std::lock_guard lock(watchers_mu_);
  shutting_down_ = true;
  for (Watcher* w : watchers_) {
    std::lock_guard wl(w->mu);
    w->shutdown = true;
    w->cv.notify_all();
  }
}

grpc::Status OfferBookService::ListOffers(grpc::ServerContext* ctx,
                                          const v1::ListOffersRequest* req,
                                          v1::ListOffersResponse* reply) {
  auto filter = CheckFilter(req->filter());
  if (!filter) return filter.error();
  auto future = feed_.QueryOffers(filter->query);
  const auto deadline = std::chrono::steady_clock::now() + options_.query_timeout;
  while (future.wait_for(options_.watch_poll) != std::future_status::ready) {
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    if (std::chrono::steady_clock::now() >= deadline) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the offer book did not answer in time");
    }
  }
  std::vector<std::shared_ptr<const Offer>> offers;
  const uint64_t now = UnixSeconds();
  for (auto& o : future.get()) {
    if (FilterMatches(filter->query, network_, o, now)) {
      offers.push_back(std::make_shared<const Offer>(std::move(o)));
    }
  }
  offers = RankOffers(std::move(offers), NothingMeasured());
  if (offers.size() > filter->limit) offers.resize(filter->limit);
  for (const auto& o : offers) ToRankedOffer(*o, reply->add_offers());
  return grpc::Status::OK;
}

grpc::Status OfferBookService::WatchOffers(grpc::ServerContext* ctx,
                                           const v1::WatchOffersRequest* req,
                                           grpc::ServerWriter<v1::OfferEvent>* writer) {
  auto filter = CheckFilter(req->filter());
  if (!filter) return filter.error();
  auto count_slot = CountedSlot::TryTake(watcher_count_, options_.max_watchers);
  if (!count_slot) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        "too many watchers (at most " + std::to_string(options_.max_watchers) + ")");
  }

  auto watcher = std::make_shared<Watcher>();
  {
    std::lock_guard lock(watchers_mu_);
    if (shutting_down_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the node is shutting down");
    }
    watchers_.insert(watcher.get());
  }
  const size_t limit = std::max<size_t>(options_.watch_queue_limit, 1);
  // The listener runs on the node's thread: it only queues, never blocks for long.
  const uint64_t listener = feed_.AddListener([watcher, limit](const OfferChange& change) {
    std::lock_guard lock(watcher->mu);
    if (watcher->overflow) return;
    if (watcher->queue.size() >= limit) {
      watcher->overflow = true;
      watcher->queue.clear();  // the stream ends; free the memory now
    } else {
      watcher->queue.push_back(change);
    }
    watcher->cv.notify_all();
  });
  // Unregisters on every return path; RemoveListener's wait is bounded.
  struct Cleanup {
    OfferBookService* self;
    Watcher* w;
    uint64_t id;
    ~Cleanup() {
      self->feed_.RemoveListener(id);
      std::lock_guard lock(self->watchers_mu_);
      self->watchers_.erase(w);
    }
  } cleanup{this, watcher.get(), listener};

  const grpc::Status cancelled(grpc::StatusCode::CANCELLED, "the watcher went away");
  const grpc::Status shutdown(grpc::StatusCode::UNAVAILABLE, "the node is shutting down");
  const grpc::Status overflow(
      grpc::StatusCode::RESOURCE_EXHAUSTED,
      "the watcher fell more than " + std::to_string(limit) + " changes behind");
  auto stopped = [&]() -> std::optional<grpc::Status> {
    if (ctx->IsCancelled()) return cancelled;
    std::lock_guard lock(watcher->mu);
    if (watcher->shutdown) return shutdown;
    if (watcher->overflow) return overflow;
    return std::nullopt;
  };

  // The snapshot, asked after the listener is in place: a change made before the answer is
  // both in it and queued; the seq comparison below drops the duplicate.
  auto future = feed_.QueryOffers(filter->query);
  const auto deadline = std::chrono::steady_clock::now() + options_.query_timeout;
  while (future.wait_for(options_.watch_poll) != std::future_status::ready) {
    if (auto s = stopped()) return *s;
    if (std::chrono::steady_clock::now() >= deadline) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the offer book did not answer in time");
    }
  }
  std::unordered_map<OfferKey, std::shared_ptr<const Offer>> shown;
  auto send = [&](v1::OfferEvent::Kind kind, const Offer& offer) {
    v1::OfferEvent event;
    event.set_kind(kind);
    ToRankedOffer(offer, event.mutable_offer());
    return writer->Write(event);
  };
  {
    std::vector<std::shared_ptr<const Offer>> snapshot;
    const uint64_t now = UnixSeconds();
    for (auto& o : future.get()) {
      if (FilterMatches(filter->query, network_, o, now)) {
        snapshot.push_back(std::make_shared<const Offer>(std::move(o)));
      }
    }
    snapshot = RankOffers(std::move(snapshot), NothingMeasured());
    for (const auto& o : snapshot) {
      if (auto s = stopped()) return *s;
      shown[OfferKeyOf(*o)] = o;
      if (!send(v1::OfferEvent::ADDED, *o)) return cancelled;
    }
  }

  std::deque<OfferChange> batch;
  for (;;) {
    {
      std::unique_lock lock(watcher->mu);
      watcher->cv.wait_for(lock, options_.watch_poll, [&] {
        return !watcher->queue.empty() || watcher->overflow || watcher->shutdown;
      });
      batch.swap(watcher->queue);
    }
    if (auto s = stopped()) return *s;
    const uint64_t now = UnixSeconds();
    for (const OfferChange& change : batch) {
      if (!change.offer) continue;
      const Offer& o = *change.offer;
      const OfferKey key = OfferKeyOf(o);
      auto it = shown.find(key);
      if (change.kind == OfferChange::Kind::kRemoved) {
        if (it == shown.end() || it->second->seq > o.seq) continue;  // not shown, or stale
        auto last = it->second;
        shown.erase(it);
        if (!send(v1::OfferEvent::REMOVED, *last)) return cancelled;
        continue;
      }
      if (it != shown.end() && it->second->seq >= o.seq) continue;  // already in the snapshot
      if (FilterMatches(filter->query, network_, o, now)) {
        const bool update = it != shown.end();
        shown[key] = change.offer;
        if (!send(update ? v1::OfferEvent::UPDATED : v1::OfferEvent::ADDED, o)) return cancelled;
      } else if (it != shown.end()) {
        auto last = it->second;
        shown.erase(it);
        if (!send(v1::OfferEvent::REMOVED, *last)) return cancelled;
      }
    }
    batch.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// OfferBookServer

OfferBookServer::OfferBookServer(OfferFeed& feed, const payments::LedgerId& network,
                                 const OfferBookServerOptions& options)
    : service_(std::make_unique<OfferBookService>(feed, network, options.service)) {}

Result<std::unique_ptr<OfferBookServer>, Errc> OfferBookServer::Start(
    OfferFeed& feed, const payments::LedgerId& network, const OfferBookServerOptions& options) {
  std::unique_ptr<OfferBookServer> server(new OfferBookServer(feed, network, options));
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(server->service_.get());
  for (grpc::Service* extra : options.extra_services) builder.RegisterService(extra);
  // Requests are a filter: small. Replies hold up to 1000 offers of at most ~1.5 KB.
  builder.SetMaxReceiveMessageSize(64 * 1024);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || port == 0) {
    return Fail(Errc::kTransport, "cannot listen on " + options.listen_address +
                                      " (address in use, or not a valid host:port)");
  }
  server->port_ = port;
  std::string host = options.listen_address.substr(0, options.listen_address.rfind(':'));
  server->address_ = host + ":" + std::to_string(port);
  Log().debug("OfferBook service listening on {}", server->address_);
  return server;
}

OfferBookServer::~OfferBookServer() { Shutdown(std::chrono::milliseconds(1000)); }

void OfferBookServer::Shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  service_->BeginShutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }
}

}  // namespace dvpn::marketplace::rpc
