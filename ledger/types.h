#pragma once
// The ledger's domain vocabulary: errors, requests (already parsed from the wire, signatures not
// yet checked), and the state it reports. No gRPC, no SQL.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/amount.h"
#include "common/result.h"
#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace dvpn::ledger {

using payments::Address;
using payments::ChannelId;
using payments::LedgerId;
using payments::PublicKey;
using payments::Signature;
using payments::SignedPromise;

// Every way a ledger request can be refused. A refused request changes no state.
enum class Errc {
  kInvalidArgument,      // malformed field (zero amount, destination too long, ...)
  kWrongLedger,          // request bound to another ledger id
  kBadSignature,         // signature does not verify for the signer and encoding
  kNotPermitted,         // signer is not the party this request needs (operator, client, ...)
  kReplay,               // nonce not greater than the signer's last accepted nonce
  kUnknownChannel,
  kInsufficientBalance,  // balance lower than the amount to move
  kOverflow,             // an amount would not fit in 64 bits
  kChannelNotOpen,       // operation needs an open channel
  kBatchTooLarge,
  kStorage,              // the store failed; nothing was applied
};

const char* ErrcName(Errc code);

// A withdrawal's destination (the operator's payout reference) is acceptable: at most
// payments::kMaxWithdrawDestination bytes of UTF-8 without control characters (C0, DEL, C1).
// It is shown to the operator, so nothing in it may steer a terminal. Empty is acceptable.
bool ValidWithdrawDestination(std::string_view destination);

template <class T>
using LedgerResult = Result<T, Errc>;

// Fields common to every signed request.
struct Signed {
  LedgerId ledger_id;
  uint64_t nonce = 0;
  PublicKey signer;
  Signature signature{};
};

struct DepositRequest {
  Signed auth;  // signer must be the operator
  Address to;
  Amount amount;
};

struct WithdrawRequest {
  Signed auth;  // the account withdrawn from is Address::FromPublicKey(auth.signer)
  Amount amount;
  std::string destination;
};

struct OpenChannelRequest {
  Signed auth;  // the client
  Address provider;
  Amount amount;
  uint64_t expiry_unix = 0;
};

struct TopUpChannelRequest {
  Signed auth;  // the client
  ChannelId channel;
  Amount amount;
  uint64_t new_expiry_unix = 0;  // 0: keep the current expiry
};

struct CloseChannelRequest {
  Signed auth;  // client: challenge period; provider: immediate close
  ChannelId channel;
};

struct SettleBatchRequest {
  Signed auth;  // the provider
  std::vector<SignedPromise> promises;
};

struct AccountState {
  Address address;
  Amount balance;
  uint64_t last_nonce = 0;
  Amount escrowed;  // locked as client in channels not yet closed
};

enum class ChannelStatus { kOpen = 1, kClosing = 2, kClosed = 3 };

struct ChannelState {
  ChannelId id;
  Address client;
  PublicKey client_key;
  Address provider;
  Amount deposit;   // total ever locked
  Amount settled;   // total paid to the provider; settled <= deposit always
  Amount refunded;  // returned to the client at close; settled + refunded <= deposit
  ChannelStatus status = ChannelStatus::kOpen;
  uint64_t expiry_unix = 0;
  uint64_t close_deadline_unix = 0;  // 0 until closing starts
  uint64_t opened_unix = 0;

  // deposit - settled - refunded.
  Amount Remaining() const;
};

enum class MovementKind {
  kDeposit = 1,
  kWithdraw = 2,
  kEscrowLock = 3,
  kSettlePay = 4,
  kSettleReceive = 5,
  kEscrowRefund = 6,
};

struct Movement {
  uint64_t seq = 0;  // assigned by the store, strictly increasing
  uint64_t time_unix = 0;
  Address account;
  MovementKind kind = MovementKind::kDeposit;
  Amount amount;
  std::optional<ChannelId> channel;
  std::optional<Address> counterparty;
  Amount balance_after;  // the account's spendable balance after this movement
  std::string destination;  // kWithdraw: the payout reference the account signed; else empty
};

enum class SettleOutcome {
  kSettled = 1,
  kSettledCapped = 2,
  kAlreadySettled = 3,
  kEscrowExhausted = 4,
  kBadSignature = 5,
  kUnknownChannel = 6,
  kNotYourChannel = 7,
  kChannelClosed = 8,
};

struct SettleItemResult {
  ChannelId channel;
  SettleOutcome outcome = SettleOutcome::kSettled;
  Amount moved;
  Amount channel_settled;
  std::string message;
};

struct SettleBatchResult {
  std::vector<SettleItemResult> items;  // in request order
  Amount total_moved;
  Amount provider_balance;
};

struct Totals {
  Amount deposited;  // ever minted by the operator
  Amount withdrawn;  // ever paid out
};

}  // namespace dvpn::ledger
