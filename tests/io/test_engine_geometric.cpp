// The geometric methods in recipes (nuslerp, multislerp, karcher, model_stock) through the
// streaming engine: every merged tensor equals the library function called directly on the
// same data (bf16, f16 and f32 tensors), mergekit's base-model handling, a hand-derived case,
// and thread counts that do not change a bit.
#include "engine_test_util.hpp"

#include <alloy/methods/karcher.hpp>
#include <alloy/methods/model_stock.hpp>
#include <alloy/methods/multislerp.hpp>
#include <alloy/methods/nuslerp.hpp>

#include <cstring>
#include <string>
#include <vector>

using namespace engine_test;

namespace {

std::vector<tensor_view> pick(const std::vector<tensor_set>& m, const std::string& name, std::vector<int> which) {
  std::vector<tensor_view> v;
  for (int i : which) v.push_back(m[static_cast<std::size_t>(i)].at(name).view());
  return v;
}

}  // namespace

TEST_CASE("nuslerp without a base interpolates the two models as mergekit's nuslerp", "[io][engine][nuslerp]") {
  fixture f(2);
  merge_to_folder(f.parse("merge_method: nuslerp\nmodels:\n  - model: m0\n    parameters: {weight: 0.3}\n"
                          "  - model: m1\n    parameters: {weight: 0.7}\n"),
                  f.out());
  check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
    alloy::nuslerp_options o;
    o.shape = f.models[0].at(name).shape();
    alloy::nuslerp(std::span<const tensor_view>(pick(f.models, name, {0, 1})), {0.3, 0.7}, v, o);
  });
}

TEST_CASE("nuslerp with a base merges task vectors; a listed base is not a model", "[io][engine][nuslerp]") {
  fixture f(3);
  for (const bool row_wise : {false, true}) {
    INFO("row_wise " << row_wise);
    const std::string text = std::string("merge_method: nuslerp\nbase_model: m0\nmodels:\n  - model: m0\n") +
                             "  - model: m1\n    parameters: {weight: 2}\n  - model: m2\n    parameters: {weight: 1}\n" +
                             "parameters: {nuslerp_flatten: false, nuslerp_row_wise: " + (row_wise ? "true" : "false") +
                             "}\nout_dtype: bfloat16\n";
    const auto r = f.parse(text);
    CHECK(r.merged.size() == 2);
    fs::remove_all(f.out());
    merge_to_folder(r, f.out());
    check_merged(f.out(), f.models[0], dtype::bf16, [&](const std::string& name, alloy::mutable_tensor_view v) {
      alloy::nuslerp_options o;
      o.flatten = false;
      o.row_wise = row_wise;
      o.shape = f.models[0].at(name).shape();
      alloy::nuslerp(f.models[0].at(name).view(), std::span<const tensor_view>(pick(f.models, name, {1, 2})),
                     {2.0, 1.0}, v, o);
    });
  }
}

TEST_CASE("multislerp with and without a base equals the library's", "[io][engine][multislerp]") {
  fixture f(4);
  SECTION("without a base, default options") {
    merge_to_folder(f.parse("merge_method: multislerp\nmodels:\n  - model: m1\n  - model: m2\n  - model: m3\n"
                            "parameters: {weight: 1}\n"),
                    f.out());
    check_merged(f.out(), f.models[1], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
      alloy::multislerp(std::span<const tensor_view>(pick(f.models, name, {1, 2, 3})), {1.0, 1.0, 1.0}, v);
    });
  }
  SECTION("with a base, normalize_weights false, eps") {
    merge_to_folder(f.parse("merge_method: multislerp\nbase_model: m0\nmodels:\n  - model: m1\n"
                            "    parameters: {weight: 0.5}\n  - model: m2\n    parameters: {weight: 0.25}\n"
                            "  - model: m3\n    parameters: {weight: 0.25}\n"
                            "parameters: {normalize_weights: false, eps: 1e-6}\n"),
                    f.out());
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
      alloy::multislerp_options o;
      o.normalize_weights = false;
      o.epsilon = 1e-6;
      alloy::multislerp(f.models[0].at(name).view(), std::span<const tensor_view>(pick(f.models, name, {1, 2, 3})),
                        {0.5, 0.25, 0.25}, v, o);
    });
  }
}

TEST_CASE("karcher averages every model with equal weights; an unlisted base_model is one of them",
          "[io][engine][karcher]") {
  fixture f(3);
  SECTION("max_iter and tol") {
    const auto r = f.parse("merge_method: karcher\nmodels:\n  - model: m0\n  - model: m1\n    parameters: {weight: 5}\n"
                           "  - model: m2\nparameters: {max_iter: 4, tol: 1e-6}\n");
    REQUIRE(r.warnings.size() == 1);  // karcher ignores weights, as mergekit does
    CHECK(r.warnings[0].find("models[1].parameters.weight") != std::string::npos);
    merge_to_folder(r, f.out());
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
      alloy::karcher_options o;
      o.max_iter = 4;
      o.tol = 1e-6;
      alloy::karcher(std::span<const tensor_view>(pick(f.models, name, {0, 1, 2})), v, o);
    });
  }
  SECTION("base_model not listed: appended to the inputs, as mergekit does") {
    const auto r = f.parse("merge_method: karcher\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\n");
    REQUIRE(r.merged.size() == 3);
    CHECK(r.model_label(2) == "base_model ('m0')");
    merge_to_folder(r, f.out());
    // The first input (m1) is the reference: integer tensors and default dtypes come from it.
    check_merged(f.out(), f.models[1], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
      alloy::karcher(std::span<const tensor_view>(pick(f.models, name, {1, 2, 0})), v);
    });
  }
  SECTION("a fractional max_iter is a recipe error") {
    const auto r = f.parse("merge_method: karcher\nmodels:\n  - model: m1\n  - model: m2\nparameters: {max_iter: 2.5}\n");
    const auto m = error_of([&] { merge_engine e(r); }, errc::invalid_argument);
    CHECK(m.find("max_iter is 2.5, not a whole number") != std::string::npos);
  }
}

TEST_CASE("model_stock equals the library's, per tensor and filter-wise, presets mergekit and paper",
          "[io][engine][model_stock]") {
  fixture f(4);
  for (const char* preset : {"mergekit", "paper"}) {
    for (const bool filter_wise : {false, true}) {
      INFO(preset << " filter_wise " << filter_wise);
      fs::remove_all(f.out());
      merge_to_folder(f.parse(std::string("merge_method: model_stock\nbase_model: m0\nmodels:\n  - model: m0\n") +
                              "  - model: m1\n  - model: m2\n  - model: m3\nparameters: {filter_wise: " +
                              (filter_wise ? "true" : "false") + "}\nalloy: {preset: " + preset + "}\n"),
                      f.out());
      check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
        auto o = alloy::model_stock_options::preset(std::string(preset) == "paper" ? alloy::preset::paper
                                                                                  : alloy::preset::mergekit);
        o.filter_wise = filter_wise;
        o.shape = f.models[0].at(name).shape();
        alloy::model_stock(f.models[0].at(name).view(), std::span<const tensor_view>(pick(f.models, name, {1, 2, 3})),
                           v, o);
      });
    }
  }
}

TEST_CASE("model_stock of two models with orthogonal task vectors returns the base (hand-derived)",
          "[io][engine][model_stock]") {
  // tau_1 = (1, 0, 0, 0), tau_2 = (0, 2, 0, 0): cos = 0, so t = 2 * 0 / (1 + 0) = 0 and out = base.
  scratch_dir dir;
  const std::vector<std::vector<float>> values{{0.5f, -1, 2, 3}, {1.5f, -1, 2, 3}, {0.5f, 1, 2, 3}};
  for (std::size_t m = 0; m < values.size(); ++m) {
    tensor_set s;
    auto v = s.add("w", dtype::f32, {4});
    std::copy(values[m].begin(), values[m].end(), static_cast<float*>(v.data));
    fs::create_directories(dir / ("m" + std::to_string(m)));
    alloy::io::write_checkpoint(dir / ("m" + std::to_string(m)), s);
  }
  merge_to_folder(parse_recipe("merge_method: model_stock\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\n",
                               dir.path()),
                  dir / "out");
  const auto c = alloy::io::open_checkpoint(dir / "out");
  const auto got = c.at("w").data();
  std::vector<float> out(4);
  std::memcpy(out.data(), got.data(), 16);
  CHECK(out == values[0]);
}

TEST_CASE("geometric merges of a tensor larger than a work item do not depend on the thread count",
          "[io][engine][threads]") {
  const std::vector<spec> specs{{"model.embed_tokens.weight", dtype::bf16, {640, 512}},
                                {"model.layers.0.mlp.up_proj.weight", dtype::f32, {520, 512}},
                                {"model.norm.weight", dtype::f32, {512}}};
  fixture f(3, specs);
  const std::vector<std::string> recipes{
      "merge_method: model_stock\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\nparameters: {filter_wise: true}\n",
      "merge_method: nuslerp\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\nparameters: {weight: 1, "
      "nuslerp_flatten: false, nuslerp_row_wise: true}\n",
      "merge_method: multislerp\nmodels:\n  - model: m0\n  - model: m1\n  - model: m2\nparameters: {weight: 1}\n",
      "merge_method: karcher\nmodels:\n  - model: m0\n  - model: m1\n  - model: m2\n"};
  for (const auto& text : recipes) {
    INFO(text);
    std::vector<std::vector<std::string>> results;
    for (const unsigned threads : {1u, 3u}) {
      fs::remove_all(f.out());
      merge_options o;
      o.exec = alloy::execution{threads};
      merge_to_folder(f.parse(text), f.out(), o);
      results.push_back(merged_bytes(f.out()));
    }
    CHECK(results[0] == results[1]);
  }
  // And the model-level function on the same sets gives the same bits (shapes from the sets).
  fs::remove_all(f.out());
  merge_to_folder(f.parse(recipes[0]), f.out());
  auto o = alloy::model_stock_options{};
  o.filter_wise = true;
  const tensor_set want = alloy::model_stock(f.models[0], {std::cref(f.models[1]), std::cref(f.models[2])}, o);
  check_merged_equals(f.out(), f.models[0], want);
}

TEST_CASE("recipe errors of the geometric methods come before any output", "[io][engine]") {
  fixture f(3);
  auto refuse = [&](const std::string& text, const std::string& part) {
    try {
      merge_to_folder(f.parse(text), f.out());
      FAIL("no error");
    } catch (const alloy::io::recipe_error& e) {
      CHECK_THAT(e.what(), Catch::Contains(part));
    }
    CHECK(f.untouched());
  };
  refuse("merge_method: nuslerp\nmodels:\n  - model: m0\n  - model: m1\n  - model: m2\nparameters: {weight: 1}\n",
         "merge method nuslerp interpolates between two models, got 3");
  refuse("merge_method: nuslerp\nmodels:\n  - model: m0\n    parameters: {weight: 1}\n  - model: m1\n",
         "models[1] ('m1') has no weight");
  refuse("merge_method: multislerp\nmodels:\n  - model: m0\n  - model: m1\nparameters: {weight: 1, eps: 0}\n",
         "eps is 0: multislerp divides by norm + eps");
  refuse("merge_method: multislerp\nmodels:\n  - model: m0\n    parameters: {weight: 1}\n  - model: m1\n"
         "    parameters: {weight: -1}\n",
         "the weights sum to 0, so multislerp cannot normalize them");
  refuse("merge_method: regmean\nmodels:\n  - model: m0\n    alloy: {gram: g0}\n  - model: m1\n    alloy: {gram: g1}\n",
         "merge method regmean needs LAPACK");
}
