// The data-aware merges through the public API:
//
//   regmean/4096x4096/models:2/<dtype>    one [4096, 4096] linear layer of 2 models, Grams of
//                                         4096 x 4096 (X^T X / 1024 + 0.1 I of random activations),
//                                         alpha 0.9; solved in float (F32) or double (F64).
//                                         Compute-bound: reports gflops (2 (N - 1) out in^2 for
//                                         the symm products of the delta form, in^3 / 3 for
//                                         potrf, 2 out in^2 for potrs) and ridge/attempts/rcond;
//                                         the BLAS threads are the BLAS library's
//                                         (OPENBLAS_NUM_THREADS), not alloy's.
//   fisher_merge/<dtype>/<checked|unchecked>/threads:N
//                                         2 models of 16Mi elements with their Fisher
//                                         diagonals. Bytes = every tensor read or written:
//                                         5 tensors per merge pass, plus the 2 Fisher
//                                         tensors read again by the validation pass when
//                                         checked (the default; check_fisher = false skips it).
//
// copy_ratio compares the streaming cases with the same-run copy baseline (bench_common.hpp).
// Link: this file needs BLAS (CBLAS) and LAPACK, e.g. through CMake's xtensor-blas target.
#include "bench_common.hpp"

#include <alloy/methods/fisher.hpp>
#include <alloy/methods/regmean.hpp>

#include <string>
#include <vector>

namespace {

using alloy::bf16;

// ---- RegMean -----------------------------------------------------------------------------

constexpr std::size_t layer = 4096;
constexpr std::size_t gram_rows = 1024;

struct regmean_data {
  std::vector<alloy_bench::buffer<float>> w, g;
  alloy_bench::buffer<float> out{layer * layer};
  regmean_data() {
    for (std::uint64_t i = 0; i < 2; ++i) {
      w.push_back(alloy_bench::random_buffer<float>(layer * layer, 20 + i));
      // G = X^T X / rows + 0.1 I for a random X of `gram_rows` rows: positive definite, with a
      // spread of eigenvalues like real activations' (a few large, many near the ridge).
      alloy::gram_accumulator<float> acc(layer);
      acc.add(alloy_bench::random_buffer<float>(gram_rows * layer, 30 + i).span());
      alloy_bench::buffer<float> g(layer * layer);
      acc.mean(g.span());
      for (std::size_t r = 0; r < layer; ++r) g.data()[r * layer + r] += 0.1f;
      this->g.push_back(std::move(g));
    }
  }
};

regmean_data& rm_data() {
  static regmean_data d;
  return d;
}

void run_regmean(benchmark::State& state, alloy::dtype compute) {
  auto& d = rm_data();
  std::vector<alloy::tensor_view> w, g;
  for (auto& b : d.w) w.emplace_back(b.span());
  for (auto& b : d.g) g.emplace_back(b.span());
  alloy::regmean_options o;
  o.compute_dtype = compute;
  alloy::regmean_report rep;
  const double n = static_cast<double>(layer);
  const double flops = 2.0 * (2 - 1) * n * n * n + n * n * n / 3.0 + 2.0 * n * n * n;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    rep = alloy::regmean(w, g, d.out.span(), o);
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
  state.counters["gflops"] = flops * static_cast<double>(state.iterations()) / dt.count() / 1e9;
  state.counters["ridge"] = rep.ridge;
  state.counters["attempts"] = rep.attempts;
  state.counters["rcond"] = rep.rcond;
  // Bytes of the inputs and the output (for comparison with the streaming methods only).
  state.SetBytesProcessed(static_cast<std::int64_t>(5 * layer * layer * sizeof(float)) * state.iterations());
}

// ---- Fisher merging ----------------------------------------------------------------------

template <class T>
struct fisher_data {
  static constexpr std::size_t n = alloy_bench::merge_elements;
  alloy_bench::buffer<T> a = alloy_bench::random_buffer<T>(n, 40), b = alloy_bench::random_buffer<T>(n, 41);
  alloy_bench::buffer<T> fa{n}, fb{n};
  alloy_bench::buffer<T> out{n};
  fisher_data() {
    // Fisher values in [0, 1): squares of uniform values.
    for (std::size_t i = 0; i < n; ++i) {
      const float x = alloy_bench::uniform_pm1(42, i), y = alloy_bench::uniform_pm1(43, i);
      fa.data()[i] = T(x * x);
      fb.data()[i] = T(y * y);
    }
  }
};

template <class T>
fisher_data<T>& f_data() {
  static fisher_data<T> d;
  return d;
}

template <class T>
void run_fisher(benchmark::State& state, bool checked, const std::string& key_prefix) {
  auto& d = f_data<T>();
  const auto threads = static_cast<unsigned>(state.range(0));
  const double bytes = static_cast<double>((checked ? 7 : 5) * d.n * sizeof(T));
  const std::vector<alloy::tensor_view> models{d.a.span(), d.b.span()}, fishers{d.fa.span(), d.fb.span()};
  const alloy::mutable_tensor_view out = d.out.span();
  alloy::fisher_options o;
  o.check_fisher = checked;
  o.exec = alloy::execution{threads};
  alloy_bench::copy_baseline_rate(threads);
  const double rate = alloy_bench::timed_loop(state, bytes, [&] { alloy::fisher_merge(models, fishers, out, o); });
  alloy_bench::report(state, bytes, threads, rate);
  alloy_bench::record_rate(key_prefix + std::to_string(threads), rate);
  if (threads > 1) {
    if (const double one = alloy_bench::recorded_rate(key_prefix + "1"); one > 0) state.counters["speedup_vs_1t"] = rate / one;
  }
}

template <class T>
void register_fisher(bool checked) {
  const std::string name = "fisher_merge/" + std::string(alloy::dtype_name(alloy::dtype_of<T>)) +
                           (checked ? "/checked" : "/unchecked");
  benchmark::RegisterBenchmark(name.c_str(), [checked, name](benchmark::State& s) { run_fisher<T>(s, checked, name + "/"); })
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void register_cases() {
  for (const auto& [name, t] : {std::pair<const char*, alloy::dtype>{"regmean/4096x4096/models:2/F32", alloy::dtype::f32},
                                {"regmean/4096x4096/models:2/F64", alloy::dtype::f64}})
    benchmark::RegisterBenchmark(name, [t = t](benchmark::State& s) { run_regmean(s, t); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(3);
  register_fisher<float>(true);
  register_fisher<float>(false);
  register_fisher<bf16>(true);
  register_fisher<bf16>(false);
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
