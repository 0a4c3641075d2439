#include "client/escrow_top_up.h"

#include "common/io_thread.h"
#include "common/log.h"
#include "ledger/requests.h"
#include "payments/payment_session.h"

namespace dvpn::tunnel_client {
namespace {

std::shared_ptr<spdlog::logger> Log() {
  static auto log = Logger("top-up");
  return log;
}

constexpr std::chrono::seconds kRetryAfter{5};

}  // namespace

EscrowTopUp::EscrowTopUp(std::shared_ptr<ledger::rpc::LedgerClient> ledger, Options options)
    : ledger_(std::move(ledger)), options_(std::move(options)) {}

EscrowTopUp::~EscrowTopUp() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Result<void, client::Errc> EscrowTopUp::Start() {
  using client::Errc;
  if (options_.amount.IsZero()) return Fail(Errc::kBadConfig, "top-up amount is zero");
  auto channel = ledger_->GetChannel(options_.channel);
  if (!channel) {
    return Fail(Errc::kLedger, "cannot read the channel: " + channel.error().message);
  }
  if (channel->client_key != options_.client->public_key()) {
    return Fail(Errc::kChannel, "the channel belongs to another client key");
  }
  if (channel->status != ledger::ChannelStatus::kOpen) {
    return Fail(Errc::kChannel, "the channel is not open");
  }
  {
    std::lock_guard lock(mu_);
    deposit_ = channel->deposit;
  }
  worker_ = std::thread([this] {
    NameThisThread("escrow-top-up");
    Run();
  });
  return {};
}

void EscrowTopUp::OnEscrowUse(Amount cumulative, bool escrow_low) {
  {
    std::lock_guard lock(mu_);
    const bool low =
        escrow_low || payments::EscrowRunsLow(deposit_, cumulative, options_.below);
    if (!low) return;
    pending_ = true;
    pending_low_ = pending_low_ || escrow_low;
    pending_cumulative_ = std::max(pending_cumulative_, cumulative);
  }
  cv_.notify_all();
}

uint64_t EscrowTopUp::top_ups() const {
  std::lock_guard lock(mu_);
  return top_ups_;
}

void EscrowTopUp::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || pending_; });
    if (stop_) return;
    const Amount cumulative = pending_cumulative_;
    const bool low = pending_low_;
    pending_ = false;
    pending_low_ = false;
    lock.unlock();
    const bool ok = MaybeTopUp(cumulative, low);
    lock.lock();
    // After a failure, later triggers wait (they are coalesced meanwhile): no call storm
    // against a ledger that is down or an account that cannot pay.
    if (!ok) cv_.wait_for(lock, kRetryAfter, [this] { return stop_; });
  }
}

bool EscrowTopUp::MaybeTopUp(Amount cumulative, bool escrow_low) {
  auto channel = ledger_->GetChannel(options_.channel);
  if (!channel) {
    Log()->warn("top-up: cannot read the channel: {}", channel.error().message);
    return false;
  }
  {
    std::lock_guard lock(mu_);
    deposit_ = channel->deposit;
  }
  if (!escrow_low && !payments::EscrowRunsLow(channel->deposit, cumulative, options_.below)) {
    return true;  // someone topped up meanwhile
  }
  if (channel->status != ledger::ChannelStatus::kOpen) {
    Log()->error("top-up: the channel is not open any more");
    return false;
  }
  const auto client = payments::Address::FromPublicKey(options_.client->public_key());
  auto account = ledger_->GetAccount(client);
  if (!account) {
    Log()->warn("top-up: cannot read the account: {}", account.error().message);
    return false;
  }
  auto req = ledger::MakeTopUpChannel(*options_.client, options_.ledger, options_.channel,
                                      options_.amount, account->last_nonce + 1, 0);
  auto topped = ledger_->TopUpChannel(req);
  if (!topped) {
    Log()->error("top-up of {} refused: {}", options_.amount.ToString(), topped.error().message);
    return false;
  }
  std::lock_guard lock(mu_);
  deposit_ = topped->deposit;
  ++top_ups_;
  Log()->info("topped up the channel by {}: deposit now {} (signed so far {})",
              options_.amount.ToString(), topped->deposit.ToString(), cumulative.ToString());
  return true;
}

}  // namespace dvpn::tunnel_client
