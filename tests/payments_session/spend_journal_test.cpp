// SpendJournal (docs/payments.md §5, "The daily cap across restarts"): the file format, what is
// read back, when the file is written, and that a reservation always covers what was spent and
// never passes the cap.

#include "payments/spend_journal.h"

#include <sys/stat.h>

#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "tests/support/subprocess.h"

namespace dvpn::payments {
namespace {

constexpr Amount Micro(uint64_t v) { return Amount::FromMicro(v); }

void WriteAll(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

class SpendJournalTest : public ::testing::Test {
 protected:
  dvpn::testing::TempDir dir_;
  std::string path_ = dir_.File("spend");
};

TEST_F(SpendJournalTest, MissingFileIsEmpty) {
  auto j = SpendJournal::Open(path_, Micro(3200));
  ASSERT_TRUE(j) << j.error().message;
  EXPECT_EQ(j->ReservedFor(20000), Amount::Zero());
  EXPECT_EQ(j->writes(), 0u);
}

TEST_F(SpendJournalTest, CoverReservesOneBlockAheadAndReadsBack) {
  auto j = SpendJournal::Open(path_, Micro(3200));  // block = 100
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->Cover(20000, Micro(10)));
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 20000 110\n");
  EXPECT_EQ(j->ReservedFor(20000), Micro(110));
  ASSERT_TRUE(j->Cover(20000, Micro(110)));  // covered: no write
  EXPECT_EQ(j->writes(), 1u);
  ASSERT_TRUE(j->Cover(20000, Micro(111)));
  EXPECT_EQ(j->writes(), 2u);
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 20000 211\n");

  auto again = SpendJournal::Open(path_, Micro(3200));
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->ReservedFor(20000), Micro(211));
  EXPECT_EQ(again->ReservedFor(20001), Amount::Zero());  // a new day starts from zero
  EXPECT_EQ(again->ReservedFor(19999), Micro(211));      // the clock went back: stricter
}

TEST_F(SpendJournalTest, ReservationStopsAtTheCap) {
  auto j = SpendJournal::Open(path_, Micro(3200));
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->Cover(7, Micro(3150)));
  EXPECT_EQ(j->ReservedFor(7), Micro(3200));
  ASSERT_TRUE(j->Cover(7, Micro(3200)));
  EXPECT_EQ(j->writes(), 1u);
}

TEST_F(SpendJournalTest, NewDayStartsAgainAndClockGoingBackKeepsTheLaterDay) {
  auto j = SpendJournal::Open(path_, Micro(3200));
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->Cover(7, Micro(3000)));
  ASSERT_TRUE(j->Cover(8, Micro(5)));
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 8 105\n");
  ASSERT_TRUE(j->Cover(7, Micro(50)));  // day 7 again (clock back): counted on day 8
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 8 105\n");
  ASSERT_TRUE(j->Cover(7, Micro(106)));
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 8 206\n");
}

TEST_F(SpendJournalTest, TrimGivesBackTheUnusedReservationOnACleanStop) {
  auto j = SpendJournal::Open(path_, Micro(3200));
  ASSERT_TRUE(j);
  ASSERT_TRUE(j->Cover(9, Micro(40)));
  EXPECT_EQ(j->ReservedFor(9), Micro(140));
  ASSERT_TRUE(j->Trim(9, Micro(40)));
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 9 40\n");
  ASSERT_TRUE(j->Trim(9, Micro(60)));  // never raises
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 9 40\n");
  ASSERT_TRUE(j->Trim(10, Micro(0)));  // another day: untouched
  EXPECT_EQ(dvpn::testing::ReadFile(path_), "dvpn-daily-spend v1 9 40\n");
}

TEST_F(SpendJournalTest, BadFilesAreRefusedWithTheirName) {
  const std::vector<std::string> bad = {
      "",
      "dvpn-daily-spend v1 5 100",          // no newline: truncated
      "dvpn-daily-spend v2 5 100\n",        // unknown version
      "dvpn-daily-spend v1 5\n",            // missing field
      "dvpn-daily-spend v1 5 -1\n",         // sign
      "dvpn-daily-spend v1 5 1e3\n",        // not an integer
      "dvpn-daily-spend v1 5 100 7\n",      // extra field
      "dvpn-daily-spend v1 5 99999999999999999999999\n",  // above uint64
      std::string(4096, 'x'),
  };
  for (const auto& text : bad) {
    WriteAll(path_, text);
    auto j = SpendJournal::Open(path_, Micro(3200));
    ASSERT_FALSE(j) << "accepted: " << text.substr(0, 60);
    EXPECT_EQ(j.error().code, JournalErrc::kCorrupt);
    EXPECT_NE(j.error().message.find(path_), std::string::npos) << j.error().message;
  }
}

TEST_F(SpendJournalTest, NoCapIsACallerError) {
  auto j = SpendJournal::Open(path_, Amount::Zero());
  ASSERT_FALSE(j);
  EXPECT_EQ(j.error().code, JournalErrc::kNoCap);
}

TEST_F(SpendJournalTest, UnwritableJournalFailsCover) {
  auto j = SpendJournal::Open(dir_.File("missing-dir/spend"), Micro(3200));
  ASSERT_TRUE(j);
  auto r = j->Cover(3, Micro(1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, JournalErrc::kIo);
  EXPECT_NE(r.error().message.find("missing-dir"), std::string::npos) << r.error().message;
  EXPECT_EQ(j->ReservedFor(3), Amount::Zero());  // nothing was reserved
}

// Property: for random growing spending within the cap, with restarts at random points, the
// reservation on disk always covers what was spent, never passes the cap, and the file is
// written at most once per block (plus one) per day.
TEST_F(SpendJournalTest, PropertyReservationCoversSpendingWithinCap) {
  std::mt19937_64 rng(0x5e11d);
  for (int round = 0; round < 20; ++round) {
    std::remove(path_.c_str());
    const Amount cap = Micro(1 + rng() % 1'000'000);
    auto j = std::make_unique<SpendJournal>(*SpendJournal::Open(path_, cap));
    uint64_t spent = 0;
    uint64_t writes = 0;
    for (int step = 0; step < 200 && spent < cap.micro(); ++step) {
      spent = std::min(cap.micro(), spent + rng() % (cap.micro() / 16 + 2));
      ASSERT_TRUE(j->Cover(42, Micro(spent)));
      const Amount reserved = j->ReservedFor(42);
      ASSERT_GE(reserved, Micro(spent));
      ASSERT_LE(reserved, cap);
      if (rng() % 10 == 0) {  // restart: what is read back is what was reserved
        writes += j->writes();
        j = std::make_unique<SpendJournal>(*SpendJournal::Open(path_, cap));
        ASSERT_EQ(j->ReservedFor(42), reserved);
      }
    }
    writes += j->writes();
    EXPECT_LE(writes, SpendJournal::kBlocksPerDay + 1) << "cap " << cap.micro();
  }
}

}  // namespace
}  // namespace dvpn::payments
