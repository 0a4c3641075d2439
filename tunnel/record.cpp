#include "tunnel/record.h"

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

struct RecordCipher::AesState {
  crypto_aead_aes256gcm_state st;  // CRYPTO_ALIGN(16); operator new honours the alignment
};

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

RecordCipher::~RecordCipher() {
  Wipe(key_);
  if (aes_) sodium_memzero(&aes_->st, sizeof aes_->st);
}

void RecordCipher::LoadKey() {
  if (aes_) crypto_aead_aes256gcm_beforenm(&aes_->st, key_.data());
}

void RecordCipher::Rekey() {
  Key32 next = NextRecordKey(key_);
  key_ = next;
  Wipe(next);
  if (aes_) {
    sodium_memzero(&aes_->st, sizeof aes_->st);
    LoadKey();
  }
}

void RecordCipher::Encrypt(std::span<uint8_t> data, ByteSpan ad, uint64_t counter,
                           uint8_t* tag) {
  uint8_t nonce[12];
  MakeNonce(counter, nonce);
  unsigned long long tag_len = 0;
  uint8_t empty = 0;
  if (data.empty()) data = std::span<uint8_t>(&empty, 0);  // libsodium wants non-null pointers
  if (cipher_ == Cipher::kAes256Gcm) {
    crypto_aead_aes256gcm_encrypt_detached_afternm(data.data(), tag, &tag_len, data.data(),
                                                   data.size(), ad.data(), ad.size(), nullptr,
                                                   nonce, &aes_->st);
  } else {
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(data.data(), tag, &tag_len, data.data(),
                                                       data.size(), ad.data(), ad.size(), nullptr,
                                                       nonce, key_.data());
  }
}

bool RecordCipher::Decrypt(std::span<uint8_t> data, ByteSpan ad, uint64_t counter,
                           const uint8_t* tag) {
  uint8_t nonce[12];
  MakeNonce(counter, nonce);
  uint8_t empty = 0;
  if (data.empty()) data = std::span<uint8_t>(&empty, 0);  // libsodium wants non-null pointers
  if (cipher_ == Cipher::kAes256Gcm) {
    return crypto_aead_aes256gcm_decrypt_detached_afternm(data.data(), nullptr, data.data(),
                                                          data.size(), tag, ad.data(), ad.size(),
                                                          nonce, &aes_->st) == 0;
  }
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(data.data(), nullptr, data.data(),
                                                            data.size(), tag, ad.data(),
                                                            ad.size(), nonce, key_.data()) == 0;
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
