// Merge recipes: mergekit's YAML format, read into alloy::io::recipe, and the concrete
// parameters of one tensor (resolve). Parameter values, gradients and filters are described
// in recipe_parameters.hpp.
//
//   merge_method: ties            # see merge_methods below
//   base_model: ../base           # a .safetensors file, an index file or a folder
//   models:
//     - model: ./math             # relative paths: relative to the recipe's folder
//       parameters: {weight: 1.0, density: 0.5}
//       alloy: {fisher: ./math.fisher.safetensors}   # fisher; regmean: {gram: path}
//   parameters: {normalize: true, lambda: 1.0}
//   dtype: float32                # accepted; alloy always computes in float (double for F64)
//   out_dtype: bfloat16           # output storage; default: each tensor's dtype in the base
//   alloy: {preset: mergekit, output: merged, seed: 0}
//   tokenizer: ...                # accepted with a warning: alloy copies the base's tokenizer
//   chat_template: ...            # accepted with a warning
//
// Strictness: every key is checked. An unknown key, at any level, is a recipe_error naming
// the key and its path ("models[1].parameters.densty (line 7)"), as is a duplicate key, a
// value of the wrong type, a number outside its parameter's range, a per-model parameter
// that applies to the whole merge, `slices:`/`modules:` recipes (not supported yet), and a
// method's missing requirement (a base model, a model to merge, a weight). A parameter the
// method does not read is accepted with a warning in recipe::warnings.
//
// Models and the base. For methods with a base model of their own (every task-vector method,
// slerp, model_stock; nuslerp and multislerp when a base_model is given) a `models` entry
// naming the base (as mergekit's examples do) is not merged as a model: recipe::merged lists
// the entries that are, in order (separate_base() tells which case a recipe is). `linear`,
// `passthrough`, `fisher` and `regmean` merge every entry; a base_model given to them that is
// not among the models only names the folder config.json and tokenizer files are copied from
// (a warning says so). `karcher` averages the base_model with the models, as mergekit does:
// when it is not listed, an entry "base_model" is appended to recipe::models and merged.
//
// A model entry's own `alloy:` block names alloy's per-model files, resolved like `model`:
// `fisher` (the diagonal Fisher of that model, merge method fisher) and `gram` (the Gram
// matrices of its linear layers' inputs, merge method regmean); each a .safetensors file, an
// index file or a folder. io/engine_methods.hpp describes their contents.
#pragma once

#include <alloy/core/dtype.hpp>
#include <alloy/core/preset.hpp>
#include <alloy/error.hpp>
#include <alloy/io/recipe_parameters.hpp>
#include <alloy/methods/task_arithmetic.hpp>

#include <yaml-cpp/yaml.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace alloy::io {

enum class merge_method_id : unsigned char {
  linear,
  task_arithmetic,
  ties,
  dare_ties,
  dare_linear,
  breadcrumbs,
  breadcrumbs_ties,
  della,
  della_linear,
  magnitude_prune,
  passthrough,
  slerp,
  nuslerp,
  multislerp,
  karcher,
  model_stock,
  fisher,
  regmean
};

// What a method needs from a recipe, and mergekit's defaults for it.
struct merge_method_info {
  std::string_view name;
  merge_method_id id;
  enum class base_use : unsigned char { none, optional, required } base;
  std::string_view parameters;  // the parameters it reads, space-separated
  bool needs_weight = false;    // every merged model needs a weight (mergekit: required)
  bool normalize_default = false;
  bool rescale_default = false;
  bool task_vectors = false;  // merges theta_i - theta_base (the base is not an input model)
};

inline constexpr std::array<merge_method_info, 18> merge_methods{{
    {"linear", merge_method_id::linear, merge_method_info::base_use::optional, "weight normalize", true, true},
    {"task_arithmetic", merge_method_id::task_arithmetic, merge_method_info::base_use::required,
     "weight normalize lambda int8_mask rescale", true, false, false, true},
    {"ties", merge_method_id::ties, merge_method_info::base_use::required,
     "weight density normalize lambda int8_mask rescale consensus_method", true, true, false, true},
    {"dare_ties", merge_method_id::dare_ties, merge_method_info::base_use::required,
     "weight density normalize lambda int8_mask rescale consensus_method", true, false, true, true},
    {"dare_linear", merge_method_id::dare_linear, merge_method_info::base_use::required,
     "weight density normalize lambda int8_mask rescale", true, false, true, true},
    {"breadcrumbs", merge_method_id::breadcrumbs, merge_method_info::base_use::required,
     "weight density gamma normalize lambda int8_mask rescale", true, false, false, true},
    {"breadcrumbs_ties", merge_method_id::breadcrumbs_ties, merge_method_info::base_use::required,
     "weight density gamma normalize lambda int8_mask rescale consensus_method", true, false, false, true},
    {"della", merge_method_id::della, merge_method_info::base_use::required,
     "weight density epsilon normalize lambda int8_mask rescale consensus_method", true, true, true, true},
    {"della_linear", merge_method_id::della_linear, merge_method_info::base_use::required,
     "weight density epsilon normalize lambda int8_mask rescale", true, false, true, true},
    {"magnitude_prune", merge_method_id::magnitude_prune, merge_method_info::base_use::required,
     "weight density normalize lambda int8_mask rescale", true, false, false, true},
    {"passthrough", merge_method_id::passthrough, merge_method_info::base_use::optional, "scale"},
    {"slerp", merge_method_id::slerp, merge_method_info::base_use::required, "t"},
    {"nuslerp", merge_method_id::nuslerp, merge_method_info::base_use::optional,
     "weight nuslerp_flatten nuslerp_row_wise", true},
    {"multislerp", merge_method_id::multislerp, merge_method_info::base_use::optional, "weight normalize_weights eps",
     true},
    {"karcher", merge_method_id::karcher, merge_method_info::base_use::optional, "max_iter tol"},
    {"model_stock", merge_method_id::model_stock, merge_method_info::base_use::required, "filter_wise"},
    {"fisher", merge_method_id::fisher, merge_method_info::base_use::none, "weight normalize eps"},
    {"regmean", merge_method_id::regmean, merge_method_info::base_use::none, "weight reduce_non_diagonal_ratio"},
}};

inline const merge_method_info* find_merge_method(std::string_view name) noexcept {
  for (const auto& m : merge_methods)
    if (m.name == name) return &m;
  return nullptr;
}
inline const merge_method_info& method_info(merge_method_id id) noexcept {
  for (const auto& m : merge_methods)
    if (m.id == id) return m;
  return merge_methods[0];
}

inline bool method_reads(const merge_method_info& m, std::string_view parameter) noexcept {
  std::string_view list = m.parameters;
  while (!list.empty()) {
    const auto sp = list.find(' ');
    if (list.substr(0, sp) == parameter) return true;
    if (sp == std::string_view::npos) break;
    list.remove_prefix(sp + 1);
  }
  return false;
}

// The floating dtype a recipe names: torch's names (float32, bfloat16, ...), short forms
// (fp32, bf16, half, ...) and safetensors' (F32, BF16, ...), case-insensitively.
inline std::optional<dtype> parse_float_dtype_name(std::string_view s) {
  std::string l(s);
  for (auto& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "float32" || l == "fp32" || l == "f32" || l == "float") return dtype::f32;
  if (l == "bfloat16" || l == "bf16") return dtype::bf16;
  if (l == "float16" || l == "fp16" || l == "f16" || l == "half") return dtype::f16;
  if (l == "float64" || l == "fp64" || l == "f64" || l == "double") return dtype::f64;
  return std::nullopt;
}

inline std::string_view torch_dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "float32";
    case dtype::bf16: return "bfloat16";
    case dtype::f16: return "float16";
    case dtype::f64: return "float64";
    default: return dtype_name(t);
  }
}

struct recipe_model {
  std::string spelled;         // the path as the recipe writes it
  std::filesystem::path path;  // resolved against the recipe's folder
  parameter_map parameters;
  std::string where;  // "models[1]" for messages
  // The entry's `alloy:` block: the Fisher file (fisher) and the Gram file (regmean), as
  // written and resolved against the recipe's folder.
  std::string fisher_spelled, gram_spelled;
  std::optional<std::filesystem::path> fisher, gram;
};

struct recipe {
  std::filesystem::path file;    // the recipe file (empty when parsed from text)
  std::filesystem::path folder;  // relative paths resolve against it
  std::string text;              // the YAML text as read

  std::string method_name;
  merge_method_id method = merge_method_id::linear;
  std::optional<std::filesystem::path> base_model;
  std::string base_spelled;
  std::vector<recipe_model> models;          // as listed
  std::vector<std::size_t> merged;           // indices into models of the inputs merged (see the top)
  std::optional<std::size_t> base_entry;     // the models entry naming the base, if any
  parameter_map parameters;                  // global
  std::optional<std::string> compute_dtype;  // `dtype:` as written
  std::optional<dtype> out_dtype;
  alloy::preset preset = alloy::preset::mergekit;
  merge_output output = merge_output::merged;
  std::uint64_t seed = 0;
  std::vector<std::string> warnings;

  const merge_method_info& info() const noexcept { return method_info(method); }
  // "recipe 'path/to/recipe.yaml'", for messages.
  std::string label() const { return "recipe '" + (file.empty() ? std::string("<text>") : file.string()) + "'"; }
  // "models[1] ('./math')": how messages name merged input i.
  std::string model_label(std::size_t merged_index) const {
    const auto& m = models.at(merged.at(merged_index));
    return m.where + " ('" + m.spelled + "')";
  }
};

// Whether the base model is an input of its own rather than one of the merged models: for the
// methods that require one (task-vector methods, slerp, model_stock), and for nuslerp and
// multislerp when the recipe gives a base_model (they then merge task vectors from it).
inline bool separate_base(const recipe& r) noexcept {
  if (r.info().base == merge_method_info::base_use::required) return true;
  return r.base_model && (r.method == merge_method_id::nuslerp || r.method == merge_method_id::multislerp);
}

namespace detail {

inline bool same_path(const std::filesystem::path& a, const std::filesystem::path& b) {
  if (a.lexically_normal() == b.lexically_normal()) return true;
  std::error_code ec;
  const bool eq = std::filesystem::equivalent(a, b, ec);
  return !ec && eq;
}

class recipe_parser {
 public:
  recipe_parser(recipe& r) : r_(r) {}

  void parse(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      std::string msg = e.msg;
      throw recipe_error(r_.label() + ": not valid YAML: " + msg + line_of(e.mark));
    }
    if (!root.IsMap()) fail(root, "the top level is not a map of keys (merge_method, models, ...)");
    std::set<std::string> seen;
    std::optional<YAML::Node> models_node, method_node;
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string key = key_of(it->first, "", seen);
      const YAML::Node v = it->second;
      if (key == "merge_method") {
        method_node = v;
      } else if (key == "base_model") {
        r_.base_spelled = path_string(v, "base_model");
        r_.base_model = resolve_path(r_.base_spelled);
      } else if (key == "models") {
        models_node = v;
      } else if (key == "parameters") {
        r_.parameters = parameters(v, "parameters", false);
      } else if (key == "dtype") {
        const std::string s = string_value(v, "dtype");
        const auto t = parse_float_dtype_name(s);
        if (!t) fail(v, "dtype '" + s + "' is not a floating type (float32, float16, bfloat16, float64)");
        r_.compute_dtype = s;
        if (*t != dtype::f32 && *t != dtype::f64)
          r_.warnings.push_back("dtype: " + s + " is accepted, but alloy always computes in float32 (float64 for F64 " +
                                "data); mergekit would compute in " + s);
      } else if (key == "out_dtype") {
        const std::string s = string_value(v, "out_dtype");
        const auto t = parse_float_dtype_name(s);
        if (!t) fail(v, "out_dtype '" + s + "' is not a floating type (float32, float16, bfloat16, float64)");
        r_.out_dtype = *t;
      } else if (key == "alloy") {
        alloy_keys(v);
      } else if (key == "tokenizer" || key == "tokenizer_source" || key == "chat_template") {
        r_.warnings.push_back("'" + key + "'" + line_of(v.Mark()) +
                              " is not handled: alloy copies the tokenizer files of the base model (or the first "
                              "model) unchanged");
      } else if (key == "slices" || key == "modules") {
        fail(v, "'" + key + "' recipes are not supported yet: alloy merges recipes with a 'models' list");
      } else {
        fail(it->first, "unknown key '" + key +
                            "' (alloy reads merge_method, base_model, models, parameters, dtype, "
                            "out_dtype, alloy, tokenizer, tokenizer_source, chat_template)");
      }
    }
    if (!method_node) fail(root, "no 'merge_method'");
    method(*method_node);
    if (!models_node) fail(root, "no 'models' list");
    models(*models_node);
    check_method();
  }

 private:
  [[noreturn]] void fail(const YAML::Node& n, const std::string& msg) const {
    throw recipe_error(r_.label() + ": " + msg + line_of(n.Mark()));
  }
  static std::string line_of(const YAML::Mark& m) {
    if (m.is_null() || m.line < 0) return {};
    return " (line " + std::to_string(m.line + 1) + ")";
  }

  // A map key as a string, refusing duplicates; `path` is the map's path ("" at the top).
  std::string key_of(const YAML::Node& k, const std::string& path, std::set<std::string>& seen) const {
    if (!k.IsScalar()) fail(k, "a key " + in(path) + "is not a plain name");
    const std::string key = k.Scalar();
    if (!seen.insert(key).second) fail(k, "key '" + join(path, key) + "' appears twice");
    return key;
  }
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string in(const std::string& path) { return path.empty() ? std::string() : "in " + path + " "; }

  std::string string_value(const YAML::Node& v, const std::string& path) const {
    if (!v.IsScalar() || v.Scalar().empty()) fail(v, path + " must be a non-empty string");
    return v.Scalar();
  }
  std::string path_string(const YAML::Node& v, const std::string& path) const {
    if (v.IsMap())
      fail(v, path +
                  " must be a path (alloy reads local files; mergekit's {model: ..., lora: ...} form is not "
                  "supported)");
    return string_value(v, path);
  }
  std::filesystem::path resolve_path(const std::string& spelled) const {
    std::filesystem::path p(spelled);
    if (p.is_relative()) p = r_.folder / p;
    return p.lexically_normal();
  }

  void method(const YAML::Node& v) {
    r_.method_name = string_value(v, "merge_method");
    const auto* m = find_merge_method(r_.method_name);
    if (!m) {
      std::string known;
      for (const auto& x : merge_methods) known += (known.empty() ? "" : ", ") + std::string(x.name);
      fail(v, "unknown merge_method '" + r_.method_name + "' (alloy knows " + known + ")");
    }
    r_.method = m->id;
  }

  void models(const YAML::Node& v) {
    if (!v.IsSequence()) fail(v, "models must be a list of {model: path, parameters: {...}}");
    for (std::size_t i = 0; i < v.size(); ++i) {
      const YAML::Node e = v[i];
      const std::string where = "models[" + std::to_string(i) + "]";
      if (!e.IsMap()) fail(e, where + " must be a map {model: path, parameters: {...}}");
      recipe_model m;
      m.where = where;
      std::set<std::string> seen;
      bool has_model = false;
      for (auto it = e.begin(); it != e.end(); ++it) {
        const std::string key = key_of(it->first, where, seen);
        if (key == "model") {
          m.spelled = path_string(it->second, where + ".model");
          m.path = resolve_path(m.spelled);
          has_model = true;
        } else if (key == "parameters") {
          m.parameters = parameters(it->second, where + ".parameters", true);
        } else if (key == "alloy") {
          model_alloy_keys(it->second, m);
        } else {
          fail(it->first, "unknown key '" + where + "." + key + "' (a model has 'model', 'parameters' and 'alloy')");
        }
      }
      if (!has_model) fail(e, where + " has no 'model'");
      r_.models.push_back(std::move(m));
    }
  }

  // A model entry's alloy block: {fisher: path, gram: path}.
  void model_alloy_keys(const YAML::Node& v, recipe_model& m) {
    const std::string path = m.where + ".alloy";
    if (v.IsNull()) return;
    if (!v.IsMap()) fail(v, path + " must be a map {fisher: path} or {gram: path}");
    std::set<std::string> seen;
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string key = key_of(it->first, path, seen);
      if (key == "fisher") {
        m.fisher_spelled = path_string(it->second, path + ".fisher");
        m.fisher = resolve_path(m.fisher_spelled);
      } else if (key == "gram") {
        m.gram_spelled = path_string(it->second, path + ".gram");
        m.gram = resolve_path(m.gram_spelled);
      } else {
        fail(it->first, "unknown key '" + path + "." + key + "' (a model's alloy keys are fisher, gram)");
      }
    }
  }

  void alloy_keys(const YAML::Node& v) {
    if (v.IsNull()) return;
    if (!v.IsMap()) fail(v, "alloy must be a map {preset, output, seed}");
    std::set<std::string> seen;
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string key = key_of(it->first, "alloy", seen);
      const YAML::Node x = it->second;
      if (key == "preset") {
        const std::string s = string_value(x, "alloy.preset");
        if (s == "mergekit")
          r_.preset = alloy::preset::mergekit;
        else if (s == "peft")
          r_.preset = alloy::preset::peft;
        else if (s == "paper")
          r_.preset = alloy::preset::paper;
        else
          fail(x, "alloy.preset '" + s + "' is not one of mergekit, peft, paper");
      } else if (key == "output") {
        const std::string s = string_value(x, "alloy.output");
        if (s == "merged")
          r_.output = merge_output::merged;
        else if (s == "delta")
          r_.output = merge_output::delta;
        else
          fail(x, "alloy.output '" + s + "' is not one of merged, delta");
      } else if (key == "seed") {
        const std::string s = x.IsScalar() ? x.Scalar() : std::string();
        std::uint64_t seed = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), seed);
        if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
          fail(x, "alloy.seed '" + s + "' is not an integer in [0, 2^64)");
        r_.seed = seed;
      } else {
        fail(it->first, "unknown key 'alloy." + key + "' (alloy's keys are preset, output, seed)");
      }
    }
  }

  // ---- parameters

  parameter_map parameters(const YAML::Node& v, const std::string& path, bool per_model) const {
    parameter_map out;
    if (v.IsNull()) return out;
    if (!v.IsMap()) fail(v, path + " must be a map of parameter names to values");
    std::set<std::string> seen;
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string key = key_of(it->first, path, seen);
      const auto* spec = find_parameter_spec(key);
      if (!spec)
        fail(it->first,
             "unknown parameter '" + path + "." + key + "' (alloy knows " + known_parameter_names(per_model) + ")");
      if (per_model && !spec->per_model)
        fail(it->first, "parameter '" + path + "." + key +
                            "' applies to the whole merge, not to one model: put it under the top-level 'parameters'");
      out.emplace(key, setting(it->second, *spec, path + "." + key));
    }
    return out;
  }

  static bool is_bool_literal(const std::string& s, bool& value) {
    static constexpr std::string_view yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static constexpr std::string_view no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (auto y : yes)
      if (s == y) return value = true, true;
    for (auto n : no)
      if (s == n) return value = false, true;
    return false;
  }
  static bool is_number_literal(std::string s, double& value) {
    if (s == ".inf" || s == ".Inf" || s == ".INF" || s == "+.inf" || s == "+.Inf" || s == "+.INF")
      return value = INFINITY, true;
    if (s == "-.inf" || s == "-.Inf" || s == "-.INF") return value = -INFINITY, true;
    if (s == ".nan" || s == ".NaN" || s == ".NAN") return value = NAN, true;
    if (!s.empty() && s[0] == '+') s.erase(0, 1);
    if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '.')) return false;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), value);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
  }

  parameter_value scalar(const YAML::Node& v, const parameter_spec& spec, const std::string& where) const {
    if (v.IsNull()) fail(v, where + " has no value");
    if (!v.IsScalar()) fail(v, where + " holds a nested list or map where a single value is expected");
    const std::string& s = v.Scalar();
    const bool plain = v.Tag() != "!";  // quoted scalars are strings
    bool b = false;
    double d = 0;
    switch (spec.kind) {
      case parameter_kind::number:
        if (!plain || !is_number_literal(s, d)) fail(v, where + " is '" + s + "', not a number");
        if (!detail::in_range(spec, d))
          fail(v, where + " is " + s + ", outside its range: " + std::string(spec.name) + " must be " +
                      std::string(spec.range_text));
        return parameter_value::of(d);
      case parameter_kind::boolean:
        if (!plain || !is_bool_literal(s, b)) fail(v, where + " is '" + s + "', not true or false");
        return parameter_value::of(b);
      case parameter_kind::choice:
        for (auto c : spec.choices)
          if (!c.empty() && s == c) return parameter_value::of(std::string(s));
        fail(v, where + " is '" + s + "', not one of " + std::string(spec.choices[0]) + ", " +
                    std::string(spec.choices[1]));
    }
    fail(v, where + ": unexpected value");
  }

  std::vector<parameter_value> gradient(const YAML::Node& v, const parameter_spec& spec,
                                        const std::string& where) const {
    if (v.size() == 0) fail(v, where + " is an empty list");
    std::vector<parameter_value> out;
    for (std::size_t i = 0; i < v.size(); ++i) out.push_back(scalar(v[i], spec, where + "[" + std::to_string(i) + "]"));
    return out;
  }

  parameter_setting setting(const YAML::Node& v, const parameter_spec& spec, const std::string& where) const {
    parameter_setting s;
    s.where = where + line_of(v.Mark());
    if (v.IsMap())
      fail(v, where + " is a single {filter, value} map: write a list of them, [{filter: ..., value: ...}, ...]");
    if (!v.IsSequence()) {
      s.type = parameter_setting::kind::scalar;
      s.values.push_back(scalar(v, spec, where));
      return s;
    }
    if (v.size() == 0) fail(v, where + " is an empty list");
    std::size_t maps = 0;
    for (std::size_t i = 0; i < v.size(); ++i) maps += v[i].IsMap() ? 1 : 0;
    if (maps == 0) {
      s.type = parameter_setting::kind::gradient;
      s.values = gradient(v, spec, where);
      return s;
    }
    if (maps != v.size()) fail(v, where + " mixes plain values and {filter, value} entries");
    s.type = parameter_setting::kind::conditional;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const YAML::Node c = v[i];
      const std::string cw = where + "[" + std::to_string(i) + "]";
      parameter_setting::condition cond;
      std::set<std::string> seen;
      bool has_value = false;
      for (auto it = c.begin(); it != c.end(); ++it) {
        const std::string key = key_of(it->first, cw, seen);
        if (key == "filter") {
          if (it->second.IsNull()) continue;  // filter: null matches everything, as mergekit's None
          cond.filter = string_value(it->second, cw + ".filter");
        } else if (key == "value") {
          has_value = true;
          if (it->second.IsSequence()) {
            cond.gradient = true;
            cond.values = gradient(it->second, spec, cw + ".value");
          } else {
            cond.values.push_back(scalar(it->second, spec, cw + ".value"));
          }
        } else {
          fail(it->first, "unknown key '" + cw + "." + key + "' (a conditional value has 'filter' and 'value')");
        }
      }
      if (!has_value) fail(c, cw + " has no 'value'");
      s.conditions.push_back(std::move(cond));
    }
    return s;
  }

  // ---- what the method needs

  void check_method() {
    const auto& m = r_.info();
    auto fail_plain = [&](const std::string& msg) { throw recipe_error(r_.label() + ": " + msg); };
    if (m.base == merge_method_info::base_use::required && !r_.base_model)
      fail_plain("merge method " + std::string(m.name) + " needs a base_model");
    if (m.base == merge_method_info::base_use::none && r_.base_model)
      r_.warnings.push_back("merge method " + std::string(m.name) +
                            " takes no base_model: it only names the folder config.json and tokenizer files come from");
    const bool base_apart = separate_base(r_);
    for (std::size_t i = 0; i < r_.models.size(); ++i) {
      const bool is_base = r_.base_model && same_path(r_.models[i].path, *r_.base_model);
      if (is_base && !r_.base_entry) r_.base_entry = i;
      if (is_base && base_apart) {
        if (!r_.models[i].parameters.empty() && m.task_vectors)
          r_.warnings.push_back(r_.models[i].where + " is the base model: its parameters are not used");
        continue;
      }
      r_.merged.push_back(i);
    }
    if (m.id == merge_method_id::karcher && r_.base_model && !r_.base_entry) {
      // mergekit adds an unlisted base model to the inputs of a method without a base of its own.
      recipe_model b;
      b.spelled = r_.base_spelled;
      b.path = *r_.base_model;
      b.where = "base_model";
      r_.base_entry = r_.models.size();
      r_.merged.push_back(r_.models.size());
      r_.models.push_back(std::move(b));
    }
    if ((m.id == merge_method_id::linear || m.id == merge_method_id::passthrough) && r_.base_model && !r_.base_entry)
      r_.warnings.push_back("base_model is not one of the models: merge method " + std::string(m.name) +
                            " does not merge it; it only names the folder config.json and tokenizer files come from");
    if (r_.merged.empty())
      fail_plain("merge method " + std::string(m.name) + " needs at least one model" +
                 (m.base == merge_method_info::base_use::required ? " besides the base_model" : ""));
    if (m.id == merge_method_id::passthrough && r_.merged.size() != 1)
      fail_plain("merge method passthrough takes exactly one model, got " + std::to_string(r_.merged.size()));
    if (m.id == merge_method_id::slerp && r_.merged.size() != 1)
      fail_plain("merge method slerp interpolates between the base_model and one other model, got " +
                 std::to_string(r_.merged.size()) + " other models");
    if (m.id == merge_method_id::slerp && !r_.parameters.count("t"))
      fail_plain("merge method slerp needs the parameter t (under the top-level 'parameters')");
    if (m.id == merge_method_id::nuslerp && r_.merged.size() != 2)
      fail_plain("merge method nuslerp interpolates between two models" +
                 std::string(r_.base_model ? " besides the base_model" : "") + ", got " +
                 std::to_string(r_.merged.size()));
    if (m.id == merge_method_id::model_stock && r_.merged.size() < 2)
      fail_plain("merge method model_stock needs at least two models besides the base_model, got " +
                 std::to_string(r_.merged.size()));
    for (std::size_t k : r_.merged) {
      const auto& x = r_.models[k];
      const std::string label = x.where + " ('" + x.spelled + "')";
      if (m.id == merge_method_id::fisher && !x.fisher)
        fail_plain(label + " has no alloy.fisher: merge method fisher needs the Fisher diagonal of every model (" +
                   x.where + ".alloy: {fisher: path})");
      if (m.id == merge_method_id::regmean && !x.gram)
        fail_plain(label + " has no alloy.gram: merge method regmean needs the Gram matrices of every model (" +
                   x.where + ".alloy: {gram: path})");
      if (x.fisher && m.id != merge_method_id::fisher)
        r_.warnings.push_back(x.where + ".alloy.fisher is not used by merge method " + std::string(m.name));
      if (x.gram && m.id != merge_method_id::regmean)
        r_.warnings.push_back(x.where + ".alloy.gram is not used by merge method " + std::string(m.name));
    }
    if (m.id == merge_method_id::fisher)
      for (const char* name : {"normalize", "eps"})
        if (const auto it = r_.parameters.find(name);
            it != r_.parameters.end() && it->second.type != parameter_setting::kind::scalar)
          fail_plain("parameter " + it->second.where +
                     ": under merge method fisher it applies to the whole model (the Fisher norms are taken over "
                     "every tensor): give one value, not a gradient or filters");
    if (r_.output == merge_output::delta && !m.task_vectors)
      fail_plain("alloy.output: delta needs a task-vector method (task_arithmetic, ties, ...), not " +
                 std::string(m.name));
    if (m.needs_weight && !r_.parameters.count("weight"))
      for (std::size_t k : r_.merged)
        if (!r_.models[k].parameters.count("weight"))
          fail_plain(r_.models[k].where + " ('" + r_.models[k].spelled +
                     "') has no weight, and the recipe has no global weight: merge method " + std::string(m.name) +
                     " needs one per model");
    auto unused = [&](const parameter_map& p) {
      for (const auto& [name, s] : p)
        if (!method_reads(m, name))
          r_.warnings.push_back("parameter " + s.where + " is not used by merge method " + std::string(m.name));
    };
    unused(r_.parameters);
    for (std::size_t k : r_.merged) unused(r_.models[k].parameters);
  }

  recipe& r_;
};

}  // namespace detail

// Reads a recipe from YAML text; relative paths resolve against `folder`; `file` only names
// the recipe in messages. Throws recipe_error.
inline recipe parse_recipe(const std::string& text, const std::filesystem::path& folder = ".",
                           const std::filesystem::path& file = {}) {
  recipe r;
  r.file = file;
  r.folder = folder;
  r.text = text;
  detail::recipe_parser(r).parse(text);
  return r;
}

// Reads a recipe file (recipe_error when it cannot be read).
inline recipe load_recipe(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec))
    throw recipe_error("recipe '" + file.string() + "' is a folder, not a YAML file", errc::io_error);
  std::ifstream in(file, std::ios::binary);
  if (!in) throw recipe_error("cannot read recipe '" + file.string() + "': " + std::strerror(errno), errc::io_error);
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw recipe_error("cannot read recipe '" + file.string() + "'", errc::io_error);
  std::filesystem::path folder = file.parent_path();
  if (folder.empty()) folder = ".";
  return parse_recipe(s.str(), folder, file);
}

// The recipe as YAML with every model path made absolute (what `alloy merge` stores as
// alloy_recipe.yaml next to the merged model). Comments are not kept.
inline std::string recipe_yaml_with_absolute_paths(const recipe& r) {
  YAML::Node root = YAML::Load(r.text);
  auto absolute = [](const std::filesystem::path& p) {
    std::error_code ec;
    auto a = std::filesystem::absolute(p, ec);
    return (ec ? p : a).lexically_normal().string();
  };
  if (r.base_model) root["base_model"] = absolute(*r.base_model);
  YAML::Node models = root["models"];
  for (std::size_t i = 0; i < r.models.size() && i < models.size(); ++i) {
    models[i]["model"] = absolute(r.models[i].path);
    if (r.models[i].fisher) models[i]["alloy"]["fisher"] = absolute(*r.models[i].fisher);
    if (r.models[i].gram) models[i]["alloy"]["gram"] = absolute(*r.models[i].gram);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

// ---------------------------------------------------------------------------------------
// Per-tensor parameters.

struct tensor_parameters {
  double t = 0;  // the tensor's gradient position (layer_position)
  struct model {
    std::optional<double> weight, density, gamma, epsilon, scale;
  };
  std::vector<model> models;  // one per recipe::merged entry
  std::optional<bool> normalize, rescale, int8_mask, filter_wise;
  std::optional<bool> nuslerp_flatten, nuslerp_row_wise, normalize_weights;
  std::optional<double> lambda, slerp_t, eps, max_iter, tol, reduce_non_diagonal_ratio;
  std::optional<std::string> consensus_method;
};

// The parameters of tensor `tensor_name` of a model with n_layers layers: per model, the
// model's own setting when it gives a value for this tensor, else the global one; globals
// from the top-level parameters. Unset values stay nullopt (the method's default applies).
inline tensor_parameters resolve(const recipe& r, std::string_view tensor_name, std::size_t n_layers) {
  tensor_parameters p;
  p.t = layer_position(tensor_name, n_layers);
  auto global = [&](std::string_view name) -> std::optional<parameter_value> {
    const auto it = r.parameters.find(name);
    if (it == r.parameters.end()) return std::nullopt;
    return evaluate_setting(it->second, tensor_name, p.t);
  };
  auto number = [](const std::optional<parameter_value>& v) -> std::optional<double> {
    if (!v) return std::nullopt;
    return v->as_number();
  };
  auto boolean = [](const std::optional<parameter_value>& v) -> std::optional<bool> {
    if (!v) return std::nullopt;
    return v->truthy();
  };
  p.models.reserve(r.merged.size());
  for (std::size_t k : r.merged) {
    const auto& own = r.models[k].parameters;
    auto value = [&](std::string_view name) -> std::optional<double> {
      if (const auto it = own.find(name); it != own.end())
        if (auto v = evaluate_setting(it->second, tensor_name, p.t)) return v->as_number();
      return number(global(name));
    };
    p.models.push_back({value("weight"), value("density"), value("gamma"), value("epsilon"), value("scale")});
  }
  p.normalize = boolean(global("normalize"));
  p.rescale = boolean(global("rescale"));
  p.int8_mask = boolean(global("int8_mask"));
  p.filter_wise = boolean(global("filter_wise"));
  p.nuslerp_flatten = boolean(global("nuslerp_flatten"));
  p.nuslerp_row_wise = boolean(global("nuslerp_row_wise"));
  p.normalize_weights = boolean(global("normalize_weights"));
  p.lambda = number(global("lambda"));
  p.slerp_t = number(global("t"));
  p.eps = number(global("eps"));
  p.max_iter = number(global("max_iter"));
  p.tol = number(global("tol"));
  p.reduce_non_diagonal_ratio = number(global("reduce_non_diagonal_ratio"));
  if (auto c = global("consensus_method")) p.consensus_method = c->text;
  return p;
}

// Checks what the per-value ranges cannot: a weight for every model where the method needs
// one (a t for slerp), breadcrumbs' gamma + density <= 1 and DELLA's density +- epsilon
// inside (0, 1). Throws recipe_error naming the recipe, the tensor, the model and the values.
inline void check_parameters(const recipe& r, const tensor_parameters& p, std::string_view tensor_name) {
  const auto& m = r.info();
  auto where = [&](std::size_t i) {
    return r.label() + ": tensor '" + std::string(tensor_name) + "', " + r.model_label(i) + ": ";
  };
  auto fmt = [](double v) { return detail::value_text(parameter_value::of(v)); };
  const std::string tensor = r.label() + ": tensor '" + std::string(tensor_name) + "': ";
  if (m.id == merge_method_id::slerp && !p.slerp_t)
    throw recipe_error(tensor + "no t applies to this tensor (no filter of parameters.t matches it)");
  if (m.id == merge_method_id::multislerp && p.eps && !(*p.eps > 0))
    throw recipe_error(tensor + "eps is " + fmt(*p.eps) + ": multislerp divides by norm + eps, so eps must be > 0");
  if (m.id == merge_method_id::karcher && p.max_iter && std::floor(*p.max_iter) != *p.max_iter)
    throw recipe_error(tensor + "max_iter is " + fmt(*p.max_iter) + ", not a whole number of iterations");
  if (m.id == merge_method_id::multislerp && p.normalize_weights.value_or(true)) {
    double sum = 0;
    for (const auto& x : p.models) sum += x.weight.value_or(0.0);
    if (std::abs(sum) < 1e-8)
      throw recipe_error(tensor + "the weights sum to " + fmt(sum) +
                         ", so multislerp cannot normalize them (set normalize_weights: false)");
  }
  if (m.id == merge_method_id::fisher || m.id == merge_method_id::regmean) {
    bool any = false;
    for (std::size_t i = 0; i < p.models.size(); ++i) {
      const double w = p.models[i].weight.value_or(1.0);
      if (w < 0)
        throw recipe_error(where(i) + "weight " + fmt(w) + " is negative: " + std::string(m.name) +
                           " takes coefficients >= 0");
      any = any || w > 0;
    }
    if (!any) throw recipe_error(tensor + "every model's weight is 0");
  }
  for (std::size_t i = 0; i < p.models.size(); ++i) {
    const auto& x = p.models[i];
    if (m.needs_weight && !x.weight)
      throw recipe_error(where(i) +
                         "no weight applies to this tensor (no filter matches it and there is no global weight)");
    const double density = x.density.value_or(1.0);
    if ((m.id == merge_method_id::breadcrumbs || m.id == merge_method_id::breadcrumbs_ties) && density < 1) {
      const double gamma = x.gamma.value_or(0.01);
      if (gamma + density > 1)
        throw recipe_error(where(i) + "gamma " + fmt(gamma) + " + density " + fmt(density) +
                           " exceed 1 (the dropped outliers and the kept band would overlap)");
    }
    if ((m.id == merge_method_id::della || m.id == merge_method_id::della_linear) && density < 1) {
      const double eps = x.epsilon.value_or(0.15);
      if (!(density - eps > 0 && density + eps < 1))
        throw recipe_error(where(i) + "density " + fmt(density) + " and epsilon " + fmt(eps) +
                           " give keep probabilities outside (0, 1): density - epsilon must be > 0 and density + "
                           "epsilon < 1");
    }
  }
}

}  // namespace alloy::io
