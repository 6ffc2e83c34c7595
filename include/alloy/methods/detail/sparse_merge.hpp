// The engine behind the sparsifying merges (TIES, DARE, Breadcrumbs, DELLA, magnitude
// pruning).
//
// Task vectors tau_i = theta_i - theta_base are never stored whole. Every pass recomputes
// them tile by tile (tiles of sparse_tile elements, inside work items of parallel_chunk
// elements at fixed offsets) from the inputs, masks and rescales them per model
// (tv_mask), and hands the tile rows [b, t_1, .., t_N] to a callback: the merge streams them
// through a combine functor into the output; other passes reduce them (norms, votes).
// Memory: (N + 2) tiles per worker. Results do not depend on the thread count: tiles and
// items sit at fixed offsets and reductions are combined in item order.
//
// The merge of a job whose inputs are f32 or bf16 (computed in float) and whose masks are
// keep-all, none, top-k, random or recorded bits takes a fused pass instead
// (kernels/sparse_fused.hpp): per SIMD batch the inputs are loaded, tau masked and combined
// in registers, no tau tile is stored; the same operations on the same tiles, so the same
// bits. Random masks draw their uniforms 128 at a time (kernels/philox.hpp, AVX-512) with the
// scalar generator's values.
//
// Row-ranked masks (tv_mask::kind::della) need a whole row of the tensor to rank an entry,
// so a job holding one is cut differently: its items and tiles are whole blocks of rows
// (ranked_block: about parallel_chunk and sparse_tile elements, at least one block), still
// at fixed offsets. Such a job's tiles may be longer than sparse_tile (a row of 4096, or a
// whole 1-D tensor): callbacks must accept any tile length. Memory for it: (N + 2) tiles
// plus 16 bytes per row entry of sort scratch, per worker. When match_norms ranks such masks
// for a norm, it can record their keep decisions as bits (tv_mask::kind::bits, n / 8 bytes
// per model, owned by the caller), so that later passes read them instead of ranking again;
// the fused pass reads them as one more mask kind.
#pragma once

#include <alloy/config.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/random.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/kernels/convert.hpp>
#include <alloy/kernels/philox.hpp>
#include <alloy/kernels/radix_select.hpp>
#include <alloy/kernels/sparse_fused.hpp>
#include <alloy/kernels/stream.hpp>
#include <alloy/kernels/task_vector_mask.hpp>
#include <alloy/methods/detail/topk.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <limits>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace alloy::detail {

inline constexpr std::size_t sparse_tile = 2048;
static_assert(parallel_chunk % sparse_tile == 0 && sparse_tile % kernels::max_width == 0);

// Which entries of one model's task vector survive, and the factor applied to them.
//
// della (DELLA's MagPrune): the tensor is viewed as [outer, row_length, row_stride] (flat
// index (o * row_length + r) * row_stride + k); a row is the row_length entries (o, ., k).
// A 2-D [R, C] tensor has row_length C and row_stride 1; mergekit ranks along dim 1 of any
// tensor: row_length = shape[1], row_stride = the product of the later dims. Within a row of
// L entries, the entry of 0-based magnitude rank q (ascending |t| as the float key of
// kernels::magnitude_key, equal magnitudes by lower flat index first) is kept iff
//   uniform(i) < p_q,  p_q = p_low + p_width * (q / (L - 1))   (L = 1: p_low + p_width / 2)
// with uniform(i) = counter_rng(seed, stream).uniform(flat index i); a kept entry is
// multiplied by `scale`, and by 1 / p_q as well when inverse_probability (the paper's
// rescale). p_width = 0 needs no ranking (every p_q = p_low).
struct tv_mask {
  enum class kind : unsigned char { all, none, topk, band, random, della, bits };
  kind type = kind::all;
  topk_rule keep;             // topk: kept iff keep.keeps(i, |t|); band: and not drop.keeps
  topk_rule drop;             // band: the largest entries removed (Breadcrumbs' outliers)
  float keep_probability = 1;  // random: kept iff uniform(first + i) < keep_probability
  std::size_t first = 0;       // random, della, bits: the tensor index of the job's element 0 (slice_job)
  std::uint64_t seed = 0;      // random, della
  std::uint64_t stream = 0;    // random, della
  double scale = 1;  // multiplies every kept entry (1/density, a norm ratio)
  // della only:
  std::size_t row_length = 0;        // L, at most 2^32 - 1
  std::size_t row_stride = 1;        // distance between consecutive entries of a row
  double p_low = 0;                  // keep probability of the smallest magnitude of a row
  double p_width = 0;                // p of the largest minus p of the smallest
  bool inverse_probability = false;  // kept entries also scaled by 1 / p_q
  // bits only: kept iff bit (first + i) of bits is set; the keep decisions a della mask
  // made in match_norms, recorded so that the merge need not rank and draw again.
  const std::uint64_t* bits = nullptr;
};

// Elements per block of whole rows of a della mask (row_length * row_stride).
constexpr std::size_t ranked_block(const tv_mask& m) noexcept { return m.row_length * m.row_stride; }

// One tensor of a sparsifying merge.
struct sparse_job {
  std::string_view name;
  tensor_view base;
  std::vector<tensor_view> models;
  mutable_tensor_view out;
  std::vector<tv_mask> masks;  // one per model
};

// Elements [first, first + count) of `job` (first + count <= its size; first, and count
// unless the slice ends the job, multiples of slice_unit(job)) as a job of their own writing
// `out` (count elements): the inputs' views advanced to `first`, each rule's tie_end moved
// with them and random and della masks' draws started at `first`, so that merging the slice
// keeps the entries the whole job keeps. Every merge step is element-wise, or row-wise for
// della's ranks, so the slice's results are the whole job's bits at those elements.
inline sparse_job slice_job(const sparse_job& job, std::size_t first, std::size_t count, mutable_tensor_view out) {
  auto advance = [&](tensor_view v) {
    return tensor_view{static_cast<const unsigned char*>(v.data) + first * dtype_size(v.type), count, v.type};
  };
  auto shift = [&](topk_rule r) {
    r.tie_end = r.tie_end == std::numeric_limits<std::size_t>::max() ? r.tie_end
                : r.tie_end <= first                                   ? 0
                                                                       : r.tie_end - first;
    return r;
  };
  sparse_job s{job.name, advance(job.base), {}, out, job.masks};
  s.models.reserve(job.models.size());
  for (const tensor_view& m : job.models) s.models.push_back(advance(m));
  for (tv_mask& m : s.masks) {
    m.keep = shift(m.keep);
    m.drop = shift(m.drop);
    m.first += first;
  }
  return s;
}

inline bool computes_in_double(const sparse_job& j) noexcept {
  if (j.base.type == dtype::f64 || j.out.type == dtype::f64) return true;
  return std::any_of(j.models.begin(), j.models.end(), [](const tensor_view& v) { return v.type == dtype::f64; });
}

// tau = x_i - b over [begin, begin + len) into `tau` (C), b already widened in `b`. With
// storage precision, tau is rounded to model i's storage type, as a framework computing
// the difference natively in that type gets it.
template <class C>
void task_vector_tile(const tensor_view& x, const C* b, std::size_t begin, std::size_t len, bool storage_precision,
                      C* tau) noexcept {
  if (x.type == dtype_of<C>) {  // read in place: no copy of the tile
    kernels::difference(static_cast<const C*>(x.data) + begin, b, tau, len);
  } else {
    kernels::widen<C>({x.data, x.type}, begin, tau, len);
    kernels::difference(tau, b, tau, len);
  }
  if (storage_precision && x.type != dtype_of<C>) {
    // Round through the storage type in place, in pieces, through a small stack buffer.
    alignas(64) unsigned char buf[1024 * 8];
    constexpr std::size_t step = sizeof(buf) / 8;
    for (std::size_t s = 0; s < len; s += step) {
      const std::size_t m = std::min(step, len - s);
      visit_floating(x.type, [&](auto tag) {
        using S = decltype(tag);
        S* tmp = reinterpret_cast<S*>(buf);
        kernels::convert_n(tau + s, tmp, m);
        kernels::convert_n(tmp, tau + s, m);
      });
    }
  }
}

// Scratch for ranking rows (della masks): one row's (key, index) pairs, twice (grown to the
// longest row met), and the per-rank keep probabilities p_q and factors of the masks met, for
// rows of up to table_rows entries (longer rows compute them per entry: same values).
struct rank_scratch {
  static constexpr std::size_t table_rows = std::size_t{1} << 16;
  static constexpr std::size_t max_tables = 16;
  struct table {
    std::size_t length;
    double p_low, p_width, scale;
    bool inverse;
    std::vector<double> p, factor;
  };
  std::vector<std::uint64_t> a, b;
  std::vector<table> tables;
  std::size_t next = 0;  // the table replaced when max_tables are in use

  // p_q and factor_q for mask m (m.row_length <= table_rows, at least 2 entries).
  const table& lookup(const tv_mask& m) {
    for (const auto& t : tables)
      if (t.length == m.row_length && t.p_low == m.p_low && t.p_width == m.p_width && t.scale == m.scale &&
          t.inverse == m.inverse_probability)
        return t;
    table* slot;
    if (tables.size() < max_tables) {
      slot = &tables.emplace_back();
    } else {
      slot = &tables[next];
      next = (next + 1) % max_tables;
    }
    table& t = *slot;
    t.length = m.row_length;
    t.p_low = m.p_low;
    t.p_width = m.p_width;
    t.scale = m.scale;
    t.inverse = m.inverse_probability;
    t.p.resize(m.row_length);
    t.factor.resize(m.row_length);
    const double last = static_cast<double>(m.row_length - 1);
    for (std::size_t q = 0; q < m.row_length; ++q) {
      t.p[q] = m.p_low + m.p_width * (static_cast<double>(q) / last);
      t.factor[q] = m.inverse_probability ? m.scale / t.p[q] : m.scale;
    }
    return t;
  }
};

// Sorts v[0, n) ascending, where v[r] = key_r << 32 | r (keys below 2^31, the indices
// 0..n-1 in order): the result orders by key, equal keys by index, as a stable sort of the
// keys would. tmp has n entries. An LSD radix sort on the key (digits of 11, 11 and 9 bits; a
// pass whose digit is the same for every key is skipped); std::sort for short rows (the
// values are distinct, so it gives the same order).
inline void sort_ranked(std::uint64_t* v, std::uint64_t* tmp, std::size_t n) noexcept {
  if (n <= 128) {
    std::sort(v, v + n);
    return;
  }
  constexpr std::size_t bins = 2048;
  std::uint32_t hist[3][bins] = {};
  for (std::size_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::uint32_t>(v[i] >> 32);
    ++hist[0][k & (bins - 1)];
    ++hist[1][(k >> 11) & (bins - 1)];
    ++hist[2][k >> 22];
  }
  std::uint64_t* src = v;
  std::uint64_t* dst = tmp;
  for (unsigned pass = 0; pass < 3; ++pass) {
    std::uint32_t* h = hist[pass];
    const unsigned shift = 32 + 11 * pass;
    if (h[(src[0] >> shift) & (bins - 1)] == n) continue;  // one digit for every key
    std::uint32_t sum = 0;
    for (std::size_t b = 0; b < bins; ++b) {
      const std::uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (std::size_t i = 0; i < n; ++i) dst[h[(src[i] >> shift) & (bins - 1)]++] = src[i];
    std::swap(src, dst);
  }
  if (src != v) std::copy(src, src + n, v);
}

// v when keep, else +0, without a branch (keep is a coin flip: a branch mispredicts half
// the time). NaN v stays NaN when kept.
template <class C>
C kept_or_zero(bool keep, C v) noexcept {
  using U = std::conditional_t<sizeof(C) == 4, std::uint32_t, std::uint64_t>;
  static_assert(sizeof(C) == sizeof(U));
  return std::bit_cast<C>(std::bit_cast<U>(v) & (U{0} - U{keep}));
}

// A della mask over tau = elements begin .. begin + len of the job (m.first + begin of the
// tensor), which must be whole blocks of rows (begin and len multiples of ranked_block(m)).
// `u` is a scratch of len floats. keep (optional, len bytes): also receives each entry's keep
// decision, 1 or 0.
template <class C>
void apply_della_mask(const tv_mask& m, C* tau, std::size_t begin, std::size_t len, float* u, rank_scratch& s,
                      std::uint8_t* keep = nullptr) {
  kernels::fill_uniform(counter_rng(m.seed, m.stream), m.first + begin, u, len);
  const std::size_t rows = m.row_length, stride = m.row_stride, block = ranked_block(m);
  auto factor = [&m](double p) { return static_cast<C>(m.inverse_probability ? m.scale / p : m.scale); };
  if (m.p_width == 0 || rows == 1) {  // one probability for every entry: no ranking
    const double p = rows == 1 ? m.p_low + m.p_width / 2 : m.p_low;
    const C f = factor(p);
    for (std::size_t j = 0; j < len; ++j) tau[j] = u[j] < p ? tau[j] * f : C(0);
    if (keep != nullptr)
      for (std::size_t j = 0; j < len; ++j) keep[j] = u[j] < p;
    return;
  }
  if (s.a.size() < rows) {
    s.a.resize(rows);
    s.b.resize(rows);
  }
  const rank_scratch::table* t = rows <= rank_scratch::table_rows ? &s.lookup(m) : nullptr;
  const double last = static_cast<double>(rows - 1);
  for (std::size_t o = 0; o < len; o += block)
    for (std::size_t k = 0; k < stride; ++k) {
      C* row = tau + o + k;
      const float* ur = u + o + k;
      std::uint8_t* kr = keep != nullptr ? keep + o + k : nullptr;
      std::uint64_t* a = s.a.data();
      if (stride == 1)
        for (std::size_t r = 0; r < rows; ++r)
          a[r] = std::uint64_t{kernels::magnitude_key(static_cast<float>(row[r]))} << 32 | r;
      else
        for (std::size_t r = 0; r < rows; ++r)
          a[r] = std::uint64_t{kernels::magnitude_key(static_cast<float>(row[r * stride]))} << 32 | r;
      sort_ranked(a, s.b.data(), rows);
      if (t != nullptr) {
        const double* p = t->p.data();
        const double* f = t->factor.data();
        for (std::size_t q = 0; q < rows; ++q) {
          const std::size_t at = static_cast<std::uint32_t>(a[q]) * stride;
          row[at] = kept_or_zero(ur[at] < p[q], row[at] * static_cast<C>(f[q]));
          if (kr != nullptr) kr[at] = ur[at] < p[q];
        }
      } else {
        for (std::size_t q = 0; q < rows; ++q) {
          const std::size_t at = static_cast<std::uint32_t>(a[q]) * stride;
          const double p = m.p_low + m.p_width * (static_cast<double>(q) / last);
          row[at] = kept_or_zero(ur[at] < p, row[at] * factor(p));
          if (kr != nullptr) kr[at] = ur[at] < p;
        }
      }
    }
}

// Zeroes the dropped entries of tau (indices begin .. begin + len of the tensor) and scales
// the kept ones. `u` is a scratch tile for random and della masks. A della mask needs whole
// blocks of rows and sort scratch: the overload below takes it from the caller; this one
// allocates it.
template <class C>
void apply_mask(const tv_mask& m, C* tau, std::size_t begin, std::size_t len, float* u) noexcept {
  const C scale = static_cast<C>(m.scale);
  switch (m.type) {
    case tv_mask::kind::all:
      if (m.scale != 1)
        for (std::size_t j = 0; j < len; ++j) tau[j] = tau[j] * scale;
      return;
    case tv_mask::kind::none:
      std::fill(tau, tau + len, C(0));
      return;
    case tv_mask::kind::topk:
      kernels::keep_band(tau, len, m.keep.key, m.keep.tie_limit(begin, len), 0, 0, scale, false);
      return;
    case tv_mask::kind::band:
      kernels::keep_band(tau, len, m.keep.key, m.keep.tie_limit(begin, len), m.drop.key, m.drop.tie_limit(begin, len),
                         scale, true);
      return;
    case tv_mask::kind::random:
      kernels::fill_uniform(counter_rng(m.seed, m.stream), m.first + begin, u, len);
      kernels::keep_random(tau, u, len, m.keep_probability, scale);
      return;
    case tv_mask::kind::della: {
      rank_scratch s;
      apply_della_mask(m, tau, begin, len, u, s);
      return;
    }
    case tv_mask::kind::bits:
      kernels::keep_bits(tau, m.bits, m.first + begin, len, scale);
      return;
  }
}

template <class C>
void apply_mask(const tv_mask& m, C* tau, std::size_t begin, std::size_t len, float* u, rank_scratch& s) {
  if (m.type == tv_mask::kind::della)
    apply_della_mask(m, tau, begin, len, u, s);
  else
    apply_mask(m, tau, begin, len, u);
}

// How for_each_task_vector_tile and match_norms cut the jobs: work items [first, last) of a
// job at fixed offsets, and the tile length inside them. A job without a della mask: items of
// parallel_chunk elements and tiles of sparse_tile. A job with one: whole blocks of rows
// (ranked_block of its first della mask; every della mask of a job has the same rows).
struct tv_item {
  std::size_t job, first, last;
};

inline std::size_t ranked_block(const sparse_job& j) noexcept {
  for (const auto& m : j.masks)
    if (m.type == tv_mask::kind::della) return ranked_block(m);
  return 0;
}

// What slice_job's cuts must be multiples of: 1, or for a job with a della mask the block of
// whole rows its ranks are taken in (every other mask decides an entry by its value and its
// index alone).
inline std::size_t slice_unit(const sparse_job& j) noexcept {
  const std::size_t b = ranked_block(j);
  return b == 0 ? 1 : b;
}

inline std::size_t tile_length(const sparse_job& j) noexcept {
  const std::size_t b = ranked_block(j);
  return b == 0 ? sparse_tile : b * std::max<std::size_t>(1, sparse_tile / b);
}

inline std::vector<tv_item> task_vector_item_list(std::span<const sparse_job> jobs) {
  std::vector<tv_item> items;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    const std::size_t n = jobs[j].out.size, b = ranked_block(jobs[j]);
    const std::size_t step = b == 0 ? parallel_chunk : b * std::max<std::size_t>(1, parallel_chunk / b);
    for (std::size_t s = 0; s < n; s += step) items.push_back({j, s, std::min(n, s + step)});
  }
  return items;
}

// The tile callback: fn(job_index, item_index, C tag, rows, begin, len) where rows[0] is the
// base tile and rows[1 + i] model i's masked task vector tile, all of `len` elements
// starting at element `begin` of the tensor. len <= sparse_tile, except in a job with a
// della mask, whose tiles are whole blocks of rows (len <= max(sparse_tile, block)).
template <class Fn>
void for_each_task_vector_tile(std::span<const sparse_job> jobs, bool storage_precision, const execution& ex,
                               const Fn& fn) {
  const std::vector<tv_item> items = task_vector_item_list(jobs);
  parallel_for(items.size(), ex, [&](std::size_t k) {
    const sparse_job& job = jobs[items[k].job];
    const std::size_t first = items[k].first, last = items[k].last, tile = tile_length(job);
    auto run = [&](auto tag) {
      using C = decltype(tag);
      const std::size_t n = job.models.size();
      std::vector<C> buf((n + 1) * tile);
      std::vector<float> u(tile);
      rank_scratch scratch;
      std::vector<const C*> rows(n + 1);
      for (std::size_t r = 0; r <= n; ++r) rows[r] = buf.data() + r * tile;
      for (std::size_t pos = first; pos < last; pos += tile) {
        const std::size_t len = std::min(tile, last - pos);
        const C* b = buf.data();
        if (job.base.type == dtype_of<C>)  // read in place: no copy of the tile
          b = static_cast<const C*>(job.base.data) + pos;
        else
          kernels::widen<C>({job.base.data, job.base.type}, pos, buf.data(), len);
        rows[0] = b;
        for (std::size_t i = 0; i < n; ++i) {
          C* t = buf.data() + (i + 1) * tile;
          task_vector_tile(job.models[i], b, pos, len, storage_precision, t);
          apply_mask(job.masks[i], t, pos, len, u.data(), scratch);
        }
        fn(items[k].job, k, tag, std::span<const C* const>(rows), pos, len);
      }
    };
    if (computes_in_double(job))
      run(double{});
    else
      run(float{});
  });
}

// The number of work items for_each_task_vector_tile makes (for per-item reductions).
inline std::size_t task_vector_items(std::span<const sparse_job> jobs) noexcept {
  std::size_t n = 0;
  for (const auto& j : jobs) {
    const std::size_t b = ranked_block(j);
    const std::size_t step = b == 0 ? parallel_chunk : b * std::max<std::size_t>(1, parallel_chunk / b);
    n += (j.out.size + step - 1) / step;
  }
  return n;
}

// Whether a job's merge can take the fused pass (kernels/sparse_fused.hpp): float compute,
// base and models stored as f32 or bf16 (no storage-precision rounding of a bf16 tau), masks
// that need no ranking or band (recorded keep bits are fine), and at most fused_max_models
// models.
inline bool fused_merge_job(const sparse_job& j, bool storage_precision) noexcept {
  if (computes_in_double(j) || j.models.size() > kernels::fused_max_models) return false;
  if (j.base.type != dtype::f32 && j.base.type != dtype::bf16) return false;
  for (std::size_t i = 0; i < j.models.size(); ++i) {
    const dtype t = j.models[i].type;
    if (t != dtype::f32 && (t != dtype::bf16 || storage_precision)) return false;
    const auto k = j.masks[i].type;
    if (k == tv_mask::kind::band || k == tv_mask::kind::della) return false;
  }
  return true;
}

// Writes combine(rows) to every job's output. Jobs that allow it take one fused pass per
// tile; the others go through the tau tiles of for_each_task_vector_tile. Both compute the
// same values (the same tiles at the same offsets, the same operations).
template <class Make>
void run_sparse_merge(std::span<const sparse_job> jobs, bool storage_precision, const execution& ex, const Make& make) {
  std::vector<std::size_t> fused, other;
  for (std::size_t j = 0; j < jobs.size(); ++j) (fused_merge_job(jobs[j], storage_precision) ? fused : other).push_back(j);
  auto tile_pass = [&](std::span<const sparse_job> js, auto job_index) {
    for_each_task_vector_tile(js, storage_precision, ex,
                              [&](std::size_t j, std::size_t, auto tag, auto rows, std::size_t pos, std::size_t len) {
                                using C = decltype(tag);
                                const sparse_job& job = js[j];
                                kernels::source src[kernels::max_stream_inputs];
                                for (std::size_t r = 0; r < rows.size(); ++r) src[r] = {rows[r], dtype_of<C>};
                                auto* out = static_cast<unsigned char*>(job.out.data) + pos * dtype_size(job.out.type);
                                kernels::stream<C>(src, rows.size(), {out, job.out.type}, 0, len, make(job_index(j), tag));
                              });
  };
  if (fused.empty()) {
    tile_pass(jobs, [](std::size_t j) { return j; });
    return;
  }
  if (!other.empty()) {
    // The jobs that cannot fuse, as their own list (the callback maps back to the index).
    std::vector<sparse_job> rest;
    for (std::size_t j : other) rest.push_back(jobs[j]);
    tile_pass(rest, [&](std::size_t j) { return other[j]; });
  }
  struct item {
    std::size_t job, first, last;
  };
  std::vector<item> items;
  for (std::size_t j : fused)
    for (std::size_t s = 0; s < jobs[j].out.size; s += parallel_chunk)
      items.push_back({j, s, std::min(jobs[j].out.size, s + parallel_chunk)});
  parallel_for(items.size(), ex, [&](std::size_t k) {
    const sparse_job& job = jobs[items[k].job];
    const std::size_t n = job.models.size();
    const auto f = make(items[k].job, float{});
    const bool out_direct = job.out.type == dtype::f32 || job.out.type == dtype::bf16;
    // Non-temporal stores when the whole output (not this item) is stream_store_threshold
    // bytes or more, as kernels::stream decides for a whole range, its start is aligned to a
    // batch (every tile starts at a multiple of sparse_tile, itself one of the batch) and it
    // is none of the inputs (an in-place merge keeps ordinary stores, as in kernels::stream).
    bool nt = kernels::has_stream_stores && out_direct &&
              job.out.size * dtype_size(job.out.type) >= kernels::stream_store_threshold &&
              reinterpret_cast<std::uintptr_t>(job.out.data) % (kernels::width<float> * dtype_size(job.out.type)) == 0 &&
              job.out.data != job.base.data;
    for (std::size_t i = 0; i < n; ++i) nt = nt && job.out.data != job.models[i].data;
    std::vector<float> scratch((out_direct ? 0 : sparse_tile) + (n * sparse_tile));
    float* narrow_tile = scratch.data();
    float* u = scratch.data() + (out_direct ? 0 : sparse_tile);
    kernels::fused_input in[kernels::fused_max_models];
    for (std::size_t pos = items[k].first; pos < items[k].last; pos += sparse_tile) {
      const std::size_t len = std::min(sparse_tile, items[k].last - pos);
      const bool base_bf16 = job.base.type == dtype::bf16;
      const void* b = static_cast<const unsigned char*>(job.base.data) + pos * dtype_size(job.base.type);
      for (std::size_t i = 0; i < n; ++i) {
        const tv_mask& m = job.masks[i];
        kernels::fused_input& x = in[i];
        x.data = static_cast<const unsigned char*>(job.models[i].data) + pos * dtype_size(job.models[i].type);
        x.bf16 = job.models[i].type == dtype::bf16;
        x.scale = static_cast<float>(m.scale);
        x.multiply = m.scale != 1;
        switch (m.type) {
          case tv_mask::kind::all: x.mask = kernels::fused_mask::all; break;
          case tv_mask::kind::none: x.mask = kernels::fused_mask::none; break;
          case tv_mask::kind::topk:
            x.set_topk(m.keep.key, m.keep.tie_limit(pos, len), len);
            break;
          case tv_mask::kind::bits:
            x.mask = kernels::fused_mask::bits;
            x.bits = m.bits;
            x.bit0 = m.first + pos;
            break;
          default:  // random (fused_merge_job admits no other kind)
            x.mask = kernels::fused_mask::random;
            x.u = u + i * sparse_tile;
            x.p = m.keep_probability;
            kernels::fill_uniform(counter_rng(m.seed, m.stream), m.first + pos, u + i * sparse_tile, len);
            break;
        }
      }
      if (out_direct) {
        kernels::fused_merge_tile(b, base_bf16, in, n, static_cast<unsigned char*>(job.out.data) + pos * dtype_size(job.out.type),
                                  job.out.type == dtype::bf16, len, pos, f, nt);
      } else {
        kernels::fused_merge_tile(b, base_bf16, in, n, narrow_tile, false, len, pos, f);
        kernels::narrow(narrow_tile, {job.out.data, job.out.type}, pos, len);
      }
    }
  });
}

// The producer for topk_select over model i's task vectors, one segment per job (one job
// for a per-tensor top-k, all of a model's tensors for a global one). It writes tau as a
// float, computed exactly as the merge computes it, so the kept set is the same.
// Told each range of a job's inputs a selection has finished reading (the streaming engine
// releases those pages of its memory maps, so a whole-model selection stays bounded).
using read_hook = std::function<void(std::size_t job, std::size_t begin, std::size_t len)>;

struct task_vector_producer {
  std::span<const sparse_job> jobs;
  std::size_t model;
  bool storage_precision;
  const read_hook* after_read = nullptr;

  void operator()(std::size_t segment, std::size_t begin, std::size_t len, float* out) const {
    const sparse_job* job = &jobs[segment];
    auto run = [&](auto tag) {
      using C = decltype(tag);
      C b[1024], t[1024];
      for (std::size_t s = 0; s < len; s += 1024) {
        const std::size_t m = std::min<std::size_t>(1024, len - s);
        kernels::widen<C>({job->base.data, job->base.type}, begin + s, b, m);
        task_vector_tile(job->models[model], b, begin + s, m, storage_precision, t);
        for (std::size_t j = 0; j < m; ++j) out[s + j] = static_cast<float>(t[j]);
      }
    };
    if (computes_in_double(*job))
      run(double{});
    else
      run(float{});
    if (after_read) (*after_read)(segment, begin, len);
  }
};

// Norm matching for any sparsifier (mergekit's rescaled_masked_tensor): the kept entries of
// each (tensor, model) are multiplied by ||tau|| / ||masked tau|| in the chosen norm, unless
// either norm is below 1e-7. Applies to masks whose scale is still 1 and that do not rescale
// per entry (inverse_probability); norms are accumulated in double, per work item, and
// combined in item order (deterministic).
}  // namespace alloy::detail

namespace alloy {
// Norm matching of a sparsified task vector: L1, L2 or L-infinity (mergekit's `rescale`).
enum class rescale_norm { none, l1, l2, linf };
}  // namespace alloy

namespace alloy::detail {


// The norm accumulators of match_norms for models [0, n): acc[2 i] over t_i[0, len) (model
// i's row at t + i * stride), acc[2 i + 1] over kept_i[0, n_kept[i]) (at kept + i * stride),
// each in element order, as acc = acc + |v| (l1), acc + v * v (l2) or max(acc, |v|) (linf)
// with v converted to double. Up to four models advance together (independent chains).
template <int M, class C, class Step>
void norm_chains_group(double* acc, const C* t, std::size_t stride, std::size_t len, const C* kept,
                       const std::size_t* n_kept, const Step& step) noexcept {
  double a[2 * M];
  for (int i = 0; i < 2 * M; ++i) a[i] = acc[i];
  for (std::size_t j = 0; j < len; ++j)
    for (int i = 0; i < M; ++i) a[2 * i] = step(a[2 * i], static_cast<double>(t[i * stride + j]));
  std::size_t common = n_kept[0];
  for (int i = 1; i < M; ++i) common = std::min(common, n_kept[i]);
  for (std::size_t j = 0; j < common; ++j)
    for (int i = 0; i < M; ++i) a[2 * i + 1] = step(a[2 * i + 1], static_cast<double>(kept[i * stride + j]));
  for (int i = 0; i < M; ++i)
    for (std::size_t j = common; j < n_kept[i]; ++j) a[2 * i + 1] = step(a[2 * i + 1], static_cast<double>(kept[i * stride + j]));
  for (int i = 0; i < 2 * M; ++i) acc[i] = a[i];
}

template <class C, class Step>
void norm_chains(double* acc, const C* t, std::size_t stride, std::size_t len, const C* kept, const std::size_t* n_kept,
                 std::size_t n, const Step& step) noexcept {
  for (std::size_t g = 0; g < n; g += 4) {
    const std::size_t o = g * stride;
    switch (std::min<std::size_t>(4, n - g)) {
      case 4: norm_chains_group<4>(acc + 2 * g, t + o, stride, len, kept + o, n_kept + g, step); break;
      case 3: norm_chains_group<3>(acc + 2 * g, t + o, stride, len, kept + o, n_kept + g, step); break;
      case 2: norm_chains_group<2>(acc + 2 * g, t + o, stride, len, kept + o, n_kept + g, step); break;
      default: norm_chains_group<1>(acc + 2 * g, t + o, stride, len, kept + o, n_kept + g, step); break;
    }
  }
}

template <class C>
void norm_chains(rescale_norm norm, double* acc, const C* t, std::size_t stride, std::size_t len, const C* kept,
                 const std::size_t* n_kept, std::size_t n) noexcept {
  if (norm == rescale_norm::l1)
    norm_chains(acc, t, stride, len, kept, n_kept, n, [](double a, double v) { return a + std::abs(v); });
  else if (norm == rescale_norm::l2)
    norm_chains(acc, t, stride, len, kept, n_kept, n, [](double a, double v) { return a + v * v; });
  else
    norm_chains(acc, t, stride, len, kept, n_kept, n, [](double a, double v) { return std::max(a, std::abs(v)); });
}

// ORs keep[0, len) (0 or 1 each) into bits at bit offset `at`, one atomic OR per word: work
// items of whole rows need not start on a word, so two may share one.
inline void or_keep_bits(std::uint64_t* bits, std::size_t at, const std::uint8_t* keep, std::size_t len) noexcept {
  for (std::size_t e = 0; e < len;) {
    const std::size_t g = at + e, shift = g & 63, n = std::min<std::size_t>(64 - shift, len - e);
    std::uint64_t word = 0;
    for (std::size_t b = 0; b < n; ++b) word |= std::uint64_t{keep[e + b]} << (shift + b);
    if (word != 0) std::atomic_ref<std::uint64_t>(bits[g >> 6]).fetch_or(word, std::memory_order_relaxed);
    e += n;
  }
}

// Sets each mask's scale to ||tau|| / ||kept|| in `norm` (skipped when a norm is below 1e-7,
// and for masks with their own 1/p scaling). keep_bits (optional): the storage for the keep
// decisions of the della masks it ranks (bits of job j, model i at [j * models + i], n / 64
// words each); those masks become kind::bits, so the merge reads the decisions instead of
// ranking and drawing again, at n / 8 bytes per model. The caller keeps the storage alive.
inline void match_norms(std::span<sparse_job> jobs, rescale_norm norm, bool storage_precision, const execution& ex,
                        std::vector<std::vector<std::uint64_t>>* keep_bits = nullptr) {
  if (norm == rescale_norm::none || jobs.empty()) return;
  const std::vector<tv_item> items = task_vector_item_list(jobs);
  const std::size_t n_models = jobs[0].models.size();
  auto records = [&](std::size_t j, std::size_t i) {
    const tv_mask& m = jobs[j].masks[i];
    return keep_bits != nullptr && m.type == tv_mask::kind::della && !m.inverse_probability;
  };
  if (keep_bits != nullptr) {
    keep_bits->assign(jobs.size() * n_models, {});
    for (std::size_t j = 0; j < jobs.size(); ++j)
      for (std::size_t i = 0; i < n_models; ++i)
        if (records(j, i)) (*keep_bits)[j * n_models + i].assign((jobs[j].out.size + 63) / 64, 0);
  }
  // partial[item][2 * model + 0/1] = norm accumulator before / after masking
  std::vector<double> partial(items.size() * 2 * n_models, 0.0);
  parallel_for(items.size(), ex, [&](std::size_t k) {
    const sparse_job& job = jobs[items[k].job];
    const std::size_t first = items[k].first, last = items[k].last, tile = tile_length(job);
    auto run = [&](auto tag) {
      using C = decltype(tag);
      // Per tile: every model's tau (t) and its masked values other than 0 (kept, packed:
      // adding a 0 leaves any of these accumulators unchanged), then the accumulators of
      // all models advanced together (independent chains, each in element order).
      std::vector<C> b(tile), t(n_models * tile), kept(n_models * tile);
      std::vector<std::size_t> n_kept(n_models);
      std::vector<float> u(tile);
      rank_scratch scratch;
      std::vector<double> acc(2 * n_models);
      std::vector<std::uint8_t> keep(keep_bits != nullptr ? tile : 0);
      for (std::size_t i = 0; i < n_models; ++i) {
        acc[2 * i] = partial[(k * n_models + i) * 2];
        acc[2 * i + 1] = partial[(k * n_models + i) * 2 + 1];
      }
      for (std::size_t pos = first; pos < last; pos += tile) {
        const std::size_t len = std::min(tile, last - pos);
        kernels::widen<C>({job.base.data, job.base.type}, pos, b.data(), len);
        for (std::size_t i = 0; i < job.models.size(); ++i) {
          C* ti = t.data() + i * tile;
          task_vector_tile(job.models[i], b.data(), pos, len, storage_precision, ti);
          C* ki = kept.data() + i * tile;
          std::copy_n(ti, len, ki);
          tv_mask unscaled = job.masks[i];
          unscaled.scale = 1;
          if (records(items[k].job, i)) {
            apply_della_mask(unscaled, ki, pos, len, u.data(), scratch, keep.data());
            or_keep_bits((*keep_bits)[items[k].job * n_models + i].data(), unscaled.first + pos, keep.data(), len);
          } else {
            apply_mask(unscaled, ki, pos, len, u.data(), scratch);
          }
          n_kept[i] = kernels::compress_nonzero(ki, len, ki);
        }
        norm_chains(norm, acc.data(), t.data(), tile, len, kept.data(), n_kept.data(), n_models);
      }
      for (std::size_t i = 0; i < n_models; ++i) {
        partial[(k * n_models + i) * 2] = acc[2 * i];
        partial[(k * n_models + i) * 2 + 1] = acc[2 * i + 1];
      }
    };
    if (computes_in_double(job))
      run(double{});
    else
      run(float{});
  });
  for (std::size_t j = 0, k = 0; j < jobs.size(); ++j) {
    std::vector<double> before(n_models, 0.0), after(n_models, 0.0);
    for (; k < items.size() && items[k].job == j; ++k)
      for (std::size_t i = 0; i < n_models; ++i) {
        const double* acc = &partial[(k * n_models + i) * 2];
        if (norm == rescale_norm::linf) {
          before[i] = std::max(before[i], acc[0]);
          after[i] = std::max(after[i], acc[1]);
        } else {
          before[i] += acc[0];
          after[i] += acc[1];
        }
      }
    for (std::size_t i = 0; i < n_models; ++i) {
      if (norm == rescale_norm::l2) {
        before[i] = std::sqrt(before[i]);
        after[i] = std::sqrt(after[i]);
      }
      tv_mask& m = jobs[j].masks[i];
      if (m.scale == 1 && !m.inverse_probability && before[i] >= 1e-7 && after[i] >= 1e-7) m.scale = before[i] / after[i];
      if (records(j, i)) {
        m.type = tv_mask::kind::bits;
        m.bits = (*keep_bits)[j * n_models + i].data();
      }
    }
  }
}

}  // namespace alloy::detail
