#include "tunnel/session/datagram_path.h"

#include "common/clock.h"
#include "tunnel/record.h"

namespace dvpn::tunnel::session {

DatagramPath::DatagramPath(const SessionKeys& keys, uint32_t local_index, uint32_t remote_index,
                           Options options, SendFn send, PacketFn deliver)
    : channel_(keys, local_index, remote_index, options.max_plaintext),
      options_(options),
      send_(std::move(send)),
      deliver_(std::move(deliver)),
      out_(channel_.max_plaintext() + channel_.max_overhead()),
      epoch_start_ms_(MonotonicMs()) {}

DatagramPath::DatagramPath(const SessionKeys& keys, uint32_t local_index, uint32_t remote_index,
                           Options options, DatagramSink& sink, PacketFn deliver)
    : channel_(keys, local_index, remote_index, options.max_plaintext),
      options_(options),
      sink_(&sink),
      deliver_(std::move(deliver)),
      epoch_start_ms_(MonotonicMs()) {}

void DatagramPath::TickKeys(uint64_t now_ms) {
  if (now_ms - epoch_start_ms_ >= kRekeyAfterSeconds * 1000) {
    epoch_start_ms_ = now_ms;
    RequestRekey();
  }
  if (!has_previous_epoch()) {
    previous_since_ms_ = 0;
    return;
  }
  if (previous_since_ms_ == 0) previous_since_ms_ = now_ms;
  if (now_ms - previous_since_ms_ >= kPreviousEpochSeconds * 1000) {
    ExpirePreviousEpoch();
    previous_since_ms_ = 0;
  }
}

void DatagramPath::OnDatagram(std::span<uint8_t> datagram, const udp::endpoint& from) {
  const auto header = ParseDatagramHeader(datagram);  // read before Open decrypts in place
  auto opened = channel_.Open(datagram);
  if (!opened || !header) {
    ++counters_.refused;
    return;
  }
  ++counters_.opened;
  CountMissing(header->epoch, header->counter);
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

void DatagramPath::CountMissing(uint8_t epoch, uint64_t counter) {
  if (!seen_any_ || epoch != seen_epoch_) {
    // A new epoch starts its counters at 0: those below the first one seen are missing.
    if (seen_any_ && static_cast<uint8_t>(epoch - seen_epoch_) > 0x80) return;  // a late one
    seen_any_ = true;
    seen_epoch_ = epoch;
    seen_highest_ = counter;
    counters_.missing += counter;
    return;
  }
  if (counter > seen_highest_) {
    counters_.missing += counter - seen_highest_ - 1;
    seen_highest_ = counter;
  } else if (counters_.missing > 0) {
    --counters_.missing;  // a late datagram filled a gap (the opener refuses a replay)
  }
}

bool DatagramPath::Seal(ByteSpan plaintext) {
  if (!peer_) {
    ++counters_.send_failed;
    return false;
  }
  if (sink_ != nullptr) {
    auto room = sink_->Prepare(plaintext.size() + channel_.max_overhead());
    auto n = channel_.Seal(plaintext, room);
    if (!n || !sink_->Commit(*n, *peer_)) {
      ++counters_.send_failed;
      return false;
    }
    return true;
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
