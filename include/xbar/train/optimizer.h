// xbar/train/optimizer.h — SGD (momentum, Nesterov) and Adam with PyTorch's exact update rules,
// and learning-rate schedules.
//
// xbar keeps its own optimisers (rather than torch::optim) so their state is plain named tensors:
// checkpoints store it in safetensors next to the weights, and a resumed run continues bit for bit.
//
//   auto opt = MakeOptimizer(TrainableParameters(*model), spec);
//   opt->SetLr(LearningRate(spec, epoch));
//   loss.backward(); opt->Step(); opt->ZeroGrad();
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "xbar/config/config.h"
#include "xbar/core/safetensors.h"

namespace xbar {

struct TrainSpec {
  int64_t epochs = 15;
  int64_t batch_size = 64;
  std::string optimizer = "adam";  // sgd | adam
  double lr = 1e-3;
  double momentum = 0.9;           // SGD
  bool nesterov = false;           // SGD
  double weight_decay = 0.0;       // L2, added to the gradient (PyTorch semantics)
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  std::string schedule = "cosine";  // constant | step | cosine
  int64_t step_epochs = 10;
  double gamma = 0.1;
  int64_t warmup_epochs = 0;
  int64_t eval_batch_size = 1000;
  double log_interval_s = 10.0;
  // Arithmetic of training's forward and backward passes: "fp32", or "bf16" = autocast (convolutions
  // and matrix products in bfloat16 over fp32 master weights and optimiser state). Evaluation is fp32.
  std::string precision = "fp32";

  static TrainSpec FromConfig(const Config& cfg);
};

// train.precision as it runs: "auto" is "bf16" where bfloat16 is native -- a CPU with AVX512-BF16
// (`cpu`) -- and "fp32" elsewhere (CPUs without it, where bfloat16 is emulated, and CUDA devices);
// "fp32" and "bf16" stay. `why`, when given, says which rule chose.
std::string ResolvePrecision(const std::string& precision, bool cpu, std::string* why = nullptr);
// Replaces train.precision: auto in `cfg` by what it resolves to, its source saying why (so
// config.resolved.yaml and checkpoint fingerprints hold the precision that ran).
void ResolveAutoPrecision(Config& cfg, bool cpu);

// Learning rate for (0-based) epoch: linear warm-up, then the schedule over the remaining epochs.
double LearningRate(const TrainSpec& spec, int64_t epoch);

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Parameters that require gradients, with their state-dict names.
NamedTensors TrainableParameters(torch::nn::Module& model);

class Optimizer {
 public:
  Optimizer(NamedTensors params, const TrainSpec& spec) : params_(std::move(params)), spec_(spec), lr_(spec.lr) {}
  virtual ~Optimizer() = default;
  virtual void Step() = 0;
  void ZeroGrad();
  void SetLr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  // Optimiser state as named tensors ("<param>.momentum_buffer", "<param>.exp_avg", ..., "step").
  virtual NamedTensors State() const = 0;
  // Restores State() from `st` under `prefix`; InputError naming `source` when incomplete.
  virtual void LoadState(const SafeTensors& st, const std::string& prefix, const std::string& source) = 0;

 protected:
  NamedTensors params_;
  TrainSpec spec_;
  double lr_;
};

class Sgd : public Optimizer {
 public:
  Sgd(NamedTensors params, const TrainSpec& spec);
  void Step() override;
  NamedTensors State() const override;
  void LoadState(const SafeTensors& st, const std::string& prefix, const std::string& source) override;

 private:
  std::vector<torch::Tensor> momentum_;  // undefined until the first step
};

class Adam : public Optimizer {
 public:
  Adam(NamedTensors params, const TrainSpec& spec);
  void Step() override;
  NamedTensors State() const override;
  void LoadState(const SafeTensors& st, const std::string& prefix, const std::string& source) override;

 private:
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

std::unique_ptr<Optimizer> MakeOptimizer(NamedTensors params, const TrainSpec& spec);

}  // namespace xbar
