#pragma once
// Network namespaces that a test creates and owns (docs/full-tunnel.md tests): named ones
// (`ip netns add`), joined by veth pairs, with processes started in them and threads run in
// them. Every namespace is deleted by its destructor, also when the test fails; at creation,
// namespaces left behind by test processes that no longer exist are deleted too. Names are
// "dvpnt<pid>-<suffix>", so parallel test processes never collide. Root only: use
// NetnsUnavailable() to skip with a clear message elsewhere.

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/subprocess.h"

namespace dvpn::testing {

// Why network namespaces, veth pairs and TUN devices cannot be used here (not root, no `ip`,
// no /dev/net/tun), or empty when they can.
std::string NetnsUnavailable();

// Runs argv (argv[0] a path or a name found on PATH) with a 10 s deadline. Returns its
// combined output on exit status 0; otherwise a message with the status and the output.
std::expected<std::string, std::string> RunCommand(const std::vector<std::string>& argv);

class Netns {
 public:
  static std::expected<Netns, std::string> Create(std::string_view suffix);

  Netns(Netns&& other) noexcept;
  Netns& operator=(Netns&& other) noexcept;
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  ~Netns();  // deletes the namespace (its devices go with it)

  const std::string& name() const { return name_; }

  // Runs `command` (argv) inside the namespace: `ip netns exec <name> ...`, with RunCommand's
  // deadline.
  std::expected<std::string, std::string> Exec(const std::vector<std::string>& argv) const;
  // The same for a shell line (sh -c), for the tests' `ip` and `nft` set-up.
  std::expected<std::string, std::string> Shell(const std::string& line) const;
  // Starts a long-running process inside the namespace (stopped by its Subprocess).
  std::expected<Subprocess, std::string> Spawn(const std::vector<std::string>& argv,
                                               const std::string& log_path) const;
  // Runs `body` on a thread that joined the namespace; sockets it opens belong to the
  // namespace and may be used from any thread afterwards. False (with `error` set) when the
  // thread could not join.
  bool RunInside(const std::function<void()>& body, std::string* error = nullptr) const;

 private:
  explicit Netns(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// A veth pair: `a_name` in `a`, `b_name` in `b`, both up, with the given addresses ("10.0.0.1/24";
// empty: none). IPv6 addresses are added without duplicate address detection.
std::expected<void, std::string> AddVethPair(const Netns& a, const std::string& a_name,
                                             const std::vector<std::string>& a_addresses,
                                             const Netns& b, const std::string& b_name,
                                             const std::vector<std::string>& b_addresses);

}  // namespace dvpn::testing
