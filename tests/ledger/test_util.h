#pragma once
// Shared helpers of the ledger tests: a temp dir, wallets with nonce counters, and a full-state
// snapshot used to prove that refused requests change nothing.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "ledger/ledger.h"
#include "ledger/requests.h"
#include "ledger/sqlite_store.h"

namespace dvpn::ledger {

// Readable gtest output for the domain enums.
inline std::ostream& operator<<(std::ostream& out, Errc code) { return out << ErrcName(code); }
inline std::ostream& operator<<(std::ostream& out, SettleOutcome outcome) {
  return out << "SettleOutcome(" << static_cast<int>(outcome) << ")";
}

}  // namespace dvpn::ledger

namespace dvpn::ledger::testing {

using payments::PrivateKey;

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dvpn-ledger-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A key and the next nonce it will sign with.
struct Wallet {
  Wallet() : key(PrivateKey::Generate()), address(Address::FromPublicKey(key.public_key())) {}
  PrivateKey key;
  Address address;
  uint64_t nonce = 0;
  uint64_t Next() { return ++nonce; }
};

inline LedgerId OtherLedger() {
  LedgerId id;
  id.bytes.fill(0x5a);
  return id;
}

inline std::string Describe(const AccountState& a) {
  std::ostringstream out;
  out << a.address.ToString() << " balance=" << a.balance.micro() << " nonce=" << a.last_nonce
      << " escrowed=" << a.escrowed.micro();
  return out.str();
}

inline std::string Describe(const ChannelState& c) {
  std::ostringstream out;
  out << ToHex(c.id.bytes).substr(0, 16) << " client=" << c.client.ToString()
      << " key=" << ToHex(c.client_key.bytes()).substr(0, 16)
      << " provider=" << c.provider.ToString() << " deposit=" << c.deposit.micro()
      << " settled=" << c.settled.micro() << " refunded=" << c.refunded.micro()
      << " status=" << static_cast<int>(c.status) << " expiry=" << c.expiry_unix
      << " deadline=" << c.close_deadline_unix << " opened=" << c.opened_unix;
  return out.str();
}

// Everything a client of the ledger can observe about the given accounts and channels.
inline std::string Snapshot(Ledger& ledger, const std::vector<Address>& accounts,
                            const std::vector<ChannelId>& channels) {
  std::ostringstream out;
  for (const Address& a : accounts) {
    auto state = ledger.GetAccount(a);
    out << (state ? Describe(*state) : "error " + state.error().message) << "\n";
    auto history = ledger.History(a, 0, 1000);
    out << "  movements=" << (history ? history->size() : 0);
    if (history && !history->empty()) out << " last=" << history->back().seq;
    out << "\n";
    auto list = ledger.ListChannels(a, 1000);
    out << "  channels=" << (list ? list->size() : 0) << "\n";
  }
  for (const ChannelId& id : channels) {
    auto state = ledger.GetChannel(id);
    out << (state ? Describe(*state) : "error " + state.error().message) << "\n";
  }
  auto totals = ledger.GetTotals();
  if (totals) {
    out << "deposited=" << totals->deposited.micro() << " withdrawn=" << totals->withdrawn.micro()
        << "\n";
  }
  out << "last_seq=" << ledger.WaitForMovementAfter(UINT64_MAX, std::chrono::steady_clock::now())
      << "\n";
  return out.str();
}

// Checks conservation over the given (complete) sets of accounts and channels.
inline void ExpectConservation(Ledger& ledger, const std::vector<Address>& accounts,
                               const std::vector<ChannelId>& channels) {
  unsigned __int128 held = 0;
  for (const Address& a : accounts) {
    auto state = ledger.GetAccount(a);
    ASSERT_TRUE(state.has_value());
    held += state->balance.micro();
  }
  for (const ChannelId& id : channels) {
    auto ch = ledger.GetChannel(id);
    ASSERT_TRUE(ch.has_value());
    unsigned __int128 out =
        static_cast<unsigned __int128>(ch->settled.micro()) + ch->refunded.micro();
    EXPECT_LE(out, ch->deposit.micro());
    if (ch->status != ChannelStatus::kClosed) {
      held += ch->Remaining().micro();
      EXPECT_TRUE(ch->refunded.IsZero());
    } else {
      EXPECT_TRUE(ch->Remaining().IsZero());
    }
  }
  auto totals = ledger.GetTotals();
  ASSERT_TRUE(totals.has_value());
  EXPECT_EQ(held,
            static_cast<unsigned __int128>(totals->deposited.micro() - totals->withdrawn.micro()));
}

}  // namespace dvpn::ledger::testing
