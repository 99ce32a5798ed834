#include "xbar/report/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace xbar {
namespace {

constexpr double kWidth = 720, kHeight = 440;
constexpr double kLeft = 70, kRight = 215, kTop = 40, kBottom = 60;  // margins; the legend sits right
const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

std::string Tick(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// "Nice" linear ticks covering [lo, hi].
std::vector<double> LinearTicks(double lo, double hi) {
  const double span = hi - lo;
  const double raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) t.push_back(std::fabs(v) < 1e-12 * step ? 0.0 : v);
  return t;
}

}  // namespace

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string LinePlotSvg(const PlotOptions& o, const std::vector<PlotSeries>& series) {
  auto usable = [&](double x) { return std::isfinite(x) && (!o.log_x || x > 0); };
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const PlotSeries& s : series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      const bool band = s.lo.size() == s.x.size() && s.hi.size() == s.x.size();
      y0 = std::min(y0, band ? std::min(s.lo[i], s.y[i]) : s.y[i]);
      y1 = std::max(y1, band ? std::max(s.hi[i], s.y[i]) : s.y[i]);
    }
  }
  if (!(x0 <= x1)) x0 = 1, x1 = 10, y0 = 0, y1 = 1;  // nothing to draw: an empty frame
  if (o.log_x) {
    x0 = std::pow(10.0, std::floor(std::log10(x0)));
    x1 = std::pow(10.0, std::ceil(std::log10(x1)));
    if (x1 <= x0) x1 = x0 * 10;
  } else if (x1 <= x0) {
    x1 = x0 + 1;
  }
  if (y1 <= y0) y1 = y0 + 1e-3;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto X = [&](double x) { return kLeft + pw * (o.log_x ? (std::log10(x) - std::log10(x0)) / (std::log10(x1) - std::log10(x0)) : (x - x0) / (x1 - x0)); };
  auto Y = [&](double y) { return kTop + ph * (1 - (y - y0) / (y1 - y0)); };

  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(kWidth) + "\" height=\"" + Num(kHeight) +
                  "\" viewBox=\"0 0 " + Num(kWidth) + " " + Num(kHeight) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + Num(kLeft + pw / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" + XmlEscape(o.title) + "</text>\n";
  // Grid and ticks.
  std::vector<double> xt;
  if (o.log_x) {
    for (double v = x0; v <= x1 * 1.0001; v *= 10) xt.push_back(v);
  } else {
    xt = LinearTicks(x0, x1);
  }
  for (double v : xt) {
    s += "<line x1=\"" + Num(X(v)) + "\" y1=\"" + Num(kTop) + "\" x2=\"" + Num(X(v)) + "\" y2=\"" + Num(kTop + ph) +
         "\" stroke=\"#ddd\"/>\n";
    s += "<text x=\"" + Num(X(v)) + "\" y=\"" + Num(kTop + ph + 18) + "\" text-anchor=\"middle\">" + Tick(v) + "</text>\n";
  }
  for (double v : LinearTicks(y0, y1)) {
    s += "<line x1=\"" + Num(kLeft) + "\" y1=\"" + Num(Y(v)) + "\" x2=\"" + Num(kLeft + pw) + "\" y2=\"" + Num(Y(v)) +
         "\" stroke=\"#ddd\"/>\n";
    s += "<text x=\"" + Num(kLeft - 6) + "\" y=\"" + Num(Y(v) + 4) + "\" text-anchor=\"end\">" + Tick(v) + "</text>\n";
  }
  s += "<rect x=\"" + Num(kLeft) + "\" y=\"" + Num(kTop) + "\" width=\"" + Num(pw) + "\" height=\"" + Num(ph) +
       "\" fill=\"none\" stroke=\"#333\"/>\n";
  s += "<text x=\"" + Num(kLeft + pw / 2) + "\" y=\"" + Num(kHeight - 16) + "\" text-anchor=\"middle\">" +
       XmlEscape(o.x_label) + (o.log_x ? " (log scale)" : "") + "</text>\n";
  s += "<text transform=\"translate(18 " + Num(kTop + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + XmlEscape(o.y_label) +
       "</text>\n";
  // Series: band, line, markers; legend (taller entries when a label takes two lines).
  double legend_step = 20;
  for (const PlotSeries& sr : series) {
    if (sr.label.size() > 22 && sr.label.find(" + ") != std::string::npos) legend_step = 31;
  }
  for (size_t k = 0; k < series.size(); ++k) {
    const PlotSeries& sr = series[k];
    const size_t ci = sr.color >= 0 ? static_cast<size_t>(sr.color) : k;
    const std::string color = kColors[ci % (sizeof(kColors) / sizeof(kColors[0]))];
    const std::string dash = sr.dashed ? "\" stroke-dasharray=\"7 4" : "";
    std::vector<size_t> idx;
    for (size_t i = 0; i < sr.x.size(); ++i) {
      if (usable(sr.x[i]) && std::isfinite(sr.y[i])) idx.push_back(i);
    }
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return sr.x[a] < sr.x[b]; });
    if (sr.lo.size() == sr.x.size() && sr.hi.size() == sr.x.size() && !idx.empty()) {
      std::string pts;
      for (size_t i : idx) pts += Num(X(sr.x[i])) + "," + Num(Y(std::min(y1, sr.hi[i]))) + " ";
      for (auto it = idx.rbegin(); it != idx.rend(); ++it) pts += Num(X(sr.x[*it])) + "," + Num(Y(std::max(y0, sr.lo[*it]))) + " ";
      s += "<polygon points=\"" + pts + "\" fill=\"" + color + "\" fill-opacity=\"0.18\" stroke=\"none\"/>\n";
    }
    std::string line;
    for (size_t i : idx) line += Num(X(sr.x[i])) + "," + Num(Y(sr.y[i])) + " ";
    s += "<polyline points=\"" + line + "\" fill=\"none\" stroke=\"" + color + dash + "\" stroke-width=\"2\"/>\n";
    for (size_t i : idx) {
      s += "<circle cx=\"" + Num(X(sr.x[i])) + "\" cy=\"" + Num(Y(sr.y[i])) + "\" r=\"3\" fill=\"" + color + "\"><title>" +
           XmlEscape(sr.label) + ": " + Tick(sr.x[i]) + ", " + Tick(sr.y[i]) + "</title></circle>\n";
    }
    // A long label ("scheme, model + placement") continues on a second line from its " + ".
    const double ly = kTop + 10 + legend_step * static_cast<double>(k);
    s += "<line x1=\"" + Num(kLeft + pw + 12) + "\" y1=\"" + Num(ly) + "\" x2=\"" + Num(kLeft + pw + 32) + "\" y2=\"" + Num(ly) +
         "\" stroke=\"" + color + dash + "\" stroke-width=\"3\"/>\n";
    const size_t cut = sr.label.size() > 22 ? sr.label.find(" + ") : std::string::npos;
    if (cut == std::string::npos) {
      s += "<text x=\"" + Num(kLeft + pw + 38) + "\" y=\"" + Num(ly + 4) + "\">" + XmlEscape(sr.label) + "</text>\n";
    } else {
      s += "<text x=\"" + Num(kLeft + pw + 38) + "\" y=\"" + Num(ly + 4) + "\">" + XmlEscape(sr.label.substr(0, cut)) +
           "<tspan x=\"" + Num(kLeft + pw + 38) + "\" dy=\"13\">" + XmlEscape(sr.label.substr(cut + 1)) + "</tspan></text>\n";
    }
  }
  s += "</svg>\n";
  return s;
}


std::string BarPlotSvg(const PlotOptions& o, const std::vector<std::string>& categories,
                       const std::vector<BarSeries>& series, bool stacked, bool log_y) {
  const size_t n = categories.size();
  auto value = [&](const BarSeries& sr, size_t i) {
    const double v = i < sr.values.size() ? sr.values[i] : std::nan("");
    return std::isfinite(v) && v >= 0 ? v : std::nan("");
  };
  double vmax = 0, vmin_pos = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) {
    double sum = 0;
    for (const BarSeries& sr : series) {
      const double v = value(sr, i);
      if (!std::isfinite(v)) continue;
      sum += v;
      vmax = std::max(vmax, v);
      if (v > 0) vmin_pos = std::min(vmin_pos, v);
    }
    if (stacked) vmax = std::max(vmax, sum);
  }
  if (vmax <= 0) vmax = 1;
  double y0 = 0, y1 = vmax * 1.05;
  log_y = log_y && std::isfinite(vmin_pos);
  if (log_y) {
    y0 = std::pow(10.0, std::floor(std::log10(vmin_pos)));
    y1 = std::pow(10.0, std::ceil(std::log10(vmax)));
    if (y1 <= y0) y1 = y0 * 10;
  }
  // Long category names are written at an angle below the axis.
  size_t longest = 0;
  for (const std::string& c : categories) longest = std::max(longest, c.size());
  const bool slanted = n > 6 || longest > 10;
  const double bottom = slanted ? kBottom + std::min<double>(90, 6.0 * static_cast<double>(longest)) : kBottom;
  const double height = kHeight - kBottom + bottom;
  const double pw = kWidth - kLeft - kRight, ph = height - kTop - bottom;
  auto Y = [&](double v) {
    if (log_y) return kTop + ph * (1 - (std::log10(std::max(v, y0)) - std::log10(y0)) / (std::log10(y1) - std::log10(y0)));
    return kTop + ph * (1 - (v - y0) / (y1 - y0));
  };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(kWidth) + "\" height=\"" + Num(height) +
                  "\" viewBox=\"0 0 " + Num(kWidth) + " " + Num(height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + Num(kLeft + pw / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" + XmlEscape(o.title) + "</text>\n";
  std::vector<double> yt;
  if (log_y) {
    for (double v = y0; v <= y1 * 1.0001; v *= 10) yt.push_back(v);
  } else {
    yt = LinearTicks(y0, y1);
  }
  for (double v : yt) {
    s += "<line x1=\"" + Num(kLeft) + "\" y1=\"" + Num(Y(v)) + "\" x2=\"" + Num(kLeft + pw) + "\" y2=\"" + Num(Y(v)) +
         "\" stroke=\"#ddd\"/>\n";
    s += "<text x=\"" + Num(kLeft - 6) + "\" y=\"" + Num(Y(v) + 4) + "\" text-anchor=\"end\">" + Tick(v) + "</text>\n";
  }
  s += "<text transform=\"translate(18 " + Num(kTop + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       XmlEscape(o.y_label) + (log_y ? " (log scale)" : "") + "</text>\n";
  s += "<text x=\"" + Num(kLeft + pw / 2) + "\" y=\"" + Num(height - 8) + "\" text-anchor=\"middle\">" + XmlEscape(o.x_label) +
       "</text>\n";
  const double slot = n > 0 ? pw / static_cast<double>(n) : pw;
  const size_t groups = stacked ? 1 : std::max<size_t>(1, series.size());
  const double bar_w = 0.8 * slot / static_cast<double>(groups);
  for (size_t i = 0; i < n; ++i) {
    double base = log_y ? y0 : 0;
    for (size_t k = 0; k < series.size(); ++k) {
      const double v = value(series[k], i);
      if (!std::isfinite(v)) continue;
      const std::string color = kColors[k % (sizeof(kColors) / sizeof(kColors[0]))];
      const double x = kLeft + slot * static_cast<double>(i) + 0.1 * slot + (stacked ? 0 : bar_w * static_cast<double>(k));
      const double top = stacked ? base + v : v;
      const double ya = Y(top), yb = Y(stacked ? base : (log_y ? y0 : 0));
      s += "<rect x=\"" + Num(x) + "\" y=\"" + Num(ya) + "\" width=\"" + Num(bar_w) + "\" height=\"" +
           Num(std::max(0.0, yb - ya)) + "\" fill=\"" + color + "\"><title>" + XmlEscape(categories[i]) + ", " +
           XmlEscape(series[k].label) + ": " + Tick(v) + "</title></rect>\n";
      if (stacked) base = top;
    }
    const double cx = kLeft + slot * (static_cast<double>(i) + 0.5);
    if (slanted) {
      s += "<text transform=\"translate(" + Num(cx) + " " + Num(kTop + ph + 14) + ") rotate(-35)\" text-anchor=\"end\">" +
           XmlEscape(categories[i]) + "</text>\n";
    } else {
      s += "<text x=\"" + Num(cx) + "\" y=\"" + Num(kTop + ph + 18) + "\" text-anchor=\"middle\">" + XmlEscape(categories[i]) +
           "</text>\n";
    }
  }
  s += "<rect x=\"" + Num(kLeft) + "\" y=\"" + Num(kTop) + "\" width=\"" + Num(pw) + "\" height=\"" + Num(ph) +
       "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const std::string color = kColors[k % (sizeof(kColors) / sizeof(kColors[0]))];
    const double ly = kTop + 10 + 20 * static_cast<double>(k);
    s += "<rect x=\"" + Num(kLeft + pw + 12) + "\" y=\"" + Num(ly - 6) + "\" width=\"20\" height=\"12\" fill=\"" + color +
         "\"/>\n";
    s += "<text x=\"" + Num(kLeft + pw + 38) + "\" y=\"" + Num(ly + 4) + "\">" + XmlEscape(series[k].label) + "</text>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace xbar
