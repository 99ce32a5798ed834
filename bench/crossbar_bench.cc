// The crossbar engine on real layer shapes, next to this machine's sgemm rate measured in the
// same run (issue 4, deliverable 8), and whole-network simulation speed.
//
//   build/bench/crossbar_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <chrono>

#include "xbar/core/progress.h"
#include "xbar/crossbar/layer.h"
#include "xbar/crossbar/simulator.h"
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

xbar::MappingSpec Map(int adc_bits) {
  xbar::MappingSpec m;  // 128x128, two-column, 8-bit weights, 2-bit cells, 8-bit inputs, 1-bit DAC
  m.adc_bits = adc_bits;
  return m;
}

// Bit-plane MACs of one Forward: planes x positions x cells (rows x physical columns) per crossbar.
double BitPlaneMacs(const xbar::CrossbarLayer& l, int64_t positions) {
  return 8.0 * static_cast<double>(positions) * static_cast<double>(l.cells());
}

void BM_Engine(benchmark::State& state) {
  at::set_num_threads(1);
  const Shape& s = kShapes[state.range(0)];
  const int64_t images = state.range(1);
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({s.N, s.K});
  xbar::CrossbarLayer layer("l", w, 0.0, Map(6), xbar::DeviceSpec{});
  torch::Tensor x = torch::floor(torch::rand({s.M * images, s.K}) * 256);
  for (auto _ : state) benchmark::DoNotOptimize(layer.Forward(x, false, 0, nullptr));
  const double macs = BitPlaneMacs(layer, s.M * images) * static_cast<double>(state.iterations());
  state.counters["bitplane_GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(s.name);
}
BENCHMARK(BM_Engine)->ArgsProduct({{0, 1, 2, 3, 4}, {8}})->Unit(benchmark::kMillisecond);

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

}  // namespace

BENCHMARK_MAIN();
