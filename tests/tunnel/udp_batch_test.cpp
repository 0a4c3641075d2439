// Batched datagram I/O (tunnel/session/udp_batch.h) over real loopback sockets: every mode
// (UDP_SEGMENT runs, sendmmsg, one call per datagram; UDP_GRO and recvmmsg on the receiving
// side) delivers the same datagrams in the same order, with the system calls each promises;
// runs break at another size or peer; refusals are counted, never fatal; the posted flush
// sends without being asked; the text form of PacketOffloads.
#include "tunnel/session/udp_batch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tests/support/allocation_counter.h"

namespace dvpn::tunnel::session {
namespace {

using Bytes = std::vector<uint8_t>;

PacketOffloads Only(bool gso, bool gro, bool mmsg) { return {false, gso, gro, mmsg}; }

class UdpBatchTest : public ::testing::Test {
 protected:
  udp::socket Bound() {
    udp::socket s(io_);
    s.open(udp::v4());
    s.bind(udp::endpoint(asio::ip::address_v4::loopback(), 0));
    s.non_blocking(true);
    return s;
  }
  // Datagram i: `size` bytes of value i.
  static void Queue(UdpSendBatch& batch, size_t size, uint8_t value, const udp::endpoint& to) {
    auto room = batch.Prepare(size);
    ASSERT_GE(room.size(), size);
    std::memset(room.data(), value, size);
    ASSERT_TRUE(batch.Commit(size, to));
  }
  // Everything `receiver` holds now, each datagram as bytes.
  static std::vector<Bytes> ReadAll(UdpReceiveBatch& receiver) {
    std::vector<Bytes> got;
    for (int i = 0; i < 100; ++i) {
      const size_t n = receiver.Read(64, [&](std::span<uint8_t> d, const udp::endpoint&) {
        got.emplace_back(d.begin(), d.end());
      });
      if (n == 0) break;
    }
    return got;
  }

  asio::io_context io_;
};

TEST_F(UdpBatchTest, EveryModeDeliversTheSameDatagramsInOrder) {
  for (const bool gso : {true, false}) {
    for (const bool gro : {true, false}) {
      for (const bool mmsg : {true, false}) {
        SCOPED_TRACE(Only(gso, gro, mmsg).ToString());
        udp::socket rx = Bound();
        udp::socket tx = Bound();
        UdpReceiveBatch receiver(rx.native_handle(), Only(gso, gro, mmsg), 2000);
        UdpSendBatch batch(io_.get_executor(), tx.native_handle(), false, Only(gso, gro, mmsg));
        const udp::endpoint to = rx.local_endpoint();
        // A run of 20 equal datagrams and a shorter last one, then another size.
        for (int i = 0; i < 20; ++i) Queue(batch, 1200, static_cast<uint8_t>(i), to);
        Queue(batch, 700, 20, to);
        Queue(batch, 1300, 21, to);
        Queue(batch, 1300, 22, to);
        batch.Flush();
        EXPECT_EQ(batch.counters().datagrams, 23u);
        EXPECT_EQ(batch.counters().dropped, 0u);
        if (gso && mmsg) {
          EXPECT_EQ(batch.counters().calls, 1u);  // two runs, one sendmmsg
          EXPECT_EQ(batch.counters().gso_runs, 2u);
        } else if (gso) {
          EXPECT_EQ(batch.counters().calls, 2u);  // one sendmsg per run
        } else if (mmsg) {
          EXPECT_EQ(batch.counters().calls, 1u);  // 23 messages, one sendmmsg
        } else {
          EXPECT_EQ(batch.counters().calls, 23u);
        }
        const auto got = ReadAll(receiver);
        ASSERT_EQ(got.size(), 23u);
        for (size_t i = 0; i < got.size(); ++i) {
          const size_t want = i < 20 ? 1200 : i == 20 ? 700 : 1300;
          ASSERT_EQ(got[i].size(), want) << i;
          EXPECT_EQ(got[i].front(), static_cast<uint8_t>(i));
          EXPECT_EQ(got[i].back(), static_cast<uint8_t>(i));
        }
        if (gro && mmsg) {
          EXPECT_LE(receiver.calls(), 3u);  // bursts, not 23 reads
        }
        if (!gro && !mmsg) {
          EXPECT_GE(receiver.calls(), 23u);
        }
      }
    }
  }
}

TEST_F(UdpBatchTest, RunsBreakAtAnotherPeerAndAfterAShorterDatagram) {
  udp::socket a = Bound();
  udp::socket b = Bound();
  udp::socket tx = Bound();
  UdpSendBatch batch(io_.get_executor(), tx.native_handle(), false, PacketOffloads{});
  Queue(batch, 500, 1, a.local_endpoint());
  Queue(batch, 500, 2, a.local_endpoint());
  Queue(batch, 500, 3, b.local_endpoint());  // another peer: a new run
  Queue(batch, 500, 4, a.local_endpoint());  // back to a: a new run again
  Queue(batch, 400, 5, a.local_endpoint());  // shorter: joins, and closes the run
  Queue(batch, 400, 6, a.local_endpoint());  // a new run
  batch.Flush();
  EXPECT_EQ(batch.counters().datagrams, 6u);
  EXPECT_EQ(batch.counters().gso_runs, 2u);  // {1,2} and {4,5}
  UdpReceiveBatch ra(a.native_handle(), PacketOffloads{}, 2000);
  UdpReceiveBatch rb(b.native_handle(), PacketOffloads{}, 2000);
  const auto at_a = ReadAll(ra);
  const auto at_b = ReadAll(rb);
  ASSERT_EQ(at_a.size(), 5u);
  ASSERT_EQ(at_b.size(), 1u);
  const uint8_t order[] = {1, 2, 4, 5, 6};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(at_a[i][0], order[i]);
  EXPECT_EQ(at_b[0][0], 3);
}

TEST_F(UdpBatchTest, ABigBurstLeavesInBoundedRunsAndArrivesWhole) {
  udp::socket rx = Bound();
  udp::socket tx = Bound();
  const int big = 4 * 1024 * 1024;
  ::setsockopt(rx.native_handle(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  ::setsockopt(rx.native_handle(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  UdpReceiveBatch receiver(rx.native_handle(), PacketOffloads{}, 2000);
  UdpSendBatch batch(io_.get_executor(), tx.native_handle(), false, PacketOffloads{});
  // 1000 datagrams of 1452 bytes: more than one run (64 segments, 65000 bytes) and more than
  // the arena (1 MiB): Prepare flushes on its own.
  for (int i = 0; i < 1000; ++i) Queue(batch, 1452, static_cast<uint8_t>(i), rx.local_endpoint());
  batch.Flush();
  EXPECT_EQ(batch.counters().datagrams + batch.counters().dropped, 1000u);
  EXPECT_LE(batch.counters().calls, 10u);
  const auto got = ReadAll(receiver);
  EXPECT_EQ(got.size(), batch.counters().datagrams);
  for (size_t i = 1; i < got.size(); ++i) {
    ASSERT_EQ(got[i].size(), 1452u);
  }
}

TEST_F(UdpBatchTest, TheFirstQueuedDatagramPostsAFlush) {
  udp::socket rx = Bound();
  udp::socket tx = Bound();
  UdpSendBatch batch(io_.get_executor(), tx.native_handle(), false, PacketOffloads{});
  Queue(batch, 100, 7, rx.local_endpoint());
  Queue(batch, 100, 8, rx.local_endpoint());
  EXPECT_FALSE(batch.empty());
  io_.poll();  // the end of this batch of work
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(batch.counters().datagrams, 2u);
  // Closed before the posted flush ran (the socket closing): nothing is sent, then or later.
  Queue(batch, 100, 9, rx.local_endpoint());
  batch.Close();
  io_.restart();
  io_.poll();
  EXPECT_EQ(batch.counters().datagrams, 2u);
  auto room = batch.Prepare(100);
  EXPECT_FALSE(batch.Commit(std::min<size_t>(room.size(), 100), rx.local_endpoint()));
  batch.Flush();
  EXPECT_EQ(batch.counters().datagrams, 2u);
  EXPECT_EQ(batch.counters().dropped, 1u);
}

TEST_F(UdpBatchTest, ARefusingPeerIsCountedAndTheRestStillLeaves) {
  // A connected socket to a port nobody holds: the kernel's ICMP answer makes later sends
  // fail with ECONNREFUSED; each refusal drops its own run only.
  udp::socket gone = Bound();
  const udp::endpoint dead = gone.local_endpoint();
  gone.close();
  udp::socket tx = Bound();
  tx.connect(dead);
  UdpSendBatch batch(io_.get_executor(), tx.native_handle(), true, PacketOffloads{});
  for (int round = 0; round < 5; ++round) {
    Queue(batch, 300, 1, dead);
    Queue(batch, 200, 2, dead);
    batch.Flush();
  }
  EXPECT_EQ(batch.counters().datagrams + batch.counters().dropped, 10u);
  EXPECT_GT(batch.counters().dropped, 0u);
}

TEST_F(UdpBatchTest, ReceiveDropsATruncatedDatagramWhole) {
  udp::socket rx = Bound();
  udp::socket tx = Bound();
  UdpReceiveBatch receiver(rx.native_handle(), Only(false, false, true), 100);
  Bytes big(500, 1), small(50, 2);
  tx.send_to(asio::buffer(big), rx.local_endpoint());
  tx.send_to(asio::buffer(small), rx.local_endpoint());
  const auto got = ReadAll(receiver);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], small);
}

// A busy socket does not keep one wakeup reading: no further call once max_datagrams were
// read, in every receive mode; the rest waits for the next Read, in order.
TEST_F(UdpBatchTest, ReadStopsCallingOnceItHasMaxDatagrams) {
  for (bool mmsg : {false, true}) {
    SCOPED_TRACE(mmsg ? "recvmmsg" : "recvmsg");
    udp::socket rx = Bound();
    udp::socket tx = Bound();
    UdpReceiveBatch receiver(rx.native_handle(), Only(false, false, mmsg), 2000);
    constexpr int kSent = 200;
    for (int i = 0; i < kSent; ++i) {
      tx.send_to(asio::buffer(Bytes(100, static_cast<uint8_t>(i))), rx.local_endpoint());
    }
    std::vector<uint8_t> order;
    auto take = [&](std::span<uint8_t> d, const udp::endpoint&) { order.push_back(d[0]); };
    const size_t first = receiver.Read(64, take, 10);
    EXPECT_GE(first, 10u);
    EXPECT_LE(first, mmsg ? UdpReceiveBatch::kMessages : 10u);
    size_t total = first;
    for (int i = 0; i < 100 && total < kSent; ++i) total += receiver.Read(64, take, 10);
    ASSERT_EQ(total, static_cast<size_t>(kSent));
    for (int i = 0; i < kSent; ++i) ASSERT_EQ(order[i], static_cast<uint8_t>(i)) << i;
  }
}

#if DVPN_COUNT_ALLOCATIONS
TEST_F(UdpBatchTest, NoHeapAllocationPerDatagram) {
  udp::socket rx = Bound();
  udp::socket tx = Bound();
  UdpReceiveBatch receiver(rx.native_handle(), PacketOffloads{}, 2000);
  UdpSendBatch batch(io_.get_executor(), tx.native_handle(), false, PacketOffloads{});
  const udp::endpoint to = rx.local_endpoint();
  Queue(batch, 1000, 0, to);
  batch.Flush();
  (void)ReadAll(receiver);
  size_t received = 0;
  dvpn::test::AllocationCounter allocations;
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 40; ++i) {
      auto room = batch.Prepare(1000);
      std::memset(room.data(), i, 1000);
      (void)batch.Commit(1000, to);
    }
    batch.Flush();
    received += receiver.Read(64, [](std::span<uint8_t>, const udp::endpoint&) {});
  }
  allocations.Stop();
  EXPECT_EQ(allocations.count(), 0);
  EXPECT_GT(received, 0u);
}
#endif

TEST(PacketOffloadsText, ParsesTheNamesAndRefusesOthers) {
  EXPECT_EQ(PacketOffloads::Parse("auto").value(), PacketOffloads{});
  EXPECT_EQ(PacketOffloads::Parse("off").value(), PacketOffloads::None());
  auto some = PacketOffloads::Parse("gso,mmsg").value();
  EXPECT_FALSE(some.tun);
  EXPECT_TRUE(some.gso);
  EXPECT_FALSE(some.gro);
  EXPECT_TRUE(some.mmsg);
  EXPECT_EQ(some.ToString(), "gso,mmsg");
  EXPECT_EQ(PacketOffloads{}.ToString(), "tun,gso,gro,mmsg");
  EXPECT_EQ(PacketOffloads::None().ToString(), "off");
  for (const char* bad : {"", "fast", "gso,", ",gso", "gso,,gro", "GSO", "auto,gso"}) {
    EXPECT_FALSE(PacketOffloads::Parse(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace dvpn::tunnel::session
