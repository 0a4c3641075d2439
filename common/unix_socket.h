#pragma once
// A Unix socket path a daemon is about to listen on (docs/client.md "Control"): file
// permissions are what keeps other local users out, so the path is checked before the listen
// and the socket's mode is set after it.

#include <sys/types.h>
#include <string>

#include "common/result.h"

namespace dvpn {

enum class UnixSocketErrc {
  kBadPath = 1,  // not absolute, too long for sockaddr_un, or its folder is not a folder
  kUnsafe,       // the folder is writable by others (without the sticky bit)
  kInUse,        // another process accepts connections on it
  kNotSocket,    // something that is not a socket is there
  kIo,           // stat, unlink or chmod failed
};

// Makes `path` ready to listen on: the folder exists and other users cannot replace what is in
// it; a socket left there by a process that is gone is removed; a live one (something accepts
// a connection) or anything that is not a socket is refused. The message names the path.
Result<void, UnixSocketErrc> PrepareUnixSocketPath(const std::string& path);

// Sets the listening socket's mode (e.g. 0660: its owner and group may connect, nobody else).
Result<void, UnixSocketErrc> SetUnixSocketMode(const std::string& path, mode_t mode);

}  // namespace dvpn
