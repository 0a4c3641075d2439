#pragma once
// Encrypted records: the framing of the tunnel's byte stream after the handshake
// (docs/tunnel.md, "Records", is normative).
//
//   record = header u16 (big-endian) || ciphertext (plaintext || 16-byte tag)
//   header = REKEY flag (bit 15) | L (bits 0..14) = ciphertext length, 16 <= L <= kMaxRecordCiphertext
//   nonce  = 4 zero bytes || u64 big-endian record counter (per direction, starts at 0 per key)
//   AD     = the two header bytes
//
// A record with the REKEY flag carries no plaintext; it is the last record under the current
// key: after sealing / opening it both sides move to NextRecordKey(key) and counter 0.
// One RecordSealer per sending direction and one RecordOpener per receiving direction; no
// heap allocation per record (caller-owned buffers). Not thread-safe; owned by the session.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/result.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"

namespace dvpn::tunnel {

inline constexpr size_t kRecordHeaderSize = 2;
inline constexpr size_t kRecordTagSize = 16;
inline constexpr size_t kRecordOverhead = kRecordHeaderSize + kRecordTagSize;
inline constexpr size_t kMaxRecordPlaintext = 16384;
inline constexpr size_t kMaxRecordCiphertext = kMaxRecordPlaintext + kRecordTagSize;
inline constexpr size_t kMaxRecordSize = kRecordHeaderSize + kMaxRecordCiphertext;
inline constexpr uint16_t kRekeyFlag = 0x8000;
// The sender should rekey (RekeyDue) once either soft limit is reached...
inline constexpr uint64_t kRekeyAfterRecords = uint64_t{1} << 24;
inline constexpr uint64_t kRekeyAfterBytes = uint64_t{1} << 32;
inline constexpr uint64_t kRekeyAfterSeconds = 3600;  // the session's timer; not enforced here
// ...and must: past this many records under one key, Seal refuses and Open fails.
inline constexpr uint64_t kMaxRecordsPerKey = uint64_t{1} << 32;

enum class RecordErrc {
  kBadLength,       // header length outside [16, kMaxRecordCiphertext], or a REKEY record with data
  kTruncated,       // fewer bytes than the header announces
  kBadTag,          // authentication failed (tampered, reordered, replayed, wrong key)
  kBufferTooSmall,  // caller's output span cannot hold the record
  kTooLarge,        // plaintext longer than kMaxRecordPlaintext
  kRekeyRequired,   // hard per-key record limit reached (sender must SealRekey first)
  kClosed,          // an earlier Open failed; the session must end
};

// Size of the record that starts `buffered` (header + ciphertext) once at least
// kRecordHeaderSize bytes are buffered; 0 when more bytes are needed to know;
// kBadLength when the header is invalid (the session must end).
[[nodiscard]] Result<size_t, RecordErrc> RecordSize(ByteSpan buffered);

// The AEAD with per-record nonces; shared by sealer and opener.
class RecordCipher {
 public:
  // Precondition: kAes256Gcm only where LocalCiphers() has it (aborts otherwise: our bug).
  RecordCipher(Cipher cipher, const Key32& key);
  ~RecordCipher();
  RecordCipher(const RecordCipher&) = delete;
  RecordCipher& operator=(const RecordCipher&) = delete;

  void Encrypt(std::span<uint8_t> data, ByteSpan ad, uint64_t counter, uint8_t* tag);
  bool Decrypt(std::span<uint8_t> data, ByteSpan ad, uint64_t counter, const uint8_t* tag);
  // key = NextRecordKey(key); the old key and AES state are wiped.
  void Rekey();
  Cipher cipher() const { return cipher_; }

 private:
  struct AesState;
  void LoadKey();
  Cipher cipher_;
  Key32 key_;
  std::unique_ptr<AesState> aes_;  // AES-256-GCM only: OpenSSL contexts, keyed on first use
};

class RecordSealer {
 public:
  // Uses keys.cipher and keys.send_key.
  explicit RecordSealer(const SessionKeys& keys);
  RecordSealer(Cipher cipher, const Key32& key) : aead_(cipher, key) {}

  // Writes one data record of `plaintext` into `out` and returns its size
  // (plaintext.size() + kRecordOverhead). `plaintext` may already sit at out[2..] (in place, no
  // copy); any other overlap is not allowed. Fails with kTooLarge, kBufferTooSmall,
  // kRekeyRequired; nothing is consumed on failure.
  [[nodiscard]] Result<size_t, RecordErrc> Seal(ByteSpan plaintext, std::span<uint8_t> out);
  // Writes a REKEY record (kRecordOverhead bytes), then switches to the next key.
  [[nodiscard]] Result<size_t, RecordErrc> SealRekey(std::span<uint8_t> out);
  // True once kRekeyAfterRecords records or kRekeyAfterBytes plaintext bytes were sealed under
  // the current key.
  bool RekeyDue() const {
    return counter_ >= kRekeyAfterRecords || bytes_ >= kRekeyAfterBytes;
  }
  uint64_t counter() const { return counter_; }
  uint64_t generation() const { return generation_; }

  // Test hook: pretend `n` records were sealed under the current key.
  void SetCounterForTest(uint64_t n) { counter_ = n; }

 private:
  RecordCipher aead_;
  uint64_t counter_ = 0;
  uint64_t bytes_ = 0;
  uint64_t generation_ = 0;
};

struct OpenedRecord {
  std::span<uint8_t> plaintext;  // points into the caller's record buffer
  bool rekey = false;            // a REKEY record: no plaintext; the opener switched keys
};

class RecordOpener {
 public:
  // Uses keys.cipher and keys.recv_key.
  explicit RecordOpener(const SessionKeys& keys);
  RecordOpener(Cipher cipher, const Key32& key) : aead_(cipher, key) {}

  // Authenticates and decrypts one whole record in place (`record` is exactly RecordSize()
  // bytes: header + ciphertext). Fails with kBadLength, kTruncated (size mismatch), kBadTag,
  // kRekeyRequired; after any failure every later call fails with kClosed.
  [[nodiscard]] Result<OpenedRecord, RecordErrc> Open(std::span<uint8_t> record);
  uint64_t counter() const { return counter_; }
  uint64_t generation() const { return generation_; }
  bool closed() const { return closed_; }

  void SetCounterForTest(uint64_t n) { counter_ = n; }

 private:
  RecordCipher aead_;
  uint64_t counter_ = 0;
  uint64_t generation_ = 0;
  bool closed_ = false;
};

}  // namespace dvpn::tunnel
