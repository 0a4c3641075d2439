// Datagram records (tunnel/datagram.h) and the RecordChannel seam (tunnel/record_channel.h):
// round trips, tampering, the replay window against a reference model, key epochs, floods of
// unauthenticated datagrams, sizes, and the test vectors of docs/tunnel.md ("Datagram
// records", between "datagram-vectors" markers; DVPN_PRINT_VECTORS=1 prints current values).
//
// NoHeapAllocationPerDatagram counts allocations (tests/support/allocation_counter.h); it is
// left out of sanitizer builds, whose runtimes provide their own operator new.
#include "tunnel/datagram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/allocation_counter.h"
#include "tests/tunnel/cipher_test_util.h"
#include "tests/tunnel/doc_vectors.h"
#include "tunnel/record_channel.h"


namespace dvpn::tunnel {

// Readable failure messages (found by argument-dependent lookup).
void PrintTo(DatagramErrc e, std::ostream* os) { *os << DatagramErrcName(e); }

namespace {

using testing::Ciphers;
using testing::KeyFill;
using testing::OpenerSnapshot;
using testing::Snap;

constexpr uint32_t kIndex = 0x1a2b3c4d;

using Bytes = std::vector<uint8_t>;

Bytes SealOne(DatagramSealer& s, const Bytes& pt) {
  Bytes out(pt.size() + kDatagramOverhead);
  auto n = s.Seal(pt, out);
  EXPECT_TRUE(n) << (n ? "" : n.error().message);
  if (n) {
    EXPECT_EQ(*n, out.size());
  }
  return out;
}

// Seals a datagram at a chosen counter (the sealer's counter moves past it).
Bytes SealAt(DatagramSealer& s, uint64_t counter, const Bytes& pt = {1, 2, 3}) {
  s.SetCounterForTest(counter);
  return SealOne(s, pt);
}

// Opens a copy (Open works in place), so the caller keeps the original for replays.
Result<OpenedDatagram, DatagramErrc> OpenCopy(DatagramOpener& o, const Bytes& d, Bytes* pt = nullptr) {
  Bytes copy = d;
  auto r = o.Open(copy);
  if (r && pt) pt->assign(r->plaintext.begin(), r->plaintext.end());
  return r;
}

std::optional<DatagramErrc> ErrorOf(const Result<OpenedDatagram, DatagramErrc>& r) {
  if (r) return std::nullopt;
  return r.error().code;
}

class DatagramTest : public ::testing::TestWithParam<Cipher> {};

TEST_P(DatagramTest, RoundTripAtManySizes) {
  DatagramSealer sealer(GetParam(), KeyFill(1), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(1), kIndex);
  uint64_t counter = 0;
  for (size_t size : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{1000},
                      kDefaultMaxDatagramPlaintext - 1, kDefaultMaxDatagramPlaintext}) {
    Bytes pt(size);
    for (size_t i = 0; i < size; ++i) pt[i] = uint8_t(i * 7 + size);
    Bytes d = SealOne(sealer, pt);
    // The header as docs/tunnel.md lays it out.
    const Bytes header = {0x04, 0x00, 0x00, 0x00, 0x1a, 0x2b, 0x3c, 0x4d,
                          0, 0, 0, 0, 0, 0, 0, uint8_t(counter)};
    EXPECT_EQ(Bytes(d.begin(), d.begin() + 16), header);
    if (size >= 16) {
      EXPECT_NE(Bytes(d.begin() + 16, d.end() - 16), pt);
    }
    auto h = ParseDatagramHeader(d);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->receiver_index, kIndex);
    EXPECT_EQ(h->counter, counter);
    Bytes got;
    auto opened = OpenCopy(opener, d, &got);
    ASSERT_TRUE(opened) << size << ": " << opened.error().message;
    EXPECT_EQ(got, pt);
    EXPECT_EQ(opened->counter, counter);
    EXPECT_EQ(opened->generation, 0u);
    ++counter;
  }
}

TEST_P(DatagramTest, SealInPlace) {
  DatagramSealer sealer(GetParam(), KeyFill(2), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(2), kIndex);
  Bytes buf(100 + kDatagramOverhead);
  for (size_t i = 0; i < 100; ++i) buf[16 + i] = uint8_t(i);
  auto n = sealer.Seal(std::span(buf).subspan(16, 100), buf);
  ASSERT_TRUE(n);
  auto opened = opener.Open(std::span(buf).first(*n));
  ASSERT_TRUE(opened);
  ASSERT_EQ(opened->plaintext.size(), 100u);
  for (size_t i = 0; i < 100; ++i) ASSERT_EQ(opened->plaintext[i], uint8_t(i));
}

// Flipping any bit of any byte is refused with the error of the field it lands in, and the
// opener's state does not move; the genuine datagram still opens afterwards.
TEST_P(DatagramTest, EveryFlippedByteIsRefusedAndChangesNothing) {
  DatagramSealer sealer(GetParam(), KeyFill(3), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(3), kIndex);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(OpenCopy(opener, SealOne(sealer, {uint8_t(i)})));
  const Bytes d = SealOne(sealer, Bytes(40, 0xab));  // counter 10, not yet opened
  const OpenerSnapshot before = Snap(opener);
  for (size_t i = 0; i < d.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      Bytes bad = d;
      bad[i] ^= uint8_t(1u << bit);
      DatagramErrc want = DatagramErrc::kBadTag;
      if (i == 0) want = DatagramErrc::kBadType;
      if (i == 1) want = bit == 0 ? DatagramErrc::kBadTag  // epoch 1: the next key, wrong tag
                                  : DatagramErrc::kUnknownEpoch;
      if (i == 2 || i == 3) want = DatagramErrc::kBadHeader;
      if (i >= 4 && i < 8) want = DatagramErrc::kWrongIndex;
      if (i >= 8 && i < 12) want = DatagramErrc::kRekeyRequired;  // counter >= 2^32
      if (i == 15 && bit == 1) want = DatagramErrc::kReplayed;     // counter 10 -> 8
      if (i == 15 && bit == 3) want = DatagramErrc::kReplayed;     // counter 10 -> 2
      auto r = opener.Open(bad);
      ASSERT_FALSE(r) << "byte " << i << " bit " << bit;
      EXPECT_EQ(r.error().code, want) << "byte " << i << " bit " << bit;
      ASSERT_EQ(Snap(opener), before) << "byte " << i << " bit " << bit;
    }
  }
  Bytes copy = d;
  auto ok = opener.Open(copy);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->counter, 10u);
}

TEST_P(DatagramTest, ReplayOfEveryAcceptedDatagramIsRefused) {
  DatagramSealer sealer(GetParam(), KeyFill(4), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(4), kIndex);
  std::vector<Bytes> sent;
  for (int i = 0; i < 200; ++i) sent.push_back(SealOne(sealer, {uint8_t(i), uint8_t(i >> 8)}));
  for (const auto& d : sent) ASSERT_TRUE(OpenCopy(opener, d));
  const OpenerSnapshot before = Snap(opener);
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(ErrorOf(OpenCopy(opener, sent[i])), DatagramErrc::kReplayed) << i;
  }
  EXPECT_EQ(Snap(opener), before);
}

TEST_P(DatagramTest, ReorderWithinTheWindowIsAcceptedBeyondItRefused) {
  DatagramSealer sealer(GetParam(), KeyFill(5), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(5), kIndex);
  std::vector<Bytes> sent;
  for (uint64_t c = 0; c < 5000; ++c) sent.push_back(SealOne(sealer, {uint8_t(c)}));
  ASSERT_TRUE(OpenCopy(opener, sent[4999]));
  // The window holds 4999 - 4095 .. 4999: 904 is its oldest member, 903 is out.
  EXPECT_EQ(ErrorOf(OpenCopy(opener, sent[903])), DatagramErrc::kTooOld);
  EXPECT_EQ(ErrorOf(OpenCopy(opener, sent[0])), DatagramErrc::kTooOld);
  for (uint64_t c = 4998; c >= 904; --c) {
    auto r = OpenCopy(opener, sent[c]);
    ASSERT_TRUE(r) << c << ": " << r.error().message;
    EXPECT_EQ(r->counter, c);
  }
  EXPECT_EQ(ErrorOf(OpenCopy(opener, sent[904])), DatagramErrc::kReplayed);
  // A jump forward of more than the window forgets everything below the new reach.
  ASSERT_TRUE(OpenCopy(opener, SealAt(sealer, 20000)));
  EXPECT_EQ(ErrorOf(OpenCopy(opener, sent[4999])), DatagramErrc::kTooOld);
  EXPECT_TRUE(OpenCopy(opener, SealAt(sealer, 20000 - 4095)));
  EXPECT_EQ(ErrorOf(OpenCopy(opener, SealAt(sealer, 20000 - 4096))), DatagramErrc::kTooOld);
  // A jump of less than the window keeps what is still inside it.
  ASSERT_TRUE(OpenCopy(opener, SealAt(sealer, 21000)));
  EXPECT_EQ(ErrorOf(OpenCopy(opener, SealAt(sealer, 20000))), DatagramErrc::kReplayed);
  EXPECT_TRUE(OpenCopy(opener, SealAt(sealer, 20001)));
  EXPECT_EQ(ErrorOf(OpenCopy(opener, SealAt(sealer, 21000 - 4096))), DatagramErrc::kTooOld);
  EXPECT_EQ(ErrorOf(OpenCopy(opener, SealAt(sealer, 20000 - 4095))), DatagramErrc::kTooOld);
}

TEST_P(DatagramTest, EpochChangeKeepsThePreviousEpochForTheGraceThenRefusesIt) {
  DatagramSealer sealer(GetParam(), KeyFill(6), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(6), kIndex);
  std::vector<Bytes> e0;
  for (int i = 0; i < 100; ++i) e0.push_back(SealOne(sealer, {uint8_t(i)}));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(OpenCopy(opener, e0[i]));  // 50..99 still in flight
  sealer.NextEpoch();
  EXPECT_EQ(sealer.generation(), 1u);
  EXPECT_EQ(sealer.counter(), 0u);
  std::vector<Bytes> e1;
  for (int i = 0; i < 10; ++i) e1.push_back(SealOne(sealer, {uint8_t(100 + i)}));
  EXPECT_EQ(e1[0][1], 0x01);  // the epoch byte

  // The first datagram of epoch 1 switches the opener; epoch 0 is kept as the previous one.
  auto first = OpenCopy(opener, e1[3]);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->generation, 1u);
  EXPECT_EQ(opener.generation(), 1u);
  ASSERT_TRUE(opener.has_previous_epoch());
  // Late epoch-0 datagrams are accepted once each, interleaved with epoch 1.
  for (int i = 50; i < 100; ++i) {
    auto r = OpenCopy(opener, e0[i]);
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->generation, 0u);
    if (i - 50 < 10 && i - 50 != 3) {
      ASSERT_TRUE(OpenCopy(opener, e1[i - 50]));
    }
  }
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(ErrorOf(OpenCopy(opener, e0[i])), DatagramErrc::kReplayed) << i;
  }
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ErrorOf(OpenCopy(opener, e1[i])), DatagramErrc::kReplayed) << i;
  }
  // The opener now knows epochs 0 (previous), 1 (current) and 2 (next). Epoch 3 (the sender
  // rekeyed twice and every epoch-2 datagram was lost) is refused.
  {
    DatagramSealer ahead(GetParam(), KeyFill(6), kIndex);
    for (int i = 0; i < 3; ++i) ahead.NextEpoch();
    const OpenerSnapshot before = Snap(opener);
    EXPECT_EQ(ErrorOf(OpenCopy(opener, SealOne(ahead, {1}))), DatagramErrc::kUnknownEpoch);
    EXPECT_EQ(Snap(opener), before);
  }
  // The grace: epoch 0 is kept while epoch 1's highest counter is below 4096.
  DatagramSealer late(GetParam(), KeyFill(6), kIndex);
  const Bytes late_a = SealAt(late, 100), late_b = SealAt(late, 101);
  ASSERT_TRUE(OpenCopy(opener, SealAt(sealer, kPreviousEpochGrace - 1)));
  ASSERT_TRUE(opener.has_previous_epoch());
  EXPECT_TRUE(OpenCopy(opener, late_a));
  ASSERT_TRUE(OpenCopy(opener, SealAt(sealer, kPreviousEpochGrace)));
  EXPECT_FALSE(opener.has_previous_epoch());
  EXPECT_EQ(ErrorOf(OpenCopy(opener, late_b)), DatagramErrc::kUnknownEpoch);

  // The time bound: the session's timer expires the previous epoch at once.
  DatagramOpener timed(GetParam(), KeyFill(6), kIndex);
  ASSERT_TRUE(OpenCopy(timed, e0[0]));
  ASSERT_TRUE(OpenCopy(timed, e1[0]));
  ASSERT_TRUE(timed.has_previous_epoch());
  timed.ExpirePreviousEpoch();
  EXPECT_FALSE(timed.has_previous_epoch());
  EXPECT_EQ(ErrorOf(OpenCopy(timed, e0[1])), DatagramErrc::kUnknownEpoch);
  EXPECT_TRUE(OpenCopy(timed, e1[1]));

  // A second switch wipes epoch 0 and keeps epoch 1 as the previous one.
  DatagramOpener twice(GetParam(), KeyFill(6), kIndex);
  ASSERT_TRUE(OpenCopy(twice, e1[0]));
  sealer.NextEpoch();
  ASSERT_TRUE(OpenCopy(twice, SealAt(sealer, 0, {7})));
  EXPECT_EQ(twice.generation(), 2u);
  EXPECT_TRUE(OpenCopy(twice, e1[1]));
  EXPECT_EQ(ErrorOf(OpenCopy(twice, e0[2])), DatagramErrc::kUnknownEpoch);
}

// The epoch byte is the generation mod 256; keys follow the absolute generation.
TEST_P(DatagramTest, EpochByteWrapsAroundAndKeysDoNot) {
  DatagramSealer sealer(GetParam(), KeyFill(7), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(7), kIndex);
  for (int g = 0; g < 300; ++g) {
    if (g > 0) sealer.NextEpoch();
    Bytes d = SealOne(sealer, {uint8_t(g)});
    EXPECT_EQ(d[1], uint8_t(g));
    auto r = OpenCopy(opener, d);
    ASSERT_TRUE(r) << g;
    EXPECT_EQ(r->generation, uint64_t(g));
  }
  EXPECT_EQ(opener.generation(), 299u);
  // Generation 43 has the same epoch byte as 299 but another key.
  DatagramSealer old(GetParam(), KeyFill(7), kIndex);
  for (int g = 0; g < 43; ++g) old.NextEpoch();
  Bytes d = SealAt(old, 5);
  EXPECT_EQ(d[1], uint8_t(299));
  EXPECT_EQ(ErrorOf(OpenCopy(opener, d)), DatagramErrc::kBadTag);
}

// 100,000 datagrams that do not authenticate — random bytes, well-formed headers for every
// epoch the opener knows with random bodies, genuine datagrams with one bit of the tag or body
// flipped — change nothing: afterwards the next genuine datagram opens, replays are still
// refused and unseen in-window counters are still accepted.
TEST_P(DatagramTest, UnauthenticatedFloodChangesNothing) {
  DatagramSealer s0(GetParam(), KeyFill(8), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(8), kIndex);
  std::vector<Bytes> e0;
  for (int i = 0; i < 64; ++i) e0.push_back(SealOne(s0, {uint8_t(i)}));
  DatagramSealer s1(GetParam(), KeyFill(8), kIndex);
  s1.NextEpoch();
  std::vector<Bytes> e1;
  for (int i = 0; i < 64; ++i) e1.push_back(SealOne(s1, {uint8_t(i)}));
  for (int i = 0; i < 64; i += 2) ASSERT_TRUE(OpenCopy(opener, e0[i]));
  for (int i = 0; i < 64; i += 2) ASSERT_TRUE(OpenCopy(opener, e1[i]));
  ASSERT_EQ(opener.generation(), 1u);
  ASSERT_TRUE(opener.has_previous_epoch());
  const OpenerSnapshot before = Snap(opener);

  std::mt19937_64 rng(15003);
  std::map<DatagramErrc, int> seen;
  Bytes d;
  for (int i = 0; i < 100'000; ++i) {
    switch (rng() % 4) {
      case 0:  // random bytes
        d.resize(rng() % 1600);
        for (auto& b : d) b = uint8_t(rng());
        break;
      case 1:  // a header that reaches the AEAD: right index, a known epoch, fresh counter
      case 2: {
        d.resize(kDatagramOverhead + rng() % 200);
        for (auto& b : d) b = uint8_t(rng());
        const uint8_t epochs[] = {0, 1, 2};  // previous, current, next
        d[0] = kDatagramTypeData;
        d[1] = epochs[rng() % 3];
        d[2] = d[3] = 0;
        d[4] = 0x1a, d[5] = 0x2b, d[6] = 0x3c, d[7] = 0x4d;
        const uint64_t c = rng() % 10'000;
        for (int k = 0; k < 8; ++k) d[8 + k] = uint8_t(c >> (56 - 8 * k));
        break;
      }
      case 3: {  // a genuine, not yet opened datagram with one bit flipped past the header
        d = (rng() & 1) ? e0[1 + 2 * (rng() % 32)] : e1[1 + 2 * (rng() % 32)];
        d[16 + rng() % (d.size() - 16)] ^= uint8_t(1u << (rng() % 8));
        break;
      }
    }
    auto r = opener.Open(d);
    ASSERT_FALSE(r) << "datagram " << i << " authenticated";
    ++seen[r.error().code];
  }
  EXPECT_EQ(Snap(opener), before);
  EXPECT_GT(seen[DatagramErrc::kBadTag], 50'000);  // most reached the AEAD and failed there
  EXPECT_GT(seen[DatagramErrc::kBadType], 10'000);
  // Counters intact: replays refused, unseen ones accepted, in every kept epoch.
  EXPECT_EQ(ErrorOf(OpenCopy(opener, e0[10])), DatagramErrc::kReplayed);
  EXPECT_EQ(ErrorOf(OpenCopy(opener, e1[10])), DatagramErrc::kReplayed);
  EXPECT_TRUE(OpenCopy(opener, e0[11]));
  EXPECT_TRUE(OpenCopy(opener, e1[11]));
  auto next = OpenCopy(opener, SealOne(s1, {0x99}));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->counter, 64u);
  EXPECT_EQ(opener.generation(), 1u);
}

TEST_P(DatagramTest, SizesTypesAndLimits) {
  DatagramSealer sealer(GetParam(), KeyFill(9), kIndex);
  DatagramOpener opener(GetParam(), KeyFill(9), kIndex);
  Bytes out(kMaxUdpPayload + 64);
  EXPECT_EQ(sealer.max_plaintext(), 1420u);
  EXPECT_EQ(sealer.Seal(Bytes(1421), out).error().code, DatagramErrc::kTooLarge);
  Bytes small(1 + kDatagramOverhead - 1);
  EXPECT_EQ(sealer.Seal(Bytes(1), small).error().code, DatagramErrc::kBufferTooSmall);
  EXPECT_EQ(sealer.counter(), 0u);  // nothing consumed
  // A whole 1500-byte IPv6 packet: 40 + 8 + 1452.
  Bytes full = SealOne(sealer, Bytes(1420, 1));
  EXPECT_EQ(full.size(), 1452u);
  EXPECT_TRUE(OpenCopy(opener, full));
  // Larger configured maxima, never above 65507 - 32.
  DatagramSealer big(GetParam(), KeyFill(9), kIndex, 100'000);
  EXPECT_EQ(big.max_plaintext(), kMaxDatagramPlaintext);
  big.SetCounterForTest(1000);
  Bytes largest = SealOne(big, Bytes(kMaxDatagramPlaintext, 2));
  EXPECT_EQ(largest.size(), kMaxUdpPayload);
  EXPECT_EQ(big.Seal(Bytes(kMaxDatagramPlaintext + 1), out).error().code, DatagramErrc::kTooLarge);
  EXPECT_EQ(ErrorOf(OpenCopy(opener, largest)), DatagramErrc::kTooLarge);  // opener max 1420
  DatagramOpener big_opener(GetParam(), KeyFill(9), kIndex, kMaxDatagramPlaintext);
  EXPECT_TRUE(OpenCopy(big_opener, largest));
  Bytes oversize = largest;
  oversize.push_back(0);
  EXPECT_EQ(ErrorOf(OpenCopy(big_opener, oversize)), DatagramErrc::kTooLarge);

  // Header errors, before any cryptography.
  Bytes d = SealOne(sealer, {5});
  EXPECT_EQ(ErrorOf(OpenCopy(opener, {})), DatagramErrc::kTruncated);
  EXPECT_EQ(ErrorOf(OpenCopy(opener, Bytes(d.begin(), d.begin() + 31))), DatagramErrc::kTruncated);
  EXPECT_EQ(ErrorOf(OpenCopy(opener, Bytes(d.begin(), d.begin() + 1))), DatagramErrc::kTruncated);
  for (int type : {0, 1, 2, 3, 5, 0x80, 255}) {
    Bytes t = d;
    t[0] = uint8_t(type);
    EXPECT_EQ(ErrorOf(OpenCopy(opener, t)), DatagramErrc::kBadType) << type;
    EXPECT_EQ(ErrorOf(OpenCopy(opener, Bytes{uint8_t(type)})), DatagramErrc::kBadType) << type;
  }
  DatagramOpener other_index(GetParam(), KeyFill(9), kIndex + 1);
  EXPECT_EQ(ErrorOf(OpenCopy(other_index, d)), DatagramErrc::kWrongIndex);
  EXPECT_TRUE(OpenCopy(opener, d));

  // Soft and hard limits per epoch.
  EXPECT_FALSE(sealer.RekeyDue());
  sealer.SetCounterForTest(kRekeyAfterRecords);
  EXPECT_TRUE(sealer.RekeyDue());
  Bytes last = SealAt(sealer, kMaxDatagramsPerEpoch - 1);
  EXPECT_EQ(sealer.Seal(Bytes(1), out).error().code, DatagramErrc::kRekeyRequired);
  auto opened = OpenCopy(opener, last);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->counter, kMaxDatagramsPerEpoch - 1);
  sealer.NextEpoch();
  EXPECT_FALSE(sealer.RekeyDue());
  EXPECT_TRUE(sealer.Seal(Bytes(1), out));
  // An opener refuses counters at or past the hard limit before trying the key.
  Bytes beyond = last;
  beyond[11] = 0x01;  // counter 2^32 | (2^32 - 1): only the high word changes here
  beyond[8] = beyond[9] = beyond[10] = 0;
  EXPECT_EQ(ErrorOf(OpenCopy(opener, beyond)), DatagramErrc::kRekeyRequired);
}

TEST_P(DatagramTest, DirectionsAndFramingsUseDistinctKeys) {
  // The epoch-0 key is derived from the record key, never the record key itself: a stream
  // record and a datagram with the same counter never share a nonce under one key.
  SessionKeys c, p;
  c.cipher = p.cipher = GetParam();
  c.send_key = p.recv_key = KeyFill(10);
  c.recv_key = p.send_key = KeyFill(11);
  EXPECT_NE(DatagramKey(c.send_key), c.send_key);
  EXPECT_NE(DatagramKey(c.send_key), DatagramKey(c.recv_key));
  DatagramSealer cs(c, 7), ps(p, 8);
  DatagramOpener co(c, 8), po(p, 7);
  Bytes up = SealOne(cs, {42}), down = SealOne(ps, {43});
  Bytes pt;
  ASSERT_TRUE(OpenCopy(po, up, &pt));
  EXPECT_EQ(pt, Bytes{42});
  ASSERT_TRUE(OpenCopy(co, down, &pt));
  EXPECT_EQ(pt, Bytes{43});
  // A side's own datagrams (index patched to pass the index check) do not open there.
  DatagramOpener fresh_co(c, 8);
  Bytes mirrored = up;
  mirrored[7] = 8;
  EXPECT_EQ(ErrorOf(OpenCopy(fresh_co, mirrored)), DatagramErrc::kBadTag);
  DatagramOpener with_record_key(GetParam(), c.send_key, 7);
  EXPECT_EQ(ErrorOf(OpenCopy(with_record_key, up)), DatagramErrc::kBadTag);
}

INSTANTIATE_TEST_SUITE_P(Ciphers, DatagramTest, ::testing::ValuesIn(Ciphers()),
                         [](const auto& info) {
                           return info.param == Cipher::kAes256Gcm ? "Aes256Gcm" : "ChaCha20";
                         });

// Property: deliver datagrams 0..N-1 as a random permutation with drops and duplicates and
// check every verdict against a reference model of the window written with a std::set:
// exactly the first copy of each datagram that is not yet too old is accepted.
TEST(DatagramReplayTest, RandomDeliveryMatchesTheReferenceModel) {
  DatagramSealer sealer(Cipher::kChaCha20Poly1305, KeyFill(20), kIndex);
  constexpr uint64_t kN = 12'000;
  std::vector<Bytes> sent;
  for (uint64_t c = 0; c < kN; ++c) sent.push_back(SealOne(sealer, {uint8_t(c), uint8_t(c >> 8)}));

  // Displacement scales: mostly within the window, sometimes well beyond it.
  for (uint64_t seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
    std::mt19937_64 rng(seed);
    const double spread = seed <= 3 ? 300.0 : 2500.0;
    std::normal_distribution<double> jitter(0.0, spread);
    std::vector<std::pair<double, uint64_t>> schedule;  // (arrival time, counter)
    for (uint64_t c = 0; c < kN; ++c) {
      const int copies = int(rng() % 10 == 0 ? 0 : 1 + (rng() % 6 == 0) + (rng() % 20 == 0));
      for (int k = 0; k < copies; ++k) schedule.emplace_back(double(c) + jitter(rng), c);
    }
    std::sort(schedule.begin(), schedule.end());

    DatagramOpener opener(Cipher::kChaCha20Poly1305, KeyFill(20), kIndex);
    std::set<uint64_t> model_seen;
    std::optional<uint64_t> model_high;
    std::map<uint64_t, int> accepted;
    int too_old = 0, replayed = 0;
    for (const auto& [t, c] : schedule) {
      DatagramErrc want{};
      bool model_ok = true;
      if (model_seen.count(c)) {
        model_ok = false, want = DatagramErrc::kReplayed;
      }
      if (model_high && c < *model_high && *model_high - c >= kReplayWindowBits) {
        model_ok = false, want = DatagramErrc::kTooOld;
      }
      auto r = OpenCopy(opener, sent[c]);
      ASSERT_EQ(bool(r), model_ok) << "seed " << seed << " counter " << c;
      if (model_ok) {
        model_seen.insert(c);
        model_high = std::max(model_high.value_or(0), c);
        ++accepted[c];
      } else {
        ASSERT_EQ(r.error().code, want) << "seed " << seed << " counter " << c;
        (want == DatagramErrc::kTooOld ? too_old : replayed)++;
      }
    }
    for (const auto& [c, n] : accepted) ASSERT_EQ(n, 1) << c;
    // The schedule must exercise every verdict, or the test proves nothing.
    EXPECT_GT(accepted.size(), seed <= 3 ? kN * 8 / 10 : kN / 20) << seed;
    EXPECT_GT(replayed, 100) << seed;
    if (seed > 3) {
      EXPECT_GT(too_old, 100) << seed;
    }
  }
}

TEST(DatagramReplayTest, WindowEdgesAndRingReuse) {
  ReplayWindow w;
  EXPECT_TRUE(w.empty());
  EXPECT_TRUE(w.Check(0));
  w.Accept(5);
  EXPECT_EQ(w.highest(), 5u);
  EXPECT_TRUE(w.Check(0));
  EXPECT_EQ(w.Check(5).error().code, DatagramErrc::kReplayed);
  // Moving by exactly the window size: counter 5's ring bit is reused by 4101 and cleared.
  w.Accept(5 + kReplayWindowBits);
  EXPECT_EQ(w.Check(5).error().code, DatagramErrc::kTooOld);
  EXPECT_TRUE(w.Check(6));
  w.Accept(6);
  // Moving by one less than the window keeps 6 inside... then one more pushes it out.
  w.Accept(6 + kReplayWindowBits - 1);
  EXPECT_EQ(w.Check(6).error().code, DatagramErrc::kReplayed);
  EXPECT_TRUE(w.Check(7));
  w.Accept(6 + kReplayWindowBits);
  EXPECT_EQ(w.Check(6).error().code, DatagramErrc::kTooOld);
  EXPECT_TRUE(w.Check(7));
  // A jump of less than the window clears the ring bits of the counters it passes over:
  // 4096..4099 reuse the positions of 0..3, which were accepted.
  ReplayWindow j;
  for (uint64_t c = 0; c < 10; ++c) j.Accept(c);
  j.Accept(4100);
  for (uint64_t c = 4096; c < 4100; ++c) EXPECT_TRUE(j.Check(c)) << c;
  for (uint64_t c = 5; c < 10; ++c) EXPECT_EQ(j.Check(c).error().code, DatagramErrc::kReplayed);
  EXPECT_EQ(j.Check(4).error().code, DatagramErrc::kTooOld);
  // Stepping forward one at a time clears each reused bit.
  ReplayWindow s;
  for (uint64_t c = 0; c < 3 * kReplayWindowBits; ++c) {
    ASSERT_TRUE(s.Check(c)) << c;
    s.Accept(c);
    if (c >= kReplayWindowBits) {
      ASSERT_EQ(s.Check(c - kReplayWindowBits).error().code, DatagramErrc::kTooOld);
      ASSERT_EQ(s.Check(c - kReplayWindowBits + 1).error().code, DatagramErrc::kReplayed);
    }
  }
}

#if DVPN_COUNT_ALLOCATIONS
TEST(DatagramAllocationTest, NoHeapAllocationPerDatagram) {
  for (Cipher cipher : Ciphers()) {
    DatagramSealer sealer(cipher, KeyFill(21), kIndex, kMaxDatagramPlaintext);
    DatagramOpener opener(cipher, KeyFill(21), kIndex, kMaxDatagramPlaintext);
    Bytes buf(kMaxUdpPayload), pt(4000, 3);
    // Warm up: AES keys its OpenSSL contexts on first use of a large datagram.
    ASSERT_TRUE(opener.Open(std::span(buf).first(*sealer.Seal(pt, buf))));
    Bytes junk_type = {9};
    long failures = 0;
    dvpn::test::AllocationCounter allocations;
    for (int i = 0; i < 1000; ++i) {
      const size_t size = (i % 2) ? 100 : 4000;
      auto n = sealer.Seal(ByteSpan(pt).first(size), buf);
      if (!n) break;
      if (i % 3 == 0) buf[20] ^= 1;  // a bad tag: the drop path must not allocate either
      auto r = opener.Open(std::span(buf).first(*n));
      failures += !r;
      failures += !opener.Open(junk_type);
    }
    allocations.Stop();
    EXPECT_EQ(allocations.count(), 0) << CipherName(cipher);
    EXPECT_EQ(failures, 334 + 1000) << CipherName(cipher);
  }
}
#endif

// ---------------------------------------------------------------- the document's vectors

std::map<std::string, std::string> ReadDatagramVectors() {
  return testing::ReadDocVectors(DVPN_TUNNEL_MD, "datagram-vectors");
}

TEST(DatagramVectors, MatchTheDocument) {
  // Inputs: the record key k_c2p of the "Records" test vectors, receiver index 0x1a2b3c4d.
  const Key32 record_key =
      *ToArray<32>(*FromHex("0575d2b33dca994cd37c25c72685ff4e7f5b6fa49ef486130c6d53e0d74d97a9"));
  std::map<std::string, std::string> got;
  const Key32 k0 = DatagramKey(record_key);
  got["datagram.key.epoch0"] = ToHex(k0);
  got["datagram.key.epoch1"] = ToHex(NextRecordKey(k0));
  DatagramSealer s(Cipher::kChaCha20Poly1305, k0, kIndex);
  got["datagram.chacha.e0.c0"] = ToHex(SealOne(s, Bytes{'h', 'e', 'l', 'l', 'o'}));
  got["datagram.chacha.e0.c1"] = ToHex(SealOne(s, Bytes{'h', 'e', 'l', 'l', 'o'}));
  got["datagram.chacha.e0.c2.empty"] = ToHex(SealOne(s, {}));
  got["datagram.chacha.e0.last"] = ToHex(SealAt(s, kMaxDatagramsPerEpoch - 1, {'h', 'e', 'l', 'l', 'o'}));
  s.NextEpoch();
  got["datagram.chacha.e1.c0"] = ToHex(SealOne(s, Bytes{'h', 'e', 'l', 'l', 'o'}));
  for (int g = 1; g < 256; ++g) s.NextEpoch();
  got["datagram.chacha.e256.c0"] = ToHex(SealOne(s, Bytes{'h', 'e', 'l', 'l', 'o'}));
  const bool have_aes = (LocalCiphers() & uint8_t(Cipher::kAes256Gcm)) != 0;
  if (have_aes) {
    DatagramSealer aes(Cipher::kAes256Gcm, k0, kIndex);
    got["datagram.aes.e0.c0"] = ToHex(SealOne(aes, Bytes{'h', 'e', 'l', 'l', 'o'}));
  }
  if (std::getenv("DVPN_PRINT_VECTORS")) {
    for (auto& [k, v] : got) std::cout << k << " = " << v << "\n";
  }
  auto want = ReadDatagramVectors();
  ASSERT_EQ(want.size(), 9u) << "datagram-vectors block of " << DVPN_TUNNEL_MD
                             << " not found or changed";
  for (auto& [k, v] : got) EXPECT_EQ(want[k], v) << k;

  // The document's bytes open, in order, with an opener of the same key.
  DatagramOpener o(Cipher::kChaCha20Poly1305, k0, kIndex);
  for (const char* name : {"datagram.chacha.e0.c0", "datagram.chacha.e0.c1",
                           "datagram.chacha.e0.c2.empty", "datagram.chacha.e0.last",
                           "datagram.chacha.e1.c0"}) {
    Bytes d = *FromHex(want[name]);
    Bytes pt;
    auto r = OpenCopy(o, d, &pt);
    ASSERT_TRUE(r) << name << ": " << r.error().message;
    const Bytes hello = {'h', 'e', 'l', 'l', 'o'};
    EXPECT_EQ(pt, std::string(name).ends_with("empty") ? Bytes() : hello) << name;
  }
  EXPECT_EQ(o.generation(), 1u);
  // Epoch byte 0x00 again at generation 256, under key NextRecordKey^256(k0).
  Key32 k256 = k0;
  for (int g = 0; g < 256; ++g) k256 = NextRecordKey(k256);
  DatagramOpener o256(Cipher::kChaCha20Poly1305, k256, kIndex);
  EXPECT_TRUE(OpenCopy(o256, *FromHex(want["datagram.chacha.e256.c0"])));
  EXPECT_EQ(ErrorOf(OpenCopy(o256, *FromHex(want["datagram.chacha.e0.c1"]))),
            DatagramErrc::kBadTag);  // epoch byte 0 too, but generation 0's key
  if (!have_aes) GTEST_SKIP() << "no AES-NI: datagram.aes.e0.c0 not checked";
}

// ---------------------------------------------------------------- RecordChannel

std::pair<SessionKeys, SessionKeys> KeyPair(Cipher cipher, uint8_t up, uint8_t down) {
  SessionKeys c, p;
  c.cipher = p.cipher = cipher;
  c.send_key = p.recv_key = KeyFill(up);
  c.recv_key = p.send_key = KeyFill(down);
  return {std::move(c), std::move(p)};
}

// Reads every unit of `wire` through the interface, as a transport's reader loop would, and
// returns the non-empty plaintexts.
std::vector<Bytes> ReadAll(RecordChannel& ch, Bytes wire) {
  std::vector<Bytes> out;
  std::span<uint8_t> rest(wire);
  while (!rest.empty()) {
    auto n = ch.NextUnitSize(rest);
    EXPECT_TRUE(n && *n > 0 && *n <= rest.size());
    if (!n || *n == 0 || *n > rest.size()) break;
    auto pt = ch.Open(rest.first(*n));
    EXPECT_TRUE(pt) << pt.error().message;
    if (pt && !pt->empty()) out.emplace_back(pt->begin(), pt->end());
    rest = rest.subspan(*n);
  }
  return out;
}

Bytes SealVia(RecordChannel& ch, const Bytes& pt) {
  Bytes out(pt.size() + ch.max_overhead());
  auto n = ch.Seal(pt, out);
  EXPECT_TRUE(n) << n.error().message;
  out.resize(n ? *n : 0);
  return out;
}

class RecordChannelTest : public ::testing::TestWithParam<Cipher> {};

// Both framings through the same code: messages both ways, a requested rekey and one at the
// soft limit, each read back by the peer's channel.
TEST_P(RecordChannelTest, BothFramingsCarryDataAndRekeyThroughTheInterface) {
  auto [sk_c, sk_p] = KeyPair(GetParam(), 30, 31);
  StreamRecordChannel stream_c(sk_c), stream_p(sk_p);
  auto [dk_c, dk_p] = KeyPair(GetParam(), 32, 33);
  DatagramChannel dgram_c(dk_c, /*local=*/0x11, /*remote=*/0x22);
  DatagramChannel dgram_p(dk_p, /*local=*/0x22, /*remote=*/0x11);
  struct Pair {
    RecordChannel* a;
    RecordChannel* b;
    const char* name;
    std::function<void()> reach_soft_limit;  // a's sealer at kRekeyAfterRecords
  };
  const Pair pairs[] = {
      {&stream_c, &stream_p, "stream",
       [&] {  // implicit counters: the peer's opener must agree
         stream_c.sealer_for_test().SetCounterForTest(kRekeyAfterRecords);
         stream_p.opener_for_test().SetCounterForTest(kRekeyAfterRecords);
       }},
      {&dgram_c, &dgram_p, "datagram",
       [&] { dgram_c.sealer_for_test().SetCounterForTest(kRekeyAfterRecords); }},
  };
  for (const Pair& pair : pairs) {
    RecordChannel& a = *pair.a;
    RecordChannel& b = *pair.b;
    for (int i = 0; i < 20; ++i) {
      if (i == 7) a.RequestRekey();
      if (i == 12) pair.reach_soft_limit();
      const Bytes up(size_t(10 + i), uint8_t(i)), down(size_t(3 + i), uint8_t(100 + i));
      EXPECT_EQ(ReadAll(b, SealVia(a, up)), std::vector<Bytes>{up}) << pair.name << " " << i;
      EXPECT_EQ(ReadAll(a, SealVia(b, down)), std::vector<Bytes>{down}) << pair.name << " " << i;
      EXPECT_EQ(a.send_generation(), uint64_t(i >= 7) + uint64_t(i >= 12)) << pair.name << i;
      EXPECT_EQ(b.send_generation(), 0u);
    }
  }
  EXPECT_EQ(stream_p.opener().generation(), 2u);
  EXPECT_EQ(dgram_p.opener().generation(), 2u);
}

// The stream adapter's bytes are RecordSealer's bytes; a rekey is a REKEY record first.
TEST_P(RecordChannelTest, StreamAdapterKeepsTheRecordWireBytes) {
  auto [c, p] = KeyPair(GetParam(), 34, 35);
  StreamRecordChannel ch(c);
  RecordSealer raw(GetParam(), c.send_key);
  for (int i = 0; i < 3; ++i) {
    const Bytes pt(size_t(5 + i), uint8_t(i));
    Bytes want(pt.size() + kRecordOverhead);
    ASSERT_TRUE(raw.Seal(pt, want));
    EXPECT_EQ(SealVia(ch, pt), want) << i;
  }
  ch.RequestRekey();
  Bytes want(kRecordOverhead + 4 + kRecordOverhead);
  ASSERT_TRUE(raw.SealRekey(want));
  ASSERT_TRUE(raw.Seal(Bytes(4, 9), std::span(want).subspan(kRecordOverhead)));
  Bytes got = SealVia(ch, Bytes(4, 9));
  EXPECT_EQ(got, want);
  EXPECT_EQ(got[0], 0x80);  // the REKEY flag
}

// A bad datagram is dropped and the channel goes on; a bad stream record ends the channel.
TEST_P(RecordChannelTest, FailuresAreDroppedForDatagramsAndFatalForStreams) {
  auto [dc, dp] = KeyPair(GetParam(), 36, 37);
  DatagramChannel a(dc, 1, 2), b(dp, 2, 1);
  Bytes d1 = SealVia(a, {1}), d2 = SealVia(a, {2});
  Bytes bad = d1;
  bad.back() ^= 1;
  auto r = b.Open(bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ChannelErrc::kDropped);
  EXPECT_EQ(r.error().message, "bad tag");
  EXPECT_EQ(ReadAll(b, d2), std::vector<Bytes>{Bytes{2}});  // reordered: fine
  EXPECT_EQ(ReadAll(b, d1), std::vector<Bytes>{Bytes{1}});
  Bytes replay = d1;
  EXPECT_EQ(b.Open(replay).error().code, ChannelErrc::kDropped);
  EXPECT_EQ(b.Open(replay).error().message, "replayed");
  Bytes big(kDefaultMaxDatagramPlaintext + 1), out(4096);
  EXPECT_EQ(a.Seal(big, out).error().code, ChannelErrc::kTooLarge);
  EXPECT_EQ(a.Seal(Bytes(10), std::span(out).first(41)).error().code, ChannelErrc::kBufferTooSmall);

  auto [sc, sp] = KeyPair(GetParam(), 38, 39);
  StreamRecordChannel s(sc), t(sp);
  Bytes r1 = SealVia(s, {1});
  Bytes tampered = r1;
  tampered.back() ^= 1;
  EXPECT_EQ(t.Open(tampered).error().code, ChannelErrc::kClosed);
  EXPECT_EQ(t.Open(r1).error().code, ChannelErrc::kClosed);  // even the genuine one, after
  const uint8_t bad_header[] = {0x7f, 0xff};
  EXPECT_EQ(t.NextUnitSize(bad_header).error().code, ChannelErrc::kClosed);
  Bytes huge(kMaxRecordPlaintext + 1), out2(kMaxRecordSize * 2 + 64);
  EXPECT_EQ(s.Seal(huge, out2).error().code, ChannelErrc::kTooLarge);
  s.RequestRekey();  // needs room for the REKEY record too; nothing is consumed when short
  EXPECT_EQ(s.Seal(Bytes(10), std::span(out2).first(10 + kRecordOverhead)).error().code,
            ChannelErrc::kBufferTooSmall);
  EXPECT_EQ(s.send_generation(), 0u);
}

// Datagrams of two epochs, reordered across the switch, all delivered once through the
// interface.
TEST_P(RecordChannelTest, DatagramChannelReordersAcrossAnEpochChange) {
  auto [c, p] = KeyPair(GetParam(), 40, 41);
  DatagramChannel a(c, 1, 2), b(p, 2, 1);
  std::vector<Bytes> e0, e1;
  for (int i = 0; i < 10; ++i) e0.push_back(SealVia(a, {uint8_t(i)}));
  a.RequestRekey();
  for (int i = 0; i < 10; ++i) e1.push_back(SealVia(a, {uint8_t(10 + i)}));
  EXPECT_EQ(e1[0][1], 1);
  std::vector<Bytes> order;
  for (int i = 9; i >= 5; --i) order.push_back(e1[i]);
  for (int i = 9; i >= 0; --i) order.push_back(e0[i]);
  for (int i = 0; i < 5; ++i) order.push_back(e1[i]);
  std::set<uint8_t> got;
  for (const auto& d : order) {
    auto pts = ReadAll(b, d);
    ASSERT_EQ(pts.size(), 1u);
    EXPECT_TRUE(got.insert(pts[0][0]).second);
  }
  EXPECT_EQ(got.size(), 20u);
  EXPECT_EQ(b.opener().generation(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Ciphers, RecordChannelTest, ::testing::ValuesIn(Ciphers()),
                         [](const auto& info) {
                           return info.param == Cipher::kAes256Gcm ? "Aes256Gcm" : "ChaCha20";
                         });

}  // namespace
}  // namespace dvpn::tunnel
