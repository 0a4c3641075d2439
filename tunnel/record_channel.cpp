#include "tunnel/record_channel.h"

namespace dvpn::tunnel {

// ---------------------------------------------------------------- stream records

Result<size_t, ChannelErrc> StreamRecordChannel::Seal(ByteSpan plaintext,
                                                      std::span<uint8_t> out) {
  if (plaintext.size() > kMaxRecordPlaintext) {
    return Fail(ChannelErrc::kTooLarge, "plaintext larger than a record");
  }
  const bool rekey = rekey_requested_ || sealer_.RekeyDue();
  const size_t need = plaintext.size() + kRecordOverhead + (rekey ? kRecordOverhead : 0);
  if (out.size() < need) return Fail(ChannelErrc::kBufferTooSmall, "record buffer");
  size_t pos = 0;
  if (rekey) {
    auto n = sealer_.SealRekey(out);
    if (!n) return Fail(ChannelErrc::kClosed, std::move(n.error().message));
    pos = *n;
    rekey_requested_ = false;
  }
  auto n = sealer_.Seal(plaintext, out.subspan(pos));
  // Sizes were checked above and the key is fresh enough (RekeyDue comes long before the hard
  // limit), so this fails only if the sealer's rules changed under us.
  if (!n) return Fail(ChannelErrc::kClosed, std::move(n.error().message));
  return pos + *n;
}

Result<size_t, ChannelErrc> StreamRecordChannel::NextUnitSize(ByteSpan buffered) const {
  auto n = RecordSize(buffered);
  if (!n) return Fail(ChannelErrc::kClosed, std::move(n.error().message));
  return *n;
}

Result<std::span<uint8_t>, ChannelErrc> StreamRecordChannel::Open(std::span<uint8_t> unit) {
  auto opened = opener_.Open(unit);
  if (!opened) return Fail(ChannelErrc::kClosed, std::move(opened.error().message));
  return opened->plaintext;
}

// ---------------------------------------------------------------- datagrams

Result<size_t, ChannelErrc> DatagramChannel::Seal(ByteSpan plaintext, std::span<uint8_t> out) {
  if (plaintext.size() > sealer_.max_plaintext()) {
    return Fail(ChannelErrc::kTooLarge, "plaintext larger than a datagram");
  }
  if (out.size() < plaintext.size() + kDatagramOverhead) {
    return Fail(ChannelErrc::kBufferTooSmall, "datagram buffer");
  }
  if (rekey_requested_ || sealer_.RekeyDue()) {
    sealer_.NextEpoch();
    rekey_requested_ = false;
  }
  auto n = sealer_.Seal(plaintext, out);
  if (!n) return Fail(ChannelErrc::kClosed, std::move(n.error().message));
  return *n;
}

Result<std::span<uint8_t>, ChannelErrc> DatagramChannel::Open(std::span<uint8_t> unit) {
  auto opened = opener_.Open(unit);
  // The code's name, at most 15 characters: no allocation for a dropped datagram.
  if (!opened) return Fail(ChannelErrc::kDropped, DatagramErrcName(opened.error().code));
  return opened->plaintext;
}

}  // namespace dvpn::tunnel
