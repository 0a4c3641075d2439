#pragma once
// Amount: a count of micro-credits (1 credit = 1'000'000 micro-credits) in a uint64_t.
// There is no conversion to or from floating point; arithmetic is checked and reports overflow
// as an empty optional. Thread-safe as a value type.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dvpn {

class Amount {
 public:
  static constexpr uint64_t kMicroPerCredit = 1'000'000;

  constexpr Amount() = default;
  static constexpr Amount FromMicro(uint64_t micro) { return Amount(micro); }
  static constexpr Amount Zero() { return Amount(0); }
  static constexpr Amount Max() { return Amount(UINT64_MAX); }

  constexpr uint64_t micro() const { return micro_; }
  constexpr bool IsZero() const { return micro_ == 0; }

  // Empty when the result does not fit in uint64_t.
  [[nodiscard]] std::optional<Amount> CheckedAdd(Amount other) const;
  // Empty when other > *this.
  [[nodiscard]] std::optional<Amount> CheckedSub(Amount other) const;
  // Empty when the product does not fit.
  [[nodiscard]] std::optional<Amount> CheckedMul(uint64_t factor) const;

  constexpr auto operator<=>(const Amount&) const = default;

  // "12.000345" (credits with six decimals, trailing zeros kept so the unit is unambiguous).
  std::string ToString() const;
  // Accepts "12", "12.5", "0.000001" (credits, at most six decimals) or "12345u" (micro-credits).
  // Empty for anything else, including negative numbers, signs, spaces, exponents and overflow.
  static std::optional<Amount> Parse(std::string_view text);

 private:
  constexpr explicit Amount(uint64_t micro) : micro_(micro) {}
  uint64_t micro_ = 0;
};

inline constexpr Amount Min(Amount a, Amount b) { return a < b ? a : b; }

}  // namespace dvpn
