// alloy analyze RECIPE.yaml [--density D] [--threads N]
//
// The interference analysis of the TIES paper (Yadav et al. 2023, section 3 and figure 2),
// per tensor and overall, for the task vectors tau_i = theta_i - theta_base of a recipe:
//   mean |tau_i|          how much model i moved from the base
//   nonzero               the fraction of entries of tau_i that are not 0
//   conflicts before      the fraction of positions where two task vectors have opposite
//                         signs (some tau_i > 0 and some tau_j < 0)
//   conflicts after       the same after trimming each tau_i to its top-k magnitudes at the
//                         recipe's density for that tensor and model (or --density), as TIES
//                         does (k = floor(density * n), exact)
// The statistics are alloy::task_vector_interference's (methods/interference.hpp), one tensor
// at a time, every thread working inside it. Memory: a few tiles per thread and the top-k's
// sample and band entries; the pages of a tensor's inputs are released after it.
#include "cli_common.hpp"
#include "commands.hpp"

#include <alloy/io/merge_engine.hpp>
#include <alloy/methods/interference.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace alloy_cli {

namespace {

struct analyze_args {
  std::string recipe;
  double density = 0;  // 0: the recipe's
  int threads = 0;
};

int run_analyze(const analyze_args& a) {
  if (a.density != 0 && !(a.density > 0 && a.density <= 1))
    throw usage_error("--density " + std::to_string(a.density) + " is outside (0, 1]");
  const alloy::io::recipe r = alloy::io::load_recipe(a.recipe);
  alloy::io::merge_options o;
  o.exec = threads_option(a.threads);
  const alloy::io::merge_engine e(r, o);
  const auto& plan = e.plan();
  if (!plan.has_base)
    throw alloy::io::recipe_error(r.label() +
                                  ": alloy analyze compares task vectors, so it needs a task-vector method "
                                  "with a base_model (task_arithmetic, ties, dare_ties, ...), not " +
                                  r.method_name);
  print_warnings(plan.warnings);
  const std::size_t n_models = plan.inputs.size() - 1;

  std::printf("alloy analyze: %s: %zu task vectors against %s; trimming at %s\n\n", r.label().c_str(), n_models,
              plan.inputs[0].c_str(),
              a.density != 0 ? ("--density " + std::to_string(a.density)).c_str() : "the recipe's densities");
  for (std::size_t i = 0; i < n_models; ++i) std::printf("  model %zu: %s\n", i + 1, plan.inputs[i + 1].c_str());
  std::size_t width = 6;
  for (const auto& t : plan.tensors) width = std::max(width, t.name.size());
  width = std::min<std::size_t>(width, 56);
  std::printf("\n%-*s %11s  %-*s %-*s %-*s %9s %9s\n", static_cast<int>(width), "tensor", "elements",
              static_cast<int>(9 * n_models), "mean|tau| per model", static_cast<int>(7 * n_models), "nonzero",
              static_cast<int>(6 * n_models), "density", "conflicts", "trimmed");

  std::vector<std::vector<unsigned char>> scratch(n_models + 1);
  alloy::interference total;
  total.abs_sum.assign(n_models, 0);
  total.nonzero.assign(n_models, 0);
  for (const auto& t : plan.tensors) {
    if (t.action != alloy::io::tensor_action::merge) continue;
    const std::size_t n = t.elements;
    // Views of the inputs (misaligned ones copied).
    std::vector<alloy::tensor_view> in;
    for (std::size_t i = 0; i < t.sources.size(); ++i) {
      const auto* s = t.sources[i];
      if (s->is_aligned()) {
        in.push_back(s->view());
      } else {
        scratch[i].resize(s->bytes() + 8);
        std::memcpy(scratch[i].data(), s->data().data(), s->bytes());
        in.push_back({scratch[i].data(), n, s->type()});
      }
    }
    std::vector<double> densities(n_models);
    for (std::size_t i = 0; i < n_models; ++i)
      densities[i] = a.density != 0 ? a.density : t.parameters.models[i].density.value_or(1.0);
    const alloy::interference st =
        alloy::task_vector_interference(in[0], std::span(in).subspan(1), densities, o.exec);
    for (const auto* s : t.sources) s->file->mapping().release(s->data());

    const double nd = n ? static_cast<double>(n) : 1.0;
    std::string means, nonzeros, dens;
    char cell[32];
    for (std::size_t i = 0; i < n_models; ++i) {
      std::snprintf(cell, sizeof cell, "%-9.3g", st.abs_sum[i] / nd);
      means += cell;
      std::snprintf(cell, sizeof cell, "%5.1f%% ", 100 * static_cast<double>(st.nonzero[i]) / nd);
      nonzeros += cell;
      std::snprintf(cell, sizeof cell, "%-6.3g", densities[i]);
      dens += cell;
      total.abs_sum[i] += st.abs_sum[i];
      total.nonzero[i] += st.nonzero[i];
    }
    std::printf("%-*s %11zu  %s%s%s%8.2f%% %8.2f%%\n", static_cast<int>(width), t.name.c_str(), n, means.c_str(),
                nonzeros.c_str(), dens.c_str(), 100 * static_cast<double>(st.conflicts_before) / nd,
                100 * static_cast<double>(st.conflicts_after) / nd);
    total.elements += n;
    total.conflicts_before += st.conflicts_before;
    total.conflicts_after += st.conflicts_after;
  }
  const double nd = total.elements ? static_cast<double>(total.elements) : 1.0;
  std::printf("\noverall: %zu merged tensors, %llu elements\n", plan.merged_tensors,
              static_cast<unsigned long long>(total.elements));
  for (std::size_t i = 0; i < n_models; ++i)
    std::printf("  model %zu: mean |tau| %.4g, nonzero %.2f%%\n", i + 1, total.abs_sum[i] / nd,
                100 * static_cast<double>(total.nonzero[i]) / nd);
  std::printf("  sign conflicts: %.2f%% of positions before trimming, %.2f%% after\n",
              100 * static_cast<double>(total.conflicts_before) / nd,
              100 * static_cast<double>(total.conflicts_after) / nd);
  return exit_ok;
}

}  // namespace

command add_analyze_command(CLI::App& app) {
  auto args = std::make_shared<analyze_args>();
  CLI::App* sub = app.add_subcommand(
      "analyze",
      "Task-vector statistics and sign conflicts before and after trimming (the TIES interference analysis)");
  sub->add_option("RECIPE", args->recipe, "The recipe (its base_model, models and densities)")->required();
  sub->add_option("--density", args->density, "Trim every task vector at this density instead of the recipe's");
  sub->add_option("--threads", args->threads, "Threads (default 0: every core)");
  return {sub, [args] { return run_analyze(*args); }};
}

}  // namespace alloy_cli
