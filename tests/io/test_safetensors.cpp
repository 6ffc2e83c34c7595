// Tests for alloy/io/safetensors.hpp and the planner of alloy/io/safetensors_header.hpp:
// round trips for every dtype, files written by other writers (bytes built by hand, and the
// exact bytes of the reference implementation's own tests), alignment, and the writer's
// atomicity. Malformed headers: test_safetensors_malformed.cpp.
#include "io_test_util.hpp"

#include <alloy/core/tensor_set.hpp>
#include <alloy/io/safetensors.hpp>

#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

using alloy::dtype;
using alloy::errc;
using alloy::tensor_set;
using alloy::io::safetensors_file;
using alloy::io::safetensors_writer;
using alloy::io::sync_mode;
using alloy::io::tensor_spec;
using io_test::as_bytes;
using io_test::bytes_of;
using io_test::error_of;
using io_test::raw_file;
using io_test::scratch_dir;
using shape_t = std::vector<std::size_t>;

const std::vector<dtype> all_dtypes = {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::i64,
                                       dtype::i32, dtype::i16, dtype::i8,  dtype::u8,   dtype::boolean};

// Fills a tensor with a byte pattern that differs per tensor (seed) and position.
void fill(alloy::mutable_tensor_view v, unsigned seed) {
  auto* p = static_cast<unsigned char*>(v.data);
  for (std::size_t i = 0; i < v.bytes(); ++i) p[i] = static_cast<unsigned char>((i * 37 + seed * 101 + 11) & 0xff);
  if (v.type == dtype::boolean)
    for (std::size_t i = 0; i < v.bytes(); ++i) p[i] &= 1;
}

std::string bytes_string(std::span<const std::byte> s) { return {reinterpret_cast<const char*>(s.data()), s.size()}; }
std::string bytes_string(alloy::tensor_view v) {
  return {static_cast<const char*>(v.data), v.bytes()};
}

// Every tensor of `expected` is in `f` with the same dtype, shape and bytes, in order.
void check_same(const safetensors_file& f, const tensor_set& expected) {
  REQUIRE(f.size() == expected.size());
  std::size_t i = 0;
  for (const auto& e : expected) {
    INFO("tensor " << e.name());
    const auto& got = f.entries()[i++];
    CHECK(got.name == e.name());
    CHECK(got.type == e.type());
    CHECK(got.shape == e.shape());
    CHECK(got.elements == e.size());
    CHECK(f.is_aligned(got));
    CHECK(bytes_string(f.bytes(e.name())) == bytes_string(e.view()));
    CHECK(bytes_string(f.view(e.name())) == bytes_string(e.view()));
  }
}

}  // namespace

TEST_CASE("every dtype round-trips bit for bit, with metadata", "[io][safetensors]") {
  scratch_dir dir;
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\"\n"}};
  for (dtype t : all_dtypes) {
    DYNAMIC_SECTION("dtype " << alloy::dtype_name(t)) {
      tensor_set s;
      fill(s.add("w", t, {3, 5}), 1);
      fill(s.add("scalar", t, {}), 2);
      fill(s.add("empty", t, {0, 4}), 3);
      fill(s.add("v", t, {7}), 4);
      const auto path = dir / (std::string(alloy::dtype_name(t)) + ".safetensors");
      alloy::io::write_safetensors(path, s, meta);
      CHECK(dir.files() == std::vector<std::string>{path.filename().string()});  // no temporary left

      const safetensors_file f(path);
      CHECK(f.path() == path);
      CHECK(f.metadata() == meta);
      CHECK(f.all_aligned());
      check_same(f, s);
      CHECK(f.find("scalar")->shape.empty());
      CHECK(f.find("scalar")->elements == 1);
      CHECK(f.find("empty")->bytes() == 0);
      CHECK(f.find("missing") == nullptr);

      const tensor_set back = alloy::io::read_safetensors(path);
      REQUIRE(back.size() == s.size());
      for (const auto& e : s) CHECK(bytes_string(back.at(e.name()).view()) == bytes_string(e.view()));
      std::filesystem::remove(path);
    }
  }
}

TEST_CASE("a file mixing every dtype keeps order and alignment", "[io][safetensors]") {
  scratch_dir dir;
  tensor_set s;
  unsigned seed = 0;
  // Smallest element sizes first: the writer reorders the data, not the header.
  for (auto it = all_dtypes.rbegin(); it != all_dtypes.rend(); ++it, ++seed)
    fill(s.add("t_" + std::string(alloy::dtype_name(*it)), *it, {seed % 3 + 1, 3}), seed);
  alloy::io::write_safetensors(dir / "mixed.safetensors", s);
  const safetensors_file f(dir / "mixed.safetensors");
  CHECK(f.metadata().empty());
  check_same(f, s);  // header order = insertion order
  CHECK(f.all_aligned());
  // The data is ordered by descending element size.
  std::size_t prev_size = 8;
  std::vector<const alloy::io::safetensors_entry*> by_offset;
  for (const auto& e : f.entries()) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (const auto* e : by_offset) {
    CHECK(alloy::dtype_size(e->type) <= prev_size);
    prev_size = alloy::dtype_size(e->type);
  }
  // Typed access.
  const auto values = f.values<float>("t_F32");
  CHECK(values.size() == f.find("t_F32")->elements);
  CHECK(error_of([&] { (void)f.values<double>("t_F32"); }, errc::dtype_mismatch).find("holds F32") != std::string::npos);
  CHECK(error_of([&] { (void)f.view("nope"); }, errc::missing_tensor).find("'nope'") != std::string::npos);
}

TEST_CASE("reads a file whose bytes are written out by hand", "[io][safetensors]") {
  scratch_dir dir;
  // No padding, header order differs from data order, metadata first.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},"zz":{"dtype":"I8","shape":[0],"data_offsets":[12,12]}})";
  const std::string data = bytes_of({0x00, 0x00, 0x80, 0x3f,    // 1.0f
                                     0x00, 0x00, 0x20, 0xc0,    // -2.5f
                                     0x80, 0x3f, 0x00, 0xc0});  // bf16 1.0, -2.0
  io_test::write_file(dir / "hand.safetensors", raw_file(header, data));
  const safetensors_file f(dir / "hand.safetensors");
  CHECK(f.header().header_size == header.size());
  CHECK(f.header().data_offset() == 8 + header.size());
  CHECK(f.header().data_size == 12);
  REQUIRE(f.size() == 3);
  CHECK(f.entries()[0].name == "b");
  CHECK(f.entries()[1].name == "a");
  CHECK(f.entries()[2].name == "zz");
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(f.find("a")->shape == shape_t{1, 2});
  CHECK(f.find("a")->begin == 8);
  CHECK(f.find("a")->end == 12);

  // 8 + header.size() is odd here, so the float data is misaligned in the mapping.
  REQUIRE(header.size() % 2 == 1);
  CHECK_FALSE(f.is_aligned("b"));
  CHECK_FALSE(f.all_aligned());
  CHECK(f.is_aligned("zz"));  // empty
  CHECK(error_of([&] { (void)f.view("b"); }, errc::invalid_argument).find("bytes()") != std::string::npos);
  CHECK(bytes_string(f.bytes("b")) == data.substr(0, 8));
  float b[2];
  std::memcpy(b, f.bytes("b").data(), sizeof b);
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == -2.5f);
  alloy::bf16 a[2];
  std::memcpy(a, f.bytes("a").data(), sizeof a);
  CHECK(static_cast<float>(a[0]) == 1.0f);
  CHECK(static_cast<float>(a[1]) == -2.0f);
  const tensor_set s = f.to_tensor_set();  // copies misaligned data fine
  CHECK(s.at("b").values<float>()[1] == -2.5f);
  CHECK(static_cast<float>(s.at("a").values<alloy::bf16>()[0]) == 1.0f);
}

// The exact bytes asserted by huggingface/safetensors' own tests (safetensors/src/tensor.rs:
// test_serialization, test_serialization_forced_alignement, test_empty): alloy reads them and
// its writer produces the same bytes.
TEST_CASE("matches the reference implementation's bytes", "[io][safetensors]") {
  scratch_dir dir;
  const std::string floats = bytes_of({0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64});
  struct case_t {
    std::string name;
    shape_t shape;
    std::string file;
  };
  const std::vector<case_t> cases = {
      {"attn.0", {1, 2, 3}, raw_file(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", floats)},
      {"attn0", {1, 1, 2, 3}, raw_file(R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       )", floats)},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const auto h = alloy::io::parse_safetensors_header(as_bytes(c.file), c.name);
    REQUIRE(h.entries.size() == 1);
    CHECK(h.entries[0].shape == c.shape);
    CHECK(h.data_offset() % 8 == 0);
    tensor_set s;
    std::vector<float> v = {0, 1, 2, 3, 4, 5};
    s.add(c.name, v, c.shape);
    alloy::io::write_safetensors(dir / "out.safetensors", s);
    CHECK(io_test::read_file(dir / "out.safetensors") == c.file);
  }
  // Empty files, with and without metadata.
  alloy::io::write_safetensors(dir / "empty.safetensors", tensor_set{});
  CHECK(io_test::read_file(dir / "empty.safetensors") == bytes_of({8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32}));
  alloy::io::write_safetensors(dir / "empty.safetensors", tensor_set{}, {{"framework", "pt"}});
  CHECK(io_test::read_file(dir / "empty.safetensors") == raw_file(R"({"__metadata__":{"framework":"pt"}}     )"));
  const safetensors_file f(dir / "empty.safetensors");
  CHECK(f.size() == 0);
  CHECK(f.metadata().at("framework") == "pt");
}

TEST_CASE("plan_safetensors lays out data by element size and parses back", "[io][safetensors]") {
  const std::vector<tensor_spec> specs = {{"a", dtype::u8, {3}}, {"b", dtype::f32, {2}}, {"c", dtype::f16, {1}},
                                          {"d", dtype::f64, {1}}, {"e", dtype::f32, {1}}};
  const auto plan = alloy::io::plan_safetensors(specs, {{"k", "v"}});
  const auto& h = plan.header;
  CHECK(h.header_size % 8 == 0);
  CHECK(plan.prefix.size() == h.data_offset());
  CHECK(h.find("d")->begin == 0);   // f64 first
  CHECK(h.find("b")->begin == 8);   // then f32 in caller order
  CHECK(h.find("e")->begin == 16);
  CHECK(h.find("c")->begin == 20);  // f16
  CHECK(h.find("a")->begin == 22);  // u8
  CHECK(h.data_size == 25);
  const std::string file = plan.prefix + std::string(h.data_size, '\0');
  const auto back = alloy::io::parse_safetensors_header(as_bytes(file), "plan");
  REQUIRE(back.entries.size() == specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    CHECK(back.entries[i].name == specs[i].name);
    CHECK(back.entries[i].begin == h.entries[i].begin);
    CHECK(back.entries[i].end == h.entries[i].end);
  }
  CHECK(back.metadata == h.metadata);

  CHECK(error_of([] { alloy::io::plan_safetensors(std::vector<tensor_spec>{{"x", dtype::f32, {1}}, {"x", dtype::f16, {1}}}); },
                 errc::duplicate_name)
            .find("'x' given twice") != std::string::npos);
  CHECK(error_of([] { alloy::io::plan_safetensors(std::vector<tensor_spec>{{"__metadata__", dtype::f32, {1}}}); },
                 errc::invalid_argument)
            .find("reserved") != std::string::npos);
  CHECK(error_of([] { alloy::io::plan_safetensors(std::vector<tensor_spec>{{"big", dtype::f32, {1ull << 62}}}); },
                 errc::invalid_argument)
            .find("overflows") != std::string::npos);
  CHECK(error_of([] { alloy::io::plan_safetensors(std::vector<tensor_spec>{{"bad\xff", dtype::f32, {1}}}); },
                 errc::invalid_argument)
            .find("UTF-8") != std::string::npos);
}

TEST_CASE("safetensors_writer writes chunks in any order and publishes on commit", "[io][safetensors]") {
  scratch_dir dir;
  const auto path = dir / "out.safetensors";
  std::vector<float> w(1000);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f;
  std::vector<std::int32_t> n = {7, -8, 9};
  {
    safetensors_writer out(path, {{"w", dtype::f32, {10, 100}}, {"n", dtype::i32, {3}}}, {{"by", "test"}});
    CHECK(out.path() == path);
    CHECK(std::filesystem::exists(out.temporary_path()));
    CHECK_FALSE(std::filesystem::exists(path));
    const auto wb = std::as_bytes(std::span(w));
    // Two threads, each writing interleaved 400-byte chunks backwards.
    auto worker = [&](std::size_t parity) {
      for (std::size_t c = 10; c-- > 0;)
        if (c % 2 == parity) out.write("w", wb.subspan(c * 400, 400), c * 400);
    };
    std::thread t1(worker, 0), t2(worker, 1);
    t1.join();
    t2.join();
    // Incomplete: commit refuses and the writer stays usable.
    CHECK(error_of([&] { out.commit(); }, errc::invalid_argument).find("'n' received 0 of its 12 bytes") != std::string::npos);
    CHECK(error_of([&] { out.write("n", std::as_bytes(std::span(n)), 4); }, errc::invalid_argument).find("passes its end") !=
          std::string::npos);
    CHECK(error_of([&] { out.write("m", std::as_bytes(std::span(n))); }, errc::missing_tensor).find("'m'") != std::string::npos);
    CHECK(error_of([&] { out.write("n", alloy::tensor_view(w)); }, errc::dtype_mismatch).find("I32") != std::string::npos);
    out.write("n", alloy::tensor_view(n.data(), n.size(), dtype::i32));
    out.commit();
    CHECK(out.committed());
    CHECK(error_of([&] { out.commit(); }, errc::invalid_argument).find("already committed") != std::string::npos);
  }
  CHECK(dir.files() == std::vector<std::string>{"out.safetensors"});
  const safetensors_file f(path);
  CHECK(f.metadata().at("by") == "test");
  const auto got = f.values<float>("w");
  CHECK(std::vector<float>(got.begin(), got.end()) == w);
  std::int32_t back[3];
  std::memcpy(back, f.bytes("n").data(), sizeof back);
  CHECK(back[1] == -8);
}

TEST_CASE("commit without fsync publishes the same file", "[io][safetensors]") {
  scratch_dir dir;
  std::vector<float> w = {1.5f, -2.0f, 3.25f};
  for (const auto sync : {sync_mode::fsync, sync_mode::none}) {
    const auto path = dir / (sync == sync_mode::none ? "none.safetensors" : "fsync.safetensors");
    safetensors_writer out(path, {{"w", dtype::f32, {3}}});
    out.write("w", alloy::tensor_view(w));
    out.commit(sync);
    CHECK(out.committed());
    CHECK_FALSE(std::filesystem::exists(out.temporary_path()));
  }
  CHECK(dir.files() == std::vector<std::string>{"fsync.safetensors", "none.safetensors"});
  const safetensors_file a(dir / "fsync.safetensors"), b(dir / "none.safetensors");
  CHECK(std::equal(a.bytes("w").begin(), a.bytes("w").end(), b.bytes("w").begin(), b.bytes("w").end()));
  CHECK(std::filesystem::file_size(dir / "fsync.safetensors") == std::filesystem::file_size(dir / "none.safetensors"));
}

TEST_CASE("an uncommitted writer leaves no file", "[io][safetensors]") {
  scratch_dir dir;
  const auto path = dir / "out.safetensors";
  std::vector<float> v(16, 1.0f);
  {
    safetensors_writer out(path, {{"a", dtype::f32, {16}}, {"b", dtype::f32, {16}}});
    out.write("a", alloy::tensor_view(v));
  }
  CHECK(dir.files().empty());
  // The same when an error unwinds through the writer.
  try {
    safetensors_writer out(path, {{"a", dtype::f32, {16}}});
    out.write("a", std::as_bytes(std::span(v)).first(8));
    throw std::runtime_error("merge failed");
  } catch (const std::runtime_error&) {
  }
  CHECK(dir.files().empty());
  // An existing file at the destination is untouched until commit.
  io_test::write_file(path, "old");
  {
    safetensors_writer out(path, {{"a", dtype::f32, {16}}});
    out.write("a", alloy::tensor_view(v));
    CHECK(io_test::read_file(path) == "old");
    out.discard();
    CHECK(error_of([&] { out.commit(); }, errc::invalid_argument).find("discarded") != std::string::npos);
  }
  CHECK(dir.files() == std::vector<std::string>{"out.safetensors"});
  // A moved-from writer does not remove the moved-to writer's file.
  {
    safetensors_writer a(path, {{"a", dtype::f32, {16}}});
    safetensors_writer b(std::move(a));
    b.write("a", alloy::tensor_view(v));
    b.commit();
  }
  CHECK(safetensors_file(path).size() == 1);
}

TEST_CASE("I/O errors name the path", "[io][safetensors]") {
  scratch_dir dir;
  CHECK(error_of([&] { safetensors_file f(dir / "missing.safetensors"); }, errc::io_error).find("missing.safetensors") !=
        std::string::npos);
  CHECK(error_of([&] { safetensors_file f(dir.path()); }, errc::io_error).find(dir.path().string()) != std::string::npos);
  io_test::write_file(dir / "empty.safetensors", "");
  CHECK(error_of([&] { safetensors_file f(dir / "empty.safetensors"); }, errc::malformed_file).find("empty.safetensors") !=
        std::string::npos);
  CHECK(error_of([&] { safetensors_writer w(dir / "no" / "such" / "x.safetensors", {{"a", dtype::f32, {1}}}); },
                 errc::io_error)
            .find("cannot create") != std::string::npos);
}
