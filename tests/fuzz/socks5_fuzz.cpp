// libFuzzer target for the SOCKS5 server parser (tunnel/socks5.h). The first input byte picks
// the server options and a seed for the chunk sizes; the rest is fed to the parser in pieces
// of 1..16 bytes, the way a session hands over whatever a read returned. Checks the parser's
// own contract: it never consumes more than it was given, kNeedMore consumes everything, a
// completed request is well formed, and nothing is accepted after the end.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "tunnel/socks5.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using dvpn::tunnel::Socks5ServerOptions;
  using dvpn::tunnel::Socks5ServerParser;
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  std::span<const uint8_t> input(data + 1, size - 1);

  Socks5ServerOptions options;
  options.allow_no_auth = (selector & 1) != 0;
  if (selector & 2) {
    options.check_credentials = [](std::string_view user, std::string_view password) {
      return user == "u" && password == "p";
    };
  }
  Socks5ServerParser parser(std::move(options));

  uint32_t rng = 0x9E3779B9u ^ selector;  // xorshift: deterministic chunking per input
  size_t offset = 0;
  size_t pending_start = 0;  // first byte not yet consumed
  while (true) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    offset = std::min(input.size(), offset + 1 + rng % 16);
    auto view = input.subspan(pending_start, offset - pending_start);
    auto r = parser.Feed(view);
    if (!r) {
      Check(parser.error_reply().size() <= dvpn::tunnel::kSocks5MaxReply);
      Check(!parser.Feed(input.subspan(pending_start)).has_value());  // stays failed
      return 0;
    }
    Check(r->consumed <= view.size());
    pending_start += r->consumed;
    switch (r->event) {
      case Socks5ServerParser::Event::kNeedMore:
        Check(r->consumed == view.size());
        if (offset == input.size()) return 0;
        break;
      case Socks5ServerParser::Event::kReply:
        Check(r->reply.size() == 2);
        break;
      case Socks5ServerParser::Event::kRequest: {
        Check(parser.done());
        const auto& dest = parser.request();
        if (dest.kind == dvpn::tunnel::Destination::Kind::kDomain) {
          Check(!dest.domain.empty() && dest.domain.size() <= 255);
          Check(dest.domain.find('\0') == std::string::npos);
        }
        Check(!parser.Feed(input.subspan(pending_start)).has_value());
        return 0;
      }
    }
  }
}
