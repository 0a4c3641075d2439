// dvpnctl: the command-line wallet of the dVPN ledger. This file only parses the command line
// and hands each subcommand to Wallet (wallet.h); docs/dvpnctl.md is the user's guide.

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "services/dvpnctl/cli.h"
#include "services/dvpnctl/daemon_commands.h"
#include "services/dvpnctl/wallet.h"

namespace {

using dvpn::ctl::CliResult;
using dvpn::ctl::Exit;
using dvpn::ctl::Options;
using dvpn::ctl::Wallet;

std::string DefaultKeystore() {
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') return "";
  return std::string(home) + "/.dvpn/key.json";
}

}  // namespace

int main(int argc, char** argv) {
  // gRPC would otherwise log connection failures on stderr; dvpnctl reports them itself.
  if (std::getenv("GRPC_VERBOSITY") == nullptr) ::setenv("GRPC_VERBOSITY", "NONE", 0);

  Options options;
  options.keystore = DefaultKeystore();
  uint64_t timeout_seconds = 10;

  CLI::App app{"dvpnctl: command-line wallet for the dVPN ledger"};
  app.fallthrough();  // global options may also follow the subcommand
  app.require_subcommand(1);
  app.add_option("--ledger", options.ledger, "ledger address HOST:PORT")
      ->envname("DVPN_LEDGER")
      ->capture_default_str();
  app.add_option("--keystore", options.keystore, "keystore file (default $HOME/.dvpn/key.json)")
      ->envname("DVPN_KEYSTORE");
  app.add_option("--passphrase-file", options.passphrase_file,
                 "read the passphrase from the first line of this file (else $DVPN_PASSPHRASE, "
                 "else a prompt on the terminal)");
  app.add_option("--kdf-cost", options.kdf_cost,
                 "Argon2id cost for `key new` / `key import`: moderate, interactive or test")
      ->check(CLI::IsMember({"moderate", "interactive", "test"}))
      ->capture_default_str();
  app.add_flag("--json", options.json, "machine-readable output (JSON)");
  app.add_option("--timeout", timeout_seconds, "seconds to wait for each ledger call")
      ->check(CLI::Range(uint64_t{1}, uint64_t{3600}))
      ->capture_default_str();
  app.footer(
      "Exit codes: 0 ok, 1 refused by the ledger or bad input, 2 usage error, 3 ledger "
      "unreachable. See docs/dvpnctl.md.");

  // Each subcommand's callback stores what to run once every option is parsed.
  std::function<CliResult<void>(Wallet&)> action;
  auto on = [&](CLI::App* cmd, std::function<CliResult<void>(Wallet&)> fn) {
    cmd->callback([&action, fn = std::move(fn)] { action = fn; });
  };

  // key
  auto* key = app.add_subcommand("key", "create, import or show the keystore's key");
  key->require_subcommand(1);
  on(key->add_subcommand("new", "create a key in a new keystore (never overwrites)"),
     [](Wallet& w) { return w.KeyNew(); });
  on(key->add_subcommand("import", "store a secret key (64 hex digits on stdin) in a new keystore"),
     [](Wallet& w) { return w.KeyImport(); });
  on(key->add_subcommand("show", "print the address and public key (no passphrase needed)"),
     [](Wallet& w) { return w.KeyShow(); });

  on(app.add_subcommand("info", "the ledger's id, name, operator, challenge period and totals"),
     [](Wallet& w) { return w.Info(); });

  std::string address;
  auto* balance = app.add_subcommand("balance", "an account's balance (default: your own)");
  balance->add_option("address", address, "account address (dv...)");
  on(balance, [&](Wallet& w) { return w.Balance(address); });

  std::string to, amount;
  auto* deposit = app.add_subcommand("deposit", "(operator) credit an account");
  deposit->add_option("--to", to, "account to credit")->required();
  deposit->add_option("amount", amount, "amount: 1.5 (credits) or 1500000u (micro-credits)")
      ->required();
  on(deposit, [&](Wallet& w) { return w.Deposit(to, amount); });

  std::string destination;
  auto* withdraw = app.add_subcommand("withdraw", "take credits out of your account");
  withdraw->add_option("amount", amount, "amount to withdraw")->required();
  withdraw
      ->add_option("--destination", destination,
                   "where the operator should pay out (free text, at most 128 bytes)")
      ->required();
  on(withdraw, [&](Wallet& w) { return w.Withdraw(amount, destination); });

  // channel
  auto* channel = app.add_subcommand("channel", "escrow channels");
  channel->require_subcommand(1);
  std::string provider, expires_in = "24h", channel_id;
  auto* open = channel->add_subcommand("open", "lock part of your balance for one provider");
  open->add_option("--provider", provider, "the provider's address")->required();
  open->add_option("--amount", amount, "escrow amount")->required();
  open->add_option("--expires-in", expires_in, "channel lifetime: 3600s, 30m, 24h, 7d")
      ->capture_default_str();
  on(open, [&](Wallet& w) { return w.ChannelOpen(provider, amount, expires_in); });

  std::string topup_expires_in;
  auto* topup = channel->add_subcommand("topup", "add escrow to an open channel");
  topup->add_option("channel", channel_id, "channel id (64 hex digits)")->required();
  topup->add_option("amount", amount, "amount to add")->required();
  topup->add_option("--expires-in", topup_expires_in,
                    "new lifetime from now (default: keep the expiry)");
  on(topup, [&](Wallet& w) { return w.ChannelTopUp(channel_id, amount, topup_expires_in); });

  auto* close = channel->add_subcommand(
      "close", "close a channel (client: after the challenge period; provider: at once)");
  close->add_option("channel", channel_id, "channel id")->required();
  on(close, [&](Wallet& w) { return w.ChannelClose(channel_id); });

  auto* show = channel->add_subcommand("show", "a channel's state");
  show->add_option("channel", channel_id, "channel id")->required();
  on(show, [&](Wallet& w) { return w.ChannelShow(channel_id); });

  uint32_t limit = 0;
  auto* list = channel->add_subcommand("list", "channels of an account (default: your own)");
  list->add_option("address", address, "account address");
  list->add_option("--limit", limit, "at most this many (0: the ledger's default)");
  on(list, [&](Wallet& w) { return w.ChannelList(address, limit); });

  // promise / settle
  std::string cumulative, ledger_id;
  auto* promise = app.add_subcommand(
      "promise", "(client) sign a payment promise; prints \"CHANNEL CUMULATIVE SIGNATURE\"");
  promise->add_option("--channel", channel_id, "channel id")->required();
  promise->add_option("--cumulative", cumulative, "total the provider may collect")->required();
  promise->add_option("--ledger-id", ledger_id,
                      "sign offline for this ledger id (64 hex digits) instead of asking the "
                      "ledger");
  on(promise, [&](Wallet& w) { return w.Promise(channel_id, cumulative, ledger_id); });

  std::vector<std::string> settle_channels, settle_cumulatives, settle_signatures;
  std::string settle_file;
  auto* settle = app.add_subcommand("settle", "(provider) collect promises in one batch");
  settle->add_option("--channel", settle_channels, "channel id (repeat once per promise)")
      ->allow_extra_args(false);
  settle->add_option("--cumulative", settle_cumulatives, "the promise's cumulative amount")
      ->allow_extra_args(false);
  settle->add_option("--signature", settle_signatures, "the promise's signature (128 hex)")
      ->allow_extra_args(false);
  settle->add_option("--file", settle_file,
                     "promises, one \"CHANNEL CUMULATIVE SIGNATURE\" per line (- for stdin)");
  on(settle, [&](Wallet& w) {
    return w.Settle(settle_channels, settle_cumulatives, settle_signatures, settle_file);
  });

  uint64_t after = 0;
  auto* history = app.add_subcommand("history", "an account's movements, oldest first");
  history->add_option("address", address, "account address (default: your own)");
  history->add_option("--after", after, "only movements with a greater sequence number");
  history->add_option("--limit", limit, "at most this many (0: the ledger's default)");
  on(history, [&](Wallet& w) { return w.History(address, after, limit); });

  uint64_t count = 0;
  auto* watch = app.add_subcommand("watch", "follow an account's movements live (Ctrl-C ends)");
  watch->add_option("address", address, "account address (default: your own)");
  auto* watch_after = watch->add_option(
      "--after", after, "first replay movements after this sequence number (default: none)");
  watch->add_option("--count", count, "exit after this many movements (0: never)");
  on(watch, [&](Wallet& w) {
    std::optional<uint64_t> from;
    if (watch_after->count() > 0) from = after;
    return w.Watch(address, from, count);
  });

  // Commands for a dvpn-node (its gRPC port) rather than the ledger.
  std::string node = "127.0.0.1:7601";
  dvpn::ctl::OffersQuery offers_query;
  auto* offers = app.add_subcommand("offers", "the offers a dvpn-node knows, best first");
  offers->add_option("--node", node, "the node's gRPC HOST:PORT")
      ->envname("DVPN_NODE")
      ->capture_default_str();
  offers->add_option("--max-price", offers_query.max_price, "only offers at most this per MB");
  offers->add_option("--region", offers_query.region, "only offers in this region");
  offers->add_option("--limit", offers_query.limit, "at most this many (1..1000)")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  on(offers, [&](Wallet&) { return dvpn::ctl::ListOffers(options, node, offers_query); });
  auto* earnings = app.add_subcommand("earnings", "(seller) a seller node's earnings");
  earnings->add_option("--node", node, "the seller node's control HOST:PORT")
      ->envname("DVPN_NODE")
      ->capture_default_str();
  on(earnings, [&](Wallet&) { return dvpn::ctl::ShowEarnings(options, node); });

  // Commands for a dvpn-client (its ClientControl port).
  std::string client = "127.0.0.1:7700";
  dvpn::ctl::ConnectArgs connect_args;
  uint32_t watch_s = 0;
  auto client_option = [&](CLI::App* cmd) {
    cmd->add_option("--client", client, "the dvpn-client's control HOST:PORT")
        ->envname("DVPN_CLIENT")
        ->capture_default_str();
  };
  auto* connect = app.add_subcommand("connect", "ask dvpn-client to connect (best offer)");
  client_option(connect);
  connect->add_option("--max-price", connect_args.max_price, "at most this per MB (credits)");
  connect->add_option("--region", connect_args.region, "only offers from this region");
  connect->add_option("--provider", connect_args.provider, "only this provider (dv... address)");
  connect->add_option("--wait", connect_args.wait_s, "seconds to wait for the tunnel (1..60)")
      ->check(CLI::Range(1u, 60u))
      ->capture_default_str();
  on(connect, [&](Wallet&) { return dvpn::ctl::Connect(options, client, connect_args); });
  auto* disconnect = app.add_subcommand("disconnect", "ask dvpn-client to disconnect");
  client_option(disconnect);
  on(disconnect, [&](Wallet&) { return dvpn::ctl::Disconnect(options, client); });
  auto* status = app.add_subcommand("status", "dvpn-client's connection, traffic and spending");
  client_option(status);
  status->add_option("--watch", watch_s,
                     "a live line per second for this many seconds (throughput, credits spent)")
      ->check(CLI::Range(0u, 86400u));
  bool require_connected = false;
  status->add_flag("--check", require_connected,
                   "exit 1 unless the client is connected with its SOCKS port open (a health "
                   "check)")
      ->excludes("--watch");
  on(status, [&](Wallet&) {
    return dvpn::ctl::ClientStatus(options, client, watch_s, require_connected);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(Exit::kUsage);
  }
  options.timeout = std::chrono::seconds(timeout_seconds);
  if (!action) {  // not reached: require_subcommand
    std::cerr << app.help();
    return static_cast<int>(Exit::kUsage);
  }

  Wallet wallet(options);
  CliResult<void> result = action(wallet);
  if (!result) {
    std::cout.flush();
    std::cerr << "dvpnctl: " << result.error().message << '\n';
    return static_cast<int>(result.error().code);
  }
  return static_cast<int>(Exit::kOk);
}
