// xbar/report/plot.h — self-contained SVG line plots (no scripts, no external fonts or styles),
// for the result files and the HTML report.
//
//   PlotSeries s{"complementary", rates, means, ci_low, ci_high};
//   std::string svg = LinePlotSvg({"LeNet-5 accuracy vs stuck-at rate", "fault rate", "accuracy", true}, {s});
#pragma once

#include <string>
#include <vector>

namespace xbar {

// Text made safe inside XML/HTML elements and attribute values (&, <, >, ").
std::string XmlEscape(const std::string& text);

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;
  std::vector<double> lo, hi;  // optional band (e.g. a 95 % confidence interval): same size as x, or empty
  int color = -1;              // palette index (-1: the series' position), so related curves can share one
  bool dashed = false;         // drawn dashed (e.g. the same chips with placement)
};

struct PlotOptions {
  std::string title, x_label, y_label;
  bool log_x = false;  // x > 0 required on a log axis; other points are left out
};

// An SVG document: axes with ticks, one polyline with markers per series, translucent bands,
// and a legend.
std::string LinePlotSvg(const PlotOptions& options, const std::vector<PlotSeries>& series);

// One bar series: a value per category (NaN: no bar).
struct BarSeries {
  std::string label;
  std::vector<double> values;
};

// An SVG bar chart over `categories` (e.g. layers): grouped bars side by side, or `stacked` into
// one bar per category (e.g. energy by component). Values must be >= 0; with `log_y` bars start
// at the decade below the smallest positive value.
std::string BarPlotSvg(const PlotOptions& options, const std::vector<std::string>& categories,
                       const std::vector<BarSeries>& series, bool stacked = false, bool log_y = false);

}  // namespace xbar
