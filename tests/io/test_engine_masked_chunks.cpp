// ties, magnitude_prune, dare, breadcrumbs, della and slerp through the streaming engine in
// chunks (io/engine_methods.hpp masked_tensor): a tensor larger than a chunk gets its masks
// (slerp: its angle) over the whole tensor, then merges chunk by chunk into chunk buffers
// (chunks of whole rows where the masks are per row). The checkpoint equals the library's call on whole tensors (whole models
// for the model-wide cuts and votes of preset paper), bit for bit, with the cut's ties ending
// inside a later chunk; and alloy::detail::slice_job merges any range as the whole job does,
// random masks included, and whole rows of della's ranked ones.
#include "engine_test_util.hpp"

#include <alloy/methods/breadcrumbs.hpp>
#include <alloy/methods/dare.hpp>
#include <alloy/methods/della.hpp>
#include <alloy/methods/magnitude_prune.hpp>
#include <alloy/methods/slerp.hpp>
#include <alloy/methods/ties.hpp>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

using namespace engine_test;

namespace {

// Four chunks of parallel_chunk and a tail; large enough for the sampled top-k (64 Ki).
// value() takes 2001 values, so each magnitude is shared by hundreds of entries: the cut
// falls inside a group of ties.
const std::size_t big_n = 3 * alloy::parallel_chunk + 1000;

std::vector<spec> big_model() {
  return {{"w.bf16", dtype::bf16, {big_n}}, {"w.f32", dtype::f32, {big_n}}, {"bias", dtype::f32, {5}}};
}

// The three models' entries of a recipe (weights and densities below).
const std::string three_models =
    "base_model: m0\nmodels:\n"
    "  - model: m1\n    parameters: {weight: 1.0, density: 0.3}\n"
    "  - model: m2\n    parameters: {weight: 0.7, density: 0.55}\n"
    "  - model: m3\n    parameters: {weight: 0.4, density: 0.7}\n";

std::string recipe_for(const char* preset) {
  return std::string("merge_method: ties\nalloy: {preset: ") + preset + "}\n" + three_models;
}

// `text` merged into f.out() on `threads` threads.
void merge_on(fixture& f, const std::string& text, unsigned threads) {
  fs::remove_all(f.out());
  merge_options mo;
  mo.exec = alloy::execution{threads};
  merge_to_folder(f.parse(text), f.out(), mo);
}

const std::vector<double> weights{1.0, 0.7, 0.4};
const std::vector<double> densities{0.3, 0.55, 0.7};

// job's output merged slice by slice, [bounds[k], bounds[k + 1]) each (sorted; empty
// slices skipped) through alloy::detail::slice_job, by merge(slice); its bytes.
template <class Merge>
std::string merged_in_slices(const alloy::detail::sparse_job& job, const std::vector<std::size_t>& bounds,
                             const Merge& merge) {
  const dtype t = job.out.type;
  const std::size_t es = alloy::dtype_size(t);
  std::vector<unsigned char> out(job.out.size * es, 0xff);
  for (std::size_t k = 0; k + 1 < bounds.size(); ++k) {
    const std::size_t first = bounds[k], count = bounds[k + 1] - first;
    if (count == 0) continue;
    const alloy::mutable_tensor_view part{out.data() + first * es, count, t};
    merge(alloy::detail::slice_job(job, first, count, part));
  }
  return bytes_of(out.data(), out.size());
}

}  // namespace

TEST_CASE("ties merged in chunks equals alloy::ties on the whole tensor, every preset", "[io][engine][ties]") {
  fixture f(4, big_model());
  // The test means something only if a kept tie group ends inside a chunk after the first:
  // then a chunk's rule must be the whole tensor's moved by the chunk's start. (bf16 task
  // vectors take few magnitudes; the f32 ones' cuts are mostly unique keys.)
  bool inside_later_chunk = false;
  for (const char* name : {"w.bf16", "w.f32"}) {
    alloy::detail::sparse_job job{name, f.models[0].at(name).view(), views(f.models, name, 1), {nullptr, big_n, dtype::f32}, {}};
    alloy::detail::build_trim_masks("ties", std::span(&job, 1), densities, alloy::trim_scope::per_tensor,
                                    alloy::trim_rule::exact_k, alloy::empty_trim::error, false, {});
    for (const auto& m : job.masks) {
      REQUIRE(m.type == alloy::detail::tv_mask::kind::topk);
      const std::size_t e = m.keep.tie_end;
      inside_later_chunk = inside_later_chunk || (e > alloy::parallel_chunk && e < big_n && e % alloy::parallel_chunk != 0);
    }
  }
  CHECK(inside_later_chunk);

  for (const char* preset : {"mergekit", "peft", "paper"}) {
    INFO("preset " << preset);
    const alloy::preset p = std::string(preset) == "mergekit" ? alloy::preset::mergekit
                            : std::string(preset) == "peft"   ? alloy::preset::peft
                                                              : alloy::preset::paper;
    alloy::ties_options o = alloy::ties_options::preset(p);
    o.densities = densities;
    o.output = alloy::merge_output::merged;  // the recipe's default output, whatever the preset
    for (const unsigned threads : {1u, 2u}) {
      INFO("threads " << threads);
      fs::remove_all(f.out());
      merge_options mo;
      mo.exec = alloy::execution{threads};
      mo.chunk_elements = alloy::parallel_chunk;
      CHECK(merge_engine(f.parse(recipe_for(preset)), mo).plan().masked_chunks);
      merge_to_folder(f.parse(recipe_for(preset)), f.out(), mo);
      if (p == alloy::preset::paper) {  // one cut over the whole model: the model-level call
        check_merged_equals(f.out(), f.models[0],
                            alloy::ties(f.models[0], {f.models[1], f.models[2], f.models[3]}, weights, o));
      } else {  // per tensor, written in the base's dtype (the engine does not promote)
        check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
          alloy::ties(f.models[0].at(name).view(), views(f.models, name, 1), weights, out, o);
        });
      }
    }
  }
}

TEST_CASE("slice_job: any range of a masked job merges to the whole job's bits", "[io][engine][ties]") {
  fixture f(3, big_model());  // the models only; nothing is merged to a folder here
  const std::vector<double> w{0.6, 0.4};
  alloy::ties_options o;
  o.densities = {0.3, 0.6};
  for (const char* name : {"w.bf16", "w.f32"}) {
    INFO(name);
    const dtype t = f.models[0].at(name).type();
    tensor_set out;
    auto whole = out.add("whole", t, {big_n});
    alloy::ties(f.models[0].at(name).view(), views(f.models, name, 1), w, whole, o);

    alloy::detail::sparse_job job{name, f.models[0].at(name).view(), views(f.models, name, 1), {nullptr, big_n, t}, {}};
    const bool majority = alloy::detail::ties_prepare(std::span(&job, 1), w, o);
    REQUIRE(alloy::detail::slice_unit(job) == 1);
    // Ranges that start and end off the tiles and batches, one holding each cut's last tie.
    std::vector<std::size_t> bounds{0, 1, 17, 2049, 100003};
    for (const auto& m : job.masks)
      if (m.keep.tie_end < big_n) {
        bounds.push_back(m.keep.tie_end - 5);
        bounds.push_back(m.keep.tie_end + 3);
      }
    bounds.push_back(big_n);
    std::sort(bounds.begin(), bounds.end());
    const auto sliced = merged_in_slices(job, bounds, [&](const alloy::detail::sparse_job& s) {
      alloy::detail::ties_merge(std::span(&s, 1), w, o, majority);
    });
    CHECK(sliced == bytes_of(whole.data, whole.bytes()));
  }
}

TEST_CASE("magnitude_prune, dare and breadcrumbs merged in chunks equal the library on the whole tensor", "[io][engine]") {
  fixture f(4, big_model());
  const std::string models = "alloy: {seed: 11}\n" + three_models;
  auto base = [&](const std::string& name) { return f.models[0].at(name).view(); };
  auto merge = [&](const std::string& text) {
    CHECK(merge_engine(f.parse(text)).plan().masked_chunks);  // the path under test
    merge_on(f, text, 2);
  };
  SECTION("magnitude_prune with rescale (a norm over the whole tensor)") {
    merge("merge_method: magnitude_prune\nparameters: {rescale: true}\n" + models);
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
      alloy::magnitude_prune_options o;
      o.densities = densities;
      o.rescale = decltype(o.rescale)::l1;
      alloy::magnitude_prune(base(name), views(f.models, name, 1), weights, out, o);
    });
  }
  for (const bool ties_vote : {false, true}) {
    DYNAMIC_SECTION("breadcrumbs, TIES vote " << ties_vote) {
      merge(std::string("merge_method: ") + (ties_vote ? "breadcrumbs_ties" : "breadcrumbs") +
            "\nparameters: {gamma: 0.05}\n" + models);
      check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
        alloy::breadcrumbs_options o;
        o.densities = densities;
        o.gamma = 0.05;
        if (ties_vote)
          alloy::breadcrumbs_ties(base(name), views(f.models, name, 1), weights, out, o);
        else
          alloy::breadcrumbs(base(name), views(f.models, name, 1), weights, out, o);
      });
    }
  }
  for (const bool ties_vote : {false, true}) {
    DYNAMIC_SECTION("dare, TIES vote " << ties_vote) {
      merge(std::string("merge_method: ") + (ties_vote ? "dare_ties" : "dare_linear") + "\n" + models);
      check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
        alloy::dare_options o;
        o.densities = densities;
        o.seed = 11;
        o.tensor_name = name;  // the random draws are keyed by tensor name and element index
        if (ties_vote)
          alloy::dare_ties(base(name), views(f.models, name, 1), weights, out, o);
        else
          alloy::dare_linear(base(name), views(f.models, name, 1), weights, out, o);
      });
    }
  }
}

TEST_CASE("slice_job: a random mask's draws continue at the slice's start", "[io][engine]") {
  fixture f(3, big_model());
  const std::vector<double> w{0.6, 0.4};
  alloy::dare_options o;
  o.densities = {0.3, 0.6};
  o.seed = 5;
  o.tensor_name = "w.bf16";
  const tensor_view b = f.models[0].at("w.bf16").view();
  const auto m = views(f.models, "w.bf16", 1);
  tensor_set out;
  auto whole = out.add("whole", dtype::bf16, {big_n});
  alloy::dare_ties(b, m, w, whole, o);
  alloy::detail::sparse_job job{"w.bf16", b, m, {nullptr, big_n, dtype::bf16}, {}};
  alloy::detail::dare_prepare("dare_ties", std::span(&job, 1), w, o);
  REQUIRE(alloy::detail::slice_unit(job) == 1);
  const auto sliced = merged_in_slices(job, {0, 3, 4099, 300001, big_n}, [&](const alloy::detail::sparse_job& s) {
    alloy::detail::sum_or_vote_merge(std::span(&s, 1), w, o, true, false);
  });
  CHECK(sliced == bytes_of(whole.data, whole.bytes()));
}

// della on the masked path: with mergekit's L1 rescale its norm pass records the keep
// decisions as bits, read in chunks of parallel_chunk; without bits (rescale: false, or
// preset paper's 1 / p) each chunk ranks its own rows, so chunks are whole rows: 127 rows of
// 2049 for the [387, 2049] bf16 tensor (4 chunks, rows that start off the bits' 64-bit
// words), the whole tensor for the 1-D one (one row). Every tensor equals the library's call
// on the whole tensor.
TEST_CASE("della merged in chunks equals the library on the whole tensor, bits or rows", "[io][engine][della]") {
  fixture f(4, {{"w.rows", dtype::bf16, {387, 2049}}, {"w.f32", dtype::f32, {big_n}}, {"bias", dtype::f32, {5}}});
  struct variant {
    const char* tail;
    alloy::preset preset;
    bool rows_rescaled;  // w.rows gets the L1 rescale (and keep bits)
  };
  const variant variants[] = {
      {"alloy: {seed: 3}\nparameters: {epsilon: 0.2}\n", alloy::preset::mergekit, true},
      {"alloy: {seed: 3}\nparameters: {epsilon: 0.2, rescale: [{filter: w.rows, value: false}, {value: true}]}\n",
       alloy::preset::mergekit, false},
      {"alloy: {seed: 3, preset: paper}\nparameters: {epsilon: 0.2}\n", alloy::preset::paper, false},
  };
  for (const variant& v : variants)
    for (const bool ties_vote : {false, true}) {
      const std::string text =
          std::string("merge_method: ") + (ties_vote ? "della" : "della_linear") + "\n" + three_models + v.tail;
      {
        const merge_engine e(f.parse(text));
        CHECK(e.plan().masked_chunks);
        for (const auto& t : e.plan().tensors)
          if (t.name == "w.rows")
            CHECK(alloy::io::detail::masked_chunk(e.source_recipe(), t) ==
                  (v.rows_rescaled ? alloy::parallel_chunk : std::size_t{127 * 2049}));
      }
      for (const unsigned threads : {1u, 2u}) {
        INFO(text << "threads " << threads);
        merge_on(f, text, threads);
        check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
          alloy::della_options o = alloy::della_options::preset(v.preset);
          o.densities = densities;
          o.epsilons = {0.2, 0.2, 0.2};
          o.seed = 3;
          o.tensor_name = name;
          o.shape = f.models[0].at(name).shape();
          if (name == "w.rows" && !v.rows_rescaled && v.preset == alloy::preset::mergekit)
            o.rescale = alloy::della_rescale::none;
          const auto b = f.models[0].at(name).view();
          if (ties_vote)
            alloy::della(b, views(f.models, name, 1), weights, out, o);
          else
            alloy::della_linear(b, views(f.models, name, 1), weights, out, o);
        });
      }
    }
}

// slice_job cuts a job with della's row-ranked masks at whole blocks of rows (slice_unit):
// each slice ranks its rows and draws at its tensor positions.
TEST_CASE("slice_job: della's row-ranked masks cut at whole rows", "[io][engine][della]") {
  fixture f(3, {{"w", dtype::bf16, {40, 1000}}});
  const std::vector<double> w{0.6, 0.4};
  alloy::della_options o = alloy::della_options::preset(alloy::preset::paper);
  o.densities = {0.3, 0.6};
  o.epsilon = 0.1;
  o.seed = 9;
  o.tensor_name = "w";
  o.shape = {40, 1000};
  const tensor_view b = f.models[0].at("w").view();
  const auto m = views(f.models, "w", 1);
  tensor_set out;
  auto whole = out.add("whole", dtype::bf16, {40, 1000});
  alloy::della(b, m, w, whole, o);
  alloy::detail::sparse_job job{"w", b, m, {nullptr, 40000, dtype::bf16}, {}};
  std::vector<std::vector<std::uint64_t>> bits;
  const bool majority = alloy::detail::della_prepare("della", std::span(&job, 1), {{40, 1000}}, w, o, true, bits);
  REQUIRE(bits.empty());  // 1 / p: no norm pass, no bits
  REQUIRE(alloy::detail::slice_unit(job) == 1000);
  const auto sliced = merged_in_slices(job, {0, 1000, 4000, 27000, 40000}, [&](const alloy::detail::sparse_job& s) {
    alloy::detail::sum_or_vote_merge(std::span(&s, 1), w, o, true, majority);
  });
  CHECK(sliced == bytes_of(whole.data, whole.bytes()));
}

// breadcrumbs under preset paper: masks, norms and the merge are per row of the last
// dimension, so each chunk of whole rows (127 rows of 2049; the 1-D tensor is one row, one
// chunk) is merged as a tensor of its own; breadcrumbs_ties' zero vote is the model-wide one
// of the planning pass. The checkpoint equals the library's model-level call.
TEST_CASE("breadcrumbs under paper merged in chunks of whole rows equals the library", "[io][engine][breadcrumbs]") {
  fixture f(4, {{"w.rows", dtype::bf16, {387, 2049}}, {"w.f32", dtype::f32, {big_n}}, {"bias", dtype::f32, {5}}});
  for (const bool ties_vote : {false, true}) {
    const std::string text = std::string("merge_method: ") + (ties_vote ? "breadcrumbs_ties" : "breadcrumbs") +
                             "\nalloy: {preset: paper}\nparameters: {gamma: 0.05}\n" + three_models;
    {
      const merge_engine e(f.parse(text));
      CHECK(e.plan().masked_chunks);
      for (const auto& t : e.plan().tensors)
        if (t.name != "bias")
          CHECK(alloy::io::detail::masked_chunk(e.source_recipe(), t) ==
                (t.name == "w.rows" ? std::size_t{127 * 2049} : big_n));
    }
    alloy::breadcrumbs_options o = alloy::breadcrumbs_options::preset(alloy::preset::paper);
    o.densities = densities;
    o.gamma = 0.05;
    const tensor_set want = ties_vote ? alloy::breadcrumbs_ties(f.models[0], {f.models[1], f.models[2], f.models[3]}, weights, o)
                                      : alloy::breadcrumbs(f.models[0], {f.models[1], f.models[2], f.models[3]}, weights, o);
    for (const unsigned threads : {1u, 2u}) {
      INFO(text << "threads " << threads);
      merge_on(f, text, threads);
      check_merged_equals(f.out(), f.models[0], want);
    }
  }
}

// slerp's angle needs the whole tensor, its interpolation a v0 + b v1 does not: the engine
// computes (a, b) over the whole tensor, then merges it in chunks. A per-layer t (a gradient
// over the layers) and a t of 0 and 1; the checkpoint equals the library per tensor.
TEST_CASE("slerp merged in chunks after its angle equals the library on the whole tensor", "[io][engine][slerp]") {
  fixture f(2, {{"model.layers.0.w", dtype::bf16, {387, 2049}}, {"model.layers.1.w", dtype::f32, {big_n}},
                {"model.layers.1.bias", dtype::f32, {5}}});
  for (const char* t : {"[0.2, 0.7]", "0", "1"}) {
    const std::string text =
        std::string("merge_method: slerp\nbase_model: m0\nmodels:\n  - model: m1\nparameters: {t: ") + t + "}\n";
    CHECK(merge_engine(f.parse(text)).plan().masked_chunks);
    for (const unsigned threads : {1u, 2u}) {
      INFO(text << "threads " << threads);
      merge_on(f, text, threads);
      const merge_engine e(f.parse(text));
      check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
        double tv = 0;
        for (const auto& pt : e.plan().tensors)
          if (pt.name == name) tv = *pt.parameters.slerp_t;
        alloy::slerp(f.models[0].at(name).view(), f.models[1].at(name).view(), tv, out);
      });
    }
  }
}

TEST_CASE("sparsifying methods with a base and slerp take the masked path, linear methods chunk without it", "[io][engine]") {
  fixture f(3, big_model());
  const std::string models =
      "base_model: m0\nmodels:\n"
      "  - model: m1\n    parameters: {weight: 1.0, density: 0.3}\n"
      "  - model: m2\n    parameters: {weight: 0.7, density: 0.55}\n";
  auto plan = [&](const std::string& head) { return merge_engine(f.parse(head + models)).plan(); };
  for (const char* head :
       {"merge_method: breadcrumbs\n", "merge_method: breadcrumbs\nalloy: {preset: paper}\n",
        "merge_method: breadcrumbs_ties\nalloy: {preset: paper}\n", "merge_method: della\n",
        "merge_method: della\nalloy: {preset: paper}\n", "merge_method: ties\n", "merge_method: dare_linear\n"}) {
    INFO(head);
    const auto p = plan(head);
    CHECK(p.whole_tensors);
    CHECK(p.masked_chunks);
  }
  const auto p = plan("merge_method: task_arithmetic\n");
  CHECK_FALSE(p.whole_tensors);
  CHECK_FALSE(p.masked_chunks);
  const std::string stock = "merge_method: model_stock\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\n";
  CHECK_FALSE(merge_engine(f.parse(stock)).plan().masked_chunks);
}
