// PacketHold: the bounded per-session queue of packets held at a paid session's forwarding limit
// (docs/full-tunnel.md "Held at the limit").

#include "tunnel/session/packet_hold.h"

#include <deque>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/allocation_counter.h"

namespace dvpn::tunnel::session {
namespace {

std::vector<uint8_t> Packet(size_t size, uint8_t tag) {
  std::vector<uint8_t> p(size);
  for (size_t i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(tag + i);
  return p;
}

ip::PacketInfo Info(uint16_t port) {
  ip::PacketInfo info;
  info.src_port = port;
  return info;
}

TEST(PacketHold, KeepsOrderBytesDirectionAndParse) {
  HoldBudget budget(16 << 20);
  PacketHold hold(budget, PacketHoldLimits{});
  EXPECT_TRUE(hold.empty());
  EXPECT_EQ(hold.buffer_bytes(), 0u) << "nothing taken before the first packet";
  ASSERT_TRUE(hold.Push(Packet(1400, 1), false, Info(1), 10));
  ASSERT_TRUE(hold.Push(Packet(60, 2), true, Info(2), 11));
  ASSERT_TRUE(hold.Push(Packet(1420, 3), false, Info(3), 12));
  EXPECT_EQ(hold.packets(), 3u);
  EXPECT_EQ(hold.bytes(), 1400u + 60 + 1420);
  EXPECT_EQ(budget.used(), hold.buffer_bytes());
  uint8_t tag = 1;
  for (size_t size : {1400u, 60u, 1420u}) {
    auto f = hold.front();
    EXPECT_EQ(std::vector<uint8_t>(f.packet.begin(), f.packet.end()), Packet(size, tag));
    EXPECT_EQ(f.to_client, tag == 2);
    EXPECT_EQ(f.info->src_port, tag);
    hold.Pop();
    ++tag;
  }
  EXPECT_TRUE(hold.empty());
  EXPECT_EQ(hold.bytes(), 0u);
  hold.Trim();
  EXPECT_EQ(budget.used(), 0u) << "an empty hold gives its buffer back";
}

// A flood of packets into one session: it holds its bound of bytes and of packets, no more.
TEST(PacketHold, AFloodStopsAtTheSessionBounds) {
  HoldBudget budget(16 << 20);
  PacketHoldLimits limits;
  PacketHold hold(budget, limits);
  size_t taken = 0;
  for (int i = 0; i < 100'000; ++i) taken += hold.Push(Packet(1420, 0), false, Info(0), 0);
  EXPECT_EQ(taken, limits.session_bytes / 1420);
  EXPECT_LE(hold.bytes(), limits.session_bytes);
  EXPECT_LE(budget.used(), limits.session_bytes);

  PacketHold small_packets(budget, limits);
  taken = 0;
  for (int i = 0; i < 100'000; ++i) taken += small_packets.Push(Packet(20, 0), false, Info(0), 0);
  EXPECT_EQ(taken, limits.session_packets);
}

// Many sessions flooding at once share the exit's budget: the buffers never pass it.
TEST(PacketHold, ManySessionsShareOneBudget) {
  PacketHoldLimits limits;
  HoldBudget budget(limits.total_bytes);
  std::vector<std::unique_ptr<PacketHold>> holds;
  size_t refused = 0;
  for (int s = 0; s < 64; ++s) {
    holds.push_back(std::make_unique<PacketHold>(budget, limits));
    for (int i = 0; i < 2'000; ++i) refused += !holds.back()->Push(Packet(1420, 0), true, Info(0), 0);
    EXPECT_LE(budget.used(), limits.total_bytes);
  }
  EXPECT_GT(refused, 0u);
  size_t held = 0;
  for (auto& h : holds) held += h->bytes();
  EXPECT_LE(held, limits.total_bytes);
  EXPECT_GT(held, limits.total_bytes / 2) << "the budget was used, not refused early";
  holds.clear();
  EXPECT_EQ(budget.used(), 0u) << "ended sessions give their buffers back";
}

TEST(PacketHold, OldPacketsAreDroppedNotSent) {
  HoldBudget budget(1 << 20);
  PacketHoldLimits limits;
  limits.max_age_ms = 100;
  PacketHold hold(budget, limits);
  ASSERT_TRUE(hold.Push(Packet(100, 1), false, Info(1), 1'000));
  ASSERT_TRUE(hold.Push(Packet(100, 2), false, Info(2), 1'050));
  EXPECT_EQ(hold.DropExpired(1'100), 0u) << "100 ms old is not yet too old";
  EXPECT_EQ(hold.DropExpired(1'101), 1u);
  EXPECT_EQ(hold.front().info->src_port, 2);
  EXPECT_EQ(hold.DropExpired(5'000), 1u);
  EXPECT_TRUE(hold.empty());
  EXPECT_EQ(hold.Clear(), 0u);
}

TEST(PacketHold, ABudgetTooSmallForTheFirstBufferRefuses) {
  HoldBudget budget(1000);
  PacketHold hold(budget, PacketHoldLimits{});
  EXPECT_FALSE(hold.Push(Packet(100, 0), false, Info(0), 0));
  EXPECT_EQ(budget.used(), 0u);
}

// Once the buffer has grown, holding and releasing allocate nothing per packet.
TEST(PacketHold, NoHeapAllocationPerPacketOnceGrown) {
  HoldBudget budget(16 << 20);
  PacketHold hold(budget, PacketHoldLimits{});
  const auto p = Packet(1420, 7);
  for (int i = 0; i < 700; ++i) ASSERT_TRUE(hold.Push(p, false, Info(0), 0));
  while (!hold.empty()) hold.Pop();
  dvpn::test::AllocationCounter allocations;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(hold.Push(p, false, Info(0), 0));
    for (int i = 0; i < 300; ++i) hold.Pop();  // partly drained: live bytes move to the front
    for (int i = 0; i < 200; ++i) hold.Pop();
  }
  EXPECT_EQ(allocations.count(), 0);
}

// Random pushes, pops, expiries, clears and trims against a plain deque: the same packets in
// the same order, the bounds kept, the budget equal to the buffer.
TEST(PacketHold, PropertyMatchesADequeModel) {
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    PacketHoldLimits limits;
    limits.session_bytes = 8 * 1024 + rng() % (256 * 1024);
    limits.session_packets = 4 + rng() % 300;
    limits.max_age_ms = 1 + rng() % 50;
    HoldBudget budget(limits.session_bytes * 2);
    PacketHold hold(budget, limits);
    struct M {
      std::vector<uint8_t> bytes;
      bool to_client;
      uint64_t at;
    };
    std::deque<M> model;
    size_t model_bytes = 0;
    uint64_t now = 0;
    for (int step = 0; step < 2'000; ++step) {
      const uint32_t op = rng() % 100;
      if (op < 55) {
        const size_t size = 1 + rng() % 1500;
        auto p = Packet(size, static_cast<uint8_t>(rng()));
        const bool dir = rng() % 2;
        const bool fits = model.size() < limits.session_packets &&
                          model_bytes + size <= limits.session_bytes;
        ASSERT_EQ(hold.Push(p, dir, Info(static_cast<uint16_t>(size)), now), fits)
            << "seed " << seed << " step " << step;
        if (fits) {
          model.push_back(M{p, dir, now});
          model_bytes += size;
        }
      } else if (op < 85) {
        if (model.empty()) continue;
        auto f = hold.front();
        ASSERT_EQ(std::vector<uint8_t>(f.packet.begin(), f.packet.end()), model.front().bytes)
            << "seed " << seed << " step " << step;
        ASSERT_EQ(f.to_client, model.front().to_client);
        ASSERT_EQ(f.info->src_port, model.front().bytes.size());
        hold.Pop();
        model_bytes -= model.front().bytes.size();
        model.pop_front();
      } else if (op < 93) {
        now += rng() % 20;
        size_t expected = 0;
        while (!model.empty() && now - model.front().at > limits.max_age_ms) {
          model_bytes -= model.front().bytes.size();
          model.pop_front();
          ++expected;
        }
        ASSERT_EQ(hold.DropExpired(now), expected);
      } else if (op < 96) {
        hold.Trim();
        if (model.empty()) {
          ASSERT_EQ(budget.used(), 0u);
        }
      } else if (op < 97) {
        ASSERT_EQ(hold.Clear(), model.size());
        model.clear();
        model_bytes = 0;
      }
      ASSERT_EQ(hold.packets(), model.size());
      ASSERT_EQ(hold.bytes(), model_bytes);
      ASSERT_LE(hold.buffer_bytes(), limits.session_bytes);
      ASSERT_EQ(budget.used(), hold.buffer_bytes());
    }
  }
}

}  // namespace
}  // namespace dvpn::tunnel::session
