// A hand-written SVG line plot (no dependency): curves over alpha in [0, 1], a legend, axes
// with ticks. Used for the digits experiment's loss curves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace digits {

struct svg_curve {
  std::string label;
  std::string color;
  bool dashed = false;
  std::vector<double> y;
};

inline std::string fixed(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over span.
inline double nice_step(double span, int target) {
  const double raw = span / target, p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

inline void write_svg(const std::string& path, const std::string& title, const std::string& y_label,
                      const std::vector<double>& x, const std::vector<svg_curve>& curves) {
  const double W = 760, H = 460, left = 70, right = 240, top = 40, bottom = 55;
  const double pw = W - left - right, ph = H - top - bottom;
  double lo = 0, hi = 0;
  for (const auto& c : curves)
    for (double v : c.y)
      if (std::isfinite(v)) hi = std::max(hi, v);
  if (hi <= lo) hi = 1;
  const double step = nice_step(hi - lo, 6);
  hi = std::ceil(hi / step) * step;
  auto px = [&](double a) { return left + a * pw; };
  auto py = [&](double v) { return top + (1 - (v - lo) / (hi - lo)) * ph; };
  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fixed(W, 0) + "\" height=\"" + fixed(H, 0) +
       "\" viewBox=\"0 0 " + fixed(W, 0) + " " + fixed(H, 0) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + fixed(left + pw / 2, 1) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">" + title + "</text>\n";
  // grid and y ticks
  for (double v = lo; v <= hi + step / 2; v += step) {
    const std::string y = fixed(py(v), 1);
    s += "<line x1=\"" + fixed(left, 1) + "\" y1=\"" + y + "\" x2=\"" + fixed(left + pw, 1) + "\" y2=\"" + y +
         "\" stroke=\"#e4e4e4\"/>\n";
    s += "<text x=\"" + fixed(left - 6, 1) + "\" y=\"" + fixed(py(v) + 4, 1) + "\" text-anchor=\"end\">" +
         fixed(v, step < 0.1 ? 2 : 1) + "</text>\n";
  }
  // x ticks
  for (int i = 0; i <= 4; ++i) {
    const double a = i / 4.0;
    const std::string xs = fixed(px(a), 1);
    s += "<line x1=\"" + xs + "\" y1=\"" + fixed(top, 1) + "\" x2=\"" + xs + "\" y2=\"" + fixed(top + ph, 1) +
         "\" stroke=\"#f0f0f0\"/>\n";
    s += "<text x=\"" + xs + "\" y=\"" + fixed(top + ph + 18, 1) + "\" text-anchor=\"middle\">" + fixed(a, 2) + "</text>\n";
  }
  s += "<rect x=\"" + fixed(left, 1) + "\" y=\"" + fixed(top, 1) + "\" width=\"" + fixed(pw, 1) + "\" height=\"" +
       fixed(ph, 1) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  s += "<text x=\"" + fixed(left + pw / 2, 1) + "\" y=\"" + fixed(H - 12, 1) +
       "\" text-anchor=\"middle\">alpha: (1 - alpha) model A + alpha model B</text>\n";
  s += "<text transform=\"translate(18 " + fixed(top + ph / 2, 1) + ") rotate(-90)\" text-anchor=\"middle\">" + y_label +
       "</text>\n";
  // curves
  for (const auto& c : curves) {
    std::string pts;
    for (std::size_t i = 0; i < x.size() && i < c.y.size(); ++i)
      if (std::isfinite(c.y[i])) pts += fixed(px(x[i]), 2) + "," + fixed(py(std::min(c.y[i], hi)), 2) + " ";
    s += "<polyline fill=\"none\" stroke=\"" + c.color + "\" stroke-width=\"2\"" +
         (c.dashed ? " stroke-dasharray=\"6 4\"" : "") + " points=\"" + pts + "\"/>\n";
  }
  // legend
  double ly = top + 10;
  for (const auto& c : curves) {
    const double lx = left + pw + 16;
    s += "<line x1=\"" + fixed(lx, 1) + "\" y1=\"" + fixed(ly, 1) + "\" x2=\"" + fixed(lx + 28, 1) + "\" y2=\"" +
         fixed(ly, 1) + "\" stroke=\"" + c.color + "\" stroke-width=\"2\"" + (c.dashed ? " stroke-dasharray=\"6 4\"" : "") +
         "/>\n";
    s += "<text x=\"" + fixed(lx + 34, 1) + "\" y=\"" + fixed(ly + 4, 1) + "\">" + c.label + "</text>\n";
    ly += 20;
  }
  s += "</svg>\n";
  std::ofstream out(path);
  out << s;
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
}

}  // namespace digits
