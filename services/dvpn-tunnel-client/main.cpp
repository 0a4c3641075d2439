// dvpn-tunnel-client: the client end of a dVPN tunnel with a local SOCKS5 front end, for tests
// and manual runs. Wiring only: flags -> identity -> ConnectTunnel (handshake) -> SocksFrontend
// on one io_context thread. SIGINT/SIGTERM stop it cleanly.
//
// Exit codes: 0 clean shutdown; 2 refused to start (bad flag or key); 1 cannot reach the exit,
// handshake failed, cannot listen, or the tunnel was lost.

#include <csignal>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "common/bytes.h"
#include "common/log.h"
#include "common/port_file.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "tunnel/session/cli_util.h"
#include "tunnel/session/client.h"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

namespace session = dvpn::tunnel::session;

int Refuse(const std::string& message) {
  std::cerr << "dvpn-tunnel-client: " << message << "\n";
  return kExitConfig;
}

std::optional<dvpn::Hash32> Hex32(const std::string& text) {
  auto bytes = dvpn::FromHex(text);
  if (!bytes || bytes->size() != 32) return std::nullopt;
  return dvpn::ToArray<32>(*bytes);
}

}  // namespace

int main(int argc, char** argv) {
  std::string provider;
  std::string provider_key_hex;
  std::string socks = "127.0.0.1:1080";
  std::string socks_port_file;
  std::string identity_hex;
  std::string channel_hex;
  std::string ledger_hex;
  std::string log_level = "info";
  unsigned handshake_timeout_ms = 10'000;

  CLI::App app{"dvpn-tunnel-client: a dVPN tunnel client with a SOCKS5 front end"};
  app.add_option("--provider", provider, "HOST:PORT of the exit")->required();
  app.add_option("--provider-key", provider_key_hex, "the exit's static X25519 public key (hex)")
      ->required();
  app.add_option("--socks", socks, "HOST:PORT of the SOCKS5 server (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--socks-port-file", socks_port_file,
                 "write the SOCKS port to this file once listening");
  app.add_option("--identity-key-hex", identity_hex,
                 "secp256k1 secret key (hex) of the payment identity; random when absent");
  app.add_option("--channel", channel_hex, "escrow channel id (hex, 32 bytes); zeros when absent");
  app.add_option("--ledger", ledger_hex, "ledger id (hex, 32 bytes); zeros when absent");
  app.add_option("--handshake-timeout-ms", handshake_timeout_ms, "connect + handshake timeout")
      ->capture_default_str()
      ->check(CLI::Range(1u, 600'000u));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitConfig;
  }
  if (!dvpn::SetLogLevel(log_level)) return Refuse("--log-level: unknown level " + log_level);
  dvpn::tunnel::EnsureSodium();

  auto provider_key = Hex32(provider_key_hex);
  if (!provider_key) return Refuse("--provider-key: expected 64 hex digits");
  std::optional<dvpn::payments::PrivateKey> identity;
  if (identity_hex.empty()) {
    identity = dvpn::payments::PrivateKey::Generate();
  } else {
    auto bytes = dvpn::FromHex(identity_hex);
    if (bytes) identity = dvpn::payments::PrivateKey::FromBytes(*bytes);
    if (!identity) return Refuse("--identity-key-hex: not a valid secp256k1 secret key");
  }
  dvpn::payments::ChannelId channel;
  dvpn::payments::LedgerId ledger;
  if (!channel_hex.empty()) {
    auto c = Hex32(channel_hex);
    if (!c) return Refuse("--channel: expected 64 hex digits");
    channel.bytes = *c;
  }
  if (!ledger_hex.empty()) {
    auto l = Hex32(ledger_hex);
    if (!l) return Refuse("--ledger: expected 64 hex digits");
    ledger.bytes = *l;
  }

  session::asio::io_context io(1);
  std::string error;
  auto provider_ep = session::ResolveHostPort(io, provider, &error);
  if (!provider_ep) return Refuse("--provider: " + error);
  auto socks_ep = session::ResolveHostPort(io, socks, &error);
  if (!socks_ep) return Refuse("--socks: " + error);

  auto log = dvpn::Logger("dvpn-tunnel-client");
  dvpn::tunnel::HandshakeInitiator::Options hs;
  hs.provider_static = *provider_key;
  hs.identity = &*identity;
  hs.ledger = ledger;
  hs.channel = channel;
  hs.timestamp_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();

  int exit_code = 0;
  bool shutting_down = false;
  std::shared_ptr<session::TunnelConnection> tunnel;
  std::shared_ptr<session::SocksFrontend> frontend;
  session::asio::signal_set stop(io, SIGINT, SIGTERM);
  stop.async_wait([&](const session::error_code& ec, int sig) {
    if (ec) return;
    log->info("signal {}: shutting down", sig);
    shutting_down = true;
    if (frontend) frontend->Stop();
    if (tunnel) tunnel->Close(dvpn::tunnel::CloseReason::kNormal, "client shutting down", true);
    io.stop();
  });

  session::asio::co_spawn(
      io,
      [&]() -> session::asio::awaitable<void> {
        auto t = co_await session::ConnectTunnel(*provider_ep, std::move(hs), {},
                                                 std::chrono::milliseconds(handshake_timeout_ms));
        if (!t) {
          log->error("cannot establish the tunnel to {}: {}", provider, t.error());
          exit_code = kExitRuntime;
          stop.cancel();
          io.stop();
          co_return;
        }
        tunnel = *t;
        try {
          frontend = std::make_shared<session::SocksFrontend>(io, *socks_ep, tunnel,
                                                              session::SocksFrontend::Options{});
        } catch (const std::exception& e) {
          log->error("cannot listen on {}: {}", socks, e.what());
          exit_code = kExitRuntime;
          io.stop();
          co_return;
        }
        tunnel->Start(nullptr, [&]() {
          if (shutting_down) return;
          log->error("the tunnel to {} was lost", provider);
          exit_code = kExitRuntime;
          io.stop();
        });
        frontend->Start();
        int port = frontend->local_endpoint().port();
        log->info("SOCKS5 server listening on {}:{}", socks_ep->address().to_string(), port);
        if (!socks_port_file.empty() && !dvpn::WritePortFile(socks_port_file, port, &error)) {
          log->error("{}", error);
          exit_code = kExitRuntime;
          io.stop();
        }
        co_return;
      },
      session::asio::detached);
  io.run();
  return exit_code;
}
