#include "tests/node/chromium.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "tests/support/subprocess.h"

namespace dvpn::testing {
namespace {

constexpr std::chrono::milliseconds kPoll{20};
constexpr size_t kStderrTail = 4000;

bool Executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// Waits for `pid` until `deadline`; the raw status, or nullopt when still running.
std::optional<int> WaitUntil(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;  // not our child any more: treat as gone
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPoll);
  }
}

}  // namespace

std::optional<std::string> FindChromium() {
  if (const char* env = std::getenv("DVPN_CHROMIUM"); env && *env) {
    if (Executable(env)) return std::string(env);
    return std::nullopt;
  }
  for (const char* path : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (Executable(path)) return std::string(path);
  }
  return std::nullopt;
}

bool ChromiumOptional() {
  const char* env = std::getenv("DVPN_NO_CHROMIUM");
  return env && std::string(env) == "1";
}

std::expected<ChromiumRun, std::string> RunChromium(const std::vector<std::string>& args,
                                                    std::chrono::milliseconds timeout) {
  auto binary = FindChromium();
  if (!binary) {
    return std::unexpected(
        "Chromium is not installed (looked at $DVPN_CHROMIUM, /usr/bin/chromium, "
        "/usr/bin/chromium-browser); install the Debian package `chromium`, or set "
        "DVPN_NO_CHROMIUM=1 to skip the browser tests");
  }
  TempDir dir;
  const std::string out_path = dir.File("stdout");
  const std::string err_path = dir.File("stderr");
  std::vector<std::string> argv = {*binary,
                                   "--headless",
                                   "--disable-gpu",
                                   "--no-sandbox",
                                   "--no-first-run",
                                   "--no-default-browser-check",
                                   "--disable-extensions",
                                   "--disable-sync",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-default-apps",
                                   "--disable-dev-shm-usage",
                                   "--hide-scrollbars",
                                   "--mute-audio",
                                   "--user-data-dir=" + dir.File("profile")};
  argv.insert(argv.end(), args.begin(), args.end());
  auto spawned = SpawnChild(argv, SpawnOptions{.stdout_path = out_path,
                                               .stderr_path = err_path,
                                               .truncate = true,
                                               .null_stdin = true,
                                               .own_group = true});  // the browser's helpers join it
  if (!spawned) return std::unexpected(spawned.error());
  const pid_t pid = *spawned;

  ChromiumRun run;
  auto status = WaitUntil(pid, std::chrono::steady_clock::now() + timeout);
  if (!status) {
    run.timed_out = true;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    status = WaitUntil(pid, std::chrono::steady_clock::now() + std::chrono::seconds(10));
  }
  // Helpers that outlived the browser process (none normally): the group goes with it.
  ::kill(-pid, SIGKILL);
  if (status && *status >= 0 && WIFEXITED(*status)) run.exit_code = WEXITSTATUS(*status);
  run.stdout_text = ReadFile(out_path);
  run.stderr_tail = FileTail(err_path, kStderrTail);
  return run;
}

namespace {

std::string Describe(const ChromiumRun& run) {
  std::string what = run.timed_out ? "Chromium timed out and was killed"
                                   : "Chromium exited with " + std::to_string(run.exit_code);
  return what + "; its stderr ends with:\n" + run.stderr_tail;
}

}  // namespace

std::expected<std::string, std::string> DumpDom(const std::string& url, int virtual_time_ms,
                                                std::chrono::milliseconds timeout) {
  auto run = RunChromium(
      {"--virtual-time-budget=" + std::to_string(virtual_time_ms), "--dump-dom", url}, timeout);
  if (!run) return std::unexpected(run.error());
  if (run->timed_out || run->exit_code != 0) return std::unexpected(Describe(*run));
  if (run->stdout_text.empty())
    return std::unexpected("Chromium printed no DOM; " + Describe(*run));
  return std::move(run->stdout_text);
}

std::expected<void, std::string> Screenshot(const std::string& url, const std::string& png_path,
                                            int width, int height, int virtual_time_ms,
                                            std::chrono::milliseconds timeout) {
  std::error_code ignored;
  std::filesystem::remove(png_path, ignored);
  auto run = RunChromium({"--virtual-time-budget=" + std::to_string(virtual_time_ms),
                          "--window-size=" + std::to_string(width) + "," + std::to_string(height),
                          "--screenshot=" + png_path, url},
                         timeout);
  if (!run) return std::unexpected(run.error());
  if (run->timed_out || run->exit_code != 0) return std::unexpected(Describe(*run));
  if (!std::filesystem::exists(png_path)) {
    return std::unexpected("Chromium wrote no screenshot to " + png_path + "; " + Describe(*run));
  }
  return {};
}

}  // namespace dvpn::testing
