// alloy align --spec SPEC.yaml A.safetensors B.safetensors OUT.safetensors [--seed S] [--max-iter N]
//             [--tolerance T] [--verbose]
//
// Permutes the hidden units of model B to match model A by weight matching (Git Re-Basin,
// alloy::align::weight_matching) and writes B permuted (every tensor of B, in B's order and
// dtypes; the tensors the spec does not list are copied unchanged) to OUT, with B's metadata.
// Prints the objective sum_t <A_t, pi(B)_t> over the spec's tensors before and after (and
// after every iteration with --verbose), and how many units each group moved. The spec is the YAML form of
// docs/methods/alignment.md (alloy::align::load_permutation_spec).
//
// OUT is written to a temporary name and renamed at the end (no partial file after an
// error); it may not be A or B. Errors are one line: a spec, shape or NaN problem (exit 1,
// naming the tensor and axis), a usage error (exit 2).
#include "cli_common.hpp"
#include "commands.hpp"

#include <alloy/align/apply.hpp>
#include <alloy/align/permutation_spec.hpp>
#include <alloy/align/permutation_spec_yaml.hpp>
#include <alloy/align/weight_matching.hpp>
#include <alloy/io/safetensors.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace alloy_cli {

namespace {

namespace fs = std::filesystem;

struct align_args {
  std::string spec;
  std::string a, b, out;
  std::uint64_t seed = 0;
  std::size_t max_iter = 100;
  double tolerance = 1e-12;
  bool verbose = false;
};

bool same_file(const fs::path& x, const fs::path& y) {
  std::error_code ec;
  return fs::exists(y, ec) && fs::equivalent(x, y, ec);
}

int run_align(const align_args& args) {
  if (args.max_iter == 0) throw usage_error("align: --max-iter must be at least 1");
  if (!(args.tolerance >= 0)) throw usage_error("align: --tolerance must be a number >= 0");
  if (same_file(args.a, args.out) || same_file(args.b, args.out))
    throw usage_error("align: OUT '" + args.out + "' is one of the input models; write the aligned model elsewhere");
  const fs::path parent = fs::path(args.out).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::is_directory(parent, ec))
    throw usage_error("align: the folder of OUT, '" + parent.string() + "', does not exist");

  const alloy::align::permutation_spec spec = alloy::align::load_permutation_spec(args.spec);
  const alloy::tensor_set a = alloy::io::read_safetensors(args.a);
  const alloy::io::safetensors_file b_file(args.b);
  const alloy::tensor_set b = b_file.to_tensor_set();

  // Tensors outside the spec are copied from B; tell the user when A and B disagree there.
  std::vector<std::string> warnings;
  for (const auto& e : b)
    if (!spec.contains(e.name())) {
      const auto* ea = a.find(e.name());
      if (!ea)
        warnings.push_back("tensor '" + e.name() + "' is in B but not in A (copied unchanged)");
      else if (ea->shape() != e.shape())
        warnings.push_back("tensor '" + e.name() + "' has shape " + alloy::shape_string(ea->shape()) + " in A but " +
                           alloy::shape_string(e.shape()) + " in B (not in the spec: copied unchanged)");
    }
  for (const auto& e : a)
    if (!b.contains(e.name())) warnings.push_back("tensor '" + e.name() + "' is in A but not in B");
  print_warnings(warnings);

  const auto t0 = std::chrono::steady_clock::now();
  const auto r = alloy::align::weight_matching(spec, a, b,
                                               {.seed = args.seed, .max_iter = args.max_iter, .tolerance = args.tolerance});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::printf("alloy align: %zu tensors in the spec, %zu permutation group%s\n", spec.size(), spec.groups().size(),
              spec.groups().size() == 1 ? "" : "s");
  if (args.verbose)
    for (std::size_t i = 0; i < r.objective.size(); ++i)
      std::printf("  %-14s objective %.10g\n", i == 0 ? "before" : ("iteration " + std::to_string(i)).c_str(),
                  r.objective[i]);
  for (const auto& g : spec.groups()) {
    const auto& p = r.perms.at(g);
    std::size_t moved = 0;
    for (std::size_t i = 0; i < p.size(); ++i) moved += p[i] != i;
    std::printf("  group %-20s %zu units, %zu moved\n", g.c_str(), p.size(), moved);
  }
  const double before = r.objective.front(), after = r.objective.back();
  std::printf("objective before: %.10g\nobjective after:  %.10g (%s after %zu iteration%s, seed %llu, %s)\n", before, after,
              r.converged ? "converged" : "max-iter reached", r.iterations, r.iterations == 1 ? "" : "s",
              static_cast<unsigned long long>(args.seed), human_seconds(seconds).c_str());

  const alloy::tensor_set aligned = alloy::align::apply_permutations(spec, b, r.perms);
  auto metadata = b_file.metadata();
  metadata["alloy_align"] = "weight matching to '" + fs::path(args.a).filename().string() + "', seed " +
                            std::to_string(args.seed);
  alloy::io::write_safetensors(args.out, aligned, metadata);
  std::printf("wrote %s (%zu tensors)\n", args.out.c_str(), aligned.size());
  return exit_ok;
}

}  // namespace

command add_align_command(CLI::App& app) {
  auto args = std::make_shared<align_args>();
  CLI::App* sub = app.add_subcommand(
      "align", "Permute model B's hidden units to match model A (Git Re-Basin weight matching) and write B permuted");
  sub->add_option("--spec", args->spec, "The permutation spec (YAML: docs/methods/alignment.md)")->required();
  sub->add_option("A", args->a, "Model A, the reference (.safetensors)")->required();
  sub->add_option("B", args->b, "Model B, the model to permute (.safetensors)")->required();
  sub->add_option("OUT", args->out, "Where to write B permuted (.safetensors; written atomically)")->required();
  sub->add_option("--seed", args->seed, "Seed of the order in which groups are visited (default 0)");
  sub->add_option("--max-iter", args->max_iter, "At most this many passes over the groups (default 100)");
  sub->add_option("--tolerance", args->tolerance,
                  "A step is taken when it improves its group's objective by more than this, relative (default 1e-12)");
  sub->add_flag("--verbose", args->verbose, "Print the objective after every iteration");
  return {sub, [args] { return run_align(*args); }};
}

}  // namespace alloy_cli
