// The streaming driver's paths, included by test_stream_paths.cpp (SIMD) and
// test_stream_paths_scalar.cpp (ALLOY_FORCE_SCALAR):
//   - the direct path (every input one dtype, 16-bit data converted in registers, the
//     linear combination unrolled for 1..8 weights) against a scalar reference that does the
//     same operations in the same order, for each weight count 1..9 and every option;
//   - the direct path against the scratch path (the same values with one input stored as
//     float, which makes the dtypes mixed), in place included;
//   - outputs of 8 MiB or more (non-temporal stores where aligned) against cached stores,
//     misaligned, and split over two threads.
// Results are compared bit for bit; two NaNs count as equal (which NaN an addition of two
// NaNs returns depends on the operand order the compiler picks).
#pragma once

#include <alloy/kernels/linear_combination.hpp>
#include <alloy/kernels/stream.hpp>

#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

namespace stream_paths_cases {

using namespace alloy;
namespace kernels = alloy::kernels;

template <class T>
bool same_value(T a, T b) {
  const float fa = static_cast<float>(a), fb = static_cast<float>(b);
  if (std::isnan(fa) && std::isnan(fb)) return true;
  if constexpr (std::is_same_v<T, float>)
    return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
  else
    return a.bits == b.bits;
}

// Element i of input k: mostly values of a few bits (so that weighted sums often land on a
// 16-bit tie), with Inf, NaN, subnormals and signed zeros mixed in.
template <class T>
T input_at(std::size_t i, std::size_t k) {
  const std::uint32_t h = static_cast<std::uint32_t>((i * 2654435761u) ^ (k * 40503u + 7u));
  float v = (static_cast<float>(h % 512u) - 256.f) / 64.f;
  switch ((i * 7 + k * 3) % 41) {
    case 0: v = std::numeric_limits<float>::infinity(); break;
    case 1: v = -std::numeric_limits<float>::infinity(); break;
    case 2: v = std::numeric_limits<float>::quiet_NaN(); break;
    case 3: v = std::bit_cast<float>(static_cast<std::uint32_t>(0x00010000u * (1 + k))); break;  // float/bf16 subnormal
    case 4: v = 0x1p-20f * static_cast<float>(1 + k);  break;         // fp16 subnormal
    case 5: v = -0.f; break;
    case 6: v = 1.f + 0x1p-8f; break;
  }
  if constexpr (std::is_same_v<T, float>) return v;
  else return T(v);
}

inline const float weight_values[9] = {0.5f, -1.25f, 2.f, 0.375f, 3.f, -0.625f, 1.5f, 0.25f, -2.f};

// out = the linear combination, computed element by element in float in the functor's order.
template <class In, class Out>
Out reference(const kernels::linear_combination<float>& f, const std::vector<std::vector<In>>& x, std::size_t i) {
  const std::size_t m = f.weights.size();
  const float base = f.has_base ? static_cast<float>(x[0][i]) : 0.f;
  float acc = 0;
  for (std::size_t k = 0; k < m; ++k) {
    const float term = f.has_base ? (static_cast<float>(x[1 + k][i]) - base) * f.weights[k]
                                   : static_cast<float>(x[k][i]) * f.weights[k];
    acc = k == 0 ? term : acc + term;
  }
  if (f.divide) acc = acc / f.divisor;
  if (f.scale) acc = acc * f.lambda;
  if (f.has_base && f.add_base) acc = base + acc;
  return kernels::detail::convert_one<float, Out>(acc);
}

template <class In, class Out>
void check_weight_counts() {
  const std::size_t W = kernels::width<float>;
  for (std::size_t n : {std::size_t{1}, W + 1, 5 * W + 3})
    for (std::size_t m = 1; m <= 9; ++m)
      for (unsigned opts = 0; opts < 16; ++opts) {
        const bool has_base = (opts & 1) != 0;
        const kernels::linear_combination<float> f{std::span<const float>(weight_values, m), has_base, (opts & 2) != 0,
                                                   3.f, (opts & 4) != 0, 0.7f, (opts & 8) == 0};
        const std::size_t n_in = m + (has_base ? 1 : 0), offset = 1;  // misaligned starts
        std::vector<std::vector<In>> x(n_in, std::vector<In>(n + offset));
        std::vector<kernels::source> src;
        for (std::size_t k = 0; k < n_in; ++k) {
          for (std::size_t i = 0; i < n; ++i) x[k][offset + i] = input_at<In>(i, k);
          src.push_back({x[k].data() + offset, dtype_of<In>});
        }
        std::vector<Out> out(n + offset);
        kernels::stream<float>(src.data(), n_in, {out.data() + offset, dtype_of<Out>}, 0, n, f);
        for (std::size_t i = 0; i < n; ++i) {
          std::vector<std::vector<In>> xi(n_in, std::vector<In>(1));
          for (std::size_t k = 0; k < n_in; ++k) xi[k][0] = x[k][offset + i];
          INFO("weights " << m << " options " << opts << " n " << n << " element " << i);
          REQUIRE(same_value(out[offset + i], reference<In, Out>(f, xi, 0)));
        }
      }
}

TEST_CASE("stream paths: each weight count 1..9 matches the scalar reference", "[kernels][stream]") {
  check_weight_counts<bf16, bf16>();
  check_weight_counts<bf16, float>();
  check_weight_counts<float, bf16>();
  check_weight_counts<float, float>();
  check_weight_counts<fp16, fp16>();
  check_weight_counts<fp16, float>();
  check_weight_counts<float, fp16>();
}

TEST_CASE("linear_combination::specialize fixes 1..8 weights at compile time", "[kernels][stream]") {
  for (std::size_t m = 1; m <= 9; ++m) {
    const kernels::linear_combination<float> f{std::span<const float>(weight_values, m)};
    std::size_t fixed = 0;
    f.specialize([&](const auto& g) {
      using G = std::remove_cvref_t<decltype(g)>;
      if constexpr (!std::is_same_v<G, kernels::linear_combination<float>>) fixed = std::tuple_size_v<decltype(g.weights)>;
    });
    CHECK(fixed == (m <= 8 ? m : 0));
  }
}

// The same merge through the direct path (all inputs H) and through the scratch path (one
// input stored as float instead: mixed dtypes), optionally in place.
template <class H>
void check_direct_vs_scratch(bool in_place) {
  const std::size_t n = 3 * kernels::stream_scratch_bytes / 4 + 11, m = 4;
  std::vector<std::vector<H>> x(m, std::vector<H>(n));
  std::vector<float> x0(n);
  for (std::size_t k = 0; k < m; ++k)
    for (std::size_t i = 0; i < n; ++i) x[k][i] = input_at<H>(i, k);
  for (std::size_t i = 0; i < n; ++i) x0[i] = static_cast<float>(x[0][i]);
  const kernels::linear_combination<float> f{std::span<const float>(weight_values, m - 1), true, true, 3.f, true, 0.7f};
  std::vector<H> a(n), b(n), y = x[m - 1];
  std::vector<kernels::source> direct, mixed;
  for (std::size_t k = 0; k < m; ++k) {
    direct.push_back({x[k].data(), dtype_of<H>});
    mixed.push_back({k == 0 ? static_cast<const void*>(x0.data()) : (k == m - 1 ? y.data() : x[k].data()),
                     k == 0 ? dtype::f32 : dtype_of<H>});
  }
  H* out_direct = in_place ? x[m - 1].data() : a.data();
  H* out_mixed = in_place ? y.data() : b.data();
  kernels::stream<float>(direct.data(), m, {out_direct, dtype_of<H>}, 0, n, f);
  kernels::stream<float>(mixed.data(), m, {out_mixed, dtype_of<H>}, 0, n, f);
  for (std::size_t i = 0; i < n; ++i) {
    INFO("element " << i << " in place " << in_place);
    REQUIRE(same_value(out_direct[i], out_mixed[i]));
  }
}

TEST_CASE("stream paths: the in-register path matches the scratch path", "[kernels][stream]") {
  for (bool in_place : {false, true}) {
    check_direct_vs_scratch<bf16>(in_place);
    check_direct_vs_scratch<fp16>(in_place);
  }
}

// An output of more than stream_store_threshold bytes: automatic policy (non-temporal where
// the platform has them), cached stores, a misaligned output (ordinary stores) and two
// threads each streaming half (split at a multiple of W, each fencing its own stores).
template <class T>
void check_large_output() {
  const std::size_t n = kernels::stream_store_threshold / sizeof(T) + 3 * kernels::max_width + 5, m = 3;
  std::vector<std::vector<T>> x(m, std::vector<T>(n));
  for (std::size_t k = 0; k < m; ++k)
    for (std::size_t i = 0; i < n; ++i) x[k][i] = input_at<T>(i, k);
  std::vector<kernels::source> src;
  for (std::size_t k = 0; k < m; ++k) src.push_back({x[k].data(), dtype_of<T>});
  const kernels::linear_combination<float> f{std::span<const float>(weight_values, m)};
  struct alignas(64) line { unsigned char b[64]; };
  std::vector<line> buf(4 * ((n * sizeof(T)) / 64 + 2));
  T* const base = reinterpret_cast<T*>(buf.data());
  T* const ref = base;
  T* const streamed = base + (n * sizeof(T) / 64 + 2) * 64 / sizeof(T);  // 64-byte aligned
  T* const split = streamed + (n * sizeof(T) / 64 + 2) * 64 / sizeof(T);
  T* const misaligned = split + (n * sizeof(T) / 64 + 2) * 64 / sizeof(T) + 1;
  kernels::stream<float>(src.data(), m, {ref, dtype_of<T>}, 0, n, f, kernels::store_policy::cached);
  kernels::stream<float>(src.data(), m, {streamed, dtype_of<T>}, 0, n, f);
  kernels::stream<float>(src.data(), m, {misaligned, dtype_of<T>}, 0, n, f, kernels::store_policy::streaming);
  const std::size_t half = n / 2 / kernels::max_width * kernels::max_width;
  {
    std::jthread other([&] { kernels::stream<float>(src.data(), m, {split, dtype_of<T>}, half, n, f, kernels::store_policy::streaming); });
    kernels::stream<float>(src.data(), m, {split, dtype_of<T>}, 0, half, f, kernels::store_policy::streaming);
  }
  std::size_t bad = 0, first_bad = n;
  for (std::size_t i = 0; i < n; ++i) {
    const bool ok = same_value(ref[i], reference<T, T>(f, x, i)) && same_value(streamed[i], ref[i]) &&
                    same_value(misaligned[i], ref[i]) && same_value(split[i], ref[i]);
    if (!ok && bad++ == 0) first_bad = i;
  }
  INFO("first mismatch at element " << first_bad << " of " << n);
  REQUIRE(bad == 0);
}

TEST_CASE("stream paths: outputs of 8 MiB or more (non-temporal stores)", "[kernels][stream]") {
  check_large_output<float>();
  check_large_output<bf16>();
}

}  // namespace stream_paths_cases
