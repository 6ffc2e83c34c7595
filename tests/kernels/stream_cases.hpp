// The streaming-driver cases, included by test_stream.cpp (SIMD) and
// test_stream_scalar.cpp (ALLOY_FORCE_SCALAR): the same expectations hold for both builds.
//
// Every case runs a 3-input linear combination (weights 0.5, -1.25, 2) through
// kernels::stream for every storage type of inputs and output, sizes {0, 1, W-1, W, W+1,
// 3W+2, 1000, 4099} and start offsets 0..3 (misaligned), and checks each element
//   1. bit for bit against the same arithmetic done in scalar C (so the SIMD body and the
//      scalar tail agree), and
//   2. against a double-precision reference within the rounding of C and of the output type.
#pragma once

#include <alloy/kernels/linear_combination.hpp>
#include <alloy/kernels/stream.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

namespace stream_cases {

using namespace alloy;

template <class T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
    return static_cast<T>(v);
  else
    return T(v);
}
template <class T>
double to_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
double to_double<double>(double v) {
  return v;
}

template <class T>
double unit_roundoff() {
  if constexpr (std::is_same_v<T, double>) return std::ldexp(1.0, -53);
  if constexpr (std::is_same_v<T, float>) return std::ldexp(1.0, -24);
  if constexpr (std::is_same_v<T, bf16>) return std::ldexp(1.0, -8);
  return std::ldexp(1.0, -11);
}

// Deterministic values in about [-4, 4), exactly representable in every storage type.
inline double value_at(std::size_t i, std::size_t input) {
  const std::uint32_t h = static_cast<std::uint32_t>((i * 2654435761u) ^ (input * 40503u + 7u));
  return (static_cast<double>(h % 512u) - 256.0) / 64.0;
}

template <class In, class Out, class C>
void check_case(std::size_t n, std::size_t offset) {
  constexpr std::size_t n_in = 3;
  const double w[n_in] = {0.5, -1.25, 2.0};
  const C wc[n_in] = {C(0.5), C(-1.25), C(2.0)};
  std::vector<std::vector<In>> storage(n_in, std::vector<In>(n + offset));
  kernels::source src[n_in];
  for (std::size_t k = 0; k < n_in; ++k) {
    for (std::size_t i = 0; i < n; ++i) storage[k][offset + i] = from_double<In>(value_at(i, k));
    src[k] = {storage[k].data() + offset, dtype_of<In>};
  }
  std::vector<Out> out(n + offset, from_double<Out>(-99.0));
  const kernels::linear_combination<C> f{std::span<const C>(wc, n_in), false, false, C(1), false, C(1)};
  kernels::stream<C>(src, n_in, kernels::sink{out.data() + offset, dtype_of<Out>}, 0, n, f);

  for (std::size_t i = 0; i < offset; ++i) REQUIRE(to_double(out[i]) == -99.0);  // nothing before the start
  double ref_tol = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double ref = 0, mag = 0;
    C exact = C(0);
    for (std::size_t k = 0; k < n_in; ++k) {
      const double x = to_double(storage[k][offset + i]);
      ref += w[k] * x;
      mag += std::abs(w[k] * x);
      const C term = static_cast<C>(x) * wc[k];
      exact = k == 0 ? term : exact + term;
    }
    const double got = to_double(out[offset + i]);
    INFO("n=" << n << " offset=" << offset << " i=" << i);
    REQUIRE(got == to_double(from_double<Out>(static_cast<double>(exact))));
    ref_tol = 4 * unit_roundoff<C>() * mag + unit_roundoff<Out>() * std::abs(ref) * 1.0000001;
    REQUIRE(std::abs(got - ref) <= ref_tol);
  }
}

template <class In, class Out>
void check_all_sizes() {
  for (bool dbl : {false, true}) {
    const std::size_t W = dbl ? kernels::width<double> : kernels::width<float>;
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, W - 1, W, W + 1, 3 * W + 2, std::size_t{1000}, std::size_t{4099}})
      for (std::size_t offset = 0; offset < 4; ++offset) {
        if (dbl)
          check_case<In, Out, double>(n, offset);
        else
          check_case<In, Out, float>(n, offset);
      }
  }
}

using storage_scalars = std::tuple<float, double, bf16, fp16>;

TEMPLATE_LIST_TEST_CASE("stream: linear combination matches scalar C and the double reference", "[kernels][stream]",
                        storage_scalars) {
  check_all_sizes<TestType, float>();
  check_all_sizes<TestType, double>();
  check_all_sizes<TestType, bf16>();
  check_all_sizes<TestType, fp16>();
}

TEST_CASE("stream: mixed input types in one call", "[kernels][stream]") {
  const std::size_t n = 777;
  std::vector<float> a(n);
  std::vector<bf16> b(n);
  std::vector<fp16> c(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = static_cast<float>(value_at(i, 0));
    b[i] = bf16(value_at(i, 1));
    c[i] = fp16(value_at(i, 2));
  }
  const kernels::source src[3] = {{a.data(), dtype::f32}, {b.data(), dtype::bf16}, {c.data(), dtype::f16}};
  const float w[3] = {1, 1, 1};
  std::vector<float> out(n);
  kernels::stream<float>(src, 3, {out.data(), dtype::f32}, 0, n,
                         kernels::linear_combination<float>{std::span<const float>(w, 3)});
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE(out[i] == static_cast<float>(value_at(i, 0) + value_at(i, 1) + value_at(i, 2)));
}

TEST_CASE("stream: splitting the range at multiples of W changes nothing", "[kernels][stream]") {
  const std::size_t n = 10007, W = kernels::width<float>;
  std::vector<bf16> a(n), b(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = bf16(value_at(i, 0) / 3);
    b[i] = bf16(value_at(i, 1) / 7);
  }
  const kernels::source src[2] = {{a.data(), dtype::bf16}, {b.data(), dtype::bf16}};
  const float w[2] = {0.3f, 0.7f};
  const kernels::linear_combination<float> f{std::span<const float>(w, 2)};
  std::vector<bf16> whole(n), pieces(n);
  kernels::stream<float>(src, 2, {whole.data(), dtype::bf16}, 0, n, f);
  for (std::size_t s = 0; s < n; s += 37 * W)
    kernels::stream<float>(src, 2, {pieces.data(), dtype::bf16}, s, std::min(n, s + 37 * W), f);
  REQUIRE(std::memcmp(whole.data(), pieces.data(), n * sizeof(bf16)) == 0);
}

TEST_CASE("stream: the output may be an input (in place)", "[kernels][stream]") {
  for (dtype t : {dtype::f32, dtype::bf16}) {
    const std::size_t n = 5003;
    std::vector<float> x(n), y(n);
    std::vector<bf16> xb(n);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = static_cast<float>(value_at(i, 0));
      xb[i] = bf16(x[i]);
      y[i] = static_cast<float>(value_at(i, 1));
    }
    void* xp = t == dtype::f32 ? static_cast<void*>(x.data()) : static_cast<void*>(xb.data());
    const kernels::source src[2] = {{xp, t}, {y.data(), dtype::f32}};
    const float w[2] = {1, 1};
    kernels::stream<float>(src, 2, {xp, t}, 0, n, kernels::linear_combination<float>{std::span<const float>(w, 2)});
    for (std::size_t i = 0; i < n; ++i) {
      const float expect = static_cast<float>(value_at(i, 0)) + y[i];
      if (t == dtype::f32)
        REQUIRE(x[i] == expect);
      else
        REQUIRE(static_cast<float>(xb[i]) == static_cast<float>(bf16(expect)));
    }
  }
}

TEST_CASE("stream: the maximum number of inputs", "[kernels][stream]") {
  const std::size_t n = 300, m = kernels::max_stream_inputs;
  std::vector<std::vector<bf16>> in(m, std::vector<bf16>(n));
  std::vector<kernels::source> src;
  for (std::size_t k = 0; k < m; ++k) {
    for (std::size_t i = 0; i < n; ++i) in[k][i] = bf16(static_cast<float>((i + k) % 4));
    src.push_back({in[k].data(), dtype::bf16});
  }
  std::vector<double> w(m, 1.0);
  std::vector<double> out(n);
  kernels::stream<double>(src.data(), m, {out.data(), dtype::f64}, 0, n,
                          kernels::linear_combination<double>{std::span<const double>(w)});
  for (std::size_t i = 0; i < n; ++i) {
    double expect = 0;
    for (std::size_t k = 0; k < m; ++k) expect += static_cast<double>((i + k) % 4);
    REQUIRE(out[i] == expect);
  }
}

TEST_CASE("stream: NaN and Inf propagate; 16-bit overflow rounds to Inf", "[kernels][stream]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> a{nan, inf, -inf, 60000.f, 1.f}, b{1.f, 1.f, 1.f, 60000.f, 1.f};
  const kernels::source src[2] = {{a.data(), dtype::f32}, {b.data(), dtype::f32}};
  const float w[2] = {1, 1};
  std::vector<fp16> out(5);
  kernels::stream<float>(src, 2, {out.data(), dtype::f16}, 0, 5, kernels::linear_combination<float>{std::span<const float>(w, 2)});
  CHECK(std::isnan(static_cast<float>(out[0])));
  CHECK(static_cast<float>(out[1]) == inf);
  CHECK(static_cast<float>(out[2]) == -inf);
  CHECK(static_cast<float>(out[3]) == inf);  // 120000 > fp16 max
  CHECK(static_cast<float>(out[4]) == 2.f);
}

}  // namespace stream_cases
