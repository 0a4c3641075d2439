// libFuzzer target for the mux frame decoder (tunnel/mux_frame.h) and the stream table
// (tunnel/stream_table.h). The first input byte picks the side (bit 0: exit or client) and how
// the table's local methods answer (accept or refuse OPENs, consume or hold data, send, FIN;
// bit 5: the client asks for packet mode first; bit 6: the exit refuses packet mode); the rest
// is one record plaintext. Checks:
//  - the decoder never reads outside the input, every frame it returns re-encodes to exactly
//    the bytes it came from, and after an error the reader stops;
//  - the stream table either accepts each frame or reports a peer violation, and its
//    invariants (window accounting, limits) hold after every step;
//  - packet mode: a setup is answered once, PACKET is delivered only in packet mode, and
//    PACKET frames change no window.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "tunnel/mux_frame.h"
#include "tunnel/stream_table.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dvpn::tunnel;
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  std::span<const uint8_t> record(data + 1, size - 1);

  StreamTable::Options options;
  options.stream_window = 1024;  // small windows so short inputs reach the limits
  options.tunnel_window = 3072;
  options.max_streams = 8;
  options.new_streams_burst = 4;
  options.new_streams_per_second = 1;
  StreamTable table((selector & 1) ? Role::kExit : Role::kClient, options);
  // The client side needs streams of its own to receive frames for.
  if (table.role() == Role::kClient) {
    for (int i = 0; i < 4; ++i) Check(table.Open().has_value());
    if (selector & 32) {
      PacketSetupFields setup;
      setup.receiver_index = 1;
      setup.max_datagram_plaintext = 1420;
      setup.wants_udp = true;
      Check(table.StartPacketSetup(setup).has_value());
      Check(!table.StartPacketSetup(setup).has_value());
    }
  }

  std::vector<uint8_t> reencoded(kMaxRecordPlaintext);
  FrameReader reader(record);
  size_t offset = 0;
  uint64_t now_ms = 0;
  bool tunnel_alive = true;
  while (!reader.done()) {
    auto decoded = DecodeFrame(record.subspan(offset));
    auto frame = reader.Next();
    Check(decoded.has_value() == frame.has_value());
    if (!frame) {
      Check(reader.done());
      break;
    }
    Check(decoded->size >= kFrameHeaderSize && decoded->size <= record.size() - offset);
    // Round trip: re-encoding the view gives back the same bytes.
    FrameWriter writer(reencoded);
    Check(writer.Append(*frame).has_value());
    Check(writer.size() == decoded->size);
    Check(std::memcmp(reencoded.data(), record.data() + offset, decoded->size) == 0);
    offset += decoded->size;

    if (!tunnel_alive) continue;
    now_ms += 50;
    const uint64_t send_before = table.tunnel_send_window();
    const uint64_t receive_before = table.tunnel_receive_window();
    const bool packet_mode_before = table.PacketModeReady();
    auto action = table.OnFrame(*frame, now_ms);
    if (!action) {
      Check(IsPeerViolation(action.error().code));
      tunnel_alive = false;  // the session would send CLOSE and stop here
      continue;
    }
    Check(table.CheckInvariants().empty());
    const uint32_t id = action->stream_id;
    switch (action->kind) {
      case Action::Kind::kOpenRequested:
        if (selector & 2) {
          Check(table.Refuse(id).has_value());
        } else {
          Check(table.Accept(id).has_value());
        }
        break;
      case Action::Kind::kData:
        Check(action->data.size() == frame->payload.size());
        if (selector & 4) {
          Check(table.Consumed(id, table.buffered_bytes(id)).has_value());
        }
        break;
      case Action::Kind::kOpened:
      case Action::Kind::kRemoteFin:
        if ((selector & 8) && table.CanSend(id) > 0) {
          Check(table.Sent(id, table.CanSend(id)).has_value());
          Check(table.CanSend(id) == 0);
        }
        if ((selector & 16) && table.state(id)) (void)table.Fin(id);
        break;
      case Action::Kind::kReset:
      case Action::Kind::kOpenFailed:
        Check(!table.state(id).has_value());
        break;
      case Action::Kind::kPacketSetup:
        Check(table.role() == Role::kExit && !table.PacketModeReady());
        Check(action->packet_setup == frame->packet_setup);
        Check(table.AnswerPacketSetup(!(selector & 64)).has_value());
        Check(!table.AnswerPacketSetup(true).has_value());
        Check(table.PacketModeReady() == !(selector & 64));
        break;
      case Action::Kind::kPacketReady:
        Check(table.role() == Role::kClient && !packet_mode_before && table.PacketModeReady());
        break;
      case Action::Kind::kPacketFailed:
        Check(table.role() == Role::kClient && !table.PacketModeReady());
        Check(static_cast<uint8_t>(action->packet_failure) >= 1 &&
              static_cast<uint8_t>(action->packet_failure) <= 4);
        break;
      case Action::Kind::kPacket:
        Check(packet_mode_before && table.PacketModeReady());
        Check(action->data.data() == frame->payload.data() &&
              action->data.size() == frame->payload.size());
        Check(table.tunnel_send_window() == send_before &&
              table.tunnel_receive_window() == receive_before);
        break;
      default:
        break;
    }
    Check(table.CheckInvariants().empty());
    Check(table.stream_count() <= options.max_streams);
    Check(table.buffered_bytes() <= options.tunnel_window);
  }
  Check(offset <= record.size());
  return 0;
}
