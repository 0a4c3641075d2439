// libFuzzer target for a signed offer as a remote peer delivers it (docs/protocol.md §6, inside
// the gossip `Offers` message of §7): the bytes of one dvpn.v1.Offer, through what every node
// applies to it before it may be stored: the protobuf parse, marketplace/wire.h's FromProto
// (byte lengths, the 1,400-byte bound, CheckFields), the time rule, the digest and the BIP-340
// verification. Checks the contract: no crash on any input; whatever FromProto accepts has a
// signature encoding within the limit, a known format (1: SOCKS only, the protobuf without
// format or modes; 2: known, non-zero modes, the encoding under the format-2 tag), converts
// back to a dvpn.v1.Offer that FromProto accepts again as the same offer, and verifies (or not)
// the same way twice.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <google/protobuf/stubs/logging.h>

#include "dvpn/v1/marketplace.pb.h"
#include "marketplace/offer.h"
#include "marketplace/wire.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

// libprotobuf logs every string field that is not UTF-8 (a frame that then fails to parse);
// silenced here so that the fuzzer's output stays readable and its speed is its own.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

constexpr uint64_t kNowUnix = 1'900'000'000;  // the seeds' offers are issued then

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dvpn::marketplace;
  dvpn::v1::Offer proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto offer = FromProto(proto);
  if (!offer) return 0;
  Check(CheckFields(*offer).has_value());
  const auto encoded = EncodeOffer(*offer);
  Check(!encoded.empty() && encoded.size() <= kMaxOfferEncoding);
  (void)CheckTime(*offer, kNowUnix);
  (void)OfferKeyOf(*offer);
  Check(offer->endpoints.size() <= kMaxEndpoints && offer->region.size() <= kMaxRegion);
  for (const auto& e : offer->endpoints) Check(ValidHost(e.host) && e.port != 0);
  Check(CheckModes(offer->modes).has_value());
  if (offer->format == 1) {
    Check(offer->modes == kModeSocks && encoded[0] == 13);  // tag("dvpn.v1.Offer")
  } else {
    Check(offer->format == 2 && encoded[0] == 14 && encoded.back() == offer->modes);
  }

  dvpn::v1::Offer again_proto;
  ToProto(*offer, &again_proto);
  Check(offer->format == 1 ? again_proto.format() == 0 && again_proto.modes() == 0
                           : again_proto.format() == 2 && again_proto.modes() == offer->modes);
  auto again = FromProto(again_proto);
  Check(again.has_value() && *again == *offer);
  Check(EncodeOffer(*again) == encoded);

  const auto digest = OfferDigest(*offer);
  Check(OfferDigest(*again) == digest);
  const bool valid = VerifyOfferSignature(*offer, digest);
  Check(VerifyOfferSignature(*again, digest) == valid);
  return 0;
}
