#pragma once
// Result<T, Code>: the value of an operation that can fail in an expected way (bad input, a peer
// that misbehaves, a missing row). Each component declares its own `enum class` of error codes
// and uses Result<T, ThatEnum>; exceptions are kept for start-up and programming errors.

#include <expected>
#include <string>
#include <utility>

namespace dvpn {

template <class Code>
struct Error {
  Code code;
  std::string message;  // for a person: says what was wrong, never contains secrets
};

template <class T, class Code>
using Result = std::expected<T, Error<Code>>;

// Builds the failure side of a Result: `return Fail(Errc::kReplay, "nonce 3 already used");`
template <class Code>
[[nodiscard]] std::unexpected<Error<Code>> Fail(Code code, std::string message) {
  return std::unexpected(Error<Code>{code, std::move(message)});
}

}  // namespace dvpn
