// idle_memory_bench: memory per idle tunnel and per idle stream (issue 3, "Performance"),
// measured on the real executables as the growth of their resident set (VmRSS, /proc/PID/status).
//
// (a) Tunnels: a fresh dvpn-tunnel-exit on 127.0.0.1:0; its VmRSS with no tunnel, then with N
//     established idle tunnels, opened by this process with ConnectTunnel (the client library,
//     on its own io_context, one client identity per concurrent opener so the replay guard sees
//     increasing timestamps). (RSS_N - RSS_0) / N is the exit's memory per idle tunnel; the
//     growth of this process's own VmRSS over the same step is the client side's.
// (b) Streams: a second fresh exit (policy opened for a loopback sink of this process) and a
//     dvpn-tunnel-client with one tunnel to it; the VmRSS of both before and after M idle
//     streams: M SOCKS5 CONNECTs to the sink, which accepts and holds every connection, and
//     nothing is sent. (RSS_after - RSS_before) / M, for the exit and for the client.
//
// The exit's limits are raised for the run with its flags (--max-tunnels,
// --handshakes-per-second, --handshake-burst, --max-streams-per-tunnel,
// --new-streams-per-second, --new-streams-burst; --log-summary-interval-ms short, for the
// summary lines that tell when every tunnel is open). Everything binds 127.0.0.1; every process is
// stopped by PID; every wait is bounded. RSS is read only after it has stopped changing.
//
// Prints the figures, the per-tunnel / per-stream buffer sizes implied by the code, and one
// machine-readable line:
//   RESULT tunnels=N exit_kib_per_tunnel=.. client_kib_per_tunnel=.. streams=M
//          exit_kib_per_stream=.. client_kib_per_stream=..
// Exits 1 when a tunnel or a stream cannot be set up or does not stay up, or when a figure
// exceeds --max-kib-per-tunnel / --max-kib-per-stream (so the smoke test can fail).

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/bytes.h"
#include "common/log.h"
#include "payments/keys.h"
#include "tests/support/subprocess.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "tunnel/record.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/client.h"
#include "tunnel/session/tunnel_connection.h"
#include "tunnel/stream_table.h"

namespace {

namespace session = dvpn::tunnel::session;
namespace asio = session::asio;
using dvpn::testing::Subprocess;
using session::error_code;
using session::tcp;
using namespace std::chrono_literals;

constexpr auto kStartTimeout = 15s;      // a process writes its port file
constexpr auto kSetupTimeout = 10s;      // one tunnel or one SOCKS stream is set up
constexpr auto kAllEstablished = 60s;    // the exit has reported every tunnel opened
constexpr auto kStableRssTimeout = 10s;  // VmRSS stops changing
constexpr auto kStopTimeout = 10s;       // a process exits after SIGTERM
// The exit's info summary line ("N tunnels opened, ...") at most this often: per-tunnel lines
// are debug, so the bench learns from these lines when the exit has every tunnel.
constexpr uint32_t kSummaryIntervalMs = 100;
// Generous rate limits for the run (the bench opens everything from 127.0.0.1 at once).
constexpr uint32_t kUnlimitedRate = 1'000'000;

struct Options {
  std::string exit_bin;
  std::string client_bin;
  uint32_t tunnels = 1000;
  uint32_t streams = 2000;
  uint32_t concurrency = 32;      // tunnels / SOCKS connections being set up at once
  uint32_t idle_ms = 1000;        // idle time after set-up, before the RSS is read
  double max_kib_per_tunnel = 0;  // 0: no check
  double max_kib_per_stream = 0;  // 0: no check
};

struct Figures {
  long exit_before_kib = 0, exit_after_kib = 0;
  long client_before_kib = 0, client_after_kib = 0;
};

// A field of /proc/PID/status in kB ("VmRSS"), or -1.
long StatusKib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(field + ":"))
      return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

long OpenFds(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The sum of the numbers just before `what` in `text` (e.g. "12 tunnels opened" over every
// summary line of the exit's log).
uint64_t SumCounts(const std::string& text, const std::string& what) {
  uint64_t sum = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) {
    size_t begin = pos;
    while (begin > 0 && text[begin - 1] >= '0' && text[begin - 1] <= '9') --begin;
    if (begin < pos) sum += std::strtoull(text.c_str() + begin, nullptr, 10);
  }
  return sum;
}

void PrintTail(const std::string& path, size_t lines) {
  std::string text = ReadFile(path);
  size_t pos = text.size();
  for (size_t i = 0; i <= lines && pos != std::string::npos && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
  }
  std::fprintf(stderr, "--- tail of %s ---\n%s\n", path.c_str(),
               text.substr(pos == std::string::npos ? 0 : pos + 1).c_str());
}

asio::awaitable<void> Sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

// VmRSS of `pid` (0: this process) once three readings 100 ms apart agree (or at the deadline).
asio::awaitable<long> StableRssKib(pid_t pid) {
  auto deadline = std::chrono::steady_clock::now() + kStableRssTimeout;
  long last = -2;
  int same = 0;
  while (true) {
    long r = StatusKib(pid, "VmRSS");
    same = (r == last) ? same + 1 : 0;
    last = r;
    if (same >= 2 || r < 0 || std::chrono::steady_clock::now() >= deadline) co_return r;
    co_await Sleep(100ms);
  }
}

// Polls `done` every 20 ms until it is true or `timeout` passes; returns done().
asio::awaitable<bool> WaitUntil(std::function<bool()> done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    co_await Sleep(20ms);
  }
  co_return true;
}

// Runs `worker(i)` for i in [0, count) with at most `concurrency` in flight; returns when all
// finished (each worker bounds its own time).
asio::awaitable<void> ForEachConcurrent(uint32_t count, uint32_t concurrency,
                                        std::function<asio::awaitable<void>(uint32_t)> worker) {
  auto ex = co_await asio::this_coro::executor;
  uint32_t next = 0;
  uint32_t running = 0;
  asio::steady_timer done(ex);
  uint32_t lanes = std::max<uint32_t>(1, std::min(concurrency, count));
  for (uint32_t lane = 0; lane < lanes; ++lane) {
    ++running;
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          while (next < count) co_await worker(next++);
          if (--running == 0) session::Notify(done);
        },
        asio::detached);
  }
  while (running > 0) co_await session::WaitSignal(done);
}

bool StopProcess(std::optional<Subprocess>& p, const char* name) {
  if (!p || !p->running()) return true;
  p->Signal(SIGTERM);
  auto status = p->WaitFor(kStopTimeout);
  if (!status) {
    std::fprintf(stderr, "%s did not stop within %lld s after SIGTERM; killed\n", name,
                 static_cast<long long>(std::chrono::seconds(kStopTimeout).count()));
    p->KillAndReap();
    return false;
  }
  return true;
}

// True while `p` runs (reaps it and says how it ended otherwise).
bool StillRunning(std::optional<Subprocess>& p, const char* name) {
  if (!p || !p->running()) return false;
  auto status = p->WaitFor(0ms);
  if (!status) return true;
  std::fprintf(stderr, "%s exited unexpectedly (wait status %d)\n", name, *status);
  return false;
}

class Bench {
 public:
  explicit Bench(Options opt) : opt_(std::move(opt)) {}

  asio::awaitable<int> Run() {
    key_ = dvpn::tunnel::X25519KeyPair::Generate();
    key_file_ = dir_.File("exit.key");
    if (!WriteKeyFile()) co_return 1;
    PrintTheory();
    if (!co_await MeasureTunnels()) co_return 1;
    if (!co_await MeasureStreams()) co_return 1;

    double exit_tunnel = PerItem(tunnels_.exit_before_kib, tunnels_.exit_after_kib, opt_.tunnels);
    double client_tunnel =
        PerItem(tunnels_.client_before_kib, tunnels_.client_after_kib, opt_.tunnels);
    double exit_stream = PerItem(streams_.exit_before_kib, streams_.exit_after_kib, opt_.streams);
    double client_stream =
        PerItem(streams_.client_before_kib, streams_.client_after_kib, opt_.streams);
    std::printf("\nidle_memory_bench (VmRSS growth; KiB = 1024 bytes)\n");
    std::printf("  %-34s %11s %11s %7s %14s\n", "", "before", "after", "count", "per item");
    std::printf("  %-34s %7ld KiB %7ld KiB %7u %10.2f KiB\n", "exit, idle tunnels",
                tunnels_.exit_before_kib, tunnels_.exit_after_kib, opt_.tunnels, exit_tunnel);
    std::printf("  %-34s %7ld KiB %7ld KiB %7u %10.2f KiB\n", "client side of them (this process)",
                tunnels_.client_before_kib, tunnels_.client_after_kib, opt_.tunnels, client_tunnel);
    std::printf("  %-34s %7ld KiB %7ld KiB %7u %10.2f KiB\n", "exit, idle streams (1 tunnel)",
                streams_.exit_before_kib, streams_.exit_after_kib, opt_.streams, exit_stream);
    std::printf("  %-34s %7ld KiB %7ld KiB %7u %10.2f KiB\n", "dvpn-tunnel-client, idle streams",
                streams_.client_before_kib, streams_.client_after_kib, opt_.streams, client_stream);
    std::printf(
        "  (an idle tunnel holds no data buffer: per tunnel, its objects, coroutine frames "
        "and allocator state)\n");
    std::printf(
        "RESULT tunnels=%u exit_kib_per_tunnel=%.2f client_kib_per_tunnel=%.2f streams=%u "
        "exit_kib_per_stream=%.2f client_kib_per_stream=%.2f\n",
        opt_.tunnels, exit_tunnel, client_tunnel, opt_.streams, exit_stream, client_stream);

    bool ok = true;
    auto check = [&](const char* what, double value, double bound) {
      if (bound > 0 && value > bound) {
        std::fprintf(stderr, "FAIL: %s: %.2f KiB exceeds the bound %.2f KiB\n", what, value, bound);
        ok = false;
      }
    };
    check("exit memory per idle tunnel", exit_tunnel, opt_.max_kib_per_tunnel);
    check("client memory per idle tunnel", client_tunnel, opt_.max_kib_per_tunnel);
    check("exit memory per idle stream", exit_stream, opt_.max_kib_per_stream);
    check("client memory per idle stream", client_stream, opt_.max_kib_per_stream);
    co_return ok ? 0 : 1;
  }

 private:
  static double PerItem(long before, long after, uint32_t n) {
    return n == 0 ? 0 : static_cast<double>(after - before) / n;
  }

  bool WriteKeyFile() {
    int fd = ::open(key_file_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
      std::fprintf(stderr, "cannot create %s: %s\n", key_file_.c_str(), std::strerror(errno));
      return false;
    }
    std::string hex = dvpn::ToHex(key_.secret_key) + "\n";
    bool ok = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size());
    return (::close(fd) == 0) && ok;
  }

  // TunnelConnection's buffers (tunnel_connection.cpp: rbuf_, wbuf_, wbuf_flight_), with the
  // default options. The read buffer is allocated when data arrives (kInitialReadBuffer, doubled
  // up to kReadBufferSize while reads fill it) and released when a short read empties it.
  static constexpr size_t kInitialReadBuffer = 32 * 1024;  // as in tunnel_connection.cpp
  static constexpr size_t kReadBuffer = 256 * 1024;        // kReadBufferSize there
  static size_t WriteBufferBytes() {
    return session::ConnectionOptions{}.write_buffer_limit + 4 * dvpn::tunnel::kMaxRecordSize;
  }

  // The per-tunnel / per-stream buffers the session layer allocates (tunnel_connection.cpp,
  // docs/tunnel.md "Limits"), for comparison with the measured figures.
  void PrintTheory() const {
    session::ConnectionOptions c;
    const size_t write_buffer = WriteBufferBytes();
    std::printf("buffers from the code (per side of a tunnel):\n");
    std::printf(
        "  tunnel, read buffer: none when idle; %zu bytes when data arrives, up to %zu bytes "
        "(%.1f KiB) while reads fill it, released when a short read empties it\n",
        kInitialReadBuffer, kReadBuffer, kReadBuffer / 1024.0);
    std::printf(
        "  tunnel, write queues: grow on demand up to %zu bytes each (limit %zu + 4 records of "
        "%zu), empty when idle\n",
        write_buffer, c.write_buffer_limit, dvpn::tunnel::kMaxRecordSize);
    std::printf(
        "  tunnel, receive buffering bound (tunnel window): %u bytes (not held when idle)\n",
        dvpn::tunnel::kInitialTunnelWindow);
    std::printf(
        "  stream, data buffers when idle: 0 bytes (rx vectors empty); receive bound "
        "(stream window): %u bytes\n",
        dvpn::tunnel::kInitialStreamWindow);
    std::printf(
        "  stream, objects: tcp::socket %zu + 3 x steady_timer %zu + 2 x vector %zu "
        "bytes (+ shared_ptr block, table entry, map node, 2 coroutine frames, reactor "
        "state; kernel socket buffers are not in RSS)\n\n",
        sizeof(tcp::socket), sizeof(asio::steady_timer), sizeof(std::vector<uint8_t>));
  }

  std::vector<std::string> ExitArgs(const std::string& port_file,
                                    const std::string& log_level) const {
    return {opt_.exit_bin,
            "--log-summary-interval-ms",
            std::to_string(kSummaryIntervalMs),
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            port_file,
            "--static-key-file",
            key_file_,
            "--log-level",
            log_level,
            "--max-tunnels",
            std::to_string(opt_.tunnels + 16),
            "--handshakes-per-second",
            std::to_string(kUnlimitedRate),
            "--handshake-burst",
            std::to_string(kUnlimitedRate),
            "--max-streams-per-tunnel",
            std::to_string(opt_.streams + 16),
            "--new-streams-per-second",
            std::to_string(kUnlimitedRate),
            "--new-streams-burst",
            std::to_string(kUnlimitedRate)};
  }

  // Starts a process and waits for its port file; nullopt (logs printed) on failure.
  std::optional<int> Start(std::optional<Subprocess>& p, std::vector<std::string> argv,
                           const std::string& port_file, const std::string& log, const char* name) {
    auto spawned = Subprocess::Spawn(argv, log);
    if (!spawned) {
      std::fprintf(stderr, "cannot start %s: %s\n", name, spawned.error().c_str());
      return std::nullopt;
    }
    p.emplace(std::move(*spawned));
    auto port = dvpn::testing::WaitForPortFile(port_file, kStartTimeout);
    if (!port) {
      std::fprintf(stderr, "%s did not write its port file within %lld s\n", name,
                   static_cast<long long>(std::chrono::seconds(kStartTimeout).count()));
      StillRunning(p, name);
      PrintTail(log, 20);
      return std::nullopt;
    }
    return port;
  }

  asio::awaitable<bool> MeasureTunnels() {
    const std::string log = dir_.File("exit1.log");
    std::optional<Subprocess> exit;
    // Log level info: the exit's summary lines ("in the last 0 s: N tunnels opened, ..."),
    // every kSummaryIntervalMs while tunnels open, tell when all are up.
    auto port = Start(exit, ExitArgs(dir_.File("exit1.port"), "info"), dir_.File("exit1.port"), log,
                      "dvpn-tunnel-exit");
    if (!port) co_return false;
    tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), static_cast<uint16_t>(*port));

    // One identity per opener lane: each lane's handshakes are sequential, so its timestamps
    // reach the exit's replay guard in increasing order.
    std::vector<dvpn::payments::PrivateKey> ids;
    std::vector<uint64_t> last_ms(opt_.concurrency, 0);
    for (uint32_t i = 0; i < opt_.concurrency; ++i)
      ids.push_back(dvpn::payments::PrivateKey::Generate());

    co_await Sleep(std::chrono::milliseconds(opt_.idle_ms));
    tunnels_.exit_before_kib = co_await StableRssKib(exit->pid());
    tunnels_.client_before_kib = co_await StableRssKib(0);

    std::vector<std::shared_ptr<session::TunnelConnection>> tunnels;
    uint32_t failed = 0;
    // Shared: a tunnel's close callback may run after this frame is gone.
    auto closed = std::make_shared<size_t>(0);
    std::string first_error;
    auto start = std::chrono::steady_clock::now();
    co_await ForEachConcurrent(
        opt_.tunnels, opt_.concurrency, [&](uint32_t i) -> asio::awaitable<void> {
          uint32_t lane = i % opt_.concurrency;
          dvpn::tunnel::HandshakeInitiator::Options hs;
          hs.provider_static = key_.public_key;
          hs.identity = &ids[lane];
          uint64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
          last_ms[lane] = std::max(now, last_ms[lane] + 1);
          hs.timestamp_ms = last_ms[lane];
          auto t = co_await session::ConnectTunnel(ep, std::move(hs), {},
                                                   std::chrono::milliseconds(kSetupTimeout));
          if (!t) {
            if (failed++ == 0) first_error = t.error().message;
            co_return;
          }
          (*t)->Start(nullptr, [closed] { ++*closed; });
          tunnels.push_back(std::move(*t));
        });
    double setup_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bool ok = true;
    if (failed > 0) {
      std::fprintf(stderr, "%u of %u tunnels failed, first: %s\n", failed, opt_.tunnels,
                   first_error.c_str());
      ok = false;
    }
    if (ok) {
      bool all = co_await WaitUntil(
          [&] { return SumCounts(ReadFile(log), " tunnels opened,") >= opt_.tunnels; },
          kAllEstablished);
      if (!all) {
        std::fprintf(stderr, "the exit did not report %u tunnels opened in time\n", opt_.tunnels);
        ok = false;
      }
    }
    if (ok) {
      std::printf("tunnels: %u established in %.2f s; idle %u ms\n", opt_.tunnels, setup_s,
                  opt_.idle_ms);
      co_await Sleep(std::chrono::milliseconds(opt_.idle_ms));
      tunnels_.exit_after_kib = co_await StableRssKib(exit->pid());
      tunnels_.client_after_kib = co_await StableRssKib(0);
      std::printf(
          "  exit: VmRSS %ld -> %ld KiB, %ld open fds; this process: VmRSS %ld -> %ld KiB\n",
          tunnels_.exit_before_kib, tunnels_.exit_after_kib, OpenFds(exit->pid()),
          tunnels_.client_before_kib, tunnels_.client_after_kib);
      if (*closed > 0) {
        std::fprintf(stderr, "%zu tunnels closed while idle\n", *closed);
        ok = false;
      }
      if (!StillRunning(exit, "dvpn-tunnel-exit")) ok = false;
    }
    if (!ok) PrintTail(log, 20);

    for (auto& t : tunnels) {
      t->Close(dvpn::tunnel::CloseReason::kNormal, "bench done", true);
    }
    size_t opened = tunnels.size();
    co_await WaitUntil([&] { return *closed >= opened; }, kStopTimeout);
    tunnels.clear();
    if (!StopProcess(exit, "dvpn-tunnel-exit")) ok = false;
    co_return ok;
  }

  asio::awaitable<bool> MeasureStreams() {
    auto ex = co_await asio::this_coro::executor;
    // The sink: accepts and holds every connection (never reads or writes).
    tcp::acceptor sink(ex, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
    std::vector<tcp::socket> held;
    held.reserve(opt_.streams);
    bool sink_done = false;  // the accept loop has ended (it uses this frame's objects)
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          struct Done {
            bool* flag;
            ~Done() { *flag = true; }
          } done{&sink_done};
          while (sink.is_open()) {
            error_code ec;
            tcp::socket s =
                co_await sink.async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
              if (ec == asio::error::operation_aborted || !sink.is_open()) co_return;
              co_await Sleep(10ms);  // e.g. EMFILE: do not spin
              continue;
            }
            held.push_back(std::move(s));
          }
        },
        asio::detached);
    const uint16_t sink_port = sink.local_endpoint().port();

    const std::string exit_log = dir_.File("exit2.log");
    const std::string client_log = dir_.File("client.log");
    std::optional<Subprocess> exit, client;
    std::vector<tcp::socket> socks;
    bool ok = true;
    auto finish = [&]() -> bool {
      for (auto& s : socks) {
        error_code ignored;
        s.close(ignored);
      }
      socks.clear();
      bool stopped = StopProcess(client, "dvpn-tunnel-client");
      stopped = StopProcess(exit, "dvpn-tunnel-exit") && stopped;
      error_code ignored;
      sink.close(ignored);
      held.clear();
      return stopped;
    };

    auto exit_args = ExitArgs(dir_.File("exit2.port"), "warn");
    exit_args.push_back("--allow");
    exit_args.push_back("127.0.0.1/32:" + std::to_string(sink_port));
    auto exit_port = Start(exit, exit_args, dir_.File("exit2.port"), exit_log, "dvpn-tunnel-exit");
    if (!exit_port) {
      finish();
      co_await WaitUntil([&] { return sink_done; }, kStopTimeout);
      co_return false;
    }
    auto socks_port =
        Start(client,
              {opt_.client_bin, "--provider", "127.0.0.1:" + std::to_string(*exit_port),
               "--provider-key", dvpn::ToHex(key_.public_key), "--socks", "127.0.0.1:0",
               "--socks-port-file", dir_.File("client.port"), "--log-level", "warn"},
              dir_.File("client.port"), client_log, "dvpn-tunnel-client");
    if (!socks_port) {
      finish();
      co_await WaitUntil([&] { return sink_done; }, kStopTimeout);
      co_return false;
    }
    co_await Sleep(std::chrono::milliseconds(opt_.idle_ms));
    streams_.exit_before_kib = co_await StableRssKib(exit->pid());
    streams_.client_before_kib = co_await StableRssKib(client->pid());

    tcp::endpoint socks_ep(asio::ip::make_address_v4("127.0.0.1"),
                           static_cast<uint16_t>(*socks_port));
    // Greeting (no auth) and CONNECT 127.0.0.1:sink_port in one write.
    const std::array<uint8_t, 13> hello = {0x05,
                                           0x01,
                                           0x00,  // greeting
                                           0x05,
                                           0x01,
                                           0x00,
                                           0x01,
                                           127,
                                           0,
                                           0,
                                           1,  // CONNECT IPv4 127.0.0.1
                                           static_cast<uint8_t>(sink_port >> 8),
                                           static_cast<uint8_t>(sink_port & 0xff)};
    uint32_t failed = 0;
    std::string first_error;
    auto start = std::chrono::steady_clock::now();
    co_await ForEachConcurrent(
        opt_.streams, opt_.concurrency, [&](uint32_t) -> asio::awaitable<void> {
          tcp::socket s(ex);
          std::array<uint8_t, 12> reply{};
          error_code ec;
          {
            session::Watchdog deadline(ex, std::chrono::milliseconds(kSetupTimeout), [&s] {
              error_code ignored;
              s.close(ignored);
            });
            co_await s.async_connect(socks_ep, asio::redirect_error(asio::use_awaitable, ec));
            if (!ec) {
              co_await asio::async_write(s, asio::buffer(hello),
                                         asio::redirect_error(asio::use_awaitable, ec));
            }
            if (!ec) {
              co_await asio::async_read(s, asio::buffer(reply),
                                        asio::redirect_error(asio::use_awaitable, ec));
            }
          }
          std::string error;
          if (ec) {
            error = "SOCKS connection: " + ec.message();
          } else if (reply[0] != 0x05 || reply[1] != 0x00 || reply[2] != 0x05) {
            error = "unexpected SOCKS method reply";
          } else if (reply[3] != 0x00) {
            error = "SOCKS CONNECT refused with REP " + std::to_string(reply[3]);
          } else if (!s.is_open()) {
            error = "SOCKS set-up timed out";
          }
          if (!error.empty()) {
            if (failed++ == 0) first_error = error;
            co_return;
          }
          socks.push_back(std::move(s));
        });
    double setup_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (failed > 0) {
      std::fprintf(stderr, "%u of %u SOCKS streams failed, first: %s\n", failed, opt_.streams,
                   first_error.c_str());
      ok = false;
    }
    if (ok && !co_await WaitUntil([&] { return held.size() >= opt_.streams; }, kSetupTimeout)) {
      std::fprintf(stderr, "the sink accepted %zu of %u connections\n", held.size(), opt_.streams);
      ok = false;
    }
    if (ok) {
      std::printf("streams: %u opened through one tunnel in %.2f s; idle %u ms\n", opt_.streams,
                  setup_s, opt_.idle_ms);
      co_await Sleep(std::chrono::milliseconds(opt_.idle_ms));
      streams_.exit_after_kib = co_await StableRssKib(exit->pid());
      streams_.client_after_kib = co_await StableRssKib(client->pid());
      std::printf(
          "  exit: VmRSS %ld -> %ld KiB, %ld open fds; client: VmRSS %ld -> %ld KiB, "
          "%ld open fds\n",
          streams_.exit_before_kib, streams_.exit_after_kib, OpenFds(exit->pid()),
          streams_.client_before_kib, streams_.client_after_kib, OpenFds(client->pid()));
      // Every stream must still be up: the SOCKS side must not have been closed.
      size_t alive = 0;
      for (auto& s : socks) {
        error_code ec;
        std::array<uint8_t, 1> b{};
        s.non_blocking(true, ec);
        size_t n = s.receive(asio::buffer(b), tcp::socket::message_peek, ec);
        if (ec == asio::error::would_block || (!ec && n > 0)) ++alive;
      }
      if (alive != socks.size()) {
        std::fprintf(stderr, "%zu of %zu idle SOCKS streams were closed\n", socks.size() - alive,
                     socks.size());
        ok = false;
      }
      if (!StillRunning(exit, "dvpn-tunnel-exit")) ok = false;
      if (!StillRunning(client, "dvpn-tunnel-client")) ok = false;
    }
    if (!ok) {
      PrintTail(exit_log, 20);
      PrintTail(client_log, 20);
    }
    if (!finish()) ok = false;
    co_await WaitUntil([&] { return sink_done; }, kStopTimeout);
    co_return ok;
  }

  Options opt_;
  dvpn::testing::TempDir dir_;
  dvpn::tunnel::X25519KeyPair key_;
  std::string key_file_;
  Figures tunnels_;
  Figures streams_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit; false when `needed` does not fit.
bool RaiseFdLimit(rlim_t needed) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return false;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < needed) {
    std::fprintf(stderr, "RLIMIT_NOFILE is %llu, the run needs about %llu descriptors\n",
                 static_cast<unsigned long long>(lim.rlim_cur),
                 static_cast<unsigned long long>(needed));
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::error_code ec;
  auto bin_dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  opt.exit_bin = (bin_dir / "dvpn-tunnel-exit").string();
  opt.client_bin = (bin_dir / "dvpn-tunnel-client").string();

  CLI::App app{"idle_memory_bench: memory per idle tunnel and per idle stream (VmRSS)"};
  app.add_option("--exit-bin", opt.exit_bin, "dvpn-tunnel-exit executable")->capture_default_str();
  app.add_option("--client-bin", opt.client_bin, "dvpn-tunnel-client executable")
      ->capture_default_str();
  app.add_option("--tunnels", opt.tunnels, "idle tunnels to open to one exit")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100'000u));
  app.add_option("--streams", opt.streams, "idle streams to open through one tunnel")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100'000u));
  app.add_option("--concurrency", opt.concurrency, "set-ups in flight at once")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1024u));
  app.add_option("--idle-ms", opt.idle_ms, "idle time before each RSS reading")
      ->capture_default_str()
      ->check(CLI::Range(0u, 600'000u));
  app.add_option("--max-kib-per-tunnel", opt.max_kib_per_tunnel,
                 "fail when a side's memory per idle tunnel exceeds this (0: no check)")
      ->capture_default_str();
  app.add_option("--max-kib-per-stream", opt.max_kib_per_stream,
                 "fail when a side's memory per idle stream exceeds this (0: no check)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // keep stdout and stderr lines in order
  std::signal(SIGPIPE, SIG_IGN);
  dvpn::tunnel::EnsureSodium();
  dvpn::SetLogLevel("warn");
  // This process holds one socket per tunnel, and two per stream (SOCKS side and sink side).
  if (!RaiseFdLimit(std::max(opt.tunnels, 2 * opt.streams) + 256)) return 1;

  asio::io_context io(1);
  int rc = 1;
  Bench bench(opt);
  asio::co_spawn(io, bench.Run(), [&](std::exception_ptr e, int r) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "idle_memory_bench: %s\n", x.what());
      }
      rc = 1;
    } else {
      rc = r;
    }
    io.stop();
  });
  io.run();
  return rc;
}
