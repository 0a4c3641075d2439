#pragma once
// dvpnctl output: each ledger value as a JSON object (for --json) and as aligned text lines
// (for people). Amounts appear in JSON twice: as text ("1.500000", credits) and as an integer
// count of micro-credits ("balance_micro": 1500000), so scripts never parse decimals.
// Private to ctl/ (dvpn_ctl).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ledger/rpc/info.h"
#include "ledger/types.h"

namespace dvpn::ctl {

using Json = nlohmann::ordered_json;

// "name": "1.500000", "name_micro": 1500000.
void PutAmount(Json& j, const std::string& name, Amount amount);

const char* StatusName(ledger::ChannelStatus status);
const char* KindName(ledger::MovementKind kind);
const char* OutcomeName(ledger::SettleOutcome outcome);
// "2024-05-01T12:00:00Z"; "-" for 0.
std::string UtcTime(uint64_t unix_seconds);

Json ToJson(const ledger::AccountState& account);
Json ToJson(const ledger::ChannelState& channel);
Json ToJson(const ledger::Movement& movement);
Json ToJson(const ledger::SettleItemResult& item);
Json ToJson(const ledger::rpc::LedgerInfo& info);

// Label/value lines, labels padded to one column.
using Lines = std::vector<std::pair<std::string, std::string>>;
std::string FormatLines(const Lines& lines);

Lines AccountLines(const ledger::AccountState& account);
Lines ChannelLines(const ledger::ChannelState& channel);
Lines InfoLines(const ledger::rpc::LedgerInfo& info);

// One line each, for tables.
std::string ChannelRow(const ledger::ChannelState& channel);
std::string MovementRow(const ledger::Movement& movement);
std::string SettleRow(const ledger::SettleItemResult& item);

}  // namespace dvpn::ctl
