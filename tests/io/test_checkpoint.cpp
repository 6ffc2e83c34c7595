// Tests for alloy/io/checkpoint.hpp: sharded writing and reading, folder and index lookup,
// and every inconsistency between an index and its shards.
#include "io_test_util.hpp"

#include <alloy/core/tensor_set.hpp>
#include <alloy/io/checkpoint.hpp>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace {

using alloy::dtype;
using alloy::errc;
using alloy::tensor_set;
using alloy::io::checkpoint_writer;
using alloy::io::open_checkpoint;
using io_test::error_of;
using io_test::scratch_dir;

// Six tensors: 64, 64, 600, 8, 8 and 2 bytes.
tensor_set sample() {
  tensor_set s;
  unsigned seed = 0;
  auto add = [&](const std::string& name, dtype t, std::vector<std::size_t> shape) {
    auto v = s.add(name, t, std::move(shape));
    auto* p = static_cast<unsigned char*>(v.data);
    for (std::size_t i = 0; i < v.bytes(); ++i) p[i] = static_cast<unsigned char>(i * 13 + seed * 59 + 1);
    ++seed;
  };
  add("embed.weight", dtype::f32, {4, 4});
  add("layers.0.w", dtype::bf16, {32});
  add("layers.1.w", dtype::f64, {25, 3});
  add("step", dtype::i64, {});
  add("norm", dtype::f16, {4});
  add("mask", dtype::boolean, {2});
  return s;
}

std::string bytes_string(std::span<const std::byte> s) { return {reinterpret_cast<const char*>(s.data()), s.size()}; }

void check_same(const alloy::io::checkpoint& c, const tensor_set& s) {
  REQUIRE(c.size() == s.size());
  for (const auto& e : s) {
    INFO("tensor " << e.name());
    const auto& t = c.at(e.name());
    CHECK(t.type() == e.type());
    CHECK(t.shape() == e.shape());
    CHECK(t.is_aligned());
    CHECK(bytes_string(t.data()) ==
          std::string(static_cast<const char*>(e.view().data), e.bytes()));
  }
}

// Writes an index by hand, and shards holding two-float tensors.
void write_index(const io_test::fs::path& folder, const std::string& weight_map_json) {
  io_test::write_file(folder / "model.safetensors.index.json",
                      R"({"metadata":{"total_size":8},"weight_map":)" + weight_map_json + "}");
}
void write_shard(const io_test::fs::path& path, const std::vector<std::string>& names) {
  tensor_set s;
  for (const auto& n : names) s.add(n, std::vector<float>{1.0f, 2.0f});
  alloy::io::write_safetensors(path, s);
}

}  // namespace

TEST_CASE("sharded checkpoints round-trip with a tiny shard size", "[io][checkpoint]") {
  scratch_dir dir;
  const tensor_set s = sample();
  // 100-byte shards: {embed 64}, {layers.0 64}, {layers.1 600}, {step 8, norm 8, mask 2}.
  alloy::io::write_checkpoint(dir.path(), s, {{"format", "pt"}}, 100);
  CHECK(dir.files() == std::vector<std::string>{"model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                                                "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                                                "model.safetensors.index.json"});
  const auto index = nlohmann::json::parse(io_test::read_file(dir / "model.safetensors.index.json"));
  CHECK(index["metadata"]["total_size"] == 64 + 64 + 600 + 8 + 8 + 2);
  CHECK(index["weight_map"].size() == 6);
  CHECK(index["weight_map"]["layers.1.w"] == "model-00003-of-00004.safetensors");
  CHECK(index["weight_map"]["mask"] == "model-00004-of-00004.safetensors");

  for (const auto& p : {dir.path(), dir / "model.safetensors.index.json"}) {
    const auto c = open_checkpoint(p);
    CHECK(c.sharded());
    CHECK(c.path() == p);
    CHECK(c.index_path() == dir / "model.safetensors.index.json");
    CHECK(c.file_count() == 4);
    CHECK(c.total_bytes() == 746);
    CHECK(c.metadata().at("format") == "pt");
    CHECK(c.all_aligned());
    check_same(c, s);
    // Shard order, then header order.
    std::vector<std::string> order;
    for (const auto& t : c.tensors()) order.push_back(t.name());
    CHECK(order == std::vector<std::string>{"embed.weight", "layers.0.w", "layers.1.w", "step", "norm", "mask"});
    CHECK(&c.file(2) == c.at("layers.1.w").file);
    CHECK(c.find("nope") == nullptr);
    CHECK(error_of([&] { (void)c.view("nope"); }, errc::missing_tensor).find("'nope'") != std::string::npos);
    const tensor_set back = c.to_tensor_set();
    CHECK(back.size() == 6);
  }
}

TEST_CASE("one shard is written as model.safetensors without an index", "[io][checkpoint]") {
  scratch_dir dir;
  const tensor_set s = sample();
  alloy::io::write_checkpoint(dir.path(), s);  // default 5 GB
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors"});
  for (const auto& p : {dir.path(), dir / "model.safetensors"}) {
    const auto c = open_checkpoint(p);
    CHECK_FALSE(c.sharded());
    CHECK(c.index_path().empty());
    CHECK(c.file_count() == 1);
    check_same(c, s);
  }
  // A shard size equal to the total still makes one file; one byte less makes two.
  scratch_dir d2;
  checkpoint_writer w(d2.path(), {{"a", dtype::f32, {2}}, {"b", dtype::f32, {2}}}, {}, 16);
  CHECK(w.shard_count() == 1);
  checkpoint_writer w2(d2.path(), {{"a", dtype::f32, {2}}, {"b", dtype::f32, {2}}}, {}, 15);
  CHECK(w2.shard_count() == 2);
  CHECK(w2.shard_of("b") == 1);
  CHECK(w2.index_path() == d2 / "model.safetensors.index.json");
}

TEST_CASE("an uncommitted or incomplete checkpoint writer publishes nothing", "[io][checkpoint]") {
  scratch_dir dir;
  std::vector<float> v(4, 1.0f);
  {
    checkpoint_writer w(dir.path(), {{"a", dtype::f32, {4}}, {"b", dtype::f32, {4}}}, {}, 16);
    CHECK(w.shard_count() == 2);
    w.write("a", alloy::tensor_view(v));
    CHECK(error_of([&] { w.commit(); }, errc::invalid_argument).find("'b' received 0 of its 16 bytes") != std::string::npos);
    CHECK(dir.files().size() == 2);  // the two temporaries, no final name
    for (const auto& f : dir.files()) CHECK(f.find(".tmp-") != std::string::npos);
  }
  CHECK(dir.files().empty());
  CHECK(error_of([&] { checkpoint_writer w(dir.path(), {{"a", dtype::f32, {4}}}, {}, 0); }, errc::invalid_argument)
            .find("maximum shard size is 0") != std::string::npos);
  CHECK(error_of([&] { checkpoint_writer w(dir.path(), {{"a", dtype::f32, {4}}, {"a", dtype::f32, {4}}}); },
                 errc::duplicate_name)
            .find("'a'") != std::string::npos);
  CHECK(dir.files().empty());
}

TEST_CASE("a failure while publishing removes the shards already renamed", "[io][checkpoint]") {
  scratch_dir dir;
  // A folder where the index should go makes its final rename fail.
  io_test::fs::create_directory(dir / "model.safetensors.index.json");
  std::vector<float> v(4, 1.0f);
  checkpoint_writer w(dir.path(), {{"a", dtype::f32, {4}}, {"b", dtype::f32, {4}}}, {}, 16);
  w.write("a", alloy::tensor_view(v));
  w.write("b", alloy::tensor_view(v));
  CHECK(error_of([&] { w.commit(); }, errc::io_error).find("cannot rename") != std::string::npos);
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors.index.json"});
}

TEST_CASE("an index naming a tensor its shard lacks is refused", "[io][checkpoint]") {
  scratch_dir dir;
  write_shard(dir / "s1.safetensors", {"a"});
  write_index(dir.path(), R"({"a":"s1.safetensors","ghost":"s1.safetensors"})");
  const std::string msg = error_of([&] { open_checkpoint(dir.path()); }, errc::malformed_file);
  CHECK(msg.find("model.safetensors.index.json") != std::string::npos);
  CHECK(msg.find("tensor 'ghost' is listed in shard 's1.safetensors', which does not hold it") != std::string::npos);
}

TEST_CASE("index and shards must agree", "[io][checkpoint]") {
  scratch_dir dir;
  write_shard(dir / "s1.safetensors", {"a", "b"});
  write_shard(dir / "s2.safetensors", {"b", "c"});
  auto problem = [&](const std::string& weight_map) {
    write_index(dir.path(), weight_map);
    return error_of([&] { open_checkpoint(dir.path()); }, errc::malformed_file);
  };
  CHECK(problem(R"({"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"})")
            .find("tensor 'b' appears in two shards, 's1.safetensors' and 's2.safetensors'") != std::string::npos);
  write_shard(dir / "s2.safetensors", {"c"});
  CHECK(problem(R"({"a":"s1.safetensors","c":"s2.safetensors"})")
            .find("shard 's1.safetensors' holds tensor 'b', which the weight_map does not list") != std::string::npos);
  CHECK(problem(R"({"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"})")
            .find("tensor 'b' is listed in shard 's2.safetensors' but found in shard 's1.safetensors'") != std::string::npos);
  CHECK(problem(R"({"a":"s1.safetensors","a":"s1.safetensors"})").find("key 'a' appears twice") != std::string::npos);
  CHECK(problem(R"({"a":"../s1.safetensors"})").find("not a relative path inside") != std::string::npos);
  CHECK(problem(R"({"a":"/etc/passwd"})").find("not a relative path inside") != std::string::npos);
  CHECK(problem(R"({"a":1})").find("tensor 'a': its shard is not a string") != std::string::npos);
  CHECK(problem(R"([])").find("\"weight_map\" is not an object") != std::string::npos);
  io_test::write_file(dir / "model.safetensors.index.json", R"({"metadata":{}})");
  CHECK(error_of([&] { open_checkpoint(dir.path()); }, errc::malformed_file).find("no \"weight_map\"") != std::string::npos);
  io_test::write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors"})");
  CHECK(error_of([&] { open_checkpoint(dir.path()); }, errc::malformed_file).find("not valid JSON") != std::string::npos);
  // A shard the index names but that does not exist.
  CHECK(error_of([&] { write_index(dir.path(), R"({"a":"s9.safetensors"})"), open_checkpoint(dir.path()); }, errc::io_error)
            .find("s9.safetensors") != std::string::npos);
  // A consistent index opens.
  write_index(dir.path(), R"({"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"})");
  const auto c = open_checkpoint(dir.path());
  CHECK(c.size() == 3);
  CHECK(c.at("c").file->path() == dir / "s2.safetensors");
}

TEST_CASE("open_checkpoint: missing paths and empty folders", "[io][checkpoint]") {
  scratch_dir dir;
  CHECK(error_of([&] { open_checkpoint(dir / "nope"); }, errc::io_error).find("nope") != std::string::npos);
  CHECK(error_of([&] { open_checkpoint(dir.path()); }, errc::io_error)
            .find("has neither model.safetensors nor model.safetensors.index.json") != std::string::npos);
  // A malformed shard is reported with its own path.
  io_test::write_file(dir / "model.safetensors", "short");
  CHECK(error_of([&] { open_checkpoint(dir.path()); }, errc::malformed_file).find("model.safetensors") != std::string::npos);
}
