#include "tunnel/session/paid_admission.h"

#include "payments/wire/control_codec.h"

namespace dvpn::tunnel::session {

PaidAdmission::PaidAdmission(std::shared_ptr<ExitPayments> payments, const ClientHello& hello)
    : payments_(std::move(payments)), hello_(hello) {}

PaidAdmission::~PaidAdmission() {
  if (admission_ && !attached_) payments_->Release(admission_->channel.id);
}

asio::awaitable<void> PaidAdmission::Decide() {
  auto admitted = co_await payments_->Admit(hello_);
  if (admitted) {
    params_ = payments::wire::EncodeTerms(admitted->terms);
    admission_ = std::move(*admitted);
  } else {
    refusal_ = std::move(admitted.error().message);
  }
}

Result<std::shared_ptr<PayeeController>, AdmissionErrc> PaidAdmission::Attach(
    const std::shared_ptr<MeteredSession>& tunnel,
    std::chrono::steady_clock::time_point msg2_sent) {
  if (!admission_) {
    return Fail(AdmissionErrc::kRefused, refusal_.value_or("the channel was not admitted"));
  }
  payments::PayeeSession::Options po{.terms = admission_->terms,
                                     .ledger = hello_.ledger,
                                     .channel = hello_.channel,
                                     .client = hello_.identity,
                                     .deposit = admission_->channel.deposit};
  auto session = payments::PayeeSession::Create(std::move(po));
  if (!session) return Fail(AdmissionErrc::kRefused, std::move(session.error().message));
  attached_ = true;
  return std::make_shared<PayeeController>(payments_, std::move(*session), tunnel,
                                           admission_->channel, msg2_sent);
}

}  // namespace dvpn::tunnel::session
