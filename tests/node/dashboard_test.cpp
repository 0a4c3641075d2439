// The dashboard's HTTP server (provider/dashboard.h) on real sockets, and its page
// rendered by headless Chromium (tests/node/chromium.h).
#include "provider/dashboard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "provider/dashboard_page.h"
#include "tests/node/chromium.h"

namespace dvpn::node {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// A small blocking HTTP/1.1 client over a raw socket; every wait is bounded by a deadline.

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

std::string Lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

class Conn {
 public:
  explicit Conn(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect");
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Conn() { Close(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // False when the peer has closed or reset.
  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads more bytes into buffer_ before `deadline`. False on EOF, error or the deadline.
  bool Fill(Clock::time_point deadline) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        timed_out_ = true;
        return false;
      }
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;
      char chunk[16384];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) {
        closed_ = true;
        return false;
      }
      buffer_.append(chunk, static_cast<size_t>(n));
      return true;
    }
  }

  // One response; nullopt when the connection closed (or the deadline passed) before a whole
  // one arrived. `head`: the answer to HEAD (no body, whatever Content-Length says).
  std::optional<HttpResponse> ReadResponse(Clock::time_point deadline, bool head = false) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline)) return std::nullopt;
    }
    HttpResponse res;
    std::string head_text = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    size_t line_end = head_text.find("\r\n");
    std::string status_line = head_text.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
    res.status = std::stoi(status_line.substr(9, 3));
    size_t pos = line_end == std::string::npos ? head_text.size() : line_end + 2;
    while (pos < head_text.size()) {
      size_t next = head_text.find("\r\n", pos);
      if (next == std::string::npos) next = head_text.size();
      std::string line = head_text.substr(pos, next - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        res.headers[Lower(line.substr(0, colon))] = value;
      }
      pos = next + 2;
    }
    size_t length = 0;
    if (!head && res.headers.count("content-length")) {
      length = std::stoul(res.headers["content-length"]);
    }
    while (buffer_.size() < length) {
      if (!Fill(deadline)) return std::nullopt;
    }
    res.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return res;
  }

  // Reads (and drops) until the server closes; true when it did before the deadline.
  bool WaitClosed(Clock::time_point deadline) {
    while (Fill(deadline)) buffer_.clear();
    return closed_;
  }

  // Non-blocking: has the server closed (EOF or reset)?
  bool PeerClosed() {
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return false;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n <= 0) return true;
    }
  }

 private:
  int fd_ = -1;
  std::string buffer_;
  bool closed_ = false;
  bool timed_out_ = false;
};

std::string Request(const std::string& method, const std::string& target,
                    const std::string& extra = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

// One request on a fresh connection.
std::optional<HttpResponse> Fetch(uint16_t port, const std::string& method,
                                  const std::string& target, const std::string& extra = "") {
  Conn c(port);
  if (!c.Send(Request(method, target, extra))) return std::nullopt;
  return c.ReadResponse(Clock::now() + 5s, method == "HEAD");
}

// ---------------------------------------------------------------------------------------------
// Sources

// Changing figures: each call returns the next counter value.
struct CountingSource {
  std::shared_ptr<std::atomic<int>> n = std::make_shared<std::atomic<int>>(0);
  DashboardSource Make() const {
    auto counter = n;
    return DashboardSource{
        .status_json =
            [counter] { return "{\"sessions_open\":" + std::to_string(++*counter) + "}"; },
        .earnings_json =
            [counter] { return "{\"settled_micro\":" + std::to_string(++*counter) + "}"; },
        .metrics_text =
            [counter] {
              return "# TYPE dvpn_sessions_open gauge\ndvpn_sessions_open " +
                     std::to_string(++*counter) + "\n";
            },
    };
  }
};

std::unique_ptr<DashboardServer> StartOrDie(DashboardSource source, DashboardOptions options = {}) {
  auto server = DashboardServer::Start("127.0.0.1:0", std::move(source), options);
  if (!server) throw std::runtime_error(server.error().message);
  return std::move(*server);
}

template <class F>
bool PollUntil(F condition, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

void ExpectSecurityHeaders(const HttpResponse& res) {
  EXPECT_EQ(res.Header("cache-control"), "no-store");
  EXPECT_EQ(res.Header("x-content-type-options"), "nosniff");
  const std::string csp = res.Header("content-security-policy");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'unsafe-inline'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("style-src 'unsafe-inline'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
}

// ---------------------------------------------------------------------------------------------
// Routes and headers

TEST(Dashboard, ServesEachRouteWithItsTypeAndHeaders) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  ASSERT_NE(server->port(), 0);

  auto page = Fetch(server->port(), "GET", "/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->Header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(page->body, std::string(kDashboardPage));
  EXPECT_NE(page->body.find("<title>dvpn-node</title>"), std::string::npos);
  ExpectSecurityHeaders(*page);

  auto status = Fetch(server->port(), "GET", "/api/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(status->Header("content-type"), "application/json");
  EXPECT_EQ(status->body, "{\"sessions_open\":1}");
  ExpectSecurityHeaders(*status);

  auto earnings = Fetch(server->port(), "GET", "/api/earnings");
  ASSERT_TRUE(earnings);
  EXPECT_EQ(earnings->status, 200);
  EXPECT_EQ(earnings->Header("content-type"), "application/json");
  EXPECT_EQ(earnings->body, "{\"settled_micro\":2}");

  auto metrics = Fetch(server->port(), "GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->Header("content-type").rfind("text/plain; version=0.0.4", 0), 0u)
      << metrics->Header("content-type");
  EXPECT_EQ(metrics->body, "# TYPE dvpn_sessions_open gauge\ndvpn_sessions_open 3\n");
  ExpectSecurityHeaders(*metrics);

  // Live: the source is asked on every request. A query string is ignored.
  auto again = Fetch(server->port(), "GET", "/api/status?t=123");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(again->body, "{\"sessions_open\":4}");
}

TEST(Dashboard, UnknownPathIs404AndOtherMethodsAre405) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  for (const char* path : {"/nope", "/api", "/api/status/x", "/metrics/", "//", "/index.html"}) {
    auto res = Fetch(server->port(), "GET", path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 404) << path;
    ExpectSecurityHeaders(*res);
  }
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"}) {
    auto res = Fetch(server->port(), method, "/api/status");
    ASSERT_TRUE(res) << method;
    EXPECT_EQ(res->status, 405) << method;
    EXPECT_EQ(res->Header("allow"), "GET, HEAD") << method;
  }
  EXPECT_EQ(counting.n->load(), 0) << "no source is asked for a refused request";
}

TEST(Dashboard, HeadAnswersHeadersOnlyAndKeepAliveServesSeveralRequests) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  Conn c(server->port());
  auto deadline = Clock::now() + 5s;

  ASSERT_TRUE(c.Send(Request("HEAD", "/")));
  auto head = c.ReadResponse(deadline, /*head=*/true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("content-length"), std::to_string(kDashboardPage.size()));
  EXPECT_TRUE(head->body.empty());

  // The same connection, two requests pipelined in one write: no stray body bytes before.
  ASSERT_TRUE(c.Send(Request("GET", "/api/status") + Request("GET", "/api/earnings")));
  auto first = c.ReadResponse(deadline);
  auto second = c.ReadResponse(deadline);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->body, "{\"sessions_open\":1}");
  EXPECT_EQ(second->body, "{\"settled_micro\":2}");

  // Connection: close is honoured.
  ASSERT_TRUE(c.Send(Request("GET", "/metrics", "Connection: close\r\n")));
  auto last = c.ReadResponse(deadline);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->status, 200);
  EXPECT_TRUE(c.WaitClosed(Clock::now() + 3s));
}

TEST(Dashboard, HostMustBeLoopback) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  const uint16_t port = server->port();
  for (const char* host :
       {"localhost", "LOCALHOST:7602", "127.0.0.1", "127.0.0.1:80", "[::1]:7602", "127.1.2.3"}) {
    Conn c(port);
    ASSERT_TRUE(c.Send("GET /api/status HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n"));
    auto res = c.ReadResponse(Clock::now() + 5s);
    ASSERT_TRUE(res) << host;
    EXPECT_EQ(res->status, 200) << host;
  }
  // A DNS-rebinding page reaches 127.0.0.1 under its own name.
  for (const char* host : {"evil.example", "evil.example:7602", "10.0.0.1", "[::]",
                           "localhost.evil.example", "", "127.0.0.1:99999"}) {
    Conn c(port);
    ASSERT_TRUE(c.Send("GET /api/status HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n"));
    auto res = c.ReadResponse(Clock::now() + 5s);
    ASSERT_TRUE(res) << host;
    EXPECT_TRUE(res->status == 421 || res->status == 400) << host << ": " << res->status;
    EXPECT_TRUE(c.WaitClosed(Clock::now() + 3s)) << host;
  }
  {  // HTTP/1.1 without Host.
    Conn c(port);
    ASSERT_TRUE(c.Send("GET /api/status HTTP/1.1\r\n\r\n"));
    auto res = c.ReadResponse(Clock::now() + 5s);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400);
  }
  {  // HTTP/1.0 without Host is fine; it closes after the answer.
    Conn c(port);
    ASSERT_TRUE(c.Send("GET /api/status HTTP/1.0\r\n\r\n"));
    auto res = c.ReadResponse(Clock::now() + 5s);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_TRUE(c.WaitClosed(Clock::now() + 3s));
  }
}

TEST(Dashboard, SourceThatThrowsOrIsMissingIs500AndServingGoesOn) {
  DashboardSource source{
      .status_json = []() -> std::string { throw std::runtime_error("boom"); },
      .earnings_json = nullptr,
      .metrics_text = [] { return std::string("up 1\n"); },
  };
  auto server = StartOrDie(std::move(source));
  auto status = Fetch(server->port(), "GET", "/api/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 500);
  auto earnings = Fetch(server->port(), "GET", "/api/earnings");
  ASSERT_TRUE(earnings);
  EXPECT_EQ(earnings->status, 500);
  auto metrics = Fetch(server->port(), "GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->body, "up 1\n");
}

// ---------------------------------------------------------------------------------------------
// Untrusted input

TEST(Dashboard, OversizedHeaderIs431OrClosed) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  for (size_t size : {size_t{9} * 1024, size_t{64} * 1024, size_t{1} << 20}) {
    Conn c(server->port());
    std::string huge =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(size, 'a') + "\r\n\r\n";
    c.Send(huge);  // the server may close before taking it all
    auto res = c.ReadResponse(Clock::now() + 5s);
    // Just over the limit, the answer gets through the lingering close; far over it, the
    // client's own send may fail first and the answer be lost with the reset.
    if (size < 64 * 1024) {
      ASSERT_TRUE(res) << size;
    }
    if (res) {
      EXPECT_EQ(res->status, 431) << size;
    }
    EXPECT_TRUE(c.WaitClosed(Clock::now() + 5s)) << size;
  }
  // Many small headers over the limit too.
  {
    Conn c(server->port());
    std::string many = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int i = 0; i < 1000; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
    c.Send(many + "\r\n");
    auto res = c.ReadResponse(Clock::now() + 5s);
    if (res) {
      EXPECT_EQ(res->status, 431);
    }
    EXPECT_TRUE(c.WaitClosed(Clock::now() + 5s));
  }
  // A header just under the limit is fine.
  auto ok =
      Fetch(server->port(), "GET", "/api/status", "X-Big: " + std::string(6000, 'b') + "\r\n");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_GE(server->stats().bad_requests, 4u);
}

TEST(Dashboard, MalformedRequestsAre400OrClosedAndNeverCrash) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  const std::vector<std::string> bad = {
      "GARBAGE\r\n\r\n",
      "GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET  HTTP/1.1\r\n\r\n",
      std::string("GET /\0 HTTP/1.1\r\n\r\n", 19),
      "\r\n\r\n\r\n\r\n",
  };
  for (const std::string& request : bad) {
    Conn c(server->port());
    c.Send(request);
    auto res = c.ReadResponse(Clock::now() + 5s);
    ASSERT_TRUE(res) << request;
    EXPECT_EQ(res->status, 400) << request;
    EXPECT_TRUE(c.WaitClosed(Clock::now() + 5s)) << request;
  }
  {  // A body: the dashboard takes none.
    Conn c(server->port());
    c.Send("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello");
    auto res = c.ReadResponse(Clock::now() + 5s);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 413);
    EXPECT_TRUE(c.WaitClosed(Clock::now() + 5s));
  }
  // Random bytes on a few connections at once.
  std::mt19937 rng(7);
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 16; ++i) {
    auto c = std::make_unique<Conn>(server->port());
    std::string junk(1 + rng() % 3000, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (i % 2) junk = "GET /" + junk;
    c->Send(junk);
    conns.push_back(std::move(c));
  }
  conns.clear();
  auto ok = Fetch(server->port(), "GET", "/api/status");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(Dashboard, IdleConnectionIsClosedAfterTheReadTimeout) {
  CountingSource counting;
  DashboardOptions options;
  options.read_timeout = 1000ms;
  auto server = StartOrDie(counting.Make(), options);
  auto start = Clock::now();
  Conn idle(server->port());
  Conn partial(server->port());
  ASSERT_TRUE(partial.Send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"));  // never finished
  EXPECT_TRUE(idle.WaitClosed(start + 4s));
  EXPECT_TRUE(partial.WaitClosed(start + 4s));
  EXPECT_GE(Clock::now() - start, 900ms);
  // Idle after a response (keep-alive) is timed out as well.
  Conn kept(server->port());
  ASSERT_TRUE(kept.Send(Request("GET", "/api/status")));
  ASSERT_TRUE(kept.ReadResponse(Clock::now() + 3s));
  EXPECT_TRUE(kept.WaitClosed(Clock::now() + 4s));
  // (Beast closes the socket at the deadline; the count follows a moment later.)
  EXPECT_TRUE(PollUntil([&] { return server->stats().timeouts == 3; }, 2s))
      << server->stats().timeouts;
}

TEST(Dashboard, SlowlorisTricklingBytesIsClosedWithinTheDefaultTimeout) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());  // default read_timeout: 5 s
  Conn c(server->port());
  const std::string request =
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + std::string(4000, 'X') + ": y\r\n\r\n";
  auto start = Clock::now();
  bool closed = false;
  for (size_t i = 0; i < request.size() && Clock::now() - start < 12s; ++i) {
    if (!c.Send(request.substr(i, 1)) || c.PeerClosed()) {
      closed = true;
      break;
    }
    std::this_thread::sleep_for(100ms);  // the attack: one byte at a time, never idle for long
  }
  auto elapsed = Clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_LT(elapsed, 8s);
  EXPECT_GE(elapsed, 4s);
  EXPECT_TRUE(PollUntil([&] { return server->stats().timeouts == 1; }, 2s))
      << server->stats().timeouts;
}

TEST(Dashboard, ConnectionsOverTheCapAreClosedAndServingGoesOn) {
  CountingSource counting;
  DashboardOptions options;
  options.max_connections = 4;
  options.read_timeout = 20s;  // the held ones stay for the whole test
  auto server = StartOrDie(counting.Make(), options);
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 4; ++i) held.push_back(std::make_unique<Conn>(server->port()));
  ASSERT_TRUE(PollUntil([&] { return server->stats().open == 4; }, 5s));

  for (int i = 0; i < 6; ++i) {
    Conn extra(server->port());
    extra.Send(Request("GET", "/api/status"));
    auto res = extra.ReadResponse(Clock::now() + 5s);
    if (res) {
      EXPECT_EQ(res->status, 503);
      EXPECT_EQ(res->body, "too many connections\n");
      EXPECT_EQ(res->Header("connection"), "close");
    }
    EXPECT_TRUE(extra.WaitClosed(Clock::now() + 5s));
  }
  EXPECT_EQ(server->stats().refused, 6u);
  // The held ones still work.
  ASSERT_TRUE(held[0]->Send(Request("GET", "/api/status")));
  auto res = held[0]->ReadResponse(Clock::now() + 5s);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);

  held.clear();
  ASSERT_TRUE(PollUntil([&] { return server->stats().open == 0; }, 5s));
  auto ok = Fetch(server->port(), "GET", "/");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(Dashboard, ManyConnectionsOverTheDefaultCap) {
  CountingSource counting;
  auto server = StartOrDie(counting.Make());
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 100; ++i) conns.push_back(std::make_unique<Conn>(server->port()));
  ASSERT_TRUE(
      PollUntil([&] { return server->stats().accepted + server->stats().refused == 100; }, 5s));
  EXPECT_EQ(server->stats().accepted, 64u);
  EXPECT_EQ(server->stats().refused, 36u);
  conns.clear();
  ASSERT_TRUE(PollUntil([&] { return server->stats().open == 0; }, 5s));
  auto ok = Fetch(server->port(), "GET", "/api/status");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

// ---------------------------------------------------------------------------------------------
// Start and stop

TEST(Dashboard, RefusesNonLoopbackAndMalformedAddresses) {
  for (const char* listen : {"0.0.0.0:0", "192.168.1.10:7602", "10.0.0.1:0", "[::]:0", "8.8.8.8:80",
                             "[::ffff:127.0.0.1]:0"}) {
    auto server = DashboardServer::Start(listen, {});
    ASSERT_FALSE(server) << listen;
    EXPECT_NE(server.error().message.find("not loopback"), std::string::npos)
        << server.error().message;
  }
  for (const char* listen :
       {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", ":7602", "127.0.0.1:-1", "127.0.0.1:12ab",
        "example.com:80", "[::1", "::1:7602", "127.0.0.1:7602x"}) {
    auto server = DashboardServer::Start(listen, {});
    EXPECT_FALSE(server) << listen;
  }
  auto parsed = ParseLoopbackListen("localhost:7602");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->address, "127.0.0.1");
  EXPECT_EQ(parsed->port, 7602);
  for (const char* listen : {"127.0.0.1:0", "localhost:0", "127.0.0.2:0"}) {
    auto server = DashboardServer::Start(listen, CountingSource{}.Make());
    ASSERT_TRUE(server) << listen << ": " << server.error().message;
    EXPECT_NE((*server)->port(), 0);
  }
  // The port in use: a clear error.
  auto first = StartOrDie(CountingSource{}.Make());
  auto second =
      DashboardServer::Start("127.0.0.1:" + std::to_string(first->port()), CountingSource{}.Make());
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("cannot listen"), std::string::npos)
      << second.error().message;
}

TEST(Dashboard, StopWithClientsConnectedIsPromptAndIdempotent) {
  CountingSource counting;
  DashboardOptions options;
  options.read_timeout = 30s;
  auto server = StartOrDie(counting.Make(), options);
  const uint16_t port = server->port();
  Conn idle(port);
  Conn partial(port);
  ASSERT_TRUE(partial.Send("GET / HTTP/1.1\r\nHo"));
  Conn kept(port);
  ASSERT_TRUE(kept.Send(Request("GET", "/api/status")));
  ASSERT_TRUE(kept.ReadResponse(Clock::now() + 3s));
  ASSERT_TRUE(PollUntil([&] { return server->stats().open == 3; }, 5s));

  auto start = Clock::now();
  server->Stop();
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_TRUE(idle.WaitClosed(Clock::now() + 2s));
  EXPECT_TRUE(partial.WaitClosed(Clock::now() + 2s));
  EXPECT_TRUE(kept.WaitClosed(Clock::now() + 2s));
  server->Stop();
  EXPECT_EQ(server->port(), port);
  EXPECT_EQ(server->stats().open, 0u);
  // Nothing listens any more.
  EXPECT_THROW(Conn{port}, std::runtime_error);
  server.reset();  // the destructor after Stop
}

// ---------------------------------------------------------------------------------------------
// The page in headless Chromium

// A provider with a published offer, 1.5 credits settled and 0.25 unsettled, five points.
DashboardSource SampleSource(const std::string& settled = "1500000",
                             const std::string& unsettled = "250000") {
  const uint64_t now_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  std::string status =
      R"({"version":"0.1.0","provider":"dv3f9a1c27e4b8d05a6f2e91c4b7d3a8e05f1c62b9d4e7a03f",)"
      R"("uptime_s":5400,"offer":{"seq":)" +
      std::to_string(now_ms) +
      R"(,"price_per_mb_micro":250000,"price_per_minute_micro":0,"region":"eu-west",)"
      R"("capacity_mbps":100,"max_sessions":64,"expires_unix":)" +
      std::to_string(now_ms / 1000 + 3300) +
      R"(,"retired":false},"sessions_open":2,"bytes_metered":123456789,)"
      R"("gossip":{"peers":3,"offers":5},"earnings":{"settled_micro":)" +
      settled + R"(,"unsettled_micro":)" + unsettled + "}}";
  const int settled_at[] = {0, 300000, 700000, 1100000, 1500000};
  const int unsettled_at[] = {200000, 450000, 300000, 600000, 250000};
  std::string earnings =
      R"({"settled_micro":)" + settled + R"(,"unsettled_micro":)" + unsettled + R"(,"points":[)";
  for (int i = 0; i < 5; ++i) {
    if (i) earnings += ",";
    earnings += R"({"t_unix_ms":)" + std::to_string(now_ms - (4 - i) * 60000) +
                R"(,"settled_micro":)" + std::to_string(settled_at[i]) + R"(,"unsettled_micro":)" +
                std::to_string(unsettled_at[i]) + R"(,"bytes_metered":)" +
                std::to_string(i * 25000000) + "}";
  }
  earnings += "]}";
  return DashboardSource{
      .status_json = [status] { return status; },
      .earnings_json = [earnings] { return earnings; },
      .metrics_text = [] { return std::string("dvpn_sessions_open 2\n"); },
  };
}

// The opening tag of the element with `id` in serialized HTML ("" when absent).
std::string OpeningTag(const std::string& dom, const std::string& id) {
  size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  size_t open = dom.rfind('<', at);
  size_t close = dom.find('>', at);
  return dom.substr(open, close - open + 1);
}

// The text of the element with `id` when it has no child elements.
std::string TextOf(const std::string& dom, const std::string& id) {
  size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "<absent>";
  size_t start = dom.find('>', at) + 1;
  return dom.substr(start, dom.find('<', start) - start);
}

constexpr auto kChromiumTimeout = 60s;

TEST(DashboardPage, ChromiumRendersTheFiguresAndTheChart) {
  DVPN_REQUIRE_CHROMIUM();
  auto server = StartOrDie(SampleSource());
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/";
  auto dom = dvpn::testing::DumpDom(url, 5000, kChromiumTimeout);
  ASSERT_TRUE(dom) << dom.error();

  const std::string chart = OpeningTag(*dom, "earnings-chart");
  ASSERT_FALSE(chart.empty()) << *dom;
  EXPECT_NE(chart.find("data-settled-micro=\"1500000\""), std::string::npos) << chart;
  EXPECT_NE(chart.find("data-unsettled-micro=\"250000\""), std::string::npos) << chart;
  EXPECT_NE(chart.find("data-points=\"5\""), std::string::npos) << chart;
  EXPECT_EQ(TextOf(*dom, "settled"), "1.5");
  EXPECT_EQ(TextOf(*dom, "unsettled"), "0.25");
  EXPECT_EQ(TextOf(*dom, "price"), "0.25");
  EXPECT_EQ(TextOf(*dom, "sessions"), "2");
  EXPECT_EQ(TextOf(*dom, "traffic"), "123.5 MB");
  EXPECT_NE(OpeningTag(*dom, "traffic").find("data-bytes=\"123456789\""), std::string::npos);
  EXPECT_EQ(TextOf(*dom, "region"), "eu-west");
  EXPECT_EQ(TextOf(*dom, "conn"), "live");
  EXPECT_EQ(TextOf(*dom, "provider"), "dv3f9a1c27e4b8d05a6f2e91c4b7d3a8e05f1c62b9d4e7a03f");
  // Two series and the axis labels (credits on y, from 0 to the top of the scale).
  EXPECT_NE(dom->find("class=\"series s-settled\""), std::string::npos);
  EXPECT_NE(dom->find("class=\"series s-unsettled\""), std::string::npos);
  EXPECT_NE(dom->find(">credits</text>"), std::string::npos);
  EXPECT_NE(dom->find(">time</text>"), std::string::npos);
  EXPECT_NE(dom->find(">1.5</text>"), std::string::npos);  // a y tick
  // It polled: the page asked for the JSON more than once in 5 s of (virtual) time.
  EXPECT_GE(server->stats().requests, 5u);

  const std::string png = DVPN_DASHBOARD_PNG;
  auto shot = dvpn::testing::Screenshot(url, png, 1200, 800, 3000, kChromiumTimeout);
  ASSERT_TRUE(shot) << shot.error();
  std::ifstream in(png, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_GT(bytes.size(), 10u * 1024) << png;
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << png;
}

TEST(DashboardPage, MoneyBeyondDoublePrecisionIsExact) {
  DVPN_REQUIRE_CHROMIUM();
  // 2^53 + 1 micro-credits: a double would print ...992.
  auto server = StartOrDie(SampleSource("9007199254740993", "18446744073709551615"));
  auto dom = dvpn::testing::DumpDom("http://127.0.0.1:" + std::to_string(server->port()) + "/",
                                    2000, kChromiumTimeout);
  ASSERT_TRUE(dom) << dom.error();
  EXPECT_EQ(TextOf(*dom, "settled"), "9007199254.740993");
  EXPECT_EQ(TextOf(*dom, "unsettled"), "18446744073709.551615");
  const std::string chart = OpeningTag(*dom, "earnings-chart");
  EXPECT_NE(chart.find("data-settled-micro=\"9007199254740993\""), std::string::npos) << chart;
}

TEST(DashboardPage, FailingFetchShowsDisconnected) {
  DVPN_REQUIRE_CHROMIUM();
  DashboardSource source = SampleSource();
  source.status_json = []() -> std::string { throw std::runtime_error("node stopping"); };
  auto server = StartOrDie(std::move(source));
  auto dom = dvpn::testing::DumpDom("http://127.0.0.1:" + std::to_string(server->port()) + "/",
                                    2000, kChromiumTimeout);
  ASSERT_TRUE(dom) << dom.error();
  EXPECT_EQ(TextOf(*dom, "conn"), "disconnected");
  EXPECT_NE(OpeningTag(*dom, "conn").find("down"), std::string::npos);
}

TEST(DashboardPage, UnreadableReplyShowsBadData) {
  DVPN_REQUIRE_CHROMIUM();
  DashboardSource source = SampleSource();
  source.earnings_json = [] { return std::string("{\"settled_micro\":1.5}"); };
  auto server = StartOrDie(std::move(source));
  auto dom = dvpn::testing::DumpDom("http://127.0.0.1:" + std::to_string(server->port()) + "/",
                                    2000, kChromiumTimeout);
  ASSERT_TRUE(dom) << dom.error();
  EXPECT_EQ(TextOf(*dom, "conn"), "bad data");
}

// The helper's own contract: a browser that hangs (here on a server that never answers) is
// killed at the timeout, with its helpers, and the run says so.
TEST(DashboardPage, ChromiumHelperKillsAHungBrowserAtTheTimeout) {
  DVPN_REQUIRE_CHROMIUM();
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 16), 0);  // connections complete in the backlog; no answer
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/";
  auto start = Clock::now();
  auto run = dvpn::testing::RunChromium({"--dump-dom", url}, 2s);
  ::close(listener);
  ASSERT_TRUE(run) << run.error();
  EXPECT_TRUE(run->timed_out);
  EXPECT_EQ(run->exit_code, -1);
  EXPECT_LT(Clock::now() - start, 15s);
  // DumpDom reports a page that never loaded (Chromium then exits 0 with no DOM at the end of
  // the virtual time budget, or is killed at the timeout).
  auto dom = dvpn::testing::DumpDom(url, 500, 10s);
  EXPECT_FALSE(dom);
}

}  // namespace
}  // namespace dvpn::node
