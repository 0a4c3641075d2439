#include "tunnel/inner_pool.h"

#include <sodium.h>

#include <algorithm>
#include <string>

namespace dvpn::tunnel {

namespace {

// `base` + `offset`, carrying through the address's bytes (offset < 2^63).
IpAddress Plus(IpAddress base, uint64_t offset) {
  const int last = base.family == IpAddress::Family::kV4 ? 3 : 15;
  for (int i = last; i >= 0 && offset != 0; --i) {
    const uint64_t sum = base.bytes[i] + (offset & 0xff);
    base.bytes[i] = static_cast<uint8_t>(sum);
    offset = (offset >> 8) + (sum >> 8);
  }
  return base;
}

// `a` - `base` when it fits in 63 bits (the high bytes equal), else nullopt.
std::optional<uint64_t> Minus(const IpAddress& a, const IpAddress& base) {
  const int size = a.family == IpAddress::Family::kV4 ? 4 : 16;
  uint64_t diff = 0;
  int borrow = 0;
  uint64_t place = 1;
  for (int i = size - 1; i >= 0; --i) {
    int d = int(a.bytes[i]) - int(base.bytes[i]) - borrow;
    borrow = d < 0;
    if (d < 0) d += 256;
    if (size - 1 - i < 8) {
      diff += static_cast<uint64_t>(d) * place;
      place <<= 8;
    } else if (d != 0) {
      return std::nullopt;
    }
  }
  if (borrow) return std::nullopt;
  return diff;
}

}  // namespace

IpPrefix DerivedIpv6Pool(const ByteArray<32>& tunnel_public_key) {
  uint8_t digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, tunnel_public_key.data(), tunnel_public_key.size());
  std::array<uint8_t, 16> bytes{};
  bytes[0] = 0xfd;
  std::copy_n(digest, 5, bytes.begin() + 1);
  return IpPrefix{IpAddress::V6(bytes), 64};
}

Result<InnerAddressPool, PoolErrc> InnerAddressPool::Make(const IpPrefix& v4, const IpPrefix& v6,
                                                          size_t max_leases) {
  if (v4.address.family != IpAddress::Family::kV4 || v6.address.family != IpAddress::Family::kV6) {
    return Fail(PoolErrc::kBadPool, "the pools must be one IPv4 and one IPv6 prefix");
  }
  if (v4.length > 30 || v6.length > 120) {
    return Fail(PoolErrc::kBadPool,
                "the pools must be /30 or larger (IPv4), /120 or larger (IPv6)");
  }
  // IPv4: 2^(32-len) addresses less the network, the exit's and the broadcast address.
  const uint64_t v4_hosts = (uint64_t{1} << (32 - v4.length)) - 3;
  const int v6_bits = std::min(62, 128 - v6.length);
  const uint64_t v6_hosts = (uint64_t{1} << v6_bits) - 2;
  const uint64_t capacity = std::min<uint64_t>({v4_hosts, v6_hosts, max_leases});
  if (capacity == 0) return Fail(PoolErrc::kBadPool, "the pools hold no address");
  return InnerAddressPool(v4.Network(), v6.Network(), static_cast<size_t>(capacity));
}

InnerLease InnerAddressPool::At(size_t index) const {
  return InnerLease{Plus(v4_.address, index + 2), Plus(v6_.address, index + 2)};
}

bool InnerAddressPool::IndexOf(const IpAddress& v4, size_t& index) const {
  auto offset = Minus(v4, v4_.address);
  if (!offset || *offset < 2 || *offset - 2 >= used_.size()) return false;
  index = static_cast<size_t>(*offset - 2);
  return true;
}

Result<InnerLease, PoolErrc> InnerAddressPool::Acquire() {
  if (in_use_ == used_.size()) {
    return Fail(PoolErrc::kExhausted, std::to_string(in_use_) + " inner addresses leased");
  }
  for (size_t step = 0; step < used_.size(); ++step) {
    const size_t i = (next_ + step) % used_.size();
    if (used_[i]) continue;
    used_[i] = true;
    ++in_use_;
    next_ = (i + 1) % used_.size();
    return At(i);
  }
  return Fail(PoolErrc::kExhausted, "no free inner address");  // unreachable: in_use_ counts
}

Result<void, PoolErrc> InnerAddressPool::Release(const InnerLease& lease) {
  size_t i = 0;
  if (!IndexOf(lease.v4, i) || !used_[i] || At(i) != lease) {
    return Fail(PoolErrc::kNotLeased, lease.v4.ToString() + " is not leased");
  }
  used_[i] = false;
  --in_use_;
  return {};
}

bool InnerAddressPool::Leased(const IpAddress& address) const {
  size_t i = 0;
  if (address.family == IpAddress::Family::kV4) return IndexOf(address, i) && used_[i];
  auto offset = Minus(address, v6_.address);
  if (!offset || *offset < 2 || *offset - 2 >= used_.size()) return false;
  return used_[static_cast<size_t>(*offset - 2)];
}

IpPrefix InnerAddressPool::exit_v4() const { return IpPrefix{Plus(v4_.address, 1), v4_.length}; }
IpPrefix InnerAddressPool::exit_v6() const { return IpPrefix{Plus(v6_.address, 1), v6_.length}; }

}  // namespace dvpn::tunnel
