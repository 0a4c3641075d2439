#pragma once
// One packet-mode session's datagram path, the same object on both sides (docs/full-tunnel.md
// "The data plane"): seals IP packets to the peer and opens the datagrams addressed to this
// side's receiver index. The peer's address is learnt, and may only change, from a datagram
// that authenticated, so a spoofed source can neither redirect a session's packets nor make it
// answer. An authenticated empty datagram is a keepalive; the side that answers them (the exit)
// sends one back at most once per kKeepaliveAnswerIntervalMs. A datagram that fails is dropped
// and counted: never an answer, never a log line of its own.
//
// On one executor, like the DatagramEndpoint it may be registered with; not thread-safe.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "common/bytes.h"
#include "tunnel/handshake.h"
#include "tunnel/record_channel.h"
#include "tunnel/session/datagram_endpoint.h"

namespace dvpn::tunnel::session {

inline constexpr uint64_t kKeepaliveAnswerIntervalMs = 1000;

class DatagramPath final : public DatagramEndpoint::Receiver {
 public:
  // Sends one sealed datagram to `to`; false when the socket did not take it.
  using SendFn = std::function<bool(ByteSpan datagram, const udp::endpoint& to)>;
  // An authenticated, non-empty plaintext: one IP packet (in the path's buffer, valid during
  // the call).
  using PacketFn = std::function<void(std::span<uint8_t> packet)>;

  struct Options {
    size_t max_plaintext = kDefaultMaxDatagramPlaintext;  // both directions (PACKET_SETUP/READY)
    bool answer_keepalives = false;                       // the exit: true
  };

  struct Counters {
    uint64_t opened = 0;   // datagrams that authenticated (keepalives included)
    uint64_t refused = 0;  // datagrams dropped by the opener (any DatagramErrc)
    uint64_t packets_in = 0;
    uint64_t bytes_in = 0;  // IP packet bytes received (what the meters count)
    uint64_t packets_out = 0;
    uint64_t bytes_out = 0;  // IP packet bytes sent
    uint64_t keepalives_in = 0;
    uint64_t keepalives_out = 0;
    uint64_t send_failed = 0;  // too large, no peer yet, or the socket refused
    // The peer's datagrams that did not arrive (so far): counters it skipped, within one epoch,
    // less the late ones that filled a gap. An estimate of loss on the way (or of counters a
    // dishonest peer skipped); the client's meter uses it (docs/full-tunnel.md "Payments").
    uint64_t missing = 0;
  };

  DatagramPath(const SessionKeys& keys, uint32_t local_index, uint32_t remote_index,
               Options options, SendFn send, PacketFn deliver);
  // Seals each datagram straight into `sink`'s buffer (a UdpSendBatch: no copy, one system
  // call per batch). `sink` outlives the path.
  DatagramPath(const SessionKeys& keys, uint32_t local_index, uint32_t remote_index,
               Options options, DatagramSink& sink, PacketFn deliver);

  void OnDatagram(std::span<uint8_t> datagram, const udp::endpoint& from) override;

  // Seals and sends one IP packet to the peer. False (counted) without a peer address, for a
  // packet longer than max_plaintext, or when the socket refuses.
  bool SendPacket(ByteSpan packet);
  // An empty datagram: the client's probe and keepalive.
  bool SendKeepalive();

  // The client knows the exit's address before anything authenticated (PACKET_READY's port on
  // the tunnel's peer address).
  void SetPeer(const udp::endpoint& peer) { peer_ = peer; }
  const std::optional<udp::endpoint>& peer() const { return peer_; }
  // MonotonicMs() of the last datagram that authenticated; 0 when none yet.
  uint64_t last_authenticated_ms() const { return last_authenticated_ms_; }
  // The keys' timers, called about once a second by the session (both sides): a new epoch every
  // kRekeyAfterSeconds (at the next send), and the previous epoch's key dropped
  // kPreviousEpochSeconds after the peer switched.
  void TickKeys(uint64_t now_ms);
  // A new epoch at the next send (TickKeys' rekey; tests).
  void RequestRekey() { channel_.RequestRekey(); }
  void ExpirePreviousEpoch() { channel_.opener().ExpirePreviousEpoch(); }
  bool has_previous_epoch() { return channel_.opener().has_previous_epoch(); }
  const Counters& counters() const { return counters_; }
  size_t max_plaintext() const { return channel_.max_plaintext(); }

 private:
  bool Seal(ByteSpan plaintext);
  void CountMissing(uint8_t epoch, uint64_t counter);

  DatagramChannel channel_;
  Options options_;
  SendFn send_;
  DatagramSink* sink_ = nullptr;
  PacketFn deliver_;
  std::vector<uint8_t> out_;
  std::optional<udp::endpoint> peer_;
  uint64_t last_authenticated_ms_ = 0;
  uint64_t last_keepalive_answer_ms_ = 0;
  uint64_t epoch_start_ms_ = 0;       // TickKeys: when the current send epoch began
  uint64_t previous_since_ms_ = 0;    // TickKeys: when a previous receive epoch was first seen
  // Loss estimate: the highest counter opened in the epoch `seen_epoch_` (when any).
  bool seen_any_ = false;
  uint8_t seen_epoch_ = 0;
  uint64_t seen_highest_ = 0;
  Counters counters_;
};

}  // namespace dvpn::tunnel::session
