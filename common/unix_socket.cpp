#include "common/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace dvpn {

namespace {

std::unexpected<Error<UnixSocketErrc>> Io(const std::string& what, const std::string& path) {
  return Fail(UnixSocketErrc::kIo, what + " " + path + ": " + std::strerror(errno));
}

// True when something accepts a connection on the socket at `path`.
bool Live(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return live;
}

}  // namespace

Result<void, UnixSocketErrc> PrepareUnixSocketPath(const std::string& path) {
  if (path.empty() || path.front() != '/') {
    return Fail(UnixSocketErrc::kBadPath, "unix socket " + path + ": not an absolute path");
  }
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Fail(UnixSocketErrc::kBadPath, "unix socket " + path + ": longer than " +
                                              std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                              " bytes");
  }
  const std::string folder = std::filesystem::path(path).parent_path().string();
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0) return Io("cannot use the folder", folder);
  if (!S_ISDIR(st.st_mode)) {
    return Fail(UnixSocketErrc::kBadPath,
                "unix socket " + path + ": " + folder + " is not a folder");
  }
  if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
    return Fail(UnixSocketErrc::kUnsafe, "unix socket " + path + ": any user may write to " +
                                             folder + " (and replace the socket)");
  }
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return Io("cannot use", path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Fail(UnixSocketErrc::kNotSocket, "unix socket " + path + ": something else is there");
  }
  if (Live(path)) {
    return Fail(UnixSocketErrc::kInUse, "unix socket " + path + ": another process listens on it");
  }
  if (::unlink(path.c_str()) != 0) return Io("cannot remove the stale socket", path);
  return {};
}

Result<void, UnixSocketErrc> SetUnixSocketMode(const std::string& path, mode_t mode) {
  if (::chmod(path.c_str(), mode) != 0) return Io("cannot set the mode of", path);
  return {};
}

}  // namespace dvpn
