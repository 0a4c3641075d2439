#include "ledger/rpc/ledger_service.h"

#include <algorithm>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>

#include "common/counted_slot.h"
#include "common/log.h"
#include "ledger/rpc/convert.h"

namespace dvpn::ledger::rpc {
namespace {

constexpr uint32_t kDefaultListLimit = 100;
constexpr uint32_t kMaxListChannels = 500;
constexpr uint32_t kMaxHistory = 1000;

spdlog::logger& Log() {
  static auto logger = Logger("rpc");
  return *logger;
}

// A refusal is routine (a wallet retries, a peer misbehaves): debug, never info.
grpc::Status Refused(const char* rpc, const Error<Errc>& error) {
  Log().debug("{} refused: {}: {}", rpc, ErrcName(error.code), error.message);
  return ToStatus(error);
}

uint32_t ClampLimit(uint32_t requested, uint32_t max) {
  if (requested == 0) return std::min(kDefaultListLimit, max);
  return std::min(requested, max);
}

}  // namespace

LedgerService::LedgerService(Ledger& ledger, const Clock& clock, uint32_t max_watchers)
    : ledger_(ledger), clock_(clock), max_watchers_(max_watchers) {}

grpc::Status LedgerService::GetInfo(grpc::ServerContext*, const v1::GetInfoRequest*,
                                    v1::LedgerInfo* reply) {
  auto totals = ledger_.GetTotals();
  if (!totals) return Refused("GetInfo", totals.error());
  const LedgerConfig& config = ledger_.config();
  LedgerInfo info{ledger_.id(),
                  config.name,
                  config.operator_key,
                  Address::FromPublicKey(config.operator_key),
                  config.challenge_period_seconds,
                  config.max_batch_items,
                  *totals,
                  clock_.NowSeconds()};
  ToProto(info, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::GetAccount(grpc::ServerContext*, const v1::GetAccountRequest* req,
                                       v1::Account* reply) {
  auto address = ParseAddress(req->address(), "address");
  if (!address) return Refused("GetAccount", address.error());
  auto state = ledger_.GetAccount(*address);
  if (!state) return Refused("GetAccount", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::GetChannel(grpc::ServerContext*, const v1::GetChannelRequest* req,
                                       v1::Channel* reply) {
  auto id = ParseChannelId(req->channel_id(), "channel_id");
  if (!id) return Refused("GetChannel", id.error());
  auto state = ledger_.GetChannel(*id);
  if (!state) return Refused("GetChannel", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::ListChannels(grpc::ServerContext*, const v1::ListChannelsRequest* req,
                                         v1::ListChannelsReply* reply) {
  auto address = ParseAddress(req->address(), "address");
  if (!address) return Refused("ListChannels", address.error());
  auto channels = ledger_.ListChannels(*address, ClampLimit(req->limit(), kMaxListChannels));
  if (!channels) return Refused("ListChannels", channels.error());
  for (const ChannelState& channel : *channels) ToProto(channel, reply->add_channels());
  return grpc::Status::OK;
}

grpc::Status LedgerService::History(grpc::ServerContext*, const v1::HistoryRequest* req,
                                    v1::HistoryReply* reply) {
  auto address = ParseAddress(req->address(), "address");
  if (!address) return Refused("History", address.error());
  uint32_t limit = ClampLimit(req->limit(), kMaxHistory);
  auto movements = ledger_.History(*address, req->after_seq(), limit);
  if (!movements) return Refused("History", movements.error());
  for (const Movement& m : *movements) ToProto(m, reply->add_movements());
  // A full page may have a successor; a short one is the end.
  reply->set_next_after_seq(movements->size() == limit ? movements->back().seq : 0);
  return grpc::Status::OK;
}

grpc::Status LedgerService::WatchAccount(grpc::ServerContext* ctx,
                                         const v1::WatchAccountRequest* req,
                                         grpc::ServerWriter<v1::Movement>* writer) {
  auto address = ParseAddress(req->address(), "address");
  if (!address) return Refused("WatchAccount", address.error());
  auto slot = CountedSlot::TryTake(watchers_, max_watchers_);
  if (!slot) {
    Log().debug("WatchAccount refused: {} watchers already", max_watchers_);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many watchers: the ledger serves at most " +
                            std::to_string(max_watchers_) + " WatchAccount streams at once");
  }

  auto stopping = [&] { return ctx->IsCancelled() || shutting_down_.load(); };
  // The last committed seq before reading history: anything committed later wakes the wait
  // below, anything earlier is in the history read.
  uint64_t seen_global = ledger_.WaitForMovementAfter(0, std::chrono::steady_clock::now());
  uint64_t cursor = req->after_seq();
  while (true) {
    // Send everything of this account after `cursor`, page by page.
    while (true) {
      if (stopping()) break;
      auto page = ledger_.History(*address, cursor, kMaxHistory);
      if (!page) return Refused("WatchAccount", page.error());
      for (const Movement& m : *page) {
        v1::Movement msg;
        ToProto(m, &msg);
        if (!writer->Write(msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "watcher gone");
        cursor = m.seq;
      }
      if (page->size() < kMaxHistory) break;
    }
    // Wait for the next commit anywhere in the ledger, rechecking cancellation regularly.
    while (true) {
      if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      if (shutting_down_.load()) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the ledger is shutting down");
      }
      uint64_t last =
          ledger_.WaitForMovementAfter(seen_global, std::chrono::steady_clock::now() + kWatchPoll);
      if (last > seen_global) {
        seen_global = last;
        break;
      }
    }
  }
}

grpc::Status LedgerService::Deposit(grpc::ServerContext*, const v1::DepositRequest* req,
                                    v1::Account* reply) {
  auto parsed = FromProto(*req);
  if (!parsed) return Refused("Deposit", parsed.error());
  auto state = ledger_.Deposit(*parsed);
  if (!state) return Refused("Deposit", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::Withdraw(grpc::ServerContext*, const v1::WithdrawRequest* req,
                                     v1::Account* reply) {
  auto parsed = FromProto(*req);
  if (!parsed) return Refused("Withdraw", parsed.error());
  auto state = ledger_.Withdraw(*parsed);
  if (!state) return Refused("Withdraw", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::OpenChannel(grpc::ServerContext*, const v1::OpenChannelRequest* req,
                                        v1::Channel* reply) {
  auto parsed = FromProto(*req);
  if (!parsed) return Refused("OpenChannel", parsed.error());
  auto state = ledger_.OpenChannel(*parsed);
  if (!state) return Refused("OpenChannel", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::TopUpChannel(grpc::ServerContext*, const v1::TopUpChannelRequest* req,
                                         v1::Channel* reply) {
  auto parsed = FromProto(*req);
  if (!parsed) return Refused("TopUpChannel", parsed.error());
  auto state = ledger_.TopUpChannel(*parsed);
  if (!state) return Refused("TopUpChannel", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::CloseChannel(grpc::ServerContext*, const v1::CloseChannelRequest* req,
                                         v1::Channel* reply) {
  auto parsed = FromProto(*req);
  if (!parsed) return Refused("CloseChannel", parsed.error());
  auto state = ledger_.CloseChannel(*parsed);
  if (!state) return Refused("CloseChannel", state.error());
  ToProto(*state, reply);
  return grpc::Status::OK;
}

grpc::Status LedgerService::SettleBatch(grpc::ServerContext*, const v1::SettleBatchRequest* req,
                                        v1::SettleBatchReply* reply) {
  auto parsed = FromProto(*req, ledger_.config().max_batch_items);
  if (!parsed) return Refused("SettleBatch", parsed.error());
  auto result = ledger_.SettleBatch(*parsed);
  if (!result) return Refused("SettleBatch", result.error());
  ToProto(*result, reply);
  return grpc::Status::OK;
}

// --- LedgerServer -----------------------------------------------------------------------------

LedgerServer::LedgerServer(Ledger& ledger, const Clock& clock, const LedgerServerOptions& options)
    : ledger_(ledger),
      options_(options),
      service_(std::make_unique<LedgerService>(ledger, clock, options.max_watchers)) {}

Result<std::unique_ptr<LedgerServer>, ServerErrc> LedgerServer::Start(
    Ledger& ledger, const Clock& clock, const LedgerServerOptions& options) {
  std::unique_ptr<LedgerServer> server(new LedgerServer(ledger, clock, options));
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  // Replies to a maximal batch are of the same order as the request.
  builder.SetMaxSendMessageSize(options.max_receive_message_bytes);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || port == 0) {
    return Fail(ServerErrc::kListen, "cannot listen on " + options.listen_address +
                                         " (address in use, or not a valid host:port)");
  }
  server->port_ = port;
  std::string host = options.listen_address.substr(0, options.listen_address.rfind(':'));
  server->address_ = host + ":" + std::to_string(port);
  server->finalizer_ = std::thread([s = server.get()] { s->FinalizeLoop(); });
  return server;
}

LedgerServer::~LedgerServer() { Shutdown(std::chrono::milliseconds(1000)); }

void LedgerServer::FinalizeLoop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (cv_.wait_for(lock, options_.finalize_interval, [this] { return stop_; })) break;
    lock.unlock();
    auto closed = ledger_.FinalizeDueChannels();
    if (!closed) {
      Log().warn("finalizing channels failed: {}: {}", ErrcName(closed.error().code),
                 closed.error().message);
    } else if (*closed > 0) {
      Log().debug("finalized {} channel(s) past their challenge period", *closed);
    }
    lock.lock();
  }
}

void LedgerServer::Shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stop_ = true;
  }
  cv_.notify_all();
  if (finalizer_.joinable()) finalizer_.join();
  service_->BeginShutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }
}

}  // namespace dvpn::ledger::rpc
