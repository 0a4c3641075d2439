#include "common/log.h"

#include <mutex>
#include <string_view>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "common/text.h"

namespace dvpn {
namespace {

// Messages often carry text from outside (a peer's host name, a library's parse error): each one
// is escaped (common/text.h) and cut to kMaxMessage bytes before it reaches stderr, so nothing
// can steer the operator's terminal or forge a line.
constexpr size_t kMaxMessage = 4096;

class EscapingSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit EscapingSink(spdlog::sink_ptr inner) : inner_(std::move(inner)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string escaped =
        EscapeForLog(std::string_view(msg.payload.data(), msg.payload.size()), kMaxMessage);
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
    inner_->log(copy);
  }
  void flush_() override { inner_->flush(); }
  void set_pattern_(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter_(std::unique_ptr<spdlog::formatter> formatter) override {
    inner_->set_formatter(std::move(formatter));
  }

 private:
  spdlog::sink_ptr inner_;
};

}  // namespace

std::shared_ptr<spdlog::logger> Logger(const std::string& name) {
  static std::mutex mu;
  static const auto sink =
      std::make_shared<EscapingSink>(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  std::lock_guard lock(mu);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  logger->set_level(spdlog::get_level());
  spdlog::register_logger(logger);
  return logger;
}

bool SetLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  return true;
}

void LogTaskFailure(spdlog::logger& log, const char* component, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    log.error("{}: task failed: {}", component, x.what());
  } catch (...) {
    log.error("{}: task failed", component);
  }
}

}  // namespace dvpn
