// The client's payment controller (PayerController) driven through the MeteredSession
// interface alone, with a scripted session in place of a tunnel: what it hooks, what it sends,
// when it ends the session. The same controller over real tunnels: tests/payments_e2e.

#include "tunnel/session/metered_session.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>

#include "common/log.h"
#include "payments/wire/control_codec.h"
#include "tunnel/session/paid_client.h"

namespace dvpn::tunnel::session {
namespace {

// Records what a controller asks of it; the test plays the tunnel's part by hand.
class ScriptedSession final : public MeteredSession {
 public:
  explicit ScriptedSession(asio::io_context& io) : io_(io) {}

  asio::any_io_executor executor() override { return io_.get_executor(); }
  const std::string& name() const override { return name_; }
  bool closed() const override { return close_reason.has_value(); }
  void Close(CloseReason reason, const std::string& why, bool send_close) override {
    if (closed()) return;
    close_reason = reason;
    close_text = why;
    close_sent = send_close;
  }
  void SetControlHandler(ControlHandler handler) override { control = std::move(handler); }
  bool SendControl(ByteSpan message, ControlOrder order) override {
    if (closed()) return false;
    sent.emplace_back(message.begin(), message.end());
    orders.push_back(order);
    return true;
  }
  uint64_t data_bytes_sent() const override { return up; }
  uint64_t data_bytes_received() const override { return down; }
  void SetMeterObserver(uint64_t every_bytes, std::function<void()> fn) override {
    meter_every = every_bytes;
    meter_fn = std::move(fn);
  }
  void SetForwardingPaused(bool paused) override { this->paused = paused; }
  void LimitForwarding(uint64_t limit, std::function<void(uint64_t)>) override {
    this->limit = limit;
  }
  void SetForwardingLimit(uint64_t limit) override { this->limit = limit; }
  void ZeroTunnelSendWindow() override { zero_send_window = true; }
  const std::vector<uint8_t>& session_params() const override { return params; }

  // The peer's CONTROL message arrives.
  void Deliver(const payments::ControlMessage& m) {
    ASSERT_TRUE(control) << "no control handler";
    auto bytes = payments::wire::EncodeControl(m);
    auto handler = control;
    handler(bytes);
  }

  std::vector<uint8_t> params;
  uint64_t up = 0;
  uint64_t down = 0;
  ControlHandler control;
  std::vector<std::vector<uint8_t>> sent;
  std::vector<ControlOrder> orders;
  uint64_t meter_every = 0;
  std::function<void()> meter_fn;
  bool paused = false;
  std::optional<uint64_t> limit;
  bool zero_send_window = false;
  std::optional<CloseReason> close_reason;
  std::string close_text;
  bool close_sent = false;

 private:
  asio::io_context& io_;
  std::string name_ = "scripted";
};

class PayerControllerTest : public ::testing::Test {
 protected:
  PayerControllerTest() {
    ledger_.bytes.fill(1);
    channel_.bytes.fill(2);
    terms_.price = payments::Price{Amount::FromMicro(1000), Amount::Zero()};  // 1000 per MB
    terms_.payee = payments::Address::FromPublicKey(payee_key_.public_key());
    config_.identity = &key_;
    config_.ledger = ledger_;
    config_.channel = channel_;
    config_.expected_payee = terms_.payee;
    config_.daily = std::make_shared<payments::DailySpend>();
    config_.on_escrow_use = [this](Amount cumulative, bool low) {
      escrow_uses_.emplace_back(cumulative, low);
    };
    config_.carry = carry_;
  }

  std::shared_ptr<PayerController> Attach() {
    return PayerController::Attach(session_, config_,
                                   [this](payments::CloseReason r, const std::string&) {
                                     final_ = r;
                                   });
  }
  payments::PromiseMessage SentPromise(size_t i) {
    auto decoded = payments::wire::DecodeControl(session_->sent.at(i));
    EXPECT_TRUE(decoded && *decoded);
    auto* p = std::get_if<payments::PromiseMessage>(&**decoded);
    EXPECT_NE(p, nullptr);
    return p ? *p : payments::PromiseMessage{};
  }

  asio::io_context io_;
  std::shared_ptr<ScriptedSession> session_ = std::make_shared<ScriptedSession>(io_);
  payments::PrivateKey key_ = payments::PrivateKey::Generate();
  payments::PrivateKey payee_key_ = payments::PrivateKey::Generate();
  payments::LedgerId ledger_;
  payments::ChannelId channel_;
  payments::SessionTerms terms_;
  ClientPaymentConfig config_;
  std::shared_ptr<CarryBook> carry_ = std::make_shared<CarryBook>();
  std::vector<std::pair<Amount, bool>> escrow_uses_;
  std::optional<payments::CloseReason> final_;
};

TEST_F(PayerControllerTest, AFreeSessionIsLeftAlone) {
  EXPECT_EQ(Attach(), nullptr);
  EXPECT_FALSE(session_->control);
  EXPECT_FALSE(session_->zero_send_window);
  EXPECT_FALSE(session_->closed());
}

TEST_F(PayerControllerTest, TermsThatDoNotDecodeEndTheSessionForGood) {
  session_->params = {0xff, 0xff, 0xff};
  EXPECT_EQ(Attach(), nullptr);
  EXPECT_EQ(session_->close_reason, CloseReason::kTermsRefused);
  EXPECT_TRUE(session_->close_sent);
  EXPECT_EQ(final_, payments::CloseReason::kTermsRefused);
}

TEST_F(PayerControllerTest, AFairInvoiceIsAnsweredWithAPromiseThroughTheSession) {
  session_->params = payments::wire::EncodeTerms(terms_);
  auto controller = Attach();
  ASSERT_NE(controller, nullptr);
  EXPECT_TRUE(session_->zero_send_window);  // the exit grants upload credit
  ASSERT_TRUE(session_->control);
  EXPECT_EQ(session_->meter_every, 256u * 1024);  // the carry record follows the meter

  session_->up = 400'000;
  session_->down = 600'000;
  session_->Deliver(payments::Invoice{.seq = 1,
                                      .metered_bytes = 1'000'000,
                                      .elapsed_ms = 0,
                                      .amount_due = Amount::FromMicro(1000)});
  ASSERT_EQ(session_->sent.size(), 1u);
  EXPECT_EQ(session_->orders[0], MeteredSession::ControlOrder::kUrgent);
  auto promise = SentPromise(0);
  EXPECT_EQ(promise.invoice_seq, 1u);
  EXPECT_EQ(promise.cumulative, Amount::FromMicro(1000));
  ASSERT_EQ(escrow_uses_.size(), 1u);
  EXPECT_EQ(escrow_uses_[0].first, Amount::FromMicro(1000));
  EXPECT_FALSE(escrow_uses_[0].second);
  // Unpaid until the provider acknowledges the promise as durable.
  EXPECT_EQ(carry_->Get(channel_), 1'000'000u);
  session_->Deliver(payments::Receipt{Amount::FromMicro(1000)});
  EXPECT_EQ(carry_->Get(channel_), 0u);
  EXPECT_EQ(session_->sent.size(), 1u);  // a receipt is not answered
  EXPECT_FALSE(session_->closed());
  EXPECT_FALSE(final_);
}

TEST_F(PayerControllerTest, AnInvoiceBeyondTheSessionsMeterEndsIt) {
  session_->params = payments::wire::EncodeTerms(terms_);
  auto controller = Attach();
  ASSERT_NE(controller, nullptr);
  session_->up = 1000;
  session_->Deliver(payments::Invoice{.seq = 1,
                                      .metered_bytes = 50'000'000,
                                      .elapsed_ms = 0,
                                      .amount_due = Amount::FromMicro(50'000)});
  EXPECT_TRUE(session_->sent.empty());  // nothing signed
  EXPECT_EQ(session_->close_reason,
            static_cast<CloseReason>(static_cast<uint8_t>(payments::CloseReason::kOvercharge)));
  EXPECT_EQ(final_, payments::CloseReason::kOvercharge);
}

TEST_F(PayerControllerTest, AMalformedControlMessageIsAProtocolError) {
  session_->params = payments::wire::EncodeTerms(terms_);
  auto controller = Attach();
  ASSERT_NE(controller, nullptr);
  const std::vector<uint8_t> garbage = {0x0a, 0xff, 0xff, 0xff};
  session_->control(garbage);
  EXPECT_EQ(session_->close_reason, CloseReason::kProtocolError);
}

// The provider sends notices at will (an honest one pauses and resumes tens of times a second
// at gigabit speed; a hostile one as fast as it can): a flood costs the client's log one info
// line, not one per notice.
TEST_F(PayerControllerTest, AFloodOfNoticesLogsOneInfoLine) {
  session_->params = payments::wire::EncodeTerms(terms_);
  auto controller = Attach();
  ASSERT_NE(controller, nullptr);
  auto log = TunnelLog();
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(100000);
  sink->set_pattern("%l %v");
  const auto level = log->level();
  log->set_level(spdlog::level::info);
  log->sinks().push_back(sink);
  for (int i = 0; i < 5000; ++i) {
    session_->Deliver(payments::Notice{i % 2 ? payments::NoticeCode::kResumed
                                             : payments::NoticeCode::kPaused,
                                       "forwarding paused: 1737804 unpaid bytes"});
  }
  log->sinks().pop_back();
  log->set_level(level);
  size_t lines = 0;
  for (const auto& line : sink->last_formatted()) lines += line.find("provider notice") != std::string::npos;
  EXPECT_EQ(lines, 1u);
  EXPECT_FALSE(session_->closed());
}

}  // namespace
}  // namespace dvpn::tunnel::session
