#pragma once
// Port files: how a daemon started with port 0 tells its launcher (a test, a script) which port
// it bound. Written atomically, so a reader polling for the file never sees a partial number.

#include <string>

namespace dvpn {

// Writes `text` to `path` via a temporary file (`path`.tmp) and a rename, so a reader sees the
// old content or the whole new one. On failure returns false and sets *error to a message
// naming the file.
bool WriteFileAtomically(const std::string& path, const std::string& text, std::string* error);

// WriteFileAtomically(path, "<port>\n").
bool WritePortFile(const std::string& path, int port, std::string* error);

}  // namespace dvpn
