// The geometric merges through the public API, over 16Mi-element tensors:
//
//   slerp/<dtype>/threads:N        two models, t = 0.3 (the sine path: random tensors are
//                                  nearly orthogonal)
//   model_stock/<dtype>/threads:N  base + 2 models (mergekit's options: one t per tensor)
//   model_stock_rows/<dtype>/...   base + 2 models as [4096, 4096], filter_wise (one t per row)
//   nuslerp_rows/<dtype>/...       base + 2 models as [4096, 4096], row-wise (per row)
//
// Inputs and output in the same dtype (F32 or BF16), computed in float. Each merge makes two
// streaming passes: a reduction (dot products and norms) reading every input, then the
// combination reading every input again and writing the output. bytes_per_second and
// copy_ratio count the logical bytes, every input once and the output once, as the other
// merge benchmarks do: the target is copy_ratio >= 0.4. traffic_ratio counts what
// the two passes actually move (inputs twice, output once) against the same copy baseline.
// threads:N is alloy::execution{N}; threads:2 cases report speedup_vs_1t.
#include "bench_common.hpp"

#include <alloy/methods/model_stock.hpp>
#include <alloy/methods/nuslerp.hpp>
#include <alloy/methods/slerp.hpp>

#include <array>
#include <span>
#include <string>
#include <vector>

namespace {

using alloy::bf16;

template <class T>
struct geo_data {
  static constexpr std::size_t n = alloy_bench::merge_elements;
  alloy_bench::buffer<T> base = alloy_bench::random_buffer<T>(n, 20);
  std::array<alloy_bench::buffer<T>, 2> models{alloy_bench::random_buffer<T>(n, 21), alloy_bench::random_buffer<T>(n, 22)};
  alloy_bench::buffer<T> out{n};

  std::vector<alloy::tensor_view> model_views() const {
    std::vector<alloy::tensor_view> v;
    for (const auto& m : models) v.emplace_back(m.span());
    return v;
  }
};

template <class T>
geo_data<T>& data() {
  static geo_data<T> d;
  return d;
}

enum class method { slerp, model_stock, model_stock_rows, nuslerp_rows };

const char* name_of(method m) {
  switch (m) {
    case method::slerp: return "slerp/";
    case method::model_stock: return "model_stock/";
    case method::model_stock_rows: return "model_stock_rows/";
    case method::nuslerp_rows: return "nuslerp_rows/";
  }
  return "?/";
}

template <class T>
void run(benchmark::State& state, method m, const std::string& key_prefix) {
  auto& d = data<T>();
  const auto threads = static_cast<unsigned>(state.range(0));
  const std::size_t inputs = m == method::slerp ? 2 : 3;
  const double bytes = static_cast<double>((inputs + 1) * d.n * sizeof(T));
  const double traffic = static_cast<double>((2 * inputs + 1) * d.n * sizeof(T));
  const auto models = d.model_views();
  const alloy::tensor_view base = d.base.span();
  const alloy::mutable_tensor_view out = d.out.span();
  const alloy::execution ex{threads};
  const std::vector<std::size_t> shape{4096, d.n / 4096};

  alloy_bench::copy_baseline_rate(threads);
  const double rate = alloy_bench::timed_loop(state, bytes, [&] {
    switch (m) {
      case method::slerp:
        alloy::slerp(models[0], models[1], 0.3, out, {.exec = ex});
        break;
      case method::model_stock:
        alloy::model_stock(base, models, out, {.exec = ex});
        break;
      case method::model_stock_rows:
        alloy::model_stock(base, models, out, {.filter_wise = true, .shape = shape, .exec = ex});
        break;
      case method::nuslerp_rows:
        alloy::nuslerp(base, models, {1.0, 1.0}, out, {.flatten = false, .shape = shape, .exec = ex});
        break;
    }
  });
  alloy_bench::report(state, bytes, threads, rate);
  state.counters["traffic_ratio"] = rate * traffic / bytes / alloy_bench::copy_baseline_rate(threads);

  alloy_bench::record_rate(key_prefix + std::to_string(threads), rate);
  if (threads > 1) {
    if (const double one = alloy_bench::recorded_rate(key_prefix + "1"); one > 0) state.counters["speedup_vs_1t"] = rate / one;
  }
}

template <class T>
void register_method(method m) {
  const std::string name = std::string(name_of(m)) + std::string(alloy::dtype_name(alloy::dtype_of<T>));
  benchmark::RegisterBenchmark(name.c_str(), [m, name](benchmark::State& state) { run<T>(state, m, name + "/"); })
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void register_cases() {
  for (method m : {method::slerp, method::model_stock, method::model_stock_rows, method::nuslerp_rows}) {
    register_method<float>(m);
    register_method<bf16>(m);
  }
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
