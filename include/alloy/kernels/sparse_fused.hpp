// One fused pass over a tile of a sparsifying merge (methods/detail/sparse_merge.hpp): per
// SIMD batch, the base and every model are loaded (f32, or bf16 widened in registers),
// tau = x - b is masked and scaled in registers and the rows [b, t_1..t_N] go straight to the
// combine functor (kernels/task_vector_combine.hpp): no tau tile is written or read back.
//
// Each step computes exactly what the tile-by-tile path computes (kernels::difference,
// keep_band / keep_random of task_vector_mask.hpp, then kernels::stream over the tile): the
// same float operations in the same order, the SIMD body over the tile's whole batches and
// the scalar tail over its last (len mod W) elements, as there (both run the one step body,
// detail::fused_step). So results are bit-identical to that path. Masks handled: keep all
// (scaled when scale != 1), none, the exact top-k rule, the random keep, recorded keep bits
// (keep_bits). No allocation, no throw.
#pragma once

#include <alloy/core/bf16.hpp>
#include <alloy/kernels/radix_select.hpp>
#include <alloy/kernels/simd.hpp>
#include <alloy/kernels/task_vector_mask.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>

#if !ALLOY_FORCE_SCALAR && defined(__AVX512F__)
#include <immintrin.h>
#endif

ALLOY_INTRINSIC_WARNINGS_OFF  // GCC PR 105593 (config.hpp)

namespace alloy::kernels {

inline constexpr std::size_t fused_max_models = 16;
inline constexpr std::size_t fused_prefetch_bytes = 2048;

enum class fused_mask : unsigned char { all, none, topk, random, bits };

// One model's row of the tile: its data (at the tile's first element), the storage (f32 or
// bf16) and the mask.
struct fused_input {
  const void* data = nullptr;
  bool bf16 = false;
  fused_mask mask = fused_mask::all;
  std::uint32_t key = 0;   // topk: kept iff magnitude key > key, or == key at a position < ties
  std::size_t ties = 0;
  float scale = 1;         // kept entries times scale (all: only when `multiply`)
  bool multiply = false;   // all: whether the (double) scale differed from 1
  const float* u = nullptr;  // random: the tile's uniforms; kept iff u[j] < p
  float p = 1;
  const std::uint64_t* bits = nullptr;  // bits: kept iff bit (bit0 + j) of bits is set
  std::size_t bit0 = 0;

  // A top-k mask over a tile of len entries: kept iff key > k, or == k at a position below
  // ties. Every tie kept (ties >= len) is stored as key > k - 1 with no ties, and no ties
  // at all takes one compare per batch instead of three.
  void set_topk(std::uint32_t k, std::size_t tile_ties, std::size_t len) noexcept {
    mask = fused_mask::topk;
    key = k;
    ties = std::min(tile_ties, len);
    if (ties == len && k != 0) {
      key = k - 1;
      ties = 0;
    }
  }
};

namespace detail {

// N != 0: the row count is known at compile time (the functor's loops then unroll).
template <class V, std::size_t N = 0>
struct reg_pack {
  const V* v;
  std::size_t n;
  std::size_t j;
  std::size_t first;
  std::size_t size() const noexcept { return N != 0 ? N : n; }
  std::size_t index() const noexcept { return first + j; }
  V operator[](std::size_t i) const noexcept { return v[i]; }
};

inline float load_scalar(const void* p, bool bf16, std::size_t j) noexcept {
  if (bf16) return std::bit_cast<float>(std::uint32_t{static_cast<const std::uint16_t*>(p)[j]} << 16);
  return static_cast<const float*>(p)[j];
}

#if !ALLOY_FORCE_SCALAR
inline vec<float> load_batch(const void* p, bool bf16, std::size_t j) noexcept {
  if (!bf16) return load(static_cast<const float*>(p) + j);
  const std::uint16_t* h = static_cast<const std::uint16_t*>(p) + j;
  constexpr std::size_t W = width<float>;
#if defined(__AVX512F__)
  if constexpr (W == 16)
    return vec<float>(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h))), 16)));
#endif
  alignas(64) float tmp[W];
  for (std::size_t l = 0; l < W; ++l) tmp[l] = std::bit_cast<float>(std::uint32_t{h[l]} << 16);
  return vec<float>::load_aligned(tmp);
}
#endif

// The two shapes of fused_merge_tile's one step body, as batch_pack and scalar_pack are for
// kernels::stream's functors: element j (V = float) or the batch of the W elements from j
// (V = vec<float>). They differ in the loads and in the top-k test only, whose keys compare
// as uint32 in the scalar and as int32 lanes in the batch, as in keep_band's two loops.
struct fused_scalar {
  using value_type = float;
  std::size_t j;
  float load(const void* p, bool bf16) const noexcept { return load_scalar(p, bf16, j); }
  float load(const float* p) const noexcept { return p[j]; }
  bool topk_keeps(float t, const fused_input& m) const noexcept {
    return rule_keeps(magnitude_key(t), m.key, j, m.ties);
  }
  bool bits_keep(const fused_input& m) const noexcept { return bits_at(m.bits, m.bit0 + j, 1) != 0; }
  static float keep_or_zero(bool keep, float v) noexcept { return keep ? v : 0.f; }
};

#if !ALLOY_FORCE_SCALAR
struct fused_batch {
  using value_type = vec<float>;
  using ib = xsimd::batch<std::int32_t>;
  static_assert(ib::size == width<float>);
  std::size_t j;
  ib iota;   // 0, 1, .., W - 1, built once per tile by the caller
  ib lanes;  // 1 << 0, 1 << 1, .., 1 << (W - 1), likewise
  vec<float> load(const void* p, bool bf16) const noexcept { return load_batch(p, bf16, j); }
  vec<float> load(const float* p) const noexcept { return kernels::load(p + j); }
  auto topk_keeps(const vec<float>& t, const fused_input& m) const noexcept {
    const ib k = xsimd::bitwise_cast<ib>(t) & ib(0x7fffffff);
    const ib kk(static_cast<std::int32_t>(m.key)), kt(static_cast<std::int32_t>(m.ties));
    if (m.ties == 0) return k > kk;  // every tile but the one holding the cut's last tie
    const ib pos = iota + ib(static_cast<std::int32_t>(j));
    return (k > kk) | ((k == kk) & (pos < kt));
  }
  auto bits_keep(const fused_input& m) const noexcept {
    return (ib(static_cast<std::int32_t>(bits_at(m.bits, m.bit0 + j, width<float>))) & lanes) != ib(0);
  }
  // keep has int32 lanes (xsimd 8.1 has no batch_bool conversion between lane types): AND
  // v with its bits, which gives the scalar's +0 in the dropped lanes.
  static vec<float> keep_or_zero(const xsimd::batch_bool<std::int32_t>& keep, const vec<float>& v) noexcept {
    return v & xsimd::bitwise_cast<vec<float>>(xsimd::select(keep, ib(-1), ib(0)));
  }
};
#endif

// f([b, t_1, .., t_n]) at s (a fused_scalar or fused_batch): every row loaded, tau = x - b
// masked and scaled, in registers. N: n when known at compile time (1..4), else 0.
template <std::size_t N, class S, class F>
ALLOY_ALWAYS_INLINE typename S::value_type fused_step(const S& s, const void* base, bool base_bf16,
                                                      const fused_input* in, std::size_t n, std::size_t first,
                                                      const F& f) noexcept {
  using V = typename S::value_type;
  V vals[1 + fused_max_models];
  const V b = s.load(base, base_bf16);
  vals[0] = b;
  const std::size_t rows = N != 0 ? N : n;
#pragma GCC unroll 4
  for (std::size_t i = 0; i < rows; ++i) {
    const fused_input& m = in[i];
    V t = s.load(m.data, m.bf16) - b;
    switch (m.mask) {
      case fused_mask::all:
        if (m.multiply) t = t * V(m.scale);
        break;
      case fused_mask::none:
        t = V(0.f);
        break;
      case fused_mask::topk:
        t = S::keep_or_zero(s.topk_keeps(t, m), t * V(m.scale));
        break;
      case fused_mask::random:
        t = kernels::select(s.load(m.u) < V(m.p), t * V(m.scale), V(0.f));
        break;
      case fused_mask::bits:
        t = S::keep_or_zero(s.bits_keep(m), t * V(m.scale));
        break;
    }
    vals[1 + i] = t;
  }
  return f(reg_pack<V, N != 0 ? N + 1 : 0>{vals, rows + 1, s.j, first});
}

}  // namespace detail

// out[j] = f([b, t_1, .., t_n] at j) for j < len, stored as float, or rounded to bf16 as
// kernels::convert rounds (out_bf16); `first` is the tile's element index in the tensor (for
// the functor's pack). base, the inputs' data and out point at the tile start.
//
// nt: write the tile's whole batches with non-temporal stores (kernels/simd.hpp stream_store,
// store_narrow<true>; out must then be aligned to a batch, and be none of the inputs), and end
// with a store fence. The caller decides it from the whole output's size, as
// kernels::stream's store_policy::automatic does (methods/detail/sparse_merge.hpp
// run_sparse_merge): a tile is far below stream_store_threshold, the tensor often far above.
namespace detail {
template <std::size_t N, class F>
void fused_merge_tile_n(const void* base, bool base_bf16, const fused_input* in, std::size_t n, void* out, bool out_bf16,
                        std::size_t len, std::size_t first, const F& f, bool nt) noexcept {
  float* const out_f = static_cast<float*>(out);
  std::uint16_t* const out_h = static_cast<std::uint16_t*>(out);
  std::size_t j = 0;
#if !ALLOY_FORCE_SCALAR
  {
    bf16* const out_b = static_cast<bf16*>(out);
    using ib = fused_batch::ib;
    constexpr std::size_t W = width<float>;
    const ib iota = kernels::detail::lane_batch([](std::size_t l) { return static_cast<std::int32_t>(l); });
    const ib lanes = kernels::detail::lane_batch([](std::size_t l) { return std::int32_t{1} << l; });
    const std::size_t body = len / W * W;
    for (; j < body; j += W) {
      // Software prefetch a little ahead in every input (see band_filter.hpp: the streams
      // cross 4 KiB pages, where the hardware prefetchers stop); past the tile is harmless.
      if ((j * 4) % 64 == 0) {
        __builtin_prefetch(static_cast<const char*>(base) + j * (base_bf16 ? 2 : 4) + fused_prefetch_bytes);
        for (std::size_t i = 0; i < n; ++i)
          __builtin_prefetch(static_cast<const char*>(in[i].data) + j * (in[i].bf16 ? 2 : 4) + fused_prefetch_bytes);
      }
      const vec<float> r = fused_step<N>(fused_batch{j, iota, lanes}, base, base_bf16, in, n, first, f);
      if (nt) {
        if (out_bf16)
          store_narrow<true>(out_b + j, r);
        else
          stream_store(out_f + j, r);
      } else {
        if (out_bf16)
          store_narrow<false>(out_b + j, r);
        else
          store(out_f + j, r);
      }
    }
    if (nt) store_fence();
  }
#else
  (void)nt;  // no batches: the tail's ordinary stores only
#endif
  for (; j < len; ++j) {
    const float r = fused_step<N>(fused_scalar{j}, base, base_bf16, in, n, first, f);
    if (out_bf16)
      out_h[j] = float_to_bf16(r);
    else
      out_f[j] = r;
  }
}
}  // namespace detail

// The row count as a template argument for up to 4 models: the rows then stay in registers
// and every per-model loop unrolls (against one loop over n, the functor inlined in both:
// 19-20 -> 16-17.5 ns per batch of 16 for a mergekit ties of three bf16 models from DRAM,
// 2 threads; a throwaway program, docs/performance.md).
template <class F>
void fused_merge_tile(const void* base, bool base_bf16, const fused_input* in, std::size_t n, void* out, bool out_bf16,
                      std::size_t len, std::size_t first, const F& f, bool nt = false) noexcept {
  with_small_count(n, [&](auto rows) {
    detail::fused_merge_tile_n<decltype(rows)::value>(base, base_bf16, in, n, out, out_bf16, len, first, f, nt);
  });
}

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
