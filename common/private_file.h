#pragma once
// Files that hold money state, keys or a user's history are their owner's only: 0600 files in
// 0700 folders, whatever the process's umask (a usual 022 would make them world-readable).
// SQLite creates a database's -wal, -shm and -journal files with the main file's mode, so
// creating the main file first with 0600 keeps all of them private.

#include <string>

#include "common/result.h"

namespace dvpn {

enum class FileErrc {
  kIo,  // the file or folder could not be created; the message names it and says why
};

// Creates the file `path` with mode 0600 when it does not exist (an empty file is an empty
// SQLite database). An existing file keeps its mode. "", ":memory:" and "file:" URIs (SQLite's
// names for other things) are left alone.
[[nodiscard]] Result<void, FileErrc> CreatePrivateFile(const std::string& path);

// Creates the folder `path` and its missing parents; each one created gets mode 0700. An
// existing folder keeps its mode.
[[nodiscard]] Result<void, FileErrc> CreatePrivateDirectories(const std::string& path);

}  // namespace dvpn
