#pragma once
// PaidAdmission: the paid exit's decision on one client the handshake has authenticated,
// taken between msg1 and msg2 (docs/payments.md §2, §4): ExitPayments::Admit (ledger, a channel
// with no live session, its deposit and expiry, the stored promise, the carried unpaid bytes,
// the session terms), the terms encoded as msg2's params, and, once the tunnel exists, the
// PayeeController that drives its payments. A free exit has none: its msg2 params are empty.
//
// A refused client still gets msg2 (with empty params) and then CLOSE kPaymentRequired
// carrying refusal(), so that it learns why. An admitted channel is live until the controller
// ends; if no controller took it (refused by PayeeSession, the handshake failed or timed out),
// it is released when this object is destroyed.
//
// Threading: the exit's io thread. Ownership: shares the ExitPayments; single use.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "tunnel/handshake.h"
#include "tunnel/session/asio.h"
#include "tunnel/session/metered_session.h"
#include "tunnel/session/paid_exit.h"

namespace dvpn::tunnel::session {

class PaidAdmission {
 public:
  PaidAdmission(std::shared_ptr<ExitPayments> payments, const ClientHello& hello);
  ~PaidAdmission();
  PaidAdmission(const PaidAdmission&) = delete;
  PaidAdmission& operator=(const PaidAdmission&) = delete;

  // Decides (reads the channel through the ledger gateway off the io thread, bounded by the
  // configured ledger_timeout). Call once.
  asio::awaitable<void> Decide();
  // msg2's session params: the encoded terms when admitted, else empty.
  const std::vector<uint8_t>& params() const { return params_; }
  // After msg2 went out (`msg2_sent` starts the session's clock): the controller for `tunnel`,
  // to Start() once the tunnel has started. kRefused, with the text for CLOSE
  // kPaymentRequired, when Decide refused or the session cannot be created.
  [[nodiscard]] Result<std::shared_ptr<PayeeController>, AdmissionErrc> Attach(
      const std::shared_ptr<MeteredSession>& tunnel,
      std::chrono::steady_clock::time_point msg2_sent);

 private:
  std::shared_ptr<ExitPayments> payments_;
  ClientHello hello_;
  std::optional<ExitPayments::Admission> admission_;
  std::optional<std::string> refusal_;
  std::vector<uint8_t> params_;
  bool attached_ = false;  // a controller holds the channel
};

}  // namespace dvpn::tunnel::session
