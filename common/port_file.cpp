#include "common/port_file.h"

#include <filesystem>
#include <fstream>
#include <system_error>

namespace dvpn {

Result<void, FileErrc> WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return Fail(FileErrc::kIo, "cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return Fail(FileErrc::kIo, "cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
  return {};
}

Result<void, FileErrc> WritePortFile(const std::string& path, int port) {
  if (path.empty()) return {};
  return WriteFileAtomically(path, std::to_string(port) + "\n");
}

}  // namespace dvpn
