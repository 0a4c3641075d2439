#include "grpc_log/grpc_log.h"

#include <grpc/support/log.h>

#include <google/protobuf/stubs/logging.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/log.h"

namespace dvpn::grpc_log {
namespace {

// One budget for both libraries: what a peer can make them say is bounded as a whole.
class RateLimit {
 public:
  // True when a message may be logged now. When a new window starts after messages were
  // dropped, `*dropped` receives their count (to be reported once), else 0.
  bool Allow(uint64_t* dropped) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    *dropped = 0;
    if (now - window_start_ >= kLibraryLogWindow) {
      window_start_ = now;
      used_ = 0;
      *dropped = dropped_;
      dropped_ = 0;
    }
    if (used_ >= kLibraryLogBurst) {
      ++dropped_;
      return false;
    }
    ++used_;
    return true;
  }

 private:
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_{};
  int used_ = 0;
  uint64_t dropped_ = 0;
};

RateLimit& Limit() {
  static RateLimit* limit = new RateLimit();  // never destroyed: gRPC may log during exit
  return *limit;
}

// The loggers are created once, before gRPC or protobuf can call back from another thread.
struct Loggers {
  std::shared_ptr<spdlog::logger> grpc = Logger("grpc");
  std::shared_ptr<spdlog::logger> protobuf = Logger("protobuf");
};

Loggers& Logs() {
  static Loggers* logs = new Loggers();  // never destroyed, as above
  return *logs;
}

void Emit(spdlog::logger& log, spdlog::level::level_enum level, const char* file, int line,
          std::string_view message) {
  if (!log.should_log(level)) return;
  uint64_t dropped = 0;
  if (!Limit().Allow(&dropped)) return;
  if (dropped > 0) {
    log.warn("{} messages from gRPC and protobuf dropped by the log rate limit", dropped);
  }
  // Only the file's base name: the build path says nothing useful.
  std::string_view where = file ? file : "?";
  if (auto slash = where.rfind('/'); slash != std::string_view::npos) {
    where.remove_prefix(slash + 1);
  }
  // The project's sink escapes the whole line (common/log.h); here only the length is cut.
  if (message.size() > kMaxLibraryLogMessage) {
    log.log(level, "{}:{}: {}...({} bytes)", where.substr(0, 64), line,
            message.substr(0, kMaxLibraryLogMessage), message.size());
  } else {
    log.log(level, "{}:{}: {}", where.substr(0, 64), line, message);
  }
}

void GrpcLog(gpr_log_func_args* args) {
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) level = spdlog::level::warn;
  Emit(*Logs().grpc, level, args->file, args->line, args->message ? args->message : "");
}

void ProtobufLog(google::protobuf::LogLevel severity, const char* file, int line,
                 const std::string& message) {
  spdlog::level::level_enum level = spdlog::level::debug;
  switch (severity) {
    case google::protobuf::LOGLEVEL_INFO:
      level = spdlog::level::debug;
      break;
    case google::protobuf::LOGLEVEL_WARNING:
    case google::protobuf::LOGLEVEL_ERROR:
      level = spdlog::level::warn;  // e.g. a peer's string field that is not UTF-8
      break;
    case google::protobuf::LOGLEVEL_FATAL:
      level = spdlog::level::critical;  // protobuf aborts next; say why, unlimited
      Logs().protobuf->critical("{}:{}: {}", file ? file : "?", line,
                                std::string_view(message).substr(0, kMaxLibraryLogMessage));
      return;
  }
  Emit(*Logs().protobuf, level, file, line, message);
}

}  // namespace

void RouteLibraryLogs() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)Logs();
    (void)Limit();
    gpr_set_log_function(&GrpcLog);
    google::protobuf::SetLogHandler(&ProtobufLog);
  });
  gpr_set_log_verbosity(spdlog::get_level() <= spdlog::level::debug ? GPR_LOG_SEVERITY_DEBUG
                                                                    : GPR_LOG_SEVERITY_ERROR);
}

}  // namespace dvpn::grpc_log
