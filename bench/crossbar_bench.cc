// The crossbar engine on real layer shapes, next to this machine's sgemm rate measured in the
// same run (issue 4, deliverable 8), whole-network simulation speed, and mapping a whole network
// for the hardware estimate (issue 5).
//
//   build/bench/crossbar_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>
#include <thread>

#include "xbar/core/progress.h"
#include "xbar/crossbar/ir_drop.h"
#include "xbar/crossbar/layer.h"
#include "xbar/crossbar/plan.h"
#include "xbar/crossbar/simulator.h"
#include "xbar/crossbar/workload.h"
#include "xbar/models/zoo.h"

namespace {

// Real GEMM shapes: {name, K (in*kh*kw), N (out), M (output positions per image)}.
struct Shape {
  const char* name;
  int64_t K, N, M;
};
const Shape kShapes[] = {
    {"lenet5.conv2", 150, 16, 100},          {"lenet5.fc1", 400, 120, 1},
    {"vgg8.features.3 (x1, 32x32)", 1152, 128, 1024}, {"vgg8.features.17 (x1, 32x32)", 4608, 512, 64},
    {"resnet20.layer3 conv", 576, 64, 64},
};

xbar::MappingSpec Map(int adc_bits, int cell_bits = 2) {
  xbar::MappingSpec m;  // 128x128, two-column, 8-bit weights, 8-bit inputs, 1-bit DAC
  m.adc_bits = adc_bits;
  m.cell_bits = cell_bits;
  return m;
}

// Bit-plane MACs of one Forward: planes x positions x cells (rows x physical columns) per crossbar.
double BitPlaneMacs(const xbar::CrossbarLayer& l, int64_t positions) {
  return 8.0 * static_cast<double>(positions) * static_cast<double>(l.cells());
}

const char* KernelName(int k) { return k == 0 ? "float" : k == 1 ? "packed" : "auto"; }

// Args: shape, sum kernel (0 float GEMM, 1 bit-packed AND+popcount, 2 automatic), cell bits.
void BM_Engine(benchmark::State& state) {
  at::set_num_threads(1);
  const Shape& s = kShapes[state.range(0)];
  const int64_t images = 8;
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({s.N, s.K});
  xbar::CrossbarLayer layer("l", w, 0.0, Map(6, static_cast<int>(state.range(2))), xbar::DeviceSpec{});
  const int k = static_cast<int>(state.range(1));
  layer.SetSumKernel(k == 0 ? xbar::SumKernel::kFloat : k == 1 ? xbar::SumKernel::kPacked : xbar::SumKernel::kAuto);
  torch::Tensor x = torch::floor(torch::rand({s.M * images, s.K}) * 256);
  layer.Forward(x.narrow(0, 0, std::min<int64_t>(256, x.size(0))), false, 0, nullptr);  // kAuto decides here
  for (auto _ : state) benchmark::DoNotOptimize(layer.Forward(x, false, 0, nullptr));
  const double macs = BitPlaneMacs(layer, s.M * images) * static_cast<double>(state.iterations());
  state.counters["bitplane_GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
  state.counters["packed_share"] = static_cast<double>(layer.packed_tiles()) / static_cast<double>(layer.tiles());
  state.SetLabel(std::string(s.name) + ", " + KernelName(k) + ", " + std::to_string(state.range(2)) + "-bit cells");
}
BENCHMARK(BM_Engine)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1, 2}, {1, 2}})->Unit(benchmark::kMillisecond);

// The machine's single-core fp32 GEMM rate, as MACs.
void BM_SgemmPeak(benchmark::State& state) {
  at::set_num_threads(1);
  auto a = torch::randn({1024, 1024}), b = torch::randn({1024, 1024});
  for (auto _ : state) benchmark::DoNotOptimize(torch::mm(a, b));
  state.counters["GMAC/s"] = benchmark::Counter(1024.0 * 1024 * 1024 * static_cast<double>(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SgemmPeak)->Unit(benchmark::kMillisecond);

// Whole LeNet-5 on 1000 random "images": float LibTorch inference vs the simulator's lossless fast
// path (quantisation + exact integer GEMMs) vs the full engine with a 6-bit ADC.
void BM_LeNetInference(benchmark::State& state) {
  at::set_num_threads(1);
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(0);
  auto model = xbar::CreateModel(xbar::ModelSpec{});
  xbar::Dataset data{torch::randn({1000, 1, 28, 28}), torch::zeros({1000}, torch::kInt64)};
  const int mode = static_cast<int>(state.range(0));
  xbar::MappingSpec map = Map(mode == 2 ? 6 : 0);
  xbar::NetworkSimulator sim(*model, map, xbar::DeviceSpec{});
  sim.Calibrate(data, 200, torch::kCPU);
  sim.Program(xbar::FaultSpec{}, 0);
  sim.SetCollectStats(false);
  const xbar::SimMode m = mode == 0 ? xbar::SimMode::kFloat : xbar::SimMode::kCrossbar;
  for (auto _ : state) benchmark::DoNotOptimize(sim.Evaluate(data, m, 200, torch::kCPU));
  state.counters["images/s"] = benchmark::Counter(1000.0 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(mode == 0 ? "float" : mode == 1 ? "crossbar, lossless fast path" : "crossbar engine, 6-bit ADC");
}
BENCHMARK(BM_LeNetInference)->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

// Issue 11, item 5: one Monte Carlo fault sample (program a random stuck-at map at 1e-3, then the
// test set) against one float inference of the same images, on both cores. Args: model (0 LeNet-5
// on 10,000 1x28x28 images, 1 VGG-8 x0.25 on 2,000), mode (0 float inference, 1 fault sample
// folded into integer weights (lossless ADC), 2 the same sample on the engine (statistics on, so
// it cannot fold), 3 a sample with a 6-bit ADC (the engine), 4 a folded sample placed on its
// stuck cells first (faults.placement: on; the input moments are measured once, at the first)).
void BM_FaultSample(benchmark::State& state) {
  at::set_num_threads(2);
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(0);
  xbar::ModelSpec spec;
  int64_t n = 10000;
  if (state.range(0) == 1) {
    spec.name = "vgg8";
    spec.width = 0.25;
    n = 2000;
  }
  auto model = xbar::CreateModel(spec);
  xbar::Dataset data{torch::randn({n, 1, 28, 28}), torch::zeros({n}, torch::kInt64)};
  const int mode = static_cast<int>(state.range(1));
  xbar::MappingSpec map = Map(mode == 3 ? 6 : 0);
  xbar::NetworkSimulator sim(*model, map, xbar::DeviceSpec{});
  sim.SetQuiet(true);
  sim.Calibrate(data, 200, torch::kCPU);
  sim.SetCollectStats(mode == 2);
  xbar::FaultSpec f;
  uint64_t sample = 0;
  for (auto _ : state) {
    if (mode == 0) {
      benchmark::DoNotOptimize(sim.Evaluate(data, xbar::SimMode::kFloat, 200, torch::kCPU));
      continue;
    }
    f.sa0_rate = 1e-3 / 6.2;
    f.sa1_rate = 1e-3 * 5.2 / 6.2;
    f.seed = ++sample;
    f.placement = mode == 4;
    sim.Program(f, f.seed);
    benchmark::DoNotOptimize(sim.Evaluate(data, xbar::SimMode::kCrossbar, 200, torch::kCPU));
  }
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  const char* what[] = {"float inference", "fault sample, folded", "fault sample, engine", "fault sample, 6-bit ADC",
                        "fault sample, placed + folded"};
  state.SetLabel(std::string(state.range(0) == 0 ? "lenet5, 10000 images: " : "vgg8 x0.25, 2000 images: ") + what[mode]);
}
BENCHMARK(BM_FaultSample)->ArgsProduct({{0, 1}, {0, 1, 2, 3, 4}})->Unit(benchmark::kMillisecond);

// Issue 4: seconds per image of VGG-8 on 3x32x32 inputs through the full engine: 8-bit weights and
// activations, 1-bit cells, 128x128 crossbars (two-column), 1-bit DAC, 5-bit ADC; batch 1, 8, 200.
// All cores (the engine and LibTorch both use at::parallel_for).
void BM_Vgg8SecondsPerImage(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(0);
  xbar::ModelSpec spec;
  spec.name = "vgg8";
  spec.in_channels = 3;
  spec.height = spec.width_px = 32;
  auto model = xbar::CreateModel(spec);
  const int64_t batch = state.range(0);
  xbar::Dataset data{torch::rand({batch, 3, 32, 32}), torch::zeros({batch}, torch::kInt64)};
  xbar::MappingSpec map = Map(5, 1);
  xbar::NetworkSimulator sim(*model, map, xbar::DeviceSpec{});
  sim.Calibrate(data, batch, torch::kCPU);
  sim.Program(xbar::FaultSpec{}, 0);
  sim.SetCollectStats(false);
  // One image first: each crossbar picks its sum kernel on its first MVM (a one-off per programmed
  // network, as in a Monte Carlo campaign that evaluates thousands of images).
  xbar::Dataset one{data.images.narrow(0, 0, 1), data.labels.narrow(0, 0, 1)};
  sim.Evaluate(one, xbar::SimMode::kCrossbar, 1, torch::kCPU);
  for (auto _ : state) benchmark::DoNotOptimize(sim.Evaluate(data, xbar::SimMode::kCrossbar, batch, torch::kCPU));
  state.counters["s/image"] = benchmark::Counter(static_cast<double>(batch) * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Vgg8SecondsPerImage)->Arg(1)->Arg(8)->Arg(200)->Iterations(1)->Unit(benchmark::kSecond);

// Issue 5: mapping a ResNet-18 (11.2 M weights, 1x28x28 inputs) onto ISAAC's crossbars (128x128,
// offset scheme, 16-bit weights on 2-bit cells), one thread: arg 0 counts with the planner that
// `xbar estimate` uses, arg 1 builds every CrossbarLayer (what the simulator does).
void BM_MapResNet18(benchmark::State& state) {
  at::set_num_threads(1);
  torch::manual_seed(0);
  xbar::ModelSpec spec;
  spec.name = "resnet18";
  auto model = xbar::CreateModel(spec);
  xbar::MappingSpec map;
  map.scheme = &xbar::FindScheme("offset", "bench");
  map.weight_bits = map.input_bits = 16;
  int64_t crossbars = 0;
  for (auto _ : state) {
    crossbars = 0;
    for (const xbar::LayerInfo& l : model->layers()) {
      const torch::Tensor w2d = model->LayerWeight(l.name).detach().reshape({l.out_channels, -1});
      const double scale = xbar::WeightScale(w2d, map.weight_bits, 0.0);
      if (state.range(0) == 0) {
        crossbars += xbar::PlanLayer(l.name, w2d, scale, map).crossbars;
      } else {
        crossbars += xbar::CrossbarLayer(l.name, w2d, scale, map, xbar::DeviceSpec{}).crossbars();
      }
    }
  }
  state.counters["crossbars"] = static_cast<double>(crossbars);
  state.SetLabel(state.range(0) == 0 ? "planner" : "CrossbarLayer");
}
BENCHMARK(BM_MapResNet18)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// Issue 10, deliverable 6: the zero-skipping work of a ResNet-18 (1x28x28) on the forms hardware
// description (polarized, fragments of 8 rows, 8-bit weights on 2-bit cells, 16-bit inputs), all
// threads: input ranges calibrated on 400 images, then the needed input cycles of every fragment
// counted from the quantised activations of 200 images (workload.h). Weights are made
// non-negative so every fragment is single-signed. Images are random (the counts' cost does not
// depend on their content).
void BM_ZeroSkipResNet18(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  torch::manual_seed(0);
  xbar::ModelSpec spec;
  spec.name = "resnet18";
  auto model = xbar::CreateModel(spec);
  {
    torch::NoGradGuard ng;
    for (const xbar::LayerInfo& l : model->layers()) model->LayerWeight(l.name).abs_();
  }
  xbar::MappingSpec map;
  map.scheme = &xbar::FindScheme("polarized", "bench");
  map.input_bits = 16;
  const torch::Tensor train = torch::randn({400, 1, 28, 28});
  const torch::Tensor sample = torch::randn({200, 1, 28, 28});
  double share = 0;
  const auto fixed = xbar::CalibrateInputs(*model, train, torch::kCPU, map.input_bits);
  for (auto _ : state) {
    // range(0): threads; range(1): 0 = everything, 1 = the calibration only, 2 = the counting only.
    const auto inputs = state.range(1) == 2 ? fixed : xbar::CalibrateInputs(*model, train, torch::kCPU, map.input_bits);
    if (state.range(1) == 1) continue;
    const auto work = xbar::NetworkWork(*model, map, {}, inputs, &sample, torch::kCPU);
    share = work[5].cycle_share;
  }
  state.counters["cycle_share_layer5"] = share;
}
BENCHMARK(BM_ZeroSkipResNet18)->Args({2, 0})->Args({2, 1})->Args({2, 2})->Args({1, 2})->Iterations(2)->Unit(benchmark::kSecond);


// IR drop (issue 10, item 4): effective conductances of one array, fast first-order model vs the
// exact banded nodal solve; arg 0 = array side, arg 1 = 0 fast / 1 exact. r G_max = 1e-4.
void BM_IrDrop(benchmark::State& state) {
  const int64_t n = state.range(0);
  const bool exact = state.range(1) == 1;
  torch::manual_seed(0);
  torch::Tensor g = (0.1 + 0.3 * torch::randint(0, 4, {n, n}, torch::kFloat64)) * 1e-4;
  for (auto _ : state) {
    torch::Tensor e = xbar::IrDropEffective(g, 1.0, exact ? xbar::IrDropModel::kExact : xbar::IrDropModel::kFast);
    benchmark::DoNotOptimize(e.data_ptr<double>());
  }
  state.SetLabel(exact ? "exact" : "fast");
}
BENCHMARK(BM_IrDrop)->Args({32, 0})->Args({32, 1})->Args({128, 0})->Args({128, 1})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
