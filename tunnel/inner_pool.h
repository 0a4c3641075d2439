#pragma once
// The exit's inner addresses for packet-mode sessions (docs/full-tunnel.md "Inner addresses"):
// one IPv4 and one IPv6 address per session from the exit's two pools, never two sessions the
// same, free again when the session ends. Offset k of the pool gives network + k in both
// families; offset 1 is the exit's own (its TUN device), 0 and the IPv4 broadcast address are
// never handed out. Addresses are handed out next-fit (the one after the last one given), so a
// freed address comes back as late as possible. Pure and single-threaded.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/bytes.h"
#include "common/result.h"
#include "tunnel/ip_prefix.h"

namespace dvpn::tunnel {

enum class PoolErrc {
  kBadPool = 1,  // a prefix of the wrong family, or too small (IPv4 /30, IPv6 /120 at most)
  kExhausted,    // every address is leased
  kNotLeased,    // Release of an address that is not leased
};

struct InnerLease {
  IpAddress v4;
  IpAddress v6;
  friend bool operator==(const InnerLease&, const InnerLease&) = default;
};

// The exit's default IPv6 pool: a /64 unique local prefix (RFC 4193: fd00::/8, a 40-bit
// global ID, subnet 0) whose global ID is the first 5 bytes of SHA-256 of the exit's tunnel
// public key, so each exit has its own and keeps it across restarts.
IpPrefix DerivedIpv6Pool(const ByteArray<32>& tunnel_public_key);

class InnerAddressPool {
 public:
  static constexpr size_t kDefaultMaxLeases = 65536;

  // The pools' host bits are ignored. Capacity: the addresses both pools hold, at most
  // `max_leases`.
  static Result<InnerAddressPool, PoolErrc> Make(const IpPrefix& v4, const IpPrefix& v6,
                                                 size_t max_leases = kDefaultMaxLeases);

  [[nodiscard]] Result<InnerLease, PoolErrc> Acquire();
  [[nodiscard]] Result<void, PoolErrc> Release(const InnerLease& lease);
  bool Leased(const IpAddress& address) const;

  // The exit's own inner addresses (offset 1) and the pools' prefixes, for its TUN device.
  IpPrefix exit_v4() const;
  IpPrefix exit_v6() const;
  size_t capacity() const { return used_.size(); }
  size_t in_use() const { return in_use_; }

 private:
  InnerAddressPool(IpPrefix v4, IpPrefix v6, size_t capacity)
      : v4_(v4), v6_(v6), used_(capacity, false) {}
  InnerLease At(size_t index) const;  // index 0 = offset 2
  bool IndexOf(const IpAddress& v4, size_t& index) const;

  IpPrefix v4_;  // network form
  IpPrefix v6_;
  std::vector<bool> used_;
  size_t next_ = 0;
  size_t in_use_ = 0;
};

}  // namespace dvpn::tunnel
