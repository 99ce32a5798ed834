// Projection operators on a 4096×4096 weight matrix (16.8 M entries), one core.
// Target (issue 3): each projection <= 50 ms.
//
//   build/bench/compress_bench
#include <benchmark/benchmark.h>

#include <chrono>

#include "xbar/compress/compress.h"
#include "xbar/compress/projection.h"
#include "xbar/core/progress.h"
#include "xbar/core/rng.h"
#include "xbar/models/zoo.h"
#include "xbar/train/trainer.h"

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

// One ADMM epoch (W-step with the penalty gradients, then the Z/U-step projecting every layer)
// against one plain training epoch of the same LeNet-5 on the 60,000 Fashion-MNIST images.
// Target (issue 3): ratio <= 1.15. Alternating pairs, after a warm-up epoch.
void BM_AdmmEpochOverhead(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  xbar::Progress::SetEnabled(false);
  xbar::DatasetSpec ds;
  ds.validation_split = 0.0;
  xbar::DataBundle data = xbar::LoadData(ds, 0);
  data.test = {};  // no evaluation inside the timed region
  xbar::Config cfg = xbar::Config::Parse(
      "compress:\n  sparsity: 0.9\n  quantize_bits: 4\n  admm_rounds: 1\n  epochs_per_round: 1\n"
      "  retrain_epochs: 0\n  remove_unused_paths: false\n",
      "bench");
  auto plain = [&] {
    torch::manual_seed(0);
    auto m = xbar::CreateModel(xbar::ModelSpec{});
    xbar::TrainSpec ts = xbar::TrainSpec::FromConfig(cfg);
    ts.epochs = 1;
    const auto t0 = std::chrono::steady_clock::now();
    xbar::TrainOptions o;
    o.evaluate_test = false;
    xbar::Train(*m, data, ts, o);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  auto admm = [&] {
    torch::manual_seed(0);
    auto m = xbar::CreateModel(xbar::ModelSpec{});
    xbar::CompressSpec spec = xbar::CompressSpec::FromConfig(cfg, *m);
    const auto t0 = std::chrono::steady_clock::now();
    xbar::Compress(*m, data, spec, xbar::CompressOptions{});
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  plain();
  double a_s = 0, p_s = 0;
  for (auto _ : state) {
    const double a = admm(), p = plain();
    a_s += a;
    p_s += p;
    state.SetIterationTime(a);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["admm_s"] = a_s / n;
  state.counters["plain_s"] = p_s / n;
  state.counters["ratio"] = a_s / p_s;
}
BENCHMARK(BM_AdmmEpochOverhead)->Arg(1)->Arg(2)->Iterations(3)->UseManualTime()->Unit(benchmark::kSecond);

}  // namespace

BENCHMARK_MAIN();
