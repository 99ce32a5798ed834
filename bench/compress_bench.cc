// Projection operators on a 4096×4096 weight matrix (16.8 M entries), one core.
// Target (issue 3): each projection <= 50 ms.
//
//   build/bench/compress_bench
#include <benchmark/benchmark.h>

#include "xbar/compress/projection.h"
#include "xbar/core/rng.h"

namespace {

constexpr int64_t kDim = 4096;

const std::vector<float>& Weights() {
  static const std::vector<float> w = [] {
    xbar::Rng rng(1);
    std::vector<float> v(static_cast<size_t>(kDim * kDim));
    for (auto& x : v) x = static_cast<float>(rng.Normal() * 0.02);
    return v;
  }();
  return w;
}

template <typename F>
void Run(benchmark::State& state, F&& project) {
  std::vector<float> m(Weights().size());
  for (auto _ : state) {
    state.PauseTiming();
    m = Weights();
    state.ResumeTiming();
    project(xbar::CrossbarMatrix{m.data(), kDim, kDim});
    benchmark::ClobberMemory();
  }
  state.counters["Mentries/s"] = benchmark::Counter(static_cast<double>(kDim * kDim) * static_cast<double>(state.iterations()) / 1e6,
                                                    benchmark::Counter::kIsRate);
}

void BM_Structure(benchmark::State& state) {
  xbar::LayerConstraints c;
  c.structure = static_cast<xbar::Structure>(state.range(0));
  c.sparsity = 0.9;
  c.kernel_area = 9;
  state.SetLabel(xbar::StructureName(c.structure));
  Run(state, [&](xbar::CrossbarMatrix m) { xbar::Project(m, c); });
}
BENCHMARK(BM_Structure)->DenseRange(0, 7)->Unit(benchmark::kMillisecond);

void BM_Polarize8(benchmark::State& state) {
  Run(state, [](xbar::CrossbarMatrix m) { xbar::ProjectPolarize(m, 8, 128); });
}
BENCHMARK(BM_Polarize8)->Unit(benchmark::kMillisecond);

void BM_ColumnBudget16(benchmark::State& state) {
  Run(state, [](xbar::CrossbarMatrix m) { xbar::ProjectColumnBudget(m, 16, 128); });
}
BENCHMARK(BM_ColumnBudget16)->Unit(benchmark::kMillisecond);

void BM_Quantize(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  Run(state, [&](xbar::CrossbarMatrix m) { xbar::ProjectQuantize(m, bits); });
}
BENCHMARK(BM_Quantize)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
