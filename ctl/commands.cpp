#include "ctl/commands.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ctl/daemon_commands.h"

namespace dvpn::ctl {

namespace {

// The values the wallet's commands parse (one command runs per process).
struct WalletArgs {
  std::string address;
  std::string to;
  std::string amount;
  std::string destination;
  std::string provider;
  std::string expires_in = "24h";
  std::string channel_id;
  std::string topup_expires_in;
  uint32_t limit = 0;
  std::string cumulative;
  std::string ledger_id;
  std::vector<std::string> settle_channels;
  std::vector<std::string> settle_cumulatives;
  std::vector<std::string> settle_signatures;
  std::string settle_file;
  uint64_t after = 0;
  uint64_t count = 0;
};

// The values the daemons' commands parse.
struct DaemonArgs {
  std::string node = "127.0.0.1:7601";
  OffersQuery offers_query;
  std::string client = "127.0.0.1:7700";
  ConnectArgs connect_args;
  uint32_t watch_s = 0;
  bool require_connected = false;
};

// Makes `cmd` store `fn` in `action` when it is the command given.
std::function<void(CLI::App*, Action)> Binder(Action& action) {
  return [&action](CLI::App* cmd, Action fn) {
    cmd->callback([&action, fn = std::move(fn)] { action = fn; });
  };
}

}  // namespace

void AddWalletCommands(CLI::App& app, Action& action) {
  auto on = Binder(action);
  // The callbacks hold the parsed values: they live as long as `app`.
  auto a = std::make_shared<WalletArgs>();
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

  auto* balance = app.add_subcommand("balance", "an account's balance (default: your own)");
  balance->add_option("address", a->address, "account address (dv...)");
  on(balance, [a](Wallet& w) { return w.Balance(a->address); });

  auto* deposit = app.add_subcommand("deposit", "(operator) credit an account");
  deposit->add_option("--to", a->to, "account to credit")->required();
  deposit->add_option("amount", a->amount, "amount: 1.5 (credits) or 1500000u (micro-credits)")
      ->required();
  on(deposit, [a](Wallet& w) { return w.Deposit(a->to, a->amount); });

  auto* withdraw = app.add_subcommand("withdraw", "take credits out of your account");
  withdraw->add_option("amount", a->amount, "amount to withdraw")->required();
  withdraw
      ->add_option("--destination", a->destination,
                   "where the operator should pay out (free text, at most 128 bytes)")
      ->required();
  on(withdraw, [a](Wallet& w) { return w.Withdraw(a->amount, a->destination); });

  // channel
  auto* channel = app.add_subcommand("channel", "escrow channels");
  channel->require_subcommand(1);
  auto* open = channel->add_subcommand("open", "lock part of your balance for one provider");
  open->add_option("--provider", a->provider, "the provider's address")->required();
  open->add_option("--amount", a->amount, "escrow amount")->required();
  open->add_option("--expires-in", a->expires_in, "channel lifetime: 3600s, 30m, 24h, 7d")
      ->capture_default_str();
  on(open, [a](Wallet& w) { return w.ChannelOpen(a->provider, a->amount, a->expires_in); });

  auto* topup = channel->add_subcommand("topup", "add escrow to an open channel");
  topup->add_option("channel", a->channel_id, "channel id (64 hex digits)")->required();
  topup->add_option("amount", a->amount, "amount to add")->required();
  topup->add_option("--expires-in", a->topup_expires_in,
                    "new lifetime from now (default: keep the expiry)");
  on(topup,
     [a](Wallet& w) { return w.ChannelTopUp(a->channel_id, a->amount, a->topup_expires_in); });

  auto* close = channel->add_subcommand(
      "close", "close a channel (client: after the challenge period; provider: at once)");
  close->add_option("channel", a->channel_id, "channel id")->required();
  on(close, [a](Wallet& w) { return w.ChannelClose(a->channel_id); });

  auto* show = channel->add_subcommand("show", "a channel's state");
  show->add_option("channel", a->channel_id, "channel id")->required();
  on(show, [a](Wallet& w) { return w.ChannelShow(a->channel_id); });

  auto* list = channel->add_subcommand("list", "channels of an account (default: your own)");
  list->add_option("address", a->address, "account address");
  list->add_option("--limit", a->limit, "at most this many (0: the ledger's default)");
  on(list, [a](Wallet& w) { return w.ChannelList(a->address, a->limit); });

  // promise / settle
  auto* promise = app.add_subcommand(
      "promise", "(client) sign a payment promise; prints \"CHANNEL CUMULATIVE SIGNATURE\"");
  promise->add_option("--channel", a->channel_id, "channel id")->required();
  promise->add_option("--cumulative", a->cumulative, "total the provider may collect")->required();
  promise->add_option("--ledger-id", a->ledger_id,
                      "sign offline for this ledger id (64 hex digits) instead of asking the "
                      "ledger");
  on(promise, [a](Wallet& w) { return w.Promise(a->channel_id, a->cumulative, a->ledger_id); });

  auto* settle = app.add_subcommand("settle", "(provider) collect promises in one batch");
  settle->add_option("--channel", a->settle_channels, "channel id (repeat once per promise)")
      ->allow_extra_args(false);
  settle->add_option("--cumulative", a->settle_cumulatives, "the promise's cumulative amount")
      ->allow_extra_args(false);
  settle->add_option("--signature", a->settle_signatures, "the promise's signature (128 hex)")
      ->allow_extra_args(false);
  settle->add_option("--file", a->settle_file,
                     "promises, one \"CHANNEL CUMULATIVE SIGNATURE\" per line (- for stdin)");
  on(settle, [a](Wallet& w) {
    return w.Settle(a->settle_channels, a->settle_cumulatives, a->settle_signatures,
                    a->settle_file);
  });

  auto* history = app.add_subcommand("history", "an account's movements, oldest first");
  history->add_option("address", a->address, "account address (default: your own)");
  history->add_option("--after", a->after, "only movements with a greater sequence number");
  history->add_option("--limit", a->limit, "at most this many (0: the ledger's default)");
  on(history, [a](Wallet& w) { return w.History(a->address, a->after, a->limit); });

  auto* watch = app.add_subcommand("watch", "follow an account's movements live (Ctrl-C ends)");
  watch->add_option("address", a->address, "account address (default: your own)");
  auto* watch_after = watch->add_option(
      "--after", a->after, "first replay movements after this sequence number (default: none)");
  watch->add_option("--count", a->count, "exit after this many movements (0: never)");
  on(watch, [a, watch_after](Wallet& w) {
    std::optional<uint64_t> from;
    if (watch_after->count() > 0) from = a->after;
    return w.Watch(a->address, from, a->count);
  });
}

void AddDaemonCommands(CLI::App& app, const Options& options, Action& action) {
  auto on = Binder(action);
  auto a = std::make_shared<DaemonArgs>();
  // Commands for a dvpn-a->node (its gRPC port) rather than the ledger.
  auto* offers = app.add_subcommand("offers", "the offers a dvpn-node knows, best first");
  offers->add_option("--node", a->node, "the node's gRPC HOST:PORT")
      ->envname("DVPN_NODE")
      ->capture_default_str();
  offers->add_option("--max-price", a->offers_query.max_price, "only offers at most this per MB");
  offers->add_option("--region", a->offers_query.region, "only offers in this region");
  offers->add_flag("--full-tunnel", a->offers_query.full_tunnel,
                   "only offers that serve full-tunnel mode");
  offers->add_option("--limit", a->offers_query.limit, "at most this many (1..1000)")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  on(offers, [a, &options](Wallet&) { return ListOffers(options, a->node, a->offers_query); });
  auto* earnings = app.add_subcommand("earnings", "(seller) a seller node's earnings");
  earnings->add_option("--node", a->node, "the seller node's control HOST:PORT")
      ->envname("DVPN_NODE")
      ->capture_default_str();
  on(earnings, [a, &options](Wallet&) { return ShowEarnings(options, a->node); });

  // Commands for a dvpn-a->client (its ClientControl port).
  auto client_option = [a](CLI::App* cmd) {
    cmd->add_option("--client", a->client,
                    "the dvpn-client's control: unix:PATH or HOST:PORT")
        ->envname("DVPN_CLIENT")
        ->capture_default_str();
  };
  auto* connect = app.add_subcommand("connect", "ask dvpn-client to connect (best offer)");
  client_option(connect);
  connect->add_option("--max-price", a->connect_args.max_price, "at most this per MB (credits)");
  connect->add_option("--region", a->connect_args.region, "only offers from this region");
  connect->add_option("--provider", a->connect_args.provider, "only this provider (dv... address)");
  connect->add_flag("--full-tunnel", a->connect_args.full_tunnel,
                    "every packet of the machine through the exit (a TUN device and routes; "
                    "only offers that serve it)");
  connect->add_option("--wait", a->connect_args.wait_s, "seconds to wait for the tunnel (1..60)")
      ->check(CLI::Range(1u, 60u))
      ->capture_default_str();
  on(connect, [a, &options](Wallet&) { return Connect(options, a->client, a->connect_args); });
  auto* disconnect = app.add_subcommand("disconnect", "ask dvpn-client to disconnect");
  client_option(disconnect);
  on(disconnect, [a, &options](Wallet&) { return Disconnect(options, a->client); });
  auto* status = app.add_subcommand("status", "dvpn-client's connection, traffic and spending");
  client_option(status);
  status
      ->add_option("--watch", a->watch_s,
                   "a live line per second for this many seconds (throughput, credits spent)")
      ->check(CLI::Range(0u, 86400u));
  status
      ->add_flag("--check", a->require_connected,
                 "exit 1 unless the client is connected with its SOCKS port open (a health "
                 "check)")
      ->excludes("--watch");
  on(status, [a, &options](Wallet&) {
    return ClientStatus(options, a->client, a->watch_s, a->require_connected);
  });
}

}  // namespace dvpn::ctl
