#include "common/amount.h"

#include <charconv>

namespace dvpn {

std::optional<Amount> Amount::CheckedAdd(Amount other) const {
  uint64_t sum;
  if (__builtin_add_overflow(micro_, other.micro_, &sum)) return std::nullopt;
  return Amount(sum);
}

std::optional<Amount> Amount::CheckedSub(Amount other) const {
  if (other.micro_ > micro_) return std::nullopt;
  return Amount(micro_ - other.micro_);
}

std::optional<Amount> Amount::CheckedMul(uint64_t factor) const {
  uint64_t product;
  if (__builtin_mul_overflow(micro_, factor, &product)) return std::nullopt;
  return Amount(product);
}

std::string Amount::ToString() const {
  std::string frac = std::to_string(micro_ % kMicroPerCredit);
  frac.insert(0, 6 - frac.size(), '0');
  return std::to_string(micro_ / kMicroPerCredit) + "." + frac;
}

namespace {

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::optional<uint64_t> ParseU64(std::string_view s) {
  if (!AllDigits(s)) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

}  // namespace

std::optional<Amount> Amount::Parse(std::string_view text) {
  if (!text.empty() && text.back() == 'u') {
    auto micro = ParseU64(text.substr(0, text.size() - 1));
    if (!micro) return std::nullopt;
    return Amount(*micro);
  }
  const size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string frac;
  if (dot != std::string_view::npos) {
    std::string_view f = text.substr(dot + 1);
    if (f.empty() || f.size() > 6 || !AllDigits(f)) return std::nullopt;
    frac = std::string(f);
  }
  frac.append(6 - frac.size(), '0');
  auto credits = ParseU64(whole);
  auto micro_part = ParseU64(frac);
  if (!credits || !micro_part) return std::nullopt;
  auto scaled = Amount(*credits).CheckedMul(kMicroPerCredit);
  if (!scaled) return std::nullopt;
  return scaled->CheckedAdd(Amount(*micro_part));
}

}  // namespace dvpn
