#include "common/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace dvpn {

Result<void, FileErrc> CreatePrivateFile(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) return {};
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return {};
    return Fail(FileErrc::kIo, "create " + path + ": " + std::strerror(errno));
  }
  // The umask can only remove bits, and 0600 is what we want; fchmod makes it exact anyway.
  const bool ok = ::fchmod(fd, 0600) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return Fail(FileErrc::kIo, "chmod 0600 " + path + ": " + std::strerror(err));
  return {};
}

Result<void, FileErrc> CreatePrivateDirectories(const std::string& path) {
  if (path.empty()) return {};
  std::filesystem::path whole(path);
  std::filesystem::path current;
  for (const auto& part : whole) {
    current /= part;
    if (part.empty() || part == "/" || part == "." || part == "..") continue;
    if (::mkdir(current.c_str(), 0700) == 0) {
      if (::chmod(current.c_str(), 0700) != 0) {
        return Fail(FileErrc::kIo, "chmod 0700 " + current.string() + ": " + std::strerror(errno));
      }
      continue;
    }
    if (errno != EEXIST) {
      return Fail(FileErrc::kIo, "create folder " + current.string() + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (::stat(current.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Fail(FileErrc::kIo, current.string() + " exists and is not a folder");
    }
  }
  return {};
}

}  // namespace dvpn
