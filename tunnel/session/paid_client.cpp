#include "tunnel/session/paid_client.h"

#include "common/clock.h"
#include "common/log.h"
#include "payments/wire/control_codec.h"

namespace dvpn::tunnel::session {

std::optional<uint64_t> CarryBook::Get(const payments::ChannelId& channel) const {
  std::lock_guard lock(mu_);
  auto it = known_.find(channel);
  if (it == known_.end()) return std::nullopt;
  return it->second;
}

void CarryBook::Set(const payments::ChannelId& channel, uint64_t unpaid_bytes) {
  std::lock_guard lock(mu_);
  if (known_.size() >= kMaxChannels && !known_.contains(channel)) known_.clear();
  known_[channel] = unpaid_bytes;
}

std::shared_ptr<PayerController> PayerController::Attach(
    const std::shared_ptr<MeteredSession>& tunnel, const ClientPaymentConfig& config,
    FinalHandler on_final) {
  auto terms = payments::wire::DecodeTerms(tunnel->session_params());
  if (!terms) {
    const std::string why = "the provider's session terms do not decode";
    TunnelLog()->error("{}", why);
    tunnel->Close(CloseReason::kTermsRefused, why, true);
    if (on_final) on_final(payments::CloseReason::kTermsRefused, why);
    return nullptr;
  }
  if (!*terms) return nullptr;  // free session
  payments::PayerSession::Options o;
  o.terms = **terms;
  o.policy = config.policy;
  o.identity = config.identity;
  o.ledger = config.ledger;
  o.channel = config.channel;
  o.expected_payee = config.expected_payee;
  o.daily = config.daily ? config.daily : std::make_shared<payments::DailySpend>();
  if (config.carry) o.known_unpaid_bytes = config.carry->Get(config.channel);
  auto session = payments::PayerSession::Accept(std::move(o));
  if (!session) {
    const std::string why = "session terms refused: " + session.error().message;
    TunnelLog()->error("{}", why);
    tunnel->Close(CloseReason::kTermsRefused, session.error().message, true);
    if (on_final) on_final(payments::CloseReason::kTermsRefused, why);
    return nullptr;
  }
  TunnelLog()->info(
      "paid session: {} per MB, {} per minute, base {}, invoice every {} bytes, {} bytes carried",
      (**terms).price.per_mb.ToString(), (**terms).price.per_minute.ToString(),
      (**terms).base_cumulative.ToString(), (**terms).invoice_interval_bytes,
      (**terms).carried_bytes);
  // Terms version 2: the exit grants upload credit from its credit window (docs/payments.md §4).
  tunnel->ZeroTunnelSendWindow();
  auto c = std::shared_ptr<PayerController>(
      new PayerController(std::move(*session), tunnel, config, std::move(on_final)));
  std::weak_ptr<PayerController> weak = c;
  // The handler holds the controller: it lives as long as the tunnel keeps its handler.
  tunnel->SetControlHandler([c](ByteSpan m) { c->OnControl(m); });
  if (c->carry_) {
    // The record stays within 256 KiB of the meter, so it is current when the tunnel ends.
    tunnel->SetMeterObserver(256 * 1024, [weak] {
      auto self = weak.lock();
      if (!self) return;
      if (auto t = self->tunnel_.lock()) self->NoteUnpaid(*t);
    });
    c->NoteUnpaid(*tunnel);
  }
  return c;
}

PayerController::PayerController(payments::PayerSession session,
                                 std::shared_ptr<MeteredSession> tunnel,
                                 const ClientPaymentConfig& config, FinalHandler on_final)
    : session_(std::move(session)),
      tunnel_(tunnel),
      on_final_(std::move(on_final)),
      journal_(config.journal),
      daily_(config.daily),
      on_escrow_use_(config.on_escrow_use),
      carry_(config.carry),
      channel_(config.channel),
      start_(std::chrono::steady_clock::now()) {}

uint64_t PayerController::ElapsedMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start_)
      .count();
}

void PayerController::End(payments::CloseReason reason, const std::string& why) {
  if (auto t = tunnel_.lock()) {
    t->Close(static_cast<CloseReason>(static_cast<uint8_t>(reason)), why, true);
  }
  if (on_final_ &&
      (reason == payments::CloseReason::kSpendCap || reason == payments::CloseReason::kOvercharge ||
       reason == payments::CloseReason::kTermsRefused)) {
    auto cb = std::move(on_final_);
    on_final_ = nullptr;
    cb(reason, why);
  }
}

void PayerController::NoteUnpaid(const MeteredSession& t) {
  if (carry_) {
    carry_->Set(channel_, session_.UnpaidBytes(t.data_bytes_sent() + t.data_bytes_received()));
  }
}

void PayerController::OnControl(ByteSpan message) {
  auto t = tunnel_.lock();
  if (!t || t->closed()) return;
  auto decoded = payments::wire::DecodeControl(message);
  if (!decoded) {
    t->Close(CloseReason::kProtocolError, "malformed payment control message", true);
    return;
  }
  if (!*decoded) return;
  if (auto* inv = std::get_if<payments::Invoice>(&**decoded)) {
    const uint64_t meter = t->data_bytes_sent() + t->data_bytes_received();
    const uint64_t day = payments::UtcDay(dvpn::UnixSeconds());
    auto r = session_.OnInvoice(*inv, meter, ElapsedMs(), day);
    NoteUnpaid(*t);
    if (!r) {
      TunnelLog()->error("invoice {} refused: {}", inv->seq, r.error().message);
      if (r.error().close) End(*r.error().close, r.error().message);
      return;
    }
    if (*r && journal_ && daily_) {
      if (auto covered = journal_->Cover(day, daily_->SpentOn(day)); !covered) {
        TunnelLog()->error("cannot record today's spending: {}", covered.error().message);
        End(payments::CloseReason::kSpendCap, "cannot record today's spending");
        return;
      }
    }
    if (*r) {
      TunnelLog()->debug("invoice {}: {} bytes, due {}; promising cumulative {}", inv->seq,
                   inv->metered_bytes, inv->amount_due.ToString(), (*r)->cumulative.ToString());
      if (!t->SendControl(payments::wire::EncodeControl(**r))) {
        TunnelLog()->warn("cannot send the promise (tunnel closing)");
      } else if (on_escrow_use_) {
        on_escrow_use_((*r)->cumulative, false);
      }
    }
  } else if (auto* rc = std::get_if<payments::Receipt>(&**decoded)) {
    if (!session_.OnReceipt(*rc)) {
      TunnelLog()->warn("receipt for {} above what was signed; ignored", rc->cumulative.ToString());
    } else {
      TunnelLog()->debug("receipt: cumulative {} acknowledged", rc->cumulative.ToString());
      NoteUnpaid(*t);
    }
  } else if (auto* n = std::get_if<payments::Notice>(&**decoded)) {
    const uint64_t now = MonotonicMs();
    if (notice_logged_ms_ == 0 || now - notice_logged_ms_ >= kNoticeLogEveryMs) {
      if (notices_unlogged_ > 0) {
        TunnelLog()->info("provider notice {}: {} ({} more notices since the last line)",
                          static_cast<uint32_t>(n->code), n->text, notices_unlogged_);
      } else {
        TunnelLog()->info("provider notice {}: {}", static_cast<uint32_t>(n->code), n->text);
      }
      notice_logged_ms_ = now;
      notices_unlogged_ = 0;
    } else {
      ++notices_unlogged_;
      TunnelLog()->debug("provider notice {}: {}", static_cast<uint32_t>(n->code), n->text);
    }
    if (n->code == payments::NoticeCode::kEscrowLow && on_escrow_use_) {
      on_escrow_use_(session_.last_signed(), true);
    }
  }
}

}  // namespace dvpn::tunnel::session
