// Shared pieces of the `alloy` command-line tool: exit codes and error lines, sizes and
// durations for people, the progress bar.
#pragma once

#include <alloy/core/execution.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace alloy_cli {

// Exit statuses: 0 success, 1 a merge or I/O error, 2 a usage or recipe error.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

// A mistake in the command line the tool finds itself (CLI11 reports the others).
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs f, turning every exception into one line on stderr ("alloy: error: ...") and its
// exit status: usage_error and alloy::io::recipe_error 2, other errors 1.
int run_guarded(const std::function<int()>& f);

void print_warnings(const std::vector<std::string>& warnings);

// "1.5 GB", "640 KB", "12 B" (decimal units, as file sizes are shown by most tools).
std::string human_bytes(double bytes);
// "0.84 s", "3 min 05 s", "1 h 02 min".
std::string human_seconds(double seconds);

// A size as a user writes it: "5GB", "500MB", "1.5GiB", "1000000" (bytes). Decimal (KB, MB,
// GB, TB) and binary (KiB, MiB, GiB, TiB) units, case-insensitive; throws usage_error.
std::uint64_t parse_size(const std::string& text, const std::string& option);

// The threads option: 0 means every hardware thread.
alloy::execution threads_option(int threads);

// The bandwidth of a single-threaded memcpy of 64 MiB, in bytes per second (read + write),
// measured in ~50 ms: the baseline the dry run's time estimate uses.
double measure_copy_bandwidth();

// A one-line progress bar on stderr, redrawn at most 10 times a second: tensors done,
// bytes/s, ETA. Disabled, it prints nothing.
class progress_bar {
 public:
  struct state {
    std::size_t tensors_done = 0, tensors_total = 0;
    std::uint64_t bytes_done = 0, bytes_total = 0;
    double seconds = 0;
  };
  explicit progress_bar(bool enabled) : enabled_(enabled) {}
  void update(const state& p);
  void finish();  // erases the bar
  bool enabled() const noexcept { return enabled_; }

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

bool stderr_is_terminal();

}  // namespace alloy_cli
