// Per-element functor for linear merges (soups, weighted averages, task arithmetic).
//
// Without a base (inputs x_0..x_{n-1}):  r = sum_i w_i x_i, then r / divisor if `divide`.
// With a base (inputs b, x_0..x_{n-1}):  r = sum_i w_i (x_i - b), then r / divisor if
//   `divide`, then r * lambda if `scale`; the result is b + r, or r alone when !add_base
//   (the merged task vector, as peft returns it).
// The order of operations is mergekit's (its `linear` and `task_arithmetic`), so a float
// merge rounds as mergekit's float32 merge does: accumulate from i = 0, divide, scale, add.
#pragma once

#include <cstddef>
#include <span>

namespace alloy::kernels {

template <class C>
struct linear_combination {
  std::span<const C> weights;
  bool has_base = false;
  bool divide = false;
  C divisor = 1;
  bool scale = false;
  C lambda = 1;
  bool add_base = true;

  template <class P>
  auto operator()(const P& x) const noexcept {
    using V = decltype(x[0]);
    const std::size_t first = has_base ? 1 : 0;
    const V base = has_base ? x[0] : V(C(0));
    auto term = [&](std::size_t i) { return has_base ? (x[first + i] - base) * V(weights[i]) : x[i] * V(weights[i]); };
    V acc = term(0);
    for (std::size_t i = 1; i < weights.size(); ++i) acc = acc + term(i);
    if (divide) acc = acc / V(divisor);
    if (scale) acc = acc * V(lambda);
    return has_base && add_base ? base + acc : acc;
  }
};

}  // namespace alloy::kernels
