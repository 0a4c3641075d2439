#pragma once
// The one place where dvpn.v1 protobuf messages and ledger domain types meet, and the one
// mapping from ledger::Errc to gRPC status codes (the table is in docs/ledger-api.md).
//
// Parsing (FromProto) checks shapes only: sizes of byte fields, address checksums, points on
// the curve, known enum values. It never checks signatures or money rules; the Ledger does.
// A malformed field fails with kInvalidArgument and a message naming the field, e.g.
// "signature: expected 64 bytes, got 63".
//
// Pure functions, thread-safe.

#include <string>
#include <string_view>

#include <grpcpp/support/status.h>

#include "dvpn/v1/ledger.pb.h"
#include "ledger/rpc/info.h"
#include "ledger/types.h"

namespace dvpn::ledger::rpc {

// --- errors -----------------------------------------------------------------------------------

// kInvalidArgument->INVALID_ARGUMENT, kWrongLedger->FAILED_PRECONDITION,
// kBadSignature->UNAUTHENTICATED, kNotPermitted->PERMISSION_DENIED, kReplay->ALREADY_EXISTS,
// kUnknownChannel->NOT_FOUND, kInsufficientBalance->FAILED_PRECONDITION,
// kOverflow->OUT_OF_RANGE, kChannelNotOpen->FAILED_PRECONDITION,
// kBatchTooLarge->RESOURCE_EXHAUSTED, kStorage->UNAVAILABLE.
grpc::StatusCode StatusCodeFor(Errc code);
// The status sent for a refused request: StatusCodeFor(code), message "<ErrcName>: <message>".
grpc::Status ToStatus(const Error<Errc>& error);

// --- fields -----------------------------------------------------------------------------------
// `field` names the proto field in error messages.

LedgerResult<Address> ParseAddress(std::string_view text, std::string_view field);
LedgerResult<PublicKey> ParsePublicKey(std::string_view bytes, std::string_view field);
LedgerResult<LedgerId> ParseLedgerId(std::string_view bytes, std::string_view field);
LedgerResult<ChannelId> ParseChannelId(std::string_view bytes, std::string_view field);
LedgerResult<Signature> ParseSignature(std::string_view bytes, std::string_view field);

template <size_t N>
std::string BytesToString(const ByteArray<N>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), N);
}

// --- signed requests (wallet -> ledger) -------------------------------------------------------

LedgerResult<DepositRequest> FromProto(const v1::DepositRequest& msg);
LedgerResult<WithdrawRequest> FromProto(const v1::WithdrawRequest& msg);
LedgerResult<OpenChannelRequest> FromProto(const v1::OpenChannelRequest& msg);
LedgerResult<TopUpChannelRequest> FromProto(const v1::TopUpChannelRequest& msg);
LedgerResult<CloseChannelRequest> FromProto(const v1::CloseChannelRequest& msg);
// Also fails with kBatchTooLarge, before parsing any item, when there are more than
// `max_items` promises (so a huge batch costs little).
LedgerResult<SettleBatchRequest> FromProto(const v1::SettleBatchRequest& msg, uint32_t max_items);

void ToProto(const DepositRequest& req, v1::DepositRequest* msg);
void ToProto(const WithdrawRequest& req, v1::WithdrawRequest* msg);
void ToProto(const OpenChannelRequest& req, v1::OpenChannelRequest* msg);
void ToProto(const TopUpChannelRequest& req, v1::TopUpChannelRequest* msg);
void ToProto(const CloseChannelRequest& req, v1::CloseChannelRequest* msg);
void ToProto(const SettleBatchRequest& req, v1::SettleBatchRequest* msg);

// --- state (ledger -> wallet) -----------------------------------------------------------------

void ToProto(const AccountState& state, v1::Account* msg);
void ToProto(const ChannelState& state, v1::Channel* msg);
void ToProto(const Movement& movement, v1::Movement* msg);
void ToProto(const SettleBatchResult& result, v1::SettleBatchReply* msg);
void ToProto(const LedgerInfo& info, v1::LedgerInfo* msg);

LedgerResult<AccountState> FromProto(const v1::Account& msg);
LedgerResult<ChannelState> FromProto(const v1::Channel& msg);
LedgerResult<Movement> FromProto(const v1::Movement& msg);
LedgerResult<SettleBatchResult> FromProto(const v1::SettleBatchReply& msg);
LedgerResult<LedgerInfo> FromProto(const v1::LedgerInfo& msg);

}  // namespace dvpn::ledger::rpc
