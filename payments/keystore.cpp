#include "payments/keystore.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <string_view>
#include <vector>

#include <sodium.h>
#include <nlohmann/json.hpp>

#include "common/bytes.h"

namespace dvpn::payments {
namespace {

// Format constants (docs/protocol.md, "Keystore file").
constexpr uint64_t kVersion = 1;
constexpr std::string_view kKdfName = "argon2id13";
constexpr std::string_view kCipherName = "xchacha20poly1305-ietf";
constexpr size_t kSaltBytes = crypto_pwhash_argon2id_SALTBYTES;               // 16
constexpr size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;  // 24
constexpr size_t kKeyBytes = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;     // 32
constexpr size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;       // 16
constexpr size_t kSecretBytes = 32;
constexpr size_t kCiphertextBytes = kSecretBytes + kTagBytes;  // 48
static_assert(kSaltBytes == 16 && kNonceBytes == 24 && kKeyBytes == 32 && kTagBytes == 16);

// Bounds on the cost a file may ask for: above them a damaged or hostile file would make
// Load run for minutes or exhaust memory. Moderate (3, 256 MiB) and sensitive (4, 1 GiB)
// keys are well inside.
constexpr uint64_t kMaxOpslimit = 16;
constexpr uint64_t kMaxMemlimit = uint64_t{4} << 30;  // 4 GiB
// A keystore file is about 600 bytes; anything much larger is not one.
constexpr std::streamsize kMaxFileBytes = 64 * 1024;
// kdf and cipher names longer than this are not names we could know.
constexpr size_t kMaxNameBytes = 64;

using Json = nlohmann::ordered_json;

bool SodiumReady() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

// Overwrites `n` bytes at `p` with zeros in a way the compiler cannot elide, on scope exit.
class Wiper {
 public:
  Wiper(void* p, size_t n) : p_(p), n_(n) {}
  ~Wiper() { sodium_memzero(p_, n_); }
  Wiper(const Wiper&) = delete;
  Wiper& operator=(const Wiper&) = delete;

 private:
  void* p_;
  size_t n_;
};

// Every field of a version-1 file, decoded.
struct Fields {
  uint64_t version = kVersion;
  std::string kdf;
  uint64_t opslimit = 0;
  uint64_t memlimit = 0;
  ByteArray<kSaltBytes> salt{};
  std::string cipher;
  ByteArray<kNonceBytes> nonce{};
  ByteArray<kCiphertextBytes> ciphertext{};
  ByteArray<32> public_key{};
  std::string address;
  Hash32 checksum{};
};

// header = tag("dvpn.v1.Keystore") || u32 version || str16(kdf) || u64 opslimit ||
//          u64 memlimit || salt b[16] || str16(cipher) || public_key b[32]
// It is the AEAD's associated data, so none of it can be changed without the AEAD failing.
std::vector<uint8_t> HeaderEncoding(const Fields& f) {
  Encoder enc;
  enc.Tag("dvpn.v1.Keystore")
      .U32(static_cast<uint32_t>(f.version))
      .Bytes16(AsBytes(f.kdf))
      .U64(f.opslimit)
      .U64(f.memlimit)
      .Raw(f.salt)
      .Bytes16(AsBytes(f.cipher))
      .Raw(f.public_key);
  return enc.bytes();
}

// checksum = SHA-256(tag("dvpn.v1.KeystoreChecksum") || header || nonce b[24] ||
//                    ciphertext b[48] || str16(address))
Hash32 ComputeChecksum(const Fields& f) {
  Encoder enc;
  enc.Tag("dvpn.v1.KeystoreChecksum")
      .Raw(HeaderEncoding(f))
      .Raw(f.nonce)
      .Raw(f.ciphertext)
      .Bytes16(AsBytes(f.address));
  return Sha256(enc.bytes());
}

KeystoreResult<void> CheckCost(uint64_t opslimit, uint64_t memlimit, KeystoreErrc errc) {
  if (opslimit < crypto_pwhash_argon2id_OPSLIMIT_MIN || opslimit > kMaxOpslimit) {
    return Fail(errc, "opslimit " + std::to_string(opslimit) + " is outside [" +
                          std::to_string(crypto_pwhash_argon2id_OPSLIMIT_MIN) + ", " +
                          std::to_string(kMaxOpslimit) + "]");
  }
  if (memlimit < crypto_pwhash_argon2id_MEMLIMIT_MIN || memlimit > kMaxMemlimit) {
    return Fail(errc, "memlimit " + std::to_string(memlimit) + " is outside [" +
                          std::to_string(crypto_pwhash_argon2id_MEMLIMIT_MIN) + ", " +
                          std::to_string(kMaxMemlimit) + "]");
  }
  return {};
}

// The passphrase-derived AEAD key. The caller wipes `key`.
KeystoreResult<void> DeriveKey(const std::string& passphrase, const Fields& f,
                               ByteArray<kKeyBytes>& key) {
  if (crypto_pwhash(key.data(), key.size(), passphrase.data(), passphrase.size(), f.salt.data(),
                    f.opslimit, static_cast<size_t>(f.memlimit),
                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Fail(KeystoreErrc::kIo, "key derivation failed (not enough memory for memlimit " +
                                       std::to_string(f.memlimit) + ")");
  }
  return {};
}

KeystoreResult<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(KeystoreErrc::kIo, "cannot open " + path + ": " + std::strerror(errno));
  std::string text(static_cast<size_t>(kMaxFileBytes) + 1, '\0');
  in.read(text.data(), kMaxFileBytes + 1);
  if (in.bad()) return Fail(KeystoreErrc::kIo, "cannot read " + path);
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxFileBytes)) {
    return Fail(KeystoreErrc::kDamaged, path + " is too large to be a keystore");
  }
  return text;
}

KeystoreResult<std::string> StringField(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end())
    return Fail(KeystoreErrc::kDamaged, std::string("missing field \"") + name + "\"");
  if (!it->is_string()) {
    return Fail(KeystoreErrc::kDamaged, std::string("field \"") + name + "\" is not a string");
  }
  return it->get<std::string>();
}

KeystoreResult<uint64_t> UintField(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end())
    return Fail(KeystoreErrc::kDamaged, std::string("missing field \"") + name + "\"");
  if (!it->is_number_unsigned()) {
    return Fail(KeystoreErrc::kDamaged,
                std::string("field \"") + name + "\" is not a non-negative integer");
  }
  return it->get<uint64_t>();
}

template <size_t N>
KeystoreResult<ByteArray<N>> HexField(const Json& j, const char* name) {
  auto text = StringField(j, name);
  if (!text) return std::unexpected(text.error());
  auto bytes = FromHex(*text);
  if (!bytes || bytes->size() != N) {
    return Fail(KeystoreErrc::kDamaged, std::string("field \"") + name + "\" is not " +
                                            std::to_string(2 * N) + " hex digits");
  }
  return *ToArray<N>(*bytes);
}

// Parses and checks everything that can be checked without the passphrase: shape, checksum,
// public key against address, known algorithms, sane cost.
KeystoreResult<Fields> ParseKeystore(const std::string& path) {
  if (!SodiumReady()) return Fail(KeystoreErrc::kIo, "libsodium failed to initialise");
  auto text = ReadFile(path);
  if (!text) return std::unexpected(text.error());
  auto damaged = [&](const std::string& why) {
    return Fail(KeystoreErrc::kDamaged, path + " is damaged: " + why);
  };
  if (text->empty()) return damaged("the file is empty");
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return damaged("not valid JSON");
  if (!j.is_object()) return damaged("not a JSON object");

  Fields f;
  auto version = UintField(j, "version");
  if (!version) return damaged(version.error().message);
  if (*version != kVersion) {
    return Fail(KeystoreErrc::kUnsupported, path + ": keystore version " +
                                                std::to_string(*version) +
                                                " is not supported (this build reads version 1)");
  }

  // Read every field, then verify the checksum before trusting any of them.
#define DVPN_TAKE(target, expr)                        \
  do {                                                 \
    auto value = (expr);                               \
    if (!value) return damaged(value.error().message); \
    target = std::move(*value);                        \
  } while (0)
  DVPN_TAKE(f.kdf, StringField(j, "kdf"));
  DVPN_TAKE(f.opslimit, UintField(j, "opslimit"));
  DVPN_TAKE(f.memlimit, UintField(j, "memlimit"));
  DVPN_TAKE(f.salt, HexField<kSaltBytes>(j, "salt"));
  DVPN_TAKE(f.cipher, StringField(j, "cipher"));
  DVPN_TAKE(f.nonce, HexField<kNonceBytes>(j, "nonce"));
  DVPN_TAKE(f.ciphertext, HexField<kCiphertextBytes>(j, "ciphertext"));
  DVPN_TAKE(f.public_key, HexField<32>(j, "public_key"));
  DVPN_TAKE(f.address, StringField(j, "address"));
  DVPN_TAKE(f.checksum, HexField<32>(j, "checksum"));
#undef DVPN_TAKE
  if (f.kdf.size() > kMaxNameBytes) return damaged("field \"kdf\" is too long");
  if (f.cipher.size() > kMaxNameBytes) return damaged("field \"cipher\" is too long");
  if (f.address.size() > kMaxNameBytes) return damaged("field \"address\" is too long");

  if (sodium_memcmp(ComputeChecksum(f).data(), f.checksum.data(), f.checksum.size()) != 0) {
    return damaged("checksum mismatch");
  }
  auto public_key = PublicKey::Parse(f.public_key);
  if (!public_key) return damaged("public_key is not a valid secp256k1 x-only key");
  auto address = Address::Parse(f.address);
  if (!address) return damaged("address is not a valid address");
  if (Address::FromPublicKey(*public_key) != *address) {
    return damaged("address does not belong to public_key");
  }
  if (f.kdf != kKdfName) {
    return Fail(KeystoreErrc::kUnsupported, path + ": key derivation \"" + f.kdf +
                                                "\" is not supported (expected \"argon2id13\")");
  }
  if (f.cipher != kCipherName) {
    return Fail(KeystoreErrc::kUnsupported,
                path + ": cipher \"" + f.cipher +
                    "\" is not supported (expected \"xchacha20poly1305-ietf\")");
  }
  if (auto ok = CheckCost(f.opslimit, f.memlimit, KeystoreErrc::kDamaged); !ok) {
    return damaged("unreasonable key derivation cost: " + ok.error().message);
  }
  return f;
}

std::string ToJsonText(const Fields& f) {
  Json j;
  j["version"] = f.version;
  j["kdf"] = f.kdf;
  j["opslimit"] = f.opslimit;
  j["memlimit"] = f.memlimit;
  j["salt"] = ToHex(f.salt);
  j["cipher"] = f.cipher;
  j["nonce"] = ToHex(f.nonce);
  j["ciphertext"] = ToHex(f.ciphertext);
  j["public_key"] = ToHex(f.public_key);
  j["address"] = f.address;
  j["checksum"] = ToHex(f.checksum);
  return j.dump(2) + "\n";
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string DirectoryOf(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Moves `tmp` to `path` unless `path` exists. renameat2(RENAME_NOREPLACE) decides atomically;
// on file systems without it, link() does (it never replaces either).
KeystoreResult<void> MoveNoReplace(const std::string& tmp, const std::string& path) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
    return {};
  }
  int err = errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
    if (::link(tmp.c_str(), path.c_str()) == 0) {
      ::unlink(tmp.c_str());
      return {};
    }
    err = errno;
  }
  if (err == EEXIST)
    return Fail(KeystoreErrc::kExists, path + " already exists; not overwriting it");
  return Fail(KeystoreErrc::kIo, "cannot create " + path + ": " + std::strerror(err));
}

}  // namespace

KdfCost KdfCost::Moderate() {
  return {crypto_pwhash_argon2id_OPSLIMIT_MODERATE, crypto_pwhash_argon2id_MEMLIMIT_MODERATE};
}

KdfCost KdfCost::Interactive() {
  return {crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE, crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE};
}

KdfCost KdfCost::MinimumForTests() {
  return {crypto_pwhash_argon2id_OPSLIMIT_MIN, crypto_pwhash_argon2id_MEMLIMIT_MIN};
}

KeystoreResult<void> SaveKeystore(const std::string& path, const PrivateKey& key,
                                  const std::string& passphrase, KdfCost cost) {
  if (!SodiumReady()) return Fail(KeystoreErrc::kIo, "libsodium failed to initialise");
  if (auto ok = CheckCost(cost.opslimit, cost.memlimit_bytes, KeystoreErrc::kUnsupported); !ok) {
    return Fail(KeystoreErrc::kUnsupported, "key derivation cost: " + ok.error().message);
  }
  // Fail early, before the expensive derivation; MoveNoReplace decides for real.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    return Fail(KeystoreErrc::kExists, path + " already exists; not overwriting it");
  }

  Fields f;
  f.kdf = kKdfName;
  f.opslimit = cost.opslimit;
  f.memlimit = cost.memlimit_bytes;
  randombytes_buf(f.salt.data(), f.salt.size());
  f.cipher = kCipherName;
  randombytes_buf(f.nonce.data(), f.nonce.size());
  f.public_key = key.public_key().bytes();
  f.address = Address::FromPublicKey(key.public_key()).ToString();

  ByteArray<kKeyBytes> aead_key;
  Wiper wipe_key(aead_key.data(), aead_key.size());
  if (auto derived = DeriveKey(passphrase, f, aead_key); !derived) {
    return std::unexpected(derived.error());
  }
  std::vector<uint8_t> header = HeaderEncoding(f);
  unsigned long long ciphertext_len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      f.ciphertext.data(), &ciphertext_len, key.secret().data(), key.secret().size(), header.data(),
      header.size(), nullptr, f.nonce.data(), aead_key.data());
  if (ciphertext_len != kCiphertextBytes) return Fail(KeystoreErrc::kIo, "encryption failed");
  f.checksum = ComputeChecksum(f);
  std::string text = ToJsonText(f);

  // mkstemp creates the file with mode 0600 and O_EXCL, next to the target so rename is atomic.
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    return Fail(KeystoreErrc::kIo,
                "cannot create a file in " + DirectoryOf(path) + ": " + std::strerror(errno));
  }
  bool written = ::fchmod(fd, 0600) == 0 && WriteAll(fd, text) && ::fsync(fd) == 0;
  int write_errno = errno;
  written = (::close(fd) == 0) && written;
  if (!written) {
    ::unlink(tmp.c_str());
    return Fail(KeystoreErrc::kIo, "cannot write " + tmp + ": " + std::strerror(write_errno));
  }
  if (auto moved = MoveNoReplace(tmp, path); !moved) {
    ::unlink(tmp.c_str());
    return moved;
  }
  // Make the new directory entry durable too.
  int dir_fd = ::open(DirectoryOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return {};
}

KeystoreResult<PrivateKey> LoadKeystore(const std::string& path, const std::string& passphrase) {
  auto fields = ParseKeystore(path);
  if (!fields) return std::unexpected(fields.error());
  const Fields& f = *fields;

  ByteArray<kKeyBytes> aead_key;
  Wiper wipe_key(aead_key.data(), aead_key.size());
  if (auto derived = DeriveKey(passphrase, f, aead_key); !derived) {
    return std::unexpected(derived.error());
  }
  std::vector<uint8_t> header = HeaderEncoding(f);
  ByteArray<kSecretBytes> secret;
  Wiper wipe_secret(secret.data(), secret.size());
  unsigned long long secret_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          secret.data(), &secret_len, nullptr, f.ciphertext.data(), f.ciphertext.size(),
          header.data(), header.size(), f.nonce.data(), aead_key.data()) != 0) {
    return Fail(KeystoreErrc::kWrongPassphrase, "wrong passphrase for " + path);
  }
  if (secret_len != kSecretBytes) {
    return Fail(KeystoreErrc::kDamaged, path + " is damaged: wrong secret length");
  }
  auto key = PrivateKey::FromBytes(secret);
  if (!key)
    return Fail(KeystoreErrc::kDamaged, path + " is damaged: the secret is not a valid key");
  if (key->public_key().bytes() != f.public_key) {
    return Fail(KeystoreErrc::kDamaged,
                path + " is damaged: the secret does not match the stored public key");
  }
  return std::move(*key);
}

KeystoreResult<PublicKey> LoadKeystorePublicKey(const std::string& path) {
  auto fields = ParseKeystore(path);
  if (!fields) return std::unexpected(fields.error());
  // ParseKeystore checked that it parses and matches the address.
  return *PublicKey::Parse(fields->public_key);
}

}  // namespace dvpn::payments
