#include "common/clock.h"

#include <chrono>

namespace dvpn {

uint64_t SystemClock::NowSeconds() const { return UnixSeconds(); }

uint64_t UnixSeconds() {
  using namespace std::chrono;
  return static_cast<uint64_t>(
      duration_cast<seconds>(system_clock::now().time_since_epoch()).count());
}

}  // namespace dvpn
