#include "common/text.h"

#include <cstdint>
#include <cstdio>

namespace dvpn {
namespace {

// The length of the printable UTF-8 character at the start of `text`, 0 when it is not one.
size_t PrintableCharLength(std::string_view text) {
  const auto lead = static_cast<unsigned char>(text[0]);
  uint32_t code = 0;
  size_t length = 0;
  if (lead < 0x80) {
    code = lead;
    length = 1;
  } else if (lead >= 0xc2 && lead <= 0xdf) {
    code = lead & 0x1f;
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    code = lead & 0x0f;
    length = 3;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    code = lead & 0x07;
    length = 4;
  } else {
    return 0;  // a continuation byte, or a lead byte UTF-8 never uses
  }
  if (text.size() < length) return 0;
  for (size_t k = 1; k < length; ++k) {
    const auto next = static_cast<unsigned char>(text[k]);
    if ((next & 0xc0) != 0x80) return 0;
    code = (code << 6) | (next & 0x3f);
  }
  if ((length == 3 && code < 0x800) || (length == 4 && (code < 0x10000 || code > 0x10ffff)) ||
      (code >= 0xd800 && code <= 0xdfff)) {
    return 0;  // overlong, surrogate, or past U+10FFFF
  }
  if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return 0;  // C0, DEL, C1
  return length;
}

}  // namespace

bool IsPrintableUtf8(std::string_view text) {
  while (!text.empty()) {
    size_t length = PrintableCharLength(text);
    if (length == 0) return false;
    text.remove_prefix(length);
  }
  return true;
}

std::string EscapeForLog(std::string_view text, size_t max_bytes) {
  const size_t full_size = text.size();
  if (text.size() > max_bytes) text = text.substr(0, max_bytes);
  std::string out;
  out.reserve(text.size() + 16);
  while (!text.empty()) {
    size_t length = PrintableCharLength(text);
    if (length == 1 && text[0] == '\\') {
      out += "\\\\";
    } else if (length > 0) {
      out.append(text.data(), length);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(text[0]));
      out += hex;
      length = 1;
    }
    text.remove_prefix(length);
  }
  if (full_size > max_bytes) out += "...(" + std::to_string(full_size) + " bytes)";
  return out;
}

}  // namespace dvpn
