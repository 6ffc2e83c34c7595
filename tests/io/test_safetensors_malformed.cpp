// Every class of malformed safetensors header gives errc::malformed_file with a message that
// names the file, the tensor where there is one, and the problem
// (alloy/io/safetensors_header.hpp lists the rules).
#include "io_test_util.hpp"

#include <alloy/io/safetensors.hpp>

#include <string>

namespace {

using alloy::errc;
using io_test::as_bytes;
using io_test::raw_file;

// The message of the malformed_file error parsing `file` gives; checks the label is named.
std::string problem(const std::string& file) {
  const std::string msg =
      io_test::error_of([&] { alloy::io::parse_safetensors_header(as_bytes(file), "bad.safetensors"); }, errc::malformed_file);
  CHECK(msg.find("safetensors file 'bad.safetensors': ") == 0);
  return msg;
}

// A header with the given entries (JSON members) followed by `data_bytes` zero bytes.
std::string file_with(const std::string& members, std::size_t data_bytes) {
  return raw_file("{" + members + "}", std::string(data_bytes, '\0'));
}

#define CHECK_PROBLEM(file, fragment)                        \
  do {                                                        \
    const std::string msg_ = problem(file);                   \
    INFO("message: " << msg_);                                \
    CHECK(msg_.find(fragment) != std::string::npos);          \
  } while (false)

const std::string good_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

}  // namespace

TEST_CASE("a valid header parses (control for the cases below)", "[io][safetensors][malformed]") {
  const auto h = alloy::io::parse_safetensors_header(as_bytes(file_with(good_a, 8)), "good");
  REQUIRE(h.entries.size() == 1);
  CHECK(h.entries[0].elements == 2);
}

TEST_CASE("malformed: truncated file", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(std::string(), "holds 0 bytes, fewer than the 8");
  CHECK_PROBLEM(std::string("\x10\0\0", 3), "holds 3 bytes");
  // A valid file cut inside its data: the last tensor passes the end of the data section.
  const std::string full = file_with(good_a, 8);
  CHECK_PROBLEM(full.substr(0, full.size() - 1), "past the end of the data section (7 bytes)");
}

TEST_CASE("malformed: header length zero, too large or past the end", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(io_test::le64(0) + "{}", "header length is 0");
  CHECK_PROBLEM(io_test::le64(100'000'001) + "{}", "exceeds the limit of 100000000 bytes");
  CHECK_PROBLEM(io_test::le64(~0ull) + "{}", "exceeds the limit");
  CHECK_PROBLEM(io_test::le64(3) + "{}", "header length 3 reaches past the end of the file (10 bytes");
}

TEST_CASE("malformed: invalid JSON", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(raw_file("{\"a\":"), "not valid JSON");
  CHECK_PROBLEM(raw_file("{,}"), "not valid JSON");
  CHECK_PROBLEM(raw_file("{} x"), "not valid JSON");                       // trailing text
  CHECK_PROBLEM(raw_file("{}/* c */"), "not valid JSON");                  // no comments
  CHECK_PROBLEM(raw_file("{\"\xff\":1}"), "not valid JSON");                // not UTF-8
  CHECK_PROBLEM(raw_file(std::string("{}\0\0", 4)), "a NUL byte at header byte 2");  // NUL padding
  // nlohmann alone would stop at the NUL and accept the file.
  CHECK_PROBLEM(raw_file(std::string("{}\0{\"a\":1}", 10)), "NUL byte");
  CHECK_PROBLEM(raw_file("[]"), "top level is an array, not a JSON object");
  CHECK_PROBLEM(raw_file("\"x\""), "top level is the string 'x'");
  CHECK_PROBLEM(raw_file("null"), "top level is null");
}

TEST_CASE("malformed: entries that are not {dtype, shape, data_offsets}", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("a":[1])", 0), "tensor 'a': its entry is an array, not an object");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2]})", 8), "tensor 'a': missing key 'data_offsets'");
  CHECK_PROBLEM(file_with(R"("a":{"shape":[2],"data_offsets":[0,8]})", 8), "missing key 'dtype'");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})", 8),
                "tensor 'a': unexpected key 'x'");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8),
                "key 'dtype' appears twice");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":4,"shape":[2],"data_offsets":[0,8]})", 8), "dtype is the number 4, not a string");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":{"n":2},"data_offsets":[0,8]})", 8), "shape is an object");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]})", 8), "shape holds an array");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0]})", 8), "data_offsets has 1 values, not two");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})", 8),
                "data_offsets has more than two values");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[-1,8]})", 8),
                "data_offsets holds the negative number -1");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":"0-8"})", 8), "data_offsets is the string");
}

TEST_CASE("malformed: unknown or unsupported dtype", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]})", 2),
                "tensor 'a': dtype 'F8_E4M3' is not supported (alloy reads F64, F32, F16, BF16");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"float32","shape":[2],"data_offsets":[0,8]})", 8), "dtype 'float32'");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]})", 4), "dtype 'U16' is not supported");
}

TEST_CASE("malformed: shape entries that are negative, fractional or not numbers", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", 8),
                "tensor 'a': shape holds the negative number -2, not a non-negative integer");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})", 8), "shape holds the number 1.5");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})", 8), "shape holds the number 2.0");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]})", 8), "shape holds the number 2e0");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]})", 8), "shape holds the string '2'");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[null],"data_offsets":[0,8]})", 8), "shape holds null");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[true],"data_offsets":[0,8]})", 8), "shape holds true");
}

TEST_CASE("malformed: overflowing shape", "[io][safetensors][malformed]") {
  // 2^32 * 2^32 elements overflow 64 bits.
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0),
                "tensor 'a': the element count of shape [4294967296, 4294967296] overflows");
  // 2^62 elements fit, their 2^64 bytes do not.
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})", 0),
                "the byte size of shape [4611686018427387904] of F32 overflows");
  // A dimension beyond 64 bits.
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,0]})", 0),
                "shape holds the integer 18446744073709551616, which does not fit in 64 bits");
  // A zero after an overflowing prefix still overflows (the reference's checked product).
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]})", 0), "overflows");
}

TEST_CASE("malformed: shape and byte range disagree", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]})", 8),
                "tensor 'a': data_offsets [0, 8] span 8 bytes, but shape [2, 3] of F32 needs 24 bytes");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"BF16","shape":[4],"data_offsets":[0,4]})", 4), "needs 8 bytes");
}

TEST_CASE("malformed: offsets out of range or reversed", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})", 8),
                "tensor 'a': data_offsets [8, 16] reach past the end of the data section (8 bytes)");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]})", 8),
                "past the end of the data section");
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})", 8), "are reversed (begin > end)");
}

TEST_CASE("malformed: overlapping offsets", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(good_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 12),
                "tensor 'b': data_offsets [4, 12] overlap tensor 'a' at [0, 8]");
  // Two names for the same bytes.
  CHECK_PROBLEM(file_with(good_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8), "overlap tensor");
}

TEST_CASE("malformed: gaps and trailing bytes (the data must be contiguous)", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 12),
                "leave a gap of 4 bytes after the start of the data section");
  CHECK_PROBLEM(file_with(good_a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]})", 16),
                "tensor 'b': data_offsets [12, 16] leave a gap of 4 bytes after tensor 'a'");
  CHECK_PROBLEM(file_with(good_a, 9), "the data section holds 9 bytes but its tensors cover 8 (1 trailing bytes");
  CHECK_PROBLEM(file_with("", 1), "holds 1 bytes but its tensors cover 0");
}

TEST_CASE("malformed: duplicate names", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(good_a + "," + good_a, 8), "tensor 'a' appears twice in the header");
  // Even with different entries (nlohmann and the reference would silently keep one).
  CHECK_PROBLEM(file_with(good_a + R"(,"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]})", 8), "'a' appears twice");
  CHECK_PROBLEM(file_with(R"("__metadata__":{},"__metadata__":{})", 0), "key '__metadata__' appears twice");
  CHECK_PROBLEM(file_with(R"("__metadata__":{"k":"1","k":"2"})", 0), "__metadata__ key 'k' appears twice");
}

TEST_CASE("malformed: __metadata__ not an object of strings", "[io][safetensors][malformed]") {
  CHECK_PROBLEM(file_with(R"("__metadata__":"pt")", 0), "__metadata__ is the string 'pt', not an object of strings");
  CHECK_PROBLEM(file_with(R"("__metadata__":{"n":1})", 0), "__metadata__ key 'n' holds the number 1, not a string");
  CHECK_PROBLEM(file_with(R"("__metadata__":{"n":{"deep":"x"}})", 0), "__metadata__ key 'n' holds an object");
}

TEST_CASE("messages stay on one line and name the file given", "[io][safetensors][malformed]") {
  const std::string msg = problem(file_with(R"("a\nb":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8));
  CHECK(msg.find("tensor 'a\\x0ab'") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
  // Long names are shortened at a character boundary ("\xc3\xa9" is one character).
  std::string name;
  for (int i = 0; i < 200; ++i) name += "\xc3\xa9";
  const std::string long_msg = problem(file_with("\"" + name + R"(":{"dtype":"X"})", 0));
  CHECK(long_msg.find("...': dtype 'X'") != std::string::npos);
  CHECK(long_msg.find(name.substr(0, 160) + "...") != std::string::npos);
  // Through safetensors_file, the label is the path.
  io_test::scratch_dir dir;
  io_test::write_file(dir / "m.safetensors", file_with(good_a, 4));
  const std::string m = io_test::error_of([&] { alloy::io::safetensors_file f(dir / "m.safetensors"); }, errc::malformed_file);
  CHECK(m.find((dir / "m.safetensors").string()) != std::string::npos);
}

TEST_CASE("deep nesting is refused without recursion", "[io][safetensors][malformed]") {
  const std::string deep = R"({"a":{"dtype":"F32","shape":)" + std::string(100000, '[') + std::string(100000, ']') + "}}";
  CHECK_PROBLEM(raw_file(deep), "shape holds an array");
  CHECK_PROBLEM(raw_file(std::string(100000, '[')), "top level is an array");
}
