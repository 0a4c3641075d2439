#pragma once
// PacketHold: the packets of one paid packet-mode session that met its forwarding limit (or a
// pause), held in arrival order until the limit rises (docs/full-tunnel.md "Held at the limit").
//
// Bounded three ways: bytes and packets per session, and a HoldBudget of buffer bytes shared by
// every session of the exit (a hold takes its buffer from the budget as it grows, 64 KiB first,
// then doublings up to the per-session bound, and gives it back on Trim() when empty, or when it
// is destroyed). Push() copies the packet and its parse; nothing is allocated per packet once the
// buffer has grown. A packet older than max_age_ms is never handed out (DropExpired).
//
// Threading: the exit's io thread, like ExitPackets; nothing here is thread-safe. The budget must
// outlive every hold that uses it.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/bytes.h"
#include "tunnel/ip/packet.h"

namespace dvpn::tunnel::session {

struct PacketHoldLimits {
  size_t session_bytes = 4 << 20;  // packet bytes one session holds (a slow payment loop's worth)
  size_t session_packets = 4096;
  uint64_t max_age_ms = 100;       // older packets are dropped, never sent
  size_t total_bytes = 32 << 20;   // buffer bytes of every session together (HoldBudget)
};

// Buffer bytes shared by the holds of one exit.
class HoldBudget {
 public:
  explicit HoldBudget(size_t limit) : limit_(limit) {}
  HoldBudget(const HoldBudget&) = delete;
  HoldBudget& operator=(const HoldBudget&) = delete;
  bool Take(size_t n) {
    if (n > limit_ - used_) return false;
    used_ += n;
    return true;
  }
  void Give(size_t n) { used_ -= n < used_ ? n : used_; }
  size_t used() const { return used_; }
  size_t limit() const { return limit_; }

 private:
  size_t limit_;
  size_t used_ = 0;
};

class PacketHold {
 public:
  // The oldest packet: its bytes (valid until the next Push, Pop or Trim), its direction and
  // the parse it was held with.
  struct Front {
    std::span<uint8_t> packet;
    bool to_client = false;
    const ip::PacketInfo* info = nullptr;
  };

  PacketHold(HoldBudget& budget, const PacketHoldLimits& limits);
  ~PacketHold();
  PacketHold(const PacketHold&) = delete;
  PacketHold& operator=(const PacketHold&) = delete;

  // Copies the packet behind the others. False (nothing held) when it would pass the session's
  // bytes or packets, or its buffer cannot grow within the budget.
  bool Push(ByteSpan packet, bool to_client, const ip::PacketInfo& info, uint64_t now_ms);
  bool empty() const { return head_ == entries_.size(); }
  size_t packets() const { return entries_.size() - head_; }
  size_t bytes() const { return held_bytes_; }
  size_t buffer_bytes() const { return buffer_.size(); }  // taken from the budget
  Front front();
  void Pop();
  // Drops the packets at the front held longer than max_age_ms; returns how many.
  size_t DropExpired(uint64_t now_ms);
  // Drops every packet; returns how many.
  size_t Clear();
  // Gives the buffer back to the budget when nothing is held.
  void Trim();

 private:
  struct Entry {
    size_t offset;
    uint32_t size;
    bool to_client;
    uint64_t at_ms;
    ip::PacketInfo info;
  };
  // Room for `n` more bytes at the end of the buffer: moves the live bytes to the front, or
  // grows the buffer within the budget. False when neither makes room.
  bool MakeRoom(size_t n);

  HoldBudget& budget_;
  PacketHoldLimits limits_;
  std::vector<uint8_t> buffer_;  // live bytes are [entries_[head_].offset, tail_)
  size_t tail_ = 0;
  std::vector<Entry> entries_;
  size_t head_ = 0;
  size_t held_bytes_ = 0;
};

}  // namespace dvpn::tunnel::session
