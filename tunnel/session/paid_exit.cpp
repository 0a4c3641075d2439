#include "tunnel/session/paid_exit.h"

#include <algorithm>
#include <thread>

#include "common/clock.h"
#include "common/log.h"
#include "payments/wire/control_codec.h"

namespace dvpn::tunnel::session {
namespace {

constexpr size_t kMaxCachedChannels = 4096;

CloseReason ToTunnelReason(payments::CloseReason r) {
  return static_cast<CloseReason>(static_cast<uint8_t>(r));
}

}  // namespace

void ExitPayments::ReadChannel(
    asio::any_io_executor ex, const payments::ChannelId& channel,
    std::function<void(payments::GatewayResult<ledger::ChannelState>)> done) {
  auto* gateway = config_.gateway;
  auto deadline = std::chrono::steady_clock::now() + config_.ledger_timeout;
  auto inflight = inflight_;
  {
    std::lock_guard<std::mutex> lock(inflight->mu);
    ++inflight->count;
  }
  std::thread([gateway, channel, deadline, ex, inflight, done = std::move(done)]() mutable {
    auto r = gateway->GetChannel(channel, deadline);
    asio::post(ex, [r = std::move(r), done = std::move(done)]() mutable { done(std::move(r)); });
    std::lock_guard<std::mutex> lock(inflight->mu);
    --inflight->count;
    inflight->cv.notify_all();
  }).detach();
}

bool ExitPayments::WaitForLedgerCalls(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(inflight_->mu);
  return inflight_->cv.wait_until(lock, deadline, [&] { return inflight_->count == 0; });
}

asio::awaitable<Result<ExitPayments::Admission, AdmissionErrc>> ExitPayments::Admit(
    const ClientHello& hello) {
  auto self = shared_from_this();
  auto ex = co_await asio::this_coro::executor;
  if (hello.ledger != config_.ledger) {
    co_return Fail(AdmissionErrc::kRefused, "the channel is on another ledger");
  }
  if (live_.contains(hello.channel)) {
    co_return Fail(AdmissionErrc::kRefused, "the channel already has a live session");
  }
  std::optional<ledger::ChannelState> state;
  auto now = std::chrono::steady_clock::now();
  auto it = cache_.find(hello.channel);
  if (it != cache_.end() && now - it->second.at < config_.channel_cache_ttl) {
    state = it->second.state;
  } else {
    auto timer = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
    auto result = std::make_shared<std::optional<payments::GatewayResult<ledger::ChannelState>>>();
    ReadChannel(ex, hello.channel, [timer, result](auto r) {
      *result = std::move(r);
      timer->cancel();
    });
    error_code ec;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!result->has_value()) co_return Fail(AdmissionErrc::kLedger, "internal error");
    auto& r = **result;
    if (r) {
      state = *r;
      if (cache_.size() >= kMaxCachedChannels) {  // bounded: drop stale entries, else all
        const auto t = std::chrono::steady_clock::now();
        std::erase_if(cache_,
                      [&](const auto& e) { return t - e.second.at >= config_.channel_cache_ttl; });
        if (cache_.size() >= kMaxCachedChannels) cache_.clear();
      }
      cache_.insert_or_assign(hello.channel, Cached{*r, std::chrono::steady_clock::now()});
    } else if (r.error().code == payments::GatewayErrc::kUnknownChannel) {
      co_return Fail(AdmissionErrc::kRefused, "unknown channel");
    } else if (it != cache_.end()) {
      state = it->second.state;  // the ledger is unreachable: a cached read still serves
    } else {
      co_return Fail(AdmissionErrc::kLedger,
                     "cannot read the channel from the ledger: " + r.error().message);
    }
  }
  if (live_.contains(hello.channel)) {  // another handshake got there while we waited
    co_return Fail(AdmissionErrc::kRefused, "the channel already has a live session");
  }
  auto stored = config_.store->Get(hello.channel);
  if (!stored) co_return Fail(AdmissionErrc::kStore, "promise store unavailable");
  payments::SessionTerms terms;
  terms.price = config_.price;
  terms.invoice_interval_bytes = config_.invoice_interval_bytes;
  terms.credit_window_bytes = config_.credit_window_bytes;
  terms.payment_grace_ms = config_.payment_grace_ms;
  terms.payee = payments::Address::FromPublicKey(config_.provider_key->public_key());
  if (*stored && (*stored)->cumulative.micro() > 0) {
    terms.base_cumulative = (*stored)->cumulative;
    terms.base_signature = (*stored)->signature;
  }
  // The channel's unpaid bytes from earlier sessions (docs/payments.md §4); a window lowered
  // since then caps what is carried.
  auto debt = config_.store->ChannelDebt(hello.channel);
  if (!debt) co_return Fail(AdmissionErrc::kStore, "promise store unavailable");
  terms.carried_bytes = std::min(*debt, terms.credit_window_bytes);
  payments::ChannelFacts facts;
  facts.provider = state->provider;
  facts.client_key = state->client_key.bytes();
  const uint64_t now_s = dvpn::UnixSeconds();
  facts.open_and_live = state->status == ledger::ChannelStatus::kOpen && now_s < state->expiry_unix;
  facts.deposit = state->deposit;
  // Terms outside the protocol's ranges (a misconfigured exit) are not this channel's fault:
  // the session is admitted so that msg2 shows them to the client, which refuses them; then
  // PayeeSession::Create refuses the session too.
  const Amount first_window = payments::ValidateTerms(terms) ? payments::FirstWindowCharge(terms)
                                                             : Amount::Zero();
  auto ok = payments::CheckChannelForSession(facts, terms.payee, hello.identity,
                                             terms.base_cumulative, first_window);
  if (!ok) co_return Fail(AdmissionErrc::kRefused, ok.error().message);
  live_.insert(hello.channel);
  co_return Admission{terms, *state};
}

// ---------------------------------------------------------------------------------------------

PayeeController::PayeeController(std::shared_ptr<ExitPayments> payments,
                                 payments::PayeeSession session,
                                 std::shared_ptr<MeteredSession> tunnel,
                                 ledger::ChannelState channel,
                                 std::chrono::steady_clock::time_point msg2_sent)
    : payments_(std::move(payments)),
      session_(std::move(session)),
      tunnel_(tunnel),
      channel_(std::move(channel)),
      start_(msg2_sent),
      timer_(tunnel->executor()) {}

uint64_t PayeeController::ElapsedMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start_)
      .count();
}

uint64_t PayeeController::Metered() const {
  auto t = tunnel_.lock();
  return t ? t->data_bytes_sent() + t->data_bytes_received() : session_.metered_bytes();
}

void PayeeController::Start() {
  auto t = tunnel_.lock();
  if (!t) return;
  std::weak_ptr<PayeeController> weak = shared_from_this();
  const uint64_t every = std::max<uint64_t>(4096, session_.terms().invoice_interval_bytes / 8);
  t->SetMeterObserver(every, [weak] {
    if (auto c = weak.lock(); c && !c->done_)
      c->Apply(c->session_.OnMetered(c->Metered(), c->ElapsedMs()));
  });
  t->SetControlHandler([weak](ByteSpan m) {
    if (auto c = weak.lock()) c->OnControl(m);
  });
  // The tunnel never meters past the session's limit; it says when it is held there.
  t->LimitForwarding(session_.ForwardingLimit(), [weak](uint64_t limit) {
    if (auto c = weak.lock(); c && !c->done_)
      c->Apply(c->session_.OnLimitReached(limit, c->Metered(), c->ElapsedMs()));
  });
  Apply(session_.OnMetered(Metered(), ElapsedMs()));
}

void PayeeController::OnClosed() {
  if (done_) return;
  done_ = true;
  timer_.cancel();
  // The exact unpaid bytes replace the reservation before the channel can be admitted again.
  session_.OnMetered(Metered(), ElapsedMs());
  const uint64_t unpaid = session_.UnpaidChannelBytes();
  if (auto ok = payments_->config().store->SetChannelDebt(payments_->config().ledger, channel_.id,
                                                          unpaid);
      !ok) {
    // The reservation stays: the next session carries at most that (more than was served).
    TunnelLog()->error("promise store: cannot record the channel's unpaid bytes: {}",
                       payments::StoreErrcName(ok.error().code));
  }
  payments_->Release(channel_.id);
  TunnelLog()->debug(
      "channel {}: session over: metered {} bytes ({} carried in, {} unpaid carried out), "
      "accepted {} (base {})",
      ToHex(channel_.id.bytes).substr(0, 16), session_.metered_bytes(), session_.carried_bytes(),
      unpaid, session_.accepted().ToString(), session_.base().ToString());
}

void PayeeController::Send(const payments::ControlMessage& message) {
  auto t = tunnel_.lock();
  if (!t) return;
  auto bytes = payments::wire::EncodeControl(message);
  // Invoices go behind the DATA they count (docs/payments.md §3); the rest is urgent.
  const auto order = std::holds_alternative<payments::Invoice>(message)
                         ? MeteredSession::ControlOrder::kAfterData
                         : MeteredSession::ControlOrder::kUrgent;
  t->SendControl(bytes, order);
}

void PayeeController::Apply(payments::PayeeActions actions) {
  if (done_) return;
  auto t = tunnel_.lock();
  if (!t || t->closed()) return;
  for (const auto& m : actions.send) Send(m);
  if (actions.forwarding == payments::Forwarding::kPause) {
    t->SetForwardingPaused(true);
  } else if (actions.forwarding == payments::Forwarding::kResume) {
    t->SetForwardingPaused(false);
  }
  if (actions.read_deposit) ReadDeposit(nullptr);
  if (actions.reserve && !actions.end) {
    // Durable before the limit rises: a crash cannot forget bytes served beyond the record.
    const uint64_t reserve = *actions.reserve;
    auto ok = payments_->config().store->SetChannelDebt(payments_->config().ledger, channel_.id,
                                                        reserve);
    auto next = ok ? session_.OnReserved(reserve, ElapsedMs())
                   : session_.OnReserveFailed(payments::StoreErrcName(ok.error().code));
    Apply(std::move(next));
    if (done_ || t->closed()) return;
  }
  if (actions.end) {
    // A peer causes this at will: debug (docs/tunnel.md, "Errors and logging").
    TunnelLog()->debug("{}: ending the session: {}", t->name(), actions.end->text);
    t->Close(ToTunnelReason(actions.end->reason), actions.end->text, true);
    return;
  }
  t->SetForwardingLimit(session_.ForwardingLimit());
  Rearm();
}

void PayeeController::Rearm() {
  auto next = session_.NextDeadlineMs();
  if (done_) next.reset();
  // Most calls (every meter check) leave the deadline as it is: no timer syscalls then.
  if (next == armed_deadline_) return;
  armed_deadline_ = next;
  timer_.cancel();
  if (!next) return;
  const uint64_t now = ElapsedMs();
  const uint64_t wait = *next > now ? *next - now : 0;
  timer_.expires_after(std::chrono::milliseconds(wait));
  std::weak_ptr<PayeeController> weak = shared_from_this();
  timer_.async_wait([weak](error_code ec) {
    if (ec) return;
    if (auto c = weak.lock(); c && !c->done_) {
      c->armed_deadline_.reset();
      c->Apply(c->session_.OnMetered(c->Metered(), c->ElapsedMs()));
    }
  });
}

void PayeeController::ReadDeposit(std::function<void()> then) {
  if (deposit_reading_ && !then) return;
  deposit_reading_ = true;
  std::weak_ptr<PayeeController> weak = shared_from_this();
  payments_->ReadChannel(timer_.get_executor(), channel_.id,
                         [weak, then = std::move(then)](auto r) {
                           auto c = weak.lock();
                           if (!c || c->done_) return;
                           c->deposit_reading_ = false;
                           if (r) {
                             c->channel_ = *r;
                             c->Apply(c->session_.UpdateDeposit(r->deposit, c->ElapsedMs()));
                           } else {
                             TunnelLog()->warn("deposit re-read failed: {}", r.error().message);
                           }
                           if (then) then();
                         });
}

void PayeeController::OnControl(ByteSpan message) {
  if (done_) return;
  auto t = tunnel_.lock();
  if (!t) return;
  auto decoded = payments::wire::DecodeControl(message);
  if (!decoded) {
    t->Close(CloseReason::kProtocolError, "malformed payment control message", true);
    return;
  }
  if (!*decoded) return;  // unknown message: ignored
  if (auto* p = std::get_if<payments::PromiseMessage>(&**decoded)) {
    HandlePromise(*p, false);
  } else if (auto* n = std::get_if<payments::Notice>(&**decoded)) {
    TunnelLog()->debug("{}: client notice {}", t->name(), static_cast<uint32_t>(n->code));
  }
}

void PayeeController::HandlePromise(const payments::PromiseMessage& promise, bool after_read) {
  auto t = tunnel_.lock();
  if (!t || done_) return;
  auto checked = session_.CheckPromise(promise, ElapsedMs());
  if (!checked) {
    const auto& refusal = checked.error();
    if (refusal.code == payments::PaymentErrc::kDepositReadNeeded && !after_read) {
      std::weak_ptr<PayeeController> weak = shared_from_this();
      ReadDeposit([weak, promise] {
        if (auto c = weak.lock()) c->HandlePromise(promise, true);
      });
      return;
    }
    if (refusal.code != payments::PaymentErrc::kDuplicate) {
      TunnelLog()->debug("{}: promise refused: {}", t->name(), refusal.message);
    }
    if (refusal.notify_peer) {
      Send(payments::Notice{payments::NoticeCode::kPromiseRefused, refusal.message});
    }
    if (refusal.close) t->Close(ToTunnelReason(*refusal.close), refusal.message, true);
    return;
  }
  payments::AcceptedPromise accepted{.ledger = payments_->config().ledger,
                                     .channel = channel_.id,
                                     .client_key = channel_.client_key,
                                     .cumulative = promise.cumulative,
                                     .signature = promise.signature,
                                     .deposit = channel_.deposit,
                                     .deadline_unix = std::nullopt};
  std::weak_ptr<PayeeController> weak = shared_from_this();
  auto ex = timer_.get_executor();
  const Amount cumulative = promise.cumulative;
  auto submitted = payments_->config().store->Submit(
      std::move(accepted), [weak, ex, cumulative](payments::StoreResult<payments::SubmitResult> r) {
        asio::post(ex, [weak, cumulative, r = std::move(r)] {
          auto c = weak.lock();
          if (!c || c->done_) return;
          if (!r) {
            TunnelLog()->error("promise store: promise not durable: {}",
                         payments::StoreErrcName(r.error().code));
            return;
          }
          c->Apply(c->session_.OnDurable(cumulative, c->ElapsedMs()));
        });
      });
  if (!submitted) {
    TunnelLog()->error("{}: promise store refused the promise: {}", t->name(),
                 payments::StoreErrcName(submitted.error().code));
  }
}

}  // namespace dvpn::tunnel::session
