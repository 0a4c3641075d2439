#include "cli/cli_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <sstream>

#include "tunnel/kdf.h"
#include "tunnel/session/client.h"

namespace dvpn::cli {

using tunnel::Wipe;
using tunnel::X25519KeyPair;

Result<std::optional<SocksCredentials>, Errc> LoadSocksCredentials(
    const std::string& user, const std::string& password_file) {
  constexpr size_t kMaxCredential = 255;  // RFC 1929: ULEN, PLEN are one byte
  const std::string env_name = std::string("$") + kSocksPasswordEnv;
  std::string password;
  bool have_password = false;
  // The variable is copied, wiped in place and removed from the environment in any case.
  std::optional<std::string> from_env;
  if (char* env = std::getenv(kSocksPasswordEnv); env != nullptr) {
    from_env = std::string(env);
    Wipe(std::span<uint8_t>(reinterpret_cast<uint8_t*>(env), from_env->size()));
    ::unsetenv(kSocksPasswordEnv);
  }
  auto fail = [&](std::string why, Errc code = Errc::kBadInput) {
    if (from_env) WipeString(*from_env);
    WipeString(password);
    return dvpn::Fail(code, std::move(why));
  };
  if (!password_file.empty()) {
    auto p = ReadSecretFile(password_file, kMaxCredential);
    if (!p) return fail("--socks-password-file: " + p.error().message, p.error().code);
    password = std::move(*p);
    WipeString(*p);
    have_password = true;
  } else if (from_env) {
    password = *from_env;
    have_password = true;
    if (password.empty()) return fail(env_name + " is empty");
    if (password.size() > kMaxCredential) return fail(env_name + ": longer than 255 bytes");
  }
  if (from_env) WipeString(*from_env);
  if (user.empty() && have_password) {
    return fail("a SOCKS password was given (--socks-password-file or " + env_name +
                ") but no --socks-user");
  }
  if (user.empty()) return std::optional<SocksCredentials>();
  if (user.size() > kMaxCredential) return fail("--socks-user: longer than 255 bytes");
  if (!have_password) {
    return fail("--socks-user needs a password: --socks-password-file FILE or the environment "
                "variable " + std::string(kSocksPasswordEnv));
  }
  std::optional<SocksCredentials> out = SocksCredentials{user, password};
  WipeString(password);
  return out;
}

int WaitForSignal(const sigset_t& signals, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return 0;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    int sig = ::sigtimedwait(&signals, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno != EAGAIN && errno != EINTR) return 0;
  }
}

void WipeString(std::string& s) {
  s.resize(s.capacity());  // no reallocation; makes the whole buffer addressable
  Wipe(std::span<uint8_t>(reinterpret_cast<uint8_t*>(s.data()), s.size()));
  s.clear();
}

Result<payments::PrivateKey, Errc> LoadKeystoreWithPassphrase(
    const std::string& keystore, const std::string& passphrase_file,
    const std::string& keystore_name, const std::string& passphrase_name, const std::string& hint) {
  constexpr size_t kMaxPassphrase = 1024;
  std::string passphrase;
  if (!passphrase_file.empty()) {
    auto p = ReadSecretFile(passphrase_file, kMaxPassphrase);
    if (!p) return dvpn::Fail(p.error().code, passphrase_name + ": " + p.error().message);
    passphrase = std::move(*p);
    WipeString(*p);
  } else if (const char* env = std::getenv("DVPN_PASSPHRASE")) {
    passphrase = env;
  } else {
    return dvpn::Fail(Errc::kBadInput, keystore_name + ": no passphrase (" + hint + ")");
  }
  auto key = payments::LoadKeystore(keystore, passphrase);
  WipeString(passphrase);
  if (key) return std::move(*key);
  const std::string where = keystore_name + " " + keystore;
  switch (key.error().code) {
    case payments::KeystoreErrc::kWrongPassphrase:
      return dvpn::Fail(Errc::kBadSecret, where + ": wrong passphrase (the file is intact but "
                                                   "does not open with it)");
    case payments::KeystoreErrc::kIo:
      return dvpn::Fail(Errc::kIo, where + ": cannot read: " + key.error().message);
    default:
      return dvpn::Fail(Errc::kBadSecret, where + ": " + key.error().message);
  }
}

Result<X25519KeyPair, Errc> LoadOrCreateTunnelKey(const std::string& path) {
  std::ifstream in(path);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    auto bytes = FromHex(text);
    if (!bytes || bytes->size() != 32) {
      return dvpn::Fail(Errc::kBadSecret, path + ": expected 64 hex digits (an X25519 secret key)");
    }
    auto secret = ToArray<32>(*bytes);
    auto pair = X25519KeyPair::FromSecret(*secret);
    Wipe(*bytes);
    return pair;
  }
  auto pair = X25519KeyPair::Generate();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return dvpn::Fail(Errc::kIo, "cannot create " + path + ": " + std::strerror(errno));
  std::string hex = ToHex(pair.secret_key) + "\n";
  bool ok = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size());
  ok = (::close(fd) == 0) && ok;
  if (!ok) return dvpn::Fail(Errc::kIo, "cannot write " + path);
  return pair;
}

}  // namespace dvpn::cli
