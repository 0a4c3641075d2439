#pragma once
// nftables through libnftables, and the exit's NAT table (docs/full-tunnel.md "The exit").
// A ruleset is given in nft's own syntax and applied as one transaction: all of it or nothing.

#include <string>
#include <string_view>

#include "tunnel/os/errc.h"
#include "tunnel/os/netlink.h"

namespace dvpn::tunnel::os {

class Nftables {
 public:
  // A libnftables context. kUnsupported when it cannot be made.
  static OsResult<Nftables> Open();

  Nftables(Nftables&&) noexcept;
  Nftables& operator=(Nftables&&) noexcept;
  ~Nftables();

  // Runs `commands` (one transaction). kPermission without CAP_NET_ADMIN; kBadArgument with
  // nft's own message (at most 1 KiB) when it refuses them.
  OsResult<void> Run(std::string_view commands);
  // Runs a listing command ("list table inet x") and returns its output.
  OsResult<std::string> List(std::string_view command);

 private:
  explicit Nftables(void* ctx) : ctx_(ctx) {}
  OsResult<std::string> Execute(std::string_view commands, bool want_output);
  void* ctx_ = nullptr;  // struct nft_ctx*
};

// The exit's NAT for full-tunnel sessions.
struct ExitNatConfig {
  std::string table = "dvpn_exit";  // 1..32 of [a-z0-9_]: the table's name (family inet)
  std::string tun_name;             // the exit's TUN device
  IpPrefix v4_pool;                 // the inner pools; their host bits are ignored
  IpPrefix v6_pool;
};

// The ruleset ExitNat applies (pure; tested for what it says): packets from the pools that leave
// through any interface but the TUN device are masqueraded; packets into the TUN device that
// conntrack did not see leave (new connections from outside to an inner address) are dropped.
// kBadArgument for a table or device name outside the grammar, or pools of the wrong family.
OsResult<std::string> ExitNatRuleset(const ExitNatConfig& config);

// Turns IPv4 and IPv6 forwarding on in this network namespace (the exit routes between its TUN
// device and its uplink); a setting that is on already is not written (a read-only /proc/sys
// with forwarding set by sysctl.d is fine). Note: with IPv6 forwarding on, an interface that configures itself
// from router advertisements needs accept_ra=2 (docs/node.md).
OsResult<void> EnableForwarding();

// The installed table, deleted again by the destructor (and replaced whole by Install, so a
// table left by a crashed exit never lingers beside the new one).
class ExitNat {
 public:
  static OsResult<ExitNat> Install(const ExitNatConfig& config);
  ExitNat(ExitNat&&) noexcept;
  ExitNat& operator=(ExitNat&&) noexcept;
  ~ExitNat();
  const std::string& table() const { return table_; }
  // Deletes the table now. Safe to call twice.
  OsResult<void> Remove();

 private:
  ExitNat(std::string table, Nftables nft) : table_(std::move(table)), nft_(std::move(nft)) {}
  std::string table_;
  Nftables nft_;
};

}  // namespace dvpn::tunnel::os
