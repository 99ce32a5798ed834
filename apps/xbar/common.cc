#include "common.h"

#include <cstdlib>
#include <cstring>

#include <unistd.h>

#include "xbar/core/dist.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/core/safetensors.h"
#include "xbar/models/onnx.h"
#include "xbar/models/state_dict.h"
#include "xbar/train/optimizer.h"

namespace xbar::app {

namespace {

void SetupOneRank(RunContext& ctx, const std::string& config_path, const std::vector<std::string>& sets,
                  const std::string& out_dir, bool default_run_dir, bool distributed, bool data_parallel) {
  if (const char* w = std::getenv("WORLD_SIZE"); !data_parallel && w != nullptr && std::strcmp(w, "1") != 0 && *w != '\0') {
    throw ConfigError(StrCat("environment WORLD_SIZE=", w, ": only xbar train and xbar compress train in several "
                             "processes; run this command once (unset WORLD_SIZE)"));
  }
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

  ResolveAutoPrecision(cfg, ctx.device.is_cpu());

  ctx.run_dir = !out_dir.empty() ? out_dir : (default_run_dir ? JoinPath("runs", cfg.Str("name")) : "");
  if (!ctx.run_dir.empty() && dist::Rank() == 0) {
    ctx.outputs = std::make_shared<RunOutputs>();
    ctx.outputs->created_dirs = MakeDirs(ctx.run_dir);
    ctx.outputs->config_path = JoinPath(ctx.run_dir, "config.resolved.yaml");
    ctx.outputs->config_yaml = cfg.ToYaml();
  }
}

}  // namespace

RunContext Setup(const std::string& config_path, const std::vector<std::string>& sets, const std::string& out_dir,
                 bool default_run_dir, bool distributed, bool data_parallel) {
  RunContext ctx;
  dist::Agree([&] { SetupOneRank(ctx, config_path, sets, out_dir, default_run_dir, distributed, data_parallel); });
  return ctx;
}

RunOutputs::~RunOutputs() {
  if (std::uncaught_exceptions() <= exceptions_at_start) return;
  // The command is failing: the directories Setup created go again, innermost first, when they are
  // still empty (rmdir removes nothing else, so a resumable checkpoint stays).
  for (auto it = created_dirs.rbegin(); it != created_dirs.rend(); ++it) ::rmdir(it->c_str());
}

Config OneChip(const Config& cfg) {
  Config c = cfg;
  if (cfg.Str("faults.placement") == "both") c.Set("faults.placement", "on", cfg.Where("faults.placement"));
  return c;
}

void FinishRun(const RunContext& ctx) {
  if (ctx.outputs == nullptr || ctx.outputs->written) return;
  WriteFileAtomic(ctx.outputs->config_path, ctx.outputs->config_yaml);
  ctx.outputs->written = true;
}

const Normalization* ResolveNormalization(const Config& cfg, const std::map<std::string, std::string>& meta,
                                          const std::string& source, Normalization* storage) {
  if (!cfg.FloatList("dataset.mean").empty()) return nullptr;  // LoadData applies dataset.mean/std
  const std::string& mode = cfg.Str("dataset.normalize");
  if (mode == "false") return nullptr;
  if (NormalizationFromMetadata(meta, &storage->mean, &storage->std)) return storage;
  if (mode == "true") return nullptr;  // this training set's statistics, as asked
  throw InputError(StrCat(source, ": has no input normalisation (metadata normalize_mean/normalize_std); set "
                          "dataset.normalize: false if it was trained on raw [0, 1] pixels, or dataset.mean and "
                          "dataset.std to the per-channel statistics it was trained with"));
}

LoadedModel LoadModelAndData(const RunContext& ctx, const std::string& weights_arg, bool train_split,
                             bool data_needed) {
  const Config& cfg = ctx.cfg;
  LoadedModel out;
  const std::string& onnx_cfg = cfg.Str("model.onnx");
  std::string weights = weights_arg;
  if (weights.empty()) {
    if (onnx_cfg.empty()) throw ConfigError("--weights: required unless model.onnx (or --model FILE.onnx) is set");
    weights = onnx_cfg;
  }
  out.bytes = ReadFile(weights);
  out.source = weights;
  std::map<std::string, std::string>& meta = out.meta;
  SafeTensors st;
  bool safetensors = false, has_meta = false;
  out.spec = ModelSpec::FromConfig(cfg);
  if (LooksLikeOnnx(weights, out.bytes)) {
    // The graph and its weights in one file.
    out.model = LoadOnnxModelFromBytes(out.bytes, weights);
    meta = OnnxModelInfo(*out.model).metadata;
    out.spec.name = "onnx";
    out.spec.onnx = weights;
    has_meta = true;
  } else {
    st = ParseSafeTensors(out.bytes, weights);
    safetensors = true;
    meta = st.metadata;
    has_meta = meta.count("architecture") > 0;
    if (has_meta) {
      ModelSpec from_file = ModelSpecFromMetadata(meta, weights);
      if (from_file.is_onnx()) {
        // Weights of an ONNX graph: the graph is model.onnx (or the file they were made from).
        const std::string graph = !onnx_cfg.empty() ? onnx_cfg : from_file.onnx;
        if (!FileExists(graph)) {
          throw InputError(StrCat(weights, ": holds weights of the ONNX graph '", from_file.onnx,
                                  "', which is not there; set model.onnx to that graph"));
        }
        out.model = LoadOnnxModel(graph);
        const std::string& hash = OnnxModelInfo(*out.model).graph_hash;
        if (hash != from_file.onnx_hash) {
          throw InputError(StrCat(weights, ": holds weights of an ONNX graph with structure hash ", from_file.onnx_hash,
                                  " but ", graph, " has ", hash, " (a different network)"));
        }
        from_file.onnx = graph;
      } else if (!onnx_cfg.empty()) {
        throw InputError(StrCat(weights, ": holds a zoo '", from_file.name, "' model but ", cfg.Where("model.onnx"),
                                " sets model.onnx: ", onnx_cfg));
      } else if (cfg.IsSet("model.name") && from_file.name != out.spec.name) {
        throw InputError(StrCat(weights, ": holds a '", from_file.name, "' model but ", cfg.Where("model.name"),
                                " sets model.name: ", out.spec.name));
      }
      out.spec = from_file;
    } else if (out.spec.is_onnx()) {
      out.model = LoadOnnxModel(out.spec.onnx);  // a bare state dict with the graph's layer names
    }
    has_meta = has_meta || out.model != nullptr;
  }
  if (out.model) {  // an ONNX graph: the shape and classes are its own
    const OnnxInfo& info = OnnxModelInfo(*out.model);
    out.spec.onnx_hash = info.graph_hash;
    out.spec.in_channels = info.channels;
    out.spec.height = info.height;
    out.spec.width_px = info.width;
    out.spec.num_classes = info.num_classes;
  }
  auto finish = [&] {
    if (!out.model) out.model = CreateModel(out.spec);
    if (safetensors) LoadStateDict(*out.model, st, weights);
    // NaN or inf in a weight poisons every result after it (and no crossbar can hold it): refused
    // here, before any command computes or writes anything.
    for (const auto& group : {out.model->named_parameters(), out.model->named_buffers()}) {
      for (const auto& item : group) {
        const torch::Tensor& t = item.value();
        if (!t.is_floating_point() || t.numel() == 0) continue;
        const int64_t bad = t.numel() - torch::isfinite(t).sum().item<int64_t>();
        if (bad > 0) {
          throw InputError(StrCat(weights, ": tensor ", item.key(), " has ", bad, " NaN or infinite value",
                                  bad == 1 ? "" : "s", " of ", t.numel(), "; expected finite weights"));
        }
      }
    }
    out.model->to(ctx.device);
  };
  const DatasetSpec data_spec = DatasetSpec::FromConfig(cfg);
  if (has_meta && !data_needed) {
    finish();
    return out;
  }
  Normalization norm;
  LoadOptions lo;
  lo.train = train_split;
  lo.norm = ResolveNormalization(cfg, meta, weights, &norm);
  out.data = LoadData(data_spec, ctx.seed, lo);
  const DataBundle& d = out.data;
  if (meta.count("dataset") && meta.at("dataset") != d.name) {
    std::fprintf(stderr, "xbar: warning: %s was trained on %s; evaluating it on %s (dataset.*), as configured\n",
                 weights.c_str(), meta.at("dataset").c_str(), d.name.c_str());
  }
  if (!has_meta) {
    out.spec.in_channels = d.channels;
    out.spec.height = d.height;
    out.spec.width_px = d.width;
    out.spec.num_classes = d.num_classes;
  } else if (out.spec.in_channels != d.channels || out.spec.height != d.height || out.spec.width_px != d.width) {
    throw InputError(StrCat(weights, ": model expects ", out.spec.in_channels, "x", out.spec.height, "x",
                            out.spec.width_px, " inputs but ", d.name, " has ", d.channels, "x", d.height, "x",
                            d.width));
  } else if (out.spec.num_classes != d.num_classes) {
    throw InputError(StrCat(weights, ": model has ", out.spec.num_classes, " classes but ", d.name, " has ",
                            d.num_classes));
  }
  finish();
  return out;
}

void AddConfigOptions(CLI::App* cmd, std::string* config, std::vector<std::string>* sets) {
  cmd->add_option("-c,--config", *config, "experiment YAML")->required();
  cmd->add_option("--set", *sets, "override a config key: section.key=value (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option_function<std::string>(
      "--model", [sets](const std::string& file) { sets->push_back("model.onnx=" + file); },
      "an ONNX network to use instead of model.name (the same as --set model.onnx=FILE)");
}

bool ChangesResults(const std::string& key) {
  // Progress output, evaluation batching and the campaign time guard change no number written.
  return key != "train.log_interval" && key != "train.eval_batch_size" && key != "faults.max_hours";
}

std::map<std::string, std::string> Fingerprint(const Config& cfg, const std::vector<std::string>& sections) {
  std::map<std::string, std::string> fp;
  fp["seed"] = cfg.Text("seed");
  for (const auto& section : sections) {
    for (const auto& key : cfg.KeysWithPrefix(section + ".")) {
      if (ChangesResults(key)) fp[key] = cfg.Text(key);
    }
  }
  return fp;
}

void WriteJson(const std::string& path, const nlohmann::ordered_json& j) { WriteFileAtomic(path, j.dump(2) + "\n"); }

// Per-layer quantisation steps stored by `xbar compress` (metadata "quantization").
std::map<std::string, double> StoredScales(const LoadedModel& m) {
  std::map<std::string, double> scales;
  auto it = m.meta.find("quantization");
  if (it == m.meta.end()) return scales;
  try {
    const nlohmann::json q = nlohmann::json::parse(it->second);  // kept alive for items()
    for (const auto& [name, entry] : q.items()) scales[name] = entry.at("scale").get<double>();
  } catch (const std::exception& e) {
    throw InputError(StrCat(m.source, ": malformed 'quantization' metadata (", e.what(), ")"));
  }
  return scales;
}

}  // namespace xbar::app
