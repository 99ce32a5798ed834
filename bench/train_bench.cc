// Training-loop overhead: one LeNet-5 epoch on Fashion-MNIST through xbar::Train versus the same
// loop written directly against LibTorch (torch::nn modules, torch::optim::Adam, index_select
// batches). Target: xbar / LibTorch <= 1.05. Also the machine's sgemm rate, for context, and
// train.precision bf16 against fp32 on the paper-scale VGG-16 (3x32x32, batch 128).
//
//   build/bench/train_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <utility>

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

// Times `timed` and `other` alternately, once each per iteration, so drift in machine speed affects
// both alike; `timed` is the benchmark's manual time. Returns their mean seconds.
template <typename A, typename B>
std::pair<double, double> Alternate(benchmark::State& state, A&& timed, B&& other) {
  double a_s = 0, b_s = 0;
  for (auto _ : state) {
    const double a = timed();
    b_s += other();
    a_s += a;
    state.SetIterationTime(a);
  }
  const double n = static_cast<double>(state.iterations());
  return {a_s / n, b_s / n};
}

void BM_LeNetEpochOverhead(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  xbar::Progress::SetEnabled(false);
  xbar::TrainSpec spec;
  spec.epochs = 1;
  spec.batch_size = 64;
  Data();
  XbarEpoch(spec);  // warm-up: allocator, oneDNN primitive caches
  const auto [xbar_s, torch_s] = Alternate(state, [&] { return XbarEpoch(spec); }, [&] { return LibTorchEpoch(spec); });
  state.counters["xbar_s"] = xbar_s;
  state.counters["libtorch_s"] = torch_s;
  state.counters["ratio"] = xbar_s / torch_s;
  state.counters["images_per_s"] = static_cast<double>(Data().train.size()) / xbar_s;
}
BENCHMARK(BM_LeNetEpochOverhead)->Arg(1)->Arg(2)->Iterations(5)->UseManualTime()->Unit(benchmark::kSecond);

// VGG-16 (zoo, 3x32x32, batch norm) trained through xbar::Train on 1,280 random images in batches of
// 128, train.precision fp32 against bf16 alternately; counters: seconds per batch and the speed-up.
double Vgg16Batches(const xbar::TrainSpec& spec, const xbar::DataBundle& data) {
  torch::manual_seed(0);
  xbar::ModelSpec m;
  m.name = "vgg16";
  m.in_channels = 3;
  m.height = m.width_px = 32;
  auto model = xbar::CreateModel(m);
  const auto t0 = Clock::now();
  xbar::TrainOptions o;
  o.evaluate_test = false;
  xbar::Train(*model, data, spec, o);
  return std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(data.train.size() / spec.batch_size);
}

void BM_Vgg16TrainPrecision(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(1);
  xbar::DataBundle data;
  data.channels = 3;
  data.height = data.width = 32;
  data.num_classes = 10;
  data.train.images = torch::randn({1280, 3, 32, 32});
  data.train.labels = torch::randint(0, 10, {1280}, torch::kInt64);
  xbar::TrainSpec fp32;
  fp32.epochs = 1;
  fp32.batch_size = 128;
  fp32.optimizer = "sgd";
  fp32.lr = 0.01;
  xbar::TrainSpec bf16 = fp32;
  bf16.precision = "bf16";
  Vgg16Batches(bf16, data);  // warm-up: oneDNN primitive caches
  const auto [bf16_s, fp32_s] =
      Alternate(state, [&] { return Vgg16Batches(bf16, data); }, [&] { return Vgg16Batches(fp32, data); });
  state.counters["fp32_s_per_batch"] = fp32_s;
  state.counters["bf16_s_per_batch"] = bf16_s;
  state.counters["speedup"] = fp32_s / bf16_s;
}
BENCHMARK(BM_Vgg16TrainPrecision)->Arg(1)->Arg(2)->Iterations(2)->UseManualTime()->Unit(benchmark::kSecond);

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
