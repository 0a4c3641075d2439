#include "tunnel/socks5.h"

#include <algorithm>
#include <cassert>
#include <string>
#include <utility>

namespace dvpn::tunnel {

void Socks5ReplyBytes::Push(uint8_t v) {
  assert(size_ < buf_.size());
  buf_[size_++] = v;
}

Socks5Reply Socks5ReplyFor(OpenFailure failure) {
  switch (failure) {
    case OpenFailure::kGeneral:
      return Socks5Reply::kGeneralFailure;
    case OpenFailure::kNotAllowed:
      return Socks5Reply::kNotAllowed;
    case OpenFailure::kNetworkUnreachable:
      return Socks5Reply::kNetworkUnreachable;
    case OpenFailure::kHostUnreachable:
      return Socks5Reply::kHostUnreachable;
    case OpenFailure::kRefused:
      return Socks5Reply::kConnectionRefused;
    case OpenFailure::kTtlExpired:
      return Socks5Reply::kTtlExpired;
    case OpenFailure::kCommandNotSupported:
      return Socks5Reply::kCommandNotSupported;
    case OpenFailure::kAddressTypeNotSupported:
      return Socks5Reply::kAddressTypeNotSupported;
  }
  return Socks5Reply::kGeneralFailure;  // a value outside the enum (from the wire)
}

namespace {

void PushHeader(Socks5ReplyBytes& out, Socks5Reply code) {
  out.Push(kSocks5Version);
  out.Push(static_cast<uint8_t>(code));
  out.Push(0x00);  // RSV
}

void PushPort(Socks5ReplyBytes& out, uint16_t port) {
  out.Push(static_cast<uint8_t>(port >> 8));
  out.Push(static_cast<uint8_t>(port & 0xFF));
}

void PushZeroIpv4(Socks5ReplyBytes& out, uint16_t port) {
  out.Push(kSocks5AtypIpv4);
  for (int i = 0; i < 4; ++i) out.Push(0);
  PushPort(out, port);
}

Socks5ReplyBytes TwoBytes(uint8_t a, uint8_t b) {
  Socks5ReplyBytes out;
  out.Push(a);
  out.Push(b);
  return out;
}

}  // namespace

Socks5ReplyBytes EncodeSocks5Success(const Destination& bound) {
  Socks5ReplyBytes out;
  PushHeader(out, Socks5Reply::kSucceeded);
  switch (bound.kind) {
    case Destination::Kind::kIpv4:
      out.Push(kSocks5AtypIpv4);
      for (uint8_t b : bound.v4) out.Push(b);
      PushPort(out, bound.port);
      return out;
    case Destination::Kind::kIpv6:
      out.Push(kSocks5AtypIpv6);
      for (uint8_t b : bound.v6) out.Push(b);
      PushPort(out, bound.port);
      return out;
    case Destination::Kind::kDomain:
      if (bound.domain.empty() || bound.domain.size() > 255) break;
      out.Push(kSocks5AtypDomain);
      out.Push(static_cast<uint8_t>(bound.domain.size()));
      for (char c : bound.domain) out.Push(static_cast<uint8_t>(c));
      PushPort(out, bound.port);
      return out;
  }
  PushZeroIpv4(out, bound.port);
  return out;
}

Socks5ReplyBytes EncodeSocks5Failure(Socks5Reply code) {
  Socks5ReplyBytes out;
  PushHeader(out, code);
  PushZeroIpv4(out, 0);
  return out;
}

Socks5ReplyBytes EncodeSocks5Failure(OpenFailure failure) {
  return EncodeSocks5Failure(Socks5ReplyFor(failure));
}

Socks5ServerParser::Socks5ServerParser(Socks5ServerOptions options)
    : options_(std::move(options)) {}

Result<Socks5ServerParser::Progress, Socks5Errc> Socks5ServerParser::Feed(
    std::span<const uint8_t> in) {
  if (phase_ == Phase::kDone || phase_ == Phase::kFailed) {
    return dvpn::Fail(Socks5Errc::kBadState, "SOCKS5 parser fed after it finished");
  }
  size_t consumed = 0;
  // Each pass either completes the message, runs out of input, or copies at least one byte:
  // NeededLength() > held_ until the message is whole, so the loop is bounded by in.size().
  while (true) {
    auto need = NeededLength();
    if (!need) return std::unexpected(std::move(need.error()));
    if (held_ == *need) return Complete(consumed);
    if (consumed == in.size()) return Progress{consumed, Event::kNeedMore, {}};
    size_t take = std::min(*need - held_, in.size() - consumed);
    std::copy_n(in.begin() + consumed, take, buf_.begin() + held_);
    held_ += take;
    consumed += take;
  }
}

Result<size_t, Socks5Errc> Socks5ServerParser::NeededLength() {
  switch (phase_) {
    case Phase::kGreeting: {
      // VER NMETHODS METHODS[NMETHODS]
      if (held_ < 1) return 1;
      if (buf_[0] != kSocks5Version) {
        return Failure(Socks5Errc::kBadVersion, {},
                       "greeting version " + std::to_string(buf_[0]) + " is not 5");
      }
      if (held_ < 2) return 2;
      if (buf_[1] == 0) {
        return Failure(Socks5Errc::kNoMethods, TwoBytes(kSocks5Version, kSocks5MethodNone),
                       "greeting offers no methods");
      }
      return 2 + size_t{buf_[1]};
    }
    case Phase::kAuth: {
      // VER ULEN UNAME[ULEN] PLEN PASSWD[PLEN]
      const auto auth_failure = TwoBytes(kSocks5AuthVersion, 0x01);
      if (held_ < 1) return 1;
      if (buf_[0] != kSocks5AuthVersion) {
        return Failure(Socks5Errc::kBadVersion, auth_failure,
                       "username/password version " + std::to_string(buf_[0]) + " is not 1");
      }
      if (held_ < 2) return 2;
      const size_t ulen = buf_[1];
      if (ulen == 0) return Failure(Socks5Errc::kBadCredentials, auth_failure, "empty username");
      if (held_ < 3 + ulen) return 3 + ulen;
      const size_t plen = buf_[2 + ulen];
      if (plen == 0) return Failure(Socks5Errc::kBadCredentials, auth_failure, "empty password");
      return 3 + ulen + plen;
    }
    case Phase::kRequest: {
      // VER CMD RSV ATYP DST.ADDR DST.PORT
      if (held_ < 1) return 1;
      if (buf_[0] != kSocks5Version) {
        return Failure(Socks5Errc::kBadVersion, EncodeSocks5Failure(Socks5Reply::kGeneralFailure),
                       "request version " + std::to_string(buf_[0]) + " is not 5");
      }
      if (held_ < 4) return 4;
      switch (buf_[3]) {
        case kSocks5AtypIpv4:
          return 4 + 4 + 2;
        case kSocks5AtypIpv6:
          return 4 + 16 + 2;
        case kSocks5AtypDomain:
          if (held_ < 5) return 5;
          if (buf_[4] == 0) {
            return Failure(Socks5Errc::kBadDomain,
                           EncodeSocks5Failure(Socks5Reply::kGeneralFailure), "empty domain name");
          }
          return 5 + size_t{buf_[4]} + 2;
        default:
          return Failure(Socks5Errc::kUnsupportedAddress,
                         EncodeSocks5Failure(Socks5Reply::kAddressTypeNotSupported),
                         "address type " + std::to_string(buf_[3]) + " is not supported");
      }
    }
    case Phase::kDone:
    case Phase::kFailed:
      break;
  }
  return Failure(Socks5Errc::kBadState, {}, "SOCKS5 parser in a final state");
}

Result<Socks5ServerParser::Progress, Socks5Errc> Socks5ServerParser::Complete(size_t consumed) {
  auto result = [&]() -> Result<Progress, Socks5Errc> {
    switch (phase_) {
      case Phase::kGreeting:
        return HandleGreeting(consumed);
      case Phase::kAuth:
        return HandleAuth(consumed);
      case Phase::kRequest:
        return HandleRequest(consumed);
      case Phase::kDone:
      case Phase::kFailed:
        break;
    }
    return Failure(Socks5Errc::kBadState, {}, "SOCKS5 parser in a final state");
  }();
  held_ = 0;
  return result;
}

Result<Socks5ServerParser::Progress, Socks5Errc> Socks5ServerParser::HandleGreeting(
    size_t consumed) {
  bool offers_no_auth = false;
  bool offers_user_pass = false;
  const size_t n = buf_[1];
  for (size_t i = 0; i < n; ++i) {
    offers_no_auth |= buf_[2 + i] == kSocks5MethodNoAuth;
    offers_user_pass |= buf_[2 + i] == kSocks5MethodUserPass;
  }
  uint8_t method = kSocks5MethodNone;
  if (offers_user_pass && options_.check_credentials) {
    method = kSocks5MethodUserPass;
    phase_ = Phase::kAuth;
  } else if (offers_no_auth && options_.allow_no_auth) {
    method = kSocks5MethodNoAuth;
    phase_ = Phase::kRequest;
  } else {
    return Failure(Socks5Errc::kNoAcceptableMethod, TwoBytes(kSocks5Version, kSocks5MethodNone),
                   "no acceptable authentication method offered");
  }
  reply_ = TwoBytes(kSocks5Version, method);
  return Progress{consumed, Event::kReply, reply_.bytes()};
}

Result<Socks5ServerParser::Progress, Socks5Errc> Socks5ServerParser::HandleAuth(size_t consumed) {
  const size_t ulen = buf_[1];
  const size_t plen = buf_[2 + ulen];
  const std::string_view user(reinterpret_cast<const char*>(&buf_[2]), ulen);
  const std::string_view password(reinterpret_cast<const char*>(&buf_[3 + ulen]), plen);
  const bool ok = options_.check_credentials && options_.check_credentials(user, password);
  if (ok) user_.assign(user);
  Wipe();  // the password does not outlive the check
  if (!ok) {
    return Failure(Socks5Errc::kAuthFailed, TwoBytes(kSocks5AuthVersion, 0x01),
                   "username/password rejected");
  }
  phase_ = Phase::kRequest;
  reply_ = TwoBytes(kSocks5AuthVersion, 0x00);
  return Progress{consumed, Event::kReply, reply_.bytes()};
}

Result<Socks5ServerParser::Progress, Socks5Errc> Socks5ServerParser::HandleRequest(
    size_t consumed) {
  const uint8_t cmd = buf_[1];
  if (cmd != kSocks5CmdConnect) {
    return Failure(Socks5Errc::kUnsupportedCommand,
                   EncodeSocks5Failure(Socks5Reply::kCommandNotSupported),
                   "command " + std::to_string(cmd) + " is not supported (CONNECT only)");
  }
  // RSV (buf_[2]) is ignored, as reserved fields are on receipt.
  Destination dest;
  size_t at = 4;
  switch (buf_[3]) {
    case kSocks5AtypIpv4:
      dest.kind = Destination::Kind::kIpv4;
      std::copy_n(buf_.begin() + at, 4, dest.v4.begin());
      at += 4;
      break;
    case kSocks5AtypIpv6:
      dest.kind = Destination::Kind::kIpv6;
      std::copy_n(buf_.begin() + at, 16, dest.v6.begin());
      at += 16;
      break;
    case kSocks5AtypDomain: {
      const size_t len = buf_[at++];
      const std::string_view name(reinterpret_cast<const char*>(&buf_[at]), len);
      if (name.find('\0') != std::string_view::npos) {
        return Failure(Socks5Errc::kBadDomain, EncodeSocks5Failure(Socks5Reply::kGeneralFailure),
                       "domain name contains a NUL byte");
      }
      dest.kind = Destination::Kind::kDomain;
      dest.domain.assign(name);
      at += len;
      break;
    }
    default:  // NeededLength() already refused other types
      return Failure(Socks5Errc::kUnsupportedAddress,
                     EncodeSocks5Failure(Socks5Reply::kAddressTypeNotSupported),
                     "address type not supported");
  }
  dest.port = static_cast<uint16_t>((uint16_t{buf_[at]} << 8) | buf_[at + 1]);
  request_ = std::move(dest);
  phase_ = Phase::kDone;
  return Progress{consumed, Event::kRequest, {}};
}

std::unexpected<Error<Socks5Errc>> Socks5ServerParser::Failure(Socks5Errc code,
                                                               Socks5ReplyBytes reply,
                                                               std::string message) {
  phase_ = Phase::kFailed;
  error_reply_ = reply;
  Wipe();
  return dvpn::Fail(code, std::move(message));
}

void Socks5ServerParser::Wipe() {
  volatile uint8_t* p = buf_.data();
  for (size_t i = 0; i < buf_.size(); ++i) p[i] = 0;
  held_ = 0;
}

}  // namespace dvpn::tunnel
