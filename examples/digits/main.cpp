// The digits experiment: Git Re-Basin on real data, end to end with alloy.
//
// Two MLPs (64-256-256-10, ReLU) are trained with Adam from different random
// initialisations (and batch orders) on a fixed train split of the UCI optical digits
// (examples/digits/data). Their hidden units are in unrelated orders, so the straight line
// between them in parameter space crosses a loss barrier. The program then
//   1. aligns model B to model A by weight matching (alloy::align::weight_matching) and,
//      separately, by activation matching on the train inputs (alloy::align::activation_matcher),
//   2. evaluates loss and accuracy on the train and test splits at 25 points of
//      (1 - a) A + a B for the original B and both aligned copies (alloy::lmc::interpolate),
//   3. prints the barriers (both definitions, alloy::lmc::barrier) and writes to --out:
//      model_a.safetensors, model_b.safetensors, model_b_weight_matching.safetensors,
//      model_b_activation_matching.safetensors (PyTorch names and [out, in] layout),
//      spec.yaml (the permutation spec, usable with `alloy align --spec`), curves.csv,
//      barriers.csv and loss.svg (the three loss curves).
//
// It exits non-zero when a result is not what the experiment promises: both models above
// 90% test accuracy, the aligned copies computing the same function as B (equal loss), and
// each alignment removing at least half of the train-loss barrier.
//
// Usage: digits [--out DIR] [--data FILE] [--epochs N] [--seed-a S] [--seed-b S] [--points N]
// Results and the command that reproduces them: docs/results.md.
// The xtensor adapter first: alloy reads the xtensor activation batches with their shapes.
#include <alloy/adapters/xtensor.hpp>

#include "mlp.hpp"
#include "svg_plot.hpp"

#include <alloy/align/activation_matching.hpp>
#include <alloy/align/apply.hpp>
#include <alloy/align/permutation_spec.hpp>
#include <alloy/align/permutation_spec_yaml.hpp>
#include <alloy/align/weight_matching.hpp>
#include <alloy/io/safetensors.hpp>
#include <alloy/lmc/barrier.hpp>
#include <alloy/lmc/interpolation.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#ifndef ALLOY_DIGITS_DATA
#define ALLOY_DIGITS_DATA "examples/digits/data/digits.csv.gz"
#endif

namespace {

struct options {
  std::string out = "digits-out";
  std::string data = ALLOY_DIGITS_DATA;
  std::size_t epochs = 30;
  std::uint64_t seed_a = 1, seed_b = 2;
  std::size_t points = 25;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "digits: " << why << "\n"
            << "usage: digits [--out DIR] [--data FILE] [--epochs N] [--seed-a S] [--seed-b S] [--points N]\n";
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    auto number = [&]() -> std::uint64_t {
      const std::string v = value();
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0') usage(a + ": '" + v + "' is not a number");
      return n;
    };
    if (a == "--out") o.out = value();
    else if (a == "--data") o.data = value();
    else if (a == "--epochs") o.epochs = number();
    else if (a == "--seed-a") o.seed_a = number();
    else if (a == "--seed-b") o.seed_b = number();
    else if (a == "--points") o.points = number();
    else if (a == "-h" || a == "--help") usage("help");
    else usage("unknown argument '" + a + "'");
  }
  if (o.points < 3) usage("--points must be at least 3");
  if (o.epochs == 0) usage("--epochs must be at least 1");
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct method_curve {
  std::string name;   // naive, weight_matching, activation_matching
  std::string label;  // for the plot
  std::string color;
  alloy::lmc::interpolation_curve curve;  // metrics: train loss, train acc, test loss, test acc
};

}  // namespace

int main(int argc, char** argv) try {
  using namespace alloy;
  const options o = parse(argc, argv);
#ifdef OPENBLAS_THREAD
  // The products are small (batches of 32 rows): OpenBLAS's threads cost more than they
  // save, most of all on a shared machine. One thread also fixes the summation order.
  openblas_set_num_threads(1);
#endif
  const auto t0 = std::chrono::steady_clock::now();

  // ---- data and training ------------------------------------------------------------------
  const digits::dataset all = digits::load_digits(o.data);
  const auto parts = digits::split(all, 500, 0);  // not a structured binding: clang 14 cannot capture those
  const digits::dataset& train = parts.first;
  const digits::dataset& test = parts.second;
  std::printf("digits: %zu images, train %zu, test %zu (fixed split, seed 0)\n", all.size(), train.size(), test.size());

  digits::mlp ma = digits::mlp::init(o.seed_a), mb = digits::mlp::init(o.seed_b);
  digits::train(ma, train, {.epochs = o.epochs, .seed = o.seed_a});
  digits::train(mb, train, {.epochs = o.epochs, .seed = o.seed_b});
  const tensor_set a = ma.to_tensor_set(), b = mb.to_tensor_set();
  auto report = [&](const char* name, const tensor_set& m) {
    const auto tr = digits::evaluate(digits::view_of(m), train), te = digits::evaluate(digits::view_of(m), test);
    std::printf("  %-34s train loss %.4f acc %.4f | test loss %.4f acc %.4f\n", name, tr.loss, tr.accuracy, te.loss,
                te.accuracy);
    return std::array{tr, te};
  };
  std::printf("trained 64-256-256-10 MLPs, Adam lr 1e-3, batch 32, %zu epochs (%.1f s)\n", o.epochs, seconds_since(t0));
  const auto ea = report("model A", a);
  const auto eb = report("model B", b);

  // ---- alignment ------------------------------------------------------------------------------
  std::vector<std::string> layers(digits::layer_names.begin(), digits::layer_names.end());
  const align::permutation_spec spec = align::mlp_permutation_spec(layers);

  const auto t1 = std::chrono::steady_clock::now();
  const align::weight_matching_result wm = align::weight_matching(spec, a, b, {.seed = 0});
  const tensor_set b_wm = align::apply_permutations(spec, b, wm.perms);
  std::printf("weight matching: objective %.4f -> %.4f in %zu iterations (%s, %.3f s)\n", wm.objective.front(),
              wm.objective.back(), wm.iterations, wm.converged ? "converged" : "max_iter reached", seconds_since(t1));

  const auto t2 = std::chrono::steady_clock::now();
  align::activation_matcher am;  // Pearson correlation of post-ReLU activations
  {
    const digits::mlp_view va = digits::view_of(a), vb = digits::view_of(b);
    digits::activations act_a, act_b;
    const std::size_t batch = 256;
    for (std::size_t s = 0; s < train.size(); s += batch) {
      const std::size_t rows = std::min(batch, train.size() - s);
      const float* x = train.x.data() + s * digits::n_features;
      digits::forward(va, x, rows, act_a);
      digits::forward(vb, x, rows, act_b);
      am.add("P0", act_a.h[0], act_b.h[0]);
      am.add("P1", act_a.h[1], act_b.h[1]);
    }
  }
  const align::activation_matching_result amr = am.solve(spec);
  const tensor_set b_am = align::apply_permutations(spec, b, amr.perms);
  std::printf("activation matching: mean matched correlation P0 %.3f (identity %.3f), P1 %.3f (identity %.3f) (%.3f s)\n",
              amr.score.at("P0") / digits::n_hidden, amr.identity_score.at("P0") / digits::n_hidden,
              amr.score.at("P1") / digits::n_hidden, amr.identity_score.at("P1") / digits::n_hidden, seconds_since(t2));
  std::printf("  weight-matching objective of the activation-matching permutations: %.4f\n",
              align::alignment_objective(spec, a, b, amr.perms));
  std::size_t agree = 0;
  for (const char* g : {"P0", "P1"})
    for (std::size_t i = 0; i < digits::n_hidden; ++i) agree += wm.perms.at(g)[i] == amr.perms.at(g)[i];
  std::printf("  the two methods agree on %zu of %zu hidden units\n", agree, 2 * digits::n_hidden);

  const auto e_wm = report("model B, weight matching", b_wm);
  const auto e_am = report("model B, activation matching", b_am);

  // ---- interpolation ----------------------------------------------------------------------------
  const auto t3 = std::chrono::steady_clock::now();
  const std::vector<double> alphas = lmc::linspace(o.points);
  auto metric = [&](const tensor_set& theta) {
    const digits::mlp_view v = digits::view_of(theta);
    const auto tr = digits::evaluate(v, train), te = digits::evaluate(v, test);
    return std::array<double, 4>{tr.loss, tr.accuracy, te.loss, te.accuracy};
  };
  std::vector<method_curve> curves{
      {"naive", "no alignment", "#d62728", lmc::interpolate(a, b, alphas, metric)},
      {"weight_matching", "weight matching", "#1f77b4", lmc::interpolate(a, b_wm, alphas, metric)},
      {"activation_matching", "activation matching", "#2ca02c", lmc::interpolate(a, b_am, alphas, metric)},
  };
  std::printf("interpolated %zu points x 3 paths (%.1f s)\n", o.points, seconds_since(t3));

  // ---- barriers -----------------------------------------------------------------------------------
  using lmc::barrier_definition;
  using lmc::metric_sense;
  std::printf("\nbarriers (endpoint_mean: max_a L(a) - (L(0) + L(1))/2; linear: max_a L(a) - ((1-a) L(0) + a L(1)))\n");
  std::printf("%-20s | %-21s | %-21s | %-15s | %s\n", "", "train loss", "test loss", "test accuracy", "midpoint (a = 0.5)");
  std::printf("%-20s | %9s  %9s | %9s  %9s | %6s  %6s  | %s\n", "method", "endp.mean", "linear", "endp.mean", "linear",
              "endp.", "linear", "test loss, test acc");
  std::ofstream bcsv;
  std::filesystem::create_directories(o.out);
  bcsv.open(std::filesystem::path(o.out) / "barriers.csv");
  bcsv << "method,metric,definition,height,alpha\n";
  std::vector<double> train_barrier;
  const std::size_t mid = alphas.size() / 2;
  for (const auto& m : curves) {
    const auto& c = m.curve;
    const auto trm = c.barrier(barrier_definition::endpoint_mean, 0), trl = c.barrier(barrier_definition::linear, 0);
    const auto tem = c.barrier(barrier_definition::endpoint_mean, 2), tel = c.barrier(barrier_definition::linear, 2);
    const auto acm = c.barrier(barrier_definition::endpoint_mean, 3, metric_sense::higher_is_better);
    const auto acl = c.barrier(barrier_definition::linear, 3, metric_sense::higher_is_better);
    std::printf("%-20s | %9.4f  %9.4f | %9.4f  %9.4f | %6.4f  %6.4f  | %.4f, %.4f (a = %.3f)\n", m.name.c_str(), trm.height,
                trl.height, tem.height, tel.height, acm.height, acl.height, c.values[2][mid], c.values[3][mid], c.alpha[mid]);
    train_barrier.push_back(trm.height);
    const std::array<std::pair<const char*, lmc::barrier_result>, 6> rows{
        {{"train_loss,endpoint_mean", trm}, {"train_loss,linear", trl}, {"test_loss,endpoint_mean", tem},
         {"test_loss,linear", tel}, {"test_accuracy,endpoint_mean", acm}, {"test_accuracy,linear", acl}}};
    for (const auto& [what, r] : rows) bcsv << m.name << "," << what << "," << r.height << "," << r.alpha << "\n";
  }
  bcsv.close();
  std::printf("train-loss barrier removed (endpoint_mean): weight matching %.1f%%, activation matching %.1f%%\n",
              100 * (1 - train_barrier[1] / train_barrier[0]), 100 * (1 - train_barrier[2] / train_barrier[0]));

  // ---- files --------------------------------------------------------------------------------------
  const std::filesystem::path out(o.out);
  io::write_safetensors(out / "model_a.safetensors", a, {{"seed", std::to_string(o.seed_a)}});
  io::write_safetensors(out / "model_b.safetensors", b, {{"seed", std::to_string(o.seed_b)}});
  io::write_safetensors(out / "model_b_weight_matching.safetensors", b_wm, {{"aligned_to", "model_a"}});
  io::write_safetensors(out / "model_b_activation_matching.safetensors", b_am, {{"aligned_to", "model_a"}});
  {
    std::ofstream y(out / "spec.yaml");
    y << "# Permutation spec of the digits MLP (nn.Sequential: layers.0, ReLU, layers.2, ReLU, layers.4)\n"
      << align::to_yaml(spec);
  }
  {
    std::ofstream c(out / "curves.csv");
    c << "method,alpha,train_loss,train_accuracy,test_loss,test_accuracy\n";
    c.precision(9);
    for (const auto& m : curves)
      for (std::size_t i = 0; i < m.curve.alpha.size(); ++i)
        c << m.name << "," << m.curve.alpha[i] << "," << m.curve.values[0][i] << "," << m.curve.values[1][i] << ","
          << m.curve.values[2][i] << "," << m.curve.values[3][i] << "\n";
  }
  std::vector<digits::svg_curve> svg;
  for (const auto& m : curves) {
    svg.push_back({m.label + ", test", m.color, false, m.curve.values[2]});
    svg.push_back({m.label + ", train", m.color, true, m.curve.values[0]});
  }
  digits::write_svg((out / "loss.svg").string(), "Digits MLP: loss along (1 - a) A + a B", "cross-entropy loss", alphas,
                    svg);
  std::printf("wrote %s/{model_a,model_b,model_b_weight_matching,model_b_activation_matching}.safetensors, spec.yaml, "
              "curves.csv, barriers.csv, loss.svg (total %.1f s)\n",
              o.out.c_str(), seconds_since(t0));

  // ---- the promises ---------------------------------------------------------------------------------
  int failures = 0;
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::fprintf(stderr, "digits: FAILED: %s\n", what.c_str());
      ++failures;
    }
  };
  expect(ea[1].accuracy > 0.9 && eb[1].accuracy > 0.9, "both models reach 90% test accuracy");
  expect(std::abs(e_wm[0].loss - eb[0].loss) < 1e-4 && std::abs(e_am[0].loss - eb[0].loss) < 1e-4,
         "the aligned copies of B compute B's function (same train loss)");
  expect(train_barrier[0] > 0.05, "a clear train-loss barrier before alignment");
  expect(train_barrier[1] < 0.5 * train_barrier[0], "weight matching removes at least half of the barrier");
  expect(train_barrier[2] < 0.5 * train_barrier[0], "activation matching removes at least half of the barrier");
  return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "digits: %s\n", e.what());
  return 1;
}
