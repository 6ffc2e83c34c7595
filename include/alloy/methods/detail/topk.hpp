// Exact top-k magnitude selection over data that is never stored: the core of TIES and
// magnitude pruning.
//
//   topk_cut cut = topk_select(segment_sizes, k, produce, ex);
//   then, per element: cut.keeps(segment, index, x), or per segment: cut.rule(segment).
//
// What is kept: the k entries of largest magnitude among all entries of all segments, in
// one flat order (segment order, then element order). Magnitudes order by their magnitude
// key (kernels/radix_select.hpp): the float bit pattern with the sign cleared, so -0 and +0
// are the same magnitude 0, and NaN is larger than +Inf. Ties at the cut keep the lower flat
// index first. Exactly k entries are kept (0 <= k <= n), and the kept set is unique, so it is
// the same for any thread count, chunking and SIMD width.
//
// The rule: with T the magnitude of the k-th largest entry (its key `key`),
//   keep(s, i) = |x| > T  or  (|x| == T and (s, i) comes no later than the last kept tie),
// stored as `key`, `cut_segment` and `tie_end`: ties are all kept in segments before
// cut_segment, kept for i < tie_end in segment cut_segment, never kept after it. rule(s)
// folds that into one bound per segment, so the per-element test is two integer compares:
//   m = magnitude_key(x);  keep = (m > rule.key) | ((m == rule.key) & (i < rule.tie_end))
// A vectorized merge compares keys as signed int32 lanes (keys are <= 0x7fffffff) and a lane
// index against rule.tie_limit(tile_begin, tile_len). rule.threshold() gives T as a float for
// `|x| > T | (|x| == T & ...)` float compares, which agree with the key rule for data
// without NaN (a NaN compares false, but its key is above every threshold but a NaN one).
// k == 0 is key 0x7fffffff with no ties kept; k == n is key 0 with every tie kept. T == 0
// (k exceeds the nonzero entries) follows the same rule: the zeros (of either sign) of
// lowest flat index are kept.
//
// Where the magnitudes come from: the caller's producer,
//   void produce(std::size_t segment, std::size_t begin, std::size_t len, float* out) const,
// writes the values (|tau| or signed tau: the sign is ignored) of elements [begin, begin+len)
// of a segment to out (len <= topk_tile). It is called concurrently from several threads,
// on every pass, for the same ranges each pass: it must be thread-safe and deterministic.
//
// Algorithm (radix selection over the keys, nothing sorted, nothing copied):
//   pass 1  a 65536-bin histogram of the high 16 key bits; the bin b holding the k-th
//           largest is found by summing counts from the top.
//   pass 2  a histogram of the low 16 bits of the entries in bin b: gives T exactly, the
//           number of entries > T (greater) and == T (equal). If the r = k - greater ties
//           to keep are all of them, done (no tie is cut: the usual case for float data).
//           Each item also keeps the low 16 bits of its entries in bin b (2 bytes each, in a
//           pool of at most 8 MiB; bin b holds well under 1% of normal-like data).
//   ties    (a tie straddles the cut) the ties per work item: pass 2's bin counts when every
//           entry of bin b equals T (bf16-valued data: their low 16 bits are 0), else counted
//           in the kept low bits (tau = difference of bf16 values); pass 3 reads again only
//           the items whose low bits did not fit (more than 16Ki in the bin, or pool full).
//   scan    the one item holding the r-th tie, tile by tile, to find its index.
// So 2 passes in the usual cases (massive ties, and T == 0 among exact zeros, included), 3
// when T's bin is crowded with other values too, none for k == 0 or k == n; `passes`, `recounted` and `scanned` report what was
// read. Inputs of at most topk_tile entries in all (biases, norms: a per-tensor top-k meets
// many) are produced once into a stack tile and selected there with four 256-bin digit
// histograms (1 pass, no heap).
//
// Work split: items of parallel_chunk elements at fixed offsets within each segment, read in
// tiles of topk_tile floats (a 16 KiB stack buffer per call), claimed dynamically by up to
// ex.threads workers. Each worker owns a 65536-bin uint32 histogram (256 KiB) that it flushes
// into 64-bit totals before any count could reach 2^32; counts are sums, so the totals do not
// depend on which worker processed which item. Memory: workers x 256 KiB + 512 KiB + a few
// words per item, the low-bits pool (<= min(8 MiB, 2 bytes x the entries of bin b)) and a
// 32 KiB staging buffer per worker; never a buffer of the data's size.
//
// Errors: k > n throws alloy::error (invalid_argument); exceptions from the producer are
// rethrown after every worker has stopped.
#pragma once

#include <alloy/config.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/error.hpp>
#include <alloy/kernels/radix_select.hpp>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace alloy::detail {

// Floats per producer call (the tile buffer on the stack).
inline constexpr std::size_t topk_tile = 4096;

// The keep rule of one segment.
struct topk_rule {
  std::uint32_t key = 0x7fffffffu;  // magnitude key of the threshold T
  std::size_t tie_end = 0;          // entries with magnitude T are kept iff index < tie_end

  // T as a float (non-negative; a NaN when T is a NaN magnitude).
  float threshold() const noexcept { return kernels::key_magnitude(key); }

  // Whether element `index` (of this segment), of value or magnitude x, is kept.
  bool keeps(std::size_t index, float x) const noexcept {
    const std::uint32_t m = kernels::magnitude_key(x);
    return (m > key) | ((m == key) & (index < tie_end));
  }

  // For a tile [begin, begin + len): ties are kept at its first tie_limit(begin, len)
  // positions and not after, so a vectorized merge compares lane positions against it.
  std::size_t tie_limit(std::size_t begin, std::size_t len) const noexcept {
    return tie_end <= begin ? 0 : std::min(len, tie_end - begin);
  }
};

// The result of topk_select.
struct topk_cut {
  std::uint32_t key = 0x7fffffffu;  // magnitude key of T (0x7fffffff for k == 0, 0 for k == n)
  std::size_t cut_segment = 0;      // ties are kept in segments < cut_segment, ...
  std::size_t tie_end = 0;          // ... and at indices < tie_end in segment cut_segment
  std::size_t k = 0;                // entries kept
  std::size_t n = 0;                // entries in all segments
  std::size_t greater = 0;          // entries with magnitude > T (when 0 < k < n)
  std::size_t equal = 0;            // entries with magnitude == T (when 0 < k < n)
  bool keep_all = false;            // k == n (both flags are set when n == 0)
  bool keep_none = true;            // k == 0
  // What the selection read (statistics: not part of the result, not compared by ==).
  unsigned passes = 0;              // passes over the data (0 to 3; 1 for n <= topk_tile)
  std::size_t recounted = 0;        // elements pass 3 read (0 when it did not run)
  std::size_t scanned = 0;          // elements read by the final partial scan

  float threshold() const noexcept { return kernels::key_magnitude(key); }

  // Elements the producer was asked for, over all passes.
  std::size_t elements_read() const noexcept { return std::min(passes, 2u) * n + recounted + scanned; }

  // Index of the last kept tie in cut_segment is tie_end - 1 (when cut_segment is a segment).
  topk_rule rule(std::size_t segment) const noexcept {
    const std::size_t all = std::numeric_limits<std::size_t>::max();
    return {key, segment < cut_segment ? all : segment == cut_segment ? tie_end : 0};
  }

  bool keeps(std::size_t segment, std::size_t index, float x) const noexcept { return rule(segment).keeps(index, x); }

  // The same selection (the statistics may differ).
  friend bool operator==(const topk_cut& a, const topk_cut& b) noexcept {
    return a.key == b.key && a.cut_segment == b.cut_segment && a.tie_end == b.tie_end && a.k == b.k && a.n == b.n &&
           a.greater == b.greater && a.equal == b.equal && a.keep_all == b.keep_all && a.keep_none == b.keep_none;
  }
};

// Internal knobs (tests shrink them to reach every path on small data):
//   chunk          the work item size (parallel_chunk);
//   flush_limit    the most a worker's 32-bit histogram accumulates before it is flushed
//                  (2^32 - 1; raised to chunk if below);
//   small          the largest n taking the in-cache path (topk_tile; 0 forces the passes);
//   lows_budget    entries (2 bytes each) of the pool keeping pass 2's low key bits (8 MiB);
//   lows_per_item  the most low bits one item keeps (a 32 KiB staging buffer per worker).
struct topk_tuning {
  std::size_t chunk = parallel_chunk;
  std::uint64_t flush_limit = std::numeric_limits<std::uint32_t>::max();
  std::size_t small = topk_tile;
  std::size_t lows_budget = std::size_t{1} << 22;
  std::size_t lows_per_item = std::size_t{1} << 14;
};

template <class P>
concept topk_producer = std::invocable<const P&, std::size_t, std::size_t, std::size_t, float*>;

namespace topk_impl {

struct item {
  std::size_t segment;
  std::size_t begin;
  std::size_t len;
};

// body(worker, item) for every item, items claimed in order by `workers` workers.
template <class Body>
void run_items(std::size_t n_items, std::size_t workers, Body&& body) {
  std::atomic<std::size_t> next{0};
  parallel_for(workers, execution{static_cast<unsigned>(workers)}, [&](std::size_t w) {
    try {
      for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n_items;) body(w, i);
    } catch (...) {
      next.store(n_items, std::memory_order_relaxed);  // the other workers stop claiming
      throw;
    }
  });
}

// Calls f(begin, len, tile) for the tiles of one item, after producing them.
template <class Produce, class F>
void for_each_tile(const Produce& produce, const item& it, F&& f) {
  alignas(64) float tile[topk_tile];
  for (std::size_t pos = it.begin, end = it.begin + it.len; pos < end; pos += topk_tile) {
    const std::size_t len = std::min(topk_tile, end - pos);
    produce(it.segment, pos, len, tile);
    if (!f(pos, len, static_cast<const float*>(tile))) return;
  }
}

// Per-worker 32-bit histograms flushed into 64-bit totals.
class histograms {
 public:
  histograms(std::size_t workers, std::uint64_t flush_limit)
      : local_(workers * kernels::radix_bins), pending_(workers), total_(kernels::radix_bins), limit_(flush_limit) {}

  std::uint32_t* reserve(std::size_t worker, std::size_t count) {
    if (pending_[worker] + count > limit_) flush(worker, true);
    pending_[worker] += count;
    return local_.data() + worker * kernels::radix_bins;
  }
  // After a pass: every worker's counts into the totals; the local histograms end zeroed.
  void finish() {
    for (std::size_t w = 0; w < pending_.size(); ++w) flush(w, false);
  }
  const std::uint64_t* total() const noexcept { return total_.data(); }
  void clear_total() { std::fill(total_.begin(), total_.end(), std::uint64_t{0}); }

 private:
  void flush(std::size_t w, bool lock) {
    if (pending_[w] == 0) return;
    std::unique_lock guard(m_, std::defer_lock);
    if (lock) guard.lock();
    std::uint32_t* h = local_.data() + w * kernels::radix_bins;
    for (std::size_t b = 0; b < kernels::radix_bins; ++b) {
      total_[b] += h[b];
      h[b] = 0;
    }
    pending_[w] = 0;
  }

  std::vector<std::uint32_t> local_;
  std::vector<std::uint64_t> pending_;
  std::vector<std::uint64_t> total_;
  std::uint64_t limit_;
  std::mutex m_;
};

struct bin_pick {
  std::uint32_t bin;
  std::uint64_t above;  // entries in higher bins
};

// The bin holding the r-th largest entry (1 <= r <= the histogram's total).
template <class Count>
bin_pick pick_bin(const Count* hist, std::size_t bins, std::uint64_t r) noexcept {
  std::uint64_t above = 0;
  for (std::size_t b = bins; b-- > 0;) {
    if (above + hist[b] >= r) return {static_cast<std::uint32_t>(b), above};
    above += hist[b];
  }
  return {0, above};  // not reached under the precondition
}

// n <= topk_tile entries: every segment produced once into one stack tile, then a radix
// select over 8-bit digits of the keys in cache (four 256-bin histograms), one scan for the
// cut. One pass over the data, no heap allocation.
template <class Produce>
void select_small(std::span<const std::size_t> sizes, const Produce& produce, topk_cut& cut) {
  alignas(64) float tile[topk_tile];
  std::size_t n = 0;
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    if (sizes[s] == 0) continue;
    produce(s, std::size_t{0}, sizes[s], tile + n);
    n += sizes[s];
  }
  cut.passes = 1;
  std::uint32_t prefix = 0, mask = 0;
  std::uint64_t r = cut.k, in_bin = 0;
  for (unsigned shift = 24;; shift -= 8) {
    std::uint32_t hist[256] = {};
    kernels::histogram_byte(tile, n, mask, prefix, shift, hist);
    const bin_pick p = pick_bin(hist, 256, r);
    prefix |= p.bin << shift;
    mask |= 0xffu << shift;
    r -= p.above;
    in_bin = hist[p.bin];
    if (shift == 0) break;
  }
  cut.key = prefix;
  cut.greater = cut.k - static_cast<std::size_t>(r);
  cut.equal = static_cast<std::size_t>(in_bin);
  if (r == in_bin) {  // every tie kept
    cut.cut_segment = sizes.size();
    return;
  }
  std::size_t flat = kernels::find_nth_equal(tile, n, cut.key, static_cast<std::size_t>(r - 1));
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    if (flat < sizes[s]) {
      cut.cut_segment = s;
      cut.tie_end = flat + 1;
      return;
    }
    flat -= sizes[s];
  }
}

}  // namespace topk_impl

// topk_select with explicit tuning (tests shrink it to reach every path on small data).
template <topk_producer Produce>
topk_cut topk_select(std::span<const std::size_t> segment_sizes, std::size_t k, const Produce& produce,
                     const execution& ex, const topk_tuning& tuning) {
  using namespace topk_impl;
  topk_cut cut;
  std::size_t n = 0;
  for (std::size_t s : segment_sizes) n += s;
  cut.n = n;
  cut.k = k;
  if (k > n)
    throw error(errc::invalid_argument,
                "top-k selection: k = " + std::to_string(k) + " exceeds the " + std::to_string(n) + " entries");
  if (k == 0) {  // key 0x7fffffff, no tie kept: nothing (and, when n == 0, everything)
    cut.keep_all = n == 0;
    return cut;
  }
  cut.keep_none = false;
  if (k == n) {  // key 0, ties kept in every segment: everything
    cut.keep_all = true;
    cut.key = 0;
    cut.cut_segment = segment_sizes.size();
    return cut;
  }

  if (n <= std::min(tuning.small, topk_tile)) {
    select_small(segment_sizes, produce, cut);
    return cut;
  }

  const std::size_t chunk = std::max<std::size_t>(1, tuning.chunk);
  std::vector<item> items;
  items.reserve(n / chunk + segment_sizes.size());
  for (std::size_t s = 0; s < segment_sizes.size(); ++s)
    for (std::size_t b = 0; b < segment_sizes[s]; b += chunk) items.push_back({s, b, std::min(chunk, segment_sizes[s] - b)});
  const std::size_t workers = std::min<std::size_t>(resolve_threads(ex), items.size());
  histograms hist(workers, std::max<std::uint64_t>(tuning.flush_limit, chunk));

  // Pass 1: high 16 bits.
  run_items(items.size(), workers, [&](std::size_t w, std::size_t i) {
    std::uint32_t* h = hist.reserve(w, items[i].len);
    for_each_tile(produce, items[i], [&](std::size_t, std::size_t len, const float* t) {
      kernels::histogram_high(t, len, h);
      return true;
    });
  });
  hist.finish();
  cut.passes = 1;
  const bin_pick high = pick_bin(hist.total(), kernels::radix_bins, k);
  const std::uint64_t bin_count = hist.total()[high.bin];
  hist.clear_total();

  // Pass 2: low 16 bits within the bin. Per item: how many entries fell in the bin, and
  // (when they fit the item cap and the pool) their low key bits, kept in the pool so that
  // the ties per item can be counted without reading the data again.
  constexpr std::size_t not_kept = std::numeric_limits<std::size_t>::max();
  const std::uint64_t item_cap = std::min(chunk, tuning.lows_per_item);
  const std::size_t staging_size = static_cast<std::size_t>(std::min(item_cap, bin_count));
  const std::size_t pool_size = static_cast<std::size_t>(std::min<std::uint64_t>(tuning.lows_budget, bin_count));
  std::vector<std::uint16_t> pool(pool_size);
  std::atomic<std::size_t> pool_used{0};
  std::vector<std::vector<std::uint16_t>> staging(workers);
  std::vector<std::size_t> per_item(items.size()), kept_at(items.size(), not_kept);
  run_items(items.size(), workers, [&](std::size_t w, std::size_t i) {
    std::uint32_t* h = hist.reserve(w, items[i].len);
    std::vector<std::uint16_t>& lows = staging[w];
    if (lows.size() < staging_size) lows.resize(staging_size);
    std::size_t matched = 0;
    bool keeping = true;
    for_each_tile(produce, items[i], [&](std::size_t, std::size_t len, const float* t) {
      // Room for the most this tile can match (no more than the tile, nor than the bin).
      keeping = keeping && std::min<std::uint64_t>(matched + len, bin_count) <= item_cap;
      matched += keeping ? kernels::histogram_low_collect(t, len, high.bin, h, lows.data() + matched)
                         : kernels::histogram_low(t, len, high.bin, h);
      return true;
    });
    per_item[i] = matched;
    if (!keeping) return;
    std::size_t at = pool_used.load(std::memory_order_relaxed);
    do {
      if (at + matched > pool_size) return;  // the pool is full: pass 3 reads this item again
    } while (!pool_used.compare_exchange_weak(at, at + matched, std::memory_order_relaxed));
    std::copy_n(lows.data(), matched, pool.data() + at);
    kept_at[i] = at;
  });
  hist.finish();
  cut.passes = 2;
  const bin_pick low = pick_bin(hist.total(), kernels::radix_bins, k - high.above);
  cut.key = (high.bin << 16) | low.bin;
  cut.greater = static_cast<std::size_t>(high.above + low.above);
  cut.equal = static_cast<std::size_t>(hist.total()[low.bin]);
  const std::size_t ties = k - cut.greater;  // 1 <= ties <= equal
  if (ties == cut.equal) {                   // every tie kept: no index cut
    cut.cut_segment = segment_sizes.size();
    return cut;
  }

  // Ties per item. When every entry of the bin is a tie, pass 2's counts are the tie counts;
  // otherwise they come from the kept low bits, and pass 3 reads the items that kept none.
  if (cut.equal != bin_count) {
    std::vector<std::size_t> recount;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (kept_at[i] == not_kept) {
        recount.push_back(i);
      } else {
        const std::uint16_t* lows = pool.data() + kept_at[i];
        per_item[i] = static_cast<std::size_t>(std::count(lows, lows + per_item[i], static_cast<std::uint16_t>(low.bin)));
      }
    }
    if (!recount.empty()) {
      run_items(recount.size(), std::min(workers, recount.size()), [&](std::size_t, std::size_t r) {
        const item& it = items[recount[r]];
        std::size_t c = 0;
        for_each_tile(produce, it, [&](std::size_t, std::size_t len, const float* t) {
          c += kernels::count_equal(t, len, cut.key);
          return true;
        });
        per_item[recount[r]] = c;
      });
      for (std::size_t i : recount) cut.recounted += items[i].len;
      cut.passes = 3;
    }
  }

  // The item holding the ties-th tie in flat order, then its position by a scan.
  std::size_t before = 0, j = 0;
  while (before + per_item[j] < ties) before += per_item[j++];
  std::size_t nth = ties - before - 1;  // 0-based among the item's ties
  cut.cut_segment = items[j].segment;
  for_each_tile(produce, items[j], [&](std::size_t pos, std::size_t len, const float* t) {
    cut.scanned += len;
    const std::size_t c = kernels::count_equal(t, len, cut.key);
    if (nth >= c) {
      nth -= c;
      return true;
    }
    cut.tie_end = pos + kernels::find_nth_equal(t, len, cut.key, nth) + 1;
    return false;
  });
  return cut;
}

// The k entries of largest magnitude over segments of the given sizes (see the top of this
// file). Preconditions: k <= the sum of the sizes (else alloy::error); produce as described.
template <topk_producer Produce>
topk_cut topk_select(std::span<const std::size_t> segment_sizes, std::size_t k, const Produce& produce,
                     const execution& ex = {}) {
  return topk_select(segment_sizes, k, produce, ex, topk_tuning{});
}

}  // namespace alloy::detail
