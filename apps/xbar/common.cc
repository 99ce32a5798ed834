#include "common.h"

#include "xbar/core/dist.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/core/safetensors.h"
#include "xbar/models/state_dict.h"

namespace xbar::app {

namespace {

void SetupOneRank(RunContext& ctx, const std::string& config_path, const std::vector<std::string>& sets,
                  const std::string& out_dir, bool default_run_dir, bool distributed) {
  if (dist::Size() > 1 && !distributed) {
    throw ConfigError(StrCat("started as ", dist::Size(), " MPI ranks, but only xbar faults splits its work across "
                             "ranks; run this command without mpirun"));
  }
  ctx.cfg = Config::Load(config_path, sets);
  Config& cfg = ctx.cfg;

  int threads = static_cast<int>(cfg.Int("threads"));
  if (threads == 0) {
    threads = HardwareThreads();
    cfg.Set("threads", std::to_string(threads), "default (all cores)");
  }
  ctx.threads = threads;
  at::set_num_threads(threads);
  ctx.seed = static_cast<uint64_t>(cfg.Int("seed"));
  torch::manual_seed(ctx.seed);

  const std::string& dev = cfg.Str("torch_device");
  try {
    ctx.device = torch::Device(dev);
  } catch (const std::exception&) {
    throw ConfigError(StrCat(cfg.Where("torch_device"), ": torch_device: expected cpu, cuda or cuda:N, got '", dev, "'"));
  }
  if (ctx.device.is_cuda() && !torch::cuda::is_available()) {
    throw ConfigError(StrCat(cfg.Where("torch_device"), ": torch_device: '", dev,
                             "' requested but this LibTorch build sees no CUDA device"));
  }

  ctx.run_dir = !out_dir.empty() ? out_dir : (default_run_dir ? JoinPath("runs", cfg.Str("name")) : "");
  if (!ctx.run_dir.empty() && dist::Rank() == 0) {
    MakeDirs(ctx.run_dir);
    WriteFileAtomic(JoinPath(ctx.run_dir, "config.resolved.yaml"), cfg.ToYaml());
  }
}

}  // namespace

RunContext Setup(const std::string& config_path, const std::vector<std::string>& sets, const std::string& out_dir,
                 bool default_run_dir, bool distributed) {
  RunContext ctx;
  dist::Agree([&] { SetupOneRank(ctx, config_path, sets, out_dir, default_run_dir, distributed); });
  return ctx;
}

LoadedModel LoadModelAndData(const RunContext& ctx, const std::string& weights, bool train_split, bool data_needed) {
  const Config& cfg = ctx.cfg;
  LoadedModel out;
  out.bytes = ReadFile(weights);
  const SafeTensors st = ParseSafeTensors(out.bytes, weights);
  out.spec = ModelSpec::FromConfig(cfg);
  const bool has_meta = st.metadata.count("architecture") > 0;
  if (has_meta) {
    ModelSpec from_file = ModelSpecFromMetadata(st.metadata, weights);
    if (cfg.IsSet("model.name") && from_file.name != out.spec.name) {
      throw InputError(StrCat(weights, ": holds a '", from_file.name, "' model but ", cfg.Where("model.name"),
                              " sets model.name: ", out.spec.name));
    }
    out.spec = from_file;
  }
  const DatasetSpec data_spec = DatasetSpec::FromConfig(cfg);
  if (has_meta && !data_needed) {
    out.model = CreateModel(out.spec);
    LoadStateDict(*out.model, st, weights);
    out.model->to(ctx.device);
    return out;
  }
  if (has_meta && st.metadata.count("dataset") && st.metadata.at("dataset") != data_spec.name) {
    std::fprintf(stderr, "xbar: note: %s was trained on %s, used here with %s\n", weights.c_str(),
                 st.metadata.at("dataset").c_str(), data_spec.name.c_str());
  }
  Normalization norm;
  LoadOptions lo;
  lo.train = train_split;
  if (NormalizationFromMetadata(st.metadata, &norm.mean, &norm.std)) lo.norm = &norm;
  out.data = LoadData(data_spec, ctx.seed, lo);
  const DataBundle& d = out.data;
  if (!has_meta) {
    out.spec.in_channels = d.channels;
    out.spec.height = d.height;
    out.spec.width_px = d.width;
    out.spec.num_classes = d.num_classes;
  } else if (out.spec.in_channels != d.channels || out.spec.height != d.height || out.spec.width_px != d.width) {
    throw InputError(StrCat(weights, ": model expects ", out.spec.in_channels, "x", out.spec.height, "x",
                            out.spec.width_px, " inputs but ", data_spec.name, " has ", d.channels, "x", d.height, "x",
                            d.width));
  }
  out.model = CreateModel(out.spec);
  LoadStateDict(*out.model, st, weights);
  out.model->to(ctx.device);
  return out;
}

void AddConfigOptions(CLI::App* cmd, std::string* config, std::vector<std::string>* sets) {
  cmd->add_option("-c,--config", *config, "experiment YAML")->required();
  cmd->add_option("--set", *sets, "override a config key: section.key=value (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

std::map<std::string, std::string> Fingerprint(const Config& cfg, const std::vector<std::string>& sections) {
  std::map<std::string, std::string> fp;
  fp["seed"] = cfg.Text("seed");
  for (const auto& section : sections) {
    for (const auto& key : cfg.KeysWithPrefix(section + ".")) {
      if (key != "train.log_interval" && key != "train.eval_batch_size") fp[key] = cfg.Text(key);
    }
  }
  return fp;
}

void WriteJson(const std::string& path, const nlohmann::ordered_json& j) { WriteFileAtomic(path, j.dump(2) + "\n"); }

// Per-layer quantisation steps stored by `xbar compress` (metadata "quantization").
std::map<std::string, double> StoredScales(const std::string& weights) { return StoredScales(ReadFile(weights), weights); }

std::map<std::string, double> StoredScales(const std::string& bytes, const std::string& weights) {
  std::map<std::string, double> scales;
  const SafeTensors st = ParseSafeTensors(bytes, weights, /*with_data=*/false);
  auto it = st.metadata.find("quantization");
  if (it == st.metadata.end()) return scales;
  try {
    const nlohmann::json q = nlohmann::json::parse(it->second);  // kept alive for items()
    for (const auto& [name, entry] : q.items()) scales[name] = entry.at("scale").get<double>();
  } catch (const std::exception& e) {
    throw InputError(StrCat(weights, ": malformed 'quantization' metadata (", e.what(), ")"));
  }
  return scales;
}

}  // namespace xbar::app
