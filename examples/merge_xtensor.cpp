// merge_xtensor: merging xt::xtensor layers with alloy.
// The program exits 1 if a result is not what the comments say.
#include <alloy/adapters/xtensor.hpp>  // first: makes row-major xtensor containers alloy tensors
#include <alloy/alloy.hpp>

#include <array>
#include <cstdio>
#include <iostream>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xio.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

static int failures = 0;
static void check(const char* what, bool ok) {
  std::printf("%s: %s\n", what, ok ? "ok" : "UNEXPECTED");
  failures += !ok;
}

int main() {
  // A 2 x 3 layer: the pretrained base and two fine-tunes.
  const xt::xtensor<float, 2> base = {{0, 0, 0}, {1, 1, 1}};
  const xt::xtensor<float, 2> ft_a = {{2, 0, 0}, {1, 3, 1}};  // task vector {{2,0,0},{0,2,0}}
  const xt::xtensor<float, 2> ft_b = {{0, 0, 4}, {1, 1, 1}};  // task vector {{0,0,4},{0,0,0}}

  // theta = base + lambda * (w_a tau_a + w_b tau_b), written into an xtensor of the same
  // element count (the output is any mutable row-major tensor).
  xt::xtensor<float, 2> merged = xt::zeros<float>({2, 3});
  alloy::task_arithmetic(base, {ft_a, ft_b}, {1.0, 1.0}, merged, {.lambda = 0.5});
  std::cout << "task_arithmetic(lambda 0.5):\n" << merged << "\n";
  check("merged layer", merged == xt::xtensor<float, 2>{{1, 0, 2}, {1, 2, 1}});

  // A contiguous row of a row-major xtensor is a tensor too: merge row 1 alone into row 0.
  alloy::uniform_soup({xt::view(ft_a, 1), xt::view(base, 1)}, xt::view(merged, 0));
  check("row merge", merged == xt::xtensor<float, 2>{{1, 2, 1}, {1, 2, 1}});

  // Whole models: an alloy::tensor_set built from xtensors keeps each tensor's shape.
  const auto model = [](const xt::xtensor<float, 2>& weight) {
    alloy::tensor_set set;
    set.add("layer0.weight", weight);  // shape {2, 3}, from the xtensor
    set.add("layer0.bias", xt::xtensor<float, 1>{0.5f, 0.5f});
    return set;
  };
  const alloy::tensor_set base_set = model(base), a_set = model(ft_a), b_set = model(ft_b);
  const alloy::tensor_set out = alloy::task_arithmetic(base_set, {a_set, b_set}, {1.0, -0.5});
  for (const auto& t : out) {  // back to xtensor: adapt the values with the recorded shape
    const auto v = t.values<float>();
    std::cout << t.name() << ":\n" << xt::adapt(v.data(), v.size(), xt::no_ownership(), t.shape()) << "\n";
  }
  // base + tau_a - 0.5 tau_b = {{2, 0, -2}, {1, 3, 1}}; the equal biases stay 0.5.
  const auto w = out.at("layer0.weight").values<float>();
  const xt::xtensor<float, 2> weight = xt::adapt(w.data(), w.size(), xt::no_ownership(),
                                                 std::array<std::size_t, 2>{2, 3});
  check("model merge", out.at("layer0.weight").shape() == std::vector<std::size_t>{2, 3} &&
                           weight == xt::xtensor<float, 2>{{2, 0, -2}, {1, 3, 1}} &&
                           out.at("layer0.bias").values<float>()[1] == 0.5f);
  return failures == 0 ? 0 : 1;
}
