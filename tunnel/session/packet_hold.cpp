#include "tunnel/session/packet_hold.h"

#include <algorithm>
#include <cstring>

namespace dvpn::tunnel::session {

namespace {
constexpr size_t kFirstBuffer = 64 * 1024;
}

PacketHold::PacketHold(HoldBudget& budget, const PacketHoldLimits& limits)
    : budget_(budget), limits_(limits) {}

PacketHold::~PacketHold() { budget_.Give(buffer_.size()); }

bool PacketHold::Push(ByteSpan packet, bool to_client, const ip::PacketInfo& info,
                      uint64_t now_ms) {
  if (packet.empty() || packets() >= limits_.session_packets ||
      packet.size() > limits_.session_bytes - held_bytes_) {
    return false;
  }
  if (!MakeRoom(packet.size())) return false;
  if (head_ > 0 && head_ >= entries_.size() / 2) {  // the consumed entries go, amortized
    entries_.erase(entries_.begin(), entries_.begin() + static_cast<ptrdiff_t>(head_));
    head_ = 0;
  }
  std::memcpy(buffer_.data() + tail_, packet.data(), packet.size());
  entries_.push_back(Entry{tail_, static_cast<uint32_t>(packet.size()), to_client, now_ms, info});
  tail_ += packet.size();
  held_bytes_ += packet.size();
  return true;
}

bool PacketHold::MakeRoom(size_t n) {
  if (tail_ + n <= buffer_.size()) return true;
  // Move the live bytes to the front.
  const size_t start = empty() ? tail_ : entries_[head_].offset;
  if (start > 0) {
    std::memmove(buffer_.data(), buffer_.data() + start, tail_ - start);
    for (size_t i = head_; i < entries_.size(); ++i) entries_[i].offset -= start;
    tail_ -= start;
    if (tail_ + n <= buffer_.size()) return true;
  }
  // Grow within the session's bound (live bytes never exceed it) and the shared budget.
  size_t size = std::max(buffer_.size(), std::min(kFirstBuffer, limits_.session_bytes));
  while (size < tail_ + n && size < limits_.session_bytes) {
    size = std::min(size * 2, limits_.session_bytes);
  }
  if (size < tail_ + n) return false;
  if (!budget_.Take(size - buffer_.size())) return false;
  buffer_.resize(size);
  return true;
}

PacketHold::Front PacketHold::front() {
  const Entry& e = entries_[head_];
  return Front{std::span<uint8_t>(buffer_.data() + e.offset, e.size), e.to_client, &e.info};
}

void PacketHold::Pop() {
  if (empty()) return;
  held_bytes_ -= entries_[head_].size;
  ++head_;
  if (empty()) {  // everything left: start again at the front
    entries_.clear();
    head_ = 0;
    tail_ = 0;
  }
}

size_t PacketHold::DropExpired(uint64_t now_ms) {
  size_t n = 0;
  while (!empty() && now_ms - entries_[head_].at_ms > limits_.max_age_ms) {
    Pop();
    ++n;
  }
  return n;
}

size_t PacketHold::Clear() {
  const size_t n = packets();
  entries_.clear();
  head_ = 0;
  tail_ = 0;
  held_bytes_ = 0;
  return n;
}

void PacketHold::Trim() {
  if (!empty() || buffer_.empty()) return;
  budget_.Give(buffer_.size());
  std::vector<uint8_t>().swap(buffer_);
  std::vector<Entry>().swap(entries_);
  tail_ = 0;
}

}  // namespace dvpn::tunnel::session
