#include "tests/support/udp_servers.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <random>

#include "tests/support/socket_address.h"

namespace dvpn::testing {

namespace {

constexpr int kPollMs = 100;
constexpr size_t kMaxDatagram = 65535;

// A DNS name in wire form (labels) from dotted text; empty when a label is empty or too long.
std::vector<uint8_t> EncodeName(const std::string& name) {
  std::vector<uint8_t> out;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    const size_t len = dot - start;
    if (len == 0 || len > 63) return {};
    out.push_back(static_cast<uint8_t>(len));
    out.insert(out.end(), name.begin() + start, name.begin() + dot);
    start = dot + 1;
  }
  out.push_back(0);
  return out;
}

// Reads a (possibly compressed) name at `*pos` into dotted text, moving `*pos` past it. False
// when it runs off the message or loops.
bool ReadName(const std::vector<uint8_t>& m, size_t* pos, std::string* name) {
  size_t p = *pos;
  bool jumped = false;
  name->clear();
  for (int steps = 0; steps < 128; ++steps) {
    if (p >= m.size()) return false;
    const uint8_t len = m[p];
    if (len == 0) {
      if (!jumped) *pos = p + 1;
      return true;
    }
    if ((len & 0xC0) == 0xC0) {
      if (p + 1 >= m.size()) return false;
      if (!jumped) *pos = p + 2;
      jumped = true;
      p = ((len & 0x3F) << 8) | m[p + 1];
      continue;
    }
    if (p + 1 + len > m.size()) return false;
    if (!name->empty()) *name += '.';
    name->append(m.begin() + p + 1, m.begin() + p + 1 + len);
    p += 1 + len;
  }
  return false;
}

uint16_t Get16(const std::vector<uint8_t>& m, size_t p) {
  return static_cast<uint16_t>((m[p] << 8) | m[p + 1]);
}
void Put16(std::vector<uint8_t>& m, uint16_t v) {
  m.push_back(static_cast<uint8_t>(v >> 8));
  m.push_back(static_cast<uint8_t>(v));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A UDP socket "connected" to ip:port in the caller's namespace, with `each` as receive
// timeout; invalid on failure.
Fd ConnectedUdp(const std::string& ip, int port, std::chrono::milliseconds each) {
  auto to = SocketAddress::Parse(ip, port);
  if (!to) return Fd();
  Fd fd(::socket(to->family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Fd();
  SetTimeouts(fd.get(), each);
  if (::connect(fd.get(), to->get(), to->length) != 0) return Fd();
  return fd;
}

}  // namespace

UdpServer::~UdpServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::expected<void, std::string> UdpServer::Bind(const Netns& ns,
                                                 const std::vector<std::string>& addresses,
                                                 int port) {
  for (const auto& address : addresses) {
    Fd fd = BoundSocketIn(&ns, SOCK_DGRAM | SOCK_NONBLOCK, address, port);
    if (!fd.valid()) {
      return std::unexpected("UDP server: cannot bind " + address + " port " +
                             std::to_string(port) + " in " + ns.name() + ": " +
                             std::strerror(errno));
    }
    sockets_.push_back(std::move(fd));
  }
  thread_ = std::thread([this] { Loop(); });
  return {};
}

void UdpServer::Loop() {
  std::vector<uint8_t> buffer(kMaxDatagram);
  std::vector<pollfd> polls;
  for (const auto& s : sockets_) polls.push_back({s.get(), POLLIN, 0});
  while (!stop_) {
    if (::poll(polls.data(), polls.size(), kPollMs) <= 0) continue;
    for (const auto& p : polls) {
      if ((p.revents & POLLIN) == 0) continue;
      for (int i = 0; i < 64; ++i) {  // drain a burst, bounded
        sockaddr_storage from{};
        socklen_t from_len = sizeof from;
        const ssize_t n = ::recvfrom(p.fd, buffer.data(), buffer.size(), 0,
                                     reinterpret_cast<sockaddr*>(&from), &from_len);
        if (n < 0) break;
        ++received_;
        const std::vector<uint8_t> answer =
            Answer(std::vector<uint8_t>(buffer.begin(), buffer.begin() + n));
        if (answer.empty() && n > 0) continue;
        (void)::sendto(p.fd, answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from),
                       from_len);
      }
    }
  }
}

std::expected<std::unique_ptr<UdpEchoServer>, std::string> UdpEchoServer::Start(
    const Netns& ns, const std::vector<std::string>& addresses, int port) {
  std::unique_ptr<UdpEchoServer> s(new UdpEchoServer());
  if (auto ok = s->Bind(ns, addresses, port); !ok) return std::unexpected(ok.error());
  return s;
}

UdpEchoServer::~UdpEchoServer() = default;

std::expected<std::unique_ptr<DnsResponder>, std::string> DnsResponder::Start(
    const Netns& ns, const std::vector<std::string>& addresses, int port, std::string name,
    std::string v4, std::string v6) {
  std::unique_ptr<DnsResponder> s(new DnsResponder());
  s->name_ = Lower(std::move(name));
  s->v4_.resize(4);
  s->v6_.resize(16);
  if (::inet_pton(AF_INET, v4.c_str(), s->v4_.data()) != 1 ||
      ::inet_pton(AF_INET6, v6.c_str(), s->v6_.data()) != 1) {
    return std::unexpected("DnsResponder: bad address " + v4 + " or " + v6);
  }
  if (auto ok = s->Bind(ns, addresses, port); !ok) return std::unexpected(ok.error());
  return s;
}

DnsResponder::~DnsResponder() = default;

std::vector<uint8_t> DnsResponder::Answer(const std::vector<uint8_t>& q) {
  // A query: QR 0, opcode 0, one question.
  if (q.size() < 12 || (q[2] & 0xF8) != 0 || Get16(q, 4) != 1) return {};
  size_t pos = 12;
  std::string name;
  if (!ReadName(q, &pos, &name) || pos + 4 > q.size()) return {};
  const uint16_t type = Get16(q, pos);
  const uint16_t klass = Get16(q, pos + 2);
  pos += 4;
  const bool known = Lower(name) == name_ && klass == 1;
  const std::vector<uint8_t>* rdata =
      !known ? nullptr : type == kDnsTypeA ? &v4_ : type == kDnsTypeAAAA ? &v6_ : nullptr;

  std::vector<uint8_t> a(q.begin(), q.begin() + pos);  // header and the question
  a[2] = static_cast<uint8_t>(0x80 | (q[2] & 0x01));   // QR, RD copied
  a[3] = static_cast<uint8_t>(0x80 | (known ? 0 : 3));  // RA, NOERROR or NXDOMAIN
  a[6] = 0;
  a[7] = rdata ? 1 : 0;                                 // ANCOUNT
  a[8] = a[9] = a[10] = a[11] = 0;                      // NSCOUNT, ARCOUNT
  if (rdata) {
    Put16(a, 0xC00C);  // the question's name
    Put16(a, type);
    Put16(a, 1);
    Put16(a, 0);
    Put16(a, 60);  // TTL
    Put16(a, static_cast<uint16_t>(rdata->size()));
    a.insert(a.end(), rdata->begin(), rdata->end());
  }
  return a;
}

bool UdpEchoRoundTrip(const std::string& ip, int port, const std::string& payload, int tries,
                      std::chrono::milliseconds each) {
  Fd fd = ConnectedUdp(ip, port, each);
  if (!fd.valid()) return false;
  std::vector<char> in(kMaxDatagram);
  for (int t = 0; t < tries; ++t) {
    if (::send(fd.get(), payload.data(), payload.size(), 0) < 0) {
      std::this_thread::sleep_for(each);  // e.g. ECONNREFUSED from an earlier ICMP error
      continue;
    }
    const auto deadline = std::chrono::steady_clock::now() + each;
    while (std::chrono::steady_clock::now() < deadline) {
      const ssize_t n = ::recv(fd.get(), in.data(), in.size(), 0);
      if (n < 0) break;
      if (std::string(in.data(), static_cast<size_t>(n)) == payload) return true;
    }
  }
  return false;
}

std::expected<std::vector<std::string>, std::string> DnsQuery(const std::string& ip, int port,
                                                              const std::string& name,
                                                              uint16_t type, int tries,
                                                              std::chrono::milliseconds each) {
  const std::vector<uint8_t> encoded = EncodeName(name);
  if (encoded.empty()) return std::unexpected("bad name " + name);
  std::random_device rd;
  const uint16_t id = static_cast<uint16_t>(rd());
  std::vector<uint8_t> q;
  Put16(q, id);
  Put16(q, 0x0100);  // RD
  Put16(q, 1);
  Put16(q, 0);
  Put16(q, 0);
  Put16(q, 0);
  q.insert(q.end(), encoded.begin(), encoded.end());
  Put16(q, type);
  Put16(q, 1);

  Fd fd = ConnectedUdp(ip, port, each);
  if (!fd.valid()) return std::unexpected("cannot make a UDP socket to " + ip);
  std::vector<uint8_t> m(kMaxDatagram);
  for (int t = 0; t < tries; ++t) {
    if (::send(fd.get(), q.data(), q.size(), 0) < 0) {
      std::this_thread::sleep_for(each);
      continue;
    }
    const ssize_t n = ::recv(fd.get(), m.data(), m.size(), 0);
    if (n < 0) continue;
    m.resize(static_cast<size_t>(n));
    if (m.size() < 12 || Get16(m, 0) != id || (m[2] & 0x80) == 0) {
      return std::unexpected("a malformed answer or another id");
    }
    const int rcode = m[3] & 0x0F;
    if (rcode == 3) return std::vector<std::string>{};
    if (rcode != 0) return std::unexpected("rcode " + std::to_string(rcode));
    size_t pos = 12;
    std::string skipped;
    for (uint16_t i = 0, n_q = Get16(m, 4); i < n_q; ++i) {
      if (!ReadName(m, &pos, &skipped) || pos + 4 > m.size()) return std::unexpected("question");
      pos += 4;
    }
    std::vector<std::string> out;
    for (uint16_t i = 0, n_a = Get16(m, 6); i < n_a; ++i) {
      if (!ReadName(m, &pos, &skipped) || pos + 10 > m.size()) return std::unexpected("answer");
      const uint16_t rtype = Get16(m, pos);
      const uint16_t rdlength = Get16(m, pos + 8);
      pos += 10;
      if (pos + rdlength > m.size()) return std::unexpected("answer's data");
      char text[INET6_ADDRSTRLEN] = {};
      if (rtype == kDnsTypeA && rdlength == 4) {
        ::inet_ntop(AF_INET, m.data() + pos, text, sizeof text);
        out.emplace_back(text);
      } else if (rtype == kDnsTypeAAAA && rdlength == 16) {
        ::inet_ntop(AF_INET6, m.data() + pos, text, sizeof text);
        out.emplace_back(text);
      }
      pos += rdlength;
    }
    return out;
  }
  return std::unexpected("no answer from " + ip + " after " + std::to_string(tries) + " tries");
}

}  // namespace dvpn::testing
