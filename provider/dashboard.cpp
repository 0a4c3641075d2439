#include "provider/dashboard.h"

// <utility> before Boost: 1.74's awaitable.hpp uses std::exchange without including it.
#include <utility>

#include <array>
#include <cctype>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_set>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/io_thread.h"
#include "common/log.h"
#include "provider/dashboard_page.h"

namespace dvpn::node {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

using Request = http::request<http::empty_body>;
using Response = http::response<http::string_body>;

constexpr std::string_view kCsp =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
constexpr std::string_view kJson = "application/json";
constexpr std::string_view kHtml = "text/html; charset=utf-8";
constexpr std::string_view kPrometheus = "text/plain; version=0.0.4; charset=utf-8";
// After an error answer the connection is closed; what the client still sends is read and
// dropped for this long (at most kLingerBytes) so that the close does not reset the answer away.
constexpr std::chrono::milliseconds kLinger{500};
constexpr size_t kLingerBytes = 64 * 1024;
constexpr std::chrono::milliseconds kAcceptPause{100};  // after an accept error (e.g. EMFILE)
constexpr std::string_view kBusyResponse =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 21\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
    "too many connections\n";

// Beast 1.74 has its own string_view.
beast::string_view Bsv(std::string_view s) { return {s.data(), s.size()}; }
std::string_view Ssv(beast::string_view s) { return {s.data(), s.size()}; }

std::shared_ptr<spdlog::logger> Log() {
  static auto log = Logger("dashboard");
  return log;
}

void LogException(std::exception_ptr e) { LogTaskFailure(*Log(), "dashboard", e); }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

// "0".."65535", digits only.
std::optional<uint16_t> ParsePort(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  uint32_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return std::nullopt;
    v = v * 10 + static_cast<uint32_t>(ch - '0');
  }
  if (v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

// Splits "host:port", "[v6]:port" (port optional when `port_optional`). Host without brackets.
std::optional<std::pair<std::string, std::optional<uint16_t>>> SplitHostPort(std::string_view s,
                                                                             bool port_optional) {
  std::string_view host, rest;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = s.substr(1, close - 1);
    rest = s.substr(close + 1);
  } else {
    size_t colon = s.find(':');
    host = s.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : s.substr(colon);
  }
  if (host.empty()) return std::nullopt;
  std::optional<uint16_t> port;
  if (rest.empty()) {
    if (!port_optional) return std::nullopt;
  } else {
    if (rest.front() != ':') return std::nullopt;
    port = ParsePort(rest.substr(1));
    if (!port) return std::nullopt;
  }
  return std::make_pair(std::string(host), port);
}

// Whether the Host header names this machine's loopback (DNS rebinding defence).
bool IsLoopbackHost(std::string_view host_header) {
  auto split = SplitHostPort(host_header, /*port_optional=*/true);
  if (!split) return false;
  const std::string& host = split->first;
  if (EqualsIgnoreCase(host, "localhost")) return true;
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

}  // namespace

Result<LoopbackEndpoint, Errc> ParseLoopbackListen(const std::string& listen) {
  auto split = SplitHostPort(listen, /*port_optional=*/false);
  if (!split) {
    return Fail(Errc::kBadConfig, "dashboard listen address \"" + listen +
                                      "\": expected HOST:PORT, e.g. 127.0.0.1:7602");
  }
  auto& [host, port] = *split;
  if (EqualsIgnoreCase(host, "localhost")) return LoopbackEndpoint{"127.0.0.1", *port};
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    return Fail(Errc::kBadConfig, "dashboard listen address \"" + listen +
                                      "\": the host must be an IP literal or localhost");
  }
  if (!address.is_loopback()) {
    return Fail(Errc::kBadConfig, "dashboard listen address \"" + listen +
                                      "\" is not loopback; the dashboard has no authentication, "
                                      "so it listens on 127.0.0.1 or [::1] only");
  }
  return LoopbackEndpoint{address.to_string(), *port};
}

class DashboardServer::Impl {
 public:
  Impl(DashboardSource source, DashboardOptions options)
      : acceptor_(io_),
        accept_pause_(io_),
        source_(std::move(source)),
        options_(std::move(options)) {}

  ~Impl() {
    Stop();
    if (thread_.joinable()) thread_.join();
  }

  Result<void, Errc> Start(const LoopbackEndpoint& at);
  void Stop();
  uint16_t port() const { return port_; }
  DashboardStats stats() const {
    std::lock_guard lock(stats_mu_);
    return stats_;
  }

 private:
  enum class State { kNew, kRunning, kStopped };

  // One HTTP connection. Owned by its Serve coroutine and by live_. Io thread only.
  struct Conn {
    explicit Conn(tcp::socket s) : stream(std::move(s)) {}
    beast::tcp_stream stream;
  };
  using ConnPtr = std::shared_ptr<Conn>;

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Serve(ConnPtr c);
  // Writes an error answer, then LingerClose.
  asio::awaitable<void> FailAndClose(ConnPtr c, Response res);
  // Half-closes, drops what the client still sends for a short bounded time, closes.
  asio::awaitable<void> LingerClose(ConnPtr c);
  Response Handle(const Request& req);
  Response Body(const Request& req, http::status status, std::string_view type, std::string body);
  void Shutdown();
  void Close(Conn& c);
  template <class F>
  void Count(F f) {
    std::lock_guard lock(stats_mu_);
    f(stats_);
  }

  // Declared first so that it is destroyed last: everything below may hold I/O objects.
  asio::io_context io_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_pause_;
  const DashboardSource source_;
  const DashboardOptions options_;

  // Caller side.
  std::mutex mu_;
  State state_ = State::kNew;
  std::thread thread_;
  std::future<void> done_;  // ready when the io thread has left run()
  uint16_t port_ = 0;       // written before the thread starts

  mutable std::mutex stats_mu_;
  DashboardStats stats_;

  // Io thread.
  bool stopping_ = false;
  std::unordered_set<ConnPtr> live_;
};

Result<void, Errc> DashboardServer::Impl::Start(const LoopbackEndpoint& at) {
  std::lock_guard lock(mu_);
  if (state_ != State::kNew) return Fail(Errc::kListen, "the dashboard was started before");
  error_code ec;
  tcp::endpoint endpoint(asio::ip::make_address(at.address, ec), at.port);
  if (!ec) acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) port_ = acceptor_.local_endpoint(ec).port();
  if (ec) {
    error_code ignored;
    acceptor_.close(ignored);
    return Fail(Errc::kListen, "dashboard: cannot listen on " + at.address + ":" +
                                   std::to_string(at.port) + ": " + ec.message());
  }
  asio::co_spawn(io_, AcceptLoop(), LogException);
  std::promise<void> done;
  done_ = done.get_future();
  thread_ = RunIoThread(io_, Log(), "dashboard", std::move(done));
  state_ = State::kRunning;
  Log()->info("dashboard listening on port {}", port_);
  return {};
}

void DashboardServer::Impl::Stop() {
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kRunning) {
      state_ = State::kStopped;
      return;
    }
    state_ = State::kStopped;
  }
  asio::post(io_, [this] { Shutdown(); });
  if (io_.get_executor().running_in_this_thread()) {
    // Called from a source function: the io thread cannot join itself; the destructor joins.
    Log()->error("dashboard: Stop() called on the io thread; not joined");
    return;
  }
  if (done_.wait_for(options_.stop_timeout) != std::future_status::ready) {
    Log()->warn("dashboard: graceful stop took over {} ms; stopping the loop",
                options_.stop_timeout.count());
    io_.stop();
  }
  thread_.join();
  Count([this](DashboardStats& s) { s.open = 0; });
}

void DashboardServer::Impl::Shutdown() {
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  accept_pause_.cancel();
  for (const ConnPtr& c : live_) Close(*c);
}

void DashboardServer::Impl::Close(Conn& c) {
  error_code ignored;
  c.stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  c.stream.close();
}

asio::awaitable<void> DashboardServer::Impl::AcceptLoop() {
  while (!stopping_) {
    error_code ec;
    tcp::socket socket(io_);
    co_await acceptor_.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      Log()->warn("dashboard: accept failed: {}", ec.message());
      accept_pause_.expires_after(kAcceptPause);
      co_await accept_pause_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (live_.size() >= options_.max_connections) {
      Count([](DashboardStats& s) { ++s.refused; });
      // Best effort: the send buffer of a fresh socket takes this at once, or it is dropped.
      socket.non_blocking(true, ec);
      if (!ec) socket.write_some(asio::buffer(kBusyResponse), ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
      socket.close(ec);
      continue;
    }
    auto c = std::make_shared<Conn>(std::move(socket));
    live_.insert(c);
    Count([this](DashboardStats& s) {
      ++s.accepted;
      s.open = live_.size();
    });
    asio::co_spawn(io_, Serve(c), [this, c](std::exception_ptr e) {
      LogException(e);
      live_.erase(c);
      Count([this](DashboardStats& s) { s.open = live_.size(); });
    });
  }
}

asio::awaitable<void> DashboardServer::Impl::Serve(ConnPtr c) {
  // Bounded: the parser stops at header_limit first; the margin lets it see that it has.
  beast::flat_buffer buffer(options_.header_limit + 1024);
  for (;;) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options_.header_limit));
    parser.body_limit(0);
    error_code ec;
    c->stream.expires_after(options_.read_timeout);
    co_await http::async_read(c->stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    if (ec == http::error::end_of_stream) {  // the client is done
      Close(*c);
      co_return;
    }
    if (ec == beast::error::timeout) {
      Count([](DashboardStats& s) { ++s.timeouts; });
      Log()->debug("dashboard: request not received within {} ms; closed",
                   options_.read_timeout.count());
      Close(*c);
      co_return;
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      Request none;
      co_await FailAndClose(c, Body(none, http::status::request_header_fields_too_large, kTextPlain,
                                    "request header too large\n"));
      co_return;
    }
    if (ec == http::error::body_limit || ec == http::error::unexpected_body) {
      Request none;
      co_await FailAndClose(c, Body(none, http::status::payload_too_large, kTextPlain,
                                    "the dashboard takes no request body\n"));
      co_return;
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_version).category() &&
        ec != http::error::partial_message) {
      Request none;
      co_await FailAndClose(c, Body(none, http::status::bad_request, kTextPlain,
                                    "bad request: " + ec.message() + "\n"));
      co_return;
    }
    if (ec) {  // the socket failed, or the client left in the middle of a request
      Close(*c);
      co_return;
    }

    const Request& req = parser.get();
    Response res = Handle(req);
    Count([](DashboardStats& s) { ++s.requests; });
    if (res.result() == http::status::bad_request ||
        res.result() == http::status::misdirected_request) {
      co_await FailAndClose(c, std::move(res));
      co_return;
    }
    const bool keep_alive = res.keep_alive();
    c->stream.expires_after(options_.write_timeout);
    co_await http::async_write(c->stream, res, asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    if (ec) {
      if (ec == beast::error::timeout) Count([](DashboardStats& s) { ++s.timeouts; });
      Close(*c);
      co_return;
    }
    if (!keep_alive) {
      co_await LingerClose(c);
      co_return;
    }
  }
}

asio::awaitable<void> DashboardServer::Impl::FailAndClose(ConnPtr c, Response res) {
  Count([](DashboardStats& s) { ++s.bad_requests; });
  res.keep_alive(false);
  error_code ec;
  c->stream.expires_after(options_.write_timeout);
  co_await http::async_write(c->stream, res, asio::redirect_error(asio::use_awaitable, ec));
  if (stopping_) co_return;
  if (ec) {
    Close(*c);
    co_return;
  }
  co_await LingerClose(c);
}

asio::awaitable<void> DashboardServer::Impl::LingerClose(ConnPtr c) {
  // Stop sending, drop what the client still sends (bounded in time and bytes), then close:
  // closing with unread data would reset the connection and could destroy the answer before
  // the client has read it.
  error_code ec;
  c->stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  c->stream.expires_after(kLinger);
  std::array<char, 4096> sink;
  size_t dropped = 0;
  while (!ec && dropped < kLingerBytes && !stopping_) {
    dropped += co_await c->stream.async_read_some(asio::buffer(sink),
                                                  asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!stopping_) Close(*c);
}

Response DashboardServer::Impl::Body(const Request& req, http::status status, std::string_view type,
                                     std::string body) {
  Response res{status, req.version() == 10 ? 10 : 11};
  res.set(http::field::content_type, Bsv(type));
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("X-Frame-Options", "DENY");
  res.set("Referrer-Policy", "no-referrer");
  res.set("Content-Security-Policy", Bsv(kCsp));
  res.keep_alive(req.keep_alive());
  if (req.method() == http::verb::head) {
    res.content_length(body.size());  // the size of what GET would send; no body
  } else {
    res.body() = std::move(body);
    res.prepare_payload();
  }
  return res;
}

Response DashboardServer::Impl::Handle(const Request& req) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    Response res = Body(req, http::status::method_not_allowed, kTextPlain, "method not allowed\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  auto host = req.find(http::field::host);
  if (host == req.end()) {
    if (req.version() >= 11) {
      return Body(req, http::status::bad_request, kTextPlain, "bad request: no Host header\n");
    }
  } else if (!IsLoopbackHost(Ssv(host->value()))) {
    return Body(req, http::status::misdirected_request, kTextPlain,
                "the dashboard answers to 127.0.0.1, [::1] or localhost only\n");
  }

  std::string_view target = Ssv(req.target());
  target = target.substr(0, target.find_first_of("?#"));
  std::function<std::string()> const* fn = nullptr;
  std::string_view type;
  if (target == "/") {
    return Body(req, http::status::ok, kHtml, std::string(kDashboardPage));
  } else if (target == "/api/status") {
    fn = &source_.status_json;
    type = kJson;
  } else if (target == "/api/earnings") {
    fn = &source_.earnings_json;
    type = kJson;
  } else if (target == "/metrics") {
    fn = &source_.metrics_text;
    type = kPrometheus;
  } else {
    return Body(req, http::status::not_found, kTextPlain, "not found\n");
  }
  if (!*fn) return Body(req, http::status::internal_server_error, kTextPlain, "no source\n");
  try {
    return Body(req, http::status::ok, type, (*fn)());
  } catch (const std::exception& e) {
    Log()->error("dashboard: source for {} failed: {}", std::string(target), e.what());
  } catch (...) {
    Log()->error("dashboard: source for {} failed", std::string(target));
  }
  return Body(req, http::status::internal_server_error, kTextPlain, "internal error\n");
}

// ---------------------------------------------------------------------------------------------

DashboardServer::DashboardServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DashboardServer::~DashboardServer() { Stop(); }
uint16_t DashboardServer::port() const { return impl_->port(); }
void DashboardServer::Stop() { impl_->Stop(); }
DashboardStats DashboardServer::stats() const { return impl_->stats(); }

Result<std::unique_ptr<DashboardServer>, Errc> DashboardServer::Start(
    const std::string& listen, DashboardSource source, DashboardOptions options) {
  auto at = ParseLoopbackListen(listen);
  if (!at) return std::unexpected(std::move(at.error()));
  if (options.header_limit < 256 || options.header_limit > (1u << 20)) {
    return Fail(Errc::kBadConfig, "dashboard: header_limit must be in [256, 1 MiB]");
  }
  if (options.max_connections == 0) {
    return Fail(Errc::kBadConfig, "dashboard: max_connections is 0");
  }
  if (options.read_timeout.count() <= 0 || options.write_timeout.count() <= 0) {
    return Fail(Errc::kBadConfig, "dashboard: timeouts must be positive");
  }
  auto impl = std::make_unique<Impl>(std::move(source), std::move(options));
  if (auto started = impl->Start(*at); !started) {
    return std::unexpected(std::move(started.error()));
  }
  return std::unique_ptr<DashboardServer>(new DashboardServer(std::move(impl)));
}

}  // namespace dvpn::node
