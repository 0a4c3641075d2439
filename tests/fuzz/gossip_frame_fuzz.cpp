// libFuzzer target for what a gossip peer sends (docs/protocol.md §7, docs/marketplace.md §1):
// a sequence of frame payloads delivered to one GossipNode, the code a remote peer reaches
// through the TCP transport (the transport only splits the stream into length-prefixed frames
// and hands each payload to GossipNode::OnFrame). The node parses each dvpn.v1.GossipMessage
// and validates it: Hello, Offers (wire.h FromProto and the validation table), Digest, Have and
// Pull (packed entries and keys), PeerRequest, Peers, Ping. It holds one offer, so digests,
// pulls and haves have something to answer with.
//
// Input: byte 0 = flags (bit 0: the connection is outbound, i.e. we dialled the peer; bit 1: a
// valid Hello is delivered first, so the fuzzer reaches the other messages at once), then
// records `len u16 (big-endian) || payload b[len]`. Length 0 instead means "one round passes"
// (the clock advances 1 s and the node ticks). Checks: no crash on any input; every frame the
// node sends parses, is within the frame limit, and goes to a connection it knows; the node
// never holds more connections than it was given.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "dvpn/v1/marketplace.pb.h"
#include "marketplace/gossip_node.h"
#include "marketplace/wire.h"
#include "tests/support/test_offer.h"

namespace {

using namespace dvpn::marketplace;

void Check(bool ok) {
  if (!ok) std::abort();
}

// libprotobuf logs every string field that is not UTF-8 (a frame that then fails to parse);
// silenced here so that the fuzzer's output stays readable and its speed is its own.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

constexpr uint64_t kStartUnix = 1'900'000'000;  // the seeds' offers are issued then
constexpr PeerId kPeer = 1;
constexpr size_t kMaxRecords = 256;

dvpn::payments::LedgerId Network() {
  dvpn::payments::LedgerId id;
  id.bytes.fill(0x5c);
  return id;
}

class FuzzHost : public GossipHost {
 public:
  void Send(PeerId peer, std::vector<uint8_t> payload) override {
    Check(peer == kPeer && !closed);
    Check(!payload.empty() && payload.size() <= kMaxGossipFrame);
    dvpn::v1::GossipMessage m;
    Check(m.ParseFromArray(payload.data(), static_cast<int>(payload.size())));
  }
  void Dial(const Endpoint&) override {}
  void Close(PeerId peer) override {
    Check(peer == kPeer);
    closed = true;
  }
  uint64_t NowMs() override { return now_ms; }
  uint64_t NowUnix() override { return kStartUnix + now_ms / 1000; }
  uint64_t now_ms = 0;
  bool closed = false;
};

// The one offer the node holds (signed once; a fixed key and aux, so runs are reproducible).
const Offer& HeldOffer() {
  static const Offer offer = [] {
    dvpn::ByteArray<32> secret{};
    secret.fill(0x42);
    auto key = dvpn::payments::PrivateKey::FromBytes(secret);
    Check(key.has_value());
    Offer o = dvpn::testing::UnsignedTestOffer(Network(), {.seq = 5, .issued_unix = kStartUnix});
    dvpn::Hash32 aux{};
    SignOfferWithAux(o, *key, aux);
    return o;
  }();
  return offer;
}

// Verifies for real, but remembers the held offer's answer: publishing it on every input
// would otherwise spend most of the run on one signature.
class Checker : public SignatureChecker {
 public:
  bool Check(const Offer& offer, const dvpn::Hash32& digest) override {
    static const dvpn::Hash32 held = OfferDigest(HeldOffer());
    if (digest == held) return true;
    return SignatureChecker::Check(offer, digest);
  }
};

std::vector<uint8_t> ValidHello() {
  dvpn::v1::GossipMessage m;
  auto* h = m.mutable_hello();
  h->set_version(kGossipVersion);
  h->set_node_id(std::string(16, '\x01'));
  h->set_listen_port(7001);
  const auto net = Network();
  h->set_network(std::string(net.bytes.begin(), net.bytes.end()));
  return Serialize(m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  GossipConfig config;
  config.network = Network();
  config.node_id.fill(0xee);
  config.listen_port = 7000;
  config.seed = 1;
  FuzzHost host;
  static const auto checker = std::make_shared<Checker>();
  GossipNode node(config, host, checker);
  node.Start();
  Check(node.Publish(HeldOffer()).has_value());
  node.OnConnected(kPeer, (flags & 1) != 0, Endpoint{"127.0.0.1", (flags & 1) ? uint16_t{7001} : uint16_t{0}});
  if (flags & 2) node.OnFrame(kPeer, ValidHello());

  size_t at = 1;
  for (size_t records = 0; at + 2 <= size && records < kMaxRecords && !host.closed; ++records) {
    const size_t len = (size_t{data[at]} << 8) | data[at + 1];
    at += 2;
    if (len == 0) {
      host.now_ms += 1000;
      node.Tick();
      continue;
    }
    const size_t take = std::min(len, size - at);
    node.OnFrame(kPeer, dvpn::ByteSpan(data + at, take));
    at += take;
  }
  Check(node.stats().peers <= 1);
  return 0;
}
