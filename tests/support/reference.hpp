// tests/support/reference.hpp: double-precision scalar references for alloy's tests.
//
// Nothing here is fast or clever on purpose: each helper is the plainest loop in double that
// states what a kernel or method should compute, so a test compares alloy against it.
//
//   Storage rounding (uses alloy's own conversions, which tests/core/test_bf16.cpp and
//   test_fp16.cpp check exhaustively against independent references):
//     to_storage<E>(x)        the E that stores double x (round to nearest, ties to even)
//     to_double(e)            the exact value of a storage scalar
//     round_to<E>(x)          to_double(to_storage<E>(x)): what x becomes when stored as E
//     round_to(dtype, x)      the same for a runtime dtype; round_to(dtype, xs) for a vector
//     unit_roundoff(dtype)    u = 2^-p (half an ulp at 1): f32 2^-24, f64 2^-53,
//                             bf16 2^-8, f16 2^-11
//     compute_type_t<E>       float, or double for double: what alloy computes in
//
//   Comparison:
//     mismatch(actual, expected, tol)   "" when every |a - e| <= tol.abs + tol.rel * |e|
//                                       (NaN matches NaN, Inf matches the same Inf), else a
//                                       message naming the first bad index and both values.
//                                       CHECK(mismatch(values(out), want, tol) == "") prints it.
//     tolerance_for(dtype, ulps)        rel = ulps * unit_roundoff(dtype), abs = the same
//                                       relative to the dtype's smallest normal
//
//   Inputs: random_values(n, seed, lo, hi) gives the same doubles on every platform
//   (splitmix64; std::uniform_real_distribution is not portable); pass them through
//   round_to(dtype, ...) to make inputs exactly representable.
//
//   Methods, in double, in the order alloy documents:
//     weighted_sum(models, w)                 sum_i w_i x_i
//     weighted_average(models, w, normalize)  the same, divided by sum_i w_i if normalize
//     uniform_soup(models)                    the mean
//     task_arithmetic(base, models, w, lambda, normalize)
//                                             base + lambda * (sum_i w_i (x_i - base)) / d,
//                                             d = sum_i w_i when normalize (1 when |d| < 1e-8)
//     dot(a, b), l2_norm(a)
#pragma once

#include <alloy/core/dtype.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace alloy_test {

using alloy::dtype;

// ---------------------------------------------------------------------------- rounding

template <alloy::storage_scalar E>
constexpr E to_storage(double x) noexcept {
  if constexpr (std::is_same_v<E, double>)
    return x;
  else if constexpr (std::is_same_v<E, float>)
    return static_cast<float>(x);
  else
    return E(x);  // bf16(double), fp16(double): rounded once, directly from double
}

template <alloy::storage_scalar E>
constexpr double to_double(E e) noexcept {
  if constexpr (std::is_same_v<E, double>)
    return e;
  else
    return static_cast<double>(static_cast<float>(e));  // exact for float, bf16, fp16
}

template <alloy::storage_scalar E>
constexpr double round_to(double x) noexcept {
  return to_double(to_storage<E>(x));
}

inline double round_to(dtype t, double x) {
  if (!alloy::is_floating(t)) throw std::invalid_argument("round_to: not a floating dtype");
  return alloy::visit_floating(t, [&](auto tag) { return round_to<decltype(tag)>(x); });
}

inline std::vector<double> round_to(dtype t, std::vector<double> xs) {
  for (double& x : xs) x = round_to(t, x);
  return xs;
}

inline double unit_roundoff(dtype t) {
  switch (t) {
    case dtype::f32: return 0x1p-24;
    case dtype::f64: return 0x1p-53;
    case dtype::bf16: return 0x1p-8;
    case dtype::f16: return 0x1p-11;
    default: throw std::invalid_argument("unit_roundoff: not a floating dtype");
  }
}

inline double smallest_normal(dtype t) {
  switch (t) {
    case dtype::f32: return static_cast<double>(std::numeric_limits<float>::min());
    case dtype::f64: return std::numeric_limits<double>::min();
    case dtype::bf16: return static_cast<double>(std::numeric_limits<float>::min());  // same exponent range
    case dtype::f16: return 0x1p-14;
    default: throw std::invalid_argument("smallest_normal: not a floating dtype");
  }
}

template <class E>
using compute_type_t = std::conditional_t<std::is_same_v<std::remove_cv_t<E>, double>, double, float>;

// -------------------------------------------------------------------------- comparison

struct tolerance {
  double rel = 0;
  double abs = 0;
};

// ulps units of rounding error in dtype t (one rounding to nearest is 1).
inline tolerance tolerance_for(dtype t, double ulps = 1) {
  const double u = ulps * unit_roundoff(t);
  return {u, u * smallest_normal(t)};
}

inline bool close(double actual, double expected, tolerance tol = {}) {
  if (std::isnan(expected)) return std::isnan(actual);
  if (std::isinf(expected)) return actual == expected;
  return std::abs(actual - expected) <= tol.abs + tol.rel * std::abs(expected);
}

inline std::string mismatch(const std::vector<double>& actual, const std::vector<double>& expected,
                            tolerance tol = {}) {
  std::ostringstream os;
  os.precision(17);
  if (actual.size() != expected.size()) {
    os << "size " << actual.size() << ", expected " << expected.size();
    return os.str();
  }
  std::size_t bad = 0;
  std::size_t first = actual.size();
  for (std::size_t i = 0; i < actual.size(); ++i)
    if (!close(actual[i], expected[i], tol)) {
      if (bad++ == 0) first = i;
    }
  if (bad == 0) return {};
  os << bad << " of " << actual.size() << " elements differ; first at [" << first << "]: " << actual[first]
     << ", expected " << expected[first] << " (tolerance rel " << tol.rel << ", abs " << tol.abs << ")";
  return os.str();
}

// ------------------------------------------------------------------------------ inputs

// splitmix64: a fixed, portable sequence.
constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// n doubles uniform in [lo, hi), the same on every platform for a given seed.
inline std::vector<double> random_values(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::vector<double> v(n);
  std::uint64_t s = seed;
  for (double& x : v) x = lo + (hi - lo) * (static_cast<double>(splitmix64(s) >> 11) * 0x1p-53);
  return v;
}

// ----------------------------------------------------------------------------- methods

using values_t = std::vector<double>;

namespace detail {
inline void check_sizes(const char* what, const std::vector<values_t>& models, std::size_t weights) {
  if (models.empty()) throw std::invalid_argument(std::string(what) + ": no models");
  if (weights != models.size()) throw std::invalid_argument(std::string(what) + ": weight count");
  for (const auto& m : models)
    if (m.size() != models[0].size()) throw std::invalid_argument(std::string(what) + ": sizes differ");
}
}  // namespace detail

inline values_t weighted_sum(const std::vector<values_t>& models, const std::vector<double>& w) {
  detail::check_sizes("weighted_sum", models, w.size());
  values_t out(models[0].size(), 0.0);
  for (std::size_t i = 0; i < models.size(); ++i)
    for (std::size_t j = 0; j < out.size(); ++j) out[j] += w[i] * models[i][j];
  return out;
}

inline values_t weighted_average(const std::vector<values_t>& models, const std::vector<double>& w,
                                 bool normalize = true) {
  values_t out = weighted_sum(models, w);
  if (normalize) {
    double d = 0;
    for (double x : w) d += x;
    for (double& x : out) x /= d;
  }
  return out;
}

inline values_t uniform_soup(const std::vector<values_t>& models) {
  return weighted_average(models, std::vector<double>(models.size(), 1.0), true);
}

inline values_t task_arithmetic(const values_t& base, const std::vector<values_t>& models, const std::vector<double>& w,
                                double lambda = 1.0, bool normalize = false) {
  detail::check_sizes("task_arithmetic", models, w.size());
  if (models[0].size() != base.size()) throw std::invalid_argument("task_arithmetic: base size");
  double d = 1;
  if (normalize) {
    d = 0;
    for (double x : w) d += x;
    if (std::abs(d) < 1e-8) d = 1;
  }
  values_t out(base.size());
  for (std::size_t j = 0; j < base.size(); ++j) {
    double tv = 0;
    for (std::size_t i = 0; i < models.size(); ++i) tv += w[i] * (models[i][j] - base[j]);
    out[j] = base[j] + lambda * (tv / d);
  }
  return out;
}

inline double dot(const values_t& a, const values_t& b) {
  if (a.size() != b.size()) throw std::invalid_argument("dot: sizes differ");
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double l2_norm(const values_t& a) { return std::sqrt(dot(a, a)); }

}  // namespace alloy_test
