#include "xbar/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/core/progress.h"
#include "xbar/models/state_dict.h"

namespace xbar {
namespace {

constexpr const char* kModelPrefix = "model.";
constexpr const char* kOptimPrefix = "optim.";
constexpr const char* kExtraPrefix = "extra.";

// Autocast to bfloat16 for one training forward pass (train.precision bf16), as torch.autocast does:
// convolutions and matrix products run in bfloat16 on fp32 master weights, whose casts are cached
// for the pass and dropped at its end. Gradients reach the weights in fp32.
class AutocastBf16 {
 public:
  explicit AutocastBf16(torch::Device device) : cuda_(device.is_cuda()) {
    if (cuda_) {
      was_enabled_ = at::autocast::is_enabled();
      was_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    } else {
      was_enabled_ = at::autocast::is_cpu_enabled();
      was_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    }
    at::autocast::increment_nesting();
  }
  ~AutocastBf16() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    if (cuda_) {
      at::autocast::set_enabled(was_enabled_);
      at::autocast::set_autocast_gpu_dtype(was_dtype_);
    } else {
      at::autocast::set_cpu_enabled(was_enabled_);
      at::autocast::set_autocast_cpu_dtype(was_dtype_);
    }
  }
  AutocastBf16(const AutocastBf16&) = delete;
  AutocastBf16& operator=(const AutocastBf16&) = delete;

 private:
  bool cuda_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

}  // namespace

nlohmann::json HistoryToJson(const std::vector<EpochStats>& h) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& e : h) {
    j.push_back({{"epoch", e.epoch}, {"lr", e.lr}, {"train_loss", e.train_loss},
                 {"train_accuracy", e.train_accuracy}, {"val_loss", e.val_loss},
                 {"val_accuracy", e.val_accuracy}, {"seconds", e.seconds}});
  }
  return j;
}

std::vector<EpochStats> HistoryFromJson(const nlohmann::json& j) {
  std::vector<EpochStats> h;
  for (const auto& e : j) {
    EpochStats s;
    s.epoch = e.at("epoch").get<int64_t>();
    s.lr = e.at("lr").get<double>();
    s.train_loss = e.at("train_loss").get<double>();
    s.train_accuracy = e.at("train_accuracy").get<double>();
    s.val_loss = e.at("val_loss").get<double>();
    s.val_accuracy = e.at("val_accuracy").get<double>();
    s.seconds = e.at("seconds").get<double>();
    h.push_back(s);
  }
  return h;
}

namespace {

void SaveCheckpoint(const std::string& path, Model& model, const Optimizer& opt, const std::vector<EpochStats>& history,
                    double seconds, const TrainOptions& options) {
  const auto& fingerprint = options.fingerprint;
  SafeTensors st;
  for (const auto& [name, t] : StateDict(model)) st.tensors[kModelPrefix + name] = ToRaw(t);
  for (const auto& [name, t] : opt.State()) st.tensors[kOptimPrefix + name] = ToRaw(t);
  if (options.extra_state) {
    for (const auto& [name, t] : options.extra_state()) st.tensors[kExtraPrefix + name] = ToRaw(t);
  }
  st.metadata["epochs_done"] = std::to_string(history.size());
  st.metadata["history"] = HistoryToJson(history).dump();
  st.metadata["seconds"] = nlohmann::json(seconds).dump();
  st.metadata["fingerprint"] = nlohmann::json(fingerprint).dump();
  st.metadata["architecture"] = model.arch();
  WriteSafeTensors(path, st);
}

// Loads the checkpoint into model and optimiser; returns the history it holds.
std::vector<EpochStats> LoadCheckpoint(const std::string& path, Model& model, Optimizer& opt, double* seconds,
                                       const TrainOptions& options) {
  const auto& fingerprint = options.fingerprint;
  SafeTensors st = ReadSafeTensors(path);
  std::map<std::string, std::string> saved;
  std::vector<EpochStats> history;
  try {
    saved = nlohmann::json::parse(st.metadata.at("fingerprint")).get<std::map<std::string, std::string>>();
    history = HistoryFromJson(nlohmann::json::parse(st.metadata.at("history")));
    *seconds = nlohmann::json::parse(st.metadata.at("seconds")).get<double>();
  } catch (const std::exception& e) {
    throw InputError(StrCat(path, ": not an xbar training checkpoint (", e.what(), ")"));
  }
  CheckFingerprint(saved, fingerprint, path);
  LoadStateDict(model, st, path, kModelPrefix);  // only "model.*" names are checked
  opt.LoadState(st, kOptimPrefix, path);
  if (options.load_extra_state) options.load_extra_state(st, kExtraPrefix, path);
  return history;
}

std::string Percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100.0 * x);
  return buf;
}

std::string Fixed(double x, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, x);
  return buf;
}

}  // namespace

void CheckFingerprint(const std::map<std::string, std::string>& saved,
                      const std::map<std::string, std::string>& current, const std::string& path) {
  for (const auto& [key, value] : current) {
    auto it = saved.find(key);
    if (it == saved.end() || it->second != value) {
      throw ConfigError(StrCat(path, ": checkpoint was made with ", key, " = ",
                               it == saved.end() ? "<unset>" : it->second, ", this run has ", value,
                               "; use another run directory (-o) or drop --resume"));
    }
  }
}

EvalResult Evaluate(Model& model, const Dataset& data, int64_t batch_size, torch::Device device) {
  EvalResult r;
  if (data.size() == 0) return r;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double loss_sum = 0.0;
  int64_t correct = 0;
  for (int64_t start = 0; start < data.size(); start += batch_size) {
    const int64_t n = std::min(batch_size, data.size() - start);
    torch::Tensor x = data.images.slice(0, start, start + n).to(device);
    torch::Tensor y = data.labels.slice(0, start, start + n).to(device);
    torch::Tensor out = model.forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
                    out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += out.argmax(1).eq(y).sum().item<int64_t>();
  }
  model.train(was_training);
  r.count = data.size();
  r.loss = loss_sum / static_cast<double>(r.count);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(r.count);
  return r;
}

int64_t RecalibrateBatchNorm(Model& model, const Dataset& data, int64_t images, int64_t batch_size,
                             torch::Device device, int64_t* images_used) {
  if (images_used != nullptr) *images_used = 0;
  const int64_t n = std::min(images, data.size());
  if (n < 2 || batch_size <= 0) return 0;  // training-mode batch norm needs two values per channel
  struct Layer {
    torch::nn::Module* module;
    c10::optional<double>* momentum;
    c10::optional<double> saved;
    std::function<void()> reset;
  };
  std::vector<Layer> layers;
  auto collect = [&](auto* bn) {
    if (bn == nullptr || !bn->options.track_running_stats()) return;
    layers.push_back({bn, &bn->options.momentum(), bn->options.momentum(), [bn] { bn->reset_running_stats(); }});
  };
  for (const auto& m : model.modules(/*include_self=*/false)) {
    collect(m->as<torch::nn::BatchNorm1dImpl>());
    collect(m->as<torch::nn::BatchNorm2dImpl>());
    collect(m->as<torch::nn::BatchNorm3dImpl>());
  }
  if (layers.empty()) return 0;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  for (Layer& l : layers) {
    l.reset();
    *l.momentum = c10::nullopt;  // a cumulative average over the batches
    l.module->train(true);
  }
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t end = std::min(n, start + batch_size);
    if (end - start == 1) break;  // a last batch of one image (no variance) is left out
    model.forward(data.images.slice(0, start, end).to(device));
    if (images_used != nullptr) *images_used = end;
  }
  for (Layer& l : layers) *l.momentum = l.saved;
  model.train(was_training);
  return static_cast<int64_t>(layers.size());
}

TrainResult Train(Model& model, const DataBundle& data, const TrainSpec& spec, const TrainOptions& options) {
  model.to(options.device);
  std::unique_ptr<Optimizer> opt = MakeOptimizer(TrainableParameters(model), spec);
  const std::string ckpt = options.run_dir.empty() ? "" : JoinPath(options.run_dir, kCheckpointFile);

  TrainResult result;
  double seconds_before = 0.0;
  if (options.resume && !ckpt.empty() && FileExists(ckpt)) {
    result.history = LoadCheckpoint(ckpt, model, *opt, &seconds_before, options);
    result.resumed_from_epoch = static_cast<int64_t>(result.history.size());
    std::fprintf(stderr, "resuming from %s: %lld of %lld epochs done\n", ckpt.c_str(),
                 static_cast<long long>(result.resumed_from_epoch), static_cast<long long>(spec.epochs));
  } else if (options.resume) {
    std::fprintf(stderr, "no checkpoint in %s; starting from scratch\n", options.run_dir.c_str());
  }

  const std::shared_ptr<DataParallel> dp = options.data_parallel ? options.data_parallel : DataParallel::Single();
  const bool several = dp->world() > 1;
  std::vector<torch::Tensor> params;
  for (const auto& p : model.parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  if (several) {
    // Every process starts from rank 0's weights (and, resuming, its checkpoint's).
    std::vector<torch::Tensor> state = params;
    for (const auto& b : model.buffers()) {
      if (b.is_floating_point()) state.push_back(b);
    }
    dp->Broadcast(state);
  }
  const int64_t n = data.train.size();
  const std::string precision = ResolvePrecision(spec.precision, options.device.is_cpu());
  const bool bf16 = precision == "bf16";
  if (!bf16 && precision != "fp32") {
    throw ConfigError(StrCat("train.precision: expected fp32, bf16 or auto, got '", spec.precision, "'"));
  }
  if (several) {
    // Processes on different machines may resolve auto differently: one precision for all, or none.
    const torch::Tensor count = torch::full({1}, bf16 ? 1.0 : 0.0, torch::TensorOptions().dtype(torch::kFloat64));
    dp->AllReduceSum({count});
    const auto on_bf16 = static_cast<int64_t>(count.item<double>());
    if (on_bf16 != 0 && on_bf16 != dp->world()) {
      throw ConfigError(StrCat("train.precision: ", on_bf16, " of ", dp->world(), " processes train in bf16, ",
                               "the others in fp32 (auto resolves per machine); set train.precision to fp32 or bf16"));
    }
  }
  static std::atomic<bool> warned{false};  // once per process (compress trains in several phases)
  if (bf16 && options.device.is_cpu() && !CpuHasNativeBf16() && dp->leader() && !warned.exchange(true)) {
    std::fprintf(stderr,
                 "warning: train.precision bf16: this CPU has no AVX512-BF16, so bfloat16 is emulated and "
                 "training is many times slower than with fp32 (train.precision auto picks fp32 here)\n");
  }
  const auto t_start = std::chrono::steady_clock::now();
  for (int64_t epoch = result.resumed_from_epoch; epoch < spec.epochs; ++epoch) {
    const auto t_epoch = std::chrono::steady_clock::now();
    const double lr = LearningRate(spec, epoch);
    opt->SetLr(lr);
    model.train();
    const std::vector<int64_t> order = EpochOrder(n, options.seed, epoch);
    Rng aug_rng(DeriveSeed(options.seed, "data.augment", static_cast<uint64_t>(epoch)));
    // A trailing batch of one sample is skipped: batch norm cannot train on it.
    const int64_t batches = (n + spec.batch_size - 1) / spec.batch_size - (n % spec.batch_size == 1 && n > 1 ? 1 : 0);
    Progress bar(StrCat("epoch ", epoch + 1, "/", spec.epochs), batches, stderr, -1, spec.log_interval_s);
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(options.device));
    torch::Tensor correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(options.device));
    int64_t seen = 0, seen_here = 0;  // images of the global batches / of this process's shards
    for (int64_t b = 0; b < batches; ++b) {
      if (InterruptRequested()) {
        throw InterruptedError(StrCat("interrupted during epoch ", epoch + 1, "; ", epoch, " completed epoch(s) are in ",
                                      ckpt.empty() ? "<no checkpoint>" : ckpt, "; continue with --resume"));
      }
      const int64_t start = b * spec.batch_size;
      const int64_t count = std::min(spec.batch_size, n - start);
      auto [x, y] = GetBatch(data.train, order, start, count);
      x = Augment(x, data.augment, aug_rng);  // the whole global batch: the same draws at any world size
      int64_t here = count;
      if (several) {
        const auto [lo, hi] = dp->Shard(count);
        x = x.slice(0, lo, hi);
        y = y.slice(0, lo, hi);
        here = hi - lo;
      }
      x = x.to(options.device);
      y = y.to(options.device);
      opt->ZeroGrad();
      torch::Tensor out;
      if (bf16) {
        // oneDNN's bfloat16 convolutions are fastest on channels-last activations (NHWC).
        if (x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        AutocastBf16 autocast(options.device);
        out = model.forward(x);
      } else {
        out = model.forward(x);
      }
      out = out.to(torch::kFloat);  // the loss and the accuracy count in fp32 (a no-op in fp32)
      // This shard's share of the global batch's mean loss; the gradients' sum over the processes
      // is then the gradient of that mean.
      torch::Tensor loss = several ? torch::nn::functional::cross_entropy(
                                         out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
                                         static_cast<double>(count)
                                   : torch::nn::functional::cross_entropy(out, y);
      loss.backward();
      if (several) {
        std::vector<torch::Tensor> grads;
        for (auto& p : params) {
          if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
          grads.push_back(p.grad());
        }
        dp->AllReduceSum(grads);
      }
      if (options.after_backward) options.after_backward();
      opt->Step();
      if (options.after_step) options.after_step();
      {
        torch::NoGradGuard no_grad;
        loss_sum.add_(loss.detach(), static_cast<double>(count));  // several: this shard's summed loss
        correct.add_(out.argmax(1).eq(y).sum());
      }
      seen += count;
      seen_here += here;
      if (bar.Due()) {  // several: this process's shards until the epoch's totals are summed
        bar.Update(b + 1, StrCat("loss ", Fixed(loss_sum.item<double>() / static_cast<double>(seen_here), 4), " acc ",
                                 Percent(static_cast<double>(correct.item<int64_t>()) / static_cast<double>(seen_here))));
      }
    }
    if (several) {
      // The epoch's totals over all shards, and one set of batch-norm statistics (their mean).
      torch::Tensor totals = torch::stack({loss_sum.to(torch::kCPU, torch::kFloat64),
                                           correct.to(torch::kCPU, torch::kFloat64)});
      dp->AllReduceSum({totals});
      loss_sum.fill_(totals[0].item<double>());
      correct.fill_(static_cast<int64_t>(std::llround(totals[1].item<double>())));
      std::vector<torch::Tensor> stats;
      for (const auto& b : model.buffers()) {
        if (b.is_floating_point()) stats.push_back(b);
      }
      dp->AllReduceSum(stats);
      torch::NoGradGuard no_grad;
      for (auto& b : stats) b.div_(static_cast<double>(dp->world()));
    }
    EpochStats s;
    s.epoch = epoch + 1;
    s.lr = lr;
    s.train_loss = loss_sum.item<double>() / static_cast<double>(seen);
    s.train_accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(seen);
    std::string status = StrCat("lr ", lr, " | train loss ", Fixed(s.train_loss, 4), " acc ", Percent(s.train_accuracy));
    if (data.val.size() > 0) {
      EvalResult v = Evaluate(model, data.val, spec.eval_batch_size, options.device);
      s.val_loss = v.loss;
      s.val_accuracy = v.accuracy;
      status += StrCat(" | val loss ", Fixed(v.loss, 4), " acc ", Percent(v.accuracy));
    }
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_epoch).count();
    result.history.push_back(s);
    bar.Finish(status);
    if (options.on_epoch_end) options.on_epoch_end(epoch + 1);
    if (!ckpt.empty() && dp->leader()) {
      const double total = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      SaveCheckpoint(ckpt, model, *opt, result.history, total, options);
    }
  }
  result.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (options.evaluate_test) result.test = Evaluate(model, data.test, spec.eval_batch_size, options.device);
  return result;
}

}  // namespace xbar
