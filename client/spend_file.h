#pragma once
// The client's spend state at start, written once for dvpn-client and dvpn-tunnel-client: the
// daily spend shared by every tunnel of the process and, with a spend file, the journal that
// keeps the daily cap across restarts (docs/payments.md §5).

#include <string>

#include "client/errc.h"
#include "tunnel/session/paid_client.h"

namespace dvpn::client {

// Gives `pay` a fresh daily spend and, when `path` is not empty, opens the journal there for
// `pay.policy.daily_cap` and counts what it holds for today as already spent. Error: the line
// for the user ("--spend-file needs --daily-cap", or what is wrong with the file), kBadConfig.
Result<void, Errc> StartSpendState(tunnel::session::ClientPaymentConfig& pay,
                                   const std::string& path);

}  // namespace dvpn::client
