#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>

#include "xbar/config/config.h"
#include "xbar/core/error.h"
#include "xbar/core/fs.h"
#include "xbar/core/platform.h"
#include "xbar/data/dataset.h"
#include "xbar/models/state_dict.h"
#include "xbar/models/zoo.h"
#include "xbar/train/optimizer.h"
#include "xbar/train/trainer.h"

namespace xbar {
namespace {

// A tiny regression problem; returns parameters after `steps` updates by `step`.
template <typename StepFn>
std::vector<torch::Tensor> RunSteps(int steps, StepFn&& step, std::vector<torch::Tensor>& params) {
  torch::manual_seed(3);
  auto x = torch::randn({16, 5}), y = torch::randn({16, 2});
  for (int i = 0; i < steps; ++i) {
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    auto loss = (torch::mm(x, params[0]) + params[1] - y).pow(2).mean();
    loss.backward();
    step();
  }
  std::vector<torch::Tensor> out;
  for (auto& p : params) out.push_back(p.detach().clone());
  return out;
}

std::vector<torch::Tensor> Fresh() {
  torch::manual_seed(4);
  return {torch::randn({5, 2}).requires_grad_(), torch::randn({2}).requires_grad_()};
}

void ExpectSameAsTorchOptim(const TrainSpec& spec, torch::optim::Optimizer&& reference, std::vector<torch::Tensor>& ref_params) {
  auto mine = Fresh();
  auto opt = MakeOptimizer({{"w", mine[0]}, {"b", mine[1]}}, spec);
  auto a = RunSteps(7, [&] { opt->Step(); }, mine);
  auto b = RunSteps(7, [&] { reference.step(); }, ref_params);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-6, 1e-7)) << a[i] << b[i];
}

TEST(Optimizer, SgdMatchesTorchOptim) {
  for (bool nesterov : {false, true}) {
    TrainSpec s;
    s.optimizer = "sgd";
    s.lr = 0.05;
    s.momentum = 0.9;
    s.nesterov = nesterov;
    s.weight_decay = 1e-3;
    auto ref = Fresh();
    ExpectSameAsTorchOptim(
        s, torch::optim::SGD(ref, torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(nesterov).weight_decay(1e-3)),
        ref);
  }
  TrainSpec plain;
  plain.optimizer = "sgd";
  plain.lr = 0.1;
  plain.momentum = 0.0;
  auto ref = Fresh();
  ExpectSameAsTorchOptim(plain, torch::optim::SGD(ref, torch::optim::SGDOptions(0.1)), ref);
}

TEST(Optimizer, AdamMatchesTorchOptim) {
  TrainSpec s;
  s.optimizer = "adam";
  s.lr = 0.01;
  s.weight_decay = 1e-2;
  auto ref = Fresh();
  ExpectSameAsTorchOptim(s, torch::optim::Adam(ref, torch::optim::AdamOptions(0.01).weight_decay(1e-2)), ref);
}

TEST(Optimizer, StateRoundTripContinuesIdentically) {
  for (const std::string name : {"sgd", "adam"}) {
    TrainSpec s;
    s.optimizer = name;
    s.lr = 0.01;
    auto p1 = Fresh();
    auto o1 = MakeOptimizer({{"w", p1[0]}, {"b", p1[1]}}, s);
    RunSteps(3, [&] { o1->Step(); }, p1);
    // Snapshot parameters and optimiser state, as a checkpoint does.
    SafeTensors st;
    for (const auto& [n, t] : o1->State()) st.tensors["optim." + n] = ToRaw(t);
    auto p2 = std::vector<torch::Tensor>{p1[0].detach().clone().requires_grad_(), p1[1].detach().clone().requires_grad_()};
    auto o2 = MakeOptimizer({{"w", p2[0]}, {"b", p2[1]}}, s);
    o2->LoadState(st, "optim.", "ckpt");
    auto a = RunSteps(4, [&] { o1->Step(); }, p1);
    auto b = RunSteps(4, [&] { o2->Step(); }, p2);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << name;
  }
}

TEST(Schedule, ConstantStepCosineAndWarmup) {
  TrainSpec s;
  s.lr = 0.1;
  s.epochs = 10;
  s.schedule = "constant";
  EXPECT_DOUBLE_EQ(LearningRate(s, 9), 0.1);
  s.schedule = "step";
  s.step_epochs = 3;
  s.gamma = 0.5;
  EXPECT_DOUBLE_EQ(LearningRate(s, 2), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(s, 3), 0.05);
  EXPECT_DOUBLE_EQ(LearningRate(s, 9), 0.0125);
  s.schedule = "cosine";
  EXPECT_DOUBLE_EQ(LearningRate(s, 0), 0.1);
  EXPECT_NEAR(LearningRate(s, 5), 0.05, 1e-12);
  s.warmup_epochs = 2;
  EXPECT_NEAR(LearningRate(s, 0), 0.1 / 3, 1e-12);
  EXPECT_NEAR(LearningRate(s, 1), 0.2 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(LearningRate(s, 2), 0.1);
}

class FashionTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!FileExists(std::string(kFashionMnistPath) + "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)";
    }
    at::set_num_threads(1);
    DatasetSpec d;
    d.train_subset = 3000;
    d.test_subset = 2000;
    d.validation_split = 0.1;
    data_ = LoadData(d, 0);
    spec_.epochs = 2;
    spec_.batch_size = 32;
  }

  std::shared_ptr<Model> Lenet() {
    torch::manual_seed(0);
    ModelSpec m;
    return CreateModel(m);
  }

  DataBundle data_;
  TrainSpec spec_;
};

TEST(Schedule, AutoPrecisionIsBf16OnlyWhereItIsNative) {
  // auto: bf16 on a CPU with AVX512-BF16 (emulated elsewhere, 25x slower than fp32 on an AVX2 Zen 3,
  // docs/BENCHMARKS.md), fp32 on CPUs without it and on CUDA devices; explicit values stay.
  const std::string native = CpuHasNativeBf16() ? "bf16" : "fp32";
  std::string why;
  EXPECT_EQ(ResolvePrecision("auto", true, &why), native);
  EXPECT_NE(why.find(CpuHasNativeBf16() ? "has AVX512-BF16" : "has no AVX512-BF16"), std::string::npos) << why;
  EXPECT_EQ(ResolvePrecision("auto", false, &why), "fp32");
  EXPECT_EQ(ResolvePrecision("fp32", true), "fp32");
  EXPECT_EQ(ResolvePrecision("bf16", true), "bf16");
  // In a config: the resolved value replaces auto, and its source says why (config.resolved.yaml).
  Config cfg = Config::Parse("train:\n  precision: auto\n", "exp.yaml");
  ResolveAutoPrecision(cfg, true);
  EXPECT_EQ(cfg.Str("train.precision"), native);
  EXPECT_EQ(cfg.Where("train.precision").rfind("auto (exp.yaml:2): this CPU has", 0), 0u)
      << cfg.Where("train.precision");
  Config fixed = Config::Parse("train:\n  precision: bf16\n", "exp.yaml");
  ResolveAutoPrecision(fixed, false);
  EXPECT_EQ(fixed.Str("train.precision"), "bf16");
  EXPECT_EQ(fixed.Where("train.precision"), "exp.yaml:2");
}

TEST_F(FashionTraining, ShortSeededRunClearlyBeatsChance) {
  auto m = Lenet();
  EvalResult before = Evaluate(*m, data_.test, 500, torch::kCPU);
  TrainOptions o;
  TrainResult r = Train(*m, data_, spec_, o);
  ASSERT_EQ(r.history.size(), 2u);
  EXPECT_GT(r.test.accuracy, 0.65) << "chance is 0.10";
  EXPECT_GT(r.test.accuracy, before.accuracy + 0.4);
  EXPECT_LT(r.history[1].train_loss, r.history[0].train_loss);
  EXPECT_GT(r.history[1].val_accuracy, 0.6);
  EXPECT_EQ(r.test.count, 2000);
  // Evaluate agrees with a direct computation.
  torch::NoGradGuard g;
  m->eval();
  auto pred = m->forward(data_.test.images).argmax(1);
  EXPECT_NEAR(pred.eq(data_.test.labels).to(torch::kFloat64).mean().item<double>(), r.test.accuracy, 1e-12);
}

TEST_F(FashionTraining, SameSeedSameWeights) {
  auto a = Lenet(), b = Lenet();
  spec_.epochs = 1;
  Train(*a, data_, spec_, {});
  Train(*b, data_, spec_, {});
  auto sa = StateDict(*a), sb = StateDict(*b);
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
}

TEST_F(FashionTraining, Bf16AutocastLearnsLikeFp32OnFp32Weights) {
  auto fp32 = Lenet(), bf16 = Lenet(), again = Lenet();
  TrainResult r32 = Train(*fp32, data_, spec_, {});
  TrainSpec half = spec_;
  half.precision = "bf16";
  TrainResult r16 = Train(*bf16, data_, half, {});
  EXPECT_FALSE(at::autocast::is_cpu_enabled()) << "autocast is switched off again after training";
  EXPECT_GT(r16.test.accuracy, 0.65) << "chance is 0.10";
  EXPECT_NEAR(r16.test.accuracy, r32.test.accuracy, 0.05);
  auto s32 = StateDict(*fp32), s16 = StateDict(*bf16);
  bool any_differs = false;
  for (size_t i = 0; i < s16.size(); ++i) {
    EXPECT_EQ(s16[i].second.scalar_type(), s32[i].second.scalar_type()) << s16[i].first << ": master weights stay fp32";
    if (s16[i].second.is_floating_point() && !torch::equal(s16[i].second, s32[i].second)) any_differs = true;
  }
  EXPECT_TRUE(any_differs) << "bfloat16 products must change the weights' trajectory, or autocast was not on";
  // Deterministic at a fixed thread count, like fp32.
  Train(*again, data_, half, {});
  auto sa = StateDict(*again);
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i].second, s16[i].second)) << sa[i].first;

  TrainSpec bad = spec_;
  bad.precision = "fp16";
  auto m = Lenet();
  EXPECT_THROW(Train(*m, data_, bad, {}), ConfigError);
}

TEST_F(FashionTraining, ResumeContinuesBitForBitAndRefusesAnotherConfig) {
  spec_.epochs = 2;
  const std::string dir_a = ::testing::TempDir() + "/resume_a", dir_b = ::testing::TempDir() + "/resume_b";
  MakeDirs(dir_a);
  MakeDirs(dir_b);
  TrainOptions o;
  o.fingerprint = {{"train.lr", "0.001"}};
  // Uninterrupted: two epochs.
  auto full = Lenet();
  o.run_dir = dir_a;
  Train(*full, data_, spec_, o);
  // A 1-epoch run leaves exactly the checkpoint the 2-epoch run writes after its first epoch (the
  // cosine lr of epoch 0 is the base lr either way): what a run killed during epoch 2 leaves.
  TrainSpec one = spec_;
  one.epochs = 1;
  auto part = Lenet();
  o.run_dir = dir_b;
  Train(*part, data_, one, o);
  SafeTensors ck = ReadSafeTensors(dir_b + "/" + kCheckpointFile);
  EXPECT_EQ(ck.metadata.at("epochs_done"), "1");
  auto resumed = Lenet();
  o.resume = true;
  TrainResult r = Train(*resumed, data_, spec_, o);
  EXPECT_EQ(r.resumed_from_epoch, 1);
  ASSERT_EQ(r.history.size(), 2u);
  auto sf = StateDict(*full), sr = StateDict(*resumed);
  for (size_t i = 0; i < sf.size(); ++i) EXPECT_TRUE(torch::equal(sf[i].second, sr[i].second)) << sf[i].first;

  o.fingerprint = {{"train.lr", "0.01"}};
  auto other = Lenet();
  try {
    Train(*other, data_, spec_, o);
    FAIL() << "a checkpoint from another configuration must be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint was made with train.lr = 0.001, this run has 0.01"),
              std::string::npos)
        << e.what();
  }
}

TEST(Platform, LibTorchRunsOnAFastBlas) {
  // scripts/install-deps.sh selects OpenBLAS; LibTorch loads libblas.so.3 with this binary.
  const std::string blas = LoadedBlasLibrary();
  EXPECT_NE(blas, "") << "libblas.so.3 should be loaded by LibTorch";
  EXPECT_FALSE(SlowBlasWarning().has_value()) << blas;
}

TEST_F(FashionTraining, InterruptStopsWithResumableError) {
  auto m = Lenet();
  InstallInterruptHandlers();  // SIGINT now sets a flag instead of killing the process
  std::raise(SIGINT);
  EXPECT_THROW(Train(*m, data_, spec_, {}), InterruptedError);
  ClearInterruptForTesting();
}

}  // namespace
}  // namespace xbar

namespace xbar {
namespace {

// RecalibrateBatchNorm: running statistics = the average over the batches of each batch's mean and
// unbiased variance of the layer's input; the mode, momentum and other layers untouched.
TEST(BatchNorm, RecalibrationEstimatesTheStatisticsOfTheImages) {
  torch::manual_seed(0);
  auto model = CreateModel(ModelSpec{"vgg8", 0.25, true, 1, 28, 28, 10});
  auto& features = *model->named_children()["features"]->as<torch::nn::SequentialImpl>();
  auto* conv = features.ptr(0)->as<torch::nn::Conv2dImpl>();
  auto* bn = features.ptr(1)->as<torch::nn::BatchNorm2dImpl>();
  ASSERT_NE(conv, nullptr);
  ASSERT_NE(bn, nullptr);
  int64_t bns = 0;
  for (const auto& m : model->modules(false)) bns += m->as<torch::nn::BatchNorm2dImpl>() != nullptr ? 1 : 0;
  const Dataset data{torch::rand({12, 1, 28, 28}), torch::zeros({12}, torch::kInt64)};
  {
    torch::NoGradGuard g;
    for (const auto& m : model->modules(false)) {
      if (auto* b = m->as<torch::nn::BatchNorm2dImpl>()) {  // stale statistics
        b->running_mean.fill_(100.0);
        b->running_var.fill_(1e-4);
      }
    }
  }
  model->eval();
  EXPECT_EQ(RecalibrateBatchNorm(*model, data, 0, 4, torch::kCPU), 0) << "0 images: off";
  EXPECT_EQ(bn->running_mean[0].item<float>(), 100.0f);

  // 12 images asked for 10: batches of 4, 4 and 2.
  int64_t used = -1;
  EXPECT_EQ(RecalibrateBatchNorm(*model, data, 10, 4, torch::kCPU, &used), bns);
  EXPECT_EQ(used, 10);
  EXPECT_FALSE(model->is_training());
  EXPECT_FALSE(bn->is_training());
  ASSERT_TRUE(bn->options.momentum().has_value());
  EXPECT_DOUBLE_EQ(*bn->options.momentum(), 0.1);
  torch::Tensor mean = torch::zeros({bn->options.num_features()}, torch::kFloat64);
  torch::Tensor var = torch::zeros_like(mean);
  for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 4}, {4, 4}, {8, 2}}) {
    torch::NoGradGuard g;
    const torch::Tensor y = conv->forward(data.images.narrow(0, start, n)).to(torch::kFloat64);
    mean += y.mean({0, 2, 3}) / 3;
    var += y.var({0, 2, 3}, /*unbiased=*/true) / 3;
  }
  EXPECT_TRUE(torch::allclose(bn->running_mean.to(torch::kFloat64), mean, 1e-5, 1e-6))
      << bn->running_mean.slice(0, 0, 4) << mean.slice(0, 0, 4);
  EXPECT_TRUE(torch::allclose(bn->running_var.to(torch::kFloat64), var, 1e-4, 1e-6))
      << bn->running_var.slice(0, 0, 4) << var.slice(0, 0, 4);
  // 9 images in batches of 4: the last batch, one image, is left out (a linear layer's batch norm
  // in training mode throws on a 1 x C batch), so 9 gives what 8 gives.
  auto other = CreateModel(ModelSpec{"vgg8", 0.25, true, 1, 28, 28, 10});
  EXPECT_EQ(RecalibrateBatchNorm(*other, data, 9, 4, torch::kCPU, &used), bns);
  EXPECT_EQ(used, 8) << "the statistics come from 8 of the 9 images";
  const torch::Tensor nine = other->named_buffers()["features.1.running_var"].clone();
  EXPECT_EQ(RecalibrateBatchNorm(*other, data, 8, 4, torch::kCPU), bns);
  EXPECT_TRUE(torch::equal(nine, other->named_buffers()["features.1.running_var"]));
  EXPECT_EQ(RecalibrateBatchNorm(*other, data, 1, 4, torch::kCPU, &used), 0) << "one image: nothing to estimate";
  EXPECT_EQ(used, 0);
  // A model without batch norm: nothing to do.
  auto lenet = CreateModel(ModelSpec{});
  EXPECT_EQ(RecalibrateBatchNorm(*lenet, data, 10, 4, torch::kCPU), 0);
}

}  // namespace
}  // namespace xbar
