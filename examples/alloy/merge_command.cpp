// alloy merge RECIPE.yaml OUT_DIR [--threads N] [--dry-run] [--no-progress] [--out-shard-size SIZE] [--sync]
#include "cli_common.hpp"
#include "commands.hpp"

#include <alloy/io/engine_regmean.hpp>  // regmean recipes (LAPACK, through alloy::linalg)
#include <alloy/io/merge_engine.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

namespace alloy_cli {

namespace {

namespace fs = std::filesystem;
using alloy::io::merge_engine;
using alloy::io::merge_plan;

struct merge_args {
  std::string recipe;
  std::string out;
  int threads = 0;
  bool dry_run = false;
  bool no_progress = false;
  bool sync = false;
  std::string shard_size = "5GB";
};

// Usage errors about OUT_DIR, found before any work.
void check_output(const fs::path& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    throw usage_error("output folder '" + out.string() +
                      "' already exists and is not empty (remove it, or choose another)");
  fs::path parent = out.lexically_normal().parent_path();
  if (!parent.empty() && parent.filename().empty()) parent = parent.parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec))
    throw usage_error("the parent folder of the output, '" + parent.string() + "', does not exist");
}

std::string dims(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_plan(const merge_engine& e, const std::string& out) {
  const merge_plan& p = e.plan();
  const auto& r = e.source_recipe();
  std::printf("alloy merge --dry-run: %s\n\n", r.label().c_str());
  std::size_t name_width = 6;
  for (const auto& t : p.tensors) name_width = std::max(name_width, t.name.size());
  name_width = std::min<std::size_t>(name_width, 60);
  std::printf("%-*s  %-6s %-16s %-5s %5s %10s\n", static_cast<int>(name_width), "tensor", "action", "shape", "dtype",
              "t", "bytes out");
  for (const auto& t : p.tensors) {
    const bool merged = t.action == alloy::io::tensor_action::merge;
    char tpos[16] = "";
    if (merged) std::snprintf(tpos, sizeof tpos, "%.3g", t.parameters.t);
    std::printf("%-*s  %-6s %-16s %-5s %5s %10s\n", static_cast<int>(name_width), t.name.c_str(),
                merged ? "merge" : "copy", dims(t.shape).c_str(), std::string(alloy::dtype_name(t.out_type)).c_str(),
                tpos, human_bytes(static_cast<double>(t.output_bytes)).c_str());
  }
  std::printf("\n");
  std::printf("  method      %s (preset %s, output %s)\n", p.method.c_str(),
              std::string(alloy::preset_name(p.preset)).c_str(),
              p.output == alloy::merge_output::merged ? "merged" : "delta");
  for (std::size_t i = 0; i < p.inputs.size(); ++i) {
    const auto& c = e.inputs()[i].ckpt;
    std::printf("  %-11s %s: %zu tensors, %s in %zu file%s\n", i == 0 ? "inputs" : "", p.inputs[i].c_str(), c.size(),
                human_bytes(static_cast<double>(c.total_bytes())).c_str(), c.file_count(),
                c.file_count() == 1 ? "" : "s");
  }
  std::printf("  tensors     %zu: %zu merged, %zu copied unmerged (integer or bool); %zu layers\n", p.tensors.size(),
              p.merged_tensors, p.copied_tensors, p.n_layers);
  std::printf("  output      %s: %s in %zu file%s%s\n", out.empty() ? "(no OUT_DIR given)" : out.c_str(),
              human_bytes(static_cast<double>(p.output_bytes)).c_str(), p.shards, p.shards == 1 ? "" : "s",
              p.shards == 1 ? " (model.safetensors)" : " and model.safetensors.index.json");
  std::printf("  traffic     %s read, %s written\n", human_bytes(static_cast<double>(p.input_bytes)).c_str(),
              human_bytes(static_cast<double>(p.output_bytes)).c_str());
  std::printf("  threads     %u (%s)\n", p.threads,
              p.masked_chunks   ? "one tensor at a time, every thread computing its masks, then its chunks in parallel"
              : p.whole_tensors ? "one tensor at a time, every thread inside it"
                                : "chunks of tensors in parallel");
  std::printf("  memory      about %s at peak beyond the program itself (%s)\n",
              human_bytes(static_cast<double>(p.memory_estimate)).c_str(),
              p.masked_chunks   ? "the largest tensor's inputs, mapped, and chunk buffers"
              : p.whole_tensors ? "the largest tensor's inputs, mapped, and two output buffers, one being written"
                                : "chunk buffers, and the inputs' mapped pages until released in 16 MiB steps");
  const double bw = measure_copy_bandwidth();
  const double seconds =
      (static_cast<double>(p.input_bytes) * p.read_passes + static_cast<double>(p.output_bytes)) / (bw * 0.5);
  std::printf(
      "  time        about %s with the files in the page cache (%.0f pass%s over the inputs; memcpy "
      "bandwidth here %s/s); reading from disk may take longer\n",
      human_seconds(seconds).c_str(), p.read_passes, p.read_passes == 1 ? "" : "es", human_bytes(bw).c_str());
}

int run_merge(const merge_args& a) {
  if (!a.dry_run && a.out.empty()) throw usage_error("merge: OUT_DIR is required (or give --dry-run)");
  const std::uint64_t shard = parse_size(a.shard_size, "--out-shard-size");
  alloy::io::merge_options o;
  o.exec = threads_option(a.threads);
  o.max_shard_size = shard;
  o.sync = a.sync ? alloy::io::sync_mode::fsync : alloy::io::sync_mode::none;
  if (!a.out.empty()) check_output(a.out);
  const alloy::io::recipe r = alloy::io::load_recipe(a.recipe);

  auto bar = std::make_shared<progress_bar>(!a.dry_run && !a.no_progress && stderr_is_terminal());
  // ALLOY_DEBUG_FAIL_AFTER=N makes the merge fail after N tensors: a testing hook for the
  // "no partial output" guarantee (docs/cli.md).
  long fail_after = -1;
  if (const char* env = std::getenv("ALLOY_DEBUG_FAIL_AFTER")) fail_after = std::atol(env);
  o.on_progress = [bar, fail_after](const alloy::io::merge_progress& p) {
    if (fail_after >= 0 && p.tensors_done >= static_cast<std::size_t>(fail_after))
      throw alloy::error(alloy::errc::io_error, "stopping after " + std::to_string(p.tensors_done) +
                                                    " tensors because ALLOY_DEBUG_FAIL_AFTER is set");
    bar->update({p.tensors_done, p.tensors_total, p.bytes_done, p.bytes_total, p.seconds});
  };

  merge_engine e(r, o);
  print_warnings(e.plan().warnings);
  if (a.dry_run) {
    print_plan(e, a.out);
    return exit_ok;
  }
  std::vector<std::string> warnings;
  alloy::io::merge_stats s;
  try {
    s = alloy::io::merge_to_folder(e, a.out, &warnings);
  } catch (...) {
    bar->finish();
    throw;
  }
  bar->finish();
  print_warnings(warnings);
  const double traffic = static_cast<double>(s.input_bytes + s.output_bytes);
  std::cerr << "alloy: merged " << s.tensors << " tensors (" << e.plan().method << ", " << e.plan().inputs.size()
            << " inputs) into '" << a.out << "' in " << human_seconds(s.seconds) << ": "
            << human_bytes(static_cast<double>(s.input_bytes)) << " read, "
            << human_bytes(static_cast<double>(s.output_bytes)) << " written, "
            << human_bytes(s.seconds > 0 ? traffic / s.seconds : 0) << "/s\n";
  return exit_ok;
}

}  // namespace

command add_merge_command(CLI::App& app) {
  auto args = std::make_shared<merge_args>();
  CLI::App* sub = app.add_subcommand("merge", "Merge the checkpoints a mergekit-style recipe names into OUT_DIR");
  sub->add_option("RECIPE", args->recipe, "The recipe (YAML; mergekit's format, see docs/cli.md)")->required();
  sub->add_option("OUT_DIR", args->out,
                  "The output folder: created, must not exist or be empty (written to a temporary folder and renamed "
                  "at the end)");
  sub->add_option("--threads", args->threads, "Threads (default 0: every core)");
  sub->add_flag("--dry-run", args->dry_run, "Check everything and print the plan; write nothing");
  sub->add_flag("--no-progress", args->no_progress, "No progress bar (only the summary line)");
  sub->add_flag("--sync", args->sync, "fsync the output before renaming it into place (durable against power loss)");
  sub->add_option("--out-shard-size", args->shard_size,
                  "Largest output shard, e.g. 5GB (default), 500MB, 2GiB or bytes; more than one shard adds "
                  "model.safetensors.index.json");
  return {sub, [args] { return run_merge(*args); }};
}

}  // namespace alloy_cli
