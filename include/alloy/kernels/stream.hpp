// The streaming driver: out[j] = f(in_0[j], ..., in_{n-1}[j]) for j in [begin, end), over
// inputs and an output of any floating storage type, computing in C (float or double).
//
// Two paths, chosen once per call; both run the functor on vec<C> batches over
// [begin, begin + (len - len mod W)) and on scalars for the last (len mod W) elements, so when
// `begin` is a multiple of W (callers split at parallel_chunk) an element takes the SIMD or
// the scalar path by its index alone, never by the chunking or the path: results do not
// depend on the thread count, and both paths give the same bits.
//   - direct: every input stored as one type S and the output as D, each of S and D either C
//     or (for C = float) bf16/fp16, with S == D or one of them C. Inputs are loaded (and
//     16-bit ones widened) batch by batch in registers, the result stored (and narrowed)
//     likewise: one pass over memory, no scratch. This is every same-dtype merge.
//   - scratch (mixed dtypes): the range is processed in tiles that fit a 64 KiB stack
//     scratch. Inputs stored as C are read in place; others are widened into the scratch,
//     one tile at a time; the result is narrowed from the scratch when the output is not C.
// Widening and narrowing are the scalar conversions of core/bf16.hpp and core/fp16.hpp on
// both paths (kernels/simd.hpp load_widen / store_narrow reproduce them lane by lane).
//
// On the direct path, an output of stream_store_threshold bytes or more (see store_policy)
// whose start is aligned to a batch is written with non-temporal stores, which skip the
// read-for-ownership of every output line (6 memory transfers per element become 5 for a
// base + 3 models merge); the call ends with a store fence, so a caller that publishes the
// result (a thread join, an atomic release) publishes these stores too.
//
// The output may be one of the inputs (same pointer, same dtype): every input element is
// read before the element at the same index is written. Partial overlap is the caller's
// error to reject (see core/validate.hpp).
//
// Functors that define `specializable` and `specialize(g)` (kernels/linear_combination.hpp)
// are asked once per call, on the direct path of a float merge of one dtype, for an equivalent
// functor with their runtime parameters fixed at compile time (same operations in the same
// order, so the same bits).
//
// Complexity: one read of each input and one write of the output; no allocation, no throw.
#pragma once

#include <alloy/config.hpp>
#include <alloy/core/dtype.hpp>
#include <alloy/kernels/convert.hpp>
#include <alloy/kernels/simd.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace alloy::kernels {

struct source {
  const void* data;
  dtype type;
};
struct sink {
  void* data;
  dtype type;
};

// Whether the direct path writes the output with non-temporal stores (when it can: x86, the
// output's start aligned to a batch, the output not one of the inputs).
//   automatic: when this call's range spans stream_store_threshold bytes of output or more;
//   streaming: always (the caller knows the whole output, split over several calls, is large);
//   cached:    never.
enum class store_policy : unsigned char { automatic, streaming, cached };
// Far beyond L2 (1-2 MiB per core) and a share of L3: such an output will be evicted before
// anyone reads it, so caching its lines buys nothing.
inline constexpr std::size_t stream_store_threshold = std::size_t{8} << 20;

inline constexpr std::size_t stream_scratch_bytes = 64 * 1024;
// Fixed whatever the SIMD width, so the limit users see does not depend on compile flags;
// the scratch holds a tile of at least W elements per input plus the output, in double.
inline constexpr std::size_t max_stream_inputs = 255;
static_assert(stream_scratch_bytes / sizeof(double) / (max_stream_inputs + 1) >= width<double>);
static_assert(stream_scratch_bytes / sizeof(float) / (max_stream_inputs + 1) >= width<float>);

namespace stream_detail {
template <class C, class S>
ALLOY_ALWAYS_INLINE vec<C> load_as(const S* p) noexcept {
  if constexpr (std::is_same_v<S, C>)
    return load(p);
  else
    return load_widen(p);
}
template <class C, bool nt, class D>
ALLOY_ALWAYS_INLINE void store_as(D* p, const vec<C>& v) noexcept {
  if constexpr (!std::is_same_v<D, C>)
    store_narrow<nt>(p, v);
  else if constexpr (nt)
    stream_store<C>(p, v);
  else
    store(p, v);
}
}  // namespace stream_detail

// A view of the inputs at the current position, as a batch or as a scalar of C; the rows are
// stored as S (C, or a 16-bit type widened on load). index() is the element index (within
// the tensor) of the scalar or of the batch's first lane.
template <class C, class S = C>
struct batch_pack {
  const S* const* rows;
  std::size_t n;
  std::size_t j;
  std::size_t first;
  std::size_t size() const noexcept { return n; }
  std::size_t index() const noexcept { return first + j; }
  ALLOY_ALWAYS_INLINE vec<C> operator[](std::size_t i) const noexcept { return stream_detail::load_as<C>(rows[i] + j); }
};
template <class C, class S = C>
struct scalar_pack {
  const S* const* rows;
  std::size_t n;
  std::size_t j;
  std::size_t first;
  std::size_t size() const noexcept { return n; }
  std::size_t index() const noexcept { return first + j; }
  ALLOY_ALWAYS_INLINE C operator[](std::size_t i) const noexcept { return detail::convert_one<S, C>(rows[i][j]); }
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

namespace stream_detail {

// The direct path: inputs stored as S, output as D. `nt` is a runtime flag tested per batch
// (perfectly predicted; compilers may unswitch the loop) rather than a template parameter:
// it would double the instantiations of every functor, already one per dtype pair and per
// specialization.
template <class C, class S, class D, class F>
void run_direct(const source* in, std::size_t n_in, sink out, std::size_t begin, std::size_t end, const F& f,
                bool nt) noexcept {
  constexpr std::size_t W = width<C>;
  const F g = f;  // a local copy: the output's stores cannot alias its parameters
  const S* rows[max_stream_inputs];
  for (std::size_t i = 0; i < n_in; ++i) rows[i] = static_cast<const S*>(in[i].data) + begin;
  D* const dst = static_cast<D*>(out.data) + begin;
  const std::size_t len = end - begin, body = len / W * W;
  nt = nt && has_stream_stores;
  for (std::size_t j = 0; j < body; j += W) {
    const vec<C> r = g(batch_pack<C, S>{rows, n_in, j, begin});
    if (nt)
      store_as<C, true>(dst + j, r);
    else
      store_as<C, false>(dst + j, r);
  }
  for (std::size_t j = body; j < len; ++j) dst[j] = detail::convert_one<C, D>(g(scalar_pack<C, S>{rows, n_in, j, begin}));
  if (nt) store_fence();
}

// Specializations (up to 9 bodies per functor) only where they pay for their compile time:
// computing in float with inputs and output of one dtype (f32, bf16 or f16 merges).
template <class C, class S, class D, class F>
void run_direct_specialized(const source* in, std::size_t n_in, sink out, std::size_t begin, std::size_t end,
                            const F& f, bool nt) noexcept {
  if constexpr (requires { typename F::specializable; } && std::is_same_v<C, float> && std::is_same_v<S, D>)
    f.specialize([&](const auto& g) { run_direct<C, S, D>(in, n_in, out, begin, end, g, nt); });
  else
    run_direct<C, S, D>(in, n_in, out, begin, end, f, nt);
}

// The scratch path (mixed dtypes).
template <class C, class F>
void run_scratch(const source* in, std::size_t n_in, sink out, std::size_t begin, std::size_t end,
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

}  // namespace stream_detail

// Precondition: n_in <= max_stream_inputs, every type floating, begin <= end.
template <class C, class F>
void stream(const source* in, std::size_t n_in, sink out, std::size_t begin, std::size_t end, const F& f,
            store_policy policy = store_policy::automatic) noexcept {
  if (begin >= end) return;
  constexpr dtype c = dtype_of<C>;
  const dtype s = n_in > 0 ? in[0].type : c;
  bool same = true, aliased = false;
  for (std::size_t i = 0; i < n_in; ++i) {
    same = same && in[i].type == s;
    aliased = aliased || in[i].data == out.data;
  }
  const dtype d = out.type;
  const std::size_t out_size = dtype_size(d);
  const bool nt = policy != store_policy::cached && !aliased &&
                  (policy == store_policy::streaming || (end - begin) * out_size >= stream_store_threshold) &&
                  (reinterpret_cast<std::uintptr_t>(out.data) + begin * out_size) % (width<C> * out_size) == 0;
  using stream_detail::run_direct_specialized;
  if (same && s == c && d == c) return run_direct_specialized<C, C, C>(in, n_in, out, begin, end, f, nt);
  if constexpr (std::is_same_v<C, float>) {
    if (same) {
      if (s == dtype::bf16 && d == dtype::bf16) return run_direct_specialized<C, bf16, bf16>(in, n_in, out, begin, end, f, nt);
      if (s == dtype::bf16 && d == c) return run_direct_specialized<C, bf16, C>(in, n_in, out, begin, end, f, nt);
      if (s == c && d == dtype::bf16) return run_direct_specialized<C, C, bf16>(in, n_in, out, begin, end, f, nt);
      if (s == dtype::f16 && d == dtype::f16) return run_direct_specialized<C, fp16, fp16>(in, n_in, out, begin, end, f, nt);
      if (s == dtype::f16 && d == c) return run_direct_specialized<C, fp16, C>(in, n_in, out, begin, end, f, nt);
      if (s == c && d == dtype::f16) return run_direct_specialized<C, C, fp16>(in, n_in, out, begin, end, f, nt);
    }
  }
  stream_detail::run_scratch<C>(in, n_in, out, begin, end, f);
}

}  // namespace alloy::kernels
