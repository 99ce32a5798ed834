// xbar/report/report.h — the report of an `xbar run`: one self-contained HTML file (inline CSS and
// SVG; no scripts, fonts or anything else fetched), every figure also as SVG + CSV, and the
// five-line summary printed at the end of the run. Built from results.json alone (plus the
// resolved config's text), so a report can be rebuilt from a run directory without LibTorch.
//
//   nlohmann::json results = nlohmann::json::parse(ReadFile("runs/x/results.json"));
//   Report r = BuildReport(results, ReadFile("runs/x/config.resolved.yaml"));
//   WriteFileAtomic("runs/x/report.html", r.html);   // r.figures: id, svg, csv each
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace xbar {

struct ReportFigure {
  std::string id;       // file stem: "faults" -> report/faults.svg, report/faults.csv
  std::string title;
  std::string caption;  // one sentence: how to read it
  std::string svg;
  std::string csv;
};

struct Report {
  std::string html;
  std::vector<ReportFigure> figures;
  std::vector<std::string> summary;  // the run's result in five lines (plain text)
};

// results: the object `xbar run` writes as results.json (sections train, compress, simulate,
// simulate_schemes, faults, estimate, estimate_presets, stages, provenance; any may be missing).
Report BuildReport(const nlohmann::json& results, const std::string& resolved_config_yaml);

// Only the summary lines (Report::summary) of the same results.
std::vector<std::string> ReportSummary(const nlohmann::json& results);

}  // namespace xbar
