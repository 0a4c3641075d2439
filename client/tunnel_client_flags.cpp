#include "client/tunnel_client_flags.h"

#include <tuple>
#include <utility>

#include "cli/cli_util.h"
#include "cli/flags.h"
#include "client/spend_file.h"
#include "common/bytes.h"
#include "ledger/rpc/ledger_client.h"

namespace dvpn::client {

namespace {

namespace session = tunnel::session;

constexpr std::chrono::milliseconds kLedgerCallTimeout{5'000};

// An amount flag into `value` (kept when the flag is empty); kBadConfig with the line for the
// user.
Result<void, Errc> SetAmount(Amount& value, const std::string& text, const char* flag) {
  return cli::SetAmountFlag(value, text, flag, Errc::kBadConfig);
}

std::optional<Hash32> Hex32(const std::string& text) {
  auto bytes = FromHex(text);
  if (!bytes || bytes->size() != 32) return std::nullopt;
  return ToArray<32>(*bytes);
}

// Where to go: a fixed exit (--provider, --provider-key) or the offers of a node.
Result<void, Errc> CheckTarget(const TunnelClientFlags& f) {
  const bool choose_from_offers = !f.offers_from.empty();
  if (!choose_from_offers && (f.provider.empty() || f.provider_key_hex.empty())) {
    return Fail(Errc::kBadConfig, "--provider and --provider-key are required (or --offers-from)");
  }
  if (choose_from_offers && f.max_price_per_mb_text.empty()) {
    return Fail(Errc::kBadConfig,
                "--offers-from needs --max-price-per-mb (the highest price to choose)");
  }
  if (choose_from_offers &&
      (!f.channel_hex.empty() || !f.payee_text.empty() || !f.top_up_amount_text.empty())) {
    return Fail(Errc::kBadConfig,
                "--offers-from chooses the provider: --channel, --payee and --top-up-amount "
                "do not apply");
  }
  return {};
}

// The channel, the ledger's id (read from --ledger when given) and the ledger client.
struct LedgerChoice {
  payments::ChannelId channel;
  payments::LedgerId ledger;
  std::shared_ptr<ledger::rpc::LedgerClient> client;
};

Result<LedgerChoice, Errc> ChooseLedger(const TunnelClientFlags& f) {
  LedgerChoice out;
  if (!f.channel_hex.empty()) {
    auto c = Hex32(f.channel_hex);
    if (!c) return Fail(Errc::kBadConfig, "--channel: expected 64 hex digits");
    out.channel.bytes = *c;
  }
  if (!f.ledger_hex.empty()) {
    auto l = Hex32(f.ledger_hex);
    if (!l) return Fail(Errc::kBadConfig, "--ledger-id: expected 64 hex digits");
    out.ledger.bytes = *l;
  }
  if (!f.ledger_target.empty()) {
    out.client = std::make_shared<ledger::rpc::LedgerClient>(f.ledger_target, kLedgerCallTimeout);
    auto info = out.client->GetInfo();
    if (!info)
      return Fail(Errc::kLedger, "--ledger " + f.ledger_target + ": " + info.error().message);
    if (!f.ledger_hex.empty() && info->id != out.ledger) {
      return Fail(Errc::kBadConfig,
                  "--ledger " + f.ledger_target + " is not the ledger named by --ledger-id");
    }
    out.ledger = info->id;
  }
  return out;
}

// The spend policy, the payee and the spend state from the flags.
Result<void, Errc> ParsePayment(const TunnelClientFlags& f, session::ClientPaymentConfig& pay,
                                spdlog::logger& log) {
  const std::tuple<Amount&, const std::string&, const char*> amounts[] = {
      {pay.policy.max_price_per_mb, f.max_price_per_mb_text, "--max-price-per-mb"},
      {pay.policy.max_price_per_minute, f.max_price_per_minute_text, "--max-price-per-minute"},
      {pay.policy.session_cap, f.session_cap_text, "--session-cap"},
      {pay.policy.daily_cap, f.daily_cap_text, "--daily-cap"},
  };
  for (const auto& [value, text, flag] : amounts) {
    if (auto ok = SetAmount(value, text, flag); !ok) return std::unexpected(ok.error());
  }
  pay.policy.tolerance_bytes = f.tolerance_bytes;
  if (!f.payee_text.empty()) {
    pay.expected_payee = payments::Address::Parse(f.payee_text);
    if (!pay.expected_payee)
      return Fail(Errc::kBadConfig, "--payee: not an address: " + f.payee_text);
  }
  if (auto ok = StartSpendState(pay, f.spend_file); !ok) return std::unexpected(ok.error());
  if (pay.journal) {
    const uint64_t today = payments::UtcDay(UnixSeconds());
    log.info("spent today so far (from {}): {} of the daily cap {}", f.spend_file,
             pay.journal->ReservedFor(today).ToString(), pay.policy.daily_cap.ToString());
  }
  if (auto ok = SetAmount(pay.policy.top_up_amount, f.top_up_amount_text, "--top-up-amount"); !ok) {
    return std::unexpected(ok.error());
  }
  pay.policy.low_escrow_threshold = pay.policy.top_up_amount;
  if (auto ok = SetAmount(pay.policy.low_escrow_threshold, f.top_up_below_text, "--top-up-below");
      !ok) {
    return std::unexpected(ok.error());
  }
  return {};
}

// --offers-from: the picker's options and the provider stats.
Result<void, Errc> AddPicker(const TunnelClientFlags& f, const LedgerChoice& l,
                             const payments::PrivateKey* identity, const SystemClock& system_clock,
                             tunnel_client::ClientRuntimeConfig& config) {
  const session::ClientPaymentConfig& pay = config.pay;
  std::unique_ptr<marketplace::ProviderStats> stats;
  if (f.provider_stats_path.empty()) {
    stats = std::make_unique<marketplace::ProviderStats>(
        marketplace::ProviderStats::InMemory(system_clock));
  } else {
    auto opened = marketplace::ProviderStats::Open(f.provider_stats_path, system_clock);
    if (!opened) {
      return Fail(Errc::kBadConfig, "--provider-stats " + f.provider_stats_path + ": " +
                                        marketplace::StatsErrcName(opened.error().code) + ": " +
                                        opened.error().message);
    }
    stats = std::make_unique<marketplace::ProviderStats>(std::move(*opened));
  }
  tunnel_client::OfferPicker::Options po;
  po.offers_from = f.offers_from;
  po.policy.ledger = l.ledger;
  po.policy.max_price_per_mb = pay.policy.max_price_per_mb;
  if (!f.max_price_per_minute_text.empty())
    po.policy.max_price_per_minute = pay.policy.max_price_per_minute;
  po.policy.region = f.region;
  po.policy.min_capacity_mbps = f.min_capacity_mbps;
  po.client = identity;
  po.ledger = l.client;
  if (auto ok = SetAmount(po.open_deposit, f.open_deposit_text, "--open-deposit"); !ok) {
    return std::unexpected(ok.error());
  }
  if (!po.open_deposit.IsZero() && !l.client)
    return Fail(Errc::kBadConfig, "--open-deposit needs --ledger");
  config.picker = std::move(po);
  config.stats = std::move(stats);
  return {};
}

}  // namespace

void AddTunnelClientFlags(CLI::App& app, TunnelClientFlags& f) {
  auto* provider_opt = app.add_option("--provider", f.provider, "HOST:PORT of the exit");
  auto* provider_key_opt = app.add_option("--provider-key", f.provider_key_hex,
                                          "the exit's static X25519 public key (hex)");
  // Provider choice from marketplace offers (docs/marketplace.md §3) instead of --provider.
  auto* offers_from_opt = app.add_option(
      "--offers-from", f.offers_from,
      "HOST:PORT of a dvpn-node's OfferBook (gRPC): choose the best offer under the policy "
      "(--max-price-per-mb, --region, --min-capacity-mbps) and fail over to the next");
  app.add_option("--region", f.region, "with --offers-from: only offers from this region");
  app.add_option("--min-capacity-mbps", f.min_capacity_mbps,
                 "with --offers-from: only offers advertising at least this capacity");
  app.add_option("--provider-stats", f.provider_stats_path,
                 "with --offers-from: keep what this client measured of each provider in this "
                 "SQLite file (handshake time, failures, overcharges) and rank offers by it");
  app.add_option("--open-deposit", f.open_deposit_text,
                 "with --offers-from and --ledger: open a channel with this deposit (credits) to "
                 "a chosen paid provider that has none");
  provider_opt->excludes(offers_from_opt);
  provider_key_opt->excludes(offers_from_opt);
  cli::AddSocksFlags(app, f.socks, f.socks_port_file, f.socks_user, f.socks_password_file);
  app.add_flag("--socks-fast-reply", f.socks_fast_reply,
               "answer SOCKS CONNECT at once and send the first bytes with the open (faster "
               "set-up; exit-side failures then show as a reset, not a SOCKS reply code)");
  cli::AddAccountKeyFlags(app, f.identity_hex, f.identity_key_file, f.keystore_path,
                          "payment identity", "; random when none is given (free exits only)");
  app.add_option("--channel", f.channel_hex,
                 "escrow channel id (hex, 32 bytes); zeros when absent");
  app.add_option("--ledger-id", f.ledger_hex,
                 "id of the ledger the channel is on (hex, 32 bytes); read from --ledger when "
                 "absent; zeros when both are absent");
  app.add_option("--ledger", f.ledger_target,
                 "ledger gRPC HOST:PORT (optional): the ledger id is read from it; top-ups "
                 "need it");
  cli::AddBounded(app, "--handshake-timeout-ms", f.handshake_timeout_ms,
                  "connect + handshake timeout", 1, 600'000);
  app.add_option("--max-reconnects", f.max_reconnects,
                 "reconnect attempts after the tunnel is lost, per outage (0: exit with "
                 "code 1 when the tunnel is lost); unlimited when absent")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1'000'000'000}));
  cli::AddBounded(app, "--reconnect-min-ms", f.reconnect_min_ms,
                  "first reconnect delay; it doubles (with jitter) up to --reconnect-max-ms", 1,
                  3'600'000);
  cli::AddBounded(app, "--reconnect-max-ms", f.reconnect_max_ms, "longest reconnect delay", 1,
                  3'600'000);
  // Spend policy (docs/payments.md §5). Amounts are decimal credits.
  app.add_option("--max-price-per-mb", f.max_price_per_mb_text,
                 "refuse terms above this price per 10^6 bytes (credits; default: the protocol "
                 "limit, 10^6 credits)");
  app.add_option("--max-price-per-minute", f.max_price_per_minute_text,
                 "refuse terms above this price per minute (credits)");
  app.add_option("--session-cap", f.session_cap_text,
                 "sign at most this many credits per session; reached: exit code 3 (0: no cap)");
  app.add_option("--daily-cap", f.daily_cap_text,
                 "sign at most this many credits per UTC day in this process (0: no cap)");
  cli::AddBounded(app, "--tolerance-bytes", f.tolerance_bytes,
                  "accept invoices up to this many bytes above our own meter", 0, 1'000'000'000);
  app.add_option("--spend-file", f.spend_file,
                 "keep today's spending in this file so that --daily-cap holds across restarts");
  app.add_option("--top-up-amount", f.top_up_amount_text,
                 "with --ledger: add this much to the channel's escrow when it runs low (credits)");
  app.add_option("--top-up-below", f.top_up_below_text,
                 "top up when the escrow left after the latest promise is below this (credits; "
                 "default: the top-up amount)");
  app.add_option("--payee", f.payee_text,
                 "the provider's account address (dv...): terms naming another payee are refused");
  cli::AddLogLevel(app, f.log_level);
}

Result<TunnelClientSetup, Errc> MakeTunnelClientSetup(const TunnelClientFlags& f,
                                                      spdlog::logger& log) {
  if (f.reconnect_min_ms > f.reconnect_max_ms) {
    return Fail(Errc::kBadConfig, "--reconnect-min-ms (" + std::to_string(f.reconnect_min_ms) +
                                      ") is above --reconnect-max-ms (" +
                                      std::to_string(f.reconnect_max_ms) + ")");
  }
  // SOCKS credentials: the password never comes from the command line (it would show in ps).
  auto credentials = cli::LoadSocksCredentials(f.socks_user, f.socks_password_file);
  if (!credentials) return Fail(Errc::kBadConfig, credentials.error().message);

  if (auto ok = CheckTarget(f); !ok) return std::unexpected(ok.error());
  const bool choose_from_offers = !f.offers_from.empty();
  Hash32 provider_key_bytes{};
  if (!choose_from_offers) {
    auto provider_key = Hex32(f.provider_key_hex);
    if (!provider_key) return Fail(Errc::kBadConfig, "--provider-key: expected 64 hex digits");
    provider_key_bytes = *provider_key;
  }
  TunnelClientSetup setup;
  if (!cli::AccountKeyGiven(f.identity_key_file, f.keystore_path)) {
    setup.identity = std::make_unique<payments::PrivateKey>(payments::PrivateKey::Generate());
  } else {
    auto key = cli::LoadAccountKey(f.identity_key_file, f.keystore_path);
    if (!key) return Fail(Errc::kBadConfig, key.error().message);
    setup.identity = std::make_unique<payments::PrivateKey>(std::move(*key));
  }
  const payments::PrivateKey* identity = setup.identity.get();
  auto ledger = ChooseLedger(f);
  if (!ledger) return std::unexpected(std::move(ledger.error()));

  session::asio::io_context io(1);
  std::optional<session::tcp::endpoint> provider_ep;
  if (!choose_from_offers) {
    auto resolved = cli::ResolveHostPort(io, f.provider);
    if (!resolved) return Fail(Errc::kBadConfig, "--provider: " + resolved.error().message);
    provider_ep = *resolved;
  }
  auto socks_ep = cli::ResolveHostPort(io, f.socks);
  if (!socks_ep) return Fail(Errc::kBadConfig, "--socks: " + socks_ep.error().message);

  tunnel_client::ClientRuntimeConfig& config = setup.config;
  session::ClientPaymentConfig& pay = config.pay;
  pay.identity = identity;
  pay.ledger = ledger->ledger;
  pay.channel = ledger->channel;
  if (auto ok = ParsePayment(f, pay, log); !ok) return std::unexpected(ok.error());
  if (!pay.policy.top_up_amount.IsZero() && !ledger->client) {
    return Fail(Errc::kBadConfig, "--top-up-amount needs --ledger HOST:PORT");
  }
  if (choose_from_offers) {
    if (auto ok = AddPicker(f, *ledger, identity, *setup.clock, config); !ok) {
      return std::unexpected(ok.error());
    }
  }

  config.provider = provider_ep;
  config.provider_key = provider_key_bytes;
  config.socks = *socks_ep;
  config.socks_port_file = f.socks_port_file;
  config.frontend.credentials = std::move(*credentials);
  config.frontend.fast_reply = f.socks_fast_reply;
  if (*credentials) cli::WipeString((*credentials)->password);
  config.ledger_client = ledger->client;
  config.keeper.handshake_timeout = std::chrono::milliseconds(f.handshake_timeout_ms);
  config.keeper.initial_backoff = std::chrono::milliseconds(f.reconnect_min_ms);
  config.keeper.max_backoff = std::chrono::milliseconds(f.reconnect_max_ms);
  if (f.max_reconnects) config.keeper.max_reconnects = *f.max_reconnects;
  return setup;
}

}  // namespace dvpn::client
