#include "tunnel/os/errc.h"

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

}  // namespace dvpn::tunnel::os
