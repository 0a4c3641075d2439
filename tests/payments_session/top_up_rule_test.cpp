// The client's top-up rule (payments/payment_session.h EscrowRunsLow, docs/payments.md §5),
// checked against its definition in plain integers over random and edge amounts.

#include <gtest/gtest.h>

#include <random>

#include "payments/payment_session.h"

namespace dvpn::payments {
namespace {

TEST(TopUpRule, EscrowRunsLowExactlyWhenWhatIsLeftIsBelowTheBar) {
  std::mt19937_64 rng(0x70b0);
  const uint64_t edges[] = {0, 1, 999'999, 1'000'000, 1'000'001, UINT64_MAX - 1, UINT64_MAX};
  auto draw = [&](int i) -> uint64_t {
    if (i % 4 == 0) return edges[rng() % std::size(edges)];
    return rng() % 20'000'000;  // up to 20 credits, in micro-credits
  };
  for (int i = 0; i < 200'000; ++i) {
    const uint64_t deposit = draw(i), signed_total = draw(i + 1), below = draw(i + 2);
    const uint64_t left = signed_total >= deposit ? 0 : deposit - signed_total;
    EXPECT_EQ(EscrowRunsLow(Amount::FromMicro(deposit), Amount::FromMicro(signed_total),
                            Amount::FromMicro(below)),
              left < below)
        << deposit << " " << signed_total << " " << below;
    if (HasFailure()) return;
  }
  // A bar of zero never calls for a top-up by itself (only the provider's report does).
  EXPECT_FALSE(EscrowRunsLow(Amount::FromMicro(5), Amount::FromMicro(5), Amount::Zero()));
  EXPECT_TRUE(EscrowRunsLow(Amount::FromMicro(5), Amount::FromMicro(5), Amount::FromMicro(1)));
}

}  // namespace
}  // namespace dvpn::payments
