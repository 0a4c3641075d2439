#pragma once
// What the executables share (wiring only, docs/architecture.md "cli"): HOST:PORT resolution,
// the open-file limit, reading a secret from a file, SOCKS credentials, loading the payment
// account key and the tunnel key, waiting for a signal, exit-policy rule lines.

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/amount.h"
#include "common/bytes.h"
#include "common/result.h"
#include "cli/errc.h"
#include "payments/keys.h"
#include "payments/keystore.h"
#include "tunnel/handshake.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/client.h"

namespace dvpn::cli {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// "127.0.0.1:0", "[::1]:1080", "localhost:9000" (names resolved once, first address).
// Error kBadInput when it cannot be parsed, kResolve when it cannot be resolved.
inline Result<tcp::endpoint, Errc> ResolveHostPort(asio::io_context& io, const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return dvpn::Fail(Errc::kBadInput, "expected HOST:PORT, got \"" + text + "\"");
  }
  std::string host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  // The resolver would take "99999" modulo 65536: refuse anything but 0..65535.
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535) {
    return dvpn::Fail(Errc::kBadInput, "bad port in \"" + text + "\" (expected 0..65535)");
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return dvpn::Fail(Errc::kResolve,
                "cannot resolve \"" + text + "\": " + (ec ? ec.message() : "no address"));
  }
  return results.begin()->endpoint();
}

// Raises the soft RLIMIT_NOFILE to the hard limit: every SOCKS connection and every exit stream
// holds a descriptor, and the usual soft limit (1024) is far below the thousands of streams a
// tunnel carries. An unlimited hard limit is capped at /proc/sys/fs/nr_open (the kernel's
// ceiling). Logs the outcome on `log`; on failure (a warning) the process goes on with its old
// limit.
inline void RaiseOpenFileLimit(spdlog::logger& log) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    log.warn("cannot raise the open-file limit: getrlimit(RLIMIT_NOFILE): {}",
             std::strerror(errno));
    return;
  }
  rlim_t target = lim.rlim_max;
  if (target == RLIM_INFINITY) {
    target = 1 << 20;
    std::ifstream nr_open("/proc/sys/fs/nr_open");
    uint64_t v = 0;
    if (nr_open >> v && v > 0) target = static_cast<rlim_t>(v);
  }
  const rlim_t before = lim.rlim_cur;
  if (before == RLIM_INFINITY || before >= target) {
    log.debug("open-file limit {} (unchanged)", before);
    return;
  }
  lim.rlim_cur = target;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    log.warn("cannot raise the open-file limit: setrlimit(RLIMIT_NOFILE, {}): {}", target,
             std::strerror(errno));
    return;
  }
  log.debug("open-file limit {} (was {})", target, before);
}

// Reads a secret (e.g. a password) from the first line of `path`, without its line ending
// ("\n" or "\r\n"); at most `max_size` bytes are read. Error kIo when the file cannot be read,
// kBadSecret when the line is empty or longer than `max_size`; the message names the file.
inline Result<std::string, Errc> ReadSecretFile(const std::string& path, size_t max_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return dvpn::Fail(Errc::kIo, "cannot read " + path + ": " + std::strerror(errno));
  std::string text(max_size + 2, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  auto newline = text.find('\n');
  if (newline != std::string::npos) text.resize(newline);
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (text.empty()) {
    return dvpn::Fail(Errc::kBadSecret, path + ": empty (expected the secret on the first line)");
  }
  if (text.size() > max_size) {
    return dvpn::Fail(Errc::kBadSecret,
                path + ": the secret is longer than " + std::to_string(max_size) + " bytes");
  }
  return text;
}

// Parses the decimal credits of flag `flag`; an empty `text` gives `if_empty`. kBadInput with
// the line for the user when `text` is not an amount.
inline Result<Amount, Errc> ParseAmountFlag(const std::string& text, const char* flag,
                                            Amount if_empty) {
  if (text.empty()) return if_empty;
  auto a = Amount::Parse(text);
  if (!a)
    return dvpn::Fail(Errc::kBadInput, std::string(flag) + ": not an amount of credits: " + text);
  return *a;
}

// ParseAmountFlag into `value` (left as it is when `text` is empty), failing with the caller's
// component's `code` and the same line.
template <class Code>
Result<void, Code> SetAmountFlag(Amount& value, const std::string& text, const char* flag,
                                 Code code) {
  auto a = ParseAmountFlag(text, flag, value);
  if (!a) return dvpn::Fail(code, std::move(a.error().message));
  value = *a;
  return {};
}

// Zeroes a string's whole buffer (a moved-from short string keeps its bytes in place).
void WipeString(std::string& s);

using tunnel::session::SocksCredentials;  // tunnel/session/client.h
inline constexpr const char* kSocksPasswordEnv = "DVPN_SOCKS_PASSWORD";
// The SOCKS5 username/password (RFC 1929) of a client daemon, from --socks-user and
// --socks-password-file or else $DVPN_SOCKS_PASSWORD (docs/tunnel-cli.md "SOCKS credentials");
// the password never comes from the command line, where any local user reads it. The variable
// is wiped and removed from the environment in any case. None when neither is given. Error: the
// line for the user (a user without a password, a password without a user, 0 or more than 255
// bytes, an unreadable file).
Result<std::optional<SocksCredentials>, Errc> LoadSocksCredentials(
    const std::string& user, const std::string& password_file);

// A secret key never travels on the command line: any local user reads /proc/<pid>/cmdline.
// The daemons take the payment account key from a file, the environment or a keystore.
inline constexpr const char* kIdentityKeyEnv = "DVPN_IDENTITY_KEY_HEX";
// What a daemon answers to the removed --identity-key-hex flag.
inline constexpr const char* kIdentityKeyHexRemoved =
    "--identity-key-hex is not accepted: a secret on the command line is readable by every local "
    "user; give the key with --identity-key-file FILE (64 hex digits, mode 0600), the "
    "environment variable DVPN_IDENTITY_KEY_HEX, or --keystore FILE";

// True when `key_file`, `keystore_path` or $DVPN_IDENTITY_KEY_HEX names a key.
inline bool AccountKeyGiven(const std::string& key_file, const std::string& keystore_path) {
  const char* env = std::getenv(kIdentityKeyEnv);
  return !key_file.empty() || !keystore_path.empty() || (env && *env);
}

// The payment account key from exactly one of: `key_file` (--identity-key-file: 64 hex digits
// on its first line; refused when it is not a regular file or group or others may read or write
// it), $DVPN_IDENTITY_KEY_HEX (64 hex digits), and `keystore_path` (a dvpnctl keystore;
// passphrase from $DVPN_PASSPHRASE). Error: a message naming the source; it never holds the key.
inline Result<payments::PrivateKey, Errc> LoadAccountKey(
    const std::string& key_file, const std::string& keystore_path) {
  const char* env = std::getenv(kIdentityKeyEnv);
  const bool from_env = env && *env;
  if (int(!key_file.empty()) + int(!keystore_path.empty()) + int(from_env) != 1) {
    return dvpn::Fail(
        Errc::kBadInput,
        "give exactly one of --identity-key-file, --keystore and $DVPN_IDENTITY_KEY_HEX");
  }
  auto parse = [](std::string_view hex,
                  const std::string& source) -> Result<payments::PrivateKey, Errc> {
    auto bytes = FromHex(hex);
    std::optional<payments::PrivateKey> key;
    if (bytes && bytes->size() == 32) key = payments::PrivateKey::FromBytes(*bytes);
    if (bytes) std::fill(bytes->begin(), bytes->end(), 0);
    if (!key) {
      return dvpn::Fail(Errc::kBadSecret,
                        source + ": expected 64 hex digits of a valid secret key");
    }
    return std::move(*key);
  };
  if (from_env) return parse(env, std::string("$") + kIdentityKeyEnv);
  if (!key_file.empty()) {
    struct stat st {};
    if (::stat(key_file.c_str(), &st) != 0) {
      return dvpn::Fail(Errc::kIo, "--identity-key-file: cannot read " + key_file + ": " +
                                       std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      return dvpn::Fail(Errc::kIo, "--identity-key-file: " + key_file + " is not a regular file");
    }
    if ((st.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return dvpn::Fail(Errc::kBadSecret,
                        "--identity-key-file: " + key_file + " has mode " + mode +
                            ": group or others may read or write it; run chmod 600 " + key_file);
    }
    auto text = ReadSecretFile(key_file, 128);
    if (!text) {
      return dvpn::Fail(text.error().code, "--identity-key-file: " + text.error().message);
    }
    auto key = parse(*text, "--identity-key-file " + key_file);
    WipeString(*text);
    return key;
  }
  const char* pass = std::getenv("DVPN_PASSPHRASE");
  if (!pass) return dvpn::Fail(Errc::kBadInput, "--keystore: set DVPN_PASSPHRASE");
  auto k = payments::LoadKeystore(keystore_path, pass);
  if (!k) return dvpn::Fail(Errc::kBadSecret, "--keystore: " + k.error().message);
  return std::move(*k);
}

// A dvpnctl keystore opened with the passphrase from the first line of `passphrase_file`, else
// $DVPN_PASSPHRASE (the seller's config and dvpn-client's flags). `keystore_name` and
// `passphrase_name` are how the user named them ("node.keystore", "--keystore"); `hint` ends
// the no-passphrase error. Errors never hold the passphrase; the copy read is wiped.
Result<payments::PrivateKey, Errc> LoadKeystoreWithPassphrase(
    const std::string& keystore, const std::string& passphrase_file,
    const std::string& keystore_name, const std::string& passphrase_name, const std::string& hint);

// Waits for one of `signals` (blocked in every thread) until `deadline`. Returns the signal,
// or 0 at the deadline.
int WaitForSignal(const sigset_t& signals, std::chrono::steady_clock::time_point deadline);

// The exit policy's rule lines from --deny / --allow style lists ("10.0.0.0/8" or
// "deny 10.0.0.0/8"): deny rules first, then allow rules (ExitPolicy::FromStrings).
inline std::vector<std::string> PolicyRules(const std::vector<std::string>& deny,
                                            const std::vector<std::string>& allow) {
  auto with_action = [](const std::string& action, const std::string& rule) {
    std::string_view r = rule;
    while (!r.empty() && r.front() == ' ') r.remove_prefix(1);
    if (r.starts_with(action + " ")) return std::string(r);
    return action + " " + std::string(r);
  };
  std::vector<std::string> rules;
  for (const auto& r : deny) rules.push_back(with_action("deny", r));
  for (const auto& r : allow) rules.push_back(with_action("allow", r));
  return rules;
}

// Reads the tunnel's hex X25519 secret from `path`, or creates the file (mode 0600) with a fresh
// one. The error names the file.
Result<tunnel::X25519KeyPair, Errc> LoadOrCreateTunnelKey(const std::string& path);

}  // namespace dvpn::cli
