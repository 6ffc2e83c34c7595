// The linear assignment solver (alloy::align::linear_sum_assignment) on dense random costs:
//
//   lsap/<dtype>/rows:R/cols:C   uniform costs in [-1, 1) (24 random bits, the same values
//                                for F32 and F64), minimised; one full solve per iteration
//
// Square 512 x 512 and 2048 x 2048 are the cases (SciPy's linear_sum_assignment takes
// about 12 ms and 350 ms on the project's machine); 1024 x 2048 and 2048 x 1024 show a wide
// problem and a tall one (solved through a transposed copy). The figure to quote is the time
// per solve (ms, wall clock), against SciPy on the same machine: the solver is O(n^3) in the
// worst case and bound by its row scans, not a streaming kernel, so no bytes/s or copy_ratio
// is reported for it (the copy baseline still runs, as in every benchmark file).
//
// Counters: assigned = min(rows, cols) pairs; cost = the optimal total (the same for F32
// and F64 up to float rounding of the inputs: a quick check that both solved the problem).
#include "bench_common.hpp"

#include <alloy/align/linear_assignment.hpp>

#include <cstddef>
#include <map>
#include <string>
#include <utility>

namespace {

template <class T>
const alloy_bench::buffer<T>& costs(std::size_t rows, std::size_t cols) {
  static std::map<std::pair<std::size_t, std::size_t>, alloy_bench::buffer<T>> cache;
  auto it = cache.find({rows, cols});
  if (it == cache.end()) it = cache.emplace(std::pair{rows, cols}, alloy_bench::random_buffer<T>(rows * cols, 61)).first;
  return it->second;
}

template <class T>
void run(benchmark::State& state) {
  const auto rows = static_cast<std::size_t>(state.range(0));
  const auto cols = static_cast<std::size_t>(state.range(1));
  const auto& c = costs<T>(rows, cols);
  alloy::align::assignment a;
  for (auto _ : state) {
    a = alloy::align::linear_sum_assignment(c.data(), rows, cols);
    benchmark::DoNotOptimize(a.col_ind.data());
    benchmark::ClobberMemory();
  }
  if (!a.ok()) state.SkipWithError("infeasible");
  state.counters["assigned"] = static_cast<double>(a.size());
  state.counters["cost"] = a.cost;
}

template <class T>
void register_dtype(const std::string& dtype) {
  benchmark::RegisterBenchmark(("lsap/" + dtype).c_str(), run<T>)
      ->ArgNames({"rows", "cols"})
      ->Args({512, 512})
      ->Args({2048, 2048})
      ->Args({1024, 2048})
      ->Args({2048, 1024})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void register_cases() {
  register_dtype<float>("F32");
  register_dtype<double>("F64");
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
