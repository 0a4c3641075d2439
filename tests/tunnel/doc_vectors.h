#pragma once
// Reads the test vectors a document prints between "<!-- NAME:begin -->" and "<!-- NAME:end -->":
// one "key = hex" per line, a long hex value continued on lines indented with spaces. Tests
// compare them with what the code computes, so a document and the code cannot drift apart.

#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

namespace dvpn::tunnel::testing {

// key -> hex of every vector line in block `name` of the file at `path`; empty when the file or
// the block is missing.
inline std::map<std::string, std::string> ReadDocVectors(const std::string& path,
                                                         const std::string& name) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const auto begin = doc.find("<!-- " + name + ":begin -->");
  const auto end = doc.find("<!-- " + name + ":end -->");
  std::map<std::string, std::string> out;
  if (begin == std::string::npos || end == std::string::npos || end < begin) return out;
  std::string block = doc.substr(begin, end - begin);
  block = std::regex_replace(block, std::regex(R"(\n +([0-9a-f]+))"), "$1");
  const std::regex line(R"(([\w.]+) = ([0-9a-f]+))");
  for (std::sregex_iterator it(block.begin(), block.end(), line), last; it != last; ++it) {
    out[(*it)[1]] = (*it)[2];
  }
  return out;
}

}  // namespace dvpn::tunnel::testing
