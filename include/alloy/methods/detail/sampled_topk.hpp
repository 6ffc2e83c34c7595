// Exact top-k of several task vectors of one tensor in one pass, by sampling then filtering.
//
// The radix selection (topk.hpp) needs two or three passes per model, each a scatter into a
// 65536-bin histogram. For large tensors this file does it in one SIMD pass for all models:
//   1. sample: blocks of 16 entries every 4096 (1/256 of the tensor, at fixed positions)
//      give each model's sample of magnitude keys; the sample ranks k s / n +- (6 sigma + 16)
//      bracket the k-th largest key into a band [low, high];
//   2. filter: one pass counts, per model, the entries above the band and collects the band
//      entries (key, index) (kernels/band_filter.hpp);
//   3. if the k-th largest falls in the band (above < k <= above + band), a selection among
//      the band entries (by key descending, then index ascending) gives the exact cut: the
//      same rule, and the same kept set, as topk_select.
// When the band misses (a 6-sigma event for random data; structured data can do it) or holds
// more than sampled_band_cap entries (massive ties), the model falls back to topk_select.
// Extra memory: the sample (n / 256 keys) and at most sampled_band_cap entries per model.
// Deterministic: fixed sample positions, items at fixed offsets, band entries gathered in
// item order, and the result is the unique exact cut anyway.
#pragma once

#include <alloy/kernels/band_filter.hpp>
#include <alloy/methods/detail/sparse_merge.hpp>
#include <alloy/methods/detail/topk.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace alloy::detail {

inline constexpr std::size_t sampled_min_size = std::size_t{1} << 16;
inline constexpr std::size_t sampled_band_cap = std::size_t{1} << 20;

struct band_entry {
  std::uint32_t key;
  std::uint64_t index;
};

// ks[i]: entries to keep of model i (0 < k < n: other values are left to the caller).
// Returns model i's rule, or nothing when it must fall back to topk_select.
inline std::vector<std::optional<topk_rule>> sampled_topk(const sparse_job& job, std::span<const std::size_t> ks,
                                                          bool storage_precision, const execution& ex) {
  const std::size_t n = job.out.size, m = ks.size();
  std::vector<std::optional<topk_rule>> result(m);
  if (n < sampled_min_size) return result;
  constexpr std::size_t stride = 4096, block = 16;

  // 1. the sample and each model's band
  std::vector<std::vector<std::uint32_t>> sample(m);
  {
    float tile[block];
    double b[block], t[block];
    for (std::size_t p = 0; p + block <= n; p += stride) {
      kernels::widen<double>({job.base.data, job.base.type}, p, b, block);
      for (std::size_t i = 0; i < m; ++i) {
        // The same tau as the merge computes: in the compute type, then as float.
        if (computes_in_double(job)) {
          task_vector_tile<double>(job.models[i], b, p, block, storage_precision, t);
          for (std::size_t j = 0; j < block; ++j) tile[j] = static_cast<float>(t[j]);
        } else {
          float bf[block];
          for (std::size_t j = 0; j < block; ++j) bf[j] = static_cast<float>(b[j]);
          task_vector_tile<float>(job.models[i], bf, p, block, storage_precision, tile);
        }
        for (float v : tile) sample[i].push_back(kernels::magnitude_key(v));
      }
    }
  }
  struct band {
    std::uint32_t low = 0, high = 0x7fffffffu;
    bool active = false;
    std::size_t expected = 0;  // band entries expected in the whole tensor, with slack
  };
  std::vector<band> bands(m);
  for (std::size_t i = 0; i < m; ++i) {
    if (ks[i] == 0 || ks[i] >= n) continue;
    auto& s = sample[i];
    const double size = static_cast<double>(s.size()), p = static_cast<double>(ks[i]) / static_cast<double>(n);
    const double r = p * size, margin = 6 * std::sqrt(size * p * (1 - p)) + 16;
    const auto rank = [&](double x) { return static_cast<std::size_t>(std::clamp(x, 0.0, size - 1)); };
    auto desc = std::greater<std::uint32_t>();
    band& bd = bands[i];
    bd.active = true;
    bd.expected = static_cast<std::size_t>(2.5 * margin / size * static_cast<double>(n));
    // The second selection only needs the part the first left in front of its rank.
    auto end = s.end();
    if (r + margin < size - 1) {
      end = s.begin() + static_cast<std::ptrdiff_t>(rank(r + margin));
      std::nth_element(s.begin(), end, s.end(), desc);
      bd.low = *end;
    }
    if (r - margin > 0) {
      const auto at = s.begin() + static_cast<std::ptrdiff_t>(rank(r - margin));
      std::nth_element(s.begin(), at, end, desc);
      bd.high = *at;
    }
  }
  sample.clear();

  // 2. the filter pass: per item and model, the count above the band and the band entries
  std::vector<std::size_t> starts;
  for (std::size_t s = 0; s < n; s += parallel_chunk) starts.push_back(s);
  std::vector<std::size_t> above(starts.size() * m, 0);
  std::vector<std::vector<band_entry>> entries(starts.size() * m);
  std::vector<std::atomic<std::size_t>> in_band(m);
  parallel_for(starts.size(), ex, [&](std::size_t item) {
    const std::size_t first = starts[item], last = std::min(n, first + parallel_chunk);
    auto run = [&](auto tag) {
      using C = decltype(tag);
      std::vector<C> b(sparse_tile), t(sparse_tile);
      std::vector<float> f(sparse_tile);
      for (std::size_t pos = first; pos < last; pos += sparse_tile) {
        const std::size_t len = std::min(sparse_tile, last - pos);
        const C* bp = b.data();
        if (job.base.type == dtype_of<C>)
          bp = static_cast<const C*>(job.base.data) + pos;
        else
          kernels::widen<C>({job.base.data, job.base.type}, pos, b.data(), len);
        for (std::size_t i = 0; i < m; ++i) {
          if (!bands[i].active || in_band[i].load(std::memory_order_relaxed) > sampled_band_cap) continue;
          const float* v;
          if constexpr (std::is_same_v<C, float>) {
            task_vector_tile<float>(job.models[i], bp, pos, len, storage_precision, f.data());
            v = f.data();
          } else {
            task_vector_tile<double>(job.models[i], bp, pos, len, storage_precision, t.data());
            for (std::size_t j = 0; j < len; ++j) f[j] = static_cast<float>(t[j]);
            v = f.data();
          }
          auto& list = entries[item * m + i];
          if (list.capacity() == 0) list.reserve(bands[i].expected * (last - first) / n + 64);
          const std::size_t before = list.size();
          above[item * m + i] += kernels::band_filter(v, len, bands[i].low, bands[i].high, [&](std::size_t j, std::uint32_t key) {
            list.push_back({key, pos + j});
          });
          in_band[i].fetch_add(list.size() - before, std::memory_order_relaxed);
        }
      }
    };
    if (computes_in_double(job))
      run(double{});
    else
      run(float{});
  });

  // 3. the exact cut among the band entries
  for (std::size_t i = 0; i < m; ++i) {
    if (!bands[i].active || in_band[i].load() > sampled_band_cap) continue;
    std::size_t total_above = 0;
    std::vector<band_entry> all;
    all.reserve(in_band[i].load());
    for (std::size_t item = 0; item < starts.size(); ++item) {
      total_above += above[item * m + i];
      const auto& list = entries[item * m + i];
      all.insert(all.end(), list.begin(), list.end());
    }
    if (!(total_above < ks[i] && ks[i] <= total_above + all.size())) continue;  // the band missed
    const std::size_t r = ks[i] - total_above;  // 1-based rank of the cut among the band entries
    auto order = [](const band_entry& a, const band_entry& b) { return a.key != b.key ? a.key > b.key : a.index < b.index; };
    std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(r - 1), all.end(), order);
    const band_entry cut = all[r - 1];
    // Like topk_select, say "every tie kept" when no entry equal to the cut comes after it.
    const bool tie_cut = std::any_of(all.begin() + static_cast<std::ptrdiff_t>(r), all.end(),
                                     [&](const band_entry& e) { return e.key == cut.key; });
    result[i] = topk_rule{cut.key, tie_cut ? static_cast<std::size_t>(cut.index) + 1 : std::numeric_limits<std::size_t>::max()};
  }
  return result;
}

// The exact top-k cut of each model's task vector in one tensor (ks[i] <= n): the sampled
// pass where it succeeds, topk_select for the rest.
inline std::vector<topk_rule> tensor_cuts(const sparse_job& job, std::span<const std::size_t> ks, bool storage_precision,
                                          const execution& ex) {
  const std::size_t n = job.out.size;
  auto sampled = sampled_topk(job, ks, storage_precision, ex);
  std::vector<topk_rule> rules(ks.size());
  const std::size_t sizes[1] = {n};
  for (std::size_t i = 0; i < ks.size(); ++i) {
    if (sampled[i])
      rules[i] = *sampled[i];
    else
      rules[i] = topk_select(sizes, ks[i], task_vector_producer{std::span(&job, 1), i, storage_precision}, ex).rule(0);
  }
  return rules;
}

}  // namespace alloy::detail
