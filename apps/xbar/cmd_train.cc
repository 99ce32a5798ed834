// xbar train -c EXP.yaml [-o DIR] [--set key=value ...] [--resume]
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/progress.h"
#include "xbar/core/rng.h"
#include "xbar/data/dataset.h"
#include "xbar/models/onnx.h"
#include "xbar/models/state_dict.h"
#include "xbar/models/zoo.h"
#include "xbar/train/data_parallel.h"
#include "xbar/train/trainer.h"

namespace xbar::app {
void RunTrain(const TrainArgs& a) {
  // Several processes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; data_parallel.h) share the work;
  // rank 0 writes every file.
  const std::shared_ptr<DataParallel> dp = DataParallel::FromEnvironment();
  if (!dp->leader()) Progress::SetSilent(true);
  RunContext ctx = Setup(a.config, a.sets, a.out, /*default_run_dir=*/true, /*distributed=*/false,
                         /*data_parallel=*/true);
  const Config& cfg = ctx.cfg;
  const DatasetSpec data_spec = DatasetSpec::FromConfig(cfg);
  const TrainSpec train_spec = TrainSpec::FromConfig(cfg);
  ModelSpec mspec = ModelSpec::FromConfig(cfg);
  std::fprintf(stderr, "xbar train: %s on %s, %lld epochs, %d threads, run directory %s\n",
               mspec.is_onnx() ? mspec.onnx.c_str() : mspec.name.c_str(), data_spec.name.c_str(),
               static_cast<long long>(train_spec.epochs), ctx.threads, ctx.run_dir.c_str());

  // An ONNX model is fine-tuned from its own weights, so its inputs are normalised as it was trained.
  Normalization norm;
  LoadOptions lo;
  if (mspec.is_onnx()) {
    const OnnxInfo info = ReadOnnxInfo(mspec.onnx);
    mspec.onnx_hash = info.graph_hash;
    lo.norm = ResolveNormalization(cfg, info.metadata, mspec.onnx, &norm);
  }
  DataBundle data = LoadData(data_spec, ctx.seed, lo);
  mspec.in_channels = data.channels;
  mspec.height = data.height;
  mspec.width_px = data.width;
  mspec.num_classes = data.num_classes;
  std::shared_ptr<Model> model = CreateModel(mspec);
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  std::fprintf(stderr, "data: %lld train / %lld val / %lld test images of %lldx%lldx%lld, %lld classes; "
               "model: %lld parameters\n",
               static_cast<long long>(data.train.size()), static_cast<long long>(data.val.size()),
               static_cast<long long>(data.test.size()), static_cast<long long>(data.channels),
               static_cast<long long>(data.height), static_cast<long long>(data.width),
               static_cast<long long>(data.num_classes), static_cast<long long>(params));

  TrainOptions opt;
  opt.run_dir = ctx.run_dir;
  opt.resume = a.resume;
  opt.seed = ctx.seed;
  opt.device = ctx.device;
  opt.data_parallel = dp;
  opt.fingerprint = Fingerprint(cfg, {"dataset", "model", "train"});
  // Fine-tuning starts from the ONNX file's weights: its content, not its path, must match on resume.
  if (mspec.is_onnx()) opt.fingerprint["model.onnx (FNV-1a)"] = std::to_string(HashBytes(ReadFile(mspec.onnx)));
  TrainResult r = Train(*model, data, train_spec, opt);
  if (!dp->leader()) return;

  const std::string model_path = JoinPath(ctx.run_dir, "model.safetensors");
  const auto meta = ModelMetadata(mspec, data.name, data.norm.mean, data.norm.std);
  SaveModel(model_path, *model, meta);
  if (mspec.is_onnx()) SaveOnnx(*model, JoinPath(ctx.run_dir, "model.onnx"), meta);  // the fine-tuned graph

  nlohmann::ordered_json j = {
      {"schema_version", 1},
      {"model", mspec.is_onnx() ? mspec.onnx : mspec.name},
      {"dataset", data.name},
      {"epochs", train_spec.epochs},
      {"test_accuracy", r.test.accuracy},
      {"test_loss", r.test.loss},
      {"test_images", r.test.count},
      {"val_accuracy", r.history.empty() ? 0.0 : r.history.back().val_accuracy},
      {"seconds", r.seconds},
      {"parameters", params},
      {"seed", ctx.seed},
      {"threads", ctx.threads},
      {"world_size", dp->world()},
      {"resumed_from_epoch", r.resumed_from_epoch},
      {"weights", "model.safetensors"},
      {"history", HistoryToJson(r.history)},
  };
  WriteJson(JoinPath(ctx.run_dir, "train.json"), j);
  FinishRun(ctx);
  std::printf("test accuracy %.2f%% (loss %.4f) on %lld images after %lld epochs, %.1f s; wrote %s\n",
              100.0 * r.test.accuracy, r.test.loss, static_cast<long long>(r.test.count),
              static_cast<long long>(train_spec.epochs), r.seconds, model_path.c_str());
}

void RegisterTrain(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "train a model on the configured dataset");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>)");
  cmd->add_flag("--resume", args->resume, "continue from the run directory's last completed epoch");
  cmd->callback([args]() { RunTrain(*args); });
}

}  // namespace xbar::app
