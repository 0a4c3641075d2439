#pragma once
// Small helpers shared by the settlement tests: building accepted promises with real keys,
// submitting one and waiting for its durable answer, and bounded polling.

#include <chrono>
#include <future>
#include <optional>
#include <ostream>
#include <thread>

#include <gtest/gtest.h>

#include "common/amount.h"
#include "ledger/requests.h"
#include "settlement/promise_store.h"

namespace dvpn {
// Readable amounts in assertion failures.
inline void PrintTo(const Amount& amount, std::ostream* os) {
  *os << amount.ToString() << " credits";
}
}  // namespace dvpn

namespace dvpn::payments::testing {

inline constexpr Amount Micro(uint64_t v) { return Amount::FromMicro(v); }

inline AcceptedPromise Accepted(const PrivateKey& client, const LedgerId& ledger,
                                const ChannelId& channel, Amount cumulative,
                                std::optional<Amount> deposit = std::nullopt,
                                std::optional<uint64_t> deadline = std::nullopt) {
  SignedPromise p = ledger::MakePromise(client, ledger, channel, cumulative);
  return AcceptedPromise{ledger,  channel, client.public_key(), cumulative, p.signature,
                         deposit, deadline};
}

// Submits and waits (bounded) for the callback. A Submit refusal is returned as is.
inline StoreResult<SubmitResult> SubmitAndWait(PromiseStore& store, AcceptedPromise promise) {
  auto done = std::make_shared<std::promise<StoreResult<SubmitResult>>>();
  auto future = done->get_future();
  auto ok = store.Submit(std::move(promise),
                         [done](StoreResult<SubmitResult> r) { done->set_value(std::move(r)); });
  if (!ok) return std::unexpected(ok.error());
  if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "no durable answer within 20 s";
    return Fail(StoreErrc::kStorage, "timeout");
  }
  return future.get();
}

// Polls `condition` every 2 ms until it holds or `timeout` passes.
template <class F>
bool WaitUntil(F&& condition, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace dvpn::payments::testing
