#pragma once
// Helpers shared by the record and datagram tests and the datagram fuzz target: fixed keys, the
// ciphers this machine offers (the parameters of the cipher-parameterized tests), and the state
// of a DatagramOpener that a failed Open must leave unchanged. No gtest here: the fuzz target
// includes it too.

#include <cstdint>
#include <optional>
#include <vector>

#include "tunnel/datagram.h"

namespace dvpn::tunnel::testing {

// A key of 32 bytes `b`.
inline Key32 KeyFill(uint8_t b) {
  Key32 k;
  k.fill(b);
  return k;
}

// ChaCha20-Poly1305 always; AES-256-GCM too where the CPU has it.
inline std::vector<Cipher> Ciphers() {
  std::vector<Cipher> out = {Cipher::kChaCha20Poly1305};
  if (LocalCiphers() & uint8_t(Cipher::kAes256Gcm)) out.push_back(Cipher::kAes256Gcm);
  return out;
}

// Everything an Open may change.
struct OpenerSnapshot {
  uint64_t generation;
  bool has_previous;
  ReplayWindow window;
  std::optional<ReplayWindow> previous;
  bool operator==(const OpenerSnapshot&) const = default;
};

inline OpenerSnapshot Snap(const DatagramOpener& o) {
  OpenerSnapshot s{o.generation(), o.has_previous_epoch(), o.window(), std::nullopt};
  if (o.previous_window()) s.previous = *o.previous_window();
  return s;
}

}  // namespace dvpn::tunnel::testing
