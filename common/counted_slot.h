#pragma once
// CountedSlot: one place in a bounded count of concurrent things (e.g. open watch streams).
// TryTake takes a place when fewer than `max` are taken; the slot gives it back when destroyed.
// Thread-safe (the count is atomic); the count must outlive its slots.

#include <atomic>
#include <cstdint>
#include <optional>

namespace dvpn {

class CountedSlot {
 public:
  static std::optional<CountedSlot> TryTake(std::atomic<uint32_t>& count, uint32_t max) {
    if (count.fetch_add(1) >= max) {
      count.fetch_sub(1);
      return std::nullopt;
    }
    return CountedSlot(&count);
  }
  CountedSlot(CountedSlot&& o) noexcept : count_(o.count_) { o.count_ = nullptr; }
  CountedSlot& operator=(CountedSlot&&) = delete;
  CountedSlot(const CountedSlot&) = delete;
  CountedSlot& operator=(const CountedSlot&) = delete;
  ~CountedSlot() {
    if (count_) count_->fetch_sub(1);
  }

 private:
  explicit CountedSlot(std::atomic<uint32_t>* count) : count_(count) {}
  std::atomic<uint32_t>* count_;
};

}  // namespace dvpn
