#pragma once
// dvpnctl's shared vocabulary: global options, exit codes, and the Result type every command
// returns (ctl/, used by dvpnctl's main).

#include <chrono>
#include <string>
#include <utility>

#include "common/result.h"

namespace dvpn::ctl {

// Process exit codes (docs/dvpnctl.md).
enum class Exit {
  kOk = 0,
  kRefused = 1,      // the ledger refused the request, or the input was bad
  kUsage = 2,        // the command line is wrong, or a needed input is missing
  kUnreachable = 3,  // the ledger could not be reached or did not answer in time
};

template <class T>
using CliResult = Result<T, Exit>;

// Global options, parsed once in main.
struct Options {
  std::string ledger = "127.0.0.1:7400";      // --ledger / DVPN_LEDGER
  std::string keystore;                       // --keystore / DVPN_KEYSTORE / $HOME/.dvpn/key.json
  std::string passphrase_file;                // --passphrase-file; else DVPN_PASSPHRASE; else tty
  std::string kdf_cost = "moderate";          // --kdf-cost, for key new / key import
  bool json = false;                          // --json
  std::chrono::milliseconds timeout{10'000};  // --timeout, per ledger call
};

}  // namespace dvpn::ctl

// Evaluates `expr` (a CliResult<T>); on failure returns its error from the enclosing function,
// otherwise moves the value into a new variable `var`.
#define DVPNCTL_TRY(var, expr)                                       \
  auto var##_result_ = (expr);                                       \
  if (!var##_result_) return std::unexpected(var##_result_.error()); \
  auto var = std::move(*var##_result_)

// Same for a CliResult<void>.
#define DVPNCTL_CHECK(expr)                                            \
  do {                                                                 \
    auto check_result_ = (expr);                                       \
    if (!check_result_) return std::unexpected(check_result_.error()); \
  } while (0)
