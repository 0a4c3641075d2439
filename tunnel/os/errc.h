#pragma once
// The errors of tunnel/os (the machine's network configuration: TUN devices, addresses, routes).

#include <string>

#include "common/result.h"

namespace dvpn::tunnel::os {

enum class OsErrc {
  kUnsupported = 1,  // the kernel or the machine lacks the feature (/dev/net/tun missing, ...)
  kPermission,       // CAP_NET_ADMIN (or access to /dev/net/tun) is missing
  kBadArgument,      // a name, prefix length or family mix that the kernel would refuse
  kExists,           // the address or route is there already
  kNotFound,         // no such device, address or route
  kSystem,           // any other failure of a system call or a netlink request (message says)
};

const char* OsErrcName(OsErrc code);

// `what` and strerror(err) as an OsErrc: EPERM/EACCES kPermission, EEXIST kExists, ESRCH,
// ENOENT, ENODEV, EADDRNOTAVAIL, ENETUNREACH, EHOSTUNREACH kNotFound, EINVAL/EAFNOSUPPORT
// kBadArgument, anything else kSystem.
std::unexpected<Error<OsErrc>> FailFromErrno(int err, const std::string& what);

template <class T>
using OsResult = Result<T, OsErrc>;

}  // namespace dvpn::tunnel::os
