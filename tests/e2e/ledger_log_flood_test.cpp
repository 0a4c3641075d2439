// What a peer can make a daemon log: the real dvpn-ledger on 127.0.0.1, attacked for a few
// seconds from raw sockets with unauthenticated garbage (an HTTP/2 preface followed by header
// blocks full of terminal escape sequences, invalid frames, and plain non-HTTP/2 bytes). gRPC's
// own parser used to write the peer's bytes to stderr unescaped and unlimited (hundreds of
// megabytes in seconds). The daemon's whole output (stdout and stderr) may grow by only a small
// bound, must hold no control character but newlines, and the ledger must still answer.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/bytes.h"
#include "common/text.h"
#include "ledger/rpc/ledger_client.h"
#include "payments/keys.h"
#include "tests/support/subprocess.h"

#ifndef DVPN_LEDGER_BIN
#error "DVPN_LEDGER_BIN must name the dvpn-ledger executable"
#endif

namespace dvpn::ledger {
namespace {

using dvpn::testing::FileTail;
using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr auto kAttack = std::chrono::seconds(4);
constexpr off_t kMaxLogGrowth = 64 * 1024;

off_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

// --- HTTP/2 and HPACK, just enough to be parsed as far as the header values -------------------

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string f;
  const size_t n = payload.size();
  f += static_cast<char>((n >> 16) & 0xff);
  f += static_cast<char>((n >> 8) & 0xff);
  f += static_cast<char>(n & 0xff);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  f += static_cast<char>((stream >> 24) & 0x7f);
  f += static_cast<char>((stream >> 16) & 0xff);
  f += static_cast<char>((stream >> 8) & 0xff);
  f += static_cast<char>(stream & 0xff);
  return f + payload;
}

// An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above it.
std::string HpackInt(uint8_t first, int prefix_bits, size_t value) {
  const size_t max = (size_t{1} << prefix_bits) - 1;
  std::string out;
  if (value < max) {
    out += static_cast<char>(first | value);
    return out;
  }
  out += static_cast<char>(first | max);
  value -= max;
  while (value >= 128) {
    out += static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
  return out;
}

std::string HpackString(const std::string& s) { return HpackInt(0x00, 7, s.size()) + s; }

// A literal header field without indexing, with a new name.
std::string Literal(const std::string& name, const std::string& value) {
  return std::string(1, '\0') + HpackString(name) + HpackString(value);
}
// A literal header field without indexing whose name is static-table entry `index`.
std::string LiteralIndexedName(size_t index, const std::string& value) {
  return HpackInt(0x00, 4, index) + HpackString(value);
}

std::string Escapes(size_t n) {
  const std::string unit = "\x1b[2J\x1b]0;pwned\x07\x1b[31mRED\r\x9b""6n\x00";
  std::string out;
  while (out.size() < n) out += unit;
  out.resize(n);
  return out;
}

const std::string kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// One request's header block: valid pseudo-headers, then fields a server must refuse, each
// carrying escape sequences (invalid names, invalid values, metadata gRPC parses and rejects).
std::string BadHeaders(uint32_t stream, int variant) {
  std::string block;
  block += '\x83';  // :method POST
  block += '\x86';  // :scheme http
  block += LiteralIndexedName(4, "/dvpn.v1.Ledger/GetInfo\x1b[2J");  // :path
  block += LiteralIndexedName(1, "127.0.0.1\x1b]0;x\x07");          // :authority
  block += Literal("content-type", "application/grpc");
  block += Literal("te", "trailers");
  switch (variant % 4) {
    case 0:
      block += Literal("grpc-timeout", Escapes(200));
      block += Literal("grpc-encoding", Escapes(300));
      break;
    case 1:
      block += Literal("X-\x1b[31mEVIL\x1b[0m", Escapes(2000));
      break;
    case 2:
      block += Literal("grpc-accept-encoding", Escapes(4000));
      block += Literal("user-agent", Escapes(4000));
      break;
    default:
      block += Literal("evil-bin", Escapes(3000));  // -bin: must be base64
      block += Literal(Escapes(100), "x");
      break;
  }
  return Frame(0x1, 0x4 | 0x1, stream, block);  // HEADERS, END_HEADERS | END_STREAM
}

// What one connection sends, by kind.
std::string Attack(int kind, int round) {
  std::string out;
  switch (kind % 4) {
    case 0:  // preface, settings, many bad requests
      out = kPreface + Frame(0x4, 0, 0, "");
      for (uint32_t i = 0; i < 20; ++i) out += BadHeaders(1 + 2 * i, round + int(i));
      break;
    case 1:  // preface then frames of garbage
      out = kPreface + Frame(0x4, 0, 0, "");
      out += Frame(0x1, 0x4, 1, Escapes(3000));      // undecodable HPACK
      out += Frame(0x7, 0, 0, Escapes(500));         // GOAWAY with escapes as debug data
      out += Frame(0x0, 0, 99, Escapes(1000));       // DATA on a stream never opened
      out += Escapes(4000);
      break;
    case 2:  // a bad preface
      out = "PRI * HTTP/2.0\r\n\r\nXX\x1b[2J\r\n\r\n" + Escapes(4000);
      break;
    default:  // not HTTP/2 at all
      out = "GET /\x1b[2J HTTP/1.1\r\nHost: \x1b]0;pwned\x07\r\n\r\n" + Escapes(4000);
      break;
  }
  return out;
}

// Connects, sends `data` (as far as the peer reads it within the deadline), reads and drops
// whatever comes back, then closes. Every wait is bounded by `deadline`.
void SendAndDrop(int port, const std::string& data, Clock::time_point deadline) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  size_t sent = 0;
  char buf[4096];
  bool peer_closed = false;
  while (Clock::now() < deadline && !peer_closed) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < data.size() ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 20) <= 0) {
      if (sent == data.size()) break;  // everything sent and the server is quiet
      continue;
    }
    if (p.revents & (POLLERR | POLLHUP)) break;
    if (p.revents & POLLIN) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) peer_closed = true;
    }
    if ((p.revents & POLLOUT) && sent < data.size()) {
      ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n < 0) break;
      sent += static_cast<size_t>(n);
    }
  }
  ::close(fd);
}

TEST(LedgerLogFlood, GarbageFromAPeerLeavesABoundedEscapedLog) {
  TempDir dir;
  const std::string log = dir.File("ledger.log");
  const std::string port_file = dir.File("port");
  const auto operator_key = payments::PrivateKey::Generate();
  auto proc = Subprocess::Spawn(
      {DVPN_LEDGER_BIN, "--db", dir.File("ledger.db"), "--listen", "127.0.0.1:0", "--port-file",
       port_file, "--name", "flood-test", "--operator-pubkey",
       ToHex(operator_key.public_key().bytes())},
      log);
  ASSERT_TRUE(proc) << proc.error();
  auto port = dvpn::testing::WaitForPortFile(port_file, milliseconds(10'000), *proc);
  ASSERT_TRUE(port) << "dvpn-ledger did not start; log:\n" << FileTail(log);
  rpc::LedgerClient client("127.0.0.1:" + std::to_string(*port), milliseconds(5000));
  ASSERT_TRUE(client.GetInfo());
  const off_t before = FileSize(log);

  const auto end = Clock::now() + kAttack;
  int connections = 0;
  while (Clock::now() < end) {
    SendAndDrop(*port, Attack(connections, connections / 4),
                std::min(end, Clock::now() + milliseconds(500)));
    ++connections;
  }
  EXPECT_GT(connections, 20);

  // Still serving, and whatever it wanted to write about the attack is written by now.
  auto info = client.GetInfo();
  EXPECT_TRUE(info) << info.error().message;
  EXPECT_TRUE(proc->Signal(SIGTERM));
  auto status = proc->WaitFor(milliseconds(10'000));
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);

  const off_t grown = FileSize(log) - before;
  EXPECT_LT(grown, kMaxLogGrowth) << connections << " connections; end of the log, escaped:\n"
                                  << EscapeForLog(FileTail(log, 2000), 2000);
  // Read at most a bounded prefix of a flooded log.
  std::string text;
  if (FILE* f = std::fopen(log.c_str(), "rb")) {
    text.resize(static_cast<size_t>(std::min<off_t>(FileSize(log), 8 << 20)));
    text.resize(std::fread(text.data(), 1, text.size(), f));
    std::fclose(f);
  }
  size_t controls = 0;
  size_t first = std::string::npos;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n') || c == 0x7f || c == 0x9b) {
      if (first == std::string::npos) first = i;
      ++controls;
    }
  }
  EXPECT_EQ(controls, 0u) << "first at byte " << first << ", escaped: \""
                          << (first == std::string::npos ? "" : EscapeForLog(text.substr(first, 80)))
                          << "\"";
}

}  // namespace
}  // namespace dvpn::ledger
