// Fuzz target: one IP packet of full-tunnel mode (docs/tunnel.md, "IP packets"). The first byte
// chooses: bit 0 makes the checksums right first (FillChecksums), so the checks after them are
// reached; bit 1 gives the ICMP builders a short output buffer (64..127 bytes, from the second
// byte) instead of 1500. The rest is the packet. Aborts when
//   - a parsed packet's offsets or length lie outside the buffer, or its addresses differ from
//     the quick peeks, or its flow key does not reverse back;
//   - FillChecksums accepted a packet that then does not parse;
//   - a built ICMP answer is larger than its buffer or the RFC limit, or does not parse as an
//     ICMP error from `from` to the packet's source quoting the packet's first bytes.
// The builders also run on every input that does not parse (they classify packets themselves).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tunnel/ip/flow_key.h"
#include "tunnel/ip/icmp.h"
#include "tunnel/ip/packet.h"

namespace {

using namespace dvpn::tunnel::ip;

[[noreturn]] void Bug(const char* what) {
  std::fprintf(stderr, "ip_packet_fuzz: %s\n", what);
  std::abort();
}

void CheckAnswer(std::span<const uint8_t> packet, const Address& from, std::span<const uint8_t> out,
                 size_t n) {
  if (n > out.size()) Bug("answer larger than its buffer");
  if (n > (from.family == Family::kV4 ? kMaxIcmpv4Answer : kMaxIcmpv6Answer)) Bug("answer too big");
  auto a = ParsePacket(out.first(n));
  if (!a) Bug("an answer does not parse");
  if (!a->IsIcmpError()) Bug("an answer is not an ICMP error");
  if (!(a->src == from)) Bug("answer's source");
  if (!(a->dst == *SourceAddress(packet))) Bug("answer's destination");
  const auto quoted = out.subspan(a->payload_offset, n - a->payload_offset);
  if (quoted.size() > packet.size() || !std::equal(quoted.begin(), quoted.end(), packet.begin())) {
    Bug("answer does not quote the packet");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t mode = data[0];
  const size_t out_size = (mode & 2) ? 64 + data[1] % 64 : 1500;
  std::vector<uint8_t> packet(data + 2, data + size);
  if (mode & 1) {
    if (FillChecksums(packet) && !ParsePacket(packet)) Bug("FillChecksums accepted, parse refused");
  }
  std::vector<uint8_t> out(out_size);
  auto parsed = ParsePacket(packet);
  if (parsed) {
    const PacketInfo& i = *parsed;
    if (i.total_length != packet.size()) Bug("total_length");
    if (i.l4_offset > i.payload_offset || i.payload_offset > i.total_length) Bug("offsets");
    if (i.l4_offset < (i.family == Family::kV4 ? kIpv4MinHeader : kIpv6Header)) Bug("l4_offset");
    if (!(SourceAddress(packet) == i.src) || !(DestinationAddress(packet) == i.dst)) Bug("peek");
    const FlowKey k = MakeFlowKey(i);
    if (!(k.Reversed().Reversed() == k)) Bug("flow key reverse");
    if (FlowKeyHash{}(k) != std::hash<FlowKey>{}(k)) Bug("hash");
    if (Describe(packet).empty()) Bug("describe");
  } else if (parsed.error().message.size() > 15) {
    Bug("an error message that allocates");
  }
  for (Family family : {Family::kV4, Family::kV6}) {
    const Address from = family == Family::kV4 ? Address::V4({10, 231, 0, 1})
                                               : Address::V6({0xfd, 0x12, 0, 0, 0, 0, 0, 0, 0, 0,
                                                              0, 0, 0, 0, 0, 1});
    if (auto n = BuildProhibited(packet, from, out)) CheckAnswer(packet, from, out, *n);
    if (auto n = BuildTooBig(packet, from, family == Family::kV4 ? 1420 : 1280, out)) {
      CheckAnswer(packet, from, out, *n);
    }
  }
  return 0;
}
