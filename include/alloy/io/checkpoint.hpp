// Checkpoints: one safetensors file, or a Hugging Face folder holding `model.safetensors` or
// shards listed by `model.safetensors.index.json`; read as one name -> tensor lookup, and
// written with a maximum shard size.
//
// open_checkpoint(path) accepts
//   - a safetensors file;
//   - an index file (a name ending in ".index.json"), its shards named relative to its folder;
//   - a folder: `model.safetensors` if present (as transformers prefers it), otherwise
//     `model.safetensors.index.json`; neither is errc::io_error.
// An index is JSON {"metadata": {...}, "weight_map": {"tensor": "shard file", ...}}. alloy
// checks (errc::malformed_file naming the index, tensor and shard): valid JSON without
// duplicate keys; "weight_map" an object of string -> string (other top-level keys and the
// contents of "metadata", total_size included, are not checked: writers disagree on them);
// shard names relative, without "..", inside the index's folder; every listed tensor present
// in the shard the index names; no tensor present in two shards; no shard tensor missing
// from the index. Every shard is mapped and validated as a safetensors_file.
//
// checkpoint_writer(folder, specs, metadata, max_shard_size) splits the tensors, in the
// given order, into shards of at most max_shard_size data bytes (a tensor larger than that
// gets a shard of its own), as transformers' save_pretrained does: one shard is written as
// `model.safetensors` without an index; n > 1 shards as `model-00001-of-0000n.safetensors`
// ... plus `model.safetensors.index.json` with {"metadata": {"total_size": <data bytes>},
// "weight_map": {...}} (sorted keys, indent 2). The metadata goes into every shard. The
// folder must exist. Nothing appears under the final names until commit(), which checks
// every shard, fsyncs and renames the shards, then writes the index; if any step fails, the
// files already renamed are removed again. Files of an earlier checkpoint in the folder are
// not touched (remove them first: a stale model.safetensors is preferred by readers).
#pragma once

#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/error.hpp>
#include <alloy/io/mapped_file.hpp>
#include <alloy/io/safetensors.hpp>
#include <alloy/io/safetensors_header.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alloy::io {

inline constexpr std::uint64_t default_max_shard_size = 5'000'000'000;
inline constexpr std::string_view single_file_name = "model.safetensors";
inline constexpr std::string_view index_file_name = "model.safetensors.index.json";

// One tensor of a checkpoint: the file holding it and its header entry.
struct checkpoint_tensor {
  const safetensors_file* file = nullptr;
  const safetensors_entry* entry = nullptr;

  const std::string& name() const noexcept { return entry->name; }
  dtype type() const noexcept { return entry->type; }
  const std::vector<std::size_t>& shape() const noexcept { return entry->shape; }
  std::size_t elements() const noexcept { return entry->elements; }
  std::uint64_t bytes() const noexcept { return entry->bytes(); }
  std::span<const std::byte> data() const noexcept { return file->bytes(*entry); }
  bool is_aligned() const noexcept { return file->is_aligned(*entry); }
  tensor_view view() const { return file->view(*entry); }
};

class checkpoint;
inline checkpoint open_checkpoint(const std::filesystem::path& path);

class checkpoint {
 public:
  checkpoint() = default;

  // The file, index or folder given to open_checkpoint.
  const std::filesystem::path& path() const noexcept { return path_; }
  // The index file read, or empty for a single file.
  const std::filesystem::path& index_path() const noexcept { return index_; }
  bool sharded() const noexcept { return !index_.empty(); }

  std::size_t file_count() const noexcept { return files_.size(); }
  const safetensors_file& file(std::size_t i) const { return *files_.at(i); }

  // Every tensor: files in shard-name order, each in its header order.
  const std::vector<checkpoint_tensor>& tensors() const noexcept { return tensors_; }
  std::size_t size() const noexcept { return tensors_.size(); }
  std::uint64_t total_bytes() const noexcept {
    std::uint64_t n = 0;
    for (const auto& t : tensors_) n += t.bytes();
    return n;
  }

  const checkpoint_tensor* find(std::string_view name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
  }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const checkpoint_tensor& at(std::string_view name) const {
    if (const auto* t = find(name)) return *t;
    throw error(errc::missing_tensor, "checkpoint '" + path_.string() + "' has no tensor " + detail::quote(name));
  }
  tensor_view view(std::string_view name) const { return at(name).view(); }
  std::span<const std::byte> bytes(std::string_view name) const { return at(name).data(); }
  bool is_aligned(std::string_view name) const { return at(name).is_aligned(); }
  bool all_aligned() const noexcept {
    for (const auto& f : files_)
      if (!f->all_aligned()) return false;
    return true;
  }

  // The "__metadata__" of the first file (shards normally carry the same).
  const std::map<std::string, std::string>& metadata() const noexcept {
    static const std::map<std::string, std::string> none;
    return files_.empty() ? none : files_.front()->metadata();
  }

  tensor_set to_tensor_set() const {
    tensor_set out;
    for (const auto& t : tensors_) {
      const auto src = t.data();
      const mutable_tensor_view dst = out.add(t.name(), t.type(), t.shape(), no_init);
      if (!src.empty()) std::memcpy(dst.data, src.data(), src.size());
    }
    return out;
  }

 private:
  friend checkpoint open_checkpoint(const std::filesystem::path& path);

  void add_file(std::unique_ptr<safetensors_file> f) {
    for (const auto& e : f->entries()) tensors_.push_back({f.get(), &e});
    files_.push_back(std::move(f));
  }
  void build_index() {
    by_name_.clear();
    for (std::size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name(), i);
  }

  std::filesystem::path path_;
  std::filesystem::path index_;
  std::vector<std::unique_ptr<safetensors_file>> files_;  // heap: entries and views stay put
  std::vector<checkpoint_tensor> tensors_;
  std::map<std::string_view, std::size_t, std::less<>> by_name_;  // views into the entries
};

namespace detail {

// Parses JSON text, refusing duplicate keys at any depth (nlohmann keeps one silently).
inline nlohmann::json parse_json_unique_keys(std::string_view text, const std::string& where) {
  using json = nlohmann::json;
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (ev == json::parse_event_t::key && !keys.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  if (text.find('\0') != std::string_view::npos)  // nlohmann would stop reading there
    throw error(errc::malformed_file, where + "not valid JSON: it contains a NUL byte");
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (auto p = what.find("] "); what.starts_with("[json.exception.") && p != std::string::npos) what.erase(0, p + 2);
    throw error(errc::malformed_file, where + "not valid JSON: " + printable(what, 300));
  }
  if (!duplicate.empty()) throw error(errc::malformed_file, where + "key " + quote(duplicate) + " appears twice");
  return j;
}

inline bool is_safe_relative(const std::filesystem::path& p) {
  if (p.empty() || p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace detail

// Opens a checkpoint (see the top of this file).
inline checkpoint open_checkpoint(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  checkpoint c;
  c.path_ = path;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status))
    throw error(errc::io_error, "cannot open checkpoint '" + path.string() + "': " +
                                    (ec ? ec.message() : std::string("no such file or directory")));
  fs::path index;
  if (fs::is_directory(status)) {
    if (fs::exists(path / single_file_name)) {
      c.add_file(std::make_unique<safetensors_file>(path / single_file_name));
      c.build_index();
      return c;
    }
    if (!fs::exists(path / index_file_name))
      throw error(errc::io_error, "checkpoint folder '" + path.string() + "' has neither " +
                                      std::string(single_file_name) + " nor " + std::string(index_file_name));
    index = path / index_file_name;
  } else if (path.filename().string().ends_with(".index.json")) {
    index = path;
  } else {
    c.add_file(std::make_unique<safetensors_file>(path));
    c.build_index();
    return c;
  }

  c.index_ = index;
  const std::string where = "checkpoint index '" + index.string() + "': ";
  auto malformed = [&](const std::string& problem) { return error(errc::malformed_file, where + problem); };
  const mapped_file text(index);
  if (text.size() > safetensors_max_header_size)
    throw malformed("the file holds " + std::to_string(text.size()) + " bytes, above the limit of " +
                    std::to_string(safetensors_max_header_size));
  const auto j = detail::parse_json_unique_keys(
      std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), where);
  if (!j.is_object()) throw malformed("the top level is not a JSON object");
  const auto wm = j.find("weight_map");
  if (wm == j.end()) throw malformed("no \"weight_map\"");
  if (!wm->is_object()) throw malformed("\"weight_map\" is not an object");

  // tensor -> shard name, and the shards in name order.
  std::map<std::string, std::string, std::less<>> listed;
  std::set<std::string> shard_names;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string()) throw malformed("tensor " + detail::quote(name) + ": its shard is not a string");
    const auto& s = shard.get_ref<const std::string&>();
    if (!detail::is_safe_relative(fs::path(s)))
      throw malformed("tensor " + detail::quote(name) + ": shard " + detail::quote(s) +
                      " is not a relative path inside the index's folder");
    listed.emplace(name, s);
    shard_names.insert(s);
  }

  const fs::path folder = index.parent_path();
  std::map<std::string_view, std::string_view, std::less<>> found;  // tensor -> shard holding it
  for (const auto& s : shard_names) {
    auto f = std::make_unique<safetensors_file>(folder / s);
    for (const auto& e : f->entries()) {
      auto [it, fresh] = found.emplace(e.name, s);
      if (!fresh)
        throw malformed("tensor " + detail::quote(e.name) + " appears in two shards, " + detail::quote(it->second) +
                        " and " + detail::quote(s));
      const auto l = listed.find(e.name);
      if (l == listed.end())
        throw malformed("shard " + detail::quote(s) + " holds tensor " + detail::quote(e.name) +
                        ", which the weight_map does not list");
      if (l->second != s)
        throw malformed("tensor " + detail::quote(e.name) + " is listed in shard " + detail::quote(l->second) +
                        " but found in shard " + detail::quote(s));
    }
    c.add_file(std::move(f));
  }
  for (const auto& [name, s] : listed)
    if (!found.count(name))
      throw malformed("tensor " + detail::quote(name) + " is listed in shard " + detail::quote(s) +
                      ", which does not hold it");
  c.build_index();
  return c;
}

namespace detail {

// Writes content to path through a temporary file, fsync (sync_mode::fsync) and rename.
inline void write_file_atomically(const std::filesystem::path& path, std::string_view content,
                                  sync_mode sync = sync_mode::fsync) {
  static std::atomic<unsigned> counter{0};
  std::filesystem::path tmp;
  unique_fd fd;
  for (int attempt = 0;; ++attempt) {
    tmp = path;
    tmp += ".tmp-" + std::to_string(::getpid()) + "-i" + std::to_string(counter.fetch_add(1));
    fd = unique_fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (fd) break;
    if (errno != EEXIST || attempt > 1000) throw_io("cannot create", tmp, errno);
  }
  int err = pwrite_all(fd.get(), reinterpret_cast<const std::byte*>(content.data()), content.size(), 0);
  const char* what = "cannot write";
  if (!err && sync == sync_mode::fsync && ::fsync(fd.get()) != 0) err = errno, what = "cannot sync";
  if (!err && (err = fd.close()) != 0) what = "cannot close";
  if (!err && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno, what = "cannot rename";
  if (err) {
    fd.reset();
    ::unlink(tmp.c_str());
    throw_io(what, tmp, err);
  }
  if (sync == sync_mode::fsync) sync_parent_directory(path);
}

}  // namespace detail

class checkpoint_writer {
 public:
  checkpoint_writer(std::filesystem::path folder, const std::vector<tensor_spec>& tensors,
                    const std::map<std::string, std::string>& metadata = {},
                    std::uint64_t max_shard_size = default_max_shard_size)
      : folder_(std::move(folder)) {
    if (max_shard_size == 0) throw error(errc::invalid_argument, "checkpoint writer: the maximum shard size is 0");
    // Plan the whole file first: it checks names and shapes before anything is created.
    const safetensors_header all = plan_safetensors(tensors, metadata).header;
    std::vector<std::vector<tensor_spec>> groups;
    std::uint64_t current = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const std::uint64_t b = all.find(tensors[i].name)->bytes();
      if (groups.empty() || (!groups.back().empty() && b > max_shard_size - std::min(current, max_shard_size))) {
        groups.emplace_back();
        current = 0;
      }
      groups.back().push_back(tensors[i]);
      current += b;
    }
    if (groups.empty()) groups.emplace_back();  // an empty checkpoint is one empty file
    const std::size_t n = groups.size();
    shards_.reserve(n);
    for (std::size_t s = 0; s < n; ++s) {
      std::string name(single_file_name);
      if (n > 1) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", s + 1, n);
        name = buf;
      }
      shards_.emplace_back(folder_ / name, groups[s], metadata);
      for (const auto& t : groups[s]) {
        shard_of_.emplace(t.name, s);
        weight_map_[t.name] = name;
      }
    }
    total_size_ = all.data_size;
  }

  checkpoint_writer(checkpoint_writer&&) noexcept = default;
  checkpoint_writer& operator=(checkpoint_writer&&) = delete;
  ~checkpoint_writer() { discard(); }

  const std::filesystem::path& folder() const noexcept { return folder_; }
  std::size_t shard_count() const noexcept { return shards_.size(); }
  const safetensors_writer& shard(std::size_t i) const { return shards_.at(i); }
  // The index file commit() writes, or empty for a single file.
  std::filesystem::path index_path() const { return shards_.size() > 1 ? folder_ / index_file_name : std::filesystem::path(); }
  std::uint64_t total_size() const noexcept { return total_size_; }
  std::size_t shard_of(std::string_view name) const {
    auto it = shard_of_.find(name);
    if (it == shard_of_.end())
      throw error(errc::missing_tensor, "checkpoint writer for '" + folder_.string() + "': no tensor " +
                                            detail::quote(name) + " was planned");
    return it->second;
  }

  // As safetensors_writer::write, routed to the tensor's shard; thread-safe likewise.
  void write(std::string_view name, std::span<const std::byte> data, std::uint64_t byte_offset = 0) {
    shards_[shard_of(name)].write(name, data, byte_offset);
  }
  void write(std::string_view name, tensor_view v) { shards_[shard_of(name)].write(name, v); }

  void commit(sync_mode sync = sync_mode::fsync) {
    if (committed_) throw error(errc::invalid_argument, "checkpoint writer for '" + folder_.string() + "': already committed");
    for (const auto& s : shards_) s.check_complete();
    std::vector<std::filesystem::path> published;
    try {
      for (auto& s : shards_) {
        s.commit(sync);
        published.push_back(s.path());
      }
      if (shards_.size() > 1) {
        nlohmann::json index;
        index["metadata"]["total_size"] = total_size_;
        index["weight_map"] = weight_map_;
        detail::write_file_atomically(folder_ / index_file_name, index.dump(2) + "\n", sync);
      }
    } catch (...) {
      for (const auto& p : published) ::unlink(p.c_str());
      throw;
    }
    committed_ = true;
  }

  // Removes every temporary file; idempotent.
  void discard() noexcept {
    for (auto& s : shards_) s.discard();
  }

 private:
  std::filesystem::path folder_;
  std::vector<safetensors_writer> shards_;
  std::map<std::string, std::size_t, std::less<>> shard_of_;
  std::map<std::string, std::string> weight_map_;
  std::uint64_t total_size_ = 0;
  bool committed_ = false;
};

// Writes a named tensor set as a checkpoint folder (see checkpoint_writer).
template <named_tensors R>
void write_checkpoint(const std::filesystem::path& folder, const R& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      std::uint64_t max_shard_size = default_max_shard_size) {
  const std::vector<named_view> views = named_views_of(tensors);
  checkpoint_writer w(folder, detail::specs_of(views, "write_checkpoint"), metadata, max_shard_size);
  for (const auto& v : views) w.write(v.name, v.view);
  w.commit();
}

}  // namespace alloy::io
