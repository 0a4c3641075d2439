#include "tunnel/session/record_transport.h"

namespace dvpn::tunnel::session {

TcpRecordTransport::TcpRecordTransport(tcp::socket socket) : socket_(std::move(socket)) {
  error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
}

asio::awaitable<void> TcpRecordTransport::WaitReadable() {
  error_code ec;  // an error shows again in the read that follows
  co_await socket_.async_wait(tcp::socket::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<TransportIo> TcpRecordTransport::ReadSome(std::span<uint8_t> into) {
  TransportIo io;
  io.bytes = co_await socket_.async_read_some(asio::buffer(into.data(), into.size()),
                                              asio::redirect_error(asio::use_awaitable, io.ec));
  co_return io;
}

asio::awaitable<TransportIo> TcpRecordTransport::WriteAll(
    std::span<const asio::const_buffer> buffers) {
  TransportIo io;
  io.bytes = co_await asio::async_write(socket_, buffers,
                                        asio::redirect_error(asio::use_awaitable, io.ec));
  co_return io;
}

void TcpRecordTransport::ShutdownReceive() {
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_receive, ignored);
}

void TcpRecordTransport::Close(bool shutdown_first) {
  error_code ignored;
  if (shutdown_first) socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace dvpn::tunnel::session
