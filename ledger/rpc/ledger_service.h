#pragma once
// LedgerService: the dvpn.v1.Ledger gRPC service, a thin adapter over ledger::Ledger. Each
// handler converts the request (ledger/rpc/convert.h), calls the Ledger, converts the answer
// and maps a refusal to a status with ToStatus. No money rules, SQL or crypto here.
//
// LedgerServer: a running grpc::Server around a LedgerService, with server reflection, a
// receive limit sized for the largest batch, and a background thread that finalizes channels
// whose challenge period has ended.
//
// Thread-safety: LedgerService handlers run on gRPC's threads concurrently; the Ledger
// serialises writes. LedgerServer's methods may be called from any thread.
// Ownership: both borrow the Ledger, which must outlive them.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/server.h>

#include "common/clock.h"
#include "common/result.h"
#include "dvpn/v1/ledger.grpc.pb.h"
#include "ledger/ledger.h"

namespace dvpn::ledger::rpc {

class LedgerService final : public v1::Ledger::Service {
 public:
  // At most `max_watchers` WatchAccount streams at once; more get RESOURCE_EXHAUSTED.
  // `clock` gives GetInfo's server time (the Ledger's own clock, so expiries agree).
  LedgerService(Ledger& ledger, const Clock& clock, uint32_t max_watchers = 64);
  LedgerService(const LedgerService&) = delete;
  LedgerService& operator=(const LedgerService&) = delete;

  // Makes every WatchAccount stream end (UNAVAILABLE) within about kWatchPoll. Call before
  // grpc::Server::Shutdown so shutdown does not wait for watchers.
  void BeginShutdown() { shutting_down_.store(true); }

  // How often a watcher rechecks cancellation and shutdown while no movement commits.
  static constexpr std::chrono::milliseconds kWatchPoll{500};

  grpc::Status GetInfo(grpc::ServerContext* ctx, const v1::GetInfoRequest* req,
                       v1::LedgerInfo* reply) override;
  grpc::Status GetAccount(grpc::ServerContext* ctx, const v1::GetAccountRequest* req,
                          v1::Account* reply) override;
  grpc::Status GetChannel(grpc::ServerContext* ctx, const v1::GetChannelRequest* req,
                          v1::Channel* reply) override;
  grpc::Status ListChannels(grpc::ServerContext* ctx, const v1::ListChannelsRequest* req,
                            v1::ListChannelsReply* reply) override;
  grpc::Status History(grpc::ServerContext* ctx, const v1::HistoryRequest* req,
                       v1::HistoryReply* reply) override;
  grpc::Status WatchAccount(grpc::ServerContext* ctx, const v1::WatchAccountRequest* req,
                            grpc::ServerWriter<v1::Movement>* writer) override;
  grpc::Status Deposit(grpc::ServerContext* ctx, const v1::DepositRequest* req,
                       v1::Account* reply) override;
  grpc::Status Withdraw(grpc::ServerContext* ctx, const v1::WithdrawRequest* req,
                        v1::Account* reply) override;
  grpc::Status OpenChannel(grpc::ServerContext* ctx, const v1::OpenChannelRequest* req,
                           v1::Channel* reply) override;
  grpc::Status TopUpChannel(grpc::ServerContext* ctx, const v1::TopUpChannelRequest* req,
                            v1::Channel* reply) override;
  grpc::Status CloseChannel(grpc::ServerContext* ctx, const v1::CloseChannelRequest* req,
                            v1::Channel* reply) override;
  grpc::Status SettleBatch(grpc::ServerContext* ctx, const v1::SettleBatchRequest* req,
                           v1::SettleBatchReply* reply) override;

 private:
  Ledger& ledger_;
  const Clock& clock_;
  const uint32_t max_watchers_;
  std::atomic<uint32_t> watchers_{0};
  std::atomic<bool> shutting_down_{false};
};

struct LedgerServerOptions {
  // "host:port"; port 0 picks a free port (see LedgerServer::port()).
  std::string listen_address = "127.0.0.1:0";
  // Largest request accepted. A batch of 5000 promises is about 0.6 MB; 16 MiB leaves room for
  // larger configured batches while bounding memory per call.
  int max_receive_message_bytes = 16 * 1024 * 1024;
  uint32_t max_watchers = 64;
  // How often channels past their challenge period are finalized.
  std::chrono::milliseconds finalize_interval{1000};
};

enum class ServerErrc {
  kListen,  // the address cannot be bound (in use, or not a valid host:port)
};

class LedgerServer {
 public:
  // Builds and starts the server (reflection enabled). kListen when the address cannot be
  // bound. `ledger` and `clock` must outlive the server.
  static Result<std::unique_ptr<LedgerServer>, ServerErrc> Start(
      Ledger& ledger, const Clock& clock, const LedgerServerOptions& options);

  ~LedgerServer();  // Shutdown(1 s) if not done yet
  LedgerServer(const LedgerServer&) = delete;
  LedgerServer& operator=(const LedgerServer&) = delete;

  // The bound port (the real one when the options asked for port 0).
  int port() const { return port_; }
  // "127.0.0.1:<port>" for the bound port on the listen host.
  const std::string& address() const { return address_; }

  // Stops the finalizer, ends watch streams, stops accepting calls and waits up to `grace` for
  // calls in flight; calls still running after that are cancelled. Idempotent.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

 private:
  LedgerServer(Ledger& ledger, const Clock& clock, const LedgerServerOptions& options);
  void FinalizeLoop();

  Ledger& ledger_;
  LedgerServerOptions options_;
  std::unique_ptr<LedgerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;       // guarded by mu_
  bool shut_down_ = false;  // guarded by mu_
  std::thread finalizer_;
};

}  // namespace dvpn::ledger::rpc
