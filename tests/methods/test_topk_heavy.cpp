// The sampled top-k with heavy keys (methods/detail/sampled_topk.hpp): band keys frequent in
// the sample are counted per work item instead of collected, so data with massive tie groups
// (bf16 task vectors) keeps the one-pass selection. The cut must equal the radix selection's
// for cuts inside a heavy group (the tie position found by scanning one item), between heavy
// keys and on collected keys, for 1 and 2 threads; and the sampled pass must answer.
#include <alloy/methods/detail/sampled_topk.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

using namespace alloy;
using namespace alloy::detail;

namespace {

template <class T>
std::size_t compare_all_k(const std::vector<T>& base, const std::vector<std::vector<T>>& models,
                          const std::vector<std::size_t>& kvals) {
  std::vector<tensor_view> views;
  for (const auto& m : models) views.emplace_back(m);
  std::vector<T> out(base.size());
  const sparse_job job{"t", base, views, out, {}};
  const std::size_t n = base.size();
  std::size_t answered = 0;
  // storage_precision (tau rounded to the storage type, preset peft) takes the scan of the
  // cut's item through the produced tau; without it, bf16 and f32 pairs scan in registers.
  for (std::size_t k : kvals)
    for (unsigned threads : {1u, 2u})
      for (bool storage : {false, true}) {
        const std::vector<std::size_t> ks(models.size(), k);
        const auto sampled = sampled_topk(job, ks, storage, execution{threads});
        const std::size_t sizes[1] = {n};
        for (std::size_t i = 0; i < models.size(); ++i) {
          const topk_rule radix = topk_select(sizes, k, task_vector_producer{std::span(&job, 1), i, storage}).rule(0);
          INFO("n " << n << " k " << k << " model " << i << " threads " << threads << " storage " << storage);
          if (sampled[i]) {
            ++answered;
            CHECK(sampled[i]->key == radix.key);
            CHECK(sampled[i]->tie_end == radix.tie_end);
          }
        }
      }
  return answered;
}

}  // namespace

TEST_CASE("sampled top-k with heavy keys: bf16 fine-tunes", "[methods][topk][sampled]") {
  // base + 0.01 * noise in bf16, as benchmarks/bench_sparsify.cpp makes: a few distinct
  // magnitudes hold most entries, so the cut falls inside a huge tie group.
  const std::size_t n = 300007;
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<bf16> base(n);
  std::vector<std::vector<bf16>> models(3, std::vector<bf16>(n));
  for (std::size_t j = 0; j < n; ++j) {
    base[j] = bf16(d(gen));
    for (auto& m : models) m[j] = bf16(static_cast<float>(base[j]) + 0.01f * d(gen));
  }
  const std::size_t answered = compare_all_k(base, models, {n / 100, n / 5, n / 3, n / 2, n - n / 50});
  CHECK(answered >= 20);  // the heavy path answered (most of) the cuts
}

TEST_CASE("sampled top-k with heavy keys: a few magnitudes mixed with distinct ones", "[methods][topk][sampled]") {
  const std::size_t n = 131072 + 77;
  std::mt19937 gen(4);
  std::normal_distribution<float> d;
  std::vector<float> base(n, 0.f);
  std::vector<std::vector<float>> models(2, std::vector<float>(n));
  for (std::size_t j = 0; j < n; ++j) {
    const int r = static_cast<int>(gen() % 10);
    // 0.5 and 0.25 each ~20% of the entries (heavy), the rest distinct values around them.
    models[0][j] = r < 2 ? 0.5f : r < 4 ? -0.25f : 0.4f * d(gen);
    models[1][j] = r < 3 ? -0.5f : 0.6f * d(gen);
  }
  const std::size_t answered = compare_all_k(base, models, {n / 10, n / 5, n / 4, 3 * n / 10, n / 3, n / 2});
  CHECK(answered >= 12);
}
