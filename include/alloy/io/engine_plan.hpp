// The plan of a streaming merge (io/merge_engine.hpp): options, inputs, one entry per tensor
// with its action, sources and resolved recipe parameters, and the totals `alloy merge
// --dry-run` prints. Shared by merge_engine.hpp and engine_methods.hpp.
#pragma once

#include <alloy/core/execution.hpp>
#include <alloy/core/preset.hpp>
#include <alloy/io/checkpoint.hpp>
#include <alloy/io/recipe.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace alloy::io {

// Progress of a running merge, reported after every work item.
struct merge_progress {
  std::size_t tensors_done = 0, tensors_total = 0;
  std::uint64_t bytes_done = 0, bytes_total = 0;  // input bytes read + output bytes written
  double seconds = 0;                             // since run() started
};

struct merge_options {
  execution exec = {};
  std::uint64_t max_shard_size = default_max_shard_size;
  std::size_t chunk_elements = std::size_t{1} << 20;  // element-wise work item size (a multiple of parallel_chunk)
  // none (the default, as cp and mergekit): the output is complete and renamed into place
  // when the merge returns, its pages written back by the kernel afterwards; fsync: also on
  // the disk (`alloy merge --sync`), at the disk's write speed.
  sync_mode sync = sync_mode::none;
  // Called after each work item from the thread that finished it, never concurrently; an
  // exception it throws aborts the merge (and is rethrown by run()).
  std::function<void(const merge_progress&)> on_progress = {};
};

// One input checkpoint of a merge.
struct merge_input {
  std::string label;  // "base_model '../base'" or "models[1] './math'"
  checkpoint ckpt;
};

enum class tensor_action : unsigned char { merge, copy };

struct planned_tensor {
  std::string name;
  std::vector<std::size_t> shape;
  std::size_t elements = 0;
  dtype out_type = dtype::f32;
  tensor_action action = tensor_action::merge;
  std::vector<const checkpoint_tensor*> sources;  // merge: every input, in input order (for fisher
                                                  // then each model's Fisher); copy: the reference
  std::vector<const checkpoint_tensor*> aux;      // regmean: the Gram of each model (a linear layer), read whole
  std::uint64_t input_bytes = 0, output_bytes = 0;
  tensor_parameters parameters;  // merge only
};

struct merge_plan {
  std::string method;
  alloy::preset preset = alloy::preset::mergekit;
  merge_output output = merge_output::merged;
  bool has_base = false;            // input 0 is the base model
  std::vector<std::string> inputs;  // labels, in input order
  std::vector<planned_tensor> tensors;
  std::size_t merged_tensors = 0, copied_tensors = 0;
  std::size_t n_layers = 0;  // 1 + the largest layer index in the tensor names
  std::uint64_t input_bytes = 0, output_bytes = 0;
  std::uint64_t largest_tensor_bytes = 0;  // the largest output tensor
  std::size_t shards = 1;
  unsigned threads = 1;
  bool whole_tensors = false;         // the method merges whole tensors (else chunks)
  bool masked_chunks = false;         // a large tensor's masks over it whole, then chunks
                                      // (ties, magnitude_prune, dare_*, breadcrumbs*,
                                      // della*, slerp)
  std::uint64_t memory_estimate = 0;  // peak bytes of buffers and mapped pages in flight
  double read_passes = 1;             // how many times the method reads its inputs (for time estimates)
  std::vector<std::string> warnings;
};

struct merge_stats {
  double seconds = 0;
  std::uint64_t input_bytes = 0, output_bytes = 0;
  std::size_t tensors = 0, shards = 0;
};

}  // namespace alloy::io
