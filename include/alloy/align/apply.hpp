// Applying permutations: the aligned copy of a model.
//
//   alloy::tensor_set b_aligned = alloy::align::apply_permutations(spec, model_b, perms);
//
// Every tensor of the model comes out, in the model's order, with its name, dtype and shape:
// the tensors the spec lists are permuted along each axis that carries a group
// (aligned[..., i, ...] = B[..., perm[i], ...], numpy.take's convention, as in git-re-basin's
// apply_permutation), the others are copied unchanged. Any dtype is permuted (elements are
// moved, never converted), so integer and boolean tensors in the spec are fine.
//
//   alloy::align::permute_tensor(in, shape, {&perm0, nullptr}, out);   // one tensor
//
// Complexity: one gather pass per tensor (each element read once, written once); tensors
// run in parallel (options.exec). Memory: the output set.
// Errors (alloy::error, before anything is written): the spec checks of
// permutation_spec::group_sizes (a listed tensor missing from the model, a rank or group size
// mismatch) and of check_permutations (a group without a permutation, a permutation for a
// group that permutes no tensor, a wrong length, a repeated or out-of-range index).
#pragma once

#include <alloy/align/permutation_spec.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace alloy::align {

namespace detail {

// dst = src with its axes reordered and re-indexed: output axis k is source axis order[k],
// and output index i along it reads source index maps[order[k]][i] (i when the map is
// null). shape is the source shape; dst is dense row-major in the output axis order.
template <class E>
void gather_axes(const E* src, E* dst, const std::vector<std::size_t>& shape,
                 const std::vector<const std::size_t*>& maps, const std::vector<std::size_t>& order) {
  const std::size_t r = shape.size();
  if (r == 0) {
    dst[0] = src[0];
    return;
  }
  for (std::size_t d : shape)
    if (d == 0) return;
  std::vector<std::size_t> src_stride(r, 1);
  for (std::size_t k = r - 1; k > 0; --k) src_stride[k - 1] = src_stride[k] * shape[k];
  std::vector<std::size_t> od(r), os(r);
  std::vector<const std::size_t*> om(r);
  for (std::size_t k = 0; k < r; ++k) {
    od[k] = shape[order[k]];
    os[k] = src_stride[order[k]];
    om[k] = maps[order[k]];
  }
  auto src_index = [&](std::size_t k, std::size_t i) { return (om[k] ? om[k][i] : i) * os[k]; };
  const std::size_t last = r - 1, len = od[last], step = os[last];
  const std::size_t* const lm = om[last];
  // part[k]: the source offset of the output indices idx[0..k-1].
  std::vector<std::size_t> idx(r, 0), part(r, 0);
  for (std::size_t k = 0; k < last; ++k) part[k + 1] = part[k] + src_index(k, 0);
  for (;;) {
    const E* s = src + part[last];
    if (!lm && step == 1) {
      std::memcpy(dst, s, len * sizeof(E));
    } else if (!lm) {
      for (std::size_t i = 0; i < len; ++i) dst[i] = s[i * step];
    } else {
      for (std::size_t i = 0; i < len; ++i) dst[i] = s[lm[i] * step];
    }
    dst += len;
    // Next row: the odometer over output axes 0..last-1.
    std::size_t k = last;
    while (k > 0) {
      --k;
      if (++idx[k] < od[k]) break;
      idx[k] = 0;
      if (k == 0) return;
    }
    if (last == 0) return;
    for (std::size_t j = k; j < last; ++j) part[j + 1] = part[j] + src_index(j, idx[j]);
  }
}

// gather_axes on raw elements of elem_size bytes.
inline void gather_axes_bytes(const void* src, void* dst, std::size_t elem_size, const std::vector<std::size_t>& shape,
                              const std::vector<const std::size_t*>& maps, const std::vector<std::size_t>& order) {
  switch (elem_size) {
    case 1: gather_axes(static_cast<const std::uint8_t*>(src), static_cast<std::uint8_t*>(dst), shape, maps, order); break;
    case 2: gather_axes(static_cast<const std::uint16_t*>(src), static_cast<std::uint16_t*>(dst), shape, maps, order); break;
    case 4: gather_axes(static_cast<const std::uint32_t*>(src), static_cast<std::uint32_t*>(dst), shape, maps, order); break;
    default: gather_axes(static_cast<const std::uint64_t*>(src), static_cast<std::uint64_t*>(dst), shape, maps, order); break;
  }
}

inline std::vector<std::size_t> identity_order(std::size_t r) {
  std::vector<std::size_t> o(r);
  for (std::size_t k = 0; k < r; ++k) o[k] = k;
  return o;
}

// The per-axis maps of a listed tensor under perms (null for unpermuted axes).
inline std::vector<const std::size_t*> axis_maps(const axis_groups& axes, const permutation_map& perms) {
  std::vector<const std::size_t*> maps(axes.size(), nullptr);
  for (std::size_t a = 0; a < axes.size(); ++a)
    if (axes[a]) maps[a] = perms.find(*axes[a])->second.data();
  return maps;
}

}  // namespace detail

// out = in with axis a re-indexed by *axis_perms[a] (null: unchanged): out[..., i, ...] =
// in[..., p[i], ...]. in and out have the same dtype and shape and must not overlap.
// Errors: errc::size_mismatch / dtype_mismatch / shape_mismatch for inconsistent sizes,
// errc::invalid_argument for a map that is not a permutation of its axis, errc::aliasing.
inline void permute_tensor(tensor_view in, const std::vector<std::size_t>& shape,
                           const std::vector<const std::vector<std::size_t>*>& axis_perms, mutable_tensor_view out) {
  const std::string who = "permute_tensor: ";
  if (in.type != out.type)
    throw error(errc::dtype_mismatch, who + "the input is " + std::string(dtype_name(in.type)) + ", the output " +
                                          std::string(dtype_name(out.type)));
  if (shape_elements(shape) != in.size || in.size != out.size)
    throw error(errc::size_mismatch, who + "shape " + shape_string(shape) + " for an input of " +
                                         std::to_string(in.size) + " and an output of " + std::to_string(out.size) +
                                         " elements");
  if (axis_perms.size() != shape.size())
    throw error(errc::shape_mismatch, who + std::to_string(axis_perms.size()) + " axis permutations for a shape of " +
                                          std::to_string(shape.size()) + " axes");
  std::vector<const std::size_t*> maps(shape.size(), nullptr);
  for (std::size_t a = 0; a < shape.size(); ++a) {
    if (!axis_perms[a]) continue;
    const auto& p = *axis_perms[a];
    if (p.size() != shape[a])
      throw error(errc::invalid_argument, who + "the permutation of axis " + std::to_string(a) + " has " +
                                              std::to_string(p.size()) + " entries, the axis has size " +
                                              std::to_string(shape[a]));
    std::vector<char> seen(p.size(), 0);
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (p[i] >= p.size() || seen[p[i]])
        throw error(errc::invalid_argument, who + "the map of axis " + std::to_string(a) + " is not a permutation (entry " +
                                                std::to_string(i) + " is " + std::to_string(p[i]) + ")");
      seen[p[i]] = 1;
    }
    maps[a] = p.data();
  }
  const auto* ib = static_cast<const std::byte*>(in.data);
  auto* ob = static_cast<std::byte*>(out.data);
  if (in.bytes() != 0 && ob < ib + in.bytes() && ib < ob + out.bytes())
    throw error(errc::aliasing, who + "the output overlaps the input");
  if (in.size == 0) return;
  detail::gather_axes_bytes(in.data, out.data, dtype_size(in.type), shape, maps, detail::identity_order(shape.size()));
}

struct apply_permutations_options {
  execution exec = {};
};

// apply_permutations(spec, model, perms [, options]) -> tensor_set: see the top of the file.
struct apply_permutations_fn {
  template <named_tensors R>
  tensor_set operator()(const permutation_spec& spec, const R& model, const permutation_map& perms,
                        const apply_permutations_options& o = {}) const {
    const std::vector<named_view> views = named_views_of(model);
    const group_size_map sizes = spec.group_sizes(views, "the model");
    spec.check_permutations(perms, sizes, "apply_permutations");
    tensor_set out;
    std::vector<mutable_tensor_view> dst;
    dst.reserve(views.size());
    for (const auto& v : views) {
      if (shape_elements(v.shape, v.name) != v.view.size)
        throw error(errc::shape_mismatch, "apply_permutations: tensor '" + std::string(v.name) + "' has shape " +
                                              shape_string(v.shape) + " but " + std::to_string(v.view.size) +
                                              " elements");
      dst.push_back(out.add(std::string(v.name), v.view.type, v.shape, no_init));
    }
    parallel_for(views.size(), o.exec, [&](std::size_t t) {
      const named_view& v = views[t];
      if (v.view.size == 0) return;
      const axis_groups* axes = spec.find(v.name);
      if (!axes) {
        std::memcpy(dst[t].data, v.view.data, v.view.bytes());
        return;
      }
      detail::gather_axes_bytes(v.view.data, dst[t].data, dtype_size(v.view.type), v.shape,
                                detail::axis_maps(*axes, perms), detail::identity_order(v.shape.size()));
    });
    return out;
  }
};
inline constexpr apply_permutations_fn apply_permutations{};

}  // namespace alloy::align
