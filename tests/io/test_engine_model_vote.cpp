// dare_ties and breadcrumbs_ties with preset paper through the streaming engine
// (engine_methods.hpp's plan_model_vote): the model-wide zero vote is summed over every tensor
// before the first one is merged; the merged checkpoint equals the library's model-level call
// on the whole models, bit for bit, for any thread count.
#include "engine_test_util.hpp"

#include <alloy/methods/breadcrumbs.hpp>
#include <alloy/methods/dare.hpp>

#include <cstring>
#include <string>
#include <vector>

using namespace engine_test;

namespace {

// Two models and the count vote: wherever their kept entries disagree in sign the vote is 0,
// so the zero-vote rule decides many entries.
std::string recipe_text(const std::string& method) {
  return "merge_method: " + method +
         "\nbase_model: m0\nalloy: {preset: paper, seed: 7}\nparameters: {consensus_method: count}\nmodels:\n"
         "  - model: m1\n    parameters: {weight: 0.6, density: 0.7, gamma: 0.1}\n"
         "  - model: m2\n    parameters: {weight: 0.4, density: 0.5, gamma: 0.05}\n";
}

// The engine's output for each thread count equals `want`; and the two fixed zero-vote signs
// give different models, one of them `want` (so the test sees the vote decide).
template <class Merge>
void check_model_vote(fixture& f, const std::string& method, const Merge& merge) {
  const tensor_set want = merge(alloy::zero_vote::model_majority);
  const tensor_set pos = merge(alloy::zero_vote::positive), neg = merge(alloy::zero_vote::negative);
  auto same = [](const tensor_set& a, const tensor_set& b) {
    for (const auto& t : a)
      if (bytes_of(t.view().data, t.bytes()) != bytes_of(b.at(t.name()).view().data, t.bytes())) return false;
    return true;
  };
  CHECK_FALSE(same(pos, neg));
  CHECK((same(want, pos) || same(want, neg)));
  for (const unsigned threads : {1u, 2u}) {
    INFO(method << ", threads " << threads);
    fs::remove_all(f.out());
    merge_options mo;
    mo.exec = alloy::execution{threads};
    merge_to_folder(f.parse(recipe_text(method)), f.out(), mo);
    check_merged_equals(f.out(), f.models[0], want);
  }
}

}  // namespace

TEST_CASE("dare_ties with preset paper takes the model-wide zero vote", "[io][engine][dare]") {
  fixture f(3, float_model());
  check_model_vote(f, "dare_ties", [&](alloy::zero_vote zero) {
    alloy::dare_options o = alloy::dare_options::preset(alloy::preset::paper);
    o.densities = {0.7, 0.5};
    o.seed = 7;
    o.consensus_method = alloy::consensus::count;
    o.zero = zero;
    return alloy::dare_ties(f.models[0], {f.models[1], f.models[2]}, {0.6, 0.4}, o);
  });
}

TEST_CASE("breadcrumbs_ties with preset paper takes the model-wide zero vote", "[io][engine][breadcrumbs]") {
  fixture f(3, float_model());
  check_model_vote(f, "breadcrumbs_ties", [&](alloy::zero_vote zero) {
    alloy::breadcrumbs_options o = alloy::breadcrumbs_options::preset(alloy::preset::paper);
    o.densities = {0.7, 0.5};
    o.gammas = {0.1, 0.05};
    o.consensus_method = alloy::consensus::count;
    o.zero = zero;
    return alloy::breadcrumbs_ties(f.models[0], {f.models[1], f.models[2]}, {0.6, 0.4}, o);
  });
}

TEST_CASE("the model-wide zero vote allows per-tensor densities", "[io][engine][dare]") {
  // Unlike ties' whole-model top-k, the masks are per tensor, so a filter is fine: each
  // tensor is the tensor-level dare_ties with its density and the zero vote of the sum of
  // the tensors' vote balances.
  fixture f(3, float_model());
  const std::string text =
      "merge_method: dare_ties\nbase_model: m0\nalloy: {preset: paper}\nparameters: {consensus_method: count}\n"
      "models:\n  - model: m1\n    parameters: {weight: 1, density: [{filter: embed, value: 0.3}, {value: 0.8}]}\n"
      "  - model: m2\n    parameters: {weight: 1, density: 0.5}\n";
  auto options = [](const std::string& name, alloy::zero_vote zero) {
    alloy::dare_options o = alloy::dare_options::preset(alloy::preset::paper);
    o.densities = {name.find("embed") != std::string::npos ? 0.3 : 0.8, 0.5};
    o.tensor_name = name;
    o.consensus_method = alloy::consensus::count;
    o.zero = zero;
    return o;
  };
  std::int64_t balance = 0;
  auto per_tensor = [&](alloy::zero_vote zero) {
    std::vector<std::string> out;
    balance = 0;
    for (const auto& t : f.models[0]) {
      tensor_set s;
      auto v = s.add("x", t.type(), t.shape());
      const auto models = views(f.models, t.name(), 1);
      alloy::detail::sparse_job job = alloy::detail::tensor_job("dare_ties", t.view(), models, v);
      job.name = t.name();
      balance += alloy::detail::dare_vote_balance(std::span(&job, 1), {1.0, 1.0}, options(t.name(), zero));
      alloy::dare_ties(t.view(), models, {1.0, 1.0}, v, options(t.name(), zero));
      out.push_back(bytes_of(v.data, v.bytes()));
    }
    return out;
  };
  const auto pos = per_tensor(alloy::zero_vote::positive), neg = per_tensor(alloy::zero_vote::negative);
  CHECK(pos != neg);
  merge_to_folder(f.parse(text), f.out());
  CHECK(merged_bytes(f.out()) == (balance > 0 ? pos : neg));
}
