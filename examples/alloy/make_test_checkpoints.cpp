// make_test_checkpoints DIR: writes the small checkpoints tests/cli/run_cli_tests.sh merges.
//
//   DIR/base/      model.safetensors, config.json, tokenizer.json, tokenizer_config.json
//   DIR/a/, DIR/b/ fine-tunes of base (base + small deltas), model.safetensors each
//   DIR/b_sharded/ b again, written as three shards plus model.safetensors.index.json
//   DIR/bad_shape/ like a, but one tensor has another shape
//   DIR/mlp/       a.safetensors, b.safetensors (two unrelated 512-768-768-10 MLPs in F32) and
//                  spec.yaml, for `alloy align`: its products are large enough for a
//                  threaded BLAS to use its threads
//
// A Llama-like layout: embeddings, three layers (attention and MLP in BF16, norms in F32),
// final norm, lm_head, and an I64 step counter that merges copy unmerged.
#include <alloy/core/tensor_set.hpp>
#include <alloy/io/checkpoint.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;

float value(std::size_t i, std::uint32_t salt) {
  const std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u ^ (salt * 40503u + 977u);
  return static_cast<float>((x >> 9) % 2001) / 1000.0f - 1.0f;
}

alloy::tensor_set model(std::uint32_t which, bool bad_shape) {
  alloy::tensor_set s;
  auto add = [&](const std::string& name, alloy::dtype t, std::vector<std::size_t> shape, std::uint32_t salt) {
    const auto v = s.add(name, t, std::move(shape));
    alloy::visit_floating(t, [&](auto tag) {
      using T = decltype(tag);
      auto* p = static_cast<T*>(v.data);
      for (std::size_t i = 0; i < v.size; ++i) {
        const float base = value(i, salt);
        const float delta = which == 0 ? 0.0f : 0.01f * value(i, salt * 31u + which);
        p[i] = T(base + delta);
      }
    });
  };
  std::uint32_t salt = 1;
  add("model.embed_tokens.weight", alloy::dtype::f32, {32, 16}, salt++);
  for (int l = 0; l < 3; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", alloy::dtype::bf16, {16, 16}, salt++);
    add(p + "mlp.up_proj.weight", alloy::dtype::bf16, {bad_shape && l == 1 ? 40u : 48u, 16}, salt++);
    add(p + "input_layernorm.weight", alloy::dtype::f32, {16}, salt++);
  }
  add("model.norm.weight", alloy::dtype::f32, {16}, salt++);
  add("lm_head.weight", alloy::dtype::f32, {32, 16}, salt++);
  const auto step = s.add("extra.step", alloy::dtype::i64, {1});
  *static_cast<std::int64_t*>(step.data) = 1000 + which;
  return s;
}

// An MLP 512 -> 768 -> 768 -> 10 (layers.0, .2, .4 as in docs/methods/alignment.md).
alloy::tensor_set mlp(std::uint32_t which) {
  alloy::tensor_set s;
  std::uint32_t salt = 100 * which;
  auto add = [&](const std::string& name, std::vector<std::size_t> shape) {
    const auto v = s.add(name, alloy::dtype::f32, std::move(shape));
    auto* p = static_cast<float*>(v.data);
    ++salt;
    for (std::size_t i = 0; i < v.size; ++i) p[i] = 0.05f * value(i, salt);
  };
  add("layers.0.weight", {768, 512});
  add("layers.0.bias", {768});
  add("layers.2.weight", {768, 768});
  add("layers.2.bias", {768});
  add("layers.4.weight", {10, 768});
  add("layers.4.bias", {10});
  return s;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_test_checkpoints DIR\n");
    return 2;
  }
  try {
    const fs::path dir = argv[1];
    for (const char* name : {"base", "a", "b", "b_sharded", "bad_shape", "mlp"}) {
      fs::remove_all(dir / name);
      fs::create_directories(dir / name);
    }
    alloy::io::write_checkpoint(dir / "base", model(0, false));
    alloy::io::write_checkpoint(dir / "a", model(1, false));
    alloy::io::write_checkpoint(dir / "b", model(2, false));
    alloy::io::write_checkpoint(dir / "b_sharded", model(2, false), {}, 3000);
    alloy::io::write_checkpoint(dir / "bad_shape", model(1, true));
    write_text(dir / "base" / "config.json",
               "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"hidden_size\": 16,\n  \"num_hidden_layers\": 3,\n"
               "  \"torch_dtype\": \"float32\"\n}\n");
    alloy::io::write_safetensors(dir / "mlp" / "a.safetensors", mlp(1));
    alloy::io::write_safetensors(dir / "mlp" / "b.safetensors", mlp(2));
    write_text(dir / "mlp" / "spec.yaml",
               "tensors:\n  layers.0.weight: [P0, null]\n  layers.0.bias: [P0]\n  layers.2.weight: [P1, P0]\n"
               "  layers.2.bias: [P1]\n  layers.4.weight: [null, P1]\n  layers.4.bias: [null]\n");
    write_text(dir / "base" / "tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}}\n");
    write_text(dir / "base" / "tokenizer_config.json", "{\"model_max_length\": 64}\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_test_checkpoints: %s\n", e.what());
    return 1;
  }
}
