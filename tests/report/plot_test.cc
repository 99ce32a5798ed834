#include <gtest/gtest.h>

#include <string>

#include "xbar/report/plot.h"

namespace xbar {
namespace {

int Count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(Plot, LogAxisSeriesBandsAndLegend) {
  PlotSeries a{"two-column", {1e-4, 1e-3, 1e-2}, {0.90, 0.85, 0.40}, {0.89, 0.83, 0.35}, {0.91, 0.87, 0.45}};
  PlotSeries b{"complementary <&>", {1e-4, 1e-3, 1e-2, 0.0}, {0.90, 0.89, 0.70, 0.9}, {}, {}};
  const std::string svg = LinePlotSvg({"accuracy vs fault rate", "fault rate", "accuracy", true}, {a, b});
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(Count(svg, "<polyline"), 2);
  EXPECT_EQ(Count(svg, "<polygon"), 1) << "a band only where lo/hi are given";
  EXPECT_EQ(Count(svg, "<circle"), 6) << "the rate-0 point cannot sit on a log axis";
  EXPECT_NE(svg.find("complementary &lt;&amp;&gt;"), std::string::npos) << "labels are escaped";
  EXPECT_NE(svg.find(">0.0001</text>"), std::string::npos) << "decade ticks";
  EXPECT_NE(svg.find(">0.01</text>"), std::string::npos);
  EXPECT_NE(svg.find("fault rate (log scale)"), std::string::npos);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
}

TEST(Plot, EmptyInputGivesAFrame) {
  const std::string svg = LinePlotSvg({"nothing", "x", "y", false}, {});
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(Count(svg, "<polyline"), 0);
}

}  // namespace
}  // namespace xbar
