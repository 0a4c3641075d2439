// A stand-in for libFuzzer's main, used by the normal (g++) build: runs the target over every
// file of a seed corpus directory, then over deterministic pseudo-random mutations of them
// (bit flips, byte sets, truncations, extensions, splices). No coverage feedback; its job is to
// keep the targets compiling and crash-free in every test run. Usage:
//   <target>_driver <corpus dir> [iterations]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <corpus dir> [iterations]\n", argv[0]);
    return 2;
  }
  const long iterations = argc > 2 ? std::atol(argv[2]) : 5000;
  std::vector<std::vector<uint8_t>> seeds;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1])) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "no seed files in %s\n", argv[1]);
    return 2;
  }
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size());
  uint64_t x = 0x9e3779b97f4a7c15ull;  // xorshift64*: deterministic, reproducible runs
  auto next = [&x] {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 2685821657736338717ull;
  };
  for (long i = 0; i < iterations; ++i) {
    std::vector<uint8_t> m = seeds[next() % seeds.size()];
    const int edits = 1 + next() % 4;
    for (int e = 0; e < edits; ++e) {
      switch (next() % 5) {
        case 0:
          if (!m.empty()) m[next() % m.size()] ^= uint8_t(1u << (next() % 8));
          break;
        case 1:
          if (!m.empty()) m[next() % m.size()] = uint8_t(next());
          break;
        case 2:
          if (!m.empty()) m.resize(next() % m.size());
          break;
        case 3:
          for (int k = next() % 32; k > 0; --k) m.push_back(uint8_t(next()));
          break;
        case 4: {
          const auto& o = seeds[next() % seeds.size()];
          if (!o.empty()) m.insert(m.end(), o.begin(), o.begin() + next() % o.size());
          break;
        }
      }
    }
    LLVMFuzzerTestOneInput(m.data(), m.size());
  }
  std::printf("%zu seeds, %ld mutations: ok\n", seeds.size(), iterations);
  return 0;
}
