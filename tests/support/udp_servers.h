#pragma once
// Small UDP servers for the full-tunnel end-to-end tests, run in a network namespace of
// tests/support/topology.h on given addresses: an echo server (each datagram goes back to its
// sender) and a DNS responder that knows one name (A and AAAA records; every other question
// gets NXDOMAIN, a malformed datagram nothing). With them, the clients' side: a bounded echo
// round trip and a DNS query, both run on the caller's thread (so in its namespace: call them
// inside Netns::RunInside).
//
// Each server has one thread that polls its sockets (100 ms at most per wait) and answers; the
// destructor stops and joins it. Not meant for floods: a datagram the socket drops is lost.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/net_util.h"
#include "tests/support/netns.h"

namespace dvpn::testing {

// The common part: UDP sockets bound in a namespace and the thread that serves them.
class UdpServer {
 public:
  virtual ~UdpServer();
  UdpServer(const UdpServer&) = delete;
  UdpServer& operator=(const UdpServer&) = delete;

  // Datagrams received so far, over all addresses.
  uint64_t received() const { return received_.load(); }

 protected:
  UdpServer() = default;
  // Binds a socket to each of `addresses` (IPv4 or IPv6 literals) at `port` in `ns` and starts
  // the thread. An error message when an address does not bind.
  std::expected<void, std::string> Bind(const Netns& ns, const std::vector<std::string>& addresses,
                                        int port);
  // The answer to `request`, or empty for none.
  virtual std::vector<uint8_t> Answer(const std::vector<uint8_t>& request) = 0;

 private:
  void Loop();

  std::vector<Fd> sockets_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> received_{0};
  std::thread thread_;
};

class UdpEchoServer final : public UdpServer {
 public:
  static std::expected<std::unique_ptr<UdpEchoServer>, std::string> Start(
      const Netns& ns, const std::vector<std::string>& addresses, int port);
  ~UdpEchoServer() override;

 private:
  std::vector<uint8_t> Answer(const std::vector<uint8_t>& request) override { return request; }
};

// Answers questions (class IN) for `name` (case-insensitive, without the final dot): type A
// with `v4`, type AAAA with `v6`, any other type with no records; other names NXDOMAIN.
class DnsResponder final : public UdpServer {
 public:
  static std::expected<std::unique_ptr<DnsResponder>, std::string> Start(
      const Netns& ns, const std::vector<std::string>& addresses, int port, std::string name,
      std::string v4, std::string v6);
  ~DnsResponder() override;

 private:
  std::vector<uint8_t> Answer(const std::vector<uint8_t>& request) override;

  std::string name_;
  std::vector<uint8_t> v4_, v6_;
};

// Sends `payload` to ip:port from a new UDP socket and waits for the same bytes back, resending
// up to `tries` times, `each` apart. True when they came back.
bool UdpEchoRoundTrip(const std::string& ip, int port, const std::string& payload,
                      int tries = 5, std::chrono::milliseconds each = std::chrono::seconds(1));

constexpr uint16_t kDnsTypeA = 1;
constexpr uint16_t kDnsTypeAAAA = 28;

// Asks the DNS server at ip:port for `name` of `type` (A or AAAA) over UDP, resending up to
// `tries` times, `each` apart. Returns the answer's addresses as text (empty for NXDOMAIN or no
// records), or an error message (no answer, a malformed one, another id).
std::expected<std::vector<std::string>, std::string> DnsQuery(
    const std::string& ip, int port, const std::string& name, uint16_t type, int tries = 5,
    std::chrono::milliseconds each = std::chrono::seconds(1));

}  // namespace dvpn::testing
