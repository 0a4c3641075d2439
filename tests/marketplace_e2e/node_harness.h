#pragma once
// Shared helpers of the marketplace end-to-end tests: real dvpn-node processes on 127.0.0.1
// (port 0 + port files), the OfferBook gRPC client (the generated stub), a WatchOffers collector,
// and RawPeer, a gossip peer played by the test over a plain TCP socket (the framing of
// docs/protocol.md §7 and the protobuf messages) to send what an attacker would.
// Every wait has a deadline; every process is stopped by PID (SIGTERM, then SIGKILL).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/bytes.h"
#include "dvpn/v1/marketplace.grpc.pb.h"
#include "marketplace/gossip_node.h"
#include "marketplace/offer.h"
#include "marketplace/wire.h"
#include "payments/keys.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_offer.h"

namespace dvpn::marketplace_e2e {

using dvpn::testing::FileTail;
using dvpn::testing::ReadFile;
using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using marketplace::Offer;
using payments::PrivateKey;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

inline payments::LedgerId TestNetwork() {
  payments::LedgerId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(0x40 + i);
  return id;
}

inline uint64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Polls `cond` every 50 ms until it holds or `timeout` passes.
inline bool PollUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return cond();
}

// A valid live offer of `key` (signed), for the test network.
inline Offer MakeOffer(const PrivateKey& key, uint32_t offer_id, uint64_t seq,
                       const std::string& region, uint64_t price_micro = 100'000,
                       uint64_t issued = UnixNow(), uint64_t lifetime = 3600) {
  Offer o = testing::UnsignedTestOffer(TestNetwork(), {.offer_id = offer_id,
                                                       .seq = seq,
                                                       .issued_unix = issued,
                                                       .lifetime_s = lifetime,
                                                       .price_micro = price_micro,
                                                       .region = region});
  marketplace::SignOffer(o, key);
  return o;
}

// One dvpn-node process.
struct Node {
  std::string name;
  std::optional<Subprocess> proc;
  int gossip_port = 0;
  int grpc_port = 0;
  std::string log;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::OfferBook::Stub> stub;
};

// ListOffers on `node` (2 s deadline). nullopt when the call fails.
inline std::optional<std::vector<v1::RankedOffer>> ListOffers(Node& node,
                                                              const v1::OfferFilter& filter = {},
                                                              grpc::Status* status = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 2s);
  v1::ListOffersRequest req;
  *req.mutable_filter() = filter;
  v1::ListOffersResponse reply;
  grpc::Status s = node.stub->ListOffers(&ctx, req, &reply);
  if (status) *status = s;
  if (!s.ok()) return std::nullopt;
  return std::vector<v1::RankedOffer>(reply.offers().begin(), reply.offers().end());
}

inline v1::OfferFilter AllOffers() {
  v1::OfferFilter f;
  f.set_limit(1000);
  return f;
}

inline std::string ProviderBytes(const PrivateKey& key) {
  const auto& b = key.public_key().bytes();
  return std::string(b.begin(), b.end());
}

// The offers of `provider` that `node` lists (empty also when the call fails).
inline std::vector<v1::RankedOffer> OffersOf(Node& node, const PrivateKey& provider) {
  std::vector<v1::RankedOffer> out;
  auto list = ListOffers(node, AllOffers());
  if (!list) return out;
  for (auto& r : *list)
    if (r.offer().provider() == ProviderBytes(provider)) out.push_back(r);
  return out;
}

// The node processes of one test. Stops them all (SIGTERM, then SIGKILL) on destruction.
class Network {
 public:
  explicit Network(const TempDir& dir) : dir_(dir) {}
  ~Network() { StopAll(); }
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // Fast gossip for tests: 200 ms rounds, anti-entropy every 2 s.
  static std::vector<std::string> GossipFlags() {
    return {"--round-ms",         "200",  "--anti-entropy-ms", "2000",
            "--hello-timeout-ms", "2000", "--log-level",       "debug"};
  }

  // Starts a node that dials `bootstrap` (gossip ports on 127.0.0.1), with `extra` flags (which
  // replace GossipFlags' of the same name), and waits for both its port files. Fails the test
  // (ADD_FAILURE) and returns null on error.
  Node* Start(const std::string& name, const std::vector<int>& bootstrap,
              const std::vector<std::string>& extra = {}) {
    auto node = std::make_unique<Node>();
    node->name = name;
    node->log = dir_.File(name + ".log");
    std::vector<std::string> argv = {DVPN_NODE_BIN,
                                     "--ledger-id",
                                     ToHex(TestNetwork().bytes),
                                     "--gossip-listen",
                                     "127.0.0.1:0",
                                     "--grpc-listen",
                                     "127.0.0.1:0",
                                     "--port-file",
                                     dir_.File(name + ".port"),
                                     "--grpc-port-file",
                                     dir_.File(name + ".grpc")};
    // The test flags, unless `extra` sets one of them itself.
    const auto test_flags = GossipFlags();
    for (size_t i = 0; i + 1 < test_flags.size(); i += 2) {
      if (std::find(extra.begin(), extra.end(), test_flags[i]) != extra.end()) continue;
      argv.push_back(test_flags[i]);
      argv.push_back(test_flags[i + 1]);
    }
    for (int port : bootstrap) {
      argv.push_back("--bootstrap");
      argv.push_back("127.0.0.1:" + std::to_string(port));
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto proc = Subprocess::Spawn(argv, node->log);
    if (!proc) {
      ADD_FAILURE() << name << ": cannot start dvpn-node: " << proc.error();
      return nullptr;
    }
    node->proc.emplace(std::move(*proc));
    auto gossip = dvpn::testing::WaitForPortFile(dir_.File(name + ".port"), 10s, *node->proc);
    auto grpc_port =
        gossip ? dvpn::testing::WaitForPortFile(dir_.File(name + ".grpc"), 10s, *node->proc)
               : std::nullopt;
    if (!gossip || !grpc_port) {
      ADD_FAILURE() << name << ": no port file\n" << FileTail(node->log);
      return nullptr;
    }
    node->gossip_port = *gossip;
    node->grpc_port = *grpc_port;
    node->channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(*grpc_port),
                                        grpc::InsecureChannelCredentials());
    node->stub = v1::OfferBook::NewStub(node->channel);
    nodes_.push_back(std::move(node));
    return nodes_.back().get();
  }

  // `count` nodes named node0..node<count-1>; node i bootstraps only to node i-1. `extra[i]`:
  // more flags for node i.
  bool StartChain(int count, const std::map<int, std::vector<std::string>>& extra = {}) {
    for (int i = 0; i < count; ++i) {
      std::vector<int> bootstrap;
      if (i > 0) bootstrap.push_back(nodes_.back()->gossip_port);
      auto it = extra.find(i);
      if (!Start("node" + std::to_string(i), bootstrap,
                 it == extra.end() ? std::vector<std::string>{} : it->second)) {
        return false;
      }
    }
    return true;
  }

  // SIGTERM, then up to `timeout` for the exit; SIGKILL after. The wait status, or nullopt
  // when it had to be killed.
  static std::optional<int> Stop(Node& n, std::chrono::milliseconds timeout = 10s) {
    if (!n.proc || !n.proc->running()) return std::nullopt;
    n.proc->Signal(SIGTERM);
    auto status = n.proc->WaitFor(timeout);
    if (!status) n.proc->KillAndReap();
    return status;
  }

  void StopAll() {
    for (auto& n : nodes_)
      if (n->proc && n->proc->running()) n->proc->Signal(SIGTERM);
    for (auto& n : nodes_) {
      if (!n->proc || !n->proc->running()) continue;
      if (!n->proc->WaitFor(10s)) n->proc->KillAndReap();
    }
  }

  std::vector<std::unique_ptr<Node>>& nodes() { return nodes_; }
  Node& operator[](size_t i) { return *nodes_.at(i); }
  size_t size() const { return nodes_.size(); }

  // Every node's log tail, for failure messages.
  std::string Logs(size_t bytes = 1500) const {
    std::string out;
    for (const auto& n : nodes_) out += "--- " + n->name + "\n" + FileTail(n->log, bytes) + "\n";
    return out;
  }

 private:
  const TempDir& dir_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

// A WatchOffers stream read by a thread of its own into a list of events.
class Watch {
 public:
  Watch(v1::OfferBook::Stub& stub, const v1::OfferFilter& filter = {},
        std::chrono::seconds bound = 120s) {
    ctx_.set_deadline(std::chrono::system_clock::now() + bound);
    v1::WatchOffersRequest req;
    *req.mutable_filter() = filter;
    reader_ = stub.WatchOffers(&ctx_, req);
    thread_ = std::thread([this] {
      v1::OfferEvent event;
      while (reader_->Read(&event)) {
        std::lock_guard lock(mu_);
        events_.push_back(event);
        cv_.notify_all();
      }
      grpc::Status s = reader_->Finish();
      std::lock_guard lock(mu_);
      status_ = s;
      cv_.notify_all();
    });
  }
  ~Watch() {
    ctx_.TryCancel();
    thread_.join();
  }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // Waits until some event satisfies `pred` (true), or `timeout` passes or the stream ends.
  bool WaitForEvent(const std::function<bool(const v1::OfferEvent&)>& pred,
                    std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& e : events_)
        if (pred(e)) return true;
      return status_.has_value();
    }) && std::any_of(events_.begin(), events_.end(), pred);
  }
  // Waits for the end of the stream; its status, or nullopt at the timeout.
  std::optional<grpc::Status> WaitForEnd(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return status_.has_value(); });
    return status_;
  }
  std::vector<v1::OfferEvent> events() {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::OfferEvent>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::OfferEvent> events_;
  std::optional<grpc::Status> status_;
};

inline std::function<bool(const v1::OfferEvent&)> EventFor(v1::OfferEvent::Kind kind,
                                                           const PrivateKey& provider) {
  std::string p = ProviderBytes(provider);
  return [kind, p](const v1::OfferEvent& e) {
    return e.kind() == kind && e.offer().offer().provider() == p;
  };
}

// A gossip peer played by the test: one TCP connection, frames written and read by hand.
class RawPeer {
 public:
  RawPeer() { node_id_ = RandomId(); }
  explicit RawPeer(const marketplace::NodeId& id) : node_id_(id) {}
  ~RawPeer() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  const marketplace::NodeId& node_id() const { return node_id_; }

  bool Connect(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    timeval tv{5, 0};  // a send never blocks for long
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }

  // One frame: u32 big-endian length || payload. False when the socket refuses it.
  bool Send(const v1::GossipMessage& m) {
    auto payload = marketplace::Serialize(m);
    std::vector<uint8_t> frame(4 + payload.size());
    const auto n = static_cast<uint32_t>(payload.size());
    frame[0] = static_cast<uint8_t>(n >> 24);
    frame[1] = static_cast<uint8_t>(n >> 16);
    frame[2] = static_cast<uint8_t>(n >> 8);
    frame[3] = static_cast<uint8_t>(n);
    std::copy(payload.begin(), payload.end(), frame.begin() + 4);
    size_t done = 0;
    while (done < frame.size()) {
      ssize_t w = ::send(fd_, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
      if (w <= 0) return false;
      done += static_cast<size_t>(w);
    }
    return true;
  }

  bool SendHello(const payments::LedgerId& network) {
    v1::GossipMessage m;
    auto* h = m.mutable_hello();
    h->set_version(marketplace::kGossipVersion);
    h->set_node_id(std::string(node_id_.begin(), node_id_.end()));
    h->set_listen_port(0);
    h->set_network(std::string(network.bytes.begin(), network.bytes.end()));
    return Send(m);
  }

  bool SendOffers(const std::vector<Offer>& offers) {
    v1::GossipMessage m;
    for (const auto& o : offers) marketplace::ToProto(o, m.mutable_offers()->add_offers());
    return Send(m);
  }

  bool SendPing(uint64_t nonce) {
    v1::GossipMessage m;
    m.mutable_ping()->set_nonce(nonce);
    return Send(m);
  }

  enum class ReadResult { kMatched, kClosed, kTimedOut };
  // Reads (and drops) the node's frames until one satisfies `pred`, the connection closes, or
  // `timeout` passes.
  ReadResult ReadUntil(const std::function<bool(const v1::GossipMessage&)>& pred,
                       std::chrono::milliseconds timeout) {
    auto deadline = SteadyClock::now() + timeout;
    for (;;) {
      // Whole frames already buffered first.
      while (buffer_.size() >= 4) {
        uint32_t n = (uint32_t{buffer_[0]} << 24) | (uint32_t{buffer_[1]} << 16) |
                     (uint32_t{buffer_[2]} << 8) | uint32_t{buffer_[3]};
        if (buffer_.size() < 4 + n) break;
        v1::GossipMessage m;
        bool parsed = m.ParseFromArray(buffer_.data() + 4, static_cast<int>(n));
        buffer_.erase(buffer_.begin(), buffer_.begin() + 4 + n);
        if (parsed && pred(m)) return ReadResult::kMatched;
      }
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
      if (left <= 0ms) return ReadResult::kTimedOut;
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
      if (r <= 0) continue;
      uint8_t chunk[65536];
      ssize_t got = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (got <= 0) return ReadResult::kClosed;  // EOF or reset
      buffer_.insert(buffer_.end(), chunk, chunk + got);
    }
  }

  // True when the node closed the connection within `timeout`.
  bool WaitClosed(std::chrono::milliseconds timeout) {
    return ReadUntil([](const v1::GossipMessage&) { return false; }, timeout) ==
           ReadResult::kClosed;
  }

  // True when the node answers a Ping within `timeout`: the connection is open and every frame
  // sent before was handled.
  bool Alive(std::chrono::milliseconds timeout) {
    const uint64_t nonce = ++nonce_;
    if (!SendPing(nonce)) return false;
    return ReadUntil(
               [nonce](const v1::GossipMessage& m) {
                 return m.has_pong() && m.pong().nonce() == nonce;
               },
               timeout) == ReadResult::kMatched;
  }

 private:
  static marketplace::NodeId RandomId() {
    marketplace::NodeId id{};
    auto k = PrivateKey::Generate();  // 32 random bytes we already have a source for
    std::copy_n(k.public_key().bytes().begin(), id.size(), id.begin());
    return id;
  }

  int fd_ = -1;
  marketplace::NodeId node_id_{};
  std::vector<uint8_t> buffer_;
  uint64_t nonce_ = 1000;
};

}  // namespace dvpn::marketplace_e2e
