#pragma once
// The exit node's policy: which resolved address and port it may connect to on a client's
// behalf. Safe by default (loopback, private, link-local, CGNAT, documentation, multicast and
// reserved ranges, the host's own addresses and SMTP are refused); operators add allow and
// deny rules that are consulted first, except that the node's own ports on its own addresses
// are never allowed. Pure code: no sockets, no resolution, no logging.
// Rule grammar and the default table: docs/tunnel.md, "Exit policy".

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "tunnel/destination.h"

namespace dvpn::tunnel {

enum class ExitPolicyErrc {
  kBadRule = 1,  // a rule string that does not follow the grammar (message says where)
};

// An IPv4 or IPv6 address as bytes. IPv4 uses the first 4 bytes of `bytes`; the rest is zero.
struct IpAddress {
  enum class Family : uint8_t { kV4, kV6 };
  Family family = Family::kV4;
  std::array<uint8_t, 16> bytes{};

  static IpAddress V4(const std::array<uint8_t, 4>& a);
  static IpAddress V6(const std::array<uint8_t, 16>& a);
  // Dotted-quad IPv4 or textual IPv6 (RFC 4291 forms, no brackets, no zone); nullopt otherwise.
  static std::optional<IpAddress> Parse(std::string_view text);
  // The address of an IPv4/IPv6 Destination; nullopt for a domain (resolve it first).
  static std::optional<IpAddress> FromDestination(const Destination& d);
  std::string ToString() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;  // for sorted sets
};

// The exit's own host at one moment: the addresses of its interfaces and the node's protected
// ports (its own services: tunnel, control, dashboard, gossip). docs/tunnel.md, "The exit's own
// host". A value; built and refreshed by the session layer (HostAddressWatcher, ExitServer).
class OwnHost {
 public:
  static constexpr size_t kMaxAddresses = 4096;
  static constexpr size_t kMaxProtectedPorts = 64;

  OwnHost() = default;

  // Replaces the host's addresses: IPv4-mapped ones become IPv4, duplicates go. Keeps at most
  // kMaxAddresses (the lowest); returns false when some were dropped.
  bool SetAddresses(std::span<const IpAddress> addresses);
  // Replaces the protected ports (0 is ignored). Keeps at most kMaxProtectedPorts (the lowest);
  // returns false when some were dropped.
  bool SetProtectedPorts(std::span<const uint16_t> ports);

  // True for 0.0.0.0/8, 127.0.0.0/8, :: and ::1 whatever the addresses, and for every address
  // given to SetAddresses; an IPv4-mapped address is own when its IPv4 address is.
  bool IsOwnAddress(const IpAddress& address) const;
  bool IsProtectedPort(uint16_t port) const;

  const std::vector<IpAddress>& addresses() const { return addresses_; }
  const std::vector<uint16_t>& protected_ports() const { return protected_ports_; }

 private:
  std::vector<IpAddress> addresses_;       // normalised, sorted, unique
  std::vector<uint16_t> protected_ports_;  // sorted, unique, no 0
};

// One rule: action, network, port range. A rule matches an address of its family inside the
// network (any family for `any_family`) whose port is within [port_first, port_last].
struct ExitRule {
  enum class Action : uint8_t { kAllow, kDeny, kCheckEmbeddedV4 };
  // What the rule's address part is: the `network`, the host's own addresses (OwnHost), or the
  // host's own addresses on one of its protected ports (the port range is then not used).
  enum class Target : uint8_t { kNetwork, kOwnAddress, kOwnProtectedPort };
  Action action = Action::kDeny;
  Target target = Target::kNetwork;
  bool any_family = false;  // "*": every IPv4 and IPv6 address
  IpAddress network;        // host bits are zero
  uint8_t prefix_len = 0;   // 0..32 for IPv4, 0..128 for IPv6
  uint16_t port_first = 0;
  uint16_t port_last = 65535;
  // For kCheckEmbeddedV4: the bit offset of the embedded IPv4 address inside the IPv6 address.
  uint8_t embedded_v4_offset_bits = 96;
  // What the rule is, for a debug log: the operator's text or a default rule's description.
  std::string label;

  // Own-host targets match against `host` (the 2-argument form: an empty OwnHost, so only the
  // always-own ranges).
  bool Matches(const IpAddress& address, uint16_t port, const OwnHost& host) const;
  bool Matches(const IpAddress& address, uint16_t port) const;
};

// Parses an operator rule, for example "allow 127.0.0.1/32:8080", "deny 0.0.0.0/0:25",
// "allow [::1]/128:1-65535", "deny *:25", "deny 10.1.2.3". Grammar:
//   rule    = action 1*WSP target
//   action  = "allow" / "deny"
//   target  = network [ ":" ports ]
//   network = "*" / ipv4 [ "/" 0-32 ] / "[" ipv6 "]" [ "/" 0-128 ]
//   ports   = port [ "-" port ]   ; decimal 0..65535, first <= last
// Leading and trailing whitespace is ignored. A missing prefix means one host (/32, /128); a
// missing port range means every port. Host bits set below the prefix are an error.
// Returns kBadRule with a message naming the offending part.
[[nodiscard]] Result<ExitRule, ExitPolicyErrc> ParseExitRule(std::string_view text);

// The verdict on one address and port, with the rule that decided it.
struct ExitDecision {
  bool allowed = false;
  // Index into ExitPolicy::rules() of the deciding rule, or nullopt for the final default
  // (allow). For an address checked through its embedded IPv4 address, the rule that decided
  // the IPv4 address.
  std::optional<size_t> rule_index;
  // The deciding rule's label ("default allow" for the final default); valid while the policy
  // lives.
  std::string_view rule;
};

// Decides, in order: a protected port of the node on an own address (refused whatever the
// operator says), the operator's rules (first match wins), then the built-in defaults (port 0,
// port 25, the provider's own addresses, every own address of the host, the special-purpose
// ranges), then allow.
// IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are not
// decided as IPv6: their embedded IPv4 address is decided through the whole policy instead.
//
// Domain names: the caller resolves the name, decides each resolved address, and connects only
// to an address it was allowed, without resolving again. A name that resolves (or is rebound)
// to a private range is therefore refused like the address itself.
//
// Thread-safety: immutable after construction; Decide() may be called from any thread.
class ExitPolicy {
 public:
  // `operator_rules` are consulted first, in order; `own_addresses` are the provider's own
  // addresses (every port refused unless an operator rule allows it).
  ExitPolicy(std::vector<ExitRule> operator_rules, std::span<const IpAddress> own_addresses);

  // Parses every operator rule; the first bad one fails the whole construction, its index in
  // the message.
  [[nodiscard]] static Result<ExitPolicy, ExitPolicyErrc> FromStrings(
      std::span<const std::string> operator_rules, std::span<const IpAddress> own_addresses);

  // `host`: the host's addresses and protected ports now (docs/tunnel.md, "The exit's own
  // host"); the 2-argument form decides with an empty OwnHost.
  ExitDecision Decide(const IpAddress& address, uint16_t port, const OwnHost& host) const;
  ExitDecision Decide(const IpAddress& address, uint16_t port) const;
  // For a packet without ports (ICMP, other protocols; docs/full-tunnel.md): only the rules
  // that name every port (0..65535) decide, so "deny 10.0.0.0/8" refuses a ping to it while a
  // rule for port 25 or port 0, or the node's protected ports, says nothing about it.
  ExitDecision DecidePortless(const IpAddress& address, const OwnHost& host) const;

  // The own-port rule (index 0), the operator rules, then the defaults, in evaluation order.
  const std::vector<ExitRule>& rules() const { return rules_; }

 private:
  // `port` nullopt: DecidePortless.
  ExitDecision DecideOnce(const IpAddress& address, std::optional<uint16_t> port,
                          const OwnHost& host, bool allow_embedded) const;
  // The own-port rule's address test: `host`'s own addresses, the ones given at construction,
  // and their IPv4-mapped, NAT64 and 6to4 forms.
  bool IsOwnForOwnPorts(const IpAddress& address, const OwnHost& host) const;

  std::vector<ExitRule> rules_;
  std::vector<IpAddress> own_addresses_;  // given at construction: also own for the own-port rule
};

// The built-in rules after the operator's, in evaluation order, for the given own addresses
// (documented table). The own-port rule that precedes the operator's is not among them.
std::vector<ExitRule> DefaultExitRules(std::span<const IpAddress> own_addresses);

}  // namespace dvpn::tunnel
