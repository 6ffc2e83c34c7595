// ties with preset paper through the streaming engine (io/engine_whole_model.hpp): one top-k
// per model over all tensors and the model-wide zero vote, planned before the first tensor is
// merged; the merged checkpoint equals alloy::ties on the whole models, bit for bit.
#include "engine_test_util.hpp"

#include <alloy/methods/ties.hpp>

#include <cstring>

#include <string>
#include <vector>

using namespace engine_test;

namespace {

const char* recipe_text =
    "merge_method: ties\nbase_model: m0\nalloy: {preset: paper}\nmodels:\n"
    "  - model: m1\n    parameters: {weight: 0.5, density: 0.3}\n"
    "  - model: m2\n    parameters: {weight: 0.3, density: 0.2}\n"
    "  - model: m3\n    parameters: {weight: 0.2, density: 0.5}\n";

}  // namespace

TEST_CASE("ties with preset paper equals the model-level ties, for any thread count", "[io][engine][ties]") {
  fixture f(4, float_model());
  alloy::ties_options o = alloy::ties_options::preset(alloy::preset::paper);
  o.densities = {0.3, 0.2, 0.5};
  const tensor_set want = alloy::ties(f.models[0], {f.models[1], f.models[2], f.models[3]}, {0.5, 0.3, 0.2}, o);
  for (const unsigned threads : {1u, 2u}) {
    INFO("threads " << threads);
    fs::remove_all(f.out());
    merge_options mo;
    mo.exec = alloy::execution{threads};
    merge_to_folder(f.parse(recipe_text), f.out(), mo);
    check_merged_equals(f.out(), f.models[0], want);
  }
  // The whole-model cut differs from trimming each tensor on its own (mergekit's preset).
  fs::remove_all(f.out());
  std::string per_tensor = recipe_text;
  per_tensor.replace(per_tensor.find("paper"), 5, "mergekit");
  merge_to_folder(f.parse(per_tensor), f.out());
  const auto got = alloy::io::open_checkpoint(f.out());
  bool differs = false;
  for (const auto& t : got.tensors())
    differs = differs || bytes_of(t.data().data(), t.bytes()) != bytes_of(want.at(t.name()).view().data, t.bytes());
  CHECK(differs);
}

TEST_CASE("ties with preset paper needs one density and weight per model for all tensors", "[io][engine][ties]") {
  fixture f(3, float_model());
  const std::string text =
      "merge_method: ties\nbase_model: m0\nalloy: {preset: paper}\nmodels:\n"
      "  - model: m1\n    parameters: {weight: 1, density: [0.2, 0.6]}\n"
      "  - model: m2\n    parameters: {weight: 1, density: 0.5}\n";
  try {
    merge_to_folder(f.parse(text), f.out());
    FAIL("no error");
  } catch (const alloy::io::recipe_error& e) {
    CHECK(std::string(e.what()).find("density differs between tensor") != std::string::npos);
  }
  CHECK(f.untouched());
}
