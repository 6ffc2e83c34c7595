// Replays the libFuzzer seed corpus (tests/fuzz/corpus/safetensors, found relative to this
// source file) through the safetensors header parser, without libFuzzer: every input either
// parses or throws alloy::error(errc::malformed_file). Files named valid-* must parse and
// files named invalid-* must be refused; other names (inputs the fuzzer found) may do either.
#include "io_test_util.hpp"

#include <alloy/io/safetensors_header.hpp>

#include <filesystem>
#include <string>

namespace {
namespace fs = std::filesystem;

fs::path corpus_dir() { return fs::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "safetensors"; }

}  // namespace

TEST_CASE("the fuzz corpus replays through the header parser", "[io][safetensors][fuzz]") {
  const fs::path dir = corpus_dir();
  INFO("corpus: " << dir.string());
  REQUIRE(fs::is_directory(dir));
  std::size_t count = 0, valid = 0, invalid = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    INFO("input: " << name);
    const std::string bytes = io_test::read_file(entry.path());
    ++count;
    bool parsed = false;
    try {
      const auto h = alloy::io::parse_safetensors_header(io_test::as_bytes(bytes), name);
      parsed = true;
      CHECK(h.file_size() == bytes.size());
    } catch (const alloy::error& e) {
      CHECK(e.code() == alloy::errc::malformed_file);
      CHECK(std::string(e.what()).find(name) != std::string::npos);
    }
    if (name.starts_with("valid-")) {
      CHECK(parsed);
      ++valid;
    } else if (name.starts_with("invalid-")) {
      CHECK_FALSE(parsed);
      ++invalid;
    }
  }
  CHECK(valid >= 5);
  CHECK(invalid >= 10);
  CHECK(count >= valid + invalid);
}
