// libFuzzer target for alloy::io::parse_safetensors_header, the parser every safetensors
// file alloy opens goes through. Build with clang: -fsanitize=fuzzer,address,undefined
// (tests/fuzz/CMakeLists.txt, option ALLOY_BUILD_FUZZERS). Run:
//   fuzz_safetensors_header -max_total_time=180 tests/fuzz/corpus/safetensors
// A failure is a sanitizer report, an exception other than alloy::error(malformed_file)
// escaping the parser, or a parsed header that breaks the invariants checked below. The
// corpus in tests/fuzz/corpus/safetensors is replayed by tests/io/test_fuzz_corpus.cpp in
// the normal test suite.
#include <alloy/io/safetensors_header.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <span>
#include <string>

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

void check_invariants(const alloy::io::safetensors_header& h, std::size_t size) {
  if (h.file_size() != size) fail("file_size() != input size");
  std::uint64_t total = 0;
  for (const auto& e : h.entries) {
    if (e.begin > e.end || e.end > h.data_size) fail("offsets outside the data section");
    if (e.bytes() != e.elements * alloy::dtype_size(e.type)) fail("bytes != elements * dtype size");
    if (h.find(e.name) != &e) fail("find() does not return the entry");
    total += e.bytes();
  }
  if (total != h.data_size) fail("tensors do not cover the data section exactly");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  alloy::io::safetensors_header h;
  try {
    h = alloy::io::parse_safetensors_header(bytes, "fuzz-input");
  } catch (const alloy::error& e) {
    if (e.code() != alloy::errc::malformed_file) fail("an error code other than malformed_file");
    return 0;
  }
  check_invariants(h, size);

  // What the parser accepts, the writer's planner re-serializes, and the result parses back
  // to the same tensors (the data order may differ: the planner sorts by element size).
  std::vector<alloy::io::tensor_spec> specs;
  for (const auto& e : h.entries) specs.push_back({e.name, e.type, e.shape});
  try {
    const auto plan = alloy::io::plan_safetensors(specs, h.metadata);
    const std::string file = plan.prefix + std::string(plan.header.data_size, '\0');
    const auto back = alloy::io::parse_safetensors_header(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(file.data()), file.size()), "replanned");
    if (back.entries.size() != h.entries.size() || back.metadata != h.metadata) fail("re-planned header differs");
    for (std::size_t i = 0; i < h.entries.size(); ++i)
      if (back.entries[i].name != h.entries[i].name || back.entries[i].type != h.entries[i].type ||
          back.entries[i].shape != h.entries[i].shape)
        fail("re-planned entry differs");
  } catch (const alloy::error&) {
    fail("the planner or the parser refused a header the parser accepted");
  }
  return 0;
}
