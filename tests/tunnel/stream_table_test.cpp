// StreamTable: stream lifecycle, flow control, violations, half-close, reset isolation, limits;
// packet mode (setup, answer, PACKET frames) and its violations.
#include "tunnel/stream_table.h"

#include <gtest/gtest.h>

#include <array>
#include <random>
#include <vector>

namespace dvpn::tunnel {
namespace {

// Frames built by hand; payload views point into storage owned by the fixture.
class StreamTableTest : public ::testing::Test {
 protected:
  // Options with these receive windows (bytes), the rest default.
  static StreamTable::Options Windows(uint32_t stream_window, uint32_t tunnel_window) {
    StreamTable::Options o;
    o.stream_window = stream_window;
    o.tunnel_window = tunnel_window;
    return o;
  }

  Frame OpenFrame(uint32_t id, const Destination& d = Destination::Domain("example.com", 443)) {
    auto& buf = storage_.emplace_back(kMaxDestinationEncoding);
    auto n = EncodeDestination(d, buf);
    EXPECT_TRUE(n.has_value());
    Frame f;
    f.type = FrameType::kOpen;
    f.stream_id = id;
    f.payload = ByteSpan(buf.data(), *n);
    return f;
  }
  static Frame Simple(FrameType type, uint32_t id) {
    Frame f;
    f.type = type;
    f.stream_id = id;
    return f;
  }
  Frame DataFrame(uint32_t id, size_t len) {
    auto& buf = storage_.emplace_back(len, uint8_t{0x5A});
    Frame f = Simple(FrameType::kData, id);
    f.payload = ByteSpan(buf.data(), buf.size());
    return f;
  }
  static Frame WindowFrame(uint32_t id, uint32_t inc) {
    Frame f = Simple(FrameType::kWindow, id);
    f.window_increment = inc;
    return f;
  }
  static Frame ResetFrame(uint32_t id) { return Simple(FrameType::kReset, id); }
  static Frame OpenFail(uint32_t id, OpenFailure why) {
    Frame f = Simple(FrameType::kOpenFail, id);
    f.failure = why;
    return f;
  }
  // Packet mode: what the client asks for and what the exit grants (UDP, MTU 1420).
  static PacketSetupFields Setup(bool wants_udp = true, uint16_t max_datagram = 1420) {
    return {.receiver_index = 7, .max_datagram_plaintext = max_datagram, .wants_udp = wants_udp};
  }
  static PacketReadyFields Grant(uint16_t udp_port = 51820, uint16_t mtu = 1420) {
    PacketReadyFields r;
    r.receiver_index = udp_port == 0 ? 0 : 9;
    r.udp_port = udp_port;
    r.mtu = mtu;
    r.ipv4 = {10, 231, 0, 2};
    r.ipv4_prefix = 16;
    r.ipv6_prefix = 64;
    return r;
  }
  static Frame SetupFrame(const PacketSetupFields& setup = Setup()) {
    Frame f = Simple(FrameType::kPacketSetup, 0);
    f.packet_setup = setup;
    return f;
  }
  static Frame ReadyFrame(const PacketReadyFields& ready = Grant()) {
    Frame f = Simple(FrameType::kPacketReady, 0);
    f.packet_ready = ready;
    return f;
  }
  static Frame FailFrame(PacketFailure why) {
    Frame f = Simple(FrameType::kPacketFail, 0);
    f.packet_failure = why;
    return f;
  }
  Frame PacketFrame(size_t len) {
    auto& buf = storage_.emplace_back(len, uint8_t{0x45});
    Frame f = Simple(FrameType::kPacket, 0);
    f.payload = ByteSpan(buf.data(), buf.size());
    return f;
  }

  // Feeds `f` and expects success.
  static Action Feed(StreamTable& t, const Frame& f, uint64_t now_ms = 0) {
    auto a = t.OnFrame(f, now_ms);
    EXPECT_TRUE(a.has_value()) << a.error().message;
    EXPECT_EQ(t.CheckInvariants(), "");
    return a ? *a : Action{};
  }
  // Feeds `f` and returns the violation code.
  static MuxErrc Violation(StreamTable& t, const Frame& f, uint64_t now_ms = 0) {
    auto a = t.OnFrame(f, now_ms);
    EXPECT_FALSE(a.has_value());
    if (a) return MuxErrc{};
    EXPECT_TRUE(IsPeerViolation(a.error().code));
    return a.error().code;
  }

  // An exit table with stream `id` open.
  void OpenOnExit(StreamTable& exit, uint32_t id) {
    ASSERT_EQ(Feed(exit, OpenFrame(id)).kind, Action::Kind::kOpenRequested);
    ASSERT_TRUE(exit.Accept(id).has_value());
  }
  // A client table with a new open stream; returns its id.
  uint32_t OpenOnClient(StreamTable& client) {
    auto id = client.Open();
    EXPECT_TRUE(id.has_value());
    EXPECT_EQ(Feed(client, Simple(FrameType::kOpenOk, *id)).kind, Action::Kind::kOpened);
    return *id;
  }

  std::vector<std::vector<uint8_t>> storage_;
};

TEST_F(StreamTableTest, ClientOpenOk) {
  StreamTable client(Role::kClient, {});
  auto id = client.Open();
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(*id, 1u);
  EXPECT_EQ(client.state(1), StreamState::kOpening);
  EXPECT_EQ(client.CanSend(1), kMaxEarlyData) << "only early data before OPEN_OK";
  EXPECT_EQ(client.Fin(1).error().code, MuxErrc::kBadState);
  auto a = Feed(client, Simple(FrameType::kOpenOk, 1));
  EXPECT_EQ(a.kind, Action::Kind::kOpened);
  EXPECT_EQ(client.state(1), StreamState::kOpen);
  EXPECT_EQ(client.CanSend(1), kInitialStreamWindow);
  EXPECT_EQ(*client.Open(), 2u);
  // A second OPEN_OK is a violation.
  EXPECT_EQ(Violation(client, Simple(FrameType::kOpenOk, 1)), MuxErrc::kUnexpectedFrame);
}

TEST_F(StreamTableTest, ClientOpenFail) {
  StreamTable client(Role::kClient, {});
  ASSERT_TRUE(client.Open().has_value());
  auto a = Feed(client, OpenFail(1, OpenFailure::kNotAllowed));
  EXPECT_EQ(a.kind, Action::Kind::kOpenFailed);
  EXPECT_EQ(a.failure, OpenFailure::kNotAllowed);
  EXPECT_TRUE(a.stream_removed);
  EXPECT_EQ(client.state(1), std::nullopt);
  EXPECT_EQ(client.stream_count(), 0u);
}

TEST_F(StreamTableTest, ExitOpenAcceptRefuse) {
  StreamTable exit(Role::kExit, {});
  auto a = Feed(exit, OpenFrame(1, Destination::Ipv4({8, 8, 8, 8}, 53)));
  EXPECT_EQ(a.kind, Action::Kind::kOpenRequested);
  EXPECT_EQ(a.destination, Destination::Ipv4({8, 8, 8, 8}, 53));
  EXPECT_EQ(exit.state(1), StreamState::kOpening);
  EXPECT_EQ(exit.CanSend(1), 0u) << "the exit sends nothing before OPEN_OK";
  EXPECT_EQ(Violation(exit, Simple(FrameType::kFin, 1)), MuxErrc::kUnexpectedFrame)
      << "client FIN before OPEN_OK";
}

TEST_F(StreamTableTest, ClientEarlyDataIsBoundedAndCounted) {
  StreamTable client(Role::kClient, {});
  const uint32_t id = *client.Open();
  EXPECT_EQ(client.CanSend(id), kMaxEarlyData);
  ASSERT_TRUE(client.Sent(id, 1000).has_value());
  EXPECT_EQ(client.CanSend(id), kMaxEarlyData - 1000);
  EXPECT_EQ(client.Sent(id, kMaxEarlyData - 999).error().code, MuxErrc::kBadArgument);
  ASSERT_TRUE(client.Sent(id, kMaxEarlyData - 1000).has_value());
  EXPECT_EQ(client.CanSend(id), 0u);
  EXPECT_EQ(client.Fin(id).error().code, MuxErrc::kBadState) << "no FIN before OPEN_OK";
  EXPECT_EQ(client.CheckInvariants(), "");
  // Early data counted in the windows: after OPEN_OK the rest of the stream window remains.
  Feed(client, Simple(FrameType::kOpenOk, id));
  EXPECT_EQ(client.CanSend(id), kInitialStreamWindow - kMaxEarlyData);
  EXPECT_EQ(client.tunnel_send_window(), kInitialTunnelWindow - kMaxEarlyData);
  // The exit never sends early data: DATA before OPEN_OK ends the tunnel on the client.
  const uint32_t id2 = *client.Open();
  EXPECT_EQ(Violation(client, DataFrame(id2, 1)), MuxErrc::kUnexpectedFrame);
}

TEST_F(StreamTableTest, ExitBuffersEarlyDataUpToTheLimit) {
  StreamTable::Options o;
  o.tunnel_window = 40000;  // a quarter (10000) is below kMaxEarlyData: credit comes back at once
  StreamTable exit(Role::kExit, o);
  Feed(exit, OpenFrame(1));
  auto a = Feed(exit, DataFrame(1, 10000));
  EXPECT_EQ(a.kind, Action::Kind::kData);
  Feed(exit, DataFrame(1, kMaxEarlyData - 10000));
  EXPECT_EQ(exit.buffered_bytes(1), kMaxEarlyData);
  EXPECT_EQ(exit.CheckInvariants(), "");
  // Refused: the early data is discarded and its credit returned to the tunnel window.
  auto u = exit.Refuse(1);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->tunnel_increment, kMaxEarlyData);
  EXPECT_EQ(exit.buffered_bytes(), 0u);
  EXPECT_EQ(exit.tunnel_receive_window(), 40000u);
  EXPECT_EQ(exit.CheckInvariants(), "");
  // Accepted: the early data stays buffered for the connection.
  Feed(exit, OpenFrame(2));
  Feed(exit, DataFrame(2, 500));
  ASSERT_TRUE(exit.Accept(2).has_value());
  EXPECT_EQ(exit.buffered_bytes(2), 500u);
  ASSERT_TRUE(exit.Consumed(2, 500).has_value());
  EXPECT_EQ(exit.CheckInvariants(), "");
  // One byte beyond kMaxEarlyData while opening ends the tunnel.
  StreamTable exit2(Role::kExit, {});
  Feed(exit2, OpenFrame(1));
  Feed(exit2, DataFrame(1, kMaxEarlyData));
  EXPECT_EQ(Violation(exit2, DataFrame(1, 1)), MuxErrc::kFlowControl);
}

TEST_F(StreamTableTest, ExitAcceptAndRefuse) {
  StreamTable exit(Role::kExit, {});
  Feed(exit, OpenFrame(1));
  Feed(exit, OpenFrame(5));  // gaps are allowed; ids only increase
  ASSERT_TRUE(exit.Accept(1).has_value());
  EXPECT_EQ(exit.state(1), StreamState::kOpen);
  EXPECT_EQ(exit.Accept(1).error().code, MuxErrc::kBadState);
  ASSERT_TRUE(exit.Refuse(5).has_value());
  EXPECT_EQ(exit.state(5), std::nullopt);
  EXPECT_EQ(exit.Refuse(5).error().code, MuxErrc::kNoSuchStream);
  EXPECT_EQ(exit.Open().error().code, MuxErrc::kBadState) << "only the client opens";
  EXPECT_EQ(exit.CheckInvariants(), "");
}

TEST_F(StreamTableTest, RoleAndIdViolations) {
  StreamTable exit(Role::kExit, {});
  Feed(exit, OpenFrame(3));
  EXPECT_EQ(Violation(exit, OpenFrame(3)), MuxErrc::kBadStreamId);
  StreamTable exit2(Role::kExit, {});
  Feed(exit2, OpenFrame(3));
  EXPECT_EQ(Violation(exit2, OpenFrame(2)), MuxErrc::kBadStreamId);
  StreamTable exit3(Role::kExit, {});
  EXPECT_EQ(Violation(exit3, Simple(FrameType::kOpenOk, 1)), MuxErrc::kUnexpectedFrame);
  StreamTable exit4(Role::kExit, {});
  EXPECT_EQ(Violation(exit4, DataFrame(1, 10)), MuxErrc::kUnknownStream);
  StreamTable exit5(Role::kExit, {});
  EXPECT_EQ(Violation(exit5, WindowFrame(9, 10)), MuxErrc::kUnknownStream);
  StreamTable client(Role::kClient, {});
  EXPECT_EQ(Violation(client, OpenFrame(1)), MuxErrc::kUnexpectedFrame);
  StreamTable client2(Role::kClient, {});
  EXPECT_EQ(Violation(client2, Simple(FrameType::kOpenOk, 1)), MuxErrc::kUnknownStream);
  // A hand-built OPEN whose destination does not decode.
  StreamTable exit6(Role::kExit, {});
  const std::array<uint8_t, 3> bad = {9, 9, 9};
  Frame f = Simple(FrameType::kOpen, 1);
  f.payload = bad;
  EXPECT_EQ(Violation(exit6, f), MuxErrc::kBadDestination);
}

TEST_F(StreamTableTest, DataWithinWindowAndCreditReturn) {
  StreamTable exit(Role::kExit, Windows(1000, 100000));
  OpenOnExit(exit, 1);
  auto a = Feed(exit, DataFrame(1, 600));
  EXPECT_EQ(a.kind, Action::Kind::kData);
  EXPECT_EQ(a.data.size(), 600u);
  EXPECT_EQ(exit.buffered_bytes(1), 600u);
  EXPECT_EQ(exit.buffered_bytes(), 600u);
  // Stream credit is returned in batches of at least half a window.
  auto u = exit.Consumed(1, 100);
  ASSERT_TRUE(u.has_value());
  EXPECT_TRUE(u->empty());
  u = exit.Consumed(1, 300);
  ASSERT_TRUE(u.has_value());
  EXPECT_TRUE(u->empty());
  u = exit.Consumed(1, 150);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->stream_increment, 550u);
  EXPECT_EQ(u->tunnel_increment, 0u);
  EXPECT_EQ(exit.Consumed(1, 51).error().code, MuxErrc::kBadArgument);
  EXPECT_EQ(exit.Consumed(2, 1).error().code, MuxErrc::kNoSuchStream);
  // Window now: 1000 - 600 + 550 = 950 available.
  Feed(exit, DataFrame(1, 950));
  EXPECT_EQ(Violation(exit, DataFrame(1, 1)), MuxErrc::kFlowControl);
}

TEST_F(StreamTableTest, WindowExhaustionThenWindowUpdate) {
  StreamTable::Options o;
  o.stream_window = 1000;
  StreamTable client(Role::kClient, o);
  const uint32_t id = OpenOnClient(client);
  EXPECT_EQ(client.CanSend(id), 1000u);
  ASSERT_TRUE(client.Sent(id, 1000).has_value());
  EXPECT_EQ(client.CanSend(id), 0u);
  EXPECT_EQ(client.Sent(id, 1).error().code, MuxErrc::kBadArgument);
  auto a = Feed(client, WindowFrame(id, 250));
  EXPECT_EQ(a.kind, Action::Kind::kWindow);
  EXPECT_EQ(a.stream_id, id);
  EXPECT_EQ(client.CanSend(id), 250u);
  // Overflow past 2^31-1 is a violation.
  EXPECT_EQ(Violation(client, WindowFrame(id, 0x7FFFFFFF)), MuxErrc::kWindowOverflow);
}

TEST_F(StreamTableTest, TunnelWindowLimitsAllStreams) {
  const StreamTable::Options o = Windows(1000, 1500);
  StreamTable client(Role::kClient, o);
  const uint32_t a = OpenOnClient(client);
  const uint32_t b = OpenOnClient(client);
  ASSERT_TRUE(client.Sent(a, 1000).has_value());
  EXPECT_EQ(client.CanSend(b), 500u) << "bounded by the tunnel window";
  ASSERT_TRUE(client.Sent(b, 500).has_value());
  EXPECT_EQ(client.CanSend(b), 0u);
  auto act = Feed(client, WindowFrame(0, 400));
  EXPECT_EQ(act.kind, Action::Kind::kWindow);
  EXPECT_EQ(act.stream_id, 0u);
  EXPECT_EQ(client.CanSend(b), 400u);
  EXPECT_EQ(client.CanSend(a), 0u);

  // Receiving side: DATA beyond the tunnel window is a violation even within stream windows.
  StreamTable exit(Role::kExit, o);
  OpenOnExit(exit, 1);
  OpenOnExit(exit, 2);
  Feed(exit, DataFrame(1, 1000));
  Feed(exit, DataFrame(2, 500));
  EXPECT_EQ(Violation(exit, DataFrame(2, 1)), MuxErrc::kFlowControl);
}

TEST_F(StreamTableTest, TunnelCreditReturnedAsConsumed) {
  StreamTable exit(Role::kExit, Windows(1000, 2000));
  OpenOnExit(exit, 1);
  Feed(exit, DataFrame(1, 1000));
  auto u = exit.Consumed(1, 1000);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->stream_increment, 1000u);
  EXPECT_EQ(u->tunnel_increment, 1000u);
  EXPECT_EQ(exit.tunnel_receive_window(), 2000u);
}

TEST_F(StreamTableTest, FinHalfCloseFromClient) {
  StreamTable client(Role::kClient, {});
  StreamTable exit(Role::kExit, {});
  const uint32_t id = OpenOnClient(client);
  OpenOnExit(exit, id);
  // Client finishes sending; it can still receive.
  auto fin = client.Fin(id);
  ASSERT_TRUE(fin.has_value());
  EXPECT_FALSE(*fin);
  EXPECT_EQ(client.state(id), StreamState::kHalfClosedLocal);
  EXPECT_EQ(client.CanSend(id), 0u);
  EXPECT_EQ(client.Sent(id, 1).error().code, MuxErrc::kBadState);
  EXPECT_EQ(client.Fin(id).error().code, MuxErrc::kBadState);
  auto a = Feed(exit, Simple(FrameType::kFin, id));
  EXPECT_EQ(a.kind, Action::Kind::kRemoteFin);
  EXPECT_FALSE(a.stream_removed);
  EXPECT_EQ(exit.state(id), StreamState::kHalfClosedRemote);
  EXPECT_EQ(Violation(exit, DataFrame(id, 1)), MuxErrc::kUnexpectedFrame) << "DATA after FIN";
}

TEST_F(StreamTableTest, FinBothWaysRemovesOnceDrained) {
  StreamTable client(Role::kClient, {});
  const uint32_t id = OpenOnClient(client);
  // Exit sends data then FIN; the client's consumer has not drained it yet.
  Feed(client, DataFrame(id, 100));
  auto a = Feed(client, Simple(FrameType::kFin, id));
  EXPECT_EQ(a.kind, Action::Kind::kRemoteFin);
  EXPECT_EQ(client.state(id), StreamState::kHalfClosedRemote);
  EXPECT_EQ(Violation(client, Simple(FrameType::kFin, id)), MuxErrc::kUnexpectedFrame);
}

TEST_F(StreamTableTest, FinBothWaysLifecycle) {
  StreamTable client(Role::kClient, {});
  const uint32_t id = OpenOnClient(client);
  Feed(client, DataFrame(id, 100));
  Feed(client, Simple(FrameType::kFin, id));
  // The client may still send after the exit's FIN.
  EXPECT_GT(client.CanSend(id), 0u);
  ASSERT_TRUE(client.Sent(id, 10).has_value());
  auto fin = client.Fin(id);
  ASSERT_TRUE(fin.has_value());
  EXPECT_FALSE(*fin) << "100 bytes still buffered";
  EXPECT_EQ(client.state(id), StreamState::kClosed);
  auto u = client.Consumed(id, 100);
  ASSERT_TRUE(u.has_value());
  EXPECT_TRUE(u->stream_removed);
  EXPECT_EQ(u->stream_increment, 0u) << "no stream credit after the peer's FIN";
  EXPECT_EQ(client.state(id), std::nullopt);
  EXPECT_EQ(client.buffered_bytes(), 0u);
  EXPECT_EQ(client.CheckInvariants(), "");
  // Late WINDOW for the finished stream is dropped.
  EXPECT_EQ(Feed(client, WindowFrame(id, 10)).kind, Action::Kind::kNone);

  // Other order: local FIN first, remote FIN with nothing buffered removes at once.
  const uint32_t id2 = OpenOnClient(client);
  ASSERT_FALSE(*client.Fin(id2));
  auto a = Feed(client, Simple(FrameType::kFin, id2));
  EXPECT_EQ(a.kind, Action::Kind::kRemoteFin);
  EXPECT_TRUE(a.stream_removed);
  EXPECT_EQ(client.stream_count(), 0u);
}

TEST_F(StreamTableTest, ResetIsolatesOneStream) {
  StreamTable exit(Role::kExit, Windows(1000, 3000));
  for (uint32_t id = 1; id <= 3; ++id) OpenOnExit(exit, id);
  for (uint32_t id = 1; id <= 3; ++id) Feed(exit, DataFrame(id, 800));
  // Peer resets stream 2 with 800 bytes buffered: they are dropped and credited to the tunnel.
  auto a = Feed(exit, ResetFrame(2));
  EXPECT_EQ(a.kind, Action::Kind::kReset);
  EXPECT_TRUE(a.stream_removed);
  EXPECT_EQ(a.tunnel_credit, 800u);  // >= a quarter of 3000: returned at once
  EXPECT_EQ(exit.state(2), std::nullopt);
  EXPECT_EQ(exit.buffered_bytes(), 1600u);
  // Neighbours are untouched.
  for (uint32_t id : {1u, 3u}) {
    EXPECT_EQ(exit.state(id), StreamState::kOpen);
    EXPECT_EQ(exit.buffered_bytes(id), 800u);
    EXPECT_EQ(exit.CanSend(id), 1000u);
    Feed(exit, DataFrame(id, 200));
  }
  // Frames in flight for the reset stream are dropped; DATA is credited back to the tunnel.
  auto late = Feed(exit, DataFrame(2, 300));
  EXPECT_EQ(late.kind, Action::Kind::kNone);
  EXPECT_EQ(Feed(exit, Simple(FrameType::kFin, 2)).kind, Action::Kind::kNone);
  EXPECT_EQ(Feed(exit, ResetFrame(2)).kind, Action::Kind::kNone);

  // Local reset: the buffered bytes become credit.
  auto u = exit.Reset(1);
  ASSERT_TRUE(u.has_value());
  EXPECT_TRUE(u->stream_removed);
  EXPECT_EQ(exit.state(1), std::nullopt);
  EXPECT_EQ(exit.state(3), StreamState::kOpen);
  EXPECT_EQ(exit.Reset(1).error().code, MuxErrc::kNoSuchStream);
  EXPECT_EQ(exit.CheckInvariants(), "");
}

TEST_F(StreamTableTest, ClientResetWhileOpeningThenLateAnswer) {
  StreamTable client(Role::kClient, {});
  ASSERT_TRUE(client.Open().has_value());
  ASSERT_TRUE(client.Reset(1).has_value());
  // The exit's answer crossed the RESET: dropped, not a violation.
  EXPECT_EQ(Feed(client, Simple(FrameType::kOpenOk, 1)).kind, Action::Kind::kNone);
  EXPECT_EQ(Feed(client, OpenFail(1, OpenFailure::kRefused)).kind, Action::Kind::kNone);
  // The exit learns of it while still connecting; its Accept() then fails.
  StreamTable exit(Role::kExit, {});
  Feed(exit, OpenFrame(1));
  auto a = Feed(exit, ResetFrame(1));
  EXPECT_EQ(a.kind, Action::Kind::kReset);
  EXPECT_EQ(exit.Accept(1).error().code, MuxErrc::kNoSuchStream);
}

TEST_F(StreamTableTest, ThousandsOfConcurrentStreams) {
  StreamTable client(Role::kClient, {});
  StreamTable exit(Role::kExit, {});
  constexpr uint32_t kStreams = 4096;
  for (uint32_t i = 0; i < kStreams; ++i) {
    auto id = client.Open();
    ASSERT_TRUE(id.has_value());
    auto a = exit.OnFrame(OpenFrame(*id), /*now_ms=*/i * 10);  // within the default rate
    ASSERT_TRUE(a.has_value());
    ASSERT_EQ(a->kind, Action::Kind::kOpenRequested) << i;
    ASSERT_TRUE(exit.Accept(*id).has_value());
    ASSERT_EQ(client.OnFrame(Simple(FrameType::kOpenOk, *id), 0)->kind, Action::Kind::kOpened);
  }
  EXPECT_EQ(client.stream_count(), kStreams);
  EXPECT_EQ(exit.stream_count(), kStreams);
  EXPECT_EQ(client.Open().error().code, MuxErrc::kTooManyStreams);
  // Traffic on every stream within the tunnel window: 2000 bytes each = 8 MiB total, minus.
  auto payload = DataFrame(1, 1000);
  for (uint32_t id = 1; id <= kStreams; ++id) {
    ASSERT_TRUE(client.Sent(id, 1000).has_value());
    payload.stream_id = id;
    ASSERT_EQ(exit.OnFrame(payload, 0)->kind, Action::Kind::kData);
  }
  EXPECT_EQ(exit.buffered_bytes(), kStreams * 1000u);
  for (uint32_t id = 1; id <= kStreams; ++id) ASSERT_TRUE(exit.Consumed(id, 1000).has_value());
  EXPECT_EQ(exit.buffered_bytes(), 0u);
  // Every other stream resets; the rest finish cleanly both ways.
  for (uint32_t id = 1; id <= kStreams; ++id) {
    if (id % 2 == 0) {
      ASSERT_TRUE(client.Reset(id).has_value());
      ASSERT_EQ(exit.OnFrame(ResetFrame(id), 0)->kind, Action::Kind::kReset);
    } else {
      ASSERT_FALSE(*client.Fin(id));
      ASSERT_EQ(exit.OnFrame(Simple(FrameType::kFin, id), 0)->kind, Action::Kind::kRemoteFin);
      ASSERT_TRUE(*exit.Fin(id));
      auto a = client.OnFrame(Simple(FrameType::kFin, id), 0);
      ASSERT_TRUE(a->stream_removed);
    }
  }
  EXPECT_EQ(client.stream_count(), 0u);
  EXPECT_EQ(exit.stream_count(), 0u);
  EXPECT_EQ(client.CheckInvariants(), "");
  EXPECT_EQ(exit.CheckInvariants(), "");
}

TEST_F(StreamTableTest, MaxStreamsEnforcedOnExit) {
  StreamTable::Options o;
  o.max_streams = 3;
  o.new_streams_burst = 0;  // no rate limit here
  StreamTable exit(Role::kExit, o);
  for (uint32_t id = 1; id <= 3; ++id) Feed(exit, OpenFrame(id));
  auto a = Feed(exit, OpenFrame(4));
  EXPECT_EQ(a.kind, Action::Kind::kRefuseOpen);
  EXPECT_EQ(a.failure, OpenFailure::kGeneral);
  EXPECT_EQ(exit.stream_count(), 3u);
  // The refused id is used: a RESET for it is dropped, a reuse is a violation.
  EXPECT_EQ(Feed(exit, ResetFrame(4)).kind, Action::Kind::kNone);
  ASSERT_TRUE(exit.Refuse(1).has_value());
  EXPECT_EQ(Feed(exit, OpenFrame(5)).kind, Action::Kind::kOpenRequested);
}

TEST_F(StreamTableTest, OpenRateLimited) {
  StreamTable::Options o;
  o.new_streams_per_second = 10;
  o.new_streams_burst = 5;
  StreamTable exit(Role::kExit, o);
  uint32_t id = 0;
  uint64_t now = 1'000'000;
  int accepted = 0;
  for (int i = 0; i < 8; ++i) {
    auto a = Feed(exit, OpenFrame(++id), now);
    if (a.kind == Action::Kind::kOpenRequested) {
      ++accepted;
      ASSERT_TRUE(exit.Refuse(id).has_value());
    } else {
      EXPECT_EQ(a.kind, Action::Kind::kRefuseOpen);
    }
  }
  EXPECT_EQ(accepted, 5) << "the burst";
  // 100 ms later one more token (10 per second).
  now += 99;
  EXPECT_EQ(Feed(exit, OpenFrame(++id), now).kind, Action::Kind::kRefuseOpen);
  now += 1;
  EXPECT_EQ(Feed(exit, OpenFrame(++id), now).kind, Action::Kind::kOpenRequested);
  EXPECT_EQ(Feed(exit, OpenFrame(++id), now).kind, Action::Kind::kRefuseOpen);
  // A clock going backwards adds nothing.
  EXPECT_EQ(Feed(exit, OpenFrame(++id), now - 5000).kind, Action::Kind::kRefuseOpen);
  // A long pause refills only up to the burst.
  now += 3'600'000;
  accepted = 0;
  for (int i = 0; i < 10; ++i) {
    if (Feed(exit, OpenFrame(++id), now).kind == Action::Kind::kOpenRequested) ++accepted;
  }
  EXPECT_EQ(accepted, 5);
}

TEST_F(StreamTableTest, MemoryBoundedByWindows) {
  // A peer that never sees credit can make us buffer at most the tunnel window in total and
  // the stream window per stream; one byte more ends the tunnel.
  const StreamTable::Options o = Windows(4096, 10000);
  StreamTable exit(Role::kExit, o);
  for (uint32_t id = 1; id <= 10; ++id) OpenOnExit(exit, id);
  Feed(exit, DataFrame(1, 4096));
  EXPECT_EQ(Violation(exit, DataFrame(1, 1)), MuxErrc::kFlowControl);
  StreamTable exit2(Role::kExit, o);
  for (uint32_t id = 1; id <= 10; ++id) OpenOnExit(exit2, id);
  size_t total = 0;
  for (uint32_t id = 1; total + 1000 <= o.tunnel_window; ++id) {
    Feed(exit2, DataFrame(id, 1000));
    total += 1000;
  }
  EXPECT_EQ(exit2.buffered_bytes(), o.tunnel_window);
  EXPECT_EQ(Violation(exit2, DataFrame(10, 1)), MuxErrc::kFlowControl);
}

TEST_F(StreamTableTest, PingControlCloseActions) {
  StreamTable t(Role::kClient, {});
  Frame ping = Simple(FrameType::kPing, 0);
  ping.ping_value = 42;
  auto a = Feed(t, ping);
  EXPECT_EQ(a.kind, Action::Kind::kPing);
  EXPECT_EQ(a.ping_value, 42u);
  ping.type = FrameType::kPong;
  EXPECT_EQ(Feed(t, ping).kind, Action::Kind::kPong);
  const std::array<uint8_t, 3> msg = {1, 2, 3};
  Frame c = Simple(FrameType::kControl, 0);
  c.payload = msg;
  a = Feed(t, c);
  EXPECT_EQ(a.kind, Action::Kind::kControl);
  EXPECT_EQ(a.data.size(), 3u);
  Frame cl = Simple(FrameType::kClose, 0);
  cl.close_reason = CloseReason::kShutdown;
  a = Feed(t, cl);
  EXPECT_EQ(a.kind, Action::Kind::kClose);
  EXPECT_EQ(a.close_reason, CloseReason::kShutdown);
}

TEST_F(StreamTableTest, PacketModeExitGrants) {
  StreamTable exit(Role::kExit, {});
  EXPECT_FALSE(exit.PacketModeReady());
  EXPECT_EQ(exit.AnswerPacketSetup(true).error().code, MuxErrc::kBadState) << "nothing asked";
  auto a = Feed(exit, SetupFrame(Setup(true, 1500)));
  EXPECT_EQ(a.kind, Action::Kind::kPacketSetup);
  EXPECT_EQ(a.packet_setup, Setup(true, 1500));
  EXPECT_FALSE(exit.PacketModeReady()) << "not before it answered";
  ASSERT_TRUE(exit.AnswerPacketSetup(true).has_value());
  EXPECT_TRUE(exit.PacketModeReady());
  EXPECT_EQ(exit.AnswerPacketSetup(true).error().code, MuxErrc::kBadState) << "answered once";
  EXPECT_EQ(exit.AnswerPacketSetup(false).error().code, MuxErrc::kBadState);
  EXPECT_EQ(exit.StartPacketSetup(Setup()).error().code, MuxErrc::kBadState) << "client only";
  a = Feed(exit, PacketFrame(1420));
  EXPECT_EQ(a.kind, Action::Kind::kPacket);
  EXPECT_EQ(a.data.size(), 1420u);
  EXPECT_EQ(a.stream_id, 0u);
  EXPECT_TRUE(exit.PacketModeReady());
}

TEST_F(StreamTableTest, PacketModeClientGranted) {
  StreamTable client(Role::kClient, {});
  EXPECT_EQ(client.AnswerPacketSetup(true).error().code, MuxErrc::kBadState) << "exit only";
  ASSERT_TRUE(client.StartPacketSetup(Setup()).has_value());
  EXPECT_FALSE(client.PacketModeReady());
  EXPECT_EQ(client.StartPacketSetup(Setup()).error().code, MuxErrc::kBadState) << "once";
  auto a = Feed(client, ReadyFrame());
  EXPECT_EQ(a.kind, Action::Kind::kPacketReady);
  EXPECT_EQ(a.packet_ready, Grant());
  EXPECT_TRUE(client.PacketModeReady());
  EXPECT_EQ(client.StartPacketSetup(Setup()).error().code, MuxErrc::kBadState);
  a = Feed(client, PacketFrame(1));
  EXPECT_EQ(a.kind, Action::Kind::kPacket);
  EXPECT_EQ(a.data.size(), 1u);
}

TEST_F(StreamTableTest, PacketModeGrantWithoutUdp) {
  // Port 0: no UDP, whatever the client asked; then the MTU is bounded only by the frame.
  StreamTable client(Role::kClient, {});
  ASSERT_TRUE(client.StartPacketSetup(Setup(true, 1280)).has_value());
  EXPECT_EQ(Feed(client, ReadyFrame(Grant(0, kMaxPacketMtu))).kind, Action::Kind::kPacketReady);
  StreamTable client2(Role::kClient, {});
  ASSERT_TRUE(client2.StartPacketSetup(Setup(false)).has_value());
  EXPECT_EQ(Feed(client2, ReadyFrame(Grant(0))).kind, Action::Kind::kPacketReady);
  // With UDP, the MTU may be the client's max datagram plaintext, not more.
  StreamTable client3(Role::kClient, {});
  ASSERT_TRUE(client3.StartPacketSetup(Setup(true, 1400)).has_value());
  EXPECT_EQ(Feed(client3, ReadyFrame(Grant(4000, 1400))).kind, Action::Kind::kPacketReady);
}

TEST_F(StreamTableTest, PacketModeRefused) {
  StreamTable exit(Role::kExit, {});
  Feed(exit, SetupFrame());
  ASSERT_TRUE(exit.AnswerPacketSetup(false).has_value());
  EXPECT_FALSE(exit.PacketModeReady());
  EXPECT_EQ(exit.AnswerPacketSetup(true).error().code, MuxErrc::kBadState);
  EXPECT_EQ(Violation(exit, PacketFrame(100)), MuxErrc::kUnexpectedFrame) << "PACKET after FAIL";

  StreamTable client(Role::kClient, {});
  ASSERT_TRUE(client.StartPacketSetup(Setup()).has_value());
  const std::string text = "pool empty";
  Frame fail = FailFrame(PacketFailure::kNoAddress);
  fail.payload = AsBytes(text);
  auto a = Feed(client, fail);
  EXPECT_EQ(a.kind, Action::Kind::kPacketFailed);
  EXPECT_EQ(a.packet_failure, PacketFailure::kNoAddress);
  EXPECT_EQ(std::string(a.data.begin(), a.data.end()), text);
  EXPECT_FALSE(client.PacketModeReady());
  EXPECT_EQ(client.StartPacketSetup(Setup()).error().code, MuxErrc::kBadState)
      << "at most once per tunnel";
  // An unknown reason is read as refused.
  StreamTable client2(Role::kClient, {});
  ASSERT_TRUE(client2.StartPacketSetup(Setup()).has_value());
  a = Feed(client2, FailFrame(static_cast<PacketFailure>(77)));
  EXPECT_EQ(a.packet_failure, PacketFailure::kRefused);
  // Streams go on after a refusal.
  const uint32_t id = OpenOnClient(client);
  EXPECT_EQ(Feed(client, DataFrame(id, 10)).kind, Action::Kind::kData);
}

TEST_F(StreamTableTest, PacketModeExitViolations) {
  // Each case: a fresh exit table, optional steps before, then the offending frame.
  struct Case {
    const char* what;
    int setups_before;  // PACKET_SETUPs received before
    int answer;         // -1 none, 0 FAIL, 1 READY
    Frame frame;
  };
  const Case cases[] = {
      {"READY from the client", 0, -1, ReadyFrame()},
      {"FAIL from the client", 0, -1, FailFrame(PacketFailure::kRefused)},
      {"READY from the client after a setup", 1, 1, ReadyFrame()},
      {"second PACKET_SETUP, unanswered", 1, -1, SetupFrame()},
      {"second PACKET_SETUP after READY", 1, 1, SetupFrame()},
      {"second PACKET_SETUP after FAIL", 1, 0, SetupFrame()},
      {"PACKET without a setup", 0, -1, PacketFrame(20)},
      {"PACKET before the answer", 1, -1, PacketFrame(20)},
      {"PACKET after FAIL", 1, 0, PacketFrame(20)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    StreamTable exit(Role::kExit, {});
    for (int i = 0; i < c.setups_before; ++i) Feed(exit, SetupFrame());
    if (c.answer >= 0) {
      ASSERT_TRUE(exit.AnswerPacketSetup(c.answer == 1).has_value());
    }
    EXPECT_EQ(Violation(exit, c.frame), MuxErrc::kUnexpectedFrame);
  }
}

TEST_F(StreamTableTest, PacketModeClientViolations) {
  struct Case {
    const char* what;
    bool asked;
    std::vector<Frame> before;  // accepted first
    Frame frame;
    PacketSetupFields setup = Setup();
  };
  const Case cases[] = {
      {"PACKET_SETUP from the exit", false, {}, SetupFrame()},
      {"PACKET_SETUP from the exit after asking", true, {}, SetupFrame()},
      {"READY not asked for", false, {}, ReadyFrame()},
      {"FAIL not asked for", false, {}, FailFrame(PacketFailure::kNotServed)},
      {"second READY", true, {ReadyFrame()}, ReadyFrame()},
      {"FAIL after READY", true, {ReadyFrame()}, FailFrame(PacketFailure::kLimit)},
      {"READY after FAIL", true, {FailFrame(PacketFailure::kLimit)}, ReadyFrame()},
      {"second FAIL", true, {FailFrame(PacketFailure::kLimit)}, FailFrame(PacketFailure::kLimit)},
      {"PACKET without asking", false, {}, PacketFrame(1)},
      {"PACKET before READY", true, {}, PacketFrame(1)},
      {"PACKET after FAIL", true, {FailFrame(PacketFailure::kRefused)}, PacketFrame(1)},
      {"UDP granted, not asked for", true, {}, ReadyFrame(Grant(51820)), Setup(false)},
      {"UDP MTU above the max datagram", true, {}, ReadyFrame(Grant(51820, 1421)), Setup(true)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    StreamTable client(Role::kClient, {});
    if (c.asked) {
      ASSERT_TRUE(client.StartPacketSetup(c.setup).has_value());
    }
    for (const auto& f : c.before) Feed(client, f);
    EXPECT_EQ(Violation(client, c.frame), MuxErrc::kUnexpectedFrame);
  }
}

TEST_F(StreamTableTest, PacketsAreNotFlowControlled) {
  // A tunnel whose window the peer used up entirely still takes packets, and packets use none.
  const StreamTable::Options o = Windows(4096, 4096);
  StreamTable exit(Role::kExit, o);
  OpenOnExit(exit, 1);
  Feed(exit, DataFrame(1, 4096));
  EXPECT_EQ(exit.tunnel_receive_window(), 0u);
  Feed(exit, SetupFrame());
  ASSERT_TRUE(exit.AnswerPacketSetup(true).has_value());
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(Feed(exit, PacketFrame(kMaxFramePayload)).kind, Action::Kind::kPacket);
  EXPECT_EQ(exit.tunnel_receive_window(), 0u);
  EXPECT_EQ(exit.buffered_bytes(), 4096u) << "packets are not buffered bytes";
  EXPECT_EQ(exit.tunnel_send_window(), 4096u);
  EXPECT_EQ(exit.CheckInvariants(), "");
}

// Two tables driven against each other with random local actions; every frame goes through the
// real codec. Invariants hold throughout and no violation is ever reported between honest peers.
// Packet mode starts part way through and PACKET frames then interleave with the streams.
TEST_F(StreamTableTest, RandomHonestPeersNeverViolate) {
  StreamTable::Options o;
  o.stream_window = 3000;
  o.tunnel_window = 20000;
  o.max_streams = 64;
  o.new_streams_burst = 0;
  StreamTable client(Role::kClient, o);
  StreamTable exit(Role::kExit, o);
  std::mt19937 rng(12345);
  std::vector<uint8_t> to_exit, to_client;  // frames in flight
  std::vector<uint8_t> scratch(kMaxRecordPlaintext);
  size_t data_bytes = 0, fins = 0, resets = 0, opened = 0, refused = 0, packets = 0;
  std::mt19937 packet_rng(777);  // its own generator: the stream walk stays as it was
  auto send = [&](std::vector<uint8_t>& q, auto&& write) {
    FrameWriter w(scratch);
    ASSERT_TRUE(write(w).has_value());
    q.insert(q.end(), w.written().begin(), w.written().end());
  };
  auto deliver = [&](std::vector<uint8_t>& q, StreamTable& t, std::vector<uint8_t>& back) {
    FrameReader r(q);
    while (!r.done()) {
      auto f = r.Next();
      ASSERT_TRUE(f.has_value()) << f.error().message;
      auto a = t.OnFrame(*f, 0);
      ASSERT_TRUE(a.has_value()) << a.error().message;
      ASSERT_EQ(t.CheckInvariants(), "");
      if (a->kind == Action::Kind::kData) data_bytes += a->data.size();
      if (a->kind == Action::Kind::kRemoteFin) ++fins;
      if (a->kind == Action::Kind::kReset) ++resets;
      if (a->kind == Action::Kind::kOpened) ++opened;
      if (a->kind == Action::Kind::kOpenFailed) ++refused;
      if (a->kind == Action::Kind::kPacket) ++packets;
      if (a->tunnel_credit)
        send(back, [&](FrameWriter& w) { return w.Window(0, a->tunnel_credit); });
      if (a->kind == Action::Kind::kOpenRequested) {
        if (rng() % 4 == 0) {
          ASSERT_TRUE(t.Refuse(a->stream_id).has_value());
          send(back,
               [&](FrameWriter& w) { return w.OpenFail(a->stream_id, OpenFailure::kRefused); });
        } else {
          ASSERT_TRUE(t.Accept(a->stream_id).has_value());
          send(back, [&](FrameWriter& w) { return w.OpenOk(a->stream_id); });
        }
      } else if (a->kind == Action::Kind::kRefuseOpen) {
        send(back, [&](FrameWriter& w) { return w.OpenFail(a->stream_id, a->failure); });
      } else if (a->kind == Action::Kind::kPacketSetup) {
        ASSERT_TRUE(t.AnswerPacketSetup(true).has_value());
        PacketReadyFields r;
        r.receiver_index = 9;
        r.udp_port = 51820;
        r.mtu = a->packet_setup.max_datagram_plaintext;
        send(back, [&](FrameWriter& w) { return w.PacketReady(r); });
      }
    }
    q.clear();
  };
  // Ids each side may still have (pruned as streams leave the tables).
  std::vector<uint32_t> ids;
  auto act = [&](StreamTable& t, std::vector<uint8_t>& out) {
    std::erase_if(ids, [&](uint32_t i) { return !client.state(i) && !exit.state(i); });
    if (ids.empty()) return;
    const uint32_t id = ids[rng() % ids.size()];
    if (!t.state(id)) return;
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2: {
        size_t n = std::min<size_t>(t.CanSend(id), 1 + rng() % 2500);
        n = std::min(n, kMaxFramePayload);
        if (n == 0) return;
        ASSERT_TRUE(t.Sent(id, n).has_value());
        std::vector<uint8_t> data(n, 7);
        send(out, [&](FrameWriter& w) { return w.Data(id, data); });
        return;
      }
      case 3:
      case 4:
      case 5: {
        const size_t b = t.buffered_bytes(id);
        if (b == 0) return;
        auto u = t.Consumed(id, 1 + rng() % b);
        ASSERT_TRUE(u.has_value());
        if (u->stream_increment)
          send(out, [&](FrameWriter& w) { return w.Window(id, u->stream_increment); });
        if (u->tunnel_increment)
          send(out, [&](FrameWriter& w) { return w.Window(0, u->tunnel_increment); });
        return;
      }
      case 6:
      case 7:
        if (t.Fin(id).has_value()) send(out, [&](FrameWriter& w) { return w.Fin(id); });
        return;
      case 8:
        if (rng() % 4 == 0) {
          auto u = t.Reset(id);
          ASSERT_TRUE(u.has_value());
          send(out, [&](FrameWriter& w) { return w.Reset(id, ResetCode::kCancel); });
          if (u->tunnel_increment)
            send(out, [&](FrameWriter& w) { return w.Window(0, u->tunnel_increment); });
        }
        return;
      default:
        return;
    }
  };
  const std::vector<uint8_t> packet(1400, 0x45);
  for (int round = 0; round < 3000; ++round) {
    if (round == 100) {
      const PacketSetupFields setup{
          .receiver_index = 7, .max_datagram_plaintext = 1420, .wants_udp = true};
      ASSERT_TRUE(client.StartPacketSetup(setup).has_value());
      send(to_exit, [&](FrameWriter& w) { return w.PacketSetup(setup); });
    }
    for (auto [t, q] : {std::pair{&client, &to_exit}, std::pair{&exit, &to_client}}) {
      if (t->PacketModeReady() && packet_rng() % 2 == 0) {
        send(*q, [&](FrameWriter& w) {
          return w.Packet(std::span(packet).first(1 + packet_rng() % 1400));
        });
      }
    }
    if (rng() % 3 == 0) {
      auto id = client.Open();
      if (id) {
        ids.push_back(*id);
        send(to_exit, [&](FrameWriter& w) {
          return w.Open(*id, Destination::Ipv4({1, 1, 1, 1}, 443));
        });
      }
    }
    for (int k = 0; k < 4; ++k) {
      act(client, to_exit);
      act(exit, to_client);
    }
    // Deliver in random order of direction, always whole queues (TCP keeps order).
    if (rng() % 2) {
      deliver(to_exit, exit, to_client);
      deliver(to_client, client, to_exit);
    } else {
      deliver(to_client, client, to_exit);
      deliver(to_exit, exit, to_client);
    }
    ASSERT_EQ(client.CheckInvariants(), "");
    ASSERT_EQ(exit.CheckInvariants(), "");
    if (HasFatalFailure()) return;
  }
  // The walk did exercise every path.
  EXPECT_GT(data_bytes, 500'000u);
  EXPECT_GT(fins, 300u);
  EXPECT_GT(resets, 50u);
  EXPECT_GT(opened, 200u);
  EXPECT_GT(refused, 50u);
  EXPECT_TRUE(client.PacketModeReady() && exit.PacketModeReady());
  EXPECT_GT(packets, 2000u);
}

}  // namespace
}  // namespace dvpn::tunnel
