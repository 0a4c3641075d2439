#include "marketplace/errc.h"

namespace dvpn::marketplace {

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kBadField: return "bad field";
    case Errc::kTooLarge: return "too large";
    case Errc::kBadSignature: return "bad signature";
    case Errc::kExpired: return "expired";
    case Errc::kWrongNetwork: return "wrong network";
    case Errc::kNotNewer: return "not newer";
    case Errc::kRefused: return "refused";
    case Errc::kBadConfig: return "bad config";
    case Errc::kNotRunning: return "not running";
    case Errc::kTransport: return "transport";
  }
  return "?";
}

}  // namespace dvpn::marketplace
