// Permutation specs: which axis of which named tensor is permuted by which permutation group
// (git-re-basin's PermutationSpec), and the permutations themselves.
//
//   alloy::align::permutation_spec spec;
//   spec.add("layers.0.weight", {"P0", std::nullopt})   // [out, in]: rows permuted by P0
//       .add("layers.0.bias", {"P0"})
//       .linear("layers.2", "P1", "P0")                 // layers.2.weight (P1, P0), .bias (P1)
//       .linear("layers.4", std::nullopt, "P1");        // the output layer: only its input axis
//   // the same spec: alloy::align::mlp_permutation_spec({"layers.0", "layers.2", "layers.4"})
//   auto sizes = spec.group_sizes(model);               // validates the spec against a model
//
// A group is a set of (tensor, axis) pairs that one permutation of the hidden units acts on:
// a Linear layer's output rows, the next layer's input columns, the bias and norm vectors of
// those units. In a residual network every layer that reads or writes the residual stream
// shares the stream's one group. A tensor may carry a group on several axes (a square
// hidden-to-hidden weight); a tensor that the spec does not list is never permuted.
//
// Permutations: permutation_map maps a group name to a vector perm of its size n, with the
// meaning of numpy.take (git-re-basin's convention): unit i of the aligned model B is unit
// perm[i] of model B, so aligned[..., i, ...] = B[..., perm[i], ...] along every axis of the
// group.
//
// Builders (PyTorch layouts and names): linear, conv, norm, embedding (members, composable
// like git-re-basin's resnet20_permutation_spec), mlp_permutation_spec (a chain of Linear
// layers), chain_permutation_spec (a chain of Linear / Conv / norm layers, e.g. a conv net),
// residual_mlp_permutation_spec (residual blocks around one stream group). The YAML form is
// in permutation_spec_yaml.hpp (it needs yaml-cpp, linked by alloy::io).
//
// Errors (alloy::error, before anything is computed): an empty tensor or group name
// (invalid_argument), a tensor listed twice (duplicate_name); against a model: a listed
// tensor the model lacks (missing_tensor), a tensor whose rank differs from its number of
// axes in the spec (shape_mismatch), a group whose axes differ in size (shape_mismatch,
// naming both tensors and axes); for permutations: a group of the spec without a
// permutation, a permutation for a group that permutes no tensor, a wrong length or a vector
// that is not a permutation (invalid_argument). Every message names the tensor and the axis.
#pragma once

#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/error.hpp>

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace alloy::align {

// One axis of one tensor.
struct tensor_axis {
  std::string tensor;
  std::size_t axis = 0;
  friend bool operator==(const tensor_axis&, const tensor_axis&) = default;
};

// The group of each axis of a tensor, std::nullopt for an axis that is not permuted.
using axis_groups = std::vector<std::optional<std::string>>;

// Permutations by group name (see the top of this file for the convention).
using permutation_map = std::map<std::string, std::vector<std::size_t>, std::less<>>;

// Group sizes by group name.
using group_size_map = std::map<std::string, std::size_t, std::less<>>;

class permutation_spec {
 public:
  permutation_spec() = default;

  // Lists `tensor` with the group of each of its axes (one entry per axis, in order).
  permutation_spec& add(std::string tensor, axis_groups axes) {
    if (tensor.empty()) throw error(errc::invalid_argument, "permutation spec: a tensor with an empty name");
    if (index_.count(tensor))
      throw error(errc::duplicate_name, "permutation spec: tensor '" + tensor + "' is listed twice");
    for (std::size_t a = 0; a < axes.size(); ++a)
      if (axes[a] && axes[a]->empty())
        throw error(errc::invalid_argument, "permutation spec: tensor '" + tensor + "' axis " + std::to_string(a) +
                                                ": an empty group name (use null for an axis that is not permuted)");
    for (std::size_t a = 0; a < axes.size(); ++a) {
      if (!axes[a]) continue;
      auto [it, fresh] = group_index_.try_emplace(*axes[a], groups_.size());
      if (fresh) {
        groups_.push_back(*axes[a]);
        group_axes_.emplace_back();
      }
      group_axes_[it->second].push_back({tensor, a});
    }
    index_.emplace(tensor, tensors_.size());
    tensors_.push_back(tensor);
    axes_.push_back(std::move(axes));
    return *this;
  }

  // PyTorch nn.Linear `prefix`: prefix.weight [out, in] -> (out_group, in_group) and, with
  // bias, prefix.bias [out] -> (out_group).
  permutation_spec& linear(const std::string& prefix, std::optional<std::string> out_group,
                           std::optional<std::string> in_group, bool bias = true) {
    add(prefix + ".weight", {out_group, in_group});
    if (bias) add(prefix + ".bias", {out_group});
    return *this;
  }

  // PyTorch nn.Conv{1,2,3}d `prefix`: prefix.weight [out, in, k...] (spatial_dims kernel
  // axes, not permuted) and, with bias, prefix.bias [out].
  permutation_spec& conv(const std::string& prefix, std::optional<std::string> out_group,
                         std::optional<std::string> in_group, std::size_t spatial_dims = 2, bool bias = true) {
    axis_groups w{out_group, in_group};
    w.resize(2 + spatial_dims);
    add(prefix + ".weight", std::move(w));
    if (bias) add(prefix + ".bias", {out_group});
    return *this;
  }

  // A norm over the units of `group` (nn.LayerNorm, nn.BatchNorm*d): prefix.weight and
  // prefix.bias and, with running_stats (BatchNorm), prefix.running_mean and
  // prefix.running_var. BatchNorm's num_batches_tracked is not listed: it is copied.
  permutation_spec& norm(const std::string& prefix, std::optional<std::string> group, bool running_stats = false) {
    add(prefix + ".weight", {group});
    add(prefix + ".bias", {group});
    if (running_stats) {
      add(prefix + ".running_mean", {group});
      add(prefix + ".running_var", {group});
    }
    return *this;
  }

  // nn.Embedding `prefix`: prefix.weight [num_embeddings, dim] -> (null, group).
  permutation_spec& embedding(const std::string& prefix, std::optional<std::string> group) {
    return add(prefix + ".weight", {std::nullopt, std::move(group)});
  }

  std::size_t size() const noexcept { return tensors_.size(); }
  bool empty() const noexcept { return tensors_.empty(); }
  bool contains(std::string_view tensor) const { return index_.count(std::string(tensor)) != 0; }

  // The listed tensors, in the order they were added.
  const std::vector<std::string>& tensors() const noexcept { return tensors_; }
  // The groups, in order of first appearance.
  const std::vector<std::string>& groups() const noexcept { return groups_; }
  bool has_group(std::string_view group) const { return group_index_.count(std::string(group)) != 0; }

  // The axes of a listed tensor; nullptr (find) or errc::missing_tensor (axes) otherwise.
  const axis_groups* find(std::string_view tensor) const {
    auto it = index_.find(std::string(tensor));
    return it == index_.end() ? nullptr : &axes_[it->second];
  }
  const axis_groups& axes(std::string_view tensor) const {
    if (const auto* a = find(tensor)) return *a;
    throw error(errc::missing_tensor, "permutation spec: tensor '" + std::string(tensor) + "' is not listed");
  }

  // The (tensor, axis) pairs of a group, in listing order; errc::invalid_argument when no
  // tensor carries the group.
  const std::vector<tensor_axis>& group_axes(std::string_view group) const {
    auto it = group_index_.find(std::string(group));
    if (it == group_index_.end())
      throw error(errc::invalid_argument,
                  "permutation spec: group '" + std::string(group) + "' permutes no tensor of the spec");
    return group_axes_[it->second];
  }

  // Validates the spec against a model and returns every group's size (see the top of the
  // file for the checks). `label` names the model in messages ("model B").
  group_size_map group_sizes(const std::vector<named_view>& model, std::string_view label = "the model") const {
    std::unordered_map<std::string_view, const named_view*> by_name;
    for (const auto& v : model) by_name.emplace(v.name, &v);
    std::vector<const named_view*> found(tensors_.size());
    for (std::size_t t = 0; t < tensors_.size(); ++t) {
      auto it = by_name.find(tensors_[t]);
      if (it == by_name.end())
        throw error(errc::missing_tensor, "permutation spec: tensor '" + tensors_[t] + "'" + first_group_of(t) +
                                              " is not in " + std::string(label));
      const named_view& v = *it->second;
      if (v.shape.size() != axes_[t].size())
        throw error(errc::shape_mismatch, "permutation spec: tensor '" + tensors_[t] + "' has shape " +
                                              shape_string(v.shape) + " (" + std::to_string(v.shape.size()) +
                                              " axes) in " + std::string(label) + ", but the spec lists " +
                                              std::to_string(axes_[t].size()) + " axes");
      found[t] = &v;
    }
    group_size_map sizes;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      const tensor_axis& first = group_axes_[g].front();
      const std::size_t n = found[index_.at(first.tensor)]->shape[first.axis];
      for (const tensor_axis& ta : group_axes_[g]) {
        const std::size_t m = found[index_.at(ta.tensor)]->shape[ta.axis];
        if (m != n)
          throw error(errc::shape_mismatch, "permutation spec: group '" + groups_[g] + "' permutes axis " +
                                                std::to_string(first.axis) + " of tensor '" + first.tensor + "' (size " +
                                                std::to_string(n) + ") and axis " + std::to_string(ta.axis) +
                                                " of tensor '" + ta.tensor + "' (size " + std::to_string(m) + ") in " +
                                                std::string(label) + ": the axes of one group must have one size");
      }
      sizes.emplace(groups_[g], n);
    }
    return sizes;
  }
  template <named_tensors R>
  group_size_map group_sizes(const R& model, std::string_view label = "the model") const {
    return group_sizes(named_views_of(model), label);
  }

  // Checks permutations against group sizes: one permutation per group of the spec, no
  // permutation for a group the spec lacks, each of its group's size, each a permutation.
  void check_permutations(const permutation_map& perms, const group_size_map& sizes,
                          std::string_view method = "permutation spec") const {
    for (const auto& [g, p] : perms)
      if (!has_group(g))
        throw error(errc::invalid_argument, std::string(method) + ": a permutation is given for group '" + g +
                                                "', which permutes no tensor of the spec");
    for (const auto& g : groups_) {
      auto it = perms.find(g);
      const tensor_axis& first = group_axes_[group_index_.at(g)].front();
      const std::string where = " (it permutes axis " + std::to_string(first.axis) + " of tensor '" + first.tensor + "')";
      if (it == perms.end())
        throw error(errc::invalid_argument, std::string(method) + ": no permutation for group '" + g + "'" + where);
      const std::size_t n = sizes.at(g);
      const auto& p = it->second;
      if (p.size() != n)
        throw error(errc::invalid_argument, std::string(method) + ": the permutation of group '" + g + "' has " +
                                                std::to_string(p.size()) + " entries, the group has size " +
                                                std::to_string(n) + where);
      std::vector<char> seen(n, 0);
      for (std::size_t i = 0; i < n; ++i) {
        if (p[i] >= n || seen[p[i]])
          throw error(errc::invalid_argument, std::string(method) + ": the permutation of group '" + g +
                                                  "' is not a permutation of 0.." + std::to_string(n - 1) + ": entry " +
                                                  std::to_string(i) + " is " + std::to_string(p[i]) +
                                                  (p[i] >= n ? " (out of range)" : " (repeated)") + where);
        seen[p[i]] = 1;
      }
    }
  }

  // The identity permutation of every group.
  static permutation_map identity(const group_size_map& sizes) {
    permutation_map out;
    for (const auto& [g, n] : sizes) {
      std::vector<std::size_t> p(n);
      for (std::size_t i = 0; i < n; ++i) p[i] = i;
      out.emplace(g, std::move(p));
    }
    return out;
  }

 private:
  std::string first_group_of(std::size_t t) const {
    for (std::size_t a = 0; a < axes_[t].size(); ++a)
      if (axes_[t][a]) return " (axis " + std::to_string(a) + " in group '" + *axes_[t][a] + "')";
    return "";
  }

  std::vector<std::string> tensors_;
  std::vector<axis_groups> axes_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::string> groups_;
  std::vector<std::vector<tensor_axis>> group_axes_;
  std::unordered_map<std::string, std::size_t> group_index_;
};

// The inverse of a permutation: inverse(p)[p[i]] = i.
inline std::vector<std::size_t> inverse_permutation(const std::vector<std::size_t>& p) {
  std::vector<std::size_t> q(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) q[p[i]] = i;
  return q;
}

// ---- builders ------------------------------------------------------------------------------

// An MLP of nn.Linear layers in PyTorch [out, in] layout, given the layers' name prefixes in
// order (for nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) named `layers`:
// {"layers.0", "layers.2", "layers.4"}). Hidden layer k (every layer but the last) gets group
// group_prefix + k on its output: layers.0.weight (P0, null), layers.0.bias (P0),
// layers.2.weight (P1, P0), layers.2.bias (P1), layers.4.weight (null, P1), layers.4.bias
// (null): exactly the YAML example of docs/methods/alignment.md.
inline permutation_spec mlp_permutation_spec(const std::vector<std::string>& layers, bool bias = true,
                                             const std::string& group_prefix = "P") {
  if (layers.empty()) throw error(errc::empty_input, "mlp_permutation_spec: no layers");
  permutation_spec s;
  std::optional<std::string> in;
  for (std::size_t k = 0; k < layers.size(); ++k) {
    std::optional<std::string> out;
    if (k + 1 < layers.size()) out = group_prefix + std::to_string(k);
    s.linear(layers[k], out, in, bias);
    in = out;
  }
  return s;
}

// A layer of a chain (chain_permutation_spec).
struct chain_layer {
  enum kind_t { linear, conv1d, conv2d, conv3d, layer_norm, batch_norm };
  std::string name;  // the name prefix: "features.0" for features.0.weight
  kind_t kind = linear;
  bool bias = true;  // weight layers: whether name.bias exists
};

// A feed-forward chain of Linear and Conv layers (PyTorch layouts), with norm layers over
// the preceding layer's output: a conv net (conv, batch norm, conv, ..., linear). Each
// Linear/Conv layer but the last gets group group_prefix + k (k counting weight layers) on
// its output axis and the previous weight layer's group on its input axis; a norm layer
// takes the current group (batch_norm also lists running_mean and running_var). A Linear
// after a Conv takes the conv's channel group on its input axis, which is right when the
// conv output is pooled to one element per channel before flattening; otherwise the sizes
// differ and group_sizes() reports it.
inline permutation_spec chain_permutation_spec(const std::vector<chain_layer>& layers,
                                               const std::string& group_prefix = "P") {
  std::size_t weight_layers = 0;
  for (const auto& l : layers)
    if (l.kind != chain_layer::layer_norm && l.kind != chain_layer::batch_norm) ++weight_layers;
  if (weight_layers == 0) throw error(errc::empty_input, "chain_permutation_spec: no Linear or Conv layer");
  permutation_spec s;
  std::optional<std::string> current;
  std::size_t k = 0;
  for (const auto& l : layers) {
    switch (l.kind) {
      case chain_layer::layer_norm: s.norm(l.name, current, false); break;
      case chain_layer::batch_norm: s.norm(l.name, current, true); break;
      default: {
        std::optional<std::string> out;
        if (k + 1 < weight_layers) out = group_prefix + std::to_string(k);
        if (l.kind == chain_layer::linear)
          s.linear(l.name, out, current, l.bias);
        else
          s.conv(l.name, out, current, l.kind == chain_layer::conv1d ? 1 : l.kind == chain_layer::conv2d ? 2 : 3, l.bias);
        current = out;
        ++k;
      }
    }
  }
  return s;
}

// A conv net: conv layers (nn.Conv2d unless spatial_dims says otherwise), each optionally
// followed by a BatchNorm (norms[i] names the norm after conv i, "" for none; norms may be
// empty), then Linear layers. Equivalent to chain_permutation_spec.
inline permutation_spec conv_net_permutation_spec(const std::vector<std::string>& convs,
                                                  const std::vector<std::string>& linears,
                                                  const std::vector<std::string>& norms = {},
                                                  std::size_t spatial_dims = 2, const std::string& group_prefix = "P") {
  if (!norms.empty() && norms.size() != convs.size())
    throw error(errc::invalid_argument, "conv_net_permutation_spec: " + std::to_string(norms.size()) + " norms for " +
                                            std::to_string(convs.size()) + " convs (give one per conv, \"\" for none)");
  if (spatial_dims < 1 || spatial_dims > 3)
    throw error(errc::invalid_argument,
                "conv_net_permutation_spec: spatial_dims is " + std::to_string(spatial_dims) + ", not 1, 2 or 3");
  const auto kind = spatial_dims == 1 ? chain_layer::conv1d : spatial_dims == 2 ? chain_layer::conv2d : chain_layer::conv3d;
  std::vector<chain_layer> chain;
  for (std::size_t i = 0; i < convs.size(); ++i) {
    chain.push_back({convs[i], kind, true});
    if (!norms.empty() && !norms[i].empty()) chain.push_back({norms[i], chain_layer::batch_norm, true});
  }
  for (const auto& l : linears) chain.push_back({l, chain_layer::linear, true});
  return chain_permutation_spec(chain, group_prefix);
}

// A residual block around a stream (residual_mlp_permutation_spec): x + down(act(up(norm(x)))).
struct residual_block {
  std::string norm;  // LayerNorm prefix before up ("" for none)
  std::string up;    // Linear [hidden, d]: reads the stream
  std::string down;  // Linear [d, hidden]: writes the stream
};

// A residual MLP: embed (Linear [d, in], writes the stream), blocks, optionally a final
// LayerNorm on the stream, head (Linear [out, d], reads it). Every tensor that reads or
// writes the stream shares one group, `stream_group`; block k's hidden units get
// group_prefix + k. The shape of a pre-norm transformer's residual stream, without
// attention.
inline permutation_spec residual_mlp_permutation_spec(const std::string& embed, const std::vector<residual_block>& blocks,
                                                      const std::string& head, const std::string& final_norm = "",
                                                      const std::string& stream_group = "P_res",
                                                      const std::string& group_prefix = "P_block") {
  permutation_spec s;
  s.linear(embed, stream_group, std::nullopt);
  for (std::size_t k = 0; k < blocks.size(); ++k) {
    const std::string hidden = group_prefix + std::to_string(k);
    if (!blocks[k].norm.empty()) s.norm(blocks[k].norm, stream_group);
    s.linear(blocks[k].up, hidden, stream_group);
    s.linear(blocks[k].down, stream_group, hidden);
  }
  if (!final_norm.empty()) s.norm(final_norm, stream_group);
  s.linear(head, std::nullopt, stream_group);
  return s;
}

}  // namespace alloy::align
