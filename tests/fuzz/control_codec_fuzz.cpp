// libFuzzer target for the payment protocol's decoders (payments/wire/control_codec.h): msg2
// session terms and CONTROL payloads, both straight from the peer. The first input byte picks
// the decoder; the rest is the payload. Checks the codec's contract: no crash on any input, and
// whatever decodes re-encodes within the size limit to bytes that decode again and re-encode to
// the same bytes (a decoded message is always one this side could have sent).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "payments/wire/control_codec.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

namespace wire = dvpn::payments::wire;

void FuzzTerms(dvpn::ByteSpan input) {
  auto decoded = wire::DecodeTerms(input);
  if (!decoded || !decoded->has_value()) return;
  auto once = wire::EncodeTerms(**decoded);
  Check(!once.empty() && once.size() <= wire::kMaxTermsSize);
  auto again = wire::DecodeTerms(once);
  Check(again.has_value() && again->has_value());
  Check(wire::EncodeTerms(**again) == once);
}

void FuzzControl(dvpn::ByteSpan input) {
  auto decoded = wire::DecodeControl(input);
  if (!decoded || !decoded->has_value()) return;
  auto once = wire::EncodeControl(**decoded);
  Check(once.size() <= wire::kMaxControlSize);
  auto again = wire::DecodeControl(once);
  Check(again.has_value() && again->has_value());
  Check(wire::EncodeControl(**again) == once);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  dvpn::ByteSpan input(data + 1, size - 1);
  if (data[0] & 1) {
    FuzzTerms(input);
  } else {
    FuzzControl(input);
  }
  return 0;
}
