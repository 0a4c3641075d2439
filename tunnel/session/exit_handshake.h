#pragma once
// ExitHandshake: the responder's side of the tunnel handshake over one accepted TCP connection
// (docs/tunnel.md, "Handshake"), and nothing else: it reads msg1 with a size limit and its own
// deadline, checks mac1 first (no DH for strangers), then the hello (keys, identity, timestamp,
// replay guard), chooses the cipher; once the caller has decided msg2's session params (the
// paid exit's admission, or none) it writes msg2 and hands out the session keys. It knows
// nothing of payments or of the tunnels that follow.
//
// Deadlines: `timeout` bounds the whole exchange from construction to the keys (admission
// included), `msg1_timeout` the arrival of a whole msg1; when one passes, the socket is closed,
// so the pending read or write fails. Every failure is logged at debug (a remote peer causes it
// at will), except an msg2 we cannot encode (warn: our bug).
//
// Threading: the socket's io thread. Ownership: the socket and the options' pointers are
// borrowed and must outlive this object. Single use: ReadHello once, then Answer once.

#include <array>
#include <chrono>
#include <optional>

#include "common/clock.h"
#include "common/result.h"
#include "tunnel/handshake.h"
#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

enum class ExitHandshakeErrc {
  kConnection,  // the connection failed, closed or timed out before the step finished
  kRejected,    // not a valid msg1 for us (header, mac1, hello, replay) or no common cipher
  kInternal,    // msg2 could not be written (our bug)
};

class ExitHandshake {
 public:
  struct Options {
    const X25519KeyPair* static_key = nullptr;  // not owned
    ReplayGuard* replay_guard = nullptr;        // not owned; shared by the exit's handshakes
    const Clock* clock = nullptr;               // not owned; for the timestamp window
    std::chrono::milliseconds timeout{10'000};
    std::chrono::milliseconds msg1_timeout{3'000};
  };
  // What an authenticated msg1 tells: the client's hello and the cipher chosen for it.
  struct Hello {
    ClientHello hello;
    Cipher cipher;
  };

  // Arms the deadline of the whole handshake.
  ExitHandshake(tcp::socket& socket, const Options& options);
  ExitHandshake(const ExitHandshake&) = delete;
  ExitHandshake& operator=(const ExitHandshake&) = delete;

  // Reads and checks msg1 (within msg1_timeout). kConnection (closed, truncated, timed out),
  // kRejected (bad header, bad mac1, hello refused, no common cipher).
  asio::awaitable<Result<Hello, ExitHandshakeErrc>> ReadHello();
  // After ReadHello succeeded: writes msg2 carrying `session_params` (at most
  // kMaxSessionParams) and returns the session keys; the deadline is disarmed. kInternal (msg2
  // cannot be encoded), kConnection (the write failed or timed out).
  asio::awaitable<Result<SessionKeys, ExitHandshakeErrc>> Answer(ByteSpan session_params);

 private:
  tcp::socket& socket_;
  Options options_;
  HandshakeResponder responder_;
  std::optional<Watchdog> deadline_;
  std::optional<Cipher> cipher_;
  std::array<uint8_t, kMaxHandshakeMessage> buf_{};
};

}  // namespace dvpn::tunnel::session
