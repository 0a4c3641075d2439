#include "tunnel/os/tun_device.h"

// <net/if.h> before the kernel headers: glibc's and linux/if.h's IFF_* clash the other way round.
#include <net/if.h>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace dvpn::tunnel::os {

bool ValidInterfaceName(std::string_view name) {
  if (name.empty() || name.size() > TunDevice::kMaxNameLength) return false;
  if (name == "." || name == "..") return false;
  std::string_view body = name;
  if (body.ends_with("%d")) body.remove_suffix(2);
  for (char c : body) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

namespace {

// /dev/net/tun and TUNSETIFF: a missing device node or driver is kUnsupported; a name taken
// by another device (EINVAL: not a TUN device; EBUSY: held by another process) is kExists.
std::unexpected<Error<OsErrc>> FromErrno(int err, const std::string& what) {
  if (err == ENOENT || err == ENODEV || err == ENXIO) {
    return Fail(OsErrc::kUnsupported, what + ": " + std::strerror(err));
  }
  if (err == EBUSY || err == EINVAL) return Fail(OsErrc::kExists, what + ": " + std::strerror(err));
  return FailFromErrno(err, what);
}

}  // namespace

OsResult<TunDevice> TunDevice::Create(std::string_view name) { return Open(name, false); }

OsResult<TunDevice> TunDevice::CreateWithOffloads(std::string_view name) {
  auto device = Open(name, true);
  if (!device) return device;
  device->offloads_.vnet_header = true;
  // TUN_F_USO4/6 exist from 6.2 (linux/if_tun.h of older headers lacks them: the values are
  // the kernel's ABI). An older kernel refuses the unknown bits with EINVAL: ask again without.
  constexpr unsigned kUso4 = 0x20;
  constexpr unsigned kUso6 = 0x40;
  constexpr unsigned kTso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
  if (::ioctl(device->fd(), TUNSETOFFLOAD, kTso | kUso4 | kUso6) == 0) {
    device->offloads_.tso = device->offloads_.uso = true;
  } else if (::ioctl(device->fd(), TUNSETOFFLOAD, kTso) == 0) {
    device->offloads_.tso = true;
  }
  return device;
}

OsResult<TunDevice> TunDevice::Open(std::string_view name, bool vnet_header) {
  if (!ValidInterfaceName(name)) {
    return Fail(OsErrc::kBadArgument, "TUN device name \"" + std::string(name) +
                                          "\": 1 to 15 characters of A-Z a-z 0-9 _ . -");
  }
  const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return FromErrno(errno, "open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = static_cast<short>(IFF_TUN | IFF_NO_PI | (vnet_header ? IFF_VNET_HDR : 0));
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    ::close(fd);
    return FromErrno(err, "TUNSETIFF " + std::string(name));
  }
  std::string actual(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
  const unsigned index = ::if_nametoindex(actual.c_str());
  if (index == 0) {
    const int err = errno;
    ::close(fd);
    return FromErrno(err, "if_nametoindex " + actual);
  }
  return TunDevice(fd, std::move(actual), index);
}

TunDevice::TunDevice(TunDevice&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      name_(std::move(other.name_)),
      index_(std::exchange(other.index_, 0)),
      offloads_(other.offloads_) {}

TunDevice& TunDevice::operator=(TunDevice&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    name_ = std::move(other.name_);
    index_ = std::exchange(other.index_, 0);
    offloads_ = other.offloads_;
  }
  return *this;
}

TunDevice::~TunDevice() { Close(); }

int TunDevice::Release() { return std::exchange(fd_, -1); }

void TunDevice::Close() {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

}  // namespace dvpn::tunnel::os
