// RegMean: merge linear layers by solving the least-squares problem that makes the merged
// layer reproduce every model's outputs on that model's data; other tensors are averaged.
// Plus gram_accumulator, which builds the Gram matrices from batches of activations.
//
// For a linear layer y = W x with W of shape [out, in] (torch.nn.Linear), model i's weight
// W_i and the Gram matrix G_i = X_i^T X_i of the layer's inputs on model i's data (X_i: one
// row per example, [examples, in]):
//
//   G'_i = alpha G_i + (1 - alpha) diag(G_i)     (off-diagonal entries scaled by alpha)
//   S    = sum_i c_i G'_i,   B = sum_i c_i W_i G'_i
//   W    = B S^-1,  i.e. S W^T = B^T             (solved by Cholesky: LAPACK potrf/potrs)
//
// c_i = coefficients[i] (default all equal), rescaled to sum to 1 (the solution does not
// depend on a common scale). With layout in_out (GPT-2's Conv1D, y = x W, W of shape
// [in, out]) the same problem reads W = S^-1 sum_i c_i G'_i W_i. Tensors without a Gram
// matrix (biases, norms, embeddings) get the coefficient-weighted average sum_i c_i theta_i.
//
// Paper: Jin, Ren, Preotiuc-Pietro, Cheng, "Dataless Knowledge Fusion by Merging Weights of
// Language Models", ICLR 2023 (code: bloomberg/dataless-model-merging, `regmean_mean_params`
// and `reduce_non_diag`; FusionBench/MergeLM `merging_with_regmean_weights` and
// `reduce_non_diagonal_elements`, whose `reduce_non_diagonal_ratio` is alpha). Both form the
// Grams as means over the rows seen (X^T X / rows, gram_accumulator::mean()) and invert S with
// torch.inverse in float32; alloy solves by Cholesky instead, which needs S positive definite:
//
// Singular or indefinite systems. A factorization is accepted when potrf succeeds, LAPACK's
// condition estimate (pocon) gives rcond >= min_rcond (default: the compute type's machine
// epsilon, LAPACK's own test for "singular to working precision") and the solution is
// finite. Otherwise alloy retries with a ridge r = ridge_initial * ridge_growth^k *
// mean(diag S) (k = 0, 1, ..., up to ridge_attempts tries; r = ridge_initial * growth^k when
// S has a zero diagonal), solving (S + r I) W^T = B^T + r W_avg^T. That is exactly adding
// r I to every G'_i, so the ridge pulls the undetermined directions towards the average
// W_avg = sum_i c_i W_i: directions no model's data excite (a zero row/column of every G)
// come out as the average, and all-zero Grams give the average exactly. The ridge used,
// the number of factorizations and rcond are reported per layer (regmean_report). When
// every attempt fails, errc::invalid_argument (the matrices cannot be Gram matrices).
//
// Solved in the delta form around model 0: W = W_0 + D with D S = sum_{i>=1} c_i (W_i - W_0) G'_i
// (the same solution; N - 1 products instead of N, and the rounding error of the solve is
// relative to the differences between the models, not to the weights).
// Precision: the layer is solved in float (double when any of its operands, or
// compute_dtype, is double); 16-bit storage is widened on load, the result rounded once on
// store. S, B and the factorization use the BLAS (symm) and LAPACK (potrf, pocon, potrs)
// through xtensor-blas: link a BLAS with the CBLAS interface and LAPACK (CMake: alloy::linalg;
// by hand: -lopenblas -llapack or -lblas -llapack). Only each G's lower triangle is read (G is symmetric by definition).
// Complexity per layer: N - 1 symm products (2 (N - 1) out in^2 flops), one Cholesky
// (in^3 / 3) per attempt and one solve (2 out in^2). Memory: two in x in and three to five
// out x in scratch matrices of the compute type.
// Determinism: alloy's own passes are identical for any execution.threads; the BLAS and
// LAPACK calls are the same calls in the same order, so results depend only on the BLAS
// library and its own threading (e.g. OPENBLAS_NUM_THREADS).
// Edge cases: Gram values must be finite with a non-negative diagonal (checked for every
// layer before any arithmetic); alpha in [0, 1]; a layer with in = 0 or out = 0 is empty.
// NaN/Inf in a linear layer's weights (two or more models): errc::non_finite before the
// solve; elsewhere (averaged tensors, a single model) NaN/Inf propagate per IEEE.
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/kernels/convert.hpp>
#include <alloy/methods/detail/elementwise.hpp>
#include <alloy/methods/soup.hpp>

#include <xtensor-blas/xblas.hpp>
#include <xtensor-blas/xlapack.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace alloy {

// How a linear layer's weight is stored: [out, in] (torch.nn.Linear, y = W x) or [in, out]
// (transformers' Conv1D in GPT-2, y = x W).
enum class weight_layout { out_in, in_out };

struct regmean_options {
  double alpha = 0.9;                     // off-diagonal scale of every Gram, in [0, 1]
  std::vector<double> coefficients = {};  // c_i >= 0, one per model; empty: all equal
  weight_layout layout = weight_layout::out_in;
  double ridge_initial = 1e-6;    // first ridge tried, relative to mean(diag S); > 0
  double ridge_growth = 10;       // factor between ridges; > 1
  unsigned ridge_attempts = 12;   // ridges tried after the plain factorization fails
  std::optional<double> min_rcond = {};      // default: machine epsilon of the compute type
  std::optional<dtype> compute_dtype = {};   // f32 or f64; default f64 iff an operand is f64
  std::optional<dtype> out_dtype = {};       // model level: default model 0's dtype per tensor
  execution exec = {};
};

// What the solve of one linear layer did.
struct regmean_report {
  std::string name;              // the weight tensor's name (empty at tensor level)
  std::size_t in_features = 0;
  std::size_t out_features = 0;
  double ridge = 0;              // r added to S (0: the plain system was accepted)
  double relative_ridge = 0;     // r / mean(diag S), or r when that mean is 0
  double rcond = 0;              // LAPACK's estimate of 1 / cond_1(S + r I); 1 for in = 0
  unsigned attempts = 0;         // Cholesky factorizations tried (0 for an empty layer)
};

struct regmean_result {
  tensor_set merged;
  std::vector<regmean_report> layers;  // one per merged linear layer, in model 0's order
};

namespace detail {

// ---- buffers and widening ----------------------------------------------------------------

template <class C>
struct regmean_buffer {
  std::unique_ptr<C[]> p;
  explicit regmean_buffer(std::size_t n) : p(std::make_unique_for_overwrite<C[]>(n == 0 ? 1 : n)) {}
  C* get() const noexcept { return p.get(); }
};

// dst[0, n) = src widened to C, in parallel chunks (elementwise: any thread count gives the same bits).
template <class C>
void regmean_widen(tensor_view src, C* dst, const execution& ex) {
  const std::size_t items = (src.size + parallel_chunk - 1) / parallel_chunk;
  parallel_for(items, ex, [&](std::size_t k) {
    const std::size_t first = k * parallel_chunk, len = std::min(parallel_chunk, src.size - first);
    kernels::widen(kernels::source{src.data, src.type}, first, dst + first, len);
  });
}

// Calls f(r) for every row r of an n-row matrix, in parallel blocks of rows.
template <class F>
void regmean_for_rows(std::size_t n, std::size_t cols, const execution& ex, F&& f) {
  const std::size_t block = std::max<std::size_t>(1, parallel_chunk / std::max<std::size_t>(cols, 1));
  const std::size_t items = (n + block - 1) / block;
  parallel_for(items, ex, [&](std::size_t k) {
    for (std::size_t r = k * block; r < std::min(n, (k + 1) * block); ++r) f(r);
  });
}

// dst [cols, rows] = src [rows, cols] transposed (row-major both), in 32 x 32 blocks, parallel
// over blocks of destination rows.
template <class C>
void regmean_transpose(const C* src, std::size_t rows, std::size_t cols, C* dst, const execution& ex) {
  constexpr std::size_t b = 32;
  const std::size_t items = (cols + b - 1) / b;
  parallel_for(items, ex, [&](std::size_t k) {
    const std::size_t c0 = k * b, c1 = std::min(cols, c0 + b);
    for (std::size_t r0 = 0; r0 < rows; r0 += b)
      for (std::size_t c = c0; c < c1; ++c)
        for (std::size_t r = r0; r < std::min(rows, r0 + b); ++r) dst[c * rows + r] = src[r * cols + c];
  });
}

// ---- validation ------------------------------------------------------------------------

inline void check_regmean_options(std::size_t models, std::size_t grams, const regmean_options& o) {
  const char* method = "regmean";
  check_model_count(method, models, 1, kernels::max_stream_inputs);
  if (grams != models)
    throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(grams) + " Gram " +
                                            (grams == 1 ? "set" : "sets") + " for " + std::to_string(models) + " models");
  check_finite(method, "alpha", o.alpha);
  if (o.alpha < 0 || o.alpha > 1)
    throw error(errc::invalid_argument, std::string(method) + ": alpha is " + fmt(o.alpha) + "; it must be in [0, 1]");
  if (!o.coefficients.empty()) {
    if (o.coefficients.size() != models)
      throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(o.coefficients.size()) +
                                              " coefficients for " + std::to_string(models) + " models");
    for (std::size_t i = 0; i < models; ++i) {
      check_finite(method, "coefficient of model " + std::to_string(i), o.coefficients[i]);
      if (o.coefficients[i] < 0)
        throw error(errc::invalid_argument, std::string(method) + ": coefficient of model " + std::to_string(i) +
                                                " is " + fmt(o.coefficients[i]) + "; coefficients must be >= 0");
    }
    if (std::all_of(o.coefficients.begin(), o.coefficients.end(), [](double c) { return c == 0; }))
      throw error(errc::invalid_argument, std::string(method) + ": every coefficient is 0");
  }
  check_finite(method, "ridge_initial", o.ridge_initial);
  if (!(o.ridge_initial > 0))
    throw error(errc::invalid_argument, std::string(method) + ": ridge_initial is " + fmt(o.ridge_initial) +
                                            "; it must be > 0");
  check_finite(method, "ridge_growth", o.ridge_growth);
  if (!(o.ridge_growth > 1))
    throw error(errc::invalid_argument, std::string(method) + ": ridge_growth is " + fmt(o.ridge_growth) +
                                            "; it must be > 1");
  if (o.min_rcond) {
    check_finite(method, "min_rcond", *o.min_rcond);
    if (*o.min_rcond < 0 || *o.min_rcond > 1)
      throw error(errc::invalid_argument, std::string(method) + ": min_rcond is " + fmt(*o.min_rcond) +
                                              "; it must be in [0, 1]");
  }
  if (o.compute_dtype && *o.compute_dtype != dtype::f32 && *o.compute_dtype != dtype::f64)
    throw error(errc::dtype_mismatch, std::string(method) + ": compute_dtype is " +
                                          std::string(dtype_name(*o.compute_dtype)) + "; it must be F32 or F64");
}

inline std::vector<double> regmean_coefficients(std::size_t models, const regmean_options& o) {
  std::vector<double> c = o.coefficients.empty() ? std::vector<double>(models, 1.0) : o.coefficients;
  const double total = std::accumulate(c.begin(), c.end(), 0.0);
  for (double& v : c) v /= total;
  return c;
}

// One linear layer: weights and Grams of every model, the output, and the layer's sizes.
struct regmean_layer {
  std::string_view name;
  std::vector<tensor_view> weights;
  std::vector<tensor_view> grams;
  mutable_tensor_view out;
  std::size_t in = 0;
  std::size_t out_features = 0;
};

inline constexpr std::size_t no_index_v = static_cast<std::size_t>(-1);

// Every Gram value finite and every diagonal entry >= 0; reads the lower triangle and diagonal.
inline void scan_grams(const regmean_layer& layer, const execution& ex) {
  const std::size_t n = layer.in;
  for (std::size_t i = 0; i < layer.grams.size(); ++i) {
    const tensor_view g = layer.grams[i];
    std::vector<std::size_t> bad_row(n, no_index_v);
    std::vector<double> bad_val(n, 0);
    regmean_for_rows(n, n, ex, [&](std::size_t r) {
      double row[256];
      for (std::size_t c0 = 0; c0 <= r; c0 += 256) {
        const std::size_t len = std::min<std::size_t>(256, r + 1 - c0);
        kernels::widen(kernels::source{g.data, g.type}, r * n + c0, row, len);
        for (std::size_t c = 0; c < len; ++c) {
          const double v = row[c];
          const bool diag = c0 + c == r;
          if (!std::isfinite(v) || (diag && v < 0)) {
            bad_row[r] = c0 + c;
            bad_val[r] = v;
            return;
          }
        }
      }
    });
    for (std::size_t r = 0; r < n; ++r) {
      if (bad_row[r] == no_index_v) continue;
      const std::string where = "the Gram of model " + std::to_string(i) + " has " + fmt(bad_val[r]) + " at (" +
                                std::to_string(r) + ", " + std::to_string(bad_row[r]) + ")" + in_tensor(layer.name);
      if (!std::isfinite(bad_val[r]))
        throw error(errc::non_finite, "regmean: " + where + ", not a finite number");
      throw error(errc::invalid_argument,
                  "regmean: " + where + "; the diagonal of a Gram matrix X^T X is >= 0");
    }
  }
}

inline bool regmean_in_double(const regmean_layer& l, const regmean_options& o) {
  if (o.compute_dtype) return *o.compute_dtype == dtype::f64;
  if (l.out.type == dtype::f64) return true;
  for (const auto& v : l.weights)
    if (v.type == dtype::f64) return true;
  for (const auto& v : l.grams)
    if (v.type == dtype::f64) return true;
  return false;
}

// ---- the solve of one layer ---------------------------------------------------------------

// The solve, in the delta form around model 0: with D_i = W_i - W_0 and sum_i c_i = 1,
//   B = sum_i c_i W_i G'_i = W_0 S + sum_{i>=1} c_i D_i G'_i,
// so W = W_0 + D where D S = sum_{i>=1} c_i D_i G'_i (N - 1 products instead of N). With a
// ridge, D (S + r I) = sum_{i>=1} c_i D_i G'_i + r (W_avg - W_0). The same solution as the
// direct form; the right-hand side is the (small) difference between fine-tuned models, so
// the solve's rounding error is relative to that difference, not to the weights, and
// identical models give W_0 exactly.
template <class C>
regmean_report solve_regmean_layer(const regmean_layer& l, std::span<const double> coef, const regmean_options& o) {
  regmean_report rep;
  rep.name = std::string(l.name);
  rep.in_features = l.in;
  rep.out_features = l.out_features;
  const std::size_t n = l.in, m = l.out_features, N = l.weights.size();
  if (n == 0 || m == 0) {
    rep.rcond = 1;
    return rep;
  }
  const execution& ex = o.exec;
  const bool out_in = o.layout == weight_layout::out_in;
  const int ni = static_cast<int>(n), mi = static_cast<int>(m);

  // W_0 in C, in its own layout ([m, n] for out_in, [n, m] for in_out).
  std::optional<regmean_buffer<C>> w0buf;
  const C* w0 = nullptr;
  if (l.weights[0].type == dtype_of<C>) {
    w0 = static_cast<const C*>(l.weights[0].data);
  } else {
    w0buf.emplace(n * m);
    regmean_widen(l.weights[0], w0buf->get(), ex);
    w0 = w0buf->get();
  }
  // D_i = W_i - W_0 into d (widening W_i).
  auto delta = [&](std::size_t i, C* d) {
    if (l.weights[i].type == dtype_of<C>) {
      const C* wi = static_cast<const C*>(l.weights[i].data);
      regmean_for_rows(n, m, ex, [&](std::size_t r) {
        for (std::size_t k = r * m; k < (r + 1) * m; ++k) d[k] = wi[k] - w0[k];
      });
    } else {
      regmean_widen(l.weights[i], d, ex);
      regmean_for_rows(n, m, ex, [&](std::size_t r) {
        for (std::size_t k = r * m; k < (r + 1) * m; ++k) d[k] = d[k] - w0[k];
      });
    }
  };

  // S = sum_i c_i G'_i (lower triangle, row-major); B = the right-hand sides, [m, n]
  // row-major (column-major [n, m]: LAPACK's layout).
  regmean_buffer<C> S(n * n), B(n * m);
  C* const s = S.get();
  {
    regmean_buffer<C> G(n * n), D(n * m);
    std::optional<regmean_buffer<C>> Bt;
    if (!out_in) Bt.emplace(n * m);
    C* const g = G.get();
    for (std::size_t i = 0; i < N; ++i) {
      regmean_widen(l.grams[i], g, ex);
      const C a = static_cast<C>(o.alpha), ci = static_cast<C>(coef[i]);
      const bool first = i == 0;
      regmean_for_rows(n, n, ex, [&](std::size_t r) {
        C* gr = g + r * n;
        C* sr = s + r * n;
        for (std::size_t c = 0; c < r; ++c) gr[c] = gr[c] * a;
        for (std::size_t c = 0; c <= r; ++c) sr[c] = first ? ci * gr[c] : sr[c] + ci * gr[c];
      });
      if (i == 0) continue;
      delta(i, D.get());
      const C beta = C(i == 1 ? 0 : 1);
      if (out_in)
        cxxblas::symm<int>(cxxblas::RowMajor, cxxblas::Right, cxxblas::Lower, mi, ni, ci, g, ni, D.get(), ni, beta,
                           B.get(), ni);
      else
        cxxblas::symm<int>(cxxblas::RowMajor, cxxblas::Left, cxxblas::Lower, ni, mi, ci, g, ni, D.get(), mi, beta,
                           Bt->get(), mi);
    }
    if (N == 1)
      std::fill(B.get(), B.get() + n * m, C(0));
    else if (!out_in)
      regmean_transpose(Bt->get(), n, m, B.get(), ex);
  }
  {
    const C* b = B.get();
    bool finite = true;
    for (std::size_t k = 0; k < n * m && finite; ++k) finite = std::isfinite(static_cast<double>(b[k]));
    if (!finite)
      throw error(errc::non_finite, "regmean: the weights of " + (l.name.empty() ? std::string("the layer") : "'" + std::string(l.name) + "'") +
                                        " hold NaN or Inf (or their products with the Grams overflow)");
  }
  // Keep S: its strict lower triangle mirrored into the strict upper one (which potrf on the
  // column-major upper triangle never touches) and its diagonal aside.
  std::vector<C> diag(n);
  regmean_for_rows(n, n, ex, [&](std::size_t r) {
    for (std::size_t c = 0; c < r; ++c) s[c * n + r] = s[r * n + c];
    diag[r] = s[r * n + r];
  });
  double mean_diag = 0;
  for (std::size_t r = 0; r < n; ++r) mean_diag += static_cast<double>(diag[r]);
  mean_diag /= static_cast<double>(n);
  const double scale = mean_diag > 0 ? mean_diag : 1.0;
  const double min_rcond = o.min_rcond.value_or(static_cast<double>(std::numeric_limits<C>::epsilon()));

  // W_avg - W_0 = sum_{i>=1} c_i D_i in B's layout, built when the first ridge is needed.
  std::optional<regmean_buffer<C>> avg_shift;
  auto build_shift = [&] {
    avg_shift.emplace(n * m);
    C* sh = avg_shift->get();
    std::fill(sh, sh + n * m, C(0));
    regmean_buffer<C> d(n * m), t(n * m);
    for (std::size_t i = 1; i < N; ++i) {
      const C ci = static_cast<C>(coef[i]);
      delta(i, d.get());
      const C* src = d.get();
      if (!out_in) {
        regmean_transpose(d.get(), n, m, t.get(), ex);
        src = t.get();
      }
      regmean_for_rows(m, n, ex, [&](std::size_t r) {
        for (std::size_t k = r * n; k < (r + 1) * n; ++k) sh[k] = sh[k] + ci * src[k];
      });
    }
  };

  regmean_buffer<C> X(n * m);
  std::vector<C> work(3 * n);
  std::vector<int> iwork(n);
  std::vector<double> colsum(n);
  double relative = 0;
  for (unsigned attempt = 0; attempt <= o.ridge_attempts; ++attempt) {
    if (attempt > 0) relative = attempt == 1 ? o.ridge_initial : relative * o.ridge_growth;
    const C r = static_cast<C>(relative * scale);
    if (attempt > 0 && !(r > 0 && std::isfinite(static_cast<double>(r)))) break;
    ++rep.attempts;
    if (attempt > 0)  // restore S's lower triangle (potrf overwrote it), plus r I
      regmean_for_rows(n, n, ex, [&](std::size_t row) {
        for (std::size_t c = 0; c < row; ++c) s[row * n + c] = s[c * n + row];
        s[row * n + row] = diag[row] + r;
      });
    // ||S + r I||_1 (symmetric: column sums = row sums), for pocon.
    std::fill(colsum.begin(), colsum.end(), 0.0);
    for (std::size_t row = 0; row < n; ++row)
      for (std::size_t c = 0; c <= row; ++c) {
        const double v = std::abs(static_cast<double>(s[row * n + c]));
        colsum[c] += v;
        if (c != row) colsum[row] += v;
      }
    const C anorm = static_cast<C>(*std::max_element(colsum.begin(), colsum.end()));
    if (cxxlapack::potrf<int>('U', ni, s, ni) != 0) continue;
    C rcond = 0;
    if (cxxlapack::pocon<int>('U', ni, s, ni, anorm, rcond, work.data(), iwork.data()) != 0) continue;
    if (!(static_cast<double>(rcond) >= min_rcond)) continue;
    C* x = X.get();
    const C* b = B.get();
    if (r > 0) {
      if (!avg_shift) build_shift();
      const C* sh = avg_shift->get();
      regmean_for_rows(m, n, ex, [&](std::size_t row) {
        for (std::size_t k = row * n; k < (row + 1) * n; ++k) x[k] = b[k] + r * sh[k];
      });
    } else {
      std::copy(b, b + n * m, x);
    }
    cxxlapack::potrs<int>('U', ni, mi, s, ni, x, ni);
    bool finite = true;
    for (std::size_t k = 0; k < n * m && finite; ++k) finite = std::isfinite(static_cast<double>(x[k]));
    if (!finite) continue;
    // Accepted: W = W_0 + D, in W's layout (x is D for out_in, D^T for in_out).
    rep.ridge = static_cast<double>(r);
    rep.relative_ridge = mean_diag > 0 ? static_cast<double>(r) / mean_diag : static_cast<double>(r);
    rep.rcond = static_cast<double>(rcond);
    C* dw = x;
    if (!out_in) {
      regmean_transpose(x, m, n, B.get(), ex);  // B is free now
      dw = B.get();
    }
    const kernels::sink dst{l.out.data, l.out.type};
    const std::size_t rows = out_in ? m : n, cols = out_in ? n : m;
    regmean_for_rows(rows, cols, ex, [&](std::size_t row) {
      C* p = dw + row * cols;
      for (std::size_t k = 0; k < cols; ++k) p[k] = w0[row * cols + k] + p[k];
      kernels::narrow(p, dst, row * cols, cols);
    });
    return rep;
  }
  throw error(errc::invalid_argument,
              "regmean: the system of layer" + (l.name.empty() ? std::string() : " '" + std::string(l.name) + "'") +
                  " stays singular or indefinite up to a ridge of " + fmt(relative) +
                  " x mean(diag S) after " + std::to_string(rep.attempts) +
                  " Cholesky attempts (are these Gram matrices X^T X? are the weights finite?)");
}

inline regmean_report run_regmean_layer(const regmean_layer& l, std::span<const double> coef, const regmean_options& o) {
  if (l.in > static_cast<std::size_t>(INT_MAX) || l.out_features > static_cast<std::size_t>(INT_MAX))
    throw error(errc::invalid_argument, "regmean: layer" + in_tensor(l.name) + " has more than INT_MAX rows or columns");
  return regmean_in_double(l, o) ? solve_regmean_layer<double>(l, coef, o) : solve_regmean_layer<float>(l, coef, o);
}

inline std::size_t exact_sqrt(std::size_t v) noexcept {
  auto r = static_cast<std::size_t>(std::sqrt(static_cast<double>(v)));
  while (r * r > v) --r;
  while ((r + 1) * (r + 1) <= v) ++r;
  return r;
}

inline std::vector<std::string> regmean_labels(std::size_t models, std::string_view what) {
  std::vector<std::string> l;
  for (std::size_t i = 0; i < models; ++i) l.push_back("model " + std::to_string(i));
  for (std::size_t i = 0; i < models; ++i) l.push_back(std::string(what) + " of model " + std::to_string(i));
  return l;
}

}  // namespace detail

// regmean(weights, grams, out [, options]) -> regmean_report merges one linear layer: its
// in_features come from the Grams (in x in elements each), out_features = size / in.
// regmean(model_sets, gram_sets [, options]) -> regmean_result merges whole models: every
// tensor named by a Gram (the Gram's name, or that name + ".weight", as module names go) is
// a linear layer of shape [out, in] (layout out_in) or [in, out] (in_out) with a Gram of
// shape [in, in]; every other tensor is averaged with the coefficients.
struct regmean_fn {
  regmean_report operator()(std::span<const tensor_view> weights, std::span<const tensor_view> grams,
                            mutable_tensor_view out, const regmean_options& o = {}) const {
    const char* method = "regmean";
    detail::check_regmean_options(weights.size(), grams.size(), o);
    std::vector<std::string> wl, gl;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      wl.push_back("model " + std::to_string(i));
      gl.push_back("the Gram of model " + std::to_string(i));
    }
    detail::check_inputs(method, {}, weights, wl, out);
    for (std::size_t i = 0; i < grams.size(); ++i) detail::check_floating(method, gl[i], {}, grams[i].type);
    for (std::size_t i = 1; i < grams.size(); ++i)
      if (grams[i].size != grams[0].size)
        throw error(errc::size_mismatch, std::string(method) + ": " + gl[i] + " has " + std::to_string(grams[i].size) +
                                             " elements, " + gl[0] + " has " + std::to_string(grams[0].size));
    const std::size_t in = detail::exact_sqrt(grams[0].size);
    if (in * in != grams[0].size)
      throw error(errc::size_mismatch, std::string(method) + ": a Gram of " + std::to_string(grams[0].size) +
                                           " elements is not square");
    if (in == 0 ? weights[0].size != 0 : weights[0].size % in != 0)
      throw error(errc::size_mismatch, std::string(method) + ": a weight of " + std::to_string(weights[0].size) +
                                           " elements does not have in_features = " + std::to_string(in) +
                                           " (from the Grams) as a dimension");
    std::vector<tensor_view> all(weights.begin(), weights.end());
    all.insert(all.end(), grams.begin(), grams.end());
    detail::check_no_overlap(method, {}, all, detail::regmean_labels(weights.size(), "the Gram"), out);
    detail::regmean_layer layer{{}, {weights.begin(), weights.end()}, {grams.begin(), grams.end()}, out, in,
                                in == 0 ? 0 : weights[0].size / in};
    detail::scan_grams(layer, o.exec);
    const auto coef = detail::regmean_coefficients(weights.size(), o);
    return detail::run_regmean_layer(layer, coef, o);
  }
  regmean_report operator()(std::initializer_list<tensor_view> weights, std::initializer_list<tensor_view> grams,
                            mutable_tensor_view out, const regmean_options& o = {}) const {
    return (*this)(std::span(weights.begin(), weights.size()), std::span(grams.begin(), grams.size()), out, o);
  }
  template <std::ranges::input_range R, std::ranges::input_range G>
    requires tensor_like<std::ranges::range_value_t<R>> && tensor_like<std::ranges::range_value_t<G>>
  regmean_report operator()(const R& weights, const G& grams, mutable_tensor_view out, const regmean_options& o = {}) const {
    return (*this)(std::span<const tensor_view>(views_of(weights)), std::span<const tensor_view>(views_of(grams)), out, o);
  }

  template <detail::model_set_range R, detail::model_set_range G>
  regmean_result operator()(const R& models, const G& grams, const regmean_options& o = {}) const {
    const char* method = "regmean";
    const auto msets = detail::named_views_of_each(models);
    const auto gsets = detail::named_views_of_each(grams);
    const std::size_t N = msets.size();
    detail::check_regmean_options(N, gsets.size(), o);
    const auto matched = detail::match_sets(method, msets, detail::model_labels(N, false));
    std::vector<std::string> glabels;
    for (std::size_t i = 0; i < N; ++i) glabels.push_back("the Gram set of model " + std::to_string(i));
    const bool any_gram = std::any_of(gsets.begin(), gsets.end(), [](const auto& g) { return !g.empty(); });
    const auto gmatched = any_gram ? detail::match_sets(method, gsets, glabels) : std::vector<detail::matched_tensors>{};
    if (o.out_dtype) detail::check_floating(method, "the requested output", {}, *o.out_dtype);

    // Which tensor each Gram belongs to: its own name, else name + ".weight".
    std::unordered_map<std::string_view, std::size_t> tensor_index;
    for (std::size_t t = 0; t < matched.size(); ++t) tensor_index.emplace(matched[t].name, t);
    std::vector<std::ptrdiff_t> gram_of(matched.size(), -1);
    std::vector<std::string> suffixed;
    suffixed.reserve(gmatched.size());
    for (std::size_t g = 0; g < gmatched.size(); ++g) {
      auto it = tensor_index.find(gmatched[g].name);
      if (it == tensor_index.end()) {
        suffixed.push_back(std::string(gmatched[g].name) + ".weight");
        it = tensor_index.find(suffixed.back());
      }
      if (it == tensor_index.end())
        throw error(errc::missing_tensor, std::string(method) + ": the Gram '" + std::string(gmatched[g].name) +
                                              "' matches no tensor of model 0 (neither '" +
                                              std::string(gmatched[g].name) + "' nor '" + std::string(gmatched[g].name) +
                                              ".weight')");
      if (gram_of[it->second] >= 0)
        throw error(errc::duplicate_name, std::string(method) + ": tensor '" + std::string(matched[it->second].name) +
                                              "' has two Grams ('" + std::string(gmatched[gram_of[it->second]].name) +
                                              "' and '" + std::string(gmatched[g].name) + "')");
      gram_of[it->second] = static_cast<std::ptrdiff_t>(g);
    }

    regmean_result result;
    std::vector<detail::regmean_layer> layers;
    std::vector<detail::elementwise_job> averaged;
    for (std::size_t t = 0; t < matched.size(); ++t) {
      const auto& m = matched[t];
      const mutable_tensor_view dst =
          result.merged.add(std::string(m.name), o.out_dtype.value_or(m.views[0].type), m.shape, no_init);
      if (gram_of[t] < 0) {
        averaged.push_back({m.views, dst});
        continue;
      }
      const auto& gm = gmatched[static_cast<std::size_t>(gram_of[t])];
      if (m.shape.size() != 2)
        throw error(errc::shape_mismatch, std::string(method) + ": tensor '" + std::string(m.name) + "' has shape " +
                                              shape_string(m.shape) + ", but a linear layer's weight is 2-D");
      const std::size_t in = o.layout == weight_layout::out_in ? m.shape[1] : m.shape[0];
      const std::size_t outf = o.layout == weight_layout::out_in ? m.shape[0] : m.shape[1];
      if (gm.shape != std::vector<std::size_t>{in, in})
        throw error(errc::shape_mismatch, std::string(method) + ": the Gram '" + std::string(gm.name) + "' has shape " +
                                              shape_string(gm.shape) + ", but tensor '" + std::string(m.name) +
                                              "' of shape " + shape_string(m.shape) + " needs [" + std::to_string(in) +
                                              ", " + std::to_string(in) + "]");
      layers.push_back({m.name, m.views, gm.views, dst, in, outf});
    }
    for (const auto& l : layers) detail::scan_grams(l, o.exec);

    const auto coef = detail::regmean_coefficients(N, o);
    const detail::linear_weights lw(coef);
    detail::run_elementwise(averaged, o.exec,
                            [&](std::size_t, auto tag) { return detail::average_kernel<decltype(tag)>(lw, false); });
    for (const auto& l : layers) result.layers.push_back(detail::run_regmean_layer(l, coef, o));
    return result;
  }
  regmean_result operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> models,
                            std::initializer_list<std::reference_wrapper<const tensor_set>> grams,
                            const regmean_options& o = {}) const {
    return (*this)(std::span(models.begin(), models.size()), std::span(grams.begin(), grams.size()), o);
  }
};
inline constexpr regmean_fn regmean{};

// gram_accumulator<A>: G = X^T X of one linear layer's inputs, from batches of activations
// (rows = examples, features() columns: a row-major [rows, features] block of any floating
// storage type; a [batch, tokens, features] activation is rows = batch * tokens), formed by
// the BLAS (syrk) in A (float by default; double for long runs or ill-conditioned layers).
//
//   gram_accumulator<float> acc(in_features);
//   for (each batch) acc.add(activations);     // rows = size / features
//   std::vector<float> g = acc.mean();         // X^T X / rows: what the reference code stores
//   acc.sum(out); acc.mean(out);              // into any floating tensor of features^2 elements
//
// Results are full symmetric matrices, row-major. Determinism: the same BLAS calls for the
// same batches (batches are cut into blocks of a fixed number of rows when they need
// widening), so the result depends only on the BLAS library and its threading. NaN/Inf
// activations propagate into G (regmean then rejects it).
template <class A = float>
  requires std::same_as<A, float> || std::same_as<A, double>
class gram_accumulator {
 public:
  explicit gram_accumulator(std::size_t features, execution exec = {}) : n_(features), g_(features * features), exec_(exec) {
    if (features == 0) throw error(errc::invalid_argument, "gram_accumulator: 0 features");
    if (features > static_cast<std::size_t>(INT_MAX))
      throw error(errc::invalid_argument, "gram_accumulator: more than INT_MAX features");
  }

  std::size_t features() const noexcept { return n_; }
  std::size_t count() const noexcept { return count_; }
  void reset() noexcept {
    std::fill(g_.begin(), g_.end(), A(0));
    count_ = 0;
  }

  void add(tensor_view x) {
    const char* method = "gram_accumulator";
    detail::check_floating(method, "the activations", {}, x.type);
    if (x.size % n_ != 0)
      throw error(errc::size_mismatch, std::string(method) + ": " + std::to_string(x.size) +
                                           " activations are not rows of " + std::to_string(n_) + " features");
    const std::size_t rows = x.size / n_;
    const int n = static_cast<int>(n_);
    if (x.type == dtype_of<A>) {
      const A* p = static_cast<const A*>(x.data);
      for (std::size_t r0 = 0; r0 < rows; r0 += max_rows_per_call) {
        const std::size_t k = std::min(max_rows_per_call, rows - r0);
        cxxblas::syrk<int>(cxxblas::RowMajor, cxxblas::Lower, cxxblas::Trans, n, static_cast<int>(k), A(1), p + r0 * n_, n,
                           A(1), g_.data(), n);
      }
    } else {
      const std::size_t block = std::clamp<std::size_t>(widen_block_bytes / sizeof(A) / n_, 1, max_rows_per_call);
      std::vector<A> buf(std::min(rows, block) * n_);
      for (std::size_t r0 = 0; r0 < rows; r0 += block) {
        const std::size_t k = std::min(block, rows - r0);
        detail::regmean_widen(tensor_view(static_cast<const std::byte*>(x.data) + r0 * n_ * dtype_size(x.type), k * n_, x.type),
                               buf.data(), exec_);
        cxxblas::syrk<int>(cxxblas::RowMajor, cxxblas::Lower, cxxblas::Trans, n, static_cast<int>(k), A(1), buf.data(), n,
                           A(1), g_.data(), n);
      }
    }
    count_ += rows;
  }
  template <tensor_like T>
  void add(const T& activations) {
    add(tensor_view(activations));
  }

  // X^T X over every row added (the full symmetric matrix).
  std::vector<A> sum() const {
    std::vector<A> out(n_ * n_);
    write(std::span<A>(out), false);
    return out;
  }
  void sum(mutable_tensor_view out) const { write(out, false); }
  // X^T X / count(): the reference implementations' Gram. errc::empty_input before any row.
  std::vector<A> mean() const {
    std::vector<A> out(n_ * n_);
    write(std::span<A>(out), true);
    return out;
  }
  void mean(mutable_tensor_view out) const { write(out, true); }

 private:
  static constexpr std::size_t max_rows_per_call = std::size_t{1} << 20;
  static constexpr std::size_t widen_block_bytes = std::size_t{4} << 20;

  void write(mutable_tensor_view out, bool divide) const {
    const char* method = "gram_accumulator";
    if (divide && count_ == 0) throw error(errc::empty_input, std::string(method) + ": mean() before any activation was added");
    detail::check_floating(method, "the output", {}, out.type);
    if (out.size != n_ * n_)
      throw error(errc::size_mismatch, std::string(method) + ": the output has " + std::to_string(out.size) +
                                           " elements, the Gram " + std::to_string(n_ * n_));
    const A k = divide ? static_cast<A>(count_) : A(1);
    detail::regmean_for_rows(n_, n_, exec_, [&](std::size_t r) {
      std::vector<A> row(n_);
      for (std::size_t c = 0; c < n_; ++c) {
        const A v = c <= r ? g_[r * n_ + c] : g_[c * n_ + r];
        row[c] = divide ? v / k : v;
      }
      kernels::narrow(row.data(), kernels::sink{out.data, out.type}, r * n_, n_);
    });
  }

  std::size_t n_;
  std::vector<A> g_;  // lower triangle (row-major) valid
  std::size_t count_ = 0;
  execution exec_;
};

}  // namespace alloy
