#include "ledger/rpc/ledger_client.h"

#include <mutex>
#include <set>

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "dvpn/v1/ledger.grpc.pb.h"
#include "ledger/rpc/convert.h"

namespace dvpn::ledger::rpc {
namespace {

constexpr int kMaxReplyBytes = 16 * 1024 * 1024;

std::unexpected<RpcError> FromStatus(const grpc::Status& status) {
  return std::unexpected(RpcError{status.error_code(), status.error_message()});
}

// A reply the server should never send: treat as a server fault.
std::unexpected<RpcError> MalformedReply(const Error<Errc>& error) {
  return std::unexpected(
      RpcError{grpc::StatusCode::INTERNAL, "malformed reply from the ledger: " + error.message});
}

template <class Reply>
auto ParseReply(const grpc::Status& status, const Reply& reply)
    -> RpcResult<typename decltype(FromProto(reply))::value_type> {
  if (!status.ok()) return FromStatus(status);
  auto parsed = FromProto(reply);
  if (!parsed) return MalformedReply(parsed.error());
  return *std::move(parsed);
}

class GrpcAccountWatch final : public AccountWatch {
 public:
  GrpcAccountWatch(v1::Ledger::Stub& stub, const v1::WatchAccountRequest& req)
      : reader_(stub.WatchAccount(&ctx_, req)) {}

  ~GrpcAccountWatch() override {
    if (!finished_) {
      ctx_.TryCancel();
      // Drain so Finish() does not block on unread messages.
      v1::Movement ignored;
      while (reader_->Read(&ignored)) {
      }
      reader_->Finish();
    }
  }

  std::optional<Movement> Next() override {
    if (ended_) return std::nullopt;
    v1::Movement msg;
    while (reader_->Read(&msg)) {
      auto parsed = FromProto(msg);
      if (parsed) return *std::move(parsed);
      // A malformed movement ends the stream with a clear error.
      parse_error_ = "malformed movement from the ledger: " + parsed.error().message;
      ctx_.TryCancel();
      v1::Movement ignored;
      while (reader_->Read(&ignored)) {
      }
      break;
    }
    ended_ = true;
    return std::nullopt;
  }

  void Cancel() override { ctx_.TryCancel(); }

  RpcResult<void> Finish() override {
    if (!ended_) {
      // Called early: cancel and drain first.
      ctx_.TryCancel();
      v1::Movement ignored;
      while (reader_->Read(&ignored)) {
      }
      ended_ = true;
    }
    if (!finished_) {
      status_ = reader_->Finish();
      finished_ = true;
    }
    if (!parse_error_.empty())
      return std::unexpected(RpcError{grpc::StatusCode::INTERNAL, parse_error_});
    if (!status_.ok()) return FromStatus(status_);
    return {};
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::Movement>> reader_;
  bool ended_ = false;
  bool finished_ = false;
  grpc::Status status_;
  std::string parse_error_;
};

}  // namespace

class LedgerClient::Impl {
 public:
  Impl(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout)
      : channel_(std::move(channel)), stub_(v1::Ledger::NewStub(channel_)), timeout_(timeout) {}

  // A context whose deadline is `timeout_` from now.
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + timeout_);
    return ctx;
  }

  // Runs `rpc(ctx)` (one unary call) with a fresh context that CancelCalls() can reach while
  // the call runs. After CancelCalls() no call starts: CANCELLED at once.
  template <class Rpc>
  grpc::Status Unary(Rpc&& rpc) {
    auto ctx = Context();
    {
      std::lock_guard lock(live_mu_);
      if (cancelled_) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      live_.insert(ctx.get());
    }
    grpc::Status status = rpc(ctx.get());
    std::lock_guard lock(live_mu_);
    live_.erase(ctx.get());
    return status;
  }

  void CancelCalls() {
    std::lock_guard lock(live_mu_);
    cancelled_ = true;
    for (grpc::ClientContext* ctx : live_) ctx->TryCancel();
  }

  // One unary call with the default deadline, its reply parsed into the domain type.
  template <class Request, class Reply>
  auto Call(grpc::Status (v1::Ledger::Stub::*method)(grpc::ClientContext*, const Request&, Reply*),
            const Request& req) {
    Reply reply;
    grpc::Status status = Unary(
        [&](grpc::ClientContext* ctx) { return (stub_.get()->*method)(ctx, req, &reply); });
    return ParseReply(status, reply);
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ledger::Stub> stub_;
  std::chrono::milliseconds timeout_;
  std::mutex live_mu_;
  std::set<grpc::ClientContext*> live_;  // calls in flight
  bool cancelled_ = false;
};

std::shared_ptr<grpc::Channel> LedgerClient::MakeChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReplyBytes);
  args.SetMaxSendMessageSize(kMaxReplyBytes);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

LedgerClient::LedgerClient(std::shared_ptr<grpc::Channel> channel,
                           std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(std::move(channel), timeout)) {}

LedgerClient::LedgerClient(const std::string& target, std::chrono::milliseconds timeout)
    : LedgerClient(MakeChannel(target), timeout) {}

LedgerClient::~LedgerClient() = default;

void LedgerClient::CancelCalls() { impl_->CancelCalls(); }

bool LedgerClient::WaitForConnected(std::chrono::milliseconds timeout) {
  return impl_->channel_->WaitForConnected(std::chrono::system_clock::now() + timeout);
}

RpcResult<LedgerInfo> LedgerClient::GetInfo() {
  return impl_->Call(&v1::Ledger::Stub::GetInfo, v1::GetInfoRequest());
}

RpcResult<AccountState> LedgerClient::GetAccount(const Address& address) {
  v1::GetAccountRequest req;
  req.set_address(address.ToString());
  return impl_->Call(&v1::Ledger::Stub::GetAccount, req);
}

RpcResult<ChannelState> LedgerClient::GetChannel(const ChannelId& id) {
  v1::GetChannelRequest req;
  req.set_channel_id(BytesToString(id.bytes));
  return impl_->Call(&v1::Ledger::Stub::GetChannel, req);
}

RpcResult<std::vector<ChannelState>> LedgerClient::ListChannels(const Address& address,
                                                                uint32_t limit) {
  v1::ListChannelsRequest req;
  req.set_address(address.ToString());
  req.set_limit(limit);
  v1::ListChannelsReply reply;
  grpc::Status status = impl_->Unary(
      [&](grpc::ClientContext* ctx) { return impl_->stub_->ListChannels(ctx, req, &reply); });
  if (!status.ok()) return FromStatus(status);
  std::vector<ChannelState> out;
  out.reserve(reply.channels_size());
  for (const v1::Channel& c : reply.channels()) {
    auto parsed = FromProto(c);
    if (!parsed) return MalformedReply(parsed.error());
    out.push_back(*std::move(parsed));
  }
  return out;
}

RpcResult<HistoryPage> LedgerClient::History(const Address& address, uint64_t after_seq,
                                             uint32_t limit) {
  v1::HistoryRequest req;
  req.set_address(address.ToString());
  req.set_after_seq(after_seq);
  req.set_limit(limit);
  v1::HistoryReply reply;
  grpc::Status status = impl_->Unary(
      [&](grpc::ClientContext* ctx) { return impl_->stub_->History(ctx, req, &reply); });
  if (!status.ok()) return FromStatus(status);
  HistoryPage page;
  page.movements.reserve(reply.movements_size());
  for (const v1::Movement& m : reply.movements()) {
    auto parsed = FromProto(m);
    if (!parsed) return MalformedReply(parsed.error());
    page.movements.push_back(*std::move(parsed));
  }
  page.next_after_seq = reply.next_after_seq();
  return page;
}

RpcResult<AccountState> LedgerClient::Deposit(const DepositRequest& req) {
  v1::DepositRequest msg;
  ToProto(req, &msg);
  return impl_->Call(&v1::Ledger::Stub::Deposit, msg);
}

RpcResult<AccountState> LedgerClient::Withdraw(const WithdrawRequest& req) {
  v1::WithdrawRequest msg;
  ToProto(req, &msg);
  return impl_->Call(&v1::Ledger::Stub::Withdraw, msg);
}

RpcResult<ChannelState> LedgerClient::OpenChannel(const OpenChannelRequest& req) {
  v1::OpenChannelRequest msg;
  ToProto(req, &msg);
  return impl_->Call(&v1::Ledger::Stub::OpenChannel, msg);
}

RpcResult<ChannelState> LedgerClient::TopUpChannel(const TopUpChannelRequest& req) {
  v1::TopUpChannelRequest msg;
  ToProto(req, &msg);
  return impl_->Call(&v1::Ledger::Stub::TopUpChannel, msg);
}

RpcResult<ChannelState> LedgerClient::CloseChannel(const CloseChannelRequest& req) {
  v1::CloseChannelRequest msg;
  ToProto(req, &msg);
  return impl_->Call(&v1::Ledger::Stub::CloseChannel, msg);
}

RpcResult<SettleBatchResult> LedgerClient::SettleBatch(const SettleBatchRequest& req) {
  v1::SettleBatchRequest msg;
  ToProto(req, &msg);
  return impl_->Call(&v1::Ledger::Stub::SettleBatch, msg);
}

std::unique_ptr<AccountWatch> LedgerClient::WatchAccount(const Address& address,
                                                         uint64_t after_seq) {
  v1::WatchAccountRequest req;
  req.set_address(address.ToString());
  req.set_after_seq(after_seq);
  return std::make_unique<GrpcAccountWatch>(*impl_->stub_, req);
}

RpcResult<void> LedgerClient::Watch(const Address& address, uint64_t after_seq,
                                    const std::function<bool(const Movement&)>& on_movement) {
  auto watch = WatchAccount(address, after_seq);
  while (auto movement = watch->Next()) {
    if (!on_movement(*movement)) {
      watch->Cancel();
      auto end = watch->Finish();
      if (!end && end.error().code != grpc::StatusCode::CANCELLED) return end;
      return {};
    }
  }
  return watch->Finish();
}

}  // namespace dvpn::ledger::rpc
