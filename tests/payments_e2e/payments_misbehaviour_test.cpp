// End-to-end tests of paid tunnels with a misbehaving peer (docs/payments.md §4, §5, §8, §9):
// the real dvpn-ledger and dvpn-tunnel-exit / dvpn-tunnel-client on loopback (harness.h), and the
// misbehaving side played in this process with the real tunnel library:
//   - a client (ConnectTunnel + TunnelConnection, the funded channel's hello) that stops paying,
//     pays late, replays old promises, or sends promises for another channel / ledger or with a
//     bad signature, against the real paid exit;
//   - a fake exit (HandshakeResponder + TunnelConnection in Role::kExit, session terms in msg2)
//     that overcharges the real client;
//   - hellos naming another ledger or an unknown channel.
// The production executables have no test hooks. The in-process io_context runs on a thread the
// fixture joins; every wait polls a condition with a deadline.
//
// The peer's CLOSE reason is read from the in-process "tunnel" logger: TunnelConnection logs
// "<name>: tunnel closed: the peer closed the tunnel (reason N: text)" when a CLOSE frame
// arrives, and has no accessor for it.

#include <functional>
#include <future>
#include <regex>
#include <type_traits>
#include <variant>

#include <spdlog/sinks/base_sink.h>

#include "ledger/requests.h"
#include "payments/metering.h"
#include "payments/payment_session.h"
#include "payments/wire/control_codec.h"
#include "tests/payments_e2e/harness.h"
#include "tests/payments_e2e/provider_stats_util.h"
#include "tunnel/destination.h"
#include "tunnel/handshake.h"
#include "tunnel/session/client.h"
#include "tunnel/session/tunnel_connection.h"
#include "tunnel/stream_table.h"

namespace dvpn::payments_e2e {
namespace {

namespace ts = tunnel::session;
namespace asio = ts::asio;
namespace wire = payments::wire;
using payments::Invoice;
using payments::Notice;
using payments::NoticeCode;
using payments::PromiseMessage;
using payments::Receipt;
using ts::tcp;
using ts::TunnelConnection;
using tunnel::CloseReason;
using Clock = std::chrono::steady_clock;

// Protocol constants the bounds below are built from (docs/tunnel.md §Flow control).
constexpr uint64_t kStreamWindow = tunnel::kInitialStreamWindow;  // 524,288 per stream and way
constexpr uint64_t kSmallInterval = 100'000;  // --invoice-interval-bytes of these tests
constexpr auto kWait = 15s;                   // deadline for anything that should happen

uint64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Polls `pred` every 5 ms until it holds or `timeout` passes.
template <class Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = kWait) {
  const auto end = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(5ms);
  }
}

Amount ChargeFor(uint64_t metered_bytes) {
  auto c =
      payments::Charge(payments::Price{Micro(kPricePerMbMicro), Amount::Zero()}, metered_bytes, 0);
  return c ? *c : Amount::Max();
}

// ---- Log capture --------------------------------------------------------------------------

// A sink on this process's "tunnel" logger that keeps the lines about closed tunnels (at debug
// level; the logger's other sinks are left at info so stderr stays quiet). Thread-safe.
class CloseLog final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  static std::shared_ptr<CloseLog> Get() {
    static std::shared_ptr<CloseLog> sink = [] {
      auto s = std::make_shared<CloseLog>();
      auto log = ts::TunnelLog();
      for (auto& other : log->sinks()) other->set_level(spdlog::level::info);
      s->set_level(spdlog::level::debug);
      log->sinks().push_back(s);
      log->set_level(spdlog::level::debug);
      return s;
    }();
    return sink;
  }

  size_t Mark() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_.size();
  }

  struct PeerClose {
    int reason = -1;
    std::string text;
  };
  // The first CLOSE received by the in-process tunnel called `name` logged after `mark`.
  std::optional<PeerClose> FindPeerClose(const std::string& name, size_t mark) {
    static const std::regex kLine(
        R"(^(.*): tunnel closed: the peer closed the tunnel \(reason (\d+): (.*)\)$)");
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = mark; i < lines_.size(); ++i) {
      std::smatch m;
      if (std::regex_match(lines_[i], m, kLine) && m[1] == name) {
        return PeerClose{std::stoi(m[2]), m[3]};
      }
    }
    return std::nullopt;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string line(msg.payload.data(), msg.payload.size());
    if (line.find("tunnel closed") != std::string::npos) lines_.push_back(std::move(line));
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

// ---- The in-process io_context --------------------------------------------------------------

// An io_context running on its own thread until Stop() (joins). Call() runs a function on that
// thread and waits for its result with a deadline.
class IoThread {
 public:
  IoThread() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~IoThread() { Stop(); }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  asio::io_context& io() { return io_; }

  void Stop() {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // `fn` must return a value (not void). nullopt when it did not run within `timeout`.
  template <class F>
  std::optional<std::invoke_result_t<F>> Call(F fn, std::chrono::milliseconds timeout = kWait) {
    using R = std::invoke_result_t<F>;
    auto done = std::make_shared<std::promise<R>>();
    auto result = done->get_future();
    asio::post(io_, [done, fn = std::move(fn)]() mutable { done->set_value(fn()); });
    if (result.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return result.get();
  }

  // Runs the coroutine `make()` on the io thread; nullopt when it did not finish in time.
  template <class T>
  std::optional<T> Await(std::function<asio::awaitable<T>()> make,
                         std::chrono::milliseconds timeout = kWait) {
    auto done = std::make_shared<std::promise<T>>();
    auto result = done->get_future();
    // The function-object form of co_spawn keeps `make` (and so a lambda's captures) alive
    // until the coroutine ends.
    asio::post(io_, [this, done, make = std::move(make)]() mutable {
      asio::co_spawn(io_, std::move(make), [done](std::exception_ptr e, T value) {
        if (e) {
          done->set_exception(e);
        } else {
          done->set_value(std::move(value));
        }
      });
    });
    if (result.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return result.get();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

// A connected pair of loopback TCP sockets: `app` for the test's threads (blocking, with
// timeouts), `tunnel_end` to attach to a tunnel stream. Both -1 on failure.
struct SocketPair {
  int app = -1;
  int tunnel_end = -1;
};
SocketPair LoopbackPair() {
  SocketPair pair;
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return pair;
  }
  pair.app = ConnectLoopback(ntohs(addr.sin_port));
  pollfd p{listener, POLLIN, 0};
  if (pair.app >= 0 && ::poll(&p, 1, 5000) == 1)
    pair.tunnel_end = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  if (pair.tunnel_end < 0 && pair.app >= 0) {
    ::close(pair.app);
    pair.app = -1;
  }
  return pair;
}

// Pushes bytes into a socket (up to `limit`) and drains what comes back, on two threads, until
// Stop() or the socket ends. Every blocking call has a 100 ms timeout, so Stop() is prompt.
class Pusher {
 public:
  Pusher(int fd, uint64_t limit) : fd_(fd), limit_(limit) {
    timeval tv{0, 100'000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    writer_ = std::thread([this] {
      std::vector<uint8_t> buf(64 * 1024, 0x5A);
      while (!stop_ && written_ < limit_) {
        size_t k = static_cast<size_t>(std::min<uint64_t>(buf.size(), limit_ - written_));
        ssize_t w = ::send(fd_, buf.data(), k, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
        if (w <= 0) break;
        written_ += static_cast<uint64_t>(w);
      }
    });
    reader_ = std::thread([this] {
      std::vector<uint8_t> buf(64 * 1024);
      while (!stop_) {
        ssize_t r = ::recv(fd_, buf.data(), buf.size(), 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
        if (r <= 0) {
          ended_ = true;
          break;
        }
        read_ += static_cast<uint64_t>(r);
      }
    });
  }
  ~Pusher() { Stop(); }
  void Stop() {
    stop_ = true;
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  uint64_t written() const { return written_; }
  uint64_t read() const { return read_; }
  bool ended() const { return ended_; }

 private:
  int fd_;
  uint64_t limit_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> ended_{false};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> read_{0};
  std::thread writer_;
  std::thread reader_;
};

// What the in-process client saw of the payment layer. Written on the io thread, read by the
// test under `mu`.
struct PeerLog {
  std::mutex mu;
  std::vector<Invoice> invoices;
  std::vector<Receipt> receipts;
  std::vector<Notice> notices;
  std::vector<PromiseMessage> sent;            // promises this client sent
  std::optional<Clock::time_point> paused_at;  // first kPaused notice
  bool auto_pay = false;                       // answer every invoice with its amount due
  bool closed = false;
  Clock::time_point closed_at;
  uint64_t meter_at_close = 0;

  size_t Count(NoticeCode code) {
    std::lock_guard<std::mutex> lock(mu);
    return std::count_if(notices.begin(), notices.end(),
                         [&](const Notice& n) { return n.code == code; });
  }
  std::vector<Notice> Notices(NoticeCode code) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<Notice> out;
    for (const auto& n : notices) {
      if (n.code == code) out.push_back(n);
    }
    return out;
  }
  bool HasReceipt(Amount cumulative) {
    std::lock_guard<std::mutex> lock(mu);
    return std::any_of(receipts.begin(), receipts.end(),
                       [&](const Receipt& r) { return r.cumulative == cumulative; });
  }
  bool IsClosed() {
    std::lock_guard<std::mutex> lock(mu);
    return closed;
  }
};

// ---- Fixture --------------------------------------------------------------------------------

class Misbehaviour : public PaymentsE2E {
 protected:
  void SetUp() override {
    PaymentsE2E::SetUp();
    close_mark_ = CloseLog::Get()->Mark();
  }
  void TearDown() override {
    loop_.Stop();  // nothing in-process runs after this
    tunnel_.reset();
    acceptor_.reset();
    fake_exit_.reset();
  }

  // What the fake exit (StartFakeExit) saw.
  struct FakeExitSeen {
    std::mutex mu;
    std::optional<tunnel::ClientHello> hello;
    std::vector<PromiseMessage> promises;
    Clock::time_point msg2_sent;
    bool closed = false;
  };

  // A fake exit in this process (on loop_): it answers one handshake with `params` as its
  // session terms, sends every stream to the echo server, records the promises it gets, and
  // invoices only when told (FakeInvoice). Sets fake_exit_; returns its port.
  int StartFakeExit(std::shared_ptr<FakeExitSeen> seen,
                    std::shared_ptr<tunnel::X25519KeyPair> static_key,
                    std::vector<uint8_t> params) {
    auto replay_guard = std::make_shared<tunnel::ReplayGuard>();
    auto clock = std::make_shared<SystemClock>();
    acceptor_ = std::make_shared<tcp::acceptor>(loop_.io(),
                                                tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    const int echo_port = echo_.port();
    auto acceptor = acceptor_;
    asio::co_spawn(
        loop_.io(),
        [this, acceptor, seen, static_key, replay_guard, clock, params,
         echo_port]() -> asio::awaitable<void> {
          ts::error_code ec;
          tcp::socket s =
              co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
          if (ec) co_return;
          std::array<uint8_t, tunnel::kMaxHandshakeMessage> buf{};
          co_await asio::async_read(s, asio::buffer(buf.data(), tunnel::kMsg1Size),
                                    asio::redirect_error(asio::use_awaitable, ec));
          if (ec) co_return;
          tunnel::HandshakeResponder responder({.static_key = static_key.get(),
                                                .replay_guard = replay_guard.get(),
                                                .clock = clock.get(),
                                                .ephemeral_secret_for_test = std::nullopt});
          auto hello = responder.ReadMessage1(ByteSpan(buf.data(), tunnel::kMsg1Size));
          if (!hello) co_return;
          auto cipher = tunnel::ChooseCipher(hello->ciphers, tunnel::LocalCiphers());
          if (!cipher) co_return;
          auto n = responder.WriteMessage2(buf, *cipher, params);
          if (!n) co_return;
          co_await asio::async_write(s, asio::buffer(buf.data(), *n),
                                     asio::redirect_error(asio::use_awaitable, ec));
          if (ec) co_return;
          auto keys = responder.TakeKeys();
          if (!keys) co_return;
          {
            std::lock_guard<std::mutex> lock(seen->mu);
            seen->hello = *hello;
            seen->msg2_sent = Clock::now();
          }
          auto t = std::make_shared<TunnelConnection>(std::move(s), *keys, tunnel::Role::kExit,
                                                      ts::ConnectionOptions{}, "fake-exit");
          fake_exit_ = t;
          // Terms version 2: the client's upload credit comes from the exit (here: all of it).
          t->LimitForwarding(UINT64_MAX, nullptr);
          std::weak_ptr<TunnelConnection> weak = t;
          t->SetControlHandler([seen](ByteSpan message) {
            auto decoded = wire::DecodeControl(message);
            if (!decoded || !*decoded) return;
            if (auto* p = std::get_if<PromiseMessage>(&**decoded)) {
              std::lock_guard<std::mutex> lock(seen->mu);
              seen->promises.push_back(*p);
            }
          });
          t->Start(
              [this, weak, echo_port](uint32_t id, const tunnel::Destination&) {
                // Every stream goes to the echo server (the real client asks for it anyway).
                auto up = std::make_shared<tcp::socket>(loop_.io());
                up->async_connect(tcp::endpoint(asio::ip::address_v4::loopback(),
                                                static_cast<uint16_t>(echo_port)),
                                  [weak, id, up](ts::error_code e) {
                                    auto tun = weak.lock();
                                    if (!tun) return;
                                    if (e) {
                                      tun->RefuseStream(id, tunnel::OpenFailure::kRefused);
                                    } else {
                                      tun->AcceptStream(id, std::move(*up));
                                    }
                                  });
              },
              [seen] {
                std::lock_guard<std::mutex> lock(seen->mu);
                seen->closed = true;
              });
        },
        asio::detached);
    return acceptor_->local_endpoint().port();
  }

  // Sends an invoice from the fake exit (behind the DATA it counts) claiming `extra_bytes` more
  // than flowed; returns the M it claimed.
  uint64_t FakeInvoice(const std::shared_ptr<FakeExitSeen>& seen, uint64_t seq,
                       uint64_t extra_bytes) {
    auto m = loop_.Call([this, seen, seq, extra_bytes] {
      const uint64_t metered =
          fake_exit_->data_bytes_sent() + fake_exit_->data_bytes_received() + extra_bytes;
      uint64_t elapsed;
      {
        std::lock_guard<std::mutex> lock(seen->mu);
        elapsed =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - seen->msg2_sent)
                .count();
      }
      Invoice inv{seq, metered, elapsed, ChargeFor(metered)};
      fake_exit_->SendControl(wire::EncodeControl(inv), TunnelConnection::ControlOrder::kAfterData);
      return metered;
    });
    return m ? *m : 0;
  }

  // The paid exit with kSmallInterval as the invoice interval, plus `extra` flags.
  int StartSmallExit(std::vector<std::string> extra) {
    return StartExit(
        ExitFlags{.invoice_interval_bytes = kSmallInterval, .extra = std::move(extra)});
  }

  PromiseMessage Sign(uint64_t seq, Amount cumulative, const payments::LedgerId& ledger,
                      const payments::ChannelId& channel, const PrivateKey& key) {
    // The ledger's own promise format (docs/protocol.md §Promise).
    auto signed_promise = ledger::MakePromise(key, ledger, channel, cumulative);
    return PromiseMessage{seq, cumulative, signed_promise.signature, ledger, channel};
  }
  PromiseMessage Sign(uint64_t seq, Amount cumulative) {
    return Sign(seq, cumulative, ledger_id_, channel_, payer_);
  }

  // Connects an in-process client to the exit at `port` with a hello naming `ledger` and
  // `channel` (identity: the funded payer). The tunnel is started, with a control handler that
  // records every payment message in peer_ (and pays invoices while peer_->auto_pay).
  std::shared_ptr<TunnelConnection> Connect(int port, const payments::LedgerId& ledger,
                                            const payments::ChannelId& channel) {
    auto key = FromHex(exit_pub_);
    if (!key || key->size() != 32) {
      ADD_FAILURE() << "bad exit key " << exit_pub_;
      return nullptr;
    }
    tunnel::HandshakeInitiator::Options hs;
    std::copy(key->begin(), key->end(), hs.provider_static.begin());
    hs.identity = &payer_;
    hs.ledger = ledger;
    hs.channel = channel;
    last_timestamp_ms_ = std::max(WallMs(), last_timestamp_ms_ + 1);
    hs.timestamp_ms = last_timestamp_ms_;
    tcp::endpoint ep(asio::ip::address_v4::loopback(), static_cast<uint16_t>(port));
    using Connected = Result<std::shared_ptr<TunnelConnection>, ts::ConnectErrc>;
    auto connected = loop_.Await<Connected>(
        [ep, hs]() { return ts::ConnectTunnel(ep, hs, ts::ConnectionOptions{}, 10'000ms); });
    if (!connected || !*connected) {
      ADD_FAILURE() << "ConnectTunnel: " << (connected ? connected->error().message : "timed out");
      return nullptr;
    }
    auto t = **connected;
    peer_ = std::make_shared<PeerLog>();
    auto peer = peer_;
    std::weak_ptr<TunnelConnection> weak = t;
    const payments::LedgerId l = ledger;
    const payments::ChannelId c = channel;
    auto started = loop_.Call([this, t, weak, peer, l, c] {
      t->SetControlHandler([this, weak, peer, l, c](ByteSpan message) {
        auto decoded = wire::DecodeControl(message);
        if (!decoded || !*decoded) return;
        std::lock_guard<std::mutex> lock(peer->mu);
        if (auto* inv = std::get_if<Invoice>(&**decoded)) {
          peer->invoices.push_back(*inv);
          if (peer->auto_pay) {
            auto p = Sign(inv->seq, inv->amount_due, l, c, payer_);  // B = 0: a fresh channel
            if (auto tun = weak.lock(); tun && tun->SendControl(wire::EncodeControl(p))) {
              peer->sent.push_back(p);
            }
          }
        } else if (auto* r = std::get_if<Receipt>(&**decoded)) {
          peer->receipts.push_back(*r);
        } else if (auto* n = std::get_if<Notice>(&**decoded)) {
          if (n->code == NoticeCode::kPaused && !peer->paused_at) peer->paused_at = Clock::now();
          peer->notices.push_back(*n);
        }
      });
      // Terms version 2 (docs/payments.md §4): upload credit comes from the exit's grants.
      if (!t->session_params().empty()) t->ZeroTunnelSendWindow();
      t->Start(nullptr, [weak, peer] {
        std::lock_guard<std::mutex> lock(peer->mu);
        peer->closed = true;
        peer->closed_at = Clock::now();
        if (auto tun = weak.lock()) {
          peer->meter_at_close = tun->data_bytes_sent() + tun->data_bytes_received();
        }
      });
      return true;
    });
    if (!started) {
      ADD_FAILURE() << "the io thread did not start the tunnel";
      return nullptr;
    }
    tunnel_ = t;
    return t;
  }

  // Opens a stream of tunnel_ to the harness's echo server; returns the application end of it
  // (a socket of this process), or -1.
  int OpenEchoStream() {
    SocketPair pair = LoopbackPair();
    if (pair.app < 0) return -1;
    auto t = tunnel_;
    const int fd = pair.tunnel_end;
    auto dest = tunnel::Destination::Ipv4({127, 0, 0, 1}, static_cast<uint16_t>(echo_.port()));
    auto opened = loop_.Await<bool>([this, t, fd, dest]() -> asio::awaitable<bool> {
      tcp::socket local(loop_.io());
      local.assign(tcp::v4(), fd);
      auto id = co_await t->OpenStream(dest);
      if (!id) co_return false;
      t->AttachStream(*id, std::move(local), {});
      co_return true;
    });
    if (!opened || !*opened) {
      ::close(pair.app);
      return -1;
    }
    return pair.app;
  }

  bool Send(const PromiseMessage& p) {
    auto t = tunnel_;
    auto peer = peer_;
    auto ok = loop_.Call([t, peer, p] {
      if (!t->SendControl(wire::EncodeControl(p))) return false;
      std::lock_guard<std::mutex> lock(peer->mu);
      peer->sent.push_back(p);
      return true;
    });
    return ok && *ok;
  }

  uint64_t Meter() {
    auto t = tunnel_;
    auto m = loop_.Call([t] { return t->data_bytes_sent() + t->data_bytes_received(); });
    return m ? *m : UINT64_MAX;
  }

  std::optional<CloseLog::PeerClose> PeerClose(const std::string& name = "client") {
    return CloseLog::Get()->FindPeerClose(name, close_mark_);
  }

  // An honest phase: pays every invoice while `bytes` go to the echo server and back, then
  // waits until the last invoice (for M = 2 * bytes) is paid and acknowledged. Returns the
  // promises sent (empty on failure).
  std::vector<PromiseMessage> HonestTraffic(uint64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(peer_->mu);
      peer_->auto_pay = true;
    }
    int fd = OpenEchoStream();
    if (fd < 0) {
      ADD_FAILURE() << "cannot open a stream to the echo server";
      return {};
    }
    Pusher pusher(fd, bytes);
    const Amount last_due = ChargeFor(2 * bytes);
    bool done = WaitUntil([&] { return pusher.read() == bytes && peer_->HasReceipt(last_due); });
    pusher.Stop();
    std::lock_guard<std::mutex> lock(peer_->mu);
    peer_->auto_pay = false;
    if (!done) {
      ADD_FAILURE() << "honest phase incomplete: echoed " << pusher.read() << " of " << bytes
                    << ", " << peer_->receipts.size() << " receipts\n"
                    << Tail(dir_.File("exit.log"));
      return {};
    }
    return peer_->sent;
  }

  // SIGTERM the exit (it settles what its store holds) and wait for it.
  void StopExitAndSettle() {
    ASSERT_TRUE(exit_->Signal(SIGTERM));
    auto st = exit_->WaitFor(30'000ms);
    ASSERT_TRUE(st) << "exit did not stop";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << Tail(dir_.File("exit.log"));
  }

  uint64_t Settled(const payments::ChannelId& channel) {
    auto ch = client_->GetChannel(channel);
    EXPECT_TRUE(ch) << ch.error().message;
    return ch ? ch->settled.micro() : UINT64_MAX;
  }

  IoThread loop_;
  std::shared_ptr<TunnelConnection> tunnel_;
  std::shared_ptr<PeerLog> peer_;
  uint64_t last_timestamp_ms_ = 0;
  size_t close_mark_ = 0;
  // Fake exit (test 4).
  std::shared_ptr<tcp::acceptor> acceptor_;
  std::shared_ptr<TunnelConnection> fake_exit_;
};

// ---- 1. A client that stops paying ------------------------------------------------------------

// The exit serves at most the credit window unpaid, pauses (Notice kPaused), and after the
// grace time closes with kPaymentTimeout.
TEST_F(Misbehaviour, ClientThatStopsPayingIsPausedThenCutOff) {
  constexpr uint64_t kWindow = 300'000;
  constexpr uint32_t kGraceMs = 1'500;
  int port = StartSmallExit({"--credit-window-bytes", std::to_string(kWindow), "--payment-grace-ms",
                             std::to_string(kGraceMs)});
  ASSERT_NE(port, 0);
  ASSERT_TRUE(Connect(port, ledger_id_, channel_));
  int fd = OpenEchoStream();
  ASSERT_GE(fd, 0);
  Pusher pusher(fd, UINT64_MAX);  // pushes until the tunnel ends; never pays

  // Bound on the metered bytes M (DATA payload both ways) of a session that never pays (B = 0,
  // so unpaid = M): exactly the credit window (docs/payments.md §4, "Unpaid traffic per
  // channel"): the exit reads its upstream only up to the limit, and the client's upload credit
  // comes out of the same limit (terms version 2). Before, M ran past the window by a read batch
  // and the uploads in flight (up to 1,448,576 bytes were allowed here).
  constexpr uint64_t kBound = kWindow;

  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kPaused) > 0; }))
      << "no kPaused notice; meter " << Meter() << "\n"
      << Tail(dir_.File("exit.log"));
  const uint64_t at_pause = Meter();
  ASSERT_TRUE(WaitUntil([&] { return peer_->IsClosed(); }, 10s))
      << "the exit did not close the tunnel; meter " << Meter();
  pusher.Stop();

  std::lock_guard<std::mutex> lock(peer_->mu);
  const uint64_t total = peer_->meter_at_close;
  std::cerr << "metered at the kPaused notice: " << at_pause << ", at the close: " << total
            << " (window " << kWindow << ", bound " << kBound << ")\n";
  // The client may hold unused upload credit (at most half of what is left) when it stops.
  EXPECT_GE(total, kWindow / 2) << "the exit paused long before the credit window was used";
  EXPECT_LE(total, kBound);
  // The pause comes with an invoice for the exit's M at that moment (§4, Invoicing): the last
  // invoice. From there only the upload credit the client held may still move (within the
  // window: the bound above), and no download (the exit reads no upstream socket while paused;
  // what it had queued was counted when queued).
  EXPECT_TRUE(peer_->sent.empty());
  EXPECT_TRUE(peer_->receipts.empty());
  ASSERT_FALSE(peer_->invoices.empty()) << "no invoice at the pause";
  const uint64_t paused_at_m = peer_->invoices.back().metered_bytes;
  std::cerr << "the exit paused at M = " << paused_at_m << "\n";
  EXPECT_LE(total, paused_at_m + kStreamWindow);
  for (const auto& inv : peer_->invoices) {
    EXPECT_LE(inv.metered_bytes, total);
    EXPECT_EQ(inv.amount_due, ChargeFor(inv.metered_bytes));
  }
  // The grace time passed between the pause and the close (the notice arrives just after the
  // pause starts, hence a little slack below).
  ASSERT_TRUE(peer_->paused_at);
  const auto paused_for =
      std::chrono::duration_cast<std::chrono::milliseconds>(peer_->closed_at - *peer_->paused_at);
  EXPECT_GE(paused_for.count(), int64_t{kGraceMs} - 100);
  EXPECT_LE(paused_for.count(), int64_t{kGraceMs} + 5'000);
  // CLOSE kPaymentTimeout (docs/payments.md §4, §8: "no payment for N ms").
  auto close = PeerClose();
  ASSERT_TRUE(close) << "no CLOSE frame received";
  EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kPaymentTimeout));
  EXPECT_EQ(close->text, "no payment for " + std::to_string(kGraceMs) + " ms");
  EXPECT_NE(ReadFile(dir_.File("exit.log")).find("ending the session: no payment for"),
            std::string::npos);
}

// A paused client that pays the latest invoice is resumed and served again; the exit settles
// exactly what it signed.
TEST_F(Misbehaviour, PausedClientThatPaysResumes) {
  constexpr uint64_t kWindow = 300'000;
  int port = StartSmallExit(
      {"--credit-window-bytes", std::to_string(kWindow), "--payment-grace-ms", "10000"});
  ASSERT_NE(port, 0);
  const Amount before = ProviderBalance();
  ASSERT_TRUE(Connect(port, ledger_id_, channel_));
  int fd = OpenEchoStream();
  ASSERT_GE(fd, 0);
  Pusher pusher(fd, UINT64_MAX);
  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kPaused) > 0; }))
      << Tail(dir_.File("exit.log"));
  const uint64_t at_pause = Meter();
  // Pay the latest invoice now and every later one.
  auto paid = loop_.Call([this] {
    std::lock_guard<std::mutex> lock(peer_->mu);
    peer_->auto_pay = true;
    const Invoice& inv = peer_->invoices.back();
    auto p = Sign(inv.seq, inv.amount_due);
    if (!tunnel_->SendControl(wire::EncodeControl(p))) return false;
    peer_->sent.push_back(p);
    return true;
  });
  ASSERT_TRUE(paid && *paid);
  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kResumed) > 0; }))
      << Tail(dir_.File("exit.log"));
  // Served again: far beyond what a paused session can move.
  const uint64_t kBeyond = at_pause + kWindow + kSmallInterval + 2 * kStreamWindow + 2'000'000;
  EXPECT_TRUE(WaitUntil([&] { return Meter() >= kBeyond; }))
      << "meter " << Meter() << " after resuming (paused at " << at_pause << ")";
  // Stop paying; the last promise signed must be acknowledged before the exit settles.
  auto last = loop_.Call([this] {
    std::lock_guard<std::mutex> lock(peer_->mu);
    peer_->auto_pay = false;
    return peer_->sent.back().cumulative;
  });
  ASSERT_TRUE(last);
  ASSERT_TRUE(WaitUntil([&] { return peer_->HasReceipt(*last); }))
      << "no receipt for " << last->ToString();
  pusher.Stop();
  EXPECT_FALSE(peer_->IsClosed());
  StopExitAndSettle();
  std::cerr << "paid after the pause, signed " << last->ToString() << "\n";
  EXPECT_EQ(ProviderBalance().micro() - before.micro(), last->micro());
  EXPECT_EQ(Settled(channel_), last->micro());
}

// ---- 2. Old and replayed promises -----------------------------------------------------------

// docs/payments.md §4 check 2: a promise below the latest checked one is refused (Notice
// kPromiseRefused "old or replayed promise", counted); one equal to it is a duplicate, ignored
// silently and not counted; the third counted refusal ends the tunnel with kPaymentError. The
// store never goes back: the exit settles the highest promise.
TEST_F(Misbehaviour, OldAndReplayedPromisesAreRefused) {
  int port = StartSmallExit({"--credit-window-bytes", "400000"});
  ASSERT_NE(port, 0);
  const Amount before = ProviderBalance();
  ASSERT_TRUE(Connect(port, ledger_id_, channel_));
  auto honest = HonestTraffic(500'000);  // M = 1 MB: 10 invoices of 0.001
  ASSERT_GE(honest.size(), 3u);
  const PromiseMessage first = honest.front();
  const PromiseMessage latest = honest.back();
  ASSERT_EQ(latest.cumulative, ChargeFor(1'000'000));
  ASSERT_LT(first.cumulative, latest.cumulative);
  ASSERT_EQ(peer_->Count(NoticeCode::kPromiseRefused), 0u);

  // An earlier promise, replayed as it was sent: refused, counted (1).
  ASSERT_TRUE(Send(first));
  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kPromiseRefused) == 1; }));
  EXPECT_NE(peer_->Notices(NoticeCode::kPromiseRefused)[0].text.find("old or replayed promise"),
            std::string::npos);
  // A replay of the latest: a duplicate, silent. Then a fresh promise above it (a client may
  // pay more than invoiced): its receipt comes after anything the duplicate could have caused.
  ASSERT_TRUE(Send(latest));
  const Amount higher = Micro(latest.cumulative.micro() + 1);
  ASSERT_TRUE(Send(Sign(0, higher)));
  ASSERT_TRUE(WaitUntil([&] { return peer_->HasReceipt(higher); })) << Tail(dir_.File("exit.log"));
  EXPECT_EQ(peer_->Count(NoticeCode::kPromiseRefused), 1u) << "the duplicate was not silent";
  // The previous latest is now old too: refused (2), the tunnel lives on.
  ASSERT_TRUE(Send(latest));
  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kPromiseRefused) == 2; }));
  EXPECT_FALSE(peer_->IsClosed()) << "the duplicate was counted as a refusal";
  // The third counted refusal ends the tunnel.
  ASSERT_TRUE(Send(first));
  ASSERT_TRUE(WaitUntil([&] { return peer_->IsClosed(); }));
  auto close = PeerClose();
  ASSERT_TRUE(close);
  EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kPaymentError));
  EXPECT_NE(close->text.find("3 promises refused"), std::string::npos) << close->text;
  {
    std::lock_guard<std::mutex> lock(peer_->mu);
    for (const auto& r : peer_->receipts) EXPECT_LE(r.cumulative, higher);
    for (size_t i = 1; i < peer_->receipts.size(); ++i) {
      EXPECT_GT(peer_->receipts[i].cumulative, peer_->receipts[i - 1].cumulative)
          << "receipts went back";
    }
  }
  StopExitAndSettle();
  EXPECT_EQ(ProviderBalance().micro() - before.micro(), higher.micro());
  EXPECT_EQ(Settled(channel_), higher.micro());
}

// ---- 3. Promises for another channel / ledger, forged -------------------------------------

// docs/payments.md §4 checks 1 and 4: "promise for another channel" / "another ledger" are
// refused with a Notice and not credited; a bad signature is refused and ends the tunnel at once
// (kPaymentError). Only the good promises are settled.
TEST_F(Misbehaviour, PromisesForAnotherChannelOrLedgerOrForgedAreRefused) {
  // A second real channel of the same client to the same provider.
  auto info = client_->GetInfo();
  ASSERT_TRUE(info);
  auto open2 = ledger::MakeOpenChannel(payer_, ledger_id_, ProviderAddress(), Micro(1'000'000), 2,
                                       info->server_time_unix + 86'400);
  auto ch2 = client_->OpenChannel(open2);
  ASSERT_TRUE(ch2) << ch2.error().message;
  const payments::ChannelId channel2 = ch2->id;
  ASSERT_NE(channel2, channel_);

  int port = StartSmallExit({"--credit-window-bytes", "400000"});
  ASSERT_NE(port, 0);
  const Amount before = ProviderBalance();
  ASSERT_TRUE(Connect(port, ledger_id_, channel_));
  auto honest = HonestTraffic(300'000);  // M = 600 KB: 0.006
  ASSERT_FALSE(honest.empty());
  const Amount good = honest.back().cumulative;
  ASSERT_EQ(good, ChargeFor(600'000));
  const Amount more = Micro(good.micro() + 5'000);

  // Signed by the right key, for the client's other channel.
  ASSERT_TRUE(Send(Sign(0, more, ledger_id_, channel2, payer_)));
  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kPromiseRefused) == 1; }));
  // Signed by the right key, for this channel on another ledger.
  payments::LedgerId other_ledger = ledger_id_;
  other_ledger.bytes[0] ^= 0xFF;
  ASSERT_TRUE(Send(Sign(0, more, other_ledger, channel_, payer_)));
  ASSERT_TRUE(WaitUntil([&] { return peer_->Count(NoticeCode::kPromiseRefused) == 2; }));
  auto refused = peer_->Notices(NoticeCode::kPromiseRefused);
  EXPECT_EQ(refused[0].text, "promise for another channel");
  EXPECT_EQ(refused[1].text, "promise for another ledger");
  EXPECT_FALSE(peer_->IsClosed());
  // Right ledger and channel, signed by another key: refused, the tunnel ends at once.
  const PrivateKey forger = PrivateKey::Generate();
  ASSERT_TRUE(Send(Sign(0, more, ledger_id_, channel_, forger)));
  ASSERT_TRUE(WaitUntil([&] { return peer_->IsClosed(); }));
  refused = peer_->Notices(NoticeCode::kPromiseRefused);
  ASSERT_EQ(refused.size(), 3u);
  EXPECT_EQ(refused[2].text, "bad promise signature");
  auto close = PeerClose();
  ASSERT_TRUE(close);
  EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kPaymentError));
  EXPECT_EQ(close->text, "bad promise signature");
  {
    std::lock_guard<std::mutex> lock(peer_->mu);
    ASSERT_FALSE(peer_->receipts.empty());
    EXPECT_EQ(peer_->receipts.back().cumulative, good) << "a refused promise was acknowledged";
  }
  StopExitAndSettle();
  EXPECT_EQ(ProviderBalance().micro() - before.micro(), good.micro());
  EXPECT_EQ(Settled(channel_), good.micro());
  EXPECT_EQ(Settled(channel2), 0u);
}

// ---- 4. A provider that inflates its invoices ------------------------------------------------

// A fake exit in this process serves the real client honestly, invoices honestly once, then
// claims far more bytes than flowed. The client signs the honest invoice only, closes with
// kOvercharge and exits 4 (docs/tunnel-cli.md).
TEST_F(Misbehaviour, ClientRefusesAnInflatedInvoiceAndLeaves) {
  auto static_key = std::make_shared<tunnel::X25519KeyPair>(tunnel::X25519KeyPair::Generate());
  exit_pub_ = ToHex(static_key->public_key);  // the client is pointed at the fake exit
  payments::SessionTerms terms;
  terms.price = payments::Price{Micro(kPricePerMbMicro), Amount::Zero()};
  terms.payee = ProviderAddress();
  const std::vector<uint8_t> params = wire::EncodeTerms(terms);

  auto seen = std::make_shared<FakeExitSeen>();
  const int fake_port = StartFakeExit(seen, static_key, params);
  int socks = StartClient(fake_port);
  ASSERT_NE(socks, 0) << Tail(dir_.File("client.log"));
  {
    std::lock_guard<std::mutex> lock(seen->mu);
    ASSERT_TRUE(seen->hello);
    EXPECT_EQ(seen->hello->channel, channel_);
    EXPECT_EQ(seen->hello->ledger, ledger_id_);
  }
  ASSERT_TRUE(WaitUntil([&] {
    auto up = loop_.Call([this] { return fake_exit_ != nullptr; });
    return up && *up;
  }));
  // Honest traffic through the fake exit.
  constexpr size_t kBytes = 300'000;
  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(EchoThrough(fd, kBytes), kBytes);

  auto invoice = [&](uint64_t seq, uint64_t extra_bytes) {
    return FakeInvoice(seen, seq, extra_bytes);
  };
  const uint64_t honest_m = invoice(1, 0);
  EXPECT_EQ(honest_m, 2 * kBytes);
  const Amount honest_due = ChargeFor(honest_m);  // 0.006
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard<std::mutex> lock(seen->mu);
    return !seen->promises.empty();
  })) << Tail(dir_.File("client.log"));
  {
    std::lock_guard<std::mutex> lock(seen->mu);
    const PromiseMessage& p = seen->promises[0];
    EXPECT_EQ(p.invoice_seq, 1u);
    EXPECT_EQ(p.cumulative, honest_due);
    EXPECT_TRUE(payer_.public_key().Verify(
        payments::PromiseDigest(ledger_id_, channel_, p.cumulative), p.signature));
  }

  // Inflated: 50 MB more than flowed (and the matching amount, 0.5 credits more).
  constexpr uint64_t kInflation = 50'000'000;
  const uint64_t claimed = invoice(2, kInflation);
  ASSERT_EQ(claimed, honest_m + kInflation);
  auto st = tunnel_client_->WaitFor(15'000ms);
  ::close(fd);
  ASSERT_TRUE(st) << "the client did not leave\n" << Tail(dir_.File("client.log"));
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 4) << Tail(dir_.File("client.log"));
  const std::string log = ReadFile(dir_.File("client.log"));
  EXPECT_NE(log.find("invoice 2 refused: overcharge: invoice 2: " + std::to_string(claimed) +
                     " bytes, own meter"),
            std::string::npos)
      << Tail(dir_.File("client.log"));
  // CLOSE kOvercharge reached the fake exit, and no promise above the honest one was signed.
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard<std::mutex> lock(seen->mu);
    return seen->closed;
  }));
  auto close = PeerClose("fake-exit");
  ASSERT_TRUE(close) << "the client sent no CLOSE";
  EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kOvercharge));
  EXPECT_NE(close->text.find("invoice 2: " + std::to_string(claimed) + " bytes"), std::string::npos)
      << close->text;
  std::lock_guard<std::mutex> lock(seen->mu);
  EXPECT_EQ(seen->promises.size(), 1u);
  for (const auto& p : seen->promises) EXPECT_LE(p.cumulative, honest_due);
}

// ---- 5. Ledger or channel mismatch at the handshake ------------------------------------------

// docs/payments.md §2: a hello naming another ledger, or a channel the ledger does not know,
// gets msg2 and at once CLOSE kPaymentRequired with the reason; no DATA flows.
TEST_F(Misbehaviour, HelloForAnotherLedgerOrUnknownChannelIsRefused) {
  int port = StartExit();
  ASSERT_NE(port, 0);
  payments::LedgerId other_ledger = ledger_id_;
  other_ledger.bytes[31] ^= 0x01;
  payments::ChannelId unknown_channel = channel_;
  unknown_channel.bytes[0] ^= 0x80;
  const struct {
    payments::LedgerId ledger;
    payments::ChannelId channel;
    std::string why;
  } cases[] = {{other_ledger, channel_, "the channel is on another ledger"},
               {ledger_id_, unknown_channel, "unknown channel"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.why);
    close_mark_ = CloseLog::Get()->Mark();
    auto t = Connect(port, c.ledger, c.channel);
    ASSERT_TRUE(t);
    // Try to use it: a stream open must not get through.
    int fd = OpenEchoStream();
    if (fd >= 0) ::close(fd);
    EXPECT_LT(fd, 0) << "a stream was opened through a refused session";
    ASSERT_TRUE(WaitUntil([&] { return peer_->IsClosed(); }));
    auto close = PeerClose();
    ASSERT_TRUE(close);
    EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kPaymentRequired));
    EXPECT_EQ(close->text, c.why);
    std::lock_guard<std::mutex> lock(peer_->mu);
    EXPECT_EQ(peer_->meter_at_close, 0u);
    EXPECT_TRUE(peer_->invoices.empty());
    EXPECT_TRUE(peer_->notices.empty());
  }
  const std::string log = ReadFile(dir_.File("exit.log"));
  EXPECT_NE(log.find("refused: payment required: the channel is on another ledger"),
            std::string::npos);
  EXPECT_NE(log.find("refused: payment required: unknown channel"), std::string::npos);
}

// With --offers-from an overcharge is the provider's failure, not the end of the client: it
// refuses the inflated invoice (CLOSE kOvercharge), records the overcharge in its stats file and
// moves to the next offer, through which data flows again (docs/tunnel-cli.md "Choosing from
// offers"). The cheap provider is a fake exit in this process; the next one the real exit.
TEST_F(Misbehaviour, ClientChoosingFromOffersLeavesAnOverchargingProviderForTheNext) {
  const ByteArray<32> cheap_secret = RandomSecret();
  const auto cheap = *PrivateKey::FromBytes(cheap_secret);
  const Address cheap_addr = Address::FromPublicKey(cheap.public_key());
  ASSERT_TRUE(client_->OpenChannel(ledger::MakeOpenChannel(
      payer_, ledger_id_, cheap_addr, Micro(1'000'000), 2, ServerTime() + 86'400)));
  auto static_key = std::make_shared<tunnel::X25519KeyPair>(tunnel::X25519KeyPair::Generate());
  payments::SessionTerms terms;
  terms.price = payments::Price{Micro(5'000), Amount::Zero()};
  terms.payee = cheap_addr;
  auto seen = std::make_shared<FakeExitSeen>();
  const int fake_port = StartFakeExit(seen, static_key, wire::EncodeTerms(terms));
  const int client_grpc = StartExitWithHonestOffer().client_grpc;
  ASSERT_NE(client_grpc, 0);
  ASSERT_NE(StartNode("cheap", BootstrapTo("client-node",
                                           Advertise(cheap_secret, ToHex(static_key->public_key),
                                                     fake_port, "0.005"))),
            0);
  ASSERT_TRUE(WaitForOffers(client_grpc, 2));

  const std::string stats_file = dir_.File("provider-stats.db");
  const int socks = StartOffersClient(client_grpc, stats_file, {"--reconnect-min-ms", "100"});
  ASSERT_NE(socks, 0);
  ASSERT_TRUE(WaitUntil([&] {
    auto up = loop_.Call([this] { return fake_exit_ != nullptr; });
    return up && *up;
  })) << "the client did not choose the cheapest offer\n"
      << Tail(dir_.File("client.log"));

  int fd = SocksConnect(socks, echo_.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(EchoThrough(fd, 300'000), 300'000u);
  FakeInvoice(seen, 1, 50'000'000);  // 50 MB that never flowed
  ::close(fd);

  // The client leaves the fake exit and carries on through the honest one.
  const std::string honest_name =
      "chose provider " + ToHex(provider_.public_key().bytes()).substr(0, 16);
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(dir_.File("client.log")).find(honest_name) != std::string::npos;
  })) << Tail(dir_.File("client.log"));
  ASSERT_TRUE(WaitUntil([&] {
    int f = SocksConnect(socks, echo_.port());
    if (f < 0) return false;
    const bool ok = EchoThrough(f, 200'000) == 200'000u;
    ::close(f);
    return ok;
  })) << Tail(dir_.File("client.log"));
  EXPECT_TRUE(tunnel_client_->running() && !tunnel_client_->WaitFor(0ms))
      << "an overcharge must not end a client that chooses from offers";
  {
    std::lock_guard<std::mutex> lock(seen->mu);
    EXPECT_TRUE(seen->promises.empty()) << "nothing was signed for the inflated invoice";
  }
  auto close = PeerClose("fake-exit");
  ASSERT_TRUE(close);
  EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kOvercharge));

  tunnel_client_->Signal(SIGTERM);
  ASSERT_TRUE(tunnel_client_->WaitFor(10'000ms));
  auto cheap_record = StoredRecord(stats_file, cheap);
  ASSERT_TRUE(cheap_record);
  EXPECT_EQ(cheap_record->overcharges, 1u);
  EXPECT_GE(cheap_record->failed, 1u);
}

// ---- Unpaid traffic per channel (docs/payments.md §4) ------------------------------------------

// A client that hangs up whenever it is paused and connects again on the same channel, session
// after session, across an exit killed with SIGKILL and restarted, gets one credit window in all:
// every new session starts with the unpaid bytes carried, paused until they are paid. (Before,
// each session got a whole window of its own and uploads up to the 8 MiB tunnel window more.)
TEST_F(Misbehaviour, HangingUpWhenPausedGainsNoCreditAcrossSessionsAndRestarts) {
  constexpr uint64_t kWindow = 300'000;
  const std::vector<std::string> flags = {"--credit-window-bytes", std::to_string(kWindow),
                                          "--payment-grace-ms", "3000"};
  int port = StartSmallExit(flags);
  ASSERT_NE(port, 0);
  uint64_t total = 0;
  for (int session = 0; session < 8; ++session) {
    if (session == 4) {  // the exit dies mid-life and comes back on the same promise store
      ASSERT_TRUE(exit_->Signal(SIGKILL));
      ASSERT_TRUE(exit_->WaitFor(10'000ms));
      port = StartSmallExit(flags);
      ASSERT_NE(port, 0);
    }
    auto t = Connect(port, ledger_id_, channel_);
    ASSERT_TRUE(t) << "session " << session;
    int fd = OpenEchoStream();
    ASSERT_GE(fd, 0) << "session " << session;
    Pusher pusher(fd, UINT64_MAX);  // uploads and reads the echo; never pays
    const bool paused =
        WaitUntil([&] { return peer_->Count(NoticeCode::kPaused) > 0 || peer_->IsClosed(); });
    // Hang up: everything the exit can still count arrives before the close.
    loop_.Call([t] {
      t->Close(tunnel::CloseReason::kNormal, "hang up", true);
      return true;
    });
    ASSERT_TRUE(WaitUntil([&] { return peer_->IsClosed(); }));
    pusher.Stop();
    uint64_t metered;
    {
      std::lock_guard<std::mutex> lock(peer_->mu);
      metered = peer_->meter_at_close;
    }
    total += metered;
    std::cerr << "session " << session << ": metered " << metered << " (paused: " << paused
              << "), total " << total << "\n";
    ASSERT_TRUE(paused) << "session " << session << " was neither paused nor closed";
    // (A handshake that reaches the exit before it saw this close is refused: "the channel
    // already has a live session"; that session meters nothing and the loop goes on.)
  }
  // The bound: one credit window over every session (exact: the exit never meters past it).
  EXPECT_LE(total, kWindow);
  EXPECT_GE(total, kWindow / 2) << "the first session should use most of the window";
  // Nothing was ever paid.
  EXPECT_EQ(Settled(channel_), 0u);
}

// A channel whose escrow left cannot pay for one credit window is refused at the handshake, with
// the reason (before, any escrow above the last promise was admitted: a channel with one
// micro-credit left got a whole window).
TEST_F(Misbehaviour, ChannelWithLessThanOneWindowOfEscrowIsRefused) {
  constexpr uint64_t kWindow = 300'000;  // costs 3,000 micro-credits at 0.01 per MB
  auto open = ledger::MakeOpenChannel(payer_, ledger_id_, ProviderAddress(), Micro(2'999), 2,
                                      ServerTime() + 86'400);
  auto small = client_->OpenChannel(open);
  ASSERT_TRUE(small) << small.error().message;
  int port = StartSmallExit({"--credit-window-bytes", std::to_string(kWindow)});
  ASSERT_NE(port, 0);
  auto t = Connect(port, ledger_id_, small->id);
  ASSERT_TRUE(t);
  ASSERT_TRUE(WaitUntil([&] { return peer_->IsClosed(); }));
  auto close = PeerClose();
  ASSERT_TRUE(close);
  EXPECT_EQ(close->reason, static_cast<int>(CloseReason::kPaymentRequired));
  EXPECT_NE(close->text.find("does not cover one credit window (0.003"), std::string::npos)
      << close->text;
  {
    std::lock_guard<std::mutex> lock(peer_->mu);
    EXPECT_EQ(peer_->meter_at_close, 0u);
  }
  // The funded channel is admitted as before.
  auto ok = Connect(port, ledger_id_, channel_);
  ASSERT_TRUE(ok);
  int fd = OpenEchoStream();
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
}

}  // namespace
}  // namespace dvpn::payments_e2e
