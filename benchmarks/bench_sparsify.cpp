// Sparsifying merges through the public API, over 16Mi-element tensors, density 0.2:
//
//   ties/<dtype>/threads:N             base + 3 models (mergekit preset)
//   magnitude_prune/<dtype>/threads:N  base + 3 models (trim + weighted sum)
//   dare_ties/<dtype>/threads:N        base + 3 models (mergekit preset: L1 rescale)
//   della/<dtype>/threads:N            base + 3 models as 4096 x 4096 (mergekit preset, epsilon 0.1)
//   task_arithmetic/<dtype>/threads:N  the same data, for the ratio the issue asks for
//
// Inputs and output in the same dtype (F32 or BF16). Bytes = every input read once + the
// output written once (5 tensors), i.e. the merge's minimal traffic: the selection passes
// are extra work that lowers copy_ratio, which is the point of the figure. Models are
// base + small noise, like fine-tunes. vs_task_arithmetic is the rate over task arithmetic's
// rate for the same dtype and thread count, measured earlier in the same process.
#include "bench_common.hpp"

#include <alloy/methods/dare.hpp>
#include <alloy/methods/della.hpp>
#include <alloy/methods/magnitude_prune.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <array>
#include <string>
#include <vector>

namespace {

using alloy::bf16;

template <class T>
struct sparse_data {
  static constexpr std::size_t n = alloy_bench::merge_elements;
  alloy_bench::buffer<T> base = alloy_bench::random_buffer<T>(n, 20);
  std::array<alloy_bench::buffer<T>, 3> models{fine_tune(21), fine_tune(22), fine_tune(23)};
  alloy_bench::buffer<T> out{n};

  alloy_bench::buffer<T> fine_tune(std::uint64_t seed) const {
    alloy_bench::buffer<T> m(n);
    for (std::size_t i = 0; i < n; ++i)
      m.span()[i] = static_cast<T>(static_cast<float>(base.span()[i]) + 0.01f * alloy_bench::uniform_pm1(seed, i));
    return m;
  }
  std::vector<alloy::tensor_view> model_views() const {
    std::vector<alloy::tensor_view> v;
    for (const auto& m : models) v.emplace_back(m.span());
    return v;
  }
};

template <class T>
sparse_data<T>& data() {
  static sparse_data<T> d;
  return d;
}

enum class method { ties, magnitude_prune, dare_ties, della, task_arithmetic };

const char* name_of(method m) {
  switch (m) {
    case method::ties: return "ties";
    case method::magnitude_prune: return "magnitude_prune";
    case method::dare_ties: return "dare_ties";
    case method::della: return "della";
    case method::task_arithmetic: return "task_arithmetic";
  }
  return "?";
}

template <class T>
void run(benchmark::State& state, method m) {
  auto& d = data<T>();
  const auto threads = static_cast<unsigned>(state.range(0));
  const double bytes = static_cast<double>(5 * d.n * sizeof(T));
  const auto models = d.model_views();
  const alloy::tensor_view base = d.base.span();
  const alloy::mutable_tensor_view out = d.out.span();
  const std::vector<double> weights{0.5, 0.3, 0.2};
  const alloy::execution ex{threads};

  alloy_bench::copy_baseline_rate(threads);
  const double rate = alloy_bench::timed_loop(state, bytes, [&] {
    switch (m) {
      case method::ties: alloy::ties(base, models, weights, out, {.density = 0.2, .exec = ex}); break;
      case method::magnitude_prune:
        alloy::magnitude_prune(base, models, weights, out, {.density = 0.2, .exec = ex});
        break;
      case method::dare_ties: {
        alloy::dare_options o;
        o.density = 0.2;
        o.exec = ex;
        alloy::dare_ties(base, models, weights, out, o);
        break;
      }
      case method::della: {
        alloy::della_options o;
        o.density = 0.2;
        o.epsilon = 0.1;
        o.shape = {4096, 4096};  // DELLA ranks within rows: a 16Mi-entry row would be one sort
        o.exec = ex;
        alloy::della(base, models, weights, out, o);
        break;
      }
      case method::task_arithmetic: alloy::task_arithmetic(base, models, weights, out, {.exec = ex}); break;
    }
  });
  alloy_bench::report(state, bytes, threads, rate);
  const std::string dt(alloy::dtype_name(alloy::dtype_of<T>));
  alloy_bench::record_rate(std::string(name_of(m)) + dt + std::to_string(threads), rate);
  if (m != method::task_arithmetic)
    if (const double ta = alloy_bench::recorded_rate("task_arithmetic" + dt + std::to_string(threads)); ta > 0)
      state.counters["vs_task_arithmetic"] = rate / ta;
  if (threads > 1)
    if (const double one = alloy_bench::recorded_rate(std::string(name_of(m)) + dt + "1"); one > 0)
      state.counters["speedup_vs_1t"] = rate / one;
}

template <class T>
void register_method(method m) {
  const std::string name = std::string(name_of(m)) + "/" + std::string(alloy::dtype_name(alloy::dtype_of<T>));
  benchmark::RegisterBenchmark(name.c_str(), [m](benchmark::State& state) { run<T>(state, m); })
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void register_cases() {
  for (method m : {method::task_arithmetic, method::ties, method::magnitude_prune, method::dare_ties, method::della}) {
    register_method<float>(m);
    register_method<bf16>(m);
  }
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
