// Keystore file: round trip, wrong passphrase, and every way a file can be damaged. The
// checksum is recomputed here from the description in docs/protocol.md ("Keystore file"), so
// these tests also check that the document and the code agree.

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/bytes.h"
#include "payments/keys.h"
#include "payments/keystore.h"

namespace dvpn::payments {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kPassphrase[] = "correct horse battery staple";

class KeystoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/keystore_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string File(const std::string& name) const { return dir_ + "/" + name; }

  // A keystore at File("key.json") holding key_ (cheapest cost).
  std::string MakeKeystore() {
    std::string path = File("key.json");
    auto saved = SaveKeystore(path, key_, kPassphrase, KdfCost::MinimumForTests());
    EXPECT_TRUE(saved.has_value()) << saved.error().message;
    return path;
  }

  static std::string ReadText(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void WriteText(const std::string& path, const std::string& text) {
    std::filesystem::remove(path);
    std::ofstream out(path, std::ios::binary);
    out << text;
  }

  std::string dir_;
  PrivateKey key_ = PrivateKey::Generate();
};

// The checksum as docs/protocol.md specifies it, computed from the JSON fields.
std::string ChecksumOf(const Json& j) {
  auto hex = [&](const char* name) { return *FromHex(j[name].get<std::string>()); };
  Encoder header;
  header.Tag("dvpn.v1.Keystore")
      .U32(static_cast<uint32_t>(j["version"].get<uint64_t>()))
      .Bytes16(AsBytes(j["kdf"].get<std::string>()))
      .U64(j["opslimit"].get<uint64_t>())
      .U64(j["memlimit"].get<uint64_t>())
      .Raw(hex("salt"))
      .Bytes16(AsBytes(j["cipher"].get<std::string>()))
      .Raw(hex("public_key"));
  Encoder all;
  all.Tag("dvpn.v1.KeystoreChecksum")
      .Raw(header.bytes())
      .Raw(hex("nonce"))
      .Raw(hex("ciphertext"))
      .Bytes16(AsBytes(j["address"].get<std::string>()));
  return ToHex(Sha256(all.bytes()));
}

// Flips one hex digit ('0'<->'1', anything else -> '0') in the middle of `text`.
std::string FlipHexDigit(std::string text, size_t pos) {
  text[pos] = text[pos] == '0' ? '1' : '0';
  return text;
}

TEST_F(KeystoreTest, RoundTrip) {
  std::string path = MakeKeystore();
  auto loaded = LoadKeystore(path, kPassphrase);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ(loaded->secret(), key_.secret());
  EXPECT_EQ(loaded->public_key(), key_.public_key());

  Json j = Json::parse(ReadText(path));
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["kdf"], "argon2id13");
  EXPECT_EQ(j["cipher"], "xchacha20poly1305-ietf");
  EXPECT_EQ(j["opslimit"], KdfCost::MinimumForTests().opslimit);
  EXPECT_EQ(j["memlimit"], KdfCost::MinimumForTests().memlimit_bytes);
  EXPECT_EQ(j["salt"].get<std::string>().size(), 32u);
  EXPECT_EQ(j["nonce"].get<std::string>().size(), 48u);
  EXPECT_EQ(j["ciphertext"].get<std::string>().size(), 96u);
  EXPECT_EQ(j["public_key"], ToHex(key_.public_key().bytes()));
  EXPECT_EQ(j["address"], Address::FromPublicKey(key_.public_key()).ToString());
  EXPECT_EQ(j["checksum"], ChecksumOf(j));
  // The secret is not in the file in any form we could recognise.
  EXPECT_EQ(ReadText(path).find(ToHex(key_.secret())), std::string::npos);
}

TEST_F(KeystoreTest, EmptyPassphraseAndNonAsciiPassphraseWork) {
  for (std::string pass : {std::string(), std::string("p\xc3\xa4ss w\0rd", 11)}) {
    std::string path = File("k" + std::to_string(pass.size()) + ".json");
    ASSERT_TRUE(SaveKeystore(path, key_, pass, KdfCost::MinimumForTests()).has_value());
    auto loaded = LoadKeystore(path, pass);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
    EXPECT_EQ(loaded->public_key(), key_.public_key());
    // A passphrase that differs only after an embedded NUL is a different passphrase.
    auto other = LoadKeystore(path, pass + "x");
    ASSERT_FALSE(other.has_value());
    EXPECT_EQ(other.error().code, KeystoreErrc::kWrongPassphrase);
  }
}

TEST_F(KeystoreTest, WrongPassphrase) {
  std::string path = MakeKeystore();
  for (const char* wrong : {"", "correct horse battery stapler", "Correct horse battery staple"}) {
    auto loaded = LoadKeystore(path, wrong);
    ASSERT_FALSE(loaded.has_value());
    EXPECT_EQ(loaded.error().code, KeystoreErrc::kWrongPassphrase) << wrong;
    EXPECT_NE(loaded.error().message.find("wrong passphrase"), std::string::npos);
  }
}

TEST_F(KeystoreTest, PublicKeyReadableWithoutPassphrase) {
  std::string path = MakeKeystore();
  auto pub = LoadKeystorePublicKey(path);
  ASSERT_TRUE(pub.has_value()) << pub.error().message;
  EXPECT_EQ(*pub, key_.public_key());
}

TEST_F(KeystoreTest, RefusesToOverwrite) {
  std::string path = MakeKeystore();
  std::string before = ReadText(path);
  auto other = PrivateKey::Generate();
  auto saved = SaveKeystore(path, other, "x", KdfCost::MinimumForTests());
  ASSERT_FALSE(saved.has_value());
  EXPECT_EQ(saved.error().code, KeystoreErrc::kExists);
  EXPECT_EQ(ReadText(path), before);

  // Also when the existing file is not a keystore at all.
  std::string junk = File("junk");
  WriteText(junk, "not a keystore");
  saved = SaveKeystore(junk, other, "x", KdfCost::MinimumForTests());
  ASSERT_FALSE(saved.has_value());
  EXPECT_EQ(saved.error().code, KeystoreErrc::kExists);
  EXPECT_EQ(ReadText(junk), "not a keystore");

  // No temporary files are left behind.
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 2u);
}

TEST_F(KeystoreTest, FileModeIs0600EvenWithPermissiveUmask) {
  mode_t old = ::umask(0);
  std::string path = MakeKeystore();
  ::umask(old);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(KeystoreTest, IoErrors) {
  auto missing = LoadKeystore(File("nope.json"), kPassphrase);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, KeystoreErrc::kIo);
  EXPECT_EQ(LoadKeystorePublicKey(File("nope.json")).error().code, KeystoreErrc::kIo);

  auto no_dir = SaveKeystore(File("no/such/dir/key.json"), key_, "x", KdfCost::MinimumForTests());
  ASSERT_FALSE(no_dir.has_value());
  EXPECT_EQ(no_dir.error().code, KeystoreErrc::kIo);

  auto a_dir = LoadKeystore(dir_, kPassphrase);  // a directory is not readable as a file
  ASSERT_FALSE(a_dir.has_value());
  EXPECT_TRUE(a_dir.error().code == KeystoreErrc::kIo ||
              a_dir.error().code == KeystoreErrc::kDamaged);
}

TEST_F(KeystoreTest, SaveRefusesAbsurdCost) {
  auto saved = SaveKeystore(File("a.json"), key_, "x", KdfCost{1, uint64_t{1} << 40});
  ASSERT_FALSE(saved.has_value());
  EXPECT_EQ(saved.error().code, KeystoreErrc::kUnsupported);
  saved = SaveKeystore(File("b.json"), key_, "x", KdfCost{0, 8192});
  ASSERT_FALSE(saved.has_value());
  EXPECT_EQ(saved.error().code, KeystoreErrc::kUnsupported);
  EXPECT_FALSE(std::filesystem::exists(File("a.json")));
}

TEST(KdfCost, MatchesLibsodiumArgon2idLimits) {
  EXPECT_EQ(KdfCost::Moderate().opslimit, 3u);
  EXPECT_EQ(KdfCost::Moderate().memlimit_bytes, 256u << 20);
  EXPECT_EQ(KdfCost::Interactive().opslimit, 2u);
  EXPECT_EQ(KdfCost::Interactive().memlimit_bytes, 64u << 20);
  EXPECT_EQ(KdfCost::MinimumForTests().opslimit, 1u);
  EXPECT_EQ(KdfCost::MinimumForTests().memlimit_bytes, 8192u);
}

// Loads `path` both ways and expects `code` from each.
void ExpectLoadFails(const std::string& path, KeystoreErrc code, const std::string& what) {
  auto loaded = LoadKeystore(path, kPassphrase);
  ASSERT_FALSE(loaded.has_value()) << what;
  EXPECT_EQ(loaded.error().code, code) << what << ": " << loaded.error().message;
  EXPECT_FALSE(loaded.error().message.empty());
  auto pub = LoadKeystorePublicKey(path);
  ASSERT_FALSE(pub.has_value()) << what;
  EXPECT_EQ(pub.error().code, code) << what << ": " << pub.error().message;
}

TEST_F(KeystoreTest, EveryHexFieldWithAFlippedDigitIsDamaged) {
  std::string path = MakeKeystore();
  const Json good = Json::parse(ReadText(path));
  for (const char* field : {"salt", "nonce", "ciphertext", "public_key", "checksum", "address"}) {
    std::string value = good[field].get<std::string>();
    for (size_t pos : {size_t{2}, value.size() / 2, value.size() - 1}) {
      Json j = good;
      j[field] = FlipHexDigit(value, pos);
      WriteText(path, j.dump(2));
      ExpectLoadFails(path, KeystoreErrc::kDamaged, std::string(field) + "@" + std::to_string(pos));
    }
  }
}

TEST_F(KeystoreTest, EveryOtherFieldChangedIsDamagedOrUnsupported) {
  std::string path = MakeKeystore();
  const Json good = Json::parse(ReadText(path));
  struct Case {
    const char* field;
    Json value;
    KeystoreErrc code;
  };
  const Case cases[] = {
      {"version", 2, KeystoreErrc::kUnsupported},
      {"version", 0, KeystoreErrc::kUnsupported},
      {"version", "1", KeystoreErrc::kDamaged},
      {"version", -1, KeystoreErrc::kDamaged},
      {"version", 1.5, KeystoreErrc::kDamaged},
      {"kdf", "argon2id13 ", KeystoreErrc::kDamaged},  // checksum no longer matches
      {"kdf", 13, KeystoreErrc::kDamaged},
      {"cipher", "xchacha20poly1305", KeystoreErrc::kDamaged},
      {"opslimit", good["opslimit"].get<uint64_t>() + 1, KeystoreErrc::kDamaged},
      {"opslimit", "1", KeystoreErrc::kDamaged},
      {"memlimit", good["memlimit"].get<uint64_t>() * 2, KeystoreErrc::kDamaged},
      {"memlimit", 1e30, KeystoreErrc::kDamaged},
      {"salt", "", KeystoreErrc::kDamaged},
      {"salt", good["salt"].get<std::string>() + "00", KeystoreErrc::kDamaged},
      {"nonce", "zz" + good["nonce"].get<std::string>().substr(2), KeystoreErrc::kDamaged},
      {"ciphertext", nullptr, KeystoreErrc::kDamaged},
      {"public_key", Json::array(), KeystoreErrc::kDamaged},
      {"address", "dv", KeystoreErrc::kDamaged},
      {"checksum", good["checksum"].get<std::string>().substr(1), KeystoreErrc::kDamaged},
  };
  for (const Case& c : cases) {
    Json j = good;
    j[c.field] = c.value;
    WriteText(path, j.dump());
    ExpectLoadFails(path, c.code, std::string(c.field) + "=" + c.value.dump());
  }
}

TEST_F(KeystoreTest, EveryFieldRemovedIsDamaged) {
  std::string path = MakeKeystore();
  const Json good = Json::parse(ReadText(path));
  for (const auto& [field, value] : good.items()) {
    (void)value;
    Json j = good;
    j.erase(field);
    WriteText(path, j.dump(2));
    ExpectLoadFails(path, KeystoreErrc::kDamaged, "without " + field);
  }
}

TEST_F(KeystoreTest, TruncatedGarbageAndEmptyFilesAreDamaged) {
  std::string path = MakeKeystore();
  const std::string good = ReadText(path);
  ASSERT_EQ(good.back(), '\n');  // dropping only the final newline leaves a valid file
  for (size_t len = 0; len < good.size() - 1; len += 7) {
    WriteText(path, good.substr(0, len));
    ExpectLoadFails(path, KeystoreErrc::kDamaged, "truncated to " + std::to_string(len));
  }
  WriteText(path, good.substr(0, good.size() - 3));  // cuts the closing brace
  ExpectLoadFails(path, KeystoreErrc::kDamaged, "truncated by 3");

  for (std::string garbage :
       {std::string("\x00\x01\x02\xff garbage", 12), std::string("[1,2,3]"), std::string("null"),
        std::string("\"a string\""), std::string("{}"), std::string(100000, '{'),
        std::string(200000, 'a'), std::string(60000, '['), std::string("{\"version\":1}")}) {
    WriteText(path, garbage);
    ExpectLoadFails(path, KeystoreErrc::kDamaged, "garbage " + garbage.substr(0, 20));
  }
}

TEST_F(KeystoreTest, UnknownAlgorithmsWithAValidChecksumAreUnsupported) {
  std::string path = MakeKeystore();
  const Json good = Json::parse(ReadText(path));
  for (const auto& [field, value] :
       {std::pair{"kdf", "scrypt"}, std::pair{"cipher", "aes256gcm"}}) {
    Json j = good;
    j[field] = value;
    j["checksum"] = ChecksumOf(j);
    WriteText(path, j.dump(2));
    ExpectLoadFails(path, KeystoreErrc::kUnsupported, field);
  }
}

TEST_F(KeystoreTest, AbsurdCostIsRefusedQuickly) {
  std::string path = MakeKeystore();
  const Json good = Json::parse(ReadText(path));
  struct Case {
    uint64_t ops, mem;
  };
  for (const Case c :
       {Case{1, uint64_t{1} << 40}, Case{1, (uint64_t{4} << 30) + 1024}, Case{1'000'000'000, 8192},
        Case{UINT64_MAX, UINT64_MAX}, Case{0, 8192}, Case{1, 1024}}) {
    Json j = good;
    j["opslimit"] = c.ops;
    j["memlimit"] = c.mem;
    j["checksum"] = ChecksumOf(j);
    WriteText(path, j.dump(2));
    auto start = std::chrono::steady_clock::now();
    ExpectLoadFails(path, KeystoreErrc::kDamaged,
                    "ops " + std::to_string(c.ops) + " mem " + std::to_string(c.mem));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
}

TEST_F(KeystoreTest, HeaderIsBoundToTheCiphertext) {
  // With the checksum recomputed (as anyone can), a changed header no longer opens: the AEAD's
  // associated data covers it. Load never hands out a key that does not match the file.
  std::string path = MakeKeystore();
  const Json good = Json::parse(ReadText(path));
  auto other = PrivateKey::Generate();
  std::vector<Json> variants;
  {
    Json j = good;
    j["opslimit"] = 2;
    variants.push_back(j);
  }
  {
    Json j = good;
    j["salt"] = FlipHexDigit(j["salt"].get<std::string>(), 3);
    variants.push_back(j);
  }
  {
    Json j = good;
    j["public_key"] = ToHex(other.public_key().bytes());
    j["address"] = Address::FromPublicKey(other.public_key()).ToString();
    variants.push_back(j);
  }
  {
    Json j = good;
    j["ciphertext"] = FlipHexDigit(j["ciphertext"].get<std::string>(), 10);
    variants.push_back(j);
  }
  {
    Json j = good;
    j["nonce"] = FlipHexDigit(j["nonce"].get<std::string>(), 10);
    variants.push_back(j);
  }
  for (Json& j : variants) {
    j["checksum"] = ChecksumOf(j);
    WriteText(path, j.dump(2));
    auto loaded = LoadKeystore(path, kPassphrase);
    ASSERT_FALSE(loaded.has_value()) << j.dump();
    EXPECT_EQ(loaded.error().code, KeystoreErrc::kWrongPassphrase) << j.dump();
  }
}

// The test vector of docs/protocol.md, "Keystore file": the client key of the signing vectors
// (32 bytes of 0x22) under the passphrase "dvpn test vector", at the minimum cost. A file written
// by an earlier build must stay readable.
constexpr char kVectorFile[] = R"({
  "version": 1,
  "kdf": "argon2id13",
  "opslimit": 1,
  "memlimit": 8192,
  "salt": "92f89f664a31bdd71cbd05af058d0a51",
  "cipher": "xchacha20poly1305-ietf",
  "nonce": "de90855252d8a317fa7a90da8363cd4ccbfe6bfd4b8817ba",
  "ciphertext": "d6ee7b02370147377bb0f71ebf81fa91d2085dda6f7e448f6472770c18e346d4ffcab6a4b389de81cc9dbe6fe351e797",
  "public_key": "466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27",
  "address": "dv420da62a30f2f26bd4108d3c8f17dacea971c68bdaa21dbe",
  "checksum": "51967fc9a86002286d692dc3276f3a925a325d0e3ef30f8f950bf969b1ee1f7e"
}
)";

TEST_F(KeystoreTest, DocumentedVectorOpens) {
  std::string path = File("vector.json");
  WriteText(path, kVectorFile);
  EXPECT_EQ(ChecksumOf(Json::parse(std::string(kVectorFile))),
            "51967fc9a86002286d692dc3276f3a925a325d0e3ef30f8f950bf969b1ee1f7e");
  auto key = LoadKeystore(path, "dvpn test vector");
  ASSERT_TRUE(key.has_value()) << key.error().message;
  ByteArray<32> expected;
  expected.fill(0x22);
  EXPECT_EQ(key->secret(), expected);
  EXPECT_EQ(Address::FromPublicKey(key->public_key()).ToString(),
            "dv420da62a30f2f26bd4108d3c8f17dacea971c68bdaa21dbe");
  EXPECT_EQ(LoadKeystore(path, "dvpn test vector ").error().code, KeystoreErrc::kWrongPassphrase);
}

TEST_F(KeystoreTest, ExtraFieldsAndUppercaseHexAreTolerated) {
  std::string path = MakeKeystore();
  Json j = Json::parse(ReadText(path));
  j["comment"] = "my laptop key";
  std::string salt = j["salt"].get<std::string>();
  for (char& c : salt) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  j["salt"] = salt;
  WriteText(path, j.dump(2));
  auto loaded = LoadKeystore(path, kPassphrase);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ(loaded->public_key(), key_.public_key());
}

}  // namespace
}  // namespace dvpn::payments
