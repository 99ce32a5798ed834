// xbar estimate -c EXP.yaml [--weights IN.safetensors] [--preset isaac|forms|islped19|FILE] [-o DIR]
//
// Without weights: the architecture's chip totals and peak figures. With weights: the network is
// mapped onto the hardware description's crossbars (the same mapping.* and device.* that simulate
// uses) by the mapping planner -- with zero-skipping, test images' quantised activations measure
// the inputs' bit-planes -- and the cost model prices every layer.
#include <cstdio>
#include <map>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/crossbar/workload.h"
#include "xbar/hw/hw.h"

namespace xbar::app {
namespace {

// The network's work on the architecture's crossbars (workload.h). Without zero-skipping nothing
// depends on the data: positions and which layers take signed inputs come from one forward pass of a
// seeded random batch, and no data is read (unless the weights file lacks its input shape). With
// zero-skipping the inputs are calibrated on mapping.calibration_images training images as in
// xbar simulate, and the first estimate.images test images measure the needed input cycles.
std::vector<hw::LayerWork> Work(const RunContext& ctx, const std::string& weights, const hw::ArchSpec& arch,
                                int64_t* images) {
  const Config& cfg = ctx.cfg;
  const MappingSpec& map = arch.map;
  LoadedModel m = LoadModelAndData(ctx, weights, /*train_split=*/arch.zero_skipping, /*data_needed=*/arch.zero_skipping);
  Model& model = *m.model;
  const std::map<std::string, double> scales = StoredScales(m);
  if (!arch.zero_skipping) {
    torch::manual_seed(ctx.seed);
    const torch::Tensor probe = torch::randn({1, m.spec.in_channels, m.spec.height, m.spec.width_px}).to(ctx.device);
    *images = 0;
    return NetworkWork(model, map, scales, ProbeInputs(model, probe, map.input_bits), nullptr, ctx.device, nullptr,
                       &arch.device);
  }
  const int64_t n_cal = std::min(m.data.train.size(), map.calibration_images);
  const auto inputs = CalibrateInputs(model, m.data.train.images.narrow(0, 0, n_cal), ctx.device, map.input_bits);
  *images = std::min<int64_t>(cfg.Int("estimate.images"), m.data.test.size());
  const torch::Tensor sample = m.data.test.images.narrow(0, 0, *images);
  return NetworkWork(model, map, scales, inputs, &sample, ctx.device, nullptr, &arch.device);
}

nlohmann::ordered_json ChipJson(const hw::ArchSpec& a, const hw::TechTable& t, const hw::ChipCost& c) {
  nlohmann::ordered_json comps = nlohmann::ordered_json::array();
  for (const hw::CostItem& it : c.items) {
    comps.push_back({{"component", it.component}, {"level", it.level}, {"count", it.count}, {"power_w", it.power_w},
                     {"area_mm2", it.area_mm2}, {"source", it.source}});
  }
  const MappingSpec& m = a.map;
  return {{"tech", t.path},
          {"arch", {{"crossbar_rows", m.rows}, {"crossbar_cols", m.cols}, {"cell_bits", m.cell_bits},
                    {"weight_bits", m.weight_bits}, {"input_bits", m.input_bits}, {"dac_bits", m.dac_bits},
                    {"adc_bits", a.ChipAdcBits()}, {"scheme", m.scheme->Name()}, {"fragment_rows", m.fragment_rows},
                    {"on_off_ratio", a.device.on_off_ratio},
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

}  // namespace

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
  // model.onnx without --weights: the graph with its own weights.
  const std::string weights = !args.weights.empty() ? args.weights : ctx.cfg.Str("model.onnx");
  if (!weights.empty()) {
    int64_t images = 0;
    const std::vector<hw::LayerWork> work = Work(ctx, weights, arch, &images);
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
      const hw::LayerWork& w = work[i];
      layers.push_back({{"name", l.name}, {"replicas", l.replicas}, {"crossbars", l.crossbars}, {"cells", w.cells * l.replicas},
                        {"imas", l.imas}, {"adc_bits", l.adc_bits},
                        {"positions", w.positions}, {"input_cycles", w.input_cycles}, {"cycles", l.cycles},
                        {"cycle_share", w.cycle_share}, {"latency_us", l.latency_us}, {"adc_conversions", l.adc_conversions},
                        {"adc_conversions_all_planes",
                         w.conversions_per_cycle * static_cast<double>(w.positions * w.input_cycles)},
                        {"mean_cell_level", work[i].mean_level},
                        {"read_current_ratio", work[i].read_current_ratio}, {"sign_bits", l.sign_bits}, {"energy_nj", l.energy_nj},
                        {"area_mm2", l.area_mm2}, {"weights", work[i].weights}, {"nonzero", work[i].nonzero},
                        {"energy_breakdown_nj", e}});
      csv += StrCat(l.name, ",", l.replicas, ",", l.crossbars, ",", l.imas, ",", l.adc_bits, ",", l.cycles, ",", l.latency_us, ",",
                    l.adc_conversions, ",", l.energy_nj, ",", l.area_mm2, "\n");
    }
    j["model"] = {{"weights", weights},
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
                  {"busy_power_w", cost.busy_power_w},
                  {"busy_energy_per_inference_uj", cost.busy_energy_per_inference_uj},
                  {"busy_gops_per_w", cost.busy_gops_per_w},
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
    std::printf("busy units (every occupied IMA and tile share at table power): %.4g W, %.4g uJ/inference, %.4g GOPs/W\n",
                cost.busy_power_w, cost.busy_energy_per_inference_uj, cost.busy_gops_per_w);
  }
  WriteJson(JoinPath(ctx.run_dir, "estimate.json"), j);
  WriteFileAtomic(JoinPath(ctx.run_dir, "estimate.csv"), csv);
  FinishRun(ctx);
  std::printf("wrote %s and estimate.csv\n", JoinPath(ctx.run_dir, "estimate.json").c_str());
}

void RegisterEstimate(CLI::App& app) {
  auto args = std::make_shared<EstimateArgs>();
  CLI::App* cmd = app.add_subcommand("estimate", "hardware cost (area, power, energy, throughput) on an accelerator architecture");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors or .onnx to map and price (default: model.onnx; without either: the chip's peak figures)");
  cmd->add_option("--preset", args->preset, "architecture: isaac, forms, islped19, or a YAML path (overrides arch.preset)");
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/estimate)");
  cmd->callback([args]() { RunEstimate(*args); });
}

}  // namespace xbar::app
