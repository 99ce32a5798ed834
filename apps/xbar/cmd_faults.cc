// xbar faults -c EXP.yaml --weights IN.safetensors [--weights MORE.safetensors ...] [-o DIR] [--resume]
//
// Monte Carlo fault campaign (SPEC §5.4): for every weights file (e.g. models of different prune
// ratios) and every scheme of faults.schemes, the accuracy over faults.samples random stuck-at maps
// at every rate of faults.rates, then the tolerable fault rate of each curve (campaign.h). Each
// sample's fault map is seeded by what it models — (seed, weights content, scheme, rate, sample) — so
// a point's result does not depend on the order or on which points were resumed. After every point
// the finished samples go to faults.partial.json; --resume keeps them when the configuration is
// unchanged (the file is removed once the campaign is done). Writes faults.json, faults.csv and
// faults.svg (accuracy vs rate with confidence bands, log x), and the wall times apart in
// faults.timing.json.
//
// faults.placement: on places every sampled chip's crossbars on its stuck cells (placement.h)
// before it is evaluated, both adds such a curve after each unplaced one: the same chips (fault
// maps are seeded without the placement), placed and not.
//
// `mpirun -np N xbar faults ...` splits every point's samples across the N ranks (rank r runs
// samples r, r + N, ...; threads within a rank as usual), gathers them on every rank so all ranks
// take the same bisection steps, and rank 0 writes the files: the same bytes as one process. The
// ranks first agree on the configuration and the weights (a hash) and on every error.
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "xbar/core/dist.h"
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

// What the campaign sweeps, from the faults.* keys, checked before any work.
struct Campaign {
  std::string axis;        // faults.rate or a numeric mapping.*/device.* key
  bool rate_axis = true;   // axis == faults.rate
  const char* grid_key = "faults.rates";
  std::vector<double> grid;  // increasing values of the axis
  double fixed_rate = 0;   // faults.rate along another axis
  int64_t samples = 0;
  double max_drop = 0;
  int refine = 0;          // bisection steps (none along an integer axis)
  std::vector<std::string> schemes;
  std::vector<bool> placements;  // faults.placement: off {false}, on {true}, both {false, true}
  bool random_device = false;  // variation or read noise somewhere on the grid: the reference is sampled too

  // The configuration of one grid value: faults.rate, or the axis key (validated like --set: a
  // value outside the key's range is an error naming faults.axis_values). Its faults come from
  // FaultSpec::FromConfig like simulate's.
  Config At(const Config& cfg, double value) const {
    Config c = cfg;
    if (rate_axis) {
      c.Set("faults.rate", RateText(value), "faults.rates");
    } else {
      const KeySpec* spec = FindKeySpec(axis);
      c.Set(axis, spec->type == ValueType::kInt ? std::to_string(std::llround(value)) : RateText(value),
            StrCat(cfg.Where("faults.axis_values"), ": faults.axis_values"));
    }
    return c;
  }
};

Campaign ReadCampaign(const Config& cfg) {
  Campaign k;
  const std::string& placement = cfg.Str("faults.placement");
  if (placement != "on") k.placements.push_back(false);
  if (placement != "off") k.placements.push_back(true);
  k.axis = cfg.Str("faults.axis");
  k.rate_axis = k.axis == "faults.rate";
  if (!k.rate_axis) {
    const KeySpec* spec = FindKeySpec(k.axis);
    const bool numeric = spec != nullptr && (spec->type == ValueType::kFloat || spec->type == ValueType::kInt);
    if (!numeric || (k.axis.rfind("mapping.", 0) != 0 && k.axis.rfind("device.", 0) != 0)) {
      throw ConfigError(StrCat(cfg.Where("faults.axis"), ": faults.axis: expected faults.rate or a numeric mapping.* or "
                               "device.* key (see xbar keys), got '", k.axis, "'"));
    }
  }
  k.grid_key = k.rate_axis ? "faults.rates" : "faults.axis_values";
  k.grid = cfg.FloatList(k.grid_key);
  if (k.grid.empty()) throw ConfigError(StrCat(cfg.Where(k.grid_key), ": ", k.grid_key, ": expected at least one value"));
  for (size_t i = 0; i < k.grid.size(); ++i) {
    if ((k.rate_axis && k.grid[i] <= 0) || (i > 0 && k.grid[i] <= k.grid[i - 1])) {
      throw ConfigError(StrCat(cfg.Where(k.grid_key), ": ", k.grid_key, ": expected increasing ",
                               k.rate_axis ? "rates in (0, 1]" : "values", ", got ", cfg.Text(k.grid_key)));
    }
  }
  for (const char* key : {"faults.rate", "faults.sa0_rate", "faults.sa1_rate", "faults.map"}) {
    if (cfg.IsSet(key) && !(key == std::string("faults.rate") && !k.rate_axis)) {
      throw ConfigError(StrCat(cfg.Where(key), ": ", key, ": xbar faults draws its own fault maps at the rates of "
                               "faults.rates (or at faults.rate along another faults.axis), split by faults.sa0_to_sa1; "
                               "remove ", key));
    }
  }
  k.fixed_rate = k.rate_axis ? 0.0 : cfg.Float("faults.rate");
  k.samples = cfg.Int("faults.samples");
  k.max_drop = cfg.Float("faults.max_drop");
  // An integer axis (e.g. mapping.adc_bits) is not bisected: its grid is all there is.
  const bool int_axis = !k.rate_axis && FindKeySpec(k.axis)->type == ValueType::kInt;
  k.refine = int_axis ? 0 : static_cast<int>(cfg.Int("faults.refine_steps"));
  k.schemes = cfg.EnumList("faults.schemes");
  if (k.schemes.empty()) k.schemes.push_back(cfg.Str("mapping.scheme"));
  // With device variation or read noise (anywhere on the grid) an accuracy is random: the
  // reference point is sampled too. Building every grid value's specs also checks them all.
  auto random = [](const Config& c) {
    FaultSpec::FromConfig(c);
    const DeviceSpec d = DeviceSpec::FromConfig(c);
    return d.variation_sigma > 0 || d.read_noise_sigma > 0;
  };
  const Config chip = OneChip(cfg);
  k.random_device = random(chip);
  for (double v : k.grid) k.random_device = random(k.At(chip, v)) || k.random_device;
  return k;
}

}  // namespace

void RunFaults(const FaultsArgs& args) {
  FaultsArgs a = args;
  std::string out = a.out;
  std::vector<std::string> sets = a.sets;
  dist::Agree([&] {
    const Config probe = Config::Load(a.config, a.sets);
    // Without --weights: the network of model.onnx with its own weights.
    if (a.weights.empty() && !probe.Str("model.onnx").empty()) a.weights.push_back(probe.Str("model.onnx"));
    if (a.weights.empty()) throw ConfigError("--weights: required unless model.onnx (or --model FILE.onnx) is set");
    if (out.empty()) out = JoinPath(JoinPath("runs", probe.Str("name")), "faults");
    // faults.test_images: a shorter test set for the campaign than for the other stages.
    if (const int64_t n = probe.Int("faults.test_images"); n > 0) sets.push_back(StrCat("dataset.test_subset=", n));
  });
  RunContext ctx = Setup(a.config, sets, out, true, /*distributed=*/true);
  const Config& cfg = ctx.cfg;
  Campaign camp;
  Config chip;  // cfg as FaultSpec reads it (OneChip)
  dist::Agree([&] {
    chip = OneChip(cfg);
    camp = ReadCampaign(cfg);
  });
  const std::string& axis = camp.axis;
  const bool rate_axis = camp.rate_axis;
  const std::vector<double>& rates = camp.grid;
  const int64_t samples = camp.samples;
  const std::vector<std::string>& schemes = camp.schemes;
  const std::vector<double>& ratio = cfg.FloatList("faults.sa0_to_sa1");
  const int64_t batch = cfg.Int("simulate.batch_size");
  const char* tol_key = rate_axis ? "tolerable_fault_rate" : "tolerable_value";

  // Resume: finished points of an interrupted run with the same settings.
  // Each weights file by its content (FNV-1a of its bytes): fault maps are seeded by what a file
  // holds, not where it lies, so the same model gives the same chips in any directory.
  std::vector<uint64_t> content(a.weights.size());
  dist::Agree([&] {
    for (size_t i = 0; i < a.weights.size(); ++i) content[i] = HashBytes(ReadFile(a.weights[i]));
  });
  std::map<std::string, std::string> fp = Fingerprint(cfg, {"dataset", "model", "mapping", "device", "faults", "arch"});
  for (size_t i = 0; i < a.weights.size(); ++i) fp[StrCat("weights.", i)] = StrCat(a.weights[i], " #", content[i]);
  const std::string partial_path = JoinPath(ctx.run_dir, "faults.partial.json");
  nlohmann::ordered_json partial = {{"fingerprint", fp}, {"points", nlohmann::ordered_json::object()}};
  // Under MPI every rank must run the same campaign on the same files: one hash of the settings
  // (with the weights' contents) and the run directory, compared before any work.
  const uint64_t inputs_hash = HashBytes(StrCat(nlohmann::ordered_json(fp).dump(), "|", ctx.run_dir, "|", a.resume));
  dist::CheckSame(inputs_hash, "the configuration, run directory or weights files");
  // Rank 0 reads the checkpoint and hands its points to the others.
  dist::Agree([&] {
    if (dist::Rank() != 0 || !a.resume || !FileExists(partial_path)) return;
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
  });
  if (dist::Size() > 1) partial["points"] = nlohmann::ordered_json::parse(dist::Broadcast(partial["points"].dump()));
  const int64_t resumed = static_cast<int64_t>(partial["points"].size());
  auto interrupted = [&]() {
    return InterruptedError(StrCat("interrupted; ", partial["points"].size(), " finished points are in ", partial_path,
                                   " (xbar faults --resume continues)"));
  };

  const int64_t curves = static_cast<int64_t>(a.weights.size() * schemes.size() * camp.placements.size());
  const int64_t per_curve =
      (static_cast<int64_t>(rates.size()) + camp.refine) * samples + (camp.random_device ? samples : 1);
  Progress bar("faults", curves * per_curve, stderr, -1, cfg.Float("train.log_interval"));
  int64_t done = 0;
  // Resource guard: the first simulated chip's time (rank 0's) prices the rest of the campaign, which
  // is refused before anything is written when that exceeds faults.max_hours.
  double first_chip_s = -1;
  bool priced = false;
  auto price = [&]() {
    priced = true;
    const double per_chip = std::stod(dist::Broadcast(StrCat(first_chip_s)));
    const double max_hours = cfg.Float("faults.max_hours");
    const int64_t left = curves * per_curve - done;
    const double hours = per_chip * static_cast<double>(left) / dist::Size() / 3600;
    dist::Agree([&] {
      if (max_hours <= 0 || per_chip < 0 || hours <= max_hours) return;
      char when[64], each[32];
      if (hours >= 48) {
        std::snprintf(when, sizeof(when), "%.3g days", hours / 24);
      } else {
        std::snprintf(when, sizeof(when), "%.3g hours", hours);
      }
      std::snprintf(each, sizeof(each), "%.3g s", per_chip);
      throw ConfigError(StrCat("xbar faults: this campaign would take about ", when, " (", left,
                               " more chips at ", each, " each, measured on the first, over ", dist::Size(),
                               " process", dist::Size() > 1 ? "es" : "", "), over faults.max_hours (", max_hours,
                               "); lower faults.samples, the grid (faults.rates) or faults.test_images, or raise faults.max_hours"));
    });
  };

  nlohmann::ordered_json curves_json = nlohmann::ordered_json::array();
  std::vector<PlotSeries> plot;
  std::ostringstream csv;
  nlohmann::ordered_json timing = nlohmann::ordered_json::array();
  csv << "weights,scheme,placement,prune_ratio," << (rate_axis ? "fault_rate" : axis)
      << ",refined,samples,accuracy_mean,accuracy_std,ci95_low,ci95_high\n";
  std::string model_name;
  int64_t test_images = 0;
  for (size_t wi = 0; wi < a.weights.size(); ++wi) {
    const std::string& weights = a.weights[wi];
    LoadedModel m;
    dist::Agree([&] { m = LoadModelAndData(ctx, weights, /*train_split=*/true); });
    model_name = m.spec.name;
    test_images = m.data.test.size();
    const double prune_ratio = PruneRatio(*m.model);
    const std::map<std::string, double> scales = StoredScales(m);
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
      for (const bool placed : camp.placements) {
        const std::string curve_key = StrCat(wi, "/", scheme, placed ? "/placed" : "");
        double placement_s = 0;
        int64_t placed_chips = 0;
        const auto curve_start = std::chrono::steady_clock::now();
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
            const Config c = value || rate_axis ? camp.At(chip, value.value_or(0.0)) : chip;
            NetworkSimulator& sim = simulator(c);
            FaultSpec f = FaultSpec::FromConfig(c);
            f.placement = placed;
            // Under MPI rank r runs samples r, r + N, r + 2N, ... and every rank gathers them all.
            const int ranks = dist::Size(), rank = dist::Rank();
            std::vector<double> mine;
            for (int64_t k = rank; k < n; k += ranks) {
              if (InterruptRequested()) throw interrupted();
              f.seed = DeriveSeed(ctx.seed, StrCat("faults/", content[wi], "/", scheme, "/", rate_axis ? "" : axis + "=", vtext),
                                  static_cast<uint64_t>(k));
              const auto chip_start = std::chrono::steady_clock::now();
              try {  // programming calibrates calibrated ADC ranges, which stops on SIGINT too
                sim.Program(f, f.seed);
                if (placed) {
                  placement_s += sim.placement_seconds();
                  ++placed_chips;
                }
                mine.push_back(sim.Evaluate(m.data.test, SimMode::kCrossbar, batch, ctx.device).accuracy);
              } catch (const InterruptedError&) {
                throw interrupted();
              }
              if (first_chip_s < 0) {
                first_chip_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - chip_start).count();
              }
              done += std::min<int64_t>(ranks, n - k);  // the other ranks' samples of this round, too
              bar.Update(done, StrCat(scheme, " ", rate_axis ? "rate" : axis, " ", vtext, " sample ",
                                      std::min<int64_t>(k + ranks, n), "/", n));
            }
            const std::vector<double> all = dist::AllGather(mine);
            if (!priced) price();
            acc.resize(static_cast<size_t>(n));
            for (int64_t k = 0, at = 0; k < ranks; ++k) {  // rank k's samples sit together, in order
              for (int64_t i = k; i < n; i += ranks) acc[static_cast<size_t>(i)] = all[static_cast<size_t>(at++)];
            }
            partial["points"][key] = acc;
            if (dist::Rank() == 0) WriteJson(partial_path, partial);
          }
          return Summarize(value.value_or(0.0), std::move(acc), refined);
        };
        // The reference: fault-free (rate axis), or the config's own value of the axis at faults.rate.
        const PointStats fault_free = point(rate_axis ? std::optional<double>(0.0) : std::nullopt, false,
                                            camp.random_device || (!rate_axis && camp.fixed_rate > 0) ? samples : 1);
        const double threshold = fault_free.mean - camp.max_drop;
        const Curve c = RunCurve(
            rates, threshold, camp.refine, [&](double v, bool refined) { return point(v, refined, samples); }, rate_axis);
        nlohmann::ordered_json pts = nlohmann::ordered_json::array();
        PlotSeries line;
        line.label = StrCat(scheme, placed ? " + placement" : "",
                            a.weights.size() > 1 ? StrCat(", prune ", static_cast<int>(std::lround(100 * prune_ratio)), " %")
                                                 : std::string());
        for (const PointStats& p : c.points) {
          line.x.push_back(p.rate);
          line.y.push_back(p.mean);
          line.lo.push_back(p.ci_low);
          line.hi.push_back(p.ci_high);
          pts.push_back(PointJson(p, axis, camp.fixed_rate));
          csv << weights << "," << scheme << "," << (placed ? 1 : 0) << "," << prune_ratio << "," << RateText(p.rate) << "," << (p.refined ? 1 : 0)
              << "," << p.accuracies.size() << "," << RateText(p.mean) << "," << RateText(p.std) << ","
              << RateText(p.ci_low) << "," << RateText(p.ci_high) << "\n";
        }
        const std::string label = line.label;
        plot.push_back(std::move(line));
        const Tolerance& t = c.tolerance;
        nlohmann::ordered_json cj = {{"scheme", scheme}, {"weights", weights}, {"prune_ratio", prune_ratio}, {"placement", placed}};
        if (!rate_axis) {
          cj["axis"] = axis;
          cj["fault_rate"] = camp.fixed_rate;
        }
        cj[rate_axis ? "fault_free_accuracy" : "reference_accuracy"] = fault_free.mean;
        cj[rate_axis ? "fault_free" : "reference"] = PointJson(fault_free, axis, camp.fixed_rate);
        cj["threshold"] = threshold;
        cj[tol_key] = t.rate;
        cj[StrCat(tol_key, "_ci95")] = {t.ci_low, t.ci_high ? nlohmann::ordered_json(*t.ci_high) : nlohmann::ordered_json(nullptr)};
        cj["below_grid"] = t.below_grid;
        cj["above_grid"] = t.above_grid;
        cj["points"] = pts;
        curves_json.push_back(cj);
        const double curve_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - curve_start).count();
        timing.push_back({{"curve", curves_json.size() - 1}, {"seconds", curve_s},
                          {"placement_seconds_per_chip", placed_chips > 0 ? nlohmann::ordered_json(placement_s / placed_chips)
                                                                          : nlohmann::ordered_json(nullptr)},
                          {"placed_chips", placed_chips}});
        std::printf("%-14s %-40s prune %.3f  %s %.2f%%  tolerable %s %s%s\n", label.c_str(), weights.c_str(),
                    prune_ratio, rate_axis ? "fault-free" : "reference", 100 * fault_free.mean,
                    rate_axis ? "rate" : axis.c_str(), RateText(t.rate).c_str(),
                    t.below_grid ? " (below the grid)" : t.above_grid ? " (above the grid)" : "");
      }
    }
  }
  bar.Finish(StrCat(curves, " curves", resumed > 0 ? StrCat(", ", resumed, " points resumed") : std::string()));
  // Tolerable rate of every curve against the first (the baseline) and, for a placed curve,
  // against the same model and scheme unplaced (faults.placement: both).
  nlohmann::ordered_json ratios = nlohmann::ordered_json::array();
  auto ratio_of = [&](double r, double base) {
    return base > 0 ? nlohmann::ordered_json(r / base) : nlohmann::ordered_json(nullptr);
  };
  const double base_rate = curves_json[0][tol_key].get<double>();
  for (size_t i = 0; i < curves_json.size(); ++i) {
    const nlohmann::ordered_json& ci = curves_json[i];
    const double r = ci[tol_key].get<double>();
    nlohmann::ordered_json e = {{"curve", i},
                                {"scheme", ci["scheme"]},
                                {"weights", ci["weights"]},
                                {"placement", ci["placement"]},
                                {"vs_curve_0", ratio_of(r, base_rate)}};
    for (size_t u = 0; u < curves_json.size() && ci["placement"].get<bool>(); ++u) {
      const nlohmann::ordered_json& cu = curves_json[u];
      if (!cu["placement"].get<bool>() && cu["scheme"] == ci["scheme"] && cu["weights"] == ci["weights"]) {
        e["vs_unplaced"] = ratio_of(r, cu[tol_key].get<double>());
      }
    }
    ratios.push_back(e);
  }
  nlohmann::ordered_json j = {{"schema_version", 1},
                              {"model", model_name},
                              {"sa0_to_sa1", ratio},
                              {"samples", samples},
                              {"max_drop", camp.max_drop},
                              {"axis", axis},
                              {"test_images", test_images},
                              {"seed", ctx.seed},
                              {"curves", curves_json},
                              {"tolerable_ratios", ratios}};
  if (dist::Rank() != 0) return;  // every rank holds the same results; rank 0 writes them
  WriteJson(JoinPath(ctx.run_dir, "faults.json"), j);
  WriteFileAtomic(JoinPath(ctx.run_dir, "faults.csv"), csv.str());
  WriteFileAtomic(JoinPath(ctx.run_dir, "faults.svg"),
                  LinePlotSvg({StrCat(model_name, ": accuracy vs ", rate_axis ? "stuck-at rate" : axis, " (mean, 95 % CI, ",
                                      samples, " samples per point)"),
                               rate_axis ? "stuck-at fault rate per cell" : axis,
                               StrCat("accuracy on ", test_images, " test images"), rate_axis},
                              plot));
  // Wall times (rank 0's) apart from the results, which stay byte-identical run to run.
  WriteJson(JoinPath(ctx.run_dir, "faults.timing.json"),
            {{"ranks", dist::Size()}, {"threads_per_rank", ctx.threads}, {"curves", timing}});
  std::remove(partial_path.c_str());  // finished: faults.json holds every sample
  FinishRun(ctx);
  std::printf("wrote %s, faults.csv and faults.svg\n", JoinPath(ctx.run_dir, "faults.json").c_str());
}

void RegisterFaults(CLI::App& app) {
  auto args = std::make_shared<FaultsArgs>();
  CLI::App* cmd = app.add_subcommand("faults", "Monte Carlo stuck-at fault campaign: accuracy vs fault rate per scheme and model");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors; repeat for several models (e.g. prune ratios)")
      ;
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/faults)");
  cmd->add_flag("--resume", args->resume, "keep the finished points of an interrupted campaign in the run directory");
  cmd->callback([args]() { RunFaults(*args); });
}

}  // namespace xbar::app
