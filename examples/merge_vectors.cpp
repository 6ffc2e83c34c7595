// merge_vectors: alloy's linear merges on std::vector<float> "models". Every result is
// exact in float; the program exits 1 if one is not what its comment says.
#include <alloy/alloy.hpp>
#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

static int failures = 0;
static void show(const char* what, std::span<const float> got, const std::vector<float>& want) {
  const bool ok = std::equal(got.begin(), got.end(), want.begin(), want.end());
  std::printf("%-36s", what);
  for (float x : got) std::printf(" %6.3f", static_cast<double>(x));
  std::printf("%s\n", ok ? "" : "   <-- unexpected");
  failures += !ok;
}

int main() {
  // One 4-parameter layer: a base model and three fine-tunes of it.
  const std::vector<float> base{1, 1, 1, 1};
  const std::vector<float> math{2, 1, 1, 3};   // task vector math - base = {1, 0, 0, 2}
  const std::vector<float> code{1, 3, 1, 1};   // task vector             {0, 2, 0, 0}
  const std::vector<float> toxic{1, 1, 5, 1};  // task vector             {0, 0, 4, 0}
  std::vector<float> out(4);  // outputs are written in place: any mutable tensor of the right size

  // Uniform soup (Wortsman et al. 2022): the element-wise mean.
  alloy::uniform_soup({math, code}, out);
  show("uniform_soup(math, code)", out, {1.5, 2, 1, 2});

  // Weighted average: sum_i w_i x_i / sum_i w_i (normalize is on by default).
  alloy::weighted_average({math, code}, {3.0, 1.0}, out);
  show("weighted_average(3:1)", out, {1.75, 1.5, 1, 2.5});

  // Task arithmetic (Ilharco et al. 2023): base + sum_i w_i (x_i - base). A negative weight
  // subtracts a task vector: task negation, e.g. to forget what `toxic` learned.
  alloy::task_arithmetic(base, {math, code, toxic}, {1.0, 1.0, -1.0}, out);
  show("task_arithmetic(+math +code -toxic)", out, {2, 3, -3, 3});

  // Whole models (state dicts): any range of (name, tensor) pairs, e.g. a std::map. Names
  // are matched across models; the result is an alloy::tensor_set.
  using model = std::map<std::string, std::vector<float>>;
  const model a{{"layer.weight", {1, 2, 3, 4}}, {"layer.bias", {0, 0}}};
  const model b{{"layer.weight", {3, 4, 5, 6}}, {"layer.bias", {1, -1}}};
  const alloy::tensor_set soup = alloy::uniform_soup(std::array{std::cref(a), std::cref(b)});
  show("soup of maps: layer.bias", soup.at("layer.bias").values<float>(), {0.5, -0.5});
  show("soup of maps: layer.weight", soup.at("layer.weight").values<float>(), {2, 3, 4, 5});

  // An alloy::tensor_set (owning, insertion-ordered): base + 0.5 (tuned - base).
  alloy::tensor_set base_set, tuned_set;
  base_set.add("w", std::vector<float>{1, 1});
  tuned_set.add("w", std::vector<float>{2, 4});
  const alloy::tensor_set half = alloy::task_arithmetic(base_set, {tuned_set}, {0.5});
  show("task_arithmetic of tensor_sets: w", half.at("w").values<float>(), {1.5, 2.5});
  return failures == 0 ? 0 : 1;
}
