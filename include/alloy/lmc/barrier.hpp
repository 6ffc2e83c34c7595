// Loss barriers of a curve L(alpha) along the linear path (1 - alpha) theta_A + alpha theta_B,
// in the two definitions used in the literature:
//
//   barrier_definition::linear:         B = max_a [ L(a) - ((1 - a) L(0) + a L(1)) ]
//       the rise above the straight line between the endpoints' values (Entezari, Sedghi,
//       Saukh, Neyshabur, "The role of permutation invariance in linear mode connectivity of
//       neural networks", ICLR 2022);
//   barrier_definition::endpoint_mean:  B = max_a L(a) - (L(0) + L(1)) / 2
//       the rise above the mean of the endpoints' values (Frankle, Dziugaite, Roy, Carbin,
//       "Linear mode connectivity and the lottery ticket hypothesis", ICML 2020; Ainsworth,
//       Hayase, Srinivasa, "Git Re-Basin", ICLR 2023).
//
// The two agree when L(0) == L(1); otherwise endpoint_mean >= |L(1) - L(0)| / 2 even for a
// straight-line curve, and linear is 0 for one. Both are >= 0 (a = 0 and a = 1 are
// candidates). The maximum runs over the grid points with 0 <= a <= 1 (points outside, an
// extrapolation, are ignored); L(0) and L(1) are the values at the grid points a == 0 and
// a == 1 exactly, which must exist.
//
// For a metric where higher is better (accuracy), pass metric_sense::higher_is_better: the
// barrier is then the drop below the baseline, max_a [baseline(a) - M(a)] (for the linear
// definition) or (M(0) + M(1)) / 2 - min_a M(a) (endpoint_mean), still >= 0 and in the
// metric's units.
//
//   auto b = alloy::lmc::barrier(alphas, losses, alloy::lmc::barrier_definition::linear);
//   b.height, b.alpha (where the maximum is), b.index (its grid index)
//
// NaN values in [0, 1] make the height and alpha NaN (a result, not an error: a diverged
// interpolated model); infinities give an infinite height.
// Errors (alloy::error, errc::invalid_argument): alphas and values of different lengths, a
// non-finite alpha, no grid point at 0 or at 1.
#pragma once

#include <alloy/core/validate.hpp>
#include <alloy/error.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>

namespace alloy::lmc {

enum class barrier_definition {
  linear,         // max_a [L(a) - ((1 - a) L(0) + a L(1))]
  endpoint_mean,  // max_a L(a) - (L(0) + L(1)) / 2
};

enum class metric_sense {
  lower_is_better,   // loss, error
  higher_is_better,  // accuracy
};

struct barrier_result {
  double height = 0;      // the barrier, in the metric's units, >= 0 (or NaN)
  double alpha = 0;       // where it is reached (the first such grid point)
  std::size_t index = 0;  // its grid index
};

struct barrier_fn {
  barrier_result operator()(std::span<const double> alphas, std::span<const double> values, barrier_definition d,
                            metric_sense sense = metric_sense::lower_is_better) const {
    if (alphas.size() != values.size())
      throw error(errc::invalid_argument, "barrier: " + std::to_string(alphas.size()) + " alphas but " +
                                              std::to_string(values.size()) + " values");
    std::size_t i0 = alphas.size(), i1 = alphas.size();
    for (std::size_t i = 0; i < alphas.size(); ++i) {
      if (!std::isfinite(alphas[i]))
        throw error(errc::invalid_argument, "barrier: alpha " + std::to_string(i) + " is " + alloy::detail::fmt(alphas[i]));
      if (alphas[i] == 0 && i0 == alphas.size()) i0 = i;
      if (alphas[i] == 1 && i1 == alphas.size()) i1 = i;
    }
    if (i0 == alphas.size() || i1 == alphas.size())
      throw error(errc::invalid_argument, std::string("barrier: the grid has no point at alpha = ") +
                                              (i0 == alphas.size() ? "0" : "1") +
                                              " (both endpoints are needed for the baseline)");
    // Work on the "badness" u = L (lower is better) or -M (higher is better).
    const double s = sense == metric_sense::lower_is_better ? 1.0 : -1.0;
    const double u0 = s * values[i0], u1 = s * values[i1];
    barrier_result r;
    r.height = -std::numeric_limits<double>::infinity();
    bool nan = false;
    for (std::size_t i = 0; i < alphas.size(); ++i) {
      const double a = alphas[i];
      if (a < 0 || a > 1) continue;
      const double u = s * values[i];
      const double base = d == barrier_definition::linear ? (1 - a) * u0 + a * u1 : (u0 + u1) / 2;
      const double h = u - base;
      if (std::isnan(h)) {
        nan = true;
        continue;
      }
      if (h > r.height) {
        r.height = h;
        r.alpha = a;
        r.index = i;
      }
    }
    if (nan) {
      r.height = std::numeric_limits<double>::quiet_NaN();
      r.alpha = std::numeric_limits<double>::quiet_NaN();
    }
    return r;
  }
};
inline constexpr barrier_fn barrier{};

}  // namespace alloy::lmc
