#include "xbar/report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

#include "xbar/report/plot.h"

namespace xbar {
namespace {

using json = nlohmann::json;

std::string Esc(const std::string& s) { return XmlEscape(s); }

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}
std::string Pct(double a) { return Fmt("%.2f %%", 100 * a); }
std::string G3(double v) { return std::isfinite(v) ? Fmt("%.3g", v) : std::string("—"); }
// Whole counts with thousands separators: 61,470.
std::string Count(double v) {
  if (!std::isfinite(v)) return "—";
  std::string d = Fmt("%.0f", std::fabs(v)), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return (v < 0 ? "-" : "") + out;
}
// A curve's tolerable rate as text: "< 0.0001" when even the first grid rate costs too much.
std::string Tolerable(const json& c, const json& grid_first) {
  const json& t = c.contains("tolerable_fault_rate") ? c["tolerable_fault_rate"] : c.value("tolerable_value", json());
  if (c.value("below_grid", false)) return "< " + (grid_first.is_number() ? Fmt("%.3g", grid_first.get<double>()) : std::string("grid"));
  if (c.value("above_grid", false)) return "≥ " + (t.is_number() ? Fmt("%.3g", t.get<double>()) : std::string("grid"));
  return t.is_number() ? Fmt("%.3g", t.get<double>()) : std::string("—");
}
// The smallest rate a curve was sampled at.
json FirstRate(const json& c) {
  double lo = std::numeric_limits<double>::infinity();
  if (c.contains("points") && c["points"].is_array()) {
    for (const json& p : c["points"]) {
      if (p.contains("fault_rate") && p["fault_rate"].is_number()) lo = std::min(lo, p["fault_rate"].get<double>());
    }
  }
  return std::isfinite(lo) ? json(lo) : json();
}

// The value at a path of object keys, or null.
const json& At(const json& j, std::initializer_list<const char*> path) {
  static const json kNull;
  const json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return kNull;
    p = &(*p)[k];
  }
  return *p;
}
// A number, or NaN when the value is missing or not a number (null in a JSON array).
double D(const json& v) { return v.is_number() ? v.get<double>() : std::nan(""); }
double Num(const json& j, std::initializer_list<const char*> path, double fallback = std::nan("")) {
  const json& v = At(j, path);
  return v.is_number() ? v.get<double>() : fallback;
}
std::string Str(const json& j, std::initializer_list<const char*> path) {
  const json& v = At(j, path);
  return v.is_string() ? v.get<std::string>() : "";
}

// CSV cell: quoted when it holds a comma or quote.
std::string Cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
std::string CellNum(double v) { return std::isfinite(v) ? Fmt("%.10g", v) : ""; }

// A bar figure's data: one row per category, one column per series (empty cell: no value).
std::string BarCsv(const std::string& first_column, const std::vector<std::string>& categories,
                   const std::vector<BarSeries>& series, const std::string& column_suffix = "") {
  std::string csv = Cell(first_column);
  for (const BarSeries& s : series) csv += "," + Cell(s.label + column_suffix);
  csv += "\n";
  for (size_t i = 0; i < categories.size(); ++i) {
    csv += Cell(categories[i]);
    for (const BarSeries& s : series) csv += "," + CellNum(i < s.values.size() ? s.values[i] : std::nan(""));
    csv += "\n";
  }
  return csv;
}

// "adc-9b" and "adc-7b" are one component across chips and layers.
std::string Component(const std::string& name) { return name.rfind("adc-", 0) == 0 ? "adc" : name; }

// A fault curve's label: scheme, which model (when the campaign compares several), placement.
std::string CurveLabel(const json& c, bool several_models) {
  std::string label = Str(c, {"scheme"});
  if (several_models) {
    const double pr = Num(c, {"prune_ratio"}, 0);
    label += pr > 0.005 ? Fmt(", pruned %.0f %%", 100 * pr) : std::string(", dense");
  }
  if (At(c, {"placement"}).is_boolean() && At(c, {"placement"}).get<bool>()) label += " + placement";
  return label;
}

struct Chip {
  std::string name;  // preset
  const json* est;
};

// The chips the final weights were priced on: this run's own first, then the reference presets.
std::vector<Chip> Chips(const json& r) {
  std::vector<Chip> chips;
  if (At(r, {"estimate"}).is_object()) chips.push_back({Str(r, {"estimate", "preset"}) + " (this run)", &r["estimate"]});
  if (At(r, {"estimate_presets"}).is_object()) {
    for (const auto& [name, e] : r["estimate_presets"].items()) chips.push_back({name, &e});
  }
  return chips;
}

const json* Isaac(const json& r) {
  if (Str(r, {"estimate", "preset"}) == "isaac") return &r["estimate"];
  const json& p = At(r, {"estimate_presets", "isaac"});
  return p.is_object() ? &p : nullptr;
}

std::string Table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::string s = "<table><thead><tr>";
  for (const auto& h : head) s += "<th>" + h + "</th>";
  s += "</tr></thead><tbody>\n";
  for (const auto& row : rows) {
    s += "<tr>";
    for (const auto& c : row) s += "<td>" + c + "</td>";
    s += "</tr>\n";
  }
  return s + "</tbody></table>\n";
}

// ---- figures --------------------------------------------------------------------------------

void FaultsFigure(const json& r, std::vector<ReportFigure>* out) {
  const json& f = At(r, {"faults"});
  if (!f.is_object() || !f["curves"].is_array() || f["curves"].empty()) return;
  std::set<std::string> models;
  for (const json& c : f["curves"]) models.insert(Str(c, {"weights"}));
  std::vector<PlotSeries> series;
  const bool rate_axis = Str(f, {"axis"}).empty() || Str(f, {"axis"}) == "faults.rate";
  const char* xkey = rate_axis ? "fault_rate" : "value";
  std::string csv = std::string("curve,scheme,weights,prune_ratio,placement,") + (rate_axis ? "fault_rate" : Str(f, {"axis"})) +
                    ",accuracy_mean,accuracy_std,ci95_low,ci95_high,samples\n";
  int k = 0;
  std::map<std::string, int> colors;  // one colour per (model, scheme); placed chips dashed
  for (const json& c : f["curves"]) {
    PlotSeries s;
    s.label = CurveLabel(c, models.size() > 1);
    const std::string base = Str(c, {"weights"}) + "|" + Str(c, {"scheme"});
    s.color = colors.emplace(base, static_cast<int>(colors.size())).first->second;
    s.dashed = At(c, {"placement"}) == true;
    std::vector<const json*> pts;
    for (const json& p : c["points"]) pts.push_back(&p);
    std::sort(pts.begin(), pts.end(), [&](const json* a, const json* b) { return Num(*a, {xkey}) < Num(*b, {xkey}); });
    for (const json* p : pts) {
      const double x = Num(*p, {xkey});
      s.x.push_back(x);
      s.y.push_back(100 * Num(*p, {"accuracy_mean"}));
      const json& ci = At(*p, {"ci95"});
      const double lo = ci.is_array() && ci.size() == 2 ? D(ci[0]) : Num(*p, {"accuracy_mean"});
      const double hi = ci.is_array() && ci.size() == 2 ? D(ci[1]) : Num(*p, {"accuracy_mean"});
      s.lo.push_back(100 * lo);
      s.hi.push_back(100 * hi);
      csv += std::to_string(k) + "," + Cell(Str(c, {"scheme"})) + "," + Cell(Str(c, {"weights"})) + "," +
             CellNum(Num(c, {"prune_ratio"})) + "," + (At(c, {"placement"}) == true ? "true" : "false") + "," + CellNum(x) +
             "," + CellNum(Num(*p, {"accuracy_mean"})) + "," + CellNum(Num(*p, {"accuracy_std"})) + "," + CellNum(lo) + "," +
             CellNum(hi) + "," + CellNum(Num(*p, {"samples"})) + "\n";
    }
    series.push_back(std::move(s));
    ++k;
  }
  const std::string x_label = rate_axis ? "stuck-at fault rate per cell" : Str(f, {"axis"});
  ReportFigure fig;
  fig.id = "faults";
  fig.title = rate_axis ? "Accuracy vs stuck-at fault rate" : "Accuracy vs " + x_label;
  fig.caption = "Mean test accuracy over " + G3(Num(f, {"samples"}, 0)) +
                " random chips per point, with the 95 % confidence band; stuck-off : stuck-on = " +
                (At(f, {"sa0_to_sa1"}).is_array() && f["sa0_to_sa1"].size() == 2
                     ? G3(D(f["sa0_to_sa1"][0])) + " : " + G3(D(f["sa0_to_sa1"][1]))
                     : std::string("?")) +
                ". A curve that stays flat longer tolerates more faults.";
  fig.svg = LinePlotSvg({fig.title, x_label, "test accuracy (%)", rate_axis}, series);
  fig.csv = csv;
  out->push_back(std::move(fig));
}

void LayerFigures(const json& r, std::vector<ReportFigure>* out) {
  const json& c = At(r, {"compress", "layers"});
  if (!c.is_array() || c.empty()) return;
  std::vector<std::string> names;
  BarSeries kept{"weights kept (%)", {}};
  BarSeries dense{"dense", {}}, comp{"compressed", {}};
  std::string csv = "layer,weights,nonzero,sparsity,crossbars_dense,crossbars_compressed\n";
  for (const json& l : c) {
    names.push_back(Str(l, {"name"}));
    const double total = Num(l, {"total"}, 0), nz = Num(l, {"nonzero"}, 0);
    kept.values.push_back(total > 0 ? 100 * nz / total : std::nan(""));
    dense.values.push_back(Num(l, {"crossbars_dense"}));
    comp.values.push_back(Num(l, {"crossbars"}));
    csv += Cell(names.back()) + "," + CellNum(total) + "," + CellNum(nz) + "," + CellNum(total > 0 ? 1 - nz / total : 0) + "," +
           CellNum(Num(l, {"crossbars_dense"})) + "," + CellNum(Num(l, {"crossbars"})) + "\n";
  }
  ReportFigure a;
  a.id = "layer_sparsity";
  a.title = "Weights kept per layer after compression";
  a.caption = "Share of each layer's weights that are non-zero after ADMM compression (the rest are pruned).";
  a.svg = BarPlotSvg({a.title, "layer", "weights kept (%)", false}, names, {kept});
  a.csv = csv;
  out->push_back(std::move(a));
  ReportFigure b;
  b.id = "layer_crossbars";
  b.title = "Crossbars per layer, dense and compressed";
  b.caption = "Physical crossbars each layer occupies before and after compression (empty crossbar rows, columns "
              "and tiles are not programmed).";
  b.svg = BarPlotSvg({b.title, "layer", "crossbars", false}, names, {dense, comp});
  b.csv = csv;
  out->push_back(std::move(b));
}

void CostFigures(const json& r, std::vector<ReportFigure>* out) {
  const std::vector<Chip> chips = Chips(r);
  if (chips.empty()) return;
  // Energy per inference by component, one bar per chip.
  std::vector<std::string> comps;
  std::vector<std::map<std::string, double>> energy(chips.size()), area(chips.size());
  for (size_t k = 0; k < chips.size(); ++k) {
    const json& layers = At(*chips[k].est, {"layers"});
    if (layers.is_array()) {
      for (const json& l : layers) {
        const json& b = At(l, {"energy_breakdown_nj"});
        if (!b.is_object()) continue;
        for (const auto& [name, v] : b.items()) energy[k][Component(name)] += std::isfinite(D(v)) ? D(v) : 0.0;
      }
    }
    const json& cs = At(*chips[k].est, {"chip", "components"});
    if (cs.is_array()) {
      for (const json& cpt : cs) area[k][Component(Str(cpt, {"component"}))] += Num(cpt, {"area_mm2"}, 0);
    }
  }
  auto figure = [&](const std::string& id, const std::string& title, const std::string& unit, const std::string& caption,
                    const std::vector<std::map<std::string, double>>& values) {
    std::set<std::string> names;
    for (const auto& m : values) {
      for (const auto& kv : m) names.insert(kv.first);
    }
    if (names.empty()) return;
    std::vector<std::string> cats(names.begin(), names.end());
    std::vector<BarSeries> series;
    for (size_t k = 0; k < chips.size(); ++k) {
      BarSeries s{chips[k].name, {}};
      for (const auto& n : cats) s.values.push_back(values[k].count(n) ? values[k].at(n) : 0.0);
      series.push_back(std::move(s));
    }
    ReportFigure f;
    f.id = id;
    f.title = title;
    f.caption = caption;
    f.svg = BarPlotSvg({title, "component", unit, false}, cats, series, false, /*log_y=*/true);
    f.csv = BarCsv("component", cats, series);
    out->push_back(std::move(f));
  };
  figure("energy_breakdown", "Energy per inference by component", "energy per inference (nJ)",
         "Where each inference's energy goes on each chip (log scale): ADCs usually dominate a crossbar accelerator.",
         energy);
  figure("area_breakdown", "Chip area by component", "area (mm²)",
         "Area of each chip's components (log scale), whole chip as the preset describes it.", area);

  // Per-layer latency.
  const json& own = At(*chips[0].est, {"layers"});
  if (own.is_array() && !own.empty()) {
    std::vector<std::string> names;
    std::vector<BarSeries> series;
    for (const json& l : own) names.push_back(Str(l, {"name"}));
    for (const Chip& c : chips) {
      BarSeries s{c.name, std::vector<double>(names.size(), std::nan(""))};
      const json& ls = At(*c.est, {"layers"});
      if (ls.is_array()) {
        for (const json& l : ls) {
          auto it = std::find(names.begin(), names.end(), Str(l, {"name"}));
          if (it != names.end()) s.values[static_cast<size_t>(it - names.begin())] = Num(l, {"latency_us"});
        }
      }
      series.push_back(std::move(s));
    }
    ReportFigure f;
    f.id = "layer_latency";
    f.title = "Latency per layer";
    f.caption = "Time each layer's crossbars take for one image (µs, log scale); in a pipelined chip the slowest "
                "layer sets the frame rate.";
    f.svg = BarPlotSvg({f.title, "layer", "latency (µs)", false}, names, series, false, true);
    f.csv = BarCsv("layer", names, series, " latency_us");
    out->push_back(std::move(f));
  }
}

// ---- text -----------------------------------------------------------------------------------

}  // namespace

std::vector<std::string> ReportSummary(const json& r) {
  std::vector<std::string> lines;
  std::string acc = "accuracy: ";
  if (At(r, {"train", "test_accuracy"}).is_number()) acc += "trained " + Pct(Num(r, {"train", "test_accuracy"}));
  if (At(r, {"compress"}).is_object()) {
    acc += ", compressed " + Pct(Num(r, {"compress", "accuracy_compressed"})) + " (" +
           Fmt("%.1fx", Num(r, {"compress", "compression_ratio"})) + " fewer weights, crossbars " +
           G3(Num(r, {"compress", "crossbars_dense"})) + " -> " + G3(Num(r, {"compress", "crossbars_compressed"})) + ")";
  }
  lines.push_back(acc);
  const json& sims = At(r, {"simulate_schemes"});
  if (sims.is_array() && !sims.empty()) {
    std::string s = "on crossbars: ";
    for (size_t i = 0; i < sims.size(); ++i) {
      s += (i ? ", " : "") + Str(sims[i], {"scheme"}) + " " + Pct(Num(sims[i], {"accuracy"}));
    }
    s += " (ideal quantised " + Pct(Num(sims[0], {"accuracy_quantized"})) + ")";
    lines.push_back(s);
  }
  const json& curves = At(r, {"faults", "curves"});
  if (curves.is_array() && !curves.empty()) {
    std::set<std::string> models;
    for (const json& c : curves) models.insert(Str(c, {"weights"}));
    const std::string axis = Str(r, {"faults", "axis"});
    std::string s = (axis.empty() || axis == "faults.rate" ? std::string("tolerable stuck-at rate") : "tolerable " + axis) +
                    " (<= " + Fmt("%.3g", 100 * Num(r, {"faults", "max_drop"}, 0.01)) + " % loss): ";
    for (size_t i = 0; i < curves.size(); ++i) {
      s += (i ? ", " : "") + CurveLabel(curves[i], models.size() > 1) + " " + Tolerable(curves[i], FirstRate(curves[i]));
    }
    lines.push_back(s);
  }
  if (At(r, {"estimate", "model"}).is_object()) {
    const json& m = r["estimate"]["model"];
    std::string s = "cost on " + Str(r, {"estimate", "preset"}) + ": " + G3(Num(m, {"area_mm2"})) + " mm^2, " +
                    G3(Num(m, {"power_w"})) + " W, " + G3(Num(m, {"energy_per_inference_uj"})) + " uJ/inference, " +
                    G3(Num(m, {"fps"})) + " frames/s";
    if (At(r, {"estimate_dense", "model"}).is_object()) {
      s += Fmt(" (dense: %.3g uJ)", Num(r, {"estimate_dense", "model", "energy_per_inference_uj"}));
    }
    if (const json* isaac = Isaac(r); isaac && isaac != &r["estimate"]) {
      s += "; vs ISAAC " + Fmt("%.2fx", Num(m, {"gops_per_s_per_mm2"}) / Num(*isaac, {"model", "gops_per_s_per_mm2"})) +
           " GOPs/(s mm^2), " + Fmt("%.2fx", Num(m, {"gops_per_w"}) / Num(*isaac, {"model", "gops_per_w"})) + " GOPs/W";
      const double busy = Num(m, {"busy_gops_per_w"}) / Num(*isaac, {"model", "busy_gops_per_w"});
      if (std::isfinite(busy)) s += Fmt(" (%.2fx counting busy units, as the papers do)", busy);
    }
    lines.push_back(s);
  }
  return lines;
}

namespace {

const char* kCss = R"(body{font-family:sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.sub{color:#666;margin-top:0}.summary{background:#f4f7fb;border-left:4px solid #1f77b4;padding:10px 16px;margin:16px 0}
.summary li{margin:3px 0}table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:18px}figure{margin:0;flex:1 1 540px;max-width:720px}figure svg{width:100%;height:auto;border:1px solid #e4e4e4}
figcaption{font-size:13px;color:#555;margin-top:4px}pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:12px;max-height:480px}
.good{color:#2a7d2a;font-weight:bold}.note{color:#666;font-size:13px})";

std::string Provenance(const json& r) {
  std::string s;
  const json& p = At(r, {"provenance"});
  s += "<table><tbody>";
  for (const char* k : {"xbar_version", "libtorch_version", "command", "run_dir", "threads"}) {
    const json& v = At(p, {k});
    if (!v.is_null()) s += std::string("<tr><td>") + k + "</td><td style=\"text-align:left\"><code>" + Esc(v.is_string() ? v.get<std::string>() : v.dump()) + "</code></td></tr>";
  }
  s += "</tbody></table>\n";
  const json& stages = At(r, {"stages"});
  if (stages.is_object()) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [name, st] : stages.items()) {
      rows.push_back({Esc(name), Esc(Str(st, {"status"})), Fmt("%.1f s", Num(st, {"seconds"}, 0)),
                      "<code>" + Esc(Str(st, {"key"})) + "</code>",
                      "<code style=\"white-space:pre-wrap\">" + Esc(Str(st, {"command"})) + "</code>"});
    }
    s += "<p>Each stage's equivalent command (the stages of <code>xbar run</code> are these commands, on the same "
         "resolved config); the key hashes the stage's config sections and its inputs.</p>";
    s += Table({"stage", "status", "time", "key", "equivalent command"}, rows);
  }
  return s;
}

}  // namespace

Report BuildReport(const json& r, const std::string& resolved_config_yaml) {
  Report rep;
  FaultsFigure(r, &rep.figures);
  LayerFigures(r, &rep.figures);
  CostFigures(r, &rep.figures);
  rep.summary = ReportSummary(r);

  std::string title = Str(r, {"title"});
  if (title.empty()) title = Str(r, {"name"});
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                  "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
                  "<title>" + Esc(title) + " — xbar report</title>\n<style>" + kCss + "</style></head><body>\n";
  h += "<h1>" + Esc(title) + "</h1>\n";
  const std::string model = Str(r, {"train", "model"}), data = Str(r, {"train", "dataset"});
  const json& arch = At(r, {"estimate", "chip", "arch"});
  std::string sub = (model.empty() ? std::string("model") : model) + " on " + (data.empty() ? std::string("?") : data);
  if (arch.is_object()) {
    sub += " · hardware: " + Str(r, {"estimate", "preset"}) + " preset, " + G3(Num(arch, {"crossbar_rows"})) + "×" +
           G3(Num(arch, {"crossbar_cols"})) + " crossbars, " + G3(Num(arch, {"weight_bits"})) + "-bit weights on " +
           G3(Num(arch, {"cell_bits"})) + "-bit cells, " + G3(Num(arch, {"input_bits"})) + "-bit inputs, " +
           G3(Num(arch, {"adc_bits"})) + "-bit ADCs";
  }
  h += "<p class=\"sub\">" + Esc(sub) + "</p>\n";
  h += "<div class=\"summary\"><b>The result in brief</b><ul>\n";
  for (const auto& line : rep.summary) h += "<li>" + Esc(line) + "</li>\n";
  h += "</ul></div>\n";

  // Summary table: accuracy at each stage.
  h += "<h2>Accuracy at each stage</h2>\n";
  {
    std::vector<std::vector<std::string>> rows;
    if (At(r, {"train", "test_accuracy"}).is_number()) {
      rows.push_back({"trained (float)", Pct(Num(r, {"train", "test_accuracy"})), Count(Num(r, {"train", "test_images"}, 0))});
    }
    if (At(r, {"compress"}).is_object()) {
      rows.push_back({"compressed (float)", Pct(Num(r, {"compress", "accuracy_compressed"})), ""});
    }
    const json& sims = At(r, {"simulate_schemes"});
    if (sims.is_array()) {
      if (!sims.empty()) {
        rows.push_back({"quantised, ideal crossbar", Pct(Num(sims[0], {"accuracy_quantized"})),
                        Count(Num(sims[0], {"test_images"}, 0))});
      }
      for (const json& s : sims) {
        rows.push_back({"simulated crossbars, " + Esc(Str(s, {"scheme"})), Pct(Num(s, {"accuracy"})),
                        Count(Num(s, {"test_images"}, 0))});
      }
    }
    h += Table({"stage", "test accuracy", "test images"}, rows);
    if (sims.is_array() && sims.size() > 1) {
      bool same = true;
      for (const json& x : sims) same = same && Num(x, {"accuracy"}) == Num(sims[0], {"accuracy_quantized"});
      if (same) {
        h += "<p class=\"note\">Every scheme gives the ideal quantised accuracy: with a lossless ADC, no stuck cells and no "
             "variation each computes exactly the same integer sums. The schemes differ under faults (below), device "
             "variation and finite ADCs.</p>\n";
      }
    }
    if (At(r, {"compress"}).is_object()) {
      const json& c = r["compress"];
      h += Table({"compression", "value"},
                 {{"weights non-zero", Count(Num(c, {"weights_nonzero"})) + " of " + Count(Num(c, {"weights_total"}))},
                  {"compression ratio", Fmt("%.1f×", Num(c, {"compression_ratio"}))},
                  {"storage bits", Count(Num(c, {"storage_bits_dense"})) + " → " + Count(Num(c, {"storage_bits_compressed"})) +
                                       Fmt(" (%.0f× fewer)", Num(c, {"storage_bits_dense"}) / Num(c, {"storage_bits_compressed"}))},
                  {"crossbars", Count(Num(c, {"crossbars_dense"})) + " → " + Count(Num(c, {"crossbars_compressed"}))}});
    }
  }

  // Cost table.
  const std::vector<Chip> chips = Chips(r);
  if (!chips.empty()) {
    h += "<h2>Hardware cost of the final network</h2>\n";
    const json* isaac = Isaac(r);
    std::vector<std::vector<std::string>> rows;
    std::vector<Chip> rows_of = chips;
    if (At(r, {"estimate_dense"}).is_object()) {
      rows_of.insert(rows_of.begin() + 1, Chip{Str(r, {"estimate", "preset"}) + ", trained weights before compression",
                                               &r["estimate_dense"]});
    }
    for (const Chip& c : rows_of) {
      const json& m = At(*c.est, {"model"});
      std::string vs = "—";
      if (isaac && isaac != c.est) {
        vs = Fmt("%.2f×", Num(m, {"gops_per_s_per_mm2"}) / Num(*isaac, {"model", "gops_per_s_per_mm2"})) + " / " +
             Fmt("%.2f×", Num(m, {"gops_per_w"}) / Num(*isaac, {"model", "gops_per_w"}));
        const double busy = Num(m, {"busy_gops_per_w"}) / Num(*isaac, {"model", "busy_gops_per_w"});
        if (std::isfinite(busy)) vs += Fmt(" / %.2f×", busy);
      }
      rows.push_back({Esc(c.name), G3(Num(m, {"crossbars"})), G3(Num(*c.est, {"chip", "arch", "adc_bits"})),
                      Esc(Str(*c.est, {"chip", "arch", "scheme"})), G3(Num(m, {"area_mm2"})), G3(Num(m, {"power_w"})),
                      G3(Num(m, {"energy_per_inference_uj"})), G3(Num(m, {"fps"})), G3(Num(m, {"gops_per_s_per_mm2"})),
                      G3(Num(m, {"gops_per_w"})), G3(Num(m, {"busy_gops_per_w"})), vs});
    }
    h += Table({"chip", "crossbars", "ADC bits", "scheme", "area (mm²)", "power (W)", "energy / inference (µJ)",
                "frames/s", "GOPs/(s·mm²)", "GOPs/W", "GOPs/W, busy units", "vs ISAAC (GOPs/(s·mm²) / GOPs/W / busy)"},
               rows);
    h += "<p class=\"note\">Area and power count the tiles the network occupies; each chip maps the same final "
         "weights with its own preset. The first row is this run's hardware description — the one the accuracy "
         "figures were simulated on. Power and GOPs/W charge each action and each unit's busy time; "
         "\"busy units\" charges every occupied unit its whole table power, the way ISAAC and FORMS "
         "count it";
    if (At(r, {"estimate_dense"}).is_object()) {
      const double a0 = Num(r, {"estimate_dense", "model", "area_mm2"}), a1 = Num(r, {"estimate", "model", "area_mm2"});
      const double e0 = Num(r, {"estimate_dense", "model", "energy_per_inference_uj"}),
                   e1 = Num(r, {"estimate", "model", "energy_per_inference_uj"});
      h += "; compression cut its area by " + Fmt("%.1f %%", 100 * (1 - a1 / a0)) + " and its energy per inference by " +
           Fmt("%.1f %%", 100 * (1 - e1 / e0));
    }
    h += ".</p>\n";
  }

  if (!rep.figures.empty()) {
    h += "<h2>Plots</h2>\n<div class=\"figs\">\n";
    for (const ReportFigure& f : rep.figures) {
      h += "<figure id=\"fig-" + f.id + "\" class=\"plot\">" + f.svg + "<figcaption>" + Esc(f.caption) + " Data: report/" +
           f.id + ".csv</figcaption></figure>\n";
    }
    h += "</div>\n";
  }

  // Fault campaign table.
  const json& curves = At(r, {"faults", "curves"});
  if (curves.is_array() && !curves.empty()) {
    std::set<std::string> models;
    for (const json& c : curves) models.insert(Str(c, {"weights"}));
    h += "<h2>Fault tolerance</h2>\n";
    std::vector<std::vector<std::string>> rows;
    for (const json& c : curves) {
      const json& ci = At(c, {"tolerable_fault_rate_ci95"});
      rows.push_back({Esc(CurveLabel(c, models.size() > 1)), Pct(Num(c, {"fault_free_accuracy"})),
                      Esc(Tolerable(c, FirstRate(c))),
                      ci.is_array() && ci.size() == 2 ? G3(D(ci[0])) + " … " + G3(D(ci[1])) : "",
                      At(c, {"below_grid"}) == true ? "below the grid" : (At(c, {"above_grid"}) == true ? "above the grid" : "")});
    }
    h += Table({"curve", "fault-free", "tolerable rate", "95 % interval", "note"}, rows);
    h += "<p class=\"note\">Tolerable rate: the largest stuck-at rate whose mean accuracy stays within " +
         Fmt("%.3g", 100 * Num(r, {"faults", "max_drop"}, 0.01)) +
         " % (absolute) of the fault-free accuracy, refined by bisection between grid points.</p>\n";
  }

  // Per-layer tables.
  h += "<h2>Per layer</h2>\n";
  if (At(r, {"compress", "layers"}).is_array()) {
    std::vector<std::vector<std::string>> rows;
    for (const json& l : r["compress"]["layers"]) {
      std::string cons;
      if (At(l, {"constraints"}).is_array()) {
        for (const json& c : l["constraints"]) cons += (cons.empty() ? "" : ", ") + (c.is_string() ? c.get<std::string>() : c.dump());
      }
      rows.push_back({Esc(Str(l, {"name"})), G3(Num(l, {"rows"})) + "×" + G3(Num(l, {"cols"})), Count(Num(l, {"total"})),
                      Count(Num(l, {"nonzero"})), Esc(cons), G3(Num(l, {"crossbars_dense"})), G3(Num(l, {"crossbars"}))});
    }
    h += "<h3>Compression</h3>\n" + Table({"layer", "GEMM", "weights", "non-zero", "constraints", "crossbars dense", "compressed"}, rows);
  }
  if (At(r, {"simulate"}).is_object() && At(r, {"simulate", "layers"}).is_array()) {
    std::vector<std::vector<std::string>> rows;
    for (const json& l : r["simulate"]["layers"]) {
      rows.push_back({Esc(Str(l, {"name"})), G3(Num(l, {"tiles"})), G3(Num(l, {"crossbars"})), G3(Num(l, {"adc_bits"})),
                      Count(Num(l, {"adc_conversions_per_image"})), G3(Num(l, {"output_nmse"})),
                      Count(Num(l, {"stuck_off_cells"}, 0) + Num(l, {"stuck_on_cells"}, 0))});
    }
    h += "<h3>Simulation (" + Esc(Str(r, {"simulate", "scheme"})) + ")</h3>\n" +
         Table({"layer", "tiles", "crossbars", "ADC bits", "ADC conversions / image", "output NMSE", "stuck cells"}, rows);
  }
  if (!chips.empty() && At(*chips[0].est, {"layers"}).is_array()) {
    std::vector<std::vector<std::string>> rows;
    for (const json& l : (*chips[0].est)["layers"]) {
      rows.push_back({Esc(Str(l, {"name"})), G3(Num(l, {"crossbars"})), G3(Num(l, {"adc_bits"})), Count(Num(l, {"cycles"})),
                      G3(Num(l, {"latency_us"})), G3(Num(l, {"energy_nj"})), G3(Num(l, {"area_mm2"}))});
    }
    h += "<h3>Cost on " + Esc(chips[0].name) + "</h3>\n" +
         Table({"layer", "crossbars", "ADC bits", "cycles", "latency (µs)", "energy (nJ)", "area (mm²)"}, rows);
  }

  h += "<h2>Resolved configuration</h2>\n<p class=\"note\">Every key as used, with where its value came from.</p><pre>" +
       Esc(resolved_config_yaml) + "</pre>\n";
  h += "<h2>How this was produced</h2>\n" + Provenance(r);
  h += "</body></html>\n";
  rep.html = std::move(h);
  return rep;
}

}  // namespace xbar
