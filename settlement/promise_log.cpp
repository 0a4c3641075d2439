#include "settlement/promise_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dvpn::payments {
namespace {

constexpr uint32_t kMagic = 0x4c505644;  // "DVPL" little-endian
constexpr size_t kCheckedBytes = PromiseLog::kRecordSize - 8;

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

auto IoError(const std::string& what) {
  return Fail(StoreErrc::kStorage, what + ": " + std::strerror(errno));
}

}  // namespace

// Layout (little-endian): magic u32 | ledger 32 | channel 32 | client key 32 | cumulative u64 |
// signature 64 | flags u8 (1: deposit, 2: deadline) | deposit u64 | deadline u64 |
// received u64 | check 8 = SHA-256 of the bytes before it, first 8 bytes.
std::vector<uint8_t> PromiseLog::Encode(const LoggedPromise& r) {
  std::vector<uint8_t> out(kRecordSize, 0);
  uint8_t* p = out.data();
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(kMagic >> (8 * i));
  std::memcpy(p + 4, r.promise.ledger.bytes.data(), 32);
  std::memcpy(p + 36, r.promise.channel.bytes.data(), 32);
  std::memcpy(p + 68, r.promise.client_key.bytes().data(), 32);
  PutU64(p + 100, r.promise.cumulative.micro());
  std::memcpy(p + 108, r.promise.signature.data(), 64);
  p[172] = static_cast<uint8_t>((r.promise.deposit ? 1 : 0) | (r.promise.deadline_unix ? 2 : 0));
  PutU64(p + 173, r.promise.deposit ? r.promise.deposit->micro() : 0);
  PutU64(p + 181, r.promise.deadline_unix.value_or(0));
  PutU64(p + 189, r.received_unix);
  const Hash32 check = Sha256(ByteSpan(p, kCheckedBytes));
  std::memcpy(p + kCheckedBytes, check.data(), 8);
  return out;
}

std::optional<LoggedPromise> PromiseLog::Decode(std::span<const uint8_t> bytes) {
  if (bytes.size() != kRecordSize) return std::nullopt;
  const uint8_t* p = bytes.data();
  const Hash32 check = Sha256(ByteSpan(p, kCheckedBytes));
  if (std::memcmp(p + kCheckedBytes, check.data(), 8) != 0) return std::nullopt;
  uint32_t magic = 0;
  for (int i = 3; i >= 0; --i) magic = (magic << 8) | p[i];
  if (magic != kMagic || (p[172] & ~3u) != 0) return std::nullopt;
  auto key = PublicKey::Parse(ByteSpan(p + 68, 32));
  if (!key) return std::nullopt;
  LoggedPromise r{.promise = {.ledger = {},
                              .channel = {},
                              .client_key = *key,
                              .cumulative = {},
                              .signature = {},
                              .deposit = std::nullopt,
                              .deadline_unix = std::nullopt},
                  .received_unix = 0};
  std::memcpy(r.promise.ledger.bytes.data(), p + 4, 32);
  std::memcpy(r.promise.channel.bytes.data(), p + 36, 32);
  r.promise.cumulative = Amount::FromMicro(GetU64(p + 100));
  std::memcpy(r.promise.signature.data(), p + 108, 64);
  if (p[172] & 1) r.promise.deposit = Amount::FromMicro(GetU64(p + 173));
  if (p[172] & 2) r.promise.deadline_unix = GetU64(p + 181);
  r.received_unix = GetU64(p + 189);
  return r;
}

StoreResult<PromiseLog> PromiseLog::Open(const std::string& path,
                                         std::vector<LoggedPromise>* records) {
  records->clear();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return IoError("cannot open the promise log " + path);
  PromiseLog log(fd, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return IoError("cannot stat " + path);
  std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("cannot read " + path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  size_t valid = 0;
  while (valid + kRecordSize <= got) {
    auto r = Decode(std::span<const uint8_t>(buf.data() + valid, kRecordSize));
    if (!r) break;
    records->push_back(std::move(*r));
    valid += kRecordSize;
  }
  if (valid != static_cast<size_t>(st.st_size) &&
      ::ftruncate(fd, static_cast<off_t>(valid)) != 0) {
    return IoError("cannot cut the torn end of " + path);
  }
  log.size_ = valid;
  return log;
}

PromiseLog::PromiseLog(PromiseLog&& other) noexcept
    : fd_(other.fd_), path_(std::move(other.path_)), size_(other.size_), broken_(other.broken_) {
  other.fd_ = -1;
}

PromiseLog& PromiseLog::operator=(PromiseLog&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    size_ = other.size_;
    broken_ = other.broken_;
    other.fd_ = -1;
  }
  return *this;
}

PromiseLog::~PromiseLog() {
  if (fd_ >= 0) ::close(fd_);
}

StoreResult<void> PromiseLog::Append(std::span<const LoggedPromise> records, bool sync) {
  std::vector<uint8_t> buf;
  buf.reserve(records.size() * kRecordSize);
  for (const auto& r : records) {
    auto one = Encode(r);
    buf.insert(buf.end(), one.begin(), one.end());
  }
  if (broken_) return Fail(StoreErrc::kStorage, "the promise log " + path_ + " is unusable");
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::write(fd_, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto e = IoError("cannot append to the promise log " + path_);
      // Later records must not follow a torn one (Open would drop them): cut it off, or stop.
      if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) broken_ = true;
      return e;
    }
    done += static_cast<size_t>(n);
  }
  size_ += buf.size();
  if (sync && ::fdatasync(fd_) != 0) return IoError("cannot sync the promise log " + path_);
  return {};
}

StoreResult<void> PromiseLog::Clear() {
  if (::ftruncate(fd_, 0) != 0) return IoError("cannot empty the promise log " + path_);
  size_ = 0;
  broken_ = false;
  return {};
}

}  // namespace dvpn::payments
