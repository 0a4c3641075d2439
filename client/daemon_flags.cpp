#include "client/daemon_flags.h"

#include "cli/cli_util.h"
#include "cli/flags.h"
#include "client/spend_file.h"
#include "common/host_port.h"
#include "marketplace/offer.h"
#include "tunnel/os/tun_device.h"

namespace dvpn::client {

namespace mp = marketplace;

namespace {

// An amount flag into `value` (kept when the flag is empty); kBadConfig with the line for the
// user.
Result<void, Errc> SetAmount(Amount& value, const std::string& text, const char* flag) {
  return cli::SetAmountFlag(value, text, flag, Errc::kBadConfig);
}

}  // namespace

void AddClientDaemonFlags(CLI::App& app, ClientDaemonFlags& f) {
  app.add_option("--keystore", f.keystore, "the wallet: a dvpnctl keystore")->required();
  app.add_option("--passphrase-file", f.passphrase_file,
                 "the keystore's passphrase on the file's first line (else $DVPN_PASSPHRASE)");
  app.add_option("--ledger", f.ledger, "the ledger's gRPC HOST:PORT")->required();
  app.add_option("--bootstrap", f.bootstrap,
                 "a gossip peer HOST:PORT to learn offers from (repeatable; light mode: the "
                 "client's gossip node only dials out)");
  app.add_option("--offers-from", f.offers_from,
                 "instead of gossip: a dvpn-node's OfferBook gRPC HOST:PORT");
  app.add_option("--max-price-per-mb", f.max_price_per_mb,
                 "the highest price per MB to choose (credits)")
      ->required();
  app.add_option("--region", f.region, "only offers from this region");
  app.add_option("--provider", f.provider, "only this provider's offers (its dv... address)");
  cli::AddSocksFlags(app, f.socks, f.socks_port_file, f.socks_user, f.socks_password_file,
                     " (required when --socks is not a loopback address)");
  app.add_option("--session-cap", f.session_cap, "sign at most this much per session (credits)");
  app.add_option("--daily-cap", f.daily_cap, "sign at most this much per UTC day (credits)");
  app.add_option("--spend-file", f.spend_file, "keep today's spending here (with --daily-cap)");
  app.add_option("--open-deposit", f.open_deposit,
                 "open a channel with this deposit to a chosen provider that has none (credits)");
  app.add_option("--provider-stats", f.provider_stats,
                 "keep what this client measured of each provider in this SQLite file");
  app.add_option("--control", f.control,
                 "ClientControl gRPC: unix:PATH (a socket only this user and group may use) or "
                 "a loopback HOST:PORT (any local user may use it)")
      ->capture_default_str();
  app.add_option("--control-port-file", f.control_port_file, "write the control port here");
  app.add_flag("--connect", f.connect,
               "connect at start, and keep trying until connected (else wait for "
               "ClientControl.Connect)");
  app.add_flag("--full-tunnel", f.full_tunnel,
               "connect in full-tunnel mode: every packet of the machine through the exit "
               "(needs CAP_NET_ADMIN; docs/full-tunnel.md)");
  app.add_option("--tun-device", f.tun_device, "full tunnel: the TUN device's name")
      ->capture_default_str();
  app.add_option("--full-tunnel-transport", f.full_tunnel_transport,
                 "full tunnel: auto (UDP, TCP when UDP does not get through) or tcp (always the "
                 "TCP fallback)")
      ->capture_default_str();
  app.add_option("--packet-offloads", f.packet_offloads,
                 "full tunnel: auto (TUN segmentation offloads, UDP GSO/GRO, batched system "
                 "calls, as far as the kernel has them), off (one packet per system call), or "
                 "a comma list of tun, gso, gro, mmsg (docs/full-tunnel.md \"Offloads\")")
      ->capture_default_str();
  cli::AddLogLevel(app, f.log_level);
}

Result<ClientDaemonConfig, Errc> ClientDaemonConfigFromFlags(const ClientDaemonFlags& f) {
  // The policy's defaults.
  ConnectPolicy defaults;
  {
    auto price = mp::ParsePrice(f.max_price_per_mb);
    if (!price) return Fail(Errc::kBadConfig, "--max-price-per-mb: " + price.error().message);
    defaults.max_price_per_mb = *price;
    if (auto ok = mp::CheckRegion(f.region); !ok)
      return Fail(Errc::kBadConfig, "--region: " + ok.error().message);
    defaults.region = f.region;
    if (!f.provider.empty()) {
      defaults.provider = payments::Address::Parse(f.provider);
      if (!defaults.provider)
        return Fail(Errc::kBadConfig, "--provider: not an address: " + f.provider);
    }
  }
  HostPort control_tcp;
  std::string control_socket;
  if (f.control.starts_with("unix:")) {
    control_socket = f.control.substr(5);
    if (!control_socket.starts_with("/")) {
      return Fail(Errc::kBadConfig, "--control: unix: needs an absolute path");
    }
  } else {
    auto control = ParseListenAddress(f.control);
    if (!control) return Fail(Errc::kBadConfig, "--control: " + control.error().message);
    if (control->host != "127.0.0.1" && control->host != "::1") {
      return Fail(Errc::kBadConfig,
                  "--control: " + f.control + " is not a loopback address (no authentication)");
    }
    control_tcp = *control;
  }

  ClientDaemonConfig c;
  c.ledger = f.ledger;
  c.offers_from = f.offers_from;
  for (const auto& b : f.bootstrap) {
    auto e = mp::ParseEndpoint(b);
    if (!e) return Fail(Errc::kBadConfig, "--bootstrap: " + e.error().message);
    c.bootstrap.push_back(*e);
  }
  c.defaults = defaults;
  if (auto ok = SetAmount(c.pay.policy.session_cap, f.session_cap, "--session-cap"); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = SetAmount(c.pay.policy.daily_cap, f.daily_cap, "--daily-cap"); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = StartSpendState(c.pay, f.spend_file); !ok) return std::unexpected(ok.error());
  if (auto ok = SetAmount(c.open_deposit, f.open_deposit, "--open-deposit"); !ok) {
    return std::unexpected(ok.error());
  }
  c.provider_stats = f.provider_stats;
  tunnel::session::asio::io_context resolver_io(1);
  auto socks_ep = cli::ResolveHostPort(resolver_io, f.socks);
  if (!socks_ep) return Fail(Errc::kBadConfig, "--socks: " + socks_ep.error().message);
  // Whoever reaches the SOCKS port spends this wallet's credits: beyond loopback, only with a
  // password.
  auto credentials = cli::LoadSocksCredentials(f.socks_user, f.socks_password_file);
  if (!credentials) return Fail(Errc::kBadConfig, credentials.error().message);
  if (!socks_ep->address().is_loopback() && !*credentials) {
    return Fail(Errc::kBadConfig,
                "--socks: " + f.socks + " is not a loopback address: whoever reaches it spends " +
                    "your credits; add --socks-user and --socks-password-file (or $" +
                    cli::kSocksPasswordEnv + ")");
  }

  c.socks = *socks_ep;
  c.socks_port_file = f.socks_port_file;
  c.credentials = *credentials;
  c.control = control_tcp;
  c.control_socket = control_socket;
  c.control_port_file = f.control_port_file;
  c.defaults.full_tunnel = f.full_tunnel;
  if (f.full_tunnel && control_socket.empty()) {
    return Fail(Errc::kBadConfig,
                "--full-tunnel needs --control unix:PATH: the daemon holds CAP_NET_ADMIN, and a "
                "loopback port would let any local user drive it");
  }
  if (!tunnel::os::ValidInterfaceName(f.tun_device)) {
    return Fail(Errc::kBadConfig, "--tun-device: expected 1 to 15 characters of A-Z a-z 0-9 _ . -");
  }
  c.tun_device = f.tun_device;
  if (f.full_tunnel_transport != "auto" && f.full_tunnel_transport != "tcp") {
    return Fail(Errc::kBadConfig, "--full-tunnel-transport: expected auto or tcp");
  }
  c.full_tunnel_udp = f.full_tunnel_transport == "auto";
  auto offloads = tunnel::session::PacketOffloads::Parse(f.packet_offloads);
  if (!offloads) return Fail(Errc::kBadConfig, "--packet-offloads: " + offloads.error());
  c.packet_offloads = *offloads;
  return c;
}

}  // namespace dvpn::client
