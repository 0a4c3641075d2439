#include "provider/seller.h"

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <future>

#include "common/io_thread.h"
#include "common/log.h"
#include "common/port_file.h"
#include "provider/exit_assembly.h"
#include "tunnel/session/bandwidth_limiter.h"
#include "cli/cli_util.h"

namespace dvpn::node {
namespace {

namespace session = tunnel::session;
using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kSampleEvery{1000};
constexpr std::chrono::milliseconds kHistoryEvery{2000};
constexpr size_t kMaxHistory = 900;
constexpr std::chrono::milliseconds kIoCallTimeout{2000};
constexpr uint64_t kBytesPerGb = 1'000'000'000;

uint64_t WallMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// "YYYY-MM" of the current UTC month: the data cap's period.
std::string CurrentMonth() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m", &utc);
  return text;
}

// The usage file: one line "YYYY-MM BYTES". A missing or unreadable file counts as zero (the
// cap protects the seller's bill; it is not money owed to anyone).
uint64_t LoadMonthBytes(const std::string& path, const std::string& month) {
  std::ifstream in(path);
  std::string stored_month;
  uint64_t bytes = 0;
  if (in >> stored_month >> bytes && stored_month == month) return bytes;
  return 0;
}

void SaveMonthBytes(const std::string& path, const std::string& month, uint64_t bytes) {
  // A failed write keeps the last count (see LoadMonthBytes).
  (void)WriteFileAtomically(path, month + " " + std::to_string(bytes) + "\n");
}

}  // namespace

struct Seller::State {
  NodeConfig config;
  payments::LedgerId ledger;
  CapListener on_cap;
  std::shared_ptr<spdlog::logger> log = Logger("dvpn-node");

  session::asio::io_context io{1};
  std::optional<session::asio::executor_work_guard<session::asio::io_context::executor_type>> work;
  std::unique_ptr<ExitAssembly> assembly;  // the exit, its payments, store and scheduler
  std::shared_ptr<session::ExitServer> exit;
  std::shared_ptr<session::ExitPayments> payments;
  payments::PromiseStore* store = nullptr;
  payments::SettlementScheduler* scheduler = nullptr;

  mutable std::mutex mu;  // guards everything below
  std::condition_variable cv;
  bool stopping = false;
  bool shut_down = false;
  payments::Price price;
  std::deque<EarningsPoint> history;
  std::string month;
  uint64_t month_base = 0;        // the month's bytes before this process counted any
  uint64_t month_exit_start = 0;  // the exit's total when the month (or the process) began
  SellerTotals totals;
  bool over_cap = false;
};

Result<std::unique_ptr<Seller>, Errc> Seller::Start(
    const NodeConfig& config, const payments::PrivateKey& provider_key,
    const tunnel::X25519KeyPair& tunnel_key, const payments::LedgerId& ledger,
    payments::LedgerGateway& gateway, CapListener on_cap) {
  auto state = std::make_unique<State>();
  State& s = *state;
  s.config = config;
  s.ledger = ledger;
  s.on_cap = std::move(on_cap);
  s.price = payments::Price{config.price_per_mb, config.price_per_minute};

  ExitSpec spec;
  spec.listen = config.tunnel_listen.ToString();
  spec.policy_rules = cli::PolicyRules(config.deny, config.allow);
  PaidExitSpec& paid = spec.paid.emplace();
  paid.terms.price = s.price;
  paid.terms.invoice_interval_bytes = config.invoice_interval_bytes;
  paid.terms.credit_window_bytes = config.credit_window_bytes;
  paid.terms.payment_grace_ms = config.payment_grace_ms;
  paid.terms.provider_key = &provider_key;
  paid.terms.ledger = ledger;
  paid.terms.gateway = &gateway;
  paid.promise_db = config.PromiseDbPath();
  paid.durability = config.promise_durability;
  paid.settle.settle_threshold = config.settle_threshold;
  paid.settle.settle_max_age = std::chrono::seconds(config.settle_max_age_s);
  session::ExitServer::Options& options = spec.options;
  options.log_destinations = config.log_destinations;
  options.max_tunnels = config.max_sessions;
  options.max_pending_handshakes = config.max_pending_handshakes;
  options.msg1_timeout = std::chrono::milliseconds(config.msg1_timeout_ms);
  // The node's own services are never reachable through its tunnel (docs/tunnel.md, "The
  // exit's own host"); the exit adds its own port. A port 0 here (tests) is bound later.
  options.protected_ports = {config.gossip_listen.port, config.advertise_port,
                             config.grpc_listen.port, config.http_listen.port};
  if (config.bandwidth_mbps > 0) {
    options.bandwidth = std::make_shared<session::BandwidthLimiter>(
        session::BandwidthLimiter::BytesPerSecondFromMbps(config.bandwidth_mbps));
  }
  if (config.full_tunnel) {
    session::ExitPacketsOptions& packets = spec.packets.emplace();
    packets.tun_name = config.tun_device;
    packets.v4_pool = config.inner_ipv4;
    packets.v6_pool = config.inner_ipv6.value_or(tunnel::DerivedIpv6Pool(tunnel_key.public_key));
    packets.udp_listen = session::udp::endpoint(session::asio::ip::address_v4::any(), config.udp_port);
    packets.offloads = config.packet_offloads;
  }
  auto built = ExitAssembly::Build(s.io, tunnel_key, std::move(spec));
  if (!built) {
    const std::string& why = built.error().message;
    switch (built.error().code) {
      case ExitAssemblyErrc::kListenAddress:
        return Fail(Errc::kBadConfig, "tunnel.listen: " + why);
      case ExitAssemblyErrc::kPolicy:
        return Fail(Errc::kBadConfig, "tunnel.allow/deny: " + why);
      case ExitAssemblyErrc::kPromiseStore:
        return Fail(Errc::kIo, config.PromiseDbPath() + ": " + why);
      case ExitAssemblyErrc::kListen:
        return Fail(Errc::kListen, "tunnel.listen " + config.tunnel_listen.ToString() + ": " + why);
      case ExitAssemblyErrc::kPackets:
        return Fail(Errc::kListen, "tunnel.full_tunnel: " + why);
    }
  }
  s.assembly = std::move(*built);
  s.exit = s.assembly->server();
  s.payments = s.assembly->payments();
  s.store = s.assembly->store();
  s.scheduler = s.assembly->scheduler();

  s.month = CurrentMonth();
  s.month_base = LoadMonthBytes(config.UsagePath(), s.month);
  s.totals.month_bytes_metered = s.month_base;

  auto seller = std::unique_ptr<Seller>(new Seller(std::move(state)));
  seller->tunnel_port_ = s.exit->local_endpoint().port();
  s.work.emplace(s.io.get_executor());
  s.assembly->Start();
  seller->io_thread_ = std::thread([&s] {
    NameThisThread("exit-io");
    s.io.run();
  });
  seller->Sample();  // applies a cap already reached before the first tunnel
  seller->sampler_thread_ = std::thread([p = seller.get()] {
    NameThisThread("sampler");
    p->SamplerLoop();
  });
  return seller;
}

Seller::Seller(std::unique_ptr<State> state) : state_(std::move(state)) {}

Seller::~Seller() { Shutdown(0ms, 0ms); }

bool Seller::OnIoThread(const std::function<void()>& fn) {
  auto done = std::make_shared<std::promise<void>>();
  auto future = done->get_future();
  session::asio::post(state_->io, [fn, done] {
    fn();
    done->set_value();
  });
  return future.wait_for(kIoCallTimeout) == std::future_status::ready;
}

SellerTotals Seller::Totals() {
  std::lock_guard lock(state_->mu);
  return state_->totals;
}

std::vector<session::ExitServer::TunnelInfo> Seller::Sessions() {
  // Copied on the io thread into a shared holder, so a late run after a timeout is harmless.
  auto out = std::make_shared<std::vector<session::ExitServer::TunnelInfo>>();
  auto exit = state_->exit;
  if (!OnIoThread([exit, out] { *out = exit->Tunnels(); })) return {};
  return *out;
}

bool Seller::ProtectPorts(const std::vector<uint16_t>& ports) {
  auto exit = state_->exit;
  return OnIoThread([exit, ports] { exit->ProtectPorts(ports); });
}

void Seller::SetPrice(const payments::Price& price) {
  {
    std::lock_guard lock(state_->mu);
    state_->price = price;
  }
  auto payments = state_->payments;
  session::asio::post(state_->io, [payments, price] { payments->SetPrice(price); });
}

payments::Price Seller::price() const {
  std::lock_guard lock(state_->mu);
  return state_->price;
}

payments::StoreResult<payments::Earnings> Seller::Earnings() {
  return state_->store->GetEarnings();
}

payments::StoreResult<std::vector<payments::StoredChannel>> Seller::Channels(size_t limit) {
  return state_->store->Settleable(state_->ledger, limit);
}

std::vector<EarningsPoint> Seller::History() const {
  std::lock_guard lock(state_->mu);
  return {state_->history.begin(), state_->history.end()};
}

payments::SchedulerStats Seller::SettlementStats() const { return state_->scheduler->Stats(); }

bool Seller::SettleNow(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const uint64_t steps_before = state_->scheduler->Stats().steps;
  state_->scheduler->SettleNow();
  // A step that starts after the request runs the pass; wait until one more has completed
  // than could have been under way when we asked.
  while (std::chrono::steady_clock::now() < deadline) {
    if (state_->scheduler->Stats().steps >= steps_before + 2) {
      Sample();
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

void Seller::Sample() {
  State& s = *state_;
  uint64_t exit_total = 0;
  size_t open = 0;
  auto exit = s.exit;
  auto counts = std::make_shared<std::pair<uint64_t, size_t>>();
  auto packets = std::make_shared<std::optional<FullTunnelTotals>>();
  bool live = OnIoThread([exit, counts, packets] {
    *counts = {exit->metered_bytes_total(), exit->tunnel_count()};
    if (const auto& p = exit->packets()) {
      *packets = FullTunnelTotals{p->session_count(), p->flows_in_use(), p->counters(), p->io()};
    }
  });
  if (live) std::tie(exit_total, open) = *counts;
  auto earnings = s.store->GetEarnings();

  std::optional<bool> cap_changed;
  {
    std::lock_guard lock(s.mu);
    if (!live) exit_total = s.totals.bytes_metered;
    const std::string month = CurrentMonth();
    if (month != s.month) {  // the month turned: the cap's count starts again
      s.month = month;
      s.month_base = 0;
      s.month_exit_start = exit_total;
    }
    s.totals.sessions_open = open;
    if (live) s.totals.full_tunnel = *packets;
    s.totals.bytes_metered = exit_total;
    s.totals.month_bytes_metered = s.month_base + (exit_total - s.month_exit_start);
    const uint64_t cap = s.config.monthly_data_gb * kBytesPerGb;
    const bool over = cap > 0 && s.totals.month_bytes_metered >= cap;
    if (over != s.over_cap) {
      s.over_cap = over;
      cap_changed = over;
    }
    if (!s.stopping) {
      s.totals.refusal = over ? std::optional<std::string>("monthly data cap reached (" +
                                                           std::to_string(s.config.monthly_data_gb) +
                                                           " GB); new sessions refused until "
                                                           "the month turns")
                              : std::nullopt;
    }
    const uint64_t now = WallMs();
    if (earnings && (s.history.empty() ||
                     now >= s.history.back().t_unix_ms + uint64_t(kHistoryEvery.count()))) {
      if (s.history.size() >= kMaxHistory) {
        // Thin the older half: memory stays bounded and the chart keeps the whole run.
        std::deque<EarningsPoint> thinned;
        for (size_t i = 0; i < s.history.size(); ++i) {
          if (i >= s.history.size() / 2 || i % 2 == 0) thinned.push_back(s.history[i]);
        }
        s.history.swap(thinned);
      }
      s.history.push_back({now, earnings->settled, earnings->unsettled, exit_total});
    }
    SaveMonthBytes(s.config.UsagePath(), s.month, s.totals.month_bytes_metered);
  }
  if (cap_changed) {
    auto refusal = Totals().refusal;
    // Over the cap the open sessions end too: the cap bounds the month's traffic.
    session::asio::post(s.io, [exit, refusal] {
      exit->SetRefusal(refusal);
      if (refusal) exit->CloseAll(tunnel::CloseReason::kShutdown, *refusal);
    });
    s.log->warn(*cap_changed ? "monthly data cap reached: sessions closed, new ones refused, "
                               "offer retired"
                             : "a new month: sessions accepted again");
    if (s.on_cap) s.on_cap(*cap_changed);
  }
}

void Seller::SamplerLoop() {
  std::unique_lock lock(state_->mu);
  while (!state_->stopping) {
    state_->cv.wait_for(lock, kSampleEvery);
    if (state_->stopping) break;
    lock.unlock();
    Sample();
    lock.lock();
  }
}

void Seller::Shutdown(std::chrono::milliseconds grace, std::chrono::milliseconds settle_timeout) {
  State& s = *state_;
  {
    std::lock_guard lock(s.mu);
    if (s.shut_down) return;
    s.shut_down = true;
    s.stopping = true;
    s.totals.refusal = "shutting down";
  }
  s.cv.notify_all();
  if (sampler_thread_.joinable()) sampler_thread_.join();

  auto exit = s.exit;
  // 1. No new tunnels; open ones get `grace` to end by themselves.
  OnIoThread([exit] { exit->StopAccepting(); });
  const auto grace_end = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < grace_end) {
    auto count = std::make_shared<size_t>(1);
    if (!OnIoThread([exit, count] { *count = exit->tunnel_count(); }) || *count == 0) break;
    std::this_thread::sleep_for(50ms);
  }
  // 2. The rest get CLOSE kShutdown; their last promises still arrive while they close.
  auto idle = std::make_shared<std::promise<void>>();
  auto idle_future = idle->get_future();
  session::asio::post(s.io, [exit, idle] { exit->Stop([idle] { idle->set_value(); }); });
  idle_future.wait_for(2s);
  s.work.reset();
  s.io.stop();
  if (io_thread_.joinable()) io_thread_.join();
  {
    // The io thread is gone: the exit's counters can be read here. The month's count is kept.
    std::lock_guard lock(s.mu);
    s.totals.sessions_open = 0;
    s.totals.bytes_metered = exit->metered_bytes_total();
    s.totals.month_bytes_metered = s.month_base + (s.totals.bytes_metered - s.month_exit_start);
    SaveMonthBytes(s.config.UsagePath(), s.month, s.totals.month_bytes_metered);
  }
  // 3. The tunnels go, the channel reads still running are cut short, everything accepted is
  // committed, then one final settlement.
  s.assembly->Settle(settle_timeout, *s.log);
}

}  // namespace dvpn::node
