// Tests for alloy/io/merge_engine.hpp: merges of small checkpoints written with
// io::write_checkpoint equal the library's methods called directly; integer tensors are
// copied; mismatched inputs are refused before any output; an error in the middle of a
// merge leaves no output folder; chunking and threads do not change a bit.
#include "io_test_util.hpp"

#include <alloy/io/merge_engine.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "engine_test_util.hpp"

namespace {

using namespace engine_test;

}  // namespace

TEST_CASE("linear merge equals weighted_average, integer tensors are copied", "[io][merge_engine]") {
  fixture f(3);
  const recipe r = f.parse(R"(
merge_method: linear
models:
  - model: m0
    parameters: {weight: 0.5}
  - model: m1
    parameters: {weight: 0.3}
  - model: m2
    parameters: {weight: 0.2}
)");
  std::vector<std::string> warnings;
  const auto s = merge_to_folder(r, f.out(), {}, &warnings);
  CHECK(s.tensors == 8);
  CHECK(warnings.empty());
  check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
    alloy::weighted_average(views(f.models, name, 0), {0.5, 0.3, 0.2}, out);
  });
  // Side files and the recipe travel with the model.
  CHECK(io_test::read_file(f.out() / "config.json") == R"({"model_type": "llama", "torch_dtype": "float32"})");
  CHECK(fs::exists(f.out() / "tokenizer.json"));
  const recipe back = parse_recipe(io_test::read_file(f.out() / "alloy_recipe.yaml"), "/");
  CHECK(back.models[2].path == (f.dir / "m2").lexically_normal());
  CHECK(f.dir.files() == std::vector<std::string>{"m0", "m1", "m2", "out"});
  // The metadata transformers expects.
  CHECK(alloy::io::open_checkpoint(f.out()).metadata().at("format") == "pt");
}

TEST_CASE("task_arithmetic with a layer gradient equals the library per tensor", "[io][merge_engine]") {
  fixture f(3);
  const recipe r = f.parse(R"(
merge_method: task_arithmetic
base_model: m0
models:
  - model: m1
    parameters: {weight: [1.0, 0.0]}
  - model: m2
    parameters: {weight: -0.5}
parameters: {lambda: 0.8, normalize: false}
out_dtype: bfloat16
)");
  merge_to_folder(r, f.out());
  // Two layers: layer 0 at t = 0 (weight 1), layer 1 at t = 1 (weight 0); the embeddings
  // at t = 0, the norm and lm_head at t = 1.
  check_merged(f.out(), f.models[0], dtype::bf16, [&](const std::string& name, alloy::mutable_tensor_view out) {
    const double t = alloy::io::layer_position(name, 2);
    alloy::task_arithmetic_options o;
    o.lambda = 0.8;
    alloy::task_arithmetic(f.models[0].at(name).view(), views(f.models, name, 1), {1.0 - t, -0.5}, out, o);
  });
  // out_dtype rewrites torch_dtype in config.json.
  CHECK(io_test::read_file(f.out() / "config.json").find("\"torch_dtype\": \"bfloat16\"") != std::string::npos);
}

TEST_CASE("ties merge equals the library per tensor", "[io][merge_engine]") {
  fixture f(4);
  const recipe r = f.parse(R"(
merge_method: ties
base_model: m0
models:
  - model: m0
  - model: m1
    parameters: {weight: 1.0, density: 0.5}
  - model: m2
    parameters: {weight: 0.7, density: [{filter: mlp, value: 0.3}, {value: 0.8}]}
  - model: m3
    parameters: {weight: 0.4, density: 0.6}
parameters: {consensus_method: count}
)");
  merge_to_folder(r, f.out());
  check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
    alloy::ties_options o;
    o.densities = {0.5, name.find("mlp") != std::string::npos ? 0.3 : 0.8, 0.6};
    o.consensus_method = alloy::consensus::count;
    alloy::ties(f.models[0].at(name).view(), views(f.models, name, 1), {1.0, 0.7, 0.4}, out, o);
  });
}

TEST_CASE("magnitude_prune, dare, breadcrumbs and della equal the library per tensor", "[io][merge_engine]") {
  fixture f(3);
  const std::string models = R"(
base_model: m0
models:
  - model: m1
    parameters: {weight: 1.0, density: 0.6}
  - model: m2
    parameters: {weight: 0.5, density: 0.4}
alloy: {seed: 7}
)";
  const std::vector<double> w{1.0, 0.5}, d{0.6, 0.4};
  auto base = [&](const std::string& name) { return f.models[0].at(name).view(); };

  SECTION("magnitude_prune with rescale") {
    merge_to_folder(f.parse("merge_method: magnitude_prune\nparameters: {rescale: true, lambda: 2}\n" + models),
                    f.out());
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
      alloy::magnitude_prune_options o;
      o.densities = d;
      o.rescale = decltype(o.rescale)::l1;
      o.lambda = 2;
      alloy::magnitude_prune(base(name), views(f.models, name, 1), w, out, o);
    });
  }
  SECTION("dare_ties keyed by tensor name and seed, as the model-level call") {
    merge_to_folder(f.parse("merge_method: dare_ties\n" + models), f.out());
    tensor_set base_set, m1, m2;
    for (const auto& e : f.models[0]) {
      if (!alloy::is_floating(e.type())) continue;
      base_set.add(e.name(), e.type(), e.shape(), alloy::no_init);
      std::memcpy(base_set.at(e.name()).view().data, e.view().data, e.bytes());
      for (auto [dst, src] : {std::pair{&m1, &f.models[1]}, std::pair{&m2, &f.models[2]}}) {
        dst->add(e.name(), e.type(), e.shape(), alloy::no_init);
        std::memcpy(dst->at(e.name()).view().data, src->at(e.name()).view().data, e.bytes());
      }
    }
    alloy::dare_options o;
    o.densities = d;
    o.seed = 7;
    const tensor_set expected = alloy::dare_ties(base_set, {m1, m2}, w, o);
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
      std::memcpy(out.data, expected.at(name).view().data, out.bytes());
    });
  }
  SECTION("breadcrumbs_ties with gamma") {
    merge_to_folder(f.parse("merge_method: breadcrumbs_ties\nparameters: {gamma: 0.1, normalize: true}\n" + models),
                    f.out());
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
      alloy::breadcrumbs_options o;
      o.densities = d;
      o.gammas = {0.1, 0.1};
      o.denominator = alloy::ties_denominator::weight_sum;
      alloy::breadcrumbs_ties(base(name), views(f.models, name, 1), w, out, o);
    });
  }
  SECTION("della_linear with its rows from the shape") {
    merge_to_folder(f.parse("merge_method: della_linear\nparameters: {epsilon: 0.1}\n" + models), f.out());
    check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
      alloy::della_options o;
      o.densities = d;
      o.epsilons = {0.1, 0.1};
      o.seed = 7;
      o.tensor_name = name;
      o.shape = f.models[0].at(name).shape();
      alloy::della_linear(base(name), views(f.models, name, 1), w, out, o);
    });
  }
}

TEST_CASE("slerp with a per-filter t equals the library per tensor", "[io][merge_engine]") {
  fixture f(2);
  merge_to_folder(f.parse(R"(
merge_method: slerp
base_model: m0
models:
  - model: m0
  - model: m1
parameters:
  t:
    - filter: mlp
      value: [0.2, 0.9]
    - value: 0.5
)"),
                  f.out());
  check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
    const double t = name.find("mlp") != std::string::npos ? 0.2 + 0.7 * alloy::io::layer_position(name, 2) : 0.5;
    alloy::slerp(f.models[0].at(name).view(), f.models[1].at(name).view(), t, out);
  });
}

TEST_CASE("passthrough copies one model, scaled when asked", "[io][merge_engine]") {
  fixture f(2);
  merge_to_folder(f.parse("merge_method: passthrough\nmodels:\n  - model: m1\n"), f.out());
  check_merged(f.out(), f.models[1], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
    std::memcpy(out.data, f.models[1].at(name).view().data, out.bytes());
  });
  fs::remove_all(f.out());
  merge_to_folder(f.parse("merge_method: passthrough\nmodels:\n  - model: m1\n    parameters: {scale: 2}\n"), f.out());
  check_merged(f.out(), f.models[1], {}, [&](const std::string& name, alloy::mutable_tensor_view out) {
    alloy::weighted_average({f.models[1].at(name).view()}, {2.0}, out, {.normalize = false});
  });
}

TEST_CASE("chunks, threads and shards do not change the result", "[io][merge_engine]") {
  // Tensors larger than a chunk (2^18 elements), split into several work items.
  const std::vector<spec> big{{"a.layers.0.w", dtype::bf16, {600, 1000}},
                              {"a.layers.1.w", dtype::f32, {300000}},
                              {"a.norm", dtype::f32, {7}},
                              {"ids", dtype::i32, {3, 5}}};
  fixture f(3, big);
  for (const char* method : {"task_arithmetic", "ties"}) {
    INFO(method);
    const recipe r = f.parse(std::string("merge_method: ") + method + R"(
base_model: m0
models:
  - model: m1
    parameters: {weight: 0.6, density: 0.3}
  - model: m2
    parameters: {weight: 0.4, density: 0.5}
)");
    merge_options one;
    one.exec = {1};
    merge_to_folder(r, f.dir / "one", one);
    merge_options many;
    many.exec = {3};
    many.chunk_elements = alloy::parallel_chunk;
    many.max_shard_size = 1'000'000;  // three shards and an index
    std::size_t calls = 0;
    many.on_progress = [&](const alloy::io::merge_progress& p) {
      ++calls;
      CHECK(p.tensors_total == 4);
      CHECK(p.bytes_done <= p.bytes_total);
    };
    const auto s = merge_to_folder(r, f.dir / "many", many);
    CHECK(s.shards == 3);
    // One call per work item: 3 + 2 chunks of the large tensors (ties too: masks over the
    // whole tensor, then chunks), the norm, the integer copy.
    CHECK(calls == 7u);
    CHECK(fs::exists(f.dir / "many" / "model.safetensors.index.json"));
    const auto a = alloy::io::open_checkpoint(f.dir / "one");
    const auto b = alloy::io::open_checkpoint(f.dir / "many");
    REQUIRE(a.size() == b.size());
    for (const auto& t : a.tensors()) {
      INFO(t.name());
      CHECK(bytes_of(t.data().data(), t.bytes()) == bytes_of(b.at(t.name()).data().data(), t.bytes()));
    }
    CHECK(bytes_of(a.at("ids").data().data(), 60) == bytes_of(f.models[0].at("ids").view().data, 60));
    fs::remove_all(f.dir / "one");
    fs::remove_all(f.dir / "many");
  }
}

TEST_CASE("a misaligned input tensor is copied and merged like an aligned one", "[io][merge_engine]") {
  scratch_dir dir;
  // A hand-built file: a 1-byte U8 tensor first puts the F32 tensor at an odd offset.
  auto file = [](float scale) {
    std::string data(1, '\x07');
    for (int i = 0; i < 4; ++i) {
      const float v = scale * static_cast<float>(i + 1);
      data.append(reinterpret_cast<const char*>(&v), 4);
    }
    const std::string header = R"({"flag":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("w":{"dtype":"F32","shape":[4],"data_offsets":[1,17]}})";
    return io_test::raw_file(header, data);
  };
  io_test::write_file(dir / "base.safetensors", file(1.0f));
  io_test::write_file(dir / "a.safetensors", file(3.0f));
  const recipe r = parse_recipe(
      "merge_method: task_arithmetic\nbase_model: base.safetensors\n"
      "models:\n  - model: a.safetensors\n    parameters: {weight: 0.5}\n",
      dir.path());
  merge_engine e(r);
  REQUIRE_FALSE(e.inputs()[0].ckpt.is_aligned("w"));
  merge_to_folder(r, dir / "out");
  const auto c = alloy::io::open_checkpoint(dir / "out");
  const auto w = c.file(0).values<float>("w");  // base + 0.5 (3x - x) = 2x
  CHECK(std::vector<float>(w.begin(), w.end()) == std::vector<float>{2, 4, 6, 8});
  CHECK(*reinterpret_cast<const unsigned char*>(c.bytes("flag").data()) == 7);
}

TEST_CASE("mismatched inputs are refused before any output", "[io][merge_engine]") {
  const std::string ta =
      "merge_method: task_arithmetic\nbase_model: m0\nmodels:\n  - model: m1\n"
      "    parameters: {weight: 1}\n";
  auto refuse = [&](std::vector<spec> other, errc code, const std::string& part) {
    fixture f(1);
    fs::create_directories(f.dir / "m1");
    alloy::io::write_checkpoint(f.dir / "m1", make_model(other, 1));
    const std::string msg = error_of([&] { merge_to_folder(f.parse(ta), f.out()); }, code);
    CHECK(msg.find(part) != std::string::npos);
    CHECK(f.untouched());
  };
  auto specs = llama_like();
  SECTION("a missing tensor") {
    specs.pop_back();
    refuse(specs, errc::missing_tensor, "tensor 'step' is in base_model 'm0' but not in models[0] 'm1'");
  }
  SECTION("an extra tensor") {
    specs.push_back({"extra", dtype::f32, {2}});
    refuse(specs, errc::missing_tensor, "tensor 'extra' is in models[0] 'm1' but not in base_model 'm0'");
  }
  SECTION("a shape") {
    specs[2].shape = {9};
    refuse(specs, errc::shape_mismatch, "has shape [9] in models[0] 'm1' but [8] in base_model 'm0'");
  }
  SECTION("floating against integer") {
    specs[2].type = dtype::i32;
    refuse(specs, errc::dtype_mismatch, "F32 in base_model 'm0', I32 in models[0] 'm1'");
  }
  SECTION("two integer dtypes") {
    specs.back().type = dtype::i32;
    refuse(specs, errc::dtype_mismatch, "integer and bool tensors are copied unmerged and must agree");
  }
  SECTION("a missing input") {
    fixture f(1);
    const std::string msg = error_of([&] { merge_to_folder(f.parse(ta), f.out()); }, errc::io_error);
    CHECK(msg.find("models[0] 'm1'") != std::string::npos);
    CHECK(f.untouched());
  }
}

TEST_CASE("floating dtypes may differ between inputs, with a warning", "[io][merge_engine]") {
  fixture f(1);
  auto specs = llama_like();
  specs[1].type = dtype::f32;  // bf16 in the base
  fs::create_directories(f.dir / "m1");
  alloy::io::write_checkpoint(f.dir / "m1", make_model(specs, 1));
  merge_engine e(
      f.parse("merge_method: task_arithmetic\nbase_model: m0\nmodels:\n  - model: m1\n"
              "    parameters: {weight: 1}\n"));
  REQUIRE(e.plan().warnings.size() == 1);
  CHECK(e.plan().warnings[0].find("floating dtypes differ") != std::string::npos);
  CHECK(e.plan().tensors[1].out_type == dtype::bf16);  // the base's
}

TEST_CASE("recipe problems found by the engine are recipe errors before any output", "[io][merge_engine]") {
  fixture f(2);
  auto refuse = [&](const std::string& text, const std::string& part) {
    try {
      merge_to_folder(f.parse(text), f.out());
      FAIL("no error");
    } catch (const alloy::io::recipe_error& e) {
      CHECK(std::string(e.what()).find(part) != std::string::npos);
    }
    CHECK(f.untouched());
  };
  const std::string pair = "base_model: m0\nmodels:\n  - model: m0\n  - model: m1\n";
  refuse("merge_method: nuslerp\nparameters: {weight: 1}\n" + pair,
         "merge method nuslerp interpolates between two models besides the base_model, got 1");
  refuse("merge_method: model_stock\n" + pair, "merge method model_stock needs at least two models besides the base_model");
  refuse("merge_method: model_stock\nalloy: {preset: peft}\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m0\n"
         "  - model: m1\n",
         "alloy.preset peft: model_stock: peft has no Model Stock merge");
  refuse("merge_method: breadcrumbs_ties\nalloy: {preset: peft}\nparameters: {weight: 1, density: 0.5}\n" + pair,
         "alloy.preset peft");
  refuse("merge_method: della\nalloy: {preset: peft}\nparameters: {weight: 1, density: 0.5}\n" + pair,
         "alloy.preset peft");
  refuse("merge_method: ties\nparameters: {weight: 1, density: 0.5, rescale: true}\n" + pair, "has no rescale");
  // 0.05 of the 8-element norms keeps no entry: ties refuses that (as mergekit does).
  refuse("merge_method: ties\nparameters: {weight: 1, density: 0.05}\n" + pair,
         "tensor 'model.layers.0.input_layernorm.weight' (8 elements), models[1] ('m1'): density 0.05 keeps no entry");
  refuse("merge_method: della\nparameters: {weight: 1, density: 0.1, epsilon: 0.2}\n" + pair,
         "density 0.1 and epsilon 0.2");
  refuse(
      "merge_method: linear\nmodels:\n  - model: m0\n    parameters: {weight: 1}\n  - model: m1\n"
      "    parameters: {weight: -1}\n",
      "the weights sum to 0");
}

TEST_CASE("an error in the middle of a merge leaves no output folder", "[io][merge_engine]") {
  fixture f(3);
  for (const char* method : {"task_arithmetic", "ties"}) {
    INFO(method);
    merge_options o;
    std::atomic<std::size_t> items{0};  // progress may be reported from several threads
    o.on_progress = [&](const alloy::io::merge_progress&) {
      if (++items == 3) throw alloy::error(errc::io_error, "disk full (simulated)");
    };
    const recipe r = f.parse(std::string("merge_method: ") + method +
                             "\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\n"
                             "parameters: {weight: 0.5, density: 0.5}\n");
    const std::string msg = error_of([&] { merge_to_folder(r, f.out(), o); }, errc::io_error);
    CHECK(msg == "disk full (simulated)");
    CHECK(items >= 3);  // workers already running may report once more before they stop
    CHECK(f.untouched());
  }
}

TEST_CASE("the output folder must be new or empty, its parent must exist", "[io][merge_engine]") {
  fixture f(2);
  const recipe r = f.parse("merge_method: linear\nmodels:\n  - model: m0\n  - model: m1\nparameters: {weight: 1}\n");
  fs::create_directories(f.out());
  merge_to_folder(r, f.out().string() + "/");  // an empty folder is replaced
  CHECK(fs::exists(f.out() / "model.safetensors"));
  std::string msg = error_of([&] { merge_to_folder(r, f.out()); }, errc::io_error);
  CHECK(msg.find("already exists and is not empty") != std::string::npos);
  msg = error_of([&] { merge_to_folder(r, f.dir / "no" / "such" / "out"); }, errc::io_error);
  CHECK(msg.find("does not exist") != std::string::npos);
}

TEST_CASE("the plan", "[io][merge_engine]") {
  fixture f(3);
  merge_options o;
  o.exec = {2};
  const merge_engine e(f.parse("merge_method: ties\nbase_model: m0\nmodels:\n  - model: m1\n  - model: m2\n"
                               "parameters: {weight: 0.5, density: 0.5}\nout_dtype: float32\n"),
                       o);
  const auto& p = e.plan();
  CHECK(p.method == "ties");
  CHECK(p.has_base);
  CHECK(p.inputs == std::vector<std::string>{"base_model 'm0'", "models[0] 'm1'", "models[1] 'm2'"});
  CHECK(p.tensors.size() == 8);
  CHECK(p.merged_tensors == 7);
  CHECK(p.copied_tensors == 1);
  CHECK(p.n_layers == 2);
  CHECK(p.whole_tensors);
  CHECK(p.masked_chunks);  // ties: masks over a whole tensor, then chunks
  CHECK(p.threads == 2);
  CHECK(p.shards == 1);
  std::uint64_t in = 0, out = 0;
  for (const auto& t : f.models[0]) {
    in += alloy::is_floating(t.type()) ? 3 * t.bytes() : t.bytes();
    out += alloy::is_floating(t.type()) ? t.size() * 4 : t.bytes();
  }
  CHECK(p.input_bytes == in);
  CHECK(p.output_bytes == out);
  CHECK(p.largest_tensor_bytes == 8 * 24 * 4);              // up_proj as float32
  CHECK(p.memory_estimate >= 3 * 8 * 24 * 2 + 8 * 24 * 4);  // three bf16 inputs and the output
  CHECK(p.tensors[1].parameters.models[1].density == 0.5);
  CHECK(e.side_file_folder() == (f.dir / "m0").lexically_normal());
}

// The memory estimate adds della's keep bits (n / 8 bytes per model) only where the engine
// makes them: a norm rescale (mergekit's default L1), not under preset paper (1/p scaling)
// or a tensor's rescale: false. The fixture's tensors are too small for the bits to move
// the estimate, so the decision is checked on every merged tensor of each plan.
TEST_CASE("the plan counts della's keep bits only where della makes them", "[io][merge_engine]") {
  fixture f(3);
  const std::string models = "base_model: m0\nmodels:\n  - model: m1\n  - model: m2\n";
  auto bits = [&](const std::string& text) {
    const merge_engine e(f.parse(text + models));
    std::size_t with = 0, merged = 0;
    for (const auto& t : e.plan().tensors) {
      if (t.action != alloy::io::tensor_action::merge) continue;
      ++merged;
      with += alloy::io::detail::della_keep_bits(e.source_recipe(), t);
    }
    REQUIRE(merged == 7);
    return with;
  };
  const std::string p = "parameters: {weight: 0.5, density: 0.5, epsilon: 0.1";
  CHECK(bits("merge_method: della\n" + p + "}\n") == 7);  // mergekit: rescale L1
  CHECK(bits("merge_method: della_linear\n" + p + "}\n") == 7);
  CHECK(bits("merge_method: della\n" + p + ", rescale: true}\n") == 7);
  CHECK(bits("merge_method: della\n" + p + ", rescale: false}\n") == 0);
  CHECK(bits("merge_method: della\n" + p + "}\nalloy: {preset: paper}\n") == 0);
  // rescale: false for the two MLP tensors only (a filter): the other 5 keep bits.
  CHECK(bits("merge_method: della\n" + p + ", rescale: [{filter: mlp, value: false}, {value: true}]}\n") == 5);
  CHECK(bits("merge_method: ties\nparameters: {weight: 0.5, density: 0.5}\n") == 0);
}

TEST_CASE("aligned_buffer: alignment, kept capacity, a failed growth leaves it usable", "[io][merge_engine]") {
  using alloy::io::detail::aligned_buffer;
  aligned_buffer b;
  std::byte* small = b.get(100);
  CHECK(reinterpret_cast<std::uintptr_t>(small) % 64 == 0);
  CHECK(b.capacity() == 100);
  CHECK(b.get(60) == small);  // within the capacity: the same memory
  std::byte* big = b.get(1 << 20);
  CHECK(reinterpret_cast<std::uintptr_t>(big) % 64 == 0);
  CHECK(b.capacity() == 1 << 20);
  std::memset(big, 1, b.capacity());
  // A size no allocation can meet throws, and leaves an empty buffer rather than a stale
  // capacity over freed memory (which the next smaller get would have handed out).
  CHECK_THROWS_AS(b.get(std::numeric_limits<std::size_t>::max() - 5), std::bad_alloc);
  CHECK(b.capacity() == 0);
  std::byte* again = b.get(64);
  REQUIRE(again != nullptr);
  std::memset(again, 2, 64);
  CHECK(b.capacity() == 64);
}

TEST_CASE("release_behind: drops the finished prefix in steps, the rest at the tensor's end", "[io][merge_engine]") {
  // Tensor 0: 10 elements in items of 3 (0, 3, 6, 9), step 5. Tensor 1: 3 elements, one item.
  alloy::io::detail::release_behind rb(2);
  using r = alloy::io::detail::release_behind::range;
  auto same = [](r a, std::size_t first, std::size_t count, bool end) {
    return a.first == first && a.count == count && a.end == end;
  };
  CHECK(same(rb.finished(0, 10, 3, 3, 5), 0, 0, false));  // item 1 before item 0: no prefix yet
  CHECK(same(rb.finished(1, 3, 3, 0, 5), 0, 3, true));    // tensor 1 is done at once
  CHECK(same(rb.finished(0, 10, 3, 0, 5), 0, 6, false));  // prefix 6 >= step 5: drop [0, 6)
  CHECK(same(rb.finished(0, 10, 3, 9, 5), 0, 0, false));  // item 3 waits for item 2
  CHECK(same(rb.finished(0, 10, 3, 6, 5), 6, 4, true));   // all done: the rest, [6, 10)
  // A tensor of 0 elements has one (empty) item.
  alloy::io::detail::release_behind empty(1);
  CHECK(same(empty.finished(0, 0, 3, 0, 5), 0, 0, true));
}
