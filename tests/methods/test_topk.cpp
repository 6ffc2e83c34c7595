// Tests for alloy/methods/detail/topk.hpp: exact top-k magnitude selection.
//
// The reference is a full std::sort of the flat indices by (magnitude key descending, flat
// index ascending): the kept set for k is the first k of that order. Every property case
// checks, for every element, that the cut's rule agrees with the reference in each form a
// caller may use (keeps(), rule(s).keeps(), the lane/tie_limit form of a vectorized merge,
// and the float-threshold form on NaN-free data), that exactly k are kept, that T, greater
// and equal are the sort's, and that 1, 2 and 3 threads give the same cut. Inputs of at most
// topk_tile entries also run through the streaming passes (tuning.small = 0), and shrunken
// chunks, flush limits and low-bit pools reach every path on small data.
//
// Data: normal floats; bf16-rounded values (massive ties); differences of bf16 values (the
// TIES task vector); mostly zeros (+0 and -0), with or without denormals; all equal;
// NaN/Inf/max/signed zeros sprinkled; four levels {0, 1, 2, 3}. Sizes 1, 2, 4099 and
// 2 * parallel_chunk + 17, and layouts of several segments with empty ones.
#include <alloy/core/bf16.hpp>
#include <alloy/error.hpp>
#include <alloy/methods/detail/topk.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using alloy::detail::topk_cut;
using alloy::detail::topk_select;
using alloy::detail::topk_tuning;
using alloy::kernels::magnitude_key;
using segments = std::vector<std::vector<float>>;

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr std::size_t big = 2 * alloy::parallel_chunk + 17;

float nan_with(std::uint32_t payload, bool negative = false) {
  return std::bit_cast<float>((negative ? 0xff800000u : 0x7f800000u) | 0x400000u | (payload & 0x3fffffu));
}

std::vector<std::size_t> sizes_of(const segments& segs) {
  std::vector<std::size_t> s;
  for (const auto& v : segs) s.push_back(v.size());
  return s;
}

// The producer: copies the stored values (signed: the selection ignores the sign) and
// checks the contract it is called with.
struct copy_producer {
  const segments* segs;
  void operator()(std::size_t s, std::size_t begin, std::size_t len, float* out) const {
    if (s >= segs->size() || begin + len > (*segs)[s].size() || len == 0 || len > alloy::detail::topk_tile)
      throw std::logic_error("producer called out of range");
    std::memcpy(out, (*segs)[s].data() + begin, len * sizeof(float));
  }
};

topk_cut run_topk(const segments& segs, std::size_t k, unsigned threads, const topk_tuning& tuning = {}) {
  const auto sizes = sizes_of(segs);
  return topk_select(std::span<const std::size_t>(sizes), k, copy_producer{&segs}, alloy::execution{threads}, tuning);
}

// rank[flat index] = position in the order (key desc, flat index asc).
struct reference {
  std::vector<float> flat;
  std::vector<std::size_t> order, rank;
  bool has_nan = false;

  explicit reference(const segments& segs) {
    for (const auto& v : segs) flat.insert(flat.end(), v.begin(), v.end());
    // Sort (0x7fffffff - key, index) packed in 64 bits, ascending: key descending, then
    // index ascending (one integer compare, so the Debug/ASan build stays fast).
    std::vector<std::uint64_t> packed(flat.size());
    for (std::size_t i = 0; i < flat.size(); ++i)
      packed[i] = (std::uint64_t{0x7fffffffu - magnitude_key(flat[i])} << 32) | i;
    std::sort(packed.data(), packed.data() + packed.size());  // pointers: fast in Debug builds too
    order.resize(flat.size());
    for (std::size_t r = 0; r < packed.size(); ++r) order[r] = static_cast<std::size_t>(packed[r] & 0xffffffffu);
    rank.resize(flat.size());
    for (std::size_t r = 0; r < order.size(); ++r) rank[order[r]] = r;
    has_nan = std::any_of(flat.begin(), flat.end(), [](float x) { return std::isnan(x); });
  }
};

// Checks that `cut` keeps exactly what the reference keeps for k (reporting at most five
// disagreeing elements, to keep failure output short).
void check_cut(const segments& segs, const reference& ref, std::size_t k, const topk_cut& cut) {
  REQUIRE(cut.k == k);
  REQUIRE(cut.n == ref.flat.size());
  CHECK(cut.keep_none == (k == 0));
  CHECK(cut.keep_all == (k == ref.flat.size()));
  if (k > 0 && k < ref.flat.size()) {
    const std::uint32_t t = magnitude_key(ref.flat[ref.order[k - 1]]);
    CHECK(cut.key == t);
    std::size_t gt = 0, eq = 0;
    for (float x : ref.flat) {
      gt += magnitude_key(x) > t;
      eq += magnitude_key(x) == t;
    }
    CHECK(cut.greater == gt);
    CHECK(cut.equal == eq);
    CHECK(cut.passes >= 1);
    CHECK(cut.passes <= 3);
  } else {
    CHECK(cut.passes == 0);
  }
  std::size_t flat = 0, kept = 0, bad = 0;
  for (std::size_t s = 0; s < segs.size(); ++s) {
    const auto rule = cut.rule(s);
    const float T = rule.threshold();
    for (std::size_t i = 0; i < segs[s].size(); ++i, ++flat) {
      const float x = segs[s][i];
      const bool want = ref.rank[flat] < k;
      const bool got = cut.keeps(s, i, x);
      kept += got;
      // The lane form: tiles of 8 at multiples of 8, lane index against tie_limit.
      const std::size_t tile = i / 8 * 8;
      const std::uint32_t m = magnitude_key(x);
      const bool lane = (m > rule.key) | ((m == rule.key) & (i - tile < rule.tie_limit(tile, 8)));
      // The float form, valid without NaN.
      const float a = std::fabs(x);
      const bool by_float = ref.has_nan || ((a > T) | ((a == T) & (i < rule.tie_end)));
      if (got != want || rule.keeps(i, x) != want || lane != want || by_float != (ref.has_nan || want)) {
        if (++bad <= 5) {
          INFO("segment " << s << " index " << i << " value " << x << " rank " << ref.rank[flat] << " k " << k
                          << " key " << cut.key << " cut_segment " << cut.cut_segment << " tie_end " << cut.tie_end);
          CHECK(got == want);
          CHECK(rule.keeps(i, x) == want);
          CHECK(lane == want);
          CHECK(by_float == (ref.has_nan || want));
        }
      }
    }
  }
  CHECK(bad == 0);
  CHECK(kept == k);
}

topk_tuning no_small_path() {
  topk_tuning t;
  t.small = 0;
  return t;
}
const topk_tuning force_passes = no_small_path();  // the streaming passes even for tiny n

// Every k of interest, threads 1, 2 and 3: the same cut, and the reference's kept set.
void check_all(const segments& segs, std::vector<std::size_t> extra_ks = {}) {
  const reference ref(segs);
  const std::size_t n = ref.flat.size();
  std::vector<std::size_t> ks{0, 1, n / 3, n > 0 ? n - 1 : 0, n};
  ks.insert(ks.end(), extra_ks.begin(), extra_ks.end());
  for (std::size_t k : ks) {
    if (k > n) continue;
    CAPTURE(n, k, segs.size());
    const topk_cut one = run_topk(segs, k, 1);
    check_cut(segs, ref, k, one);
    for (unsigned threads : {2u, 3u}) {
      const topk_cut other = run_topk(segs, k, threads);
      CHECK(other == one);
      CHECK(other.passes == one.passes);  // which items fit the low-bit pool may vary, not this
    }
    if (n <= alloy::detail::topk_tile) {  // the same cut from the streaming passes
      const topk_cut streamed = run_topk(segs, k, 2, force_passes);
      check_cut(segs, ref, k, streamed);
      CHECK(streamed == one);
    }
  }
}

// Data generators. Each writes n values.
std::vector<float> normal_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
std::vector<float> bf16_values(std::size_t n, std::uint32_t seed) {  // ~1000 distinct magnitudes
  auto v = normal_values(n, seed);
  for (auto& x : v) x = static_cast<float>(alloy::bf16(x * 0.01f));
  return v;
}
std::vector<float> mostly_zeros(std::size_t n, std::uint32_t seed, bool denormals) {
  std::mt19937 rng(seed);
  auto v = normal_values(n, seed + 1);
  for (auto& x : v) {
    const auto r = rng() % 10;
    if (r < 7) x = (rng() & 1) ? 0.0f : -0.0f;
    else if (r == 7 && denormals) x = std::bit_cast<float>(static_cast<std::uint32_t>(1u + rng() % 3));  // keys 1..3: bin 0
  }
  return v;
}
std::vector<float> all_equal(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = (rng() & 1) ? 1.5f : -1.5f;
  return v;
}
std::vector<float> specials(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  auto v = normal_values(n, seed + 1);
  for (auto& x : v) {
    switch (rng() % 16) {
      case 0: x = inf; break;
      case 1: x = -inf; break;
      case 2: x = nan_with(rng() % 4, rng() & 1); break;
      case 3: x = 0.0f; break;
      case 4: x = -0.0f; break;
      case 5: x = std::numeric_limits<float>::max(); break;
      default: break;
    }
  }
  return v;
}
std::vector<float> few_levels(std::size_t n, std::uint32_t seed) {  // {0, 1, 2, 3}, signed
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng() % 4) * ((rng() & 1) ? 1.0f : -1.0f);
  return v;
}

// tau = theta_i - theta_base of bf16 parameters: differences of bf16 values, computed in
// float. Many repeated magnitudes (a tie at the cut is likely) spread over many low bits.
std::vector<float> tau_values(std::size_t n, std::uint32_t seed) {
  auto a = normal_values(n, seed), b = normal_values(n, seed + 7);
  for (std::size_t i = 0; i < n; ++i)
    a[i] = static_cast<float>(alloy::bf16(a[i] * 0.02f)) - static_cast<float>(alloy::bf16(a[i] * 0.02f + b[i] * 0.001f));
  return a;
}

enum class kind { normal, bf16, zeros, zeros_denormal, equal, specials, levels, tau };

std::vector<float> make(kind c, std::size_t n, std::uint32_t seed) {
  switch (c) {
    case kind::normal: return normal_values(n, seed);
    case kind::bf16: return bf16_values(n, seed);
    case kind::zeros: return mostly_zeros(n, seed, false);
    case kind::zeros_denormal: return mostly_zeros(n, seed, true);
    case kind::equal: return all_equal(n, seed);
    case kind::specials: return specials(n, seed);
    case kind::levels: return few_levels(n, seed);
    case kind::tau: return tau_values(n, seed);
  }
  return {};
}

const kind all_kinds[] = {kind::normal,   kind::bf16,   kind::zeros, kind::zeros_denormal, kind::equal,
                          kind::specials, kind::levels, kind::tau};

}  // namespace

// ------------------------------------------------------------------------------ worked examples

TEST_CASE("top-k worked example: one segment with ties, zeros and a NaN", "[methods][topk]") {
  // index:      0    1    2    3    4    5    6    7
  // value:      3   -1    2   -3    0    2   NaN  -0
  // magnitude:  3    1    2    3    0    2   NaN   0
  // Order (magnitude desc, index asc): 6 (NaN > Inf > 3), 0, 3, 2, 5, 1, 4, 7.
  // Kept sets: k=0 {}, 1 {6}, 2 {6,0}, 3 {6,0,3}, 4 {6,0,3,2} (the tie 2 at 2 and 5 keeps
  // index 2), 5 {..,5}, 6 {..,1}, 7 {..,4} (0 and -0 tie: index 4 first), 8 all.
  const segments segs{{3.0f, -1.0f, 2.0f, -3.0f, 0.0f, 2.0f, nan_with(1), -0.0f}};
  const std::vector<std::vector<std::size_t>> kept{
      {}, {6}, {0, 6}, {0, 3, 6}, {0, 2, 3, 6}, {0, 2, 3, 5, 6}, {0, 1, 2, 3, 5, 6}, {0, 1, 2, 3, 4, 5, 6}, {0, 1, 2, 3, 4, 5, 6, 7}};
  const bool passes = GENERATE(false, true);  // the in-cache path, or the streaming passes
  const topk_tuning tuning = passes ? force_passes : topk_tuning{};
  auto sel = [&](std::size_t k, unsigned threads) { return run_topk(segs, k, threads, tuning); };
  for (std::size_t k = 0; k <= 8; ++k) {
    CAPTURE(k, passes);
    const auto cut = sel(k, 2);
    std::vector<std::size_t> got;
    for (std::size_t i = 0; i < 8; ++i)
      if (cut.keeps(0, i, segs[0][i])) got.push_back(i);
    CHECK(got == kept[k]);
  }
  // k = 4: T = 2, three entries above it (NaN, 3, 3), two equal (indices 2, 5), one kept:
  // the last kept tie is index 2, so tie_end = 3.
  auto cut = sel(4, 1);
  CHECK(cut.threshold() == 2.0f);
  CHECK(cut.greater == 3);
  CHECK(cut.equal == 2);
  CHECK(cut.cut_segment == 0);
  CHECK(cut.tie_end == 3);
  // k = 7: T = 0 with six entries above, the zeros 4 and 7 tie, one kept: tie_end = 5.
  cut = sel(7, 1);
  CHECK(cut.key == 0);
  CHECK(cut.greater == 6);
  CHECK(cut.equal == 2);
  CHECK(cut.tie_end == 5);
  // k = 5: both 2s kept, no index cut (cut_segment past the last segment).
  cut = sel(5, 1);
  CHECK(cut.threshold() == 2.0f);
  CHECK(cut.cut_segment == 1);
  CHECK(cut.passes == (passes ? 2u : 1u));
  // k = 1: T is the NaN.
  cut = sel(1, 1);
  CHECK(cut.key == magnitude_key(nan_with(1)));
  CHECK(std::isnan(cut.threshold()));
}

TEST_CASE("top-k worked example: several segments, one empty", "[methods][topk]") {
  // segment 0: {1, -2}   segment 1: {}   segment 2: {2, 0.5, -2}
  // flat order: (0,0)=1 (0,1)=-2 (2,0)=2 (2,1)=0.5 (2,2)=-2; magnitude 2 at (0,1), (2,0), (2,2).
  const segments segs{{1.0f, -2.0f}, {}, {2.0f, 0.5f, -2.0f}};
  const bool passes = GENERATE(false, true);
  const topk_tuning tuning = passes ? force_passes : topk_tuning{};
  auto sel = [&](std::size_t k, unsigned threads) { return run_topk(segs, k, threads, tuning); };
  auto kept = [&](const topk_cut& cut) {
    std::vector<std::pair<std::size_t, std::size_t>> v;
    for (std::size_t s = 0; s < segs.size(); ++s)
      for (std::size_t i = 0; i < segs[s].size(); ++i)
        if (cut.keeps(s, i, segs[s][i])) v.emplace_back(s, i);
    return v;
  };
  using P = std::vector<std::pair<std::size_t, std::size_t>>;
  // k = 2: two of the three 2s, the lowest flat indices: (0,1) and (2,0). The cut is in
  // segment 2 at index 0 (tie_end 1): segment 0 keeps all its ties, segment 2 the first.
  auto cut = sel(2, 3);
  CHECK(kept(cut) == P{{0, 1}, {2, 0}});
  CHECK(cut.cut_segment == 2);
  CHECK(cut.tie_end == 1);
  CHECK(cut.rule(0).tie_end == std::numeric_limits<std::size_t>::max());
  CHECK(cut.rule(1).tie_end == std::numeric_limits<std::size_t>::max());
  CHECK(cut.rule(2).tie_end == 1);
  // k = 1: only (0,1): the cut is in segment 0, so segment 2 keeps no tie.
  cut = sel(1, 3);
  CHECK(kept(cut) == P{{0, 1}});
  CHECK(cut.cut_segment == 0);
  CHECK(cut.tie_end == 2);
  CHECK(cut.rule(2).tie_end == 0);
  // k = 3: every 2; k = 4: and the 1; k = 5: everything.
  CHECK(kept(sel(3, 2)) == P{{0, 1}, {2, 0}, {2, 2}});
  CHECK(kept(sel(4, 2)) == P{{0, 0}, {0, 1}, {2, 0}, {2, 2}});
  CHECK(kept(sel(5, 2)) == P{{0, 0}, {0, 1}, {2, 0}, {2, 1}, {2, 2}});
  CHECK(kept(sel(0, 2)).empty());
}

TEST_CASE("top-k edge cases: empty input, k == 0, k == n, k > n, tie_limit", "[methods][topk]") {
  const segments none{};
  const segments empties{{}, {}, {}};
  for (const auto* segs : {&none, &empties}) {
    const auto cut = run_topk(*segs, 0, 2);
    CHECK(cut.keep_none);
    CHECK(cut.passes == 0);
    CHECK(cut.n == 0);
  }
  const segments segs{{1.0f, nan_with(3, true), -0.0f}, {}, {-inf}};
  auto cut = run_topk(segs, 0, 1);  // keep none: key 0x7fffffff, no tie kept (even NaN payloads of that key)
  CHECK(cut.key == 0x7fffffffu);
  CHECK_FALSE(cut.keeps(0, 0, std::bit_cast<float>(0xffffffffu)));
  CHECK_FALSE(cut.keeps(0, 1, nan_with(3, true)));
  cut = run_topk(segs, 4, 1);  // keep all, without reading anything
  CHECK(cut.keep_all);
  CHECK(cut.passes == 0);
  CHECK(cut.keeps(0, 2, -0.0f));
  CHECK(cut.keeps(2, 0, -inf));
  try {
    run_topk(segs, 5, 1);
    FAIL("k > n must throw");
  } catch (const alloy::error& e) {
    CHECK(e.code() == alloy::errc::invalid_argument);
  }

  const alloy::detail::topk_rule rule{7u, 10};
  CHECK(rule.tie_limit(0, 4) == 4);
  CHECK(rule.tie_limit(8, 4) == 2);
  CHECK(rule.tie_limit(10, 4) == 0);
  CHECK(rule.tie_limit(12, 4) == 0);
}

TEST_CASE("top-k: producer exceptions propagate", "[methods][topk]") {
  const std::vector<std::size_t> sizes{5000, 3 * alloy::parallel_chunk};
  for (unsigned threads : {1u, 2u, 3u}) {
    auto produce = [](std::size_t s, std::size_t, std::size_t len, float* out) {
      if (s == 1) throw std::runtime_error("cannot read segment 1");
      std::fill(out, out + len, 1.0f);
    };
    CHECK_THROWS_WITH(topk_select(std::span<const std::size_t>(sizes), 7, produce, alloy::execution{threads}),
                      "cannot read segment 1");
  }
}

// ------------------------------------------------------------------------------ properties

TEST_CASE("top-k equals a full sort: single segments of n in {0, 1, 2, 4099, 2*chunk+17}", "[methods][topk]") {
  std::uint32_t seed = 100;
  for (kind c : all_kinds) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{4099}}) {
      CAPTURE(static_cast<int>(c), n);
      check_all({make(c, n, ++seed)}, {n / 7, n / 2, n - n / 5});
    }
  }
  for (kind c : {kind::normal, kind::bf16, kind::tau}) {  // zeros: the pass-count case; specials: 4099
    CAPTURE(static_cast<int>(c));
    check_all({make(c, big, ++seed)});
  }
}

TEST_CASE("top-k equals a full sort: several segments, empty ones included", "[methods][topk]") {
  std::uint32_t seed = 200;
  const std::vector<std::vector<std::size_t>> layouts{
      {0, 5, 4099, 0, 1000, 1},
      {1, 0, 0},
      {4096, 4097, 3, 0, 8191},
      {alloy::parallel_chunk - 3, 0, alloy::parallel_chunk + 20, 17},
  };
  for (const auto& layout : layouts) {
    const bool large = layout[0] > 100000;
    for (kind c : all_kinds) {
      if (large && c != kind::equal) continue;  // the other kinds: the small layouts
      CAPTURE(static_cast<int>(c), layout.size(), layout[0]);
      segments segs;
      for (std::size_t n : layout) segs.push_back(make(c, n, ++seed));
      check_all(segs, {7, 4100});
    }
  }
}

TEST_CASE("top-k: pass counts", "[methods][topk]") {
  // Float data: T is found in two passes, and no tie straddles the cut.
  const segments normal{normal_values(big, 9)};
  auto cut = run_topk(normal, big / 5, 2);
  CHECK(cut.passes == 2);
  CHECK(cut.elements_read() == 2 * big);
  // All equal: every entry ties with T and the bin holds only T, so pass 2's bin counts are
  // the tie counts: two passes and a scan of the one item holding the cut.
  const segments eq{all_equal(big, 1)};
  cut = run_topk(eq, big / 2, 2);
  CHECK(cut.passes == 2);
  CHECK(cut.recounted == 0);
  CHECK(cut.scanned > 0);
  CHECK(cut.scanned <= alloy::parallel_chunk);
  CHECK(cut.tie_end == big / 2);
  // Differences of bf16 values: a tie straddles the cut, T's bin holds several values.
  // The ties are counted in the low bits pass 2 kept: two passes. Without room for them
  // (no pool), a third pass counts them; with room for part, it reads only the rest.
  const segments tau{tau_values(big, 2)};
  const reference tau_ref(tau);
  cut = run_topk(tau, big / 3, 2);
  REQUIRE(cut.equal > cut.k - cut.greater);  // a tie is cut
  CHECK(cut.passes == 2);
  CHECK(cut.recounted == 0);
  topk_tuning no_pool;
  no_pool.lows_budget = 0;
  const topk_cut third = run_topk(tau, big / 3, 2, no_pool);
  CHECK(third == cut);
  CHECK(third.passes == 3);
  CHECK(third.recounted == big);
  CHECK(third.elements_read() == 3 * big + third.scanned);
  topk_tuning half_pool;
  half_pool.lows_budget = static_cast<std::size_t>(
      std::count_if(tau[0].begin(), tau[0].end(), [&](float x) { return magnitude_key(x) >> 16 == cut.key >> 16; }) / 2);
  const topk_cut partial = run_topk(tau, big / 3, 3, half_pool);
  CHECK(partial == cut);
  CHECK(partial.passes == 3);
  CHECK(partial.recounted > 0);
  CHECK(partial.recounted < big);
  check_cut(tau, tau_ref, big / 3, partial);
  // A crowded bin: zeros and denormals share bin 0 (T == 0 straddles), or three values
  // 1, 1 + 2^-23, 1 + 2^-22 share bin 0x3f80: each full item has more than 16Ki entries in
  // the bin, so pass 3 counts their ties (the 17-element last item kept its low bits).
  const segments z{mostly_zeros(big, 2, true)};
  const std::size_t nonzero = static_cast<std::size_t>(std::count_if(z[0].begin(), z[0].end(), [](float x) { return x != 0.0f; }));
  cut = run_topk(z, nonzero + 10, 2);
  CHECK(cut.key == 0);
  CHECK(cut.passes == 3);
  CHECK(cut.recounted == 2 * alloy::parallel_chunk);
  segments crowded{std::vector<float>(big)};
  for (std::size_t i = 0; i < big; ++i) crowded[0][i] = std::bit_cast<float>(0x3f800000u + static_cast<std::uint32_t>(i * 7 % 3));
  cut = run_topk(crowded, big / 2, 2);
  CHECK(cut.passes == 3);
  CHECK(cut.recounted == 2 * alloy::parallel_chunk);
  check_cut(crowded, reference(crowded), big / 2, cut);
  // Without denormals, bin 0 holds only zeros: two passes.
  const std::vector<float> z2 = mostly_zeros(big, 3, false);
  const std::size_t nonzero2 = static_cast<std::size_t>(std::count_if(z2.begin(), z2.end(), [](float x) { return x != 0.0f; }));
  cut = run_topk({z2}, nonzero2 + 10, 2);
  CHECK(cut.key == 0);
  CHECK(cut.passes == 2);
  CHECK(cut.tie_end > 0);
  // Small inputs: one read, in cache.
  cut = run_topk({normal_values(4096, 4)}, 1000, 2);
  CHECK(cut.passes == 1);
  CHECK(cut.elements_read() == 4096);
}

TEST_CASE("top-k: the cut does not depend on chunking or histogram flushes", "[methods][topk]") {
  std::uint32_t seed = 300;
  for (kind c : {kind::bf16, kind::zeros_denormal, kind::levels, kind::tau}) {  // kinds with ties at the cut
    segments segs{make(c, 12000, ++seed), {}, make(c, 7, ++seed), make(c, 5432, ++seed)};
    const reference ref(segs);
    for (std::size_t k : {std::size_t{1}, std::size_t{4000}, std::size_t{9000}, std::size_t{17438}}) {
      CAPTURE(static_cast<int>(c), k);
      topk_cut want = run_topk(segs, k, 1);
      check_cut(segs, ref, k, want);
      for (std::size_t chunk : {std::size_t{1}, std::size_t{1000}, std::size_t{4097}}) {
        if (chunk == 1 && c != kind::levels) continue;  // one item per element: slow, once is enough
        for (std::uint64_t flush : {std::uint64_t{0}, std::uint64_t{6000}}) {
          if (flush == 0 && chunk != 4097) continue;  // a 65536-bin flush per item: once is enough
          for (unsigned threads : {1u, 3u}) {
            CAPTURE(chunk, flush, threads);
            topk_tuning t;
            t.chunk = chunk;
            t.flush_limit = flush;
            CHECK(run_topk(segs, k, threads, t) == want);
          }
        }
      }
      // Low bits kept for some items only (a small pool, a small cap per item), or none.
      const std::pair<std::size_t, std::size_t> pools[] = {{0, 1 << 14}, {30, 300}, {1000, 5}, {1000, 1 << 14}};
      for (auto [budget, per_item] : pools) {
        {
          CAPTURE(budget, per_item);
          topk_tuning t;
          t.chunk = 1000;
          t.lows_budget = budget;
          t.lows_per_item = per_item;
          const topk_cut got = run_topk(segs, k, 2, t);
          CHECK(got == want);
          CHECK(got.passes == want.passes + (got.recounted > 0 && want.passes == 2 ? 1u : 0u));
        }
      }
    }
  }
}
