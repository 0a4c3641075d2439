#pragma once
// Builders of signed ledger requests: what a wallet does before sending. Each returns a request
// whose signature covers the encoding of payments/signed_messages.h for the given fields.
// Used by dvpnctl, the provider's settlement, tests and benchmarks. Thread-safe.

#include <span>
#include <string>

#include "ledger/types.h"

namespace dvpn::ledger {

using payments::PrivateKey;

DepositRequest MakeDeposit(const PrivateKey& operator_key, const LedgerId& ledger,
                           const Address& to, Amount amount, uint64_t nonce);
WithdrawRequest MakeWithdraw(const PrivateKey& key, const LedgerId& ledger, Amount amount,
                             uint64_t nonce, std::string destination);
OpenChannelRequest MakeOpenChannel(const PrivateKey& client, const LedgerId& ledger,
                                   const Address& provider, Amount amount, uint64_t nonce,
                                   uint64_t expiry_unix);
TopUpChannelRequest MakeTopUpChannel(const PrivateKey& client, const LedgerId& ledger,
                                     const ChannelId& channel, Amount amount, uint64_t nonce,
                                     uint64_t new_expiry_unix);
CloseChannelRequest MakeCloseChannel(const PrivateKey& signer, const LedgerId& ledger,
                                     const ChannelId& channel, uint64_t nonce);
SignedPromise MakePromise(const PrivateKey& client, const LedgerId& ledger,
                          const ChannelId& channel, Amount cumulative);
SettleBatchRequest MakeSettleBatch(const PrivateKey& provider, const LedgerId& ledger,
                                   uint64_t nonce, std::vector<SignedPromise> promises);

// The id the ledger will give the channel opened by `req`.
ChannelId ChannelIdOf(const OpenChannelRequest& req);

}  // namespace dvpn::ledger
