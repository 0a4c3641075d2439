#include "tunnel/session/datagram_path.h"

namespace dvpn::tunnel::session {

DatagramPath::DatagramPath(const SessionKeys& keys, uint32_t local_index, uint32_t remote_index,
                           Options options, SendFn send, PacketFn deliver)
    : channel_(keys, local_index, remote_index, options.max_plaintext),
      options_(options),
      send_(std::move(send)),
      deliver_(std::move(deliver)),
      out_(channel_.max_plaintext() + channel_.max_overhead()) {}

void DatagramPath::OnDatagram(std::span<uint8_t> datagram, const udp::endpoint& from) {
  auto opened = channel_.Open(datagram);
  if (!opened) {
    ++counters_.refused;
    return;
  }
  ++counters_.opened;
  const uint64_t now = MonotonicMs();
  last_authenticated_ms_ = now;
  peer_ = from;  // authenticated: the peer is there now (NAT rebinding, roaming)
  if (opened->empty()) {
    ++counters_.keepalives_in;
    if (options_.answer_keepalives &&
        (last_keepalive_answer_ms_ == 0 ||
         now - last_keepalive_answer_ms_ >= kKeepaliveAnswerIntervalMs)) {
      last_keepalive_answer_ms_ = now;
      SendKeepalive();
    }
    return;
  }
  ++counters_.packets_in;
  counters_.bytes_in += opened->size();
  deliver_(*opened);
}

bool DatagramPath::Seal(ByteSpan plaintext) {
  if (!peer_) {
    ++counters_.send_failed;
    return false;
  }
  auto n = channel_.Seal(plaintext, out_);
  if (!n || !send_(ByteSpan(out_.data(), *n), *peer_)) {
    ++counters_.send_failed;
    return false;
  }
  return true;
}

bool DatagramPath::SendPacket(ByteSpan packet) {
  if (packet.empty()) return false;  // an empty plaintext is a keepalive, not a packet
  if (!Seal(packet)) return false;
  ++counters_.packets_out;
  counters_.bytes_out += packet.size();
  return true;
}

bool DatagramPath::SendKeepalive() {
  if (!Seal({})) return false;
  ++counters_.keepalives_out;
  return true;
}

}  // namespace dvpn::tunnel::session
