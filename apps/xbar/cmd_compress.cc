// xbar compress -c EXP.yaml [--weights IN.safetensors|IN.onnx] [--model NET.onnx] [-o DIR] [--set key=value ...] [--resume]
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "xbar/compress/compress.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/progress.h"
#include "xbar/core/rng.h"
#include "xbar/data/dataset.h"
#include "xbar/models/onnx.h"
#include "xbar/models/state_dict.h"
#include "xbar/models/zoo.h"
#include "xbar/train/data_parallel.h"

namespace xbar::app {
void RunCompress(const CompressArgs& a) {
  // Compressed weights go to runs/<name>/compress by default, beside (not over) the trained ones.
  std::string out = a.out;
  if (out.empty()) out = JoinPath(JoinPath("runs", Config::Load(a.config, a.sets).Str("name")), "compress");
  // Several processes (RANK, WORLD_SIZE, ...; data_parallel.h) share every training phase; rank 0 writes.
  const std::shared_ptr<DataParallel> dp = DataParallel::FromEnvironment();
  if (!dp->leader()) Progress::SetSilent(true);
  RunContext ctx = Setup(a.config, a.sets, out, true, /*distributed=*/false, /*data_parallel=*/true);
  const Config& cfg = ctx.cfg;
  LoadedModel loaded = LoadModelAndData(ctx, a.weights, /*train_split=*/true);
  const ModelSpec& mspec = loaded.spec;
  const DataBundle& data = loaded.data;
  Model* model = loaded.model.get();
  const CompressSpec spec = CompressSpec::FromConfig(cfg, *model);  // all checks before training
  std::fprintf(stderr, "xbar compress: %s, %zu of %zu layers constrained, run directory %s\n", mspec.name.c_str(),
               spec.layers.size(), model->layers().size(), ctx.run_dir.c_str());

  CompressOptions o;
  o.run_dir = ctx.run_dir;
  o.resume = a.resume;
  o.seed = ctx.seed;
  o.device = ctx.device;
  o.fingerprint = Fingerprint(cfg, {"dataset", "model", "train", "compress", "mapping"});
  o.fingerprint["input weights (FNV-1a)"] = std::to_string(HashBytes(loaded.bytes));
  o.data_parallel = dp;
  CompressResult r = Compress(*model, data, spec, o);
  if (!dp->leader()) return;

  nlohmann::ordered_json j = CompressJson(r);
  if (j["constraint_violations"].get<int64_t>() != 0) {  // checked before anything is written
    throw InternalError(StrCat("compressed weights violate their constraints (", j["constraint_violations"].get<int64_t>(),
                               " violations); the weights are not written"));
  }
  j["world_size"] = dp->world();
  std::map<std::string, std::string> meta = ModelMetadata(mspec, data.name, data.norm.mean, data.norm.std);
  nlohmann::json quant = nlohmann::json::object();
  for (const auto& l : r.layers) {
    if (l.scale > 0) quant[l.name] = {{"bits", l.bits}, {"scale", l.scale}};
  }
  meta["quantization"] = quant.dump();
  meta["compression"] = nlohmann::json({{"weights_nonzero", j["weights_nonzero"]},
                                        {"compression_ratio", j["compression_ratio"]},
                                        {"accuracy_compressed", j["accuracy_compressed"]}}).dump();
  const std::string model_path = JoinPath(ctx.run_dir, "model.safetensors");
  SaveModel(model_path, *model, meta);
  j["weights"] = "model.safetensors";
  if (mspec.is_onnx()) {
    // Export back: the same graph with the compressed weights, for PyTorch / onnxruntime users.
    SaveOnnx(*model, JoinPath(ctx.run_dir, "model.onnx"), meta);
    j["onnx"] = "model.onnx";
  }
  j["input_weights"] = loaded.source;
  WriteJson(JoinPath(ctx.run_dir, "compress.json"), j);
  FinishRun(ctx);
  std::printf("compressed %s: %lld of %lld weights non-zero (%.1fx), %.1fx fewer storage bits, crossbars %lld -> %lld, "
              "accuracy %.2f%% -> %.2f%%, constraint violations %lld; wrote %s\n",
              mspec.name.c_str(), static_cast<long long>(j["weights_nonzero"].get<int64_t>()),
              static_cast<long long>(j["weights_total"].get<int64_t>()), j["compression_ratio"].get<double>(),
              j["storage_ratio"].get<double>(), static_cast<long long>(j["crossbars_dense"].get<int64_t>()),
              static_cast<long long>(j["crossbars_compressed"].get<int64_t>()), 100 * j["accuracy_dense"].get<double>(),
              100 * j["accuracy_compressed"].get<double>(),
              static_cast<long long>(j["constraint_violations"].get<int64_t>()), model_path.c_str());
}

void RegisterCompress(CLI::App& app) {
  auto args = std::make_shared<CompressArgs>();
  CLI::App* cmd = app.add_subcommand("compress", "ADMM compression under crossbar constraints");
  AddConfigOptions(cmd, &args->config, &args->sets);
  cmd->add_option("--weights", args->weights, "trained model .safetensors or .onnx (default: model.onnx)");
  cmd->add_option("-o,--out", args->out, "run directory (default runs/<name>/compress)");
  cmd->add_flag("--resume", args->resume, "continue from the phase checkpoints in the run directory");
  cmd->callback([args]() { RunCompress(*args); });
}

}  // namespace xbar::app
