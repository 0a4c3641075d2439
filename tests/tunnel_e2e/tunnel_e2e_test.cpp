// End-to-end tests of the tunnel: the real dvpn-tunnel-exit and dvpn-tunnel-client processes on
// 127.0.0.1, a loopback echo server run by the test (the exit's policy is opened for it with
// --allow 127.0.0.1/32), and SOCKS5 clients written here with blocking sockets. Every socket
// has send/receive timeouts and every wait a deadline; children are killed by PID.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/bytes.h"
#include "payments/keys.h"
#include "tests/support/subprocess.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "tunnel/mux_frame.h"
#include "tunnel/record.h"

#ifndef DVPN_TUNNEL_EXIT_BIN
#error "DVPN_TUNNEL_EXIT_BIN must name the dvpn-tunnel-exit executable"
#endif
#ifndef DVPN_TUNNEL_CLIENT_BIN
#error "DVPN_TUNNEL_CLIENT_BIN must name the dvpn-tunnel-client executable"
#endif

namespace {

using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using namespace std::chrono_literals;

constexpr auto kStartTimeout = 15s;

// A file descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

void SetTimeouts(int fd, std::chrono::seconds t) {
  timeval tv{};
  tv.tv_sec = t.count();
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

Fd ConnectLoopback(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  SetTimeouts(fd.get(), 30s);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Fd();
  return fd;
}

bool WriteAll(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadExactly(int fd, uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, data, n, 0);
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Reads until EOF (or error / timeout); returns the bytes.
std::vector<uint8_t> ReadToEof(int fd, bool* clean_eof) {
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof(buf), 0);
    if (r == 0) {
      *clean_eof = true;
      return out;
    }
    if (r < 0) {
      *clean_eof = false;
      return out;
    }
    out.insert(out.end(), buf, buf + r);
  }
}

// A free loopback port nobody listens on (bound, then closed).
int UnusedPort() {
  Fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// A loopback TCP echo server: echoes every byte, and after the peer's FIN, finishes echoing
// and half-closes (so it also checks FIN propagation through the tunnel).
class EchoServer {
 public:
  EchoServer() {
    listen_ = Fd(::socket(AF_INET, SOCK_STREAM, 0));
    int one = 1;
    setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(listen_.get(), 256);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~EchoServer() {
    stop_ = true;
    ::shutdown(listen_.get(), SHUT_RDWR);
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : workers_) t.join();
  }
  int port() const { return port_; }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int fd = ::accept(listen_.get(), nullptr, nullptr);
      if (fd < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      workers_.emplace_back([fd] {
        Fd conn(fd);
        SetTimeouts(fd, 30s);
        std::vector<uint8_t> buf(65536);
        for (;;) {
          ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
          if (r <= 0) break;
          if (!WriteAll(fd, buf.data(), static_cast<size_t>(r))) break;
        }
        ::shutdown(fd, SHUT_WR);
      });
    }
  }

  Fd listen_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
};

// SOCKS5 no-auth CONNECT. Returns the connected socket and the REP code (0xFF when the
// conversation failed before a reply).
struct SocksResult {
  Fd fd;
  int reply = 0xFF;
};

SocksResult SocksConnect(int socks_port, const std::vector<uint8_t>& address_part) {
  SocksResult result;
  result.fd = ConnectLoopback(socks_port);
  if (!result.fd.valid()) return result;
  int fd = result.fd.get();
  uint8_t greeting[] = {5, 1, 0};
  uint8_t method[2];
  if (!WriteAll(fd, greeting, 3) || !ReadExactly(fd, method, 2) || method[1] != 0) return result;
  std::vector<uint8_t> req = {5, 1, 0};
  req.insert(req.end(), address_part.begin(), address_part.end());
  if (!WriteAll(fd, req.data(), req.size())) return result;
  uint8_t head[4];
  if (!ReadExactly(fd, head, 4)) return result;
  size_t rest = head[3] == 1 ? 6 : head[3] == 4 ? 18 : 0;
  if (head[3] == 3) {
    uint8_t len;
    if (!ReadExactly(fd, &len, 1)) return result;
    rest = len + 2u;
  }
  std::vector<uint8_t> tail(rest);
  if (!ReadExactly(fd, tail.data(), rest)) return result;
  result.reply = head[1];
  return result;
}

std::vector<uint8_t> Ipv4Target(int port) {
  return {1, 127, 0, 0, 1, static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port & 0xFF)};
}

std::vector<uint8_t> DomainTarget(const std::string& name, int port) {
  std::vector<uint8_t> out;
  out.reserve(name.size() + 4);
  out.push_back(3);
  out.push_back(static_cast<uint8_t>(name.size()));
  for (char c : name) out.push_back(static_cast<uint8_t>(c));
  out.push_back(static_cast<uint8_t>(port >> 8));
  out.push_back(static_cast<uint8_t>(port & 0xFF));
  return out;
}

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  std::mt19937 rng(seed);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

// Sends `data` through an open SOCKS stream to the echo server (in a thread), half-closes, and
// reads the echo to EOF. True when exactly `data` came back followed by a clean EOF.
bool EchoRoundTrip(int fd, const std::vector<uint8_t>& data) {
  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    wrote = WriteAll(fd, data.data(), data.size());
    ::shutdown(fd, SHUT_WR);
  });
  bool eof = false;
  auto echoed = ReadToEof(fd, &eof);
  writer.join();
  return wrote && eof && echoed == data;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class TunnelE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dvpn::tunnel::EnsureSodium();
    auto key = dvpn::tunnel::X25519KeyPair::Generate();
    public_hex_ = dvpn::ToHex(key.public_key);
    public_key_ = key.public_key;
    std::ofstream(dir_.File("exit.key")) << dvpn::ToHex(key.secret_key) << "\n";
  }

  void StartExit(bool allow_loopback) {
    std::vector<std::string> argv = {DVPN_TUNNEL_EXIT_BIN,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--port-file",
                                     dir_.File("exit.port"),
                                     "--static-key-file",
                                     dir_.File("exit.key"),
                                     "--log-level",
                                     "debug"};
    if (allow_loopback) {
      argv.push_back("--allow");
      argv.push_back("127.0.0.1/32");
    }
    auto p = Subprocess::Spawn(argv, dir_.File("exit.log"));
    ASSERT_TRUE(p.has_value()) << p.error();
    exit_.emplace(std::move(*p));
    auto port = dvpn::testing::WaitForPortFile(dir_.File("exit.port"), kStartTimeout);
    ASSERT_TRUE(port.has_value()) << ReadFile(dir_.File("exit.log"));
    exit_port_ = *port;
  }

  // Starts a client; `name` separates port and log files.
  std::optional<Subprocess> SpawnClient(const std::string& name, const std::string& key_hex) {
    auto p = Subprocess::Spawn(
        {DVPN_TUNNEL_CLIENT_BIN, "--provider", "127.0.0.1:" + std::to_string(exit_port_),
         "--provider-key", key_hex, "--socks", "127.0.0.1:0", "--socks-port-file",
         dir_.File(name + ".port"), "--handshake-timeout-ms", "5000", "--log-level", "debug"},
        dir_.File(name + ".log"));
    if (!p) return std::nullopt;
    return std::move(*p);
  }

  void StartClient() {
    auto p = SpawnClient("client", public_hex_);
    ASSERT_TRUE(p.has_value());
    client_.emplace(std::move(*p));
    auto port = dvpn::testing::WaitForPortFile(dir_.File("client.port"), kStartTimeout);
    ASSERT_TRUE(port.has_value()) << ReadFile(dir_.File("client.log"))
                                  << ReadFile(dir_.File("exit.log"));
    socks_port_ = *port;
  }

  void StartBoth(bool allow_loopback = true) {
    StartExit(allow_loopback);
    if (HasFatalFailure()) return;
    StartClient();
  }

  // SIGTERM both and expect exit status 0.
  void TearDown() override {
    for (auto* p : {client_ ? &*client_ : nullptr, exit_ ? &*exit_ : nullptr}) {
      if (p == nullptr || !p->running()) continue;
      p->Signal(SIGTERM);
      auto status = p->WaitFor(10s);
      EXPECT_TRUE(status.has_value());
      if (status) {
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
      }
    }
  }

  void ExpectEchoWorks(size_t bytes, uint32_t seed) {
    auto s = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
    ASSERT_EQ(s.reply, 0);
    EXPECT_TRUE(EchoRoundTrip(s.fd.get(), RandomBytes(bytes, seed)));
  }

  TempDir dir_;
  EchoServer echo_;
  std::string public_hex_;
  dvpn::tunnel::Key32 public_key_{};
  std::optional<Subprocess> exit_;
  std::optional<Subprocess> client_;
  int exit_port_ = 0;
  int socks_port_ = 0;
};

TEST_F(TunnelE2eTest, BulkTransferBothWaysIpv4) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  ExpectEchoWorks(4 * 1024 * 1024, 1);
}

TEST_F(TunnelE2eTest, ManyConcurrentStreamsKeepIntegrity) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  constexpr int kStreams = 50;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      auto s = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
      if (s.reply != 0) return;
      // Different sizes, some above the 256 KiB stream window.
      size_t size = 64 * 1024 + static_cast<size_t>(i) * 9973;
      if (EchoRoundTrip(s.fd.get(), RandomBytes(size, 100 + i))) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kStreams) << ReadFile(dir_.File("exit.log"))
                                 << ReadFile(dir_.File("client.log"));
}

TEST_F(TunnelE2eTest, DomainNameIsResolvedAtTheExit) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  auto s = SocksConnect(socks_port_, DomainTarget("localhost", echo_.port()));
  ASSERT_EQ(s.reply, 0) << ReadFile(dir_.File("exit.log"));
  EXPECT_TRUE(EchoRoundTrip(s.fd.get(), RandomBytes(100'000, 7)));
}

TEST_F(TunnelE2eTest, RefusedDestinationGivesReply5) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  auto s = SocksConnect(socks_port_, Ipv4Target(UnusedPort()));
  EXPECT_EQ(s.reply, 5);
  // The tunnel is still fine.
  ExpectEchoWorks(10'000, 2);
}

TEST_F(TunnelE2eTest, PolicyDeniedDestinationGivesReply2) {
  StartBoth(/*allow_loopback=*/false);
  ASSERT_FALSE(HasFatalFailure());
  auto s = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
  EXPECT_EQ(s.reply, 2);
  auto d = SocksConnect(socks_port_, DomainTarget("localhost", echo_.port()));
  EXPECT_EQ(d.reply, 2);
  // The exit logs no destination by default.
  std::string log = ReadFile(dir_.File("exit.log"));
  EXPECT_EQ(log.find("127.0.0.1:" + std::to_string(echo_.port())), std::string::npos) << log;
  EXPECT_EQ(log.find("localhost"), std::string::npos) << log;
}

TEST_F(TunnelE2eTest, WrongProviderKeyFailsCleanlyAndExitStaysUp) {
  StartExit(true);
  ASSERT_FALSE(HasFatalFailure());
  auto wrong = dvpn::tunnel::X25519KeyPair::Generate();
  auto bad = SpawnClient("bad", dvpn::ToHex(wrong.public_key));
  ASSERT_TRUE(bad.has_value());
  auto status = bad->WaitFor(20s);
  ASSERT_TRUE(status.has_value()) << "the client did not give up";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
  EXPECT_NE(ReadFile(dir_.File("bad.log")).find("cannot establish the tunnel"), std::string::npos);
  // The exit still serves a correct client.
  StartClient();
  ASSERT_FALSE(HasFatalFailure());
  ExpectEchoWorks(50'000, 3);
}

TEST_F(TunnelE2eTest, GarbageInsteadOfHandshakeIsDropped) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  // Plain garbage, and garbage behind a valid msg1 header (fails mac1).
  for (int variant = 0; variant < 2; ++variant) {
    Fd fd = ConnectLoopback(exit_port_);
    ASSERT_TRUE(fd.valid());
    auto junk = RandomBytes(dvpn::tunnel::kMsg1Size, 40 + variant);
    if (variant == 1) {
      junk[0] = dvpn::tunnel::kMsg1Type;
      junk[1] = dvpn::tunnel::kHandshakeVersion;
      junk[2] = static_cast<uint8_t>(dvpn::tunnel::kMsg1Size >> 8);
      junk[3] = static_cast<uint8_t>(dvpn::tunnel::kMsg1Size & 0xFF);
    }
    ASSERT_TRUE(WriteAll(fd.get(), junk.data(), junk.size()));
    bool eof = false;
    auto reply = ReadToEof(fd.get(), &eof);
    EXPECT_TRUE(reply.empty()) << "the exit answered garbage";
  }
  // The established tunnel and the exit are unaffected.
  ExpectEchoWorks(100'000, 4);
  EXPECT_TRUE(exit_->running());
  EXPECT_EQ(::waitpid(exit_->pid(), nullptr, WNOHANG), 0);
}

TEST_F(TunnelE2eTest, HalfCloseDeliversDataAfterFin) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  auto s = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
  ASSERT_EQ(s.reply, 0);
  // Write everything and half-close BEFORE reading anything: the echo must still arrive in
  // full after our FIN, then EOF.
  auto data = RandomBytes(200'000, 5);
  ASSERT_TRUE(WriteAll(s.fd.get(), data.data(), data.size()));
  ::shutdown(s.fd.get(), SHUT_WR);
  bool eof = false;
  auto echoed = ReadToEof(s.fd.get(), &eof);
  EXPECT_TRUE(eof);
  EXPECT_EQ(echoed, data);
}

TEST_F(TunnelE2eTest, ResetStreamDoesNotDisturbNeighbours) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  auto neighbour = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
  ASSERT_EQ(neighbour.reply, 0);
  auto data = RandomBytes(2 * 1024 * 1024, 6);
  std::atomic<bool> neighbour_ok{false};
  std::thread t([&] { neighbour_ok = EchoRoundTrip(neighbour.fd.get(), data); });
  for (int i = 0; i < 5; ++i) {
    auto victim = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
    ASSERT_EQ(victim.reply, 0);
    auto junk = RandomBytes(300'000, 60 + i);
    WriteAll(victim.fd.get(), junk.data(), junk.size());
    linger abort_close{1, 0};  // close with RST
    setsockopt(victim.fd.get(), SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
    victim.fd.Reset();
  }
  t.join();
  EXPECT_TRUE(neighbour_ok.load());
  ExpectEchoWorks(10'000, 8);
}

// A raw tunnel client written with the pure layers: completes the handshake itself, so the test
// can send what a real client never would.
struct RawTunnel {
  Fd fd;
  std::vector<uint8_t> msg1;
  std::optional<dvpn::tunnel::SessionKeys> keys;
};

RawTunnel RawHandshake(int port, const dvpn::tunnel::Key32& provider,
                       const dvpn::payments::PrivateKey& identity, uint64_t timestamp_ms,
                       const std::vector<uint8_t>* replay_msg1 = nullptr) {
  RawTunnel t;
  t.fd = ConnectLoopback(port);
  if (!t.fd.valid()) return t;
  if (replay_msg1 != nullptr) {
    t.msg1 = *replay_msg1;
  } else {
    dvpn::tunnel::HandshakeInitiator::Options o;
    o.provider_static = provider;
    o.identity = &identity;
    o.timestamp_ms = timestamp_ms;
    std::optional<dvpn::tunnel::HandshakeInitiator> initiator;
    initiator.emplace(std::move(o));
    t.msg1.resize(dvpn::tunnel::kMsg1Size);
    if (!initiator->WriteMessage1(t.msg1)) return t;
    if (!WriteAll(t.fd.get(), t.msg1.data(), t.msg1.size())) return t;
    std::vector<uint8_t> msg2(dvpn::tunnel::kMaxMsg2Size);
    if (!ReadExactly(t.fd.get(), msg2.data(), dvpn::tunnel::kHandshakeHeaderSize)) return t;
    auto size = dvpn::tunnel::HandshakeMessageSize(
        dvpn::ByteSpan(msg2.data(), dvpn::tunnel::kHandshakeHeaderSize));
    if (!size || *size < dvpn::tunnel::kMinMsg2Size || *size > msg2.size()) return t;
    if (!ReadExactly(t.fd.get(), msg2.data() + dvpn::tunnel::kHandshakeHeaderSize,
                     *size - dvpn::tunnel::kHandshakeHeaderSize)) {
      return t;
    }
    auto keys = initiator->ReadMessage2(dvpn::ByteSpan(msg2.data(), *size));
    if (keys) t.keys.emplace(std::move(*keys));
    return t;
  }
  WriteAll(t.fd.get(), t.msg1.data(), t.msg1.size());
  return t;
}

// One record holding a PING frame.
std::vector<uint8_t> PingRecord(dvpn::tunnel::RecordSealer& sealer, uint64_t value) {
  std::vector<uint8_t> plain(dvpn::tunnel::kPingFrameSize);
  dvpn::tunnel::FrameWriter w(plain);
  EXPECT_TRUE(w.Ping(value).has_value());
  std::vector<uint8_t> rec(plain.size() + dvpn::tunnel::kRecordOverhead);
  auto n = sealer.Seal(plain, rec);
  EXPECT_TRUE(n.has_value());
  return rec;
}

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST_F(TunnelE2eTest, TamperedOversizedAndReplayedInputEndsOnlyThatSession) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  auto identity = dvpn::payments::PrivateKey::Generate();
  uint64_t ts = NowMs();

  // A valid raw session answers PING with PONG; then a tampered record ends it.
  auto t = RawHandshake(exit_port_, public_key_, identity, ts);
  ASSERT_TRUE(t.keys.has_value()) << ReadFile(dir_.File("exit.log"));
  dvpn::tunnel::RecordSealer sealer(*t.keys);
  dvpn::tunnel::RecordOpener opener(*t.keys);
  auto ping = PingRecord(sealer, 42);
  ASSERT_TRUE(WriteAll(t.fd.get(), ping.data(), ping.size()));
  std::vector<uint8_t> pong(dvpn::tunnel::kPingFrameSize + dvpn::tunnel::kRecordOverhead);
  ASSERT_TRUE(ReadExactly(t.fd.get(), pong.data(), pong.size()));
  auto opened = opener.Open(pong);
  ASSERT_TRUE(opened.has_value());
  dvpn::tunnel::FrameReader reader(opened->plaintext);
  auto frame = reader.Next();
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(frame->type, dvpn::tunnel::FrameType::kPong);
  EXPECT_EQ(frame->ping_value, 42u);

  auto tampered = PingRecord(sealer, 43);
  tampered[5] ^= 0x01;
  ASSERT_TRUE(WriteAll(t.fd.get(), tampered.data(), tampered.size()));
  bool eof = false;
  ReadToEof(t.fd.get(), &eof);  // the exit closes (its CLOSE frame may come first)

  // An oversized record header ends a fresh session.
  auto t2 = RawHandshake(exit_port_, public_key_, identity, ts + 1);
  ASSERT_TRUE(t2.keys.has_value());
  uint8_t oversized[] = {0x7F, 0xFF, 0, 0, 0, 0};
  ASSERT_TRUE(WriteAll(t2.fd.get(), oversized, sizeof(oversized)));
  ReadToEof(t2.fd.get(), &eof);

  // A replayed msg1 gets no msg2.
  auto replay = RawHandshake(exit_port_, public_key_, identity, 0, &t2.msg1);
  ASSERT_TRUE(replay.fd.valid());
  auto answer = ReadToEof(replay.fd.get(), &eof);
  EXPECT_TRUE(answer.empty()) << "the exit answered a replayed msg1";

  // The exit and the real client's tunnel are unaffected.
  ExpectEchoWorks(100'000, 9);
  std::string log = ReadFile(dir_.File("exit.log"));
  EXPECT_NE(log.find("record rejected"), std::string::npos) << log;
  EXPECT_NE(log.find("bad record header"), std::string::npos) << log;
  EXPECT_NE(log.find("replayed handshake"), std::string::npos) << log;
}

TEST_F(TunnelE2eTest, SlowReaderDoesNotStallOtherStreams) {
  StartBoth();
  ASSERT_FALSE(HasFatalFailure());
  // Stream A sends a lot and never reads its echo: its windows fill and its sender blocks.
  auto slow = SocksConnect(socks_port_, Ipv4Target(echo_.port()));
  ASSERT_EQ(slow.reply, 0);
  std::thread writer([&] {
    auto data = RandomBytes(8 * 1024 * 1024, 10);
    WriteAll(slow.fd.get(), data.data(), data.size());  // fails once we shut the socket down
  });
  // Other streams still go at full speed, several times over.
  for (int i = 0; i < 3; ++i) ExpectEchoWorks(1024 * 1024, 11 + i);
  ::shutdown(slow.fd.get(), SHUT_RDWR);
  writer.join();
}

}  // namespace
