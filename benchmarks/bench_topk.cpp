// Exact top-k magnitude selection (methods/detail/topk.hpp) over 16Mi elements, density 0.2
// (k = 0.2 n), one segment:
//
//   topk/f32_normal/threads:N    f32 normal values; the producer copies them into the tile
//   topk/f32_bf16vals/threads:N  the same values rounded to bf16 (stored as f32): ~1000
//                                distinct magnitudes, so the cut falls inside a huge tie
//   topk/tau_bf16/threads:N      the TIES case: tau = model - base from two bf16 tensors,
//                                widened and subtracted by the producer
//
// Bytes = the bytes one pass reads (4 n for the f32 cases, 2 x 2 n for tau) x read_passes,
// the elements the selection asked its producer for over n: the `passes` it made, plus the
// final scan of the one work item holding the cut (and, had pass 3 read only some items,
// just those). copy_ratio compares that read rate with the same-run memcpy rate (which
// counts read + written bytes), as the other benchmarks do. tie_cut = 1 when a tie
// straddled the cut (the index rule was needed).
#include "bench_common.hpp"

#include <alloy/core/bf16.hpp>
#include <alloy/methods/detail/topk.hpp>

#include <array>
#include <cstring>
#include <random>
#include <span>
#include <string>

namespace {

using alloy::bf16;
constexpr std::size_t n = alloy_bench::merge_elements;
constexpr std::size_t k = n / 5;

alloy_bench::buffer<float> normal_buffer(bool round_to_bf16) {
  alloy_bench::buffer<float> b(n);
  std::mt19937 rng(42);
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (std::size_t i = 0; i < n; ++i) {
    const float x = d(rng);
    b.data()[i] = round_to_bf16 ? static_cast<float>(bf16(x)) : x;
  }
  return b;
}

const alloy_bench::buffer<float>& f32_data(bool bf16_values) {
  static const auto normal = normal_buffer(false);
  static const auto rounded = normal_buffer(true);
  return bf16_values ? rounded : normal;
}

struct tau_data {
  alloy_bench::buffer<bf16> base = alloy_bench::random_buffer<bf16>(n, 21);
  alloy_bench::buffer<bf16> model = alloy_bench::random_buffer<bf16>(n, 22);
};
const tau_data& tau() {
  static const tau_data d;
  return d;
}

enum class source { f32_normal, f32_bf16vals, tau_bf16 };

void run(benchmark::State& state, source src, const std::string& key_prefix) {
  const auto threads = static_cast<unsigned>(state.range(0));
  const alloy::execution ex{threads};
  const std::array<std::size_t, 1> sizes{n};

  alloy::detail::topk_cut cut;
  double bytes_per_pass = 0;
  double rate = 0;
  alloy_bench::copy_baseline_rate(threads);
  auto measure = [&](const auto& produce) {
    cut = alloy::detail::topk_select(std::span<const std::size_t>(sizes), k, produce, ex);  // warm-up
    const double bytes = bytes_per_pass * static_cast<double>(cut.elements_read()) / static_cast<double>(n);
    rate = alloy_bench::timed_loop(state, bytes, [&] {
      cut = alloy::detail::topk_select(std::span<const std::size_t>(sizes), k, produce, ex);
      benchmark::DoNotOptimize(cut);
    });
    alloy_bench::report(state, bytes, threads, rate);
  };

  if (src == source::tau_bf16) {
    const auto& d = tau();
    bytes_per_pass = static_cast<double>(2 * n * sizeof(bf16));
    measure([&](std::size_t, std::size_t begin, std::size_t len, float* out) {
      const bf16* m = d.model.data() + begin;
      const bf16* b = d.base.data() + begin;
      for (std::size_t i = 0; i < len; ++i) out[i] = static_cast<float>(m[i]) - static_cast<float>(b[i]);
    });
  } else {
    const float* v = f32_data(src == source::f32_bf16vals).data();
    bytes_per_pass = static_cast<double>(n * sizeof(float));
    measure([v](std::size_t, std::size_t begin, std::size_t len, float* out) {
      std::memcpy(out, v + begin, len * sizeof(float));
    });
  }
  state.counters["passes"] = cut.passes;
  state.counters["read_passes"] = static_cast<double>(cut.elements_read()) / static_cast<double>(n);
  state.counters["tie_cut"] = cut.equal > cut.k - cut.greater ? 1 : 0;  // a tie straddled the cut

  alloy_bench::record_rate(key_prefix + std::to_string(threads), rate);
  if (threads > 1) {
    if (const double one = alloy_bench::recorded_rate(key_prefix + "1"); one > 0) state.counters["speedup_vs_1t"] = rate / one;
  }
}

void register_cases() {
  for (auto [src, name] : {std::pair{source::f32_normal, "topk/f32_normal"}, std::pair{source::f32_bf16vals, "topk/f32_bf16vals"},
                           std::pair{source::tau_bf16, "topk/tau_bf16"}}) {
    const std::string key = std::string(name) + "/";
    benchmark::RegisterBenchmark(name, [src = src, key](benchmark::State& state) { run(state, src, key); })
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
