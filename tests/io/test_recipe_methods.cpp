// Tests for the recipe side of nuslerp, multislerp, karcher, model_stock, fisher and regmean
// (alloy/io/recipe.hpp): their parameters resolved per tensor, mergekit's base-model
// handling, the per-model `alloy: {fisher, gram}` block (paths, unknown keys), and what each
// method requires.
#include "io_test_util.hpp"

#include <alloy/io/recipe.hpp>

#include <string>

namespace {

using alloy::io::parse_recipe;
using alloy::io::recipe;
using alloy::io::recipe_error;
using alloy::io::resolve;

std::string recipe_error_of(const std::string& text) {
  try {
    parse_recipe(text, "/r");
  } catch (const recipe_error& e) {
    return e.what();
  }
  FAIL("did not throw for:\n" << text);
  return {};
}

std::string check_error_of(const recipe& r, const std::string& tensor) {
  try {
    alloy::io::check_parameters(r, resolve(r, tensor, 4), tensor);
  } catch (const recipe_error& e) {
    return e.what();
  }
  FAIL("check_parameters did not throw for " << tensor);
  return {};
}

}  // namespace

TEST_CASE("the geometric methods' parameters resolve per tensor", "[io][recipe]") {
  const recipe r = parse_recipe(R"(
merge_method: nuslerp
base_model: base
models:
  - model: base
  - model: a
    parameters: {weight: [1, 3]}
  - model: b
    parameters: {weight: 1}
parameters:
  nuslerp_flatten: false
  nuslerp_row_wise: [{filter: mlp, value: true}, {value: false}]
)",
                                "/r");
  REQUIRE(r.merged.size() == 2);  // the listed base is not one of the two models
  CHECK(r.models[r.merged[0]].spelled == "a");
  CHECK(alloy::io::separate_base(r));
  const auto p = resolve(r, "model.layers.3.mlp.up_proj.weight", 4);
  CHECK(*p.models[0].weight == 3);
  CHECK(p.nuslerp_flatten == false);
  CHECK(p.nuslerp_row_wise == true);
  CHECK(resolve(r, "model.layers.3.self_attn.q_proj.weight", 4).nuslerp_row_wise == false);
  CHECK(r.warnings.empty());

  const recipe m = parse_recipe("merge_method: multislerp\nmodels:\n  - model: a\n  - model: b\n"
                                "parameters: {weight: 1, normalize_weights: false, eps: 1e-6}\n",
                                "/r");
  CHECK_FALSE(alloy::io::separate_base(m));
  const auto q = resolve(m, "x", 1);
  CHECK(q.normalize_weights == false);
  CHECK(*q.eps == 1e-6);

  const recipe k = parse_recipe("merge_method: karcher\nmodels:\n  - model: a\n  - model: b\n"
                                "parameters: {max_iter: 20, tol: 1e-7}\n",
                                "/r");
  CHECK(*resolve(k, "x", 1).max_iter == 20);
  CHECK(*resolve(k, "x", 1).tol == 1e-7);
  const recipe s = parse_recipe("merge_method: model_stock\nbase_model: o\nmodels:\n  - model: a\n  - model: b\n"
                                "parameters: {filter_wise: true}\n",
                                "/r");
  CHECK(resolve(s, "x", 1).filter_wise == true);
}

TEST_CASE("karcher takes the base_model as one more model, as mergekit does", "[io][recipe]") {
  const recipe listed = parse_recipe("merge_method: karcher\nbase_model: a\nmodels:\n  - model: a\n  - model: b\n", "/r");
  CHECK(listed.merged.size() == 2);
  CHECK(listed.models.size() == 2);
  const recipe unlisted = parse_recipe("merge_method: karcher\nbase_model: o\nmodels:\n  - model: a\n  - model: b\n", "/r");
  REQUIRE(unlisted.merged.size() == 3);
  CHECK(unlisted.models.back().where == "base_model");
  CHECK(unlisted.models.back().path == "/r/o");
  CHECK(unlisted.model_label(2) == "base_model ('o')");
}

TEST_CASE("a model's alloy block names its Fisher and Gram files", "[io][recipe]") {
  const recipe r = parse_recipe(R"(
merge_method: fisher
models:
  - model: a
    alloy: {fisher: ../fishers/a.safetensors}
  - model: /abs/b
    parameters: {weight: 2}
    alloy:
      fisher: /abs/fb
parameters: {normalize: true, eps: 0}
)",
                                "/r/sub");
  CHECK(*r.models[0].fisher == "/r/fishers/a.safetensors");
  CHECK(r.models[0].fisher_spelled == "../fishers/a.safetensors");
  CHECK(*r.models[1].fisher == "/abs/fb");
  CHECK_FALSE(r.models[0].gram);
  const auto p = resolve(r, "x", 1);
  CHECK(p.normalize == true);
  CHECK(*p.eps == 0);
  CHECK(!p.models[0].weight);  // fisher's weights are optional (default 1)

  const recipe g = parse_recipe("merge_method: regmean\nmodels:\n  - model: a\n    alloy: {gram: ga}\n"
                                "  - model: b\n    alloy: {gram: gb}\nparameters: {reduce_non_diagonal_ratio: 0.6}\n",
                                "/r");
  CHECK(*g.models[1].gram == "/r/gb");
  CHECK(*resolve(g, "x", 1).reduce_non_diagonal_ratio == 0.6);

  // Unused files are warnings; unknown keys and wrong types are errors naming the key.
  const recipe w = parse_recipe("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                                "    alloy: {gram: ga}\n",
                                "/r");
  REQUIRE(w.warnings.size() == 1);
  CHECK(w.warnings[0] == "models[0].alloy.gram is not used by merge method linear");
  CHECK_THAT(recipe_error_of("merge_method: fisher\nmodels:\n  - model: a\n    alloy: {fisher: f, grams: g}\n"),
             Catch::Contains("unknown key 'models[0].alloy.grams' (a model's alloy keys are fisher, gram) (line 4)"));
  CHECK_THAT(recipe_error_of("merge_method: fisher\nmodels:\n  - model: a\n    alloy: [f]\n"),
             Catch::Contains("models[0].alloy must be a map"));
  CHECK_THAT(recipe_error_of("merge_method: fisher\nmodels:\n  - model: a\n    alloy: {fisher: {path: f}}\n"),
             Catch::Contains("models[0].alloy.fisher must be a path"));
  CHECK_THAT(recipe_error_of("merge_method: fisher\nmodels:\n  - model: a\n    fisher: f\n"),
             Catch::Contains("unknown key 'models[0].fisher' (a model has 'model', 'parameters' and 'alloy')"));
  CHECK_THAT(recipe_error_of("merge_method: regmean\nmodels:\n  - model: a\n    alloy: {gram: g}\n"
                             "parameters: {reduce_non_diagonal_ratio: 1.5}\n"),
             Catch::Contains("reduce_non_diagonal_ratio must be in [0, 1]"));
}

TEST_CASE("what the new methods require of a recipe", "[io][recipe]") {
  CHECK_THAT(recipe_error_of("merge_method: nuslerp\nparameters: {weight: 1}\nmodels:\n  - model: a\n"),
             Catch::Contains("merge method nuslerp interpolates between two models, got 1"));
  CHECK_THAT(recipe_error_of("merge_method: nuslerp\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n"),
             Catch::Contains("models[1] ('b') has no weight"));
  CHECK_THAT(recipe_error_of("merge_method: model_stock\nmodels:\n  - model: a\n  - model: b\n"),
             Catch::Contains("merge method model_stock needs a base_model"));
  CHECK_THAT(recipe_error_of("merge_method: model_stock\nbase_model: o\nmodels:\n  - model: o\n  - model: b\n"),
             Catch::Contains("needs at least two models besides the base_model, got 1"));
  CHECK_THAT(recipe_error_of("merge_method: fisher\nmodels:\n  - model: a\n"),
             Catch::Contains("models[0] ('a') has no alloy.fisher"));
  CHECK_THAT(recipe_error_of("merge_method: regmean\nmodels:\n  - model: a\n"),
             Catch::Contains("models[0] ('a') has no alloy.gram"));
  CHECK_THAT(recipe_error_of("merge_method: fisher\nmodels:\n  - model: a\n    alloy: {fisher: f}\n"
                             "parameters: {eps: [{filter: mlp, value: 0}]}\n"),
             Catch::Contains("parameters.eps (line 5): under merge method fisher it applies to the whole model"));
  // Per-tensor checks.
  const recipe m = parse_recipe("merge_method: multislerp\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                                "  - model: b\n    parameters: {weight: [-1, 1]}\nparameters: {eps: [0, 1]}\n",
                                "/r");
  CHECK_THAT(check_error_of(m, "model.layers.0.x"), Catch::Contains("tensor 'model.layers.0.x': eps is 0"));
  const recipe m2 = parse_recipe("merge_method: multislerp\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                                 "  - model: b\n    parameters: {weight: [-1, 1]}\n",
                                 "/r");
  CHECK_THAT(check_error_of(m2, "model.layers.0.x"), Catch::Contains("the weights sum to 0"));
  // A gradient of max_iter [1, 2] at layer 1 of 4 (t = 1/3) is 4/3: not a whole number.
  const recipe k = parse_recipe("merge_method: karcher\nmodels:\n  - model: a\nparameters: {max_iter: [1, 2]}\n", "/r");
  CHECK_THAT(check_error_of(k, "model.layers.1.x"), Catch::Contains("max_iter is 1.33"));
}
