// alloy/kernels/convert.hpp: bulk conversion between the storage scalars
// (float, double, bf16, fp16).
//
// Plain loops over the branchless scalar conversions: the compiler vectorizes them for
// whatever SIMD width the consumer's flags select, so this kernel needs no xsimd. Widening
// is exact; narrowing rounds to nearest, ties to even, once (double -> bf16/fp16 is rounded
// directly, not through float).
#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "alloy/core/bf16.hpp"
#include "alloy/core/fp16.hpp"

namespace alloy::kernels {

namespace detail {

template <class T>
inline constexpr bool is_convert_scalar_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bf16> ||
    std::is_same_v<T, fp16>;

// One element. Every path from a 16-bit type goes through float, which is exact, so each
// narrowing still rounds exactly once.
template <class S, class D>
constexpr D convert_one(S x) noexcept {
  if constexpr (std::is_same_v<S, D>) {
    return x;
  } else if constexpr (std::is_same_v<S, double>) {
    if constexpr (std::is_same_v<D, float>) return static_cast<float>(x);
    else if constexpr (std::is_same_v<D, bf16>) return bf16::from_bits(double_to_bf16(x));
    else return fp16::from_bits(double_to_fp16(x));
  } else {
    const float f = static_cast<float>(x);  // exact for float, bf16 and fp16
    if constexpr (std::is_same_v<D, float>) return f;
    else if constexpr (std::is_same_v<D, double>) return static_cast<double>(f);
    else if constexpr (std::is_same_v<D, bf16>) return bf16::from_bits(float_to_bf16(f));
    else return fp16::from_bits(float_to_fp16(f));
  }
}

// The loop. __restrict on the parameters (GCC 12 did not use it on local pointers) lets the
// vectorizer skip a runtime overlap check: bf16 and fp16 both store through uint16_t, so
// type-based alias analysis cannot separate them, and GCC 12 at -O2 vectorizes nothing
// that needs such a check.
template <class S, class D>
void convert_loop(const S* __restrict in, D* __restrict out, std::size_t n) noexcept {
  // Fixed-size blocks: GCC 12 at -O2 vectorizes only loops whose trip count is a known
  // multiple of the vector width, so a constant inner loop vectorizes at -O2 as well as at
  // -O3 (and with clang); the scalar tail handles the rest.
  constexpr std::size_t block = 32;
  std::size_t i = 0;
  for (; i + block <= n; i += block) {
    for (std::size_t j = 0; j < block; ++j) out[i + j] = convert_one<S, D>(in[i + j]);
  }
  for (; i < n; ++i) out[i] = convert_one<S, D>(in[i]);
}

}  // namespace detail

// out[i] = in[i] converted, for i < n; S and D each one of float, double, bf16, fp16.
// Narrowing rounds to nearest, ties to even; Inf and NaN are kept (NaN quieted).
// Precondition: the ranges do not overlap, except in == out when S == D (then a no-op).
// Never allocates or throws; n == 0 allows null pointers.
template <class S, class D>
void convert_n(const S* in, D* out, std::size_t n) noexcept {
  static_assert(detail::is_convert_scalar_v<S> && detail::is_convert_scalar_v<D>,
                "convert_n: S and D must be float, double, alloy::bf16 or alloy::fp16");
  if (n == 0) return;
  if constexpr (std::is_same_v<S, D>) {
    if (in != out) std::memcpy(out, in, n * sizeof(S));
  } else {
    detail::convert_loop(in, out, n);
  }
}

}  // namespace alloy::kernels
