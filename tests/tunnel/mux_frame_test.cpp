// Mux frame codec: round trips of every type, several frames per record, and typed errors for
// truncated, oversized and garbage input; the packet-mode frames' field rules and the example
// frames docs/tunnel.md prints.
#include "tunnel/mux_frame.h"

#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "tests/tunnel/doc_vectors.h"
#include "tunnel/datagram.h"

namespace dvpn::tunnel {
namespace {

std::vector<uint8_t> Bytes(std::initializer_list<int> v) {
  std::vector<uint8_t> out;
  for (int b : v) out.push_back(static_cast<uint8_t>(b));
  return out;
}

Frame DecodeOne(ByteSpan in) {
  auto d = DecodeFrame(in);
  EXPECT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->size, in.size());
  return d->frame;
}

FrameErrc DecodeError(ByteSpan in) {
  auto d = DecodeFrame(in);
  EXPECT_FALSE(d.has_value());
  return d ? FrameErrc{} : d.error().code;
}

// The hex of what `write(FrameWriter&)` appends to an empty buffer (it must succeed).
template <class Write>
std::string WrittenHex(Write&& write) {
  std::vector<uint8_t> buf(kMaxRecordPlaintext);
  FrameWriter w(buf);
  EXPECT_TRUE(write(w).has_value());
  return ToHex(w.written());
}

// A frame's bytes: header (type, stream id, payload length) and `payload`.
std::vector<uint8_t> RawFrame(FrameType type, uint32_t stream_id, std::vector<uint8_t> payload) {
  std::vector<uint8_t> out(kFrameHeaderSize + payload.size());
  out[0] = static_cast<uint8_t>(type);
  for (int i = 0; i < 4; ++i) out[1 + i] = static_cast<uint8_t>(stream_id >> (24 - 8 * i));
  out[5] = static_cast<uint8_t>(payload.size() >> 8);
  out[6] = static_cast<uint8_t>(payload.size());
  std::copy(payload.begin(), payload.end(), out.begin() + kFrameHeaderSize);
  return out;
}

// The documented example grants (docs/tunnel.md, "Packet mode").
PacketSetupFields ExampleSetup() {
  return {.receiver_index = 0x1a2b3c4d, .max_datagram_plaintext = 1420, .wants_udp = true};
}
PacketReadyFields ExampleReady() {
  PacketReadyFields r;
  r.receiver_index = 0x5e6f7081;
  r.udp_port = 51820;
  r.mtu = 1420;
  r.ipv4 = {10, 231, 0, 2};
  r.ipv4_prefix = 16;
  r.ipv6 = {0xfd, 0x12, 0x34, 0x56, 0x78, 0x9a, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2};
  r.ipv6_prefix = 64;
  return r;
}
// PACKET_SETUP / PACKET_READY payloads as bytes, for hand-made invalid variants.
std::vector<uint8_t> SetupPayload(uint8_t version, uint32_t index, uint16_t max, uint8_t flags) {
  return {version,
          static_cast<uint8_t>(index >> 24),
          static_cast<uint8_t>(index >> 16),
          static_cast<uint8_t>(index >> 8),
          static_cast<uint8_t>(index),
          static_cast<uint8_t>(max >> 8),
          static_cast<uint8_t>(max),
          flags};
}
std::vector<uint8_t> ReadyPayload(const PacketReadyFields& r) {
  std::vector<uint8_t> p = {static_cast<uint8_t>(r.receiver_index >> 24),
                            static_cast<uint8_t>(r.receiver_index >> 16),
                            static_cast<uint8_t>(r.receiver_index >> 8),
                            static_cast<uint8_t>(r.receiver_index),
                            static_cast<uint8_t>(r.udp_port >> 8),
                            static_cast<uint8_t>(r.udp_port),
                            static_cast<uint8_t>(r.mtu >> 8),
                            static_cast<uint8_t>(r.mtu)};
  p.insert(p.end(), r.ipv4.begin(), r.ipv4.end());
  p.push_back(r.ipv4_prefix);
  p.insert(p.end(), r.ipv6.begin(), r.ipv6.end());
  p.push_back(r.ipv6_prefix);
  return p;
}

// Variants of the example grant that break one field rule each (kBadField to decode or write).
std::vector<std::pair<const char*, PacketReadyFields>> InvalidReadyVariants() {
  std::vector<std::pair<const char*, PacketReadyFields>> out;
  auto add = [&](const char* what, auto&& change) {
    PacketReadyFields r = ExampleReady();
    change(r);
    out.emplace_back(what, r);
  };
  add("mtu below 1280", [](PacketReadyFields& r) { r.mtu = kMinPacketMtu - 1; });
  add("mtu above a frame", [](PacketReadyFields& r) { r.mtu = kMaxPacketMtu + 1; });
  add("mtu 65535", [](PacketReadyFields& r) { r.mtu = 0xFFFF; });
  add("IPv4 prefix 33", [](PacketReadyFields& r) { r.ipv4_prefix = 33; });
  add("IPv6 prefix 129", [](PacketReadyFields& r) { r.ipv6_prefix = 129; });
  add("index without a port", [](PacketReadyFields& r) { r.udp_port = 0; });
  add("port without an index", [](PacketReadyFields& r) { r.receiver_index = 0; });
  return out;
}

TEST(DestinationTest, EncodeDecodeEveryKind) {
  std::array<uint8_t, 16> v6{};
  v6[0] = 0x20;
  v6[1] = 0x01;
  v6[15] = 1;
  const Destination cases[] = {
      Destination::Ipv4({1, 2, 3, 4}, 80),
      Destination::Ipv6(v6, 443),
      Destination::Domain("example.com", 8443),
      Destination::Domain(std::string(255, 'a'), 65535),
  };
  for (const auto& d : cases) {
    std::array<uint8_t, kMaxDestinationEncoding> buf{};
    auto n = EncodeDestination(d, buf);
    ASSERT_TRUE(n.has_value());
    EXPECT_EQ(*n, EncodedDestinationSize(d));
    auto back = DecodeDestination(std::span(buf).first(*n));
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(*back, d);
  }
  EXPECT_EQ(ToString(cases[0]), "1.2.3.4:80");
  EXPECT_EQ(ToString(cases[1]), "[2001:0:0:0:0:0:0:1]:443");
  EXPECT_EQ(ToString(cases[2]), "example.com:8443");
}

TEST(DestinationTest, ExactBytes) {
  std::array<uint8_t, 32> buf{};
  auto n = EncodeDestination(Destination::Domain("ab", 0x1234), buf);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + *n),
            Bytes({3, 2, 'a', 'b', 0x12, 0x34}));
  n = EncodeDestination(Destination::Ipv4({10, 0, 0, 1}, 80), buf);
  EXPECT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + *n), Bytes({1, 10, 0, 0, 1, 0, 80}));
}

TEST(DestinationTest, Errors) {
  std::array<uint8_t, 300> buf{};
  EXPECT_EQ(EncodeDestination(Destination::Domain("", 1), buf).error().code,
            DestinationErrc::kBadDomain);
  EXPECT_EQ(EncodeDestination(Destination::Domain(std::string(256, 'a'), 1), buf).error().code,
            DestinationErrc::kBadDomain);
  EXPECT_EQ(EncodeDestination(Destination::Domain(std::string("a\0b", 3), 1), buf).error().code,
            DestinationErrc::kBadDomain);
  EXPECT_EQ(
      EncodeDestination(Destination::Ipv4({1, 2, 3, 4}, 1), std::span(buf).first(6)).error().code,
      DestinationErrc::kBufferTooSmall);
  EXPECT_EQ(DecodeDestination({}).error().code, DestinationErrc::kTruncated);
  auto b = Bytes({2, 1, 2, 3, 4, 0, 80});
  EXPECT_EQ(DecodeDestination(b).error().code, DestinationErrc::kBadType);
  b = Bytes({1, 1, 2, 3, 4, 0});
  EXPECT_EQ(DecodeDestination(b).error().code, DestinationErrc::kTruncated);
  b = Bytes({1, 1, 2, 3, 4, 0, 80, 9});
  EXPECT_EQ(DecodeDestination(b).error().code, DestinationErrc::kTrailingBytes);
  b = Bytes({3, 0, 0, 80});
  EXPECT_EQ(DecodeDestination(b).error().code, DestinationErrc::kBadDomain);
  b = Bytes({3, 3, 'a', 0, 'b', 0, 80});
  EXPECT_EQ(DecodeDestination(b).error().code, DestinationErrc::kBadDomain);
  b = Bytes({3, 5, 'a', 'b'});
  EXPECT_EQ(DecodeDestination(b).error().code, DestinationErrc::kTruncated);
}

TEST(DestinationTest, OpenFailureCodesAreSocksReplies) {
  EXPECT_EQ(static_cast<uint8_t>(OpenFailure::kGeneral), 1);
  EXPECT_EQ(static_cast<uint8_t>(OpenFailure::kNotAllowed), 2);
  EXPECT_EQ(static_cast<uint8_t>(OpenFailure::kNetworkUnreachable), 3);
  EXPECT_EQ(static_cast<uint8_t>(OpenFailure::kHostUnreachable), 4);
  EXPECT_EQ(static_cast<uint8_t>(OpenFailure::kRefused), 5);
  EXPECT_EQ(static_cast<uint8_t>(OpenFailure::kTtlExpired), 6);
  EXPECT_FALSE(IsValidOpenFailure(0));
  EXPECT_TRUE(IsValidOpenFailure(8));
  EXPECT_FALSE(IsValidOpenFailure(9));
}

TEST(MuxFrameTest, ExactLayout) {
  std::array<uint8_t, 64> buf{};
  FrameWriter w(buf);
  ASSERT_TRUE(w.Window(0x01020304, 0x0A0B0C0D).has_value());
  EXPECT_EQ(std::vector<uint8_t>(w.written().begin(), w.written().end()),
            Bytes({5, 1, 2, 3, 4, 0, 4, 0x0A, 0x0B, 0x0C, 0x0D}));
  FrameWriter w2(buf);
  ASSERT_TRUE(w2.Ping(0x1122334455667788).has_value());
  EXPECT_EQ(std::vector<uint8_t>(w2.written().begin(), w2.written().end()),
            Bytes({8, 0, 0, 0, 0, 0, 8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}));
}

TEST(MuxFrameTest, DocumentedOpenExample) {
  // docs/tunnel.md, "Destination": OPEN of stream 1 to example.com:443.
  std::array<uint8_t, 32> buf{};
  FrameWriter w(buf);
  ASSERT_TRUE(w.Open(1, Destination::Domain("example.com", 443)).has_value());
  EXPECT_EQ(ToHex(w.written()),
            "01000000010"
            "00f"
            "030b6578616d706c652e636f6d01bb");
}

TEST(MuxFrameTest, StreamFramesBytesUnchanged) {
  // The eleven frame types of the stream layer, byte for byte as before packet mode.
  EXPECT_EQ(WrittenHex([](FrameWriter& w) {
              return w.Open(2, Destination::Ipv4({1, 2, 3, 4}, 80));
            }),
            "0100000002000701010203040050");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.OpenOk(2); }), "02000000020000");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.OpenFail(2, OpenFailure::kRefused); }),
            "0300000002000105");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Data(2, std::vector<uint8_t>{0xAA}); }),
            "04000000020001aa");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Window(0, 1); }), "0500000000000400000001");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Fin(2); }), "06000000020000");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Reset(2, ResetCode::kTimeout); }),
            "0700000002000102");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Ping(3); }), "080000000000080000000000000003");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Pong(3); }), "090000000000080000000000000003");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Control(std::vector<uint8_t>{7}); }),
            "0a00000000000107");
  EXPECT_EQ(WrittenHex([](FrameWriter& w) { return w.Close(CloseReason::kShutdown, "x"); }),
            "0b0000000000020478");
}

TEST(MuxFrameTest, RoundTripEveryType) {
  std::vector<uint8_t> buf(kMaxRecordPlaintext);
  const std::vector<uint8_t> data(kMaxFramePayload, 0xAB);
  const std::vector<uint8_t> control = {1, 2, 3, 4, 5};
  const std::string text = "bye — closing";  // UTF-8 with a multi-byte character

  struct Case {
    std::function<Result<void, FrameErrc>(FrameWriter&)> write;
    std::function<void(const Frame&)> check;
  };
  const std::vector<Case> cases = {
      {[](FrameWriter& w) { return w.Open(7, Destination::Domain("example.org", 443)); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kOpen);
         EXPECT_EQ(f.stream_id, 7u);
         auto d = DecodeDestination(f.payload);
         ASSERT_TRUE(d.has_value());
         EXPECT_EQ(*d, Destination::Domain("example.org", 443));
       }},
      {[](FrameWriter& w) { return w.OpenOk(9); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kOpenOk);
         EXPECT_EQ(f.stream_id, 9u);
         EXPECT_TRUE(f.payload.empty());
       }},
      {[](FrameWriter& w) { return w.OpenFail(9, OpenFailure::kTtlExpired); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kOpenFail);
         EXPECT_EQ(f.failure, OpenFailure::kTtlExpired);
       }},
      {[&](FrameWriter& w) { return w.Data(0xFFFFFFFF, data); },
       [&](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kData);
         EXPECT_EQ(f.stream_id, 0xFFFFFFFFu);
         EXPECT_TRUE(std::equal(f.payload.begin(), f.payload.end(), data.begin(), data.end()));
       }},
      {[](FrameWriter& w) { return w.Window(3, 0xFFFFFFFF); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kWindow);
         EXPECT_EQ(f.stream_id, 3u);
         EXPECT_EQ(f.window_increment, 0xFFFFFFFFu);
       }},
      {[](FrameWriter& w) { return w.Window(0, 65536); },
       [](const Frame& f) {
         EXPECT_EQ(f.stream_id, 0u);
         EXPECT_EQ(f.window_increment, 65536u);
       }},
      {[](FrameWriter& w) { return w.Fin(4); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kFin);
         EXPECT_EQ(f.stream_id, 4u);
       }},
      {[](FrameWriter& w) { return w.Reset(4, ResetCode::kConnectionLost); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kReset);
         EXPECT_EQ(f.reset_code, ResetCode::kConnectionLost);
       }},
      {[](FrameWriter& w) { return w.Ping(0xDEADBEEFCAFEF00D); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPing);
         EXPECT_EQ(f.ping_value, 0xDEADBEEFCAFEF00Du);
       }},
      {[](FrameWriter& w) { return w.Pong(1); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPong);
         EXPECT_EQ(f.ping_value, 1u);
       }},
      {[&](FrameWriter& w) { return w.Control(control); },
       [&](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kControl);
         EXPECT_EQ(std::vector<uint8_t>(f.payload.begin(), f.payload.end()), control);
       }},
      {[](FrameWriter& w) { return w.Control({}); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kControl);
         EXPECT_TRUE(f.payload.empty());
       }},
      {[&](FrameWriter& w) { return w.Close(CloseReason::kFlowControl, text); },
       [&](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kClose);
         EXPECT_EQ(f.close_reason, CloseReason::kFlowControl);
         EXPECT_EQ(std::string(f.payload.begin(), f.payload.end()), text);
       }},
      {[](FrameWriter& w) { return w.PacketSetup(ExampleSetup()); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPacketSetup);
         EXPECT_EQ(f.stream_id, 0u);
         EXPECT_EQ(f.packet_setup, ExampleSetup());
         EXPECT_TRUE(f.payload.empty());
       }},
      {[](FrameWriter& w) {
         return w.PacketSetup({.receiver_index = 0xFFFFFFFF,
                               .max_datagram_plaintext = kMaxDatagramPlaintext,
                               .wants_udp = false});
       },
       [](const Frame& f) {
         EXPECT_EQ(f.packet_setup.receiver_index, 0xFFFFFFFFu);
         EXPECT_EQ(f.packet_setup.max_datagram_plaintext, kMaxDatagramPlaintext);
         EXPECT_FALSE(f.packet_setup.wants_udp);
       }},
      {[](FrameWriter& w) { return w.PacketReady(ExampleReady()); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPacketReady);
         EXPECT_EQ(f.packet_ready, ExampleReady());
       }},
      {[](FrameWriter& w) {
         PacketReadyFields r = ExampleReady();
         r.receiver_index = 0;
         r.udp_port = 0;  // no UDP: PACKET frames only
         r.mtu = kMaxPacketMtu;
         r.ipv4_prefix = 32;
         r.ipv6_prefix = 128;
         return w.PacketReady(r);
       },
       [](const Frame& f) {
         EXPECT_EQ(f.packet_ready.udp_port, 0u);
         EXPECT_EQ(f.packet_ready.receiver_index, 0u);
         EXPECT_EQ(f.packet_ready.mtu, kMaxPacketMtu);
         EXPECT_EQ(f.packet_ready.ipv4_prefix, 32);
         EXPECT_EQ(f.packet_ready.ipv6_prefix, 128);
       }},
      {[&](FrameWriter& w) { return w.PacketFail(PacketFailure::kNoAddress, text); },
       [&](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPacketFail);
         EXPECT_EQ(f.packet_failure, PacketFailure::kNoAddress);
         EXPECT_EQ(std::string(f.payload.begin(), f.payload.end()), text);
       }},
      {[](FrameWriter& w) { return w.PacketFail(static_cast<PacketFailure>(200), ""); },
       [](const Frame& f) {
         // Unknown reasons are kept as sent (so they re-encode) and read as kRefused.
         EXPECT_EQ(static_cast<uint8_t>(f.packet_failure), 200);
         EXPECT_EQ(KnownPacketFailure(f.packet_failure), PacketFailure::kRefused);
         EXPECT_TRUE(f.payload.empty());
       }},
      {[&](FrameWriter& w) { return w.Packet(data); },
       [&](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPacket);
         EXPECT_EQ(f.stream_id, 0u);
         EXPECT_TRUE(std::equal(f.payload.begin(), f.payload.end(), data.begin(), data.end()));
       }},
      {[](FrameWriter& w) { return w.Packet(std::vector<uint8_t>{0x45}); },
       [](const Frame& f) {
         EXPECT_EQ(f.type, FrameType::kPacket);
         EXPECT_EQ(f.payload.size(), 1u);
       }},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    FrameWriter w(buf);
    ASSERT_TRUE(cases[i].write(w).has_value());
    const Frame f = DecodeOne(w.written());
    cases[i].check(f);
    // Append() re-encodes the decoded view to the same bytes.
    std::vector<uint8_t> again(w.size());
    FrameWriter w2(again);
    ASSERT_TRUE(w2.Append(f).has_value());
    EXPECT_TRUE(std::equal(again.begin(), again.end(), w.written().begin()));
  }
}

TEST(MuxFrameTest, SeveralFramesPerRecord) {
  std::vector<uint8_t> record(kMaxRecordPlaintext);
  FrameWriter w(record);
  const std::vector<uint8_t> a = {'h', 'i'};
  ASSERT_TRUE(w.Open(1, Destination::Ipv4({93, 184, 216, 34}, 80)).has_value());
  ASSERT_TRUE(w.Data(1, a).has_value());
  ASSERT_TRUE(w.Window(0, 100).has_value());
  ASSERT_TRUE(w.Fin(1).has_value());
  ASSERT_TRUE(w.Ping(5).has_value());
  FrameReader r(w.written());
  std::vector<FrameType> types;
  while (!r.done()) {
    auto f = r.Next();
    ASSERT_TRUE(f.has_value()) << f.error().message;
    types.push_back(f->type);
    if (f->type == FrameType::kData) {
      EXPECT_EQ(f->payload.data(), record.data() + kFrameHeaderSize + 7 + kFrameHeaderSize)
          << "DATA is a view into the record (zero-copy)";
    }
  }
  EXPECT_EQ(types, (std::vector<FrameType>{FrameType::kOpen, FrameType::kData, FrameType::kWindow,
                                           FrameType::kFin, FrameType::kPing}));
}

TEST(MuxFrameTest, WriterBoundsCheckWritesNothingOnFailure) {
  std::array<uint8_t, 20> buf{};
  FrameWriter w(buf);
  ASSERT_TRUE(w.Window(1, 1).has_value());  // 11 bytes
  const std::vector<uint8_t> data(3, 1);
  EXPECT_EQ(w.Data(1, data).error().code, FrameErrc::kBufferTooSmall);  // needs 10
  EXPECT_EQ(w.Ping(1).error().code, FrameErrc::kBufferTooSmall);
  EXPECT_EQ(w.size(), 11u);
  ASSERT_TRUE(w.Data(1, std::span(data).first(2)).has_value());  // exactly 9
  EXPECT_EQ(w.remaining(), 0u);
  EXPECT_EQ(w.Fin(1).error().code, FrameErrc::kBufferTooSmall);
}

TEST(MuxFrameTest, WriterRejectsInvalidArguments) {
  std::vector<uint8_t> buf(2 * kMaxRecordPlaintext);
  FrameWriter w(buf);
  EXPECT_EQ(w.Data(0, std::vector<uint8_t>{1}).error().code, FrameErrc::kBadStreamId);
  EXPECT_EQ(w.Data(1, {}).error().code, FrameErrc::kBadLength);
  EXPECT_EQ(w.Data(1, std::vector<uint8_t>(kMaxFramePayload + 1)).error().code,
            FrameErrc::kBadLength);
  EXPECT_EQ(w.Window(1, 0).error().code, FrameErrc::kBadField);
  EXPECT_EQ(w.OpenFail(1, static_cast<OpenFailure>(0)).error().code, FrameErrc::kBadField);
  EXPECT_EQ(w.Open(1, Destination::Domain("", 1)).error().code, FrameErrc::kBadField);
  EXPECT_EQ(w.Open(0, Destination::Ipv4({}, 1)).error().code, FrameErrc::kBadStreamId);
  EXPECT_EQ(w.Control(std::vector<uint8_t>(kMaxControlPayload + 1)).error().code,
            FrameErrc::kBadLength);
  EXPECT_EQ(w.Close(CloseReason::kNormal, std::string(kMaxCloseText + 1, 'x')).error().code,
            FrameErrc::kBadLength);
  EXPECT_EQ(w.Close(CloseReason::kNormal, "\xff").error().code, FrameErrc::kBadField);
  EXPECT_EQ(w.size(), 0u);
}

// DATA (a socket read into the record) and PACKET (a TUN read into the record) alike.
TEST(MuxFrameTest, ZeroCopyDataAndPacket) {
  struct Kind {
    FrameType type;
    uint32_t stream_id;
    std::function<Result<std::span<uint8_t>, FrameErrc>(FrameWriter&, size_t)> begin;
    std::function<void(FrameWriter&, size_t)> commit;
  };
  const Kind kinds[] = {
      {FrameType::kData, 3, [](FrameWriter& w, size_t n) { return w.BeginData(3, n); },
       [](FrameWriter& w, size_t n) { w.CommitData(n); }},
      {FrameType::kPacket, 0, [](FrameWriter& w, size_t n) { return w.BeginPacket(n); },
       [](FrameWriter& w, size_t n) { w.CommitPacket(n); }},
  };
  for (const Kind& k : kinds) {
    SCOPED_TRACE(FrameTypeName(k.type));
    std::vector<uint8_t> buf(100);
    FrameWriter w(buf);
    ASSERT_TRUE(w.Ping(1).has_value());
    auto area = k.begin(w, 1000);
    ASSERT_TRUE(area.has_value());
    EXPECT_EQ(area->size(), 100u - kPingFrameSize - kFrameHeaderSize);
    (*area)[0] = 'x';
    (*area)[1] = 'y';
    k.commit(w, 2);
    EXPECT_EQ(w.size(), kPingFrameSize + kFrameHeaderSize + 2);
    FrameReader r(w.written());
    ASSERT_TRUE(r.Next().has_value());
    auto f = r.Next();
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->type, k.type);
    EXPECT_EQ(f->stream_id, k.stream_id);
    EXPECT_EQ(std::string(f->payload.begin(), f->payload.end()), "xy");
    EXPECT_TRUE(r.done());
    // Committing 0 drops the frame.
    ASSERT_TRUE(k.begin(w, 10).has_value());
    k.commit(w, 0);
    EXPECT_EQ(w.size(), kPingFrameSize + kFrameHeaderSize + 2);
    // No room for one payload byte.
    std::array<uint8_t, kFrameHeaderSize> tiny{};
    FrameWriter w2(tiny);
    EXPECT_EQ(k.begin(w2, 10).error().code, FrameErrc::kBufferTooSmall);
  }
}

TEST(MuxFrameTest, TruncatedInputs) {
  std::vector<uint8_t> buf(64);
  FrameWriter w(buf);
  ASSERT_TRUE(w.Open(1, Destination::Domain("a.b", 1)).has_value());
  const auto full = w.written();
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_EQ(DecodeError(full.first(n)), FrameErrc::kTruncated);
  }
  // A record whose last frame is cut: the reader returns the good frames, then kTruncated.
  std::vector<uint8_t> rec(64);
  FrameWriter w2(rec);
  ASSERT_TRUE(w2.Ping(1).has_value());
  ASSERT_TRUE(w2.Pong(2).has_value());
  FrameReader r(w2.written().first(w2.size() - 1));
  EXPECT_TRUE(r.Next().has_value());
  auto bad = r.Next();
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, FrameErrc::kTruncated);
  EXPECT_TRUE(r.done());
}

TEST(MuxFrameTest, BadInputsGiveTypedErrors) {
  // Unknown types.
  EXPECT_EQ(DecodeError(Bytes({0, 0, 0, 0, 1, 0, 0})), FrameErrc::kUnknownType);
  EXPECT_EQ(DecodeError(Bytes({16, 0, 0, 0, 0, 0, 0})), FrameErrc::kUnknownType);
  EXPECT_EQ(DecodeError(Bytes({255, 0, 0, 0, 1, 0, 0})), FrameErrc::kUnknownType);
  // Oversized: length above kMaxFramePayload, whatever follows.
  std::vector<uint8_t> big(kFrameHeaderSize + 0xFFFF, 0);
  big[0] = 4;
  big[4] = 1;
  big[5] = 0xFF;
  big[6] = 0xFF;
  EXPECT_EQ(DecodeError(big), FrameErrc::kBadLength);
  // Stream ids.
  EXPECT_EQ(DecodeError(Bytes({4, 0, 0, 0, 0, 0, 1, 'x'})), FrameErrc::kBadStreamId);  // DATA 0
  EXPECT_EQ(DecodeError(Bytes({6, 0, 0, 0, 0, 0, 0})), FrameErrc::kBadStreamId);       // FIN 0
  EXPECT_EQ(DecodeError(Bytes({8, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0})),
            FrameErrc::kBadStreamId);  // PING on a stream
  EXPECT_EQ(DecodeError(Bytes({10, 0, 0, 0, 2, 0, 0})), FrameErrc::kBadStreamId);
  // Wrong fixed lengths.
  EXPECT_EQ(DecodeError(Bytes({2, 0, 0, 0, 1, 0, 1, 0})), FrameErrc::kBadLength);  // OPEN_OK
  EXPECT_EQ(DecodeError(Bytes({3, 0, 0, 0, 1, 0, 0})), FrameErrc::kBadLength);     // OPEN_FAIL
  EXPECT_EQ(DecodeError(Bytes({4, 0, 0, 0, 1, 0, 0})), FrameErrc::kBadLength);     // empty DATA
  EXPECT_EQ(DecodeError(Bytes({5, 0, 0, 0, 1, 0, 3, 0, 0, 1})), FrameErrc::kBadLength);
  EXPECT_EQ(DecodeError(Bytes({7, 0, 0, 0, 1, 0, 2, 0, 0})), FrameErrc::kBadLength);
  EXPECT_EQ(DecodeError(Bytes({9, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0})), FrameErrc::kBadLength);
  EXPECT_EQ(DecodeError(Bytes({11, 0, 0, 0, 0, 0, 0})), FrameErrc::kBadLength);  // no reason
  // Bad fields.
  EXPECT_EQ(DecodeError(Bytes({3, 0, 0, 0, 1, 0, 1, 0})), FrameErrc::kBadField);  // code 0
  EXPECT_EQ(DecodeError(Bytes({3, 0, 0, 0, 1, 0, 1, 9})), FrameErrc::kBadField);  // code 9
  EXPECT_EQ(DecodeError(Bytes({5, 0, 0, 0, 1, 0, 4, 0, 0, 0, 0})), FrameErrc::kBadField);
  EXPECT_EQ(DecodeError(Bytes({11, 0, 0, 0, 0, 0, 2, 0, 0xC0})), FrameErrc::kBadField);
  EXPECT_EQ(DecodeError(Bytes({1, 0, 0, 0, 1, 0, 7, 2, 1, 2, 3, 4, 0, 80})),
            FrameErrc::kBadField);  // ATYP 2
  EXPECT_EQ(DecodeError(Bytes({1, 0, 0, 0, 1, 0, 4, 3, 0, 0, 80})), FrameErrc::kBadField);
  // OPEN length disagreeing with the destination.
  EXPECT_EQ(DecodeError(Bytes({1, 0, 0, 0, 1, 0, 8, 1, 1, 2, 3, 4, 0, 80, 0})),
            FrameErrc::kBadLength);
  EXPECT_EQ(DecodeError(Bytes({1, 0, 0, 0, 1, 0, 6, 1, 1, 2, 3, 4, 0})), FrameErrc::kBadLength);
  // Control too long.
  std::vector<uint8_t> ctl(kFrameHeaderSize + kMaxControlPayload + 1, 0);
  ctl[0] = 10;
  ctl[5] = static_cast<uint8_t>((kMaxControlPayload + 1) >> 8);
  ctl[6] = static_cast<uint8_t>(kMaxControlPayload + 1);
  EXPECT_EQ(DecodeError(ctl), FrameErrc::kBadLength);
}

TEST(MuxFrameTest, PacketFramesNeedStreamIdZero) {
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketSetup, 1, SetupPayload(1, 1, 1420, 1))),
            FrameErrc::kBadStreamId);
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketReady, 1, ReadyPayload(ExampleReady()))),
            FrameErrc::kBadStreamId);
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketFail, 1, {1})), FrameErrc::kBadStreamId);
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacket, 0x80000000, {0x45})), FrameErrc::kBadStreamId);
}

TEST(MuxFrameTest, PacketSetupDecodeRules) {
  auto decode = [](std::vector<uint8_t> payload) {
    return DecodeFrame(RawFrame(FrameType::kPacketSetup, 0, std::move(payload)));
  };
  auto error = [](std::vector<uint8_t> payload) {
    return DecodeError(RawFrame(FrameType::kPacketSetup, 0, std::move(payload)));
  };
  // The bounds themselves decode.
  auto lo = decode(SetupPayload(1, 1, kMinPacketMtu, 0));
  ASSERT_TRUE(lo.has_value()) << lo.error().message;
  EXPECT_EQ(lo->frame.packet_setup.max_datagram_plaintext, kMinPacketMtu);
  auto hi = decode(SetupPayload(1, 1, kMaxDatagramPlaintext, 1));
  ASSERT_TRUE(hi.has_value()) << hi.error().message;
  EXPECT_TRUE(hi->frame.packet_setup.wants_udp);
  // Exactly 8 bytes.
  auto p = SetupPayload(1, 1, 1420, 1);
  EXPECT_EQ(error(std::vector<uint8_t>(p.begin(), p.end() - 1)), FrameErrc::kBadLength);
  p.push_back(0);
  EXPECT_EQ(error(p), FrameErrc::kBadLength);
  EXPECT_EQ(error({}), FrameErrc::kBadLength);
  // Fields.
  EXPECT_EQ(error(SetupPayload(0, 1, 1420, 1)), FrameErrc::kBadField);  // version
  EXPECT_EQ(error(SetupPayload(2, 1, 1420, 1)), FrameErrc::kBadField);
  EXPECT_EQ(error(SetupPayload(1, 0, 1420, 1)), FrameErrc::kBadField);  // index 0
  EXPECT_EQ(error(SetupPayload(1, 1, kMinPacketMtu - 1, 1)), FrameErrc::kBadField);
  EXPECT_EQ(error(SetupPayload(1, 1, kMaxDatagramPlaintext + 1, 1)), FrameErrc::kBadField);
  EXPECT_EQ(error(SetupPayload(1, 1, 0xFFFF, 1)), FrameErrc::kBadField);
  EXPECT_EQ(error(SetupPayload(1, 1, 0, 1)), FrameErrc::kBadField);
  EXPECT_EQ(error(SetupPayload(1, 1, 1420, 2)), FrameErrc::kBadField);  // unknown flag
  EXPECT_EQ(error(SetupPayload(1, 1, 1420, 0x81)), FrameErrc::kBadField);
}

TEST(MuxFrameTest, PacketReadyDecodeRules) {
  auto error = [](const PacketReadyFields& r) {
    return DecodeError(RawFrame(FrameType::kPacketReady, 0, ReadyPayload(r)));
  };
  auto ok = [](const PacketReadyFields& r) {
    auto d = DecodeFrame(RawFrame(FrameType::kPacketReady, 0, ReadyPayload(r)));
    EXPECT_TRUE(d.has_value()) << d.error().message;
    if (d) {
      EXPECT_EQ(d->frame.packet_ready, r);
    }
  };
  ok(ExampleReady());
  PacketReadyFields r = ExampleReady();
  r.mtu = kMinPacketMtu;
  ok(r);
  r.mtu = kMaxPacketMtu;
  r.ipv4_prefix = 0;
  r.ipv6_prefix = 0;
  ok(r);
  // Exactly 30 bytes.
  auto p = ReadyPayload(ExampleReady());
  p.pop_back();
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketReady, 0, p)), FrameErrc::kBadLength);
  p.push_back(64);
  p.push_back(0);
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketReady, 0, p)), FrameErrc::kBadLength);
  for (const auto& [what, bad] : InvalidReadyVariants()) {
    EXPECT_EQ(error(bad), FrameErrc::kBadField) << what;
  }
}

TEST(MuxFrameTest, PacketFailAndPacketDecodeRules) {
  // PACKET_FAIL: a reason byte, non-zero, then at most 256 bytes of UTF-8.
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketFail, 0, {})), FrameErrc::kBadLength);
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketFail, 0, {0})), FrameErrc::kBadField);
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketFail, 0, {1, 0xC0})), FrameErrc::kBadField);
  std::vector<uint8_t> p(1 + kMaxCloseText, 'a');
  p[0] = 3;
  EXPECT_EQ(DecodeOne(RawFrame(FrameType::kPacketFail, 0, p)).packet_failure,
            PacketFailure::kLimit);
  p.push_back('a');
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacketFail, 0, p)), FrameErrc::kBadLength);
  for (int reason = 1; reason <= 255; ++reason) {
    const Frame f = DecodeOne(RawFrame(FrameType::kPacketFail, 0, {static_cast<uint8_t>(reason)}));
    EXPECT_EQ(static_cast<int>(f.packet_failure), reason);
    EXPECT_EQ(static_cast<int>(KnownPacketFailure(f.packet_failure)), reason <= 4 ? reason : 4);
  }
  // PACKET: 1..kMaxFramePayload bytes, content not parsed.
  EXPECT_EQ(DecodeError(RawFrame(FrameType::kPacket, 0, {})), FrameErrc::kBadLength);
  EXPECT_EQ(DecodeOne(RawFrame(FrameType::kPacket, 0, {0})).payload.size(), 1u);
  EXPECT_EQ(DecodeOne(RawFrame(FrameType::kPacket, 0, std::vector<uint8_t>(kMaxFramePayload, 0xFF)))
                .payload.size(),
            kMaxFramePayload);
  EXPECT_EQ(DecodeError(
                RawFrame(FrameType::kPacket, 0, std::vector<uint8_t>(kMaxFramePayload + 1, 0xFF))),
            FrameErrc::kBadLength);
  // Cut anywhere: truncated.
  const auto full = RawFrame(FrameType::kPacketReady, 0, ReadyPayload(ExampleReady()));
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_EQ(DecodeError(std::span(full).first(n)), FrameErrc::kTruncated) << n;
  }
}

TEST(MuxFrameTest, WriterRejectsInvalidPacketArguments) {
  std::vector<uint8_t> buf(2 * kMaxRecordPlaintext);
  FrameWriter w(buf);
  PacketSetupFields s = ExampleSetup();
  s.receiver_index = 0;
  EXPECT_EQ(w.PacketSetup(s).error().code, FrameErrc::kBadField);
  s = ExampleSetup();
  s.max_datagram_plaintext = kMinPacketMtu - 1;
  EXPECT_EQ(w.PacketSetup(s).error().code, FrameErrc::kBadField);
  s.max_datagram_plaintext = kMaxDatagramPlaintext + 1;
  EXPECT_EQ(w.PacketSetup(s).error().code, FrameErrc::kBadField);
  for (const auto& [what, bad] : InvalidReadyVariants()) {
    EXPECT_EQ(w.PacketReady(bad).error().code, FrameErrc::kBadField) << what;
  }
  EXPECT_EQ(w.PacketFail(static_cast<PacketFailure>(0), "").error().code, FrameErrc::kBadField);
  EXPECT_EQ(w.PacketFail(PacketFailure::kRefused, std::string(kMaxCloseText + 1, 'x')).error().code,
            FrameErrc::kBadLength);
  EXPECT_EQ(w.PacketFail(PacketFailure::kRefused, "\xff").error().code, FrameErrc::kBadField);
  EXPECT_EQ(w.Packet({}).error().code, FrameErrc::kBadLength);
  EXPECT_EQ(w.Packet(std::vector<uint8_t>(kMaxFramePayload + 1)).error().code,
            FrameErrc::kBadLength);
  EXPECT_EQ(w.size(), 0u);
  // No room: nothing written.
  std::array<uint8_t, kFrameHeaderSize + kPacketReadySize - 1> small{};
  FrameWriter w2(small);
  EXPECT_EQ(w2.PacketReady(ExampleReady()).error().code, FrameErrc::kBufferTooSmall);
  EXPECT_EQ(w2.Packet(std::vector<uint8_t>(kPacketReadySize)).error().code,
            FrameErrc::kBufferTooSmall);
  EXPECT_EQ(w2.size(), 0u);
}

TEST(MuxFrameTest, DocumentedPacketFrames) {
  // docs/tunnel.md, "Packet mode": the example frames between the frame-vectors markers.
  PacketSetupFields tcp_setup = ExampleSetup();
  tcp_setup.wants_udp = false;
  PacketReadyFields tcp_ready = ExampleReady();
  tcp_ready.receiver_index = 0;
  tcp_ready.udp_port = 0;
  // An ICMP echo request (id 1, sequence 1) from 10.231.0.2 to 192.0.2.1, checksums included.
  const auto packet = *FromHex("4500001c0000400040016df70ae70002c00002010800f7fd00010001");
  std::map<std::string, std::string> got;
  got["frame.packet_setup"] =
      WrittenHex([](FrameWriter& w) { return w.PacketSetup(ExampleSetup()); });
  got["frame.packet_setup.tcp_only"] =
      WrittenHex([&](FrameWriter& w) { return w.PacketSetup(tcp_setup); });
  got["frame.packet_ready"] =
      WrittenHex([](FrameWriter& w) { return w.PacketReady(ExampleReady()); });
  got["frame.packet_ready.tcp_only"] =
      WrittenHex([&](FrameWriter& w) { return w.PacketReady(tcp_ready); });
  got["frame.packet_fail"] = WrittenHex(
      [](FrameWriter& w) { return w.PacketFail(PacketFailure::kNoAddress, "pool empty"); });
  got["frame.packet"] = WrittenHex([&](FrameWriter& w) { return w.Packet(packet); });
  const auto want = testing::ReadDocVectors(DVPN_TUNNEL_MD, "frame-vectors");
  ASSERT_EQ(want.size(), got.size())
      << "frame-vectors block of " << DVPN_TUNNEL_MD << " not found or changed";
  for (const auto& [k, v] : got) EXPECT_EQ(want.at(k), v) << k;
  // And the document's bytes decode to those fields.
  EXPECT_EQ(DecodeOne(*FromHex(want.at("frame.packet_setup"))).packet_setup, ExampleSetup());
  EXPECT_EQ(DecodeOne(*FromHex(want.at("frame.packet_ready.tcp_only"))).packet_ready, tcp_ready);
}

TEST(MuxFrameTest, Utf8Validation) {
  auto ok = [](std::string_view s) { return IsValidUtf8(AsBytes(s)); };
  EXPECT_TRUE(ok(""));
  EXPECT_TRUE(ok("plain"));
  EXPECT_TRUE(ok("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(ok("\xc0\xaf"));                             // overlong
  EXPECT_FALSE(ok("\xe0\x80\xaf"));                         // overlong
  EXPECT_FALSE(ok("\xed\xa0\x80"));                         // surrogate
  EXPECT_FALSE(ok("\xf4\x90\x80\x80"));                     // > U+10FFFF
  EXPECT_FALSE(ok("\xe2\x82"));                             // truncated
  EXPECT_FALSE(ok("\x80"));                                 // lone continuation
}

TEST(MuxFrameTest, GarbageNeverCrashes) {
  // A deterministic pseudo-random sweep; the fuzz target does this at scale.
  uint64_t x = 0x9E3779B97F4A7C15;
  std::vector<uint8_t> buf(64);
  for (int i = 0; i < 20000; ++i) {
    for (auto& b : buf) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b = static_cast<uint8_t>(x);
    }
    buf[0] = static_cast<uint8_t>(buf[0] % 17);  // mostly valid types
    buf[5] = 0;
    buf[6] = static_cast<uint8_t>(buf[6] % 60);
    FrameReader r{std::span<const uint8_t>(buf).first(x % buf.size())};
    for (int k = 0; k < 100 && !r.done(); ++k) (void)r.Next();
    EXPECT_TRUE(r.done());
  }
}

}  // namespace
}  // namespace dvpn::tunnel
