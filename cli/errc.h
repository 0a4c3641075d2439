#pragma once
// The errors of cli/'s helpers (what the executables share). The message beside the code
// (common/result.h) is the line the executable prints; it never holds a secret.

namespace dvpn::cli {

enum class Errc {
  kBadInput,  // text that does not parse (HOST:PORT, a port out of range)
  kResolve,   // a host name that does not resolve
  kIo,        // a file that cannot be read
  kBadSecret, // a secret file that is empty or too long
};

}  // namespace dvpn::cli
