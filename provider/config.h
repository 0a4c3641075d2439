#pragma once
// The seller's configuration: a TOML file (docs/node.md §2) read with toml++, plus overrides
// from the command line (`--set table.key=VALUE`). Every key is checked here, once: an unknown
// table or key, a wrong type or a value out of range is an error naming the key and, for keys
// from the file, its line and column. Nothing here opens a socket or a key file; main does that
// with the checked values.
//
// Money is never a TOML float: amounts are strings ("0.25") or integers (whole credits), since
// a binary float cannot hold most decimal amounts exactly.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/amount.h"
#include "common/host_port.h"
#include "marketplace/offer.h"
#include "provider/errc.h"
#include "settlement/promise_store.h"
#include "tunnel/ip_prefix.h"
#include "tunnel/session/packet_offloads.h"

namespace dvpn::node {

// HostPort, ParseHostPort, ParseListenAddress: common/host_port.h. CheckRegion, ParsePrice,
// ParseEndpoint: marketplace/offer.h.

struct NodeConfig {
  // [node]
  HostPort ledger;              // required
  std::string keystore;         // required
  std::string passphrase_file;  // "" -> $DVPN_PASSPHRASE
  std::string data_dir = "./dvpn-node-data";
  std::string log_level = "info";

  // [gossip]
  HostPort gossip_listen{"0.0.0.0", 7600};
  uint16_t advertise_port = 0;  // 0: the bound port
  std::vector<marketplace::Endpoint> bootstrap;
  std::chrono::milliseconds round{1000};
  std::chrono::milliseconds anti_entropy{30000};

  // [offer]
  Amount price_per_mb;  // required
  Amount price_per_minute;
  std::string region;
  uint32_t capacity_mbps = 100;
  uint32_t max_sessions = 64;
  uint32_t offer_id = 1;
  // Where clients reach the tunnel. Empty only when tunnel.listen is a specific address with
  // port 0: the node then advertises that address with the port it bound.
  std::vector<marketplace::Endpoint> endpoints;
  uint64_t lifetime_s = 3600;

  // [tunnel]
  HostPort tunnel_listen{"0.0.0.0", 7443};
  std::string static_key_file;  // "" -> <data_dir>/tunnel.key
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  bool log_destinations = false;
  // Serve full-tunnel mode (docs/full-tunnel.md) and advertise it (the offer's modes, format 2).
  bool full_tunnel = false;
  // The UDP port of full-tunnel datagrams, on the tunnel's listen address; 0: the same number as
  // the tunnel's TCP port.
  uint16_t udp_port = 0;
  // Full-tunnel mode's exit (docs/full-tunnel.md): its TUN device and the inner pools. An empty
  // IPv6 pool is derived from the tunnel key at start (tunnel::DerivedIpv6Pool).
  std::string tun_device = "dvpnx0";
  tunnel::IpPrefix inner_ipv4 = *tunnel::IpPrefix::Parse("10.231.0.0/16");
  std::optional<tunnel::IpPrefix> inner_ipv6;
  // The full tunnel's fast paths (docs/full-tunnel.md "Offloads"): "auto", "off", or a comma
  // list of tun, gso, gro, mmsg.
  tunnel::session::PacketOffloads packet_offloads;

  // [limits] (0: none)
  uint64_t bandwidth_mbps = 0;
  uint64_t monthly_data_gb = 0;
  // Handshakes not finished yet, all sources together; msg1 deadline (docs/tunnel.md).
  uint32_t max_pending_handshakes = 128;
  uint32_t msg1_timeout_ms = 3'000;

  // [payments]
  uint64_t invoice_interval_bytes = 1'000'000;
  uint64_t credit_window_bytes = 2'000'000;
  uint32_t payment_grace_ms = 10'000;
  payments::Durability promise_durability = payments::Durability::kProcessCrash;

  // [settlement]
  Amount settle_threshold = Amount::FromMicro(Amount::kMicroPerCredit);
  uint64_t settle_max_age_s = 600;
  uint64_t shutdown_timeout_ms = 10'000;
  uint64_t shutdown_grace_ms = 5'000;  // open sessions get this long to end at shutdown

  // [control] (loopback only: neither has authentication)
  HostPort grpc_listen{"127.0.0.1", 7601};
  HostPort http_listen{"127.0.0.1", 7602};

  // Derived paths.
  std::string PromiseDbPath() const;
  std::string StaticKeyPath() const;
  std::string UsagePath() const;  // the monthly data counter
};

// Parses `toml_text` (named `source_name` in errors, e.g. the file's path), applies
// `overrides` ("table.key=VALUE"; VALUE an integer, true/false, a TOML array "[...]", or else a
// string) and checks everything. Error kBadConfig, one line naming the key.
[[nodiscard]] Result<NodeConfig, Errc> ParseNodeConfig(std::string_view toml_text,
                                                       std::string_view source_name,
                                                       const std::vector<std::string>& overrides);

// Reads the file at `path` (kIo when it cannot be read), then ParseNodeConfig.
[[nodiscard]] Result<NodeConfig, Errc> LoadNodeConfig(const std::string& path,
                                                      const std::vector<std::string>& overrides);

}  // namespace dvpn::node
