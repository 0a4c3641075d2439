// Fuzz target: the datagram opener (docs/tunnel.md, "Datagram records") with a fixed key and
// receiver index, driven through a sequence of operations read from the input:
//   raw bytes as a datagram; a genuine datagram of the previous / current / next / a later
//   epoch at a chosen counter (near the window's top, anywhere, near the 2^32 limit, at the
//   window's bottom), as is or with one byte changed; a replay of an accepted datagram; the
//   timer's ExpirePreviousEpoch.
// The first byte selects the cipher and the maximum plaintext. Aborts when a failed Open
// changed the opener's state, when a changed or replayed datagram authenticates, or when an
// accepted datagram does not then fail as kReplayed.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "tests/tunnel/cipher_test_util.h"
#include "tunnel/datagram.h"

namespace {

using namespace dvpn::tunnel;
using dvpn::tunnel::testing::Snap;

struct Reader {
  const uint8_t* p;
  size_t n;
  bool more() const { return n > 0; }
  uint8_t U8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint16_t U16() {
    const uint8_t hi = U8();
    return uint16_t(hi << 8 | U8());
  }
  std::vector<uint8_t> Bytes(size_t len) {
    if (len > n) len = n;
    std::vector<uint8_t> out(p, p + len);
    p += len;
    n -= len;
    return out;
  }
};

[[noreturn]] void Bug(const char* what) {
  std::fprintf(stderr, "datagram_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Cipher cipher = (data[0] & 1) && (LocalCiphers() & uint8_t(Cipher::kAes256Gcm))
                            ? Cipher::kAes256Gcm
                            : Cipher::kChaCha20Poly1305;
  const size_t max_plaintext = (data[0] & 2) ? 4096 : kDefaultMaxDatagramPlaintext;
  constexpr uint32_t kIndex = 0x01020304;
  Key32 key0;
  key0.fill(0x42);
  std::vector<Key32> keys = {key0};  // keys[g]: epoch key of generation g
  auto key_of = [&keys](uint64_t g) -> const Key32& {
    while (keys.size() <= g) keys.push_back(NextRecordKey(keys.back()));
    return keys[g];
  };

  DatagramOpener opener(cipher, key0, kIndex, max_plaintext);
  std::vector<std::vector<uint8_t>> accepted;  // originals, for replays (at most 64)
  Reader in{data + 1, size - 1};
  for (int op = 0; op < 256 && in.more(); ++op) {
    const uint8_t code = in.U8();
    std::vector<uint8_t> d;
    bool must_fail = false;  // changed or replayed: may never authenticate
    std::optional<uint64_t> sealed_generation;
    switch (code % 5) {
      case 0:  // raw bytes
        d = in.Bytes(in.U16() % (max_plaintext + 64));
        break;
      case 1:    // genuine
      case 2: {  // genuine, then one byte changed
        const uint64_t current = opener.generation();
        uint64_t g = current;
        const ReplayWindow* window = &opener.window();
        switch ((code >> 3) % 4) {
          case 0:
            g = current > 0 ? current - 1 : 0;
            window = current > 0 ? opener.previous_window() : window;
            break;
          case 1: break;
          case 2: g = current + 1, window = nullptr; break;
          case 3: g = current + 2 + in.U8() % 3, window = nullptr; break;
        }
        const uint64_t top = window && !window->empty() ? window->highest() : 0;
        const uint16_t v = in.U16();
        uint64_t counter = 0;
        switch ((code >> 5) % 4) {
          case 0: {
            const int64_t c = int64_t(top) + int16_t(v);
            counter = c < 0 ? 0 : uint64_t(c);
            break;
          }
          case 1: counter = v; break;
          case 2: counter = kMaxDatagramsPerEpoch - 1 - (v & 0xff); break;
          case 3: counter = top >= kReplayWindowBits ? top - kReplayWindowBits + (v & 0x1ff) : v;
        }
        const auto plaintext = in.Bytes(in.U8() % 64);
        DatagramSealer sealer(cipher, key_of(g), kIndex, max_plaintext);
        sealer.SetCounterForTest(counter);
        d.resize(plaintext.size() + kDatagramOverhead);
        auto n = sealer.Seal(plaintext, d);
        if (!n) {
          if (counter >= kMaxDatagramsPerEpoch) continue;  // the sealer's hard limit
          Bug("sealing a small genuine datagram failed");
        }
        sealed_generation = g;
        if (code % 5 == 2) {
          const size_t pos = in.U16() % d.size();
          d[pos] ^= uint8_t(in.U8() | 1);
          must_fail = true;
        }
        break;
      }
      case 3:  // replay
        if (accepted.empty()) continue;
        d = accepted[in.U8() % accepted.size()];
        must_fail = true;
        break;
      case 4:
        opener.ExpirePreviousEpoch();
        if (opener.has_previous_epoch() || opener.previous_window()) Bug("previous epoch kept");
        continue;
    }

    const auto before = Snap(opener);
    std::vector<uint8_t> work = d;
    auto opened = opener.Open(work);
    if (!opened) {
      if (!(Snap(opener) == before)) Bug("a failed Open changed the opener's state");
      continue;
    }
    if (must_fail) Bug("a changed or replayed datagram authenticated");
    if (opened->plaintext.size() + kDatagramOverhead != d.size()) Bug("plaintext size");
    if (sealed_generation && opened->generation != *sealed_generation) Bug("generation");
    // Accepted once: the same bytes again are a replay, and change nothing.
    const auto after = Snap(opener);
    work = d;
    auto again = opener.Open(work);
    if (again || again.error().code != DatagramErrc::kReplayed) Bug("accepted twice");
    if (!(Snap(opener) == after)) Bug("a replay changed the opener's state");
    if (accepted.size() < 64) accepted.push_back(d);
  }
  return 0;
}
