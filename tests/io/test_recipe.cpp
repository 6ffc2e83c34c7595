// Tests for alloy/io/recipe.hpp and recipe_parameters.hpp: every accepted key, gradients
// (mergekit's interpolation, worked by hand below), filters, per-model overrides, unknown keys
// at every level, relative paths, type and range errors, and what each method requires.
#include "io_test_util.hpp"

#include <alloy/io/recipe.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace {

using alloy::errc;
using alloy::io::load_recipe;
using alloy::io::parse_recipe;
using alloy::io::recipe;
using alloy::io::recipe_error;
using alloy::io::resolve;
using io_test::fs::path;

// parse_recipe must throw recipe_error; returns its message.
std::string recipe_error_of(const std::string& text) {
  try {
    parse_recipe(text, "/r");
  } catch (const recipe_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("threw something other than recipe_error: " << e.what());
  }
  FAIL("did not throw for:\n" << text);
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

bool any_contains(const std::vector<std::string>& v, const std::string& part) {
  for (const auto& s : v)
    if (contains(s, part)) return true;
  return false;
}

const std::string two_models = R"(
merge_method: task_arithmetic
base_model: base
models:
  - model: a
    parameters: {weight: 1.0}
  - model: b
    parameters: {weight: 0.5}
)";

}  // namespace

TEST_CASE("a recipe with every accepted key", "[io][recipe]") {
  const recipe r = parse_recipe(R"(
merge_method: ties
base_model: ../models/base
models:
  - model: ../models/base
  - model: ./math
    parameters:
      weight: 1.0
      density: 0.5
      gamma: 0.02
      epsilon: 0.1
  - model: /abs/code
    parameters: {weight: 0.7, density: [0.2, 0.8]}
parameters:
  normalize: true
  lambda: 1.5
  rescale: false
  consensus_method: count
  int8_mask: true
dtype: float32
out_dtype: bfloat16
alloy:
  preset: peft
  output: delta
  seed: 18446744073709551615
tokenizer:
  source: union
tokenizer_source: base
chat_template: chatml
)",
                                "/work/recipes", "/work/recipes/r.yaml");
  CHECK(r.method_name == "ties");
  CHECK(r.method == alloy::io::merge_method_id::ties);
  REQUIRE(r.base_model);
  CHECK(*r.base_model == path("/work/models/base"));
  CHECK(r.base_spelled == "../models/base");
  REQUIRE(r.models.size() == 3);
  CHECK(r.models[1].path == path("/work/recipes/math"));
  CHECK(r.models[2].path == path("/abs/code"));
  // The entry naming the base is not merged.
  CHECK(r.base_entry == std::size_t{0});
  CHECK(r.merged == std::vector<std::size_t>{1, 2});
  CHECK(r.models[1].parameters.size() == 4);
  CHECK(r.parameters.size() == 5);
  CHECK(r.compute_dtype == std::string("float32"));
  CHECK(r.out_dtype == alloy::dtype::bf16);
  CHECK(r.preset == alloy::preset::peft);
  CHECK(r.output == alloy::merge_output::delta);
  CHECK(r.seed == 18446744073709551615ull);
  CHECK(any_contains(r.warnings, "'tokenizer'"));
  CHECK(any_contains(r.warnings, "'tokenizer_source'"));
  CHECK(any_contains(r.warnings, "'chat_template'"));
  // gamma and epsilon are not read by ties: accepted with a warning each.
  CHECK(any_contains(r.warnings, "models[1].parameters.gamma"));
  CHECK(any_contains(r.warnings, "models[1].parameters.epsilon"));
  CHECK(r.label() == "recipe '/work/recipes/r.yaml'");
  CHECK(r.model_label(0) == "models[1] ('./math')");

  const auto p = resolve(r, "model.layers.3.mlp.up_proj.weight", 7);  // t = 3/6 = 0.5
  CHECK(p.t == 0.5);
  REQUIRE(p.models.size() == 2);
  CHECK(p.models[0].weight == 1.0);
  CHECK(p.models[0].density == 0.5);
  CHECK(p.models[0].gamma == 0.02);
  CHECK(p.models[1].density == Approx(0.5));  // 0.2 + 0.5 * 0.6
  CHECK(p.normalize == true);
  CHECK(p.lambda == 1.5);
  CHECK(p.rescale == false);
  CHECK(p.int8_mask == true);
  CHECK(p.consensus_method == std::string("count"));
  CHECK_FALSE(p.slerp_t);
}

TEST_CASE("defaults of a minimal recipe", "[io][recipe]") {
  const recipe r = parse_recipe(two_models, "/r");
  CHECK(r.preset == alloy::preset::mergekit);
  CHECK(r.output == alloy::merge_output::merged);
  CHECK(r.seed == 0);
  CHECK_FALSE(r.out_dtype);
  CHECK(r.warnings.empty());
  CHECK_FALSE(r.base_entry);
  CHECK(r.merged == std::vector<std::size_t>{0, 1});
  const auto p = resolve(r, "lm_head.weight", 4);
  CHECK_FALSE(p.normalize);
  CHECK_FALSE(p.lambda);
  CHECK_FALSE(p.models[0].density);
}

TEST_CASE("gradients interpolate across layers as mergekit does", "[io][recipe]") {
  // weight: [1, 2, 4] over a model of 5 layers: layer i has t = i / 4 and
  // s = t * 2, value = (1 - frac(s)) x[floor(s)] + frac(s) x[min(2, floor(s) + 1)]:
  //   layer 0: s = 0    -> 1
  //   layer 1: s = 0.5  -> 0.5 * 1 + 0.5 * 2 = 1.5
  //   layer 2: s = 1    -> 2
  //   layer 3: s = 1.5  -> 0.5 * 2 + 0.5 * 4 = 3
  //   layer 4: s = 2    -> x[2] = 4 (i1 clamps to the last)
  // Embeddings come before the layers (t = 0 -> 1); the final norm and lm_head after
  // (t = 1 -> 4).
  const recipe r = parse_recipe(R"(
merge_method: linear
models:
  - model: a
    parameters: {weight: [1, 2, 4]}
  - model: b
    parameters: {weight: 1}
)");
  const std::vector<double> expected{1, 1.5, 2, 3, 4};
  for (std::size_t i = 0; i < 5; ++i) {
    INFO("layer " << i);
    const auto p = resolve(r, "model.layers." + std::to_string(i) + ".self_attn.q_proj.weight", 5);
    CHECK(p.models[0].weight == expected[i]);
    CHECK(p.models[1].weight == 1.0);
  }
  CHECK(resolve(r, "model.embed_tokens.weight", 5).models[0].weight == 1.0);
  CHECK(resolve(r, "transformer.wte.weight", 5).models[0].weight == 1.0);
  CHECK(resolve(r, "model.norm.weight", 5).models[0].weight == 4.0);
  CHECK(resolve(r, "lm_head.weight", 5).models[0].weight == 4.0);
  // A model of one layer puts it at t = 1, as mergekit's planner does.
  CHECK(resolve(r, "model.layers.0.mlp.weight", 1).models[0].weight == 4.0);
}

TEST_CASE("layer positions, indices and counts from tensor names", "[io][recipe]") {
  using alloy::io::count_layers;
  using alloy::io::layer_index;
  using alloy::io::layer_position;
  CHECK(layer_index("model.layers.12.mlp.down_proj.weight") == std::size_t{12});
  CHECK(layer_index("transformer.h.3.attn.c_attn.weight") == std::size_t{3});
  CHECK(layer_index("model.layers.3.block_sparse_moe.experts.7.w1.weight") == std::size_t{3});
  CHECK_FALSE(layer_index("model.norm.weight"));
  CHECK_FALSE(layer_index("model.layers.x1.weight"));
  CHECK(count_layers(std::vector<std::string>{"a.layers.0.w", "a.layers.21.w", "lm_head.weight"}) == 22);
  CHECK(count_layers(std::vector<std::string>{"w", "b"}) == 0);
  CHECK(layer_position("model.layers.21.w", 22) == 1.0);
  CHECK(layer_position("model.layers.30.w", 22) == 1.0);  // clamped
  CHECK(layer_position("embeddings.word_embeddings.weight", 22) == 0.0);
  CHECK(layer_position("lm_head.weight", 0) == 1.0);
}

TEST_CASE("a gradient of strings picks an element; a gradient of bools is a truth value", "[io][recipe]") {
  const recipe r = parse_recipe(R"(
merge_method: ties
base_model: base
models:
  - model: a
    parameters: {weight: 1, density: 0.5}
parameters:
  consensus_method: [sum, count, sum]
  normalize: [true, false]
)");
  // 3 layers: t = 0, 0.5, 1. Strings: x[floor(t * 2)] = sum, count, sum. Bools as numbers:
  // [1, 0] at t gives 1 - t, true unless it is exactly 0 (t = 1).
  CHECK(resolve(r, "m.layers.0.w", 3).consensus_method == std::string("sum"));
  CHECK(resolve(r, "m.layers.1.w", 3).consensus_method == std::string("count"));
  CHECK(resolve(r, "m.layers.2.w", 3).consensus_method == std::string("sum"));
  CHECK(resolve(r, "m.layers.1.w", 3).normalize == true);
  CHECK(resolve(r, "m.layers.2.w", 3).normalize == false);
}

TEST_CASE("filters: first match wins, no match falls back to the global value", "[io][recipe]") {
  const recipe r = parse_recipe(R"(
merge_method: ties
base_model: base
models:
  - model: a
    parameters:
      weight: 1
      density:
        - filter: mlp
          value: 0.3
        - filter: self_attn
          value: [0.2, 0.6]
  - model: b
    parameters:
      weight: [{filter: "*", value: 2}]
      density: [{filter: lm_head, value: 0.9}, {value: 0.4}]
parameters:
  density: 0.7
  weight: 0.25
)");
  auto p = resolve(r, "model.layers.0.mlp.up_proj.weight", 3);
  CHECK(p.models[0].density == 0.3);
  CHECK(p.models[1].density == 0.4);                            // a filter without 'filter' matches everything
  CHECK(p.models[1].weight == 2.0);                             // "*" matches everything
  p = resolve(r, "model.layers.2.self_attn.q_proj.weight", 3);  // t = 1
  CHECK(p.models[0].density == 0.6);
  p = resolve(r, "model.layers.1.self_attn.q_proj.weight", 3);  // t = 0.5
  CHECK(p.models[0].density == Approx(0.4));
  p = resolve(r, "model.norm.weight", 3);
  CHECK(p.models[0].density == 0.7);  // no filter of model a matches: the global value
  CHECK(p.models[1].density == 0.4);
  p = resolve(r, "lm_head.weight", 3);
  CHECK(p.models[1].density == 0.9);
}

TEST_CASE("per-model values override global ones", "[io][recipe]") {
  const recipe r = parse_recipe(R"(
merge_method: dare_linear
base_model: base
models:
  - model: a
    parameters: {weight: 1, density: 0.9}
  - model: b
parameters: {weight: 0.5, density: 0.3}
)");
  const auto p = resolve(r, "w", 0);
  CHECK(p.models[0].weight == 1.0);
  CHECK(p.models[0].density == 0.9);
  CHECK(p.models[1].weight == 0.5);
  CHECK(p.models[1].density == 0.3);
}

TEST_CASE("relative paths resolve against the recipe's folder", "[io][recipe]") {
  io_test::scratch_dir dir;
  io_test::fs::create_directories(dir / "recipes");
  io_test::write_file(dir / "recipes" / "r.yaml",
                      "merge_method: task_arithmetic\nbase_model: ../models/base\n"
                      "models:\n  - model: ft\n    parameters: {weight: 1}\n"
                      "  - model: /elsewhere/x\n    parameters: {weight: 1}\n");
  const recipe r = load_recipe(dir / "recipes" / "r.yaml");
  CHECK(*r.base_model == (dir.path() / "models" / "base").lexically_normal());
  CHECK(r.models[0].path == (dir.path() / "recipes" / "ft").lexically_normal());
  CHECK(r.models[1].path == path("/elsewhere/x"));
  CHECK(r.file == dir / "recipes" / "r.yaml");

  // The stored copy has absolute paths and reads back to the same recipe from anywhere.
  const std::string yaml = alloy::io::recipe_yaml_with_absolute_paths(r);
  const recipe back = parse_recipe(yaml, "/somewhere/else");
  CHECK(*back.base_model == *r.base_model);
  CHECK(back.models[0].path == r.models[0].path);
  CHECK(back.models[1].path == r.models[1].path);
  CHECK(back.method_name == "task_arithmetic");

  // A recipe that cannot be read is a recipe error of code io_error.
  const std::string msg = io_test::error_of([&] { load_recipe(dir / "missing.yaml"); }, errc::io_error);
  CHECK(contains(msg, "missing.yaml"));
  io_test::error_of([&] { load_recipe(dir.path()); }, errc::io_error);
}

TEST_CASE("unknown keys are errors at every level, naming the key and its line", "[io][recipe]") {
  std::string m = recipe_error_of(two_models + "merge_methods: ties\n");
  CHECK(contains(m, "unknown key 'merge_methods'"));
  CHECK(contains(m, "(line 9)"));
  m = recipe_error_of("merge_method: linear\nmodels:\n  - model: a\n    paramters: {weight: 1}\n");
  CHECK(contains(m, "models[0].paramters"));
  CHECK(contains(m, "line 4"));
  m = recipe_error_of("merge_method: linear\nmodels:\n  - model: a\n    parameters: {wieght: 1}\n");
  CHECK(contains(m, "unknown parameter 'models[0].parameters.wieght'"));
  m = recipe_error_of(two_models + "parameters: {lamda: 1}\n");
  CHECK(contains(m, "unknown parameter 'parameters.lamda'"));
  m = recipe_error_of(two_models + "parameters:\n  lambda: [{filter: mlp, valeu: 1}]\n");
  CHECK(contains(m, "parameters.lambda[0].valeu"));
  m = recipe_error_of(two_models + "alloy: {presett: peft}\n");
  CHECK(contains(m, "alloy.presett"));
  m = recipe_error_of(two_models + "slices: []\n");
  CHECK(contains(m, "'slices' recipes are not supported yet"));
  m = recipe_error_of(two_models + "dtype: float32\ndtype: bfloat16\n");
  CHECK(contains(m, "key 'dtype' appears twice"));
  m = recipe_error_of("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1, weight: 2}\n");
  CHECK(contains(m, "models[0].parameters.weight' appears twice"));
}

TEST_CASE("malformed recipes", "[io][recipe]") {
  CHECK(contains(recipe_error_of("merge_method: [unclosed\n"), "not valid YAML"));
  CHECK(contains(recipe_error_of("- a\n- b\n"), "top level is not a map"));
  CHECK(contains(recipe_error_of("models: []\n"), "no 'merge_method'"));
  CHECK(contains(recipe_error_of("merge_method: linear\n"), "no 'models' list"));
  CHECK(contains(recipe_error_of("merge_method: tie\nmodels: []\n"), "unknown merge_method 'tie'"));
  CHECK(contains(recipe_error_of("merge_method: linear\nmodels: {model: a}\n"), "models must be a list"));
  CHECK(contains(recipe_error_of("merge_method: linear\nmodels:\n  - parameters: {weight: 1}\n"),
                 "models[0] has no 'model'"));
  CHECK(contains(recipe_error_of("merge_method: linear\nmodels:\n  - model: {path: a}\n"), "must be a path"));
  CHECK(contains(recipe_error_of(two_models + "out_dtype: int8\n"), "out_dtype 'int8' is not a floating type"));
  CHECK(contains(recipe_error_of(two_models + "alloy: {preset: fast}\n"), "alloy.preset 'fast'"));
  CHECK(contains(recipe_error_of(two_models + "alloy: {output: both}\n"), "alloy.output 'both'"));
  CHECK(contains(recipe_error_of(two_models + "alloy: {seed: -1}\n"), "alloy.seed '-1'"));
  CHECK(contains(recipe_error_of(two_models + "parameters:\n  lambda: {filter: mlp, value: 1}\n"),
                 "write a list of them"));
  CHECK(contains(recipe_error_of(two_models + "parameters:\n  lambda: []\n"), "empty list"));
  CHECK(contains(recipe_error_of(two_models + "parameters:\n  lambda: [1, {filter: a, value: 2}]\n"), "mixes"));
  CHECK(contains(recipe_error_of(two_models + "parameters:\n  lambda: [{filter: a}]\n"), "has no 'value'"));
  CHECK(contains(recipe_error_of(two_models + "parameters:\n  lambda:\n"), "has no value"));
}

TEST_CASE("values of the wrong type or outside their range", "[io][recipe]") {
  auto with = [](const std::string& params) {
    return "merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1}\nparameters:\n" +
           params;
  };
  CHECK(contains(recipe_error_of(with("  density: 0\n")), "density must be in (0, 1]"));
  CHECK(contains(recipe_error_of(with("  density: 1.5\n")), "parameters.density is 1.5"));
  CHECK(contains(recipe_error_of(with("  density: [0.5, 1.01]\n")), "parameters.density[1] is 1.01"));
  CHECK(contains(recipe_error_of(with("  density: [{filter: mlp, value: -0.1}]\n")), "density[0].value is -0.1"));
  CHECK(contains(recipe_error_of(with("  weight: .nan\n")), "weight must be a finite number"));
  CHECK(contains(recipe_error_of(with("  lambda: .inf\n")), "lambda must be a finite number"));
  CHECK(contains(recipe_error_of(with("  t: 2\n")), "t must be in [0, 1]"));
  CHECK(contains(recipe_error_of(with("  epsilon: -0.1\n")), "epsilon must be in [0, 1)"));
  CHECK(contains(recipe_error_of(with("  gamma: 1.5\n")), "gamma must be in [0, 1]"));
  CHECK(contains(recipe_error_of(with("  density: '0.5'\n")), "is '0.5', not a number"));
  CHECK(contains(recipe_error_of(with("  density: half\n")), "is 'half', not a number"));
  CHECK(contains(recipe_error_of(with("  lambda: true\n")), "is 'true', not a number"));
  CHECK(contains(recipe_error_of(with("  normalize: 1\n")), "not true or false"));
  CHECK(contains(recipe_error_of(with("  consensus_method: median\n")), "not one of sum, count"));
  CHECK(contains(recipe_error_of(with("  density: [[0.5]]\n")), "nested"));
  // YAML 1.1 spellings of booleans are accepted, as PyYAML reads them.
  CHECK(resolve(parse_recipe(with("  normalize: yes\n")), "w", 0).normalize == true);
  CHECK(resolve(parse_recipe(with("  normalize: Off\n")), "w", 0).normalize == false);
}

TEST_CASE("what each method requires of a recipe", "[io][recipe]") {
  CHECK(contains(recipe_error_of("merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"),
                 "merge method ties needs a base_model"));
  CHECK(contains(recipe_error_of("merge_method: ties\nbase_model: a\nmodels:\n  - model: a\n"),
                 "needs at least one model besides the base_model"));
  CHECK(contains(recipe_error_of("merge_method: linear\nmodels: []\n"), "needs at least one model"));
  CHECK(contains(recipe_error_of("merge_method: passthrough\nmodels:\n  - model: a\n  - model: b\n"),
                 "exactly one model"));
  CHECK(contains(recipe_error_of("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                                 "alloy: {output: delta}\n"),
                 "alloy.output: delta needs a task-vector method"));
  CHECK(contains(
      recipe_error_of("merge_method: linear\nmodels:\n  - model: a\n  - model: b\n    parameters: {weight: 1}\n"),
      "models[0] ('a') has no weight"));
  CHECK(contains(recipe_error_of("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n"
                                 "    parameters: {weight: 1, normalize: true}\n"),
                 "applies to the whole merge"));
  // A global weight serves every model; a base listed among the models needs none.
  const recipe r = parse_recipe(
      "merge_method: ties\nbase_model: b\nmodels:\n  - model: b\n  - model: a\n"
      "parameters: {weight: 1}\n");
  CHECK(r.merged == std::vector<std::size_t>{1});
  // linear merges every listed model, the base included; a base it does not list is only
  // the source of the side files.
  const recipe lin = parse_recipe(
      "merge_method: linear\nbase_model: c\nmodels:\n  - model: a\n  - model: b\n"
      "parameters: {weight: 1, density: 0.5}\n");
  CHECK(lin.merged == std::vector<std::size_t>{0, 1});
  CHECK(any_contains(lin.warnings, "base_model is not one of the models"));
  CHECK(any_contains(lin.warnings, "parameters.density (line 6) is not used by merge method linear"));
  // A method alloy does not run yet still parses (the engine reports it).
  const recipe slerp = parse_recipe(
      "merge_method: slerp\nbase_model: a\nmodels:\n  - model: a\n  - model: b\n"
      "parameters: {t: [0, 0.5, 1]}\n");
  CHECK(resolve(slerp, "m.layers.1.w", 3).slerp_t == 0.5);
  CHECK(contains(recipe_error_of("merge_method: slerp\nbase_model: a\nmodels:\n  - model: b\n  - model: c\n"
                                 "parameters: {t: 0.5}\n"),
                 "the base_model and one other model, got 2"));
  CHECK(contains(recipe_error_of("merge_method: slerp\nbase_model: a\nmodels:\n  - model: b\n"),
                 "needs the parameter t"));
}

TEST_CASE("check_parameters: a weight for every tensor and combined constraints", "[io][recipe]") {
  using alloy::io::check_parameters;
  auto check = [](const std::string& text, const std::string& tensor) {
    const recipe r = parse_recipe(text, "/r");
    check_parameters(r, resolve(r, tensor, 4), tensor);
  };
  const std::string filtered =
      "merge_method: task_arithmetic\nbase_model: b\nmodels:\n  - model: a\n"
      "    parameters: {weight: [{filter: mlp, value: 1}]}\n";
  check(filtered, "model.layers.0.mlp.w");
  std::string m = io_test::error_of([&] { check(filtered, "model.norm.weight"); }, errc::invalid_argument);
  CHECK(contains(m, "tensor 'model.norm.weight'"));
  CHECK(contains(m, "models[0] ('a')"));
  CHECK(contains(m, "no weight applies"));

  const std::string crumbs =
      "merge_method: breadcrumbs\nbase_model: b\nmodels:\n  - model: a\n"
      "    parameters: {weight: 1, density: 0.9, gamma: 0.2}\n";
  m = io_test::error_of([&] { check(crumbs, "w"); }, errc::invalid_argument);
  CHECK(contains(m, "gamma 0.2 + density 0.9 exceed 1"));

  const std::string della =
      "merge_method: della\nbase_model: b\nmodels:\n  - model: a\n"
      "    parameters: {weight: 1, density: 0.1, epsilon: 0.15}\n";
  m = io_test::error_of([&] { check(della, "w"); }, errc::invalid_argument);
  CHECK(contains(m, "density 0.1 and epsilon 0.15"));
  check("merge_method: della\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.5}\n", "w");

  const std::string slerp =
      "merge_method: slerp\nbase_model: b\nmodels:\n  - model: a\nparameters:\n"
      "  t: [{filter: mlp, value: 0.3}]\n";
  check(slerp, "m.layers.0.mlp.w");
  m = io_test::error_of([&] { check(slerp, "m.norm.weight"); }, errc::invalid_argument);
  CHECK(contains(m, "tensor 'm.norm.weight': no t applies"));
}
