#include "xbar/hw/hw.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "xbar/config/config.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"

namespace xbar {
namespace hw {
namespace {

YAML::Node ParseYaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(StrCat(source, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
}

std::string Line(const std::string& source, const YAML::Node& n) {
  return n.Mark().line >= 0 ? StrCat(source, ":", n.Mark().line + 1) : source;
}

double Number(const YAML::Node& n, const std::string& where, const std::string& field, double min, bool exclusive) {
  double v = 0;
  try {
    v = n.as<double>();
  } catch (const YAML::Exception&) {
    throw ConfigError(StrCat(where, ": ", field, ": expected a number, got '", n.Scalar(), "'"));
  }
  if (!std::isfinite(v) || (exclusive ? v <= min : v < min)) {
    throw ConfigError(StrCat(where, ": ", field, ": expected a number ", exclusive ? "> " : ">= ", min, ", got ", n.Scalar()));
  }
  return v;
}

bool IsAdcName(const std::string& name, int* bits) {
  if (name.size() < 6 || name.compare(0, 4, "adc-") != 0 || name.back() != 'b') return false;
  const std::string digits = name.substr(4, name.size() - 5);
  if (digits.empty() || digits.size() > 2 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return false;
  *bits = std::stoi(digits);
  return *bits >= 1 && *bits <= 32;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

const std::vector<std::string>& ComponentNames() {
  static const std::vector<std::string> names = {
      "adc-<bits>b", "dac", "sample-hold", "crossbar", "ima-shift-add", "input-register", "ima-output-register",
      "edram", "bus", "router", "sigmoid", "tile-shift-add", "max-pool", "tile-output-register", "hypertransport"};
  return names;
}

TechTable TechTable::Load(const std::string& path) {
  if (!FileExists(path)) throw ConfigError(StrCat(path, ": component table not found"));
  TechTable t = Parse(ReadFile(path), path);
  t.path = path;
  return t;
}

TechTable TechTable::Parse(const std::string& yaml_text, const std::string& source) {
  YAML::Node root = ParseYaml(yaml_text, source);
  if (!root.IsMap()) throw ConfigError(StrCat(source, ": expected a map with 'name' and 'components'"));
  TechTable t;
  t.path = source;
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    if (key == "name") {
      t.name = kv.second.Scalar();
    } else if (key != "components") {
      throw ConfigError(StrCat(Line(source, kv.first), ": unknown key '", key, "' (expected name, components)"));
    }
  }
  const YAML::Node comps = root["components"];
  if (!comps || !comps.IsMap() || comps.size() == 0) {
    throw ConfigError(StrCat(source, ": components: expected a map of component name -> {count, power_mw, area_mm2, source}"));
  }
  const std::vector<std::string>& known = ComponentNames();
  for (const auto& kv : comps) {
    Component c;
    c.name = kv.first.Scalar();
    const std::string where = Line(source, kv.first);
    int adc_bits = 0;
    const bool adc = IsAdcName(c.name, &adc_bits);
    if (!adc && std::find(known.begin() + 1, known.end(), c.name) == known.end()) {
      throw ConfigError(StrCat(where, ": unknown component '", c.name, "' (expected one of ", Join(known), ")"));
    }
    if (!kv.second.IsMap()) throw ConfigError(StrCat(where, ": ", c.name, ": expected a map of fields"));
    for (const auto& f : kv.second) {
      const std::string field = f.first.Scalar();
      const std::string fname = StrCat(c.name, ".", field);
      if (field == "count") c.count = Number(f.second, where, fname, 0, true);
      else if (field == "power_mw") c.power_mw = Number(f.second, where, fname, 0, false);
      else if (field == "area_mm2") c.area_mm2 = Number(f.second, where, fname, 0, false);
      else if (field == "bits") c.bits = static_cast<int>(Number(f.second, where, fname, 1, false));
      else if (field == "sample_rate_gsps") c.sample_rate_gsps = Number(f.second, where, fname, 0, true);
      else if (field == "rows") c.rows = static_cast<int64_t>(Number(f.second, where, fname, 1, false));
      else if (field == "cols") c.cols = static_cast<int64_t>(Number(f.second, where, fname, 1, false));
      else if (field == "bytes") c.bytes = static_cast<int64_t>(Number(f.second, where, fname, 1, false));
      else if (field == "source") c.source = f.second.Scalar();
      else
        throw ConfigError(StrCat(where, ": ", c.name, ": unknown field '", field,
                                 "' (expected count, power_mw, area_mm2, source, bits, sample_rate_gsps, rows, cols, bytes)"));
    }
    for (const char* req : {"power_mw", "area_mm2", "source"}) {
      if (!kv.second[req]) throw ConfigError(StrCat(where, ": ", c.name, ": missing field '", req, "'"));
    }
    if (adc) {
      if (!kv.second["sample_rate_gsps"]) throw ConfigError(StrCat(where, ": ", c.name, ": missing field 'sample_rate_gsps'"));
      if (c.bits != 0 && c.bits != adc_bits) {
        throw ConfigError(StrCat(where, ": ", c.name, ".bits: expected ", adc_bits, " (the name's resolution), got ", c.bits));
      }
      c.bits = adc_bits;
    }
    if (c.name == "crossbar" && (c.rows == 0 || c.cols == 0)) {
      throw ConfigError(StrCat(where, ": crossbar: missing field 'rows' or 'cols' (the array size the numbers are for)"));
    }
    t.components[c.name] = c;
  }
  return t;
}

const Component& TechTable::Get(const std::string& name) const {
  auto it = components.find(name);
  if (it == components.end()) {
    throw ConfigError(StrCat(path, ": component table '", this->name.empty() ? path : this->name, "' has no '", name,
                             "' entry, which the architecture needs"));
  }
  return it->second;
}

Component TechTable::Adc(int bits) const {
  const std::string want = StrCat("adc-", bits, "b");
  auto it = components.find(want);
  if (it != components.end()) return it->second;
  const Component* best = nullptr;
  for (const auto& kv : components) {
    if (kv.second.name.compare(0, 4, "adc-") != 0) continue;
    if (best == nullptr || std::abs(kv.second.bits - bits) < std::abs(best->bits - bits) ||
        (std::abs(kv.second.bits - bits) == std::abs(best->bits - bits) && kv.second.bits > best->bits)) {
      best = &kv.second;
    }
  }
  if (best == nullptr) throw ConfigError(StrCat(path, ": component table has no ADC (an 'adc-<bits>b' entry)"));
  Component c = *best;
  const double f = std::ldexp(1.0, bits - best->bits);
  c.name = want;
  c.bits = bits;
  c.power_mw *= f;
  c.area_mm2 *= f;
  c.source = StrCat("derived from ", best->name, " (", best->source, ") scaled by 2^(", bits, " - ", best->bits,
                    ") at the same sample rate");
  return c;
}

// ---------------------------------------------------------------------------------------------

ArchSpec ArchSpec::Preset(const std::string& name_or_path) {
  return FromConfig(Config::Parse("", "<preset>", {"arch.preset=" + name_or_path}));
}

ArchSpec ArchSpec::FromConfig(const Config& cfg) {
  ArchSpec a;
  const std::string& preset = cfg.Str("arch.preset");
  a.name = preset.find('/') != std::string::npos ? FileStem(preset) : preset;
  a.map = MappingSpec::FromConfig(cfg);
  a.device = DeviceSpec::FromConfig(cfg);
  a.tech = cfg.Str("arch.tech");
  a.zero_skipping = cfg.Bool("arch.zero_skipping");
  a.replicate = cfg.Bool("arch.replicate");
  a.cycle_ns = cfg.Float("arch.cycle_ns");
  a.crossbars_per_ima = cfg.Int("arch.crossbars_per_ima");
  a.adcs_per_ima = cfg.Int("arch.adcs_per_ima");
  a.ima_shift_adds = cfg.Int("arch.ima_shift_adds");
  a.imas_per_tile = cfg.Int("arch.imas_per_tile");
  a.tiles = cfg.Int("arch.tiles");
  a.tiles_per_router = cfg.Int("arch.tiles_per_router");
  a.sigmoids_per_tile = cfg.Int("arch.sigmoids_per_tile");
  a.hypertransport_links = cfg.Int("arch.hypertransport_links");
  return a;
}

int ArchSpec::ChipAdcBits() const { return map.AdcBits(map.GroupRows(map.rows)); }

double ArchSpec::WeightsPerCrossbar() const {
  // Weights per array as the papers count them: a row of C columns over the columns a weight takes
  // on one array (ISAAC: 128 / 8 = 16; its unit column is not counted against the weights).
  // Two-crossbar keeps one component per array: a pair of arrays holds rows x C/S weights.
  const Encoding e = map.encoding();
  const double per_row = static_cast<double>(map.cols / map.scheme->ColumnsPerWeight(e));
  return static_cast<double>(map.rows) * per_row / static_cast<double>(map.scheme->ArraysPerTile());
}

int64_t ArchSpec::InputCycles() const { return map.InputCycles(/*signed_inputs=*/false); }

int64_t ArchSpec::ReadsPerColumn() const {
  return map.scheme->SignPerFragment() ? CeilDiv(map.rows, map.GroupRows(map.rows)) : 1;
}

std::string ArchSpec::TechPath() const { return FindConfigFile("tech", tech); }

// ---------------------------------------------------------------------------------------------

namespace {

// Crossbar power and area scale with the number of cells relative to the tabulated array.
double CrossbarScale(const ArchSpec& a, const Component& xb) {
  return static_cast<double>(a.map.rows * a.map.cols) / static_cast<double>(xb.rows * xb.cols);
}

}  // namespace

ChipCost Chip(const ArchSpec& a, const TechTable& tech) {
  ChipCost c;
  const double tiles = static_cast<double>(a.tiles);
  const double per_tile_imas = static_cast<double>(a.imas_per_tile);
  auto add = [&](const Component& comp, const std::string& level, double per_unit_count, double scale = 1.0) {
    CostItem it;
    it.component = comp.name;
    it.level = level;
    const double chip_units = level == "ima" ? tiles * per_tile_imas : level == "tile" ? tiles : 1.0;
    it.count = per_unit_count * chip_units;
    it.power_w = comp.unit_power_mw() * scale * it.count / 1000.0;
    it.area_mm2 = comp.unit_area_mm2() * scale * it.count;
    it.source = comp.source;
    if (level == "ima") {
      c.ima_power_mw += comp.unit_power_mw() * scale * per_unit_count;
      c.ima_area_mm2 += comp.unit_area_mm2() * scale * per_unit_count;
    }
    if (level == "tile") {
      c.tile_power_mw += comp.unit_power_mw() * scale * per_unit_count;
      c.tile_area_mm2 += comp.unit_area_mm2() * scale * per_unit_count;
    }
    c.items.push_back(it);
  };
  const Component adc = tech.Adc(a.ChipAdcBits());
  const Component& xb = tech.Get("crossbar");
  const double xbars = static_cast<double>(a.crossbars_per_ima);
  add(adc, "ima", static_cast<double>(a.adcs_per_ima));
  add(tech.Get("dac"), "ima", xbars * static_cast<double>(a.map.rows));
  add(tech.Get("sample-hold"), "ima", xbars * static_cast<double>(a.map.cols));
  add(xb, "ima", xbars, CrossbarScale(a, xb));
  add(tech.Get("ima-shift-add"), "ima", static_cast<double>(a.ima_shift_adds));
  add(tech.Get("input-register"), "ima", 1);
  add(tech.Get("ima-output-register"), "ima", 1);
  c.tile_power_mw = c.ima_power_mw * per_tile_imas;
  c.tile_area_mm2 = c.ima_area_mm2 * per_tile_imas;
  add(tech.Get("edram"), "tile", 1);
  add(tech.Get("bus"), "tile", 1);
  add(tech.Get("router"), "tile", 1.0 / static_cast<double>(a.tiles_per_router));
  add(tech.Get("sigmoid"), "tile", static_cast<double>(a.sigmoids_per_tile));
  add(tech.Get("tile-shift-add"), "tile", 1);
  add(tech.Get("max-pool"), "tile", 1);
  add(tech.Get("tile-output-register"), "tile", 1);
  add(tech.Get("hypertransport"), "chip", static_cast<double>(a.hypertransport_links));
  for (const CostItem& it : c.items) {
    c.power_w += it.power_w;
    c.area_mm2 += it.area_mm2;
  }
  const double adc_tile_mw = adc.unit_power_mw() * static_cast<double>(a.adcs_per_ima) * per_tile_imas;
  const double adc_tile_mm2 = adc.unit_area_mm2() * static_cast<double>(a.adcs_per_ima) * per_tile_imas;
  c.adc_power_share = adc_tile_mw / c.tile_power_mw;
  c.adc_area_share = adc_tile_mm2 / c.tile_area_mm2;
  // A cycle lasts at least the crossbar read, and at least as long as the IMA's ADCs need to
  // convert every column read of the cycle.
  const double conversions = xbars * static_cast<double>(a.map.cols * a.ReadsPerColumn());
  c.cycle_ns = std::max(a.cycle_ns, conversions / (static_cast<double>(a.adcs_per_ima) * adc.sample_rate_gsps));
  const double macs_per_mvm = a.WeightsPerCrossbar();  // per array
  const double arrays = tiles * per_tile_imas * xbars;
  const double seconds = static_cast<double>(a.InputCycles()) * c.cycle_ns * 1e-9;
  c.peak_gops = 2.0 * macs_per_mvm * arrays / seconds / 1e9;
  c.peak_gops_per_s_per_mm2 = c.peak_gops / c.area_mm2;
  c.peak_gops_per_w = c.peak_gops / c.power_w;
  return c;
}

// ---------------------------------------------------------------------------------------------

CostReport Estimate(const std::vector<LayerWork>& layers, const ArchSpec& a, const TechTable& tech) {
  CostReport r;
  r.chip = Chip(a, tech);
  // A layer's cycle is the crossbar read, unless its own ADCs need longer for the conversions it
  // actually makes (the chip's peak cycle assumes every fragment of every array is populated).
  const double cycle_ns = a.cycle_ns;
  const Component& xb = tech.Get("crossbar");
  const double xb_scale = CrossbarScale(a, xb);
  // Energy of one action: a component's power for the time it is busy (one crossbar cycle), or for
  // an ADC one conversion at its sample rate.
  const double e_xbar_pj = xb.unit_power_mw() * xb_scale * cycle_ns;       // mW x ns = pJ
  const double e_dac_pj = tech.Get("dac").unit_power_mw() * cycle_ns;
  const double e_sh_pj = tech.Get("sample-hold").unit_power_mw() * cycle_ns;
  const double ima_digital_mw = tech.Get("ima-shift-add").unit_power_mw() * static_cast<double>(a.ima_shift_adds) +
                                tech.Get("input-register").unit_power_mw() + tech.Get("ima-output-register").unit_power_mw();
  const double tile_mw = r.chip.tile_power_mw - r.chip.ima_power_mw * static_cast<double>(a.imas_per_tile);
  const double tile_area_per_ima =
      (r.chip.tile_area_mm2 - r.chip.ima_area_mm2 * static_cast<double>(a.imas_per_tile)) / static_cast<double>(a.imas_per_tile);
  // Per layer: IMAs of one copy, the cycle its ADCs allow, input cycles per MVM.
  struct Base {
    int64_t imas = 0;
    Component adc;
    double cycle_ns = 0, cycles_per_mvm = 0, conv_per_cycle = 0;
  };
  std::vector<Base> base(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWork& w = layers[i];
    Base& b = base[i];
    b.imas = CeilDiv(w.crossbars, a.crossbars_per_ima);
    b.adc = tech.Adc(w.adc_bits > 0 ? w.adc_bits : a.ChipAdcBits());
    const double share = a.zero_skipping ? std::clamp(w.cycle_share, 0.0, 1.0) : 1.0;
    b.cycles_per_mvm = static_cast<double>(w.input_cycles > 0 ? w.input_cycles : a.InputCycles()) * share;
    b.conv_per_cycle = w.conversions_per_cycle > 0 ? w.conversions_per_cycle
                                                   : static_cast<double>(w.used_cols) * static_cast<double>(a.ReadsPerColumn());
    const double adc_rate = static_cast<double>(b.imas * a.adcs_per_ima) * b.adc.sample_rate_gsps;  // per ns
    b.cycle_ns = b.imas > 0 ? std::max(cycle_ns, b.conv_per_cycle / adc_rate) : cycle_ns;
  }
  // Replication (ISAAC's pipeline balancing): copies of the slowest layer share its positions, one
  // copy at a time, while the chip has crossbars left.
  std::vector<int64_t> replicas(layers.size(), 1);
  auto stage_us = [&](size_t i) {
    const double mvms = std::ceil(static_cast<double>(layers[i].positions) / static_cast<double>(replicas[i]));
    return mvms * base[i].cycles_per_mvm * base[i].cycle_ns / 1000.0;
  };
  if (a.replicate && !layers.empty()) {
    // Budget in IMAs, as layers are allocated whole IMAs.
    const int64_t budget = a.tiles * a.imas_per_tile;
    auto imas_of = [&](size_t i, int64_t copies) { return CeilDiv(layers[i].crossbars * copies, a.crossbars_per_ima); };
    int64_t used = 0;
    for (size_t i = 0; i < layers.size(); ++i) used += imas_of(i, 1);
    while (true) {
      size_t slow = 0;
      double worst = -1;
      for (size_t i = 0; i < layers.size(); ++i) {
        if (stage_us(i) > worst) {
          worst = stage_us(i);
          slow = i;
        }
      }
      const int64_t extra = imas_of(slow, replicas[slow] + 1) - imas_of(slow, replicas[slow]);
      if (replicas[slow] >= layers[slow].positions || layers[slow].crossbars <= 0 || used + extra > budget) break;
      ++replicas[slow];
      used += extra;
    }
  }
  double slowest_us = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWork& w = layers[i];
    const Base& b = base[i];
    LayerCost lc;
    lc.name = w.name;
    lc.replicas = replicas[i];
    lc.crossbars = w.crossbars * replicas[i];
    lc.imas = CeilDiv(lc.crossbars, a.crossbars_per_ima);
    const Component& adc = b.adc;
    lc.adc_bits = adc.bits;
    // Every crossbar of a copy works in parallel on one MVM; a copy's MVMs follow one another.
    lc.cycles = static_cast<double>(w.positions) * b.cycles_per_mvm;
    lc.latency_us = stage_us(i);
    lc.adc_conversions = b.conv_per_cycle * lc.cycles;
    lc.sign_bits = w.sign_bits;
    std::map<std::string, double>& e = lc.energy_breakdown_nj;
    // Read current, and so crossbar energy, grows with the programmed conductance: relative to the
    // table's array at half level (G_min offset g0 = 1 / (on/off - 1) in level units).
    const double g0 = a.device.g_min_levels();
    const double current = (g0 + std::clamp(w.mean_level, 0.0, 1.0)) / (g0 + 0.5);
    // IR drop lowers the current the drivers deliver (the wires' own loss included: with every word
    // line driven, the driver current equals the column currents).
    e["crossbar"] = static_cast<double>(w.crossbars) * lc.cycles * e_xbar_pj * current * w.read_current_ratio / 1000.0;
    e["dac"] = static_cast<double>(w.used_rows) * lc.cycles * e_dac_pj / 1000.0;
    e["sample-hold"] = static_cast<double>(w.used_cols) * lc.cycles * e_sh_pj / 1000.0;
    e[adc.name] = lc.adc_conversions * (adc.unit_power_mw() / adc.sample_rate_gsps) / 1000.0;
    e["ima-digital"] = static_cast<double>(lc.imas) * ima_digital_mw * lc.latency_us;  // mW x us = nJ
    // The tile's shared parts (eDRAM, bus, router, sigmoid, pooling, registers) while the layer runs.
    const double tiles_of_layer = static_cast<double>(lc.imas) / static_cast<double>(a.imas_per_tile);
    e["tile-shared"] = tiles_of_layer * tile_mw * lc.latency_us;
    for (const auto& kv : e) lc.energy_nj += kv.second;
    // The layer's IMAs and its share of their tiles' shared parts.
    lc.area_mm2 = static_cast<double>(lc.imas) * (r.chip.ima_area_mm2 + tile_area_per_ima);
    r.crossbars += lc.crossbars;
    r.imas += lc.imas;
    r.ops_per_inference += 2.0 * static_cast<double>(w.rows * w.cols) * static_cast<double>(w.positions);
    r.latency_us += lc.latency_us;
    r.energy_per_inference_uj += lc.energy_nj / 1000.0;
    slowest_us = std::max(slowest_us, lc.latency_us);
    r.layers.push_back(lc);
  }
  r.tiles = CeilDiv(r.imas, a.imas_per_tile);
  r.chips = static_cast<double>(r.tiles) / static_cast<double>(a.tiles);
  for (const LayerCost& lc : r.layers) r.area_mm2 += lc.area_mm2;
  r.fps = slowest_us > 0 ? 1e6 / slowest_us : 0;
  r.power_w = r.energy_per_inference_uj * 1e-6 * r.fps;
  if (r.area_mm2 > 0) r.gops_per_s_per_mm2 = r.ops_per_inference * r.fps / 1e9 / r.area_mm2;
  if (r.power_w > 0) r.gops_per_w = r.ops_per_inference * r.fps / 1e9 / r.power_w;
  const double busy_ima_mw = r.chip.ima_power_mw + tile_mw / static_cast<double>(a.imas_per_tile);
  r.busy_power_w = static_cast<double>(r.imas) * busy_ima_mw / 1000.0;
  if (r.fps > 0) r.busy_energy_per_inference_uj = r.busy_power_w / r.fps * 1e6;
  if (r.busy_power_w > 0) r.busy_gops_per_w = r.ops_per_inference * r.fps / 1e9 / r.busy_power_w;
  return r;
}

}  // namespace hw
}  // namespace xbar
