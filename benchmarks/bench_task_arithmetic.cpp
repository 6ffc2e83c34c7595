// Linear merges through the public API, over 16Mi-element tensors:
//
//   task_arithmetic/<dtype>/threads:N  base + 3 models, weights {0.5, 0.3, 0.2}, lambda 1
//   uniform_soup/<dtype>/threads:N     3 models
//
// Inputs and output in the same dtype (F32 or BF16), computed in float. Bytes = every input
// read once + the output written once (5 tensors for task arithmetic, 4 for the soup).
// threads:N is alloy::execution{N}; copy_ratio compares with the N-thread copy baseline, and
// the threads:2 cases report speedup_vs_1t, their rate over the same case's threads:1 rate
// (measured earlier in the same process).
#include "bench_common.hpp"

#include <alloy/methods/soup.hpp>
#include <alloy/methods/task_arithmetic.hpp>

#include <array>
#include <span>
#include <string>
#include <vector>

namespace {

using alloy::bf16;

template <class T>
struct merge_data {
  static constexpr std::size_t n = alloy_bench::merge_elements;
  alloy_bench::buffer<T> base = alloy_bench::random_buffer<T>(n, 10);
  std::array<alloy_bench::buffer<T>, 3> models{alloy_bench::random_buffer<T>(n, 11), alloy_bench::random_buffer<T>(n, 12),
                                               alloy_bench::random_buffer<T>(n, 13)};
  alloy_bench::buffer<T> out{n};

  std::vector<alloy::tensor_view> model_views() const {
    std::vector<alloy::tensor_view> v;
    for (const auto& m : models) v.emplace_back(m.span());
    return v;
  }
};

template <class T>
merge_data<T>& data() {
  static merge_data<T> d;
  return d;
}

enum class method { task_arithmetic, uniform_soup };

template <class T>
void run(benchmark::State& state, method m, const std::string& key_prefix) {
  auto& d = data<T>();
  const auto threads = static_cast<unsigned>(state.range(0));
  const std::size_t tensors = m == method::task_arithmetic ? 5 : 4;  // inputs + output
  const double bytes = static_cast<double>(tensors * d.n * sizeof(T));
  const auto models = d.model_views();
  const alloy::tensor_view base = d.base.span();
  const alloy::mutable_tensor_view out = d.out.span();
  const std::vector<double> weights{0.5, 0.3, 0.2};
  alloy::task_arithmetic_options ta;
  ta.lambda = 1.0;
  ta.exec = alloy::execution{threads};
  alloy::soup_options so;
  so.exec = alloy::execution{threads};

  alloy_bench::copy_baseline_rate(threads);
  const double rate = alloy_bench::timed_loop(state, bytes, [&] {
    if (m == method::task_arithmetic)
      alloy::task_arithmetic(base, models, weights, out, ta);
    else
      alloy::uniform_soup(models, out, so);
  });
  alloy_bench::report(state, bytes, threads, rate);

  alloy_bench::record_rate(key_prefix + std::to_string(threads), rate);
  if (threads > 1) {
    if (const double one = alloy_bench::recorded_rate(key_prefix + "1"); one > 0) state.counters["speedup_vs_1t"] = rate / one;
  }
}

template <class T>
void register_method(method m) {
  const std::string name = std::string(m == method::task_arithmetic ? "task_arithmetic/" : "uniform_soup/") +
                           std::string(alloy::dtype_name(alloy::dtype_of<T>));
  benchmark::RegisterBenchmark(name.c_str(), [m, name](benchmark::State& state) { run<T>(state, m, name + "/"); })
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void register_cases() {
  register_method<float>(method::task_arithmetic);
  register_method<bf16>(method::task_arithmetic);
  register_method<float>(method::uniform_soup);
  register_method<bf16>(method::uniform_soup);
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
