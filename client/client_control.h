#pragma once
// The user's side of dvpn-client (docs/client.md): ClientController holds at most one running
// connection (a ClientRuntime) and replaces it on Connect; ClientControlService is
// dvpn.v1.ClientControl over it (127.0.0.1 only).
//
// Thread-safety: ClientController's methods may be called from any thread (Connect and
// Disconnect are serialized; a supervisor thread of its own retries). Ownership: it owns the
// runtime; the factory's captures must outlive it.

#include <chrono>
#include <condition_variable>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "dvpn/v1/client.grpc.pb.h"
#include "payments/keys.h"
#include "client/client_runtime.h"
#include "client/errc.h"

namespace dvpn::client {

// What one Connect may choose.
struct ConnectPolicy {
  Amount max_price_per_mb;
  std::string region;                       // empty: any
  std::optional<payments::Address> provider;  // only this provider's offers
  bool full_tunnel = false;  // every packet of the machine through the exit (docs/full-tunnel.md)
};

class ClientController {
 public:
  // Builds the runtime's configuration for `policy` (the wallet, the spend state shared by
  // every connection, the offers source). Error: a message for the caller (kBadConfig).
  using Factory = std::function<Result<tunnel_client::ClientRuntimeConfig, Errc>(
      const ConnectPolicy& policy)>;

  // Between a Connect and the next Disconnect the controller keeps trying: a connection that
  // ends by itself for want of a provider (no offer yet, none reachable) is started again after
  // `retry_first`, doubling up to `retry_max`, and back to `retry_first` once connected. A spend
  // cap or refused payment terms end it for good (state "failed").
  struct Options {
    std::chrono::milliseconds retry_first{1000};
    std::chrono::milliseconds retry_max{30'000};
  };

  ClientController(Factory factory, ConnectPolicy defaults, std::string wallet_address,
                   Amount daily_cap, std::string socks_host, Options options);
  ~ClientController();  // Disconnect()

  const ConnectPolicy& defaults() const { return defaults_; }

  // Replaces any running connection with one under `policy` and waits up to `wait` for its
  // tunnel (the SOCKS port listens then); retries go on after it returns. Error: the
  // configuration could not be built, or the runtime could not start (the factory's or
  // ClientRuntime::Start's error).
  Result<v1::ClientStatus, Errc> Connect(const ConnectPolicy& policy,
                                         std::chrono::milliseconds wait);
  v1::ClientStatus Disconnect();
  v1::ClientStatus Status();

 private:
  v1::ClientStatus StatusLocked();
  // Starts a runtime for wanted_ (mu_ held). Error: the factory's or the runtime's.
  Result<void, Errc> StartLocked();
  bool NeedsRetryLocked() const;
  void Supervise();

  const Factory factory_;
  const ConnectPolicy defaults_;
  const std::string wallet_address_;
  const Amount daily_cap_;
  const std::string socks_host_;
  const Options options_;
  std::mutex calls_mu_;  // serializes Connect and Disconnect
  std::mutex mu_;        // guards what follows
  std::condition_variable cv_;
  std::unique_ptr<tunnel_client::ClientRuntime> runtime_;
  std::optional<v1::ClientStatus> last_;  // the final status of a connection that ended
  std::optional<ConnectPolicy> wanted_;   // from Connect to Disconnect
  std::chrono::milliseconds backoff_{0};
  std::optional<std::chrono::steady_clock::time_point> retry_at_;
  std::string retry_error_;  // why the last attempt ended
  bool quit_ = false;
  std::thread supervisor_;
};

class ClientControlService final : public v1::ClientControl::Service {
 public:
  explicit ClientControlService(ClientController& controller) : controller_(controller) {}

  // INVALID_ARGUMENT: a price above 1,000,000 credits, a bad region or provider address,
  // wait_ms above 60000. FAILED_PRECONDITION: the connection could not be set up (e.g. the
  // provider stats file cannot be opened).
  grpc::Status Connect(grpc::ServerContext*, const v1::ConnectRequest* request,
                       v1::ClientStatus* reply) override;
  grpc::Status Disconnect(grpc::ServerContext*, const v1::DisconnectRequest*,
                          v1::ClientStatus* reply) override;
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetClientStatusRequest*,
                         v1::ClientStatus* reply) override;

 private:
  ClientController& controller_;
};

}  // namespace dvpn::client
