#include "client/offer_picker.h"

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/log.h"
#include "dvpn/v1/marketplace.grpc.pb.h"
#include "ledger/requests.h"
#include "marketplace/wire.h"

namespace dvpn::tunnel_client {
namespace {

namespace session = tunnel::session;
using client::Errc;

// A channel is worth using while it stays open this much longer.
constexpr uint64_t kChannelMinRemainingS = 600;

std::optional<session::tcp::endpoint> NumericEndpoint(const marketplace::Endpoint& e) {
  boost::system::error_code ec;
  std::string host = e.host == "localhost" ? "127.0.0.1" : e.host;
  auto address = session::asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return session::tcp::endpoint(address, e.port);
}

}  // namespace

struct OfferPicker::Impl {
  Options options;
  std::unique_ptr<marketplace::ProviderStats> stats;
  std::unique_ptr<v1::OfferBook::Stub> stub;
  std::mutex mu;
  std::unique_ptr<marketplace::ProviderChooser> chooser;
  bool refetched = false;  // asked the node again after running out
  std::shared_ptr<const marketplace::Offer> current;
  std::optional<session::ProviderTarget> target;
  size_t tried = 0;

  Result<std::vector<std::shared_ptr<const marketplace::Offer>>, Errc> Fetch() {
    v1::ListOffersRequest req;
    auto* f = req.mutable_filter();
    f->set_max_price_per_mb(options.policy.max_price_per_mb.micro());
    f->set_region(options.policy.region);
    f->set_min_capacity_mbps(options.policy.min_capacity_mbps);
    f->set_required_modes(options.policy.required_modes);
    f->set_limit(1000);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options.call_timeout);
    v1::ListOffersResponse resp;
    auto status = stub->ListOffers(&ctx, req, &resp);
    if (!status.ok()) {
      return Fail(Errc::kOffers,
                  "cannot list offers from " + options.offers_from + ": " + status.error_message());
    }
    std::vector<std::shared_ptr<const marketplace::Offer>> out;
    for (const auto& ranked : resp.offers()) {
      auto o = marketplace::FromProto(ranked.offer());
      // The node validated them; a client trusts no one: check the signature again.
      if (!o || !marketplace::VerifyOfferSignature(*o, marketplace::OfferDigest(*o))) continue;
      out.push_back(std::make_shared<const marketplace::Offer>(std::move(*o)));
    }
    return out;
  }

  // The channel to pay `offer`'s provider through: zeros for a free offer.
  Result<payments::ChannelId, Errc> ChannelFor(const marketplace::Offer& offer) {
    if (offer.price_per_mb.IsZero() && offer.price_per_minute.IsZero()) return payments::ChannelId{};
    if (!options.ledger || !options.client) {
      return Fail(Errc::kBadConfig, "a paid offer needs --ledger");
    }
    auto provider_key = payments::PublicKey::Parse(offer.provider);
    if (!provider_key) return Fail(Errc::kChannel, "bad provider key");
    const auto provider = payments::Address::FromPublicKey(*provider_key);
    const auto me = payments::Address::FromPublicKey(options.client->public_key());
    auto channels = options.ledger->ListChannels(me);
    if (!channels) return Fail(Errc::kLedger, "cannot list our channels at the ledger");
    const uint64_t now = UnixSeconds();
    std::optional<ledger::ChannelState> best;
    for (const auto& c : *channels) {
      if (c.provider != provider || c.status != ledger::ChannelStatus::kOpen ||
          c.expiry_unix < now + kChannelMinRemainingS || c.Remaining().IsZero())
        continue;
      if (!best || c.Remaining() > best->Remaining()) best = c;
    }
    if (best) return best->id;
    if (options.open_deposit.IsZero()) {
      return Fail(Errc::kChannel,
                  "no open channel to " + provider.ToString() + " (and --open-deposit is not set)");
    }
    const uint64_t nonce = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
    auto req = ledger::MakeOpenChannel(*options.client, options.policy.ledger, provider,
                                       options.open_deposit, nonce,
                                       now + options.channel_lifetime_s);
    auto opened = options.ledger->OpenChannel(req);
    if (!opened) return Fail(Errc::kLedger, "cannot open a channel to " + provider.ToString());
    Logger("dvpn-tunnel-client")
        ->info("opened channel {} to {} with {} credits", ToHex(opened->id.bytes).substr(0, 16),
               provider.ToString(), options.open_deposit.ToString());
    return opened->id;
  }
};

OfferPicker::OfferPicker(Options options, std::unique_ptr<marketplace::ProviderStats> stats)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->stats = std::move(stats);
  impl_->stub = v1::OfferBook::NewStub(
      grpc::CreateChannel(impl_->options.offers_from, grpc::InsecureChannelCredentials()));
}

OfferPicker::~OfferPicker() = default;

std::shared_ptr<const marketplace::Offer> OfferPicker::current_offer() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->current;
}

Result<session::ProviderTarget, session::ConnectErrc> OfferPicker::Next() {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.target) return *m.target;
  auto log = Logger("dvpn-tunnel-client");
  for (;;) {
    if (!m.chooser) {
      auto offers = m.Fetch();
      if (!offers) return Fail(session::ConnectErrc::kNoProvider, offers.error().message);
      log->info("{} offer(s) from {} under the policy", offers->size(), m.options.offers_from);
      m.chooser = std::make_unique<marketplace::ProviderChooser>(m.options.policy,
                                                                 std::move(*offers), *m.stats);
    }
    auto offer = m.chooser->Next(UnixSeconds());
    if (!offer) {
      if (m.refetched) {
        return Fail(session::ConnectErrc::kNoProvider,
                    "no provider left to try: " + std::to_string(m.tried) +
                        " offer(s) under the policy tried");
      }
      m.refetched = true;  // offers may have changed: ask once more
      m.chooser.reset();
      continue;
    }
    if (m.options.path && m.options.path->HeldByOtherHop(m.options.hop, offer->provider)) {
      continue;  // one provider serves at most one hop of a path
    }
    ++m.tried;
    std::optional<session::tcp::endpoint> endpoint;
    for (const auto& e : offer->endpoints)
      if ((endpoint = NumericEndpoint(e))) break;
    if (!endpoint) {
      log->warn("offer of {}: no numeric endpoint; skipped", ToHex(offer->provider).substr(0, 16));
      (void)m.chooser->Failed(offer->provider, marketplace::FailReason::kConnectFailed);
      continue;
    }
    auto channel = m.ChannelFor(*offer);
    if (!channel) {
      log->warn("offer of {}: {}; skipped", ToHex(offer->provider).substr(0, 16),
                channel.error().message);
      continue;
    }
    if (m.options.path) {
      if (auto claimed = m.options.path->Claim(m.options.hop, offer->provider); !claimed) {
        log->warn("offer of {}: {}; skipped", ToHex(offer->provider).substr(0, 16),
                  claimed.error().message);
        continue;  // another hop took it since the check above
      }
    }
    session::ProviderTarget t;
    t.endpoint = *endpoint;
    t.provider_static = offer->tunnel_key;
    t.channel = *channel;
    t.name = "provider " + ToHex(offer->provider).substr(0, 16) + ", " +
             offer->price_per_mb.ToString() + "/MB";
    log->info("chose {} at {}:{}", t.name, endpoint->address().to_string(), endpoint->port());
    m.current = offer;
    m.target = t;
    return t;
  }
}

void OfferPicker::Failed(const session::ProviderTarget& target, session::ProviderFailure failure,
                         const std::string& why) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (!m.current || !m.target || m.target->provider_static != target.provider_static) return;
  const auto reason = failure == session::ProviderFailure::kConnect
                          ? marketplace::FailReason::kConnectFailed
                      : failure == session::ProviderFailure::kOvercharge
                          ? marketplace::FailReason::kOvercharge
                          : marketplace::FailReason::kHandshakeRefused;
  Logger("dvpn-tunnel-client")->warn("{} failed: {}; moving to the next offer", target.name, why);
  if (m.chooser) (void)m.chooser->Failed(m.current->provider, reason);
  if (m.options.path) m.options.path->Release(m.options.hop);
  m.target.reset();
}

void OfferPicker::Connected(const session::ProviderTarget& target,
                            std::chrono::milliseconds handshake) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (!m.current || !m.target || m.target->provider_static != target.provider_static) return;
  (void)m.stats->RecordHandshake(m.current->provider, static_cast<double>(handshake.count()));
  if (m.chooser) (void)m.chooser->Succeeded(m.current->provider);
}

}  // namespace dvpn::tunnel_client

namespace dvpn::tunnel_client {

void OfferPicker::MeasuredThroughput(const tunnel::session::ProviderTarget& target, double mbps) {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (!m.current || !m.target || m.target->provider_static != target.provider_static) return;
  (void)m.stats->RecordThroughput(m.current->provider, mbps);
}

}  // namespace dvpn::tunnel_client
