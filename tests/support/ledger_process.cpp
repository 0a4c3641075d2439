#include "tests/support/ledger_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <thread>

namespace dvpn::testing {

using std::chrono::milliseconds;

bool LedgerProcess::Start() {
  // After a SIGKILL the old port may take a moment to be free again: a few tries.
  for (int attempt = 0; attempt < 20; ++attempt) {
    const std::string port_file = dir_.File("port");
    std::remove(port_file.c_str());
    std::vector<std::string> argv = {options_.binary, "--db", dir_.File("ledger.db"), "--listen",
                                     target(), "--port-file", port_file, "--name", options_.name,
                                     "--operator-pubkey", options_.operator_hex,
                                     "--log-level", "warn"};
    argv.insert(argv.end(), options_.extra.begin(), options_.extra.end());
    auto proc = Subprocess::Spawn(argv, log());
    if (!proc) {
      ADD_FAILURE() << proc.error();
      return false;
    }
    proc_.emplace(*std::move(proc));
    auto port = WaitForPortFile(port_file, milliseconds(10'000));
    if (port) {
      port_ = *port;
      client_ = std::make_unique<ledger::rpc::LedgerClient>(target(), milliseconds(5000));
      if (client_->WaitForConnected(milliseconds(5000))) return true;
      ADD_FAILURE() << "cannot connect to dvpn-ledger on " << target();
      return false;
    }
    auto status = proc_->WaitFor(milliseconds(2000));  // it exits when it cannot listen
    if (!status) {
      ADD_FAILURE() << "dvpn-ledger neither listens nor exits; log:\n" << FileTail(log(), 4000);
      return false;
    }
    std::this_thread::sleep_for(milliseconds(100));  // bounded retry of a busy port
  }
  ADD_FAILURE() << "dvpn-ledger could not listen on " << target() << "; log:\n"
                << FileTail(log(), 4000);
  return false;
}

void LedgerProcess::Kill() {
  ASSERT_TRUE(proc_ && proc_->Signal(SIGKILL));
  auto status = proc_->WaitFor(milliseconds(10'000));
  ASSERT_TRUE(status) << "dvpn-ledger did not die";
  EXPECT_TRUE(WIFSIGNALED(*status)) << *status;
}

}  // namespace dvpn::testing
