#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace dvpn::testing {
namespace {

constexpr std::chrono::milliseconds kPollInterval{5};

}  // namespace

std::expected<pid_t, std::string> SpawnChild(const std::vector<std::string>& argv,
                                             const SpawnOptions& options) {
  if (argv.empty()) return std::unexpected("empty argv");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  const int mode = O_WRONLY | O_CREAT | (options.truncate ? O_TRUNC : O_APPEND);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.null_stdin) {
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  }
  if (!options.stdout_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, options.stdout_path.c_str(), mode,
                                     0644);
    if (options.stderr_path.empty()) {
      posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    } else {
      posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, options.stderr_path.c_str(), mode,
                                       0644);
    }
  }
  // The child starts with default signal dispositions and an empty mask, whatever the test
  // runner's threads have blocked.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty_mask, defaults;
  sigemptyset(&empty_mask);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &empty_mask);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (options.own_group) {
    posix_spawnattr_setpgroup(&attr, 0);
    flags |= POSIX_SPAWN_SETPGROUP;
  }
  posix_spawnattr_setflags(&attr, flags);

  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return std::unexpected("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

std::expected<Subprocess, std::string> Subprocess::Spawn(const std::vector<std::string>& argv,
                                                         const std::string& log_path) {
  SpawnOptions options;
  options.stdout_path = log_path;
  auto pid = SpawnChild(argv, options);
  if (!pid) return std::unexpected(pid.error());
  return Subprocess(*pid);
}

Subprocess::Subprocess(Subprocess&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() { KillAndReap(); }

bool Subprocess::Signal(int sig) const {
  if (pid_ <= 0) return false;
  return ::kill(pid_, sig) == 0;
}

std::optional<int> Subprocess::WaitFor(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return status;
    }
    if (r < 0 && errno != EINTR) {
      // Not our child any more (already reaped elsewhere): treat as gone.
      pid_ = -1;
      return std::nullopt;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollInterval);
  }
}

void Subprocess::KillAndReap() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  WaitFor(std::chrono::seconds(10));
}

namespace {

std::optional<int> PollPortFile(const std::string& path, std::chrono::milliseconds timeout,
                                Subprocess* child) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !in.fail()) {
      char* end = nullptr;
      long port = std::strtol(line.c_str(), &end, 10);
      if (end != line.c_str() && port > 0 && port < 65536) return static_cast<int>(port);
    }
    if (child && child->WaitFor(std::chrono::milliseconds(0))) return std::nullopt;  // it died
    std::this_thread::sleep_for(kPollInterval);
  }
  return std::nullopt;
}

}  // namespace

std::optional<int> WaitForPortFile(const std::string& path, std::chrono::milliseconds timeout) {
  return PollPortFile(path, timeout, nullptr);
}

std::optional<int> WaitForPortFile(const std::string& path, std::chrono::milliseconds timeout,
                                   Subprocess& child) {
  return PollPortFile(path, timeout, &child);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string FileTail(const std::string& path, size_t max_bytes) {
  std::string text = ReadFile(path);
  return text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/dvpn-test-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
  }
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string WriteSecretFile(const std::string& path, const std::string& secret) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return path;
  (void)::fchmod(fd, 0600);
  const std::string line = secret + "\n";
  (void)!::write(fd, line.data(), line.size());
  ::close(fd);
  return path;
}

}  // namespace dvpn::testing
