#pragma once
// DashboardServer: the seller's dashboard and Prometheus endpoint (docs/node.md §4), a small
// HTTP/1.1 server (Boost.Beast over Asio) on a loopback address only, since it has no
// authentication.
//
//   GET /              the dashboard page (dashboard_page.h; text/html)
//   GET /api/status    DashboardSource::status_json   (application/json)
//   GET /api/earnings  DashboardSource::earnings_json (application/json)
//   GET /metrics       DashboardSource::metrics_text  (text/plain; version=0.0.4)
//
// HEAD is answered like GET without the body; other methods get 405, other paths 404 (a query
// string is ignored). Every response carries Cache-Control: no-store, nosniff and a
// Content-Security-Policy that allows inline script and style and same-origin fetches only.
//
// Untrusted input: the request head is bounded (options.header_limit: 431), a request body is
// refused (413), malformed HTTP gets 400 and the connection is closed. A Host header that does
// not name a loopback host (127.0.0.0/8, [::1], localhost) gets 421: a web page that rebinds its
// own DNS name to 127.0.0.1 cannot read the dashboard. Each request must arrive complete within
// options.read_timeout of the previous response (or of the accept), and each response must be
// taken by the client within options.write_timeout; otherwise the connection is closed. At most
// options.max_connections connections are open; one beyond that gets a best-effort 503 and is
// closed at once.
//
// Threading: the server owns one io thread; the source's functions are called on it, one at a
// time (whoever provides them makes them safe to call from that thread). A function that
// throws or is empty yields 500. Start/Stop/port are thread-safe; do not call Stop from inside a
// source function (it cannot join its own thread; it then only stops the loop).
// Ownership: the server owns the acceptor, every connection and the io thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "provider/errc.h"

namespace dvpn::node {

// What the dashboard shows. Each function returns a complete response body and is called on
// the server's own thread; the provider of these functions makes them thread-safe.
struct DashboardSource {
  std::function<std::string()> status_json;    // GET /api/status
  std::function<std::string()> earnings_json;  // GET /api/earnings
  std::function<std::string()> metrics_text;   // GET /metrics (Prometheus text format 0.0.4)
};

// Limits; the defaults suit the node. Tests shorten the timeouts.
struct DashboardOptions {
  size_t header_limit = 8 * 1024;                 // request line + headers, bytes (else 431)
  size_t max_connections = 64;                    // open at once (else 503 and close)
  std::chrono::milliseconds read_timeout{5000};   // one whole request, from when it may start
  std::chrono::milliseconds write_timeout{5000};  // one whole response
  std::chrono::milliseconds stop_timeout{2000};   // Stop(): graceful, then the loop is stopped
};

// Counters, for tests and the node's own metrics. Read with DashboardServer::stats().
struct DashboardStats {
  uint64_t accepted = 0;      // connections served
  uint64_t refused = 0;       // connections closed at once (max_connections)
  uint64_t requests = 0;      // requests answered (any status)
  uint64_t bad_requests = 0;  // 400, 413, 421 and 431 answers (the connection is closed)
  uint64_t timeouts = 0;      // connections closed by read_timeout or write_timeout
  size_t open = 0;            // connections open now
};

class DashboardServer {
 public:
  // Listens on `listen`: "127.0.0.1:PORT" (any 127.0.0.0/8 address), "[::1]:PORT" or
  // "localhost:PORT" (= 127.0.0.1); PORT 0 picks a free port (see port()). Fails, with nothing
  // started: kBadConfig on a malformed address, a non-loopback address (the dashboard has no
  // authentication) or bad options; kListen when the address cannot be bound. Runs its own io
  // thread.
  static Result<std::unique_ptr<DashboardServer>, Errc> Start(
      const std::string& listen, DashboardSource source, DashboardOptions options = {});

  ~DashboardServer();  // Stop()
  DashboardServer(const DashboardServer&) = delete;
  DashboardServer& operator=(const DashboardServer&) = delete;

  // The bound port.
  uint16_t port() const;
  // Closes the listener and every connection and joins the io thread, within about
  // options.stop_timeout. Idempotent.
  void Stop();
  // A snapshot of the counters (after Stop: their final values).
  DashboardStats stats() const;

  class Impl;

 private:
  explicit DashboardServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses a dashboard listen address (the forms Start accepts) into a loopback IP literal and a
// port. Exposed for the node's configuration check, which wants the same answer before starting.
struct LoopbackEndpoint {
  std::string address;  // an IPv4 or IPv6 literal, loopback
  uint16_t port = 0;
};
// Error kBadConfig, the message names the address.
Result<LoopbackEndpoint, Errc> ParseLoopbackListen(const std::string& listen);

}  // namespace dvpn::node
