// (being written)
#include "tests/payments_e2e/harness.h"

namespace dvpn::payments_e2e {
namespace {}  // namespace
}  // namespace dvpn::payments_e2e
