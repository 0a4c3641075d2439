#pragma once
// RecordChannel: the seam between the tunnel's plaintext (mux frames, later IP packets) and
// its two framings of encrypted records (docs/tunnel.md, "Records" and "Datagram records"):
//   - StreamRecordChannel: records over one ordered byte stream (TCP), tunnel/record.h, wire
//     bytes unchanged; any failure ends the channel.
//   - DatagramChannel: one record per UDP datagram, tunnel/datagram.h; a failing datagram is
//     dropped alone and the channel goes on.
// The reader loop is the same for both: NextUnitSize on what is buffered, then Open that many
// bytes in place; the writer Seals into a caller-owned buffer and sends the bytes returned.
// Both directions of one session; rekeying (the soft limits, or RequestRekey from the
// session's timer) is done here, so callers never see kRekeyRequired. No heap allocation per
// record. Not thread-safe: owned by the session, used on its thread.

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/result.h"
#include "tunnel/datagram.h"
#include "tunnel/handshake.h"
#include "tunnel/record.h"

namespace dvpn::tunnel {

enum class ChannelErrc {
  kTooLarge,        // Seal: plaintext longer than max_plaintext()
  kBufferTooSmall,  // Seal: `out` shorter than plaintext.size() + max_overhead()
  kDropped,         // Open (datagrams): this unit is refused and ignored; the channel goes on
  kClosed,          // the channel failed (stream: any bad record); the session must end
};

class RecordChannel {
 public:
  virtual ~RecordChannel() = default;

  // Seals `plaintext` (must not overlap `out`) into `out` and returns how many bytes to send:
  // one datagram, or the next bytes of the stream (a REKEY record may come first). Rekeys first
  // when the sender's soft limits or RequestRekey() say so. kTooLarge, kBufferTooSmall (nothing
  // consumed), kClosed (only if the channel is unusable).
  [[nodiscard]] virtual Result<size_t, ChannelErrc> Seal(ByteSpan plaintext,
                                                         std::span<uint8_t> out) = 0;
  // Size of the unit that starts `buffered`: the stream's next record (0 while more bytes are
  // needed to tell), or the whole datagram. kClosed on a stream header no record has.
  [[nodiscard]] virtual Result<size_t, ChannelErrc> NextUnitSize(ByteSpan buffered) const = 0;
  // Authenticates and decrypts one unit (exactly NextUnitSize bytes) in place; the plaintext
  // points into `unit` and may be empty (a REKEY record, an empty datagram). kDropped for a
  // datagram that fails (message: the DatagramErrc's name), kClosed for a stream record that
  // fails or any record after one did.
  [[nodiscard]] virtual Result<std::span<uint8_t>, ChannelErrc> Open(std::span<uint8_t> unit) = 0;
  // Start a new key (epoch) before the next Seal: the session's kRekeyAfterSeconds timer.
  virtual void RequestRekey() = 0;
  virtual size_t max_plaintext() const = 0;
  // The most bytes Seal adds to a plaintext.
  virtual size_t max_overhead() const = 0;
  // Key generation of the sending direction (number of rekeys so far).
  virtual uint64_t send_generation() const = 0;
};

// Stream records (record.h) behind RecordChannel. The bytes on the wire are exactly what
// RecordSealer writes; a rekey is a REKEY record followed, in the same Seal, by the data record.
class StreamRecordChannel final : public RecordChannel {
 public:
  // Sends with keys.send_key, receives with keys.recv_key.
  explicit StreamRecordChannel(const SessionKeys& keys)
      : sealer_(keys.cipher, keys.send_key), opener_(keys.cipher, keys.recv_key) {}

  Result<size_t, ChannelErrc> Seal(ByteSpan plaintext, std::span<uint8_t> out) override;
  Result<size_t, ChannelErrc> NextUnitSize(ByteSpan buffered) const override;
  Result<std::span<uint8_t>, ChannelErrc> Open(std::span<uint8_t> unit) override;
  void RequestRekey() override { rekey_requested_ = true; }
  size_t max_plaintext() const override { return kMaxRecordPlaintext; }
  size_t max_overhead() const override { return 2 * kRecordOverhead; }
  uint64_t send_generation() const override { return sealer_.generation(); }

  const RecordSealer& sealer() const { return sealer_; }
  const RecordOpener& opener() const { return opener_; }
  RecordSealer& sealer_for_test() { return sealer_; }
  RecordOpener& opener_for_test() { return opener_; }

 private:
  RecordSealer sealer_;
  RecordOpener opener_;
  bool rekey_requested_ = false;
};

// Datagram records (datagram.h) behind RecordChannel.
class DatagramChannel final : public RecordChannel {
 public:
  // Sends to the peer's `remote_index` with DatagramKey(keys.send_key); receives datagrams for
  // `local_index` with DatagramKey(keys.recv_key). `max_plaintext` as in DatagramSealer, both
  // directions.
  DatagramChannel(const SessionKeys& keys, uint32_t local_index, uint32_t remote_index,
                  size_t max_plaintext = kDefaultMaxDatagramPlaintext)
      : sealer_(keys, remote_index, max_plaintext), opener_(keys, local_index, max_plaintext) {}

  Result<size_t, ChannelErrc> Seal(ByteSpan plaintext, std::span<uint8_t> out) override;
  Result<size_t, ChannelErrc> NextUnitSize(ByteSpan buffered) const override {
    return buffered.size();
  }
  Result<std::span<uint8_t>, ChannelErrc> Open(std::span<uint8_t> unit) override;
  void RequestRekey() override { rekey_requested_ = true; }
  size_t max_plaintext() const override { return sealer_.max_plaintext(); }
  size_t max_overhead() const override { return kDatagramOverhead; }
  uint64_t send_generation() const override { return sealer_.generation(); }

  const DatagramSealer& sealer() const { return sealer_; }
  DatagramOpener& opener() { return opener_; }
  DatagramSealer& sealer_for_test() { return sealer_; }

 private:
  DatagramSealer sealer_;
  DatagramOpener opener_;
  bool rekey_requested_ = false;
};

}  // namespace dvpn::tunnel
