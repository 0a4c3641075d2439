#include "ledger/types.h"

#include "common/text.h"

namespace dvpn::ledger {

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kWrongLedger:
      return "wrong ledger";
    case Errc::kBadSignature:
      return "bad signature";
    case Errc::kNotPermitted:
      return "not permitted";
    case Errc::kReplay:
      return "replay";
    case Errc::kUnknownChannel:
      return "unknown channel";
    case Errc::kInsufficientBalance:
      return "insufficient balance";
    case Errc::kOverflow:
      return "overflow";
    case Errc::kChannelNotOpen:
      return "channel not open";
    case Errc::kBatchTooLarge:
      return "batch too large";
    case Errc::kStorage:
      return "storage failure";
  }
  return "unknown error";
}

Amount ChannelState::Remaining() const {
  // settled + refunded <= deposit is a store invariant; saturate rather than wrap if a corrupt
  // row ever breaks it, so a caller never sees a huge bogus amount.
  auto out = deposit.CheckedSub(settled);
  if (!out) return Amount::Zero();
  out = out->CheckedSub(refunded);
  return out ? *out : Amount::Zero();
}

bool ValidWithdrawDestination(std::string_view destination) {
  return destination.size() <= payments::kMaxWithdrawDestination && IsPrintableUtf8(destination);
}

}  // namespace dvpn::ledger
