#include "tunnel/record.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace dvpn::tunnel {
namespace {

void MakeNonce(uint64_t counter, uint8_t nonce[12]) {
  std::memset(nonce, 0, 4);
  for (int i = 11; i >= 4; --i, counter >>= 8) nonce[i] = uint8_t(counter);
}

}  // namespace

// AES-256-GCM has two implementations of the same function, chosen per record by size (the
// bytes are identical either way; record_test checks both against each other and the vectors):
// - records of at least kEvpMinBytes plaintext bytes (bulk data) use OpenSSL's EVP
//   implementation, about twice the throughput of libsodium 1.0.18's on the same CPU;
// - smaller records (pings, WINDOW, control, interactive traffic) use libsodium, whose fixed cost
//   per record is a few microseconds lower than OpenSSL 3's EVP call sequence (measured as
//   round-trip latency through the tunnel).
// ChaCha20-Poly1305 uses libsodium only.
namespace {
constexpr size_t kEvpMinBytes = 2048;
}  // namespace

struct RecordCipher::AesState {
  crypto_aead_aes256gcm_state st;  // CRYPTO_ALIGN(16); operator new honours the alignment
  EVP_CIPHER_CTX* enc = nullptr;   // keyed on first use
  EVP_CIPHER_CTX* dec = nullptr;
  ~AesState() { Reset(); }
  // sodium_memzero wipes libsodium's key schedule; EVP_CIPHER_CTX_free wipes OpenSSL's.
  void Reset() {
    sodium_memzero(&st, sizeof st);
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    enc = dec = nullptr;
  }
};

namespace {

[[noreturn]] void CryptoFailure(const char* what) {
  // Only allocation failure or our own misuse can get here; a record must never go out
  // unencrypted or be delivered unauthenticated, so stop.
  std::fprintf(stderr, "dvpn: AES-256-GCM record cipher failure: %s\n", what);
  std::abort();
}

EVP_CIPHER_CTX* NewGcmContext(const Key32& key, bool encrypt) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (!ctx) CryptoFailure("EVP_CIPHER_CTX_new");
  // The default GCM IV length is 12 bytes, our nonce size.
  int ok = encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nullptr)
                   : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nullptr);
  if (ok != 1) CryptoFailure("init");
  return ctx;
}

}  // namespace

RecordCipher::RecordCipher(Cipher cipher, const Key32& key) : cipher_(cipher), key_(key) {
  EnsureSodium();
  if (cipher_ == Cipher::kAes256Gcm) {
    // The handshake only negotiates ciphers this machine has; anything else is our bug.
    if (!crypto_aead_aes256gcm_is_available()) {
      std::fprintf(stderr, "dvpn: AES-256-GCM record cipher without AES-NI\n");
      std::abort();
    }
    aes_ = std::make_unique<AesState>();
    LoadKey();
  }
}

RecordCipher::~RecordCipher() { Wipe(key_); }

void RecordCipher::LoadKey() {
  if (!aes_) return;
  aes_->Reset();
  crypto_aead_aes256gcm_beforenm(&aes_->st, key_.data());
  // The OpenSSL contexts are keyed lazily: a cipher object only ever encrypts or decrypts.
}

void RecordCipher::Rekey() {
  Key32 next = NextRecordKey(key_);
  key_ = next;
  Wipe(next);
  LoadKey();
}

void RecordCipher::Encrypt(std::span<uint8_t> data, ByteSpan ad, uint64_t counter, uint8_t* tag) {
  uint8_t nonce[12];
  MakeNonce(counter, nonce);
  unsigned long long tag_len = 0;
  if (cipher_ == Cipher::kAes256Gcm && data.size() >= kEvpMinBytes) {
    if (!aes_->enc) aes_->enc = NewGcmContext(key_, true);
    EVP_CIPHER_CTX* ctx = aes_->enc;
    int len = 0;
    uint8_t final_out[kRecordTagSize];  // GCM's final step writes nothing
    if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, nullptr, &len, ad.data(), static_cast<int>(ad.size())) != 1 ||
        (!data.empty() && EVP_EncryptUpdate(ctx, data.data(), &len, data.data(),
                                            static_cast<int>(data.size())) != 1) ||
        EVP_EncryptFinal_ex(ctx, final_out, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kRecordTagSize), tag) !=
            1) {
      CryptoFailure("encrypt");
    }
    return;
  }
  uint8_t empty = 0;
  if (data.empty()) data = std::span<uint8_t>(&empty, 0);  // libsodium wants non-null pointers
  if (cipher_ == Cipher::kAes256Gcm) {
    crypto_aead_aes256gcm_encrypt_detached_afternm(data.data(), tag, &tag_len, data.data(),
                                                   data.size(), ad.data(), ad.size(), nullptr,
                                                   nonce, &aes_->st);
    return;
  }
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(data.data(), tag, &tag_len, data.data(),
                                                     data.size(), ad.data(), ad.size(), nullptr,
                                                     nonce, key_.data());
}

bool RecordCipher::Decrypt(std::span<uint8_t> data, ByteSpan ad, uint64_t counter,
                           const uint8_t* tag) {
  uint8_t nonce[12];
  MakeNonce(counter, nonce);
  if (cipher_ == Cipher::kAes256Gcm && data.size() >= kEvpMinBytes) {
    if (!aes_->dec) aes_->dec = NewGcmContext(key_, false);
    EVP_CIPHER_CTX* ctx = aes_->dec;
    int len = 0;
    uint8_t final_out[kRecordTagSize];  // GCM's final step writes nothing
    if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_DecryptUpdate(ctx, nullptr, &len, ad.data(), static_cast<int>(ad.size())) != 1 ||
        (!data.empty() && EVP_DecryptUpdate(ctx, data.data(), &len, data.data(),
                                            static_cast<int>(data.size())) != 1) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kRecordTagSize),
                            const_cast<uint8_t*>(tag)) != 1) {
      CryptoFailure("decrypt");
    }
    if (EVP_DecryptFinal_ex(ctx, final_out, &len) != 1) {
      // OpenSSL decrypts before it checks the tag: never leave unauthenticated plaintext.
      if (!data.empty()) sodium_memzero(data.data(), data.size());
      return false;
    }
    return true;
  }
  uint8_t empty = 0;
  if (data.empty()) data = std::span<uint8_t>(&empty, 0);  // libsodium wants non-null pointers
  if (cipher_ == Cipher::kAes256Gcm) {
    return crypto_aead_aes256gcm_decrypt_detached_afternm(data.data(), nullptr, data.data(),
                                                          data.size(), tag, ad.data(), ad.size(),
                                                          nonce, &aes_->st) == 0;
  }
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(data.data(), nullptr, data.data(),
                                                            data.size(), tag, ad.data(), ad.size(),
                                                            nonce, key_.data()) == 0;
}

Result<size_t, RecordErrc> RecordSize(ByteSpan buffered) {
  if (buffered.size() < kRecordHeaderSize) return 0;
  uint16_t header = uint16_t(buffered[0] << 8 | buffered[1]);
  size_t len = header & ~kRekeyFlag;
  bool rekey = (header & kRekeyFlag) != 0;
  if (len < kRecordTagSize || len > kMaxRecordCiphertext || (rekey && len != kRecordTagSize)) {
    return Fail(RecordErrc::kBadLength, "record length " + std::to_string(len));
  }
  return kRecordHeaderSize + len;
}

// ---------------------------------------------------------------- sealer

RecordSealer::RecordSealer(const SessionKeys& keys) : aead_(keys.cipher, keys.send_key) {}

Result<size_t, RecordErrc> RecordSealer::Seal(ByteSpan plaintext, std::span<uint8_t> out) {
  if (plaintext.size() > kMaxRecordPlaintext) {
    return Fail(RecordErrc::kTooLarge, "plaintext larger than a record");
  }
  const size_t total = plaintext.size() + kRecordOverhead;
  if (out.size() < total) return Fail(RecordErrc::kBufferTooSmall, "record buffer");
  if (counter_ >= kMaxRecordsPerKey - 1) {  // the last counter value is kept for the REKEY record
    return Fail(RecordErrc::kRekeyRequired, "record limit for this key reached");
  }
  uint8_t* body = out.data() + kRecordHeaderSize;
  if (!plaintext.empty() && plaintext.data() != body) {
    std::memmove(body, plaintext.data(), plaintext.size());
  }
  const uint16_t len = uint16_t(plaintext.size() + kRecordTagSize);
  out[0] = uint8_t(len >> 8);
  out[1] = uint8_t(len);
  aead_.Encrypt(std::span<uint8_t>(body, plaintext.size()), ByteSpan(out.data(), 2), counter_,
                body + plaintext.size());
  ++counter_;
  bytes_ += plaintext.size();
  return total;
}

Result<size_t, RecordErrc> RecordSealer::SealRekey(std::span<uint8_t> out) {
  if (out.size() < kRecordOverhead) return Fail(RecordErrc::kBufferTooSmall, "record buffer");
  const uint16_t header = kRekeyFlag | uint16_t(kRecordTagSize);
  out[0] = uint8_t(header >> 8);
  out[1] = uint8_t(header);
  aead_.Encrypt({}, ByteSpan(out.data(), 2), counter_, out.data() + kRecordHeaderSize);
  aead_.Rekey();
  counter_ = 0;
  bytes_ = 0;
  ++generation_;
  return kRecordOverhead;
}

// ---------------------------------------------------------------- opener

RecordOpener::RecordOpener(const SessionKeys& keys) : aead_(keys.cipher, keys.recv_key) {}

Result<OpenedRecord, RecordErrc> RecordOpener::Open(std::span<uint8_t> record) {
  if (closed_) return Fail(RecordErrc::kClosed, "record stream already failed");
  closed_ = true;  // cleared below on success
  auto size = RecordSize(record);
  if (!size) return std::unexpected(size.error());
  if (*size == 0 || *size != record.size()) {
    return Fail(RecordErrc::kTruncated, "record size does not match its header");
  }
  if (counter_ >= kMaxRecordsPerKey) {
    return Fail(RecordErrc::kRekeyRequired, "peer exceeded the record limit for this key");
  }
  const bool rekey = (record[0] & 0x80) != 0;
  const size_t pt_len = record.size() - kRecordOverhead;
  std::span<uint8_t> body = record.subspan(kRecordHeaderSize, pt_len);
  if (!aead_.Decrypt(body, ByteSpan(record.data(), 2), counter_,
                     record.data() + kRecordHeaderSize + pt_len)) {
    return Fail(RecordErrc::kBadTag, "record authentication failed");
  }
  closed_ = false;
  if (rekey) {
    aead_.Rekey();
    counter_ = 0;
    ++generation_;
    return OpenedRecord{{}, true};
  }
  ++counter_;
  return OpenedRecord{body, false};
}

}  // namespace dvpn::tunnel
