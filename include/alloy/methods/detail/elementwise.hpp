// The engine behind every element-wise method: a list of jobs (inputs and an output of the
// same size), split into parallel_chunk items at fixed offsets and streamed through
// kernels::stream on a thread pool. Item boundaries depend only on tensor sizes, so results
// are identical for any thread count. Outputs of kernels::stream_store_threshold bytes or more
// are written with non-temporal stores; each item's stream call fences its own stores.
#pragma once

#include <alloy/config.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/core/validate.hpp>
#include <alloy/kernels/stream.hpp>

#include <algorithm>
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

namespace alloy::detail {

struct elementwise_job {
  std::vector<tensor_view> in;
  mutable_tensor_view out;
};

// Compute in double when any operand is stored as double, in float otherwise.
inline bool computes_in_double(const elementwise_job& j) noexcept {
  if (j.out.type == dtype::f64) return true;
  return std::any_of(j.in.begin(), j.in.end(), [](const tensor_view& v) { return v.type == dtype::f64; });
}

// make(job_index, C{}) returns the per-element functor of job job_index computing in C.
// Preconditions (checked by the methods): every job has 1..max_stream_inputs floating inputs
// of the output's size.
template <class Make>
void run_elementwise(std::span<const elementwise_job> jobs, const execution& ex, const Make& make) {
  std::vector<std::pair<std::size_t, std::size_t>> items;  // (job, first element)
  for (std::size_t j = 0; j < jobs.size(); ++j)
    for (std::size_t s = 0; s < jobs[j].out.size; s += parallel_chunk) items.emplace_back(j, s);
  parallel_for(items.size(), ex, [&](std::size_t k) {
    const std::size_t j = items[k].first, first = items[k].second;  // clang 14 cannot capture bindings
    const elementwise_job& job = jobs[j];
    const std::size_t last = std::min(job.out.size, first + parallel_chunk);
    std::array<kernels::source, kernels::max_stream_inputs> src;
    for (std::size_t i = 0; i < job.in.size(); ++i) src[i] = {job.in[i].data, job.in[i].type};
    const kernels::sink dst{job.out.data, job.out.type};
    // Items are 1 MiB or so: the whole output decides whether its stores bypass the caches.
    const auto policy = job.out.size * dtype_size(job.out.type) >= kernels::stream_store_threshold
                            ? kernels::store_policy::streaming
                            : kernels::store_policy::cached;
    auto go = [&](auto tag) {
      using C = decltype(tag);
      kernels::stream<C>(src.data(), job.in.size(), dst, first, last, make(j, tag), policy);
    };
    if (computes_in_double(job))
      go(double{});
    else
      go(float{});
  });
}

// A model given by value, pointer or std::reference_wrapper.
template <class T>
const auto& unwrap(const T& t) noexcept {
  if constexpr (std::is_pointer_v<T>)
    return *t;
  else if constexpr (requires { t.get(); typename T::type; })
    return t.get();
  else
    return t;
}
template <class T>
using unwrapped_t = std::remove_cvref_t<decltype(unwrap(std::declval<const T&>()))>;

// A range of named tensor sets (by value, pointer or reference_wrapper).
template <class R>
concept model_set_range = std::ranges::input_range<const R> && named_tensors<unwrapped_t<std::ranges::range_value_t<R>>>;

template <class R>
std::vector<std::vector<named_view>> named_views_of_each(const R& models) {
  std::vector<std::vector<named_view>> out;
  for (const auto& m : models) out.push_back(named_views_of(unwrap(m)));
  return out;
}

// Matches the sets by name (set 0 is the reference and gives the output order, shapes and
// default dtypes), allocates the output and runs make(tensor_index, C{}) on every tensor.
template <class Make>
tensor_set merge_sets(std::string_view method, const std::vector<std::vector<named_view>>& sets,
                      std::span<const std::string> labels, std::optional<dtype> out_dtype, const execution& ex,
                      const Make& make) {
  const auto matched = match_sets(method, sets, labels);
  if (out_dtype) check_floating(method, "the requested output", {}, *out_dtype);
  tensor_set out;
  std::vector<elementwise_job> jobs;
  jobs.reserve(matched.size());
  for (const auto& m : matched)
    jobs.push_back({m.views, out.add(std::string(m.name), out_dtype.value_or(m.views[0].type), m.shape, no_init)});
  run_elementwise(jobs, ex, make);
  return out;
}

}  // namespace alloy::detail
