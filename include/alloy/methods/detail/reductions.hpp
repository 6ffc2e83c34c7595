// The reduction pass of the geometric merges, and the plumbing they share.
//
// gram(jobs, exec): for each job (k tensors, optionally minus a base: task vectors), the Gram
// matrix of the k rows of every vector of the job's layout (kernels/reduce.hpp): per vector,
// gram_pairs(k) doubles (x_i . x_j for i <= j). A layout sees a tensor as [outer, length,
// inner]; vector v = o * inner + k holds the length entries (o, ., k):
//   whole(n)          one vector: the flattened tensor
//   rows_of(shape)    the vectors along the last dimension (contiguous rows)
//   columns_of(shape) the vectors along the first dimension (strided columns)
// Work items sit at fixed offsets that depend only on sizes: contiguous vectors shorter than
// parallel_chunk are grouped, whole, into items of about parallel_chunk elements; longer ones
// are cut into parallel_chunk pieces whose sums are added in piece order after the parallel
// loop; strided vectors are cut into blocks of columns, each summed over every row in order.
// No atomics, no per-thread sums: the results are bit-identical for any thread count.
// Task vectors are formed in the compute type (x_i - b in float, or double when any operand
// is double) inside the kernel; nothing full-size is stored. Memory per work item: (k + 1) tiles
// of 256 elements (or of one block of 256 to 4096 columns) and the pairs' accumulators.
//
// Also: coefficient tables (per vector, in double and in the compute types), output
// allocation for model-level merges, and the shape handling of tensor-level calls.
#pragma once

#include <alloy/config.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/kernels/reduce.hpp>
#include <alloy/kernels/stream.hpp>
#include <alloy/methods/detail/elementwise.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace alloy::detail {

struct vector_layout {
  std::size_t outer = 1;
  std::size_t length = 0;
  std::size_t inner = 1;
  std::size_t vectors() const noexcept { return outer * inner; }
  kernels::vector_map map() const noexcept { return {length, inner, vectors() <= 1}; }
};

inline vector_layout whole(std::size_t n) noexcept { return {1, n, 1}; }

inline std::size_t elements_of(std::span<const std::size_t> shape) noexcept {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

// Vectors along the last dimension; a 0-D or 1-D tensor is one vector.
inline vector_layout rows_of(std::span<const std::size_t> shape, std::size_t n) noexcept {
  if (shape.size() <= 1) return whole(n);
  return {elements_of(shape.first(shape.size() - 1)), shape.back(), 1};
}

// Vectors along the first dimension; a 0-D or 1-D tensor is one vector.
inline vector_layout columns_of(std::span<const std::size_t> shape, std::size_t n) noexcept {
  if (shape.size() <= 1) return whole(n);
  return {1, shape[0], elements_of(shape.subspan(1))};
}

// A tensor-level call's shape: options.shape when given (it must hold the tensor's elements),
// else the shape of the input it can be read from (when it holds the elements), else 1-D.
inline std::vector<std::size_t> tensor_shape(std::string_view method, std::vector<std::size_t> from_input,
                                             std::span<const std::size_t> option, std::size_t size) {
  if (option.empty()) {
    if (from_input.empty() || elements_of(from_input) != size) return {size};
    return from_input;
  }
  std::vector<std::size_t> s(option.begin(), option.end());
  if (elements_of(option) != size)
    throw error(errc::shape_mismatch, std::string(method) + ": the shape option " + shape_string(s) + " holds " +
                                          std::to_string(elements_of(option)) + " elements, the tensors have " +
                                          std::to_string(size));
  return s;
}

// The shape a tensor-level input reports (tensor_like), or none (a view).
template <class T>
std::vector<std::size_t> input_shape(const T& t) {
  if constexpr (tensor_like<T>)
    return shape_of(t);
  else
    return {};
}

template <class B>
concept tensor_or_view = tensor_like<B> || std::convertible_to<const B&, tensor_view>;

// ------------------------------------------------------------------------------ gram

struct gram_job {
  std::vector<tensor_view> in;  // [base,] x_0 .. x_{k-1}
  bool has_base = false;        // rows are x_i - base
  vector_layout layout;
  bool in_double = false;  // the compute type: double, else float
  std::size_t models() const noexcept { return in.size() - (has_base ? 1 : 0); }
};

namespace gram_detail {

// Elements per tile: a multiple of kernels::reduce_block. Short tiles keep the widened rows in
// L1 (measured: 256 ran 16-bit inputs twice as fast as 4096, and f32 no slower).
inline constexpr std::size_t tile = 256;
static_assert(tile % kernels::reduce_block == 0 && parallel_chunk % kernels::reduce_block == 0);
inline constexpr std::size_t column_block = 256;

enum class kind : unsigned char { vectors, piece, columns };

struct item {
  std::size_t job;
  kind type;
  std::size_t first;   // vectors: first vector; piece: the vector; columns: the outer index
  std::size_t count;   // vectors: how many; piece: the piece's slot; columns: first column
  std::size_t offset;  // piece: first element within the vector
  std::size_t len;     // piece: elements; columns: columns
};

// Rows of one tile over [begin, begin + len) in C: the k inputs and the base (when the job
// has one), read in place when stored as C, else widened into the buffer.
template <class C>
struct tile_rows {
  const gram_job& job;
  std::vector<C> buf;
  std::vector<const C*> rows;
  const C* base = nullptr;
  tile_rows(const gram_job& j, std::size_t cap) : job(j), buf((j.in.size() + 1) * cap), rows(j.models()), cap_(cap) {}

  void load(std::size_t begin, std::size_t len) {
    const std::size_t first = job.has_base ? 1 : 0;
    for (std::size_t i = 0; i < job.in.size(); ++i) {
      const tensor_view& x = job.in[i];
      const C* p;
      if (x.type == dtype_of<C>) {
        p = static_cast<const C*>(x.data) + begin;
      } else {
        C* s = buf.data() + i * cap_;
        kernels::widen<C>({x.data, x.type}, begin, s, len);
        p = s;
      }
      if (i < first)
        base = p;
      else
        rows[i - first] = p;
    }
  }
  // Rows shifted by `offset` elements within the loaded tile.
  const C* const* at(std::size_t offset, std::vector<const C*>& shifted) const {
    for (std::size_t i = 0; i < rows.size(); ++i) shifted[i] = rows[i] + offset;
    return shifted.data();
  }
  const C* base_at(std::size_t offset) const { return base ? base + offset : nullptr; }

 private:
  std::size_t cap_;
};

template <class C>
void run_item(const gram_job& job, const item& it, double* result, double* partial) {
  const std::size_t k = job.models();
  const std::size_t pairs = kernels::gram_pairs(k);
  const vector_layout& l = job.layout;
  if (it.type == kind::columns) {
    const std::size_t cols = it.len;
    tile_rows<C> t(job, cols);
    std::vector<double> acc(pairs * cols, 0.0);
    for (std::size_t r = 0; r < l.length; ++r) {
      t.load(it.first * l.length * l.inner + r * l.inner + it.count, cols);
      kernels::gram_columns(t.rows.data(), k, t.base, cols, acc.data());
    }
    for (std::size_t c = 0; c < cols; ++c)
      for (std::size_t p = 0; p < pairs; ++p) result[(it.first * l.inner + it.count + c) * pairs + p] = acc[p * cols + c];
    return;
  }
  tile_rows<C> t(job, tile);
  std::vector<const C*> shifted(k);
  std::vector<double> lanes(pairs * kernels::reduce_lanes);
  auto finish = [&](double* dst) {
    for (std::size_t p = 0; p < pairs; ++p) dst[p] = kernels::lane_total(lanes.data() + p * kernels::reduce_lanes);
  };
  // One vector's range [from, to) (offsets within it), in tiles, into dst.
  auto long_range = [&](std::size_t v, std::size_t from, std::size_t to, double* dst) {
    std::fill(lanes.begin(), lanes.end(), 0.0);
    for (std::size_t pos = from; pos < to; pos += tile) {
      const std::size_t len = std::min(tile, to - pos);
      t.load(v * l.length + pos, len);
      kernels::gram_accumulate(t.rows.data(), k, t.base, len, lanes.data());
    }
    finish(dst);
  };
  if (it.type == kind::piece) {
    long_range(it.first, it.offset, it.offset + it.len, partial + it.count * pairs);
    return;
  }
  const std::size_t L = l.length;
  if (L > tile) {
    for (std::size_t v = it.first; v < it.first + it.count; ++v) long_range(v, 0, L, result + v * pairs);
    return;
  }
  // Short vectors: whole vectors per tile.
  const std::size_t per_tile = tile / L;
  for (std::size_t v0 = it.first; v0 < it.first + it.count; v0 += per_tile) {
    const std::size_t n = std::min(per_tile, it.first + it.count - v0);
    t.load(v0 * L, n * L);
    for (std::size_t v = 0; v < n; ++v) {
      std::fill(lanes.begin(), lanes.end(), 0.0);
      kernels::gram_accumulate(t.at(v * L, shifted), k, t.base_at(v * L), L, lanes.data());
      finish(result + (v0 + v) * pairs);
    }
  }
}

}  // namespace gram_detail

// Per job: layout.vectors() * gram_pairs(models) doubles, vector-major.
inline std::vector<std::vector<double>> gram(std::span<const gram_job> jobs, const execution& ex) {
  using namespace gram_detail;
  std::vector<std::vector<double>> result(jobs.size());
  std::vector<item> items;
  std::size_t slots = 0;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    const gram_job& job = jobs[j];
    const vector_layout& l = job.layout;
    result[j].assign(l.vectors() * kernels::gram_pairs(job.models()), 0.0);
    if (l.length == 0 || l.vectors() == 0) continue;
    if (l.inner > 1) {
      const std::size_t cb = std::clamp<std::size_t>(parallel_chunk / l.length / column_block * column_block,
                                                      column_block, 16 * column_block);
      for (std::size_t o = 0; o < l.outer; ++o)
        for (std::size_t c = 0; c < l.inner; c += cb) items.push_back({j, kind::columns, o, c, 0, std::min(cb, l.inner - c)});
    } else if (l.length >= parallel_chunk) {
      for (std::size_t v = 0; v < l.vectors(); ++v)
        for (std::size_t off = 0; off < l.length; off += parallel_chunk)
          items.push_back({j, kind::piece, v, slots++, off, std::min(parallel_chunk, l.length - off)});
    } else {
      const std::size_t per = parallel_chunk / l.length;
      for (std::size_t v = 0; v < l.vectors(); v += per)
        items.push_back({j, kind::vectors, v, std::min(per, l.vectors() - v), 0, 0});
    }
  }
  std::size_t max_pairs = 0;
  for (const auto& job : jobs) max_pairs = std::max(max_pairs, kernels::gram_pairs(job.models()));
  std::vector<double> partial(slots * max_pairs, 0.0);
  parallel_for(items.size(), ex, [&](std::size_t i) {
    const item& it = items[i];
    const gram_job& job = jobs[it.job];
    if (job.in_double)
      run_item<double>(job, it, result[it.job].data(), partial.data());
    else
      run_item<float>(job, it, result[it.job].data(), partial.data());
  });
  // Pieces of long vectors, added in piece order.
  for (const item& it : items) {
    if (it.type != kind::piece) continue;
    const std::size_t pairs = kernels::gram_pairs(jobs[it.job].models());
    double* dst = result[it.job].data() + it.first * pairs;
    const double* src = partial.data() + it.count * pairs;
    for (std::size_t p = 0; p < pairs; ++p) dst[p] += src[p];
  }
  return result;
}

// The squared norms' check: a non-finite x_i . x_i means NaN or Inf in the data (or values
// whose squares overflow). Throws errc::non_finite naming the model and the tensor.
inline void check_gram_finite(std::string_view method, std::string_view tensor, const gram_job& job,
                              const std::vector<double>& g, std::span<const std::string> model_labels) {
  const std::size_t k = job.models();
  const std::size_t pairs = kernels::gram_pairs(k);
  for (std::size_t v = 0; v < job.layout.vectors(); ++v)
    for (std::size_t i = 0; i < k; ++i)
      if (!std::isfinite(g[v * pairs + kernels::gram_pair(i, i, k)]))
        throw error(errc::non_finite,
                    std::string(method) + ": " + model_labels[i] +
                        (job.has_base ? "'s task vector (model minus base)" : "") +
                        " has NaN or Inf values, or values too large to square (beyond ~1e18)" + in_tensor(tensor));
}

// ------------------------------------------------------------------------------ coefficients

// Per-vector coefficients, computed in double, rounded once to each compute type.
struct coefficient_table {
  std::size_t stride = 1;
  std::vector<double> d;
  std::vector<float> f;

  coefficient_table() = default;
  coefficient_table(std::size_t vectors, std::size_t s) : stride(s), d(vectors * s, 0.0) {}
  double* at(std::size_t v) noexcept { return d.data() + v * stride; }
  void finish() { f.assign(d.begin(), d.end()); }
  template <class C>
  const C* get() const noexcept {
    if constexpr (std::is_same_v<C, float>)
      return f.data();
    else
      return d.data();
  }
};


// ------------------------------------------------------------------------------ jobs

// One tensor of a geometric merge: its inputs ([base,] models), output, name and shape.
struct geometric_job {
  std::string_view name;
  std::vector<tensor_view> in;
  mutable_tensor_view out;
  std::vector<std::size_t> shape;
};

// Model level: matches the sets by name (set 0 gives order, shapes and default dtypes),
// checks the requested output dtype and allocates the outputs into `out`.
inline std::vector<geometric_job> set_jobs(std::string_view method, const std::vector<std::vector<named_view>>& sets,
                                           std::span<const std::string> labels, std::optional<dtype> out_dtype,
                                           tensor_set& out) {
  const auto matched = match_sets(method, sets, labels);
  if (out_dtype) check_floating(method, "the requested output", {}, *out_dtype);
  std::vector<geometric_job> jobs;
  jobs.reserve(matched.size());
  for (const auto& m : matched)
    jobs.push_back({m.name, m.views, out.add(std::string(m.name), out_dtype.value_or(m.views[0].type), m.shape, no_init),
                    m.shape});
  return jobs;
}

// Tensor level: checks sizes, dtypes and aliasing of one job.
inline geometric_job tensor_job(std::string_view method, std::vector<tensor_view> in, std::span<const std::string> labels,
                                mutable_tensor_view out, std::vector<std::size_t> shape) {
  check_inputs(method, {}, in, labels, out);
  check_no_overlap(method, {}, in, labels, out);
  return {{}, std::move(in), out, std::move(shape)};
}

inline bool computes_in_double(const geometric_job& j) noexcept {
  if (j.out.type == dtype::f64) return true;
  return std::any_of(j.in.begin(), j.in.end(), [](const tensor_view& v) { return v.type == dtype::f64; });
}

// The reduction jobs of a list of geometric jobs: all inputs (models minus the base when
// has_base), in the layout layout_of(job) gives.
template <class LayoutOf>
std::vector<gram_job> gram_jobs(std::span<const geometric_job> jobs, bool has_base, const LayoutOf& layout_of) {
  std::vector<gram_job> g;
  g.reserve(jobs.size());
  for (const auto& j : jobs) g.push_back({j.in, has_base, layout_of(j), computes_in_double(j)});
  return g;
}

// The element-wise pass over every job: kernels::vector_combination in mode M with k models,
// job j's coefficients tables[j] over the vectors of layouts[j].
template <kernels::combine_mode M>
void run_combination(std::span<const geometric_job> jobs, std::span<const coefficient_table> tables,
                     std::span<const vector_layout> layouts, std::size_t k, const execution& ex) {
  std::vector<elementwise_job> ew;
  ew.reserve(jobs.size());
  for (const auto& j : jobs) ew.push_back({j.in, j.out});
  run_elementwise(ew, ex, [&](std::size_t j, auto tag) {
    using C = decltype(tag);
    return kernels::vector_combination<C, M>{k, tables[j].get<C>(), tables[j].stride, layouts[j].map()};
  });
}

// The same with the mode chosen at run time.
inline void run_combination(kernels::combine_mode mode, std::span<const geometric_job> jobs,
                            std::span<const coefficient_table> tables, std::span<const vector_layout> layouts,
                            std::size_t k, const execution& ex) {
  switch (mode) {
    case kernels::combine_mode::sum: return run_combination<kernels::combine_mode::sum>(jobs, tables, layouts, k, ex);
    case kernels::combine_mode::task: return run_combination<kernels::combine_mode::task>(jobs, tables, layouts, k, ex);
    case kernels::combine_mode::stock: return run_combination<kernels::combine_mode::stock>(jobs, tables, layouts, k, ex);
  }
}

// The layouts of a list of reduction jobs.
inline std::vector<vector_layout> layouts_of(std::span<const gram_job> g) {
  std::vector<vector_layout> l;
  l.reserve(g.size());
  for (const auto& j : g) l.push_back(j.layout);
  return l;
}

// One whole-tensor layout per job.
inline std::vector<vector_layout> whole_layouts(std::span<const geometric_job> jobs) {
  std::vector<vector_layout> l;
  l.reserve(jobs.size());
  for (const auto& j : jobs) l.push_back(whole(j.out.size));
  return l;
}

}  // namespace alloy::detail
