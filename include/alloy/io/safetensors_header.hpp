// The safetensors header: a pure parser (bytes in, validated layout out) and the layout
// planner the writers use. No file access here: safetensors.hpp maps files and writes them.
//
// File format (https://github.com/huggingface/safetensors):
//   8 bytes   N, the header length, unsigned 64-bit little-endian;
//   N bytes   a UTF-8 JSON object: {"__metadata__": {"k": "v", ...},          (optional)
//                                   "name": {"dtype": "F32", "shape": [2, 3],
//                                            "data_offsets": [begin, end]}, ...}
//             padded with spaces (the reference writer pads to a multiple of 8);
//   the rest  the data section; offsets are relative to its start.
//
// parse_safetensors_header(file_bytes, label) applies the reference implementation's rules
// (safetensors/src/tensor.rs, Metadata::validate and SafeTensors::read_metadata) and a few
// stricter ones; every violation throws alloy::error(errc::malformed_file) with a message
// "safetensors file '<label>': [tensor '<name>': ]<problem>":
//   - the file holds at least 8 bytes; 0 < N <= 100'000'000 (the reference's limit) and the
//     header lies inside the file;
//   - the header is valid JSON (nlohmann-json, strict: no comments, no trailing data, no NUL
//     byte, valid UTF-8) whose top level is an object;
//   - "__metadata__", when present, is an object of string -> string;
//   - every other key is a tensor whose value is an object with exactly the keys "dtype",
//     "shape" and "data_offsets"; a tensor name (or a key inside an entry or the metadata)
//     appearing twice is an error (the reference silently keeps one of them: alloy refuses);
//   - dtype is one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (the reference also knows
//     U16 U32 U64 and the 8-bit and smaller float formats: alloy reports those as unsupported);
//   - shape is an array of non-negative integers whose element count and byte size fit in
//     64 bits; data_offsets is an array of two non-negative integers with begin <= end;
//   - end - begin equals the element count times the dtype size, and end lies inside the data
//     section;
//   - sorted by offset, the tensors tile the data section exactly, as the reference demands:
//     the first starts at 0, each starts where the previous one ends (no overlap, no gap) and
//     the last ends at the end of the file (no trailing bytes).
// The parser never reads outside file_bytes, whatever they hold (a libFuzzer target checks it).
//
// Entries keep the order of the JSON header (the order their writer chose); find() looks a
// name up in O(log n).
#pragma once

#include <alloy/core/dtype.hpp>
#include <alloy/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alloy::io {

static_assert(sizeof(std::size_t) >= 8, "alloy's safetensors I/O needs a 64-bit std::size_t");

// The largest header the reader accepts and the writer produces, as in the reference.
inline constexpr std::uint64_t safetensors_max_header_size = 100'000'000;

// The dtype a safetensors name denotes, or nullopt for names alloy does not handle.
inline std::optional<dtype> parse_safetensors_dtype(std::string_view name) noexcept {
  for (dtype t : {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::i64, dtype::i32, dtype::i16, dtype::i8,
                  dtype::u8, dtype::boolean})
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

struct safetensors_entry {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::size_t> shape;
  std::size_t elements = 0;  // product of shape
  std::uint64_t begin = 0;   // byte offsets relative to the data section
  std::uint64_t end = 0;
  std::uint64_t bytes() const noexcept { return end - begin; }
};

struct safetensors_header {
  std::vector<safetensors_entry> entries;  // in header order
  std::map<std::string, std::string> metadata;
  std::uint64_t header_size = 0;  // N: the JSON text with its padding
  std::uint64_t data_size = 0;    // bytes of the data section
  // Offset of the data section in the file.
  std::uint64_t data_offset() const noexcept { return 8 + header_size; }
  std::uint64_t file_size() const noexcept { return data_offset() + data_size; }

  const safetensors_entry* find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries[it->second];
  }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // Rebuilds the name index; call after editing entries by hand.
  void reindex() {
    index_.clear();
    for (std::size_t i = 0; i < entries.size(); ++i) index_.emplace(entries[i].name, i);
  }

 private:
  std::map<std::string, std::size_t, std::less<>> index_;
};

namespace detail {

// A name or path fit for a one-line message: control bytes escaped, long text shortened.
inline std::string printable(std::string_view s, std::size_t max_chars = 160) {
  std::string out;
  std::size_t n = std::min(s.size(), max_chars);
  while (n < s.size() && n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;  // whole UTF-8 characters
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (n < s.size()) out += "...";
  return out;
}

inline std::string quote(std::string_view s) { return "'" + printable(s) + "'"; }

inline std::string offsets_string(std::uint64_t b, std::uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

inline std::string dims_string(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The element count of a shape, or nullopt when the running product overflows (as the
// reference's checked fold: a zero dimension after an overflowing prefix still overflows).
inline std::optional<std::size_t> checked_elements(const std::vector<std::size_t>& shape) noexcept {
  std::size_t count = 1;
  for (std::size_t d : shape) {
    if (d != 0 && count > std::numeric_limits<std::size_t>::max() / d) return std::nullopt;
    count *= d;
  }
  return count;
}

inline std::string supported_dtypes() { return "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"; }

// Streams the header JSON into a safetensors_header without building a DOM: it accepts only
// the shape of a safetensors header and stops at the first problem, so no input can make it
// recurse deeply or hold more than the entries themselves.
class header_sax {
 public:
  using json = nlohmann::json;
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit header_sax(safetensors_header& out) : out_(out) {}

  const std::string& problem() const noexcept { return problem_; }
  bool finished() const noexcept { return state_ == state::done; }

  bool null() { return reject("null"); }
  bool boolean(bool v) { return reject(v ? "true" : "false"); }
  bool number_integer(number_integer_t v) {
    if (v >= 0) return number_unsigned(static_cast<number_unsigned_t>(v));
    return reject("the negative number " + std::to_string(v));
  }
  bool number_unsigned(number_unsigned_t v) {
    if (state_ == state::shape) {
      entry().shape.push_back(static_cast<std::size_t>(v));
      return true;
    }
    if (state_ == state::offsets) {
      if (offsets_count_ == 2) return fail_tensor("data_offsets has more than two values");
      offsets_[offsets_count_++] = v;
      return true;
    }
    return reject("the number " + std::to_string(v));
  }
  bool number_float(number_float_t, const string_t& text) {
    // nlohmann reports an integer too large for 64 bits as a float: say so.
    const bool big_integer = text.find_first_of(".eE-") == string_t::npos;
    if (big_integer && (state_ == state::shape || state_ == state::offsets))
      return fail_tensor(std::string(state_ == state::shape ? "shape" : "data_offsets") + " holds the integer " +
                         printable(text, 40) + ", which does not fit in 64 bits");
    return reject("the number " + printable(text, 40));
  }
  bool string(string_t& v) {
    if (state_ == state::meta_string) {
      out_.metadata.emplace(std::move(meta_key_), std::move(v));
      state_ = state::meta;
      return true;
    }
    if (state_ == state::dtype_value) {
      const auto t = parse_safetensors_dtype(v);
      if (!t)
        return fail_tensor("dtype " + quote(v) + " is not supported (alloy reads " + supported_dtypes() + ")");
      entry().type = *t;
      state_ = state::tensor;
      return true;
    }
    return reject("the string " + quote(v));
  }
  bool binary(binary_t&) { return reject("binary data"); }

  bool start_object(std::size_t) {
    switch (state_) {
      case state::root: state_ = state::top; return true;
      case state::meta_value: state_ = state::meta; return true;
      case state::tensor_value:
        state_ = state::tensor;
        seen_dtype_ = seen_shape_ = seen_offsets_ = false;
        offsets_count_ = 0;
        return true;
      default: return reject("an object");
    }
  }
  bool key(string_t& k) {
    switch (state_) {
      case state::top:
        if (k == "__metadata__") {
          if (seen_metadata_) return fail("key '__metadata__' appears twice");
          seen_metadata_ = true;
          state_ = state::meta_value;
          return true;
        }
        if (!names_.insert(k).second) return fail("tensor " + quote(k) + " appears twice in the header");
        out_.entries.emplace_back();
        out_.entries.back().name = std::move(k);
        state_ = state::tensor_value;
        return true;
      case state::meta:
        if (out_.metadata.count(k)) return fail("__metadata__ key " + quote(k) + " appears twice");
        meta_key_ = std::move(k);
        state_ = state::meta_string;
        return true;
      case state::tensor: {
        bool* seen = k == "dtype" ? &seen_dtype_ : k == "shape" ? &seen_shape_ : k == "data_offsets" ? &seen_offsets_ : nullptr;
        if (!seen) return fail_tensor("unexpected key " + quote(k) + " (an entry has dtype, shape and data_offsets)");
        if (*seen) return fail_tensor("key " + quote(k) + " appears twice");
        *seen = true;
        state_ = k == "dtype" ? state::dtype_value : k == "shape" ? state::shape_value : state::offsets_value;
        return true;
      }
      default: return reject("a key");  // unreachable with a conforming JSON parser
    }
  }
  bool end_object() {
    switch (state_) {
      case state::top: state_ = state::done; return true;
      case state::meta: state_ = state::top; return true;
      case state::tensor:
        if (!seen_dtype_) return fail_tensor("missing key 'dtype'");
        if (!seen_shape_) return fail_tensor("missing key 'shape'");
        if (!seen_offsets_) return fail_tensor("missing key 'data_offsets'");
        entry().begin = offsets_[0];
        entry().end = offsets_[1];
        state_ = state::top;
        return true;
      default: return reject("the end of an object");  // unreachable
    }
  }
  bool start_array(std::size_t) {
    if (state_ == state::shape_value) {
      state_ = state::shape;
      return true;
    }
    if (state_ == state::offsets_value) {
      state_ = state::offsets;
      return true;
    }
    return reject("an array");
  }
  bool end_array() {
    if (state_ == state::shape) {
      state_ = state::tensor;
      return true;
    }
    if (state_ == state::offsets) {
      if (offsets_count_ != 2)
        return fail_tensor("data_offsets has " + std::to_string(offsets_count_) + " values, not two");
      state_ = state::tensor;
      return true;
    }
    return reject("the end of an array");  // unreachable
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    std::string what = ex.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (auto p = what.find("] "); what.starts_with("[json.exception.") && p != std::string::npos) what.erase(0, p + 2);
    return fail("the header is not valid JSON: " + printable(what, 300));
  }

 private:
  enum class state {
    root, top, meta_value, meta, meta_string, tensor_value, tensor, dtype_value, shape_value, shape,
    offsets_value, offsets, done
  };

  safetensors_entry& entry() { return out_.entries.back(); }

  bool fail(std::string problem) {
    if (problem_.empty()) problem_ = std::move(problem);
    return false;
  }
  bool fail_tensor(const std::string& problem) { return fail("tensor " + quote(entry().name) + ": " + problem); }

  // A JSON value or token the current position does not allow; `what` describes it.
  bool reject(const std::string& what) {
    switch (state_) {
      case state::root: return fail("the header's top level is " + what + ", not a JSON object");
      case state::meta_value: return fail("__metadata__ is " + what + ", not an object of strings");
      case state::meta_string:
        return fail("__metadata__ key " + quote(meta_key_) + " holds " + what + ", not a string");
      case state::tensor_value: return fail_tensor("its entry is " + what + ", not an object");
      case state::dtype_value: return fail_tensor("dtype is " + what + ", not a string");
      case state::shape_value: return fail_tensor("shape is " + what + ", not an array");
      case state::shape: return fail_tensor("shape holds " + what + ", not a non-negative integer");
      case state::offsets_value: return fail_tensor("data_offsets is " + what + ", not an array");
      case state::offsets: return fail_tensor("data_offsets holds " + what + ", not a non-negative integer");
      default: return fail("unexpected " + what + " in the header");
    }
  }

  safetensors_header& out_;
  state state_ = state::root;
  std::string problem_;
  std::string meta_key_;
  std::set<std::string, std::less<>> names_;
  bool seen_metadata_ = false;
  bool seen_dtype_ = false, seen_shape_ = false, seen_offsets_ = false;
  std::uint64_t offsets_[2] = {0, 0};
  std::size_t offsets_count_ = 0;
};

}  // namespace detail

// Parses and validates the header of a whole safetensors file held in file_bytes; label
// (usually the path) names the file in messages. See the top of this file for the rules.
inline safetensors_header parse_safetensors_header(std::span<const std::byte> file_bytes, std::string_view file_label) {
  const std::string where = "safetensors file " + detail::quote(file_label) + ": ";
  auto malformed = [&](const std::string& problem) { return error(errc::malformed_file, where + problem); };

  if (file_bytes.size() < 8)
    throw malformed("the file holds " + std::to_string(file_bytes.size()) +
                    " bytes, fewer than the 8 of the header length (truncated?)");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint64_t>(file_bytes[static_cast<std::size_t>(i)]);
  if (n == 0) throw malformed("the header length is 0");
  if (n > safetensors_max_header_size)
    throw malformed("the header length " + std::to_string(n) + " exceeds the limit of " +
                    std::to_string(safetensors_max_header_size) + " bytes");
  if (n > file_bytes.size() - 8)
    throw malformed("the header length " + std::to_string(n) + " reaches past the end of the file (" +
                    std::to_string(file_bytes.size()) + " bytes; truncated?)");

  safetensors_header h;
  h.header_size = n;
  h.data_size = file_bytes.size() - 8 - n;

  const char* text = reinterpret_cast<const char*>(file_bytes.data()) + 8;
  // nlohmann's lexer takes a NUL byte for the end of the input and would ignore what follows;
  // JSON has no raw NUL anywhere, so refuse it here.
  if (const void* nul = std::memchr(text, 0, static_cast<std::size_t>(n)))
    throw malformed("the header is not valid JSON: a NUL byte at header byte " +
                    std::to_string(static_cast<const char*>(nul) - text));
  detail::header_sax sax(h);
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text, text + n, &sax, nlohmann::json::input_format_t::json, /*strict=*/true);
  } catch (const nlohmann::json::exception& e) {  // not expected from the SAX parser; kept as a guard
    throw malformed("the header is not valid JSON: " + detail::printable(e.what(), 300));
  }
  if (!ok || !sax.finished())
    throw malformed(sax.problem().empty() ? std::string("the header is not a complete JSON object") : sax.problem());

  auto tensor = [&](const safetensors_entry& e) { return "tensor " + detail::quote(e.name) + ": "; };
  for (auto& e : h.entries) {
    const auto elements = detail::checked_elements(e.shape);
    if (!elements)
      throw malformed(tensor(e) + "the element count of shape " + detail::dims_string(e.shape) + " overflows");
    const std::size_t count = e.elements = *elements;
    const std::size_t esize = dtype_size(e.type);
    if (count > std::numeric_limits<std::uint64_t>::max() / esize)
      throw malformed(tensor(e) + "the byte size of shape " + detail::dims_string(e.shape) + " of " +
                      std::string(dtype_name(e.type)) + " overflows");
    const std::uint64_t need = count * esize;
    if (e.begin > e.end)
      throw malformed(tensor(e) + "data_offsets " + detail::offsets_string(e.begin, e.end) + " are reversed (begin > end)");
    if (e.end > h.data_size)
      throw malformed(tensor(e) + "data_offsets " + detail::offsets_string(e.begin, e.end) +
                      " reach past the end of the data section (" + std::to_string(h.data_size) + " bytes)");
    if (e.end - e.begin != need)
      throw malformed(tensor(e) + "data_offsets " + detail::offsets_string(e.begin, e.end) + " span " +
                      std::to_string(e.end - e.begin) + " bytes, but shape " + detail::dims_string(e.shape) + " of " +
                      std::string(dtype_name(e.type)) + " needs " + std::to_string(need) + " bytes");
  }

  // The tensors must tile the data section: sorted by (begin, end), each starts where the
  // previous one ended, and the last ends at the end of the file.
  std::vector<std::size_t> order(h.entries.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& x = h.entries[a];
    const auto& y = h.entries[b];
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  std::uint64_t covered = 0;
  const safetensors_entry* prev = nullptr;
  for (std::size_t i : order) {
    const auto& e = h.entries[i];
    if (e.begin < covered)
      throw malformed(tensor(e) + "data_offsets " + detail::offsets_string(e.begin, e.end) + " overlap tensor " +
                      detail::quote(prev->name) + " at " + detail::offsets_string(prev->begin, prev->end));
    if (e.begin > covered)
      throw malformed(tensor(e) + "data_offsets " + detail::offsets_string(e.begin, e.end) + " leave a gap of " +
                      std::to_string(e.begin - covered) + " bytes after " +
                      (prev ? "tensor " + detail::quote(prev->name) : std::string("the start of the data section")) +
                      " (safetensors data must be contiguous)");
    covered = e.end;
    prev = &e;
  }
  if (covered != h.data_size)
    throw malformed("the data section holds " + std::to_string(h.data_size) + " bytes but its tensors cover " +
                    std::to_string(covered) + " (" + std::to_string(h.data_size - covered) +
                    " trailing bytes; safetensors data must end with the last tensor)");
  h.reindex();
  return h;
}

// ---------------------------------------------------------------------------------------
// Layout planning for writers.

// A tensor to write: its name, dtype and shape.
struct tensor_spec {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::size_t> shape;
};

// What a writer puts in a file: the parsed form of the header and its bytes (the 8-byte
// length, the JSON and the space padding), followed in the file by header.data_size bytes.
struct safetensors_layout {
  safetensors_header header;
  std::string prefix;  // bytes [0, header.data_offset())
};

// Plans a file: offsets from shapes, the data ordered by descending dtype size (stable, so
// tensors of one dtype keep the caller's order) so that, with the 8-byte padded header, every
// tensor is aligned to its element size, as the reference writer does. The JSON lists
// "__metadata__" first (omitted when empty) and then the tensors in the caller's order.
// Throws errc::duplicate_name for a repeated name, errc::invalid_argument for the reserved
// name "__metadata__", an overflowing shape, text that is not UTF-8 or a header above the limit.
inline safetensors_layout plan_safetensors(std::span<const tensor_spec> tensors,
                                           const std::map<std::string, std::string>& metadata = {}) {
  safetensors_layout out;
  auto& h = out.header;
  h.metadata = metadata;
  h.entries.reserve(tensors.size());
  std::set<std::string_view> seen;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__")
      throw error(errc::invalid_argument, "safetensors writer: '__metadata__' is reserved and cannot name a tensor");
    if (!seen.insert(t.name).second)
      throw error(errc::duplicate_name, "safetensors writer: tensor " + detail::quote(t.name) + " given twice");
    safetensors_entry e;
    e.name = t.name;
    e.type = t.type;
    e.shape = t.shape;
    const auto elements = detail::checked_elements(t.shape);
    if (!elements || *elements > std::numeric_limits<std::uint64_t>::max() / dtype_size(t.type))
      throw error(errc::invalid_argument, "safetensors writer: tensor " + detail::quote(t.name) + ": the " +
                                              (elements ? "byte size" : "element count") + " of shape " +
                                              detail::dims_string(t.shape) + " overflows");
    e.elements = *elements;
    h.entries.push_back(std::move(e));
  }
  std::vector<std::size_t> order(h.entries.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return dtype_size(h.entries[a].type) > dtype_size(h.entries[b].type);
  });
  std::uint64_t offset = 0;
  for (std::size_t i : order) {
    auto& e = h.entries[i];
    const std::uint64_t bytes = static_cast<std::uint64_t>(e.elements) * dtype_size(e.type);
    if (offset > std::numeric_limits<std::uint64_t>::max() - bytes)
      throw error(errc::invalid_argument, "safetensors writer: the total data size overflows");
    e.begin = offset;
    e.end = offset + bytes;
    offset = e.end;
  }
  h.data_size = offset;

  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = j["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  for (const auto& e : h.entries) {
    auto& o = j[e.name] = nlohmann::ordered_json::object();
    o["dtype"] = std::string(dtype_name(e.type));
    o["shape"] = e.shape;
    o["data_offsets"] = {e.begin, e.end};
  }
  std::string text;
  try {
    text = j.dump();
  } catch (const nlohmann::json::exception& ex) {
    throw error(errc::invalid_argument,
                std::string("safetensors writer: a tensor name or metadata string is not valid UTF-8 (") + ex.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > safetensors_max_header_size)
    throw error(errc::invalid_argument, "safetensors writer: the header would take " + std::to_string(text.size()) +
                                            " bytes, above the limit of " + std::to_string(safetensors_max_header_size));
  h.header_size = text.size();
  out.prefix.reserve(8 + text.size());
  for (int i = 0; i < 8; ++i) out.prefix.push_back(static_cast<char>((h.header_size >> (8 * i)) & 0xff));
  out.prefix += text;
  h.reindex();
  return out;
}

}  // namespace alloy::io
