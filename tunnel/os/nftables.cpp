#include "tunnel/os/nftables.h"

#include "tunnel/os/tun_device.h"

#include <nftables/libnftables.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>

namespace dvpn::tunnel::os {

namespace {

constexpr size_t kMaxMessage = 1024;

nft_ctx* Ctx(void* c) { return static_cast<nft_ctx*>(c); }

bool ValidTable(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

std::string Clip(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.size() > kMaxMessage) text.resize(kMaxMessage);
  return text;
}

}  // namespace

OsResult<Nftables> Nftables::Open() {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return Fail(OsErrc::kUnsupported, "libnftables: cannot make a context");
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  return Nftables(ctx);
}

Nftables::Nftables(Nftables&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}

Nftables& Nftables::operator=(Nftables&& other) noexcept {
  if (this != &other) {
    if (ctx_) nft_ctx_free(Ctx(ctx_));
    ctx_ = std::exchange(other.ctx_, nullptr);
  }
  return *this;
}

Nftables::~Nftables() {
  if (ctx_) nft_ctx_free(Ctx(ctx_));
}

OsResult<std::string> Nftables::Execute(std::string_view commands, bool want_output) {
  if (!ctx_) return Fail(OsErrc::kSystem, "nftables: no context");
  const std::string text(commands);
  errno = 0;
  const int r = nft_run_cmd_from_buffer(Ctx(ctx_), text.c_str());
  const int err = errno;
  std::string output = nft_ctx_get_output_buffer(Ctx(ctx_));  // also clears the buffer
  std::string message = Clip(nft_ctx_get_error_buffer(Ctx(ctx_)));
  if (r == 0) return want_output ? output : std::string();
  if (err == EPERM || message.find("Operation not permitted") != std::string::npos) {
    return Fail(OsErrc::kPermission, "nftables: " + message + " (needs CAP_NET_ADMIN)");
  }
  if (message.find("No such file or directory") != std::string::npos) {
    return Fail(OsErrc::kNotFound, "nftables: " + message);
  }
  return Fail(OsErrc::kBadArgument, "nftables: " + (message.empty() ? "refused" : message));
}

OsResult<void> Nftables::Run(std::string_view commands) {
  auto r = Execute(commands, false);
  if (!r) return std::unexpected(r.error());
  return {};
}

OsResult<std::string> Nftables::List(std::string_view command) { return Execute(command, true); }

OsResult<std::string> ExitNatRuleset(const ExitNatConfig& c) {
  if (!ValidTable(c.table)) {
    return Fail(OsErrc::kBadArgument, "nftables table \"" + c.table + "\": 1 to 32 of a-z 0-9 _");
  }
  if (!ValidInterfaceName(c.tun_name)) {
    return Fail(OsErrc::kBadArgument, "device name \"" + c.tun_name + "\"");
  }
  if (c.v4_pool.address.family != IpAddress::Family::kV4 ||
      c.v6_pool.address.family != IpAddress::Family::kV6) {
    return Fail(OsErrc::kBadArgument, "the pools must be one IPv4 and one IPv6 prefix");
  }
  const std::string v4 = c.v4_pool.Network().ToString();
  const std::string v6 = c.v6_pool.Network().ToString();
  const std::string dev = "\"" + c.tun_name + "\"";
  // "add table" first makes "delete table" succeed when there is none; the three commands are
  // one transaction, so the old table (a crashed exit's) and the new never coexist.
  return "add table inet " + c.table + "\n" +     //
         "delete table inet " + c.table + "\n" +  //
         "table inet " + c.table + " {\n" +       //
         "  chain postrouting {\n" +              //
         "    type nat hook postrouting priority srcnat; policy accept;\n" +
         "    oifname != " + dev + " ip saddr " + v4 + " masquerade\n" + "    oifname != " + dev +
         " ip6 saddr " + v6 + " masquerade\n" + "  }\n" + "  chain forward {\n" +
         "    type filter hook forward priority filter; policy accept;\n" + "    oifname " + dev +
         " ct state established,related accept\n" + "    oifname " + dev + " counter drop\n" +
         "  }\n" + "}\n";
}

OsResult<void> EnableForwarding() {
  for (const char* path :
       {"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}) {
    {
      // On already (e.g. by /etc/sysctl.d under a unit whose /proc/sys is read-only): nothing
      // to write.
      std::ifstream in(path);
      std::string value;
      if (in >> value && value == "1") continue;
    }
    std::ofstream f(path);
    if (!f || !(f << "1\n") || !f.flush()) {
      const int err = errno;
      if (err == EACCES || err == EPERM || err == EROFS) {
        return Fail(OsErrc::kPermission,
                    std::string("cannot write ") + path + ": " + std::strerror(err));
      }
      return Fail(OsErrc::kSystem, std::string("cannot write ") + path + ": " + std::strerror(err));
    }
  }
  return {};
}

OsResult<ExitNat> ExitNat::Install(const ExitNatConfig& config) {
  auto ruleset = ExitNatRuleset(config);
  if (!ruleset) return std::unexpected(ruleset.error());
  auto nft = Nftables::Open();
  if (!nft) return std::unexpected(nft.error());
  if (auto ok = nft->Run(*ruleset); !ok) return std::unexpected(ok.error());
  return ExitNat(config.table, std::move(*nft));
}

ExitNat::ExitNat(ExitNat&& other) noexcept
    : table_(std::move(other.table_)), nft_(std::move(other.nft_)) {
  other.table_.clear();
}

ExitNat& ExitNat::operator=(ExitNat&& other) noexcept {
  if (this != &other) {
    (void)Remove();
    table_ = std::move(other.table_);
    other.table_.clear();
    nft_ = std::move(other.nft_);
  }
  return *this;
}

ExitNat::~ExitNat() { (void)Remove(); }

OsResult<void> ExitNat::Remove() {
  if (table_.empty()) return {};
  const std::string table = std::exchange(table_, std::string());
  return nft_.Run("delete table inet " + table + "\n");
}

}  // namespace dvpn::tunnel::os
