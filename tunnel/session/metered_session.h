#pragma once
// MeteredSession: what the payment controllers (PayeeController, PayerController) need from a
// tunnel, and nothing more: a control channel for payment messages, meters of the metered
// bytes, a pause switch, a forwarding limit, the session params of msg2, and a way to end the
// session. TunnelConnection implements it; so may a test double, or a later transport (a
// datagram session). docs/tunnel.md, "Layers", and "Sessions" for what is metered.
//
// Threading: every method on the session's io thread (`executor()`); callbacks run there.
// Ownership: the session is held by shared_ptr by whoever runs it; controllers keep a weak_ptr.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "tunnel/mux_frame.h"
#include "tunnel/session/asio.h"

namespace dvpn::tunnel::session {

class MeteredSession {
 public:
  using ControlHandler = std::function<void(ByteSpan message)>;
  // kUrgent: ahead of queued stream data. kAfterData: behind every DATA frame queued before it
  // (invoices, docs/payments.md §3).
  enum class ControlOrder { kUrgent, kAfterData };

  virtual ~MeteredSession() = default;

  // The io thread's executor (timers of a controller run there).
  virtual asio::any_io_executor executor() = 0;
  // For log lines ("tunnel#N").
  virtual const std::string& name() const = 0;
  // True once the session is closing or closed.
  virtual bool closed() const = 0;
  // Ends the session (CLOSE frame with `reason` when `send_close`). Idempotent.
  virtual void Close(CloseReason reason, const std::string& why, bool send_close) = 0;

  // Replaces the handler of received CONTROL messages; `message` is valid during the call only.
  virtual void SetControlHandler(ControlHandler handler) = 0;
  // Queues one CONTROL message (copied). False, nothing sent, when the session is closing or
  // the message is longer than kMaxControlPayload.
  virtual bool SendControl(ByteSpan message, ControlOrder order) = 0;
  bool SendControl(ByteSpan message) { return SendControl(message, ControlOrder::kUrgent); }

  // Metered bytes: DATA payload sent (counted when queued) and received (accepted).
  virtual uint64_t data_bytes_sent() const = 0;
  virtual uint64_t data_bytes_received() const = 0;
  // `fn` once per multiple of `every_bytes` crossed by sent + received, posted to the io
  // thread; 0 or an empty `fn` removes the observer.
  virtual void SetMeterObserver(uint64_t every_bytes, std::function<void()> fn) = 0;

  // Stops new data both ways within the flow-control windows; idempotent.
  virtual void SetForwardingPaused(bool paused) = 0;
  // Exit of a paid session: sent + received + the peer's credit never pass `limit`;
  // `on_blocked(limit)` is posted when the session is held there. Before the session starts.
  virtual void LimitForwarding(uint64_t limit, std::function<void(uint64_t limit)> on_blocked) = 0;
  // Moves the limit set by LimitForwarding.
  virtual void SetForwardingLimit(uint64_t limit) = 0;
  // Client of a paid session: the peer grants upload credit by hand (starts at 0).
  virtual void ZeroTunnelSendWindow() = 0;
  // Client: the params of the handshake's msg2 (empty: a free session).
  virtual const std::vector<uint8_t>& session_params() const = 0;

 protected:
  MeteredSession() = default;
  MeteredSession(const MeteredSession&) = delete;
  MeteredSession& operator=(const MeteredSession&) = delete;
};

}  // namespace dvpn::tunnel::session
