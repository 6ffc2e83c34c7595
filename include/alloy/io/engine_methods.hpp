// The merge methods of the streaming engine (io/merge_engine.hpp): the options each recipe
// method gets from a tensor's parameters, the checks made before any output, the per-model
// files of fisher and regmean, and the call into the library for one tensor (or one chunk of
// an element-wise method's tensor).
//
//   check_method_options(r)        presets and options a method lacks (before opening inputs)
//   attach_method_files(...)       fisher, regmean: opens each model's Fisher or Gram file and
//                                  checks it against the plan; fisher: the planning pass below
//   check_tensor_options(...)      per merged tensor, the library's own checks of the options
//                                  built from its parameters (model counts, weights, eps, tol)
//   merge_tensor(...)              builds the options and calls the library function
//
// Fisher files (merge method fisher, models[i].alloy.fisher): a checkpoint (a .safetensors
// file, an index or a folder) holding, for every tensor the engine merges (every floating
// tensor of the models), a tensor of the same name and shape with model i's diagonal Fisher,
// in any floating dtype, every value finite and >= 0. Integer tensors are copied unmerged and
// need none; a Fisher tensor that names no merged tensor is an error (a typo must not pass).
// The Fisher tensors are extra sources of each planned tensor (models, then Fishers), so fisher
// runs in element-wise chunks like linear.
//
// Gram files (merge method regmean, models[i].alloy.gram): for each linear layer to solve, a
// tensor named like the layer's weight ("model.layers.0.mlp.up_proj.weight") or like its
// module ("model.layers.0.mlp.up_proj", as FusionBench keys its regmean_weights: the weight is
// then that name + ".weight"), of shape [in, in] for a weight of shape [out, in]
// (torch.nn.Linear), holding X^T X of the layer's inputs on model i's data (any common scale:
// FusionBench and the RegMean code store X^T X / rows). Every Gram file names the same layers.
// Tensors without a Gram are averaged with the weights, as RegMean does. The Grams of a layer
// are read whole (planned_tensor::aux), zero-copy when aligned.
//
// State across tensors. fisher's `normalize` divides each model's weight by the L2 norm of its
// Fisher over every merged tensor: a planning pass (in the engine's constructor, also under
// --dry-run) reads every Fisher tensor once, checks every value and sums the squares per model
// (methods/fisher.hpp's scan, per tensor, in plan order: the library's model-level sums), then
// each tensor is merged with the coefficients w_i / (norm_i + eps) (floor mode: w_i / norm_i)
// and the library's own scan off. The pass runs with normalize off too, so a bad Fisher value
// is reported before any output. `normalize` and `eps` must then be single values (recipe.hpp).
// No other method keeps state across tensors: karcher's max_iter and tol, model_stock's
// filter_wise, nuslerp's flags and multislerp's eps are per tensor.
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/error.hpp>
#include <alloy/io/engine_plan.hpp>
#include <alloy/io/engine_whole_model.hpp>
#include <alloy/io/recipe.hpp>
#include <alloy/methods/breadcrumbs.hpp>
#include <alloy/methods/dare.hpp>
#include <alloy/methods/della.hpp>
#include <alloy/methods/fisher.hpp>
#include <alloy/methods/karcher.hpp>
#include <alloy/methods/magnitude_prune.hpp>
#include <alloy/methods/model_stock.hpp>
#include <alloy/methods/multislerp.hpp>
#include <alloy/methods/nuslerp.hpp>
#include <alloy/methods/slerp.hpp>
#include <alloy/methods/soup.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace alloy::io {

namespace detail {

using rescale_kind = decltype(magnitude_prune_options{}.rescale);

// The RegMean solve of one tensor, set by <alloy/io/engine_regmean.hpp> (which needs
// alloy::linalg: BLAS, LAPACK, xtensor-blas). With grams empty: the coefficient-weighted
// average of the weights. Without it, a regmean recipe is a recipe_error before any output.
using regmean_tensor_fn = void (*)(std::span<const tensor_view> weights, std::span<const tensor_view> grams,
                                   mutable_tensor_view out, double alpha, std::span<const double> coefficients,
                                   const execution& ex);
inline regmean_tensor_fn& regmean_solver() noexcept {
  static regmean_tensor_fn f = nullptr;
  return f;
}

// Whether a method merges element by element (chunks of a tensor in parallel) rather than
// whole tensors (thresholds, norms, angles, linear solves need the whole tensor).
inline bool elementwise_method(merge_method_id m) noexcept {
  return m == merge_method_id::linear || m == merge_method_id::task_arithmetic ||
         m == merge_method_id::passthrough || m == merge_method_id::fisher;
}

// How many times a method reads its inputs (for time estimates), without planning passes.
inline double read_passes(merge_method_id m) noexcept {
  switch (m) {
    case merge_method_id::ties:
    case merge_method_id::magnitude_prune:
    case merge_method_id::breadcrumbs:
    case merge_method_id::breadcrumbs_ties: return 3;
    case merge_method_id::dare_linear:
    case merge_method_id::dare_ties:
    case merge_method_id::della:
    case merge_method_id::della_linear:
    case merge_method_id::slerp:
    case merge_method_id::nuslerp:
    case merge_method_id::multislerp:
    case merge_method_id::karcher:
    case merge_method_id::model_stock: return 2;
    case merge_method_id::fisher: return 2;  // the planning pass reads the Fishers once more
    default: return 1;
  }
}

// What the engine keeps per method across tensors: the Fisher or Gram checkpoints (one per
// merged model) and, for fisher, the base options and each model's Fisher norm.
struct method_state {
  std::vector<merge_input> files;
  fisher_options fisher;
  std::vector<double> fisher_norms;  // with fisher's normalize: over every merged tensor
  whole_model_ties ties_plan;        // ties with preset paper (io/engine_whole_model.hpp)
  // dare_ties and breadcrumbs_ties with the model-majority zero vote (preset paper): the
  // sign the whole model voted for, resolved by plan_model_vote.
  std::optional<zero_vote> model_zero;
};

inline std::string recipe_where(const recipe& r) { return r.label() + ": "; }

// Presets and options the streaming engine cannot honour; throws recipe_error.
inline void check_method_options(const recipe& r) {
  const auto preset = r.preset;
  try {
    switch (r.method) {
      case merge_method_id::ties: (void)ties_options::preset(preset); break;  // paper: engine_whole_model.hpp
      case merge_method_id::breadcrumbs:
      case merge_method_id::breadcrumbs_ties: (void)breadcrumbs_options::preset(preset); break;
      case merge_method_id::della:
      case merge_method_id::della_linear: (void)della_options::preset(preset); break;
      case merge_method_id::model_stock: (void)model_stock_options::preset(preset); break;
      case merge_method_id::fisher:
        if (preset == alloy::preset::peft)
          throw recipe_error(recipe_where(r) + "alloy.preset peft: peft has no Fisher merging (fisher takes preset "
                                               "mergekit, the default: alloy's defaults, or paper: the authors' code)");
        break;
      case merge_method_id::regmean:
        if (!regmean_solver())
          throw recipe_error(recipe_where(r) +
                             "merge method regmean needs LAPACK: this program was built without "
                             "<alloy/io/engine_regmean.hpp> (CMake: link alloy::linalg and include it)");
        if (preset != alloy::preset::mergekit)
          throw recipe_error(recipe_where(r) + "alloy.preset " + std::string(preset_name(preset)) +
                             ": regmean has one formulation (the paper's); remove alloy.preset");
        break;
      default: break;
    }
  } catch (const recipe_error&) {
    throw;
  } catch (const error& e) {  // a preset the method does not have (peft for breadcrumbs, della, model_stock)
    throw recipe_error(recipe_where(r) + "alloy.preset " + std::string(preset_name(preset)) + ": " + e.what());
  }
  if (r.method == merge_method_id::ties) {
    if (const auto it = r.parameters.find("rescale"); it != r.parameters.end())
      for (const auto& v : it->second.values)
        if (v.truthy())
          throw recipe_error(recipe_where(r) + "parameter " + it->second.where +
                             ": alloy's ties has no rescale (use magnitude_prune, which has one, or remove it)");
  }
}

// ---- options from a tensor's parameters -------------------------------------------------------

// One per-model parameter of a tensor, `fallback` where unset.
inline std::vector<double> model_values(const tensor_parameters& p, std::optional<double> tensor_parameters::model::*field,
                                        double fallback) {
  std::vector<double> v;
  for (const auto& m : p.models) v.push_back((m.*field).value_or(fallback));
  return v;
}

inline std::vector<double> model_weights(const tensor_parameters& p, double fallback) {
  return model_values(p, &tensor_parameters::model::weight, fallback);
}

// The settings every task-vector method takes from a tensor's parameters in the same way:
// lambda, the output kind, linear's normalize, and the vote (consensus_method; normalize
// unset keeps the preset's denominator, true turns a missing one into the sum of agreeing
// weights, false removes it).
template <class O>
void apply_common(const recipe& r, const planned_tensor& t, O& o, const execution& ex) {
  const tensor_parameters& p = t.parameters;
  o.lambda = p.lambda.value_or(1.0);
  o.output = r.output;
  o.exec = ex;
  if constexpr (requires { o.normalize; }) o.normalize = p.normalize.value_or(r.info().normalize_default);
  if constexpr (requires { o.consensus_method; }) {
    o.consensus_method = p.consensus_method && *p.consensus_method == "count" ? consensus::count : consensus::sum;
    if (p.normalize)
      o.denominator = !*p.normalize                            ? ties_denominator::none
                      : o.denominator == ties_denominator::none ? ties_denominator::weight_sum
                                                                : o.denominator;
  }
}

inline ties_options ties_options_of(const recipe& r, const planned_tensor& t, const execution& ex) {
  ties_options o = ties_options::preset(r.preset);
  o.densities = model_values(t.parameters, &tensor_parameters::model::density, 1.0);
  apply_common(r, t, o, ex);
  return o;
}

inline magnitude_prune_options magnitude_prune_options_of(const recipe& r, const planned_tensor& t, const execution& ex) {
  magnitude_prune_options o = magnitude_prune_options::preset(r.preset);
  o.densities = model_values(t.parameters, &tensor_parameters::model::density, 1.0);
  o.rescale = t.parameters.rescale.value_or(false) ? rescale_kind::l1 : rescale_kind::none;
  apply_common(r, t, o, ex);
  return o;
}

inline dare_options dare_options_of(const recipe& r, const planned_tensor& t, const execution& ex) {
  const tensor_parameters& p = t.parameters;
  dare_options o = dare_options::preset(r.preset);
  o.densities = model_values(p, &tensor_parameters::model::density, 1.0);
  o.seed = r.seed;
  o.tensor_name = t.name;
  if (p.rescale && !*p.rescale)
    o.rescale = dare_rescale::none;
  else if (p.rescale && o.rescale == dare_rescale::none)
    o.rescale = dare_rescale::l1;
  apply_common(r, t, o, ex);
  return o;
}

inline breadcrumbs_options breadcrumbs_options_of(const recipe& r, const planned_tensor& t, const execution& ex) {
  const tensor_parameters& p = t.parameters;
  breadcrumbs_options o = breadcrumbs_options::preset(r.preset);
  o.densities = model_values(p, &tensor_parameters::model::density, 1.0);
  o.gammas = model_values(p, &tensor_parameters::model::gamma, 0.01);
  if (p.rescale) o.rescale = *p.rescale ? rescale_kind::l1 : rescale_kind::none;
  if (o.scope == breadcrumbs_scope::per_row) {
    if (t.shape.empty())
      o.densities.assign(p.models.size(), 1.0);  // the paper keeps 0-d tensors whole
    else
      o.row_length = t.shape.back();
  }
  apply_common(r, t, o, ex);
  return o;
}

inline della_options della_options_of(const recipe& r, const planned_tensor& t, const execution& ex) {
  const tensor_parameters& p = t.parameters;
  della_options o = della_options::preset(r.preset);
  o.densities = model_values(p, &tensor_parameters::model::density, 1.0);
  o.epsilons = model_values(p, &tensor_parameters::model::epsilon, 0.15);
  o.seed = r.seed;
  o.tensor_name = t.name;
  o.shape = t.shape.empty() ? std::vector<std::size_t>{t.elements} : t.shape;
  if (p.rescale && !*p.rescale) o.rescale = della_rescale::none;
  apply_common(r, t, o, ex);
  return o;
}

inline nuslerp_options nuslerp_options_of(const planned_tensor& t, const execution& ex) {
  nuslerp_options o;
  o.flatten = t.parameters.nuslerp_flatten.value_or(true);
  o.row_wise = t.parameters.nuslerp_row_wise.value_or(false);
  o.shape = t.shape;
  o.exec = ex;
  return o;
}

inline multislerp_options multislerp_options_of(const planned_tensor& t, const execution& ex) {
  multislerp_options o;
  o.normalize_weights = t.parameters.normalize_weights.value_or(true);
  o.epsilon = t.parameters.eps.value_or(1e-8);
  o.exec = ex;
  return o;
}

inline karcher_options karcher_options_of(const planned_tensor& t, const execution& ex) {
  karcher_options o;  // no weights: 1/N, as mergekit (which ignores per-model weights)
  o.max_iter = static_cast<std::size_t>(t.parameters.max_iter.value_or(10.0));
  o.tol = t.parameters.tol.value_or(1e-5);
  o.exec = ex;
  return o;
}

inline model_stock_options model_stock_options_of(const recipe& r, const planned_tensor& t, const execution& ex) {
  model_stock_options o = model_stock_options::preset(r.preset);
  o.filter_wise = t.parameters.filter_wise.value_or(false);
  o.shape = t.shape;
  o.exec = ex;
  return o;
}

// fisher's options for the whole merge: the preset (mergekit: alloy's defaults, paper: the
// authors' code), then the recipe's normalize and eps (single values, recipe.hpp checks).
inline fisher_options fisher_options_of(const recipe& r) {
  fisher_options o = r.preset == alloy::preset::paper ? fisher_options::preset(alloy::preset::paper) : fisher_options{};
  if (const auto it = r.parameters.find("normalize"); it != r.parameters.end())
    o.normalize = it->second.values.front().truthy();
  if (const auto it = r.parameters.find("eps"); it != r.parameters.end()) o.epsilon = it->second.values.front().number;
  return o;
}

// The coefficients of one tensor: the weights, divided by the Fisher norms under normalize
// (exactly as the library's model-level fisher_merge divides them).
inline std::vector<double> fisher_coefficients_of(const method_state& st, const planned_tensor& t) {
  std::vector<double> c = model_weights(t.parameters, 1.0);
  if (st.fisher.normalize)
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (st.fisher.epsilon_mode == fisher_epsilon::add)
        c[i] /= st.fisher_norms[i] + st.fisher.epsilon;
      else
        c[i] /= st.fisher_norms[i];
    }
  return c;
}

// The library's own checks of one merged tensor's options (counts, weights, eps, tol), run
// while planning so that they fail before any output; alloy::error becomes recipe_error.
inline void check_tensor_options(const recipe& r, const merge_plan& plan, const planned_tensor& t) {
  const std::size_t n = t.parameters.models.size();
  const execution one{1};
  try {
    switch (r.method) {
      case merge_method_id::nuslerp: alloy::detail::check_nuslerp(n, model_weights(t.parameters, 1.0)); break;
      case merge_method_id::multislerp:
        (void)alloy::detail::multislerp_weights(n, plan.has_base, model_weights(t.parameters, 1.0),
                                                multislerp_options_of(t, one));
        break;
      case merge_method_id::karcher: (void)alloy::detail::karcher_alphas(n, karcher_options_of(t, one)); break;
      case merge_method_id::model_stock: alloy::detail::check_model_stock(n, model_stock_options_of(r, t, one)); break;
      case merge_method_id::fisher: {
        fisher_options o = fisher_options_of(r);
        o.coefficients = model_weights(t.parameters, 1.0);
        alloy::detail::check_fisher_options(n, n, o);
        break;
      }
      case merge_method_id::regmean:
        if (n > kernels::max_stream_inputs)
          throw recipe_error(recipe_where(r) + "regmean merges at most " + std::to_string(kernels::max_stream_inputs) +
                             " models, got " + std::to_string(n));
        break;
      default: break;
    }
  } catch (const recipe_error&) {
    throw;
  } catch (const error& e) {
    throw recipe_error(recipe_where(r) + "tensor '" + t.name + "': " + e.what());
  }
}

// ---- Fisher and Gram files ---------------------------------------------------------------------

// A whole tensor of a mapped file: zero-copy when aligned, else copied into `copy`.
inline tensor_view whole_view(const checkpoint_tensor& s, std::vector<double>& copy) {
  if (s.is_aligned()) return s.view();
  copy.resize((s.bytes() + sizeof(double) - 1) / sizeof(double) + 1);
  if (s.bytes()) std::memcpy(copy.data(), s.data().data(), s.bytes());
  return {copy.data(), s.elements(), s.type()};
}

inline void release_whole(const checkpoint_tensor& s) { s.file->mapping().release(s.data()); }

inline std::string file_label(const recipe& r, std::size_t merged_index, const char* key,
                              const std::string& spelled) {
  return r.models.at(r.merged.at(merged_index)).where + ".alloy." + key + " '" + spelled + "'";
}

// Reads every Fisher tensor once, in plan order: checks each value and, under normalize,
// computes each model's Fisher norm over every merged tensor (methods/fisher.hpp's scan).
inline void fisher_planning_pass(const recipe& r, const merge_plan& plan, method_state& st, const execution& ex) {
  const std::size_t n = st.files.size();
  std::vector<double> squares(n, 0.0);
  for (const auto& t : plan.tensors) {
    if (t.action != tensor_action::merge) continue;
    std::vector<std::vector<double>> copies(n);
    std::vector<tensor_view> views;
    for (std::size_t i = 0; i < n; ++i) views.push_back(whole_view(*t.sources[n + i], copies[i]));
    const auto scans = alloy::detail::scan_fishers(views, st.fisher.normalize, ex);
    for (std::size_t i = 0; i < n; ++i) {
      release_whole(*t.sources[n + i]);
      const auto& s = scans[i];
      squares[i] += s.sum_squares;
      if (s.first_bad == alloy::detail::no_index) continue;
      const std::string what = st.files[i].label + ": tensor '" + t.name + "' has " +
                               alloy::detail::fmt(s.bad_value) + " at element " + std::to_string(s.first_bad);
      if (std::isfinite(s.bad_value)) throw error(errc::invalid_argument, what + "; Fisher values must be >= 0");
      throw error(errc::non_finite, what + ", not a finite number");
    }
  }
  if (!st.fisher.normalize) return;
  for (std::size_t i = 0; i < n; ++i) {
    const double norm = std::sqrt(squares[i]);
    if (!std::isfinite(norm))
      throw error(errc::non_finite, st.files[i].label + ": the Fisher norm overflows (values beyond ~1e18)");
    const double denominator = st.fisher.epsilon_mode == fisher_epsilon::add ? norm + st.fisher.epsilon : norm;
    if (denominator == 0)
      throw recipe_error(recipe_where(r) + "parameters.normalize: the Fisher of " + st.files[i].label +
                         " is 0 everywhere, so it cannot be divided by its norm (set eps > 0 or normalize: false)");
    st.fisher_norms.push_back(norm);
  }
}

// fisher: each model's Fisher tensors become extra sources of the tensors the plan merges.
inline void attach_fisher_files(merge_plan& plan, method_state& st) {
  std::unordered_map<std::string_view, const planned_tensor*> merged;
  for (const auto& t : plan.tensors)
    if (t.action == tensor_action::merge) merged.emplace(t.name, &t);
  for (const auto& f : st.files) {
    for (const auto& x : f.ckpt.tensors())
      if (!merged.count(x.name()))
        throw error(errc::missing_tensor, f.label + " has a tensor '" + x.name() +
                                              "' that is not a merged (floating) tensor of the models");
    for (const auto& t : plan.tensors) {
      if (t.action != tensor_action::merge) continue;
      if (!f.ckpt.contains(t.name))
        throw error(errc::missing_tensor, f.label + " has no tensor '" + t.name + "' (every merged tensor needs a Fisher)");
      const checkpoint_tensor& x = f.ckpt.at(t.name);
      if (x.shape() != t.shape)
        throw error(errc::shape_mismatch, f.label + ": tensor '" + t.name + "' has shape " + shape_string(x.shape()) +
                                              ", the models' has " + shape_string(t.shape));
      if (!is_floating(x.type()))
        throw error(errc::dtype_mismatch, f.label + ": tensor '" + t.name + "' is " + std::string(dtype_name(x.type())) +
                                              ", not a floating dtype");
    }
  }
  for (auto& t : plan.tensors) {
    if (t.action != tensor_action::merge) continue;
    for (const auto& f : st.files) {
      t.sources.push_back(&f.ckpt.at(t.name));
      t.input_bytes += t.sources.back()->bytes();
      plan.input_bytes += t.sources.back()->bytes();
    }
  }
}

// regmean: the Grams of each linear layer, by the weight's name or its module's name.
inline void attach_gram_files(merge_plan& plan, method_state& st) {
  std::unordered_map<std::string_view, planned_tensor*> by_name;
  for (auto& t : plan.tensors) by_name.emplace(t.name, &t);
  const checkpoint& first = st.files[0].ckpt;
  for (std::size_t i = 1; i < st.files.size(); ++i) {
    for (const auto& g : first.tensors())
      if (!st.files[i].ckpt.contains(g.name()))
        throw error(errc::missing_tensor, "the Gram '" + g.name() + "' is in " + st.files[0].label + " but not in " +
                                              st.files[i].label + " (every Gram file names the same layers)");
    for (const auto& g : st.files[i].ckpt.tensors())
      if (!first.contains(g.name()))
        throw error(errc::missing_tensor, "the Gram '" + g.name() + "' is in " + st.files[i].label + " but not in " +
                                              st.files[0].label + " (every Gram file names the same layers)");
  }
  for (const auto& g : first.tensors()) {
    auto it = by_name.find(g.name());
    const std::string weight_name = g.name() + ".weight";
    if (it == by_name.end()) it = by_name.find(weight_name);
    if (it == by_name.end())
      throw error(errc::missing_tensor, st.files[0].label + ": the Gram '" + g.name() +
                                            "' matches no tensor of the models (neither '" + g.name() + "' nor '" +
                                            weight_name + "')");
    planned_tensor& t = *it->second;
    if (!t.aux.empty())
      throw error(errc::duplicate_name, st.files[0].label + ": tensor '" + t.name + "' has two Grams ('" +
                                            t.aux[0]->name() + "' and '" + g.name() + "')");
    if (t.action != tensor_action::merge || t.shape.size() != 2)
      throw error(errc::shape_mismatch, st.files[0].label + ": the Gram '" + g.name() + "' belongs to tensor '" +
                                            t.name + "' of shape " + shape_string(t.shape) +
                                            (t.action != tensor_action::merge ? ", an integer tensor"
                                                                              : ", but a linear layer's weight is 2-D"));
    const std::vector<std::size_t> want{t.shape[1], t.shape[1]};
    for (const auto& f : st.files) {
      const checkpoint_tensor& x = f.ckpt.at(g.name());
      if (x.shape() != want)
        throw error(errc::shape_mismatch, f.label + ": the Gram '" + g.name() + "' has shape " +
                                              shape_string(x.shape()) + ", but tensor '" + t.name + "' of shape " +
                                              shape_string(t.shape) + " ([out, in]) needs " + shape_string(want));
      if (!is_floating(x.type()))
        throw error(errc::dtype_mismatch, f.label + ": the Gram '" + g.name() + "' is " +
                                              std::string(dtype_name(x.type())) + ", not a floating dtype");
      t.aux.push_back(&x);
      t.input_bytes += x.bytes();
      plan.input_bytes += x.bytes();
    }
  }
}

// Opens the per-model files of fisher and regmean and checks them against the plan (before
// any arithmetic); fisher: the planning pass. Returns the extra peak memory of the method
// beyond the tensors' inputs and outputs (regmean's solver scratch), in bytes.
inline std::uint64_t attach_method_files(const recipe& r, merge_plan& plan, method_state& st, const execution& ex) {
  const bool fisher = r.method == merge_method_id::fisher;
  if (!fisher && r.method != merge_method_id::regmean) return 0;
  const char* key = fisher ? "fisher" : "gram";
  for (std::size_t i = 0; i < r.merged.size(); ++i) {
    const auto& m = r.models[r.merged[i]];
    const std::string label = file_label(r, i, key, fisher ? m.fisher_spelled : m.gram_spelled);
    try {
      st.files.push_back({label, open_checkpoint(fisher ? *m.fisher : *m.gram)});
    } catch (const error& e) {
      throw error(e.code(), std::string(e.what()) + " (" + label + " in " + r.label() + ")");
    }
  }
  if (fisher) {
    st.fisher = fisher_options_of(r);
    attach_fisher_files(plan, st);
    fisher_planning_pass(r, plan, st, ex);
    return 0;
  }
  attach_gram_files(plan, st);
  // The solve of the largest layer: two [in, in] and up to five [out, in] matrices of the
  // compute type (double for F64 data).
  std::uint64_t scratch = 0;
  for (const auto& t : plan.tensors) {
    if (t.aux.empty()) continue;
    const std::uint64_t in = t.shape[1], out = t.shape[0];
    const std::uint64_t es = t.out_type == dtype::f64 || t.sources[0]->type() == dtype::f64 ? 8 : 4;
    scratch = std::max(scratch, es * (2 * in * in + 5 * out * in));
  }
  return scratch;
}

// ---- the model-wide zero vote of dare_ties and breadcrumbs_ties -------------------------------

// Under preset paper, dare_ties and breadcrumbs_ties break a zero vote by the sign most
// elements of the whole model voted for. A planning pass (in the engine's constructor) adds up
// each merged tensor's vote balance (the library's dare_vote_balance / breadcrumbs_vote_balance:
// its masks, then sum of sign(vote); an integer sum, so the tensors' order does not change
// it), releasing each tensor's maps after it; every tensor is then merged with zero_vote
// positive or negative, which is what the library's model-level call computes. Unlike ties'
// whole-model top-k, the masks are per tensor, so gradients and filters are allowed. Memory:
// one tensor's masks at a time (and a copy of an input not aligned in its file).
inline bool needs_model_vote(const recipe& r) {
  if (r.method == merge_method_id::dare_ties) return dare_options::preset(r.preset).zero == zero_vote::model_majority;
  if (r.method == merge_method_id::breadcrumbs_ties)
    return breadcrumbs_options::preset(r.preset).zero == zero_vote::model_majority;
  return false;
}

template <class Release>
void plan_model_vote(const recipe& r, const merge_plan& plan, method_state& st, const execution& ex,
                     const Release& release) {
  if (!needs_model_vote(r)) return;
  std::int64_t balance = 0;
  for (const auto& t : plan.tensors) {
    if (t.action != tensor_action::merge) continue;
    std::vector<std::vector<double>> copies(t.sources.size());
    alloy::detail::sparse_job job;
    job.name = t.name;
    job.base = whole_view(*t.sources[0], copies[0]);
    for (std::size_t i = 1; i < t.sources.size(); ++i) job.models.push_back(whole_view(*t.sources[i], copies[i]));
    job.out = {nullptr, t.elements, t.out_type};  // its size and type only: nothing is written
    const auto weights = model_weights(t.parameters, 1.0);
    try {
      if (r.method == merge_method_id::dare_ties) {
        balance += alloy::detail::dare_vote_balance(std::span(&job, 1), weights, dare_options_of(r, t, ex));
      } else {
        const breadcrumbs_options o = breadcrumbs_options_of(r, t, ex);
        const std::size_t rows[] = {alloy::detail::tensor_row_length("breadcrumbs_ties", o, t.elements)};
        balance += alloy::detail::breadcrumbs_vote_balance(std::span(&job, 1), rows, weights, o);
      }
    } catch (const error& e) {
      throw recipe_error(recipe_where(r) + "tensor '" + t.name + "': " + e.what());
    }
    release(t);
  }
  st.model_zero = balance > 0 ? zero_vote::positive : zero_vote::negative;
}

// ---- one tensor -------------------------------------------------------------------------------

// Merges `in` (the plan's sources of t over one range: the whole tensor, or a chunk for
// element-wise methods) into `out` with every thread of `ex` working inside it.
inline void merge_tensor(const recipe& r, const merge_plan& plan, const method_state& st, const planned_tensor& t,
                         const std::vector<tensor_view>& in, mutable_tensor_view out, const execution& ex) {
  const tensor_parameters& p = t.parameters;
  const std::size_t n = p.models.size();
  const std::vector<double> weights = model_weights(p, 1.0);
  const bool linear_normalize = p.normalize.value_or(r.info().normalize_default);
  auto common = [&](auto& o) { apply_common(r, t, o, ex); };
  const tensor_view base = in.empty() ? tensor_view{} : in[0];
  const std::span<const tensor_view> all(in);
  const std::span<const tensor_view> models = plan.has_base ? all.subspan(1, n) : all.first(n);
  switch (r.method) {
    case merge_method_id::linear:
      weighted_average(models, weights, out, weighted_average_options{linear_normalize, {}, ex});
      return;
    case merge_method_id::passthrough:
      weighted_average(models, std::vector<double>{p.models[0].scale.value_or(1.0)}, out,
                       weighted_average_options{false, {}, ex});
      return;
    case merge_method_id::task_arithmetic: {
      task_arithmetic_options o;
      common(o);
      task_arithmetic(base, models, weights, out, o);
      return;
    }
    case merge_method_id::ties: {
      const ties_options o = ties_options_of(r, t, ex);
      if (st.ties_plan.active)
        merge_whole_model_ties(st.ties_plan, static_cast<std::size_t>(&t - plan.tensors.data()), o, base, models,
                               weights, out);
      else
        ties(base, models, weights, out, o);
      return;
    }
    case merge_method_id::magnitude_prune:
      magnitude_prune(base, models, weights, out, magnitude_prune_options_of(r, t, ex));
      return;
    case merge_method_id::dare_linear:
    case merge_method_id::dare_ties: {
      dare_options o = dare_options_of(r, t, ex);
      if (st.model_zero) o.zero = *st.model_zero;
      if (r.method == merge_method_id::dare_ties)
        dare_ties(base, models, weights, out, o);
      else
        dare_linear(base, models, weights, out, o);
      return;
    }
    case merge_method_id::breadcrumbs:
    case merge_method_id::breadcrumbs_ties: {
      breadcrumbs_options o = breadcrumbs_options_of(r, t, ex);
      if (st.model_zero) o.zero = *st.model_zero;
      if (r.method == merge_method_id::breadcrumbs_ties)
        breadcrumbs_ties(base, models, weights, out, o);
      else
        breadcrumbs(base, models, weights, out, o);
      return;
    }
    case merge_method_id::della:
    case merge_method_id::della_linear: {
      const della_options o = della_options_of(r, t, ex);
      if (r.method == merge_method_id::della)
        della(base, models, weights, out, o);
      else
        della_linear(base, models, weights, out, o);
      return;
    }
    case merge_method_id::slerp: {
      slerp_options o;
      o.exec = ex;
      slerp(base, models[0], *p.slerp_t, out, o);
      return;
    }
    case merge_method_id::nuslerp:
      if (plan.has_base)
        nuslerp(base, models, weights, out, nuslerp_options_of(t, ex));
      else
        nuslerp(models, weights, out, nuslerp_options_of(t, ex));
      return;
    case merge_method_id::multislerp:
      if (plan.has_base)
        multislerp(base, models, weights, out, multislerp_options_of(t, ex));
      else
        multislerp(models, weights, out, multislerp_options_of(t, ex));
      return;
    case merge_method_id::karcher: karcher(models, out, karcher_options_of(t, ex)); return;
    case merge_method_id::model_stock: model_stock(base, models, out, model_stock_options_of(r, t, ex)); return;
    case merge_method_id::fisher: {
      fisher_options o = st.fisher;
      o.coefficients = fisher_coefficients_of(st, t);
      o.normalize = false;      // the coefficients hold the norms already
      o.check_fisher = false;   // the planning pass checked every value
      o.exec = ex;
      fisher_merge(models, all.subspan(n, n), out, o);
      return;
    }
    case merge_method_id::regmean: {
      const double alpha = p.reduce_non_diagonal_ratio.value_or(0.9);
      std::vector<std::vector<double>> copies(t.aux.size());
      std::vector<tensor_view> grams;
      for (std::size_t i = 0; i < t.aux.size(); ++i) grams.push_back(whole_view(*t.aux[i], copies[i]));
      regmean_solver()(models, grams, out, alpha, weights, ex);
      for (const auto* g : t.aux) release_whole(*g);
      return;
    }
  }
  throw recipe_error(recipe_where(r) + "merge method " + r.method_name + " is not supported");
}

// ---- masks, then chunks -----------------------------------------------------------------------

// ties, magnitude_prune, dare_* and breadcrumbs* (per tensor: presets mergekit and peft) need
// a whole tensor only for their masks (each model's top-k cuts, or the random keep) and their
// factors (norm matching). Once a tensor's masks are set, by the library's *_prepare with
// every thread or by preset paper's whole-model plan, the rest is element-wise: the engine
// then merges the tensor in chunks, each into a chunk buffer written at its offset, instead
// of into a buffer of the whole tensor. The bits are those of the library's call on the whole
// tensor (alloy::detail::slice_job).
struct masked_tensor {
  alloy::detail::sparse_job job;                                // the whole tensor: views, masks set
  std::function<void(const alloy::detail::sparse_job&)> merge;  // one slice, on the calling thread
  std::vector<std::vector<std::uint64_t>> keep_bits;            // della's keep decisions, read by job.masks
  std::size_t unit = 1;                                         // the rows a slice must not split
};

// Whether della keeps tensor t's keep decisions as bits (n / 8 bytes per model): its rescale
// matches a norm (methods/della.hpp), as the preset sets it and `rescale` allows.
inline bool della_keep_bits(const recipe& r, const planned_tensor& t) {
  if (r.method != merge_method_id::della && r.method != merge_method_id::della_linear) return false;
  if (t.parameters.rescale && !*t.parameters.rescale) return false;
  const della_rescale k = della_options::preset(r.preset).rescale;
  return k == della_rescale::l1 || k == della_rescale::l2 || k == della_rescale::linf;
}

// Whether the recipe's method can take the masked path: its merge, once the masks are set,
// is element-wise, or row-wise (della's ranks without keep bits, breadcrumbs' per-row masks
// under preset paper), so that chunks of whole rows (alloy::detail::slice_job) merge as the
// whole tensor does.
inline bool merges_masked(const recipe& r, const merge_plan& plan) {
  switch (r.method) {
    case merge_method_id::ties:
    case merge_method_id::magnitude_prune:
    case merge_method_id::dare_linear:
    case merge_method_id::dare_ties:
    case merge_method_id::breadcrumbs:
    case merge_method_id::breadcrumbs_ties:
    case merge_method_id::della:
    case merge_method_id::della_linear: return plan.has_base;
    case merge_method_id::slerp: return true;  // the angle over the whole tensor, then a v0 + b v1
    default: return false;
  }
}

// The rows (elements) a chunk of tensor t on the masked path must not split, 1 for none:
// della's ranked rows where it has no keep bits (preset paper's 1 / p, rescale: false), and
// breadcrumbs' rows of the last dimension under preset paper.
inline std::size_t masked_unit(const recipe& r, const planned_tensor& t) {
  std::size_t unit = 1;
  if ((r.method == merge_method_id::della || r.method == merge_method_id::della_linear) && !della_keep_bits(r, t)) {
    const auto rows = alloy::detail::della_rows_of(t.shape, t.elements);
    unit = rows.length * rows.stride;
  } else if ((r.method == merge_method_id::breadcrumbs || r.method == merge_method_id::breadcrumbs_ties) &&
             breadcrumbs_options::preset(r.preset).scope == breadcrumbs_scope::per_row) {
    unit = t.shape.empty() ? t.elements : t.shape.back();
  }
  return std::max<std::size_t>(1, unit);
}

// The chunk length of tensor t on the masked path: parallel_chunk elements, rounded down to
// whole rows (masked_unit; at least one row).
inline std::size_t masked_chunk(const recipe& r, const planned_tensor& t) {
  const std::size_t unit = masked_unit(r, t);
  return unit * std::max<std::size_t>(1, parallel_chunk / unit);
}

// Tensor t's masks, from `in` (the base, then the merged models, each the whole tensor).
inline masked_tensor prepare_masked(const recipe& r, const merge_plan& plan, const method_state& st,
                                    const planned_tensor& t, const std::vector<tensor_view>& in, const execution& ex) {
  using namespace alloy::detail;
  const std::size_t n = t.parameters.models.size();
  const std::vector<double> weights = model_weights(t.parameters, 1.0);
  masked_tensor m;
  sparse_job& job = m.job;
  job.name = t.name;
  job.base = in.at(0);
  job.models.assign(in.begin() + 1, in.begin() + 1 + static_cast<std::ptrdiff_t>(n));
  job.out = {nullptr, t.elements, t.out_type};
  const std::span<sparse_job> one_job(&job, 1);
  const execution here{1};
  switch (r.method) {
    case merge_method_id::ties: {
      ties_options o = ties_options_of(r, t, ex);
      bool majority = false;
      if (st.ties_plan.active) {
        job.masks = st.ties_plan.masks.at(static_cast<std::size_t>(&t - plan.tensors.data()));
        majority = st.ties_plan.majority_positive;
      } else {
        majority = ties_prepare(one_job, weights, o);
      }
      o.exec = here;
      m.merge = [weights, o, majority](const sparse_job& s) { ties_merge(std::span(&s, 1), weights, o, majority); };
      break;
    }
    case merge_method_id::magnitude_prune: {
      magnitude_prune_options o = magnitude_prune_options_of(r, t, ex);
      magnitude_prune_prepare(one_job, weights, o);
      o.exec = here;
      m.merge = [weights, o](const sparse_job& s) { sum_or_vote_merge(std::span(&s, 1), weights, o, false, false); };
      break;
    }
    case merge_method_id::breadcrumbs:
    case merge_method_id::breadcrumbs_ties: {
      breadcrumbs_options o = breadcrumbs_options_of(r, t, ex);
      if (st.model_zero) o.zero = *st.model_zero;  // a model-wide vote is resolved: no per-slice one
      const bool ties_vote = r.method == merge_method_id::breadcrumbs_ties;
      const char* method = ties_vote ? "breadcrumbs_ties" : "breadcrumbs";
      const auto p = check_breadcrumbs(method, n, weights, o);
      if (o.scope == breadcrumbs_scope::per_row) {  // a row's masks, norms and merge are its own
        m.unit = tensor_row_length(method, o, t.elements);
        o.exec = here;
        m.merge = [weights, o, ties_vote, method, row = m.unit](const sparse_job& s) {
          sparse_job rows = s;
          breadcrumbs_jobs(method, std::span(&rows, 1), std::span(&row, 1), weights, o, ties_vote);
        };
        break;
      }
      prepare_breadcrumbs(one_job, {}, p, o);
      const ties_options vote = vote_options_of(o);
      const bool majority = ties_vote && vote.zero == zero_vote::model_majority &&
                            vote_balance(one_job, linear_weights(weights), vote) > 0;
      o.exec = here;
      m.merge = [weights, o, ties_vote, majority](const sparse_job& s) {
        sum_or_vote_merge(std::span(&s, 1), weights, o, ties_vote, majority);
      };
      break;
    }
    case merge_method_id::della:
    case merge_method_id::della_linear: {  // keep bits, or rows ranked in each chunk (masked_chunk)
      della_options o = della_options_of(r, t, ex);
      const bool ties_vote = r.method == merge_method_id::della;
      const char* method = ties_vote ? "della" : "della_linear";
      const std::vector<std::vector<std::size_t>> shapes{della_tensor_shape(method, {t.elements}, o.shape, t.elements)};
      const bool majority = della_prepare(method, one_job, shapes, weights, o, ties_vote, m.keep_bits);
      m.unit = slice_unit(job);
      o.exec = here;
      m.merge = [weights, o, ties_vote, majority](const sparse_job& s) {
        sum_or_vote_merge(std::span(&s, 1), weights, o, ties_vote, majority);
      };
      break;
    }
    case merge_method_id::slerp: {  // job.base is v0, job.models[0] v1; no masks
      const double slerp_t = *t.parameters.slerp_t;
      check_slerp_t("slerp", t.name, slerp_t);
      const geometric_job whole{t.name, {job.base, job.models.at(0)}, job.out, {}};
      const coefficient_table ab = slerp_tables(std::span(&whole, 1), std::span(&slerp_t, 1), ex).at(0);
      m.merge = [ab](const sparse_job& s) {
        const geometric_job part{s.name, {s.base, s.models[0]}, s.out, {}};
        run_combination<kernels::combine_mode::sum>(std::span(&part, 1), std::span(&ab, 1), whole_layouts(std::span(&part, 1)),
                                                    2, execution{1});
      };
      break;
    }
    default: {  // dare_linear, dare_ties
      dare_options o = dare_options_of(r, t, ex);
      if (st.model_zero) o.zero = *st.model_zero;
      const bool ties_vote = r.method == merge_method_id::dare_ties;
      dare_prepare(ties_vote ? "dare_ties" : "dare_linear", one_job, weights, o);
      const ties_options vote = vote_options_of(o);
      const bool majority = ties_vote && vote.zero == zero_vote::model_majority &&
                            majority_vote_positive(one_job, linear_weights(weights), vote);
      o.exec = here;
      m.merge = [weights, o, ties_vote, majority](const sparse_job& s) {
        sum_or_vote_merge(std::span(&s, 1), weights, o, ties_vote, majority);
      };
      break;
    }
  }
  return m;
}

// Elements [first, first + count) of a prepared tensor into `out`, on the calling thread.
inline void merge_masked(const masked_tensor& m, std::size_t first, std::size_t count, mutable_tensor_view out) {
  m.merge(alloy::detail::slice_job(m.job, first, count, out));
}

}  // namespace detail

}  // namespace alloy::io
