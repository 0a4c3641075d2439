#pragma once
// Text that came from outside (a peer, a request, a file) on its way to a person: a log line,
// a terminal, an operator's payout list. Nothing in it may steer a terminal or forge a line.

#include <cstddef>
#include <string>
#include <string_view>

namespace dvpn {

// True when `text` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF)
// and holds no control character: C0 (U+0000..U+001F, so no newline or tab), DEL (U+007F) or
// C1 (U+0080..U+009F). Empty text is printable.
bool IsPrintableUtf8(std::string_view text);

// `text` with every byte that is not part of a printable UTF-8 character (as above) written as
// \xNN, and a backslash as \\, so the result is printable and reversible. At most `max_bytes`
// of the input are escaped; a longer input ends in "...(N bytes)" naming its full size.
std::string EscapeForLog(std::string_view text, size_t max_bytes = 1024);

}  // namespace dvpn
