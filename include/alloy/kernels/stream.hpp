// The streaming driver: out[j] = f(in_0[j], ..., in_{n-1}[j]) for j in [begin, end), over
// inputs and an output of any floating storage type, computing in C (float or double).
//
// The range is processed in tiles that fit a 64 KiB stack scratch. Inputs already stored as
// C are read in place; others are widened into the scratch, one tile at a time; the result
// is narrowed from the scratch when the output is not C. Inside a tile the functor runs on
// vec<C> batches, then on scalars for the last (len mod W) elements. Tile lengths are
// multiples of W, so when `begin` is a multiple of W (callers split at parallel_chunk) an
// element takes the SIMD or the scalar path by its index alone, never by the chunking:
// results do not depend on the thread count.
//
// The output may be one of the inputs (same pointer, same dtype): every input element is
// read before the element at the same index is written. Partial overlap is the caller's
// error to reject (see core/validate.hpp).
//
// Complexity: one read of each input and one write of the output; no allocation, no throw.
#pragma once

#include <alloy/core/dtype.hpp>
#include <alloy/kernels/convert.hpp>
#include <alloy/kernels/simd.hpp>

#include <algorithm>
#include <cstddef>

namespace alloy::kernels {

struct source {
  const void* data;
  dtype type;
};
struct sink {
  void* data;
  dtype type;
};

inline constexpr std::size_t stream_scratch_bytes = 64 * 1024;
// Fixed whatever the SIMD width, so the limit users see does not depend on compile flags;
// the scratch holds a tile of at least W elements per input plus the output, in double.
inline constexpr std::size_t max_stream_inputs = 255;
static_assert(stream_scratch_bytes / sizeof(double) / (max_stream_inputs + 1) >= width<double>);
static_assert(stream_scratch_bytes / sizeof(float) / (max_stream_inputs + 1) >= width<float>);

// A view of input row i at the current position, as a batch or as a scalar. index() is the
// element index (within the tensor) of the scalar or of the batch's first lane.
template <class C>
struct batch_pack {
  const C* const* rows;
  std::size_t n;
  std::size_t j;
  std::size_t first;
  std::size_t size() const noexcept { return n; }
  std::size_t index() const noexcept { return first + j; }
  vec<C> operator[](std::size_t i) const noexcept { return load(rows[i] + j); }
};
template <class C>
struct scalar_pack {
  const C* const* rows;
  std::size_t n;
  std::size_t j;
  std::size_t first;
  std::size_t size() const noexcept { return n; }
  std::size_t index() const noexcept { return first + j; }
  C operator[](std::size_t i) const noexcept { return rows[i][j]; }
};

template <class S, class D>
inline void convert_any(const void* in, std::size_t offset, D* out, std::size_t n) noexcept {
  convert_n(static_cast<const S*>(in) + offset, out, n);
}

template <class C>
inline void widen(source s, std::size_t offset, C* out, std::size_t n) noexcept {
  visit_floating(s.type, [&](auto tag) { convert_any<decltype(tag)>(s.data, offset, out, n); });
}

template <class C>
inline void narrow(const C* in, sink s, std::size_t offset, std::size_t n) noexcept {
  visit_floating(s.type, [&](auto tag) {
    using D = decltype(tag);
    convert_n(in, static_cast<D*>(s.data) + offset, n);
  });
}

// Precondition: n_in <= max_stream_inputs, every type floating, begin <= end.
template <class C, class F>
void stream(const source* in, std::size_t n_in, sink out, std::size_t begin, std::size_t end,
            const F& f) noexcept {
  constexpr std::size_t W = width<C>;
  alignas(64) unsigned char scratch[stream_scratch_bytes];
  C* const buf = reinterpret_cast<C*>(scratch);
  const C* rows[max_stream_inputs];

  std::size_t slots = out.type == dtype_of<C> ? 0 : 1;
  for (std::size_t i = 0; i < n_in; ++i) slots += in[i].type == dtype_of<C> ? 0 : 1;
  const std::size_t capacity = stream_scratch_bytes / sizeof(C);
  const std::size_t tile = slots == 0 ? std::size_t{4096} : std::max(W, capacity / slots / W * W);

  for (std::size_t pos = begin; pos < end; pos += tile) {
    const std::size_t len = std::min(tile, end - pos);
    C* slot = buf;
    for (std::size_t i = 0; i < n_in; ++i) {
      if (in[i].type == dtype_of<C>) {
        rows[i] = static_cast<const C*>(in[i].data) + pos;
      } else {
        widen(in[i], pos, slot, len);
        rows[i] = slot;
        slot += tile;
      }
    }
    C* dst = out.type == dtype_of<C> ? static_cast<C*>(out.data) + pos : slot;
    const std::size_t body = len / W * W;
    for (std::size_t j = 0; j < body; j += W) store(dst + j, f(batch_pack<C>{rows, n_in, j, pos}));
    for (std::size_t j = body; j < len; ++j) dst[j] = f(scalar_pack<C>{rows, n_in, j, pos});
    if (out.type != dtype_of<C>) narrow(dst, out, pos, len);
  }
}

}  // namespace alloy::kernels
