#pragma once
// LedgerClient: the wallet side of the dvpn.v1.Ledger gRPC service, in domain types. Requests
// are built and signed with ledger/requests.h (MakeDeposit, MakeOpenChannel, MakeSettleBatch,
// ...); replies come back as AccountState, ChannelState, SettleBatchResult, Movement. Every
// failure, whether the ledger refused the request or the transport failed, is an RpcError
// carrying the gRPC status code and a message for a person (docs/ledger-api.md lists which
// code means what).
//
// Thread-safe: one LedgerClient may be used from many threads at once (gRPC stubs are).
// Holds a shared reference to its grpc::Channel. Generated protobuf types stay out of this
// header.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/support/status_code_enum.h>

#include "common/result.h"
#include "ledger/rpc/info.h"
#include "ledger/types.h"

namespace dvpn::ledger::rpc {

// {code, message}: code is the gRPC status (NOT_FOUND, UNAUTHENTICATED, UNAVAILABLE, ...), the
// message is the server's text ("replay: nonce 5 is not greater than ...") or the transport's.
using RpcError = Error<grpc::StatusCode>;
template <class T>
using RpcResult = Result<T, grpc::StatusCode>;

// A live WatchAccount stream. Not copyable. Next() is called from one thread at a time;
// Cancel() may be called from any thread, also while Next() blocks.
class AccountWatch {
 public:
  virtual ~AccountWatch() = default;
  // Blocks until the next movement arrives (returns it) or the stream ends (returns nullopt;
  // Finish() then says why).
  virtual std::optional<Movement> Next() = 0;
  // Ends the stream: a blocked Next() returns nullopt promptly.
  virtual void Cancel() = 0;
  // Call after Next() returned nullopt. Ok when the stream ended normally; CANCELLED after
  // Cancel(); otherwise the server's or transport's error (e.g. RESOURCE_EXHAUSTED when the
  // server has too many watchers, UNAVAILABLE when it shuts down).
  virtual RpcResult<void> Finish() = 0;
};

class LedgerClient {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{10'000};

  // An insecure channel to `target` ("127.0.0.1:7400", "localhost:7400", "unix:/path") that
  // accepts replies up to 16 MiB (a SettleBatch reply of max_batch_items items).
  static std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target);

  // `timeout` is the deadline of every unary call.
  explicit LedgerClient(std::shared_ptr<grpc::Channel> channel,
                        std::chrono::milliseconds timeout = kDefaultTimeout);
  // Shorthand for LedgerClient(MakeChannel(target), timeout).
  explicit LedgerClient(const std::string& target,
                        std::chrono::milliseconds timeout = kDefaultTimeout);
  ~LedgerClient();
  LedgerClient(const LedgerClient&) = delete;
  LedgerClient& operator=(const LedgerClient&) = delete;

  // Cancels the unary calls in flight on this client (they fail with CANCELLED) and makes every
  // later unary call fail the same way at once. For shutting down while a ledger does not
  // answer. Any thread; irreversible.
  void CancelCalls();

  // Waits up to `timeout` for the channel to connect. False when it did not.
  bool WaitForConnected(std::chrono::milliseconds timeout);

  // Read side. Unknown addresses have a zero balance (never NOT_FOUND); an unknown channel is
  // NOT_FOUND. limit 0 means the server default (100); the server caps it (500 / 1000).
  RpcResult<LedgerInfo> GetInfo();
  RpcResult<AccountState> GetAccount(const Address& address);
  RpcResult<ChannelState> GetChannel(const ChannelId& id);
  RpcResult<std::vector<ChannelState>> ListChannels(const Address& address, uint32_t limit = 0);
  RpcResult<HistoryPage> History(const Address& address, uint64_t after_seq, uint32_t limit = 0);

  // Signed requests (build them with ledger/requests.h). On refusal nothing changed at the
  // ledger; the code says why (docs/ledger-api.md): INVALID_ARGUMENT, FAILED_PRECONDITION
  // (wrong ledger id, insufficient balance, channel not open), UNAUTHENTICATED (bad signature),
  // PERMISSION_DENIED, ALREADY_EXISTS (replayed nonce), NOT_FOUND, OUT_OF_RANGE (overflow),
  // RESOURCE_EXHAUSTED (batch too large), UNAVAILABLE (storage or transport; safe to retry
  // with the same request: a replay of an applied request is refused with ALREADY_EXISTS),
  // DEADLINE_EXCEEDED (unknown whether it applied; read the state or retry).
  RpcResult<AccountState> Deposit(const DepositRequest& req);
  RpcResult<AccountState> Withdraw(const WithdrawRequest& req);
  RpcResult<ChannelState> OpenChannel(const OpenChannelRequest& req);
  RpcResult<ChannelState> TopUpChannel(const TopUpChannelRequest& req);
  RpcResult<ChannelState> CloseChannel(const CloseChannelRequest& req);
  RpcResult<SettleBatchResult> SettleBatch(const SettleBatchRequest& req);

  // Streams movements of `address` with seq > after_seq, then live ones, until cancelled.
  // No deadline applies to the stream.
  std::unique_ptr<AccountWatch> WatchAccount(const Address& address, uint64_t after_seq);

  // Callback form of WatchAccount: calls `on_movement` for each movement until it returns
  // false (then Ok) or the stream fails (the error). Blocks the calling thread; to stop it
  // from another thread, use WatchAccount and AccountWatch::Cancel instead.
  RpcResult<void> Watch(const Address& address, uint64_t after_seq,
                        const std::function<bool(const Movement&)>& on_movement);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dvpn::ledger::rpc
