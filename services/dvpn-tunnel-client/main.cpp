// dvpn-tunnel-client: the client end of a dVPN tunnel with a local SOCKS5 front end. Wiring
// only: flags -> identity, spend policy, provider or offers -> ClientRuntime (client_runtime.h:
// TunnelKeeper, payments, SocksFrontend on an io thread). SIGINT/SIGTERM stop it cleanly at any
// moment.
//
// Paid sessions (docs/payments.md): when the exit's msg2 carries session terms, they are checked
// against the spend policy (--max-price-per-mb, ...) and every invoice is answered with a promise
// signed by the payment identity (--identity-key-file, $DVPN_IDENTITY_KEY_HEX or --keystore).
//
// Exit codes: 0 clean shutdown; 2 refused to start (bad flag, key or password); 1 cannot reach
// the exit at start, handshake failed, cannot listen, or the tunnel was lost and could not be
// re-established within --max-reconnects attempts; 3 a spending cap (--session-cap,
// --daily-cap) was reached: the client stopped without signing more; 4 the provider's payment
// terms were refused (price above the policy, wrong payee, bad base) or it overcharged (with
// --offers-from these move to the next offer instead; exit 1 when none is left).

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "common/amount.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/port_file.h"
#include "common/clock.h"
#include "ledger/rpc/ledger_client.h"
#include "payments/keys.h"
#include "payments/spend_journal.h"
#include "client/client_runtime.h"
#include "payments/signed_messages.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "cli/cli_util.h"
#include "cli/program.h"
#include "tunnel/session/client.h"
#include "tunnel/session/paid_client.h"

namespace {

using dvpn::cli::kExitConfig;
// How often the main thread looks whether the runtime ended by itself.
constexpr long kSignalPollNs = 100'000'000;
constexpr std::chrono::milliseconds kLedgerCallTimeout{5'000};

namespace session = dvpn::tunnel::session;
namespace cli = dvpn::cli;

int Refuse(const std::string& message) {
  return dvpn::cli::Refuse("dvpn-tunnel-client", message);
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
  std::string socks_user;
  std::string socks_password_file;
  std::string identity_hex;  // refused: see kIdentityKeyHexRemoved
  std::string identity_key_file;
  std::string channel_hex;
  std::string ledger_hex;
  std::string keystore_path;
  std::string ledger_target;
  std::string spend_file;
  std::string top_up_amount_text;
  std::string top_up_below_text;
  std::string log_level = "info";
  unsigned handshake_timeout_ms = 10'000;
  uint64_t max_reconnects = 0;
  unsigned reconnect_min_ms = 250;
  unsigned reconnect_max_ms = 30'000;

  CLI::App app{"dvpn-tunnel-client: a dVPN tunnel client with a SOCKS5 front end"};
  auto* provider_opt = app.add_option("--provider", provider, "HOST:PORT of the exit");
  auto* provider_key_opt =
      app.add_option("--provider-key", provider_key_hex, "the exit's static X25519 public key (hex)");
  // Provider choice from marketplace offers (docs/marketplace.md §3) instead of --provider.
  std::string offers_from;
  std::string region;
  uint32_t min_capacity_mbps = 0;
  std::string provider_stats_path;
  std::string open_deposit_text;
  auto* offers_from_opt = app.add_option(
      "--offers-from", offers_from,
      "HOST:PORT of a dvpn-node's OfferBook (gRPC): choose the best offer under the policy "
      "(--max-price-per-mb, --region, --min-capacity-mbps) and fail over to the next");
  app.add_option("--region", region, "with --offers-from: only offers from this region");
  app.add_option("--min-capacity-mbps", min_capacity_mbps,
                 "with --offers-from: only offers advertising at least this capacity");
  app.add_option("--provider-stats", provider_stats_path,
                 "with --offers-from: keep what this client measured of each provider in this "
                 "SQLite file (handshake time, failures, overcharges) and rank offers by it");
  app.add_option("--open-deposit", open_deposit_text,
                 "with --offers-from and --ledger: open a channel with this deposit (credits) to "
                 "a chosen paid provider that has none");
  provider_opt->excludes(offers_from_opt);
  provider_key_opt->excludes(offers_from_opt);
  app.add_option("--socks", socks, "HOST:PORT of the SOCKS5 server (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--socks-port-file", socks_port_file,
                 "write the SOCKS port to this file once listening");
  app.add_option("--socks-user", socks_user,
                 "require SOCKS5 username/password authentication (RFC 1929) with this user "
                 "name; the password comes from --socks-password-file or $DVPN_SOCKS_PASSWORD");
  app.add_option("--socks-password-file", socks_password_file,
                 "file whose first line is the SOCKS password (used with --socks-user)");
  bool socks_fast_reply = false;
  app.add_flag("--socks-fast-reply", socks_fast_reply,
               "answer SOCKS CONNECT at once and send the first bytes with the open (faster "
               "set-up; exit-side failures then show as a reset, not a SOCKS reply code)");
  app.add_option("--identity-key-hex", identity_hex,
                 "refused: a secret on the command line is readable by every local user");
  app.add_option("--identity-key-file", identity_key_file,
                 "file holding the secp256k1 secret key (64 hex digits, mode 0600) of the "
                 "payment identity (or $DVPN_IDENTITY_KEY_HEX, or --keystore); random when none "
                 "is given (free exits only)");
  app.add_option("--keystore", keystore_path,
                 "payment identity keystore file, as dvpnctl writes it (passphrase from "
                 "$DVPN_PASSPHRASE)");
  app.add_option("--channel", channel_hex, "escrow channel id (hex, 32 bytes); zeros when absent");
  app.add_option("--ledger-id", ledger_hex,
                 "id of the ledger the channel is on (hex, 32 bytes); read from --ledger when "
                 "absent; zeros when both are absent");
  app.add_option("--ledger", ledger_target,
                 "ledger gRPC HOST:PORT (optional): the ledger id is read from it; top-ups "
                 "need it");
  app.add_option("--handshake-timeout-ms", handshake_timeout_ms, "connect + handshake timeout")
      ->capture_default_str()
      ->check(CLI::Range(1u, 600'000u));
  auto* max_reconnects_opt =
      app.add_option("--max-reconnects", max_reconnects,
                     "reconnect attempts after the tunnel is lost, per outage (0: exit with "
                     "code 1 when the tunnel is lost); unlimited when absent")
          ->check(CLI::Range(uint64_t{0}, uint64_t{1'000'000'000}));
  app.add_option("--reconnect-min-ms", reconnect_min_ms,
                 "first reconnect delay; it doubles (with jitter) up to --reconnect-max-ms")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3'600'000u));
  app.add_option("--reconnect-max-ms", reconnect_max_ms, "longest reconnect delay")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3'600'000u));
  // Spend policy (docs/payments.md §5). Amounts are decimal credits.
  std::string max_price_per_mb_text;
  std::string max_price_per_minute_text;
  std::string session_cap_text;
  std::string daily_cap_text;
  uint64_t tolerance_bytes = 65'536;
  std::string payee_text;
  app.add_option("--max-price-per-mb", max_price_per_mb_text,
                 "refuse terms above this price per 10^6 bytes (credits; default: the protocol "
                 "limit, 10^6 credits)");
  app.add_option("--max-price-per-minute", max_price_per_minute_text,
                 "refuse terms above this price per minute (credits)");
  app.add_option("--session-cap", session_cap_text,
                 "sign at most this many credits per session; reached: exit code 3 (0: no cap)");
  app.add_option("--daily-cap", daily_cap_text,
                 "sign at most this many credits per UTC day in this process (0: no cap)");
  app.add_option("--tolerance-bytes", tolerance_bytes,
                 "accept invoices up to this many bytes above our own meter")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1'000'000'000}));
  app.add_option("--spend-file", spend_file,
                 "keep today's spending in this file so that --daily-cap holds across restarts");
  app.add_option("--top-up-amount", top_up_amount_text,
                 "with --ledger: add this much to the channel's escrow when it runs low (credits)");
  app.add_option("--top-up-below", top_up_below_text,
                 "top up when the escrow left after the latest promise is below this (credits; "
                 "default: the top-up amount)");
  app.add_option("--payee", payee_text,
                 "the provider's account address (dv...): terms naming another payee are refused");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  if (auto rc = dvpn::cli::Parse(app, argc, argv)) return *rc;
  if (auto e = dvpn::cli::StartLogging(log_level)) return Refuse(*e);
  if (!identity_hex.empty()) return Refuse(dvpn::cli::kIdentityKeyHexRemoved);
  if (reconnect_min_ms > reconnect_max_ms) {
    return Refuse("--reconnect-min-ms (" + std::to_string(reconnect_min_ms) +
                  ") is above --reconnect-max-ms (" + std::to_string(reconnect_max_ms) + ")");
  }
  dvpn::tunnel::EnsureSodium();

  // SOCKS credentials: the password never comes from the command line (it would show in ps).
  auto credentials = cli::LoadSocksCredentials(socks_user, socks_password_file);
  if (!credentials) return Refuse(credentials.error().message);

  const bool choose_from_offers = !offers_from.empty();
  if (!choose_from_offers && (provider.empty() || provider_key_hex.empty())) {
    return Refuse("--provider and --provider-key are required (or --offers-from)");
  }
  if (choose_from_offers && max_price_per_mb_text.empty()) {
    return Refuse("--offers-from needs --max-price-per-mb (the highest price to choose)");
  }
  if (choose_from_offers && (!channel_hex.empty() || !payee_text.empty() ||
                             !top_up_amount_text.empty())) {
    return Refuse("--offers-from chooses the provider: --channel, --payee and --top-up-amount "
                  "do not apply");
  }
  dvpn::Hash32 provider_key_bytes{};
  if (!choose_from_offers) {
    auto provider_key = Hex32(provider_key_hex);
    if (!provider_key) return Refuse("--provider-key: expected 64 hex digits");
    provider_key_bytes = *provider_key;
  }
  std::optional<dvpn::payments::PrivateKey> identity;
  if (!cli::AccountKeyGiven(identity_key_file, keystore_path)) {
    identity = dvpn::payments::PrivateKey::Generate();
  } else {
    auto key = cli::LoadAccountKey(identity_key_file, keystore_path);
    if (!key) return Refuse(key.error().message);
    identity = std::move(*key);
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
    if (!l) return Refuse("--ledger-id: expected 64 hex digits");
    ledger.bytes = *l;
  }
  std::shared_ptr<dvpn::ledger::rpc::LedgerClient> ledger_client;
  if (!ledger_target.empty()) {
    ledger_client = std::make_shared<dvpn::ledger::rpc::LedgerClient>(ledger_target,
                                                                      kLedgerCallTimeout);
    auto info = ledger_client->GetInfo();
    if (!info) return Refuse("--ledger " + ledger_target + ": " + info.error().message);
    if (!ledger_hex.empty() && info->id != ledger) {
      return Refuse("--ledger " + ledger_target + " is not the ledger named by --ledger-id");
    }
    ledger = info->id;
  }

  session::asio::io_context io(1);
  std::optional<session::tcp::endpoint> provider_ep;
  if (!choose_from_offers) {
    auto resolved = cli::ResolveHostPort(io, provider);
    if (!resolved) return Refuse("--provider: " + resolved.error().message);
    provider_ep = *resolved;
  }
  auto socks_ep = cli::ResolveHostPort(io, socks);
  if (!socks_ep) return Refuse("--socks: " + socks_ep.error().message);

  auto log = dvpn::Logger("dvpn-tunnel-client");
  cli::RaiseOpenFileLimit(*log);

  session::ClientPaymentConfig pay;
  {
    const auto& amount = cli::ParseAmountFlag;
    if (auto e = amount(max_price_per_mb_text, "--max-price-per-mb", &pay.policy.max_price_per_mb))
      return Refuse(*e);
    if (auto e = amount(max_price_per_minute_text, "--max-price-per-minute",
                        &pay.policy.max_price_per_minute))
      return Refuse(*e);
    if (auto e = amount(session_cap_text, "--session-cap", &pay.policy.session_cap))
      return Refuse(*e);
    if (auto e = amount(daily_cap_text, "--daily-cap", &pay.policy.daily_cap)) return Refuse(*e);
    pay.policy.tolerance_bytes = tolerance_bytes;
    if (!payee_text.empty()) {
      pay.expected_payee = dvpn::payments::Address::Parse(payee_text);
      if (!pay.expected_payee) return Refuse("--payee: not an address: " + payee_text);
    }
    pay.identity = &*identity;
    pay.ledger = ledger;
    pay.channel = channel;
    pay.daily = std::make_shared<dvpn::payments::DailySpend>();
    if (!spend_file.empty()) {
      if (pay.policy.daily_cap.IsZero()) return Refuse("--spend-file needs --daily-cap");
      auto journal = dvpn::payments::SpendJournal::Open(spend_file, pay.policy.daily_cap);
      if (!journal) return Refuse("--spend-file: " + journal.error());
      pay.journal = std::make_shared<dvpn::payments::SpendJournal>(std::move(*journal));
      const uint64_t today = dvpn::payments::UtcDay(dvpn::UnixSeconds());
      pay.daily->Record(today, pay.journal->ReservedFor(today));
      log->info("spent today so far (from {}): {} of the daily cap {}", spend_file,
                pay.journal->ReservedFor(today).ToString(), pay.policy.daily_cap.ToString());
    }
    if (auto e = amount(top_up_amount_text, "--top-up-amount", &pay.policy.top_up_amount))
      return Refuse(*e);
    pay.policy.low_escrow_threshold = pay.policy.top_up_amount;
    if (auto e = amount(top_up_below_text, "--top-up-below", &pay.policy.low_escrow_threshold))
      return Refuse(*e);
  }
  if (!pay.policy.top_up_amount.IsZero() && !ledger_client) {
    return Refuse("--top-up-amount needs --ledger HOST:PORT");
  }
  dvpn::tunnel_client::ClientRuntimeConfig config;
  dvpn::SystemClock system_clock;
  if (choose_from_offers) {
    std::unique_ptr<dvpn::marketplace::ProviderStats> stats;
    if (provider_stats_path.empty()) {
      stats = std::make_unique<dvpn::marketplace::ProviderStats>(
          dvpn::marketplace::ProviderStats::InMemory(system_clock));
    } else {
      auto opened = dvpn::marketplace::ProviderStats::Open(provider_stats_path, system_clock);
      if (!opened) {
        return Refuse("--provider-stats " + provider_stats_path + ": " +
                      dvpn::marketplace::StatsErrcName(opened.error().code) + ": " +
                      opened.error().message);
      }
      stats = std::make_unique<dvpn::marketplace::ProviderStats>(std::move(*opened));
    }
    dvpn::tunnel_client::OfferPicker::Options po;
    po.offers_from = offers_from;
    po.policy.ledger = ledger;
    po.policy.max_price_per_mb = pay.policy.max_price_per_mb;
    if (!max_price_per_minute_text.empty()) po.policy.max_price_per_minute = pay.policy.max_price_per_minute;
    po.policy.region = region;
    po.policy.min_capacity_mbps = min_capacity_mbps;
    po.client = &*identity;
    po.ledger = ledger_client;
    if (auto e = cli::ParseAmountFlag(open_deposit_text, "--open-deposit", &po.open_deposit))
      return Refuse(*e);
    if (!po.open_deposit.IsZero() && !ledger_client) return Refuse("--open-deposit needs --ledger");
    config.picker = std::move(po);
    config.stats = std::move(stats);
  }

  config.provider = provider_ep;
  config.provider_key = provider_key_bytes;
  config.socks = *socks_ep;
  config.socks_port_file = socks_port_file;
  config.frontend.credentials = std::move(*credentials);
  config.frontend.fast_reply = socks_fast_reply;
  if (*credentials) cli::WipeString((*credentials)->password);
  config.pay = std::move(pay);
  config.ledger_client = ledger_client;
  config.keeper.handshake_timeout = std::chrono::milliseconds(handshake_timeout_ms);
  config.keeper.initial_backoff = std::chrono::milliseconds(reconnect_min_ms);
  config.keeper.max_backoff = std::chrono::milliseconds(reconnect_max_ms);
  if (max_reconnects_opt->count() > 0) config.keeper.max_reconnects = max_reconnects;

  // Block the shutdown signals before the runtime's thread starts, so only this thread's
  // sigtimedwait receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto runtime = dvpn::tunnel_client::ClientRuntime::Start(std::move(config));
  if (!runtime) return Refuse(runtime.error().message);
  while (!(*runtime)->Finished()) {
    timespec tick{0, kSignalPollNs};
    int sig = ::sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) {
      log->info("signal {}: shutting down", sig);
      break;
    }
  }
  (*runtime)->Stop();
  const int code = (*runtime)->ExitCode();
  if (code == dvpn::tunnel_client::kClientSpendCap ||
      code == dvpn::tunnel_client::kClientPaymentRefused) {
    std::cerr << "dvpn-tunnel-client: stopped: " << (*runtime)->Status().last_error << "\n";
  }
  return code;
}
