#include "tunnel/session/datagram_endpoint.h"

#include <sodium.h>
#include <sys/socket.h>

#include <cstring>
#include <string>

namespace dvpn::tunnel::session {

namespace {

constexpr size_t kReadCalls = 8;  // receive system calls per wakeup (each up to 32 messages)

// Receiver indices must not be guessable from one another (an off-path sender that knew a
// live index could make that session spend an AEAD attempt per datagram); the generator is
// seeded from the system's randomness once per endpoint.
std::mt19937 SeededRng() {
  std::seed_seq seed{randombytes_random(), randombytes_random(), randombytes_random(),
                     randombytes_random()};
  return std::mt19937(seed);
}

}  // namespace

void GrowDatagramBuffers(udp::socket& socket, int bytes) {
  const int fd = socket.native_handle();
  for (const auto& [force, plain] : {std::pair{SO_RCVBUFFORCE, SO_RCVBUF},
                                     std::pair{SO_SNDBUFFORCE, SO_SNDBUF}}) {
    if (setsockopt(fd, SOL_SOCKET, force, &bytes, sizeof bytes) != 0) {
      (void)setsockopt(fd, SOL_SOCKET, plain, &bytes, sizeof bytes);
    }
  }
}

DatagramEndpoint::DatagramEndpoint(udp::socket socket, Options options)
    : socket_(std::move(socket)),
      options_(options),
      index_rng_(SeededRng()) {
  error_code ec;
  port_ = socket_.local_endpoint(ec).port();
  send_ = std::make_unique<UdpSendBatch>(socket_.get_executor(), socket_.native_handle(),
                                         /*connected=*/false, options.offloads);
  receive_ = std::make_unique<UdpReceiveBatch>(socket_.native_handle(), options.offloads,
                                               options.max_datagram);
}

DatagramEndpoint::Counters DatagramEndpoint::counters() const {
  Counters c = counters_;
  c.sent = send_->counters().datagrams;
  c.send_dropped += send_->counters().dropped;
  c.send_calls = send_->counters().calls;
  c.receive_calls = receive_->calls();
  return c;
}

Result<std::shared_ptr<DatagramEndpoint>, EndpointErrc> DatagramEndpoint::Open(
    const asio::any_io_executor& ex, const udp::endpoint& listen, Options options) {
  udp::socket socket(ex);
  error_code ec;
  socket.open(listen.protocol(), ec);
  if (!ec && listen.address().is_v6()) socket.set_option(asio::ip::v6_only(true), ec);
  if (!ec) socket.bind(listen, ec);
  if (!ec) socket.non_blocking(true, ec);
  if (!ec) GrowDatagramBuffers(socket);
  if (ec) {
    return Fail(EndpointErrc::kBind, "udp " + listen.address().to_string() + ":" +
                                         std::to_string(listen.port()) + ": " + ec.message());
  }
  return std::shared_ptr<DatagramEndpoint>(new DatagramEndpoint(std::move(socket), options));
}

void DatagramEndpoint::Start() {
  asio::co_spawn(
      socket_.get_executor(), [self = shared_from_this()] { return self->ReceiveLoop(); },
      [](std::exception_ptr e) { LogTaskFailure(*TunnelLog(), "udp endpoint", e); });
}

void DatagramEndpoint::Close() {
  send_->Close();
  error_code ignored;
  socket_.close(ignored);
  receivers_.clear();
}

Result<uint32_t, EndpointErrc> DatagramEndpoint::Reserve() {
  if (receivers_.size() >= options_.max_sessions) {
    // Receivers that went away without Unregister free their indices first.
    std::erase_if(receivers_, [](const auto& entry) {
      return entry.second.attached && entry.second.receiver.expired();
    });
    if (receivers_.size() >= options_.max_sessions) {
      return Fail(EndpointErrc::kFull, std::to_string(receivers_.size()) + " sessions");
    }
  }
  // At most max_sessions of 2^32 - 1 indices are taken, so a free one comes within a few tries;
  // the bound only guards against a broken generator.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const uint32_t index = index_rng_();
    if (index == 0 || receivers_.contains(index)) continue;
    receivers_.emplace(index, Entry{});
    return index;
  }
  return Fail(EndpointErrc::kFull, "no free receiver index");
}

bool DatagramEndpoint::Attach(uint32_t index, std::weak_ptr<Receiver> receiver) {
  auto it = receivers_.find(index);
  if (it == receivers_.end() || it->second.attached) return false;
  it->second = Entry{std::move(receiver), true};
  return true;
}

void DatagramEndpoint::Unregister(uint32_t index) { receivers_.erase(index); }

bool DatagramEndpoint::SendTo(ByteSpan datagram, const udp::endpoint& to) {
  if (!socket_.is_open()) {
    ++counters_.send_dropped;
    return false;
  }
  auto room = send_->Prepare(datagram.size());
  if (room.size() < datagram.size()) {
    ++counters_.send_dropped;
    return false;
  }
  std::memcpy(room.data(), datagram.data(), datagram.size());
  return send_->Commit(datagram.size(), to);
}

void DatagramEndpoint::Dispatch(std::span<uint8_t> datagram, const udp::endpoint& from) {
  auto header = ParseDatagramHeader(datagram);
  if (!header) {
    ++counters_.malformed;
    return;
  }
  auto it = receivers_.find(header->receiver_index);
  if (it == receivers_.end()) {
    ++counters_.unknown_index;
    return;
  }
  auto receiver = it->second.receiver.lock();
  if (!receiver) {
    if (it->second.attached) receivers_.erase(it);  // the session is gone
    ++counters_.unknown_index;
    return;
  }
  ++counters_.delivered;
  receiver->OnDatagram(datagram, from);
}

asio::awaitable<void> DatagramEndpoint::ReceiveLoop() {
  auto self = shared_from_this();
  while (socket_.is_open()) {
    error_code ec;
    co_await socket_.async_wait(udp::socket::wait_read,
                                asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !socket_.is_open()) co_return;
      continue;
    }
    // Everything queued now, in batches, without a trip through the event loop per datagram.
    // An ICMP error from an earlier send (connection refused) wakes this too: the receive call
    // reports it, which clears it; not ours to act on.
    counters_.received +=
        receive_->Read(kReadCalls, [&](std::span<uint8_t> d, const udp::endpoint& f) {
          Dispatch(d, f);
        }, UdpReceiveBatch::kDatagramsPerWakeup);
  }
}

}  // namespace dvpn::tunnel::session
