#include <gtest/gtest.h>

#include <string>

#include "xbar/report/plot.h"
#include "xbar/report/report.h"

namespace xbar {
namespace {

int Count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(BarPlot, GroupedStackedAndLogBars) {
  const std::string g = BarPlotSvg({"crossbars", "layer", "count", false}, {"conv1", "fc1"},
                                   {{"dense", {1, 32}}, {"compressed", {1, 13}}});
  EXPECT_EQ(Count(g, "<title>"), 4) << "one bar per value, each with its value";
  EXPECT_NE(g.find("fc1, compressed: 13"), std::string::npos);
  EXPECT_EQ(g.find("<script"), std::string::npos);
  // A missing or negative value draws no bar.
  const std::string m = BarPlotSvg({"t", "x", "y", false}, {"a", "b"}, {{"s", {2, -1}}});
  EXPECT_EQ(Count(m, "<title>"), 1);
  // Stacked: the bars of one category sit on each other (the second starts where the first ends).
  const std::string st = BarPlotSvg({"t", "x", "y", false}, {"a"}, {{"p", {1}}, {"q", {1}}}, /*stacked=*/true);
  EXPECT_EQ(Count(st, "<title>"), 2);
  const std::string lg = BarPlotSvg({"t", "x", "energy", false}, {"a", "b"}, {{"s", {0.5, 300}}}, false, /*log_y=*/true);
  EXPECT_NE(lg.find("energy (log scale)"), std::string::npos);
  EXPECT_NE(lg.find(">0.1</text>"), std::string::npos) << "decade ticks from below the smallest value";
  EXPECT_NE(lg.find(">1000</text>"), std::string::npos);
}

// A results.json as xbar run writes it, trimmed to what the report reads.
nlohmann::json Results() {
  return nlohmann::json::parse(R"({
    "schema_version": 1, "name": "t", "title": "Test <run>",
    "train": {"model": "lenet5", "dataset": "fashion-mnist", "test_accuracy": 0.9067, "test_images": 10000},
    "compress": {"accuracy_compressed": 0.8952, "compression_ratio": 19.0, "weights_total": 61470, "weights_nonzero": 3229,
                 "storage_bits_dense": 1967040, "storage_bits_compressed": 12916, "crossbars_dense": 42, "crossbars_compressed": 19,
                 "layers": [{"name": "conv1", "rows": 25, "cols": 6, "total": 150, "nonzero": 75, "constraints": ["sparsity"],
                             "crossbars_dense": 1, "crossbars": 1},
                            {"name": "fc1", "rows": 400, "cols": 120, "total": 48000, "nonzero": 1920, "constraints": [],
                             "crossbars_dense": 32, "crossbars": 13}]},
    "simulate_schemes": [{"scheme": "two-column", "accuracy": 0.895, "accuracy_quantized": 0.895, "test_images": 10000},
                         {"scheme": "complementary", "accuracy": 0.894, "accuracy_quantized": 0.895, "test_images": 10000}],
    "faults": {"samples": 10, "max_drop": 0.01, "sa0_to_sa1": [1, 5.2], "axis": "faults.rate",
               "curves": [{"scheme": "two-column", "weights": "a", "prune_ratio": 0.0, "placement": false,
                           "fault_free_accuracy": 0.9, "tolerable_fault_rate": 0.0, "below_grid": true,
                           "tolerable_fault_rate_ci95": [0.0, null],
                           "points": [{"fault_rate": 0.001, "accuracy_mean": 0.8, "accuracy_std": 0.01, "ci95": [0.79, 0.81], "samples": 10},
                                      {"fault_rate": 0.0001, "accuracy_mean": 0.88, "accuracy_std": 0.01, "ci95": [0.87, 0.89], "samples": 10}]},
                          {"scheme": "complementary", "weights": "b", "prune_ratio": 0.95, "placement": true,
                           "fault_free_accuracy": 0.9, "tolerable_fault_rate": 0.002, "tolerable_fault_rate_ci95": [0.001, 0.003],
                           "points": [{"fault_rate": 0.0001, "accuracy_mean": 0.9, "accuracy_std": 0.0, "ci95": [0.9, 0.9], "samples": 10},
                                      {"fault_rate": 0.01, "accuracy_mean": 0.7, "accuracy_std": null, "ci95": null, "samples": 10}]}]},
    "estimate": {"preset": "generic", "chip": {"arch": {"crossbar_rows": 128, "crossbar_cols": 128, "adc_bits": 9},
                                               "components": [{"component": "adc-9b", "area_mm2": 38.7}, {"component": "crossbar", "area_mm2": 0.4}]},
                 "model": {"crossbars": 19, "area_mm2": 0.24, "power_w": 0.0075, "energy_per_inference_uj": 4.7, "fps": 1594,
                           "gops_per_s_per_mm2": 5.4, "gops_per_w": 177, "busy_gops_per_w": 6},
                 "layers": [{"name": "conv1", "latency_us": 627, "energy_breakdown_nj": {"adc-7b": 235, "crossbar": 65}},
                            {"name": "fc1", "latency_us": 0.8, "energy_breakdown_nj": {"adc-9b": 20, "crossbar": 5}}]},
    "estimate_dense": {"preset": "generic", "model": {"crossbars": 42, "area_mm2": 0.5, "energy_per_inference_uj": 9.4,
                                                      "gops_per_s_per_mm2": 3, "gops_per_w": 100}},
    "estimate_presets": {"isaac": {"preset": "isaac", "chip": {"components": [{"component": "adc-8b", "area_mm2": 20}]},
                                   "model": {"crossbars": 25, "gops_per_s_per_mm2": 2.7, "gops_per_w": 88.5,
                                             "busy_gops_per_w": 4},
                                   "layers": [{"name": "conv1", "latency_us": 600, "energy_breakdown_nj": {"adc-8b": 300}}]}},
    "stages": {"train": {"status": "ran", "seconds": 45.0, "key": "abc", "command": "xbar train -c x.yaml -o r/train"}},
    "provenance": {"xbar_version": "0.1.0", "command": "xbar run -c x.yaml"}
  })");
}

TEST(Report, EveryFigureTableAndNumberFromResults) {
  const Report r = BuildReport(Results(), "name: t  # x.yaml:1\n");
  std::vector<std::string> ids;
  for (const auto& f : r.figures) ids.push_back(f.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"faults", "layer_sparsity", "layer_crossbars", "energy_breakdown",
                                           "area_breakdown", "layer_latency"}));
  for (const auto& f : r.figures) {
    EXPECT_GE(Count(f.svg, "<title>"), 2) << f.id << " draws data";
    EXPECT_GE(Count(f.csv, "\n"), 2) << f.id << " has a header and data rows";
    EXPECT_NE(r.html.find("id=\"fig-" + f.id + "\""), std::string::npos);
  }
  // Curves are sorted by rate; a null CI falls back to the mean; both models are labelled.
  EXPECT_NE(r.figures[0].csv.find("0,two-column,a,0,false,0.0001,0.88"), std::string::npos) << r.figures[0].csv;
  EXPECT_NE(r.figures[0].csv.find("1,complementary,b,0.95,true,0.01,0.7,,0.7,0.7,10"), std::string::npos) << r.figures[0].csv;
  // ADC components of different widths are one component.
  EXPECT_NE(r.figures[3].csv.find("adc,255,300"), std::string::npos) << r.figures[3].csv;

  ASSERT_EQ(r.summary.size(), 4u);
  EXPECT_EQ(r.summary[0], "accuracy: trained 90.67 %, compressed 89.52 % (19.0x fewer weights, crossbars 42 -> 19)");
  EXPECT_NE(r.summary[2].find("two-column, dense < 0.0001"), std::string::npos) << r.summary[2];
  EXPECT_NE(r.summary[2].find("complementary, pruned 95 % + placement 0.002"), std::string::npos) << r.summary[2];
  EXPECT_NE(r.summary[3].find("vs ISAAC 2.00x GOPs/(s mm^2), 2.00x GOPs/W (1.50x counting busy units"),
            std::string::npos) << r.summary[3];

  const std::string& h = r.html;
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(h.find("<title>Test &lt;run&gt; — xbar report</title>"), std::string::npos) << "escaped";
  EXPECT_NE(h.find("61,470"), std::string::npos);
  EXPECT_NE(h.find("compression cut its area by 52.0 %"), std::string::npos);
  EXPECT_NE(h.find("2.00× / 2.00× / 1.50×"), std::string::npos) << "busy-unit GOPs/W beside the activity figure";
  EXPECT_NE(h.find("name: t  # x.yaml:1"), std::string::npos) << "the resolved config";
  EXPECT_NE(h.find("xbar train -c x.yaml -o r/train"), std::string::npos) << "stage commands";
  EXPECT_EQ(h.find("<script"), std::string::npos);
  EXPECT_EQ(h.find("https://"), std::string::npos);
  EXPECT_NE(h.find("default-src 'none'"), std::string::npos) << "a CSP that forbids fetching";
}

TEST(Report, PartialResultsGiveAPartialReport) {
  nlohmann::json r = {{"schema_version", 1}, {"name", "only-train"}, {"train", {{"test_accuracy", 0.5}}}};
  const Report rep = BuildReport(r, "");
  EXPECT_TRUE(rep.figures.empty());
  ASSERT_EQ(rep.summary.size(), 1u);
  EXPECT_EQ(rep.summary[0], "accuracy: trained 50.00 %");
  EXPECT_NE(rep.html.find("</html>"), std::string::npos);
}

}  // namespace
}  // namespace xbar
