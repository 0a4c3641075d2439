#pragma once
// Headless Chromium for tests that look at a page as a browser renders it (the node's
// dashboard): dump the DOM after the page's scripts have run, or take a screenshot.
//
// Chromium is found at $DVPN_CHROMIUM, else /usr/bin/chromium (Debian package `chromium`), else
// /usr/bin/chromium-browser. Each run gets a fresh --user-data-dir (removed afterwards) and runs
// in its own process group, so that on the timeout the whole browser (its zygote, renderer and
// GPU processes too) is killed by that group id and reaped. Every wait is bounded.
//
// Thread-compatible: runs are independent of each other.

#include <chrono>
#include <expected>
#include <optional>
#include <string>
#include <vector>

namespace dvpn::testing {

struct ChromiumRun {
  int exit_code = -1;       // the exit status; -1 when killed (by a signal or the timeout)
  bool timed_out = false;   // killed at the timeout
  std::string stdout_text;  // all of it (--dump-dom writes the DOM here)
  std::string stderr_tail;  // its last few KB, for failure messages
};

// The Chromium binary, or nullopt when none is installed.
std::optional<std::string> FindChromium();

// Whether the test should skip rather than fail when Chromium is absent: $DVPN_NO_CHROMIUM=1.
bool ChromiumOptional();

// Runs Chromium headless: `--headless --disable-gpu --no-sandbox` plus flags that keep it quiet
// and off the network (no first-run, sync, component updates, ...), a temp --user-data-dir, then
// `args` (e.g. {"--dump-dom", url}). Fails (a message) when Chromium is not installed or cannot
// be started; a run that exits non-zero or times out is a ChromiumRun saying so.
std::expected<ChromiumRun, std::string> RunChromium(const std::vector<std::string>& args,
                                                    std::chrono::milliseconds timeout);

// The DOM of `url` after `virtual_time_ms` of the page's (virtual) time, as Chromium serializes
// it. An error names what went wrong (exit code, timeout, Chromium's stderr tail).
std::expected<std::string, std::string> DumpDom(const std::string& url, int virtual_time_ms,
                                                std::chrono::milliseconds timeout);

// A PNG screenshot of `url` at width x height, written to `png_path`, taken after
// `virtual_time_ms` of the page's time.
std::expected<void, std::string> Screenshot(const std::string& url, const std::string& png_path,
                                            int width, int height, int virtual_time_ms,
                                            std::chrono::milliseconds timeout);

}  // namespace dvpn::testing

// At the top of a GoogleTest test that needs Chromium: without it the test fails with a clear
// message, or is skipped when $DVPN_NO_CHROMIUM=1. (Uses GoogleTest's macros at the call site.)
#define DVPN_REQUIRE_CHROMIUM()                                                               \
  do {                                                                                        \
    if (!::dvpn::testing::FindChromium()) {                                                   \
      if (::dvpn::testing::ChromiumOptional()) GTEST_SKIP() << "DVPN_NO_CHROMIUM=1: skipped"; \
      FAIL() << "Chromium is not installed (Debian package `chromium`); set "                 \
                "DVPN_NO_CHROMIUM=1 to skip the browser tests";                               \
    }                                                                                         \
  } while (0)
