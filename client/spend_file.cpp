#include "client/spend_file.h"

#include <memory>
#include <utility>

#include "common/clock.h"
#include "payments/spend_journal.h"

namespace dvpn::client {

Result<void, Errc> StartSpendState(tunnel::session::ClientPaymentConfig& pay,
                                   const std::string& path) {
  pay.daily = std::make_shared<payments::DailySpend>();
  if (path.empty()) return {};
  if (pay.policy.daily_cap.IsZero()) {
    return Fail(Errc::kBadConfig, "--spend-file needs --daily-cap");
  }
  auto journal = payments::SpendJournal::Open(path, pay.policy.daily_cap);
  if (!journal) return Fail(Errc::kBadConfig, "--spend-file: " + journal.error().message);
  pay.journal = std::make_shared<payments::SpendJournal>(std::move(*journal));
  const uint64_t today = payments::UtcDay(UnixSeconds());
  pay.daily->Record(today, pay.journal->ReservedFor(today));
  return {};
}

}  // namespace dvpn::client
