// kernels::fused_merge_tile (kernels/sparse_fused.hpp) must give bit for bit what the tile
// path gives: tau = x - b (kernels::difference), the mask (keep_band / keep_random), then
// kernels::stream with the combine functor. Every tile length up to a few batches and a full
// tile, f32 and bf16 rows, 1 to 5 models (1-4 take the row count as a template argument, 5 a
// loop), every mask kind (scaled and not), a top-k keeping none or half of the tile's ties
// (all kept: the next test case), recorded keep bits read from an offset that is no multiple
// of a word or a batch, NaN and Inf, the TIES and the linear functors.
#include <alloy/core/bf16.hpp>
#include <alloy/kernels/sparse_fused.hpp>
#include <alloy/kernels/stream.hpp>
#include <alloy/kernels/task_vector_combine.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <vector>

using namespace alloy;
using namespace alloy::kernels;

namespace {

// memcmp with a byte count of 0 (len 0: the vectors' data() may be null) is always equal.
bool same_bytes(const void* a, const void* b, std::size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

// The tile path for rows stored as f32 (or as bf16 bits when bf16).
template <class F>
std::vector<float> tile_path(const std::vector<float>& base, const std::vector<std::vector<float>>& x,
                             const std::vector<fused_input>& in, std::size_t len, const F& f) {
  const std::size_t n = x.size();
  std::vector<std::vector<float>> t(n, std::vector<float>(len));
  for (std::size_t i = 0; i < n; ++i) {
    difference(x[i].data(), base.data(), t[i].data(), len);
    const fused_input& m = in[i];
    switch (m.mask) {
      case fused_mask::all:
        if (m.multiply)
          for (auto& v : t[i]) v = v * m.scale;
        break;
      case fused_mask::none:
        std::fill(t[i].begin(), t[i].end(), 0.f);
        break;
      case fused_mask::topk:
        keep_band(t[i].data(), len, m.key, m.ties, 0, 0, m.scale, false);
        break;
      case fused_mask::random:
        keep_random(t[i].data(), m.u, len, m.p, m.scale);
        break;
      case fused_mask::bits:
        keep_bits(t[i].data(), m.bits, m.bit0, len, m.scale);
        break;
    }
  }
  std::vector<source> src{{base.data(), dtype::f32}};
  for (auto& r : t) src.push_back({r.data(), dtype::f32});
  std::vector<float> out(len);
  stream<float>(src.data(), src.size(), {out.data(), dtype::f32}, 0, len, f);
  return out;
}

}  // namespace

TEST_CASE("fused merge tile equals the tile path", "[kernels][sparse]") {
  std::mt19937 gen(11);
  std::normal_distribution<float> d;
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  const std::vector<float> w{0.5f, -0.3f, 0.2f, 1.0f, -0.8f};
  constexpr std::size_t rows = 5;
  std::size_t compared = 0;
  for (std::size_t len : {0u, 1u, 5u, 15u, 16u, 17u, 31u, 33u, 64u, 79u, 2048u})
    for (bool bf : {false, true}) {
      std::vector<float> base(len);
      std::vector<std::vector<float>> x(rows, std::vector<float>(len));
      std::vector<std::vector<std::uint16_t>> xh(rows, std::vector<std::uint16_t>(len));
      std::vector<std::uint16_t> bh(len);
      std::vector<std::vector<float>> u(rows, std::vector<float>(len));
      for (std::size_t j = 0; j < len; ++j) {
        base[j] = d(gen);
        for (std::size_t i = 0; i < rows; ++i) {
          x[i][j] = j % 5 == 0 ? base[j] + 0.25f : base[j] + 0.1f * d(gen);
          if (j % 23 == 3 && i == 1) x[i][j] = std::numeric_limits<float>::quiet_NaN();
          if (j % 29 == 4 && i == 2) x[i][j] = std::numeric_limits<float>::infinity();
          u[i][j] = uni(gen);
        }
        if (bf) {  // the rows hold bf16 values; the tile path reads them widened
          bh[j] = bf16(base[j]).bits;
          base[j] = static_cast<float>(bf16::from_bits(bh[j]));
          for (std::size_t i = 0; i < rows; ++i) {
            xh[i][j] = bf16(x[i][j]).bits;
            x[i][j] = static_cast<float>(bf16::from_bits(xh[i][j]));
          }
        }
      }
      std::vector<fused_input> in(rows);
      in[0].mask = fused_mask::topk;  // the cut in a tie group at 0.25, ties kept before len / 2
      in[0].key = magnitude_key(bf ? static_cast<float>(bf16::from_bits(xh[0].empty() ? 0 : xh[0][0])) -
                                         static_cast<float>(bf16::from_bits(bh.empty() ? 0 : bh[0]))
                                   : 0.25f);
      in[0].ties = len / 2;
      in[0].scale = 1.5f;
      in[4] = in[0];  // the same cut with no tie kept in this tile
      in[4].ties = 0;
      in[1].mask = fused_mask::random;
      in[1].u = u[1].data();
      in[1].p = 0.3f;
      in[1].scale = 2.0f;
      in[2].mask = fused_mask::all;
      in[2].multiply = true;
      in[2].scale = 0.5f;
      std::vector<std::uint64_t> keep(len / 64 + 3);
      for (auto& word : keep) word = std::uint64_t{gen()} << 32 | gen();
      for (std::size_t i = 0; i < rows; ++i) {
        in[i].data = bf ? static_cast<const void*>(xh[i].data()) : x[i].data();
        in[i].bf16 = bf;
      }
      const void* b = bf ? static_cast<const void*>(bh.data()) : base.data();
      for (int kind3 = 0; kind3 < 3; ++kind3)  // model 3: none, all, or keep bits from bit 5 + len % 61
      for (std::size_t n = 1; n <= rows; ++n)
      for (int which = 0; which < 2; ++which) {
        CAPTURE(len, bf, kind3, n, which);
        in[3].mask = kind3 == 0 ? fused_mask::none : kind3 == 1 ? fused_mask::all : fused_mask::bits;
        in[3].bits = keep.data();
        in[3].bit0 = 5 + len % 61;
        in[3].scale = kind3 == 2 ? 0.75f : 1.f;
        task_vector_combine<float> ties_f;
        ties_f.weights = std::span(w.data(), n);
        ties_f.kind = combine_kind::ties;
        ties_f.divide = true;
        task_vector_combine<float> linear_f;
        linear_f.weights = std::span(w.data(), n);
        linear_f.scale = true;
        linear_f.lambda = 0.7f;
        const std::vector<std::vector<float>> xn(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(n));
        std::vector<float> got(len, -7.f);
        std::vector<float> want;
        if (which == 0) {
          fused_merge_tile(b, bf, in.data(), n, got.data(), false, len, 4096, ties_f);
          want = tile_path(base, xn, in, len, ties_f);
        } else {
          fused_merge_tile(b, bf, in.data(), n, got.data(), false, len, 4096, linear_f);
          want = tile_path(base, xn, in, len, linear_f);
        }
        CHECK(same_bytes(got.data(), want.data(), len * sizeof(float)));
        // The same tile stored as bf16: kernels::convert's rounding of the float result.
        std::vector<std::uint16_t> got16(len + 1, 0x1234), want16(len + 1, 0x1234);
        if (which == 0)
          fused_merge_tile(b, bf, in.data(), n, got16.data(), true, len, 4096, ties_f);
        else
          fused_merge_tile(b, bf, in.data(), n, got16.data(), true, len, 4096, linear_f);
        for (std::size_t j = 0; j < len; ++j) want16[j] = bf16(want[j]).bits;
        CHECK(got16 == want16);
        // With non-temporal stores (an output aligned to a 64-byte batch): the same bits.
        {
          std::vector<unsigned char> raw(len * sizeof(float) + 128, 0xab);
          void* aligned = raw.data() + (64 - reinterpret_cast<std::uintptr_t>(raw.data()) % 64);
          for (bool h : {false, true}) {
            fused_merge_tile(b, bf, in.data(), n, aligned, h, len, 4096, which == 0 ? ties_f : linear_f, true);
            if (h)
              CHECK(same_bytes(aligned, want16.data(), len * sizeof(std::uint16_t)));
            else
              CHECK(same_bytes(aligned, want.data(), len * sizeof(float)));
          }
        }
        compared += len;
      }
    }
  CHECK(compared > 15 * 8000);
}

// set_topk: every tie kept becomes key > k - 1 with no ties, which keeps the same entries,
// in the batches and the scalar tail; a cut at key 0 keeps its form (k - 1 would wrap).
TEST_CASE("fused top-k with every tie kept", "[kernels][sparse]") {
  const std::size_t len = 37;  // two batches and a tail
  std::vector<float> base(len, 1.f), x(len);
  for (std::size_t j = 0; j < len; ++j) x[j] = 1.f + (j % 3 == 0 ? 0.5f : j % 3 == 1 ? 0.25f : 0.f);
  task_vector_combine<float> f;
  const std::vector<float> w{1.f};
  f.weights = w;
  f.add_base = false;
  for (float cut : {0.25f, 0.f}) {
    CAPTURE(cut);
    fused_input plain;
    plain.data = x.data();
    plain.mask = fused_mask::topk;
    plain.key = magnitude_key(cut);
    plain.ties = len;
    fused_input set = plain;
    set.set_topk(plain.key, 5 * len, len);  // tie limits past the tile clamp to len
    CHECK(set.ties == (cut == 0.f ? len : 0));
    CHECK(set.key == (cut == 0.f ? 0u : plain.key - 1));
    std::vector<float> got(len), want(len);
    fused_merge_tile(base.data(), false, &set, 1, got.data(), false, len, 0, f);
    fused_merge_tile(base.data(), false, &plain, 1, want.data(), false, len, 0, f);
    CHECK(same_bytes(got.data(), want.data(), len * sizeof(float)));
    // tau = 0.5, 0.25, 0: the 0.25s are the kept ties; with the cut at 0 every entry is kept
    for (std::size_t j = 0; j < len; ++j) CHECK(got[j] == x[j] - 1.f);
  }
  fused_input some;
  some.set_topk(7, 3, len);  // some ties kept: stored as given
  CHECK((some.key == 7 && some.ties == 3));
}

// keep_bits against its rule written out (bit g is bit g % 64 of word g / 64; kept entries
// scaled, dropped ones +0), from offsets on and off a word and a batch; bits_at reads any
// window of up to 32 bits.
TEST_CASE("keep bits read back", "[kernels][sparse]") {
  std::mt19937_64 gen(5);
  for (std::size_t at : {0u, 3u, 64u, 70u})
    for (std::size_t n : {0u, 1u, 16u, 17u, 63u, 64u, 65u, 200u}) {
      CAPTURE(at, n);
      std::vector<std::uint64_t> bits((at + n) / 64 + 2);
      for (auto& w : bits) w = gen();
      std::vector<float> t(n);
      for (std::size_t j = 0; j < n; ++j) t[j] = j % 3 == 0 ? -(1.f + static_cast<float>(j)) : 1.f + static_cast<float>(j);
      std::vector<float> kept = t;
      keep_bits(kept.data(), bits.data(), at, n, 2.f);
      for (std::size_t j = 0; j < n; ++j) {
        const bool set = (bits[(at + j) / 64] >> ((at + j) % 64)) & 1;
        CHECK(kept[j] == (set ? 2.f * t[j] : 0.f));
        CHECK(std::signbit(kept[j]) == (set && t[j] < 0));
      }
      for (std::size_t g = 0; g + 32 <= bits.size() * 64; g += 7)
        for (unsigned count : {1u, 16u, 32u}) {
          std::uint32_t want = 0;
          for (unsigned b = 0; b < count; ++b)
            want |= static_cast<std::uint32_t>((bits[(g + b) / 64] >> ((g + b) % 64)) & 1) << b;
          CHECK(bits_at(bits.data(), g, count) == want);
        }
    }
}
