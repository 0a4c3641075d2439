#pragma once
// One real dvpn-ledger process for end-to-end tests: its database and log in a test's TempDir,
// listening on 127.0.0.1, with an admin LedgerClient. The first start takes a free port; a
// restart (after Kill or a signal) reuses the same database and the same port, so that clients
// made from target() reach it again. Failures are reported with ADD_FAILURE and the log's end.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ledger/rpc/ledger_client.h"
#include "tests/support/subprocess.h"

namespace dvpn::testing {

struct LedgerProcessOptions {
  std::string binary;               // the dvpn-ledger executable (DVPN_LEDGER_BIN)
  std::string name;                 // --name
  std::string operator_hex;         // --operator-pubkey
  std::vector<std::string> extra;   // more flags, e.g. {"--challenge-period", "60"}
};

class LedgerProcess {
 public:
  LedgerProcess(const TempDir& dir, LedgerProcessOptions options)
      : dir_(dir), options_(std::move(options)) {}

  // Starts the process (bounded: a few tries while a restarted port is still busy, 10 s for
  // the port file) and connects the admin client. False, with a failure recorded, otherwise.
  bool Start();
  // SIGKILL, and asserts that it died by the signal within 10 s.
  void Kill();

  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  ledger::rpc::LedgerClient& client() { return *client_; }
  Subprocess& proc() { return *proc_; }
  std::string log() const { return dir_.File("ledger.log"); }

 private:
  const TempDir& dir_;
  LedgerProcessOptions options_;
  int port_ = 0;
  std::optional<Subprocess> proc_;
  std::unique_ptr<ledger::rpc::LedgerClient> client_;
};

}  // namespace dvpn::testing
