// The streaming merge engine: runs a recipe over checkpoints on disk, tensor by tensor, with
// memory bounded by a few tensors, and writes the merged checkpoint.
//
//   auto r = alloy::io::load_recipe("recipe.yaml");
//   alloy::io::merge_engine e(r, {.exec = {4}});     // opens and checks everything
//   print(e.plan());                                  // tensors, bytes, estimates (--dry-run)
//   alloy::io::merge_to_folder(r, "out/");            // or: the whole job, published atomically
//
// Checks before any output or arithmetic (merge_engine's constructor):
//   - the method's options (io/engine_methods.hpp, which holds the per-method code): options
//     a method lacks (ties with rescale: true) are recipe_error; regmean needs
//     <alloy/io/engine_regmean.hpp> in the program (LAPACK). Presets whose semantics need the
//     whole model at once get a planning pass after the checks below: ties under paper
//     (whole-model top-k and vote, io/engine_whole_model.hpp), dare_ties and breadcrumbs_ties
//     under paper (the model-wide zero vote, engine_methods.hpp's plan_model_vote);
//   - every input opens as a checkpoint (io::open_checkpoint: files, indexes, shards, headers);
//   - every input holds the same tensor names (errc::missing_tensor naming the tensor and
//     both inputs) with the same shapes (errc::shape_mismatch); a tensor is merged when it is
//     floating in every input (F32/F64/BF16/F16 may differ between inputs: each is converted
//     to float, with a warning), and copied unmerged from the reference input (the base, else
//     the first model) when it is integer or bool in every input with one dtype
//     (errc::dtype_mismatch otherwise);
//   - every merged tensor's parameters (recipe.hpp's resolve) are checked: ranges, a weight
//     for every model, combined constraints, a density that keeps no entry of a tensor
//     where the method refuses that (ties, magnitude_prune under mergekit semantics), and
//     the library's own checks of the options built from them (model counts, weights, eps);
//   - fisher and regmean: each model's Fisher or Gram file opens and matches the models'
//     tensors (names, shapes; engine_methods.hpp), and every Fisher value is read and checked
//     (finite, >= 0) by a planning pass that also computes the norms `normalize` needs.
// Errors in the recipe are recipe_error; the rest are alloy::error with the codes above and
// errc::io_error / malformed_file from io.
//
// Output. Tensors keep the reference input's order and shapes; a merged tensor is stored as
// recipe.out_dtype, else as its dtype in the reference input; the files carry the metadata
// {"format": "pt"} (what transformers expects). run() writes through io::checkpoint_writer:
// model.safetensors, or shards of at most options.max_shard_size bytes plus an index.
//
// Memory and threads. Inputs are read as zero-copy views into the memory maps (a tensor whose
// data is not aligned to its element size, which io allows in files from other writers, is
// copied to an aligned buffer first), and the maps are released (mapped_file::release) once
// merged, so the resident set stays bounded by what is in flight, not by the model size:
//   - element-wise methods (linear, task_arithmetic, passthrough, fisher) and unmerged copies run in
//     work items of options.chunk_elements elements (2^20 by default) of one tensor, items in
//     parallel on options.exec threads, each merging into its own chunk buffer and writing it
//     at its offset; the inputs are released behind the finished items in 16 MiB steps
//     (detail::release_behind): peak = about 2 x threads x chunk x (output element size + the
//     input element sizes) + 16 MiB per input, about 100 MB, whatever the model and tensor sizes;
//   - ties (every preset), magnitude_prune, dare_*, della*, breadcrumbs* and slerp need a
//     whole tensor only for their masks (each model's top-k cuts, random keep, della's keep
//     bits where a norm rescale records them), their norm-matching factors or slerp's angle
//     (its two coefficients, detail::slerp_tables): a tensor of more than parallel_chunk
//     elements whose inputs are aligned gets its masks with every thread working over the
//     whole tensor in place, then merges in chunks of parallel_chunk elements as above, or
//     of whole rows where the masks are per row (della's ranks without keep bits,
//     breadcrumbs under preset paper: each chunk computes its rows' masks)
//     (detail::masked_tensor, detail::masked_chunk; alloy::detail::slice_job keeps the whole
//     tensor's bits): peak = the largest tensor's inputs (mapped, read whole for the masks)
//     plus the chunks and the top-k's sample and band entries (della: n / 8 bytes of keep
//     bits per model), and no output buffer of a whole tensor;
//   - other methods that need a whole tensor (norms, angles, linear solves: nuslerp,
//     multislerp, karcher, model_stock, regmean, and the methods above for misaligned
//     tensors) merge one tensor at a time with every thread working inside it, into one
//     output buffer of that tensor, written (by a second thread) while the next tensor
//     merges into a second buffer, so no core waits on the write: peak = the largest
//     tensor's inputs (mapped) plus two output buffers, i.e. (N + 1) x input bytes + 2 x
//     output bytes of the largest tensor, independent of the number of tensors (regmean:
//     plus the layer's Grams and the solver's scratch, two [in, in] and up to five [out, in]
//     float matrices). Tensors of at most alloy::parallel_chunk elements (norms, biases) run
//     several at a time, one per thread.
// merge_plan::memory_estimate gives the figure for a plan. Results do not depend on the thread
// count or the chunk size (the methods are deterministic and element-wise ones are
// position-independent; random methods are keyed by tensor name and element index).
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/error.hpp>
#include <alloy/io/checkpoint.hpp>
#include <alloy/io/engine_methods.hpp>
#include <alloy/io/engine_plan.hpp>
#include <alloy/io/recipe.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace alloy::io {

namespace detail {

// A 64-byte-aligned byte buffer that keeps its capacity.
//
// Not 2 MiB pages (MADV_HUGEPAGE): that cut a 0.57B ties merge's page faults from 83.5 Ki to
// 12 Ki (`perf stat -e page-faults`), 85 % of them being the first writes of its two output
// buffers, but raised its system time from 0.53-0.66 s to 1.3-2.2 s (`/usr/bin/time`, runs
// alternating the two builds). Likely cause: the guest reports free blocks of 8 MiB and more
// to its host (docs/performance.md), and a huge page is taken from such a block, which the
// host must then back again.
class aligned_buffer {
 public:
  std::byte* get(std::size_t bytes) {
    if (bytes > capacity_) {
      data_.reset();
      capacity_ = 0;  // stays so if the allocation throws
      // Checked here: libstdc++ 12's aligned new did not throw for SIZE_MAX - 5 bytes (the
      // test of this class then aborted in malloc), as if the size had wrapped.
      if (bytes > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max())) throw std::bad_alloc();
      data_.reset(new (std::align_val_t{64}) std::byte[bytes]);
      capacity_ = bytes;
    }
    return data_.get();
  }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  struct free_aligned {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<std::byte[], free_aligned> data_;
  std::size_t capacity_ = 0;
};

// Buffers handed to work items, one set per item in flight.
struct item_buffers {
  aligned_buffer out;
  std::vector<aligned_buffer> scratch;  // misaligned inputs
};

class buffer_pool {
 public:
  std::unique_ptr<item_buffers> acquire() {
    std::lock_guard lock(m_);
    if (free_.empty()) return std::make_unique<item_buffers>();
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void release(std::unique_ptr<item_buffers> b) {
    std::lock_guard lock(m_);
    free_.push_back(std::move(b));
  }

 private:
  std::mutex m_;
  std::vector<std::unique_ptr<item_buffers>> free_;
};

// Releases a chunked tensor's mapped inputs behind its readers. The tensor's items are
// claimed in order and finish in about that order; each finished item extends the tensor's
// finished prefix, and the inputs below it are dropped once the prefix has moved `step`
// elements past the last drop, and the rest when the tensor is done. Dropping each item's
// range as it finished (the earlier way) interrupted the other cores once per item and
// input (each drop flushes their TLBs) and dropped blocks that the neighbouring item was
// still reading, which it faulted in again: in task_arithmetic of the 0.57B benchmark set,
// 2118-2300 TLB shootdowns (/proc/interrupts) and 8942-9125 page faults (perf stat) before,
// 538-552 and 8653-8671 with 16 MiB steps.
class release_behind {
 public:
  struct range {
    std::size_t first = 0, count = 0;
    bool end = false;  // the tensor's last range: drop every block it touches
  };
  explicit release_behind(std::size_t tensors) : s_(tensors) {}

  // Item [first, first + chunk) of a tensor of `elements` elements, cut in items of `chunk`,
  // has finished: the range to drop now (count 0: none yet).
  range finished(std::size_t tensor, std::size_t elements, std::size_t chunk, std::size_t first, std::size_t step) {
    std::lock_guard lock(m_);
    state& st = s_[tensor];
    const std::size_t items = std::max<std::size_t>(1, (elements + chunk - 1) / chunk);
    if (st.done.empty()) st.done.assign(items, false);
    st.done[first / chunk] = true;
    while (st.next < items && st.done[st.next]) ++st.next;
    const std::size_t prefix = st.next == items ? elements : st.next * chunk;
    range r;
    r.end = st.next == items;
    if (!r.end && prefix - st.released < step) return r;
    r.first = st.released;
    r.count = prefix - st.released;
    st.released = prefix;
    if (r.end) st.done = {};
    return r;
  }

 private:
  struct state {
    std::vector<bool> done;
    std::size_t next = 0, released = 0;  // first unfinished item; elements released so far
  };
  std::mutex m_;
  std::vector<state> s_;
};

inline std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

}  // namespace detail

class merge_engine {
 public:
  explicit merge_engine(recipe r, merge_options o = {}) : r_(std::move(r)), o_(std::move(o)) {
    check_method();
    open_inputs();
    plan_tensors();
    // ties with preset paper: the whole-model selection and vote (io/engine_whole_model.hpp).
    detail::plan_whole_model_ties(r_, plan_, method_.ties_plan, o_.exec,
                                  [this](const planned_tensor& t, std::size_t first, std::size_t count) {
                                    release_consumed(t, first, count);
                                  });
    // dare_ties and breadcrumbs_ties with preset paper: the model-wide zero vote.
    detail::plan_model_vote(r_, plan_, method_, o_.exec, [this](const planned_tensor& t) { release_inputs(t, 0, t.elements); });
  }

  const recipe& source_recipe() const noexcept { return r_; }
  const merge_options& options() const noexcept { return o_; }
  const merge_plan& plan() const noexcept { return plan_; }
  const std::vector<merge_input>& inputs() const noexcept { return in_; }

  // The folder whose config.json and tokenizer files go with the output: the base model's
  // (or the first model's) folder, when that input is a folder or an index file; empty for a
  // single .safetensors file.
  std::filesystem::path side_file_folder() const {
    std::filesystem::path p = r_.base_model ? *r_.base_model : r_.models[r_.merged.front()].path;
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) return p;
    if (p.filename().string().ends_with(".index.json")) return p.parent_path().empty() ? "." : p.parent_path();
    return {};
  }

  // Merges every tensor into a checkpoint in `folder` (which must exist). Nothing appears
  // under the final file names unless every tensor was merged and written.
  merge_stats run(const std::filesystem::path& folder) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<tensor_spec> specs;
    specs.reserve(plan_.tensors.size());
    for (const auto& t : plan_.tensors) specs.push_back({t.name, t.out_type, t.shape});
    checkpoint_writer w(folder, specs, {{"format", "pt"}}, o_.max_shard_size);

    progress_state ps;
    ps.start = start;
    ps.total.tensors_total = plan_.tensors.size();
    ps.total.bytes_total = plan_.input_bytes + plan_.output_bytes;
    ps.remaining.reset(new std::atomic<std::size_t>[plan_.tensors.size()]);

    // Work items: (tensor, first element, element count). chunk_elements is rounded down to a
    // multiple of parallel_chunk (at least one).
    struct item {
      std::size_t tensor, first, count;
    };
    std::vector<item> chunked, small_whole, large_whole;
    std::vector<std::size_t> masked;  // a tensor's masks with every thread, then its chunks
    // Their chunks (detail::masked_chunk: parallel_chunk, or whole rows for row-wise masks):
    // each tensor's end is a barrier before the next one's cuts, where the last chunks leave a
    // thread idle; 2^18 against 2^20 elements: 0.84-0.92 against 0.86-0.97 s (0.57B benchmark
    // set, alternating, docs/performance.md).
    const std::size_t chunk =
        std::max<std::size_t>(parallel_chunk, o_.chunk_elements / parallel_chunk * parallel_chunk);
    for (std::size_t j = 0; j < plan_.tensors.size(); ++j) {
      const auto& t = plan_.tensors[j];
      std::size_t items = 0;
      if (t.action == tensor_action::copy || !plan_.whole_tensors) {
        for (std::size_t s = 0; s < t.elements; s += chunk, ++items)
          chunked.push_back({j, s, std::min(chunk, t.elements - s)});
        if (t.elements == 0) chunked.push_back({j, 0, 0}), ++items;
      } else if (in_chunks_after_masks(t)) {
        masked.push_back(j);
        const std::size_t mc = detail::masked_chunk(r_, t);
        items = (t.elements + mc - 1) / mc;
      } else {
        (t.elements <= parallel_chunk ? small_whole : large_whole).push_back({j, 0, t.elements});
        items = 1;
      }
      ps.remaining[j].store(items, std::memory_order_relaxed);
    }

    detail::buffer_pool pool;
    detail::release_behind behind(plan_.tensors.size());
    auto run_item = [&](const item& it) {
      auto buffers = pool.acquire();
      process(w, plan_.tensors[it.tensor], it.first, it.count, execution{1}, *buffers);
      pool.release(std::move(buffers));
    };
    parallel_for(chunked.size(), o_.exec, [&](std::size_t k) {
      const item& it = chunked[k];
      const planned_tensor& t = plan_.tensors[it.tensor];
      run_item(it);
      const auto r = behind.finished(it.tensor, t.elements, chunk, it.first, release_step(t));
      if (r.end)
        release_inputs(t, r.first, r.count);
      else if (r.count != 0)
        release_consumed(t, r.first, r.count);
      finish_item(ps, it.tensor, it.first, it.count);
    });
    parallel_for(small_whole.size(), o_.exec, [&](std::size_t k) {
      const item& it = small_whole[k];
      run_item(it);
      release_inputs(plan_.tensors[it.tensor], it.first, it.count);
      finish_item(ps, it.tensor, it.first, it.count);
    });
    for (const std::size_t j : masked) {
      const planned_tensor& t = plan_.tensors[j];
      std::vector<tensor_view> whole;
      for (const auto* src : t.sources) whole.push_back(src->view());
      const detail::masked_tensor m = detail::prepare_masked(r_, plan_, method_, t, whole, o_.exec);
      const std::size_t es = dtype_size(t.out_type), masked_chunk = detail::masked_chunk(r_, t);
      if (masked_chunk % m.unit != 0)  // not reached: masked_chunk follows the same rows
        throw error(errc::invalid_argument, "tensor '" + t.name + "': chunks of " + std::to_string(masked_chunk) +
                                                " elements would split its rows of " + std::to_string(m.unit));
      parallel_for((t.elements + masked_chunk - 1) / masked_chunk, o_.exec, [&](std::size_t k) {
        const std::size_t first = k * masked_chunk, count = std::min(masked_chunk, t.elements - first);
        auto buffers = pool.acquire();
        const mutable_tensor_view out{buffers->out.get(count * es), count, t.out_type};
        detail::merge_masked(m, first, count, out);
        w.write(t.name, {static_cast<const std::byte*>(out.data), out.bytes()}, first * es);
        pool.release(std::move(buffers));
        const auto r = behind.finished(j, t.elements, masked_chunk, first, release_step(t));
        if (r.end)
          release_inputs(t, r.first, r.count);
        else if (r.count != 0)
          release_consumed(t, r.first, r.count);
        finish_item(ps, j, first, count);
      });
    }
    // Large whole tensors one at a time, every thread inside each; tensor j is written by a
    // second thread while tensor j + 1 merges (the write is a serial copy into the page
    // cache: on its own it would leave the other cores idle).
    // (The buffer is declared first so that, on an error, the future's destructor waits for
    // the write before the buffer is freed.)
    std::unique_ptr<detail::item_buffers> written_from;
    std::size_t written_tensor = 0;
    std::future<void> writing;
    auto finish_write = [&] {
      if (!writing.valid()) return;
      writing.get();  // rethrows a write error
      pool.release(std::move(written_from));
      finish_item(ps, written_tensor, 0, plan_.tensors[written_tensor].elements);
    };
    for (const auto& it : large_whole) {
      const planned_tensor& t = plan_.tensors[it.tensor];
      auto buffers = pool.acquire();
      const std::span<const std::byte> bytes = produce(t, 0, t.elements, o_.exec, *buffers);
      release_inputs(t, 0, t.elements);
      finish_write();
      written_from = std::move(buffers);
      written_tensor = it.tensor;
      writing = std::async(std::launch::async, [&w, &t, bytes] { w.write(t.name, bytes, 0); });
    }
    finish_write();

    w.commit(o_.sync);
    merge_stats s;
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    s.input_bytes = plan_.input_bytes;
    s.output_bytes = plan_.output_bytes;
    s.tensors = plan_.tensors.size();
    s.shards = w.shard_count();
    return s;
  }

 private:
  struct progress_state {
    std::chrono::steady_clock::time_point start;
    std::mutex m;
    merge_progress total;
    std::unique_ptr<std::atomic<std::size_t>[]> remaining;
  };

  std::string where() const { return r_.label() + ": "; }

  // ---- checks and plan

  void check_method() { detail::check_method_options(r_); }

  void open_inputs() {
    plan_.has_base = separate_base(r_);
    auto open = [&](const std::filesystem::path& p, const std::string& label) {
      try {
        in_.push_back({label, open_checkpoint(p)});
      } catch (const error& e) {
        throw error(e.code(), std::string(e.what()) + " (" + label + " in " + r_.label() + ")");
      }
    };
    if (plan_.has_base) open(*r_.base_model, "base_model '" + r_.base_spelled + "'");
    for (std::size_t k : r_.merged) open(r_.models[k].path, r_.models[k].where + " '" + r_.models[k].spelled + "'");
    for (const auto& i : in_) plan_.inputs.push_back(i.label);
  }

  void plan_tensors() {
    plan_.method = r_.method_name;
    plan_.preset = r_.preset;
    plan_.output = r_.output;
    plan_.threads = resolve_threads(o_.exec);
    plan_.whole_tensors = !detail::elementwise_method(r_.method);
    plan_.masked_chunks = plan_.whole_tensors && detail::merges_masked(r_, plan_);
    plan_.warnings = r_.warnings;
    const checkpoint& ref = in_[0].ckpt;

    // The same names everywhere.
    for (std::size_t i = 1; i < in_.size(); ++i) {
      for (const auto& t : ref.tensors())
        if (!in_[i].ckpt.contains(t.name()))
          throw error(errc::missing_tensor,
                      "tensor '" + t.name() + "' is in " + in_[0].label + " but not in " + in_[i].label);
      for (const auto& t : in_[i].ckpt.tensors())
        if (!ref.contains(t.name()))
          throw error(errc::missing_tensor,
                      "tensor '" + t.name() + "' is in " + in_[i].label + " but not in " + in_[0].label);
    }
    {
      std::vector<std::string_view> names;
      for (const auto& t : ref.tensors()) names.push_back(t.name());
      plan_.n_layers = count_layers(names);
    }

    std::size_t mixed = 0;
    std::string mixed_example;
    for (const auto& rt : ref.tensors()) {
      planned_tensor t;
      t.name = rt.name();
      t.shape = rt.shape();
      t.elements = rt.elements();
      bool floating = true, integer = true;
      for (std::size_t i = 0; i < in_.size(); ++i) {
        const checkpoint_tensor& x = in_[i].ckpt.at(t.name);
        if (x.shape() != t.shape)
          throw error(errc::shape_mismatch, "tensor '" + t.name + "' has shape " + shape_string(x.shape()) + " in " +
                                                in_[i].label + " but " + shape_string(t.shape) + " in " + in_[0].label);
        floating = floating && is_floating(x.type());
        integer = integer && !is_floating(x.type());
        t.sources.push_back(&x);
      }
      if (!floating && !integer)
        throw error(errc::dtype_mismatch, "tensor '" + t.name + "' is " + dtype_list(t.name) +
                                              ": a floating tensor cannot be merged with an integer or bool one");
      if (integer) {
        for (std::size_t i = 1; i < in_.size(); ++i)
          if (t.sources[i]->type() != rt.type())
            throw error(errc::dtype_mismatch, "tensor '" + t.name + "' is " + dtype_list(t.name) +
                                                  ": integer and bool tensors are copied unmerged and must agree");
        t.action = tensor_action::copy;
        t.out_type = rt.type();
        t.sources.resize(1);
        t.input_bytes = rt.bytes();
        ++plan_.copied_tensors;
      } else {
        for (std::size_t i = 1; i < in_.size(); ++i)
          if (t.sources[i]->type() != rt.type()) {
            if (mixed++ == 0) mixed_example = "tensor '" + t.name + "' is " + dtype_list(t.name);
            break;
          }
        t.action = tensor_action::merge;
        t.out_type = r_.out_dtype.value_or(rt.type());
        for (const auto* s : t.sources) t.input_bytes += s->bytes();
        t.parameters = resolve(r_, t.name, plan_.n_layers);
        check_parameters(r_, t.parameters, t.name);
        check_keeps_entries(t);
        detail::check_tensor_options(r_, plan_, t);
        ++plan_.merged_tensors;
      }
      // A passthrough of the same dtype without a scale is a plain copy.
      if (r_.method == merge_method_id::passthrough && t.action == tensor_action::merge && t.out_type == rt.type() &&
          t.parameters.models[0].scale.value_or(1.0) == 1.0) {
        t.action = tensor_action::copy;
        t.sources.resize(1);
      }
      t.output_bytes = static_cast<std::uint64_t>(t.elements) * dtype_size(t.out_type);
      plan_.input_bytes += t.input_bytes;
      plan_.output_bytes += t.output_bytes;
      plan_.largest_tensor_bytes = std::max(plan_.largest_tensor_bytes, t.output_bytes);
      plan_.tensors.push_back(std::move(t));
    }
    if (plan_.tensors.empty()) throw error(errc::empty_input, in_[0].label + " has no tensors");
    const std::uint64_t method_scratch = detail::attach_method_files(r_, plan_, method_, o_.exec);
    if (mixed)
      plan_.warnings.push_back(mixed_example +
                               (mixed > 1 ? " (and " + std::to_string(mixed - 1) + " more tensors)" : "") +
                               ": the inputs' floating dtypes differ; each is converted to float for the merge");
    if (r_.compute_dtype && !r_.out_dtype) {
      const auto d = parse_float_dtype_name(*r_.compute_dtype);
      if (d && d != ref.tensors().front().type() && is_floating(ref.tensors().front().type()))
        plan_.warnings.push_back("dtype: " + *r_.compute_dtype +
                                 " without out_dtype: mergekit would also store the result as " + *r_.compute_dtype +
                                 "; alloy stores each tensor in the reference input's dtype (set "
                                 "out_dtype to choose)");
    }

    // Shards, memory and passes.
    {
      std::uint64_t current = 0;
      std::size_t shards = 0;
      for (const auto& t : plan_.tensors) {
        if (shards == 0 || (current > 0 && t.output_bytes > o_.max_shard_size - std::min(current, o_.max_shard_size))) {
          ++shards;
          current = 0;
        }
        current += t.output_bytes;
      }
      plan_.shards = std::max<std::size_t>(1, shards);
    }
    // Chunked items: an output chunk and the inputs' mapped pages per thread; whole tensors:
    // the largest merged tensor's inputs and output.
    std::uint64_t per_element = 0;
    for (const auto& t : plan_.tensors) {
      std::uint64_t e = dtype_size(t.out_type);
      for (const auto* s : t.sources) e += dtype_size(s->type());
      per_element = std::max(per_element, e);
    }
    std::size_t largest = 0;
    for (const auto& t : plan_.tensors) largest = std::max(largest, t.elements);
    const std::uint64_t chunk = std::min(std::max<std::size_t>(parallel_chunk, o_.chunk_elements), largest);
    // Chunked: each thread's item, plus the inputs' finished prefix not yet dropped (up to a
    // release step, and the items finished ahead of an unfinished one).
    std::uint64_t input_sources = 0;
    for (const auto& t : plan_.tensors) input_sources = std::max<std::uint64_t>(input_sources, t.sources.size());
    const std::uint64_t chunk_peak = 2 * plan_.threads * chunk * per_element + input_sources * release_step_bytes;
    std::uint64_t whole_peak = 0, largest_output = 0;  // the previous tensor's output is being written
    if (plan_.whole_tensors) {
      for (const auto& t : plan_.tensors) {
        const std::uint64_t bits =
            detail::della_keep_bits(r_, t) ? (t.elements + 63) / 64 * 8 * (t.sources.size() - 1) : 0;
        if (in_chunks_after_masks(t)) {  // the inputs mapped whole, and chunks of parallel_chunk
          whole_peak = std::max<std::uint64_t>(
              whole_peak, t.input_bytes + bits + 2 * plan_.threads * detail::masked_chunk(r_, t) * per_element);
        } else if (t.action == tensor_action::merge) {
          whole_peak = std::max(whole_peak, t.input_bytes + t.output_bytes + bits);
          largest_output = std::max(largest_output, t.output_bytes);
        }
      }
    }
    plan_.memory_estimate = std::max(chunk_peak, whole_peak + largest_output + method_scratch);
    // Planning passes: ties' whole-model selection (up to 3 reads) and vote; the model-wide
    // vote of dare_ties and breadcrumbs_ties reads what one tensor's masks and vote read.
    plan_.read_passes = detail::read_passes(r_.method) * (detail::needs_model_vote(r_) ? 2 : 1) +
                        (detail::needs_whole_model_ties(r_) ? 4 : 0);
  }

  std::string dtype_list(const std::string& name) const {
    std::string s;
    for (std::size_t i = 0; i < in_.size(); ++i) {
      if (i) s += ", ";
      s += std::string(dtype_name(in_[i].ckpt.at(name).type())) + " in " + in_[i].label;
    }
    return s;
  }

  // Parameter problems the library would only find in the middle of the merge, reported
  // before any output: weights summing to 0 under linear's normalize (0/0), and a density
  // whose floor(density * n) is 0 where the trimming refuses it (ties, magnitude_prune under
  // mergekit semantics, as mergekit asserts k > 0).
  void check_keeps_entries(const planned_tensor& t) const {
    if (r_.method == merge_method_id::linear && t.parameters.normalize.value_or(true)) {
      double sum = 0;
      for (const auto& m : t.parameters.models) sum += m.weight.value_or(1.0);
      if (sum == 0)
        throw recipe_error(where() + "tensor '" + t.name +
                           "': the weights sum to 0, so linear's normalize would divide by 0 (set normalize: false)");
    }
    if (r_.method != merge_method_id::ties && r_.method != merge_method_id::magnitude_prune) return;
    const bool refuses = r_.method == merge_method_id::ties
                             ? ties_options::preset(r_.preset).on_empty == empty_trim::error &&
                                   ties_options::preset(r_.preset).rule == trim_rule::exact_k
                             : magnitude_prune_options::preset(r_.preset).on_empty == empty_trim::error &&
                                   magnitude_prune_options::preset(r_.preset).rule == trim_rule::exact_k;
    if (!refuses || t.elements == 0) return;
    for (std::size_t i = 0; i < t.parameters.models.size(); ++i) {
      const double d = t.parameters.models[i].density.value_or(1.0);
      if (d >= 1) continue;
      if (d * static_cast<double>(t.elements) < 1)
        throw recipe_error(where() + "tensor '" + t.name + "' (" + std::to_string(t.elements) + " elements), " +
                           r_.model_label(i) + ": density " + detail::value_text(parameter_value::of(d)) +
                           " keeps no entry (floor(density * n) = 0), which " + r_.method_name +
                           " refuses; raise the density for this tensor (a filter can set it per tensor)");
    }
  }

  // ---- merging

  // The view of input `i` of tensor t over [first, first + count): zero-copy when aligned.
  tensor_view input_view(const planned_tensor& t, std::size_t i, std::size_t first, std::size_t count,
                         detail::item_buffers& b) const {
    const checkpoint_tensor& s = *t.sources[i];
    const std::size_t es = dtype_size(s.type());
    const std::byte* p = s.data().data() + first * es;
    if (!s.is_aligned()) {
      if (b.scratch.size() <= i) b.scratch.resize(i + 1);
      std::byte* dst = b.scratch[i].get(std::max<std::size_t>(1, count * es));
      if (count) std::memcpy(dst, p, count * es);
      p = dst;
    }
    return {p, count, s.type()};
  }

  // After a sequential read of [first, first + count) of t's inputs, in ranges smaller than
  // a release block: see mapped_file::release_passed.
  void release_consumed(const planned_tensor& t, std::size_t first, std::size_t count) const {
    for (const auto* s : t.sources) {
      const std::size_t es = dtype_size(s->type());
      s->file->mapping().release_passed(s->data().subspan(first * es, count * es));
    }
  }

  void release_inputs(const planned_tensor& t, std::size_t first, std::size_t count) const {
    for (const auto* s : t.sources) {
      const std::size_t es = dtype_size(s->type());
      s->file->mapping().release(s->data().subspan(first * es, count * es));
    }
  }

  void process(checkpoint_writer& w, const planned_tensor& t, std::size_t first, std::size_t count, const execution& ex,
               detail::item_buffers& b) {
    const std::size_t es = dtype_size(t.out_type);
    if (t.action == tensor_action::copy && t.sources[0]->type() == t.out_type)
      w.write(t.name, t.sources[0]->data().subspan(first * es, count * es), first * es);  // straight from the map
    else
      w.write(t.name, produce(t, first, count, ex, b), first * es);
  }

  // Whether merged tensor t takes the masked path (detail::masked_tensor): masks computed
  // over the whole tensor in place (so every input must be aligned in its file), then merged
  // in chunks. Tensors of at most parallel_chunk elements stay whole, several at a time.
  bool in_chunks_after_masks(const planned_tensor& t) const {
    return t.action == tensor_action::merge && t.elements > parallel_chunk && plan_.masked_chunks &&
           std::all_of(t.sources.begin(), t.sources.end(), [](const auto* s) { return s->is_aligned(); });
  }

  // How far a chunked tensor's finished prefix moves between drops of its inputs (elements):
  // release_step_bytes of its widest input. task_arithmetic of the 0.57B benchmark set
  // (docs/performance.md), best of 5 alternating runs: 0.39-0.40 s dropping each item's
  // range, 0.35-0.37 s with 16 MiB steps (peak RSS 36-44 -> 92 MiB), 0.34-0.36 s with 64 MiB
  // (284 MiB).
  static constexpr std::size_t release_step_bytes = std::size_t{16} << 20;
  static std::size_t release_step(const planned_tensor& t) {
    std::size_t widest = 1;
    for (const auto* s : t.sources) widest = std::max(widest, dtype_size(s->type()));
    return release_step_bytes / widest;
  }

  // [first, first + count) of t merged (or, for a copy, converted to the output dtype) into
  // b.out; returns its bytes.
  std::span<const std::byte> produce(const planned_tensor& t, std::size_t first, std::size_t count, const execution& ex,
                                     detail::item_buffers& b) {
    const std::size_t es = dtype_size(t.out_type);
    const mutable_tensor_view out{b.out.get(std::max<std::size_t>(1, count * es)), count, t.out_type};
    std::vector<tensor_view> in;
    in.reserve(t.sources.size());
    for (std::size_t i = 0; i < t.sources.size(); ++i) in.push_back(input_view(t, i, first, count, b));
    if (t.action == tensor_action::copy)
      weighted_average(std::span<const tensor_view>(in), std::vector<double>{1.0}, out,
                       weighted_average_options{false, {}, ex});
    else
      merge_tensor(t, in, out, ex);
    return {static_cast<const std::byte*>(out.data), out.bytes()};
  }

  void merge_tensor(const planned_tensor& t, const std::vector<tensor_view>& in, mutable_tensor_view out,
                    const execution& ex) const {
    detail::merge_tensor(r_, plan_, method_, t, in, out, ex);  // io/engine_methods.hpp
  }

  void finish_item(progress_state& ps, std::size_t tensor, std::size_t first, std::size_t count) {
    const auto& t = plan_.tensors[tensor];
    const bool last = ps.remaining[tensor].fetch_sub(1) == 1;
    std::uint64_t bytes = 0;
    for (const auto* s : t.sources) bytes += static_cast<std::uint64_t>(count) * dtype_size(s->type());
    bytes += static_cast<std::uint64_t>(count) * dtype_size(t.out_type);
    (void)first;
    std::lock_guard lock(ps.m);
    ps.total.bytes_done += bytes;
    if (last) ++ps.total.tensors_done;
    ps.total.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ps.start).count();
    if (o_.on_progress) o_.on_progress(ps.total);
  }

  recipe r_;
  merge_options o_;
  std::vector<merge_input> in_;
  merge_plan plan_;
  detail::method_state method_;  // fisher's and regmean's per-model files, fisher's norms
};

// The files copied next to a merged model from the base's (or first model's) folder.
inline constexpr std::array<std::string_view, 14> side_files{"config.json",
                                                             "generation_config.json",
                                                             "tokenizer.json",
                                                             "tokenizer_config.json",
                                                             "special_tokens_map.json",
                                                             "tokenizer.model",
                                                             "vocab.json",
                                                             "merges.txt",
                                                             "added_tokens.json",
                                                             "vocab.txt",
                                                             "chat_template.jinja",
                                                             "chat_template.json",
                                                             "spiece.model",
                                                             "preprocessor_config.json"};

namespace detail {

// Copies config.json (with torch_dtype set to out_dtype when the recipe gives one) and the
// tokenizer files present in `from` into `to`.
inline void copy_side_files(const std::filesystem::path& from, const std::filesystem::path& to,
                            std::optional<dtype> out_dtype, std::vector<std::string>& warnings, sync_mode sync) {
  namespace fs = std::filesystem;
  if (from.empty()) return;
  for (auto name : side_files) {
    const fs::path src = from / name;
    std::error_code ec;
    if (!fs::is_regular_file(src, ec)) continue;
    const fs::path dst = to / name;
    if (name == "config.json" && out_dtype) {
      std::ifstream f(src, std::ios::binary);
      std::stringstream text;
      text << f.rdbuf();
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
      if (!j.is_discarded() && j.is_object()) {
        if (j.contains("torch_dtype")) j["torch_dtype"] = std::string(torch_dtype_name(*out_dtype));
        if (j.contains("dtype")) j["dtype"] = std::string(torch_dtype_name(*out_dtype));
        write_file_atomically(dst, j.dump(2) + "\n", sync);
        continue;
      }
      warnings.push_back("'" + src.string() + "' is not a JSON object: copied unchanged");
    }
    fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
    if (ec)
      throw error(errc::io_error, "cannot copy '" + src.string() + "' to '" + dst.string() + "': " + ec.message());
  }
}

}  // namespace detail

// The whole job of `alloy merge`: writes the merged checkpoint of an engine (whose
// constructor has checked everything), config.json and tokenizer files (from the base's
// folder, or the first model's) and alloy_recipe.yaml (the recipe with absolute paths) into a
// temporary folder next to out_dir (".<name>.alloy-tmp-<pid>"), and renames it to out_dir at
// the end. out_dir must not exist, or be an empty folder; its parent must exist. On any
// error the temporary folder is removed, so out_dir is either complete or absent (a killed
// process may leave the hidden temporary folder, never a partial out_dir). Warnings of the
// copies are appended to `warnings` when given.
inline merge_stats merge_to_folder(merge_engine& e, const std::filesystem::path& out_dir,
                                   std::vector<std::string>* warnings = nullptr) {
  namespace fs = std::filesystem;
  fs::path out = out_dir.lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "out/" -> "out"
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    throw error(errc::io_error, "output folder " + detail::quoted(out) + " already exists and is not empty");
  fs::path parent = out.parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent, ec))
    throw error(errc::io_error, "the parent folder of the output " + detail::quoted(out) + " does not exist");
  const fs::path tmp = parent / ("." + out.filename().string() + ".alloy-tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) || ec)
    throw error(errc::io_error, "cannot create " + detail::quoted(tmp) + ": " + ec.message());
  try {
    merge_stats s = e.run(tmp);
    std::vector<std::string> side_warnings;
    const recipe& r = e.source_recipe();
    const sync_mode sync = e.options().sync;
    detail::copy_side_files(e.side_file_folder(), tmp, r.out_dtype, side_warnings, sync);
    detail::write_file_atomically(tmp / "alloy_recipe.yaml", recipe_yaml_with_absolute_paths(r), sync);
    if (warnings) warnings->insert(warnings->end(), side_warnings.begin(), side_warnings.end());
    if (::rename(tmp.c_str(), out.c_str()) != 0)
      throw error(errc::io_error,
                  "cannot rename " + detail::quoted(tmp) + " to " + detail::quoted(out) + ": " + std::strerror(errno));
    if (sync == sync_mode::fsync) detail::sync_parent_directory(out);
    return s;
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

// The same from a recipe: builds the engine (every check), then merges. The plan's warnings
// come first in `warnings`.
inline merge_stats merge_to_folder(const recipe& r, const std::filesystem::path& out_dir, const merge_options& o = {},
                                   std::vector<std::string>* warnings = nullptr) {
  merge_engine e(r, o);
  if (warnings) *warnings = e.plan().warnings;
  return merge_to_folder(e, out_dir, warnings);
}

}  // namespace alloy::io
