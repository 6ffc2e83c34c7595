// Execution policy and the one parallel loop alloy uses.
//
// execution{threads}: 0 means std::thread::hardware_concurrency(). Work is split into items
// whose boundaries do not depend on the thread count, and each item writes a disjoint part
// of the output, so results are identical for any thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace alloy {

struct execution {
  unsigned threads = 0;
};

inline unsigned resolve_threads(const execution& ex) noexcept {
  if (ex.threads != 0) return ex.threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

// Calls f(i) for every i in [0, n), items claimed in order by up to `threads` threads (the
// caller's thread is one of them). The first exception stops further claims and is
// rethrown after every thread has joined.
template <class F>
void parallel_for(std::size_t n, const execution& ex, F&& f) {
  const std::size_t t = std::min<std::size_t>(resolve_threads(ex), n);
  if (t <= 1) {
    for (std::size_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first;
  std::mutex m;
  auto work = [&] {
    for (std::size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < n;) {
      try {
        f(i);
      } catch (...) {
        std::lock_guard lock(m);
        if (!first) first = std::current_exception();
        failed = true;
      }
    }
  };
  {
    std::vector<std::jthread> pool;
    pool.reserve(t - 1);
    for (std::size_t k = 1; k < t; ++k) pool.emplace_back(work);
    work();
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace alloy
