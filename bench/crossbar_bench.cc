// The crossbar engine on real layer shapes, next to this machine's sgemm rate measured in the
// same run (issue 4, deliverable 8) and a roofline (issue 15): the machine's AND + popcount rate
// on bit-packed planes and its vectorised ADC-loop rate, measured in the same run, and the time
// they imply for each shape's work; whole-network simulation speed; mapping a whole network for
// the hardware estimate (issue 5).
//
//   build/bench/crossbar_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#define XBAR_BENCH_AVX512 1
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the undefined upper lanes inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#else
#define XBAR_BENCH_AVX512 0
#endif

#include "xbar/core/platform.h"
#include "xbar/core/progress.h"
#include "xbar/crossbar/ir_drop.h"
#include "xbar/crossbar/kernels.h"
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

// ---- the roofline --------------------------------------------------------------------------------
// The two loops the packed engine is made of, at their best: operands in L1 and accumulators in
// registers, nothing else. (1) AND + popcount: one 128-row crossbar's 128 columns of cell bits (2
// words each) against a stream of packed input rows, accumulated per column. (2) The ADC loop: 128
// column sums per row converted (scale, clip to the code range, round to nearest) and shifted and
// added into int32 accumulators by the row's plane. Rates in word operations and conversions per
// second, one core.
constexpr int kRoofCols = 128, kRoofWords = 2, kRoofRows = 64;

double PopcountPass(const std::vector<uint64_t>& cols, const std::vector<uint64_t>& rows, int reps) {
#if XBAR_BENCH_AVX512
  __m512i acc[kRoofCols / 8];
  for (auto& a : acc) a = _mm512_setzero_si512();
  for (int rep = 0; rep < reps; ++rep) {
    for (int r = 0; r < kRoofRows; ++r) {
      for (int w = 0; w < kRoofWords; ++w) {
        const __m512i x = _mm512_set1_epi64(static_cast<long long>(rows[static_cast<size_t>(r * kRoofWords + w)]));
        const uint64_t* c = cols.data() + w * kRoofCols;
        for (int j = 0; j < kRoofCols / 8; ++j) {
          acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_and_si512(x, _mm512_loadu_si512(c + 8 * j))));
        }
      }
    }
  }
  __m512i total = _mm512_setzero_si512();
  for (auto& a : acc) total = _mm512_add_epi64(total, a);
  return static_cast<double>(_mm512_reduce_add_epi64(total));
#else
  std::vector<int64_t> acc(kRoofCols, 0);
  for (int rep = 0; rep < reps; ++rep) {
    for (int r = 0; r < kRoofRows; ++r) {
      for (int w = 0; w < kRoofWords; ++w) {
        const uint64_t x = rows[static_cast<size_t>(r * kRoofWords + w)];
        const uint64_t* c = cols.data() + w * kRoofCols;
        for (int j = 0; j < kRoofCols; ++j) acc[static_cast<size_t>(j)] += __builtin_popcountll(x & c[j]);
      }
    }
  }
  double total = 0;
  for (int64_t a : acc) total += static_cast<double>(a);
  return total;
#endif
}

// Codes summed over planes as int32 shifts (what the engine does while the sums fit int32).
double AdcPass(const std::vector<float>& sums, const std::vector<float>& inv, float hi, int reps) {
#if XBAR_BENCH_AVX512
  __m256i acc[kRoofCols / 8];
  for (auto& a : acc) a = _mm256_setzero_si256();
  const __m256 lo8 = _mm256_setzero_ps(), hi8 = _mm256_set1_ps(hi);
  for (int rep = 0; rep < reps; ++rep) {
    for (int r = 0; r < kRoofRows; ++r) {
      const __m128i shift = _mm_cvtsi32_si128(r % 8);
      const float* s = sums.data() + r * kRoofCols;
      for (int j = 0; j < kRoofCols / 8; ++j) {
        const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(s + 8 * j), _mm256_loadu_ps(inv.data() + 8 * j));
        const __m256i code = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, lo8), hi8));
        acc[j] = _mm256_add_epi32(acc[j], _mm256_sll_epi32(code, shift));
      }
    }
  }
  __m256i total = _mm256_setzero_si256();
  for (auto& a : acc) total = _mm256_add_epi32(total, a);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total);
  double t = 0;
  for (int32_t l : lanes) t += l;
  return t;
#else
  std::vector<int64_t> acc(kRoofCols, 0);
  for (int rep = 0; rep < reps; ++rep) {
    for (int r = 0; r < kRoofRows; ++r) {
      const float* s = sums.data() + r * kRoofCols;
      for (int j = 0; j < kRoofCols; ++j) {
        const float code = std::min(hi, std::max(0.0f, std::nearbyint(s[j] * inv[static_cast<size_t>(j)])));
        acc[static_cast<size_t>(j)] += static_cast<int64_t>(code) << (r % 8);
      }
    }
  }
  double total = 0;
  for (int64_t a : acc) total += static_cast<double>(a);
  return total;
#endif
}

struct Roofline {
  double popcount_words_per_s = 0, conversions_per_s = 0;
};

// Each loop timed for ~0.3 s on one thread; the best of three runs.
Roofline MeasureRoofline() {
  std::mt19937_64 rng(1);
  std::vector<uint64_t> cols(kRoofCols * kRoofWords), rows(kRoofRows * kRoofWords);
  for (auto& c : cols) c = rng();
  for (auto& r : rows) r = rng();
  std::vector<float> sums(kRoofRows * kRoofCols), inv(kRoofCols);
  for (auto& x : sums) x = static_cast<float>(rng() % 129);
  for (auto& x : inv) x = 1.0f / static_cast<float>(1 + rng() % 4);
  using Clock = std::chrono::steady_clock;
  auto best_rate = [&](auto&& pass, double ops_per_rep) {
    int reps = 64;
    double best = 0;
    for (int trial = 0; trial < 3; ++trial) {
      for (;;) {
        const auto t0 = Clock::now();
        benchmark::DoNotOptimize(pass(reps));
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (s > 0.1) {
          best = std::max(best, ops_per_rep * reps / s);
          break;
        }
        reps *= 2;
      }
    }
    return best;
  };
  Roofline r;
  r.popcount_words_per_s = best_rate([&](int reps) { return PopcountPass(cols, rows, reps); },
                                     double{kRoofRows} * kRoofWords * kRoofCols);
  r.conversions_per_s = best_rate([&](int reps) { return AdcPass(sums, inv, 63.0f, reps); }, double{kRoofRows} * kRoofCols);
  return r;
}

const Roofline& MachineRoofline() {
  static const Roofline r = MeasureRoofline();
  return r;
}

void BM_RooflinePopcount(benchmark::State& state) {
  std::vector<uint64_t> cols(kRoofCols * kRoofWords, 0x5555555555555555ULL), rows(kRoofRows * kRoofWords, ~0ULL);
  for (auto _ : state) benchmark::DoNotOptimize(PopcountPass(cols, rows, 256));
  state.counters["Gword/s"] = benchmark::Counter(256.0 * kRoofRows * kRoofWords * kRoofCols * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.counters["bitplane_GMAC/s"] = benchmark::Counter(64.0 * 256.0 * kRoofRows * kRoofWords * kRoofCols *
                                                             static_cast<double>(state.iterations()) / 1e9,
                                                         benchmark::Counter::kIsRate);
  state.SetLabel(XBAR_BENCH_AVX512 ? "AND + vpopcntq, AVX-512" : "AND + popcount, portable");
}
BENCHMARK(BM_RooflinePopcount)->Unit(benchmark::kMillisecond);

void BM_RooflineAdc(benchmark::State& state) {
  std::vector<float> sums(kRoofRows * kRoofCols, 37.0f), inv(kRoofCols, 0.5f);
  for (auto _ : state) benchmark::DoNotOptimize(AdcPass(sums, inv, 63.0f, 256));
  state.counters["Gconv/s"] = benchmark::Counter(256.0 * kRoofRows * kRoofCols * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.SetLabel(XBAR_BENCH_AVX512 ? "scale, round, clip, shift-and-add; AVX-512" : "portable");
}
BENCHMARK(BM_RooflineAdc)->Unit(benchmark::kMillisecond);

const char* KernelName(int k) { return k == 0 ? "float" : k == 1 ? "packed" : k == 2 ? "auto" : "tensor ops"; }

// Args: shape, sum kernel (0 float GEMM, 1 bit-packed AND+popcount, 2 automatic, 3 the engine as
// batched tensor ops, as a CUDA build runs it on a GPU; here on the CPU), cell bits.
void BM_Engine(benchmark::State& state) {
  at::set_num_threads(1);
  const Shape& s = kShapes[state.range(0)];
  const int64_t images = 8;
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({s.N, s.K});
  xbar::CrossbarLayer layer("l", w, 0.0, Map(6, static_cast<int>(state.range(2))), xbar::DeviceSpec{});
  const int k = static_cast<int>(state.range(1));
  layer.SetSumKernel(k == 0   ? xbar::SumKernel::kFloat
                     : k == 1 ? xbar::SumKernel::kPacked
                     : k == 2 ? xbar::SumKernel::kAuto
                              : xbar::SumKernel::kTensor);
  torch::Tensor x = torch::floor(torch::rand({s.M * images, s.K}) * 256);
  layer.Forward(x.narrow(0, 0, std::min<int64_t>(256, x.size(0))), false, 0, nullptr);  // kAuto decides here
  const Roofline& roof = MachineRoofline();  // measured before the timed loop
  for (auto _ : state) benchmark::DoNotOptimize(layer.Forward(x, false, 0, nullptr));
  const double macs = BitPlaneMacs(layer, s.M * images) * static_cast<double>(state.iterations());
  state.counters["bitplane_GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
  state.counters["packed_share"] = static_cast<double>(layer.packed_tiles()) / static_cast<double>(layer.tiles());
  // The roofline: the time the packed crossbars' popcounts and conversions take at the rates
  // above (0 when nothing runs packed), and the measured time over it.
  const xbar::CrossbarLayer::KernelWork work = layer.PackedWork(s.M * images, false);
  const double bound_s = work.popcount_words / roof.popcount_words_per_s + work.conversions / roof.conversions_per_s;
  state.counters["bound_ms"] = bound_s * 1e3;
  state.counters["x_bound"] = benchmark::Counter(bound_s * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  state.SetLabel(std::string(s.name) + ", " + KernelName(k) + ", " + std::to_string(state.range(2)) + "-bit cells");
}
BENCHMARK(BM_Engine)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1, 2, 3}, {1, 2}})->Unit(benchmark::kMillisecond);

// FORMS fragments under device variation (float cells): VGG-8 features.3's GEMM (1152 x 128, one
// image's 1,024 positions) on the forms preset's crossbars -- polarized, 128 x 128, 8-bit
// weights on 2-bit cells, 16-bit inputs through a 1-bit DAC, 4-bit ADCs per fragment -- with
// lognormal variation sigma 0.1, one thread. Args: fragment rows (4, 8); 0 = every sum computed
// (FloatSums, then ConvertPosition), 1 = each fragment's sums and codes looked up by its digit
// pattern (the same bits).
void BM_FragmentsUnderVariation(benchmark::State& state) {
  at::set_num_threads(1);
  torch::manual_seed(0);
  const int64_t K = 1152, N = 128, M = 1024;
  const torch::Tensor w = torch::randn({N, K}).abs();  // one sign: polarised at any fragment size
  xbar::MappingSpec map = Map(4);
  map.scheme = &xbar::FindScheme("polarized", "bench");
  map.fragment_rows = state.range(0);
  map.input_bits = 16;
  xbar::DeviceSpec dev;
  dev.variation_sigma = 0.1;
  xbar::CrossbarLayer layer("l", w, 0.0, map, dev);
  layer.Program(nullptr, 1, 0);
  torch::Tensor x = torch::floor(torch::rand({M, K}) * 65536);
  x.masked_fill_(torch::rand({M, K}).lt(0.3), 0.0);  // zeros, as after a ReLU
  xbar::SetPatternSums(state.range(1) == 1);
  const int64_t built = xbar::PatternTablesBuilt();
  for (auto _ : state) benchmark::DoNotOptimize(layer.Forward(x, false, 0, nullptr));
  const bool looked_up = xbar::PatternTablesBuilt() > built;
  xbar::SetPatternSums(true);
  if (looked_up != (state.range(1) == 1)) state.SkipWithError("the lookup did not run as asked");
  const double macs = 2.0 * BitPlaneMacs(layer, M) * static_cast<double>(state.iterations());  // 16 planes
  state.counters["bitplane_GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string("fragments of ") + std::to_string(state.range(0)) +
                 (state.range(1) == 1 ? ", looked up by pattern" : ", summed"));
}
BENCHMARK(BM_FragmentsUnderVariation)->ArgsProduct({{4, 8}, {0, 1}})->Unit(benchmark::kMillisecond);

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

// Issue 15, item 3: the lossless fast path against float LibTorch inference, whole networks and
// single layers, one thread. Networks (arg 0): LeNet-5 on 1x28x28, VGG-8, ResNet-20 and ResNet-18 on
// 3x32x32 (full width, random weights); mode (arg 1): 0 float inference, 1 the simulator's fast path
// (what `xbar simulate` runs on a lossless configuration), 2 the same with the per-layer statistics
// on every image (NMSE against the float layer in float64, conversions, zero-skipping).
// Both fast-path benchmarks keep freed memory for reuse, as every xbar command does
// (KeepFreedMemoryForReuse): with glibc's defaults each large output is a fresh mapping whose page
// faults make the float and fast timings swing by 2x from run to run. The setting stays for the
// rest of the process: run them with their own --benchmark_filter (docs/BENCHMARKS.md does).
const char* kFastNets[] = {"lenet5", "vgg8", "resnet20", "resnet18"};
void BM_FastPathNetwork(benchmark::State& state) {
  xbar::KeepFreedMemoryForReuse();
  at::set_num_threads(1);
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(0);
  xbar::ModelSpec spec;
  spec.name = kFastNets[state.range(0)];
  if (state.range(0) > 0) {
    spec.in_channels = 3;
    spec.height = spec.width_px = 32;
  }
  auto model = xbar::CreateModel(spec);
  const int64_t n = state.range(0) == 3 ? 50 : 200;
  xbar::Dataset data{torch::rand({n, spec.in_channels, spec.height, spec.width_px}), torch::zeros({n}, torch::kInt64)};
  xbar::NetworkSimulator sim(*model, Map(0), xbar::DeviceSpec{});
  sim.SetQuiet(true);
  sim.Calibrate(data, n, torch::kCPU);
  sim.Program(xbar::FaultSpec{}, 0);
  const int mode = static_cast<int>(state.range(1));
  sim.SetCollectStats(mode == 2);
  sim.SetStatsImages(0);
  const xbar::SimMode m = mode == 0 ? xbar::SimMode::kFloat : xbar::SimMode::kCrossbar;
  for (auto _ : state) benchmark::DoNotOptimize(sim.Evaluate(data, m, n, torch::kCPU));
  state.counters["ms/image"] = benchmark::Counter(1e-3 * static_cast<double>(n) * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  const char* what[] = {"float", "fast path", "fast path + statistics"};
  state.SetLabel(std::string(spec.name) + ", batch " + std::to_string(n) + ": " + what[mode]);
}
BENCHMARK(BM_FastPathNetwork)->ArgsProduct({{0, 1, 2, 3}, {0, 1, 2}})->Unit(benchmark::kMillisecond);

// One layer: float conv/linear (with bias, as the model runs it) against the fast path of the same
// layer (xbar::FastLayer: quantise, exact integer conv/GEMM, scale and bias). Layer (arg 0), batch
// (arg 1), mode (arg 2: 0 float, 1 fast path). One thread.
struct FastShape {
  const char* name;
  xbar::LayerKind kind;
  int64_t in, out, k, stride, padding, hw;  // hw: input height = width (conv)
};
const FastShape kFastShapes[] = {
    {"lenet5.conv2 6->16 5x5 @14", xbar::LayerKind::kConv2d, 6, 16, 5, 1, 0, 14},
    {"lenet5.fc1 400->120", xbar::LayerKind::kLinear, 400, 120, 1, 1, 0, 1},
    {"vgg8 conv4 256->256 3x3 @16", xbar::LayerKind::kConv2d, 256, 256, 3, 1, 1, 16},
    {"vgg8 features.3 128->128 3x3 @32", xbar::LayerKind::kConv2d, 128, 128, 3, 1, 1, 32},
    {"resnet20 layer1 16->16 3x3 @32", xbar::LayerKind::kConv2d, 16, 16, 3, 1, 1, 32},
    {"resnet18 layer1 64->64 3x3 @32", xbar::LayerKind::kConv2d, 64, 64, 3, 1, 1, 32},
    {"resnet18 layer4 512->512 3x3 @4", xbar::LayerKind::kConv2d, 512, 512, 3, 1, 1, 4},
    {"fc 1152->128 (CrossSim MVM)", xbar::LayerKind::kLinear, 1152, 128, 1, 1, 0, 1},
};
void BM_FastPathLayer(benchmark::State& state) {
  xbar::KeepFreedMemoryForReuse();
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const FastShape& sh = kFastShapes[state.range(0)];
  const int64_t B = state.range(1);
  xbar::LayerInfo l;
  l.name = sh.name;
  l.kind = sh.kind;
  l.in_channels = sh.in;
  l.out_channels = sh.out;
  l.kernel_h = l.kernel_w = sh.k;
  l.stride = sh.stride;
  l.padding = sh.padding;
  l.bias = true;
  const bool conv = sh.kind == xbar::LayerKind::kConv2d;
  const torch::Tensor w = conv ? torch::randn({sh.out, sh.in, sh.k, sh.k}) * 0.05 : torch::randn({sh.out, sh.in}) * 0.05;
  const torch::Tensor b = torch::randn({sh.out}) * 0.1;
  const torch::Tensor x = conv ? torch::relu(torch::randn({B, sh.in, sh.hw, sh.hw})) : torch::relu(torch::randn({B, sh.in}));
  const double ws = w.abs().max().item<double>() / 127.0, xs = x.max().item<double>() / 255.0;
  const torch::Tensor wq = (w / ws).round();
  const xbar::ExactPlan plan = xbar::PlanExactSums(l, wq, 255.0);
  const torch::Tensor b64 = b.to(torch::kFloat64);
  const bool fast = state.range(2) == 1;
  for (auto _ : state) {
    if (fast) {
      benchmark::DoNotOptimize(xbar::FastLayer(l, x, xs, false, 8, wq, plan, ws * xs, b64).y);
    } else {
      benchmark::DoNotOptimize(conv ? torch::conv2d(x, w, b, sh.stride, sh.padding) : torch::addmm(b, x, w.t()));
    }
  }
  state.counters["us/image"] = benchmark::Counter(1e-6 * static_cast<double>(B) * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetLabel(std::string(sh.name) + ", batch " + std::to_string(B) + (fast ? ": fast path" : ": float"));
}
BENCHMARK(BM_FastPathLayer)->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {1, 200}, {0, 1}})->Unit(benchmark::kMicrosecond);

// Issue 11, item 5: one Monte Carlo fault sample (program a random stuck-at map at 1e-3, then the
// test set) against one float inference of the same images, on both cores. Args: model (0 LeNet-5
// on 10,000 1x28x28 images, 1 VGG-8 x0.25 on 2,000), mode (0 float inference, 1 fault sample
// folded into integer weights (lossless ADC), 2 the same sample with the per-layer statistics on
// (until issue 15 they sent it to the engine; now the folded path measures them), 3 a sample with a 6-bit ADC (the engine), 4 a folded sample placed on its
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
  const char* what[] = {"float inference", "fault sample, folded", "fault sample, folded + statistics", "fault sample, 6-bit ADC",
                        "fault sample, placed + folded"};
  state.SetLabel(std::string(state.range(0) == 0 ? "lenet5, 10000 images: " : "vgg8 x0.25, 2000 images: ") + what[mode]);
}
BENCHMARK(BM_FaultSample)->ArgsProduct({{0, 1}, {0, 1, 2, 3, 4}})->Unit(benchmark::kMillisecond);

// Issue 4: seconds per image of VGG-8 on 3x32x32 inputs through the full engine: 8-bit weights and
// activations, 1-bit cells, 128x128 crossbars (two-column), 1-bit DAC, 5-bit ADC; batch 1, 8, 200.
// All cores (the engine and LibTorch both use at::parallel_for).
// VGG-8 (3x32x32) on `batch` random images, calibrated and programmed for the full engine (5-bit
// ADC, 1-bit cells), statistics off.
std::shared_ptr<xbar::Model> Vgg8Model() {
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(0);
  xbar::ModelSpec spec;
  spec.name = "vgg8";
  spec.in_channels = 3;
  spec.height = spec.width_px = 32;
  return xbar::CreateModel(spec);
}
struct Vgg8Engine {
  explicit Vgg8Engine(int64_t batch)
      : model(Vgg8Model()),
        data{torch::rand({batch, 3, 32, 32}), torch::zeros({batch}, torch::kInt64)},
        sim(*model, Map(5, 1), xbar::DeviceSpec{}) {
    sim.SetQuiet(true);
    sim.Calibrate(data, batch, torch::kCPU);
    sim.Program(xbar::FaultSpec{}, 0);
    sim.SetCollectStats(false);
  }
  xbar::EvalResult Evaluate() { return sim.Evaluate(data, xbar::SimMode::kCrossbar, data.size(), torch::kCPU); }
  std::shared_ptr<xbar::Model> model;
  xbar::Dataset data;
  xbar::NetworkSimulator sim;
};

// The engine timed per image.
void TimeVgg8(benchmark::State& state, int64_t batch) {
  Vgg8Engine e(batch);
  // One image first: each crossbar picks its sum kernel on its first MVM (a one-off per programmed
  // network, as in a Monte Carlo campaign that evaluates thousands of images).
  xbar::Dataset one{e.data.images.narrow(0, 0, 1), e.data.labels.narrow(0, 0, 1)};
  e.sim.Evaluate(one, xbar::SimMode::kCrossbar, 1, torch::kCPU);
  for (auto _ : state) benchmark::DoNotOptimize(e.Evaluate());
  state.counters["s/image"] = benchmark::Counter(static_cast<double>(batch) * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_Vgg8SecondsPerImage(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  TimeVgg8(state, state.range(0));
}
// Wall-clock time: with two threads the main thread's CPU time undercounts (s/image used it until
// 2026-12-03).
BENCHMARK(BM_Vgg8SecondsPerImage)->Arg(1)->Arg(8)->Arg(200)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

// Issue 15, item 4 (two threads >= 1.8x one on VGG-8), measured in pairs: the same programmed
// network evaluated `evals` times on one thread, then on two, five rounds in a row, so that both
// thread counts see the same state of the machine (its memory bandwidth drifts by up to 1.7x over
// a day) and warm buffers, as in a `simulate` run over many batches. Counters: the medians over the
// rounds of each thread count's seconds per image and of the per-round ratio (arg: batch size).
void BM_Vgg8TwoThreadsOverOne(benchmark::State& state) {
  const int64_t batch = state.range(0);
  const int64_t evals = std::max<int64_t>(1, 16 / batch), rounds = 5;
  at::set_num_threads(2);
  Vgg8Engine e(batch);
  e.Evaluate();  // kernel choice, first-touch buffers
  std::vector<double> one, two, ratio;
  for (auto _ : state) {
    for (int64_t r = 0; r < rounds; ++r) {
      double per_image[2];
      for (int threads = 1; threads <= 2; ++threads) {
        at::set_num_threads(threads);
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < evals; ++i) benchmark::DoNotOptimize(e.Evaluate());
        per_image[threads - 1] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                                 static_cast<double>(evals * batch);
      }
      one.push_back(per_image[0]);
      two.push_back(per_image[1]);
      ratio.push_back(per_image[0] / per_image[1]);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  state.counters["1 thread s/image"] = median(one);
  state.counters["2 threads s/image"] = median(two);
  state.counters["2/1 median"] = median(ratio);
  state.counters["2/1 min"] = *std::min_element(ratio.begin(), ratio.end());
  state.counters["2/1 max"] = *std::max_element(ratio.begin(), ratio.end());
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
}
BENCHMARK(BM_Vgg8TwoThreadsOverOne)->Arg(1)->Arg(8)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

// Issue 15, item 2: DNN+NeuroSim V1.4's VGG-8 settings (8-bit weights and inputs, 1-bit cells,
// 128-row arrays, 5-bit ADC, 1-bit DAC), one thread, seconds per image: each layer's
// CrossbarLayer::Forward on its output positions (args: layer 0..7, batch), and the whole network
// through NetworkSimulator::Evaluate (layer 8: lowering, activations and pooling included).
struct Vgg8Layer {
  const char* name;
  int64_t K, N, positions;  // GEMM rows, columns and output positions per image (3x32x32 input)
};
const Vgg8Layer kVgg8[] = {{"features.0", 27, 128, 1024},  {"features.3", 1152, 128, 1024},
                           {"features.7", 1152, 256, 256}, {"features.10 (Conv4)", 2304, 256, 256},
                           {"features.14", 2304, 512, 64}, {"features.17", 4608, 512, 64},
                           {"classifier.0", 8192, 1024, 1}, {"classifier.2", 1024, 10, 1}};

void BM_Vgg8NeuroSimSettings(benchmark::State& state) {
  at::set_num_threads(state.range(2));
  xbar::Progress::SetEnabled(false);
  torch::manual_seed(0);
  const int layer = static_cast<int>(state.range(0));
  const int64_t batch = state.range(1);
  if (layer < 8) {
    const Vgg8Layer& l = kVgg8[layer];
    xbar::CrossbarLayer cl(l.name, torch::randn({l.N, l.K}), 0.0, Map(5, 1), xbar::DeviceSpec{});
    torch::Tensor x = torch::floor(torch::rand({l.positions * batch, l.K}) * 256);
    cl.Forward(x.narrow(0, 0, std::min<int64_t>(256, x.size(0))), false, 0, nullptr);  // kernel choice
    for (auto _ : state) benchmark::DoNotOptimize(cl.Forward(x, false, 0, nullptr));
    state.SetLabel(l.name);
  } else {
    TimeVgg8(state, batch);
    state.SetLabel("whole network");
    return;
  }
  state.counters["s/image"] = benchmark::Counter(static_cast<double>(batch) * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
// The third arg is the thread count: 1 for NeuroSim's settings; each layer again on 2 threads at
// batch 1 and 8 (issue 15, item 4), wall-clock.
BENCHMARK(BM_Vgg8NeuroSimSettings)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {1, 8, 200}, {1}})
    ->Args({8, 1, 1})
    ->Args({8, 8, 1})
    ->Args({8, 200, 1})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {1, 8}, {2}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

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
  map.flip_columns = state.range(0) == 2;  // the isaac preset's flipped encoding: per-slice level sums
  int64_t crossbars = 0;
  for (auto _ : state) {
    crossbars = 0;
    for (const xbar::LayerInfo& l : model->layers()) {
      const torch::Tensor w2d = model->LayerWeight(l.name).detach().reshape({l.out_channels, -1});
      const double scale = xbar::WeightScale(w2d, map.weight_bits, 0.0);
      if (state.range(0) != 1) {
        crossbars += xbar::PlanLayer(l.name, w2d, scale, map).crossbars;
      } else {
        crossbars += xbar::CrossbarLayer(l.name, w2d, scale, map, xbar::DeviceSpec{}).crossbars();
      }
    }
  }
  state.counters["crossbars"] = static_cast<double>(crossbars);
  state.SetLabel(state.range(0) == 0 ? "planner" : state.range(0) == 2 ? "planner, flipped columns" : "CrossbarLayer");
}
BENCHMARK(BM_MapResNet18)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// Issue 10, deliverable 6: the zero-skipping work of a ResNet-18 (1x28x28) on the forms hardware
// description (polarized, fragments of 8 rows, 8-bit weights on 2-bit cells, 16-bit inputs), all
// threads: input ranges calibrated on 400 images, then the needed input cycles of every fragment
// counted from the quantised activations of 200 images (workload.h). Weights are made
// non-negative so every fragment is single-signed. Images are random (the counts' cost does not
// depend on their content). Freed memory is kept for reuse, as in every xbar command
// (KeepFreedMemoryForReuse; see BM_FastPathNetwork): run it with its own --benchmark_filter.
void BM_ZeroSkipResNet18(benchmark::State& state) {
  xbar::KeepFreedMemoryForReuse();
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

// The counting pass's convolutions (issue 10, item 6) on ResNet-18's shapes at 28 x 28, a batch of
// 50 as NetworkWork runs them, one thread: arg 0 = shape, arg 1 = 0 ExactIntConv (exact sums: oneDNN
// int8 on VNNI/AMX, else the AVX2 kernel), 1 the AVX2 kernel alone, 2 a float32 torch::conv2d of
// the same codes (what ran on AVX2 CPUs before; rounds past 2^24). 16-bit codes, 8-bit weights.
void BM_CountingConv(benchmark::State& state) {
  struct Shape {
    int64_t c, hw, o, k, stride;
  };
  static const Shape kShapes[] = {
      {64, 28, 64, 3, 1}, {128, 14, 128, 3, 1}, {256, 7, 256, 3, 1}, {512, 4, 512, 3, 1}, {128, 28, 256, 1, 2}};
  const Shape& sh = kShapes[state.range(0)];
  at::set_num_threads(1);
  torch::manual_seed(0);
  xbar::IntConvShape c;
  c.batch = 50, c.in_channels = sh.c, c.height = sh.hw, c.width = sh.hw, c.out_channels = sh.o;
  c.kernel_h = c.kernel_w = sh.k, c.stride = sh.stride, c.padding = sh.k / 2;
  const torch::Tensor x = torch::randint(0, 65536, {c.batch, sh.c, sh.hw, sh.hw}, torch::kFloat32);
  const torch::Tensor w = torch::randint(-127, 128, {sh.o, sh.c, sh.k, sh.k}, torch::kFloat32);
  const torch::Tensor w8 = w.to(torch::kInt8).contiguous();
  torch::Tensor y = torch::conv2d(x, w, {}, c.stride, c.padding);
  for (auto _ : state) {
    bool ok = true;
    if (state.range(1) == 0)
      ok = xbar::ExactIntConv(c, x.data_ptr<float>(), w8.data_ptr<int8_t>(), y.data_ptr<float>());
    if (state.range(1) == 1)
      ok = xbar::ExactIntConvAvx2(c, x.data_ptr<float>(), w8.data_ptr<int8_t>(), y.data_ptr<float>());
    if (state.range(1) == 2) y = torch::conv2d(x, w, {}, c.stride, c.padding);
    if (!ok) {
      state.SkipWithError("no exact kernel on this CPU or build");
      break;
    }
    benchmark::DoNotOptimize(y.data_ptr<float>());
  }
  const double macs = static_cast<double>(y.numel()) * static_cast<double>(sh.c * sh.k * sh.k);
  state.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(state.range(1) == 0 ? "ExactIntConv" : state.range(1) == 1 ? "AVX2 kernel" : "float32 conv2d");
}
BENCHMARK(BM_CountingConv)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1, 2}})->Unit(benchmark::kMillisecond);

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
