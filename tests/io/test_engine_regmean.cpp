// merge_method: regmean through the streaming engine: each model's Gram file named by
// models[i].alloy.gram, keyed by the weight's name or its module's name (FusionBench);
// results equal the library's model-level regmean on the same data (linear layers solved,
// other tensors averaged); identical Grams give the weighted average (hand-derived); bad
// Gram files are refused before any output.
#include "engine_test_util.hpp"

#include <alloy/io/engine_regmean.hpp>
#include <alloy/methods/regmean.hpp>

#include <cstring>
#include <string>
#include <vector>

using namespace engine_test;

namespace {

const std::vector<spec>& layer_specs() {
  static const std::vector<spec> s{{"model.embed_tokens.weight", dtype::f32, {16, 8}},
                                   {"model.layers.0.mlp.up_proj.weight", dtype::bf16, {12, 8}},
                                   {"model.layers.0.mlp.up_proj.bias", dtype::f32, {12}},
                                   {"model.layers.1.self_attn.q_proj.weight", dtype::f32, {6, 5}},
                                   {"lm_head.weight", dtype::f32, {16, 8}}};
  return s;
}

// X^T X of a deterministic [rows, in] X for model m, stored as `type`.
void add_gram(tensor_set& s, const std::string& name, std::size_t in, int m, dtype type) {
  const std::size_t rows = in + 3;
  std::vector<double> x(rows * in);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = value(i, m + 70);
  auto v = s.add(name, type, {in, in});
  alloy::visit_floating(type, [&](auto tag) {
    using T = decltype(tag);
    auto* p = static_cast<T*>(v.data);
    for (std::size_t a = 0; a < in; ++a)
      for (std::size_t b = 0; b < in; ++b) {
        double g = 0;
        for (std::size_t r = 0; r < rows; ++r) g += x[r * in + a] * x[r * in + b];
        p[a * in + b] = T(static_cast<float>(g));
      }
  });
}

// Gram sets: up_proj keyed by its module's name, q_proj by its weight's name.
tensor_set make_grams(int m, dtype type = dtype::f32) {
  tensor_set s;
  add_gram(s, "model.layers.0.mlp.up_proj", 8, m, type);
  add_gram(s, "model.layers.1.self_attn.q_proj.weight", 5, m, type);
  return s;
}

struct regmean_fixture : fixture {
  std::vector<tensor_set> grams;
  regmean_fixture() : fixture(2, layer_specs()) {
    grams.push_back(make_grams(0));
    grams.push_back(make_grams(1, dtype::bf16));
    alloy::io::write_safetensors(dir / "g0.safetensors", grams[0]);
    alloy::io::write_safetensors(dir / "g1.safetensors", grams[1]);
  }
  static std::string text(const std::string& g1 = "g1.safetensors", const std::string& extra = "") {
    return "merge_method: regmean\nmodels:\n  - model: m0\n    parameters: {weight: 3}\n"
           "    alloy: {gram: g0.safetensors}\n  - model: m1\n    alloy: {gram: " +
           g1 + "}\n" + extra;
  }
};

}  // namespace

TEST_CASE("regmean equals the library's regmean on the same data", "[io][engine][regmean]") {
  regmean_fixture f;
  for (const char* ratio : {"", "parameters: {reduce_non_diagonal_ratio: 0.5}\n"}) {
    INFO(ratio);
    fs::remove_all(f.out());
    merge_to_folder(f.parse(regmean_fixture::text("g1.safetensors", ratio)), f.out());
    alloy::regmean_options o;
    o.coefficients = {3.0, 1.0};
    if (*ratio) o.alpha = 0.5;
    const auto want = alloy::regmean({std::cref(f.models[0]), std::cref(f.models[1])},
                                     {std::cref(f.grams[0]), std::cref(f.grams[1])}, o);
    REQUIRE(want.layers.size() == 2);
    check_merged_equals(f.out(), f.models[0], want.merged);
  }
}

TEST_CASE("regmean with identical Grams is the weighted average of the layers (hand-derived)",
          "[io][engine][regmean]") {
  // S = (3 G + G) / 4 = G and B = (3 W_0 G + W_1 G) / 4, so W = (3 W_0 + W_1) / 4.
  regmean_fixture f;
  alloy::io::write_safetensors(f.dir / "g0copy.safetensors", f.grams[0]);
  merge_to_folder(f.parse(regmean_fixture::text("g0copy.safetensors")), f.out());
  const auto c = alloy::io::open_checkpoint(f.out());
  const auto& got = c.at("model.layers.1.self_attn.q_proj.weight");
  const auto* a = static_cast<const float*>(f.models[0].at(got.name()).view().data);
  const auto* b = static_cast<const float*>(f.models[1].at(got.name()).view().data);
  std::vector<float> w(got.elements());
  std::memcpy(w.data(), got.data().data(), got.bytes());
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(w[i] == Approx((3.0 * a[i] + b[i]) / 4).epsilon(1e-5).margin(1e-6));
}

TEST_CASE("bad Gram files are refused before any output, naming the file and tensor", "[io][engine][regmean]") {
  regmean_fixture f;
  auto refuse = [&](alloy::errc code, const std::string& g1, std::vector<std::string> parts) {
    const std::string m = error_of([&] { merge_to_folder(f.parse(regmean_fixture::text(g1)), f.out()); }, code);
    for (const auto& p : parts) CHECK_THAT(m, Catch::Contains(p));
    CHECK_FALSE(fs::exists(f.out()));
  };
  SECTION("a Gram of the wrong shape") {
    tensor_set s;
    add_gram(s, "model.layers.0.mlp.up_proj", 12, 1, dtype::f32);  // [12, 12]: the out dimension
    add_gram(s, "model.layers.1.self_attn.q_proj.weight", 5, 1, dtype::f32);
    alloy::io::write_safetensors(f.dir / "wrong.safetensors", s);
    refuse(errc::shape_mismatch, "wrong.safetensors",
           {"models[1].alloy.gram 'wrong.safetensors'", "the Gram 'model.layers.0.mlp.up_proj' has shape [12, 12]",
            "needs [8, 8]"});
  }
  SECTION("Gram files naming different layers") {
    tensor_set s;
    add_gram(s, "model.layers.0.mlp.up_proj", 8, 1, dtype::f32);
    alloy::io::write_safetensors(f.dir / "short.safetensors", s);
    refuse(errc::missing_tensor, "short.safetensors",
           {"the Gram 'model.layers.1.self_attn.q_proj.weight'", "but not in models[1].alloy.gram 'short.safetensors'"});
  }
  SECTION("a Gram matching no tensor, or a 1-D one") {
    tensor_set s = make_grams(1);
    add_gram(s, "model.layers.9.mlp", 8, 1, dtype::f32);
    alloy::io::write_safetensors(f.dir / "g0.safetensors", s);  // both files name the same layers
    alloy::io::write_safetensors(f.dir / "g1x.safetensors", s);
    refuse(errc::missing_tensor, "g1x.safetensors",
           {"the Gram 'model.layers.9.mlp' matches no tensor", "'model.layers.9.mlp.weight'"});
    tensor_set b = make_grams(1);
    add_gram(b, "model.layers.0.mlp.up_proj.bias", 12, 1, dtype::f32);
    alloy::io::write_safetensors(f.dir / "g0.safetensors", b);
    alloy::io::write_safetensors(f.dir / "g1x.safetensors", b);
    refuse(errc::shape_mismatch, "g1x.safetensors", {"belongs to tensor 'model.layers.0.mlp.up_proj.bias' of shape [12]"});
  }
  SECTION("a missing Gram file or key") {
    refuse(errc::io_error, "none.safetensors", {"none.safetensors", "models[1].alloy.gram"});
    try {
      (void)f.parse("merge_method: regmean\nmodels:\n  - model: m0\n    alloy: {gram: g0.safetensors}\n  - model: m1\n");
      FAIL("no error");
    } catch (const alloy::io::recipe_error& e) {
      CHECK_THAT(e.what(), Catch::Contains("models[1] ('m1') has no alloy.gram"));
    }
  }
}
