// Precondition checks shared by the methods. Each throws alloy::error with a message that
// names the method, the model, the tensor and the offending value, and is called before
// any arithmetic.
#pragma once

#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/error.hpp>

#include <cmath>
#include <cstddef>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace alloy::detail {

inline std::string fmt(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// " (tensor 'x')" or "" for single-tensor calls.
inline std::string in_tensor(std::string_view name) {
  return name.empty() ? std::string() : " (tensor '" + std::string(name) + "')";
}

inline void check_finite(std::string_view method, std::string_view what, double v) {
  if (!std::isfinite(v))
    throw error(errc::non_finite, std::string(method) + ": " + std::string(what) + " is " + fmt(v) + ", not a finite number");
}

inline void check_weights(std::string_view method, std::span<const double> w, std::size_t models) {
  if (w.size() != models)
    throw error(errc::invalid_argument, std::string(method) + ": " + std::to_string(w.size()) + " weights for " +
                                            std::to_string(models) + " models");
  for (std::size_t i = 0; i < w.size(); ++i) check_finite(method, "weight of model " + std::to_string(i), w[i]);
}

inline void check_model_count(std::string_view method, std::size_t models, std::size_t at_least, std::size_t at_most) {
  if (models < at_least)
    throw error(errc::empty_input, std::string(method) + ": needs at least " + std::to_string(at_least) +
                                       (at_least == 1 ? " model" : " models") + ", got " + std::to_string(models));
  if (models > at_most)
    throw error(errc::invalid_argument, std::string(method) + ": at most " + std::to_string(at_most) +
                                            " models per merge, got " + std::to_string(models));
}

inline void check_floating(std::string_view method, std::string_view label, std::string_view tensor, dtype t) {
  if (!is_floating(t))
    throw error(errc::dtype_mismatch, std::string(method) + ": " + std::string(label) + " has dtype " +
                                          std::string(dtype_name(t)) + ", which cannot be merged" + in_tensor(tensor));
}

// Every input has the output's element count and a floating dtype; labels[i] names input i.
inline void check_inputs(std::string_view method, std::string_view tensor, std::span<const tensor_view> in,
                         std::span<const std::string> labels, mutable_tensor_view out) {
  for (std::size_t i = 0; i < in.size(); ++i) {
    check_floating(method, labels[i], tensor, in[i].type);
    if (in[i].size != in[0].size)
      throw error(errc::size_mismatch, std::string(method) + ": " + labels[i] + " has " + std::to_string(in[i].size) +
                                           " elements, " + labels[0] + " has " + std::to_string(in[0].size) + in_tensor(tensor));
  }
  check_floating(method, "the output", tensor, out.type);
  if (!in.empty() && out.size != in[0].size)
    throw error(errc::size_mismatch, std::string(method) + ": the output has " + std::to_string(out.size) +
                                         " elements, the inputs have " + std::to_string(in[0].size) + in_tensor(tensor));
}

// The output may be an input exactly (same address and dtype: an in-place merge) but must
// not overlap one otherwise: that would overwrite input elements before they are read.
inline void check_no_overlap(std::string_view method, std::string_view tensor, std::span<const tensor_view> in,
                             std::span<const std::string> labels, mutable_tensor_view out) {
  const auto* ob = static_cast<const std::byte*>(out.data);
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto* ib = static_cast<const std::byte*>(in[i].data);
    if (out.bytes() == 0 || in[i].bytes() == 0) continue;
    const bool overlap = ob < ib + in[i].bytes() && ib < ob + out.bytes();
    if (overlap && !(ob == ib && out.type == in[i].type))
      throw error(errc::aliasing, std::string(method) + ": the output overlaps " + labels[i] +
                                      " without being the same tensor of the same dtype" + in_tensor(tensor));
  }
}

// For model-level merges: tensor j of every set, matched by name to reference set 0.
// Names, element counts, shapes and dtypes are checked before any arithmetic.
struct matched_tensors {
  std::string_view name;
  std::vector<std::size_t> shape;
  std::vector<tensor_view> views;  // one per set, in the order of the sets
};

inline std::vector<matched_tensors> match_sets(std::string_view method, const std::vector<std::vector<named_view>>& sets,
                                               std::span<const std::string> labels) {
  std::vector<matched_tensors> out;
  if (sets.empty()) return out;
  if (sets[0].empty()) throw error(errc::empty_input, std::string(method) + ": " + labels[0] + " has no tensors");
  for (std::size_t s = 1; s < sets.size(); ++s) {
    if (sets[s].size() == sets[0].size()) continue;
    // Report a name one set has and the other lacks.
    const auto& big = sets[s].size() > sets[0].size() ? sets[s] : sets[0];
    const auto& small = sets[s].size() > sets[0].size() ? sets[0] : sets[s];
    const std::string& has = sets[s].size() > sets[0].size() ? labels[s] : labels[0];
    const std::string& lacks = sets[s].size() > sets[0].size() ? labels[0] : labels[s];
    for (const auto& v : big) {
      bool found = false;
      for (const auto& w : small) found = found || w.name == v.name;
      if (!found)
        throw error(errc::missing_tensor, std::string(method) + ": " + has + " has tensor '" + std::string(v.name) +
                                              "' that " + lacks + " lacks");
    }
  }
  std::vector<std::unordered_map<std::string_view, std::size_t>> index(sets.size());
  for (std::size_t s = 1; s < sets.size(); ++s)
    for (std::size_t j = 0; j < sets[s].size(); ++j) index[s].emplace(sets[s][j].name, j);
  out.reserve(sets[0].size());
  for (const auto& ref : sets[0]) {
    matched_tensors m{ref.name, ref.shape, {ref.view}};
    check_floating(method, labels[0], ref.name, ref.view.type);
    for (std::size_t s = 1; s < sets.size(); ++s) {
      auto it = index[s].find(ref.name);
      if (it == index[s].end())
        throw error(errc::missing_tensor, std::string(method) + ": " + labels[s] + " has no tensor '" +
                                              std::string(ref.name) + "' (present in " + labels[0] + ")");
      const named_view& v = sets[s][it->second];
      check_floating(method, labels[s], ref.name, v.view.type);
      if (v.shape != ref.shape || v.view.size != ref.view.size)
        throw error(errc::shape_mismatch, std::string(method) + ": tensor '" + std::string(ref.name) + "' has shape " +
                                              shape_string(v.shape) + " in " + labels[s] + " but " +
                                              shape_string(ref.shape) + " in " + labels[0]);
      m.views.push_back(v.view);
    }
    out.push_back(std::move(m));
  }
  return out;
}

inline std::vector<std::string> model_labels(std::size_t n, bool with_base) {
  std::vector<std::string> l;
  if (with_base) l.emplace_back("the base model");
  for (std::size_t i = 0; i < n; ++i) l.push_back("model " + std::to_string(i));
  return l;
}

}  // namespace alloy::detail
