// The YAML form of a permutation spec (needs yaml-cpp: link alloy::io).
//
//   tensors:
//     layers.0.weight: [P0, null]   # [out, in]: rows permuted by P0
//     layers.0.bias:   [P0]
//     layers.2.weight: [P1, P0]
//     layers.2.bias:   [P1]
//     layers.4.weight: [null, P1]
//     layers.4.bias:   [null]
//
// One key, `tensors`: a map from tensor name to a sequence with one entry per axis of the
// tensor, a group name or null (`null`, `~` or an empty entry). Group names are any YAML
// scalar other than null (quote a group literally called "null"). Tensors of the model that
// are not listed are not permuted.
//
//   auto spec = alloy::align::parse_permutation_spec_yaml(text);
//   auto spec = alloy::align::load_permutation_spec("spec.yaml");
//   std::string text = alloy::align::to_yaml(spec);   // parses back to the same spec
//
// Errors: errc::malformed_file for YAML syntax errors, a missing or non-map `tensors`, an
// unknown top-level key, an entry that is not a sequence of scalars, a tensor listed twice,
// an empty group name (each message gives the source name, line and column); errc::io_error
// when the file cannot be read.
#pragma once

#include <alloy/align/permutation_spec.hpp>
#include <alloy/error.hpp>

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace alloy::align {

namespace detail {
inline std::string yaml_where(std::string_view source, const YAML::Mark& m) {
  if (m.is_null()) return std::string(source);
  return std::string(source) + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}
[[noreturn]] inline void yaml_fail(std::string_view source, const YAML::Mark& m, const std::string& what) {
  throw error(errc::malformed_file, "permutation spec " + yaml_where(source, m) + ": " + what);
}
}  // namespace detail

// Parses the YAML form; `source` names the text in messages (a file name).
inline permutation_spec parse_permutation_spec_yaml(std::string_view text, std::string_view source = "<yaml>") {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    detail::yaml_fail(source, e.mark, e.msg);
  }
  if (!root.IsMap()) detail::yaml_fail(source, root.Mark(), "expected a map with the key 'tensors'");
  YAML::Node tensors;
  for (const auto& kv : root) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
    if (key != "tensors")
      detail::yaml_fail(source, kv.first.Mark(), "unknown key '" + key + "' (the only key is 'tensors')");
    tensors = kv.second;
  }
  if (!tensors) detail::yaml_fail(source, root.Mark(), "no 'tensors' key");
  if (!tensors.IsMap())
    detail::yaml_fail(source, tensors.Mark(), "'tensors' must be a map from tensor name to a list of groups");
  permutation_spec spec;
  for (const auto& kv : tensors) {
    if (!kv.first.IsScalar()) detail::yaml_fail(source, kv.first.Mark(), "a tensor name must be a string");
    const std::string name = kv.first.Scalar();
    if (!kv.second.IsSequence())
      detail::yaml_fail(source, kv.second.Mark(),
                        "tensor '" + name + "': expected a list with one group (or null) per axis, like [P0, null]");
    axis_groups axes;
    for (std::size_t a = 0; a < kv.second.size(); ++a) {
      const YAML::Node g = kv.second[a];
      if (g.IsNull())
        axes.emplace_back(std::nullopt);
      else if (g.IsScalar())
        axes.emplace_back(g.Scalar());
      else
        detail::yaml_fail(source, g.Mark(),
                          "tensor '" + name + "' axis " + std::to_string(a) + ": a group must be a name or null");
    }
    try {
      spec.add(name, std::move(axes));
    } catch (const error& e) {
      detail::yaml_fail(source, kv.first.Mark(), e.what());
    }
  }
  return spec;
}

// Reads and parses a YAML spec file.
inline permutation_spec load_permutation_spec(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(errc::io_error, "cannot read permutation spec '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw error(errc::io_error, "cannot read permutation spec '" + path.string() + "'");
  return parse_permutation_spec_yaml(s.str(), path.string());
}

// The YAML form of a spec, tensors in listing order.
inline std::string to_yaml(const permutation_spec& spec) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "tensors" << YAML::Value << YAML::BeginMap;
  for (const auto& t : spec.tensors()) {
    out << YAML::Key << t << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& g : spec.axes(t)) {
      if (g)
        out << YAML::DoubleQuoted << *g;
      else
        out << YAML::Null;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace alloy::align
