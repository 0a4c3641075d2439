// Fuzz target: the record opener over a byte stream: header parsing (RecordSize) and Open on
// every record the stream claims to contain, for both ciphers, with a fixed key. The first
// input byte selects the cipher and whether a genuine record is prepended.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "tunnel/record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dvpn::tunnel;
  if (size == 0) return 0;
  Key32 key;
  key.fill(0x42);
  Cipher cipher = (data[0] & 1) && (LocalCiphers() & uint8_t(Cipher::kAes256Gcm))
                      ? Cipher::kAes256Gcm
                      : Cipher::kChaCha20Poly1305;
  std::vector<uint8_t> stream;
  if (data[0] & 2) {  // a valid record first, so the opener's counter and rekey paths run
    RecordSealer sealer(cipher, key);
    std::vector<uint8_t> rec(64);
    size_t n = (data[0] & 4) ? *sealer.SealRekey(rec) : *sealer.Seal({data, size > 40 ? 40 : size}, rec);
    stream.insert(stream.end(), rec.begin(), rec.begin() + n);
  }
  stream.insert(stream.end(), data + 1, data + size);
  RecordOpener opener(cipher, key);
  size_t pos = 0;
  for (int i = 0; i < 64 && pos < stream.size(); ++i) {
    auto need = RecordSize({stream.data() + pos, stream.size() - pos});
    if (!need || *need == 0 || *need > stream.size() - pos) break;
    auto opened = opener.Open({stream.data() + pos, *need});
    if (!opened) break;
    pos += *need;
  }
  return 0;
}
