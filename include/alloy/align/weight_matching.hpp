// Weight matching (Ainsworth, Hayase, Srinivasa, "Git Re-Basin: Merging Models modulo
// Permutation Symmetries", ICLR 2023, Algorithm 1; samuela/git-re-basin weight_matching.py):
// permutations of model B's units that maximise the inner product of the two models'
// weights,
//
//   J(pi) = sum_t < theta_A,t , pi(theta_B)_t >      over the tensors t the spec lists,
//
// where pi(theta_B)_t permutes every grouped axis of t (apply_permutations).
//
//   auto r = alloy::align::weight_matching(spec, model_a, model_b, {.seed = 0, .max_iter = 100});
//   alloy::tensor_set b_aligned = alloy::align::apply_permutations(spec, model_b, r.perms);
//   r.objective.front(), r.objective.back()   // J before (identity or init) and after
//
// Algorithm: coordinate descent. Each iteration visits every group once, in a random order
// drawn from (seed, iteration) by alloy's counter-based generator (same seed, same order, on
// every platform); for group P of size n, with every other permutation fixed, J is linear in
// P: J = <S, P> + const with
//
//   S = sum over the (tensor t, axis x) of P of  A_t,x  B'_t,x^T        (n x n)
//
// where A_t,x is theta_A,t with axis x moved first and reshaped to n rows, and B'_t,x the same
// of theta_B,t with its other grouped axes permuted by their current permutations. Each term
// is one BLAS gemm (cblas_sgemm, or cblas_dgemm when any listed tensor of A or B is double):
// rows of a first axis and columns of a last axis (nn.Linear's in-features) are read in
// place through the transpose flags, a middle axis (conv in-channels) is gathered first.
// The step solves linear_sum_assignment(S, maximize) and takes its assignment when it improves
// <S, P> by more than tolerance * max(|old|, |new|); otherwise the permutation is kept (so
// exact ties never move a unit). The descent stops after an iteration in which no step was
// taken (converged), or after max_iter iterations.
//
// Result: perms (the permutation of every group, numpy.take convention: unit i of the aligned
// B is unit perms[g][i] of B), objective (J with the initial permutations, then J after each
// iteration, computed exactly from the permuted tensors, in double), iterations, converged.
// J never decreases from one iteration to the next.
//
// Complexity: per iteration, sum over groups of (2 n^2 K flops for each (tensor, axis) with K
// the product of the tensor's other axes, a gather of B's tensor when another of its axes is
// permuted, and one n x n assignment); then one pass over the listed tensors for J.
// Memory: A and B's listed tensors in the compute type (float, or double), one gather buffer
// per (tensor, axis) that needs one, and n x n for S.
// Precision: S accumulates in the compute type inside the BLAS; gains and J in double.
// Determinism: identical results for a given seed, inputs, BLAS library and BLAS thread
// count (a BLAS may sum in a different order with another thread count or CPU kernel; near
// ties the assignment can then differ).
// Edge cases: a group of size 0 or 1 has one permutation; a spec without groups returns J
// alone; zero tensors give S = 0 and the identity. A tensor with one group on two axes
// (a square hidden-to-hidden weight) makes J quadratic in that permutation: the step's S
// then sums the terms of both axes, each with the other axis at its current permutation
// (git-re-basin's get_permuted_param does the same), which linearises J; the candidate is
// taken only when it improves J itself by more than the tolerance (one extra evaluation of
// J per such step), since the linearised gain alone can cycle between two permutations.
// Errors (alloy::error, before any arithmetic): the spec checks of group_sizes on either
// model (missing tensor, rank, group sizes), a listed tensor whose shape differs between A
// and B (shape_mismatch) or whose dtype is not floating (dtype_mismatch), an empty spec
// (empty_input), a NaN or infinity in a listed tensor (non_finite, naming the model, the
// tensor, the element and the axes it enters the cost of), an invalid init (check_permutations),
// max_iter 0 or a negative or NaN tolerance (invalid_argument), an axis too long for a BLAS
// int (invalid_argument). A cost matrix that overflows to infinity: non_finite, naming the
// group and its axes.
// Needs a CBLAS (#include <cblas.h>; link OpenBLAS: find_package(BLAS) with BLA_VENDOR
// OpenBLAS, BLAS::BLAS).
#pragma once

#include <alloy/align/apply.hpp>
#include <alloy/align/linear_assignment.hpp>
#include <alloy/align/permutation_spec.hpp>
#include <alloy/core/random.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/error.hpp>
#include <alloy/kernels/convert.hpp>

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace alloy::align {

// One coordinate step, for progress reports (weight_matching_options::on_step).
struct weight_matching_step {
  std::size_t iteration = 0;   // 0-based
  std::string_view group;
  double old_value = 0;        // <S, P> with the current permutation (J itself for a
  double new_value = 0;        // <S, P*> with the assignment found     quadratic group)
  bool accepted = false;       // new_value - old_value > tolerance * max(|old|, |new|)
};

struct weight_matching_options {
  std::uint64_t seed = 0;            // the group order of every iteration
  std::size_t max_iter = 100;        // iterations (each visits every group once)
  double tolerance = 1e-12;          // relative improvement a step needs to be taken
  permutation_map init = {};         // starting permutations; empty: the identity
  std::function<void(const weight_matching_step&)> on_step = {};
};

struct weight_matching_result {
  permutation_map perms;             // one per group of the spec
  std::vector<double> objective;     // J(init), then J after each iteration
  std::size_t iterations = 0;        // iterations run
  bool converged = false;            // the last iteration took no step
};

namespace detail {

template <class C>
void wm_gemm(bool trans_a, bool trans_b, int m, int n, int k, const C* a, int lda, const C* b, int ldb, C* c, int ldc) {
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<C, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, 1.0, c, ldc);
}

// sum_i x[i] y[i] in double (cblas_dsdot / cblas_ddot), in chunks that fit a BLAS int.
template <class C>
double wm_dot(const C* x, const C* y, std::size_t n) {
  double s = 0;
  constexpr std::size_t chunk = std::size_t{1} << 30;
  for (std::size_t i = 0; i < n; i += chunk) {
    const int len = static_cast<int>(std::min(chunk, n - i));
    if constexpr (std::is_same_v<C, float>)
      s += cblas_dsdot(len, x + i, 1, y + i, 1);
    else
      s += cblas_ddot(len, x + i, 1, y + i, 1);
  }
  return s;
}

inline int blas_int(std::size_t v, std::string_view what) {
  if (v > static_cast<std::size_t>(INT_MAX))
    throw error(errc::invalid_argument, "weight_matching: " + std::string(what) + " (" + std::to_string(v) +
                                            ") exceeds the BLAS's int range");
  return static_cast<int>(v);
}

// The matched, validated listed tensors of both models.
struct wm_input {
  std::vector<const named_view*> a, b;  // per spec tensor
  group_size_map sizes;
  bool use_double = false;
};

inline std::string axes_description(const axis_groups& axes) {
  std::string s;
  for (std::size_t x = 0; x < axes.size(); ++x)
    if (axes[x]) s += std::string(s.empty() ? "" : ", ") + "axis " + std::to_string(x) + " by group '" + *axes[x] + "'";
  return s.empty() ? "no axis permuted" : "permuted: " + s;
}

inline wm_input wm_validate(std::string_view method, const permutation_spec& spec, const std::vector<named_view>& va,
                            const std::vector<named_view>& vb) {
  if (spec.empty()) throw error(errc::empty_input, std::string(method) + ": the permutation spec lists no tensor");
  wm_input in;
  in.sizes = spec.group_sizes(va, "model A");
  spec.group_sizes(vb, "model B");
  std::unordered_map<std::string_view, const named_view*> ia, ib;
  for (const auto& v : va) ia.emplace(v.name, &v);
  for (const auto& v : vb) ib.emplace(v.name, &v);
  for (const auto& t : spec.tensors()) {
    const named_view* a = ia.at(t);
    const named_view* b = ib.at(t);
    if (a->shape != b->shape)
      throw error(errc::shape_mismatch, std::string(method) + ": tensor '" + t + "' has shape " + shape_string(a->shape) +
                                            " in model A but " + shape_string(b->shape) + " in model B");
    alloy::detail::check_floating(method, "model A", t, a->view.type);
    alloy::detail::check_floating(method, "model B", t, b->view.type);
    if (shape_elements(a->shape, t) != a->view.size || shape_elements(b->shape, t) != b->view.size)
      throw error(errc::shape_mismatch, std::string(method) + ": tensor '" + t + "': its shape " +
                                            shape_string(a->shape) + " does not hold its elements");
    in.use_double = in.use_double || a->view.type == dtype::f64 || b->view.type == dtype::f64;
    in.a.push_back(a);
    in.b.push_back(b);
  }
  return in;
}

// A tensor view converted to C, checked finite.
template <class C>
std::vector<C> wm_load(std::string_view method, tensor_view v, std::string_view model, std::string_view name,
                       const axis_groups& axes) {
  std::vector<C> out(v.size);
  visit_floating(v.type, [&](auto tag) {
    using S = decltype(tag);
    kernels::convert_n(static_cast<const S*>(v.data), out.data(), v.size);
  });
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]))
      throw error(errc::non_finite, std::string(method) + ": tensor '" + std::string(name) + "' of " + std::string(model) +
                                        " holds " + alloy::detail::fmt(static_cast<double>(out[i])) + " at element " +
                                        std::to_string(i) + " (" + axes_description(axes) +
                                        "): weight matching needs finite weights");
  return out;
}

template <class C>
class weight_matcher {
 public:
  weight_matcher(std::string_view method, const permutation_spec& spec, const wm_input& in)
      : spec_(spec), sizes_(in.sizes) {
    const auto& names = spec.tensors();
    tensors_.resize(names.size());
    for (std::size_t t = 0; t < names.size(); ++t) {
      tensor& T = tensors_[t];
      T.name = names[t];
      T.axes = &spec.axes(names[t]);
      T.shape = in.a[t]->shape;
      T.a = wm_load<C>(method, in.a[t]->view, "model A", names[t], *T.axes);
      T.b = wm_load<C>(method, in.b[t]->view, "model B", names[t], *T.axes);
      index_.emplace(names[t], t);
    }
    // One term per (tensor, axis) of each group; A's side gathered once.
    for (const auto& g : spec.groups()) {
      std::vector<term> terms;
      for (const tensor_axis& ta : spec.group_axes(g)) {
        term tm;
        tm.t = index_.at(ta.tensor);
        tm.axis = ta.axis;
        const tensor& T = tensors_[tm.t];
        const std::size_t r = T.shape.size(), n = T.shape[ta.axis];
        tm.n = n;
        tm.k = n == 0 ? 0 : T.a.size() / n;
        tm.last = r >= 2 && ta.axis == r - 1;
        tm.moved = ta.axis != 0 && !tm.last;
        blas_int(n, "the size of group '" + g + "'");
        blas_int(tm.k, "the row length of tensor '" + T.name + "' along axis " + std::to_string(ta.axis));
        if (tm.moved) {
          tm.a_moved.resize(T.a.size());
          if (!T.a.empty())
            gather_axes(T.a.data(), tm.a_moved.data(), T.shape, std::vector<const std::size_t*>(r, nullptr),
                        moved_order(r, ta.axis));
        }
        terms.push_back(std::move(tm));
      }
      terms_.emplace(g, std::move(terms));
    }
  }

  // J(perms), in double.
  double objective(const permutation_map& perms) {
    double j = 0;
    for (tensor& T : tensors_) {
      if (T.a.empty()) continue;
      const auto maps = axis_maps(*T.axes, perms);
      const bool any = std::any_of(maps.begin(), maps.end(), [](const std::size_t* m) { return m != nullptr; });
      const C* b = T.b.data();
      if (any) {
        scratch_.resize(T.b.size());
        gather_axes(T.b.data(), scratch_.data(), T.shape, maps, identity_order(T.shape.size()));
        b = scratch_.data();
      }
      j += wm_dot(T.a.data(), b, T.a.size());
    }
    return j;
  }

  // S for group g under perms (perms[g] itself is used only for a tensor carrying g twice).
  const std::vector<C>& cost(const std::string& g, const permutation_map& perms) {
    const std::size_t n = sizes_.at(g);
    s_.assign(n * n, C(0));
    if (n == 0) return s_;
    for (const term& tm : terms_.at(g)) {
      const tensor& T = tensors_[tm.t];
      if (tm.k == 0) continue;
      const std::size_t r = T.shape.size();
      auto maps = axis_maps(*T.axes, perms);
      maps[tm.axis] = nullptr;
      const bool permute_other = std::any_of(maps.begin(), maps.end(), [](const std::size_t* m) { return m != nullptr; });
      const C* a = tm.moved ? tm.a_moved.data() : T.a.data();
      const C* b = T.b.data();
      if (permute_other || tm.moved) {
        scratch_.resize(T.b.size());
        gather_axes(T.b.data(), scratch_.data(), T.shape, maps, tm.moved ? moved_order(r, tm.axis) : identity_order(r));
        b = scratch_.data();
      }
      const int ni = static_cast<int>(n), ki = static_cast<int>(tm.k);
      if (tm.last)  // A, B as (k x n): S += A^T B
        wm_gemm<C>(true, false, ni, ni, ki, a, ni, b, ni, s_.data(), ni);
      else  // A, B as (n x k): S += A B^T
        wm_gemm<C>(false, true, ni, ni, ki, a, ki, b, ki, s_.data(), ni);
    }
    return s_;
  }

  std::string group_axes_description(const std::string& g) const {
    std::string s;
    for (const auto& ta : spec_.group_axes(g))
      s += std::string(s.empty() ? "" : ", ") + "axis " + std::to_string(ta.axis) + " of '" + ta.tensor + "'";
    return s;
  }

 private:
  struct tensor {
    std::string name;
    const axis_groups* axes = nullptr;
    std::vector<std::size_t> shape;
    std::vector<C> a, b;
  };
  struct term {
    std::size_t t = 0, axis = 0, n = 0, k = 0;
    bool last = false, moved = false;
    std::vector<C> a_moved;
  };

  static std::vector<std::size_t> moved_order(std::size_t r, std::size_t axis) {
    std::vector<std::size_t> o{axis};
    for (std::size_t k = 0; k < r; ++k)
      if (k != axis) o.push_back(k);
    return o;
  }

  const permutation_spec& spec_;
  group_size_map sizes_;
  std::vector<tensor> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
  std::unordered_map<std::string, std::vector<term>> terms_;
  std::vector<C> scratch_, s_;
};

// The group order of iteration `it`: a Fisher-Yates shuffle driven by counter_rng(seed, it).
inline std::vector<std::size_t> group_order(std::uint64_t seed, std::size_t it, std::size_t n) {
  std::vector<std::size_t> o(n);
  for (std::size_t i = 0; i < n; ++i) o[i] = i;
  const counter_rng rng(seed, 0x57a9e11c0ffee000u + it);
  for (std::size_t i = n; i > 1; --i) {
    const std::uint64_t r = (std::uint64_t{rng.bits(2 * i)} << 32) | rng.bits(2 * i + 1);
    std::swap(o[i - 1], o[static_cast<std::size_t>(r % i)]);
  }
  return o;
}

template <class C>
weight_matching_result run_weight_matching(const permutation_spec& spec, const wm_input& in,
                                           const weight_matching_options& o) {
  const char* method = "weight_matching";
  weight_matching_result res;
  res.perms = o.init.empty() ? permutation_spec::identity(in.sizes) : o.init;
  if (!o.init.empty()) spec.check_permutations(res.perms, in.sizes, method);
  weight_matcher<C> wm(method, spec, in);
  res.objective.push_back(wm.objective(res.perms));
  const auto& groups = spec.groups();
  if (groups.empty()) {
    res.converged = true;
    return res;
  }
  // Groups that some tensor carries on two or more axes.
  std::vector<char> quadratic(groups.size(), 0);
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& axes = spec.group_axes(groups[gi]);
    for (std::size_t x = 0; x < axes.size() && !quadratic[gi]; ++x)
      for (std::size_t y = x + 1; y < axes.size(); ++y)
        if (axes[x].tensor == axes[y].tensor) quadratic[gi] = 1;
  }
  for (std::size_t it = 0; it < o.max_iter; ++it) {
    bool progress = false;
    for (const std::size_t gi : group_order(o.seed, it, groups.size())) {
      const std::string& g = groups[gi];
      const std::size_t n = in.sizes.at(g);
      const std::vector<C>& s = wm.cost(g, res.perms);
      const assignment a = linear_sum_assignment(s.data(), n, n, true);
      if (!a.ok())
        throw error(errc::non_finite, std::string(method) + ": the cost matrix of group '" + g +
                                          "' is not finite (its products overflow the compute type); it sums " +
                                          wm.group_axes_description(g));
      auto& p = res.perms.at(g);
      double old_v = 0, new_v = 0;
      if (quadratic[gi]) {
        // J is quadratic in P here: judge the candidate by J itself, so J never decreases
        // (the linearised gain alone can cycle between two permutations).
        old_v = wm.objective(res.perms);
        std::vector<std::size_t> kept = std::move(p);
        p = a.col_ind;
        new_v = wm.objective(res.perms);
        p = std::move(kept);
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          old_v += static_cast<double>(s[i * n + p[i]]);
          new_v += static_cast<double>(s[i * n + a.col_ind[i]]);
        }
      }
      const bool take = new_v - old_v > o.tolerance * std::max(std::abs(old_v), std::abs(new_v));
      if (take) {
        p = a.col_ind;
        progress = true;
      }
      if (o.on_step) o.on_step({it, g, old_v, new_v, take});
    }
    res.objective.push_back(wm.objective(res.perms));
    res.iterations = it + 1;
    if (!progress) {
      res.converged = true;
      break;
    }
  }
  return res;
}

}  // namespace detail

// weight_matching(spec, model_a, model_b [, options]) -> weight_matching_result: permutations
// of model_b's units matching model_a (see the top of the file). Models: tensor_set or any
// named_tensors range; only the tensors the spec lists are read.
struct weight_matching_fn {
  template <named_tensors RA, named_tensors RB>
  weight_matching_result operator()(const permutation_spec& spec, const RA& model_a, const RB& model_b,
                                    const weight_matching_options& o = {}) const {
    const char* method = "weight_matching";
    if (o.max_iter == 0) throw error(errc::invalid_argument, std::string(method) + ": max_iter is 0");
    if (!(o.tolerance >= 0))
      throw error(errc::invalid_argument, std::string(method) + ": tolerance is " + alloy::detail::fmt(o.tolerance) +
                                              ", not a number >= 0");
    const auto va = named_views_of(model_a);
    const auto vb = named_views_of(model_b);
    const detail::wm_input in = detail::wm_validate(method, spec, va, vb);
    return in.use_double ? detail::run_weight_matching<double>(spec, in, o)
                         : detail::run_weight_matching<float>(spec, in, o);
  }
};
inline constexpr weight_matching_fn weight_matching{};

// alignment_objective(spec, model_a, model_b, perms) -> J(perms) = sum over the listed
// tensors of <theta_A,t, pi(theta_B)_t>, in double; the objective weight_matching reports.
struct alignment_objective_fn {
  template <named_tensors RA, named_tensors RB>
  double operator()(const permutation_spec& spec, const RA& model_a, const RB& model_b,
                    const permutation_map& perms) const {
    const char* method = "alignment_objective";
    const auto va = named_views_of(model_a);
    const auto vb = named_views_of(model_b);
    const detail::wm_input in = detail::wm_validate(method, spec, va, vb);
    spec.check_permutations(perms, in.sizes, method);
    if (in.use_double) {
      detail::weight_matcher<double> wm(method, spec, in);
      return wm.objective(perms);
    }
    detail::weight_matcher<float> wm(method, spec, in);
    return wm.objective(perms);
  }
};
inline constexpr alignment_objective_fn alignment_objective{};

}  // namespace alloy::align
