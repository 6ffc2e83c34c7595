// kernels::band_scan / band_scan_bf16 (kernels/band_filter.hpp), the filter of the sampled
// top-k: entries above the band counted, heavy keys counted, the other band entries written
// in order. Checked against a scalar reference on every tile length up to a few batches,
// tau computed from f32 and bf16 pairs and read from a tile, bands of one key, the whole key
// range, bands holding NaN and Inf, and heavy keys inside and outside the band.
#include <alloy/core/bf16.hpp>
#include <alloy/kernels/band_filter.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <bit>
#include <random>
#include <span>
#include <vector>

using namespace alloy;
using namespace alloy::kernels;

namespace {

struct reference {
  band_tally t;
  std::vector<std::uint32_t> keys, pos;
};

reference scan_reference(const std::vector<float>& v, std::uint32_t first, const band_query& q) {
  reference r;
  for (std::size_t j = 0; j < v.size(); ++j) {
    const std::uint32_t k = magnitude_key(v[j]);
    if (k > q.high) ++r.t.above;
    if (k < q.low || k > q.high) continue;
    bool heavy = false;
    for (std::size_t h = 0; h < q.n_heavy && !heavy; ++h)
      if (k == q.heavy[h]) {
        ++r.t.heavy_count[h];
        heavy = true;
      }
    if (!heavy) {
      r.keys.push_back(k);
      r.pos.push_back(first + static_cast<std::uint32_t>(j));
    }
  }
  return r;
}

void check(const reference& want, const band_tally& t, const std::vector<std::uint32_t>& keys,
           const std::vector<std::uint32_t>& pos, std::size_t w, const band_query& q) {
  CHECK(t.above == want.t.above);
  for (std::size_t h = 0; h < q.n_heavy; ++h) CHECK(t.heavy_count[h] == want.t.heavy_count[h]);
  REQUIRE(w == want.keys.size());
  CHECK(std::vector<std::uint32_t>(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(w)) == want.keys);
  CHECK(std::vector<std::uint32_t>(pos.begin(), pos.begin() + static_cast<std::ptrdiff_t>(w)) == want.pos);
}

band_query with_heavy(std::uint32_t low, std::uint32_t high, std::vector<std::uint32_t> heavy) {
  band_query q{low, high};
  REQUIRE(q.set_heavy(heavy) == heavy.size());
  return q;
}

// A band of keys, one key, everything (heavy keys 0, 0.25 and NaN), up to Inf (heavy 0.5, 4).
std::vector<band_query> test_queries() {
  return {with_heavy(magnitude_key(0.5f), magnitude_key(1.0f), {}),
          with_heavy(magnitude_key(0.25f), magnitude_key(0.25f), {}),
          with_heavy(0, 0x7fffffffu, {magnitude_key(0.0f), magnitude_key(0.25f), 0x7fc00000u}),
          with_heavy(magnitude_key(0.125f), 0x7f800000u, {magnitude_key(0.5f), magnitude_key(4.0f)})};
}

}  // namespace

TEST_CASE("band_scan matches the scalar reference", "[kernels][topk][band]") {
  std::mt19937 gen(5);
  std::normal_distribution<float> d;
  const std::vector<band_query> queries = test_queries();
  for (std::size_t n = 0; n <= 80; ++n) {
    std::vector<float> x(n), b(n), tau(n);
    std::vector<std::uint16_t> xh(n), bh(n);
    std::vector<float> tau16(n);
    for (std::size_t j = 0; j < n; ++j) {
      const int pick = static_cast<int>(j % 9);
      b[j] = d(gen);
      x[j] = pick == 0 ? b[j] + 0.25f : pick == 1 ? b[j] - 0.5f : pick == 2 ? b[j] : b[j] + d(gen);
      if (j % 31 == 7) x[j] = std::numeric_limits<float>::quiet_NaN();
      if (j % 37 == 11) x[j] = -std::numeric_limits<float>::infinity();
      tau[j] = x[j] - b[j];
      xh[j] = bf16(x[j]).bits;
      bh[j] = bf16(b[j]).bits;
      tau16[j] = static_cast<float>(bf16::from_bits(xh[j])) - static_cast<float>(bf16::from_bits(bh[j]));
    }
    for (const auto& q : queries) {
      CAPTURE(n, q.low, q.high, q.n_heavy);
      for (int form = 0; form < 3; ++form) {
        const std::uint32_t first = form == 2 ? 1000u : 3u;
        const reference want = scan_reference(form == 2 ? tau16 : tau, first, q);
        band_tally t;
        std::vector<std::uint32_t> keys(n + band_slack), pos(n + band_slack);
        std::size_t w = 0;
        if (form == 0) w = band_scan(tau.data(), nullptr, n, first, q, t, keys.data(), pos.data());
        if (form == 1) w = band_scan(x.data(), b.data(), n, first, q, t, keys.data(), pos.data());
        if (form == 2) w = band_scan_bf16(xh.data(), bh.data(), n, first, q, t, keys.data(), pos.data());
        check(want, t, keys, pos, w, q);
      }
    }
  }
}

TEST_CASE("band_scan accumulates over tiles", "[kernels][topk][band]") {
  const std::size_t n = 10000;
  std::vector<float> v(n);
  for (std::size_t j = 0; j < n; ++j) v[j] = static_cast<float>(static_cast<int>(j % 17) - 8) * 0.125f;
  band_query q{magnitude_key(0.25f), magnitude_key(0.75f)};
  const std::uint32_t heavy[] = {magnitude_key(0.5f)};
  REQUIRE(q.set_heavy(heavy) == 1);
  const reference want = scan_reference(v, 0, q);
  band_tally t;
  std::vector<std::uint32_t> keys(n + band_slack), pos(n + band_slack);
  std::size_t w = 0;
  for (std::size_t s = 0; s < n; s += 333) {
    const std::size_t len = std::min<std::size_t>(333, n - s);
    w += band_scan(v.data() + s, nullptr, len, static_cast<std::uint32_t>(s), q, t, keys.data() + w, pos.data() + w);
  }
  check(want, t, keys, pos, w, q);
  CHECK(t.heavy_count[0] == want.t.heavy_count[0]);
  CHECK(want.t.heavy_count[0] > 0);
}

TEST_CASE("band_scan_many equals band_scan per model", "[kernels][topk][band]") {
  // One to five models (1-4 take the count as a template argument, 5 a loop) with the four
  // queries above (model i the query i mod 4), over one base, f32 and bf16, on lengths around
  // the SIMD batch and past a counter widening (every 15 batches); each target starts with
  // entries and counts already there (a later tile), which band_scan_many must add to.
  std::mt19937 gen(11);
  std::normal_distribution<float> d;
  const std::vector<band_query> four = test_queries();
  std::vector<band_query> queries = four;
  queries.push_back(four[0]);
  const std::size_t models = queries.size(), before = 5;
  for (const std::size_t n :
       {std::size_t{0}, std::size_t{15}, std::size_t{16}, std::size_t{47}, std::size_t{200}, std::size_t{1000}}) {
    std::vector<float> b(n);
    std::vector<std::uint16_t> bh(n);
    std::vector<std::vector<float>> x(models, std::vector<float>(n));
    std::vector<std::vector<std::uint16_t>> xh(models, std::vector<std::uint16_t>(n));
    for (std::size_t j = 0; j < n; ++j) {
      b[j] = d(gen);
      bh[j] = bf16(b[j]).bits;
    }
    for (std::size_t i = 0; i < models; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        const int pick = static_cast<int>((j + i) % 7);
        x[i][j] = pick == 0 ? b[j] + 0.25f : pick == 1 ? b[j] - 0.5f : pick == 2 ? b[j] : b[j] + d(gen);
        if (j % 29 == 3 + i) x[i][j] = std::numeric_limits<float>::quiet_NaN();
        xh[i][j] = bf16(x[i][j]).bits;
      }
    for (std::size_t m = 1; m <= models; ++m)
    for (const bool half : {false, true}) {
      CAPTURE(n, m, half);
      std::vector<band_tally> t(m), want_t(m);
      std::vector<std::vector<std::uint32_t>> keys(m, std::vector<std::uint32_t>(before + n + band_slack)),
          pos = keys, want_keys = keys, want_pos = keys;
      std::vector<band_target> targets;
      std::vector<const void*> xs;
      for (std::size_t i = 0; i < m; ++i) {
        t[i].above = want_t[i].above = 7;
        t[i].heavy_count[0] = want_t[i].heavy_count[0] = 2;
        targets.push_back({&queries[i], &t[i], keys[i].data(), pos[i].data(), before});
        xs.push_back(half ? static_cast<const void*>(xh[i].data()) : x[i].data());
      }
      band_scan_many(xs.data(), m, half ? static_cast<const void*>(bh.data()) : b.data(), half, n, 64, targets.data());
      for (std::size_t i = 0; i < m; ++i) {
        CAPTURE(i);
        const std::size_t w =
            half ? band_scan_bf16(xh[i].data(), bh.data(), n, 64, queries[i], want_t[i], want_keys[i].data() + before,
                                  want_pos[i].data() + before)
                 : band_scan(x[i].data(), b.data(), n, 64, queries[i], want_t[i], want_keys[i].data() + before,
                             want_pos[i].data() + before);
        REQUIRE(targets[i].written == before + w);
        CHECK(t[i].above == want_t[i].above);
        for (std::size_t h = 0; h < band_max_heavy; ++h) CHECK(t[i].heavy_count[h] == want_t[i].heavy_count[h]);
        for (std::size_t e = before; e < before + w; ++e) {
          CHECK(keys[i][e] == want_keys[i][e]);
          CHECK(pos[i][e] == want_pos[i][e]);
        }
      }
    }
  }
}

TEST_CASE("band_query::set_heavy keeps keys the scan can tell apart", "[kernels][topk][band]") {
  // Ten keys 1/64 apart in magnitude: their 4 bits at some shift are distinct for eight of
  // them at most (band_max_heavy), kept in the order wanted.
  std::vector<std::uint32_t> wanted;
  for (int i = 0; i < 10; ++i) wanted.push_back(magnitude_key(0.5f + static_cast<float>(i) / 64));
  band_query q{magnitude_key(0.5f), magnitude_key(1.0f)};
  REQUIRE(q.set_heavy(wanted) == band_max_heavy);
  unsigned used = 0;
  std::size_t at = 0;
  for (std::size_t h = 0; h < q.n_heavy; ++h) {
    const unsigned bit = 1u << ((q.heavy[h] >> q.heavy_shift) & 15u);
    CHECK((used & bit) == 0);
    used |= bit;
    while (at < wanted.size() && wanted[at] != q.heavy[h]) ++at;  // a subsequence of wanted
    CHECK(at < wanted.size());
  }
  // 0x10, 0x20, 0x30 first fit at shift 2 (4 bits 4, 8, 12); a repeated key never fits.
  const std::uint32_t close[] = {0x10, 0x20, 0x30, 0x10};
  CHECK(q.set_heavy(close) == 3);  // the repeated 0x10 cannot be told from the first
  CHECK(q.heavy_shift == 2);
  const std::uint32_t none[] = {0u};
  CHECK(q.set_heavy(std::span<const std::uint32_t>(none, 0)) == 0);
  CHECK(q.n_heavy == 0);
}

TEST_CASE("band_scan counts heavy keys over long runs of one key", "[kernels][topk][band]") {
  // Runs of 16 * 300 equal entries per heavy key: every lane's 4-bit counter fills to 15 and
  // its 8-bit counter to 255 before the kernel widens and sums them; eight heavy keys use
  // every counter; a key between the heavy ones is written; the tail is scalar.
  std::vector<std::uint32_t> wanted;
  for (int i = 0; i < 8; ++i) wanted.push_back(magnitude_key(0.5f + static_cast<float>(i) / 32));
  band_query q{magnitude_key(0.5f), magnitude_key(1.0f)};
  REQUIRE(q.set_heavy(wanted) == 8);
  std::vector<float> v;
  for (int r = 0; r < 3; ++r)
    for (std::size_t h = 0; h < 9; ++h)
      for (std::size_t j = 0; j < 16 * 300 + h; ++j)
        v.push_back(h == 8 ? 0.51f : (j % 2 ? -1.f : 1.f) * std::bit_cast<float>(q.heavy[h]));
  const reference want = scan_reference(v, 0, q);
  for (std::size_t h = 0; h < 8; ++h) CHECK(want.t.heavy_count[h] == 3 * (16 * 300 + h));
  band_tally t;
  std::vector<std::uint32_t> keys(v.size() + band_slack), pos(v.size() + band_slack);
  const std::size_t w = band_scan(v.data(), nullptr, v.size(), 0, q, t, keys.data(), pos.data());
  check(want, t, keys, pos, w, q);
  // The same through band_scan_many (two models, one the negation of the other, base 0).
  std::vector<float> base(v.size(), 0.f), neg(v.size());
  for (std::size_t j = 0; j < v.size(); ++j) neg[j] = -v[j];
  band_tally tm[2];
  std::vector<std::uint32_t> k2[2] = {keys, keys}, p2[2] = {pos, pos};
  band_target targets[2] = {{&q, &tm[0], k2[0].data(), p2[0].data(), 0}, {&q, &tm[1], k2[1].data(), p2[1].data(), 0}};
  const void* xs[2] = {v.data(), neg.data()};
  band_scan_many(xs, 2, base.data(), false, v.size(), 0, targets);
  for (int i = 0; i < 2; ++i) check(want, tm[i], k2[i], p2[i], targets[i].written, q);
}
