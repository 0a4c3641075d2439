#pragma once
// Test helpers for end-to-end tests that run the real executables: start a process with
// posix_spawn, signal it by PID, wait for it with a deadline, and poll for files it writes.
// Every wait is bounded. A Subprocess still running when destroyed is killed (SIGKILL) and
// reaped, so a failing test leaves no children behind.
//
// Not thread-safe: one thread owns each Subprocess (Signal may be called from another).

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <optional>
#include <string>
#include <vector>

namespace dvpn::testing {

// How SpawnChild starts a child. Its stdout goes to `stdout_path` (appended, or truncated first)
// unless that is empty, when both streams are inherited; stderr goes to `stderr_path`, or with
// stdout when that is empty. `own_group` puts it in a new process group (kill(-pid) reaches
// its helpers).
struct SpawnOptions {
  std::string stdout_path;
  std::string stderr_path;
  bool truncate = false;
  bool null_stdin = false;
  bool own_group = false;
};

// posix_spawn of argv[0] (a path) with default signal dispositions and an empty signal mask,
// whatever the test runner's threads have blocked. Returns the child's pid.
std::expected<pid_t, std::string> SpawnChild(const std::vector<std::string>& argv,
                                             const SpawnOptions& options);

class Subprocess {
 public:
  // Starts argv[0] (a path) with the arguments argv[1..]. stdout and stderr are appended to
  // `log_path` (created if needed) unless it is empty, in which case they are inherited.
  static std::expected<Subprocess, std::string> Spawn(const std::vector<std::string>& argv,
                                                      const std::string& log_path = "");

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();  // KillAndReap()

  pid_t pid() const { return pid_; }
  // True until the process has been reaped by WaitFor/KillAndReap.
  bool running() const { return pid_ > 0; }

  // kill(pid, sig) if the process has not been reaped. False when it has, or kill fails.
  bool Signal(int sig) const;
  // Waits up to `timeout` for the process to exit and reaps it. Returns the raw wait status
  // (use WIFEXITED/WEXITSTATUS), or nullopt when it is still running at the deadline.
  std::optional<int> WaitFor(std::chrono::milliseconds timeout);
  // SIGKILL and reap (bounded: 10 s). No-op once reaped.
  void KillAndReap();

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

// Polls until `path` exists and holds a complete line with a port number (1..65535), or the
// timeout passes (nullopt).
std::optional<int> WaitForPortFile(const std::string& path, std::chrono::milliseconds timeout);

// The whole file (empty when it cannot be read).
std::string ReadFile(const std::string& path);
// Writes `secret` and a newline to `path` with mode 0600 whatever the umask (what a daemon's
// --identity-key-file must be). Returns `path`; on failure the daemon will say what is wrong.
std::string WriteSecretFile(const std::string& path, const std::string& secret);
// Its last `max_bytes` (a child's log: the end is what matters when a test fails).
std::string FileTail(const std::string& path, size_t max_bytes = 3000);
// The same, giving up early (nullopt) when `child` exits meanwhile (it is then reaped).
std::optional<int> WaitForPortFile(const std::string& path, std::chrono::milliseconds timeout,
                                   Subprocess& child);

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace dvpn::testing
