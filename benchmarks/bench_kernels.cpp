// The streaming driver (kernels::stream) on one thread, against a plain memory copy.
//
//   stream/<functor>/<in>_to_<out>: out[j] = f(in_0[j], ...) over 16Mi elements, computing
//   in float. identity reads one input; sum3 adds three. Bytes = inputs read + output written.
//
// identity f32->f32 is a copy through the driver: its copy_ratio is the driver's overhead
// over memcpy (SIMD loads, non-temporal stores: the 64 MiB output is above
// kernels::stream_store_threshold). bf16 cases add the widening and narrowing in registers
// (the driver's direct path: every input one dtype).
#include "bench_common.hpp"

#include <alloy/core/dtype.hpp>
#include <alloy/kernels/stream.hpp>

#include <array>
#include <string>

namespace {

using alloy::bf16;
using alloy::dtype;
namespace kernels = alloy::kernels;

struct identity {
  template <class P>
  auto operator()(const P& x) const noexcept {
    return x[0];
  }
};

struct sum3 {
  template <class P>
  auto operator()(const P& x) const noexcept {
    return x[0] + x[1] + x[2];
  }
};

struct kernel_data {
  static constexpr std::size_t n = alloy_bench::merge_elements;
  std::array<alloy_bench::buffer<float>, 3> f32{alloy_bench::random_buffer<float>(n, 1),
                                                alloy_bench::random_buffer<float>(n, 2),
                                                alloy_bench::random_buffer<float>(n, 3)};
  std::array<alloy_bench::buffer<bf16>, 3> b16{alloy_bench::random_buffer<bf16>(n, 1),
                                               alloy_bench::random_buffer<bf16>(n, 2),
                                               alloy_bench::random_buffer<bf16>(n, 3)};
  alloy_bench::buffer<float> out_f32{n};
  alloy_bench::buffer<bf16> out_b16{n};

  kernels::source input(dtype t, std::size_t i) const {
    return t == dtype::f32 ? kernels::source{f32[i].data(), t} : kernels::source{b16[i].data(), t};
  }
  kernels::sink output(dtype t) {
    return t == dtype::f32 ? kernels::sink{out_f32.data(), t} : kernels::sink{out_b16.data(), t};
  }
};

kernel_data& data() {
  static kernel_data d;
  return d;
}

template <class F>
void register_stream(const char* functor_name, std::size_t n_in, dtype in, dtype out) {
  const std::string name = std::string("stream/") + functor_name + "/" + std::string(alloy::dtype_name(in)) + "_to_" +
                           std::string(alloy::dtype_name(out));
  benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& state) {
    auto& d = data();
    std::array<kernels::source, 3> src{};
    for (std::size_t i = 0; i < n_in; ++i) src[i] = d.input(in, i);
    const kernels::sink dst = d.output(out);
    const std::size_t n = kernel_data::n;
    const double bytes = static_cast<double>(n * (n_in * alloy::dtype_size(in) + alloy::dtype_size(out)));
    alloy_bench::copy_baseline_rate(1);
    const double rate =
        alloy_bench::timed_loop(state, bytes, [&] { kernels::stream<float>(src.data(), n_in, dst, 0, n, F{}); });
    alloy_bench::report(state, bytes, 1, rate);
  })->UseRealTime()->Unit(benchmark::kMillisecond);
}

void register_cases() {
  const std::array<std::array<dtype, 2>, 3> types{{{dtype::f32, dtype::f32}, {dtype::bf16, dtype::bf16}, {dtype::f32, dtype::bf16}}};
  for (const auto& [in, out] : types) register_stream<identity>("identity", 1, in, out);
  for (const auto& [in, out] : types) register_stream<sum3>("sum3", 3, in, out);
}

}  // namespace

ALLOY_BENCHMARK_MAIN(register_cases)
