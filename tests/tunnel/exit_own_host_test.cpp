// The exit does not reach its own host (docs/tunnel.md, "The exit's own host"), checked for
// real: in a network namespace this test creates (loopback and a dummy interface or a veth
// pair with both ends inside, so nothing leaves it), an ExitServer listens on 0.0.0.0 and a client opens streams through it to TCP
// servers on the host's own addresses: an extra public IPv4 and IPv6 address of the dummy
// interface (and the ::ffff: form), an address added after the exit started (netlink, and the
// periodic re-read alone), and the node's own ports on 127.0.0.1 while the operator allows
// 127.0.0.1. Needs root (ip netns); skipped otherwise.

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/tunnel/io_test_util.h"
#include "tunnel/exit_policy.h"
#include "tunnel/session/client.h"
#include "tunnel/session/exit_server.h"
#include "tunnel/session/host_addresses.h"

namespace dvpn::tunnel::session {
namespace {

using namespace std::chrono_literals;
using testing::RunUntil;

// Public-looking addresses (not in any default-refused range, so only the own-host rule can
// refuse them); they exist only inside the test's namespace.
constexpr const char* kExtraV4 = "11.22.33.44";
constexpr const char* kExtraV6 = "2a0b:7280:ffff::44";
constexpr const char* kLaterV4 = "11.22.33.55";
constexpr const char* kLaterV6 = "2a0b:7280:ffff::55";
constexpr const char* kLaterV4b = "11.22.33.66";

bool Sh(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// A named network namespace with lo up and an interface "d0" holding kExtraV4 and kExtraV6;
// deleted by the destructor (the namespace and everything in it).
class TestNamespace {
 public:
  TestNamespace() {
    static std::atomic<int> counter{0};
    name_ = "dvpn-exitpol-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    if (!Sh("ip netns add " + name_)) {
      name_.clear();
      return;
    }
    // A dummy interface, or where the kernel has no dummy driver a veth pair with both ends in
    // the namespace: either way nothing leaves it.
    const bool link = Ip("link add d0 type dummy") ||
                      (Ip("link add d0 type veth peer name d1") && Ip("link set d1 up"));
    ok_ = link && Ip("link set lo up") && Ip("link set d0 up") &&
          Ip(std::string("addr add ") + kExtraV4 + "/24 dev d0") &&
          Ip(std::string("-6 addr add ") + kExtraV6 + "/64 dev d0 nodad");
  }
  ~TestNamespace() {
    if (!name_.empty()) Sh("ip netns del " + name_);
  }
  TestNamespace(const TestNamespace&) = delete;
  TestNamespace& operator=(const TestNamespace&) = delete;

  bool ok() const { return ok_; }
  // `ip -n <ns> <args>`.
  bool Ip(const std::string& args) const { return Sh("ip -n " + name_ + " " + args); }

  // Runs `fn` on a thread inside the namespace (its sockets, getifaddrs and netlink are the
  // namespace's) and waits for it. False when the thread could not enter it.
  bool Run(const std::function<void()>& fn) const {
    bool entered = false;
    std::thread t([&] {
      const int fd = open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return;
      entered = setns(fd, CLONE_NEWNET) == 0;
      close(fd);
      if (entered) fn();
    });
    t.join();
    return entered;
  }

 private:
  std::string name_;
  bool ok_ = false;
};

// An exit on 0.0.0.0 and a client tunnel to it, on one io_context (the namespace's thread).
class Harness : private testing::ExitAndClient {
 public:
  Harness(const std::vector<std::string>& rules, ExitServer::Options options) {
    if (StartExit(tcp::endpoint(asio::ip::address_v4::any(), 0), rules, options)) {
      ConnectClient(5s);
    }
  }

  ~Harness() {
    Shutdown(3s, [this] {
      error_code ignored;
      for (auto& a : listeners_) a->close(ignored);
    });
  }

  bool ready() const { return client_ != nullptr; }
  uint16_t exit_port() const { return server_->local_endpoint().port(); }
  asio::io_context& io() { return io_; }
  ExitServer& server() { return *server_; }

  // A TCP server on `address` (any port); returns its port, 0 when it cannot bind.
  uint16_t Listen(const std::string& address) {
    error_code ec;
    auto a = std::make_shared<tcp::acceptor>(io_);
    tcp::endpoint ep(asio::ip::make_address(address), 0);
    a->open(ep.protocol(), ec);
    if (!ec) a->bind(ep, ec);
    if (!ec) a->listen(16, ec);
    if (ec) {
      ADD_FAILURE() << "cannot listen on " << address << ": " << ec.message();
      return 0;
    }
    listeners_.push_back(a);
    // Accepts and drops, so the backlog never fills.
    asio::co_spawn(io_, AcceptAndDrop(a), asio::detached);
    return a->local_endpoint().port();
  }

  // Opens a stream to address:port; nullopt when the tunnel gave no answer in time. An opened
  // stream is reset at once.
  std::optional<Result<uint32_t, OpenFailure>> Open(const std::string& address, uint16_t port) {
    const auto a = asio::ip::make_address(address);
    const Destination d = a.is_v4() ? Destination::Ipv4(a.to_v4().to_bytes(), port)
                                    : Destination::Ipv6(a.to_v6().to_bytes(), port);
    return Open(d);
  }
  std::optional<Result<uint32_t, OpenFailure>> Open(const Destination& d) {
    auto opened = std::make_shared<std::optional<Result<uint32_t, OpenFailure>>>();
    asio::co_spawn(io_, client_->OpenStream(d),
                   [opened](std::exception_ptr, Result<uint32_t, OpenFailure> r) { *opened = r; });
    if (!RunUntil(io_, [&] { return opened->has_value(); }, 5s)) return std::nullopt;
    if (**opened) client_->CancelStream(***opened);
    return *opened;
  }

  // Runs the io_context for `d` (pacing a retry loop, not waiting for an event).
  void Pace(std::chrono::milliseconds d) {
    asio::steady_timer t(io_, d);
    bool done = false;
    t.async_wait([&](const error_code&) { done = true; });
    RunUntil(io_, [&] { return done; }, 5s);
  }

 private:
  std::vector<std::shared_ptr<tcp::acceptor>> listeners_;

  static asio::awaitable<void> AcceptAndDrop(std::shared_ptr<tcp::acceptor> a) {
    for (;;) {
      error_code ec;
      tcp::socket s = co_await a->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
  }
};

std::string Describe(const std::optional<Result<uint32_t, OpenFailure>>& r) {
  if (!r) return "no answer";
  if (*r) return "opened";
  return "OPEN_FAIL " + std::to_string(static_cast<int>(r->error().code));
}

bool NotAllowed(const std::optional<Result<uint32_t, OpenFailure>>& r) {
  return r && !*r && r->error().code == OpenFailure::kNotAllowed;
}

bool Opened(const std::optional<Result<uint32_t, OpenFailure>>& r) { return r && *r; }

class ExitOwnHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a network namespace (ip netns)";
    ns_.emplace();
    if (!ns_->ok()) {
      GTEST_SKIP() << "cannot create a network namespace with a dummy or veth interface (ip "
                      "netns add, ip link add type dummy/veth)";
    }
  }
  void TearDown() override { ns_.reset(); }

  // Runs the test body inside the namespace.
  void InNamespace(const std::function<void()>& fn) {
    ASSERT_TRUE(ns_->Run(fn)) << "cannot enter the test's network namespace";
  }

  std::optional<TestNamespace> ns_;
};

TEST_F(ExitOwnHostTest, EveryAddressOfTheHostRefusedInEveryForm) {
  InNamespace([&] {
    Harness h({}, {});
    ASSERT_TRUE(h.ready());
    const uint16_t v4_port = h.Listen(kExtraV4);
    const uint16_t v6_port = h.Listen(kExtraV6);
    ASSERT_NE(v4_port, 0);
    ASSERT_NE(v6_port, 0);
    auto r = h.Open(kExtraV4, v4_port);
    EXPECT_TRUE(NotAllowed(r)) << kExtraV4 << ": " << Describe(r);
    r = h.Open(std::string("::ffff:") + kExtraV4, v4_port);
    EXPECT_TRUE(NotAllowed(r)) << "::ffff:" << kExtraV4 << ": " << Describe(r);
    r = h.Open(kExtraV6, v6_port);
    EXPECT_TRUE(NotAllowed(r)) << kExtraV6 << ": " << Describe(r);
    // A name that resolves to the host ("localhost": /etc/hosts, no DNS) is refused too.
    r = h.Open(Destination::Domain("localhost", v4_port));
    EXPECT_TRUE(NotAllowed(r)) << "localhost: " << Describe(r);
  });
}

TEST_F(ExitOwnHostTest, OperatorMayAllowAnOwnAddressOnPurpose) {
  InNamespace([&] {
    Harness h({std::string("allow ") + kExtraV4 + "/32"}, {});
    ASSERT_TRUE(h.ready());
    const uint16_t port = h.Listen(kExtraV4);
    ASSERT_NE(port, 0);
    auto r = h.Open(kExtraV4, port);
    EXPECT_TRUE(Opened(r)) << Describe(r);
    // ...but not the exit's own tunnel port on it.
    r = h.Open(kExtraV4, h.exit_port());
    EXPECT_TRUE(NotAllowed(r)) << "the tunnel port: " << Describe(r);
  });
}

TEST_F(ExitOwnHostTest, AddressAddedAfterStartRefusedAtOnce) {
  InNamespace([&] {
    Harness h({}, {});
    ASSERT_TRUE(h.ready());
    ASSERT_TRUE(h.server().own_host().IsOwnAddress(*IpAddress::Parse(kExtraV4)));
    ASSERT_TRUE(ns_->Ip(std::string("addr add ") + kLaterV4 + "/32 dev d0"));
    ASSERT_TRUE(ns_->Ip(std::string("-6 addr add ") + kLaterV6 + "/128 dev d0 nodad"));
    const uint16_t v4_port = h.Listen(kLaterV4);
    const uint16_t v6_port = h.Listen(kLaterV6);
    ASSERT_NE(v4_port, 0);
    ASSERT_NE(v6_port, 0);
    // No waiting: the kernel announced the addresses before `ip` returned, and the exit reads
    // the queued notifications before deciding.
    auto r = h.Open(kLaterV4, v4_port);
    EXPECT_TRUE(NotAllowed(r)) << kLaterV4 << ": " << Describe(r);
    r = h.Open(std::string("::ffff:") + kLaterV4, v4_port);
    EXPECT_TRUE(NotAllowed(r)) << "::ffff:" << kLaterV4 << ": " << Describe(r);
    r = h.Open(kLaterV6, v6_port);
    EXPECT_TRUE(NotAllowed(r)) << kLaterV6 << ": " << Describe(r);
  });
}

TEST_F(ExitOwnHostTest, WithoutNetlinkTheReReadRefusesWithinItsInterval) {
  InNamespace([&] {
    ExitServer::Options options;
    options.host_addresses.watch_netlink = false;
    options.host_addresses.resync_interval = 200ms;
    Harness h({}, options);
    ASSERT_TRUE(h.ready());
    ASSERT_TRUE(ns_->Ip(std::string("addr add ") + kLaterV4b + "/32 dev d0"));
    const auto added = std::chrono::steady_clock::now();
    const uint16_t port = h.Listen(kLaterV4b);
    ASSERT_NE(port, 0);
    // Allowed (opened) until the next re-read, refused from then on; bounded.
    std::optional<Result<uint32_t, OpenFailure>> r;
    const bool refused = RunUntil(
        h.io(),
        [&] {
          r = h.Open(kLaterV4b, port);
          if (NotAllowed(r)) return true;
          h.Pace(20ms);
          return false;
        },
        3s);
    EXPECT_TRUE(refused) << "last: " << Describe(r);
    EXPECT_LT(std::chrono::steady_clock::now() - added, 1500ms);
  });
}

// With the operator allowing 127.0.0.1 (scripts/run_local.sh did), a tunnel client still
// cannot reach the node's own services on loopback: its control port (NodeControl: SetPrice)
// and its tunnel port. Another loopback port is reachable, as the operator asked.
TEST_F(ExitOwnHostTest, OwnPortsRefusedEvenWhenLoopbackIsAllowed) {
  InNamespace([&] {
    // The "control" server is bound first so its port can be protected, as dvpn-node does.
    asio::io_context control_io;
    tcp::acceptor control(control_io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    ExitServer::Options options;
    options.protected_ports = {control.local_endpoint().port()};
    Harness h({"allow 127.0.0.1/32", "allow [::1]/128", "allow *"}, options);
    ASSERT_TRUE(h.ready());
    const uint16_t web_port = h.Listen("127.0.0.1");
    ASSERT_NE(web_port, 0);
    auto r = h.Open("127.0.0.1", web_port);
    EXPECT_TRUE(Opened(r)) << "another loopback port: " << Describe(r);
    const uint16_t control_port = control.local_endpoint().port();
    for (const char* address : {"127.0.0.1", "127.0.0.2", "::ffff:127.0.0.1", "::1", kExtraV4,
                                "0.0.0.0"}) {
      r = h.Open(address, control_port);
      EXPECT_TRUE(NotAllowed(r)) << address << " control port: " << Describe(r);
      r = h.Open(address, h.exit_port());
      EXPECT_TRUE(NotAllowed(r)) << address << " tunnel port: " << Describe(r);
    }
    r = h.Open(Destination::Domain("localhost", control_port));
    EXPECT_TRUE(NotAllowed(r)) << "localhost control port: " << Describe(r);
    // A port protected after start (a service bound after the exit).
    const uint16_t late_port = h.Listen("127.0.0.1");
    ASSERT_NE(late_port, 0);
    h.server().ProtectPorts({late_port});
    r = h.Open("127.0.0.1", late_port);
    EXPECT_TRUE(NotAllowed(r)) << "a port protected later: " << Describe(r);
  });
}

TEST(HostAddresses, ReadsThisHostsLoopback) {
  auto a = ReadHostAddresses();
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_NE(std::find(a->begin(), a->end(), *IpAddress::Parse("127.0.0.1")), a->end());
}

}  // namespace
}  // namespace dvpn::tunnel::session
