// Per-element functor for linear merges (soups, weighted averages, task arithmetic).
//
// Without a base (inputs x_0..x_{n-1}):  r = sum_i w_i x_i, then r / divisor if `divide`.
// With a base (inputs b, x_0..x_{n-1}):  r = sum_i w_i (x_i - b), then r / divisor if
//   `divide`, then r * lambda if `scale`; the result is b + r, or r alone when !add_base
//   (the merged task vector, as peft returns it).
// The order of operations is mergekit's (its `linear` and `task_arithmetic`), so a float
// merge rounds as mergekit's float32 merge does: accumulate from i = 0, divide, scale, add.
//
// specialize(g) hands the streaming driver the same functor with the weight count (1..8)
// fixed at compile time (linear_combination_fixed): the runtime-length loop costs a fifth of
// the memory bandwidth of a 4-input merge (loop control and weight reloads per batch), the
// unrolled body none. Both run the one body below, so they give the same bits.
#pragma once

#include <alloy/config.hpp>

#include <array>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

namespace alloy::kernels {

namespace detail {
// The body shared by linear_combination and linear_combination_fixed; Count is std::size_t
// or std::integral_constant (then the loop is unrolled).
template <class V, class C, class P>
ALLOY_ALWAYS_INLINE V linear_term(bool has_base, const V& base, const C* weights, std::size_t i, const P& x) noexcept {
  return has_base ? (x[1 + i] - base) * V(weights[i]) : x[i] * V(weights[i]);
}
template <class C, class L, class P, class Count>
ALLOY_ALWAYS_INLINE auto linear_combine(const L& l, const C* weights, Count count, const P& x) noexcept {
  using V = decltype(x[0]);
  const V base = l.has_base ? x[0] : V(C(0));
  V acc = linear_term(l.has_base, base, weights, 0, x);
  if constexpr (std::is_integral_v<Count>) {
    for (std::size_t i = 1; i < count; ++i) acc = acc + linear_term(l.has_base, base, weights, i, x);
  } else {  // the same sum, unrolled: acc + t_1 + t_2 + ... in this order
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((acc = acc + linear_term(l.has_base, base, weights, I + 1, x)), ...);
    }(std::make_index_sequence<Count::value - 1>{});
  }
  if (l.divide) acc = acc / V(l.divisor);
  if (l.scale) acc = acc * V(l.lambda);
  return l.has_base && l.add_base ? base + acc : acc;
}
}  // namespace detail

// linear_combination with N weights, held by value.
template <class C, std::size_t N>
struct linear_combination_fixed {
  std::array<C, N> weights;
  bool has_base;
  bool divide;
  C divisor;
  bool scale;
  C lambda;
  bool add_base;

  template <class P>
  ALLOY_ALWAYS_INLINE auto operator()(const P& x) const noexcept {
    return detail::linear_combine(*this, weights.data(), std::integral_constant<std::size_t, N>{}, x);
  }
};

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
  ALLOY_ALWAYS_INLINE auto operator()(const P& x) const noexcept {
    return detail::linear_combine(*this, weights.data(), weights.size(), x);
  }

  // Calls g(h) once, with h computing exactly what *this computes: linear_combination_fixed
  // for 1..8 weights, *this otherwise.
  using specializable = void;
  template <class G>
  void specialize(const G& g) const noexcept {
    switch (weights.size()) {
      case 1: return g(fixed<1>());
      case 2: return g(fixed<2>());
      case 3: return g(fixed<3>());
      case 4: return g(fixed<4>());
      case 5: return g(fixed<5>());
      case 6: return g(fixed<6>());
      case 7: return g(fixed<7>());
      case 8: return g(fixed<8>());
      default: return g(*this);
    }
  }

 private:
  template <std::size_t N>
  linear_combination_fixed<C, N> fixed() const noexcept {
    linear_combination_fixed<C, N> h{{}, has_base, divide, divisor, scale, lambda, add_base};
    for (std::size_t i = 0; i < N; ++i) h.weights[i] = weights[i];
    return h;
  }
};

}  // namespace alloy::kernels
