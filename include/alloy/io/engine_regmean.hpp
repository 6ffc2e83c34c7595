// RegMean in the streaming merge engine. Include this header in one translation unit of a
// program (the `alloy` tool does, in merge_command.cpp) to let io::merge_engine run
// `merge_method: regmean`; it needs alloy::linalg (BLAS, LAPACK, xtensor-blas), which the
// rest of alloy::io does not, so merge_engine.hpp only calls it through a function pointer
// (engine_methods.hpp's regmean_solver), set here during static initialisation. Without it a
// regmean recipe is a recipe_error before any input is opened.
//
// Per tensor: a linear layer with a Gram from every model is alloy::regmean(weights, grams,
// out, {alpha, coefficients = the weights}) (layout out_in: a weight [out, in], Grams [in,
// in]); any other tensor is the coefficient-weighted average with the coefficients rescaled
// to sum 1, exactly as the model-level regmean averages the tensors it has no Gram for.
#pragma once

#include <alloy/io/engine_methods.hpp>
#include <alloy/methods/regmean.hpp>
#include <alloy/methods/soup.hpp>

#include <span>
#include <vector>

namespace alloy::io::detail {

inline void engine_regmean_tensor(std::span<const tensor_view> weights, std::span<const tensor_view> grams,
                                  mutable_tensor_view out, double alpha, std::span<const double> coefficients,
                                  const execution& ex) {
  regmean_options o;
  o.alpha = alpha;
  o.coefficients.assign(coefficients.begin(), coefficients.end());
  o.exec = ex;
  if (!grams.empty()) {
    (void)regmean(weights, grams, out, o);
    return;
  }
  const auto c = alloy::detail::regmean_coefficients(weights.size(), o);
  weighted_average(weights, c, out, weighted_average_options{false, {}, ex});
}

inline const bool engine_regmean_registered = (regmean_solver() = &engine_regmean_tensor, true);

}  // namespace alloy::io::detail
