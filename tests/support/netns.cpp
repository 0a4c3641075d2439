#include "tests/support/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

namespace dvpn::testing {

namespace {

constexpr std::chrono::seconds kCommandDeadline{10};
constexpr const char* kNetnsDir = "/var/run/netns";

std::string Prefix(pid_t pid) { return "dvpnt" + std::to_string(pid) + "-"; }

// Deletes the namespaces that earlier test processes (now gone) left behind.
void SweepStale() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kNetnsDir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("dvpnt")) continue;
    const size_t dash = name.find('-');
    if (dash == std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::atoi(name.substr(5, dash - 5).c_str()));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // still alive (or not ours to judge)
    (void)RunCommand({"ip", "netns", "delete", name});
  }
}

}  // namespace

std::string NetnsUnavailable() {
  if (::geteuid() != 0) return "needs root (network namespaces, veth, TUN, nftables)";
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "needs /dev/net/tun";
  auto ip = RunCommand({"ip", "-V"});
  if (!ip) return "needs iproute2 (`ip`): " + ip.error();
  return "";
}

std::expected<std::string, std::string> RunCommand(const std::vector<std::string>& argv) {
  TempDir dir;
  const std::string log = dir.File("out");
  std::vector<std::string> full = argv;
  if (!full.empty() && full[0].find('/') == std::string::npos) {
    // posix_spawn takes a path: look the name up on the usual system folders.
    for (const char* folder : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
      if (::access((folder + full[0]).c_str(), X_OK) == 0) {
        full[0] = folder + full[0];
        break;
      }
    }
  }
  auto child = Subprocess::Spawn(full, log);
  if (!child) return std::unexpected(child.error());
  auto status = child->WaitFor(kCommandDeadline);
  const std::string output = ReadFile(log);
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
  if (!status) return std::unexpected(line + ": still running after 10 s; killed\n" + output);
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return std::unexpected(line + ": exit status " + std::to_string(*status) + "\n" + output);
  }
  return output;
}

std::expected<Netns, std::string> Netns::Create(std::string_view suffix) {
  SweepStale();
  std::string name = Prefix(::getpid()) + std::string(suffix);
  (void)RunCommand({"ip", "netns", "delete", name});  // our own leftover from a crashed test
  if (auto ok = RunCommand({"ip", "netns", "add", name}); !ok) return std::unexpected(ok.error());
  Netns ns(std::move(name));
  if (auto ok = ns.Exec({"ip", "link", "set", "lo", "up"}); !ok) return std::unexpected(ok.error());
  return ns;
}

Netns::Netns(Netns&& other) noexcept : name_(std::move(other.name_)) { other.name_.clear(); }

Netns& Netns::operator=(Netns&& other) noexcept {
  if (this != &other) {
    if (!name_.empty()) (void)RunCommand({"ip", "netns", "delete", name_});
    name_ = std::move(other.name_);
    other.name_.clear();
  }
  return *this;
}

Netns::~Netns() {
  if (!name_.empty()) (void)RunCommand({"ip", "netns", "delete", name_});
}

std::expected<std::string, std::string> Netns::Exec(const std::vector<std::string>& argv) const {
  std::vector<std::string> full = {"ip", "netns", "exec", name_};
  full.insert(full.end(), argv.begin(), argv.end());
  return RunCommand(full);
}

std::expected<std::string, std::string> Netns::Shell(const std::string& line) const {
  return Exec({"/bin/sh", "-c", line});
}

std::expected<Subprocess, std::string> Netns::Spawn(const std::vector<std::string>& argv,
                                                    const std::string& log_path) const {
  std::vector<std::string> full = {"/usr/sbin/ip", "netns", "exec", name_};
  full.insert(full.end(), argv.begin(), argv.end());
  return Subprocess::Spawn(full, log_path);
}

bool Netns::RunInside(const std::function<void()>& body, std::string* error) const {
  bool joined = false;
  std::string why;
  std::thread t([&] {
    const std::string path = std::string(kNetnsDir) + "/" + name_;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      why = "open " + path + ": " + std::strerror(errno);
      return;
    }
    const int r = ::setns(fd, CLONE_NEWNET);
    const int err = errno;
    ::close(fd);
    if (r != 0) {
      why = "setns " + name_ + ": " + std::strerror(err);
      return;
    }
    joined = true;
    body();
  });
  t.join();
  if (!joined && error) *error = why;
  return joined;
}

std::expected<void, std::string> AddVethPair(const Netns& a, const std::string& a_name,
                                             const std::vector<std::string>& a_addresses,
                                             const Netns& b, const std::string& b_name,
                                             const std::vector<std::string>& b_addresses) {
  if (auto ok = a.Exec(
          {"ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name()});
      !ok) {
    return std::unexpected(ok.error());
  }
  auto configure =
      [](const Netns& ns, const std::string& dev,
         const std::vector<std::string>& addresses) -> std::expected<void, std::string> {
    for (const auto& address : addresses) {
      std::vector<std::string> argv = {"ip", "addr", "add", address, "dev", dev};
      if (address.find(':') != std::string::npos) argv.push_back("nodad");
      if (auto ok = ns.Exec(argv); !ok) return std::unexpected(ok.error());
    }
    if (auto ok = ns.Exec({"ip", "link", "set", dev, "up"}); !ok)
      return std::unexpected(ok.error());
    return {};
  };
  if (auto ok = configure(a, a_name, a_addresses); !ok) return ok;
  return configure(b, b_name, b_addresses);
}

}  // namespace dvpn::testing
