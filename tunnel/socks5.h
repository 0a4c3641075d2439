#pragma once
// Server side of SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): an
// incremental, bounded parser of what a SOCKS client sends before its CONNECT is answered, and
// the encoders of the server's replies. Pure code: no sockets, no name resolution (a domain name
// is passed through to the exit, so the client side never leaks DNS). Wire format and state
// machine: docs/tunnel-socks-exit.md.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "tunnel/destination.h"

namespace dvpn::tunnel {

// Why a SOCKS5 conversation ended before a request was accepted. Every error is terminal: the
// caller writes Socks5ServerParser::error_reply() (possibly empty) and closes the connection.
enum class Socks5Errc {
  kBadVersion = 1,      // VER is not 5 (greeting, request) or not 1 (RFC 1929 sub-negotiation)
  kNoMethods,           // greeting with NMETHODS = 0
  kNoAcceptableMethod,  // none of the offered methods is enabled; reply {05 FF}
  kBadCredentials,      // ULEN or PLEN is 0; reply {01 01}
  kAuthFailed,          // the credential predicate said no; reply {01 01}
  kUnsupportedCommand,  // CMD is BIND, UDP ASSOCIATE or unknown; reply REP 07
  kUnsupportedAddress,  // ATYP is not 1, 3 or 4; reply REP 08
  kBadDomain,           // domain of length 0 or containing a NUL byte; reply REP 01
  kBadState,            // Feed() called after the request was complete or after an error
};

// SOCKS5 REP codes (RFC 1928 section 6).
enum class Socks5Reply : uint8_t {
  kSucceeded = 0x00,
  kGeneralFailure = 0x01,
  kNotAllowed = 0x02,
  kNetworkUnreachable = 0x03,
  kHostUnreachable = 0x04,
  kConnectionRefused = 0x05,
  kTtlExpired = 0x06,
  kCommandNotSupported = 0x07,
  kAddressTypeNotSupported = 0x08,
};

inline constexpr uint8_t kSocks5Version = 0x05;
inline constexpr uint8_t kSocks5AuthVersion = 0x01;  // RFC 1929 sub-negotiation version
inline constexpr uint8_t kSocks5MethodNoAuth = 0x00;
inline constexpr uint8_t kSocks5MethodUserPass = 0x02;
inline constexpr uint8_t kSocks5MethodNone = 0xFF;
inline constexpr uint8_t kSocks5CmdConnect = 0x01;
inline constexpr uint8_t kSocks5AtypIpv4 = 0x01;
inline constexpr uint8_t kSocks5AtypDomain = 0x03;
inline constexpr uint8_t kSocks5AtypIpv6 = 0x04;

// Largest message the parser ever holds: the RFC 1929 request, 1 + 1 + 255 + 1 + 255 bytes.
// (A greeting is at most 2 + 255, a request at most 4 + 1 + 255 + 2.)
inline constexpr size_t kSocks5MaxMessage = 513;
// Largest reply: VER REP RSV ATYP, a 255-byte domain with its length byte, and the port.
inline constexpr size_t kSocks5MaxReply = 4 + 1 + 255 + 2;

// A reply to write to the client, held by value (no allocation).
class Socks5ReplyBytes {
 public:
  Socks5ReplyBytes() = default;
  std::span<const uint8_t> bytes() const { return {buf_.data(), size_}; }
  size_t size() const { return size_; }

  // Appends `v`. Callers stay within kSocks5MaxReply (asserted: only our encoders append).
  void Push(uint8_t v);

 private:
  std::array<uint8_t, kSocks5MaxReply> buf_{};
  size_t size_ = 0;
};

// Maps an exit-side failure to its REP code: kGeneral 01, kNotAllowed 02, kNetworkUnreachable
// 03, kHostUnreachable 04, kRefused 05, kTtlExpired 06, kCommandNotSupported 07,
// kAddressTypeNotSupported 08.
Socks5Reply Socks5ReplyFor(OpenFailure failure);

// The reply to a CONNECT that succeeded: VER 5, REP 00, RSV 00, then `bound` as ATYP + address
// + port (the address the exit's socket is bound to, or 0.0.0.0:0 when it is not known). A
// domain `bound` that is empty or longer than 255 bytes is encoded as IPv4 0.0.0.0 with its port.
Socks5ReplyBytes EncodeSocks5Success(const Destination& bound);
// A failure reply: VER 5, REP `code`, RSV 00, ATYP 1, 0.0.0.0, port 0 (10 bytes).
Socks5ReplyBytes EncodeSocks5Failure(Socks5Reply code);
Socks5ReplyBytes EncodeSocks5Failure(OpenFailure failure);

// What the server accepts. Immutable once the parser is built.
struct Socks5ServerOptions {
  // Offer method 00 (no authentication).
  bool allow_no_auth = true;
  // When set, offer method 02 (username/password) and accept exactly the pairs for which this
  // returns true. It is called at most once per connection, from Feed(), on the caller's thread;
  // it should compare in constant time. Empty: method 02 is not offered.
  std::function<bool(std::string_view user, std::string_view password)> check_credentials;
};

// Server-side state machine of one SOCKS5 connection up to its CONNECT request:
//   greeting -> [username/password] -> request -> done.
// Feed it the bytes as they arrive. Each call handles at most one client message and never
// buffers more than kSocks5MaxMessage bytes; bytes after the completed request are left
// unconsumed (a client may send payload before the reply; it belongs to the stream).
//
// Method choice: 02 if the client offers it and check_credentials is set; otherwise 00 if the
// client offers it and allow_no_auth; otherwise FF (error kNoAcceptableMethod).
//
// Thread-safety: none; one parser per connection, used from one strand. Owns no resources.
class Socks5ServerParser {
 public:
  enum class Event {
    kNeedMore,  // all input consumed, the current message is not complete yet
    kReply,     // a message was handled: write `reply`, then Feed the unconsumed rest
    kRequest,   // the CONNECT request is complete: request() holds it; answer with
                // EncodeSocks5Success / EncodeSocks5Failure once the exit has answered
  };
  struct Progress {
    size_t consumed = 0;  // bytes of `in` used by this call
    Event event = Event::kNeedMore;
    std::span<const uint8_t> reply;  // for kReply; a view valid until the next Feed()
  };

  explicit Socks5ServerParser(Socks5ServerOptions options);

  // Consumes bytes of `in` until the current message is complete or `in` is exhausted.
  // On error (any Socks5Errc), nothing more may be fed: write error_reply() and close. Feed()
  // after kRequest or after an error returns kBadState.
  [[nodiscard]] Result<Progress, Socks5Errc> Feed(std::span<const uint8_t> in);

  // The CONNECT destination; meaningful after Event::kRequest.
  const Destination& request() const { return request_; }
  // The authenticated user name (RFC 1929), empty when method 00 was used.
  const std::string& user() const { return user_; }
  // Bytes to write before closing after Feed() failed (empty when the protocol defines none,
  // e.g. a wrong greeting version: the peer is not a SOCKS5 client).
  std::span<const uint8_t> error_reply() const { return error_reply_.bytes(); }
  bool done() const { return phase_ == Phase::kDone; }

 private:
  enum class Phase { kGreeting, kAuth, kRequest, kDone, kFailed };

  // Checks the header bytes held so far and returns the full length of the current message
  // (or the length needed to learn it), or an error for a bad field.
  Result<size_t, Socks5Errc> NeededLength();
  Result<Progress, Socks5Errc> Complete(size_t consumed);
  Result<Progress, Socks5Errc> HandleGreeting(size_t consumed);
  Result<Progress, Socks5Errc> HandleAuth(size_t consumed);
  Result<Progress, Socks5Errc> HandleRequest(size_t consumed);
  std::unexpected<Error<Socks5Errc>> Failure(Socks5Errc code, Socks5ReplyBytes reply,
                                             std::string message);
  void Wipe();

  Socks5ServerOptions options_;
  Phase phase_ = Phase::kGreeting;
  std::array<uint8_t, kSocks5MaxMessage> buf_{};
  size_t held_ = 0;
  Socks5ReplyBytes reply_;
  Socks5ReplyBytes error_reply_;
  Destination request_;
  std::string user_;
};

}  // namespace dvpn::tunnel
