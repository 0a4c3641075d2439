// Checks the test vectors printed in docs/protocol.md against this project's encoders and
// signer, so the document and the code cannot drift apart.
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "payments/keys.h"
#include "payments/signed_messages.h"

namespace dvpn::payments {
namespace {

std::map<std::string, std::string> ReadVectors() {
  std::ifstream in(DVPN_PROTOCOL_MD);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  auto begin = doc.find("<!-- vectors:begin -->");
  auto end = doc.find("<!-- vectors:end -->");
  std::map<std::string, std::string> out;
  if (begin == std::string::npos || end == std::string::npos) return out;
  std::string block = doc.substr(begin, end - begin);
  std::regex line(R"(([\w.]+) = ([0-9a-z]+))");
  for (std::sregex_iterator it(block.begin(), block.end(), line), last; it != last; ++it) {
    out[(*it)[1]] = (*it)[2];
  }
  return out;
}

PrivateKey KeyOf(uint8_t fill) {
  ByteArray<32> secret;
  secret.fill(fill);
  return *PrivateKey::FromBytes(secret);
}

TEST(ProtocolVectors, MatchTheDocument) {
  auto v = ReadVectors();
  ASSERT_EQ(v.size(), 22u) << "vectors block of " << DVPN_PROTOCOL_MD << " not found or changed";

  auto op = KeyOf(0x11), client = KeyOf(0x22), provider = KeyOf(0x33);
  Address client_addr = Address::FromPublicKey(client.public_key());
  Address provider_addr = Address::FromPublicKey(provider.public_key());
  EXPECT_EQ(v["operator.pub"], ToHex(op.public_key().bytes()));
  EXPECT_EQ(v["client.pub"], ToHex(client.public_key().bytes()));
  EXPECT_EQ(v["provider.pub"], ToHex(provider.public_key().bytes()));
  EXPECT_EQ(v["operator.addr"], Address::FromPublicKey(op.public_key()).ToString());
  EXPECT_EQ(v["client.addr"], client_addr.ToString());
  EXPECT_EQ(v["provider.addr"], provider_addr.ToString());

  LedgerId ledger = LedgerIdFor("dvpn-test", op.public_key());
  ChannelId channel = ChannelIdFor(ledger, client_addr, 7);
  EXPECT_EQ(v["ledger_id"], ToHex(ledger.bytes));
  EXPECT_EQ(v["channel_id"], ToHex(channel.bytes));

  const Amount promised = Amount::FromMicro(1'234'567);
  const Hash32 zero_aux{};
  SignedPromise promise{channel, promised,
                        client.SignWithAux(PromiseDigest(ledger, channel, promised), zero_aux)};
  struct Case {
    std::string name;
    Hash32 digest;
    const PrivateKey* signer;
  } cases[] = {
      {"deposit", DepositDigest(ledger, client_addr, Amount::FromMicro(10'000'000), 1), &op},
      {"withdraw",
       WithdrawDigest(ledger, provider_addr, Amount::FromMicro(1'500'000), 3, "bank:DE00 1234"),
       &provider},
      {"open_channel",
       OpenChannelDigest(ledger, client_addr, provider_addr, Amount::FromMicro(5'000'000), 7,
                         1'900'000'000),
       &client},
      {"topup_channel",
       TopUpChannelDigest(ledger, channel, Amount::FromMicro(1'000'000), 8, 1'900'003'600),
       &client},
      {"close_channel", CloseChannelDigest(ledger, channel, client_addr, 9), &client},
      {"promise", PromiseDigest(ledger, channel, promised), &client},
      {"settle_batch", SettleBatchDigest(ledger, provider_addr, 4, {&promise, 1}), &provider},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(v[c.name + ".digest"], ToHex(c.digest));
    EXPECT_EQ(v[c.name + ".sig"], ToHex(c.signer->SignWithAux(c.digest, zero_aux)));
    auto sig = FromHex(v[c.name + ".sig"]);
    ASSERT_TRUE(sig && sig->size() == 64);
    EXPECT_TRUE(c.signer->public_key().Verify(c.digest, *ToArray<64>(*sig)));
  }
}

}  // namespace
}  // namespace dvpn::payments
