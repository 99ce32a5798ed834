// xbar simulate -c EXP.yaml --weights IN.safetensors [-o DIR] [--set key=value ...]
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/models/state_dict.h"

namespace xbar::app {
namespace {

struct SimulateArgs {
  std::string config, weights, out;
  std::vector<std::string> sets;
};

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

  NetworkSimulator sim(*m.model, map, device, StoredScales(a.weights));
  sim.SetProgressInterval(cfg.Float("train.log_interval"));
  sim.Calibrate(m.data.train, batch, ctx.device);
  sim.Program(faults, ctx.seed);
  const EvalResult flt = sim.Evaluate(m.data.test, SimMode::kFloat, batch, ctx.device);
  const EvalResult ref = sim.Evaluate(m.data.test, SimMode::kReference, batch, ctx.device);
  const EvalResult xb = sim.Evaluate(m.data.test, SimMode::kCrossbar, batch, ctx.device);
  const std::vector<LayerSimReport> layers = sim.Report();
  nlohmann::ordered_json j = SimulateJson(map.scheme->Name(), xb.accuracy, flt.accuracy, ref.accuracy, layers);
  j["weights"] = a.weights;
  j["test_images"] = xb.count;
  WriteJson(JoinPath(ctx.run_dir, "simulate.json"), j);

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

}  // namespace

void RegisterSimulate(CLI::App& app) {
  auto args = std::make_shared<SimulateArgs>();
  CLI::App* cmd = app.add_subcommand("simulate", "run a model's test set on simulated crossbars");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors (trained or compressed)")->required();
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/simulate)");
  cmd->callback([args]() { RunSimulate(*args); });
}

}  // namespace xbar::app
