#pragma once
// Port files: how a daemon started with port 0 tells its launcher (a test, a script) which port
// it bound. Written atomically, so a reader polling for the file never sees a partial number.

#include <string>

#include "common/private_file.h"
#include "common/result.h"

namespace dvpn {

// Writes `text` to `path` via a temporary file (`path`.tmp) and a rename, so a reader sees the
// old content or the whole new one. Error FileErrc::kIo, with a message naming the file.
[[nodiscard]] Result<void, FileErrc> WriteFileAtomically(const std::string& path,
                                                         const std::string& text);

// WriteFileAtomically(path, "<port>\n"); an empty `path` (no port file asked for) writes nothing
// and succeeds.
[[nodiscard]] Result<void, FileErrc> WritePortFile(const std::string& path, int port);

}  // namespace dvpn
