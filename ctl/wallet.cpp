#include "ctl/wallet.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "common/bytes.h"
#include "ledger/requests.h"
#include "payments/keystore.h"
#include "ctl/input_internal.h"
#include "ctl/output_internal.h"

namespace dvpn::ctl {
namespace {

using ledger::rpc::RpcError;
using payments::KeystoreErrc;

void Emit(const Options& options, const Json& json, const std::string& text) {
  if (options.json) {
    std::cout << json.dump(2) << '\n';
  } else {
    std::cout << text;
  }
  std::cout.flush();
}

Error<Exit> KeystoreFailure(const Error<KeystoreErrc>& error) {
  switch (error.code) {
    case KeystoreErrc::kIo:
      return {Exit::kRefused,
              "cannot use the keystore: " + error.message +
                  " (create one with `dvpnctl key new`, or choose it with --keystore)"};
    case KeystoreErrc::kWrongPassphrase:
      return {Exit::kRefused, error.message};
    case KeystoreErrc::kExists:
      return {Exit::kRefused, error.message};
    case KeystoreErrc::kDamaged:
    case KeystoreErrc::kUnsupported:
      return {Exit::kRefused, "cannot use the keystore: " + error.message};
  }
  return {Exit::kRefused, error.message};
}

CliResult<payments::KdfCost> KdfCostFor(const std::string& name) {
  if (name == "moderate") return payments::KdfCost::Moderate();
  if (name == "interactive") return payments::KdfCost::Interactive();
  if (name == "test") return payments::KdfCost::MinimumForTests();
  return Fail(Exit::kUsage, "--kdf-cost must be moderate, interactive or test");
}

bool Refused(ledger::SettleOutcome outcome) {
  switch (outcome) {
    case ledger::SettleOutcome::kSettled:
    case ledger::SettleOutcome::kSettledCapped:
    case ledger::SettleOutcome::kAlreadySettled:
    case ledger::SettleOutcome::kEscrowExhausted:
      return false;
    default:
      return true;
  }
}

}  // namespace

Wallet::Wallet(Options options) : options_(std::move(options)) {}
Wallet::~Wallet() = default;

// --- plumbing ----------------------------------------------------------------------------------

ledger::rpc::LedgerClient& Wallet::Client() {
  if (!client_)
    client_ = std::make_unique<ledger::rpc::LedgerClient>(options_.ledger, options_.timeout);
  return *client_;
}

CliResult<std::string> Wallet::KeystorePath() const {
  if (options_.keystore.empty()) {
    return Fail(Exit::kUsage, "no keystore: pass --keystore FILE or set DVPN_KEYSTORE");
  }
  return options_.keystore;
}

CliResult<payments::PublicKey> Wallet::OwnPublicKey() {
  DVPNCTL_TRY(path, KeystorePath());
  auto pub = payments::LoadKeystorePublicKey(path);
  if (!pub) return std::unexpected(KeystoreFailure(pub.error()));
  return *pub;
}

CliResult<payments::PrivateKey> Wallet::UnlockKey() {
  DVPNCTL_TRY(path, KeystorePath());
  // Check the file before asking for a passphrase, so a typo in the path is reported first.
  DVPNCTL_CHECK(OwnPublicKey());
  DVPNCTL_TRY(passphrase, ReadPassphrase(options_, path, /*for_new_key=*/false));
  auto key = payments::LoadKeystore(path, passphrase.value());
  if (!key) return std::unexpected(KeystoreFailure(key.error()));
  return std::move(*key);
}

CliResult<payments::Address> Wallet::AddressOrOwn(const std::string& text) {
  if (!text.empty()) return ParseAddressArg(text, "address");
  DVPNCTL_TRY(pub, OwnPublicKey());
  return payments::Address::FromPublicKey(pub);
}

Error<Exit> Wallet::ReadFailure(const std::string& what, const RpcError& error) const {
  switch (error.code) {
    case grpc::StatusCode::UNAVAILABLE:
      if (error.message.starts_with("storage failure")) {
        return {Exit::kUnreachable,
                "the ledger at " + options_.ledger + " is unavailable: " + error.message};
      }
      return {Exit::kUnreachable,
              "cannot reach the ledger at " + options_.ledger + ": " + error.message};
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return {Exit::kUnreachable, "the ledger at " + options_.ledger + " did not answer within " +
                                      std::to_string(options_.timeout.count() / 1000) + "s"};
    default:
      return {Exit::kRefused, "cannot read " + what + ": " + error.message};
  }
}

Error<Exit> Wallet::RequestFailure(const std::string& what, const RpcError& error) const {
  switch (error.code) {
    case grpc::StatusCode::UNAVAILABLE: {
      Error<Exit> e = ReadFailure(what, error);
      e.message += " (" + what + " was not applied; it is safe to retry)";
      return e;
    }
    case grpc::StatusCode::DEADLINE_EXCEEDED: {
      Error<Exit> e = ReadFailure(what, error);
      e.message += "; " + what + " may or may not have been applied (check with `dvpnctl history`)";
      return e;
    }
    default:
      return {Exit::kRefused, "the ledger refused " + what + ": " + error.message};
  }
}

CliResult<ledger::rpc::LedgerInfo> Wallet::GetInfo() {
  auto info = Client().GetInfo();
  if (!info) return std::unexpected(ReadFailure("the ledger's info", info.error()));
  return *info;
}

CliResult<uint64_t> Wallet::NextNonce(const payments::PublicKey& signer) {
  auto account = Client().GetAccount(payments::Address::FromPublicKey(signer));
  if (!account) return std::unexpected(ReadFailure("the account", account.error()));
  if (account->last_nonce == UINT64_MAX) {
    return Fail(Exit::kRefused, "this account has used every nonce; it cannot sign requests");
  }
  return account->last_nonce + 1;
}

// --- key ---------------------------------------------------------------------------------------

CliResult<void> Wallet::CheckKeystoreFree(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
    return Fail(Exit::kRefused, path +
                                    " already exists; dvpnctl never overwrites a keystore "
                                    "(move it away, or choose another file with --keystore)");
  }
  // Create the folder ($HOME/.dvpn by default) readable by the owner only.
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return Fail(Exit::kRefused, "cannot create " + parent.string() + ": " + ec.message());
    ::chmod(parent.c_str(), 0700);
  }
  return {};
}

CliResult<void> Wallet::StoreNewKey(const payments::PrivateKey& key) {
  DVPNCTL_TRY(path, KeystorePath());
  DVPNCTL_TRY(cost, KdfCostFor(options_.kdf_cost));
  DVPNCTL_TRY(passphrase, ReadPassphrase(options_, path, /*for_new_key=*/true));
  auto saved = payments::SaveKeystore(path, key, passphrase.value(), cost);
  if (!saved) return std::unexpected(KeystoreFailure(saved.error()));
  payments::Address address = payments::Address::FromPublicKey(key.public_key());
  Json j;
  j["address"] = address.ToString();
  j["public_key"] = ToHex(key.public_key().bytes());
  j["keystore"] = path;
  Emit(options_, j,
       FormatLines({{"address", address.ToString()},
                    {"public key", ToHex(key.public_key().bytes())},
                    {"keystore", path}}));
  return {};
}

CliResult<void> Wallet::KeyNew() {
  DVPNCTL_TRY(path, KeystorePath());
  DVPNCTL_CHECK(KdfCostFor(options_.kdf_cost));
  DVPNCTL_CHECK(CheckKeystoreFree(path));
  return StoreNewKey(payments::PrivateKey::Generate());
}

CliResult<void> Wallet::KeyImport() {
  DVPNCTL_TRY(path, KeystorePath());
  DVPNCTL_CHECK(KdfCostFor(options_.kdf_cost));
  DVPNCTL_CHECK(CheckKeystoreFree(path));
  DVPNCTL_TRY(key, ReadSecretKeyFromStdin());
  return StoreNewKey(key);
}

CliResult<void> Wallet::KeyShow() {
  DVPNCTL_TRY(path, KeystorePath());
  DVPNCTL_TRY(pub, OwnPublicKey());
  payments::Address address = payments::Address::FromPublicKey(pub);
  Json j;
  j["address"] = address.ToString();
  j["public_key"] = ToHex(pub.bytes());
  j["keystore"] = path;
  Emit(options_, j,
       FormatLines({{"address", address.ToString()},
                    {"public key", ToHex(pub.bytes())},
                    {"keystore", path}}));
  return {};
}

// --- accounts ----------------------------------------------------------------------------------

CliResult<void> Wallet::Info() {
  DVPNCTL_TRY(info, GetInfo());
  Emit(options_, ToJson(info), FormatLines(InfoLines(info)));
  return {};
}

CliResult<void> Wallet::Balance(const std::string& address_text) {
  DVPNCTL_TRY(address, AddressOrOwn(address_text));
  auto account = Client().GetAccount(address);
  if (!account) return std::unexpected(ReadFailure("the account", account.error()));
  Emit(options_, ToJson(*account), FormatLines(AccountLines(*account)));
  return {};
}

CliResult<void> Wallet::Deposit(const std::string& to_text, const std::string& amount_text) {
  DVPNCTL_TRY(to, ParseAddressArg(to_text, "--to"));
  DVPNCTL_TRY(amount, ParseAmountArg(amount_text, "amount"));
  DVPNCTL_TRY(key, UnlockKey());
  DVPNCTL_TRY(info, GetInfo());
  if (key.public_key() != info.operator_key) {
    return Fail(Exit::kRefused, "only the ledger's operator (" + info.operator_address.ToString() +
                                    ") can deposit; this keystore holds " +
                                    payments::Address::FromPublicKey(key.public_key()).ToString());
  }
  DVPNCTL_TRY(nonce, NextNonce(key.public_key()));
  auto account = Client().Deposit(ledger::MakeDeposit(key, info.id, to, amount, nonce));
  if (!account) return std::unexpected(RequestFailure("the deposit", account.error()));
  Emit(options_, ToJson(*account), FormatLines(AccountLines(*account)));
  return {};
}

CliResult<void> Wallet::Withdraw(const std::string& amount_text, const std::string& destination) {
  DVPNCTL_TRY(amount, ParseAmountArg(amount_text, "amount"));
  if (destination.size() > payments::kMaxWithdrawDestination) {
    return Fail(Exit::kRefused, "--destination is longer than " +
                                    std::to_string(payments::kMaxWithdrawDestination) + " bytes");
  }
  DVPNCTL_TRY(key, UnlockKey());
  DVPNCTL_TRY(info, GetInfo());
  DVPNCTL_TRY(nonce, NextNonce(key.public_key()));
  auto account = Client().Withdraw(ledger::MakeWithdraw(key, info.id, amount, nonce, destination));
  if (!account) return std::unexpected(RequestFailure("the withdrawal", account.error()));
  Emit(options_, ToJson(*account), FormatLines(AccountLines(*account)));
  return {};
}

// --- channels ----------------------------------------------------------------------------------

CliResult<void> Wallet::ChannelOpen(const std::string& provider_text,
                                    const std::string& amount_text, const std::string& expires_in) {
  DVPNCTL_TRY(provider, ParseAddressArg(provider_text, "--provider"));
  DVPNCTL_TRY(amount, ParseAmountArg(amount_text, "--amount"));
  DVPNCTL_TRY(lifetime, ParseDuration(expires_in));
  DVPNCTL_TRY(key, UnlockKey());
  DVPNCTL_TRY(info, GetInfo());
  DVPNCTL_TRY(nonce, NextNonce(key.public_key()));
  // The ledger's clock decides expiry, so measure from its time, not ours.
  uint64_t expiry = info.server_time_unix + lifetime;
  auto req = ledger::MakeOpenChannel(key, info.id, provider, amount, nonce, expiry);
  auto channel = Client().OpenChannel(req);
  if (!channel) return std::unexpected(RequestFailure("the channel opening", channel.error()));
  Emit(options_, ToJson(*channel), FormatLines(ChannelLines(*channel)));
  return {};
}

CliResult<void> Wallet::ChannelTopUp(const std::string& channel_text,
                                     const std::string& amount_text,
                                     const std::string& expires_in) {
  DVPNCTL_TRY(id, ParseChannelIdArg(channel_text));
  DVPNCTL_TRY(amount, ParseAmountArg(amount_text, "amount"));
  uint64_t lifetime = 0;
  if (!expires_in.empty()) {
    DVPNCTL_TRY(parsed, ParseDuration(expires_in));
    lifetime = parsed;
  }
  DVPNCTL_TRY(key, UnlockKey());
  DVPNCTL_TRY(info, GetInfo());
  DVPNCTL_TRY(nonce, NextNonce(key.public_key()));
  uint64_t new_expiry = lifetime == 0 ? 0 : info.server_time_unix + lifetime;
  auto channel =
      Client().TopUpChannel(ledger::MakeTopUpChannel(key, info.id, id, amount, nonce, new_expiry));
  if (!channel) return std::unexpected(RequestFailure("the top-up", channel.error()));
  Emit(options_, ToJson(*channel), FormatLines(ChannelLines(*channel)));
  return {};
}

CliResult<void> Wallet::ChannelClose(const std::string& channel_text) {
  DVPNCTL_TRY(id, ParseChannelIdArg(channel_text));
  DVPNCTL_TRY(key, UnlockKey());
  DVPNCTL_TRY(info, GetInfo());
  DVPNCTL_TRY(nonce, NextNonce(key.public_key()));
  auto channel = Client().CloseChannel(ledger::MakeCloseChannel(key, info.id, id, nonce));
  if (!channel) return std::unexpected(RequestFailure("the close", channel.error()));
  std::string text = FormatLines(ChannelLines(*channel));
  if (channel->status == ledger::ChannelStatus::kClosing) {
    text += "The provider may still settle until " + UtcTime(channel->close_deadline_unix) +
            "; the rest then returns to the client.\n";
  }
  Emit(options_, ToJson(*channel), text);
  return {};
}

CliResult<void> Wallet::ChannelShow(const std::string& channel_text) {
  DVPNCTL_TRY(id, ParseChannelIdArg(channel_text));
  auto channel = Client().GetChannel(id);
  if (!channel) return std::unexpected(ReadFailure("the channel", channel.error()));
  Emit(options_, ToJson(*channel), FormatLines(ChannelLines(*channel)));
  return {};
}

CliResult<void> Wallet::ChannelList(const std::string& address_text, uint32_t limit) {
  DVPNCTL_TRY(address, AddressOrOwn(address_text));
  auto channels = Client().ListChannels(address, limit);
  if (!channels) return std::unexpected(ReadFailure("the channels", channels.error()));
  Json j;
  j["address"] = address.ToString();
  j["channels"] = Json::array();
  std::string text;
  for (const auto& c : *channels) {
    j["channels"].push_back(ToJson(c));
    text += ChannelRow(c) + "\n";
  }
  if (channels->empty()) text = "no channels\n";
  Emit(options_, j, text);
  return {};
}

// --- promises and settlement -------------------------------------------------------------------

CliResult<void> Wallet::Promise(const std::string& channel_text, const std::string& cumulative_text,
                                const std::string& ledger_id_text) {
  DVPNCTL_TRY(id, ParseChannelIdArg(channel_text));
  DVPNCTL_TRY(cumulative, ParseAmountArg(cumulative_text, "--cumulative"));
  std::optional<payments::LedgerId> ledger_id;
  if (!ledger_id_text.empty()) {
    DVPNCTL_TRY(parsed, ParseLedgerIdArg(ledger_id_text));
    ledger_id = parsed;
  }
  DVPNCTL_TRY(key, UnlockKey());
  if (!ledger_id) {
    DVPNCTL_TRY(info, GetInfo());
    ledger_id = info.id;
  }
  payments::SignedPromise promise = ledger::MakePromise(key, *ledger_id, id, cumulative);
  Json j;
  j["ledger_id"] = ToHex(ledger_id->bytes);
  j["channel_id"] = ToHex(promise.channel.bytes);
  PutAmount(j, "cumulative", promise.cumulative);
  j["signature"] = ToHex(promise.signature);
  // The text form is one line of a `dvpnctl settle --file` file.
  Emit(options_, j,
       ToHex(promise.channel.bytes) + " " + promise.cumulative.ToString() + " " +
           ToHex(promise.signature) + "\n");
  return {};
}

CliResult<void> Wallet::Settle(const std::vector<std::string>& channels,
                               const std::vector<std::string>& cumulatives,
                               const std::vector<std::string>& signatures,
                               const std::string& file) {
  if (channels.size() != cumulatives.size() || channels.size() != signatures.size()) {
    return Fail(Exit::kUsage,
                "give --channel, --cumulative and --signature the same number of times (one "
                "triple per promise)");
  }
  std::vector<payments::SignedPromise> promises;
  for (size_t i = 0; i < channels.size(); ++i) {
    DVPNCTL_TRY(id, ParseChannelIdArg(channels[i]));
    DVPNCTL_TRY(cumulative, ParseAmountArg(cumulatives[i], "--cumulative"));
    DVPNCTL_TRY(signature, ParseSignatureArg(signatures[i]));
    promises.push_back({id, cumulative, signature});
  }
  if (!file.empty()) {
    DVPNCTL_TRY(from_file, ReadPromiseFile(file));
    promises.insert(promises.end(), from_file.begin(), from_file.end());
  }
  if (promises.empty()) {
    return Fail(Exit::kUsage,
                "nothing to settle: give --channel/--cumulative/--signature or --file");
  }
  DVPNCTL_TRY(key, UnlockKey());
  DVPNCTL_TRY(info, GetInfo());
  DVPNCTL_TRY(nonce, NextNonce(key.public_key()));
  const size_t per_batch = info.max_batch_items == 0 ? 1000 : info.max_batch_items;

  Json items = Json::array();
  std::string text;
  Amount total_moved;
  Amount provider_balance;
  size_t refused = 0;
  size_t done = 0;
  std::optional<Error<Exit>> failure;
  while (done < promises.size()) {
    size_t n = std::min(per_batch, promises.size() - done);
    std::vector<payments::SignedPromise> batch(promises.begin() + done,
                                               promises.begin() + done + n);
    auto result =
        Client().SettleBatch(ledger::MakeSettleBatch(key, info.id, nonce, std::move(batch)));
    if (!result) {
      failure = RequestFailure("the settlement batch", result.error());
      if (done > 0) {
        failure->message += " (" + std::to_string(done) + " earlier promises were submitted)";
      }
      break;
    }
    for (const auto& item : result->items) {
      items.push_back(ToJson(item));
      text += SettleRow(item) + "\n";
      if (Refused(item.outcome)) ++refused;
    }
    total_moved = total_moved.CheckedAdd(result->total_moved).value_or(Amount::Max());
    provider_balance = result->provider_balance;
    done += n;
    if (nonce == UINT64_MAX) break;
    ++nonce;
  }
  if (done > 0) {
    Json j;
    j["items"] = std::move(items);
    PutAmount(j, "total_moved", total_moved);
    PutAmount(j, "provider_balance", provider_balance);
    j["refused"] = refused;
    text += FormatLines({{"total moved", total_moved.ToString()},
                         {"provider balance", provider_balance.ToString()}});
    Emit(options_, j, text);
  }
  if (failure) return std::unexpected(*failure);
  if (done < promises.size()) return Fail(Exit::kRefused, "ran out of nonces");
  if (refused > 0) {
    return Fail(Exit::kRefused, std::to_string(refused) + " of " + std::to_string(promises.size()) +
                                    " promises were refused (see each line)");
  }
  return {};
}

// --- history -----------------------------------------------------------------------------------

CliResult<void> Wallet::History(const std::string& address_text, uint64_t after_seq,
                                uint32_t limit) {
  DVPNCTL_TRY(address, AddressOrOwn(address_text));
  auto page = Client().History(address, after_seq, limit);
  if (!page) return std::unexpected(ReadFailure("the history", page.error()));
  Json j;
  j["address"] = address.ToString();
  j["movements"] = Json::array();
  std::string text;
  for (const auto& m : page->movements) {
    j["movements"].push_back(ToJson(m));
    text += MovementRow(m) + "\n";
  }
  j["next_after_seq"] = page->next_after_seq;
  if (page->movements.empty()) text = "no movements\n";
  if (page->next_after_seq != 0) {
    text += "more: --after " + std::to_string(page->next_after_seq) + "\n";
  }
  Emit(options_, j, text);
  return {};
}

CliResult<void> Wallet::Watch(const std::string& address_text, std::optional<uint64_t> after,
                              uint64_t count) {
  // Signals are taken by a thread of ours (sigtimedwait), so block them before gRPC starts
  // threads that would inherit an unblocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  DVPNCTL_TRY(address, AddressOrOwn(address_text));
  if (!after) {
    // Start from the newest movement: page through the history (bounded by its length).
    uint64_t cursor = 0;
    uint64_t last = 0;
    for (;;) {
      auto page = Client().History(address, cursor, 1000);
      if (!page) return std::unexpected(ReadFailure("the history", page.error()));
      if (!page->movements.empty()) last = std::max(last, page->movements.back().seq);
      if (page->next_after_seq <= cursor) break;  // 0: no more; not advancing: stop anyway
      cursor = page->next_after_seq;
    }
    after = last;
  }

  auto watch = Client().WatchAccount(address, *after);
  std::atomic<bool> stop{false};
  std::atomic<bool> interrupted{false};
  std::thread signal_thread([&] {
    const timespec tick{0, 100'000'000};
    while (!stop.load()) {
      if (::sigtimedwait(&signals, nullptr, &tick) > 0) {
        interrupted.store(true);
        watch->Cancel();
        return;
      }
    }
  });

  uint64_t seen = 0;
  while (count == 0 || seen < count) {
    auto movement = watch->Next();
    if (!movement) break;
    ++seen;
    if (options_.json) {
      std::cout << ToJson(*movement).dump() << '\n';
    } else {
      std::cout << MovementRow(*movement) << '\n';
    }
    std::cout.flush();
  }
  bool reached = count != 0 && seen >= count;
  if (reached) watch->Cancel();
  stop.store(true);
  signal_thread.join();
  auto finished = watch->Finish();
  if (reached || interrupted.load() || finished) return {};
  return std::unexpected(ReadFailure("the account's movements", finished.error()));
}

}  // namespace dvpn::ctl
