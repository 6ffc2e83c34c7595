// Linear-mode-connectivity probes: the path theta(a) = (1 - a) theta_A + a theta_B between
// two models, a metric (the loss, the accuracy, anything) at each point of a grid of a, and
// the barrier of the curve (barrier.hpp).
//
//   alloy::lmc::interpolation_path path(model_a, model_b);     // allocates one buffer
//   const alloy::tensor_set& mid = path.at(0.5);               // rewrites the buffer
//
//   auto curve = alloy::lmc::interpolate(model_a, model_b, 25,   // 25 points on [0, 1]
//       [&](const alloy::tensor_set& theta) { return std::array{loss(theta), accuracy(theta)}; });
//   curve.alpha[i], curve.values[0][i] (loss), curve.values[1][i] (accuracy)
//   curve.barrier(alloy::lmc::barrier_definition::endpoint_mean, 0).height
//   curve.barrier(alloy::lmc::barrier_definition::linear, 1, alloy::lmc::metric_sense::higher_is_better)
//
// For the aligned pair, interpolate between model A and apply_permutations(spec, B, perms).
//
// The buffer: a tensor_set with A's names, order and shapes (dtype: A's, or options.out_dtype),
// allocated once by the constructor; at(a) overwrites every tensor with
// alloy::weighted_average({A_t, B_t}, {1 - a, a}, normalize = false), computed in float (double
// when A_t, B_t or the buffer is double) and rounded once to the buffer's dtype. Tensors of a
// non-floating dtype (BatchNorm's num_batches_tracked) are not interpolated: the buffer holds
// model A's copy (their dtypes must agree). a = 0 gives A's values exactly and a = 1 B's (for
// finite parameters); any finite a is accepted (a < 0 or a > 1 extrapolates).
//
// The metric: a callable taking (const tensor_set& theta) or (const tensor_set& theta,
// double a) and returning a double or a range of doubles (std::array, std::vector: several
// metrics per point, the same number at every point). It must not keep references to the
// buffer past its return. Points are evaluated in grid order, one at a time.
//
// Complexity: one streaming pass over both models per grid point (threads: options.exec),
// plus the metric. Memory: one copy of the model (the buffer).
// Errors (alloy::error, before any arithmetic): a tensor in one model and not the other
// (missing_tensor), shapes that differ (shape_mismatch), a floating tensor in one model and
// not in the other or differing non-floating dtypes (dtype_mismatch), empty models
// (empty_input), a non-floating out_dtype (dtype_mismatch); at(a): a non-finite a
// (non_finite); interpolate: an empty grid (empty_input), a metric returning a different
// number of values at some point (invalid_argument).
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/error.hpp>
#include <alloy/lmc/barrier.hpp>
#include <alloy/methods/soup.hpp>

#include <cstddef>
#include <cstring>
#include <limits>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace alloy::lmc {

struct interpolation_options {
  std::optional<dtype> out_dtype = {};  // the buffer's floating dtype; default model A's per tensor
  execution exec = {};
};

// n points evenly spaced on [lo, hi], both ends included (alpha_i = lo + i (hi - lo) / (n - 1),
// with the last point exactly hi); n == 1 gives {lo}.
inline std::vector<double> linspace(std::size_t n, double lo = 0.0, double hi = 1.0) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = n == 1 ? lo : lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(n - 1);
  if (n > 1) v.back() = hi;
  return v;
}

class interpolation_path {
 public:
  // Checks the models (see the top of the file) and allocates the buffer. The models must
  // outlive the path: it keeps views of their tensors.
  template <named_tensors RA, named_tensors RB>
  interpolation_path(const RA& model_a, const RB& model_b, const interpolation_options& o = {}) : exec_(o.exec) {
    init(named_views_of(model_a), named_views_of(model_b), o.out_dtype);
  }

  // theta(a) = (1 - a) A + a B in the buffer, which is returned.
  const tensor_set& at(double a) {
    alloy::detail::check_finite("interpolation_path", "alpha", a);
    const std::vector<double> w{1.0 - a, a};
    for (std::size_t t = 0; t < pairs_.size(); ++t) {
      const pair& p = pairs_[t];
      if (!p.floating) continue;  // copied once at construction
      const tensor_view in[2] = {p.a, p.b};
      alloy::weighted_average(std::span<const tensor_view>(in, 2), w, out_views_[t],
                              weighted_average_options{.normalize = false, .out_dtype = {}, .exec = exec_});
    }
    alpha_ = a;
    return buffer_;
  }

  const tensor_set& buffer() const noexcept { return buffer_; }
  // The a of the last at(), NaN before the first.
  double alpha() const noexcept { return alpha_; }

 private:
  struct pair {
    tensor_view a, b;
    bool floating = true;
  };

  void init(const std::vector<named_view>& va, const std::vector<named_view>& vb, std::optional<dtype> out_dtype) {
    const std::string who = "interpolation_path: ";
    if (va.empty()) throw error(errc::empty_input, who + "model A has no tensors");
    if (out_dtype && !is_floating(*out_dtype))
      throw error(errc::dtype_mismatch, who + "the requested buffer dtype " + std::string(dtype_name(*out_dtype)) +
                                            " is not a floating dtype");
    std::unordered_map<std::string_view, const named_view*> ib;
    for (const auto& v : vb) ib.emplace(v.name, &v);
    if (vb.size() != va.size()) {
      std::unordered_map<std::string_view, int> ia;
      for (const auto& v : va) ia.emplace(v.name, 0);
      for (const auto& v : vb)
        if (!ia.count(v.name))
          throw error(errc::missing_tensor, who + "model B has tensor '" + std::string(v.name) + "' that model A lacks");
    }
    for (const auto& a : va) {
      auto it = ib.find(a.name);
      if (it == ib.end())
        throw error(errc::missing_tensor, who + "model B has no tensor '" + std::string(a.name) + "' (present in model A)");
      const named_view& b = *it->second;
      if (a.shape != b.shape || a.view.size != b.view.size)
        throw error(errc::shape_mismatch, who + "tensor '" + std::string(a.name) + "' has shape " + shape_string(a.shape) +
                                              " in model A but " + shape_string(b.shape) + " in model B");
      const bool fa = is_floating(a.view.type), fb = is_floating(b.view.type);
      if (fa != fb || (!fa && a.view.type != b.view.type))
        throw error(errc::dtype_mismatch, who + "tensor '" + std::string(a.name) + "' is " +
                                              std::string(dtype_name(a.view.type)) + " in model A but " +
                                              std::string(dtype_name(b.view.type)) +
                                              " in model B (floating tensors are interpolated, others must agree)");
      pairs_.push_back({a.view, b.view, fa});
    }
    for (std::size_t t = 0; t < va.size(); ++t) {
      const pair& p = pairs_[t];
      const dtype type = p.floating ? out_dtype.value_or(p.a.type) : p.a.type;
      out_views_.push_back(buffer_.add(std::string(va[t].name), type, va[t].shape, no_init));
      if (!p.floating && p.a.bytes() != 0) std::memcpy(out_views_.back().data, p.a.data, p.a.bytes());
    }
  }

  execution exec_;
  std::vector<pair> pairs_;
  tensor_set buffer_;
  std::vector<mutable_tensor_view> out_views_;
  double alpha_ = std::numeric_limits<double>::quiet_NaN();
};

// A metric's values along a grid.
struct interpolation_curve {
  std::vector<double> alpha;
  std::vector<std::vector<double>> values;  // values[k][i]: metric k at alpha[i]

  std::size_t metrics() const noexcept { return values.size(); }
  std::span<const double> metric(std::size_t k = 0) const {
    if (k >= values.size())
      throw error(errc::invalid_argument, "interpolation_curve: metric " + std::to_string(k) + " of " +
                                              std::to_string(values.size()));
    return values[k];
  }
  barrier_result barrier(barrier_definition d, std::size_t k = 0, metric_sense s = metric_sense::lower_is_better) const {
    return lmc::barrier(alpha, metric(k), d, s);
  }
};

namespace detail {
template <class M>
auto call_metric(M& metric, const tensor_set& theta, double a) {
  if constexpr (std::is_invocable_v<M&, const tensor_set&, double>)
    return metric(theta, a);
  else
    return metric(theta);
}
template <class R>
void append_values(R&& r, std::vector<std::vector<double>>& values, std::size_t point) {
  std::vector<double> got;
  if constexpr (std::is_arithmetic_v<std::remove_cvref_t<R>>) {
    got.push_back(static_cast<double>(r));
  } else {
    static_assert(std::ranges::range<R>, "interpolate: the metric must return a number or a range of numbers");
    for (const auto& x : r) got.push_back(static_cast<double>(x));
  }
  if (point == 0) values.resize(got.size());
  if (got.size() != values.size())
    throw error(errc::invalid_argument, "interpolate: the metric returned " + std::to_string(got.size()) +
                                            " values at point " + std::to_string(point) + " but " +
                                            std::to_string(values.size()) + " at point 0");
  for (std::size_t k = 0; k < got.size(); ++k) values[k].push_back(got[k]);
}
}  // namespace detail

// interpolate(model_a, model_b, alphas, metric [, options]) -> interpolation_curve;
// interpolate(model_a, model_b, points, metric [, options]): alphas = linspace(points, 0, 1).
struct interpolate_fn {
  template <named_tensors RA, named_tensors RB, class Metric>
  interpolation_curve operator()(const RA& model_a, const RB& model_b, std::span<const double> alphas, Metric&& metric,
                                 const interpolation_options& o = {}) const {
    if (alphas.empty()) throw error(errc::empty_input, "interpolate: no alphas");
    for (std::size_t i = 0; i < alphas.size(); ++i)
      alloy::detail::check_finite("interpolate", "alpha " + std::to_string(i), alphas[i]);
    interpolation_path path(model_a, model_b, o);
    interpolation_curve c;
    c.alpha.assign(alphas.begin(), alphas.end());
    for (std::size_t i = 0; i < alphas.size(); ++i)
      detail::append_values(detail::call_metric(metric, path.at(alphas[i]), alphas[i]), c.values, i);
    return c;
  }
  template <named_tensors RA, named_tensors RB, class Metric>
  interpolation_curve operator()(const RA& model_a, const RB& model_b, const std::vector<double>& alphas,
                                 Metric&& metric, const interpolation_options& o = {}) const {
    return (*this)(model_a, model_b, std::span<const double>(alphas), std::forward<Metric>(metric), o);
  }
  template <named_tensors RA, named_tensors RB, class Metric>
  interpolation_curve operator()(const RA& model_a, const RB& model_b, std::size_t points, Metric&& metric,
                                 const interpolation_options& o = {}) const {
    const std::vector<double> alphas = linspace(points);
    return (*this)(model_a, model_b, std::span<const double>(alphas), std::forward<Metric>(metric), o);
  }
};
inline constexpr interpolate_fn interpolate{};

}  // namespace alloy::lmc
