// RunIoThread and NameThisThread (common/io_thread.h): the threads that carry the data path and
// the payments are named, so `top -H` and perf show them as what they are.

#include "common/io_thread.h"

#include <pthread.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

namespace dvpn {
namespace {

std::string OwnName() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

TEST(IoThread, RunsUnderItsComponentsName) {
  boost::asio::io_context io;
  std::string seen;
  boost::asio::post(io, [&] { seen = OwnName(); });
  std::promise<void> done;
  auto finished = done.get_future();
  std::thread t = RunIoThread(io, spdlog::default_logger(), "gossip", std::move(done));
  ASSERT_EQ(finished.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  t.join();
  EXPECT_EQ(seen, "gossip");
}

TEST(IoThread, LongNamesKeepTheirFirstFifteenCharacters) {
  std::string seen;
  std::thread([&] {
    NameThisThread("a-name-longer-than-fifteen");
    seen = OwnName();
  }).join();
  EXPECT_EQ(seen, "a-name-longer-t");
}

}  // namespace
}  // namespace dvpn
