// safetensors files: a memory-mapped, validated reader with zero-copy views, and a writer
// that plans the header first, takes tensor data as it is produced and publishes the file
// atomically. Sharded checkpoints (folders, index files) are in checkpoint.hpp; the header
// rules are listed in safetensors_header.hpp.
//
//   alloy::io::safetensors_file f("model.safetensors");   // maps and validates
//   for (const auto& e : f.entries()) ... e.name, e.type, e.shape ...
//   alloy::tensor_view v = f.view("lm_head.weight");       // zero-copy, typed
//
//   alloy::io::safetensors_writer w("out.safetensors", {{"w", dtype::bf16, {4096, 4096}}});
//   w.write("w", chunk_bytes, byte_offset);   // any order, any chunking, from any thread
//   w.commit();                               // fsync + rename onto out.safetensors
//
// Alignment. tensor_view is read with typed loads, so view() requires a tensor's data to be
// aligned to its element size. The format does not promise it: the reference writer (and
// alloy's) pads the header to a multiple of 8 bytes and orders data by descending element
// size, so their files are always aligned, but a file from another writer may not be. Ask
// is_aligned(name) / all_aligned(); view() throws errc::invalid_argument for a misaligned
// tensor, and bytes() (raw std::byte access, copy with memcpy) always works.
#pragma once

#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>
#include <alloy/error.hpp>
#include <alloy/io/mapped_file.hpp>
#include <alloy/io/safetensors_header.hpp>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace alloy::io {

// A safetensors file, mapped read-only and validated on construction (errc::io_error when
// the file cannot be read, errc::malformed_file when it breaks the format). Views and spans
// point into the mapping and live as long as this object (moving it keeps them valid).
class safetensors_file {
 public:
  explicit safetensors_file(std::filesystem::path path)
      : map_(std::make_unique<mapped_file>(std::move(path))),
        header_(parse_safetensors_header(map_->bytes(), map_->path().string())) {}

  const std::filesystem::path& path() const noexcept { return map_->path(); }
  const safetensors_header& header() const noexcept { return header_; }
  const std::vector<safetensors_entry>& entries() const noexcept { return header_.entries; }
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }
  std::size_t size() const noexcept { return header_.entries.size(); }
  const mapped_file& mapping() const noexcept { return *map_; }

  const safetensors_entry* find(std::string_view name) const { return header_.find(name); }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // Throws errc::missing_tensor naming the file.
  const safetensors_entry& at(std::string_view name) const {
    if (const auto* e = find(name)) return *e;
    throw error(errc::missing_tensor,
                "safetensors file '" + path().string() + "' has no tensor " + detail::quote(name));
  }

  // The tensor's bytes in the mapping (little-endian, row-major).
  std::span<const std::byte> bytes(const safetensors_entry& e) const noexcept {
    return {map_->data() + header_.data_offset() + e.begin, static_cast<std::size_t>(e.bytes())};
  }
  std::span<const std::byte> bytes(std::string_view name) const { return bytes(at(name)); }

  bool is_aligned(const safetensors_entry& e) const noexcept {
    return e.elements == 0 || reinterpret_cast<std::uintptr_t>(bytes(e).data()) % dtype_size(e.type) == 0;
  }
  bool is_aligned(std::string_view name) const { return is_aligned(at(name)); }
  bool all_aligned() const noexcept {
    for (const auto& e : entries())
      if (!is_aligned(e)) return false;
    return true;
  }

  // A typed zero-copy view; throws errc::invalid_argument when the data is misaligned.
  tensor_view view(const safetensors_entry& e) const {
    if (!is_aligned(e))
      throw error(errc::invalid_argument,
                  "safetensors file '" + path().string() + "': tensor " + detail::quote(e.name) + " starts at file offset " +
                      std::to_string(header_.data_offset() + e.begin) + ", not a multiple of its " +
                      std::to_string(dtype_size(e.type)) + "-byte elements: read it with bytes() and copy it");
    return {bytes(e).data(), e.elements, e.type};
  }
  tensor_view view(std::string_view name) const { return view(at(name)); }

  // Typed values of a tensor of dtype dtype_of<T>; throws errc::dtype_mismatch otherwise.
  template <storage_scalar T>
  std::span<const T> values(std::string_view name) const {
    const auto& e = at(name);
    if (e.type != dtype_of<T>)
      throw error(errc::dtype_mismatch, "safetensors file '" + path().string() + "': tensor " + detail::quote(name) +
                                            " holds " + std::string(dtype_name(e.type)) + ", not " +
                                            std::string(dtype_name(dtype_of<T>)));
    const tensor_view v = view(e);
    return {static_cast<const T*>(v.data), v.size};
  }

  // Copies every tensor (in header order) into an owning set; for small files and tests.
  tensor_set to_tensor_set() const {
    tensor_set out;
    for (const auto& e : entries()) {
      const auto src = bytes(e);
      const mutable_tensor_view dst = out.add(e.name, e.type, e.shape, no_init);
      if (!src.empty()) std::memcpy(dst.data, src.data(), src.size());
    }
    return out;
  }

 private:
  std::unique_ptr<mapped_file> map_;  // on the heap: views stay valid when the file object moves
  safetensors_header header_;
};

// Writes one safetensors file: the header (planned by plan_safetensors from names, dtypes and
// shapes) is written first to a temporary file next to the destination,
// "<path>.tmp-<pid>-<n>", created with mode 0666 & ~umask and sized to the whole file; the
// caller then writes every tensor's bytes with write() at their final place (pwrite: memory
// use is bounded by the caller's buffers); commit() checks that every byte was written,
// fsyncs, and renames the temporary onto path. Destroying an uncommitted writer (after an
// error, for instance) removes the temporary, so no partial file survives an error; a killed
// process may leave a "*.tmp-*" file, never a partial file at path.
//
// write() may be called concurrently from several threads for different byte ranges;
// commit() and destruction must not race with write().
class safetensors_writer {
 public:
  safetensors_writer(std::filesystem::path path, const std::vector<tensor_spec>& tensors,
                     const std::map<std::string, std::string>& metadata = {})
      : safetensors_writer(std::move(path), plan_safetensors(tensors, metadata)) {}

  safetensors_writer(std::filesystem::path path, safetensors_layout layout)
      : path_(std::move(path)), layout_(std::move(layout)) {
    const auto& h = layout_.header;
    written_ = std::make_unique<std::atomic<std::uint64_t>[]>(h.entries.size());
    for (std::size_t i = 0; i < h.entries.size(); ++i) written_[i].store(0, std::memory_order_relaxed);
    create_temporary();
    try {
      if (::ftruncate(fd_.get(), static_cast<off_t>(h.file_size())) != 0)
        detail::throw_io("cannot size", tmp_, errno);
      reserve_space(h.file_size());
      if (int err = detail::pwrite_all(fd_.get(), reinterpret_cast<const std::byte*>(layout_.prefix.data()),
                                       layout_.prefix.size(), 0))
        detail::throw_io("cannot write", tmp_, err);
    } catch (...) {
      discard();
      throw;
    }
  }

  safetensors_writer(safetensors_writer&& o) noexcept
      : path_(std::move(o.path_)),
        tmp_(std::exchange(o.tmp_, {})),
        layout_(std::move(o.layout_)),
        fd_(std::move(o.fd_)),
        written_(std::move(o.written_)),
        committed_(std::exchange(o.committed_, true)) {}
  safetensors_writer& operator=(safetensors_writer&&) = delete;
  safetensors_writer(const safetensors_writer&) = delete;
  safetensors_writer& operator=(const safetensors_writer&) = delete;
  ~safetensors_writer() { discard(); }

  const std::filesystem::path& path() const noexcept { return path_; }
  const std::filesystem::path& temporary_path() const noexcept { return tmp_; }
  // The planned header: entries with their offsets, metadata, sizes.
  const safetensors_header& header() const noexcept { return layout_.header; }
  bool committed() const noexcept { return committed_; }

  // Writes data at byte_offset inside tensor `name`'s bytes.
  void write(std::string_view name, std::span<const std::byte> data, std::uint64_t byte_offset = 0) {
    const auto& e = entry(name);
    if (byte_offset > e.bytes() || data.size() > e.bytes() - byte_offset)
      throw error(errc::invalid_argument, where() + "tensor " + detail::quote(name) + ": writing " +
                                              std::to_string(data.size()) + " bytes at byte " + std::to_string(byte_offset) +
                                              " passes its end (" + std::to_string(e.bytes()) + " bytes)");
    if (int err = detail::pwrite_all(fd_.get(), data.data(), data.size(), layout_.header.data_offset() + e.begin + byte_offset))
      detail::throw_io("cannot write", tmp_, err);
    written_[static_cast<std::size_t>(&e - layout_.header.entries.data())].fetch_add(data.size(), std::memory_order_relaxed);
  }

  // Writes a whole tensor; its dtype and element count must match the plan.
  void write(std::string_view name, tensor_view v) {
    const auto& e = entry(name);
    if (v.type != e.type)
      throw error(errc::dtype_mismatch, where() + "tensor " + detail::quote(name) + " is planned as " +
                                            std::string(dtype_name(e.type)) + ", given " + std::string(dtype_name(v.type)));
    if (v.size != e.elements)
      throw error(errc::size_mismatch, where() + "tensor " + detail::quote(name) + " is planned with " +
                                           std::to_string(e.elements) + " elements, given " + std::to_string(v.size));
    write(name, std::span<const std::byte>(static_cast<const std::byte*>(v.data), v.bytes()));
  }

  // Checks that each tensor received exactly its byte count (errc::invalid_argument
  // otherwise, the writer staying usable), then fsyncs (sync_mode::fsync), closes and renames
  // onto path().
  void commit(sync_mode sync = sync_mode::fsync) {
    check_complete();
    if (sync == sync_mode::fsync && ::fsync(fd_.get()) != 0) detail::throw_io("cannot sync", tmp_, errno);
    if (int err = fd_.close()) detail::throw_io("cannot close", tmp_, err);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      throw error(errc::io_error, "cannot rename '" + tmp_.string() + "' to '" + path_.string() + "': " +
                                      detail::system_reason(errno));
    committed_ = true;
    tmp_.clear();
    if (sync == sync_mode::fsync) detail::sync_parent_directory(path_);
  }

  // Throws errc::invalid_argument unless every tensor received exactly its byte count (a
  // tensor written twice in part counts twice) and the writer is still open.
  void check_complete() const {
    if (committed_ || !fd_) throw error(errc::invalid_argument, where() + "the file is already committed or discarded");
    const auto& entries = layout_.header.entries;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const std::uint64_t got = written_[i].load(std::memory_order_relaxed);
      if (got != entries[i].bytes())
        throw error(errc::invalid_argument, where() + "tensor " + detail::quote(entries[i].name) + " received " +
                                                std::to_string(got) + " of its " + std::to_string(entries[i].bytes()) +
                                                " bytes");
    }
  }

  // Abandons the file now: closes and removes the temporary. Idempotent.
  void discard() noexcept {
    fd_.reset();
    if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
    tmp_.clear();
  }

 private:
  std::string where() const { return "safetensors writer for '" + path_.string() + "': "; }

  const safetensors_entry& entry(std::string_view name) const {
    if (committed_ || !fd_) throw error(errc::invalid_argument, where() + "the file is already committed or discarded");
    if (const auto* e = layout_.header.find(name)) return *e;
    throw error(errc::missing_tensor, where() + "no tensor " + detail::quote(name) + " was planned");
  }

  // Allocates the file's blocks up front (Linux fallocate): a full disk fails here, before any
  // arithmetic, and writing into allocated blocks is faster than extending a sparse file.
  // File systems without fallocate (EOPNOTSUPP) keep the sparse file.
  void reserve_space(std::uint64_t bytes) {
#ifdef __linux__
    if (bytes == 0) return;
    if (::fallocate(fd_.get(), 0, 0, static_cast<off_t>(bytes)) != 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
      const int err = errno;
      if (err == ENOSPC)
        throw error(errc::io_error, "cannot write " + detail::quote(tmp_.string()) + ": the output needs " +
                                        std::to_string(bytes) + " bytes and its file system has less free space");
      detail::throw_io("cannot allocate", tmp_, err);
    }
#else
    (void)bytes;
#endif
  }

  void create_temporary() {
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0;; ++attempt) {
      std::filesystem::path t = path_;
      t += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
      const int fd = ::open(t.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd >= 0) {
        fd_ = detail::unique_fd(fd);
        tmp_ = std::move(t);
        return;
      }
      if (errno != EEXIST || attempt > 1000) detail::throw_io("cannot create", t, errno);
    }
  }

  std::filesystem::path path_;
  std::filesystem::path tmp_;
  safetensors_layout layout_;
  detail::unique_fd fd_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> written_;
  bool committed_ = false;
};

namespace detail {
// Names, dtypes and shapes of views, checking that each shape holds its view's elements.
inline std::vector<tensor_spec> specs_of(const std::vector<named_view>& views, std::string_view who) {
  std::vector<tensor_spec> specs;
  specs.reserve(views.size());
  for (const auto& v : views) {
    if (shape_elements(v.shape, v.name) != v.view.size)
      throw error(errc::shape_mismatch, std::string(who) + ": tensor " + quote(v.name) + ": shape " +
                                            shape_string(v.shape) + " does not hold " + std::to_string(v.view.size) +
                                            " elements");
    specs.push_back({std::string(v.name), v.view.type, v.shape});
  }
  return specs;
}
}  // namespace detail

// Writes a named tensor set (a tensor_set, or any range of (name, tensor) pairs) to path
// atomically, in its iteration order; metadata goes to "__metadata__".
template <named_tensors R>
void write_safetensors(const std::filesystem::path& path, const R& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  const std::vector<named_view> views = named_views_of(tensors);
  safetensors_writer w(path, detail::specs_of(views, "write_safetensors"), metadata);
  for (const auto& v : views) w.write(v.name, v.view);
  w.commit();
}

// Reads a whole file into an owning set.
inline tensor_set read_safetensors(const std::filesystem::path& path) { return safetensors_file(path).to_tensor_set(); }

}  // namespace alloy::io
