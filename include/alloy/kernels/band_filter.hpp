// band_filter: one streaming look at a tile of values for the sampled top-k: counts the
// entries whose magnitude key (kernels/radix_select.hpp: the float bit pattern with the sign
// cleared) lies above `high`, and reports the position of every entry whose key lies in
// [low, high] to a callback. SIMD over the keys; the callback runs only for the (rare)
// batches holding a band entry. No allocation, no throw.
#pragma once

#include <alloy/kernels/radix_select.hpp>
#include <alloy/kernels/simd.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace alloy::kernels {

// Returns the number of entries with key > high; calls on_band(j, key) for every j < n with
// low <= key <= high, in increasing j. Requires low <= high <= 0x7fffffff.
template <class OnBand>
std::size_t band_filter(const float* v, std::size_t n, std::uint32_t low, std::uint32_t high, OnBand&& on_band) {
  std::size_t above = 0, j = 0;
#if !ALLOY_FORCE_SCALAR
  using ib = xsimd::batch<std::int32_t>;
  using fb = xsimd::batch<float>;
  static_assert(ib::size == fb::size);
  constexpr std::size_t W = fb::size;
  const ib mask(0x7fffffff), lo(static_cast<std::int32_t>(low)), hi(static_cast<std::int32_t>(high)), one(1), zero(0);
  ib count(0);
  std::size_t since_flush = 0;
  for (; j + W <= n; j += W) {
    const ib key = xsimd::bitwise_cast<ib>(fb::load_unaligned(v + j)) & mask;
    count = count + xsimd::select(key > hi, one, zero);
    const auto band = (key >= lo) & (key <= hi);
    if (xsimd::any(band)) {
      alignas(64) std::int32_t k[W];
      key.store_aligned(k);
      for (std::size_t l = 0; l < W; ++l)
        if (k[l] >= static_cast<std::int32_t>(low) && k[l] <= static_cast<std::int32_t>(high))
          on_band(j + l, static_cast<std::uint32_t>(k[l]));
    }
    if (++since_flush == (std::size_t{1} << 26)) {  // keep hadd of the 32-bit lanes from overflowing
      above += static_cast<std::size_t>(xsimd::hadd(count));
      count = zero;
      since_flush = 0;
    }
  }
  above += static_cast<std::size_t>(xsimd::hadd(count));
#endif
  for (; j < n; ++j) {
    const std::uint32_t key = magnitude_key(v[j]);
    above += key > high;
    if (key >= low && key <= high) on_band(j, key);
  }
  return above;
}

}  // namespace alloy::kernels
