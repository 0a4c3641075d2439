#include "ledger/rpc/convert.h"

#include <fmt/format.h>

namespace dvpn::ledger::rpc {
namespace {

ByteSpan AsSpan(std::string_view s) { return AsBytes(s); }

template <size_t N>
LedgerResult<ByteArray<N>> ParseFixed(std::string_view bytes, std::string_view field) {
  auto array = ToArray<N>(AsSpan(bytes));
  if (!array) {
    return Fail(Errc::kInvalidArgument,
                fmt::format("{}: expected {} bytes, got {}", field, N, bytes.size()));
  }
  return *array;
}

// Fields every signed request carries.
LedgerResult<Signed> ParseSigned(std::string_view ledger_id, uint64_t nonce,
                                 std::string_view signer_pubkey, std::string_view signature) {
  auto id = ParseLedgerId(ledger_id, "ledger_id");
  if (!id) return std::unexpected(id.error());
  auto signer = ParsePublicKey(signer_pubkey, "signer_pubkey");
  if (!signer) return std::unexpected(signer.error());
  auto sig = ParseSignature(signature, "signature");
  if (!sig) return std::unexpected(sig.error());
  return Signed{*id, nonce, *signer, *sig};
}

template <class Msg>
void SetSigned(const Signed& auth, Msg* msg) {
  msg->set_ledger_id(BytesToString(auth.ledger_id.bytes));
  msg->set_nonce(auth.nonce);
  msg->set_signer_pubkey(BytesToString(auth.signer.bytes()));
  msg->set_signature(BytesToString(auth.signature));
}

v1::ChannelState ChannelStatusToProto(ChannelStatus status) {
  switch (status) {
    case ChannelStatus::kOpen:
      return v1::CHANNEL_STATE_OPEN;
    case ChannelStatus::kClosing:
      return v1::CHANNEL_STATE_CLOSING;
    case ChannelStatus::kClosed:
      return v1::CHANNEL_STATE_CLOSED;
  }
  return v1::CHANNEL_STATE_UNSPECIFIED;
}

LedgerResult<ChannelStatus> ChannelStatusFromProto(v1::ChannelState state) {
  switch (state) {
    case v1::CHANNEL_STATE_OPEN:
      return ChannelStatus::kOpen;
    case v1::CHANNEL_STATE_CLOSING:
      return ChannelStatus::kClosing;
    case v1::CHANNEL_STATE_CLOSED:
      return ChannelStatus::kClosed;
    default:
      return Fail(Errc::kInvalidArgument, fmt::format("state: unknown value {}", int(state)));
  }
}

v1::MovementKind KindToProto(MovementKind kind) {
  switch (kind) {
    case MovementKind::kDeposit:
      return v1::MOVEMENT_KIND_DEPOSIT;
    case MovementKind::kWithdraw:
      return v1::MOVEMENT_KIND_WITHDRAW;
    case MovementKind::kEscrowLock:
      return v1::MOVEMENT_KIND_ESCROW_LOCK;
    case MovementKind::kSettlePay:
      return v1::MOVEMENT_KIND_SETTLE_PAY;
    case MovementKind::kSettleReceive:
      return v1::MOVEMENT_KIND_SETTLE_RECEIVE;
    case MovementKind::kEscrowRefund:
      return v1::MOVEMENT_KIND_ESCROW_REFUND;
  }
  return v1::MOVEMENT_KIND_UNSPECIFIED;
}

LedgerResult<MovementKind> KindFromProto(v1::MovementKind kind) {
  switch (kind) {
    case v1::MOVEMENT_KIND_DEPOSIT:
      return MovementKind::kDeposit;
    case v1::MOVEMENT_KIND_WITHDRAW:
      return MovementKind::kWithdraw;
    case v1::MOVEMENT_KIND_ESCROW_LOCK:
      return MovementKind::kEscrowLock;
    case v1::MOVEMENT_KIND_SETTLE_PAY:
      return MovementKind::kSettlePay;
    case v1::MOVEMENT_KIND_SETTLE_RECEIVE:
      return MovementKind::kSettleReceive;
    case v1::MOVEMENT_KIND_ESCROW_REFUND:
      return MovementKind::kEscrowRefund;
    default:
      return Fail(Errc::kInvalidArgument, fmt::format("kind: unknown value {}", int(kind)));
  }
}

v1::SettleOutcome OutcomeToProto(SettleOutcome outcome) {
  switch (outcome) {
    case SettleOutcome::kSettled:
      return v1::SETTLE_OUTCOME_SETTLED;
    case SettleOutcome::kSettledCapped:
      return v1::SETTLE_OUTCOME_SETTLED_CAPPED;
    case SettleOutcome::kAlreadySettled:
      return v1::SETTLE_OUTCOME_ALREADY_SETTLED;
    case SettleOutcome::kEscrowExhausted:
      return v1::SETTLE_OUTCOME_ESCROW_EXHAUSTED;
    case SettleOutcome::kBadSignature:
      return v1::SETTLE_OUTCOME_BAD_SIGNATURE;
    case SettleOutcome::kUnknownChannel:
      return v1::SETTLE_OUTCOME_UNKNOWN_CHANNEL;
    case SettleOutcome::kNotYourChannel:
      return v1::SETTLE_OUTCOME_NOT_YOUR_CHANNEL;
    case SettleOutcome::kChannelClosed:
      return v1::SETTLE_OUTCOME_CHANNEL_CLOSED;
  }
  return v1::SETTLE_OUTCOME_UNSPECIFIED;
}

LedgerResult<SettleOutcome> OutcomeFromProto(v1::SettleOutcome outcome) {
  switch (outcome) {
    case v1::SETTLE_OUTCOME_SETTLED:
      return SettleOutcome::kSettled;
    case v1::SETTLE_OUTCOME_SETTLED_CAPPED:
      return SettleOutcome::kSettledCapped;
    case v1::SETTLE_OUTCOME_ALREADY_SETTLED:
      return SettleOutcome::kAlreadySettled;
    case v1::SETTLE_OUTCOME_ESCROW_EXHAUSTED:
      return SettleOutcome::kEscrowExhausted;
    case v1::SETTLE_OUTCOME_BAD_SIGNATURE:
      return SettleOutcome::kBadSignature;
    case v1::SETTLE_OUTCOME_UNKNOWN_CHANNEL:
      return SettleOutcome::kUnknownChannel;
    case v1::SETTLE_OUTCOME_NOT_YOUR_CHANNEL:
      return SettleOutcome::kNotYourChannel;
    case v1::SETTLE_OUTCOME_CHANNEL_CLOSED:
      return SettleOutcome::kChannelClosed;
    default:
      return Fail(Errc::kInvalidArgument, fmt::format("outcome: unknown value {}", int(outcome)));
  }
}

}  // namespace

// --- errors -----------------------------------------------------------------------------------

grpc::StatusCode StatusCodeFor(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case Errc::kWrongLedger:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Errc::kBadSignature:
      return grpc::StatusCode::UNAUTHENTICATED;
    case Errc::kNotPermitted:
      return grpc::StatusCode::PERMISSION_DENIED;
    case Errc::kReplay:
      return grpc::StatusCode::ALREADY_EXISTS;
    case Errc::kUnknownChannel:
      return grpc::StatusCode::NOT_FOUND;
    case Errc::kInsufficientBalance:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Errc::kOverflow:
      return grpc::StatusCode::OUT_OF_RANGE;
    case Errc::kChannelNotOpen:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Errc::kBatchTooLarge:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Errc::kStorage:
      return grpc::StatusCode::UNAVAILABLE;
  }
  return grpc::StatusCode::INTERNAL;
}

grpc::Status ToStatus(const Error<Errc>& error) {
  return grpc::Status(StatusCodeFor(error.code),
                      fmt::format("{}: {}", ErrcName(error.code), error.message));
}

// --- fields -----------------------------------------------------------------------------------

LedgerResult<Address> ParseAddress(std::string_view text, std::string_view field) {
  if (text.empty()) return Fail(Errc::kInvalidArgument, fmt::format("{}: missing", field));
  auto address = Address::Parse(text);
  if (!address) {
    // Echo only a bounded prefix of what the caller sent.
    std::string shown(text.substr(0, 64));
    if (text.size() > 64) shown += "...";
    return Fail(Errc::kInvalidArgument,
                fmt::format("{}: \"{}\" is not an address (expected \"dv\" and 48 hex digits "
                            "with a valid checksum)",
                            field, shown));
  }
  return *address;
}

LedgerResult<PublicKey> ParsePublicKey(std::string_view bytes, std::string_view field) {
  if (bytes.size() != 32) {
    return Fail(Errc::kInvalidArgument,
                fmt::format("{}: expected 32 bytes, got {}", field, bytes.size()));
  }
  auto key = PublicKey::Parse(AsSpan(bytes));
  if (!key) {
    return Fail(Errc::kInvalidArgument,
                fmt::format("{}: not a valid secp256k1 x-only public key", field));
  }
  return *key;
}

LedgerResult<LedgerId> ParseLedgerId(std::string_view bytes, std::string_view field) {
  auto array = ParseFixed<32>(bytes, field);
  if (!array) return std::unexpected(array.error());
  return LedgerId{*array};
}

LedgerResult<ChannelId> ParseChannelId(std::string_view bytes, std::string_view field) {
  auto array = ParseFixed<32>(bytes, field);
  if (!array) return std::unexpected(array.error());
  return ChannelId{*array};
}

LedgerResult<Signature> ParseSignature(std::string_view bytes, std::string_view field) {
  return ParseFixed<64>(bytes, field);
}

// --- signed requests --------------------------------------------------------------------------

LedgerResult<DepositRequest> FromProto(const v1::DepositRequest& msg) {
  auto auth = ParseSigned(msg.ledger_id(), msg.nonce(), msg.signer_pubkey(), msg.signature());
  if (!auth) return std::unexpected(auth.error());
  auto to = ParseAddress(msg.to(), "to");
  if (!to) return std::unexpected(to.error());
  return DepositRequest{*auth, *to, Amount::FromMicro(msg.amount())};
}

LedgerResult<WithdrawRequest> FromProto(const v1::WithdrawRequest& msg) {
  auto auth = ParseSigned(msg.ledger_id(), msg.nonce(), msg.signer_pubkey(), msg.signature());
  if (!auth) return std::unexpected(auth.error());
  if (msg.destination().size() > payments::kMaxWithdrawDestination) {
    return Fail(Errc::kInvalidArgument,
                fmt::format("destination: {} bytes, at most {} allowed", msg.destination().size(),
                            payments::kMaxWithdrawDestination));
  }
  return WithdrawRequest{*auth, Amount::FromMicro(msg.amount()), msg.destination()};
}

LedgerResult<OpenChannelRequest> FromProto(const v1::OpenChannelRequest& msg) {
  auto auth = ParseSigned(msg.ledger_id(), msg.nonce(), msg.signer_pubkey(), msg.signature());
  if (!auth) return std::unexpected(auth.error());
  auto provider = ParseAddress(msg.provider(), "provider");
  if (!provider) return std::unexpected(provider.error());
  return OpenChannelRequest{*auth, *provider, Amount::FromMicro(msg.amount()), msg.expiry_unix()};
}

LedgerResult<TopUpChannelRequest> FromProto(const v1::TopUpChannelRequest& msg) {
  auto auth = ParseSigned(msg.ledger_id(), msg.nonce(), msg.signer_pubkey(), msg.signature());
  if (!auth) return std::unexpected(auth.error());
  auto channel = ParseChannelId(msg.channel_id(), "channel_id");
  if (!channel) return std::unexpected(channel.error());
  return TopUpChannelRequest{*auth, *channel, Amount::FromMicro(msg.amount()),
                             msg.new_expiry_unix()};
}

LedgerResult<CloseChannelRequest> FromProto(const v1::CloseChannelRequest& msg) {
  auto auth = ParseSigned(msg.ledger_id(), msg.nonce(), msg.signer_pubkey(), msg.signature());
  if (!auth) return std::unexpected(auth.error());
  auto channel = ParseChannelId(msg.channel_id(), "channel_id");
  if (!channel) return std::unexpected(channel.error());
  return CloseChannelRequest{*auth, *channel};
}

LedgerResult<SettleBatchRequest> FromProto(const v1::SettleBatchRequest& msg, uint32_t max_items) {
  if (static_cast<uint64_t>(msg.promises_size()) > max_items) {
    return Fail(Errc::kBatchTooLarge, fmt::format("{} promises in one batch, at most {} allowed",
                                                  msg.promises_size(), max_items));
  }
  auto auth = ParseSigned(msg.ledger_id(), msg.nonce(), msg.signer_pubkey(), msg.signature());
  if (!auth) return std::unexpected(auth.error());
  SettleBatchRequest req{*auth, {}};
  req.promises.reserve(msg.promises_size());
  for (int i = 0; i < msg.promises_size(); ++i) {
    const v1::Promise& p = msg.promises(i);
    auto channel = ParseChannelId(p.channel_id(), fmt::format("promises[{}].channel_id", i));
    if (!channel) return std::unexpected(channel.error());
    auto sig = ParseSignature(p.signature(), fmt::format("promises[{}].signature", i));
    if (!sig) return std::unexpected(sig.error());
    req.promises.push_back(SignedPromise{*channel, Amount::FromMicro(p.cumulative()), *sig});
  }
  return req;
}

void ToProto(const DepositRequest& req, v1::DepositRequest* msg) {
  SetSigned(req.auth, msg);
  msg->set_to(req.to.ToString());
  msg->set_amount(req.amount.micro());
}

void ToProto(const WithdrawRequest& req, v1::WithdrawRequest* msg) {
  SetSigned(req.auth, msg);
  msg->set_amount(req.amount.micro());
  msg->set_destination(req.destination);
}

void ToProto(const OpenChannelRequest& req, v1::OpenChannelRequest* msg) {
  SetSigned(req.auth, msg);
  msg->set_provider(req.provider.ToString());
  msg->set_amount(req.amount.micro());
  msg->set_expiry_unix(req.expiry_unix);
}

void ToProto(const TopUpChannelRequest& req, v1::TopUpChannelRequest* msg) {
  SetSigned(req.auth, msg);
  msg->set_channel_id(BytesToString(req.channel.bytes));
  msg->set_amount(req.amount.micro());
  msg->set_new_expiry_unix(req.new_expiry_unix);
}

void ToProto(const CloseChannelRequest& req, v1::CloseChannelRequest* msg) {
  SetSigned(req.auth, msg);
  msg->set_channel_id(BytesToString(req.channel.bytes));
}

void ToProto(const SettleBatchRequest& req, v1::SettleBatchRequest* msg) {
  SetSigned(req.auth, msg);
  msg->mutable_promises()->Reserve(static_cast<int>(req.promises.size()));
  for (const SignedPromise& p : req.promises) {
    v1::Promise* out = msg->add_promises();
    out->set_channel_id(BytesToString(p.channel.bytes));
    out->set_cumulative(p.cumulative.micro());
    out->set_signature(BytesToString(p.signature));
  }
}

// --- state ------------------------------------------------------------------------------------

void ToProto(const AccountState& state, v1::Account* msg) {
  msg->set_address(state.address.ToString());
  msg->set_balance(state.balance.micro());
  msg->set_last_nonce(state.last_nonce);
  msg->set_escrowed(state.escrowed.micro());
}

void ToProto(const ChannelState& state, v1::Channel* msg) {
  msg->set_channel_id(BytesToString(state.id.bytes));
  msg->set_client(state.client.ToString());
  msg->set_provider(state.provider.ToString());
  msg->set_client_pubkey(BytesToString(state.client_key.bytes()));
  msg->set_deposit(state.deposit.micro());
  msg->set_settled(state.settled.micro());
  msg->set_refunded(state.refunded.micro());
  msg->set_state(ChannelStatusToProto(state.status));
  msg->set_expiry_unix(state.expiry_unix);
  msg->set_close_deadline_unix(state.close_deadline_unix);
  msg->set_opened_unix(state.opened_unix);
}

void ToProto(const Movement& movement, v1::Movement* msg) {
  msg->set_seq(movement.seq);
  msg->set_time_unix(movement.time_unix);
  msg->set_account(movement.account.ToString());
  msg->set_kind(KindToProto(movement.kind));
  msg->set_amount(movement.amount.micro());
  if (movement.channel) msg->set_channel_id(BytesToString(movement.channel->bytes));
  if (movement.counterparty) msg->set_counterparty(movement.counterparty->ToString());
  msg->set_balance_after(movement.balance_after.micro());
  if (!movement.destination.empty()) msg->set_destination(movement.destination);
}

void ToProto(const SettleBatchResult& result, v1::SettleBatchReply* msg) {
  msg->mutable_results()->Reserve(static_cast<int>(result.items.size()));
  for (const SettleItemResult& item : result.items) {
    v1::SettleItemResult* out = msg->add_results();
    out->set_channel_id(BytesToString(item.channel.bytes));
    out->set_outcome(OutcomeToProto(item.outcome));
    out->set_moved(item.moved.micro());
    out->set_channel_settled(item.channel_settled.micro());
    if (!item.message.empty()) out->set_message(item.message);
  }
  msg->set_total_moved(result.total_moved.micro());
  msg->set_provider_balance(result.provider_balance.micro());
}

void ToProto(const LedgerInfo& info, v1::LedgerInfo* msg) {
  msg->set_ledger_id(BytesToString(info.id.bytes));
  msg->set_name(info.name);
  msg->set_operator_address(info.operator_address.ToString());
  msg->set_operator_pubkey(BytesToString(info.operator_key.bytes()));
  msg->set_challenge_period_seconds(info.challenge_period_seconds);
  msg->set_max_batch_items(info.max_batch_items);
  msg->set_total_deposited(info.totals.deposited.micro());
  msg->set_total_withdrawn(info.totals.withdrawn.micro());
  msg->set_server_time_unix(info.server_time_unix);
}

LedgerResult<AccountState> FromProto(const v1::Account& msg) {
  auto address = ParseAddress(msg.address(), "address");
  if (!address) return std::unexpected(address.error());
  return AccountState{*address, Amount::FromMicro(msg.balance()), msg.last_nonce(),
                      Amount::FromMicro(msg.escrowed())};
}

LedgerResult<ChannelState> FromProto(const v1::Channel& msg) {
  auto id = ParseChannelId(msg.channel_id(), "channel_id");
  if (!id) return std::unexpected(id.error());
  auto client = ParseAddress(msg.client(), "client");
  if (!client) return std::unexpected(client.error());
  auto client_key = ParsePublicKey(msg.client_pubkey(), "client_pubkey");
  if (!client_key) return std::unexpected(client_key.error());
  auto provider = ParseAddress(msg.provider(), "provider");
  if (!provider) return std::unexpected(provider.error());
  auto status = ChannelStatusFromProto(msg.state());
  if (!status) return std::unexpected(status.error());
  return ChannelState{.id = *id,
                      .client = *client,
                      .client_key = *client_key,
                      .provider = *provider,
                      .deposit = Amount::FromMicro(msg.deposit()),
                      .settled = Amount::FromMicro(msg.settled()),
                      .refunded = Amount::FromMicro(msg.refunded()),
                      .status = *status,
                      .expiry_unix = msg.expiry_unix(),
                      .close_deadline_unix = msg.close_deadline_unix(),
                      .opened_unix = msg.opened_unix()};
}

LedgerResult<Movement> FromProto(const v1::Movement& msg) {
  auto account = ParseAddress(msg.account(), "account");
  if (!account) return std::unexpected(account.error());
  auto kind = KindFromProto(msg.kind());
  if (!kind) return std::unexpected(kind.error());
  Movement out;
  out.seq = msg.seq();
  out.time_unix = msg.time_unix();
  out.account = *account;
  out.kind = *kind;
  out.amount = Amount::FromMicro(msg.amount());
  if (!msg.channel_id().empty()) {
    auto channel = ParseChannelId(msg.channel_id(), "channel_id");
    if (!channel) return std::unexpected(channel.error());
    out.channel = *channel;
  }
  if (!msg.counterparty().empty()) {
    auto counterparty = ParseAddress(msg.counterparty(), "counterparty");
    if (!counterparty) return std::unexpected(counterparty.error());
    out.counterparty = *counterparty;
  }
  out.balance_after = Amount::FromMicro(msg.balance_after());
  // A ledger's reply is checked like a request: the caller may print it.
  if (!ValidWithdrawDestination(msg.destination())) {
    return Fail(Errc::kInvalidArgument,
                fmt::format("destination: {} bytes, not printable UTF-8 of at most {}",
                            msg.destination().size(), payments::kMaxWithdrawDestination));
  }
  out.destination = msg.destination();
  return out;
}

LedgerResult<SettleBatchResult> FromProto(const v1::SettleBatchReply& msg) {
  SettleBatchResult out;
  out.items.reserve(msg.results_size());
  for (int i = 0; i < msg.results_size(); ++i) {
    const v1::SettleItemResult& r = msg.results(i);
    auto channel = ParseChannelId(r.channel_id(), fmt::format("results[{}].channel_id", i));
    if (!channel) return std::unexpected(channel.error());
    auto outcome = OutcomeFromProto(r.outcome());
    if (!outcome) return std::unexpected(outcome.error());
    out.items.push_back(SettleItemResult{*channel, *outcome, Amount::FromMicro(r.moved()),
                                         Amount::FromMicro(r.channel_settled()), r.message()});
  }
  out.total_moved = Amount::FromMicro(msg.total_moved());
  out.provider_balance = Amount::FromMicro(msg.provider_balance());
  return out;
}

LedgerResult<LedgerInfo> FromProto(const v1::LedgerInfo& msg) {
  auto id = ParseLedgerId(msg.ledger_id(), "ledger_id");
  if (!id) return std::unexpected(id.error());
  auto key = ParsePublicKey(msg.operator_pubkey(), "operator_pubkey");
  if (!key) return std::unexpected(key.error());
  auto address = ParseAddress(msg.operator_address(), "operator_address");
  if (!address) return std::unexpected(address.error());
  return LedgerInfo{
      *id,
      msg.name(),
      *key,
      *address,
      msg.challenge_period_seconds(),
      msg.max_batch_items(),
      Totals{Amount::FromMicro(msg.total_deposited()), Amount::FromMicro(msg.total_withdrawn())},
      msg.server_time_unix()};
}

}  // namespace dvpn::ledger::rpc
