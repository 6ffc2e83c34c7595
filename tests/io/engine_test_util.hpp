// Helpers of the merge-engine tests: small Llama-like models written with
// io::write_checkpoint, a scratch folder holding them, and a check that a merged checkpoint
// holds what the library writes for each tensor.
#pragma once

#include "io_test_util.hpp"

#include <alloy/io/merge_engine.hpp>

#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace engine_test {


using alloy::dtype;
using alloy::errc;
using alloy::tensor_set;
using alloy::tensor_view;
using alloy::io::merge_engine;
using alloy::io::merge_options;
using alloy::io::merge_to_folder;
using alloy::io::parse_recipe;
using alloy::io::recipe;
using io_test::error_of;
using io_test::scratch_dir;
namespace fs = std::filesystem;

// Deterministic values in [-1, 1) for model m.
inline float value(std::size_t i, int m) {
  const std::uint32_t x = static_cast<std::uint32_t>(i * 2654435761u + static_cast<std::uint32_t>(m) * 40503u + 12345u);
  return static_cast<float>((x >> 8) % 2001) / 1000.0f - 1.0f;
}

struct spec {
  std::string name;
  dtype type;
  std::vector<std::size_t> shape;
};

// A small Llama-like model: embeddings, two layers, final norm, an integer step counter.
inline std::vector<spec> llama_like() {
  return {{"model.embed_tokens.weight", dtype::f32, {16, 8}},
          {"model.layers.0.mlp.up_proj.weight", dtype::bf16, {8, 24}},
          {"model.layers.0.input_layernorm.weight", dtype::f32, {8}},
          {"model.layers.1.mlp.up_proj.weight", dtype::bf16, {8, 24}},
          {"model.layers.1.input_layernorm.weight", dtype::f32, {8}},
          {"model.norm.weight", dtype::f16, {8}},
          {"lm_head.weight", dtype::f32, {16, 8}},
          {"step", dtype::i64, {1}}};
}

// Floating tensors only, of three dtypes (for comparisons with the library's model-level
// functions, which merge every tensor).
inline std::vector<spec> float_model() {
  return {{"model.embed_tokens.weight", dtype::f32, {16, 8}},
          {"model.layers.0.mlp.up_proj.weight", dtype::bf16, {8, 24}},
          {"model.layers.0.input_layernorm.weight", dtype::f32, {8}},
          {"model.layers.1.mlp.up_proj.weight", dtype::bf16, {8, 24}},
          {"model.norm.weight", dtype::f16, {8}},
          {"lm_head.weight", dtype::f32, {16, 8}}};
}

inline tensor_set make_model(const std::vector<spec>& specs, int m) {
  tensor_set s;
  for (const auto& t : specs) {
    auto v = s.add(t.name, t.type, t.shape);
    alloy::visit_floating(t.type, [&](auto tag) {
      using T = decltype(tag);
      if (!alloy::is_floating(t.type)) return;
      auto* p = static_cast<T*>(v.data);
      for (std::size_t i = 0; i < v.size; ++i) p[i] = T(value(i, m));
    });
    if (t.type == dtype::i64)
      for (std::size_t i = 0; i < v.size; ++i) static_cast<std::int64_t*>(v.data)[i] = 1000 + m;
    if (t.type == dtype::i32)
      for (std::size_t i = 0; i < v.size; ++i) static_cast<std::int32_t*>(v.data)[i] = 1000 + m;
  }
  return s;
}

// Writes models 0..n-1 as folders "m0", "m1", ... (m0 with config.json and tokenizer.json).
struct fixture {
  scratch_dir dir;
  std::vector<tensor_set> models;

  explicit fixture(int n, const std::vector<spec>& specs = llama_like()) {
    for (int m = 0; m < n; ++m) {
      models.push_back(make_model(specs, m));
      fs::create_directories(dir / ("m" + std::to_string(m)));
      alloy::io::write_checkpoint(dir / ("m" + std::to_string(m)), models.back());
    }
    io_test::write_file(dir / "m0" / "config.json", R"({"model_type": "llama", "torch_dtype": "float32"})");
    io_test::write_file(dir / "m0" / "tokenizer.json", R"({"version": "1.0"})");
  }
  recipe parse(const std::string& text) const { return parse_recipe(text, dir.path()); }
  fs::path out() const { return dir / "out"; }
  // Nothing but the inputs in the folder: no output, no temporary.
  bool untouched() const {
    for (const auto& e : fs::directory_iterator(dir.path()))
      if (!e.path().filename().string().starts_with("m")) return false;
    return true;
  }
};

inline std::string bytes_of(const void* p, std::size_t n) { return {static_cast<const char*>(p), n}; }

// The merged checkpoint in `folder` holds, for every floating tensor, what `expected` writes
// into a buffer of the output dtype, and the base's (or first model's) bytes for the others.
inline void check_merged(const fs::path& folder, const tensor_set& reference, std::optional<dtype> out_dtype,
                  const std::function<void(const std::string&, alloy::mutable_tensor_view)>& expected) {
  const auto c = alloy::io::open_checkpoint(folder);
  REQUIRE(c.size() == reference.size());
  std::size_t i = 0;
  for (const auto& e : reference) {
    INFO("tensor " << e.name());
    const auto& got = c.at(e.name());
    CHECK(c.tensors()[i++].name() == e.name());  // the reference's order
    CHECK(got.shape() == e.shape());
    if (!alloy::is_floating(e.type())) {
      CHECK(got.type() == e.type());
      CHECK(bytes_of(got.data().data(), got.bytes()) == bytes_of(e.view().data, e.bytes()));
      continue;
    }
    const dtype t = out_dtype.value_or(e.type());
    CHECK(got.type() == t);
    tensor_set want;
    auto v = want.add("x", t, e.shape());
    expected(e.name(), v);
    CHECK(bytes_of(got.data().data(), got.bytes()) == bytes_of(v.data, v.bytes()));
  }
}

// The merged checkpoint in `folder` holds want's bytes for every floating tensor (want: the
// library's model-level result, in the output dtypes) and the reference's for the others.
inline void check_merged_equals(const fs::path& folder, const tensor_set& reference, const tensor_set& want) {
  check_merged(folder, reference, {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
    const auto w = want.at(name).view();
    REQUIRE(w.type == v.type);
    std::memcpy(v.data, w.data, v.bytes());
  });
}

// The merged checkpoint's bytes of every tensor, in its order.
inline std::vector<std::string> merged_bytes(const fs::path& folder) {
  const auto c = alloy::io::open_checkpoint(folder);
  std::vector<std::string> out;
  for (const auto& t : c.tensors()) out.push_back(bytes_of(t.data().data(), t.bytes()));
  return out;
}

inline std::vector<tensor_view> views(const std::vector<tensor_set>& models, const std::string& name, std::size_t from) {
  std::vector<tensor_view> v;
  for (std::size_t m = from; m < models.size(); ++m) v.push_back(models[m].at(name).view());
  return v;
}


}  // namespace engine_test
