// Recipe parameters: the values a mergekit recipe gives under `parameters:` (globally or per
// model), the names alloy knows, and how one value is evaluated for one tensor, exactly as
// mergekit's `evaluate_setting` (mergekit/config.py) and its planner (mergekit/plan.py) do.
//
// A setting is one of
//   - a scalar: a number, a bool or a string;                   density: 0.5
//   - a gradient: a list of scalars, interpolated across layers;  weight: [0, 0.5, 1]
//   - a list of conditions {filter: substring, value: x}, the first whose filter occurs in the
//     tensor name (or is absent or "*") giving the value (itself a scalar or a gradient);
//     no match gives no value, and the next level (global parameters, then the method's
//     default) decides.                                   density: [{filter: mlp, value: 0.3},
//                                                                   {value: 0.7}]
//
// Gradients. A tensor's position t in [0, 1] comes from its name, as mergekit's planner
// gives it for a `models:` recipe (one slice of all layers):
//   - a layer tensor (the first dotted component of the name that is all digits is its layer
//     index i, e.g. 12 in `model.layers.12.mlp.up_proj.weight`): t = i / (L - 1) for a model
//     of L > 1 layers, t = 1 for L = 1 (L = 1 + the largest layer index of the base model);
//   - a tensor before the layers (an embedding: the name contains "embed", or has a component
//     "wte" or "wpe"): t = 0, as mergekit's pre-weights;
//   - any other tensor (final norm, lm_head): t = 1, as mergekit's post-weights.
// A list of numbers (bools count as numbers, as in Python) at t: s = t (n - 1), i0 = floor(s),
// i1 = min(n - 1, i0 + 1), value = (1 - (s - i0)) x[i0] + (s - i0) x[i1]. A list holding a
// string picks x[floor(t (n - 1))].
//
// Ranges are checked on every number in a setting when the recipe is read (each allowed set
// is an interval, so interpolated values stay inside it); constraints between parameters
// (breadcrumbs' gamma + density <= 1, DELLA's density +- epsilon) are checked per tensor by
// recipe.hpp's check_parameters.
#pragma once

#include <alloy/error.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alloy::io {

// An error in a recipe: a bad key, value or combination. The command-line tool exits with
// status 2 for these (usage errors) and 1 for other alloy::errors (merge and I/O errors).
class recipe_error : public error {
 public:
  explicit recipe_error(const std::string& message, errc code = errc::invalid_argument) : error(code, message) {}
};

// One scalar of a setting.
struct parameter_value {
  enum class kind : unsigned char { number, boolean, text };
  kind type = kind::number;
  double number = 0;
  bool boolean = false;
  std::string text;

  static parameter_value of(double v) { return {kind::number, v, false, {}}; }
  static parameter_value of(bool v) { return {kind::boolean, 0, v, {}}; }
  static parameter_value of(std::string v) { return {kind::text, 0, false, std::move(v)}; }

  // Python's view of the value as a number (True is 1), for interpolation.
  double as_number() const noexcept { return type == kind::boolean ? (boolean ? 1.0 : 0.0) : number; }
  // Python's truth value of a number or bool.
  bool truthy() const noexcept { return type == kind::boolean ? boolean : number != 0; }
};

// One parameter as a recipe writes it. `where` is its path in the recipe for messages, e.g.
// "models[1].parameters.density (line 7)".
struct parameter_setting {
  enum class kind : unsigned char { scalar, gradient, conditional };
  struct condition {
    std::optional<std::string> filter;    // absent or "*": matches every tensor
    std::vector<parameter_value> values;  // one scalar, or a gradient
    bool gradient = false;
  };

  kind type = kind::scalar;
  std::vector<parameter_value> values;  // scalar: one; gradient: the list
  std::vector<condition> conditions;    // conditional
  std::string where;
};

using parameter_map = std::map<std::string, parameter_setting, std::less<>>;

// What a parameter holds.
enum class parameter_kind : unsigned char { number, boolean, choice };

struct parameter_spec {
  std::string_view name;
  parameter_kind kind = parameter_kind::number;
  bool per_model = false;  // may appear under a model's parameters (a tensor parameter)
  // Numbers: the allowed interval (infinite bounds: any finite number).
  double lo = -INFINITY, hi = INFINITY;
  bool lo_open = false, hi_open = false;
  std::string_view range_text = "a finite number";
  // Choices.
  std::array<std::string_view, 2> choices = {};
};

// Every parameter name alloy accepts: mergekit's, plus reduce_non_diagonal_ratio (RegMean's
// alpha, FusionBench's name). `eps` is multislerp's epsilon (> 0, checked per tensor) and
// fisher's (>= 0); `max_iter` must be an integer (checked per tensor).
inline constexpr std::array<parameter_spec, 19> parameter_specs{{
    {"weight", parameter_kind::number, true},
    {"density", parameter_kind::number, true, 0, 1, true, false, "in (0, 1]"},
    {"gamma", parameter_kind::number, true, 0, 1, false, false, "in [0, 1]"},
    {"epsilon", parameter_kind::number, true, 0, 1, false, true, "in [0, 1)"},
    {"scale", parameter_kind::number, true},
    {"lambda", parameter_kind::number, false},
    {"t", parameter_kind::number, false, 0, 1, false, false, "in [0, 1]"},
    {"normalize", parameter_kind::boolean, false},
    {"rescale", parameter_kind::boolean, false},
    {"int8_mask", parameter_kind::boolean, false},
    {"consensus_method", parameter_kind::choice, false, -INFINITY, INFINITY, false, false, "", {"sum", "count"}},
    {"filter_wise", parameter_kind::boolean, false},
    {"nuslerp_flatten", parameter_kind::boolean, false},
    {"nuslerp_row_wise", parameter_kind::boolean, false},
    {"normalize_weights", parameter_kind::boolean, false},
    {"eps", parameter_kind::number, false, 0, INFINITY, false, false, "a finite number >= 0"},
    {"max_iter", parameter_kind::number, false, 1, INFINITY, false, false, "a finite number >= 1"},
    {"tol", parameter_kind::number, false, 0, INFINITY, false, false, "a finite number >= 0"},
    {"reduce_non_diagonal_ratio", parameter_kind::number, false, 0, 1, false, false, "in [0, 1]"},
}};

inline const parameter_spec* find_parameter_spec(std::string_view name) noexcept {
  for (const auto& s : parameter_specs)
    if (s.name == name) return &s;
  return nullptr;
}

inline std::string known_parameter_names(bool per_model_only) {
  std::string s;
  for (const auto& p : parameter_specs) {
    if (per_model_only && !p.per_model) continue;
    if (!s.empty()) s += ", ";
    s += p.name;
  }
  return s;
}

namespace detail {

inline bool in_range(const parameter_spec& s, double v) noexcept {
  if (!std::isfinite(v)) return false;
  if (s.lo_open ? !(v > s.lo) : !(v >= s.lo)) return false;
  if (s.hi_open ? !(v < s.hi) : !(v <= s.hi)) return false;
  return true;
}

inline std::string value_text(const parameter_value& v) {
  switch (v.type) {
    case parameter_value::kind::boolean: return v.boolean ? "true" : "false";
    case parameter_value::kind::text: return "'" + v.text + "'";
    case parameter_value::kind::number: {
      char buf[40];
      const auto r = std::to_chars(buf, buf + sizeof buf, v.number);  // shortest form that reads back
      return std::string(buf, r.ptr);
    }
  }
  return "?";
}

// The value of a gradient at t, as mergekit's evaluate_setting computes it.
inline parameter_value evaluate_gradient(const std::vector<parameter_value>& xs, double t) {
  bool numeric = true;
  for (const auto& x : xs) numeric = numeric && x.type != parameter_value::kind::text;
  const double last = static_cast<double>(xs.size() - 1);
  if (!numeric) {
    const auto i = static_cast<std::size_t>(t * last);  // int() truncates toward 0; t >= 0
    return xs[std::min(i, xs.size() - 1)];
  }
  const double scaled = t * last;
  const auto i0 = std::min(static_cast<std::size_t>(scaled), xs.size() - 1);
  const std::size_t i1 = std::min(xs.size() - 1, i0 + 1);
  const double frac = scaled - static_cast<double>(i0);
  const double v = (1 - frac) * xs[i0].as_number() + frac * xs[i1].as_number();
  // A gradient of bools is evaluated as numbers, as Python does; keep the kind of its
  // elements so that a bool parameter reads the result as a truth value.
  parameter_value out = parameter_value::of(v);
  if (xs.front().type == parameter_value::kind::boolean) {
    out.type = parameter_value::kind::boolean;
    out.boolean = v != 0;
  }
  return out;
}

}  // namespace detail

// The value of a setting for one tensor at position t, or nullopt when a conditional list has
// no matching filter.
inline std::optional<parameter_value> evaluate_setting(const parameter_setting& s, std::string_view tensor_name,
                                                       double t) {
  switch (s.type) {
    case parameter_setting::kind::scalar: return s.values.front();
    case parameter_setting::kind::gradient: return detail::evaluate_gradient(s.values, t);
    case parameter_setting::kind::conditional:
      for (const auto& c : s.conditions) {
        if (!c.filter || *c.filter == "*" ||
            (!tensor_name.empty() && tensor_name.find(*c.filter) != std::string_view::npos))
          return c.gradient ? detail::evaluate_gradient(c.values, t) : c.values.front();
      }
      return std::nullopt;
  }
  return std::nullopt;
}

// The layer index of a tensor: its first dotted name component made only of digits.
inline std::optional<std::size_t> layer_index(std::string_view name) noexcept {
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view part = name.substr(start, end - start);
    if (!part.empty() && part.size() <= 9 && part.find_first_not_of("0123456789") == std::string_view::npos) {
      std::size_t v = 0;
      for (char c : part) v = v * 10 + static_cast<std::size_t>(c - '0');
      return v;
    }
    start = end + 1;
  }
  return std::nullopt;
}

// Whether a tensor outside the layers comes before them (an embedding: mergekit's
// pre-weights, t = 0) rather than after them (norms, lm_head: post-weights, t = 1).
inline bool is_pre_layer_tensor(std::string_view name) noexcept {
  if (name.find("embed") != std::string_view::npos) return true;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view part = name.substr(start, end - start);
    if (part == "wte" || part == "wpe") return true;
    start = end + 1;
  }
  return false;
}

// The number of layers of a model: 1 + the largest layer index among its tensor names, 0
// when no name has one.
template <class Names>
std::size_t count_layers(const Names& names) {
  std::size_t n = 0;
  for (const auto& name : names)
    if (const auto i = layer_index(name)) n = std::max(n, *i + 1);
  return n;
}

// The gradient position t of a tensor in a model of n_layers layers (see the top of the file).
inline double layer_position(std::string_view tensor_name, std::size_t n_layers) noexcept {
  if (const auto i = layer_index(tensor_name)) {
    if (n_layers <= 1) return 1;
    const double t = static_cast<double>(*i) / static_cast<double>(n_layers - 1);
    return t > 1 ? 1 : t;
  }
  return is_pre_layer_tensor(tensor_name) ? 0 : 1;
}

}  // namespace alloy::io
