#pragma once
// Destination: where a tunnel stream goes (an IPv4 or IPv6 address or a domain name, and a TCP
// port), its SOCKS-like wire encoding used inside OPEN frames, and OpenFailure, the reasons an
// exit gives for not opening a stream (mapped 1:1 to SOCKS5 REP codes).
// Wire format (docs/tunnel.md, "Destination"):
//   ATYP u8 = 1 (IPv4) || 4 bytes || port u16 BE
//   ATYP u8 = 4 (IPv6) || 16 bytes || port u16 BE
//   ATYP u8 = 3 (domain) || len u8 (1..255) || len bytes (no NUL) || port u16 BE
// Plain value types and pure functions; thread-compatible.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/result.h"

namespace dvpn::tunnel {

struct Destination {
  enum class Kind : uint8_t { kIpv4, kIpv6, kDomain };
  Kind kind = Kind::kIpv4;
  std::array<uint8_t, 4> v4{};   // kIpv4
  std::array<uint8_t, 16> v6{};  // kIpv6
  std::string domain;            // kDomain: 1..255 bytes, no NUL; resolved by the exit
  uint16_t port = 0;

  static Destination Ipv4(const std::array<uint8_t, 4>& a, uint16_t port);
  static Destination Ipv6(const std::array<uint8_t, 16>& a, uint16_t port);
  static Destination Domain(std::string name, uint16_t port);

  friend bool operator==(const Destination&, const Destination&) = default;
};

// Why an exit did not open a stream. Values are the SOCKS5 REP codes (RFC 1928 section 6), so
// the client front end replies with exactly `static_cast<uint8_t>(failure)`.
enum class OpenFailure : uint8_t {
  kGeneral = 1,     // general SOCKS server failure (also: exit-side limits)
  kNotAllowed = 2,  // connection not allowed by ruleset (exit policy)
  kNetworkUnreachable = 3,
  kHostUnreachable = 4,  // includes "name does not resolve"
  kRefused = 5,
  kTtlExpired = 6,               // connect timed out
  kCommandNotSupported = 7,      // not sent by the exit; for the SOCKS front end's own use
  kAddressTypeNotSupported = 8,  // not sent by the exit; for the SOCKS front end's own use
};

// True for the values an OPEN_FAIL frame may carry (1..8).
bool IsValidOpenFailure(uint8_t code);
const char* OpenFailureName(OpenFailure failure);

enum class DestinationErrc {
  kTruncated = 1,   // input ends inside the encoding
  kBadType,         // ATYP not 1, 3 or 4
  kBadDomain,       // domain of length 0, longer than 255, or containing a NUL byte
  kBufferTooSmall,  // encoding: the output span is too small
  kTrailingBytes,   // DecodeDestination: bytes left after the encoding
};

inline constexpr uint8_t kAtypIpv4 = 1;
inline constexpr uint8_t kAtypDomain = 3;
inline constexpr uint8_t kAtypIpv6 = 4;
inline constexpr size_t kMaxDomainLength = 255;
// Longest encoding: ATYP, length byte, 255-byte name, port.
inline constexpr size_t kMaxDestinationEncoding = 1 + 1 + kMaxDomainLength + 2;

// Size of the encoding of `d` (meaningless for an invalid domain; Encode rejects it).
size_t EncodedDestinationSize(const Destination& d);

// Writes the encoding of `d` at the start of `out`; returns the number of bytes written.
// Fails with kBadDomain (invalid name) or kBufferTooSmall; `out` is untouched on failure.
[[nodiscard]] Result<size_t, DestinationErrc> EncodeDestination(const Destination& d,
                                                                std::span<uint8_t> out);

// Length of the valid encoding at the start of `in`, without building a Destination (no
// allocation). Fails with kTruncated, kBadType, kBadDomain.
[[nodiscard]] Result<size_t, DestinationErrc> ValidateDestinationPrefix(
    std::span<const uint8_t> in);

// Decodes an encoding that must fill `in` exactly. Fails with kTruncated, kBadType, kBadDomain,
// kTrailingBytes.
[[nodiscard]] Result<Destination, DestinationErrc> DecodeDestination(std::span<const uint8_t> in);

// "1.2.3.4:80", "[2001:db8:0:0:0:0:0:1]:443" (eight groups, no "::"), "example.com:443". For
// debug logs only: exits must not log destinations unless the operator asked for it.
std::string ToString(const Destination& d);

}  // namespace dvpn::tunnel
