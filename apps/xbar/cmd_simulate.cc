// xbar simulate -c EXP.yaml --weights IN.safetensors [-o DIR] [--set key=value ...]
#include <algorithm>
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/models/state_dict.h"

namespace xbar::app {
namespace {

// The fault-map-aware placement of this chip (faults.placement: on): per crossbar, the GEMM input
// on each allocated word line and the GEMM output on each column group, in physical order, and the
// column pairs stored the other way — what a chip's programming tables need.
void WritePlacement(const std::string& path, const NetworkSimulator& sim, const FaultSpec& faults,
                    const std::string& weights, const MappingSpec& map) {
  double seconds = 0, before = 0, after = 0;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const LayerPlacementReport& l : sim.Placements()) {
    nlohmann::ordered_json tiles = nlohmann::ordered_json::array();
    for (const TilePlacementReport& t : l.tiles) {
      nlohmann::ordered_json flipped = nlohmann::ordered_json::array();
      for (const auto& [output, slice] : t.flipped) flipped.push_back({output, slice});
      tiles.push_back({{"tile", t.tile},
                       {"first_crossbar", t.first_crossbar},
                       {"word_lines", t.word_lines},
                       {"column_groups", t.column_groups},
                       {"flipped_pairs", flipped},
                       {"harm_before", t.harm_before},
                       {"harm_after", t.harm_after}});
    }
    layers.push_back({{"name", l.name}, {"harm_before", l.harm_before}, {"harm_after", l.harm_after}, {"tiles", tiles}});
    seconds += l.seconds;
    before += l.harm_before;
    after += l.harm_after;
  }
  nlohmann::ordered_json j = {{"schema_version", 1},
                              {"weights", weights},
                              {"scheme", map.scheme->Name()},
                              {"fault_map", faults.map_file.empty() ? nlohmann::ordered_json(nullptr)
                                                                     : nlohmann::ordered_json(faults.map_file)},
                              {"sa0_rate", faults.sa0_rate},
                              {"sa1_rate", faults.sa1_rate},
                              {"seed", faults.seed},
                              {"harm_before", before},
                              {"harm_after", after},
                              {"layers", layers}};
  WriteJson(path, j);
  std::fprintf(stderr, "xbar simulate: placed the crossbars on their stuck cells in %.3f s: harm %.4g -> %.4g; wrote %s\n",
               seconds, before, after, path.c_str());
}

}  // namespace

void RunSimulate(const SimulateArgs& a) {
  std::string out = a.out;
  if (out.empty()) out = JoinPath(JoinPath("runs", Config::Load(a.config, a.sets).Str("name")), "simulate");
  RunContext ctx = Setup(a.config, a.sets, out, true);
  const Config& cfg = ctx.cfg;
  const MappingSpec map = MappingSpec::FromConfig(cfg);
  const DeviceSpec device = DeviceSpec::FromConfig(cfg);
  const FaultSpec faults = FaultSpec::FromConfig(cfg);
  const int64_t batch = cfg.Int("simulate.batch_size");
  LoadedModel m = LoadModelAndData(ctx, a.weights, /*train_split=*/true);
  std::fprintf(stderr, "xbar simulate: %s on %s, scheme %s, %lldx%lld crossbars, %d-bit weights on %d-bit cells, "
               "%d-bit inputs through %d-bit DACs, ADC %s\n",
               m.spec.name.c_str(), m.data.name.c_str(), map.scheme->Name(), static_cast<long long>(map.rows),
               static_cast<long long>(map.cols), map.weight_bits, map.cell_bits, map.input_bits, map.dac_bits,
               map.adc_bits > 0 ? StrCat(map.adc_bits, " bits").c_str() : "lossless");
  std::fprintf(stderr, "xbar simulate: hardware preset %s (config.resolved.yaml marks each value's source)\n",
               cfg.Str("arch.preset").c_str());

  NetworkSimulator sim(*m.model, map, device, StoredScales(m));
  sim.SetProgressInterval(cfg.Float("train.log_interval"));
  sim.SetStatsImages(cfg.Int("simulate.stats_images"));
  sim.Calibrate(m.data.train, batch, ctx.device);
  sim.Program(faults, ctx.seed);
  const EvalResult flt = sim.Evaluate(m.data.test, SimMode::kFloat, batch, ctx.device);
  const EvalResult xb = sim.Evaluate(m.data.test, SimMode::kCrossbar, batch, ctx.device);
  const std::vector<LayerSimReport> layers = sim.Report();
  // Where every layer is lossless the crossbars compute the ideal quantised network bit for bit
  // (the same exact GEMMs), so the ideal crossbar's pass would only repeat this one.
  const bool lossless = std::all_of(layers.begin(), layers.end(), [](const LayerSimReport& r) { return r.lossless; });
  const EvalResult ref = lossless ? xb : sim.Evaluate(m.data.test, SimMode::kReference, batch, ctx.device);
  nlohmann::ordered_json j = SimulateJson(map.scheme->Name(), xb.accuracy, flt.accuracy, ref.accuracy, layers);
  j["weights"] = m.source;
  j["test_images"] = xb.count;
  j["stats_images"] = sim.stats_images();
  j["placement"] = faults.placement;
  if (faults.placement) WritePlacement(JoinPath(ctx.run_dir, "placement.json"), sim, faults, m.source, map);
  WriteJson(JoinPath(ctx.run_dir, "simulate.json"), j);
  FinishRun(ctx);

  std::printf("%-22s %5s %7s %5s %14s %11s %7s %8s %9s\n", "layer", "tiles", "xbars", "ADC", "conversions", "NMSE",
              "cycles", "skipped", "stuck");
  for (const auto& r : layers) {
    std::printf("%-22s %5lld %7lld %5d %14lld %11.3g %7lld %7.1f%% %9lld\n", r.name.c_str(),
                static_cast<long long>(r.tiles), static_cast<long long>(r.crossbars), r.adc_bits,
                static_cast<long long>(r.adc_conversions), r.output_nmse, static_cast<long long>(r.input_cycles),
                100 * r.input_cycles_skipped, static_cast<long long>(r.sa0 + r.sa1));
  }
  std::printf("accuracy on %lld test images: float %.2f%%, ideal crossbar (quantised) %.2f%%, simulated %.2f%%; wrote %s\n",
              static_cast<long long>(xb.count), 100 * flt.accuracy, 100 * ref.accuracy, 100 * xb.accuracy,
              JoinPath(ctx.run_dir, "simulate.json").c_str());
}

void RegisterSimulate(CLI::App& app) {
  auto args = std::make_shared<SimulateArgs>();
  CLI::App* cmd = app.add_subcommand("simulate", "run a model's test set on simulated crossbars");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors or .onnx, trained or compressed (default: model.onnx)");
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/simulate)");
  cmd->callback([args]() { RunSimulate(*args); });
}

}  // namespace xbar::app
