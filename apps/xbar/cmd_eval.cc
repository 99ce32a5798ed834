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
void RunEval(const EvalArgs& a) {
  RunContext ctx = Setup(a.config, a.sets, a.out, /*default_run_dir=*/false);
  const Config& cfg = ctx.cfg;
  LoadedModel m = LoadModelAndData(ctx, a.weights, /*train_split=*/false);
  const ModelSpec& mspec = m.spec;
  const DataBundle& data = m.data;
  Model* model = m.model.get();
  EvalResult r = Evaluate(*model, data.test, cfg.Int("train.eval_batch_size"), ctx.device);
  std::printf("test accuracy %.2f%% (loss %.4f) on %lld %s test images\n", 100.0 * r.accuracy, r.loss,
              static_cast<long long>(r.count), data.name.c_str());
  if (!ctx.run_dir.empty()) {
    nlohmann::ordered_json j = {{"schema_version", 1},   {"model", mspec.name},     {"dataset", data.name},
                                {"weights", m.source},  {"test_accuracy", r.accuracy}, {"test_loss", r.loss},
                                {"test_images", r.count}};
    WriteJson(JoinPath(ctx.run_dir, "eval.json"), j);
    FinishRun(ctx);
  }
}

void RegisterEval(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "evaluate a weights file on the configured test set");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "model .safetensors or .onnx (default: model.onnx)");
  cmd->add_option("-o,--out", args->out, "write eval.json and config.resolved.yaml here");
  cmd->callback([args]() { RunEval(*args); });
}

}  // namespace xbar::app
