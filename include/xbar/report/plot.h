// xbar/report/plot.h — self-contained SVG line plots (no scripts, no external fonts or styles),
// for the result files and the HTML report.
//
//   PlotSeries s{"complementary", rates, means, ci_low, ci_high};
//   std::string svg = LinePlotSvg({"LeNet-5 accuracy vs stuck-at rate", "fault rate", "accuracy", true}, {s});
#pragma once

#include <string>
#include <vector>

namespace xbar {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;
  std::vector<double> lo, hi;  // optional band (e.g. a 95 % confidence interval): same size as x, or empty
};

struct PlotOptions {
  std::string title, x_label, y_label;
  bool log_x = false;  // x > 0 required on a log axis; other points are left out
};

// An SVG document: axes with ticks, one polyline with markers per series, translucent bands,
// and a legend.
std::string LinePlotSvg(const PlotOptions& options, const std::vector<PlotSeries>& series);

}  // namespace xbar
