#include "common.h"

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"

namespace xbar::app {

RunContext Setup(const std::string& config_path, const std::vector<std::string>& sets, const std::string& out_dir,
                 bool default_run_dir) {
  RunContext ctx;
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
  if (!ctx.run_dir.empty()) {
    MakeDirs(ctx.run_dir);
    WriteFileAtomic(JoinPath(ctx.run_dir, "config.resolved.yaml"), cfg.ToYaml());
  }
  return ctx;
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

}  // namespace xbar::app
