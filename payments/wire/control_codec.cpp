#include "payments/wire/control_codec.h"

#include <string>
#include <string_view>

#include "dvpn/v1/tunnel.pb.h"

namespace dvpn::payments::wire {
namespace {

// Length of the UTF-8 sequence starting at s[i] (1..4), or 0 when it is not well formed
// (overlong forms, surrogates and code points above U+10FFFF included).
size_t Utf8Sequence(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

bool ValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = Utf8Sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// At most `max` bytes of `s`, cut at a character boundary; malformed bytes become '?'.
std::string CutUtf8(std::string_view s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t n = Utf8Sequence(s, i);
    if (out.size() + (n == 0 ? 1 : n) > max) break;
    if (n == 0) {
      out.push_back('?');
      i += 1;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string_view View(const Hash32& h) {
  return {reinterpret_cast<const char*>(h.data()), h.size()};
}

template <size_t N>
std::optional<ByteArray<N>> Fixed(const std::string& field) {
  return ToArray<N>(AsBytes(field));
}

template <class Message>
std::vector<uint8_t> Serialize(const Message& m) {
  std::vector<uint8_t> out(m.ByteSizeLong());
  m.SerializeWithCachedSizesToArray(out.data());
  return out;
}

}  // namespace

std::vector<uint8_t> EncodeTerms(const SessionTerms& t) {
  dvpn::v1::SessionTerms m;
  m.set_version(t.version);
  m.set_price_per_mb(t.price.per_mb.micro());
  m.set_price_per_minute(t.price.per_minute.micro());
  m.set_invoice_interval_bytes(t.invoice_interval_bytes);
  m.set_credit_window_bytes(t.credit_window_bytes);
  m.set_payment_grace_ms(t.payment_grace_ms);
  m.set_payee(t.payee.bytes().data(), t.payee.bytes().size());
  m.set_base_cumulative(t.base_cumulative.micro());
  if (t.base_signature) m.set_base_signature(t.base_signature->data(), t.base_signature->size());
  m.set_carried_bytes(t.carried_bytes);
  return Serialize(m);
}

Result<std::optional<SessionTerms>, CodecErrc> DecodeTerms(ByteSpan params) {
  if (params.empty()) return std::nullopt;
  if (params.size() > kMaxTermsSize) {
    return Fail(CodecErrc::kTooLarge,
                "session terms of " + std::to_string(params.size()) + " bytes");
  }
  dvpn::v1::SessionTerms m;
  if (!m.ParseFromArray(params.data(), static_cast<int>(params.size()))) {
    return Fail(CodecErrc::kMalformed, "session terms do not parse");
  }
  auto payee = Fixed<20>(m.payee());
  if (!payee) return Fail(CodecErrc::kBadField, "payee is not 20 bytes");
  SessionTerms t;
  if (!m.base_signature().empty()) {
    auto sig = Fixed<64>(m.base_signature());
    if (!sig) return Fail(CodecErrc::kBadField, "base signature is not 64 bytes");
    t.base_signature = *sig;
  }
  t.version = m.version();
  t.price.per_mb = Amount::FromMicro(m.price_per_mb());
  t.price.per_minute = Amount::FromMicro(m.price_per_minute());
  t.invoice_interval_bytes = m.invoice_interval_bytes();
  t.credit_window_bytes = m.credit_window_bytes();
  t.payment_grace_ms = m.payment_grace_ms();
  t.payee = Address(*payee);
  t.base_cumulative = Amount::FromMicro(m.base_cumulative());
  t.carried_bytes = m.carried_bytes();
  return t;
}

std::vector<uint8_t> EncodeControl(const ControlMessage& message) {
  dvpn::v1::Control m;
  struct Visitor {
    dvpn::v1::Control& m;
    void operator()(const Invoice& v) {
      auto* o = m.mutable_invoice();
      o->set_seq(v.seq);
      o->set_metered_bytes(v.metered_bytes);
      o->set_elapsed_ms(v.elapsed_ms);
      o->set_amount_due(v.amount_due.micro());
    }
    void operator()(const PromiseMessage& v) {
      auto* o = m.mutable_promise();
      o->set_invoice_seq(v.invoice_seq);
      o->set_cumulative(v.cumulative.micro());
      o->set_signature(v.signature.data(), v.signature.size());
      o->set_ledger(std::string(View(v.ledger.bytes)));
      o->set_channel(std::string(View(v.channel.bytes)));
    }
    void operator()(const Receipt& v) { m.mutable_receipt()->set_cumulative(v.cumulative.micro()); }
    void operator()(const Notice& v) {
      auto* o = m.mutable_notice();
      o->set_code(static_cast<dvpn::v1::Notice_Code>(v.code));
      o->set_text(CutUtf8(v.text, kMaxNoticeText));
    }
  };
  std::visit(Visitor{m}, message);
  return Serialize(m);
}

Result<std::optional<ControlMessage>, CodecErrc> DecodeControl(ByteSpan payload) {
  if (payload.size() > kMaxControlSize) {
    return Fail(CodecErrc::kTooLarge,
                "control message of " + std::to_string(payload.size()) + " bytes");
  }
  dvpn::v1::Control m;
  if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return Fail(CodecErrc::kMalformed, "control message does not parse");
  }
  switch (m.body_case()) {
    case dvpn::v1::Control::kInvoice: {
      const auto& o = m.invoice();
      return Invoice{o.seq(), o.metered_bytes(), o.elapsed_ms(), Amount::FromMicro(o.amount_due())};
    }
    case dvpn::v1::Control::kPromise: {
      const auto& o = m.promise();
      auto sig = Fixed<64>(o.signature());
      if (!sig) return Fail(CodecErrc::kBadField, "promise signature is not 64 bytes");
      auto ledger = Fixed<32>(o.ledger());
      if (!ledger) return Fail(CodecErrc::kBadField, "promise ledger id is not 32 bytes");
      auto channel = Fixed<32>(o.channel());
      if (!channel) return Fail(CodecErrc::kBadField, "promise channel id is not 32 bytes");
      PromiseMessage p;
      p.invoice_seq = o.invoice_seq();
      p.cumulative = Amount::FromMicro(o.cumulative());
      p.signature = *sig;
      p.ledger = LedgerId{*ledger};
      p.channel = ChannelId{*channel};
      return p;
    }
    case dvpn::v1::Control::kReceipt:
      return Receipt{Amount::FromMicro(m.receipt().cumulative())};
    case dvpn::v1::Control::kNotice: {
      const auto& o = m.notice();
      if (!ValidUtf8(o.text())) return Fail(CodecErrc::kBadField, "notice text is not UTF-8");
      return Notice{static_cast<NoticeCode>(static_cast<uint32_t>(o.code())),
                    CutUtf8(o.text(), kMaxNoticeText)};
    }
    case dvpn::v1::Control::BODY_NOT_SET:
      break;
  }
  return std::nullopt;  // unknown or unset oneof: ignored (forward compatibility)
}

}  // namespace dvpn::payments::wire
