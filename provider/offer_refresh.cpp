#include "provider/offer_refresh.h"

#include <future>

#include "cli/cli_util.h"

namespace dvpn::node {

namespace {

constexpr std::chrono::milliseconds kPublishTimeout{5000};

}  // namespace

OfferAdvertiser::PublishFn GossipPublisher(marketplace::GossipTransport& transport) {
  return [&transport](const marketplace::Offer& o) {
    auto published = transport.Publish(o);
    if (published.wait_for(kPublishTimeout) != std::future_status::ready) {
      return Result<void, marketplace::Errc>(
          Fail(marketplace::Errc::kTransport, "the gossip node did not answer in time"));
    }
    return published.get();
  };
}

int RefreshUntilSignal(const sigset_t& signals, std::optional<RefreshSchedule> schedule,
                       const std::function<bool()>& refresh) {
  auto next = schedule ? std::chrono::steady_clock::now() + schedule->every
                       : std::chrono::steady_clock::time_point::max();
  for (;;) {
    if (int sig = cli::WaitForSignal(signals, next); sig != 0) return sig;
    if (!schedule) continue;
    const bool ok = refresh();
    next = std::chrono::steady_clock::now() + (ok ? schedule->every : schedule->retry);
  }
}

uint64_t WallMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace dvpn::node
