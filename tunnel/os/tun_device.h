#pragma once
// A kernel TUN device (layer 3, no packet-information header): the file descriptor that reads
// and writes whole IP packets, and the interface's name and index. The device exists while the
// descriptor is open (it is not made persistent): closing it, or the process ending in any way,
// deletes the device and every route through it. docs/full-tunnel.md "On the machine".

#include <cstdint>
#include <string>
#include <string_view>

#include "tunnel/os/errc.h"

namespace dvpn::tunnel::os {

// An interface name the kernel takes: 1..15 bytes of [A-Za-z0-9_.-], not "." or ".."; a final
// "%d" asks for the first free number. The one home of that rule (the seller's config checks it).
bool ValidInterfaceName(std::string_view name);

class TunDevice {
 public:
  // Interface names are at most 15 bytes (IFNAMSIZ - 1) of [A-Za-z0-9_.-]; a name ending in
  // "%d" asks the kernel for the first free number.
  static constexpr size_t kMaxNameLength = 15;

  // Creates the device. Fails with kBadArgument (name), kUnsupported (no /dev/net/tun),
  // kPermission (no CAP_NET_ADMIN), kExists (a device of that name that is not ours to take:
  // a non-TUN device, or a TUN device another process holds), kSystem.
  static OsResult<TunDevice> Create(std::string_view name);

  // What a device created with offloads hands over and takes (docs/full-tunnel.md "Offloads").
  struct Offloads {
    bool vnet_header = false;  // IFF_VNET_HDR: every read and write starts with the 10 bytes
    bool tso = false;          // TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    bool uso = false;          // TUN_F_USO4 | TUN_F_USO6 (kernel 6.2 and later)
  };
  // Creates the device with IFF_VNET_HDR and asks for checksum, TCP and (where the kernel has
  // it) UDP segmentation offloads; what the kernel granted is in offloads(). A kernel that
  // refuses every offload still gives a device with the header (all zero).
  static OsResult<TunDevice> CreateWithOffloads(std::string_view name);

  TunDevice(TunDevice&& other) noexcept;
  TunDevice& operator=(TunDevice&& other) noexcept;
  TunDevice(const TunDevice&) = delete;
  TunDevice& operator=(const TunDevice&) = delete;
  ~TunDevice();

  int fd() const { return fd_; }  // non-blocking, close-on-exec
  const std::string& name() const { return name_; }
  uint32_t index() const { return index_; }
  const Offloads& offloads() const { return offloads_; }

  // Gives up the descriptor (the caller closes it; e.g. an Asio stream_descriptor takes it).
  int Release();
  // Closes the descriptor: the kernel deletes the device.
  void Close();

 private:
  TunDevice(int fd, std::string name, uint32_t index)
      : fd_(fd), name_(std::move(name)), index_(index) {}
  static OsResult<TunDevice> Open(std::string_view name, bool vnet_header);
  int fd_ = -1;
  std::string name_;
  uint32_t index_ = 0;
  Offloads offloads_;
};

}  // namespace dvpn::tunnel::os
