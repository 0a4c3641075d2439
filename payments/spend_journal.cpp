#include "payments/spend_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dvpn::payments {
namespace {

constexpr std::string_view kMagic = "dvpn-daily-spend v1 ";
constexpr size_t kMaxFileBytes = 128;  // the one line is far shorter; anything longer is wrong

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

bool ParseU64(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string Line(uint64_t day, Amount reserved) {
  std::ostringstream line;
  line << kMagic << day << ' ' << reserved.micro() << '\n';
  return line.str();
}

// Writes `data` to `path` durably: temp file, fsync, rename, fsync of the directory.
Result<void, JournalErrc> WriteDurably(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Fail(JournalErrc::kIo, Errno("cannot create " + tmp));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      auto e = Errno("cannot write " + tmp);
      ::close(fd);
      return Fail(JournalErrc::kIo, e);
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    auto e = Errno("cannot fsync " + tmp);
    ::close(fd);
    return Fail(JournalErrc::kIo, e);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Fail(JournalErrc::kIo, Errno("cannot rename " + tmp + " to " + path));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Fail(JournalErrc::kIo, Errno("cannot open directory " + dir));
  const int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return Fail(JournalErrc::kIo, Errno("cannot fsync directory " + dir));
  return {};
}

}  // namespace

Result<SpendJournal, JournalErrc> SpendJournal::Open(std::string path, Amount daily_cap) {
  if (daily_cap.IsZero()) {
    return Fail(JournalErrc::kNoCap, "spend journal " + path + ": no daily cap set");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (std::filesystem::exists(path)) {
      return Fail(JournalErrc::kIo, "cannot read spend journal " + path);
    }
    return SpendJournal(std::move(path), daily_cap, 0, Amount::Zero());
  }
  std::string text(kMaxFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  auto bad = [&](const std::string& why) {
    return Fail(JournalErrc::kCorrupt, "spend journal " + path + " is not valid (" + why +
                           "); fix or remove it (removing it forgets today's spending)");
  };
  if (text.size() > kMaxFileBytes) return bad("too long");
  if (!text.starts_with(kMagic)) return bad("unknown format");
  if (text.empty() || text.back() != '\n') return bad("truncated");
  std::string_view rest(text);
  rest.remove_prefix(kMagic.size());
  rest.remove_suffix(1);
  const size_t space = rest.find(' ');
  uint64_t day = 0;
  uint64_t micro = 0;
  if (space == std::string_view::npos || !ParseU64(rest.substr(0, space), &day) ||
      !ParseU64(rest.substr(space + 1), &micro)) {
    return bad("expected '<utc_day> <reserved_micro>'");
  }
  return SpendJournal(std::move(path), daily_cap, day, Amount::FromMicro(micro));
}

SpendJournal::SpendJournal(std::string path, Amount daily_cap, uint64_t day, Amount reserved)
    : path_(std::move(path)),
      cap_(daily_cap),
      block_(Amount::FromMicro(std::max<uint64_t>(daily_cap.micro() / kBlocksPerDay, 1))),
      day_(day),
      reserved_(reserved) {}

SpendJournal::SpendJournal(SpendJournal&& other) noexcept
    : path_(std::move(other.path_)),
      cap_(other.cap_),
      block_(other.block_),
      day_(other.day_),
      reserved_(other.reserved_),
      writes_(other.writes_) {}

Amount SpendJournal::ReservedFor(uint64_t utc_day) const {
  std::lock_guard lock(mu_);
  return utc_day > day_ ? Amount::Zero() : reserved_;
}

Result<void, JournalErrc> SpendJournal::Cover(uint64_t utc_day, Amount spent_today) {
  std::lock_guard lock(mu_);
  const uint64_t day = std::max(utc_day, day_);  // a clock that went back keeps the later day
  const Amount have = day > day_ ? Amount::Zero() : reserved_;
  if (spent_today <= have) return {};
  Amount want = spent_today.CheckedAdd(block_).value_or(Amount::Max());
  want = std::max(std::min(want, cap_), spent_today);
  if (auto w = WriteDurably(path_, Line(day, want)); !w) return w;
  day_ = day;
  reserved_ = want;
  ++writes_;
  return {};
}

Result<void, JournalErrc> SpendJournal::Trim(uint64_t utc_day, Amount spent_today) {
  std::lock_guard lock(mu_);
  if (utc_day != day_ || spent_today >= reserved_) return {};
  if (auto w = WriteDurably(path_, Line(day_, spent_today)); !w) return w;
  reserved_ = spent_today;
  ++writes_;
  return {};
}

uint64_t SpendJournal::writes() const {
  std::lock_guard lock(mu_);
  return writes_;
}

}  // namespace dvpn::payments
