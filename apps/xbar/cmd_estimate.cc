// xbar estimate -c EXP.yaml [--weights IN.safetensors] [--preset isaac|forms|islped19|FILE] [-o DIR]
//
// Without weights: the architecture's chip totals and peak figures. With weights: the network is
// mapped onto the architecture's crossbars (its crossbar size, cell and weight bits, scheme and
// fragments, with masked mapping) -- counted by the mapping planner, or, for zero-skipping, by
// running test images through the crossbars to measure the inputs' bit-planes -- and the cost
// model prices every layer.
#include <cstdio>
#include <map>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/hw/hw.h"

namespace xbar::app {
namespace {

struct EstimateArgs {
  std::string config, weights, out, preset;
  std::vector<std::string> sets;
};

// The crossbar mapping the architecture implies (lossless ADC: the engine's job here is only to
// allocate crossbars and count input bit-planes).
MappingSpec MappingOf(const hw::ArchSpec& a, const Config& cfg) {
  MappingSpec m;
  // TinyADC: a column budget (from compression) bounds each column read, so fewer ADC bits suffice.
  m.column_budget = cfg.Int("mapping.column_budget");
  m.rows = a.crossbar_rows;
  m.cols = a.crossbar_cols;
  m.scheme = ParseScheme(a.scheme, "arch.scheme");
  m.weight_bits = a.weight_bits;
  m.cell_bits = a.cell_bits;
  m.input_bits = a.input_bits;
  m.dac_bits = a.dac_bits;
  m.adc_bits = 0;
  m.fragment_rows = a.fragment_rows > 0 ? a.fragment_rows : a.crossbar_rows;
  m.compact = true;
  if (m.weight_bits > 16 || m.input_bits > 16) {
    throw ConfigError(StrCat("arch.weight_bits / arch.input_bits: the mapper simulates up to 16 bits, the architecture has ",
                             m.weight_bits, " / ", m.input_bits));
  }
  return m;
}

// FORMS sign indicators: one per fragment of m rows per output column.
int64_t SignBits(const hw::ArchSpec& arch, int64_t rows, int64_t cols) {
  if (arch.scheme != "polarized" || arch.fragment_rows <= 0) return 0;
  return (rows + arch.fragment_rows - 1) / arch.fragment_rows * cols;
}

// Without zero-skipping nothing depends on the data: the mapping planner counts each layer's
// crossbars, driven rows, read columns, levels and ADC conversions from its weights, and one
// forward pass of a blank input gives its MVMs per image. No crossbar is built and no data is read
// (unless the weights file lacks its input shape).
std::vector<hw::LayerWork> PlannedWork(const RunContext& ctx, const std::string& weights, const hw::ArchSpec& arch,
                                       const MappingSpec& map) {
  torch::NoGradGuard no_grad;
  LoadedModel m = LoadModelAndData(ctx, weights, /*train_split=*/false, /*data_needed=*/false);
  Model& model = *m.model;
  model.eval();
  std::map<std::string, int64_t> positions;
  model.SetLayerOverride([&](const LayerInfo& l, const torch::Tensor& x, const LayerFn& ideal) {
    torch::Tensor y = ideal(x);
    positions[l.name] = y.numel() / l.out_channels;  // batch of one: output pixels, 1 for linear
    return y;
  });
  model.forward(torch::zeros({1, m.spec.in_channels, m.spec.height, m.spec.width_px}, ctx.device));
  model.SetLayerOverride(nullptr);
  const std::map<std::string, double> stored = StoredScales(m.bytes, weights);
  std::vector<hw::LayerWork> work;
  for (const LayerInfo& l : model.layers()) {
    const torch::Tensor w2d = model.LayerWeight(l.name).detach().cpu().reshape({l.out_channels, -1});
    // One quantisation step for the whole layer, its groups mapped separately (as the simulator).
    const double scale = WeightScale(w2d, map.weight_bits, stored.count(l.name) ? stored.at(l.name) : 0.0);
    const int64_t per_group = l.out_channels / l.groups;
    hw::LayerWork w;
    w.name = l.name;
    w.rows = l.gemm_rows();
    w.cols = l.gemm_cols();
    w.positions = positions.count(l.name) ? positions.at(l.name) : 0;  // 0: the forward pass skips it
    double level_sum = 0;
    int64_t cells = 0;
    int adc_bits = 0;
    for (int64_t g = 0; g < l.groups; ++g) {
      const LayerPlan p = PlanLayer(l.groups == 1 ? l.name : StrCat(l.name, "#", g), w2d.narrow(0, g * per_group, per_group),
                                    scale, map);
      w.crossbars += p.crossbars;
      w.used_rows += p.used_rows;
      w.used_cols += p.used_columns;
      w.conversions_per_cycle += static_cast<double>(p.conversions_per_plane);
      level_sum += p.level_sum;
      cells += p.cells;
      adc_bits = std::max(adc_bits, p.adc_bits);
    }
    w.mean_level = cells > 0 ? level_sum / (static_cast<double>(cells) * static_cast<double>(map.levels())) : 0.0;
    // With a column budget the ADC needs only the bits of the budget's worst case (at most the
    // architecture's); without one the architecture's ADC converts every read.
    if (map.column_budget > 0) w.adc_bits = adc_bits;
    w.sign_bits = SignBits(arch, w.rows, w.cols);
    w.weights = w2d.numel();
    w.nonzero = w2d.ne(0).sum().item<int64_t>();
    work.push_back(w);
  }
  return work;
}

// With zero-skipping the input cycles a fragment needs depend on its inputs' bit-planes: the
// network runs on lossless crossbars over estimate.images test images (the exact fast path, each
// crossbar counting its reads and needed input planes), inputs quantised with ranges calibrated on
// training batches as in xbar simulate. *images: how many ran.
std::vector<hw::LayerWork> MeasuredWork(const RunContext& ctx, const std::string& weights, const hw::ArchSpec& arch,
                                        const MappingSpec& map, int64_t* images) {
  const Config& cfg = ctx.cfg;
  LoadedModel m = LoadModelAndData(ctx, weights, /*train_split=*/true);
  const int64_t batch = cfg.Int("simulate.batch_size");
  NetworkSimulator sim(*m.model, map, DeviceSpec{}, StoredScales(m.bytes, weights));
  sim.SetReadStatsOnly(true);
  sim.Calibrate(m.data.train, batch, ctx.device);
  *images = std::min<int64_t>(cfg.Int("estimate.images"), m.data.test.size());
  Dataset sample{m.data.test.images.narrow(0, 0, *images), m.data.test.labels.narrow(0, 0, *images)};
  sim.Evaluate(sample, SimMode::kCrossbar, batch, ctx.device);  // lossless: the exact path, counting reads
  std::vector<hw::LayerWork> work;
  for (const LayerSimReport& r : sim.Report()) {
    hw::LayerWork w;
    w.name = r.name;
    w.rows = r.rows;
    w.cols = r.cols;
    w.positions = static_cast<int64_t>(std::llround(r.positions));
    w.crossbars = r.crossbars;
    w.used_rows = r.used_rows;
    w.used_cols = r.used_columns;
    w.cycle_share = 1.0 - r.input_cycles_skipped;
    const double mvm_cycles = static_cast<double>(r.input_cycles) * r.positions * static_cast<double>(*images);
    w.conversions_per_cycle = mvm_cycles > 0 ? static_cast<double>(r.adc_conversions) / mvm_cycles : 0.0;
    w.mean_level = r.mean_level;
    if (map.column_budget > 0) w.adc_bits = r.adc_bits;
    w.sign_bits = SignBits(arch, r.rows, r.cols);
    torch::Tensor weight = m.model->LayerWeight(r.name);
    w.weights = weight.numel();
    w.nonzero = weight.ne(0).sum().item<int64_t>();
    work.push_back(w);
  }
  return work;
}

nlohmann::ordered_json ChipJson(const hw::ArchSpec& a, const hw::TechTable& t, const hw::ChipCost& c) {
  nlohmann::ordered_json comps = nlohmann::ordered_json::array();
  for (const hw::CostItem& it : c.items) {
    comps.push_back({{"component", it.component}, {"level", it.level}, {"count", it.count}, {"power_w", it.power_w},
                     {"area_mm2", it.area_mm2}, {"source", it.source}});
  }
  return {{"tech", t.path},
          {"arch", {{"crossbar_rows", a.crossbar_rows}, {"crossbar_cols", a.crossbar_cols}, {"cell_bits", a.cell_bits},
                    {"weight_bits", a.weight_bits}, {"input_bits", a.input_bits}, {"dac_bits", a.dac_bits},
                    {"adc_bits", a.adc_bits}, {"scheme", a.scheme}, {"fragment_rows", a.fragment_rows},
                    {"zero_skipping", a.zero_skipping}, {"replicate", a.replicate}, {"cycle_ns", a.cycle_ns}, {"crossbars_per_ima", a.crossbars_per_ima},
                    {"adcs_per_ima", a.adcs_per_ima}, {"imas_per_tile", a.imas_per_tile}, {"tiles", a.tiles}}},
          {"ima_power_mw", c.ima_power_mw},
          {"ima_area_mm2", c.ima_area_mm2},
          {"tile_power_mw", c.tile_power_mw},
          {"tile_area_mm2", c.tile_area_mm2},
          {"cycle_ns", c.cycle_ns},
          {"peak_gops", c.peak_gops},
          {"adc_share_of_tile_power", c.adc_power_share},
          {"adc_share_of_tile_area", c.adc_area_share},
          {"components", comps}};
}

void RunEstimate(const EstimateArgs& args) {
  std::vector<std::string> sets = args.sets;
  if (!args.preset.empty()) sets.push_back("arch.preset=" + args.preset);
  const Config probe = Config::Load(args.config, sets);
  std::string out = args.out;
  if (out.empty()) out = JoinPath(JoinPath("runs", probe.Str("name")), "estimate");
  RunContext ctx = Setup(args.config, sets, out, true);
  const Config& cfg = ctx.cfg;
  const hw::ArchSpec arch = hw::ArchSpec::FromConfig(cfg);
  // Without zero-skipping the work is the planner's loops: one thread, immune to other jobs on the
  // cores (OpenMP spin-waits made many small parallel regions 16x slower on a loaded machine).
  if (!arch.zero_skipping) at::set_num_threads(1);
  const hw::TechTable tech = hw::TechTable::Load(arch.TechPath());
  const hw::ChipCost chip = hw::Chip(arch, tech);

  nlohmann::ordered_json j;
  j["schema_version"] = 1;
  j["preset"] = arch.name;
  j["area_mm2"] = chip.area_mm2;
  j["power_w"] = chip.power_w;
  j["peak_gops_per_s_per_mm2"] = chip.peak_gops_per_s_per_mm2;
  j["peak_gops_per_w"] = chip.peak_gops_per_w;
  j["chip"] = ChipJson(arch, tech, chip);
  std::printf("%s (%s): chip %.2f W, %.2f mm^2; peak %.1f GOPs/s, %.2f GOPs/(s mm^2), %.2f GOPs/W; cycle %.1f ns\n",
              arch.name.c_str(), tech.name.c_str(), chip.power_w, chip.area_mm2, chip.peak_gops,
              chip.peak_gops_per_s_per_mm2, chip.peak_gops_per_w, chip.cycle_ns);

  std::string csv = "layer,replicas,crossbars,imas,adc_bits,cycles,latency_us,adc_conversions,energy_nj,area_mm2\n";
  if (!args.weights.empty()) {
    const MappingSpec map = MappingOf(arch, cfg);
    std::vector<hw::LayerWork> work;
    int64_t images = 0;
    if (arch.zero_skipping) {
      work = MeasuredWork(ctx, args.weights, arch, map, &images);
    } else {
      work = PlannedWork(ctx, args.weights, arch, map);
    }
    int64_t weights_total = 0, nonzero = 0;
    for (const hw::LayerWork& w : work) {
      weights_total += w.weights;
      nonzero += w.nonzero;
    }
    const hw::CostReport cost = hw::Estimate(work, arch, tech);
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (size_t i = 0; i < cost.layers.size(); ++i) {
      const hw::LayerCost& l = cost.layers[i];
      nlohmann::ordered_json e = nlohmann::ordered_json::object();
      for (const auto& kv : l.energy_breakdown_nj) e[kv.first] = kv.second;
      layers.push_back({{"name", l.name}, {"replicas", l.replicas}, {"crossbars", l.crossbars}, {"imas", l.imas}, {"adc_bits", l.adc_bits},
                        {"positions", work[i].positions}, {"cycles", l.cycles}, {"cycle_share", work[i].cycle_share},
                        {"latency_us", l.latency_us}, {"adc_conversions", l.adc_conversions},
                        {"mean_cell_level", work[i].mean_level}, {"sign_bits", l.sign_bits}, {"energy_nj", l.energy_nj},
                        {"area_mm2", l.area_mm2}, {"weights", work[i].weights}, {"nonzero", work[i].nonzero},
                        {"energy_breakdown_nj", e}});
      csv += StrCat(l.name, ",", l.replicas, ",", l.crossbars, ",", l.imas, ",", l.adc_bits, ",", l.cycles, ",", l.latency_us, ",",
                    l.adc_conversions, ",", l.energy_nj, ",", l.area_mm2, "\n");
    }
    j["model"] = {{"weights", args.weights},
                  {"weights_total", weights_total},
                  {"weights_nonzero", nonzero},
                  {"crossbars", cost.crossbars},
                  {"imas", cost.imas},
                  {"tiles", cost.tiles},
                  {"chips", cost.chips},
                  {"ops_per_inference", cost.ops_per_inference},
                  {"latency_us", cost.latency_us},
                  {"fps", cost.fps},
                  {"energy_per_inference_uj", cost.energy_per_inference_uj},
                  {"area_mm2", cost.area_mm2},
                  {"power_w", cost.power_w},
                  {"gops_per_s_per_mm2", cost.gops_per_s_per_mm2},
                  {"gops_per_w", cost.gops_per_w},
                  {"input_images", images}};
    j["layers"] = layers;
    std::printf("%-16s %9s %5s %4s %12s %11s %12s %11s\n", "layer", "crossbars", "IMAs", "ADC", "cycles", "latency us",
                "energy nJ", "area mm^2");
    for (const hw::LayerCost& l : cost.layers) {
      std::printf("%-16s %9lld %5lld %4d %12.0f %11.2f %12.1f %11.4f\n", l.name.c_str(), static_cast<long long>(l.crossbars),
                  static_cast<long long>(l.imas), l.adc_bits, l.cycles, l.latency_us, l.energy_nj, l.area_mm2);
    }
    std::printf("model: %lld crossbars, %lld tiles (%.3g chips), %.3g fps, %.4g uJ/inference, %.4g mm^2, %.4g W, "
                "%.4g GOPs/(s mm^2), %.4g GOPs/W\n",
                static_cast<long long>(cost.crossbars), static_cast<long long>(cost.tiles), cost.chips, cost.fps,
                cost.energy_per_inference_uj, cost.area_mm2, cost.power_w, cost.gops_per_s_per_mm2, cost.gops_per_w);
  }
  WriteJson(JoinPath(ctx.run_dir, "estimate.json"), j);
  WriteFileAtomic(JoinPath(ctx.run_dir, "estimate.csv"), csv);
  std::printf("wrote %s and estimate.csv\n", JoinPath(ctx.run_dir, "estimate.json").c_str());
}

}  // namespace

void RegisterEstimate(CLI::App& app) {
  auto args = std::make_shared<EstimateArgs>();
  CLI::App* cmd = app.add_subcommand("estimate", "hardware cost (area, power, energy, throughput) on an accelerator architecture");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors to map and price (without it: the chip's peak figures)");
  cmd->add_option("--preset", args->preset, "architecture: isaac, forms, islped19, or a YAML path (overrides arch.preset)");
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/estimate)");
  cmd->callback([args]() { RunEstimate(*args); });
}

}  // namespace xbar::app
