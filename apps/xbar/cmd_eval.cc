// xbar eval -c EXP.yaml --weights FILE.safetensors [-o DIR] [--set key=value ...]
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/data/dataset.h"
#include "xbar/models/state_dict.h"
#include "xbar/models/zoo.h"
#include "xbar/train/trainer.h"

namespace xbar::app {
namespace {

struct EvalArgs {
  std::string config;
  std::string weights;
  std::string out;
  std::vector<std::string> sets;
};

void RunEval(const EvalArgs& a) {
  RunContext ctx = Setup(a.config, a.sets, a.out, /*default_run_dir=*/false);
  const Config& cfg = ctx.cfg;
  SafeTensors st = ReadSafeTensors(a.weights);

  // The architecture comes from the file's metadata when it has one (files written by xbar do);
  // a PyTorch export without metadata is built from the config.
  ModelSpec mspec = ModelSpec::FromConfig(cfg);
  const bool has_meta = st.metadata.count("architecture") > 0;
  if (has_meta) {
    ModelSpec from_file = ModelSpecFromMetadata(st.metadata, a.weights);
    if (cfg.IsSet("model.name") && from_file.name != mspec.name) {
      throw InputError(StrCat(a.weights, ": holds a '", from_file.name, "' model but ", cfg.Where("model.name"),
                              " sets model.name: ", mspec.name));
    }
    mspec = from_file;
  }
  const DatasetSpec data_spec = DatasetSpec::FromConfig(cfg);
  if (has_meta && st.metadata.count("dataset") && st.metadata.at("dataset") != data_spec.name) {
    std::fprintf(stderr, "xbar eval: note: %s was trained on %s, evaluating on %s\n", a.weights.c_str(),
                 st.metadata.at("dataset").c_str(), data_spec.name.c_str());
  }
  Normalization norm;
  LoadOptions lo;
  lo.train = false;
  if (NormalizationFromMetadata(st.metadata, &norm.mean, &norm.std)) lo.norm = &norm;
  DataBundle data = LoadData(data_spec, ctx.seed, lo);
  if (!has_meta) {
    mspec.in_channels = data.channels;
    mspec.height = data.height;
    mspec.width_px = data.width;
    mspec.num_classes = data.num_classes;
  } else if (mspec.in_channels != data.channels || mspec.height != data.height || mspec.width_px != data.width) {
    throw InputError(StrCat(a.weights, ": model expects ", mspec.in_channels, "x", mspec.height, "x", mspec.width_px,
                            " inputs but ", data_spec.name, " has ", data.channels, "x", data.height, "x", data.width));
  }
  std::shared_ptr<Model> model = CreateModel(mspec);
  LoadStateDict(*model, st, a.weights);
  model->to(ctx.device);
  EvalResult r = Evaluate(*model, data.test, cfg.Int("train.eval_batch_size"), ctx.device);
  std::printf("test accuracy %.2f%% (loss %.4f) on %lld %s test images\n", 100.0 * r.accuracy, r.loss,
              static_cast<long long>(r.count), data.name.c_str());
  if (!ctx.run_dir.empty()) {
    nlohmann::ordered_json j = {{"schema_version", 1},   {"model", mspec.name},     {"dataset", data.name},
                                {"weights", a.weights},  {"test_accuracy", r.accuracy}, {"test_loss", r.loss},
                                {"test_images", r.count}};
    WriteJson(JoinPath(ctx.run_dir, "eval.json"), j);
  }
}

}  // namespace

void RegisterEval(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "evaluate a weights file on the configured test set");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors file")->required();
  cmd->add_option("-o,--out", args->out, "write eval.json and config.resolved.yaml here");
  cmd->callback([args]() { RunEval(*args); });
}

}  // namespace xbar::app
