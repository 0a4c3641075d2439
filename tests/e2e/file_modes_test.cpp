// What the components leave on disk is their owner's only, whatever the umask: under the usual
// umask 022 every database (the ledger's, the promise store with its .log, the client's provider
// stats) and SQLite's -wal / -shm files beside them are 0600, and the seller's data folder 0700.
// Checked in process for each library and on the real dvpn-ledger.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/private_file.h"
#include "ledger/rpc/ledger_client.h"
#include "ledger/sqlite_store.h"
#include "marketplace/provider_stats.h"
#include "payments/keys.h"
#include "settlement/promise_store.h"
#include "tests/support/subprocess.h"

#ifndef DVPN_LEDGER_BIN
#error "DVPN_LEDGER_BIN must name the dvpn-ledger executable"
#endif

namespace dvpn {
namespace {

using dvpn::testing::Subprocess;
using dvpn::testing::TempDir;
using std::chrono::milliseconds;

// Sets the umask for one test and restores the old one.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }

 private:
  mode_t old_;
};

// Every file and folder under `root` (not `root` itself), by path relative to it, with its
// permission bits.
std::map<std::string, mode_t> ModesUnder(const std::string& root) {
  std::map<std::string, mode_t> out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0) continue;
    out[std::filesystem::relative(entry.path(), root).string()] = st.st_mode;
  }
  return out;
}

void ExpectPrivate(const std::map<std::string, mode_t>& modes) {
  for (const auto& [name, mode] : modes) {
    const mode_t want = S_ISDIR(mode) ? 0700 : 0600;
    EXPECT_EQ(mode & 07777, want) << name << " has mode 0" << std::oct << (mode & 07777);
  }
}

TEST(FileModes, DatabasesAndTheirSideFilesArePrivateUnderUmask022) {
  ScopedUmask mask(022);
  TempDir dir;
  SystemClock clock;
  const auto op = payments::PrivateKey::Generate();
  const auto id = payments::LedgerIdFor("modes", op.public_key());

  // Each store open at once, so SQLite's -wal and -shm files exist while the modes are read.
  auto ledger = ledger::OpenSqliteStore(dir.File("ledger.db"), id);
  ASSERT_TRUE(ledger) << ledger.error().message;
  auto promises = payments::PromiseStore::Open(dir.File("promises.db"), clock);
  ASSERT_TRUE(promises) << promises.error().message;
  auto stats = marketplace::ProviderStats::Open(dir.File("provider-stats.db"), clock);
  ASSERT_TRUE(stats) << stats.error().message;
  // The seller's data folder, parents included.
  ASSERT_TRUE(CreatePrivateDirectories(dir.File("seller/data")));

  const auto modes = ModesUnder(dir.path());
  for (const char* name :
       {"ledger.db", "ledger.db-wal", "ledger.db-shm", "promises.db", "promises.db-wal",
        "promises.db-shm", "promises.db.log", "provider-stats.db", "provider-stats.db-wal",
        "provider-stats.db-shm", "seller", "seller/data"}) {
    EXPECT_TRUE(modes.contains(name)) << name << " was not created";
  }
  ExpectPrivate(modes);
}

TEST(FileModes, AnExistingFileOrFolderKeepsItsMode) {
  ScopedUmask mask(022);
  TempDir dir;
  std::filesystem::create_directory(dir.File("shared"));
  ::chmod(dir.File("shared").c_str(), 0750);
  ASSERT_TRUE(CreatePrivateDirectories(dir.File("shared/inner")));
  { std::ofstream(dir.File("shared/inner/file")) << "x"; }
  ::chmod(dir.File("shared/inner/file").c_str(), 0640);
  ASSERT_TRUE(CreatePrivateFile(dir.File("shared/inner/file")));
  auto modes = ModesUnder(dir.path());
  EXPECT_EQ(modes["shared"] & 07777, 0750u);
  EXPECT_EQ(modes["shared/inner"] & 07777, 0700u);
  EXPECT_EQ(modes["shared/inner/file"] & 07777, 0640u);
  auto bad = CreatePrivateDirectories(dir.File("shared/inner/file/below"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("not a folder"), std::string::npos) << bad.error().message;
}

TEST(FileModes, TheLedgerDaemonsFilesArePrivateUnderUmask022) {
  ScopedUmask mask(022);  // the child inherits it
  TempDir dir;
  std::filesystem::create_directory(dir.File("db"));
  const auto op = payments::PrivateKey::Generate();
  auto proc = Subprocess::Spawn({DVPN_LEDGER_BIN, "--db", dir.File("db/ledger.db"), "--listen",
                                 "127.0.0.1:0", "--port-file", dir.File("port"), "--name", "modes",
                                 "--operator-pubkey", ToHex(op.public_key().bytes())},
                                dir.File("ledger.log"));
  ASSERT_TRUE(proc) << proc.error();
  auto port = dvpn::testing::WaitForPortFile(dir.File("port"), milliseconds(10'000), *proc);
  ASSERT_TRUE(port) << dvpn::testing::FileTail(dir.File("ledger.log"));
  ledger::rpc::LedgerClient client("127.0.0.1:" + std::to_string(*port), milliseconds(5000));
  ASSERT_TRUE(client.GetInfo());
  const auto modes = ModesUnder(dir.File("db"));
  for (const char* name : {"ledger.db", "ledger.db-wal", "ledger.db-shm"}) {
    EXPECT_TRUE(modes.contains(name)) << name << " was not created";
  }
  ExpectPrivate(modes);
  EXPECT_TRUE(proc->Signal(SIGTERM));
  EXPECT_TRUE(proc->WaitFor(milliseconds(10'000)));
}

}  // namespace
}  // namespace dvpn
