#include "ledger/requests.h"

namespace dvpn::ledger {
namespace {

Signed Sign(const PrivateKey& key, const LedgerId& ledger, uint64_t nonce, const Hash32& digest) {
  return Signed{ledger, nonce, key.public_key(), key.Sign(digest)};
}

Address AddressOf(const PrivateKey& key) { return Address::FromPublicKey(key.public_key()); }

}  // namespace

DepositRequest MakeDeposit(const PrivateKey& operator_key, const LedgerId& ledger,
                           const Address& to, Amount amount, uint64_t nonce) {
  auto digest = payments::DepositDigest(ledger, to, amount, nonce);
  return DepositRequest{Sign(operator_key, ledger, nonce, digest), to, amount};
}

WithdrawRequest MakeWithdraw(const PrivateKey& key, const LedgerId& ledger, Amount amount,
                             uint64_t nonce, std::string destination) {
  auto digest = payments::WithdrawDigest(ledger, AddressOf(key), amount, nonce, destination);
  return WithdrawRequest{Sign(key, ledger, nonce, digest), amount, std::move(destination)};
}

OpenChannelRequest MakeOpenChannel(const PrivateKey& client, const LedgerId& ledger,
                                   const Address& provider, Amount amount, uint64_t nonce,
                                   uint64_t expiry_unix) {
  auto digest =
      payments::OpenChannelDigest(ledger, AddressOf(client), provider, amount, nonce, expiry_unix);
  return OpenChannelRequest{Sign(client, ledger, nonce, digest), provider, amount, expiry_unix};
}

TopUpChannelRequest MakeTopUpChannel(const PrivateKey& client, const LedgerId& ledger,
                                     const ChannelId& channel, Amount amount, uint64_t nonce,
                                     uint64_t new_expiry_unix) {
  auto digest = payments::TopUpChannelDigest(ledger, channel, amount, nonce, new_expiry_unix);
  return TopUpChannelRequest{Sign(client, ledger, nonce, digest), channel, amount,
                             new_expiry_unix};
}

CloseChannelRequest MakeCloseChannel(const PrivateKey& signer, const LedgerId& ledger,
                                     const ChannelId& channel, uint64_t nonce) {
  auto digest = payments::CloseChannelDigest(ledger, channel, AddressOf(signer), nonce);
  return CloseChannelRequest{Sign(signer, ledger, nonce, digest), channel};
}

SignedPromise MakePromise(const PrivateKey& client, const LedgerId& ledger,
                          const ChannelId& channel, Amount cumulative) {
  return SignedPromise{channel, cumulative,
                       client.Sign(payments::PromiseDigest(ledger, channel, cumulative))};
}

SettleBatchRequest MakeSettleBatch(const PrivateKey& provider, const LedgerId& ledger,
                                   uint64_t nonce, std::vector<SignedPromise> promises) {
  auto digest = payments::SettleBatchDigest(ledger, AddressOf(provider), nonce, promises);
  return SettleBatchRequest{Sign(provider, ledger, nonce, digest), std::move(promises)};
}

ChannelId ChannelIdOf(const OpenChannelRequest& req) {
  return payments::ChannelIdFor(req.auth.ledger_id, Address::FromPublicKey(req.auth.signer),
                                req.auth.nonce);
}

}  // namespace dvpn::ledger
