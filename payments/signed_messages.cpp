#include "payments/signed_messages.h"

#include <cassert>

namespace dvpn::payments {
namespace {

Encoder Begin(std::string_view tag, const LedgerId& ledger) {
  Encoder enc;
  enc.Tag(tag).Raw(ledger.bytes);
  return enc;
}

}  // namespace

LedgerId LedgerIdFor(std::string_view name, const PublicKey& operator_key) {
  assert(name.size() <= kMaxLedgerName);
  Encoder enc;
  enc.Tag("dvpn.v1.LedgerId").Bytes16(AsBytes(name)).Raw(operator_key.bytes());
  return LedgerId{Sha256(enc.bytes())};
}

ChannelId ChannelIdFor(const LedgerId& ledger, const Address& client, uint64_t open_nonce) {
  Encoder enc = Begin("dvpn.v1.ChannelId", ledger);
  enc.Raw(client.bytes()).U64(open_nonce);
  return ChannelId{Sha256(enc.bytes())};
}

Hash32 DepositDigest(const LedgerId& ledger, const Address& to, Amount amount, uint64_t nonce) {
  Encoder enc = Begin("dvpn.v1.Deposit", ledger);
  enc.Raw(to.bytes()).U64(amount.micro()).U64(nonce);
  return Sha256(enc.bytes());
}

Hash32 WithdrawDigest(const LedgerId& ledger, const Address& from, Amount amount, uint64_t nonce,
                      std::string_view destination) {
  assert(destination.size() <= kMaxWithdrawDestination);
  Encoder enc = Begin("dvpn.v1.Withdraw", ledger);
  enc.Raw(from.bytes()).U64(amount.micro()).U64(nonce).Bytes16(AsBytes(destination));
  return Sha256(enc.bytes());
}

Hash32 OpenChannelDigest(const LedgerId& ledger, const Address& client, const Address& provider,
                         Amount amount, uint64_t nonce, uint64_t expiry_unix) {
  Encoder enc = Begin("dvpn.v1.OpenChannel", ledger);
  enc.Raw(client.bytes()).Raw(provider.bytes()).U64(amount.micro()).U64(nonce).U64(expiry_unix);
  return Sha256(enc.bytes());
}

Hash32 TopUpChannelDigest(const LedgerId& ledger, const ChannelId& channel, Amount amount,
                          uint64_t nonce, uint64_t new_expiry_unix) {
  Encoder enc = Begin("dvpn.v1.TopUpChannel", ledger);
  enc.Raw(channel.bytes).U64(amount.micro()).U64(nonce).U64(new_expiry_unix);
  return Sha256(enc.bytes());
}

Hash32 CloseChannelDigest(const LedgerId& ledger, const ChannelId& channel, const Address& signer,
                          uint64_t nonce) {
  Encoder enc = Begin("dvpn.v1.CloseChannel", ledger);
  enc.Raw(channel.bytes).Raw(signer.bytes()).U64(nonce);
  return Sha256(enc.bytes());
}

Hash32 PromiseDigest(const LedgerId& ledger, const ChannelId& channel, Amount cumulative) {
  Encoder enc = Begin("dvpn.v1.Promise", ledger);
  enc.Raw(channel.bytes).U64(cumulative.micro());
  return Sha256(enc.bytes());
}

Hash32 SettleBatchDigest(const LedgerId& ledger, const Address& provider, uint64_t nonce,
                         std::span<const SignedPromise> promises) {
  Encoder enc = Begin("dvpn.v1.SettleBatch", ledger);
  enc.Raw(provider.bytes()).U64(nonce).U32(static_cast<uint32_t>(promises.size()));
  for (const SignedPromise& p : promises) {
    enc.Raw(p.channel.bytes).U64(p.cumulative.micro()).Raw(p.signature);
  }
  return Sha256(enc.bytes());
}

}  // namespace dvpn::payments
