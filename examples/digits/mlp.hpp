// The digits experiment's data and model: the UCI optical digits (gzip CSV, read with zlib),
// a fixed train/test split, and a small multilayer perceptron 64-256-256-10 with ReLU,
// trained by Adam on softmax cross-entropy. Arrays are xtensor containers; every matrix
// product is one cblas_sgemm. Deterministic: the initialisation, the split and the batch
// order come from alloy's counter-based generator (Philox), keyed by seeds; no
// std::*_distribution (their output differs between standard libraries).
//
// Layout and names are PyTorch's for nn.Sequential(Linear(64, 256), ReLU(), Linear(256, 256),
// ReLU(), Linear(256, 10)): layers.0.weight [256, 64], layers.0.bias [256], layers.2.*,
// layers.4.*; weights [out, in], y = x W^T + b.
#pragma once

#include <alloy/core/random.hpp>
#include <alloy/core/tensor_set.hpp>

#include <xtensor/xmath.hpp>
#include <xtensor/xtensor.hpp>

#include <cblas.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace digits {

inline constexpr std::size_t n_features = 64, n_hidden = 256, n_classes = 10;
inline constexpr std::array<std::size_t, 4> widths{n_features, n_hidden, n_hidden, n_classes};
inline constexpr std::array<const char*, 3> layer_names{"layers.0", "layers.2", "layers.4"};

struct dataset {
  xt::xtensor<float, 2> x;  // rows x 64, pixels / 16
  std::vector<int> y;       // labels 0..9
  std::size_t size() const { return y.size(); }
};

// Reads the gzip CSV: 64 integer pixels (0..16) and a label per line.
inline dataset load_digits(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open '" + path + "'");
  std::string text;
  char buf[1 << 16];
  int got;
  while ((got = gzread(f, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(got));
  const bool failed = got < 0;
  gzclose(f);
  if (failed) throw std::runtime_error("cannot decompress '" + path + "'");
  std::vector<float> pixels;
  std::vector<int> labels;
  std::size_t pos = 0, line = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line;
    if (end > pos) {
      std::vector<int> v;
      std::size_t p = pos;
      while (p < end) {
        std::size_t q = text.find(',', p);
        if (q == std::string::npos || q > end) q = end;
        v.push_back(std::stoi(text.substr(p, q - p)));
        p = q + 1;
      }
      if (v.size() != n_features + 1 || v.back() < 0 || v.back() >= static_cast<int>(n_classes))
        throw std::runtime_error(path + ":" + std::to_string(line) + ": expected 64 pixels and a label 0..9");
      for (std::size_t j = 0; j < n_features; ++j) pixels.push_back(static_cast<float>(v[j]) / 16.f);
      labels.push_back(v.back());
    }
    pos = end + 1;
  }
  dataset d;
  d.x = xt::xtensor<float, 2>::from_shape({labels.size(), n_features});
  std::copy(pixels.begin(), pixels.end(), d.x.begin());
  d.y = std::move(labels);
  return d;
}

// A uniform index in [0, n) from 64 random bits (n is tiny here: the modulo bias is < 2^-50).
inline std::size_t draw_index(const alloy::counter_rng& rng, std::uint64_t k, std::size_t n) {
  const std::uint64_t r = (std::uint64_t{rng.bits(2 * k)} << 32) | rng.bits(2 * k + 1);
  return static_cast<std::size_t>(r % n);
}

// A permutation of 0..n-1 (Fisher-Yates) from (seed, stream).
inline std::vector<std::size_t> shuffled(std::size_t n, std::uint64_t seed, std::uint64_t stream) {
  std::vector<std::size_t> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = i;
  const alloy::counter_rng rng(seed, stream);
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[draw_index(rng, i, i)]);
  return p;
}

inline dataset subset(const dataset& d, const std::vector<std::size_t>& rows) {
  dataset s;
  s.x = xt::xtensor<float, 2>::from_shape({rows.size(), n_features});
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::copy_n(d.x.data() + rows[r] * n_features, n_features, s.x.data() + r * n_features);
    s.y.push_back(d.y[rows[r]]);
  }
  return s;
}

// The fixed split: a shuffle of all rows by `seed`, the first test_size rows for the test.
inline std::pair<dataset, dataset> split(const dataset& d, std::size_t test_size, std::uint64_t seed) {
  const auto p = shuffled(d.size(), seed, 0x5b117);
  std::vector<std::size_t> train(p.begin() + static_cast<std::ptrdiff_t>(test_size), p.end());
  std::vector<std::size_t> test(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(test_size));
  std::sort(train.begin(), train.end());
  std::sort(test.begin(), test.end());
  return {subset(d, train), subset(d, test)};
}

// C = alpha op(A) op(B) + beta C, row-major.
inline void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a, std::size_t lda,
                 const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

// Parameters as raw pointers: of an mlp (training) or of an alloy::tensor_set (evaluation of
// interpolated and permuted models).
struct mlp_view {
  std::array<const float*, 3> w{}, b{};
};

struct mlp {
  std::array<xt::xtensor<float, 2>, 3> w;  // [out, in]
  std::array<xt::xtensor<float, 1>, 3> b;  // [out]

  mlp_view view() const {
    mlp_view v;
    for (std::size_t l = 0; l < 3; ++l) v.w[l] = w[l].data(), v.b[l] = b[l].data();
    return v;
  }

  // PyTorch's default nn.Linear initialisation: weight and bias uniform in
  // [-1/sqrt(in), 1/sqrt(in)], here drawn from Philox keyed by (seed, tensor name).
  static mlp init(std::uint64_t seed) {
    mlp m;
    for (std::size_t l = 0; l < 3; ++l) {
      const std::size_t in = widths[l], out = widths[l + 1];
      const float bound = 1.f / std::sqrt(static_cast<float>(in));
      m.w[l] = xt::xtensor<float, 2>::from_shape({out, in});
      m.b[l] = xt::xtensor<float, 1>::from_shape({out});
      const std::string name = layer_names[l];
      const alloy::counter_rng rw(seed, alloy::stream_id(name + ".weight", 0));
      const alloy::counter_rng rb(seed, alloy::stream_id(name + ".bias", 0));
      for (std::size_t i = 0; i < m.w[l].size(); ++i) m.w[l].data()[i] = (2.f * rw.uniform(i) - 1.f) * bound;
      for (std::size_t i = 0; i < m.b[l].size(); ++i) m.b[l].data()[i] = (2.f * rb.uniform(i) - 1.f) * bound;
    }
    return m;
  }

  alloy::tensor_set to_tensor_set() const {
    alloy::tensor_set s;
    for (std::size_t l = 0; l < 3; ++l) {
      const std::string name = layer_names[l];
      s.add(name + ".weight", std::vector<float>(w[l].begin(), w[l].end()), {w[l].shape()[0], w[l].shape()[1]});
      s.add(name + ".bias", std::vector<float>(b[l].begin(), b[l].end()), {b[l].shape()[0]});
    }
    return s;
  }
};

inline mlp_view view_of(const alloy::tensor_set& s) {
  mlp_view v;
  for (std::size_t l = 0; l < 3; ++l) {
    const std::string name = layer_names[l];
    v.w[l] = s.at(name + ".weight").values<float>().data();
    v.b[l] = s.at(name + ".bias").values<float>().data();
  }
  return v;
}

// Activations of one batch: h[0], h[1] the hidden layers after ReLU, logits the output.
struct activations {
  std::array<xt::xtensor<float, 2>, 2> h;
  xt::xtensor<float, 2> logits;
};

inline void forward(const mlp_view& m, const float* x, std::size_t rows, activations& act) {
  const float* in = x;
  for (std::size_t l = 0; l < 3; ++l) {
    const std::size_t din = widths[l], dout = widths[l + 1];
    xt::xtensor<float, 2>& z = l < 2 ? act.h[l] : act.logits;
    if (z.shape()[0] != rows || z.shape()[1] != dout) z = xt::xtensor<float, 2>::from_shape({rows, dout});
    gemm(false, true, rows, dout, din, 1.f, in, din, m.w[l], din, 0.f, z.data(), dout);  // x W^T
    float* zd = z.data();
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < dout; ++j) {
        const float v = zd[r * dout + j] + m.b[l][j];
        zd[r * dout + j] = l < 2 ? std::max(v, 0.f) : v;
      }
    in = zd;
  }
}

// Softmax cross-entropy of one row of logits (log-sum-exp), and its gradient when g != null.
inline double cross_entropy(const float* logits, int label, float* g, float scale) {
  float mx = logits[0];
  for (std::size_t j = 1; j < n_classes; ++j) mx = std::max(mx, logits[j]);
  double sum = 0;
  for (std::size_t j = 0; j < n_classes; ++j) sum += std::exp(static_cast<double>(logits[j] - mx));
  const double lse = static_cast<double>(mx) + std::log(sum);
  if (g)
    for (std::size_t j = 0; j < n_classes; ++j)
      g[j] = scale * (static_cast<float>(std::exp(static_cast<double>(logits[j]) - lse)) -
                      (static_cast<int>(j) == label ? 1.f : 0.f));
  return lse - static_cast<double>(logits[static_cast<std::size_t>(label)]);
}

struct eval_result {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // fraction of argmax == label
};

inline eval_result evaluate(const mlp_view& m, const dataset& d) {
  activations act;
  forward(m, d.x.data(), d.size(), act);
  eval_result r;
  for (std::size_t i = 0; i < d.size(); ++i) {
    const float* z = act.logits.data() + i * n_classes;
    r.loss += cross_entropy(z, d.y[i], nullptr, 0);
    r.accuracy += static_cast<std::size_t>(std::max_element(z, z + n_classes) - z) == static_cast<std::size_t>(d.y[i]);
  }
  r.loss /= static_cast<double>(d.size());
  r.accuracy /= static_cast<double>(d.size());
  return r;
}

struct train_options {
  std::size_t epochs = 30;
  std::size_t batch = 32;
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  std::uint64_t seed = 0;  // the batch order of every epoch
};

// Adam on mean softmax cross-entropy; the batch order of epoch e is shuffled(n, seed, e).
inline void train(mlp& m, const dataset& d, const train_options& o) {
  std::array<xt::xtensor<float, 2>, 3> gw, mw, vw;
  std::array<xt::xtensor<float, 1>, 3> gb, mb, vb;
  for (std::size_t l = 0; l < 3; ++l) {
    gw[l] = mw[l] = vw[l] = xt::zeros<float>(m.w[l].shape());
    gb[l] = mb[l] = vb[l] = xt::zeros<float>(m.b[l].shape());
  }
  activations act;
  xt::xtensor<float, 2> xb, g, gprev;
  std::size_t step = 0;
  for (std::size_t e = 0; e < o.epochs; ++e) {
    const auto order = shuffled(d.size(), o.seed, e);
    for (std::size_t s = 0; s < d.size(); s += o.batch) {
      const std::size_t rows = std::min(o.batch, d.size() - s);
      xb = xt::xtensor<float, 2>::from_shape({rows, n_features});
      std::vector<int> yb(rows);
      for (std::size_t r = 0; r < rows; ++r) {
        std::copy_n(d.x.data() + order[s + r] * n_features, n_features, xb.data() + r * n_features);
        yb[r] = d.y[order[s + r]];
      }
      const mlp_view v = m.view();
      forward(v, xb.data(), rows, act);
      // dL/dlogits of the mean loss
      g = xt::xtensor<float, 2>::from_shape({rows, n_classes});
      for (std::size_t r = 0; r < rows; ++r)
        cross_entropy(act.logits.data() + r * n_classes, yb[r], g.data() + r * n_classes, 1.f / static_cast<float>(rows));
      // Back through layers 2, 1, 0: g is dL/dz of layer l (rows x out).
      for (std::size_t l = 3; l-- > 0;) {
        const std::size_t din = widths[l], dout = widths[l + 1];
        const float* in = l == 0 ? xb.data() : act.h[l - 1].data();
        gemm(true, false, dout, din, rows, 1.f, g.data(), dout, in, din, 0.f, gw[l].data(), din);  // g^T in
        gb[l] = xt::sum(g, {0});
        if (l == 0) break;
        gprev = xt::xtensor<float, 2>::from_shape({rows, din});
        gemm(false, false, rows, din, dout, 1.f, g.data(), dout, m.w[l].data(), din, 0.f, gprev.data(), din);  // g W
        const float* h = act.h[l - 1].data();
        for (std::size_t i = 0; i < gprev.size(); ++i)
          if (h[i] <= 0.f) gprev.data()[i] = 0.f;  // ReLU
        std::swap(g, gprev);
      }
      ++step;
      const float c1 = 1.f - std::pow(o.beta1, static_cast<float>(step));
      const float c2 = 1.f - std::pow(o.beta2, static_cast<float>(step));
      auto adam = [&](auto& p, auto& gr, auto& mm, auto& vv) {
        mm = o.beta1 * mm + (1.f - o.beta1) * gr;
        vv = o.beta2 * vv + (1.f - o.beta2) * gr * gr;
        p -= o.lr * (mm / c1) / (xt::sqrt(vv / c2) + o.eps);
      };
      for (std::size_t l = 0; l < 3; ++l) {
        adam(m.w[l], gw[l], mw[l], vw[l]);
        adam(m.b[l], gb[l], mb[l], vb[l]);
      }
    }
  }
}

}  // namespace digits
