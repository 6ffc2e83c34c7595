// Read-only memory mapping of a whole file (POSIX), and the small file-descriptor helpers
// the writers share.
//
// mapped_file maps a regular file PROT_READ / MAP_PRIVATE and unmaps it on destruction; it
// is movable, not copyable. An empty file has an empty bytes() span and no mapping. Every
// failure throws alloy::error(errc::io_error) naming the path and the system's reason.
//
// The mapping reflects the file: if another process truncates the file while it is mapped,
// touching the lost pages raises SIGBUS. alloy only maps files it reads as inputs; do not
// rewrite a checkpoint while it is being merged.
//
// Resident memory: pages of a file mapping that were touched count in the process's
// resident set (as file-backed, reclaimable pages) until they are unmapped or released.
// A streaming reader calls release() on the ranges it has finished with to keep the
// resident set bounded, and prefetch() on the ranges it is about to read.
//
// Page-cache granularity: the mapping is advised MADV_HUGEPAGE, so that pages the merge
// itself brings in from disk enter the page cache as 2 MiB folios, and cached 2 MiB folios
// are mapped by one page-table entry each. Reading a file cached in 4 KiB folios costs a
// page fault every 64 KiB (the kernel's fault-around) and, measured on the merge
// benchmark's inputs, half the read rate (13-15 against 28-33 GB/s on 2 threads; see
// docs/performance.md). MADV_SEQUENTIAL is not used: on Linux 6.x its read-ahead fills the
// page cache with 4 KiB folios, slowing every later reader of the file.
#pragma once

#include <alloy/error.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace alloy::io {

// How a writer's commit() makes its files durable before renaming them into place:
//   fsync  the data and then the folder entry reach the disk first, so that not even a power
//          loss can leave a renamed but incomplete file (costs the disk's write time);
//   none   the kernel writes the pages back later, as cp and most tools do. An error or a
//          killed process still leaves no partial file (the rename comes last); only a crash
//          of the machine before the write-back can.
enum class sync_mode { fsync, none };

namespace detail {

inline std::string system_reason(int err) { return std::strerror(err); }

[[noreturn]] inline void throw_io(const std::string& what, const std::filesystem::path& path, int err) {
  throw error(errc::io_error, what + " '" + path.string() + "': " + system_reason(err));
}

// An owned file descriptor.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes and reports the error close() returned (0 when none): a write error on some file
  // systems appears only here.
  int close() noexcept {
    if (fd_ < 0) return 0;
    const int r = ::close(std::exchange(fd_, -1));
    return r == 0 ? 0 : errno;
  }

 private:
  int fd_ = -1;
};

// Writes all of data at offset, retrying short writes and EINTR; returns 0 or an errno.
inline int pwrite_all(int fd, const std::byte* data, std::size_t n, std::uint64_t offset) noexcept {
  while (n > 0) {
    const std::size_t step = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
    const ssize_t w = ::pwrite(fd, data, step, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    data += w;
    n -= static_cast<std::size_t>(w);
    offset += static_cast<std::uint64_t>(w);
  }
  return 0;
}

// fsync on the directory holding path, so that a rename into it survives a power loss.
// Best effort (some file systems refuse fsync on directories): it runs after the rename,
// when the output is complete and an error could not be undone anyway.
inline void sync_parent_directory(const std::filesystem::path& path) noexcept {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) (void)::fsync(fd.get());
}

}  // namespace detail

class mapped_file {
 public:
  mapped_file() = default;

  explicit mapped_file(std::filesystem::path path) : path_(std::move(path)) {
    detail::unique_fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) detail::throw_io("cannot open", path_, errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) detail::throw_io("cannot stat", path_, errno);
    if (S_ISDIR(st.st_mode)) detail::throw_io("cannot map", path_, EISDIR);
    if (!S_ISREG(st.st_mode))
      throw error(errc::io_error, "cannot map '" + path_.string() + "': not a regular file");
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ == 0) return;
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) detail::throw_io("cannot map", path_, errno);
    data_ = static_cast<const std::byte*>(p);
#ifdef MADV_HUGEPAGE
    ::madvise(p, size_, MADV_HUGEPAGE);  // a hint: refused (no THP in the kernel) changes nothing
#endif
    // The mapping outlives the descriptor, which unique_fd closes here.
  }

  mapped_file(mapped_file&& o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() { unmap(); }

  const std::filesystem::path& path() const noexcept { return path_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

  // Resident pages are dropped in whole blocks of release_block bytes (aligned in the address
  // space): a 2 MiB folio of the page cache is mapped by one entry, and dropping part of it
  // would split that entry (an interrupt to every core running the process) and leave the
  // rest of the block resident, past the end of the read.
  static constexpr std::size_t release_block = std::size_t{2} << 20;

  // Hints (madvise) over a sub-range of bytes(); ranges outside the mapping are clipped and
  // failures ignored: they only change performance.
  void prefetch(std::span<const std::byte> range) const noexcept { advise(range, MADV_WILLNEED, round::page); }
  // Drops from this process's resident set every block that range touches. The file's
  // contents stay in the page cache: a page a neighbouring range still reads is mapped
  // again, unchanged, when touched.
  void release(std::span<const std::byte> range) const noexcept { advise(range, MADV_DONTNEED, round::out); }
  // For a reader going forward in ranges smaller than a block: drops the blocks from the one
  // holding range's start (whose earlier part the previous range read) to the last one that
  // ends by range's end, so every block is dropped once the read has passed it. The block
  // holding the end stays for the next range.
  void release_passed(std::span<const std::byte> range) const noexcept {
    advise(range, MADV_DONTNEED, round::passed);
  }

 private:
  enum class round { page, out, passed };
  void advise(std::span<const std::byte> range, int advice, round how) const noexcept {
    if (!data_ || range.empty()) return;
    const auto base = reinterpret_cast<std::uintptr_t>(data_);
    auto lo = reinterpret_cast<std::uintptr_t>(range.data());
    auto hi = lo + range.size();
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const std::uintptr_t unit = how == round::page ? page : release_block;
    lo = lo / unit * unit;
    hi = how == round::out ? (hi + unit - 1) / unit * unit : how == round::passed ? hi / unit * unit : hi;
    if (lo < base) lo = base;  // base is page-aligned
    if (hi > base + size_) hi = base + size_;
    if (lo >= hi) return;
    ::madvise(reinterpret_cast<void*>(lo), hi - lo, advice);
  }
  void unmap() noexcept {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace alloy::io
