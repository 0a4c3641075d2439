#pragma once
// dvpnctl input: command-line values (amounts, addresses, ids, durations, promise files) and
// secrets (passphrases, imported secret keys). Every parser fails with Exit::kRefused and a
// message that names the bad value; none of them throws. Private to ctl/ (dvpn_ctl).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/amount.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"
#include "ctl/cli.h"

namespace dvpn::ctl {

// A std::string whose bytes are wiped (sodium_memzero) on destruction. Move-only.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  SecretString(SecretString&& other) noexcept;
  SecretString& operator=(SecretString&& other) noexcept;
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  ~SecretString();

  const std::string& value() const { return value_; }
  std::string& mutable_value() { return value_; }

 private:
  void Wipe();
  std::string value_;
};

// "1.5" (credits) or "1500000u" (micro-credits), see Amount::Parse. `what` names the value in
// the error ("amount", "--cumulative").
CliResult<Amount> ParseAmountArg(std::string_view text, std::string_view what);
CliResult<payments::Address> ParseAddressArg(std::string_view text, std::string_view what);
CliResult<payments::ChannelId> ParseChannelIdArg(std::string_view text);
CliResult<payments::Signature> ParseSignatureArg(std::string_view text);
CliResult<payments::LedgerId> ParseLedgerIdArg(std::string_view text);

// "3600s", "30m", "24h", "7d": a positive number of seconds, at most 100 years.
CliResult<uint64_t> ParseDuration(std::string_view text);

// One promise per line, "CHANNEL_ID CUMULATIVE SIGNATURE" separated by blanks (the format
// `dvpnctl promise` prints); blank lines and lines starting with '#' are skipped. `path` "-"
// reads standard input. At most kMaxPromisesInFile promises.
inline constexpr size_t kMaxPromisesInFile = 1'000'000;
CliResult<std::vector<payments::SignedPromise>> ReadPromiseFile(const std::string& path);

// The passphrase that protects `keystore_path`: from --passphrase-file (first line), else from
// $DVPN_PASSPHRASE, else typed at a no-echo prompt when standard input is a terminal (twice
// when `confirm`), else Exit::kUsage saying how to provide one. With `for_new_key`, an empty
// passphrase is refused.
CliResult<SecretString> ReadPassphrase(const Options& options, const std::string& keystore_path,
                                       bool for_new_key);

// A secret key as 64 hex digits on standard input (no-echo prompt when it is a terminal).
CliResult<payments::PrivateKey> ReadSecretKeyFromStdin();

}  // namespace dvpn::ctl
