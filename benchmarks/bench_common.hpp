// Shared helpers for alloy's benchmarks.
//
// Every case reports
//   bytes_per_second  bytes read + bytes written per iteration (state.SetBytesProcessed), and
//   copy_ratio        that rate divided by the rate of a plain memory copy measured in the
//                     same process with the same number of threads.
// copy_ratio, not an absolute time, is the figure to quote (docs/performance.md): 1.0 means
// the case moves its bytes as fast as std::memcpy moves a buffer of the same size class.
//
// The copy baseline copies copy_baseline_bytes (64 MiB, the size of one 16Mi-element f32
// tensor, far beyond the last-level cache) with std::memcpy: on one thread, or on two threads
// each copying one half. It is measured once per process and thread count, lazily, outside any
// timed region: copies repeated for ~0.3 s, the best rate kept. It is also registered as
// benchmark cases (copy_baseline/threads:N) so that its distribution shows in the output.
//
// All cases use real (wall-clock) time, so single- and multi-threaded rates compare.
#pragma once

#include <alloy/core/bf16.hpp>
#include <alloy/core/dtype.hpp>
#include <alloy/kernels/simd.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <string>
#include <thread>
#include <vector>

#ifndef ALLOY_BENCH_BUILD_TYPE
#define ALLOY_BENCH_BUILD_TYPE "unknown"
#endif

namespace alloy_bench {

// Elements per tensor in the merge benchmarks: 16Mi (64 MiB as f32, 32 MiB as bf16).
inline constexpr std::size_t merge_elements = std::size_t{16} << 20;
// Bytes the copy baseline copies (it reads them and writes them: 2x this per copy).
inline constexpr std::size_t copy_baseline_bytes = std::size_t{64} << 20;

// ---------------------------------------------------------------------------------------
// Buffers

struct free_deleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

// A page-aligned heap array of n T, every page touched (so no case pays first-touch faults).
template <class T>
class buffer {
 public:
  buffer() = default;
  explicit buffer(std::size_t n) : n_(n) {
    constexpr std::size_t align = 4096;
    const std::size_t bytes = std::max<std::size_t>(align, (n * sizeof(T) + align - 1) / align * align);
    p_.reset(static_cast<T*>(std::aligned_alloc(align, bytes)));
    if (!p_) throw std::bad_alloc();
    std::memset(static_cast<void*>(p_.get()), 0, bytes);
  }
  T* data() noexcept { return p_.get(); }
  const T* data() const noexcept { return p_.get(); }
  std::size_t size() const noexcept { return n_; }
  std::size_t bytes() const noexcept { return n_ * sizeof(T); }
  std::span<T> span() noexcept { return {data(), n_}; }
  std::span<const T> span() const noexcept { return {data(), n_}; }

 private:
  std::unique_ptr<T, free_deleter> p_;
  std::size_t n_ = 0;
};

// splitmix64: a counter-based generator, so the data depend only on (seed, index).
inline std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1), with 24 random bits.
inline float uniform_pm1(std::uint64_t seed, std::uint64_t i) noexcept {
  const std::uint64_t r = splitmix64((seed << 40) ^ i);
  return static_cast<float>(r >> 40) * 0x1p-23f - 1.0f;
}

template <class T>
void fill_random(std::span<T> out, std::uint64_t seed) {
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = T(uniform_pm1(seed, i));
}

// n elements of pseudo-random data, deterministic in (n, seed).
template <class T>
buffer<T> random_buffer(std::size_t n, std::uint64_t seed) {
  buffer<T> b(n);
  fill_random(b.span(), seed);
  return b;
}

// ---------------------------------------------------------------------------------------
// The copy baseline

// Copies n bytes with `threads` threads (the caller's thread is one of them), each copying
// one contiguous part. Threads are started per call, as alloy::parallel_for does.
inline void parallel_copy(void* dst, const void* src, std::size_t n, unsigned threads) {
  auto part = [&](unsigned k) {
    const std::size_t lo = n * k / threads, hi = n * (k + 1) / threads;
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  };
  if (threads <= 1) {
    part(0);
    return;
  }
  std::vector<std::jthread> pool;
  pool.reserve(threads - 1);
  for (unsigned k = 1; k < threads; ++k) pool.emplace_back(part, k);
  part(0);
}

struct copy_buffers {
  buffer<unsigned char> src{copy_baseline_bytes};
  buffer<unsigned char> dst{copy_baseline_bytes};
  copy_buffers() { fill_random(src.span(), 7); }
};

inline copy_buffers& copy_data() {
  static copy_buffers b;
  return b;
}

// Best copy rate (bytes read + written per second) with `threads` threads, measured once per
// process and thread count.
inline double copy_baseline_rate(unsigned threads) {
  static std::mutex m;
  static std::map<unsigned, double> rates;
  std::lock_guard lock(m);
  if (auto it = rates.find(threads); it != rates.end()) return it->second;
  auto& b = copy_data();
  using clock = std::chrono::steady_clock;
  parallel_copy(b.dst.data(), b.src.data(), b.src.size(), threads);  // warm up
  double best = 0;
  const auto stop = clock::now() + std::chrono::milliseconds(300);
  for (int runs = 0; runs < 3 || clock::now() < stop; ++runs) {
    const auto t0 = clock::now();
    parallel_copy(b.dst.data(), b.src.data(), b.src.size(), threads);
    benchmark::ClobberMemory();
    const std::chrono::duration<double> dt = clock::now() - t0;
    best = std::max(best, 2.0 * static_cast<double>(b.src.size()) / dt.count());
  }
  return rates[threads] = best;
}

// ---------------------------------------------------------------------------------------
// Reporting

// Runs the timed loop over f and returns its own wall-clock rate in bytes per second: the
// framework's figure for the same run up to the loop overhead (a few ns per iteration, where
// an iteration takes milliseconds). Dimensionless counters (copy_ratio, speedup_vs_1t) are
// computed from it: the framework's rate counters would print them with a "/s" unit.
template <class F>
double timed_loop(benchmark::State& state, double bytes_per_iteration, F&& f) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (auto _ : state) {
    f();
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> dt = clock::now() - t0;
  return dt.count() > 0 ? bytes_per_iteration * static_cast<double>(state.iterations()) / dt.count() : 0.0;
}

// Sets bytes_per_second and copy_ratio for a case that moved bytes_per_iteration (read +
// written) per iteration with `threads` threads at `rate` bytes/s (timed_loop's result).
inline void report(benchmark::State& state, double bytes_per_iteration, unsigned threads, double rate) {
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_iteration) * state.iterations());
  state.counters["copy_ratio"] = rate / copy_baseline_rate(threads);
}

// Rates of finished runs by key; the last run of a case (the one the framework reports) wins.
inline std::map<std::string, double>& rate_table() {
  static std::map<std::string, double> t;
  return t;
}
inline void record_rate(const std::string& key, double rate) { rate_table()[key] = rate; }
inline double recorded_rate(const std::string& key) {
  const auto it = rate_table().find(key);
  return it == rate_table().end() ? 0.0 : it->second;
}

// Registers copy_baseline/threads:1 and copy_baseline/threads:2.
inline void register_copy_baseline() {
  auto run = [](benchmark::State& state) {
    const auto threads = static_cast<unsigned>(state.range(0));
    auto& b = copy_data();
    const double bytes = 2.0 * static_cast<double>(b.src.size());
    copy_baseline_rate(threads);
    const double rate =
        timed_loop(state, bytes, [&] { parallel_copy(b.dst.data(), b.src.data(), b.src.size(), threads); });
    report(state, bytes, threads, rate);
  };
  benchmark::RegisterBenchmark("copy_baseline", run)
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

// ---------------------------------------------------------------------------------------
// Context and main

inline void add_context() {
#if ALLOY_FORCE_SCALAR
  benchmark::AddCustomContext("xsimd_arch", "none (ALLOY_FORCE_SCALAR)");
#else
  benchmark::AddCustomContext("xsimd_arch", xsimd::default_arch::name());
#endif
  benchmark::AddCustomContext("alloy_simd_width_f32", std::to_string(alloy::kernels::width<float>));
  benchmark::AddCustomContext("alloy_build_type", ALLOY_BENCH_BUILD_TYPE);
  benchmark::AddCustomContext("copy_baseline", std::to_string(copy_baseline_bytes >> 20) +
                                                   " MiB std::memcpy, best of ~0.3 s, per thread count");
  benchmark::AddCustomContext("hardware_concurrency", std::to_string(std::thread::hardware_concurrency()));
}

}  // namespace alloy_bench

// main() for a benchmark file: registers the copy baseline first, then the file's cases
// (register_cases() is defined by the file), and records the build's SIMD arch.
#define ALLOY_BENCHMARK_MAIN(register_cases)                                  \
  int main(int argc, char** argv) {                                           \
    alloy_bench::add_context();                                               \
    benchmark::Initialize(&argc, argv);                                       \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;         \
    alloy_bench::register_copy_baseline();                                    \
    register_cases();                                                         \
    benchmark::RunSpecifiedBenchmarks();                                      \
    benchmark::Shutdown();                                                    \
    return 0;                                                                 \
  }
