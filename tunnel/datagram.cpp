#include "tunnel/datagram.h"

#include <algorithm>
#include <cstring>

namespace dvpn::tunnel {
namespace {

// Every failure message here is at most 15 characters: libstdc++ keeps those inside the
// std::string (small-string buffer), so dropping a datagram allocates nothing.
template <size_t N>
std::unexpected<Error<DatagramErrc>> Drop(DatagramErrc code, const char (&message)[N]) {
  static_assert(N - 1 <= 15, "keep datagram error messages within the small-string buffer");
  return Fail(code, message);
}

uint32_t LoadU32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

uint64_t LoadU64(const uint8_t* p) { return uint64_t(LoadU32(p)) << 32 | LoadU32(p + 4); }

void StoreU32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}

void StoreU64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = uint8_t(v);
}

// A derived key that lives for one expression (a delegating constructor's argument) and is
// wiped after it; RecordCipher keeps its own copy.
struct WipedKey {
  Key32 key;
  ~WipedKey() { Wipe(key); }
};

size_t ClampPlaintext(size_t max_plaintext) {
  return std::min(max_plaintext, kMaxDatagramPlaintext);
}

}  // namespace

const char* DatagramErrcName(DatagramErrc e) {
  switch (e) {
    case DatagramErrc::kTruncated: return "truncated";
    case DatagramErrc::kBadType: return "bad type";
    case DatagramErrc::kBadHeader: return "bad header";
    case DatagramErrc::kWrongIndex: return "wrong index";
    case DatagramErrc::kTooLarge: return "too large";
    case DatagramErrc::kUnknownEpoch: return "unknown epoch";
    case DatagramErrc::kTooOld: return "too old";
    case DatagramErrc::kReplayed: return "replayed";
    case DatagramErrc::kRekeyRequired: return "rekey required";
    case DatagramErrc::kBadTag: return "bad tag";
    case DatagramErrc::kBufferTooSmall: return "buffer too small";
  }
  return "unknown";
}

Key32 DatagramKey(const Key32& record_key) {
  Key32 key;
  Hkdf({}, record_key, AsBytes(kDatagramKeyLabel), key);
  return key;
}

Result<DatagramHeader, DatagramErrc> ParseDatagramHeader(ByteSpan datagram) {
  if (datagram.empty()) return Drop(DatagramErrc::kTruncated, "empty");
  if (datagram[0] != kDatagramTypeData) return Drop(DatagramErrc::kBadType, "not data");
  if (datagram.size() < kDatagramOverhead) return Drop(DatagramErrc::kTruncated, "short datagram");
  if (datagram[2] != 0 || datagram[3] != 0) return Drop(DatagramErrc::kBadHeader, "reserved bits");
  return DatagramHeader{datagram[1], LoadU32(datagram.data() + 4), LoadU64(datagram.data() + 8)};
}

// ---------------------------------------------------------------- replay window

Result<void, DatagramErrc> ReplayWindow::Check(uint64_t counter) const {
  if (!any_ || counter > highest_) return {};
  if (highest_ - counter >= kReplayWindowBits) return Drop(DatagramErrc::kTooOld, "too old");
  const uint64_t pos = counter % kReplayWindowBits;
  if (bits_[pos / 64] >> (pos % 64) & 1) return Drop(DatagramErrc::kReplayed, "replayed");
  return {};
}

void ReplayWindow::Clear(uint64_t from, uint64_t to) {
  // The ring positions of from..to (at most kReplayWindowBits counters), a word at a time.
  while (from <= to) {
    const uint64_t pos = from % kReplayWindowBits;
    const uint64_t bit = pos % 64;
    const uint64_t n = std::min<uint64_t>(64 - bit, to - from + 1);
    const uint64_t mask = n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1) << bit;
    bits_[pos / 64] &= ~mask;
    from += n;
  }
}

void ReplayWindow::Accept(uint64_t counter) {
  if (any_ && counter > highest_) {
    // Counters highest+1 .. counter enter the window: forget what their ring bits held.
    if (counter - highest_ >= kReplayWindowBits) {
      bits_.fill(0);
    } else {
      Clear(highest_ + 1, counter);
    }
  }
  if (!any_ || counter > highest_) highest_ = counter;
  any_ = true;
  const uint64_t pos = counter % kReplayWindowBits;
  bits_[pos / 64] |= uint64_t{1} << (pos % 64);
}

// ---------------------------------------------------------------- sealer

DatagramSealer::DatagramSealer(const SessionKeys& keys, uint32_t remote_index,
                               size_t max_plaintext)
    : DatagramSealer(keys.cipher, WipedKey{DatagramKey(keys.send_key)}.key, remote_index,
                     max_plaintext) {}

DatagramSealer::DatagramSealer(Cipher cipher, const Key32& epoch0_key, uint32_t remote_index,
                               size_t max_plaintext)
    : aead_(cipher, epoch0_key),
      remote_index_(remote_index),
      max_plaintext_(ClampPlaintext(max_plaintext)) {}

Result<size_t, DatagramErrc> DatagramSealer::Seal(ByteSpan plaintext, std::span<uint8_t> out) {
  if (plaintext.size() > max_plaintext_) return Drop(DatagramErrc::kTooLarge, "plaintext");
  const size_t total = plaintext.size() + kDatagramOverhead;
  if (out.size() < total) return Drop(DatagramErrc::kBufferTooSmall, "out buffer");
  if (counter_ >= kMaxDatagramsPerEpoch) {
    return Drop(DatagramErrc::kRekeyRequired, "epoch exhausted");
  }
  uint8_t* body = out.data() + kDatagramHeaderSize;
  if (!plaintext.empty() && plaintext.data() != body) {
    std::memmove(body, plaintext.data(), plaintext.size());
  }
  out[0] = kDatagramTypeData;
  out[1] = uint8_t(generation_);
  out[2] = 0;
  out[3] = 0;
  StoreU32(out.data() + 4, remote_index_);
  StoreU64(out.data() + 8, counter_);
  aead_.Encrypt(std::span<uint8_t>(body, plaintext.size()),
                ByteSpan(out.data(), kDatagramHeaderSize), counter_, body + plaintext.size());
  ++counter_;
  bytes_ += plaintext.size();
  return total;
}

void DatagramSealer::NextEpoch() {
  aead_.Rekey();
  counter_ = 0;
  bytes_ = 0;
  ++generation_;
}

// ---------------------------------------------------------------- opener

DatagramOpener::DatagramOpener(const SessionKeys& keys, uint32_t local_index,
                               size_t max_plaintext)
    : DatagramOpener(keys.cipher, WipedKey{DatagramKey(keys.recv_key)}.key, local_index,
                     max_plaintext) {}

DatagramOpener::DatagramOpener(Cipher cipher, const Key32& epoch0_key, uint32_t local_index,
                               size_t max_plaintext)
    : cipher_(cipher),
      local_index_(local_index),
      max_plaintext_(ClampPlaintext(max_plaintext)) {
  current_.aead = std::make_unique<RecordCipher>(cipher_, epoch0_key);
  next_key_ = NextRecordKey(epoch0_key);
  next_aead_ = std::make_unique<RecordCipher>(cipher_, next_key_);
}

DatagramOpener::~DatagramOpener() { Wipe(next_key_); }

void DatagramOpener::ExpirePreviousEpoch() {
  previous_.aead.reset();  // RecordCipher wipes its key
  previous_.window = ReplayWindow();
}

void DatagramOpener::AdvanceEpoch() {
  // Only ever called after a datagram of the next epoch authenticated.
  previous_ = std::move(current_);
  current_.aead = std::move(next_aead_);
  current_.window = ReplayWindow();
  current_.generation = previous_.generation + 1;
  Key32 after = NextRecordKey(next_key_);
  next_key_ = after;
  Wipe(after);
  next_aead_ = std::make_unique<RecordCipher>(cipher_, next_key_);
}

Result<OpenedDatagram, DatagramErrc> DatagramOpener::Open(std::span<uint8_t> datagram) {
  auto header = ParseDatagramHeader(datagram);
  if (!header) return std::unexpected(std::move(header.error()));
  if (datagram.size() > max_plaintext_ + kDatagramOverhead) {
    return Drop(DatagramErrc::kTooLarge, "datagram");
  }
  if (header->receiver_index != local_index_) return Drop(DatagramErrc::kWrongIndex, "index");

  // The epoch byte relative to the current epoch, mod 256: 0 current, 1 next, 255 previous.
  const uint8_t delta = uint8_t(header->epoch - uint8_t(current_.generation));
  RecordCipher* aead = nullptr;
  const ReplayWindow* window = nullptr;
  static const ReplayWindow kEmptyWindow;
  if (delta == 0) {
    aead = current_.aead.get();
    window = &current_.window;
  } else if (delta == 1) {
    aead = next_aead_.get();
    window = &kEmptyWindow;
  } else if (delta == 255 && previous_.aead) {
    aead = previous_.aead.get();
    window = &previous_.window;
  } else {
    return Drop(DatagramErrc::kUnknownEpoch, "epoch");
  }
  const uint64_t counter = header->counter;
  if (counter >= kMaxDatagramsPerEpoch) return Drop(DatagramErrc::kRekeyRequired, "counter");
  if (auto fresh = window->Check(counter); !fresh) return std::unexpected(std::move(fresh.error()));

  const size_t pt_len = datagram.size() - kDatagramOverhead;
  std::span<uint8_t> body = datagram.subspan(kDatagramHeaderSize, pt_len);
  if (!aead->Decrypt(body, ByteSpan(datagram.data(), kDatagramHeaderSize), counter,
                     datagram.data() + kDatagramHeaderSize + pt_len)) {
    return Drop(DatagramErrc::kBadTag, "bad tag");
  }

  // Authenticated: only now may the state move.
  uint64_t generation = current_.generation;
  if (delta == 1) {
    AdvanceEpoch();
    generation = current_.generation;
  } else if (delta == 255) {
    generation = previous_.generation;
  }
  if (delta == 255) {
    previous_.window.Accept(counter);
  } else {
    current_.window.Accept(counter);
    // Past the grace the previous epoch's datagrams are older than the window reaches.
    if (previous_.aead && current_.window.highest() >= kPreviousEpochGrace) {
      ExpirePreviousEpoch();
    }
  }
  return OpenedDatagram{body, generation, counter};
}

}  // namespace dvpn::tunnel
