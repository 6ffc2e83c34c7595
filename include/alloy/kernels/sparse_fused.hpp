// One fused pass over a tile of a sparsifying merge (methods/detail/sparse_merge.hpp): per
// SIMD batch, the base and every model are loaded (f32, or bf16 widened in registers),
// tau = x - b is masked and scaled in registers and the rows [b, t_1..t_N] go straight to the
// combine functor (kernels/task_vector_combine.hpp): no tau tile is written or read back.
//
// Each step computes exactly what the tile-by-tile path computes (kernels::difference,
// keep_band / keep_random of task_vector_mask.hpp, then kernels::stream over the tile): the
// same float operations in the same order, the SIMD body over the tile's whole batches and
// the scalar tail over its last (len mod W) elements, as there. So results are bit-identical
// to that path. Masks handled: keep all (scaled when scale != 1), none, the exact top-k rule,
// the random keep. No allocation, no throw.
#pragma once

#include <alloy/core/bf16.hpp>
#include <alloy/kernels/radix_select.hpp>
#include <alloy/kernels/simd.hpp>
#include <alloy/kernels/task_vector_mask.hpp>

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

enum class fused_mask : unsigned char { all, none, topk, random };

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
};

namespace detail {

template <class V>
struct reg_pack {
  const V* v;
  std::size_t n;
  std::size_t j;
  std::size_t first;
  std::size_t size() const noexcept { return n; }
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
template <class F>
void fused_merge_tile(const void* base, bool base_bf16, const fused_input* in, std::size_t n, void* out, bool out_bf16,
                      std::size_t len, std::size_t first, const F& f, bool nt = false) noexcept {
  float* const out_f = static_cast<float*>(out);
  std::uint16_t* const out_h = static_cast<std::uint16_t*>(out);
  bf16* const out_b = static_cast<bf16*>(out);
  std::size_t j = 0;
#if !ALLOY_FORCE_SCALAR
  {
    using V = vec<float>;
    using ib = xsimd::batch<std::int32_t>;
    constexpr std::size_t W = width<float>;
    static_assert(ib::size == W);
    alignas(64) std::int32_t iota_data[W];
    for (std::size_t l = 0; l < W; ++l) iota_data[l] = static_cast<std::int32_t>(l);
    const ib iota = ib::load_aligned(iota_data), sign(0x7fffffff), zero_i(0), ones(-1);
    const V zero(0.f);
    V vals[1 + fused_max_models];
    const std::size_t body = len / W * W;
    for (; j < body; j += W) {
      // Software prefetch a little ahead in every input (see band_filter.hpp: the streams
      // cross 4 KiB pages, where the hardware prefetchers stop); past the tile is harmless.
      if ((j * 4) % 64 == 0) {
        __builtin_prefetch(static_cast<const char*>(base) + j * (base_bf16 ? 2 : 4) + fused_prefetch_bytes);
        for (std::size_t i = 0; i < n; ++i)
          __builtin_prefetch(static_cast<const char*>(in[i].data) + j * (in[i].bf16 ? 2 : 4) + fused_prefetch_bytes);
      }
      const V b = detail::load_batch(base, base_bf16, j);
      vals[0] = b;
      for (std::size_t i = 0; i < n; ++i) {
        const fused_input& m = in[i];
        V t = detail::load_batch(m.data, m.bf16, j) - b;
        switch (m.mask) {
          case fused_mask::all:
            if (m.multiply) t = t * V(m.scale);
            break;
          case fused_mask::none:
            t = zero;
            break;
          case fused_mask::topk: {
            const ib k = xsimd::bitwise_cast<ib>(t) & sign;
            const ib kk(static_cast<std::int32_t>(m.key)), kt(static_cast<std::int32_t>(m.ties));
            const ib pos = iota + ib(static_cast<std::int32_t>(j));
            const auto keep = (k > kk) | ((k == kk) & (pos < kt));
            t = (t * V(m.scale)) & xsimd::bitwise_cast<V>(xsimd::select(keep, ones, zero_i));
            break;
          }
          case fused_mask::random:
            t = xsimd::select(load(m.u + j) < V(m.p), t * V(m.scale), zero);
            break;
        }
        vals[1 + i] = t;
      }
      const V r = f(detail::reg_pack<V>{vals, n + 1, j, first});
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
#endif
  float vals[1 + fused_max_models];
  for (; j < len; ++j) {
    const float b = detail::load_scalar(base, base_bf16, j);
    vals[0] = b;
    for (std::size_t i = 0; i < n; ++i) {
      const fused_input& m = in[i];
      float t = detail::load_scalar(m.data, m.bf16, j) - b;
      switch (m.mask) {
        case fused_mask::all:
          if (m.multiply) t = t * m.scale;
          break;
        case fused_mask::none:
          t = 0.f;
          break;
        case fused_mask::topk:
          t = detail::rule_keeps(magnitude_key(t), m.key, j, m.ties) ? t * m.scale : 0.f;
          break;
        case fused_mask::random:
          t = m.u[j] < m.p ? t * m.scale : 0.f;
          break;
      }
      vals[1 + i] = t;
    }
    const float r = f(detail::reg_pack<float>{vals, n + 1, j, first});
    if (out_bf16)
      out_h[j] = float_to_bf16(r);
    else
      out_f[j] = r;
  }
}

}  // namespace alloy::kernels

ALLOY_INTRINSIC_WARNINGS_ON
