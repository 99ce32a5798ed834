// xbar faults -c EXP.yaml --weights IN.safetensors [--weights MORE.safetensors ...] [-o DIR] [--resume]
//
// Monte Carlo fault campaign (SPEC §5.4): for every weights file (e.g. models of different prune
// ratios) and every scheme of faults.schemes, the accuracy over faults.samples random stuck-at maps
// at every rate of faults.rates, then the tolerable fault rate of each curve (campaign.h). Each
// sample's fault map is seeded by what it models — (seed, weights file, scheme, rate, sample) — so
// a point's result does not depend on the order or on which points were resumed. After every point
// the finished samples go to faults.partial.json; --resume keeps them when the configuration is
// unchanged (the file is removed once the campaign is done). Writes faults.json, faults.csv and
// faults.svg (accuracy vs rate with confidence bands, log x).
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/core/progress.h"
#include "xbar/core/rng.h"
#include "xbar/crossbar/campaign.h"
#include "xbar/crossbar/scheme.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/report/plot.h"

namespace xbar::app {
namespace {

struct FaultsArgs {
  std::string config, out;
  std::vector<std::string> weights, sets;
  bool resume = false;
};

// The shortest text that reads back as the same double (keys and CSV).
std::string RateText(double rate) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), rate);
  return std::string(buf, r.ptr);
}

// Share of zero weights over the conv/linear layers.
double PruneRatio(Model& model) {
  int64_t zeros = 0, total = 0;
  for (const LayerInfo& l : model.layers()) {
    const torch::Tensor w = model.LayerWeight(l.name).detach();
    zeros += w.eq(0).sum().item<int64_t>();
    total += w.numel();
  }
  return total > 0 ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
}

// A point of a curve: `value` is the fault rate, or the axis value at the fixed fault rate.
nlohmann::ordered_json PointJson(const PointStats& p, const std::string& axis, double fixed_rate) {
  nlohmann::ordered_json j;
  if (axis == "faults.rate") {
    j["fault_rate"] = p.rate;
  } else {
    j["value"] = p.rate;
    j["fault_rate"] = fixed_rate;
  }
  j["accuracy_mean"] = p.mean;
  j["accuracy_std"] = p.std;
  j["ci95"] = {p.ci_low, p.ci_high};
  j["samples"] = p.accuracies.size();
  j["refined"] = p.refined;
  j["accuracies"] = p.accuracies;
  return j;
}

void RunFaults(const FaultsArgs& a) {
  std::string out = a.out;
  if (out.empty()) out = JoinPath(JoinPath("runs", Config::Load(a.config, a.sets).Str("name")), "faults");
  RunContext ctx = Setup(a.config, a.sets, out, true);
  const Config& cfg = ctx.cfg;
  // The swept axis, its grid and the campaign's own keys, checked before any work.
  const std::string axis = cfg.Str("faults.axis");
  const bool rate_axis = axis == "faults.rate";
  if (!rate_axis) {
    const KeySpec* spec = FindKeySpec(axis);
    const bool numeric = spec != nullptr && (spec->type == ValueType::kFloat || spec->type == ValueType::kInt);
    if (!numeric || (axis.rfind("mapping.", 0) != 0 && axis.rfind("device.", 0) != 0)) {
      throw ConfigError(StrCat(cfg.Where("faults.axis"), ": faults.axis: expected faults.rate or a numeric mapping.* or "
                               "device.* key (see xbar keys), got '", axis, "'"));
    }
  }
  const char* grid_key = rate_axis ? "faults.rates" : "faults.axis_values";
  const std::vector<double>& rates = cfg.FloatList(grid_key);
  if (rates.empty()) throw ConfigError(StrCat(cfg.Where(grid_key), ": ", grid_key, ": expected at least one value"));
  for (size_t i = 0; i < rates.size(); ++i) {
    if ((rate_axis && rates[i] <= 0) || (i > 0 && rates[i] <= rates[i - 1])) {
      throw ConfigError(StrCat(cfg.Where(grid_key), ": ", grid_key, ": expected increasing ",
                               rate_axis ? "rates in (0, 1]" : "values", ", got ", cfg.Text(grid_key)));
    }
  }
  for (const char* key : {"faults.rate", "faults.sa0_rate", "faults.sa1_rate", "faults.map"}) {
    if (cfg.IsSet(key) && !(key == std::string("faults.rate") && !rate_axis)) {
      throw ConfigError(StrCat(cfg.Where(key), ": ", key, ": xbar faults draws its own fault maps at the rates of "
                               "faults.rates (or at faults.rate along another faults.axis), split by faults.sa0_to_sa1; "
                               "remove ", key));
    }
  }
  // The configuration of one grid value: faults.rate, or the axis key (validated like --set: a value
  // outside the key's range is an error naming faults.axis_values). Its faults come from
  // FaultSpec::FromConfig like simulate's.
  auto at_value = [&](double value) {
    Config c = cfg;
    if (rate_axis) {
      c.Set("faults.rate", RateText(value), "faults.rates");
    } else {
      const KeySpec* spec = FindKeySpec(axis);
      c.Set(axis, spec->type == ValueType::kInt ? std::to_string(std::llround(value)) : RateText(value),
            StrCat(cfg.Where("faults.axis_values"), ": faults.axis_values"));
    }
    return c;
  };
  const double fixed_rate = rate_axis ? 0.0 : cfg.Float("faults.rate");
  const int64_t samples = cfg.Int("faults.samples");
  const double max_drop = cfg.Float("faults.max_drop");
  // An integer axis (e.g. mapping.adc_bits) is not bisected: its grid is all there is.
  const bool int_axis = !rate_axis && FindKeySpec(axis)->type == ValueType::kInt;
  const int refine = int_axis ? 0 : static_cast<int>(cfg.Int("faults.refine_steps"));
  std::vector<std::string> schemes = cfg.EnumList("faults.schemes");
  if (schemes.empty()) schemes.push_back(cfg.Str("mapping.scheme"));
  const std::vector<double>& ratio = cfg.FloatList("faults.sa0_to_sa1");
  const int64_t batch = cfg.Int("simulate.batch_size");
  // With device variation or read noise (anywhere on the grid) an accuracy is random: the
  // reference point is sampled too. Building every grid value's specs also checks them all.
  auto random = [](const Config& c) {
    FaultSpec::FromConfig(c);
    const DeviceSpec d = DeviceSpec::FromConfig(c);
    return d.variation_sigma > 0 || d.read_noise_sigma > 0;
  };
  bool random_device = random(cfg);
  for (double v : rates) random_device = random(at_value(v)) || random_device;
  const char* tol_key = rate_axis ? "tolerable_fault_rate" : "tolerable_value";

  // Resume: finished points of an interrupted run with the same settings.
  std::map<std::string, std::string> fp = Fingerprint(cfg, {"dataset", "model", "mapping", "device", "faults", "arch"});
  for (size_t i = 0; i < a.weights.size(); ++i) fp[StrCat("weights.", i)] = a.weights[i];
  const std::string partial_path = JoinPath(ctx.run_dir, "faults.partial.json");
  nlohmann::ordered_json partial = {{"fingerprint", fp}, {"points", nlohmann::ordered_json::object()}};
  if (a.resume && FileExists(partial_path)) {
    nlohmann::ordered_json old;
    try {
      old = nlohmann::ordered_json::parse(ReadFile(partial_path));
    } catch (const nlohmann::json::exception&) {
      throw InputError(StrCat(partial_path, ": not a faults checkpoint (invalid JSON); delete it or run without --resume"));
    }
    if (!old.contains("fingerprint") || old["fingerprint"] != nlohmann::ordered_json(fp)) {
      throw ConfigError(StrCat(partial_path, ": written with other settings (config, weights or seed); run without "
                               "--resume to start over"));
    }
    partial["points"] = old.value("points", nlohmann::ordered_json::object());
  }
  const int64_t resumed = static_cast<int64_t>(partial["points"].size());
  auto interrupted = [&]() {
    return InterruptedError(StrCat("interrupted; ", partial["points"].size(), " finished points are in ", partial_path,
                                   " (xbar faults --resume continues)"));
  };

  const int64_t curves = static_cast<int64_t>(a.weights.size() * schemes.size());
  const int64_t per_curve = (static_cast<int64_t>(rates.size()) + refine) * samples + (random_device ? samples : 1);
  Progress bar("faults", curves * per_curve, stderr, -1, cfg.Float("train.log_interval"));
  int64_t done = 0;

  nlohmann::ordered_json curves_json = nlohmann::ordered_json::array();
  std::vector<PlotSeries> plot;
  std::ostringstream csv;
  csv << "weights,scheme,prune_ratio," << (rate_axis ? "fault_rate" : axis)
      << ",refined,samples,accuracy_mean,accuracy_std,ci95_low,ci95_high\n";
  std::string model_name;
  int64_t test_images = 0;
  for (size_t wi = 0; wi < a.weights.size(); ++wi) {
    const std::string& weights = a.weights[wi];
    LoadedModel m = LoadModelAndData(ctx, weights, /*train_split=*/true);
    model_name = m.spec.name;
    test_images = m.data.test.size();
    const double prune_ratio = PruneRatio(*m.model);
    const std::map<std::string, double> scales = StoredScales(m.bytes, weights);
    for (const std::string& scheme : schemes) {
      // One simulator per hardware description: for the rate axis one for the whole curve; along
      // another axis one per grid value (and one for the reference, the config's own value).
      std::map<std::string, std::unique_ptr<NetworkSimulator>> sims;
      auto simulator = [&](const Config& c) -> NetworkSimulator& {
        const std::string key = rate_axis ? std::string() : c.Text(axis);
        auto it = sims.find(key);
        if (it != sims.end()) return *it->second;
        MappingSpec map = MappingSpec::FromConfig(c);
        map.scheme = &FindScheme(scheme, "faults.schemes");
        auto sim = std::make_unique<NetworkSimulator>(*m.model, map, DeviceSpec::FromConfig(c), scales);
        sim->SetCollectStats(false);
        sim->SetQuiet(true);
        sim->Calibrate(m.data.train, batch, ctx.device);
        return *sims.emplace(key, std::move(sim)).first->second;
      };
      const std::string curve_key = StrCat(wi, "/", scheme);
      // One point: its samples, resumed or simulated; saved as soon as it is complete. `value` is
      // the fault rate, or the axis value (nullopt: the reference configuration).
      auto point = [&](std::optional<double> value, bool refined, int64_t n) {
        const std::string vtext = value ? RateText(*value) : std::string("reference");
        const std::string key = StrCat(curve_key, "/", vtext);
        std::vector<double> acc;
        if (partial["points"].contains(key)) {
          acc = partial["points"][key].get<std::vector<double>>();
          done += n;
        } else {
          const Config c = value || rate_axis ? at_value(value.value_or(0.0)) : cfg;
          NetworkSimulator& sim = simulator(c);
          FaultSpec f = FaultSpec::FromConfig(c);
          for (int64_t k = 0; k < n; ++k) {
            if (InterruptRequested()) throw interrupted();
            f.seed = DeriveSeed(ctx.seed, StrCat("faults/", weights, "/", scheme, "/", rate_axis ? "" : axis + "=", vtext),
                                static_cast<uint64_t>(k));
            sim.Program(f, f.seed);
            try {
              acc.push_back(sim.Evaluate(m.data.test, SimMode::kCrossbar, batch, ctx.device).accuracy);
            } catch (const InterruptedError&) {
              throw interrupted();
            }
            bar.Update(++done, StrCat(scheme, " ", rate_axis ? "rate" : axis, " ", vtext, " sample ", k + 1, "/", n));
          }
          partial["points"][key] = acc;
          WriteJson(partial_path, partial);
        }
        return Summarize(value.value_or(0.0), std::move(acc), refined);
      };
      // The reference: fault-free (rate axis), or the config's own value of the axis at faults.rate.
      const PointStats fault_free = point(rate_axis ? std::optional<double>(0.0) : std::nullopt, false,
                                          random_device || (!rate_axis && fixed_rate > 0) ? samples : 1);
      const double threshold = fault_free.mean - max_drop;
      const Curve c = RunCurve(
          rates, threshold, refine, [&](double v, bool refined) { return point(v, refined, samples); }, rate_axis);
      nlohmann::ordered_json pts = nlohmann::ordered_json::array();
      PlotSeries line;
      line.label = a.weights.size() > 1 ? StrCat(scheme, ", prune ", static_cast<int>(std::lround(100 * prune_ratio)), " %")
                                        : scheme;
      for (const PointStats& p : c.points) {
        line.x.push_back(p.rate);
        line.y.push_back(p.mean);
        line.lo.push_back(p.ci_low);
        line.hi.push_back(p.ci_high);
        pts.push_back(PointJson(p, axis, fixed_rate));
        csv << weights << "," << scheme << "," << prune_ratio << "," << RateText(p.rate) << "," << (p.refined ? 1 : 0)
            << "," << p.accuracies.size() << "," << RateText(p.mean) << "," << RateText(p.std) << ","
            << RateText(p.ci_low) << "," << RateText(p.ci_high) << "\n";
      }
      plot.push_back(std::move(line));
      const Tolerance& t = c.tolerance;
      nlohmann::ordered_json cj = {{"scheme", scheme}, {"weights", weights}, {"prune_ratio", prune_ratio}, {"placement", false}};
      if (!rate_axis) {
        cj["axis"] = axis;
        cj["fault_rate"] = fixed_rate;
      }
      cj[rate_axis ? "fault_free_accuracy" : "reference_accuracy"] = fault_free.mean;
      cj[rate_axis ? "fault_free" : "reference"] = PointJson(fault_free, axis, fixed_rate);
      cj["threshold"] = threshold;
      cj[tol_key] = t.rate;
      cj[StrCat(tol_key, "_ci95")] = {t.ci_low, t.ci_high ? nlohmann::ordered_json(*t.ci_high) : nlohmann::ordered_json(nullptr)};
      cj["below_grid"] = t.below_grid;
      cj["above_grid"] = t.above_grid;
      cj["points"] = pts;
      curves_json.push_back(cj);
      std::printf("%-14s %-40s prune %.3f  %s %.2f%%  tolerable %s %s%s\n", scheme.c_str(), weights.c_str(),
                  prune_ratio, rate_axis ? "fault-free" : "reference", 100 * fault_free.mean,
                  rate_axis ? "rate" : axis.c_str(), RateText(t.rate).c_str(),
                  t.below_grid ? " (below the grid)" : t.above_grid ? " (above the grid)" : "");
    }
  }
  bar.Finish(StrCat(curves, " curves", resumed > 0 ? StrCat(", ", resumed, " points resumed") : std::string()));
  // Tolerable rate of every curve against the first (the baseline).
  nlohmann::ordered_json ratios = nlohmann::ordered_json::array();
  const double base_rate = curves_json[0][tol_key].get<double>();
  for (size_t i = 0; i < curves_json.size(); ++i) {
    const double r = curves_json[i][tol_key].get<double>();
    ratios.push_back({{"curve", i},
                      {"scheme", curves_json[i]["scheme"]},
                      {"weights", curves_json[i]["weights"]},
                      {"vs_curve_0", base_rate > 0 ? nlohmann::ordered_json(r / base_rate) : nlohmann::ordered_json(nullptr)}});
  }
  nlohmann::ordered_json j = {{"schema_version", 1},
                              {"model", model_name},
                              {"sa0_to_sa1", ratio},
                              {"samples", samples},
                              {"max_drop", max_drop},
                              {"axis", axis},
                              {"test_images", test_images},
                              {"seed", ctx.seed},
                              {"curves", curves_json},
                              {"tolerable_ratios", ratios}};
  WriteJson(JoinPath(ctx.run_dir, "faults.json"), j);
  WriteFileAtomic(JoinPath(ctx.run_dir, "faults.csv"), csv.str());
  WriteFileAtomic(JoinPath(ctx.run_dir, "faults.svg"),
                  LinePlotSvg({StrCat(model_name, ": accuracy vs ", rate_axis ? "stuck-at rate" : axis, " (mean, 95 % CI, ",
                                      samples, " samples per point)"),
                               rate_axis ? "stuck-at fault rate per cell" : axis,
                               StrCat("accuracy on ", test_images, " test images"), rate_axis},
                              plot));
  std::remove(partial_path.c_str());  // finished: faults.json holds every sample
  std::printf("wrote %s, faults.csv and faults.svg\n", JoinPath(ctx.run_dir, "faults.json").c_str());
}

}  // namespace

void RegisterFaults(CLI::App& app) {
  auto args = std::make_shared<FaultsArgs>();
  CLI::App* cmd = app.add_subcommand("faults", "Monte Carlo stuck-at fault campaign: accuracy vs fault rate per scheme and model");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors; repeat for several models (e.g. prune ratios)")
      ->required();
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/faults)");
  cmd->add_flag("--resume", args->resume, "keep the finished points of an interrupted campaign in the run directory");
  cmd->callback([args]() { RunFaults(*args); });
}

}  // namespace xbar::app
