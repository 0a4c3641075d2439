#pragma once
// Datagram records: the framing of the tunnel's records when each one travels alone in a UDP
// datagram (full-tunnel mode). docs/tunnel.md, "Datagram records", is normative.
//
//   datagram = header (16 bytes) || ciphertext (plaintext || 16-byte tag)
//   header   = type u8 (4 = data) || epoch u8 || reserved u16 (zero) || receiver index u32
//              || counter u64                                             (all big-endian)
//   key      = epoch 0: HKDF(ikm = record key, info = "dvpn.v1.tunnel.datagram");
//              epoch n+1: NextRecordKey(key of epoch n)
//   nonce    = 4 zero bytes || counter (as for stream records), AD = the 16 header bytes
//
// Unlike stream records, datagrams may be lost, duplicated and reordered: the counter is sent,
// a sliding window (ReplayWindow) refuses replays, and a datagram that fails is dropped alone
// without ending the session. Nothing about an unauthenticated datagram ever changes state.
// No heap allocation per datagram (caller-owned buffers; error messages fit std::string's
// small-string buffer). Sealer and opener are not thread-safe; the session owns them.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "common/result.h"
#include "tunnel/handshake.h"
#include "tunnel/kdf.h"
#include "tunnel/record.h"

namespace dvpn::tunnel {

// Type byte, first in every datagram of the protocol. 1..3 are reserved for the UDP handshake
// of a later issue; a receiver drops every type it does not handle, silently.
inline constexpr uint8_t kDatagramTypeHandshakeInit = 0x01;      // reserved
inline constexpr uint8_t kDatagramTypeHandshakeResponse = 0x02;  // reserved
inline constexpr uint8_t kDatagramTypeCookie = 0x03;             // reserved
inline constexpr uint8_t kDatagramTypeData = 0x04;

inline constexpr size_t kDatagramHeaderSize = 16;
inline constexpr size_t kDatagramTagSize = 16;
inline constexpr size_t kDatagramOverhead = kDatagramHeaderSize + kDatagramTagSize;  // 32
// The default plaintext bound: a datagram fits one IPv6 packet on a 1500-byte path.
inline constexpr size_t kPathMtu = 1500;
inline constexpr size_t kIpv6UdpHeaders = 40 + 8;
inline constexpr size_t kDefaultMaxDatagramPlaintext =
    kPathMtu - kIpv6UdpHeaders - kDatagramOverhead;  // 1420
// The largest UDP payload (IPv4: 65535 - 20 - 8) and so the largest configurable plaintext.
inline constexpr size_t kMaxUdpPayload = 65507;
inline constexpr size_t kMaxDatagramPlaintext = kMaxUdpPayload - kDatagramOverhead;  // 65475
static_assert(kDefaultMaxDatagramPlaintext == 1420 && kMaxDatagramPlaintext == 65475);

// Counters accepted per epoch: 0 .. kMaxDatagramsPerEpoch - 1 (the records' hard limit). The
// soft limits (kRekeyAfterRecords, kRekeyAfterBytes, kRekeyAfterSeconds) are the records'.
inline constexpr uint64_t kMaxDatagramsPerEpoch = kMaxRecordsPerKey;
// Bits of the replay window: a counter more than this far below the highest accepted one of
// its epoch is too old (docs/tunnel.md says why 4096).
inline constexpr uint64_t kReplayWindowBits = 4096;
// The previous epoch is accepted until a datagram of the current epoch with a counter at or
// above this verifies (then reordering past it would be beyond the window anyway)...
inline constexpr uint64_t kPreviousEpochGrace = kReplayWindowBits;
// ...or until the session's timer calls ExpirePreviousEpoch(), this long after the switch
// (not enforced here, like kRekeyAfterSeconds).
inline constexpr uint64_t kPreviousEpochSeconds = 10;

inline constexpr std::string_view kDatagramKeyLabel = "dvpn.v1.tunnel.datagram";

enum class DatagramErrc {
  kTruncated,       // shorter than kDatagramOverhead (a data datagram), or empty
  kBadType,         // type byte is not 4 (data): reserved handshake types and unknown types
  kBadHeader,       // reserved bytes are not zero
  kWrongIndex,      // receiver index is not this opener's
  kTooLarge,        // Seal: plaintext above max_plaintext; Open: datagram above max + overhead
  kUnknownEpoch,    // epoch is not the current, the next, or the (still kept) previous one
  kTooOld,          // counter at or below (highest accepted in its epoch) - kReplayWindowBits
  kReplayed,        // counter already accepted in its epoch
  kRekeyRequired,   // Seal: kMaxDatagramsPerEpoch reached (NextEpoch first);
                    // Open: counter at or above kMaxDatagramsPerEpoch
  kBadTag,          // authentication failed (tampered, forged, wrong key or index)
  kBufferTooSmall,  // Seal: `out` cannot hold the datagram
};
const char* DatagramErrcName(DatagramErrc e);

// Key of epoch 0 for one direction: HKDF(salt = empty, ikm = record_key, info =
// "dvpn.v1.tunnel.datagram", 32). A distinct key from the stream records' (same nonces).
Key32 DatagramKey(const Key32& record_key);

// The fields of a data datagram's header.
struct DatagramHeader {
  uint8_t epoch = 0;
  uint32_t receiver_index = 0;
  uint64_t counter = 0;
};
// Parses the header of a data datagram without any key: how the exit's one UDP socket finds
// the session (by receiver_index) before trying a key. kTruncated, kBadType, kBadHeader.
[[nodiscard]] Result<DatagramHeader, DatagramErrc> ParseDatagramHeader(ByteSpan datagram);

// The receiver's sliding window over one epoch's counters: remembers the highest counter
// accepted (H) and, as a 4096-bit ring, which of H - 4095 .. H were accepted. Value type.
class ReplayWindow {
 public:
  // Whether `counter` may be accepted: ok when nothing was accepted yet or counter > H;
  // kTooOld when counter + kReplayWindowBits <= H; kReplayed when already accepted.
  // Changes nothing.
  [[nodiscard]] Result<void, DatagramErrc> Check(uint64_t counter) const;
  // Records `counter` as accepted. Precondition: Check(counter) succeeded.
  void Accept(uint64_t counter);
  bool empty() const { return !any_; }
  // H; meaningful only when !empty().
  uint64_t highest() const { return highest_; }
  friend bool operator==(const ReplayWindow&, const ReplayWindow&) = default;

 private:
  void Clear(uint64_t from, uint64_t to);  // the ring bits of counters from..to inclusive
  std::array<uint64_t, kReplayWindowBits / 64> bits_{};
  uint64_t highest_ = 0;
  bool any_ = false;
};

// One sending direction. Owned by the session; not thread-safe.
class DatagramSealer {
 public:
  // Epoch 0 key = DatagramKey(keys.send_key); `remote_index` is the peer's receiver index.
  // `max_plaintext` above kMaxDatagramPlaintext is taken as kMaxDatagramPlaintext.
  DatagramSealer(const SessionKeys& keys, uint32_t remote_index,
                 size_t max_plaintext = kDefaultMaxDatagramPlaintext);
  DatagramSealer(Cipher cipher, const Key32& epoch0_key, uint32_t remote_index,
                 size_t max_plaintext = kDefaultMaxDatagramPlaintext);

  // Writes one data datagram of `plaintext` into `out` and returns its size (plaintext.size()
  // + kDatagramOverhead). `plaintext` may already sit at out[16..] (in place); no other
  // overlap. kTooLarge, kBufferTooSmall, kRekeyRequired; nothing is consumed on failure.
  [[nodiscard]] Result<size_t, DatagramErrc> Seal(ByteSpan plaintext, std::span<uint8_t> out);
  // True once kRekeyAfterRecords datagrams or kRekeyAfterBytes plaintext bytes were sealed in
  // this epoch; the session then calls NextEpoch() (and also on its kRekeyAfterSeconds timer).
  bool RekeyDue() const {
    return counter_ >= kRekeyAfterRecords || bytes_ >= kRekeyAfterBytes;
  }
  // Moves to the next epoch: key = NextRecordKey(key) (the old one wiped), counter 0.
  void NextEpoch();
  uint64_t counter() const { return counter_; }
  uint64_t generation() const { return generation_; }  // epoch byte = generation mod 256
  size_t max_plaintext() const { return max_plaintext_; }

  void SetCounterForTest(uint64_t n) { counter_ = n; }

 private:
  RecordCipher aead_;
  uint32_t remote_index_;
  size_t max_plaintext_;
  uint64_t counter_ = 0;
  uint64_t bytes_ = 0;
  uint64_t generation_ = 0;
};

struct OpenedDatagram {
  std::span<uint8_t> plaintext;  // points into the caller's datagram buffer
  uint64_t generation = 0;       // the epoch it was sealed in (absolute, not mod 256)
  uint64_t counter = 0;
};

// One receiving direction. Holds the keys of the current epoch, the next one (derived ahead,
// so no unauthenticated datagram ever costs a key derivation) and, for a bounded time after a
// switch, the previous one, each epoch with its ReplayWindow (about 3 KiB in all). Owned by
// the session; not thread-safe.
class DatagramOpener {
 public:
  // Epoch 0 key = DatagramKey(keys.recv_key); `local_index` is this side's receiver index.
  DatagramOpener(const SessionKeys& keys, uint32_t local_index,
                 size_t max_plaintext = kDefaultMaxDatagramPlaintext);
  DatagramOpener(Cipher cipher, const Key32& epoch0_key, uint32_t local_index,
                 size_t max_plaintext = kDefaultMaxDatagramPlaintext);
  ~DatagramOpener();
  DatagramOpener(const DatagramOpener&) = delete;
  DatagramOpener& operator=(const DatagramOpener&) = delete;

  // Authenticates and decrypts one whole datagram in place. On failure the datagram is to be
  // dropped (the session goes on) and the opener's state is exactly as before; the buffer's
  // contents are unspecified. Checked in this order, all but the tag before any cryptography:
  // kTruncated / kBadType / kBadHeader (header), kTooLarge, kWrongIndex, kUnknownEpoch,
  // kRekeyRequired (counter), kTooOld / kReplayed (window), kBadTag. Only after the tag
  // verifies: the window records the counter; a datagram of the next epoch makes it the
  // current one (the current becomes the previous, the one before is wiped).
  [[nodiscard]] Result<OpenedDatagram, DatagramErrc> Open(std::span<uint8_t> datagram);
  // Forgets the previous epoch (key wiped): the session's timer, kPreviousEpochSeconds after a
  // switch.
  void ExpirePreviousEpoch();

  uint64_t generation() const { return current_.generation; }
  bool has_previous_epoch() const { return previous_.aead != nullptr; }
  const ReplayWindow& window() const { return current_.window; }
  // The previous epoch's window, or nullptr when none is kept.
  const ReplayWindow* previous_window() const {
    return previous_.aead ? &previous_.window : nullptr;
  }
  size_t max_plaintext() const { return max_plaintext_; }

 private:
  struct Epoch {
    std::unique_ptr<RecordCipher> aead;
    ReplayWindow window;
    uint64_t generation = 0;
  };
  void AdvanceEpoch();
  Cipher cipher_;
  uint32_t local_index_;
  size_t max_plaintext_;
  Epoch current_;
  Epoch previous_;                         // aead == nullptr: none
  std::unique_ptr<RecordCipher> next_aead_;  // generation current + 1
  Key32 next_key_{};                       // its key, to derive the one after
};

}  // namespace dvpn::tunnel
