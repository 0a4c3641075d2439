#include "common/port_file.h"

#include <filesystem>
#include <fstream>
#include <system_error>

namespace dvpn {

bool WriteFileAtomically(const std::string& path, const std::string& text, std::string* error) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      *error = "cannot write " + tmp;
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    *error = "cannot rename " + tmp + " to " + path + ": " + ec.message();
    return false;
  }
  return true;
}

bool WritePortFile(const std::string& path, int port, std::string* error) {
  return WriteFileAtomically(path, std::to_string(port) + "\n", error);
}

}  // namespace dvpn
