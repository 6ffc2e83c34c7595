// merge_bf16: merging raw bfloat16 buffers, into bf16 and into float.
// alloy widens bf16 to float, computes in float, and rounds once when it stores. The
// program exits 1 if a result is not what the comments say.
#include <alloy/alloy.hpp>

#include <cstdio>
#include <memory>
#include <span>
#include <vector>

using alloy::bf16;

int main() {
  // Three models of one parameter. bf16 keeps 8 significant bits: just above 1.0 the
  // representable values are 1, 1.0078125 (1 + 2^-7), ...
  const std::vector<bf16> a{bf16(1.0f)};
  const std::vector<bf16> b{bf16(1.0078125f)};
  const std::vector<bf16> c{bf16(1.0078125f)};

  // Output buffers you own: a std::span<bf16> over any memory works, as does a vector.
  auto memory = std::make_unique<bf16[]>(1);
  const std::span<bf16> out_bf16(memory.get(), 1);
  std::vector<float> out_f32(1);

  // The mean is 3.015625 / 3 = 1.0052083...: float holds it to 24 bits; bf16 rounds it once
  // to the nearest bf16, 1.0078125.
  alloy::uniform_soup({a, b, c}, out_bf16);
  alloy::uniform_soup({a, b, c}, out_f32);  // same bf16 inputs, float output: no rounding to bf16
  const float mean_bf16 = out_bf16[0];      // bf16 widens to float implicitly (exactly)
  std::printf("uniform soup into bf16:  %.9g\n", static_cast<double>(mean_bf16));
  std::printf("uniform soup into float: %.9g\n", static_cast<double>(out_f32[0]));

  // What bf16 arithmetic (rounding after every step, as merging in the storage dtype does)
  // would give: 1 + 1.0078125 = 2.0078125 is a tie at bf16's spacing of 2^-6 there and rounds
  // to even, 2.0; + 1.0078125 rounds to 3.0 the same way; / 3 gives 1.0. The error is
  // twice alloy's, and it grows with the number of models.
  bf16 acc = a[0];
  acc = bf16(static_cast<float>(acc) + static_cast<float>(b[0]));
  acc = bf16(static_cast<float>(acc) + static_cast<float>(c[0]));
  const bf16 naive = bf16(static_cast<float>(acc) / 3.0f);
  std::printf("bf16 step-by-step:       %.9g\n", static_cast<double>(static_cast<float>(naive)));

  // Mixed dtypes: bf16 models and a float base go into one task-arithmetic merge.
  const std::vector<float> base{1.0f};
  std::vector<float> task_f32(1);
  alloy::task_arithmetic(base, {b, c}, {0.25, 0.25}, task_f32);  // 1 + 0.5 * 2^-7
  std::printf("task arithmetic (float): %.9g\n", static_cast<double>(task_f32[0]));

  const bool ok = mean_bf16 == 1.0078125f && out_f32[0] == 3.015625f / 3.0f &&
                  static_cast<float>(naive) == 1.0f && task_f32[0] == 1.00390625f;
  std::printf("%s\n", ok ? "all results as expected" : "UNEXPECTED RESULT");
  return ok ? 0 : 1;
}
