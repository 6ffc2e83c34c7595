// merge_method: fisher through the streaming engine: each model's Fisher file named by
// models[i].alloy.fisher; results equal fisher_merge called directly (tensor level, and the
// model-level function for `normalize`, whose norms span every tensor); a hand-derived case;
// chunks and threads do not change a bit; bad Fisher files are refused before any output.
#include "engine_test_util.hpp"

#include <alloy/methods/fisher.hpp>

#include <cstring>
#include <string>
#include <vector>

using namespace engine_test;

namespace {

// The Fisher of model m: value(i, m + 50)^2 for every floating tensor of `specs`, stored in
// each tensor's own dtype (bf16, f16, f32) unless `type` says otherwise.
tensor_set make_fisher(const std::vector<spec>& specs, int m, std::optional<dtype> type = {}) {
  tensor_set s;
  for (const auto& t : specs) {
    if (!alloy::is_floating(t.type)) continue;
    const dtype d = type.value_or(t.type);
    auto v = s.add(t.name, d, t.shape);
    alloy::visit_floating(d, [&](auto tag) {
      using T = decltype(tag);
      auto* p = static_cast<T*>(v.data);
      for (std::size_t i = 0; i < v.size; ++i) p[i] = T(value(i, m + 50) * value(i, m + 50));
    });
  }
  return s;
}

std::vector<spec> floating_only() {
  auto s = llama_like();
  s.pop_back();  // the integer step counter
  return s;
}

// Models m0..m2 and Fisher files f0.safetensors (a file), f1/ (a folder), f2.safetensors.
struct fisher_fixture : fixture {
  std::vector<tensor_set> fishers;
  explicit fisher_fixture(const std::vector<spec>& specs = llama_like()) : fixture(3, specs) {
    for (int m = 0; m < 3; ++m) fishers.push_back(make_fisher(specs, m, m == 2 ? std::optional(dtype::f32) : std::nullopt));
    alloy::io::write_safetensors(dir / "f0.safetensors", fishers[0]);
    fs::create_directories(dir / "f1");
    alloy::io::write_checkpoint(dir / "f1", fishers[1]);
    alloy::io::write_safetensors(dir / "f2.safetensors", fishers[2]);
  }
  static std::string recipe_text(const std::string& extra = "") {
    return "merge_method: fisher\nmodels:\n"
           "  - model: m0\n    parameters: {weight: 2}\n    alloy: {fisher: f0.safetensors}\n"
           "  - model: m1\n    alloy: {fisher: f1}\n"
           "  - model: m2\n    parameters: {weight: 0.5}\n    alloy:\n      fisher: f2.safetensors\n" +
           extra;
  }
  // No output and no temporary folder next to the inputs.
  bool untouched_inputs() const {
    for (const auto& e : fs::directory_iterator(dir.path())) {
      const auto n = e.path().filename().string();
      if (n == "out" || n.starts_with(".")) return false;  // the output or its temporary folder
    }
    return true;
  }
};

}  // namespace

TEST_CASE("fisher equals fisher_merge on the same data, bf16, f16 and f32 tensors", "[io][engine][fisher]") {
  fisher_fixture f;
  const auto r = f.parse(fisher_fixture::recipe_text("parameters: {eps: 1e-5}\n"));
  CHECK(r.models[1].fisher == (f.dir / "f1").lexically_normal());
  merge_to_folder(r, f.out());
  check_merged(f.out(), f.models[0], {}, [&](const std::string& name, alloy::mutable_tensor_view v) {
    alloy::fisher_options o;
    o.coefficients = {2.0, 1.0, 0.5};
    o.epsilon = 1e-5;
    alloy::fisher_merge(views(f.models, name, 0), views(f.fishers, name, 0), v, o);
  });
  // The stored recipe names the Fisher files by absolute paths.
  const std::string stored = io_test::read_file(f.out() / "alloy_recipe.yaml");
  CHECK(stored.find(fs::absolute(f.dir / "f1").lexically_normal().string()) != std::string::npos);
}

TEST_CASE("fisher with normalize divides by each model's Fisher norm over every tensor", "[io][engine][fisher]") {
  fisher_fixture f(floating_only());
  for (const char* preset : {"mergekit", "paper"}) {
    INFO(preset);
    fs::remove_all(f.out());
    merge_to_folder(f.parse(fisher_fixture::recipe_text(std::string("parameters: {normalize: true}\nalloy: {preset: ") +
                                                        preset + "}\n")),
                    f.out());
    alloy::fisher_options o =
        std::string(preset) == "paper" ? alloy::fisher_options::preset(alloy::preset::paper) : alloy::fisher_options{};
    o.normalize = true;
    o.coefficients = {2.0, 1.0, 0.5};
    const tensor_set want = alloy::fisher_merge(
        {std::cref(f.models[0]), std::cref(f.models[1]), std::cref(f.models[2])},
        {std::cref(f.fishers[0]), std::cref(f.fishers[1]), std::cref(f.fishers[2])}, o);
    check_merged_equals(f.out(), f.models[0], want);
  }
}

TEST_CASE("fisher: chunk size and thread count do not change a bit", "[io][engine][fisher]") {
  const std::vector<spec> specs{{"model.embed_tokens.weight", dtype::bf16, {1200, 512}},
                                {"model.norm.weight", dtype::f32, {512}}};
  fisher_fixture f(specs);
  std::vector<std::vector<std::string>> results;
  for (const unsigned threads : {1u, 3u}) {
    fs::remove_all(f.out());
    merge_options o;
    o.exec = alloy::execution{threads};
    o.chunk_elements = threads == 1 ? std::size_t{1} << 20 : std::size_t{1} << 18;
    merge_to_folder(f.parse(fisher_fixture::recipe_text("parameters: {normalize: true}\n")), f.out(), o);
    results.push_back(merged_bytes(f.out()));
  }
  CHECK(results[0] == results[1]);
}

TEST_CASE("fisher of two models with Fishers 1 and 3 and eps 0 (hand-derived)", "[io][engine][fisher]") {
  // theta = (1 a + 3 b) / 4 with a = (1, 2, 3, 4), b = (5, 6, 7, 8): (4, 5, 6, 7), exact in float.
  scratch_dir dir;
  auto write = [&](const std::string& file, std::vector<float> x) {
    tensor_set s;
    auto v = s.add("w", dtype::f32, {4});
    std::memcpy(v.data, x.data(), 16);
    alloy::io::write_safetensors(dir / file, s);
  };
  write("a.safetensors", {1, 2, 3, 4});
  write("b.safetensors", {5, 6, 7, 8});
  write("fa.safetensors", {1, 1, 1, 1});
  write("fb.safetensors", {3, 3, 3, 3});
  merge_to_folder(parse_recipe("merge_method: fisher\nparameters: {eps: 0}\nmodels:\n"
                               "  - model: a.safetensors\n    alloy: {fisher: fa.safetensors}\n"
                               "  - model: b.safetensors\n    alloy: {fisher: fb.safetensors}\n",
                               dir.path()),
                  dir / "out");
  const auto c = alloy::io::open_checkpoint(dir / "out");
  std::vector<float> got(4);
  std::memcpy(got.data(), c.at("w").data().data(), 16);
  CHECK(got == std::vector<float>{4, 5, 6, 7});
}

TEST_CASE("bad Fisher files and keys are refused before any output, naming the file and tensor",
          "[io][engine][fisher]") {
  fisher_fixture f;
  const std::string up = "model.layers.0.mlp.up_proj.weight";
  auto refuse = [&](alloy::errc code, const std::string& text, std::vector<std::string> parts) {
    const std::string m = error_of([&] { merge_to_folder(f.parse(text), f.out()); }, code);
    for (const auto& p : parts) CHECK_THAT(m, Catch::Contains(p));
    CHECK(f.untouched_inputs());
  };
  auto with_f2 = [&](const std::string& file) {
    std::string t = fisher_fixture::recipe_text();
    t.replace(t.find("f2.safetensors"), 14, file);
    return t;
  };
  SECTION("a missing file") {
    refuse(errc::io_error, with_f2("nowhere.safetensors"), {"nowhere.safetensors", "models[2].alloy.fisher"});
  }
  SECTION("a missing tensor") {
    tensor_set s = make_fisher(llama_like(), 2);
    tensor_set t;
    for (const auto& e : s)
      if (e.name() != up) std::memcpy(t.add(e.name(), e.type(), e.shape()).data, e.view().data, e.bytes());
    alloy::io::write_safetensors(f.dir / "short.safetensors", t);
    refuse(errc::missing_tensor, with_f2("short.safetensors"),
           {"models[2].alloy.fisher 'short.safetensors'", "has no tensor '" + up + "'"});
  }
  SECTION("a wrong shape") {
    auto specs = llama_like();
    specs[1].shape = {24, 8};
    alloy::io::write_safetensors(f.dir / "shape.safetensors", make_fisher(specs, 2));
    refuse(errc::shape_mismatch, with_f2("shape.safetensors"),
           {"models[2].alloy.fisher 'shape.safetensors'", "tensor '" + up + "' has shape [24, 8]"});
  }
  SECTION("an extra tensor") {
    auto specs = llama_like();
    specs.push_back({"model.extra", dtype::f32, {2}});
    alloy::io::write_safetensors(f.dir / "extra.safetensors", make_fisher(specs, 2));
    refuse(errc::missing_tensor, with_f2("extra.safetensors"), {"extra.safetensors", "'model.extra'"});
  }
  SECTION("a negative or non-finite value") {
    tensor_set s = make_fisher(llama_like(), 2, dtype::f32);
    static_cast<float*>(s.at("model.norm.weight").view().data)[3] = -0.5f;
    alloy::io::write_safetensors(f.dir / "neg.safetensors", s);
    refuse(errc::invalid_argument, with_f2("neg.safetensors"),
           {"neg.safetensors", "tensor 'model.norm.weight' has -0.5 at element 3", ">= 0"});
    static_cast<float*>(s.at("model.norm.weight").view().data)[3] = INFINITY;
    alloy::io::write_safetensors(f.dir / "inf.safetensors", s);
    refuse(errc::non_finite, with_f2("inf.safetensors"), {"inf.safetensors", "not a finite number"});
  }
  SECTION("recipe errors") {
    auto recipe_refuse = [&](const std::string& text, const std::string& part) {
      try {
        merge_to_folder(f.parse(text), f.out());
        FAIL("no error");
      } catch (const alloy::io::recipe_error& e) {
        CHECK_THAT(e.what(), Catch::Contains(part));
      }
      CHECK(f.untouched_inputs());
    };
    recipe_refuse("merge_method: fisher\nmodels:\n  - model: m0\n    alloy: {fisher: f0.safetensors}\n  - model: m1\n",
                  "models[1] ('m1') has no alloy.fisher");
    recipe_refuse("merge_method: fisher\nmodels:\n  - model: m0\n    alloy: {fishr: f0.safetensors}\n",
                  "unknown key 'models[0].alloy.fishr'");
    recipe_refuse(fisher_fixture::recipe_text("parameters: {normalize: [true, false]}\n"),
                  "under merge method fisher it applies to the whole model");
    recipe_refuse(fisher_fixture::recipe_text("alloy: {preset: peft}\n"), "peft has no Fisher merging");
    recipe_refuse(with_f2("f2.safetensors").replace(fisher_fixture::recipe_text().find("weight: 0.5"), 11, "weight: -1"),
                  "weight -1 is negative");
    recipe_refuse("merge_method: fisher\nparameters: {weight: 0}\nmodels:\n  - model: m0\n    alloy: {fisher: f0.safetensors}\n",
                  "every model's weight is 0");
  }
}
