// PromiseLog (docs/payments.md §6, "The log"): records round trip bit for bit; a torn or
// corrupt record and everything after it are dropped at open; appends after a reopen continue
// the valid prefix.

#include "settlement/promise_log.h"

#include <sys/stat.h>

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/subprocess.h"

namespace dvpn::payments {
namespace {

LoggedPromise Record(uint8_t tag, uint64_t cumulative, bool facts) {
  LoggedPromise r{.promise = {.ledger = {},
                              .channel = {},
                              .client_key = PrivateKey::Generate().public_key(),
                              .cumulative = {},
                              .signature = {},
                              .deposit = std::nullopt,
                              .deadline_unix = std::nullopt},
                  .received_unix = 0};
  r.promise.ledger.bytes.fill(tag);
  r.promise.channel.bytes.fill(static_cast<uint8_t>(tag + 1));
  r.promise.cumulative = Amount::FromMicro(cumulative);
  r.promise.signature.fill(static_cast<uint8_t>(tag + 2));
  if (facts) {
    r.promise.deposit = Amount::FromMicro(cumulative * 10);
    r.promise.deadline_unix = 1'900'000'000 + tag;
  }
  r.received_unix = 1'800'000'000 + tag;
  return r;
}

void ExpectSame(const LoggedPromise& a, const LoggedPromise& b) {
  EXPECT_EQ(a.promise.ledger, b.promise.ledger);
  EXPECT_EQ(a.promise.channel, b.promise.channel);
  EXPECT_EQ(a.promise.client_key.bytes(), b.promise.client_key.bytes());
  EXPECT_EQ(a.promise.cumulative, b.promise.cumulative);
  EXPECT_EQ(a.promise.signature, b.promise.signature);
  EXPECT_EQ(a.promise.deposit, b.promise.deposit);
  EXPECT_EQ(a.promise.deadline_unix, b.promise.deadline_unix);
  EXPECT_EQ(a.received_unix, b.received_unix);
}

off_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

class PromiseLogTest : public ::testing::Test {
 protected:
  dvpn::testing::TempDir dir_;
  std::string path_ = dir_.File("promises.db.log");
};

TEST_F(PromiseLogTest, RecordsRoundTripAcrossReopen) {
  std::vector<LoggedPromise> in = {Record(1, 100, true), Record(2, 200, false),
                                   Record(3, UINT64_MAX, true)};
  std::vector<LoggedPromise> out;
  {
    auto log = PromiseLog::Open(path_, &out);
    ASSERT_TRUE(log) << log.error().message;
    EXPECT_TRUE(out.empty());
    ASSERT_TRUE(log->Append(std::span(in).first(1), false));
    ASSERT_TRUE(log->Append(std::span(in).subspan(1), true));
  }
  EXPECT_EQ(FileSize(path_), static_cast<off_t>(3 * PromiseLog::kRecordSize));
  auto log = PromiseLog::Open(path_, &out);
  ASSERT_TRUE(log);
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < 3; ++i) ExpectSame(in[i], out[i]);
  ASSERT_TRUE(log->Clear());
  EXPECT_EQ(FileSize(path_), 0);
}

TEST_F(PromiseLogTest, TornTailIsCutAndLaterAppendsFollowTheValidPrefix) {
  std::vector<LoggedPromise> out;
  {
    auto log = PromiseLog::Open(path_, &out);
    ASSERT_TRUE(log);
    std::vector<LoggedPromise> two = {Record(1, 100, true), Record(2, 200, true)};
    ASSERT_TRUE(log->Append(two, false));
  }
  // A power loss in the middle of the third record.
  auto third = PromiseLog::Encode(Record(3, 300, true));
  std::ofstream(path_, std::ios::binary | std::ios::app)
      .write(reinterpret_cast<const char*>(third.data()), 100);
  {
    auto log = PromiseLog::Open(path_, &out);
    ASSERT_TRUE(log);
    EXPECT_EQ(out.size(), 2u);
    EXPECT_EQ(FileSize(path_), static_cast<off_t>(2 * PromiseLog::kRecordSize));
    std::vector<LoggedPromise> four = {Record(4, 400, false)};
    ASSERT_TRUE(log->Append(four, false));
  }
  auto log = PromiseLog::Open(path_, &out);
  ASSERT_TRUE(log);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].promise.cumulative, Amount::FromMicro(400));
}

TEST_F(PromiseLogTest, ACorruptRecordDropsItAndEverythingAfter) {
  for (size_t flip : {size_t{0}, size_t{50}, size_t{120}, PromiseLog::kRecordSize - 1}) {
    std::remove(path_.c_str());
    std::vector<LoggedPromise> out;
    {
      auto log = PromiseLog::Open(path_, &out);
      ASSERT_TRUE(log);
      std::vector<LoggedPromise> three = {Record(1, 1, true), Record(2, 2, true),
                                          Record(3, 3, true)};
      ASSERT_TRUE(log->Append(three, false));
    }
    {  // flip one bit of the second record
      std::fstream f(path_, std::ios::binary | std::ios::in | std::ios::out);
      f.seekg(static_cast<std::streamoff>(PromiseLog::kRecordSize + flip));
      char c = 0;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x10);
      f.seekp(static_cast<std::streamoff>(PromiseLog::kRecordSize + flip));
      f.write(&c, 1);
    }
    auto log = PromiseLog::Open(path_, &out);
    ASSERT_TRUE(log);
    EXPECT_EQ(out.size(), 1u) << "flipped byte " << flip;
    EXPECT_EQ(FileSize(path_), static_cast<off_t>(PromiseLog::kRecordSize));
  }
}

TEST_F(PromiseLogTest, DecodeRefusesWrongSizes) {
  auto bytes = PromiseLog::Encode(Record(1, 5, false));
  EXPECT_TRUE(PromiseLog::Decode(bytes));
  bytes.pop_back();
  EXPECT_FALSE(PromiseLog::Decode(bytes));
  EXPECT_FALSE(PromiseLog::Decode({}));
}

TEST_F(PromiseLogTest, UnopenablePathIsAStorageError) {
  std::vector<LoggedPromise> out;
  auto log = PromiseLog::Open(dir_.File("no-such-dir/x.log"), &out);
  ASSERT_FALSE(log);
  EXPECT_EQ(log.error().code, StoreErrc::kStorage);
  EXPECT_NE(log.error().message.find("no-such-dir"), std::string::npos);
}

}  // namespace
}  // namespace dvpn::payments
