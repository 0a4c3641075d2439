#include "marketplace/gossip_transport.h"

// <utility> before Boost: 1.74's awaitable.hpp uses std::exchange without including it.
#include <utility>

#include <array>
#include <atomic>
#include <deque>
#include <exception>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/io_thread.h"
#include "common/log.h"
#include "marketplace/wire.h"

namespace dvpn::marketplace {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr size_t kFrameHeader = 4;
constexpr size_t kMaxFramesPerWrite = 64;
constexpr size_t kMaxResolvedAddresses = 8;

std::shared_ptr<spdlog::logger> Log() {
  static auto log = Logger("gossip");
  return log;
}

// The completion of every coroutine: an exception is our bug; log it, keep the node running.
void LogException(std::exception_ptr e) { LogTaskFailure(*Log(), "gossip", e); }

// One answer to a caller on another thread. If the work is dropped without running (the
// transport stopped first), the caller gets `fallback` instead of a broken promise.
template <class T>
class Reply {
 public:
  explicit Reply(T fallback) : fallback_(std::move(fallback)) {}
  ~Reply() {
    if (!set_) promise_.set_value(std::move(fallback_));
  }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  std::future<T> future() { return promise_.get_future(); }
  void Set(T value) {
    set_ = true;
    promise_.set_value(std::move(value));
  }

 private:
  std::promise<T> promise_;
  T fallback_;
  bool set_ = false;
};

NodeId RandomNodeId() {
  std::random_device rd;
  NodeId id{};
  for (auto& b : id) b = static_cast<uint8_t>(rd());
  return id;
}

}  // namespace

class GossipTransport::Impl final : public GossipHost {
 public:
  Impl(GossipConfig config, GossipTransportOptions options,
       std::shared_ptr<SignatureChecker> checker)
      : acceptor_(io_),
        tick_timer_(io_),
        accept_pause_(io_),
        config_(std::move(config)),
        options_(std::move(options)),
        checker_(std::move(checker)) {
    if (config_.node_id == NodeId{}) config_.node_id = RandomNodeId();
  }

  ~Impl() override {
    Stop();
    if (thread_.joinable()) thread_.join();
  }

  Result<void, Errc> Start();
  void Stop();

  uint16_t port() const { return port_.load(); }
  const NodeId& node_id() const { return config_.node_id; }

  // Runs `fn` on the io thread and hands its result to the caller's future; `fallback` when the
  // transport is not running (or stops before `fn` ran).
  template <class T, class F>
  std::future<T> Call(F fn, T fallback) {
    auto reply = std::make_shared<Reply<T>>(std::move(fallback));
    auto future = reply->future();
    std::lock_guard lock(mu_);
    if (state_ == State::kRunning) {
      asio::post(io_, [reply, fn = std::move(fn)]() mutable { reply->Set(fn()); });
    }
    return future;
  }

  GossipTransportStats StatsNow() const {
    GossipTransportStats s = counters_;
    s.node = node_->stats();
    s.offers = node_->book().size();
    s.live_offers = node_->book().live_count();
    s.connections = live_.size();
    return s;
  }

  std::vector<Offer> QueryNow(const OfferQuery& query) {
    std::vector<Offer> out;
    for (const auto& o : node_->book().Query(query, NowUnix())) out.push_back(*o);
    return out;
  }

  Result<void, Errc> PublishNow(const Offer& offer) { return node_->Publish(offer); }

  uint64_t AddBookListener(BookListener listener);
  void RemoveBookListener(uint64_t id);

  // GossipHost: called on the io thread from inside the node's methods.
  void Send(PeerId peer, std::vector<uint8_t> payload) override;
  void Dial(const Endpoint& to) override;
  void Close(PeerId peer) override;
  uint64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  uint64_t NowUnix() override {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

 private:
  enum class State { kNew, kRunning, kStopped };

  // One TCP connection. Owned by shared_ptr: by live_ until its writer ends, by its two
  // coroutines, and by conns_ while the node knows it. Io thread only.
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(asio::io_context& io, PeerId id, tcp::socket s)
        : id(id), socket(std::move(s)), write_signal(io), flush_timer(io) {
      write_signal.expires_at(asio::steady_timer::time_point::max());
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
    }
    struct Frame {
      std::array<uint8_t, kFrameHeader> header;
      std::vector<uint8_t> payload;
    };
    PeerId id;
    tcp::socket socket;
    asio::steady_timer write_signal;  // never expires; cancel() wakes the writer
    asio::steady_timer flush_timer;   // bounds the flush after a node-initiated close
    std::deque<Frame> queue;
    size_t queued_bytes = 0;    // queued and in flight, frame headers included
    std::vector<uint8_t> read;  // one frame's payload; capacity at most kMaxGossipFrame
    bool closing = false;
    bool flush = false;  // closing: write what is queued first
  };
  using ConnPtr = std::shared_ptr<Conn>;

  // One dial in progress (resolve, then connect to each address in turn).
  struct DialOp {
    explicit DialOp(asio::io_context& io) : resolver(io), socket(io), timer(io) {}
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;
    bool timed_out = false;
    bool aborted = false;  // the transport is stopping
  };

  template <class Awaitable>
  void Spawn(Awaitable task) {
    asio::co_spawn(io_, std::move(task), LogException);
  }

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> TickLoop();
  asio::awaitable<void> DialTask(std::shared_ptr<DialOp> op, Endpoint to);
  asio::awaitable<void> ReadLoop(ConnPtr c);
  asio::awaitable<void> WriteLoop(ConnPtr c);

  void AddConn(tcp::socket socket, bool outbound, const Endpoint& remote);
  // Closes the socket (after a bounded flush of the queue when `flush`). Idempotent.
  void CloseConn(Conn& c, bool flush);
  // The connection failed on its own: closes it and tells the node, unless the node closed it
  // first. `inside_node`: we are inside a node method, so the node is told from a posted task.
  void Lost(Conn& c, bool inside_node, const std::string& why);
  void Shutdown();
  void DispatchChange(const OfferChange& change);

  // Declared first so that it is destroyed last: everything below may hold I/O objects.
  asio::io_context io_;
  tcp::acceptor acceptor_;
  asio::steady_timer tick_timer_;
  asio::steady_timer accept_pause_;

  GossipConfig config_;
  const GossipTransportOptions options_;
  std::shared_ptr<SignatureChecker> checker_;

  // Caller side.
  mutable std::mutex mu_;
  State state_ = State::kNew;
  std::thread thread_;
  std::future<void> done_;  // ready when the io thread has left run()
  std::atomic<uint16_t> port_{0};

  struct Listener {
    BookListener fn;
    std::atomic<bool> active{true};
  };
  std::mutex listeners_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Listener>> listeners_;
  uint64_t next_listener_ = 1;

  // Io thread.
  std::unique_ptr<GossipNode> node_;
  bool stopping_ = false;
  PeerId next_peer_ = 1;
  std::unordered_map<PeerId, ConnPtr> conns_;  // connections the node knows
  std::unordered_set<ConnPtr> live_;           // every open socket (closing ones too)
  std::unordered_set<std::shared_ptr<DialOp>> dials_;
  GossipTransportStats counters_;  // the transport's own fields only
};

// ---------------------------------------------------------------------------------------------
// Start and stop

Result<void, Errc> GossipTransport::Impl::Start() {
  std::lock_guard lock(mu_);
  if (state_ != State::kNew) {
    return Fail(Errc::kNotRunning, "the gossip transport was started before");
  }
  if (config_.round.count() <= 0) return Fail(Errc::kBadConfig, "gossip round must be positive");
  if (!options_.listen_address.empty()) {
    error_code ec;
    auto address = asio::ip::make_address(options_.listen_address, ec);
    if (ec) return Fail(Errc::kBadConfig, "bad gossip listen address: " + options_.listen_address);
    tcp::endpoint at(address, options_.listen_port);
    acceptor_.open(at.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(at, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      error_code ignored;
      acceptor_.close(ignored);
      return Fail(Errc::kTransport, "cannot listen for gossip on " + options_.listen_address +
                                        ":" + std::to_string(options_.listen_port) + ": " +
                                        ec.message());
    }
    port_ = acceptor_.local_endpoint(ec).port();
    if (config_.listen_port == 0) config_.listen_port = port_;
  }

  node_ = std::make_unique<GossipNode>(config_, *this, checker_);
  node_->SetBookListener([this](const OfferChange& change) { DispatchChange(change); });
  if (acceptor_.is_open()) Spawn(AcceptLoop());
  Spawn(TickLoop());
  asio::post(io_, [this] { node_->Start(); });

  std::promise<void> done;
  done_ = done.get_future();
  thread_ = RunIoThread(io_, Log(), "gossip", std::move(done));
  state_ = State::kRunning;
  Log()->info("gossip node started (listening on port {}, {} bootstrap peers)", port_.load(),
              config_.bootstrap.size());
  return {};
}

void GossipTransport::Impl::Stop() {
  {
    std::lock_guard lock(mu_);
    if (state_ == State::kNew) state_ = State::kStopped;
    if (state_ != State::kRunning) return;
    state_ = State::kStopped;
  }
  asio::post(io_, [this] { Shutdown(); });
  if (io_.get_executor().running_in_this_thread()) {
    // Called from a listener: the io thread cannot join itself; the destructor joins.
    Log()->error("gossip: Stop() called on the io thread; not joined");
    return;
  }
  if (done_.wait_for(options_.stop_timeout) != std::future_status::ready) {
    Log()->warn("gossip: graceful stop took over {} ms; stopping the loop",
                options_.stop_timeout.count());
    io_.stop();
  }
  thread_.join();
}

void GossipTransport::Impl::Shutdown() {
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  tick_timer_.cancel();
  accept_pause_.cancel();
  for (const auto& op : dials_) {
    op->aborted = true;
    op->resolver.cancel();
    op->socket.close(ignored);
    op->timer.cancel();
  }
  for (const auto& c : live_) {
    c->closing = true;
    c->flush = false;
    c->queue.clear();
    c->socket.close(ignored);
    c->flush_timer.cancel();
    c->write_signal.cancel();
  }
  conns_.clear();
  // The coroutines now finish; run() returns when the last one has.
}

// ---------------------------------------------------------------------------------------------
// Book listeners

uint64_t GossipTransport::Impl::AddBookListener(BookListener listener) {
  auto entry = std::make_shared<Listener>();
  entry->fn = std::move(listener);
  std::lock_guard lock(listeners_mu_);
  uint64_t id = next_listener_++;
  listeners_.emplace(id, std::move(entry));
  return id;
}

void GossipTransport::Impl::RemoveBookListener(uint64_t id) {
  {
    std::lock_guard lock(listeners_mu_);
    auto it = listeners_.find(id);
    if (it == listeners_.end()) return;
    it->second->active = false;
    listeners_.erase(it);
  }
  if (io_.get_executor().running_in_this_thread()) return;
  // A dispatch may be calling it right now: wait until the io thread has moved on.
  Call([] { return true; }, false).wait_for(options_.stop_timeout);
}

void GossipTransport::Impl::DispatchChange(const OfferChange& change) {
  std::vector<std::shared_ptr<Listener>> targets;
  {
    std::lock_guard lock(listeners_mu_);
    if (listeners_.empty()) return;
    targets.reserve(listeners_.size());
    for (const auto& [id, l] : listeners_) targets.push_back(l);
  }
  for (const auto& l : targets) {
    if (!l->active) continue;
    try {
      l->fn(change);
    } catch (const std::exception& e) {
      Log()->error("gossip: book listener failed: {}", e.what());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GossipHost

void GossipTransport::Impl::Send(PeerId peer, std::vector<uint8_t> payload) {
  auto it = conns_.find(peer);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.closing) return;  // lost; the node hears of it from a posted task
  if (payload.empty() || payload.size() > kMaxGossipFrame) {
    Log()->error("gossip: refusing to send a {}-byte frame to peer {}", payload.size(), peer);
    return;
  }
  size_t bytes = kFrameHeader + payload.size();
  if (c.queued_bytes + bytes > options_.send_queue_limit) {
    ++counters_.send_overflows;
    Lost(c, true, "send queue over its limit (the peer does not read)");
    return;
  }
  Conn::Frame frame;
  auto n = static_cast<uint32_t>(payload.size());
  frame.header = {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                  static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
  frame.payload = std::move(payload);
  c.queue.push_back(std::move(frame));
  c.queued_bytes += bytes;
  c.write_signal.cancel();
}

void GossipTransport::Impl::Dial(const Endpoint& to) {
  if (stopping_) return;
  ++counters_.dials;
  auto op = std::make_shared<DialOp>(io_);
  dials_.insert(op);
  Spawn(DialTask(op, to));
}

void GossipTransport::Impl::Close(PeerId peer) {
  auto it = conns_.find(peer);
  if (it == conns_.end()) return;
  ConnPtr c = it->second;
  conns_.erase(it);
  CloseConn(*c, true);
}

// ---------------------------------------------------------------------------------------------
// Connections

asio::awaitable<void> GossipTransport::Impl::AcceptLoop() {
  for (;;) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      Log()->warn("gossip: accept failed: {}", ec.message());
      // Out of descriptors (or similar) fails again at once: pause instead of spinning.
      accept_pause_.expires_after(std::chrono::milliseconds(100));
      co_await accept_pause_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping_) co_return;
      continue;
    }
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (ec) continue;
    if (live_.size() >= options_.max_connections) {
      ++counters_.refused;
      Log()->debug("gossip: {} connections open (the maximum); inbound connection closed",
                   live_.size());
      continue;  // `socket` closes here
    }
    ++counters_.accepted;
    auto address = remote.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
      address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    }
    // Inbound: the remote's listening port is unknown until its Hello.
    AddConn(std::move(socket), false, Endpoint{address.to_string(), 0});
  }
}

asio::awaitable<void> GossipTransport::Impl::TickLoop() {
  auto next = std::chrono::steady_clock::now();
  while (!stopping_) {
    next += config_.round;
    auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // fell behind (a long pause): no burst of ticks
    tick_timer_.expires_at(next);
    error_code ec;
    co_await tick_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    node_->Tick();
  }
}

asio::awaitable<void> GossipTransport::Impl::DialTask(std::shared_ptr<DialOp> op, Endpoint to) {
  // Never answer inside the node's own Dial call.
  co_await asio::post(io_, asio::use_awaitable);
  op->timer.expires_after(options_.connect_timeout);
  op->timer.async_wait([op](error_code ec) {
    if (ec) return;
    op->timed_out = true;
    op->resolver.cancel();
    error_code ignored;
    op->socket.close(ignored);
  });

  std::string error;
  std::vector<tcp::endpoint> targets;
  if (to.port == 0) {
    error = "port 0";
  } else {
    error_code ec;
    auto address = asio::ip::make_address(to.host, ec);
    if (!ec) {
      targets.emplace_back(address, to.port);
    } else if (to.host == "localhost") {
      targets.emplace_back(asio::ip::address_v4::loopback(), to.port);
      targets.emplace_back(asio::ip::address_v6::loopback(), to.port);
    } else if (!op->aborted) {
      auto results = co_await op->resolver.async_resolve(
          to.host, std::to_string(to.port), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        error = "cannot resolve: " + ec.message();
      } else {
        for (const auto& r : results) {
          if (targets.size() == kMaxResolvedAddresses) break;
          targets.push_back(r.endpoint());
        }
      }
    }
  }

  bool connected = false;
  for (const auto& target : targets) {
    if (op->timed_out || op->aborted) break;
    error_code ec;
    if (op->socket.is_open()) op->socket.close(ec);
    op->socket.open(target.protocol(), ec);
    if (!ec) {
      co_await op->socket.async_connect(target, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!ec && !op->timed_out && !op->aborted) {
      connected = true;
      break;
    }
    error = ec.message();
  }
  op->timer.cancel();
  dials_.erase(op);
  if (op->aborted || stopping_) co_return;
  if (!connected) {
    if (op->timed_out) error = "timed out";
    if (targets.empty() && error.empty()) error = "no address";
    ++counters_.dials_failed;
    Log()->debug("gossip: dial {} failed: {}", to.ToString(), error);
    node_->OnDialFailed(to);
    co_return;
  }
  AddConn(std::move(op->socket), true, to);
}

void GossipTransport::Impl::AddConn(tcp::socket socket, bool outbound, const Endpoint& remote) {
  auto c = std::make_shared<Conn>(io_, next_peer_++, std::move(socket));
  live_.insert(c);
  conns_.emplace(c->id, c);
  Spawn(ReadLoop(c));
  Spawn(WriteLoop(c));
  Log()->debug("gossip: peer {} connected ({} {})", c->id, outbound ? "to" : "from",
               remote.ToString());
  node_->OnConnected(c->id, outbound, remote);
}

asio::awaitable<void> GossipTransport::Impl::ReadLoop(ConnPtr c) {
  std::array<uint8_t, kFrameHeader> header{};
  while (!c->closing) {
    error_code ec;
    co_await asio::async_read(c->socket, asio::buffer(header),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (c->closing) break;
    if (ec) {
      Lost(*c, false,
           ec == asio::error::eof ? "the peer closed the connection"
                                  : "read failed: " + ec.message());
      break;
    }
    uint32_t length = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) |
                      (uint32_t{header[2]} << 8) | uint32_t{header[3]};
    if (length == 0 || length > kMaxGossipFrame) {
      ++counters_.bad_frames;
      Lost(*c, false, "bad frame length " + std::to_string(length));
      break;
    }
    c->read.resize(length);  // capacity never exceeds kMaxGossipFrame
    co_await asio::async_read(c->socket, asio::buffer(c->read),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (c->closing) break;
    if (ec) {
      Lost(*c, false, "read failed: " + ec.message());
      break;
    }
    if (stopping_) break;
    node_->OnFrame(c->id, ByteSpan(c->read.data(), c->read.size()));
  }
}

asio::awaitable<void> GossipTransport::Impl::WriteLoop(ConnPtr c) {
  std::vector<Conn::Frame> flight;
  std::vector<asio::const_buffer> iov;
  for (;;) {
    while (c->queue.empty() && !c->closing) {
      error_code ec;
      co_await c->write_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (c->queue.empty() || (c->closing && !c->flush)) break;
    flight.clear();
    iov.clear();
    size_t bytes = 0;
    while (!c->queue.empty() && flight.size() < kMaxFramesPerWrite) {
      flight.push_back(std::move(c->queue.front()));
      c->queue.pop_front();
    }
    for (const auto& f : flight) {
      iov.push_back(asio::buffer(f.header));
      iov.push_back(asio::buffer(f.payload));
      bytes += kFrameHeader + f.payload.size();
    }
    error_code ec;
    co_await asio::async_write(c->socket, iov, asio::redirect_error(asio::use_awaitable, ec));
    c->queued_bytes -= bytes;
    if (ec) {
      if (!c->closing) Lost(*c, false, "write failed: " + ec.message());
      break;
    }
  }
  error_code ignored;
  c->socket.shutdown(tcp::socket::shutdown_both, ignored);
  c->socket.close(ignored);
  c->flush_timer.cancel();
  live_.erase(c);
}

void GossipTransport::Impl::CloseConn(Conn& c, bool flush) {
  if (c.closing) return;
  c.closing = true;
  error_code ignored;
  if (flush && c.queued_bytes > 0) {
    c.flush = true;
    c.socket.shutdown(tcp::socket::shutdown_receive, ignored);
    c.flush_timer.expires_after(options_.close_flush);
    c.flush_timer.async_wait([c = c.shared_from_this()](error_code ec) {
      if (ec) return;
      error_code ignored;
      c->socket.close(ignored);
    });
  } else {
    c.queue.clear();
    c.socket.shutdown(tcp::socket::shutdown_both, ignored);
    c.socket.close(ignored);
  }
  c.write_signal.cancel();
}

void GossipTransport::Impl::Lost(Conn& c, bool inside_node, const std::string& why) {
  Log()->debug("gossip: peer {} lost: {}", c.id, why);
  CloseConn(c, false);
  if (stopping_) return;
  auto it = conns_.find(c.id);
  if (it == conns_.end()) return;  // the node closed it already
  if (!inside_node) {
    PeerId id = c.id;
    conns_.erase(it);
    node_->OnDisconnected(id);
    return;
  }
  // The entry stays (closing) until the task runs: if the node closes the peer meanwhile, the
  // task finds nothing and the node is not told twice.
  asio::post(io_, [this, id = c.id] {
    auto it = conns_.find(id);
    if (stopping_ || it == conns_.end()) return;
    conns_.erase(it);
    node_->OnDisconnected(id);
  });
}

// ---------------------------------------------------------------------------------------------
// GossipTransport

GossipTransport::GossipTransport(GossipConfig config, GossipTransportOptions options,
                                 std::shared_ptr<SignatureChecker> checker)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options), std::move(checker))) {}

GossipTransport::~GossipTransport() = default;

Result<void, Errc> GossipTransport::Start() { return impl_->Start(); }
void GossipTransport::Stop() { impl_->Stop(); }
uint16_t GossipTransport::port() const { return impl_->port(); }
const NodeId& GossipTransport::node_id() const { return impl_->node_id(); }

std::future<Result<void, Errc>> GossipTransport::Publish(Offer offer) {
  Impl* impl = impl_.get();
  return impl->Call(
      [impl, offer = std::move(offer)]() -> Result<void, Errc> { return impl->PublishNow(offer); },
      Result<void, Errc>(Fail(Errc::kNotRunning, "the gossip node is not running")));
}

std::future<std::vector<Offer>> GossipTransport::QueryOffers(OfferQuery query) {
  Impl* impl = impl_.get();
  return impl->Call([impl, query = std::move(query)] { return impl->QueryNow(query); },
                    std::vector<Offer>{});
}

std::future<GossipTransportStats> GossipTransport::Stats() {
  Impl* impl = impl_.get();
  return impl->Call([impl] { return impl->StatsNow(); }, GossipTransportStats{});
}

uint64_t GossipTransport::AddBookListener(BookListener listener) {
  return impl_->AddBookListener(std::move(listener));
}

void GossipTransport::RemoveBookListener(uint64_t id) { impl_->RemoveBookListener(id); }

}  // namespace dvpn::marketplace
