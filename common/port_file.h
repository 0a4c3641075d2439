#pragma once
// Port files: how a daemon started with port 0 tells its launcher (a test, a script) which port
// it bound. Written atomically, so a reader polling for the file never sees a partial number.

#include <string>

namespace dvpn {

// Writes "<port>\n" to `path` via a temporary file and a rename. On failure returns false and
// sets *error to a message naming the file.
bool WritePortFile(const std::string& path, int port, std::string* error);

}  // namespace dvpn
