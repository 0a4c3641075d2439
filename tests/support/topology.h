#pragma once
// The three namespaces of the full-tunnel end-to-end tests (docs/full-tunnel.md): "user" and
// "provider", each joined by a veth pair to "internet", which routes between them (IPv4 and
// IPv6) and holds the servers' addresses on its loopback. Every address is private or for
// documentation, so the exit's default policy refuses them all and a test allows exactly the
// ones it needs. Deleted with the object, like every Netns.

#include <expected>
#include <optional>
#include <string>

#include "tests/support/netns.h"

namespace dvpn::testing {

struct Topology {
  static constexpr const char* kUserV4 = "172.31.1.2";
  static constexpr const char* kUserV6 = "fd31:1::2";
  static constexpr const char* kProviderV4 = "172.31.2.2";
  static constexpr const char* kProviderV6 = "fd31:2::2";
  // Where the internet's servers listen (its loopback).
  static constexpr const char* kInternetV4 = "172.31.3.1";
  static constexpr const char* kInternetV6 = "fd31:3::1";

  // The optional second user (AddSecondUser), for the tests with two clients.
  static constexpr const char* kUser2V4 = "172.31.4.2";
  static constexpr const char* kUser2V6 = "fd31:4::2";

  static std::expected<Topology, std::string> Create();

  // Adds "user2", joined to "internet" like "user" (172.31.4.2/24, fd31:4::2/64, its default
  // routes through 172.31.4.1 and fd31:4::1). An error when it exists already or a step fails.
  std::expected<void, std::string> AddSecondUser();

  Netns user;
  Netns provider;
  Netns internet;
  std::optional<Netns> user2;
};

}  // namespace dvpn::testing
