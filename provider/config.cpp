#include "provider/config.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "tunnel/inner_pool.h"
#include "tunnel/os/tun_device.h"

namespace dvpn::node {
namespace {

namespace mp = marketplace;

// The file's shape: table -> keys. Anything else is refused by name.
const std::map<std::string, std::set<std::string>>& Schema() {
  static const std::map<std::string, std::set<std::string>> schema = {
      {"node", {"ledger", "keystore", "passphrase_file", "data_dir", "log_level"}},
      {"gossip", {"listen", "advertise_port", "bootstrap", "round_ms", "anti_entropy_ms"}},
      {"offer",
       {"price_per_mb", "price_per_minute", "region", "capacity_mbps", "max_sessions", "offer_id",
        "endpoints", "lifetime_s"}},
      {"tunnel",
       {"listen", "static_key_file", "allow", "deny", "log_destinations", "full_tunnel",
        "udp_port", "tun_device", "inner_ipv4", "inner_ipv6", "packet_offloads"}},
      {"limits",
       {"bandwidth_mbps", "monthly_data_gb", "max_pending_handshakes", "msg1_timeout_ms"}},
      {"payments",
       {"invoice_interval_bytes", "credit_window_bytes", "payment_grace_ms", "promise_durability"}},
      {"settlement", {"threshold", "max_age_s", "shutdown_timeout_ms", "shutdown_grace_ms"}},
      {"control", {"grpc_listen", "http_listen"}},
  };
  return schema;
}

// Reads typed values out of the parsed document; every error names "table.key" and where the
// value was written (the file's line:column, or "--set" for an override).
class Reader {
 public:
  Reader(const toml::table& root, std::string source) : root_(root), source_(std::move(source)) {}

  // The node of table.key, or nullptr when absent.
  const toml::node* Find(const std::string& table, const std::string& key) const {
    const toml::node* t = root_.get(table);
    if (t == nullptr || !t->is_table()) return nullptr;
    return t->as_table()->get(key);
  }

  // "file:line:column", or "--set" for a value from the command line.
  std::string Position(const toml::node& n) const {
    const auto& begin = n.source().begin;
    return begin.line > 0
               ? source_ + ":" + std::to_string(begin.line) + ":" + std::to_string(begin.column)
               : std::string("--set");
  }
  std::string Where(const toml::node& n, const std::string& table, const std::string& key) const {
    return Position(n) + ": " + table + "." + key;
  }

  std::optional<std::string> Fail(const toml::node& n, const std::string& table,
                                  const std::string& key, const std::string& what) const {
    return Where(n, table, key) + ": " + what;
  }

  std::optional<std::string> String(const std::string& table, const std::string& key,
                                    std::string* out) const {
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_string()) return Fail(*n, table, key, "expected a string");
    *out = n->as_string()->get();
    return std::nullopt;
  }

  std::optional<std::string> Bool(const std::string& table, const std::string& key,
                                  bool* out) const {
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_boolean()) return Fail(*n, table, key, "expected true or false");
    *out = n->as_boolean()->get();
    return std::nullopt;
  }

  template <class T>
  std::optional<std::string> Integer(const std::string& table, const std::string& key, uint64_t min,
                                     uint64_t max, T* out) const {
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    const std::string range = std::to_string(min) + ".." + std::to_string(max);
    if (!n->is_integer()) return Fail(*n, table, key, "expected an integer " + range);
    int64_t v = n->as_integer()->get();
    if (v < 0 || static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max) {
      return Fail(*n, table, key, std::to_string(v) + " is out of range " + range);
    }
    *out = static_cast<T>(v);
    return std::nullopt;
  }

  // An amount of credits: a string ("0.25") or an integer (whole credits); never a float.
  std::optional<std::string> Credits(const std::string& table, const std::string& key, bool price,
                                     Amount* out) const {
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    std::string text;
    if (n->is_string()) {
      text = n->as_string()->get();
    } else if (n->is_integer() && n->as_integer()->get() >= 0) {
      text = std::to_string(n->as_integer()->get());
    } else if (n->is_floating_point()) {
      return Fail(*n, table, key,
                  "write the amount as a string, e.g. \"0.25\" (a TOML float cannot hold "
                  "decimal credits exactly)");
    } else {
      return Fail(*n, table, key, "expected an amount of credits, e.g. \"0.25\"");
    }
    auto amount = price ? mp::ParsePrice(text) : [&]() -> Result<Amount, mp::Errc> {
      auto a = Amount::Parse(text);
      if (!a) return dvpn::Fail(mp::Errc::kBadField, "not an amount of credits: \"" + text + "\"");
      return *a;
    }();
    if (!amount) return Fail(*n, table, key, amount.error().message);
    *out = *amount;
    return std::nullopt;
  }

  std::optional<std::string> Strings(const std::string& table, const std::string& key,
                                     size_t max_items, std::vector<std::string>* out) const {
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_array()) return Fail(*n, table, key, "expected an array of strings");
    const toml::array& a = *n->as_array();
    if (a.size() > max_items) {
      return Fail(*n, table, key, "at most " + std::to_string(max_items) + " entries");
    }
    out->clear();
    for (const toml::node& item : a) {
      if (!item.is_string()) return Fail(item, table, key, "expected an array of strings");
      out->push_back(item.as_string()->get());
    }
    return std::nullopt;
  }

  // A HOST:PORT string parsed by `parse`.
  template <class Parse>
  std::optional<std::string> Address(const std::string& table, const std::string& key, Parse parse,
                                     HostPort* out) const {
    std::string text;
    if (auto e = String(table, key, &text)) return e;
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    auto hp = parse(text);
    if (!hp) return Fail(*n, table, key, hp.error().message);
    *out = *hp;
    return std::nullopt;
  }

  std::optional<std::string> Endpoints(const std::string& table, const std::string& key,
                                       size_t max_items, std::vector<mp::Endpoint>* out) const {
    std::vector<std::string> texts;
    if (auto e = Strings(table, key, max_items, &texts)) return e;
    const toml::node* n = Find(table, key);
    if (n == nullptr) return std::nullopt;
    out->clear();
    for (const auto& text : texts) {
      auto e = mp::ParseEndpoint(text);
      if (!e) return Fail(*n, table, key, e.error().message);
      out->push_back(*e);
    }
    return std::nullopt;
  }

  // The first unknown table or key, or a table written as a value.
  std::optional<std::string> Unknown() const {
    for (const auto& [table_key, table_node] : root_) {
      const std::string table(table_key.str());
      auto known = Schema().find(table);
      if (known == Schema().end()) {
        return Position(table_node) + ": unknown table [" + table +
               "] (known: node, gossip, offer, tunnel, limits, payments, settlement, control)";
      }
      if (!table_node.is_table()) {
        return Position(table_node) + ": " + table + ": expected a table [" + table + "]";
      }
      for (const auto& [key, value] : *table_node.as_table()) {
        if (!known->second.contains(std::string(key.str()))) {
          return Where(value, table, std::string(key.str())) + ": unknown key";
        }
      }
    }
    return std::nullopt;
  }

 private:
  const toml::table& root_;
  std::string source_;
};

bool IsLoopback(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

// Applies one "table.key=VALUE" to `root`.
std::optional<std::string> ApplyOverride(toml::table& root, const std::string& text) {
  auto eq = text.find('=');
  auto dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq) {
    return "--set " + text + ": expected TABLE.KEY=VALUE, e.g. offer.price_per_mb=0.25";
  }
  const std::string table = text.substr(0, dot);
  const std::string key = text.substr(dot + 1, eq - dot - 1);
  const std::string value = text.substr(eq + 1);
  auto known = Schema().find(table);
  if (known == Schema().end() || !known->second.contains(key)) {
    return "--set " + text + ": unknown key " + table + "." + key;
  }
  toml::table* t = root.get_as<toml::table>(table);
  if (t == nullptr) {
    if (root.contains(table)) return "--set " + text + ": [" + table + "] is not a table";
    t = root.insert(table, toml::table{}).first->second.as_table();
  }
  const bool integer = !value.empty() && value.size() <= 18 &&
                       value.find_first_not_of("0123456789") == std::string::npos;
  if (integer) {
    t->insert_or_assign(key, static_cast<int64_t>(std::stoll(value)));
  } else if (value == "true" || value == "false") {
    t->insert_or_assign(key, value == "true");
  } else if (!value.empty() && value.front() == '[') {
    try {
      toml::table parsed = toml::parse("v = " + value);
      t->insert_or_assign(key, *parsed.get("v"));
    } catch (const toml::parse_error& e) {
      return "--set " + text + ": not a TOML array: " + std::string(e.description());
    }
  } else {
    t->insert_or_assign(key, value);
  }
  return std::nullopt;
}

std::optional<std::string> Read(const Reader& r, NodeConfig& c) {
  if (auto e = r.Unknown()) return e;
  std::optional<std::string> e;
  // Required keys first, so a missing one is named even in an otherwise empty file.
  const std::pair<const char*, const char*> required[] = {
      {"node", "ledger"}, {"node", "keystore"}, {"offer", "price_per_mb"}};
  for (const auto& [table, key] : required) {
    if (r.Find(table, key) == nullptr) {
      return std::string(table) + "." + key + ": required (in [" + table + "])";
    }
  }
  auto host_port = [](std::string_view t) { return ParseHostPort(t, false); };
  if ((e = r.Address("node", "ledger", host_port, &c.ledger))) return e;
  if ((e = r.String("node", "keystore", &c.keystore))) return e;
  if ((e = r.String("node", "passphrase_file", &c.passphrase_file))) return e;
  if ((e = r.String("node", "data_dir", &c.data_dir))) return e;
  if ((e = r.String("node", "log_level", &c.log_level))) return e;
  if (c.keystore.empty()) return "node.keystore: must not be empty";
  if (c.data_dir.empty()) return "node.data_dir: must not be empty";
  {
    static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
    if (!levels.contains(c.log_level)) {
      return r.Fail(*r.Find("node", "log_level"), "node", "log_level",
                    "expected trace, debug, info, warn, error or off");
    }
  }

  if ((e = r.Address("gossip", "listen", ParseListenAddress, &c.gossip_listen))) return e;
  if ((e = r.Integer("gossip", "advertise_port", 1, 65535, &c.advertise_port))) return e;
  if ((e = r.Endpoints("gossip", "bootstrap", 64, &c.bootstrap))) return e;
  uint64_t ms = 0;
  if (r.Find("gossip", "round_ms")) {
    if ((e = r.Integer("gossip", "round_ms", 10, 60'000, &ms))) return e;
    c.round = std::chrono::milliseconds(ms);
  }
  if (r.Find("gossip", "anti_entropy_ms")) {
    if ((e = r.Integer("gossip", "anti_entropy_ms", 100, 3'600'000, &ms))) return e;
    c.anti_entropy = std::chrono::milliseconds(ms);
  }

  if ((e = r.Credits("offer", "price_per_mb", true, &c.price_per_mb))) return e;
  if ((e = r.Credits("offer", "price_per_minute", true, &c.price_per_minute))) return e;
  if ((e = r.String("offer", "region", &c.region))) return e;
  if (auto ok = mp::CheckRegion(c.region); !ok) {
    return r.Fail(*r.Find("offer", "region"), "offer", "region", ok.error().message);
  }
  if ((e = r.Integer("offer", "capacity_mbps", 1, 1'000'000, &c.capacity_mbps))) return e;
  if ((e = r.Integer("offer", "max_sessions", 1, 1'000'000, &c.max_sessions))) return e;
  if ((e = r.Integer("offer", "offer_id", 0, UINT32_MAX, &c.offer_id))) return e;
  if ((e = r.Endpoints("offer", "endpoints", mp::kMaxEndpoints, &c.endpoints))) return e;
  if ((e = r.Integer("offer", "lifetime_s", 90, mp::kMaxOfferLifetimeS, &c.lifetime_s))) return e;

  if ((e = r.Address("tunnel", "listen", ParseListenAddress, &c.tunnel_listen))) return e;
  if ((e = r.String("tunnel", "static_key_file", &c.static_key_file))) return e;
  if ((e = r.Strings("tunnel", "allow", 1024, &c.allow))) return e;
  if ((e = r.Strings("tunnel", "deny", 1024, &c.deny))) return e;
  if ((e = r.Bool("tunnel", "log_destinations", &c.log_destinations))) return e;
  if ((e = r.Bool("tunnel", "full_tunnel", &c.full_tunnel))) return e;
  {
    uint64_t port = c.udp_port;
    if ((e = r.Integer("tunnel", "udp_port", 0, 65535, &port))) return e;
    c.udp_port = static_cast<uint16_t>(port);
  }
  if ((e = r.String("tunnel", "tun_device", &c.tun_device))) return e;
  if (!tunnel::os::ValidInterfaceName(c.tun_device)) {
    return r.Fail(*r.Find("tunnel", "tun_device"), "tunnel", "tun_device",
                  "expected 1 to 15 characters of A-Z a-z 0-9 _ . -");
  }
  {
    std::string text = "auto";
    if ((e = r.String("tunnel", "packet_offloads", &text))) return e;
    auto offloads = tunnel::session::PacketOffloads::Parse(text);
    if (!offloads) {
      return r.Fail(*r.Find("tunnel", "packet_offloads"), "tunnel", "packet_offloads",
                    "expected \"auto\", \"off\" or a comma list of tun, gso, gro, mmsg");
    }
    c.packet_offloads = *offloads;
  }
  for (const char* key : {"inner_ipv4", "inner_ipv6"}) {
    std::string text;
    if ((e = r.String("tunnel", key, &text))) return e;
    if (text.empty()) continue;
    auto prefix = tunnel::IpPrefix::Parse(text);
    const bool v4 = std::string_view(key) == "inner_ipv4";
    if (!prefix || prefix->address.family !=
                       (v4 ? tunnel::IpAddress::Family::kV4 : tunnel::IpAddress::Family::kV6)) {
      return r.Fail(*r.Find("tunnel", key), "tunnel", key,
                    v4 ? "expected an IPv4 prefix such as \"10.231.0.0/16\""
                       : "expected an IPv6 prefix such as \"fd31:4e7a:99::/64\"");
    }
    (v4 ? c.inner_ipv4 : c.inner_ipv6.emplace()) = *prefix;
  }
  // The pools must hold addresses (IPv4 /30 or larger, IPv6 /120 or larger).
  if (auto pool = tunnel::InnerAddressPool::Make(
          c.inner_ipv4, c.inner_ipv6.value_or(*tunnel::IpPrefix::Parse("fd00::/64")));
      !pool) {
    return "tunnel.inner_ipv4 / tunnel.inner_ipv6: " + pool.error().message;
  }
  if (c.endpoints.empty()) {
    const std::string& host = c.tunnel_listen.host;
    if (host == "0.0.0.0" || host == "::") {
      return "offer.endpoints: required when tunnel.listen is a wildcard address (" +
             c.tunnel_listen.ToString() + "): where do clients reach the tunnel?";
    }
    // Port 0: the node advertises the port it bound (EndpointsFor).
    if (c.tunnel_listen.port != 0) c.endpoints.push_back({host, c.tunnel_listen.port});
  }

  if ((e = r.Integer("limits", "bandwidth_mbps", 0, 1'000'000, &c.bandwidth_mbps))) return e;
  if ((e = r.Integer("limits", "monthly_data_gb", 0, 1'000'000'000, &c.monthly_data_gb))) return e;
  if ((e = r.Integer("limits", "max_pending_handshakes", 1, 65'536, &c.max_pending_handshakes)))
    return e;
  if ((e = r.Integer("limits", "msg1_timeout_ms", 100, 60'000, &c.msg1_timeout_ms))) return e;

  if ((e = r.Integer("payments", "invoice_interval_bytes", 65'536, 64'000'000,
                     &c.invoice_interval_bytes)))
    return e;
  if ((e = r.Integer("payments", "credit_window_bytes", c.invoice_interval_bytes, 256'000'000,
                     &c.credit_window_bytes)))
    return e;
  if (c.credit_window_bytes < c.invoice_interval_bytes) {
    return "payments.credit_window_bytes: must be at least payments.invoice_interval_bytes (" +
           std::to_string(c.invoice_interval_bytes) + ")";
  }
  if ((e = r.Integer("payments", "payment_grace_ms", 100, 600'000, &c.payment_grace_ms))) return e;
  std::string durability;
  if ((e = r.String("payments", "promise_durability", &durability))) return e;
  if (durability == "power") {
    c.promise_durability = payments::Durability::kPowerLoss;
  } else if (!durability.empty() && durability != "process") {
    return r.Fail(*r.Find("payments", "promise_durability"), "payments", "promise_durability",
                  "expected \"process\" or \"power\"");
  }

  if ((e = r.Credits("settlement", "threshold", false, &c.settle_threshold))) return e;
  if ((e = r.Integer("settlement", "max_age_s", 1, 86'400 * 30, &c.settle_max_age_s))) return e;
  if ((e = r.Integer("settlement", "shutdown_timeout_ms", 0, 600'000, &c.shutdown_timeout_ms)))
    return e;
  if ((e = r.Integer("settlement", "shutdown_grace_ms", 0, 600'000, &c.shutdown_grace_ms)))
    return e;

  if ((e = r.Address("control", "grpc_listen", ParseListenAddress, &c.grpc_listen))) return e;
  if ((e = r.Address("control", "http_listen", ParseListenAddress, &c.http_listen))) return e;
  const std::pair<const char*, const HostPort*> control[] = {{"grpc_listen", &c.grpc_listen},
                                                             {"http_listen", &c.http_listen}};
  for (const auto& [key, hp] : control) {
    if (!IsLoopback(hp->host)) {
      return "control." + std::string(key) + ": " + hp->ToString() +
             " is not a loopback address (the control service and the dashboard have no "
             "authentication; use 127.0.0.1 and an SSH tunnel or a reverse proxy)";
    }
  }
  return std::nullopt;
}

}  // namespace

std::string NodeConfig::PromiseDbPath() const { return data_dir + "/promises.sqlite"; }
std::string NodeConfig::StaticKeyPath() const {
  return static_key_file.empty() ? data_dir + "/tunnel.key" : static_key_file;
}
std::string NodeConfig::UsagePath() const { return data_dir + "/usage"; }

Result<NodeConfig, Errc> ParseNodeConfig(std::string_view toml_text, std::string_view source_name,
                                         const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    return Fail(Errc::kBadConfig, std::string(source_name) + ":" + std::to_string(begin.line) +
                                      ":" + std::to_string(begin.column) + ": " +
                                      std::string(e.description()));
  }
  for (const auto& o : overrides) {
    if (auto e = ApplyOverride(root, o)) return Fail(Errc::kBadConfig, std::move(*e));
  }
  NodeConfig config;
  Reader reader(root, std::string(source_name));
  if (auto e = Read(reader, config)) return Fail(Errc::kBadConfig, std::move(*e));
  return config;
}

Result<NodeConfig, Errc> LoadNodeConfig(const std::string& path,
                                        const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(Errc::kIo, path + ": cannot read: " + std::strerror(errno));
  // A configuration file is small; refuse something that is not one.
  constexpr std::streamsize kMaxConfigBytes = 1 << 20;
  std::string buffer(kMaxConfigBytes + 1, '\0');
  in.read(buffer.data(), kMaxConfigBytes + 1);
  if (in.gcount() > kMaxConfigBytes) {
    return Fail(Errc::kBadConfig, path + ": larger than 1 MiB; not a config file");
  }
  buffer.resize(static_cast<size_t>(in.gcount()));
  return ParseNodeConfig(buffer, path, overrides);
}

}  // namespace dvpn::node
