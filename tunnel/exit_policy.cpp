#include "tunnel/exit_policy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <utility>

namespace dvpn::tunnel {

namespace {

constexpr std::string_view kWhitespace = " \t";

std::string_view Trim(std::string_view s) {
  const size_t first = s.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return {};
  const size_t last = s.find_last_not_of(kWhitespace);
  return s.substr(first, last - first + 1);
}

// A decimal number of 1..5 digits not above `max`; nullopt otherwise (signs, spaces, hex, ...).
std::optional<uint32_t> ParseDecimal(std::string_view s, uint32_t max) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint32_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

bool IsV4Mapped(const IpAddress& a) {
  if (a.family != IpAddress::Family::kV6) return false;
  for (int i = 0; i < 10; ++i) {
    if (a.bytes[i] != 0) return false;
  }
  return a.bytes[10] == 0xFF && a.bytes[11] == 0xFF;
}

IpAddress EmbeddedV4(const IpAddress& a, uint8_t offset_bits) {
  const size_t at = offset_bits / 8;  // every embedding we know is byte aligned
  std::array<uint8_t, 4> v4{};
  std::copy_n(a.bytes.begin() + at, 4, v4.begin());
  return IpAddress::V4(v4);
}

// A v4-mapped address as its IPv4 address; any other address unchanged.
IpAddress Normalized(const IpAddress& a) { return IsV4Mapped(a) ? EmbeddedV4(a, 96) : a; }

Result<ExitRule, ExitPolicyErrc> Bad(std::string_view text, const std::string& why) {
  return dvpn::Fail(ExitPolicyErrc::kBadRule, "exit rule \"" + std::string(text) + "\": " + why);
}

}  // namespace

IpAddress IpAddress::V4(const std::array<uint8_t, 4>& a) {
  IpAddress out;
  out.family = Family::kV4;
  std::copy(a.begin(), a.end(), out.bytes.begin());
  return out;
}

IpAddress IpAddress::V6(const std::array<uint8_t, 16>& a) {
  IpAddress out;
  out.family = Family::kV6;
  out.bytes = a;
  return out;
}

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  // inet_pton needs a NUL-terminated string; the longest textual IPv6 address is 45 chars.
  char buf[64];
  if (text.size() >= sizeof(buf) || text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  std::copy(text.begin(), text.end(), buf);
  buf[text.size()] = '\0';
  std::array<uint8_t, 16> bytes{};
  if (inet_pton(AF_INET, buf, bytes.data()) == 1) {
    IpAddress out;
    out.family = Family::kV4;
    out.bytes = bytes;
    return out;
  }
  if (inet_pton(AF_INET6, buf, bytes.data()) == 1) return V6(bytes);
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::FromDestination(const Destination& d) {
  switch (d.kind) {
    case Destination::Kind::kIpv4:
      return V4(d.v4);
    case Destination::Kind::kIpv6:
      return V6(d.v6);
    case Destination::Kind::kDomain:
      break;
  }
  return std::nullopt;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  const int af = family == Family::kV4 ? AF_INET : AF_INET6;
  if (inet_ntop(af, bytes.data(), buf, sizeof(buf)) == nullptr) return "?";
  return buf;
}

bool OwnHost::SetAddresses(std::span<const IpAddress> addresses) {
  addresses_.clear();
  addresses_.reserve(std::min(addresses.size(), kMaxAddresses));
  for (const IpAddress& a : addresses) addresses_.push_back(Normalized(a));
  std::sort(addresses_.begin(), addresses_.end());
  addresses_.erase(std::unique(addresses_.begin(), addresses_.end()), addresses_.end());
  if (addresses_.size() <= kMaxAddresses) return true;
  addresses_.resize(kMaxAddresses);
  return false;
}

bool OwnHost::SetProtectedPorts(std::span<const uint16_t> ports) {
  protected_ports_.clear();
  for (uint16_t p : ports) {
    if (p != 0) protected_ports_.push_back(p);
  }
  std::sort(protected_ports_.begin(), protected_ports_.end());
  protected_ports_.erase(std::unique(protected_ports_.begin(), protected_ports_.end()),
                         protected_ports_.end());
  if (protected_ports_.size() <= kMaxProtectedPorts) return true;
  protected_ports_.resize(kMaxProtectedPorts);
  return false;
}

bool OwnHost::IsOwnAddress(const IpAddress& address) const {
  const IpAddress a = Normalized(address);
  if (a.family == IpAddress::Family::kV4) {
    // 0.0.0.0/8 ("this host" on Linux for 0.0.0.0) and the whole loopback /8.
    if (a.bytes[0] == 0 || a.bytes[0] == 127) return true;
  } else {
    bool high_zero = true;  // bytes 0..14
    for (int i = 0; i < 15; ++i) high_zero = high_zero && a.bytes[i] == 0;
    if (high_zero && (a.bytes[15] == 0 || a.bytes[15] == 1)) return true;  // :: and ::1
  }
  return std::binary_search(addresses_.begin(), addresses_.end(), a);
}

bool OwnHost::IsProtectedPort(uint16_t port) const {
  return std::binary_search(protected_ports_.begin(), protected_ports_.end(), port);
}

bool ExitRule::Matches(const IpAddress& address, uint16_t port) const {
  static const OwnHost kNoHost;
  return Matches(address, port, kNoHost);
}

bool ExitRule::Matches(const IpAddress& address, uint16_t port, const OwnHost& host) const {
  switch (target) {
    case Target::kNetwork:
      break;
    case Target::kOwnAddress:
      // A mapped address is left to the embedding default, which decides its IPv4 address
      // through the whole list (an operator's allow of that IPv4 address included).
      return port >= port_first && port <= port_last && !IsV4Mapped(address) &&
             host.IsOwnAddress(address);
    case Target::kOwnProtectedPort:
      return host.IsProtectedPort(port) && host.IsOwnAddress(address);
  }
  if (port < port_first || port > port_last) return false;
  if (any_family) return true;
  if (address.family != network.family) return false;
  const size_t full = prefix_len / 8;
  for (size_t i = 0; i < full; ++i) {
    if (address.bytes[i] != network.bytes[i]) return false;
  }
  const unsigned rest = prefix_len % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xFF00u >> rest);
  return (address.bytes[full] & mask) == (network.bytes[full] & mask);
}

Result<ExitRule, ExitPolicyErrc> ParseExitRule(std::string_view text) {
  const std::string_view rule_text = Trim(text);
  if (rule_text.empty()) return Bad(text, "empty rule");
  ExitRule rule;
  rule.label = std::string(rule_text);

  const size_t action_end = rule_text.find_first_of(kWhitespace);
  const std::string_view action = rule_text.substr(0, action_end);
  if (action == "allow") {
    rule.action = ExitRule::Action::kAllow;
  } else if (action == "deny") {
    rule.action = ExitRule::Action::kDeny;
  } else {
    return Bad(text, "unknown action \"" + std::string(action) + "\" (expected allow or deny)");
  }
  if (action_end == std::string_view::npos) return Bad(text, "missing network after the action");
  std::string_view rest = Trim(rule_text.substr(action_end));
  if (rest.find_first_of(kWhitespace) != std::string_view::npos) {
    return Bad(text, "unexpected whitespace inside \"" + std::string(rest) + "\"");
  }

  // Network.
  unsigned max_prefix = 0;
  if (rest.starts_with('*')) {
    rule.any_family = true;
    rest.remove_prefix(1);
  } else if (rest.starts_with('[')) {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return Bad(text, "missing ']' after the IPv6 address");
    const std::string_view addr_text = rest.substr(1, close - 1);
    auto addr = IpAddress::Parse(addr_text);
    if (!addr || addr->family != IpAddress::Family::kV6) {
      return Bad(text, "\"" + std::string(addr_text) + "\" is not an IPv6 address");
    }
    rule.network = *addr;
    max_prefix = 128;
    rest.remove_prefix(close + 1);
  } else {
    const size_t end = std::min(rest.find('/'), rest.find(':'));
    const std::string_view addr_text = rest.substr(0, end);
    auto addr = IpAddress::Parse(addr_text);
    if (!addr || addr->family != IpAddress::Family::kV4) {
      return Bad(text, "\"" + std::string(addr_text) +
                           "\" is not an IPv4 address (IPv6 goes in brackets: [::1]/128)");
    }
    rule.network = *addr;
    max_prefix = 32;
    rest.remove_prefix(addr_text.size());
  }

  // Prefix.
  rule.prefix_len = static_cast<uint8_t>(max_prefix);
  if (rest.starts_with('/')) {
    if (rule.any_family) return Bad(text, "\"*\" takes no prefix length");
    rest.remove_prefix(1);
    const std::string_view len_text = rest.substr(0, rest.find(':'));
    auto len = ParseDecimal(len_text, max_prefix);
    if (!len) {
      return Bad(text, "prefix length \"" + std::string(len_text) + "\" is not in 0.." +
                           std::to_string(max_prefix));
    }
    rule.prefix_len = static_cast<uint8_t>(*len);
    rest.remove_prefix(len_text.size());
    // Host bits below the prefix must be zero: "10.1.0.0/8" is probably a typo.
    for (size_t bit = rule.prefix_len; bit < max_prefix; ++bit) {
      if (rule.network.bytes[bit / 8] & (0x80 >> (bit % 8))) {
        return Bad(
            text, "address has bits set below the /" + std::to_string(rule.prefix_len) + " prefix");
      }
    }
  }

  // Ports.
  if (rest.starts_with(':')) {
    rest.remove_prefix(1);
    const size_t dash = rest.find('-');
    const std::string_view first_text = rest.substr(0, dash);
    auto first = ParseDecimal(first_text, 65535);
    if (!first) return Bad(text, "port \"" + std::string(first_text) + "\" is not in 0..65535");
    std::optional<uint32_t> last = first;
    if (dash != std::string_view::npos) {
      const std::string_view last_text = rest.substr(dash + 1);
      last = ParseDecimal(last_text, 65535);
      if (!last) return Bad(text, "port \"" + std::string(last_text) + "\" is not in 0..65535");
      if (*last < *first) return Bad(text, "port range ends before it starts");
    }
    rule.port_first = static_cast<uint16_t>(*first);
    rule.port_last = static_cast<uint16_t>(*last);
    rest = {};
  }
  if (!rest.empty()) {
    return Bad(text, "unexpected \"" + std::string(rest) + "\" (expected /prefix or :ports)");
  }
  return rule;
}

std::vector<ExitRule> DefaultExitRules(std::span<const IpAddress> own_addresses) {
  struct Entry {
    const char* action;
    const char* target;
    const char* why;
    uint8_t embedded_offset_bits;  // for "embedded" entries only
  };
  // Special-purpose ranges (RFC 6890 and the IANA registries) nobody should reach through a
  // public exit. "embedded" ranges carry an IPv4 address that is decided instead.
  static constexpr Entry kTable[] = {
      {"deny", "*:0", "port 0", 0},
      {"deny", "*:25", "SMTP (port 25)", 0},
      {"deny", "0.0.0.0/8", "this network (0/8)", 0},
      {"deny", "10.0.0.0/8", "private (10/8)", 0},
      {"deny", "100.64.0.0/10", "CGNAT shared space (100.64/10)", 0},
      {"deny", "127.0.0.0/8", "loopback (127/8)", 0},
      {"deny", "169.254.0.0/16", "link-local (169.254/16)", 0},
      {"deny", "172.16.0.0/12", "private (172.16/12)", 0},
      {"deny", "192.0.0.0/24", "IETF protocol assignments (192.0.0/24)", 0},
      {"deny", "192.0.2.0/24", "documentation TEST-NET-1 (192.0.2/24)", 0},
      {"deny", "192.168.0.0/16", "private (192.168/16)", 0},
      {"deny", "198.18.0.0/15", "benchmarking (198.18/15)", 0},
      {"deny", "198.51.100.0/24", "documentation TEST-NET-2 (198.51.100/24)", 0},
      {"deny", "203.0.113.0/24", "documentation TEST-NET-3 (203.0.113/24)", 0},
      {"deny", "224.0.0.0/4", "multicast (224/4)", 0},
      {"deny", "240.0.0.0/4", "reserved (240/4)", 0},
      {"deny", "255.255.255.255/32", "limited broadcast", 0},
      {"embedded", "[::ffff:0:0]/96", "IPv4-mapped (::ffff:0:0/96)", 96},
      {"embedded", "[64:ff9b::]/96", "NAT64 well-known prefix (64:ff9b::/96)", 96},
      {"embedded", "[2002::]/16", "6to4 (2002::/16)", 16},
      {"deny", "[::]/128", "unspecified (::/128)", 0},
      {"deny", "[::1]/128", "loopback (::1/128)", 0},
      {"deny", "[::]/96", "IPv4-compatible, deprecated (::/96)", 0},
      {"deny", "[64:ff9b:1::]/48", "local-use NAT64 (64:ff9b:1::/48)", 0},
      {"deny", "[100::]/64", "discard-only (100::/64)", 0},
      {"deny", "[2001:db8::]/32", "documentation (2001:db8::/32)", 0},
      {"deny", "[fc00::]/7", "unique local (fc00::/7)", 0},
      {"deny", "[fe80::]/10", "link-local (fe80::/10)", 0},
      {"deny", "[fec0::]/10", "site-local, deprecated (fec0::/10)", 0},
      {"deny", "[ff00::]/8", "multicast (ff00::/8)", 0},
  };
  std::vector<ExitRule> rules;
  rules.reserve(std::size(kTable) + own_addresses.size());
  auto add = [&](const Entry& e) {
    const bool embedded = std::string_view(e.action) == "embedded";
    auto rule = ParseExitRule(std::string(embedded ? "deny" : e.action) + " " + e.target);
    assert(rule.has_value());  // our own table
    if (embedded) {
      rule->action = ExitRule::Action::kCheckEmbeddedV4;
      rule->embedded_v4_offset_bits = e.embedded_offset_bits;
    }
    rule->label = std::string("default: ") + e.why;
    rules.push_back(std::move(*rule));
  };
  add(kTable[0]);
  add(kTable[1]);
  for (IpAddress own : own_addresses) {
    if (IsV4Mapped(own)) own = EmbeddedV4(own, 96);
    ExitRule rule;
    rule.action = ExitRule::Action::kDeny;
    rule.network = own;
    rule.prefix_len = own.family == IpAddress::Family::kV4 ? 32 : 128;
    rule.label = "default: provider's own address";
    rules.push_back(std::move(rule));
  }
  {
    ExitRule rule;
    rule.action = ExitRule::Action::kDeny;
    rule.target = ExitRule::Target::kOwnAddress;
    rule.label = "default: the exit host's own address";
    rules.push_back(std::move(rule));
  }
  for (size_t i = 2; i < std::size(kTable); ++i) add(kTable[i]);
  return rules;
}

ExitPolicy::ExitPolicy(std::vector<ExitRule> operator_rules,
                       std::span<const IpAddress> own_addresses) {
  for (const IpAddress& a : own_addresses) own_addresses_.push_back(Normalized(a));
  std::sort(own_addresses_.begin(), own_addresses_.end());
  // Rule 0, before the operator's: the node's own services are never reachable through it.
  ExitRule own_port;
  own_port.action = ExitRule::Action::kDeny;
  own_port.target = ExitRule::Target::kOwnProtectedPort;
  own_port.label = "never allowed: the node's own port on an own address";
  rules_.reserve(1 + operator_rules.size());
  rules_.push_back(std::move(own_port));
  rules_.insert(rules_.end(), std::make_move_iterator(operator_rules.begin()),
                std::make_move_iterator(operator_rules.end()));
  auto defaults = DefaultExitRules(own_addresses);
  rules_.insert(rules_.end(), std::make_move_iterator(defaults.begin()),
                std::make_move_iterator(defaults.end()));
}

Result<ExitPolicy, ExitPolicyErrc> ExitPolicy::FromStrings(
    std::span<const std::string> operator_rules, std::span<const IpAddress> own_addresses) {
  std::vector<ExitRule> rules;
  rules.reserve(operator_rules.size());
  for (size_t i = 0; i < operator_rules.size(); ++i) {
    auto rule = ParseExitRule(operator_rules[i]);
    if (!rule) {
      return dvpn::Fail(ExitPolicyErrc::kBadRule,
                        "rule " + std::to_string(i + 1) + ": " + rule.error().message);
    }
    rules.push_back(std::move(*rule));
  }
  return ExitPolicy(std::move(rules), own_addresses);
}

ExitDecision ExitPolicy::Decide(const IpAddress& address, uint16_t port) const {
  static const OwnHost kNoHost;
  return Decide(address, port, kNoHost);
}

ExitDecision ExitPolicy::Decide(const IpAddress& address, uint16_t port,
                                const OwnHost& host) const {
  return DecideOnce(address, port, host, /*allow_embedded=*/true);
}

ExitDecision ExitPolicy::DecidePortless(const IpAddress& address, const OwnHost& host) const {
  return DecideOnce(address, std::nullopt, host, /*allow_embedded=*/true);
}

bool ExitPolicy::IsOwnForOwnPorts(const IpAddress& address, const OwnHost& host) const {
  auto own = [&](const IpAddress& a) {
    return host.IsOwnAddress(a) ||
           std::binary_search(own_addresses_.begin(), own_addresses_.end(), Normalized(a));
  };
  if (own(address)) return true;
  // This rule precedes the operator's, so it cannot wait for the embedding defaults: a NAT64
  // or 6to4 form of an own IPv4 address is own here too.
  if (address.family != IpAddress::Family::kV6) return false;
  static const IpAddress kNat64 = *IpAddress::Parse("64:ff9b::");
  if (std::equal(address.bytes.begin(), address.bytes.begin() + 12, kNat64.bytes.begin())) {
    return own(EmbeddedV4(address, 96));
  }
  if (address.bytes[0] == 0x20 && address.bytes[1] == 0x02) return own(EmbeddedV4(address, 16));
  return false;
}

ExitDecision ExitPolicy::DecideOnce(const IpAddress& address, std::optional<uint16_t> port,
                                    const OwnHost& host, bool allow_embedded) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    const ExitRule& rule = rules_[i];
    bool matches = false;
    if (!port) {
      // Portless: a rule about particular ports does not speak about this packet.
      matches = rule.target != ExitRule::Target::kOwnProtectedPort && rule.port_first == 0 &&
                rule.port_last == 65535 && rule.Matches(address, 0, host);
    } else {
      matches = rule.target == ExitRule::Target::kOwnProtectedPort
                    ? host.IsProtectedPort(*port) && IsOwnForOwnPorts(address, host)
                    : rule.Matches(address, *port, host);
    }
    if (!matches) continue;
    switch (rule.action) {
      case ExitRule::Action::kAllow:
        return ExitDecision{true, i, rule.label};
      case ExitRule::Action::kDeny:
        return ExitDecision{false, i, rule.label};
      case ExitRule::Action::kCheckEmbeddedV4:
        // An embedded address is IPv4, which no embedding rule matches: one level at most.
        if (!allow_embedded) return ExitDecision{false, i, rule.label};
        return DecideOnce(EmbeddedV4(address, rule.embedded_v4_offset_bits), port, host, false);
    }
  }
  return ExitDecision{true, std::nullopt, "default allow"};
}

}  // namespace dvpn::tunnel
