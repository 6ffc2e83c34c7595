// Exact top-k of several task vectors of one tensor in one pass, by sampling then filtering.
//
// The radix selection (topk.hpp) needs two or three passes per model, each a scatter into a
// 65536-bin histogram. For large tensors this file does it in one SIMD pass for all models:
//   1. sample: blocks of 16 entries every 4096 (1/256 of the tensor, at fixed positions)
//      give each model's sample of magnitude keys; the sample ranks k s / n +- (6 sigma + 16)
//      bracket the k-th largest key into a band [low, high]. Band keys met at least
//      sampled_heavy_min times in the sample (massive tie groups: bf16 task vectors take a
//      few distinct magnitudes) become "heavy" keys, at most kernels::band_max_heavy;
//   2. filter: one pass counts, per work item and model, the entries above the band and the
//      entries of each heavy key, and collects the other band entries (key, position)
//      (kernels/band_filter.hpp: tau computed in registers for f32 and bf16 inputs, all
//      models in one sweep with software prefetch, set lanes written by AVX-512 compress);
//   3. if the k-th largest falls in the band (above < k <= above + band), the cut is found
//      among the band entries (key descending, then index ascending): a heavy key (then the
//      r-th tie is located by its item's count and a scan of that one item) or a collected
//      key (a 4096-bin histogram of the band keys, then nth_element in one bin): the same
//      rule, and the same kept set, as topk_select.
// When the band misses (a 6-sigma event for random data; structured data can do it) or holds
// more than sampled_band_cap collected entries, the model falls back to topk_select.
// Extra memory: the sample (n / 256 keys) and at most sampled_band_cap (+ a tile) collected
// entries per model, 8 bytes each. Deterministic: fixed sample positions, items at fixed
// offsets, band entries gathered in item order, and the result is the unique exact cut anyway.
#pragma once

#include <alloy/kernels/band_filter.hpp>
#include <alloy/methods/detail/sparse_merge.hpp>
#include <alloy/methods/detail/topk.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdint>
#include <memory>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

namespace alloy::detail {

inline constexpr std::size_t sampled_min_size = std::size_t{1} << 16;
inline constexpr std::size_t sampled_band_cap = std::size_t{1} << 20;
// A band key met this many times in the sample (about 2048 entries expected in the tensor)
// is counted per item rather than collected entry by entry.
inline constexpr std::size_t sampled_heavy_min = 8;

// The r-th largest (1-based, r <= keys.size()) of keys, all in [low, high]: a 4096-bin
// histogram of (key - low) finds the bin holding it, nth_element among that bin's keys.
inline std::uint32_t rank_desc(const std::vector<std::uint32_t>& keys, std::size_t r, std::uint32_t low, std::uint32_t high) {
  constexpr std::size_t bins = 4096;
  unsigned shift = 0;
  while (((high - low) >> shift) >= bins) ++shift;
  std::vector<std::size_t> hist(bins, 0);
  for (std::uint32_t k : keys) ++hist[(k - low) >> shift];
  std::size_t bin = bins, above = 0;
  while (above + hist[bin - 1] < r) above += hist[--bin];
  --bin;
  std::vector<std::uint32_t> in;
  in.reserve(hist[bin]);
  for (std::uint32_t k : keys)
    if (((k - low) >> shift) == bin) in.push_back(k);
  const auto nth = in.begin() + static_cast<std::ptrdiff_t>(r - above - 1);
  std::nth_element(in.begin(), nth, in.end(), std::greater<std::uint32_t>());
  return *nth;
}

// Whether the filter pass computes model i's tau in registers from the stored pair (f32, or
// bf16 like the base), rather than tile by tile through task_vector_tile.
inline bool tau_in_registers(const sparse_job& job, std::size_t i, bool storage_precision) {
  const dtype b = job.base.type, x = job.models[i].type;
  return !computes_in_double(job) && ((b == dtype::f32 && x == dtype::f32) || (b == dtype::bf16 && x == dtype::bf16 && !storage_precision));
}

// The position of the left-th (1-based) entry with magnitude key `key` of model i's tau in
// [first, last), which holds at least `left` of them, tile by tile: where the filter pass
// computed tau in registers, band_scan over the stored pair with the band [key, key] and no
// heavy key writes each such entry's position; else count_equal and find_nth_equal over the
// produced tau.
inline std::size_t nth_tie(const sparse_job& job, std::size_t i, std::size_t first, std::size_t last, std::uint32_t key,
                           std::size_t left, bool storage_precision) {
  const bool raw = tau_in_registers(job, i, storage_precision), bf16 = job.base.type == dtype::bf16;
  const kernels::band_query q{key, key};
  std::vector<std::uint32_t> keys(raw ? sparse_tile + kernels::band_slack : 0), where(keys.size());
  std::vector<float> tile(raw ? 0 : sparse_tile);
  const task_vector_producer produce{std::span(&job, 1), i, storage_precision};
  for (std::size_t pos = first; pos < last; pos += sparse_tile) {
    const std::size_t len = std::min(sparse_tile, last - pos);
    if (raw) {
      kernels::band_tally t;
      const std::size_t w =
          bf16 ? kernels::band_scan_bf16(static_cast<const std::uint16_t*>(job.models[i].data) + pos,
                                         static_cast<const std::uint16_t*>(job.base.data) + pos, len, 0, q, t, keys.data(),
                                         where.data())
               : kernels::band_scan(static_cast<const float*>(job.models[i].data) + pos,
                                    static_cast<const float*>(job.base.data) + pos, len, 0, q, t, keys.data(), where.data());
      if (left <= w) return pos + where[left - 1];
      left -= w;
    } else {
      produce(0, pos, len, tile.data());
      const std::size_t e = kernels::count_equal(tile.data(), len, key);
      if (left <= e) return pos + kernels::find_nth_equal(tile.data(), len, key, left - 1);
      left -= e;
    }
  }
  return last;  // not reached when [first, last) holds `left` such entries
}

// ks[i]: entries to keep of model i (0 < k < n: other values are left to the caller).
// Returns model i's rule, or nothing when it must fall back to topk_select.
inline std::vector<std::optional<topk_rule>> sampled_topk(const sparse_job& job, std::span<const std::size_t> ks,
                                                          bool storage_precision, const execution& ex) {
  const std::size_t n = job.out.size, m = ks.size();
  std::vector<std::optional<topk_rule>> result(m);
  if (n < sampled_min_size) return result;
  constexpr std::size_t stride = 4096, block = 16;

  // 1. the sample and each model's band. Block b (at b * stride) fills sample[i][b * block,
  //    + block), in parallel: the reads are far apart (a cache miss, and in a memory map often
  //    the first touch of a page, each), so one thread would wait on them alone.
  const std::size_t blocks = n >= block ? (n - block) / stride + 1 : 0;
  constexpr std::size_t blocks_per_item = 256;
  std::vector<std::vector<std::uint32_t>> sample(m, std::vector<std::uint32_t>(blocks * block));
  parallel_for((blocks + blocks_per_item - 1) / blocks_per_item, ex, [&](std::size_t item) {
    float tile[block];
    double b[block], t[block];
    const std::size_t last = std::min(blocks, (item + 1) * blocks_per_item);
    for (std::size_t k = item * blocks_per_item; k < last; ++k) {
      const std::size_t p = k * stride;
      // Ask for a later block now.
      if (const std::size_t ahead = p + 8 * stride; ahead + block <= n) {
        __builtin_prefetch(static_cast<const unsigned char*>(job.base.data) + ahead * dtype_size(job.base.type));
        for (const tensor_view& x : job.models)
          __builtin_prefetch(static_cast<const unsigned char*>(x.data) + ahead * dtype_size(x.type));
      }
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
        for (std::size_t j = 0; j < block; ++j) sample[i][k * block + j] = kernels::magnitude_key(tile[j]);
      }
    }
  });
  struct band {
    std::uint32_t low = 0, high = 0x7fffffffu;
    bool active = false;
    std::size_t expected = 0;  // band entries expected in the whole tensor, with slack
  };
  std::vector<band> bands(m);
  std::vector<kernels::band_query> queries(m);
  parallel_for(m, ex, [&](std::size_t i) {  // per model: its band, then its heavy keys
    if (ks[i] == 0 || ks[i] >= n) return;
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

    // Heavy keys: band keys frequent in the sample (massive tie groups, as bf16 data makes)
    // are counted per item instead of collected, so such a band stays small.
    kernels::band_query& q = queries[i];
    q.low = bands[i].low;
    q.high = bands[i].high;
    std::vector<std::uint32_t> in;
    for (std::uint32_t k : sample[i])
      if (k >= q.low && k <= q.high) in.push_back(k);
    std::sort(in.begin(), in.end());
    std::vector<std::pair<std::size_t, std::uint32_t>> runs;  // (multiplicity, key)
    for (std::size_t a = 0, b = 0; a < in.size(); a = b) {
      while (b < in.size() && in[b] == in[a]) ++b;
      if (b - a >= sampled_heavy_min) runs.push_back({b - a, in[a]});
    }
    std::sort(runs.begin(), runs.end(), std::greater<>());
    std::vector<std::uint32_t> wanted;  // most frequent first; set_heavy keeps those the scan can tell apart
    for (const auto& run : runs) wanted.push_back(run.second);
    q.set_heavy(wanted);
  });
  sample.clear();

  // 2. the filter pass: per item and model, the count above the band, the heavy-key counts
  //    and the other band entries (key, position in the item), in position order.
  struct entries {
    std::unique_ptr<std::uint32_t[]> keys, pos;
    std::size_t size = 0, cap = 0;
    void reserve_more(std::size_t more) {
      if (size + more <= cap) return;
      const std::size_t c = std::max(size + more, 2 * cap);
      auto k = std::make_unique_for_overwrite<std::uint32_t[]>(c), p = std::make_unique_for_overwrite<std::uint32_t[]>(c);
      if (size != 0) {
        std::memcpy(k.get(), keys.get(), size * sizeof(std::uint32_t));
        std::memcpy(p.get(), pos.get(), size * sizeof(std::uint32_t));
      }
      keys = std::move(k);
      pos = std::move(p);
      cap = c;
    }
  };
  std::vector<std::size_t> starts;
  for (std::size_t s = 0; s < n; s += parallel_chunk) starts.push_back(s);
  std::vector<kernels::band_tally> tally(starts.size() * m);
  std::vector<entries> found(starts.size() * m);
  std::vector<std::atomic<std::size_t>> in_band(m);
  static_assert(kernels::fused_max_models <= kernels::band_max_models);
  // Tiles of 16 Ki entries: the per-call work (each model's heavy-key table and counter
  // sums, the in-band totals) over more entries; against 2 Ki entries, ties method alone
  // on the 0.57B benchmark set 0.82-0.86 -> 0.78-0.82 s.
  constexpr std::size_t filter_tile = 8 * sparse_tile;
  parallel_for(starts.size(), ex, [&](std::size_t item) {
    const std::size_t first = starts[item], last = std::min(n, first + parallel_chunk);
    auto run = [&](auto tag) {
      using C = decltype(tag);
      std::vector<C> b, t;
      std::vector<float> f;
      for (std::size_t pos = first; pos < last; pos += filter_tile) {
        const std::size_t len = std::min(filter_tile, last - pos);
        const C* bp = nullptr;  // the base tile in C, made on first use
        // Models whose tau can be computed in registers (stored like the base, f32 or bf16)
        // go through one sweep together; the others tile by tile.
        const bool base_bf16 = job.base.type == dtype::bf16;
        const void* many[kernels::fused_max_models];
        kernels::band_target targets[kernels::fused_max_models];
        std::size_t which[kernels::fused_max_models];
        std::size_t n_many = 0;
        for (std::size_t i = 0; i < m; ++i) {
          if (!bands[i].active || in_band[i].load(std::memory_order_relaxed) > sampled_band_cap) continue;
          const tensor_view& x = job.models[i];
          auto& list = found[item * m + i];
          if (list.cap == 0) list.reserve_more(bands[i].expected * (last - first) / n + 2 * (filter_tile + kernels::band_slack));
          list.reserve_more(len + kernels::band_slack);
          const bool together = n_many < kernels::fused_max_models && tau_in_registers(job, i, storage_precision);
          if (!together) continue;
          many[n_many] = static_cast<const unsigned char*>(x.data) + pos * dtype_size(x.type);
          targets[n_many] = {&queries[i], &tally[item * m + i], list.keys.get(), list.pos.get(), list.size};
          which[n_many++] = i;
        }
        if (n_many != 0) {
          kernels::band_scan_many(many, n_many, static_cast<const unsigned char*>(job.base.data) + pos * dtype_size(job.base.type),
                                  base_bf16, len, static_cast<std::uint32_t>(pos - first), targets);
          for (std::size_t g = 0; g < n_many; ++g) {
            auto& list = found[item * m + which[g]];
            in_band[which[g]].fetch_add(targets[g].written - list.size, std::memory_order_relaxed);
            list.size = targets[g].written;
          }
        }
        for (std::size_t i = 0; i < m; ++i) {
          if (!bands[i].active || in_band[i].load(std::memory_order_relaxed) > sampled_band_cap) continue;
          if (std::find(which, which + n_many, i) != which + n_many) continue;  // done above
          const tensor_view& x = job.models[i];
          auto& list = found[item * m + i];
          list.reserve_more(len + kernels::band_slack);
          const auto at = static_cast<std::uint32_t>(pos - first);
          std::uint32_t* keys = list.keys.get() + list.size;
          std::uint32_t* where = list.pos.get() + list.size;
          std::size_t w;
          {
            if (bp == nullptr) {
              if (job.base.type == dtype_of<C>) {
                bp = static_cast<const C*>(job.base.data) + pos;
              } else {
                b.resize(filter_tile);
                kernels::widen<C>({job.base.data, job.base.type}, pos, b.data(), len);
                bp = b.data();
              }
            }
            f.resize(filter_tile);
            if constexpr (std::is_same_v<C, float>) {
              task_vector_tile<float>(x, bp, pos, len, storage_precision, f.data());
            } else {
              t.resize(filter_tile);
              task_vector_tile<double>(x, bp, pos, len, storage_precision, t.data());
              for (std::size_t j = 0; j < len; ++j) f[j] = static_cast<float>(t[j]);
            }
            w = kernels::band_scan(f.data(), nullptr, len, at, queries[i], tally[item * m + i], keys, where);
          }
          list.size += w;
          in_band[i].fetch_add(w, std::memory_order_relaxed);
        }
      }
    };
    if (computes_in_double(job))
      run(double{});
    else
      run(float{});
  });

  // 3. the exact cut among the band entries: with heavy keys h (counted) and the collected
  //    keys, the r-th largest in (key descending, index ascending) order.
  //    Per model in parallel: the scans of one item and the selections are serial within one.
  parallel_for(m, ex, [&](std::size_t i) {
    if (!bands[i].active || in_band[i].load() > sampled_band_cap) return;
    const kernels::band_query& q = queries[i];
    std::size_t total_above = 0, collected = 0;
    std::size_t heavy_total[kernels::band_max_heavy] = {};
    for (std::size_t item = 0; item < starts.size(); ++item) {
      const auto& ty = tally[item * m + i];
      total_above += ty.above;
      for (std::size_t h = 0; h < q.n_heavy; ++h) heavy_total[h] += ty.heavy_count[h];
      collected += found[item * m + i].size;
    }
    std::size_t band_total = collected;
    for (std::size_t h = 0; h < q.n_heavy; ++h) band_total += heavy_total[h];
    if (!(total_above < ks[i] && ks[i] <= total_above + band_total)) return;  // the band missed
    const std::size_t r = ks[i] - total_above;  // 1-based rank of the cut among the band entries
    std::vector<std::uint32_t> keys;
    keys.reserve(collected);
    for (std::size_t item = 0; item < starts.size(); ++item) {
      const auto& list = found[item * m + i];
      keys.insert(keys.end(), list.keys.get(), list.keys.get() + list.size);
    }
    // Heavy keys in descending order; above[h]: band entries with a key above heavy h.
    std::size_t order[kernels::band_max_heavy];
    for (std::size_t h = 0; h < q.n_heavy; ++h) order[h] = h;
    std::sort(order, order + q.n_heavy, [&](std::size_t a, std::size_t b) { return q.heavy[a] > q.heavy[b]; });
    std::size_t heavy_before = 0;  // heavy entries above the current position
    std::optional<std::size_t> heavy_cut;
    std::size_t rank_in_keys = 0;  // when the cut is a collected key: its 1-based rank among them
    for (std::size_t o = 0; o <= q.n_heavy; ++o) {
      if (o == q.n_heavy) {
        rank_in_keys = r - heavy_before;
        break;
      }
      const std::size_t h = order[o];
      const std::size_t keys_above =
          static_cast<std::size_t>(std::count_if(keys.begin(), keys.end(), [&](std::uint32_t k) { return k > q.heavy[h]; }));
      const std::size_t a = keys_above + heavy_before;
      if (a >= r) {  // the cut is a collected key above heavy h
        rank_in_keys = r - heavy_before;
        break;
      }
      if (a + heavy_total[h] >= r) {  // the cut is heavy h
        heavy_cut = h;
        rank_in_keys = r - a;  // here: the 1-based rank among the ties of heavy h
        break;
      }
      heavy_before += heavy_total[h];
    }
    std::uint32_t cut_key;
    std::size_t tie_rank, tie_count;  // the cut's 1-based rank among its ties, and their number
    if (heavy_cut) {
      cut_key = q.heavy[*heavy_cut];
      tie_rank = rank_in_keys;
      tie_count = heavy_total[*heavy_cut];
    } else {
      cut_key = rank_desc(keys, rank_in_keys, q.low, q.high);
      std::size_t greater = 0;
      tie_count = 0;
      for (std::uint32_t k : keys) {
        greater += k > cut_key;
        tie_count += k == cut_key;
      }
      tie_rank = rank_in_keys - greater;
    }
    if (tie_rank == tie_count) {  // every tie kept
      result[i] = topk_rule{cut_key, std::numeric_limits<std::size_t>::max()};
      return;
    }
    // The tie_rank-th entry of key cut_key in index order.
    std::size_t index = 0, left = tie_rank;
    for (std::size_t item = 0; item < starts.size(); ++item) {
      if (heavy_cut) {
        const std::size_t c = tally[item * m + i].heavy_count[*heavy_cut];
        if (left > c) {
          left -= c;
          continue;
        }
        index = nth_tie(job, i, starts[item], std::min(n, starts[item] + parallel_chunk), cut_key, left, storage_precision);
        break;
      }
      const auto& list = found[item * m + i];
      const std::size_t c = static_cast<std::size_t>(std::count(list.keys.get(), list.keys.get() + list.size, cut_key));
      if (left > c) {
        left -= c;
        continue;
      }
      for (std::size_t e = 0; e < list.size; ++e)
        if (list.keys[e] == cut_key && --left == 0) {
          index = starts[item] + list.pos[e];
          break;
        }
      break;
    }
    result[i] = topk_rule{cut_key, index + 1};
  });
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
      rules[i] = topk_select(sizes, ks[i], task_vector_producer{std::span(&job, 1), i, storage_precision, nullptr}, ex).rule(0);
  }
  return rules;
}

}  // namespace alloy::detail
