#include "ctl/input_internal.h"

#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <istream>
#include <memory>
#include <optional>

#include <sodium.h>

#include "common/bytes.h"

namespace dvpn::ctl {
namespace {

constexpr size_t kMaxSecretInputBytes = 4096;

std::unexpected<Error<Exit>> BadInput(std::string message) {
  return Fail(Exit::kRefused, std::move(message));
}

// Shows at most 80 characters of something the user typed.
std::string Shown(std::string_view text) {
  if (text.size() <= 80) return std::string(text);
  return std::string(text.substr(0, 80)) + "...";
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

template <size_t N>
std::optional<ByteArray<N>> HexArray(std::string_view text) {
  if (text.size() != 2 * N) return std::nullopt;
  auto bytes = FromHex(text);
  if (!bytes) return std::nullopt;
  return ToArray<N>(*bytes);
}

// --- terminal ----------------------------------------------------------------------------------

// Saved terminal state, restored by the SIGINT handler if the user gives up at a prompt.
struct termios g_saved_termios;

extern "C" void RestoreTerminalAndExit(int) {
  ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
  const char nl = '\n';
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, &nl, 1);
  ::_exit(130);
}

// Prints `prompt` on stderr and reads one line from the terminal on stdin without echo.
CliResult<SecretString> PromptNoEcho(const std::string& prompt) {
  std::fputs(prompt.c_str(), stderr);
  std::fflush(stderr);
  if (::tcgetattr(STDIN_FILENO, &g_saved_termios) != 0) {
    return Fail(Exit::kUsage, std::string("cannot read the terminal: ") + std::strerror(errno));
  }
  struct sigaction on_int {
  }, old_int{};
  on_int.sa_handler = RestoreTerminalAndExit;
  sigemptyset(&on_int.sa_mask);
  ::sigaction(SIGINT, &on_int, &old_int);
  struct termios quiet = g_saved_termios;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);

  SecretString line;
  bool too_long = false;
  bool got_eof = true;
  for (;;) {
    char c;
    ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (c == '\n') {
      got_eof = false;
      break;
    }
    if (line.value().size() >= kMaxSecretInputBytes) {
      too_long = true;
      continue;  // keep reading to the end of the line, so nothing is left for the shell
    }
    line.mutable_value().push_back(c);
  }
  ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
  ::sigaction(SIGINT, &old_int, nullptr);
  if (got_eof && line.value().empty()) return Fail(Exit::kUsage, "no input at the prompt");
  if (too_long) return BadInput("input too long");
  if (!line.value().empty() && line.value().back() == '\r') line.mutable_value().pop_back();
  return line;
}

// Reads at most `max` bytes of `in`; fails when there is more.
CliResult<SecretString> ReadBounded(std::istream& in, size_t max, const std::string& what) {
  SecretString text(std::string(max + 1, '\0'));
  in.read(text.mutable_value().data(), static_cast<std::streamsize>(max + 1));
  if (in.bad()) return BadInput("cannot read " + what);
  text.mutable_value().resize(static_cast<size_t>(in.gcount()));
  if (text.value().size() > max) return BadInput(what + " is too long");
  return text;
}

}  // namespace

// --- SecretString ------------------------------------------------------------------------------

SecretString::SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) {
  other.Wipe();
}

SecretString& SecretString::operator=(SecretString&& other) noexcept {
  if (this != &other) {
    Wipe();
    value_ = std::move(other.value_);
    other.Wipe();
  }
  return *this;
}

SecretString::~SecretString() { Wipe(); }

void SecretString::Wipe() {
  // Wipe the whole allocation, not just the current size (a shrunk string keeps old bytes).
  value_.resize(value_.capacity());
  sodium_memzero(value_.data(), value_.size());
  value_.clear();
}

// --- values ------------------------------------------------------------------------------------

CliResult<Amount> ParseAmountArg(std::string_view text, std::string_view what) {
  auto amount = Amount::Parse(text);
  if (!amount) {
    return BadInput(std::string(what) + ": \"" + Shown(text) +
                    "\" is not an amount (write credits like 1.5, at most six decimals, or "
                    "micro-credits like 1500000u)");
  }
  return *amount;
}

CliResult<payments::Address> ParseAddressArg(std::string_view text, std::string_view what) {
  auto address = payments::Address::Parse(text);
  if (!address) {
    return BadInput(std::string(what) + ": \"" + Shown(text) +
                    "\" is not an address (\"dv\" and 48 hex digits with a valid checksum)");
  }
  return *address;
}

CliResult<payments::ChannelId> ParseChannelIdArg(std::string_view text) {
  auto bytes = HexArray<32>(text);
  if (!bytes) {
    return BadInput("\"" + Shown(text) + "\" is not a channel id (64 hex digits)");
  }
  return payments::ChannelId{*bytes};
}

CliResult<payments::Signature> ParseSignatureArg(std::string_view text) {
  auto bytes = HexArray<64>(text);
  if (!bytes) return BadInput("\"" + Shown(text) + "\" is not a signature (128 hex digits)");
  return *bytes;
}

CliResult<payments::LedgerId> ParseLedgerIdArg(std::string_view text) {
  auto bytes = HexArray<32>(text);
  if (!bytes) return BadInput("\"" + Shown(text) + "\" is not a ledger id (64 hex digits)");
  return payments::LedgerId{*bytes};
}

CliResult<uint64_t> ParseDuration(std::string_view text) {
  constexpr uint64_t kMaxSeconds = uint64_t{100} * 366 * 24 * 3600;
  auto bad = [&] {
    return BadInput("\"" + Shown(text) +
                    "\" is not a duration (a positive number with a unit: 3600s, 30m, 24h, 7d)");
  };
  if (text.size() < 2) return bad();
  uint64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return bad();
  }
  std::string_view digits = text.substr(0, text.size() - 1);
  for (char c : digits) {
    if (c < '0' || c > '9') return bad();
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || value == 0) return bad();
  if (value > kMaxSeconds / unit) return BadInput("duration \"" + Shown(text) + "\" is too long");
  return value * unit;
}

CliResult<std::vector<payments::SignedPromise>> ReadPromiseFile(const std::string& path) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path);
    if (!file) return BadInput("cannot open " + path + ": " + std::strerror(errno));
    in = &file;
  }
  std::vector<payments::SignedPromise> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(*in, line)) {
    ++line_no;
    std::string_view rest = Trim(line);
    if (rest.empty() || rest.front() == '#') continue;
    std::string_view fields[3];
    size_t count = 0;
    while (!rest.empty()) {
      size_t end = 0;
      while (end < rest.size() && !std::isspace(static_cast<unsigned char>(rest[end]))) ++end;
      if (count == 3) {
        count = 4;
        break;
      }
      fields[count++] = rest.substr(0, end);
      rest = Trim(rest.substr(end));
    }
    auto where = [&] { return path + ":" + std::to_string(line_no) + ": "; };
    if (count != 3) {
      return BadInput(where() + "expected \"CHANNEL_ID CUMULATIVE SIGNATURE\"");
    }
    auto channel = ParseChannelIdArg(fields[0]);
    if (!channel) return BadInput(where() + channel.error().message);
    auto cumulative = ParseAmountArg(fields[1], "cumulative");
    if (!cumulative) return BadInput(where() + cumulative.error().message);
    auto signature = ParseSignatureArg(fields[2]);
    if (!signature) return BadInput(where() + signature.error().message);
    if (out.size() == kMaxPromisesInFile) {
      return BadInput(path + ": more than " + std::to_string(kMaxPromisesInFile) + " promises");
    }
    out.push_back({*channel, *cumulative, *signature});
  }
  if (in->bad()) return BadInput("cannot read " + path);
  return out;
}

// --- secrets -----------------------------------------------------------------------------------

CliResult<SecretString> ReadPassphrase(const Options& options, const std::string& keystore_path,
                                       bool for_new_key) {
  std::optional<SecretString> passphrase;
  if (!options.passphrase_file.empty()) {
    std::ifstream in(options.passphrase_file, std::ios::binary);
    if (!in) {
      return BadInput("cannot open passphrase file " + options.passphrase_file + ": " +
                      std::strerror(errno));
    }
    DVPNCTL_TRY(
        text, ReadBounded(in, kMaxSecretInputBytes, "passphrase file " + options.passphrase_file));
    std::string& s = text.mutable_value();
    if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
    if (!s.empty() && s.back() == '\r') s.pop_back();
    passphrase = std::move(text);
  } else if (const char* env = std::getenv("DVPN_PASSPHRASE")) {
    passphrase = SecretString(env);
  } else if (::isatty(STDIN_FILENO)) {
    DVPNCTL_TRY(first, PromptNoEcho(for_new_key ? "New passphrase for " + keystore_path + ": "
                                                : "Passphrase for " + keystore_path + ": "));
    if (for_new_key) {
      DVPNCTL_TRY(again, PromptNoEcho("Repeat the passphrase: "));
      if (first.value() != again.value()) return BadInput("the passphrases do not match");
    }
    passphrase = std::move(first);
  } else {
    return Fail(Exit::kUsage, "a passphrase is needed for " + keystore_path +
                                  ": set DVPN_PASSPHRASE, pass --passphrase-file FILE, or run "
                                  "dvpnctl on a terminal");
  }
  if (for_new_key && passphrase->value().empty()) {
    return BadInput("refusing an empty passphrase: it would leave the key unprotected");
  }
  return std::move(*passphrase);
}

CliResult<payments::PrivateKey> ReadSecretKeyFromStdin() {
  SecretString text;
  if (::isatty(STDIN_FILENO)) {
    DVPNCTL_TRY(typed, PromptNoEcho("Secret key (64 hex digits): "));
    text = std::move(typed);
  } else {
    DVPNCTL_TRY(piped, ReadBounded(std::cin, kMaxSecretInputBytes, "the secret key on stdin"));
    text = std::move(piped);
  }
  std::string_view hex = Trim(text.value());
  if (hex.size() != 64) {
    return BadInput("expected the secret key as 64 hex digits on standard input, got " +
                    std::to_string(hex.size()) + " characters");
  }
  ByteArray<32> secret{};
  bool ok = true;
  for (size_t i = 0; i < 32; ++i) {
    auto digit = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = digit(hex[2 * i]);
    int lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) ok = false;
    secret[i] = static_cast<uint8_t>((hi & 0xf) << 4 | (lo & 0xf));
  }
  std::optional<payments::PrivateKey> key;
  if (ok) key = payments::PrivateKey::FromBytes(secret);
  sodium_memzero(secret.data(), secret.size());
  if (!ok) return BadInput("the secret key on standard input is not hex");
  if (!key) return BadInput("the secret key is not a valid secp256k1 key (zero or >= n)");
  return std::move(*key);
}

}  // namespace dvpn::ctl
