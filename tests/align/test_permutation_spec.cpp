// Permutation specs: builders, YAML, validation against a model, applying permutations.
#include <alloy/align/apply.hpp>
#include <alloy/align/permutation_spec.hpp>
#include <alloy/align/permutation_spec_yaml.hpp>

#include "support/reference.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

using namespace alloy;
using namespace alloy::align;

namespace {

const char* const issue_yaml = R"(tensors:
  layers.0.weight: [P0, null]   # [out, in]: rows permuted by P0
  layers.0.bias:   [P0]
  layers.2.weight: [P1, P0]
  layers.2.bias:   [P1]
  layers.4.weight: [null, P1]
  layers.4.bias:   [null]
)";

std::vector<float> iota_floats(std::size_t n, float start = 0) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

// layers.0 [3, 2], layers.2 [4, 3], layers.4 [2, 4]: an MLP 2-3-4-2.
tensor_set small_mlp() {
  tensor_set m;
  m.add("layers.0.weight", iota_floats(6), {3, 2});
  m.add("layers.0.bias", iota_floats(3, 100), {3});
  m.add("layers.2.weight", iota_floats(12, 200), {4, 3});
  m.add("layers.2.bias", iota_floats(4, 300), {4});
  m.add("layers.4.weight", iota_floats(8, 400), {2, 4});
  m.add("layers.4.bias", iota_floats(2, 500), {2});
  return m;
}

bool same_spec(const permutation_spec& a, const permutation_spec& b) {
  if (a.tensors() != b.tensors() || a.groups() != b.groups()) return false;
  for (const auto& t : a.tensors())
    if (a.axes(t) != b.axes(t)) return false;
  return true;
}

template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no error)";
}
template <class F>
errc error_code(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.code();
  }
  FAIL("no alloy::error thrown");
  return errc::invalid_argument;
}

const std::optional<std::string> none = std::nullopt;

}  // namespace

TEST_CASE("permutation_spec: add, groups in order of first appearance, group axes", "[align][permutation_spec]") {
  permutation_spec s;
  s.add("a", {"P1", none}).add("b", {"P1"}).add("c", {"P0", "P1"}).add("d", {none});
  CHECK(s.size() == 4);
  CHECK(s.tensors() == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(s.groups() == std::vector<std::string>{"P1", "P0"});
  CHECK(s.group_axes("P1") == std::vector<tensor_axis>{{"a", 0}, {"b", 0}, {"c", 1}});
  CHECK(s.group_axes("P0") == std::vector<tensor_axis>{{"c", 0}});
  CHECK(s.axes("c") == axis_groups{"P0", "P1"});
  CHECK(s.find("zz") == nullptr);
  CHECK(s.contains("d"));
  CHECK_FALSE(s.has_group("P2"));
}

TEST_CASE("mlp_permutation_spec is the issue's YAML example", "[align][permutation_spec]") {
  const permutation_spec built = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  const permutation_spec parsed = parse_permutation_spec_yaml(issue_yaml);
  CHECK(same_spec(built, parsed));
  CHECK(built.groups() == std::vector<std::string>{"P0", "P1"});
  CHECK(built.axes("layers.4.weight") == axis_groups{none, "P1"});
  CHECK(built.axes("layers.4.bias") == axis_groups{none});
  // without biases
  const permutation_spec nb = mlp_permutation_spec({"fc1", "fc2"}, false, "H");
  CHECK(nb.tensors() == std::vector<std::string>{"fc1.weight", "fc2.weight"});
  CHECK(nb.axes("fc2.weight") == axis_groups{none, "H0"});
  CHECK(error_code([] { mlp_permutation_spec({}); }) == errc::empty_input);
}

TEST_CASE("chain and conv net builders", "[align][permutation_spec]") {
  const permutation_spec s = conv_net_permutation_spec({"conv1", "conv2"}, {"fc1", "fc2"}, {"bn1", ""});
  CHECK(s.axes("conv1.weight") == axis_groups{"P0", none, none, none});
  CHECK(s.axes("conv1.bias") == axis_groups{"P0"});
  CHECK(s.axes("bn1.weight") == axis_groups{"P0"});
  CHECK(s.axes("bn1.running_var") == axis_groups{"P0"});
  CHECK_FALSE(s.contains("bn1.num_batches_tracked"));
  CHECK(s.axes("conv2.weight") == axis_groups{"P1", "P0", none, none});
  CHECK(s.axes("fc1.weight") == axis_groups{"P2", "P1"});
  CHECK(s.axes("fc2.weight") == axis_groups{none, "P2"});
  CHECK(s.axes("fc2.bias") == axis_groups{none});

  const permutation_spec c = chain_permutation_spec(
      {{"c", chain_layer::conv1d, false}, {"ln", chain_layer::layer_norm}, {"out", chain_layer::linear}});
  CHECK(c.tensors() == std::vector<std::string>{"c.weight", "ln.weight", "ln.bias", "out.weight", "out.bias"});
  CHECK(c.axes("c.weight") == axis_groups{"P0", none, none});
  CHECK(c.axes("ln.bias") == axis_groups{"P0"});
  CHECK(error_code([] { conv_net_permutation_spec({"a"}, {"b"}, {"x", "y"}); }) == errc::invalid_argument);
  CHECK(error_code([] { chain_permutation_spec({{"n", chain_layer::batch_norm}}); }) == errc::empty_input);
}

TEST_CASE("residual streams share one group", "[align][permutation_spec]") {
  const permutation_spec s =
      residual_mlp_permutation_spec("embed", {{"blocks.0.norm", "blocks.0.up", "blocks.0.down"}, {"", "blocks.1.up", "blocks.1.down"}},
                                    "head", "final_norm");
  CHECK(s.groups() == std::vector<std::string>{"P_res", "P_block0", "P_block1"});
  CHECK(s.group_axes("P_res") == std::vector<tensor_axis>{{"embed.weight", 0},
                                                           {"embed.bias", 0},
                                                           {"blocks.0.norm.weight", 0},
                                                           {"blocks.0.norm.bias", 0},
                                                           {"blocks.0.up.weight", 1},
                                                           {"blocks.0.down.weight", 0},
                                                           {"blocks.0.down.bias", 0},
                                                           {"blocks.1.up.weight", 1},
                                                           {"blocks.1.down.weight", 0},
                                                           {"blocks.1.down.bias", 0},
                                                           {"final_norm.weight", 0},
                                                           {"final_norm.bias", 0},
                                                           {"head.weight", 1}});
  CHECK(s.axes("blocks.1.up.weight") == axis_groups{"P_block1", "P_res"});

  // git-re-basin's resnet style: the member helpers, one stream group through conv blocks.
  permutation_spec r;
  r.conv("conv1", "P_bg0", none, 2, false).norm("bn1", "P_bg0", true);
  r.conv("block.conv1", "P_inner", "P_bg0", 2, false).norm("block.bn1", "P_inner", true);
  r.conv("block.conv2", "P_bg0", "P_inner", 2, false).norm("block.bn2", "P_bg0", true);
  r.linear("fc", none, "P_bg0").embedding("tok", "P_bg0");
  CHECK(r.group_axes("P_bg0").size() == 1 + 4 + 1 + 1 + 4 + 1 + 1);
  CHECK(r.axes("tok.weight") == axis_groups{none, "P_bg0"});
}

TEST_CASE("group_sizes validates a model", "[align][permutation_spec]") {
  const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  tensor_set m = small_mlp();
  m.add("extra", std::vector<float>{1, 2}, {2});  // not listed: fine
  const group_size_map sizes = s.group_sizes(m);
  CHECK(sizes == group_size_map{{"P0", 3}, {"P1", 4}});
}

TEST_CASE("group_sizes: a listed tensor missing from the model", "[align][permutation_spec][errors]") {
  const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2", "layers.4", "layers.6"});
  const tensor_set m = small_mlp();
  CHECK(error_code([&] { s.group_sizes(m, "model B"); }) == errc::missing_tensor);
  CHECK(error_text([&] { s.group_sizes(m, "model B"); }) ==
        "permutation spec: tensor 'layers.6.weight' (axis 1 in group 'P2') is not in model B");
}

TEST_CASE("group_sizes: a rank that differs from the spec", "[align][permutation_spec][errors]") {
  permutation_spec s;
  s.add("layers.0.weight", {"P0"});
  const tensor_set m = small_mlp();
  CHECK(error_code([&] { s.group_sizes(m); }) == errc::shape_mismatch);
  CHECK_THAT(error_text([&] { s.group_sizes(m); }),
             Catch::Contains("'layers.0.weight' has shape [3, 2] (2 axes) in the model, but the spec lists 1 axes"));
}

TEST_CASE("group_sizes: a group whose axes differ in size", "[align][permutation_spec][errors]") {
  permutation_spec s;
  s.add("layers.0.weight", {"P0", none}).add("layers.2.weight", {"P0", none});  // sizes 3 and 4
  const tensor_set m = small_mlp();
  CHECK(error_code([&] { s.group_sizes(m, "model A"); }) == errc::shape_mismatch);
  CHECK(error_text([&] { s.group_sizes(m, "model A"); }) ==
        "permutation spec: group 'P0' permutes axis 0 of tensor 'layers.0.weight' (size 3) and axis 0 of tensor "
        "'layers.2.weight' (size 4) in model A: the axes of one group must have one size");
}

TEST_CASE("permutation_spec: bad construction", "[align][permutation_spec][errors]") {
  permutation_spec s;
  s.add("w", {"P0"});
  CHECK(error_code([&] { s.add("w", {"P1"}); }) == errc::duplicate_name);
  CHECK(error_code([&] { s.add("", {"P1"}); }) == errc::invalid_argument);
  CHECK_THAT(error_text([&] { s.add("v", {none, ""}); }), Catch::Contains("tensor 'v' axis 1: an empty group name"));
  CHECK(error_code([&] { s.group_axes("nope"); }) == errc::invalid_argument);
  CHECK(error_code([&] { s.axes("nope"); }) == errc::missing_tensor);
}

TEST_CASE("check_permutations", "[align][permutation_spec][errors]") {
  const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  const group_size_map sizes = s.group_sizes(small_mlp());
  permutation_map ok{{"P0", {2, 0, 1}}, {"P1", {0, 1, 2, 3}}};
  CHECK_NOTHROW(s.check_permutations(ok, sizes));
  CHECK(permutation_spec::identity(sizes) == permutation_map{{"P0", {0, 1, 2}}, {"P1", {0, 1, 2, 3}}});

  auto bad = ok;
  bad.erase("P1");
  CHECK_THAT(error_text([&] { s.check_permutations(bad, sizes, "f"); }),
             Catch::Contains("f: no permutation for group 'P1' (it permutes axis 0 of tensor 'layers.2.weight')"));
  bad = ok;
  bad["P7"] = {0};
  CHECK_THAT(error_text([&] { s.check_permutations(bad, sizes); }),
             Catch::Contains("group 'P7', which permutes no tensor of the spec"));
  bad = ok;
  bad["P0"] = {0, 1};
  CHECK_THAT(error_text([&] { s.check_permutations(bad, sizes); }),
             Catch::Contains("the permutation of group 'P0' has 2 entries, the group has size 3"));
  bad = ok;
  bad["P0"] = {0, 0, 1};
  CHECK_THAT(error_text([&] { s.check_permutations(bad, sizes); }), Catch::Contains("entry 1 is 0 (repeated)"));
  bad = ok;
  bad["P0"] = {0, 3, 1};
  CHECK_THAT(error_text([&] { s.check_permutations(bad, sizes); }), Catch::Contains("entry 1 is 3 (out of range)"));
  CHECK(inverse_permutation({2, 0, 1}) == std::vector<std::size_t>{1, 2, 0});
}

// ---- YAML --------------------------------------------------------------------------------

TEST_CASE("YAML: nulls, quoting, round trip", "[align][permutation_spec][yaml]") {
  const permutation_spec s = parse_permutation_spec_yaml(R"(
# a comment
tensors:
  "w.0": [~, "null", 7]
  b: [g]
  scalar: []
)");
  CHECK(s.axes("w.0") == axis_groups{none, "null", "7"});
  CHECK(s.axes("scalar").empty());
  CHECK(s.groups() == std::vector<std::string>{"null", "7", "g"});
  const permutation_spec back = parse_permutation_spec_yaml(to_yaml(s));
  CHECK(same_spec(s, back));
  const permutation_spec mlp = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  CHECK(same_spec(parse_permutation_spec_yaml(to_yaml(mlp)), mlp));
}

TEST_CASE("YAML: malformed specs", "[align][permutation_spec][yaml][errors]") {
  auto text = [](const char* y) { return error_text([&] { parse_permutation_spec_yaml(y, "spec.yaml"); }); };
  auto code = [](const char* y) { return error_code([&] { parse_permutation_spec_yaml(y, "spec.yaml"); }); };
  CHECK(code("tensors: [a") == errc::malformed_file);
  CHECK_THAT(text("tensors: [a"), Catch::StartsWith("permutation spec spec.yaml:"));
  CHECK_THAT(text("- a\n- b\n"), Catch::Contains("expected a map with the key 'tensors'"));
  CHECK_THAT(text("tensor:\n  a: [P0]\n"), Catch::Contains("spec.yaml:1:1: unknown key 'tensor'"));
  CHECK_THAT(text("other: 1\n"), Catch::Contains("unknown key 'other'"));
  CHECK_THAT(text("tensors: 3\n"), Catch::Contains("'tensors' must be a map"));
  CHECK_THAT(text("tensors:\n  a: P0\n"), Catch::Contains("spec.yaml:2:6: tensor 'a': expected a list"));
  CHECK_THAT(text("tensors:\n  a: [P0, [x]]\n"), Catch::Contains("tensor 'a' axis 1: a group must be a name or null"));
  CHECK_THAT(text("tensors:\n  a: [P0]\n  a: [P1]\n"), Catch::Contains("spec.yaml:3:3: permutation spec: tensor 'a' is listed twice"));
  CHECK_THAT(text("tensors:\n  a: ['']\n"), Catch::Contains("an empty group name"));
  CHECK(error_code([] { load_permutation_spec("/nonexistent/spec.yaml"); }) == errc::io_error);
}

// ---- applying permutations -----------------------------------------------------------------

TEST_CASE("apply_permutations: an MLP, by hand", "[align][apply]") {
  const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  tensor_set m = small_mlp();
  m.add("step", std::vector<float>{7}, {1});
  const permutation_map p{{"P0", {2, 0, 1}}, {"P1", {3, 2, 1, 0}}};
  const tensor_set out = apply_permutations(s, m, p);
  REQUIRE(out.size() == m.size());
  std::vector<std::string> names;
  for (const auto& e : out) names.push_back(e.name());
  CHECK(names == std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                                          "layers.4.weight", "layers.4.bias", "step"});
  // layers.0.weight [3, 2] = {{0, 1}, {2, 3}, {4, 5}}: rows 2, 0, 1
  CHECK(std::vector<float>(out.at("layers.0.weight").values<float>().begin(), out.at("layers.0.weight").values<float>().end()) ==
        std::vector<float>{4, 5, 0, 1, 2, 3});
  auto vals = [&](const char* n) {
    auto v = out.at(n).values<float>();
    return std::vector<float>(v.begin(), v.end());
  };
  CHECK(vals("layers.0.bias") == std::vector<float>{102, 100, 101});
  // layers.2.weight [4, 3] = 200 + 3 r + c: rows 3, 2, 1, 0, columns 2, 0, 1
  CHECK(vals("layers.2.weight") ==
        std::vector<float>{211, 209, 210, 208, 206, 207, 205, 203, 204, 202, 200, 201});
  CHECK(vals("layers.2.bias") == std::vector<float>{303, 302, 301, 300});
  // layers.4.weight [2, 4] = 400 + 4 r + c: columns 3, 2, 1, 0
  CHECK(vals("layers.4.weight") == std::vector<float>{403, 402, 401, 400, 407, 406, 405, 404});
  CHECK(vals("layers.4.bias") == std::vector<float>{500, 501});
  CHECK(vals("step") == std::vector<float>{7});

  // The inverse permutations restore the model.
  permutation_map inv;
  for (const auto& [g, q] : p) inv[g] = inverse_permutation(q);
  const tensor_set back = apply_permutations(s, out, inv, {.exec = {2}});
  for (const auto& e : m) {
    auto a = e.values<float>();
    auto b = back.at(e.name()).values<float>();
    CHECK(std::vector<float>(a.begin(), a.end()) == std::vector<float>(b.begin(), b.end()));
  }
}

TEST_CASE("apply_permutations: any dtype, a group on two axes, a 4-D conv kernel", "[align][apply]") {
  permutation_spec s;
  s.add("h", {"P", "P"}).add("mask", {"P"}).conv("conv", "Q", "P", 2, false);
  tensor_set m;
  m.add("h", std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8}, {3, 3});
  const mutable_tensor_view mask = m.add("mask", dtype::i64, {3});
  const std::int64_t mv[3] = {10, 11, 12};
  std::memcpy(mask.data, mv, sizeof mv);
  std::vector<bf16> conv;
  for (int i = 0; i < 2 * 3 * 2 * 2; ++i) conv.push_back(bf16(static_cast<float>(i)));
  m.add("conv.weight", conv, {2, 3, 2, 2});
  const permutation_map p{{"P", {1, 2, 0}}, {"Q", {1, 0}}};
  const tensor_set out = apply_permutations(s, m, p);
  auto h = out.at("h").values<double>();
  // out[i][j] = h[p[i]][p[j]] = 3 p[i] + p[j]
  CHECK(std::vector<double>(h.begin(), h.end()) == std::vector<double>{4, 5, 3, 7, 8, 6, 1, 2, 0});
  CHECK(out.at("mask").type() == dtype::i64);
  const auto* mo = static_cast<const std::int64_t*>(out.at("mask").view().data);
  CHECK(std::vector<std::int64_t>(mo, mo + 3) == std::vector<std::int64_t>{11, 12, 10});
  auto c = out.at("conv.weight").values<bf16>();
  for (std::size_t o = 0; o < 2; ++o)
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t k = 0; k < 4; ++k)
        CHECK(static_cast<float>(c[(o * 3 + i) * 4 + k]) ==
              static_cast<float>(conv[(p.at("Q")[o] * 3 + p.at("P")[i]) * 4 + k]));
}

TEST_CASE("permute_tensor against a reference on a 3-D tensor", "[align][apply]") {
  const std::vector<std::size_t> shape{4, 5, 3};
  const auto vals = alloy_test::random_values(60, 3, -1, 1);
  std::vector<float> in(vals.begin(), vals.end()), out(60);
  const std::vector<std::size_t> p0{3, 1, 0, 2}, p2{2, 0, 1};
  permute_tensor(in, shape, {&p0, nullptr, &p2}, out);
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 5; ++j)
      for (std::size_t k = 0; k < 3; ++k) REQUIRE(out[(i * 5 + j) * 3 + k] == in[(p0[i] * 5 + j) * 3 + p2[k]]);
  const std::vector<std::size_t> bad{0, 0, 1, 2};
  CHECK(error_code([&] { permute_tensor(in, shape, {&bad, nullptr, nullptr}, out); }) == errc::invalid_argument);
  CHECK(error_code([&] { permute_tensor(in, {4, 5}, {nullptr, nullptr}, out); }) == errc::size_mismatch);
  CHECK(error_code([&] { permute_tensor(in, shape, {nullptr, nullptr, nullptr}, in); }) == errc::aliasing);
}

TEST_CASE("apply_permutations: bad input", "[align][apply][errors]") {
  const permutation_spec s = mlp_permutation_spec({"layers.0", "layers.2", "layers.4"});
  const tensor_set m = small_mlp();
  CHECK_THAT(error_text([&] { apply_permutations(s, m, permutation_map{{"P0", {0, 1, 2}}}); }),
             Catch::Contains("apply_permutations: no permutation for group 'P1'"));
  CHECK_THAT(error_text([&] {
               apply_permutations(s, m, permutation_map{{"P0", {0, 1, 2}}, {"P1", {0, 1, 2, 3}}, {"X", {0}}});
             }),
             Catch::Contains("group 'X', which permutes no tensor of the spec"));
  tensor_set missing;
  missing.add("layers.0.weight", iota_floats(6), {3, 2});
  CHECK(error_code([&] { apply_permutations(s, missing, permutation_map{}); }) == errc::missing_tensor);
}
