#pragma once
// The byte-exact, domain-separated encodings that every signature in the system covers
// (docs/protocol.md, "Signed messages", is the normative text; tests/payments checks its
// test vectors). Each encoding starts with a tag that names the message type and version,
// then the ledger id, then the fields in a fixed order; the signature is BIP-340 Schnorr over
// SHA-256 of the encoding. Pure functions, thread-safe.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/amount.h"
#include "common/bytes.h"
#include "payments/keys.h"

namespace dvpn::payments {

// Identifies one ledger deployment; binds every signature to it.
struct LedgerId {
  Hash32 bytes{};
  auto operator<=>(const LedgerId&) const = default;
};

// Identifies an escrow channel; derived from (ledger, client, open nonce), see ChannelIdFor.
struct ChannelId {
  Hash32 bytes{};
  auto operator<=>(const ChannelId&) const = default;
};

// Limits that are part of the signed formats.
inline constexpr size_t kMaxWithdrawDestination = 128;  // bytes of the payout reference
inline constexpr size_t kMaxLedgerName = 64;

// ledger id = SHA-256(Tag("dvpn.v1.LedgerId") || u16 len || name || operator pubkey(32)).
LedgerId LedgerIdFor(std::string_view name, const PublicKey& operator_key);

// channel id = SHA-256(Tag("dvpn.v1.ChannelId") || ledger id || client address || u64 nonce).
ChannelId ChannelIdFor(const LedgerId& ledger, const Address& client, uint64_t open_nonce);

Hash32 DepositDigest(const LedgerId& ledger, const Address& to, Amount amount, uint64_t nonce);

Hash32 WithdrawDigest(const LedgerId& ledger, const Address& from, Amount amount, uint64_t nonce,
                      std::string_view destination);

Hash32 OpenChannelDigest(const LedgerId& ledger, const Address& client, const Address& provider,
                         Amount amount, uint64_t nonce, uint64_t expiry_unix);

Hash32 TopUpChannelDigest(const LedgerId& ledger, const ChannelId& channel, Amount amount,
                          uint64_t nonce, uint64_t new_expiry_unix);

// Signed by the client (starts the challenge period) or by the provider (closes at once).
Hash32 CloseChannelDigest(const LedgerId& ledger, const ChannelId& channel, const Address& signer,
                          uint64_t nonce);

// A payment promise: "the channel's provider may collect up to `cumulative` in total".
Hash32 PromiseDigest(const LedgerId& ledger, const ChannelId& channel, Amount cumulative);

struct SignedPromise {
  ChannelId channel;
  Amount cumulative;
  Signature signature{};
};

// The provider's signature over a whole batch, promises' own signatures included.
Hash32 SettleBatchDigest(const LedgerId& ledger, const Address& provider, uint64_t nonce,
                         std::span<const SignedPromise> promises);

}  // namespace dvpn::payments
