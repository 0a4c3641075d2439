#pragma once
// What the tunnel end-to-end tests (tunnel_e2e_test, exit_flood_test) share: the executables
// they start, and the socket, process and clock helpers of tests/support they talk to them
// with.

#include "tests/support/echo_server.h"
#include "tests/support/net_util.h"
#include "tests/support/subprocess.h"
#include "tests/support/wall_clock.h"

#ifndef DVPN_TUNNEL_EXIT_BIN
#error "DVPN_TUNNEL_EXIT_BIN must name the dvpn-tunnel-exit executable"
#endif
#ifndef DVPN_TUNNEL_CLIENT_BIN
#error "DVPN_TUNNEL_CLIENT_BIN must name the dvpn-tunnel-client executable"
#endif

// The tests live in a namespace inside dvpn::testing, so the helpers above need no
// using-declarations.
namespace dvpn::testing::tunnel_e2e {

using namespace std::chrono_literals;

}  // namespace dvpn::testing::tunnel_e2e
