#pragma once
// The thread that runs a component's Asio io_context (the gossip transport, the dashboard).

#include <pthread.h>

#include <exception>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

namespace dvpn {

// Names the calling thread for `top -H`, perf and gdb (the kernel keeps 15 characters). A thread
// otherwise keeps the name of the thread that started it (a gRPC handler's, say).
inline void NameThisThread(const char* name) {
  const std::string kept = std::string(name).substr(0, 15);
  pthread_setname_np(pthread_self(), kept.c_str());
}

// A thread named `component` that runs `io` (an Asio io_context) until it runs out of work or is
// stopped. An exception escaping a handler is our bug: it is logged on `log` as "<component>: io
// handler failed: <what>" and the loop goes on. `done` is set when the thread ends.
template <class IoContext>
std::thread RunIoThread(IoContext& io, std::shared_ptr<spdlog::logger> log, const char* component,
                        std::promise<void> done) {
  return std::thread([&io, log = std::move(log), component, done = std::move(done)]() mutable {
    NameThisThread(component);
    for (;;) {
      try {
        io.run();
        break;
      } catch (const std::exception& e) {
        log->error("{}: io handler failed: {}", component, e.what());
      }
    }
    done.set_value();
  });
}

}  // namespace dvpn
