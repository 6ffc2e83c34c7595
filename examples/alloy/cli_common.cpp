#include "cli_common.hpp"

#include <alloy/error.hpp>
#include <alloy/io/recipe_parameters.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <new>

#include <unistd.h>

namespace alloy_cli {

namespace {

// One line: newlines and tabs become spaces.
std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return s;
}

}  // namespace

int run_guarded(const std::function<int()>& f) {
  auto report = [](const char* what, int code) {
    std::cerr << "alloy: error: " << one_line(what) << '\n';
    return code;
  };
  try {
    return f();
  } catch (const usage_error& e) {
    return report(e.what(), exit_usage);
  } catch (const alloy::io::recipe_error& e) {
    return report(e.what(), exit_usage);
  } catch (const alloy::error& e) {
    return report(e.what(), exit_failure);
  } catch (const std::bad_alloc&) {
    return report("out of memory", exit_failure);
  } catch (const std::exception& e) {
    return report(e.what(), exit_failure);
  }
}

void print_warnings(const std::vector<std::string>& warnings) {
  for (const auto& w : warnings) std::cerr << "alloy: warning: " << one_line(w) << '\n';
}

std::string human_bytes(double bytes) {
  static const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (bytes >= 1000 && u < 5) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  else
    std::snprintf(buf, sizeof buf, bytes < 10 ? "%.2f %s" : bytes < 100 ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

std::string human_seconds(double s) {
  char buf[48];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) {
    std::snprintf(buf, sizeof buf, s < 10 ? "%.2f s" : "%.1f s", s);
  } else if (s < 3600) {
    const auto t = static_cast<long>(s + 0.5);
    std::snprintf(buf, sizeof buf, "%ld min %02ld s", t / 60, t % 60);
  } else {
    const auto t = static_cast<long>(s / 60 + 0.5);
    std::snprintf(buf, sizeof buf, "%ld h %02ld min", t / 60, t % 60);
  }
  return buf;
}

std::uint64_t parse_size(const std::string& text, const std::string& option) {
  auto bad = [&]() -> std::uint64_t {
    throw usage_error(option + " '" + text + "' is not a size (write e.g. 5GB, 500MB, 2GiB or a number of bytes)");
  };
  const char* b = text.data();
  const char* e = b + text.size();
  double value = 0;
  const auto r = std::from_chars(b, e, value);
  if (r.ec != std::errc() || r.ptr == b || !(value > 0) || !std::isfinite(value)) return bad();
  std::string unit(r.ptr, e);
  unit.erase(0, unit.find_first_not_of(' '));
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "b")
    scale = 1;
  else if (unit == "kb" || unit == "k")
    scale = 1e3;
  else if (unit == "mb" || unit == "m")
    scale = 1e6;
  else if (unit == "gb" || unit == "g")
    scale = 1e9;
  else if (unit == "tb" || unit == "t")
    scale = 1e12;
  else if (unit == "kib")
    scale = 1024.0;
  else if (unit == "mib")
    scale = 1024.0 * 1024;
  else if (unit == "gib")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "tib")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else
    return bad();
  const double bytes = std::floor(value * scale);
  if (bytes < 1 || bytes > 1.8e19) return bad();
  return static_cast<std::uint64_t>(bytes);
}

alloy::execution threads_option(int threads) {
  if (threads < 0) throw usage_error("--threads " + std::to_string(threads) + " is negative (0 means every core)");
  return alloy::execution{static_cast<unsigned>(threads)};
}

double measure_copy_bandwidth() {
  constexpr std::size_t n = std::size_t{64} << 20;
  std::unique_ptr<char[]> a(new char[n]), b(new char[n]);
  std::memset(a.get(), 1, n);
  std::memset(b.get(), 2, n);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.get(), a.get(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    a[rep] = b[n - 1 - static_cast<std::size_t>(rep)];  // keep the copies observable
  }
  return 2.0 * static_cast<double>(n) / best;
}

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

void progress_bar::update(const state& p) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool done = p.tensors_done == p.tensors_total;
  if (drawn_ && !done && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  const double frac = p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1.0;
  constexpr int width = 30;
  const int filled = std::clamp(static_cast<int>(frac * width), 0, width);
  const double rate = p.seconds > 0 ? static_cast<double>(p.bytes_done) / p.seconds : 0;
  const double eta = rate > 0 ? static_cast<double>(p.bytes_total - p.bytes_done) / rate : NAN;
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(width - filled), '.');
  char line[200];
  std::snprintf(line, sizeof line, "\r[%s] %3.0f%%  %zu/%zu tensors  %s/s  ETA %s\x1b[K", bar.c_str(), frac * 100,
                p.tensors_done, p.tensors_total, human_bytes(rate).c_str(),
                p.seconds < 0.2 ? "..." : human_seconds(eta).c_str());
  std::cerr << line << std::flush;
}

void progress_bar::finish() {
  if (enabled_ && drawn_) std::cerr << "\r\x1b[K" << std::flush;
  drawn_ = false;
}

}  // namespace alloy_cli
