// The sampled one-pass top-k (methods/detail/sampled_topk.hpp) must give exactly the cut of
// the radix selection (topk_select) whenever it answers, and tensor_cuts must always match.
#include <alloy/methods/detail/sampled_topk.hpp>

#include <catch2/catch.hpp>

#include <random>
#include <vector>

using namespace alloy;
using namespace alloy::detail;

namespace {

template <class T>
void check_against_radix(const std::vector<T>& base, const std::vector<std::vector<T>>& models, unsigned threads,
                         std::size_t* answered) {
  std::vector<tensor_view> views;
  for (const auto& m : models) views.emplace_back(m);
  std::vector<T> out(base.size());
  const sparse_job job{"t", base, views, out, {}};
  const std::size_t n = base.size();
  for (std::size_t k : {std::size_t{1}, n / 100, n / 5, n / 2, n - 1}) {
    const std::vector<std::size_t> ks(models.size(), k);
    const auto sampled = sampled_topk(job, ks, false, execution{threads});
    const auto cuts = tensor_cuts(job, ks, false, execution{threads});
    const std::size_t sizes[1] = {n};
    for (std::size_t i = 0; i < models.size(); ++i) {
      const topk_rule radix = topk_select(sizes, k, task_vector_producer{std::span(&job, 1), i, false}).rule(0);
      INFO("n " << n << " k " << k << " model " << i);
      if (sampled[i]) {
        ++*answered;
        CHECK(sampled[i]->key == radix.key);
        CHECK(sampled[i]->tie_end == radix.tie_end);
      }
      CHECK(cuts[i].key == radix.key);
      CHECK(cuts[i].tie_end == radix.tie_end);
    }
  }
}

}  // namespace

TEST_CASE("sampled top-k: normal data, float, equals the radix cut", "[methods][topk][sampled]") {
  const std::size_t n = 200003;
  std::mt19937 gen(1);
  std::normal_distribution<float> d;
  std::vector<float> base(n);
  std::vector<std::vector<float>> models(2, std::vector<float>(n));
  for (std::size_t j = 0; j < n; ++j) {
    base[j] = d(gen);
    for (auto& m : models) m[j] = base[j] + 0.01f * d(gen);
  }
  std::size_t answered = 0;
  check_against_radix(base, models, 1, &answered);
  check_against_radix(base, models, 3, &answered);
  CHECK(answered > 0);  // the fast path did run
}

TEST_CASE("sampled top-k: bf16 data with massive ties", "[methods][topk][sampled]") {
  const std::size_t n = 150000;
  std::mt19937 gen(2);
  std::normal_distribution<float> d;
  std::vector<bf16> base(n);
  std::vector<std::vector<bf16>> models(2, std::vector<bf16>(n));
  for (std::size_t j = 0; j < n; ++j) {
    base[j] = bf16(d(gen));
    for (auto& m : models) m[j] = bf16(static_cast<float>(base[j]) + 0.05f * d(gen));
  }
  std::size_t answered = 0;
  check_against_radix(base, models, 2, &answered);
}

TEST_CASE("sampled top-k: mostly zeros, and structured data the sample misses", "[methods][topk][sampled]") {
  const std::size_t n = 100000;
  std::vector<double> base(n, 0.0);
  std::vector<std::vector<double>> models(2, std::vector<double>(n, 0.0));
  for (std::size_t j = 0; j < n; j += 97) models[0][j] = static_cast<double>(j % 13) - 6;  // ~1% nonzero
  // Large values only where the sample never looks (its blocks start at multiples of 4096).
  for (std::size_t j = 0; j < n; ++j) models[1][j] = j % 4096 >= 16 ? 1000.0 + static_cast<double>(j % 7) : 1.0;
  std::size_t answered = 0;
  check_against_radix(base, models, 1, &answered);
}
