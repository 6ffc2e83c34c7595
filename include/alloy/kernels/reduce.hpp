// Kernels of the geometric merges (SLERP, NuSLERP, multislerp, Karcher mean, Model Stock):
// a reduction pass measures the tensors (dot products, norms), a per-vector coefficient table
// is derived from it, and an element-wise pass combines the inputs with those coefficients.
// Over pointers and sizes; no allocation, no throw.
//
// 1. gram_accumulate<C>(x, k, [base,] n, lanes)
//    The Gram matrix of k rows x_0..x_{k-1} of n elements of C (float or double), or of the
//    task vectors x_i - base (formed in C, never stored) when a base is given: for every
//    pair p = (i, j), i <= j, enumerated (0,0), (0,1), .., (0,k-1), (1,1), .., (k-1,k-1)
//    (gram_pair(i, j, k) gives p), the products x_i[e] * x_j[e] are summed into
//    reduce_lanes = 16 "virtual lanes" (element e of a block goes to lane e mod 16). Each
//    lane sums its reduce_block / 16 = 16 products of a block in C, then that partial is
//    widened and added to the lane's double accumulator lanes[p * 16 + lane]; lane_total()
//    folds the 16 double lanes in a fixed tree. (Measured on AVX-512 over 64 MiB inputs:
//    64 lanes or longer blocks ran at half the memory speed, in L1 they were faster.)
//    Precision: a product is rounded once to C (exact in float for bf16 and fp16 data, whose
//    products have at most 22 significant bits); a block partial of 16 terms carries a
//    relative error of at most ~16 u (u = 2^-24 for float), typically ~4 u; blocks, lanes and
//    calls are summed in double. That is float32 pairwise summation's accuracy (mergekit's
//    np.sum / torch.sum), for any length. Values beyond ~1e18 in magnitude overflow the float
//    partials (Inf): callers report that as non-finite input.
//    Determinism: the lane of an element and the order of every addition depend only on the
//    element's offset from the start of the row (blocks start at multiples of reduce_block),
//    never on the SIMD width: the scalar build (ALLOY_FORCE_SCALAR), SSE, AVX2 and AVX-512
//    give the same bits, provided the compiler does not contract a*b+c into an FMA (g++ and
//    clang++ do by default once FMA instructions are enabled, e.g. by -march=native: add
//    -ffp-contract=off there). Calls may be chained on one lanes array when every call but
//    the last has a length that is a multiple of reduce_block.
//
// 2. gram_columns<C>(x, k, base, n, g)
//    The same pairs, per column: g[p * n + e] += x_i[e] * x_j[e], product and sum in double
//    (exact products for float and 16-bit data). For vectors that run across rows (a tensor's
//    columns), accumulated one row at a time.
//
// 3. vector_combination<C, M>: the element-wise functor for kernels::stream. The tensor is seen
//    as [outer, length, inner]; vector v = o * inner + k holds the length entries (o, ., k).
//    Each vector has `stride` coefficients coef[v * stride + i]. With inputs (b the base,
//    when there is one, first) and c_i the element's vector's coefficients:
//    M = combine_mode::
//      sum:   r = c_0 x_0 + c_1 x_1 + .. + c_{k-1} x_{k-1}            (inputs x_0..x_{k-1})
//      task:  r = b + (c_0 (x_0 - b) + .. + c_{k-1} (x_{k-1} - b))     (inputs b, x_0..)
//      stock: r = c_0 * ((x_0 + .. + x_{k-1}) / k) + (1 - c_0) * b     (inputs b, x_0..)
//    summed from i = 0 up. `stock` is mergekit's Model Stock order (average, then
//    t * avg + (1 - t) * base). Per element, batch and scalar paths compute the same bits
//    (again barring FMA contraction).
#pragma once

#include <alloy/kernels/simd.hpp>

#include <algorithm>
#include <cstddef>
#include <type_traits>

ALLOY_INTRINSIC_WARNINGS_OFF  // GCC PR 105593 (config.hpp)

namespace alloy::kernels {

inline constexpr std::size_t reduce_lanes = 16;
inline constexpr std::size_t reduce_block = 256;
static_assert(reduce_lanes % width<float> == 0 && reduce_lanes % width<double> == 0);
static_assert(reduce_block % reduce_lanes == 0);

// Pairs (i <= j) of k rows.
constexpr std::size_t gram_pairs(std::size_t k) noexcept { return k * (k + 1) / 2; }

// The index of pair (i, j), i <= j < k, in gram_accumulate's order.
constexpr std::size_t gram_pair(std::size_t i, std::size_t j, std::size_t k) noexcept {
  if (i > j) std::swap(i, j);
  return i * k - i * (i - 1) / 2 + (j - i);
}

// The sum of the double lanes, folded in a fixed tree: l[i] + l[i + 8], then halves again.
inline double lane_total(const double* lanes) noexcept {
  double t[reduce_lanes];
  for (std::size_t l = 0; l < reduce_lanes; ++l) t[l] = lanes[l];
  for (std::size_t w = reduce_lanes / 2; w >= 1; w /= 2)
    for (std::size_t l = 0; l < w; ++l) t[l] = t[l] + t[l + w];
  return t[0];
}

namespace detail {

// Row i at element e, minus the base when there is one (a task vector), as a batch or scalar.
template <class C>
struct rows_minus_base {
  const C* const* x;
  const C* base;  // may be null
  vec<C> batch(std::size_t i, std::size_t e) const noexcept {
    return base ? load(x[i] + e) - load(base + e) : load(x[i] + e);
  }
  C scalar(std::size_t i, std::size_t e) const noexcept { return base ? x[i][e] - base[e] : x[i][e]; }
};

// One block's lane partials of pair (i, j) (acc: its B batches) plus the scalar tail, into d.
template <class C>
inline void flush_block(const vec<C>* acc, const rows_minus_base<C>& r, std::size_t i, std::size_t j,
                        std::size_t start, std::size_t grouped, std::size_t len, double* d) noexcept {
  constexpr std::size_t W = width<C>;
  constexpr std::size_t L = reduce_lanes;
  alignas(64) C part[L];
  for (std::size_t q = 0; q < L / W; ++q) store(part + q * W, acc[q]);
  for (std::size_t e = grouped; e < len; ++e)
    part[e - grouped] = part[e - grouped] + r.scalar(i, start + e) * r.scalar(j, start + e);
  for (std::size_t l = 0; l < L; ++l) d[l] += static_cast<double>(part[l]);
}

// Few rows: every pair in one sweep, each row loaded once per batch (rows stream together).
template <class C, std::size_t K>
void gram_fused(const rows_minus_base<C>& r, std::size_t n, double* lanes) noexcept {
  constexpr std::size_t W = width<C>;
  constexpr std::size_t L = reduce_lanes;
  constexpr std::size_t B = L / W;
  constexpr std::size_t P = K * (K + 1) / 2;
  for (std::size_t start = 0; start < n; start += reduce_block) {
    const std::size_t len = std::min(reduce_block, n - start);
    const std::size_t grouped = len / L * L;
    vec<C> acc[P][B];
    for (std::size_t p = 0; p < P; ++p)
      for (std::size_t q = 0; q < B; ++q) acc[p][q] = vec<C>(C(0));
    for (std::size_t g = 0; g < grouped; g += L) {
      for (std::size_t q = 0; q < B; ++q) {
        vec<C> v[K];
        for (std::size_t i = 0; i < K; ++i) v[i] = r.batch(i, start + g + q * W);
        std::size_t p = 0;
        for (std::size_t i = 0; i < K; ++i)
          for (std::size_t j = i; j < K; ++j, ++p) acc[p][q] = acc[p][q] + v[i] * v[j];
      }
    }
    std::size_t p = 0;
    for (std::size_t i = 0; i < K; ++i)
      for (std::size_t j = i; j < K; ++j, ++p) flush_block<C>(acc[p], r, i, j, start, grouped, len, lanes + p * L);
  }
}

// Any number of rows: pair by pair over each block (the block stays in L1).
template <class C>
void gram_pairwise(const rows_minus_base<C>& r, std::size_t k, std::size_t n, double* lanes) noexcept {
  constexpr std::size_t W = width<C>;
  constexpr std::size_t L = reduce_lanes;
  constexpr std::size_t B = L / W;
  for (std::size_t start = 0; start < n; start += reduce_block) {
    const std::size_t len = std::min(reduce_block, n - start);
    const std::size_t grouped = len / L * L;
    std::size_t p = 0;
    for (std::size_t i = 0; i < k; ++i) {
      for (std::size_t j = i; j < k; ++j, ++p) {
        vec<C> acc[B];
        for (std::size_t q = 0; q < B; ++q) acc[q] = vec<C>(C(0));
        for (std::size_t g = 0; g < grouped; g += L)
          for (std::size_t q = 0; q < B; ++q) {
            const std::size_t e = start + g + q * W;
            acc[q] = acc[q] + r.batch(i, e) * r.batch(j, e);
          }
        flush_block<C>(acc, r, i, j, start, grouped, len, lanes + p * L);
      }
    }
  }
}

}  // namespace detail

// lanes: gram_pairs(k) * reduce_lanes doubles, accumulated into (zero them to start). With a
// base (not null), the rows are x_i - base, formed in C. (One, two and three rows take a
// fused sweep; the result is the same either way: each lane adds its products in element
// order.)
template <class C>
void gram_accumulate(const C* const* x, std::size_t k, const C* base, std::size_t n, double* lanes) noexcept {
  const detail::rows_minus_base<C> r{x, base};
  switch (k) {
    case 1: detail::gram_fused<C, 1>(r, n, lanes); return;
    case 2: detail::gram_fused<C, 2>(r, n, lanes); return;
    case 3: detail::gram_fused<C, 3>(r, n, lanes); return;
    default: detail::gram_pairwise(r, k, n, lanes); return;
  }
}

template <class C>
void gram_accumulate(const C* const* x, std::size_t k, std::size_t n, double* lanes) noexcept {
  gram_accumulate(x, k, static_cast<const C*>(nullptr), n, lanes);
}

// g: gram_pairs(k) * n doubles (pair-major), accumulated into; rows minus base when given.
template <class C>
void gram_columns(const C* const* x, std::size_t k, const C* base, std::size_t n, double* g) noexcept {
  const detail::rows_minus_base<C> r{x, base};
  std::size_t p = 0;
  for (std::size_t i = 0; i < k; ++i) {
    for (std::size_t j = i; j < k; ++j, ++p) {
      double* gp = g + p * n;
      for (std::size_t e = 0; e < n; ++e)
        gp[e] += static_cast<double>(r.scalar(i, e)) * static_cast<double>(r.scalar(j, e));
    }
  }
}

// Which vector element idx belongs to, for a tensor seen as [outer, length, inner].
struct vector_map {
  std::size_t length = 0;
  std::size_t inner = 1;
  bool single = true;  // one vector: every element maps to 0
  std::size_t operator()(std::size_t idx) const noexcept {
    if (single) return 0;
    if (inner == 1) return idx / length;
    return idx / (length * inner) * inner + idx % inner;
  }
};

enum class combine_mode : unsigned char { sum, task, stock };

template <class C, combine_mode M>
struct vector_combination {
  std::size_t k = 0;        // models (inputs other than the base)
  const C* coef = nullptr;  // vectors x stride
  std::size_t stride = 1;
  vector_map map = {};

  template <class P>
  auto operator()(const P& x) const noexcept {
    using V = std::remove_cvref_t<decltype(x[0])>;
    constexpr std::size_t W = std::is_same_v<V, C> ? 1 : width<C>;
    // The coefficients of the W elements' vectors: one row (broadcast), or one per lane
    // (gathered: only where a batch straddles vectors, or for strided vectors).
    if (map.single) return combine<V>(x, coef);
    const std::size_t first = x.index();
    const std::size_t v0 = map(first);
    if constexpr (W > 1) {
      if (map.inner != 1 || map(first + W - 1) != v0) return gathered<V, W>(x, first);
    }
    return combine<V>(x, coef + v0 * stride);
  }

 private:
  template <class V, class P>
  V combine(const P& x, const C* c) const noexcept {
    if constexpr (M == combine_mode::sum) {
      V acc = V(c[0]) * x[0];
      for (std::size_t i = 1; i < k; ++i) acc = acc + V(c[i]) * x[i];
      return acc;
    } else if constexpr (M == combine_mode::task) {
      const V b = x[0];
      V acc = V(c[0]) * (x[1] - b);
      for (std::size_t i = 1; i < k; ++i) acc = acc + V(c[i]) * (x[1 + i] - b);
      return b + acc;
    } else {
      const V b = x[0];
      V s = x[1];
      for (std::size_t i = 1; i < k; ++i) s = s + x[1 + i];
      const V avg = s / V(static_cast<C>(k));
      const V t = V(c[0]);
      return t * avg + (V(C(1)) - t) * b;
    }
  }

  template <class V, std::size_t W, class P>
  V gathered(const P& x, std::size_t first) const noexcept {
    auto c = [&](std::size_t i) {
      alignas(64) C g[W];
      for (std::size_t l = 0; l < W; ++l) g[l] = coef[map(first + l) * stride + i];
      return load(static_cast<const C*>(g));
    };
    if constexpr (M == combine_mode::sum) {
      V acc = c(0) * x[0];
      for (std::size_t i = 1; i < k; ++i) acc = acc + c(i) * x[i];
      return acc;
    } else if constexpr (M == combine_mode::task) {
      const V b = x[0];
      V acc = c(0) * (x[1] - b);
      for (std::size_t i = 1; i < k; ++i) acc = acc + c(i) * (x[1 + i] - b);
      return b + acc;
    } else {
      const V b = x[0];
      V s = x[1];
      for (std::size_t i = 1; i < k; ++i) s = s + x[1 + i];
      const V avg = s / V(static_cast<C>(k));
      const V t = c(0);
      return t * avg + (V(C(1)) - t) * b;
    }
  }
};

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
