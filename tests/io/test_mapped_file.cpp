// mapped_file: contents, and how release() / release_passed() drop resident pages in whole
// release blocks (checked through the mapping's Rss in /proc/self/smaps).
#include "io_test_util.hpp"

#include <alloy/io/mapped_file.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace {

using alloy::io::mapped_file;
constexpr std::size_t block = mapped_file::release_block;

// Resident bytes of the mapping that starts at `start`, or nothing without /proc.
std::optional<std::size_t> resident_bytes(const void* start) {
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) return std::nullopt;
  std::ostringstream want;
  want << std::hex << reinterpret_cast<std::uintptr_t>(start) << '-';
  bool in_vma = false;
  for (std::string line; std::getline(smaps, line);) {
    if (line.rfind(want.str(), 0) == 0) in_vma = true;
    else if (in_vma && line.rfind("Rss:", 0) == 0) return std::stoull(line.substr(4)) * 1024;
  }
  return std::nullopt;
}

// Sums one byte per 4 KiB page, so every page is mapped; returns the sum so that the reads
// are not optimised away.
unsigned touch(const mapped_file& m) {
  unsigned s = 0;
  for (std::size_t i = 0; i < m.size(); i += 4096) s += static_cast<unsigned>(m.data()[i]);
  return s;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + i / 4096) & 0xff);
  return s;
}

bool same_bytes(const mapped_file& m, const std::string& want) {
  return m.size() == want.size() && std::memcmp(m.data(), want.data(), want.size()) == 0;
}

// The bytes of [lo, hi) (addresses) inside the mapping.
std::size_t overlap(const mapped_file& m, std::uintptr_t lo, std::uintptr_t hi) {
  const auto base = reinterpret_cast<std::uintptr_t>(m.data());
  lo = std::max(lo, base);
  hi = std::min(hi, base + m.size());
  return hi > lo ? hi - lo : 0;
}

std::size_t pages(std::size_t n) { return (n + 4095) / 4096 * 4096; }

}  // namespace

TEST_CASE("mapped_file: release drops every block the range touches, contents unchanged", "[io][mapped_file]") {
  io_test::scratch_dir dir;
  const std::string data = pattern(7 * block + 1234);
  io_test::write_file(dir / "f.bin", data);
  const mapped_file m(dir / "f.bin");
  REQUIRE(same_bytes(m, data));
  CHECK(touch(m) > 0);
  const auto full = resident_bytes(m.data());
  if (!full) {
    WARN("no /proc/self/smaps: residency not checked");
    return;
  }
  // One byte in the middle: its whole block goes (the mapping's start need not be
  // block-aligned, so the block is computed from the address).
  const auto base = reinterpret_cast<std::uintptr_t>(m.data());
  const std::uintptr_t at = base + 3 * block + 12345;
  m.release({m.data() + 3 * block + 12345, 1});
  const std::size_t dropped = overlap(m, at / block * block, at / block * block + block);
  CHECK(dropped > 0);
  CHECK(*resident_bytes(m.data()) <= pages(m.size()) - dropped);
  // Released pages read back unchanged.
  CHECK(same_bytes(m, data));
  // The last bytes: clipped to the mapping.
  CHECK(touch(m) > 0);
  m.release({m.data() + m.size() - 1, 1});
  CHECK(*resident_bytes(m.data()) <= pages(m.size()) - overlap(m, (base + m.size() - 1) / block * block, base + m.size()));
  m.release(m.bytes());
  CHECK(*resident_bytes(m.data()) == 0);
  CHECK(same_bytes(m, data));
}

TEST_CASE("mapped_file: release_passed keeps a forward reader below two blocks", "[io][mapped_file]") {
  io_test::scratch_dir dir;
  const std::string data = pattern(9 * block + 4321);
  io_test::write_file(dir / "f.bin", data);
  const mapped_file m(dir / "f.bin");
  if (!resident_bytes(m.data())) {
    WARN("no /proc/self/smaps: residency not checked");
    return;
  }
  // Ranges of 300 KiB (not dividing a block), each read then released as passed: at any
  // time only the block holding the read's position and the one being entered stay mapped.
  constexpr std::size_t range = 300 * 1024;
  std::size_t most = 0;
  unsigned sum = 0;
  for (std::size_t at = 0; at < m.size(); at += range) {
    const std::size_t n = std::min(range, m.size() - at);
    for (std::size_t i = 0; i < n; i += 4096) sum += static_cast<unsigned>(m.data()[at + i]);
    m.release_passed({m.data() + at, n});
    most = std::max(most, *resident_bytes(m.data()));
  }
  CHECK(sum > 0);
  CHECK(most <= 2 * block);
  // A range inside one block drops nothing before the read has left the block: the block
  // holding the range's end stays, so a second range of the same block is not read twice.
  m.release(m.bytes());
  const auto base = reinterpret_cast<std::uintptr_t>(m.data());
  const std::size_t first_whole = (base + block - 1) / block * block - base;  // offset of a block start
  CHECK(touch(m) > 0);
  const std::size_t before = *resident_bytes(m.data());
  m.release_passed({m.data() + first_whole + 100, 1000});
  CHECK(*resident_bytes(m.data()) == before);
  CHECK(same_bytes(m, data));
}
