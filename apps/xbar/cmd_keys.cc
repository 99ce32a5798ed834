// xbar keys: prints every config key with its type, default and meaning (Markdown table), the
// table docs/USER_GUIDE.md embeds; a test keeps the two identical. With -c, checks an experiment
// instead and prints it resolved (every key, with where its value came from), writing nothing.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "common.h"
#include "xbar/config/config.h"
#include "xbar/core/error.h"
#include "xbar/crossbar/spec.h"
#include "xbar/data/dataset.h"
#include "xbar/hw/hw.h"
#include "xbar/models/zoo.h"
#include "xbar/train/optimizer.h"

namespace xbar::app {

std::string KeysMarkdown() {
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& spec : Schema()) {
    std::string def = spec.default_value.empty() ? "\"\"" : spec.default_value;
    out += "| `" + spec.key + "` | " + DescribeExpected(spec) + " | `" + def + "` | " + spec.help + " |\n";
  }
  return out;
}

namespace {

struct KeysArgs {
  std::string config;
  std::vector<std::string> sets;
};

// Every key and value against the schema (Config::Load), then the checks across keys that need no
// model or data: each section's settings as the stages read them. Throws ConfigError naming the key.
void CheckExperiment(const Config& cfg) {
  DatasetSpec::FromConfig(cfg);
  ModelSpec::FromConfig(cfg);
  TrainSpec::FromConfig(cfg);
  MappingSpec::FromConfig(cfg);
  DeviceSpec::FromConfig(cfg);
  FaultSpec::FromConfig(OneChip(cfg));
  hw::ArchSpec::FromConfig(cfg);
}

}  // namespace

void RegisterKeys(CLI::App& app) {
  auto args = std::make_shared<KeysArgs>();
  CLI::App* cmd = app.add_subcommand(
      "keys", "list every config key with its type, default and meaning; with -c, check an experiment and print "
              "it resolved");
  cmd->add_option("-c,--config", args->config,
                  "experiment YAML to check: prints every key's resolved value and where it came from (the "
                  "config.resolved.yaml a command would write); per-layer compression keys are checked when "
                  "compress runs, against the model");
  cmd->add_option("--set", args->sets, "override a config key: section.key=value (repeatable; with -c)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->callback([args]() {
    if (args->config.empty()) {
      if (!args->sets.empty()) throw ConfigError("--set: needs -c EXP.yaml, the experiment it overrides");
      std::fputs(KeysMarkdown().c_str(), stdout);
      return;
    }
    Config cfg = Config::Load(args->config, args->sets);
    ResolveAutoPrecision(cfg, cfg.Str("torch_device").rfind("cuda", 0) != 0);
    CheckExperiment(cfg);
    std::fputs(cfg.ToYaml().c_str(), stdout);
  });
}

}  // namespace xbar::app
