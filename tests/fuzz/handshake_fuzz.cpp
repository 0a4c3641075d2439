// Fuzz target: the responder's msg1 parser (header, mac1, DH, AEAD, hello fields, signature).
// Half of the inputs get a valid mac1 recomputed so the fuzzer also reaches past the mac1 check.
#include <sodium.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tunnel/handshake.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dvpn::tunnel;
  static const X25519KeyPair provider = [] {
    Key32 s;
    s.fill(0x70);
    return X25519KeyPair::FromSecret(s);
  }();
  static ReplayGuard guard(64);
  (void)HandshakeMessageSize(dvpn::ByteSpan(data, size));
  std::vector<uint8_t> msg(data, data + size);
  if (size == kMsg1Size && (data[0] & 0x80) == 0) {
    static const auto key = Mac1Key(provider.public_key);
    msg[0] = kMsg1Type;
    crypto_generichash(msg.data() + kMsg1Size - kMac1Size, kMac1Size, msg.data(),
                       kMsg1Size - kMac1Size, key.data(), key.size());
  }
  HandshakeResponder responder({&provider, &guard, nullptr, std::nullopt});
  (void)responder.CheckMac1(msg);
  auto hello = responder.ReadMessage1(msg);
  if (hello) {
    uint8_t out[kMaxMsg2Size];
    (void)responder.WriteMessage2(out, Cipher::kChaCha20Poly1305, {});
  }
  return 0;
}
