#include "tunnel/os/errc.h"

#include <cerrno>
#include <cstring>

namespace dvpn::tunnel::os {

const char* OsErrcName(OsErrc code) {
  switch (code) {
    case OsErrc::kUnsupported:
      return "unsupported";
    case OsErrc::kPermission:
      return "permission";
    case OsErrc::kBadArgument:
      return "bad argument";
    case OsErrc::kExists:
      return "exists";
    case OsErrc::kNotFound:
      return "not found";
    case OsErrc::kSystem:
      return "system";
  }
  return "unknown";
}

std::unexpected<Error<OsErrc>> FailFromErrno(int err, const std::string& what) {
  const std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case EPERM:
    case EACCES:
      return Fail(OsErrc::kPermission, message + " (needs CAP_NET_ADMIN)");
    case EEXIST:
      return Fail(OsErrc::kExists, message);
    case ESRCH:
    case ENOENT:
    case ENODEV:
    case EADDRNOTAVAIL:
    case ENETUNREACH:
    case EHOSTUNREACH:
      return Fail(OsErrc::kNotFound, message);
    case EINVAL:
    case EAFNOSUPPORT:
      return Fail(OsErrc::kBadArgument, message);
    default:
      return Fail(OsErrc::kSystem, message);
  }
}

}  // namespace dvpn::tunnel::os
