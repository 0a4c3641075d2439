// Fuzz target: one TUN read with a vnet header (docs/full-tunnel.md, "Offloads"), split by
// SplitTunRead; the packets that parse are joined by a TcpCoalescer. The first byte chooses:
// bit 0 makes the packet's checksums right first (FillChecksums), so a kGsoNone packet can
// reach the coalescer; bits 1-2 the bound max_packet (1500, 1280, 576, 65535); bit 3 a
// coalescer of one item instead of 64; bit 4 a scratch buffer of 1000 bytes instead of 64 KiB.
// The rest is the read (10 bytes of vnet header, then the packet). Aborts when
//   - SplitTunRead's count differs from the packets handed over, or it handed any over and
//     then failed, or a packet is above max_packet, or an error message would allocate;
//   - Add refuses a packet after a Flush;
//   - a write is not a vnet header and a packet of the right size, or a super-packet does not
//     parse once its checksum is completed as the kernel does (kVnetNeedsCsum);
//   - splitting the writes again does not give back, byte for byte, the packets added.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tunnel/ip/checksum.h"
#include "tunnel/ip/offload.h"
#include "tunnel/ip/packet.h"

namespace {

using namespace dvpn::tunnel::ip;
using Bytes = std::vector<uint8_t>;

[[noreturn]] void Bug(const char* what) {
  std::fprintf(stderr, "offload_fuzz: %s\n", what);
  std::abort();
}

constexpr size_t kLargestPacket = kIpv6Header + 0xffff;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  static constexpr size_t kBounds[] = {1500, 1280, 576, 65535};
  const size_t max_packet = kBounds[(mode >> 1) & 3];
  Bytes read(data + 1, data + size);
  if ((mode & 1) && read.size() > kVnetHeaderSize) {
    (void)FillChecksums(std::span(read).subspan(kVnetHeaderSize));
  }
  Bytes scratch((mode & 16) ? 1000 : 65535);
  TcpCoalescer coalescer((mode & 8) ? 1 : 64);

  std::vector<Bytes> added;
  std::vector<Bytes> writes;
  auto flush = [&] {
    coalescer.Flush([&](std::span<const uint8_t> w) { writes.emplace_back(w.begin(), w.end()); });
  };
  size_t handed = 0;
  auto result = SplitTunRead(read, scratch, max_packet, [&](std::span<uint8_t> p) {
    ++handed;
    if (p.size() > max_packet) Bug("a packet above max_packet");
    auto info = ParsePacket(p);
    if (!info) return;
    added.emplace_back(p.begin(), p.end());
    if (!coalescer.Add(p, *info)) {
      flush();
      if (!coalescer.Add(p, *info)) Bug("Add refused after a Flush");
    }
  });
  if (result ? *result != handed : handed != 0) Bug("count of packets handed over");
  if (!result && result.error().message.size() > 15) Bug("an error message that allocates");
  flush();

  std::vector<Bytes> again;
  Bytes big_scratch(kLargestPacket);
  for (const Bytes& w : writes) {
    if (w.size() <= kVnetHeaderSize || w.size() > kVnetHeaderSize + kLargestPacket) {
      Bug("write size");
    }
    const VnetHeader h = ReadVnetHeader(std::span<const uint8_t, kVnetHeaderSize>(w.data(), 10));
    if (h.gso_type != kGsoNone) {
      if (h.flags != kVnetNeedsCsum || h.gso_size == 0) Bug("super-packet header");
      if (w.size() > kVnetHeaderSize + kMaxSuperPacket) Bug("super-packet above 64 KiB");
      Bytes completed(w.begin() + kVnetHeaderSize, w.end());
      const size_t field = size_t(h.csum_start) + h.csum_offset;
      if (field + 2 > completed.size()) Bug("csum field outside");
      const uint16_t sum = Checksum(std::span(completed).subspan(h.csum_start));
      completed[field] = uint8_t(sum >> 8);
      completed[field + 1] = uint8_t(sum);
      if (!ParsePacket(completed)) Bug("a completed super-packet does not parse");
    } else if (!(h == VnetHeader{})) {
      Bug("single packet header");
    }
    Bytes copy = w;
    auto split = SplitTunRead(copy, big_scratch, kLargestPacket, [&](std::span<uint8_t> p) {
      again.emplace_back(p.begin(), p.end());
    });
    if (!split) Bug("a write does not split again");
  }
  if (again != added) Bug("split again differs from the packets added");
  return 0;
}
