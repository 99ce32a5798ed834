// Training-loop overhead: one LeNet-5 epoch on Fashion-MNIST through xbar::Train versus the same
// loop written directly against LibTorch (torch::nn modules, torch::optim::Adam, index_select
// batches). Target: xbar / LibTorch <= 1.05. Also the machine's sgemm rate, for context.
//
//   build/bench/train_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <chrono>

#include "xbar/core/progress.h"
#include "xbar/data/dataset.h"
#include "xbar/models/zoo.h"
#include "xbar/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

// LeNet-5 written plainly against LibTorch, the reference for the overhead ratio.
struct PlainLeNet : torch::nn::Module {
  PlainLeNet() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 6, 5).padding(2)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 16, 5)));
    fc1 = register_module("fc1", torch::nn::Linear(400, 120));
    fc2 = register_module("fc2", torch::nn::Linear(120, 84));
    fc3 = register_module("fc3", torch::nn::Linear(84, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);
    x = torch::relu(fc1->forward(x.flatten(1)));
    return fc3->forward(torch::relu(fc2->forward(x)));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

const xbar::DataBundle& Data() {
  static const xbar::DataBundle data = [] {
    xbar::DatasetSpec spec;
    spec.validation_split = 0.0;  // the whole 60k training set, no evaluation inside the epoch
    xbar::DataBundle d = xbar::LoadData(spec, 0);
    d.test = {};
    return d;
  }();
  return data;
}

double XbarEpoch(const xbar::TrainSpec& spec) {
  torch::manual_seed(0);
  auto model = xbar::CreateModel(xbar::ModelSpec{});
  const auto t0 = Clock::now();
  xbar::Train(*model, Data(), spec, xbar::TrainOptions{});
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double LibTorchEpoch(const xbar::TrainSpec& spec) {
  torch::manual_seed(0);
  auto model = std::make_shared<PlainLeNet>();
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(spec.lr));
  const auto& train = Data().train;
  const int64_t n = train.size();
  const auto t0 = Clock::now();
  model->train();
  auto order = torch::randperm(n, torch::kInt64);
  for (int64_t start = 0; start < n; start += spec.batch_size) {
    auto idx = order.slice(0, start, std::min(n, start + spec.batch_size));
    auto x = train.images.index_select(0, idx);
    auto y = train.labels.index_select(0, idx);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Alternates the two loops so drift in machine speed affects both alike.
void BM_LeNetEpochOverhead(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  xbar::Progress::SetEnabled(false);
  xbar::TrainSpec spec;
  spec.epochs = 1;
  spec.batch_size = 64;
  Data();
  XbarEpoch(spec);  // warm-up: allocator, oneDNN primitive caches
  double xbar_s = 0, torch_s = 0;
  for (auto _ : state) {
    const double a = XbarEpoch(spec);
    const double b = LibTorchEpoch(spec);
    xbar_s += a;
    torch_s += b;
    state.SetIterationTime(a);
  }
  const double iters = static_cast<double>(state.iterations());
  state.counters["xbar_s"] = xbar_s / iters;
  state.counters["libtorch_s"] = torch_s / iters;
  state.counters["ratio"] = xbar_s / torch_s;
  state.counters["images_per_s"] = static_cast<double>(Data().train.size()) * iters / xbar_s;
}
BENCHMARK(BM_LeNetEpochOverhead)->Arg(1)->Arg(2)->Iterations(5)->UseManualTime()->Unit(benchmark::kSecond);

// sgemm rate of the BLAS LibTorch uses (OpenBLAS ~160-180 GFLOP/s here; reference BLAS ~5.6).
void BM_Sgemm1024(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = torch::randn({1024, 1024}), b = torch::randn({1024, 1024});
  for (auto _ : state) benchmark::DoNotOptimize(torch::mm(a, b));
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 1024 * 1024 * 1024 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Sgemm1024)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
