#pragma once
// The wall clock in Unix milliseconds, as the handshake's timestamp and other dated messages
// carry it. Header-only.

#include <chrono>
#include <cstdint>

namespace dvpn::testing {

inline uint64_t UnixMillis() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace dvpn::testing
