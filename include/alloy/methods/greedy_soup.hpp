// Greedy soup: rank candidate models by their held-out score, then walk down the ranking
// and add each candidate to the soup (the uniform average of the accepted models) only if
// the soup's held-out score improves.
//
//   order candidates by score(candidate) descending (ties: lower index first)
//   soup = {best}; best_score = score(best)
//   for each next candidate k: trial = mean(soup + {k})
//     accept when score(trial) > best_score (greedy_acceptance::improves, the default: the
//     issue and the authors' code, `held_out_val_accuracy > best_val_acc_so_far`) or >=
//     (greedy_acceptance::not_worse: Algorithm 1 of the paper)
//
// Paper: Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models
// improves accuracy without increasing inference time", ICML 2022 (code:
// mlfoundations/model-soups). The score is the user's: a callable
// score(const tensor_set&) -> double (held-out accuracy, negative loss, ...), or individual
// scores computed beforehand (then the callable is only called on trial soups).
//
// Cost: the running sum of the accepted models is kept in the compute type, so each trial is
// one streaming pass (read the sum and the candidate; write the new sum and the trial soup)
// and one call of score; an accepted trial swaps buffers, a rejected one costs nothing more.
// Memory: two sums in the compute type and the trial soup (3 model-sized buffers).
// Precision: sums in float (double for tensors stored as double), the trial soup sum / m
// rounded once into the output dtype; the sum runs in acceptance order. The authors' code
// updates a running mean (soup * m/(m+1) + x/(m+1)) in float32 instead: results agree up
// to rounding. Determinism: identical soups for any thread count.
// Guarantees: the returned soup is bit-identical to the trial that earned `score` (and to
// the best candidate, converted to the output dtype, when nothing else was accepted), so
// its score is never below the best individual score. Exceptions thrown by the callable
// propagate and nothing is returned (the buffers are freed). A NaN individual score is an
// error (errc::non_finite: the ranking needs an order); a NaN trial score rejects that
// candidate (it is recorded as NaN in trial_scores).
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/kernels/stream.hpp>
#include <alloy/methods/detail/elementwise.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace alloy {

enum class greedy_acceptance {
  improves,   // score(trial) > best so far (the default; the authors' code)
  not_worse,  // score(trial) >= best so far (the paper's Algorithm 1)
};

struct greedy_soup_options {
  greedy_acceptance acceptance = greedy_acceptance::improves;
  std::optional<dtype> out_dtype = {};  // default: candidate 0's dtype per tensor
  execution exec = {};
};

struct greedy_soup_result {
  tensor_set soup;                         // the mean of the ingredients
  double score = 0;                        // its score (the last accepted trial's, or the best individual)
  std::vector<std::size_t> ingredients;    // accepted candidates, in the order they were added
  std::vector<std::size_t> ranking;        // every candidate, by individual score descending
  std::vector<double> individual_scores;   // score of candidate i alone (indexed by candidate)
  std::vector<double> trial_scores;        // trial_scores[k]: score of the soup tried with ranking[k]
                                           // (k = 0: ranking[0] alone, its individual score)
  std::size_t evaluations = 0;             // calls of the score callable
};

// What a scorer is: called with the trial soup, returns a number.
template <class F>
concept soup_scorer = std::invocable<F&, const tensor_set&> &&
                      std::convertible_to<std::invoke_result_t<F&, const tensor_set&>, double>;

namespace detail {

// The soup state: per tensor, a running sum in the compute type (double-buffered) and the
// trial soup in the output dtype.
struct greedy_state {
  std::vector<matched_tensors> matched;
  tensor_set sum[2];
  tensor_set trial;
  std::vector<mutable_tensor_view> sum_views[2];
  std::vector<mutable_tensor_view> trial_views;
  int current = 0;  // sum[current] holds the accepted sum
  std::size_t count = 0;
};

// One pass over every tensor: for candidate k (or none), next = sum + x (or sum), and the
// trial soup next / m; `init` starts the sum at candidate k alone. Elementwise, in fixed
// chunks: identical results for any thread count.
inline void greedy_pass(greedy_state& st, std::size_t k, bool init, bool write_sum, const execution& ex) {
  std::vector<std::pair<std::size_t, std::size_t>> items;
  for (std::size_t t = 0; t < st.matched.size(); ++t)
    for (std::size_t s = 0; s < st.trial_views[t].size; s += parallel_chunk) items.emplace_back(t, s);
  const std::size_t m = init ? 1 : (write_sum ? st.count + 1 : st.count);
  const int cur = st.current, nxt = 1 - st.current;
  parallel_for(items.size(), ex, [&](std::size_t item) {
    const std::size_t t = items[item].first, first = items[item].second;
    const std::size_t last = std::min(st.trial_views[t].size, first + parallel_chunk);
    auto go = [&](auto tag) {
      using C = decltype(tag);
      constexpr std::size_t tile = 2048;
      alignas(64) C xbuf[tile];
      alignas(64) C obuf[tile];
      const C div = static_cast<C>(m);
      const tensor_view x = st.matched[t].views[k];
      const C* s = init ? nullptr : static_cast<const C*>(st.sum_views[cur][t].data);
      C* dst = write_sum ? static_cast<C*>(st.sum_views[init ? cur : nxt][t].data) : nullptr;
      for (std::size_t pos = first; pos < last; pos += tile) {
        const std::size_t len = std::min(tile, last - pos);
        const C* xp = nullptr;
        if (write_sum) {
          if (x.type == dtype_of<C>) {
            xp = static_cast<const C*>(x.data) + pos;
          } else {
            kernels::widen(kernels::source{x.data, x.type}, pos, xbuf, len);
            xp = xbuf;
          }
        }
        for (std::size_t j = 0; j < len; ++j) {
          const C v = init ? xp[j] : (write_sum ? s[pos + j] + xp[j] : s[pos + j]);
          if (write_sum) dst[pos + j] = v;
          obuf[j] = v / div;
        }
        kernels::narrow(obuf, kernels::sink{st.trial_views[t].data, st.trial_views[t].type}, pos, len);
      }
    };
    if (st.sum_views[0][t].type == dtype::f64)
      go(double{});
    else
      go(float{});
  });
}

inline greedy_state greedy_setup(const std::vector<std::vector<named_view>>& sets, const greedy_soup_options& o) {
  const char* method = "greedy_soup";
  check_model_count(method, sets.size(), 1, static_cast<std::size_t>(-1));
  std::vector<std::string> labels;
  for (std::size_t i = 0; i < sets.size(); ++i) labels.push_back("candidate " + std::to_string(i));
  greedy_state st;
  st.matched = match_sets(method, sets, labels);
  if (o.out_dtype) check_floating(method, "the requested output", {}, *o.out_dtype);
  for (const auto& m : st.matched) {
    const dtype out = o.out_dtype.value_or(m.views[0].type);
    bool dbl = out == dtype::f64;
    for (const auto& v : m.views) dbl = dbl || v.type == dtype::f64;
    const dtype acc = dbl ? dtype::f64 : dtype::f32;
    for (int b = 0; b < 2; ++b) st.sum_views[b].push_back(st.sum[b].add(std::string(m.name), acc, m.shape, no_init));
    st.trial_views.push_back(st.trial.add(std::string(m.name), out, m.shape, no_init));
  }
  return st;
}

template <class F>
double call_score(F& score, const tensor_set& s, greedy_soup_result& r) {
  ++r.evaluations;
  return static_cast<double>(std::invoke(score, s));
}

// A tensor_set holding candidate i as given (names, shapes, dtypes), for individual scoring
// of candidates that are not tensor_sets.
inline tensor_set copy_candidate(const std::vector<named_view>& set) {
  tensor_set t;
  for (const auto& v : set) {
    const mutable_tensor_view d = t.add(std::string(v.name), v.view.type, v.shape, no_init);
    if (v.view.bytes() != 0) std::memcpy(d.data, v.view.data, v.view.bytes());
  }
  return t;
}

template <class F>
greedy_soup_result greedy_run(const std::vector<std::vector<named_view>>& sets,
                              const std::vector<const tensor_set*>& as_sets, std::vector<double> individual,
                              bool score_individually, F& score, const greedy_soup_options& o) {
  const char* method = "greedy_soup";
  greedy_state st = greedy_setup(sets, o);  // validates before any call of score
  const std::size_t n = sets.size();
  greedy_soup_result r;
  if (score_individually) {
    individual.assign(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      if (as_sets[i]) {
        individual[i] = call_score(score, *as_sets[i], r);
      } else {
        const tensor_set copy = copy_candidate(sets[i]);
        individual[i] = call_score(score, copy, r);
      }
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    if (std::isnan(individual[i]))
      throw error(errc::non_finite, std::string(method) + ": the individual score of candidate " + std::to_string(i) +
                                        " is nan, so the candidates cannot be ranked");
  r.individual_scores = individual;
  r.ranking.resize(n);
  std::iota(r.ranking.begin(), r.ranking.end(), std::size_t{0});
  std::stable_sort(r.ranking.begin(), r.ranking.end(),
                   [&](std::size_t a, std::size_t b) { return individual[a] > individual[b]; });

  const bool strict = o.acceptance == greedy_acceptance::improves;
  greedy_pass(st, r.ranking[0], true, true, o.exec);  // sum = best, trial = best / 1
  st.count = 1;
  bool trial_is_soup = true;
  r.ingredients.push_back(r.ranking[0]);
  r.score = individual[r.ranking[0]];
  r.trial_scores.push_back(r.score);
  for (std::size_t k = 1; k < n; ++k) {
    const std::size_t c = r.ranking[k];
    greedy_pass(st, c, false, true, o.exec);  // sum[next] = sum + x_c, trial = sum[next] / (m + 1)
    const double s = call_score(score, st.trial, r);
    r.trial_scores.push_back(s);
    if (strict ? s > r.score : s >= r.score) {
      st.current = 1 - st.current;
      ++st.count;
      r.score = s;
      r.ingredients.push_back(c);
      trial_is_soup = true;
    } else {
      trial_is_soup = false;
    }
  }
  if (!trial_is_soup) greedy_pass(st, 0, false, false, o.exec);  // trial = sum / m, as accepted
  r.soup = std::move(st.trial);
  return r;
}

template <class R>
std::vector<const tensor_set*> tensor_sets_of(const R& models) {
  std::vector<const tensor_set*> out;
  for (const auto& m : models) {
    if constexpr (std::same_as<unwrapped_t<std::ranges::range_value_t<R>>, tensor_set>)
      out.push_back(&unwrap(m));
    else
      out.push_back(nullptr);
  }
  return out;
}

}  // namespace detail

// greedy_soup(candidates, score [, options]): scores every candidate alone, then builds the
// soup. greedy_soup(candidates, individual_scores, score [, options]): with the candidates'
// scores given (score is then called only on trial soups). Candidates: a range of named
// tensor sets (by value, pointer or reference_wrapper) with the same names and shapes.
struct greedy_soup_fn {
  template <detail::model_set_range R, soup_scorer F>
  greedy_soup_result operator()(const R& candidates, F&& score, const greedy_soup_options& o = {}) const {
    const auto sets = detail::named_views_of_each(candidates);
    return detail::greedy_run(sets, detail::tensor_sets_of(candidates), {}, true, score, o);
  }
  template <detail::model_set_range R, soup_scorer F>
  greedy_soup_result operator()(const R& candidates, const std::vector<double>& individual_scores, F&& score,
                                const greedy_soup_options& o = {}) const {
    const auto sets = detail::named_views_of_each(candidates);
    if (individual_scores.size() != sets.size())
      throw error(errc::invalid_argument, "greedy_soup: " + std::to_string(individual_scores.size()) +
                                              " individual scores for " + std::to_string(sets.size()) + " candidates");
    return detail::greedy_run(sets, {}, individual_scores, false, score, o);
  }
  template <soup_scorer F>
  greedy_soup_result operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> candidates, F&& score,
                                const greedy_soup_options& o = {}) const {
    return (*this)(std::span(candidates.begin(), candidates.size()), std::forward<F>(score), o);
  }
  template <soup_scorer F>
  greedy_soup_result operator()(std::initializer_list<std::reference_wrapper<const tensor_set>> candidates,
                                const std::vector<double>& individual_scores, F&& score,
                                const greedy_soup_options& o = {}) const {
    return (*this)(std::span(candidates.begin(), candidates.size()), individual_scores, std::forward<F>(score), o);
  }
};
inline constexpr greedy_soup_fn greedy_soup{};

}  // namespace alloy
