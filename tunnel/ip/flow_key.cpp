#include "tunnel/ip/flow_key.h"

#include <cstring>

namespace dvpn::tunnel::ip {
namespace {

// One round of a multiply-xorshift mix (the moremur constants): every input bit reaches every
// output bit.
uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v;
  h *= 0x3c79ac492ba7b653ull;
  h ^= h >> 33;
  h *= 0x1c69b3f74ac4ae35ull;
  h ^= h >> 27;
  return h;
}

uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

FlowKey FlowKey::Reversed() const {
  FlowKey r = *this;
  r.src = dst;
  r.dst = src;
  r.src_port = dst_port;
  r.dst_port = src_port;
  return r;
}

FlowKey MakeFlowKey(const PacketInfo& info) {
  FlowKey k;
  k.family = info.family;
  k.protocol = info.protocol;
  k.src = info.src;
  k.dst = info.dst;
  k.src_port = info.src_port;
  k.dst_port = info.dst_port;
  return k;
}

size_t FlowKeyHash::operator()(const FlowKey& key) const noexcept {
  uint64_t h = Mix(seed, 0x9e3779b97f4a7c15ull);
  h = Mix(h, Load64(key.src.bytes.data()));
  h = Mix(h, Load64(key.src.bytes.data() + 8));
  h = Mix(h, Load64(key.dst.bytes.data()));
  h = Mix(h, Load64(key.dst.bytes.data() + 8));
  h = Mix(h, uint64_t(key.family) << 48 | uint64_t(key.protocol) << 32 |
                 uint64_t(key.src_port) << 16 | key.dst_port);
  return size_t(h);
}

}  // namespace dvpn::tunnel::ip
