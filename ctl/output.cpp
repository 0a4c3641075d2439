#include "ctl/output_internal.h"

#include <ctime>

#include "common/bytes.h"

namespace dvpn::ctl {

void PutAmount(Json& j, const std::string& name, Amount amount) {
  j[name] = amount.ToString();
  j[name + "_micro"] = amount.micro();
}

const char* StatusName(ledger::ChannelStatus status) {
  switch (status) {
    case ledger::ChannelStatus::kOpen:
      return "open";
    case ledger::ChannelStatus::kClosing:
      return "closing";
    case ledger::ChannelStatus::kClosed:
      return "closed";
  }
  return "unknown";
}

const char* KindName(ledger::MovementKind kind) {
  switch (kind) {
    case ledger::MovementKind::kDeposit:
      return "deposit";
    case ledger::MovementKind::kWithdraw:
      return "withdraw";
    case ledger::MovementKind::kEscrowLock:
      return "escrow_lock";
    case ledger::MovementKind::kSettlePay:
      return "settle_pay";
    case ledger::MovementKind::kSettleReceive:
      return "settle_receive";
    case ledger::MovementKind::kEscrowRefund:
      return "escrow_refund";
  }
  return "unknown";
}

const char* OutcomeName(ledger::SettleOutcome outcome) {
  switch (outcome) {
    case ledger::SettleOutcome::kSettled:
      return "settled";
    case ledger::SettleOutcome::kSettledCapped:
      return "settled_capped";
    case ledger::SettleOutcome::kAlreadySettled:
      return "already_settled";
    case ledger::SettleOutcome::kEscrowExhausted:
      return "escrow_exhausted";
    case ledger::SettleOutcome::kBadSignature:
      return "bad_signature";
    case ledger::SettleOutcome::kUnknownChannel:
      return "unknown_channel";
    case ledger::SettleOutcome::kNotYourChannel:
      return "not_your_channel";
    case ledger::SettleOutcome::kChannelClosed:
      return "channel_closed";
  }
  return "unknown";
}

std::string UtcTime(uint64_t unix_seconds) {
  if (unix_seconds == 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

Json ToJson(const ledger::AccountState& account) {
  Json j;
  j["address"] = account.address.ToString();
  PutAmount(j, "balance", account.balance);
  PutAmount(j, "escrowed", account.escrowed);
  j["last_nonce"] = account.last_nonce;
  return j;
}

Json ToJson(const ledger::ChannelState& channel) {
  Json j;
  j["channel_id"] = ToHex(channel.id.bytes);
  j["status"] = StatusName(channel.status);
  j["client"] = channel.client.ToString();
  j["client_public_key"] = ToHex(channel.client_key.bytes());
  j["provider"] = channel.provider.ToString();
  PutAmount(j, "deposit", channel.deposit);
  PutAmount(j, "settled", channel.settled);
  PutAmount(j, "refunded", channel.refunded);
  PutAmount(j, "remaining", channel.Remaining());
  j["opened_unix"] = channel.opened_unix;
  j["expiry_unix"] = channel.expiry_unix;
  j["close_deadline_unix"] = channel.close_deadline_unix;
  return j;
}

Json ToJson(const ledger::Movement& movement) {
  Json j;
  j["seq"] = movement.seq;
  j["time_unix"] = movement.time_unix;
  j["account"] = movement.account.ToString();
  j["kind"] = KindName(movement.kind);
  PutAmount(j, "amount", movement.amount);
  j["channel_id"] = movement.channel ? Json(ToHex(movement.channel->bytes)) : Json(nullptr);
  j["counterparty"] =
      movement.counterparty ? Json(movement.counterparty->ToString()) : Json(nullptr);
  PutAmount(j, "balance_after", movement.balance_after);
  if (movement.kind == ledger::MovementKind::kWithdraw) j["destination"] = movement.destination;
  return j;
}

Json ToJson(const ledger::SettleItemResult& item) {
  Json j;
  j["channel_id"] = ToHex(item.channel.bytes);
  j["outcome"] = OutcomeName(item.outcome);
  PutAmount(j, "moved", item.moved);
  PutAmount(j, "channel_settled", item.channel_settled);
  j["message"] = item.message;
  return j;
}

Json ToJson(const ledger::rpc::LedgerInfo& info) {
  Json j;
  j["ledger_id"] = ToHex(info.id.bytes);
  j["name"] = info.name;
  j["operator"] = info.operator_address.ToString();
  j["operator_public_key"] = ToHex(info.operator_key.bytes());
  j["challenge_period_seconds"] = info.challenge_period_seconds;
  j["max_batch_items"] = info.max_batch_items;
  PutAmount(j, "total_deposited", info.totals.deposited);
  PutAmount(j, "total_withdrawn", info.totals.withdrawn);
  auto outstanding = info.totals.deposited.CheckedSub(info.totals.withdrawn);
  PutAmount(j, "total_outstanding", outstanding.value_or(Amount::Zero()));
  j["server_time_unix"] = info.server_time_unix;
  return j;
}

std::string FormatLines(const Lines& lines) {
  size_t width = 0;
  for (const auto& [label, value] : lines) width = std::max(width, label.size());
  std::string out;
  for (const auto& [label, value] : lines) {
    out += label;
    out += ':';
    out.append(width - label.size() + 2, ' ');
    out += value;
    out += '\n';
  }
  return out;
}

Lines AccountLines(const ledger::AccountState& account) {
  return {{"address", account.address.ToString()},
          {"balance", account.balance.ToString()},
          {"escrowed", account.escrowed.ToString()},
          {"last nonce", std::to_string(account.last_nonce)}};
}

Lines ChannelLines(const ledger::ChannelState& channel) {
  Lines lines = {
      {"channel", ToHex(channel.id.bytes)},      {"status", StatusName(channel.status)},
      {"client", channel.client.ToString()},     {"provider", channel.provider.ToString()},
      {"deposit", channel.deposit.ToString()},   {"settled", channel.settled.ToString()},
      {"refunded", channel.refunded.ToString()}, {"remaining", channel.Remaining().ToString()},
      {"opened", UtcTime(channel.opened_unix)},  {"expires", UtcTime(channel.expiry_unix)}};
  if (channel.close_deadline_unix != 0) {
    lines.emplace_back("close deadline", UtcTime(channel.close_deadline_unix));
  }
  return lines;
}

Lines InfoLines(const ledger::rpc::LedgerInfo& info) {
  auto outstanding = info.totals.deposited.CheckedSub(info.totals.withdrawn);
  return {{"ledger id", ToHex(info.id.bytes)},
          {"name", info.name},
          {"operator", info.operator_address.ToString()},
          {"operator key", ToHex(info.operator_key.bytes())},
          {"challenge period", std::to_string(info.challenge_period_seconds) + "s"},
          {"max batch items", std::to_string(info.max_batch_items)},
          {"total deposited", info.totals.deposited.ToString()},
          {"total withdrawn", info.totals.withdrawn.ToString()},
          {"outstanding", outstanding.value_or(Amount::Zero()).ToString()},
          {"server time", UtcTime(info.server_time_unix)}};
}

std::string ChannelRow(const ledger::ChannelState& channel) {
  return ToHex(channel.id.bytes) + "  " + StatusName(channel.status) + "  deposit " +
         channel.deposit.ToString() + "  settled " + channel.settled.ToString() + "  client " +
         channel.client.ToString() + "  provider " + channel.provider.ToString();
}

std::string MovementRow(const ledger::Movement& movement) {
  std::string row = std::to_string(movement.seq) + "  " + UtcTime(movement.time_unix) + "  " +
                    KindName(movement.kind) + "  " + movement.amount.ToString() + "  balance " +
                    movement.balance_after.ToString();
  if (movement.channel) row += "  channel " + ToHex(movement.channel->bytes);
  if (movement.counterparty) row += "  with " + movement.counterparty->ToString();
  // Printable UTF-8 only (the client refuses anything else from the ledger).
  if (!movement.destination.empty()) row += "  to \"" + movement.destination + "\"";
  return row;
}

std::string SettleRow(const ledger::SettleItemResult& item) {
  std::string row = ToHex(item.channel.bytes) + "  " + OutcomeName(item.outcome) + "  moved " +
                    item.moved.ToString() + "  channel settled " + item.channel_settled.ToString();
  if (!item.message.empty()) row += "  (" + item.message + ")";
  return row;
}

}  // namespace dvpn::ctl
