#include "xbar/train/optimizer.h"

#include <cmath>

#include "xbar/core/error.h"
#include "xbar/core/platform.h"
#include "xbar/models/state_dict.h"

namespace xbar {

TrainSpec TrainSpec::FromConfig(const Config& cfg) {
  TrainSpec s;
  s.epochs = cfg.Int("train.epochs");
  s.batch_size = cfg.Int("train.batch_size");
  s.optimizer = cfg.Str("train.optimizer");
  s.lr = cfg.Float("train.lr");
  s.momentum = cfg.Float("train.momentum");
  s.nesterov = cfg.Bool("train.nesterov");
  s.weight_decay = cfg.Float("train.weight_decay");
  s.schedule = cfg.Str("train.schedule");
  s.step_epochs = cfg.Int("train.step_epochs");
  s.gamma = cfg.Float("train.gamma");
  s.warmup_epochs = cfg.Int("train.warmup_epochs");
  s.eval_batch_size = cfg.Int("train.eval_batch_size");
  s.log_interval_s = cfg.Float("train.log_interval");
  s.precision = cfg.Str("train.precision");
  if (s.warmup_epochs >= s.epochs) {
    throw ConfigError(StrCat(cfg.Where("train.warmup_epochs"), ": train.warmup_epochs: expected fewer than "
                             "train.epochs (", s.epochs, "), got ", s.warmup_epochs));
  }
  if (s.nesterov && (s.optimizer != "sgd" || s.momentum == 0.0)) {
    throw ConfigError(StrCat(cfg.Where("train.nesterov"), ": train.nesterov: needs train.optimizer sgd with "
                             "train.momentum > 0"));
  }
  return s;
}

std::string ResolvePrecision(const std::string& precision, bool cpu, std::string* why) {
  if (precision != "auto") return precision;
  const bool bf16 = cpu && CpuHasNativeBf16();
  if (why != nullptr) {
    *why = bf16  ? "this CPU has AVX512-BF16"
           : cpu ? "this CPU has no AVX512-BF16 (bfloat16 would be emulated)"
                 : "fp32 on CUDA devices";
  }
  return bf16 ? "bf16" : "fp32";
}

void ResolveAutoPrecision(Config& cfg, bool cpu) {
  if (cfg.Str("train.precision") != "auto") return;
  std::string why;
  const std::string p = ResolvePrecision("auto", cpu, &why);
  cfg.Set("train.precision", p, StrCat("auto (", cfg.Where("train.precision"), "): ", why));
}

double LearningRate(const TrainSpec& s, int64_t epoch) {
  if (epoch < s.warmup_epochs) return s.lr * static_cast<double>(epoch + 1) / static_cast<double>(s.warmup_epochs + 1);
  const int64_t e = epoch - s.warmup_epochs;
  const int64_t span = s.epochs - s.warmup_epochs;
  if (s.schedule == "step") return s.lr * std::pow(s.gamma, static_cast<double>(e / s.step_epochs));
  if (s.schedule == "cosine") return s.lr * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(e) / static_cast<double>(span)));
  return s.lr;
}

NamedTensors TrainableParameters(torch::nn::Module& model) {
  NamedTensors out;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  }
  return out;
}

void Optimizer::ZeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

namespace {
const RawTensor& Need(const SafeTensors& st, const std::string& key, const std::string& source) {
  auto it = st.tensors.find(key);
  if (it == st.tensors.end()) throw InputError(StrCat(source, ": checkpoint lacks optimiser state '", key, "'"));
  return it->second;
}
}  // namespace

Sgd::Sgd(NamedTensors params, const TrainSpec& spec) : Optimizer(std::move(params), spec) {
  momentum_.resize(params_.size());
}

void Sgd::Step() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].second;
    if (!p.grad().defined()) continue;
    torch::Tensor d = p.grad();
    if (spec_.weight_decay != 0.0) d = d.add(p, spec_.weight_decay);
    if (spec_.momentum != 0.0) {
      torch::Tensor& buf = momentum_[i];
      if (!buf.defined()) {
        buf = d.clone();
      } else {
        buf.mul_(spec_.momentum).add_(d);
      }
      d = spec_.nesterov ? d.add(buf, spec_.momentum) : buf;
    }
    p.add_(d, -lr_);
  }
}

NamedTensors Sgd::State() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (momentum_[i].defined()) out.emplace_back(params_[i].first + ".momentum_buffer", momentum_[i]);
  }
  return out;
}

void Sgd::LoadState(const SafeTensors& st, const std::string& prefix, const std::string& source) {
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = st.tensors.find(prefix + params_[i].first + ".momentum_buffer");
    momentum_[i] = it == st.tensors.end() ? torch::Tensor() : FromRaw(it->second).to(params_[i].second.device());
  }
}

Adam::Adam(NamedTensors params, const TrainSpec& spec) : Optimizer(std::move(params), spec) {
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(torch::zeros_like(p));
    exp_avg_sq_.push_back(torch::zeros_like(p));
  }
}

void Adam::Step() {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = spec_.adam_beta1, b2 = spec_.adam_beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(step_)));
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].second;
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.grad();
    if (spec_.weight_decay != 0.0) g = g.add(p, spec_.weight_decay);
    exp_avg_[i].mul_(b1).add_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    torch::Tensor denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(spec_.adam_eps);
    p.addcdiv_(exp_avg_[i], denom, -lr_ / bias1);
  }
}

NamedTensors Adam::State() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].first + ".exp_avg", exp_avg_[i]);
    out.emplace_back(params_[i].first + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  out.emplace_back("step", torch::tensor(step_, torch::kInt64));
  return out;
}

void Adam::LoadState(const SafeTensors& st, const std::string& prefix, const std::string& source) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    const auto& dev = params_[i].second.device();
    exp_avg_[i] = FromRaw(Need(st, prefix + name + ".exp_avg", source)).to(dev);
    exp_avg_sq_[i] = FromRaw(Need(st, prefix + name + ".exp_avg_sq", source)).to(dev);
    XBAR_CHECK(exp_avg_[i].sizes() == params_[i].second.sizes(), "optimiser state shape mismatch for ", name);
  }
  step_ = FromRaw(Need(st, prefix + "step", source)).item<int64_t>();
}

std::unique_ptr<Optimizer> MakeOptimizer(NamedTensors params, const TrainSpec& spec) {
  if (spec.optimizer == "sgd") return std::make_unique<Sgd>(std::move(params), spec);
  if (spec.optimizer == "adam") return std::make_unique<Adam>(std::move(params), spec);
  throw ConfigError(StrCat("train.optimizer: unknown optimiser '", spec.optimizer, "'; expected one of sgd, adam"));
}

}  // namespace xbar
