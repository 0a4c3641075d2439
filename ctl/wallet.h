#pragma once
// Wallet: what each dvpnctl subcommand does, over the keystore (payments/keystore.h) and the
// ledger's gRPC API (ledger/rpc/ledger_client.h). Arguments arrive as the text the user typed
// and are parsed here, so every bad value gets the same kind of message. Results are printed
// to stdout (text, or one JSON document with --json); failures are returned, never printed,
// and main turns them into "dvpnctl: <message>" on stderr and the exit code.
//
// Not thread-safe; one per process. Owns its LedgerClient, created on first use (commands that
// work offline never open a connection).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ledger/rpc/ledger_client.h"
#include "payments/keys.h"
#include "ctl/cli.h"

namespace dvpn::ctl {

class Wallet {
 public:
  explicit Wallet(Options options);
  ~Wallet();
  Wallet(const Wallet&) = delete;
  Wallet& operator=(const Wallet&) = delete;

  CliResult<void> KeyNew();
  CliResult<void> KeyImport();
  CliResult<void> KeyShow();

  CliResult<void> Info();
  // `address` empty: the keystore's own account.
  CliResult<void> Balance(const std::string& address);
  CliResult<void> Deposit(const std::string& to, const std::string& amount);
  CliResult<void> Withdraw(const std::string& amount, const std::string& destination);

  CliResult<void> ChannelOpen(const std::string& provider, const std::string& amount,
                              const std::string& expires_in);
  // `expires_in` empty: keep the channel's expiry.
  CliResult<void> ChannelTopUp(const std::string& channel, const std::string& amount,
                               const std::string& expires_in);
  CliResult<void> ChannelClose(const std::string& channel);
  CliResult<void> ChannelShow(const std::string& channel);
  CliResult<void> ChannelList(const std::string& address, uint32_t limit);

  // `ledger_id` empty: asked from the ledger; otherwise no connection is made.
  CliResult<void> Promise(const std::string& channel, const std::string& cumulative,
                          const std::string& ledger_id);
  // Triples in order (the three vectors have the same length) followed by the file's lines.
  CliResult<void> Settle(const std::vector<std::string>& channels,
                         const std::vector<std::string>& cumulatives,
                         const std::vector<std::string>& signatures, const std::string& file);

  CliResult<void> History(const std::string& address, uint64_t after_seq, uint32_t limit);
  // `after_seq` empty: only movements that happen from now on. `count` 0: until interrupted.
  CliResult<void> Watch(const std::string& address, std::optional<uint64_t> after_seq,
                        uint64_t count);

 private:
  ledger::rpc::LedgerClient& Client();
  CliResult<std::string> KeystorePath() const;
  CliResult<payments::PublicKey> OwnPublicKey();
  CliResult<payments::PrivateKey> UnlockKey();
  CliResult<payments::Address> AddressOrOwn(const std::string& text);
  CliResult<ledger::rpc::LedgerInfo> GetInfo();
  // The nonce for the next request signed by `signer`: its last accepted nonce + 1.
  CliResult<uint64_t> NextNonce(const payments::PublicKey& signer);
  // Saves `key` to the keystore with a new passphrase and prints its identity.
  CliResult<void> StoreNewKey(const payments::PrivateKey& key);
  CliResult<void> CheckKeystoreFree(const std::string& path);

  // Errors of a read (`what`: "the account") and of a signed request (`what`: "the deposit").
  Error<Exit> ReadFailure(const std::string& what, const ledger::rpc::RpcError& error) const;
  Error<Exit> RequestFailure(const std::string& what, const ledger::rpc::RpcError& error) const;

  Options options_;
  std::unique_ptr<ledger::rpc::LedgerClient> client_;
};

}  // namespace dvpn::ctl
