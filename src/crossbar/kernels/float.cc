// The engine's float sum kernel: column sums of float conductances (variation, drift, IR drop),
// each one a sum over the crossbar's rows in row order.
//
// A BLAS GEMM gives other last bits for the same position when it sits in another row of the GEMM
// (another batch size or chunk) or when BLAS splits the GEMM between threads. Here every output is
// the same sequence of float operations wherever it sits: one vector lane per column, rows padded
// to whole blocks and columns to whole vectors, so one code path computes them all — an explicit
// fused multiply-add where the CPU has one (AVX-512, or AVX2 with FMA), else a multiply then an add
// (this file is compiled without FMA contraction, CMakeLists.txt, so the compiler cannot fuse some
// and not others). Results are the same at any batch size and thread count, and the same on an
// AVX-512 and an AVX2 build: both round each row's product and sum once, in row order. Digit rows
// that are all zero (most of the high bit-planes) are skipped: acc + 0 * w == acc. The accumulators
// of 6 rows x kVecs vectors stay in registers (24 of AVX-512's 32, 12 of AVX2's 16): 0.9-1.5x the
// speed of the OpenBLAS bmm it replaces (docs/BENCHMARKS.md). The vector width follows the ISA the
// build targets: with 16-lane vectors on an AVX2 build GCC split every vector in two and spilled
// the 48 halves, 9-20x slower than now (docs/BENCHMARKS.md).
#include <ATen/Parallel.h>
#if defined(__AVX512F__) || (defined(__AVX__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xbar/crossbar/kernels.h"

namespace xbar {
namespace {

#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;  // floats per vector: one zmm register
constexpr int kVecs = 4;        // vectors of columns per block
#elif defined(__AVX__) && defined(__FMA__)
constexpr int64_t kLanes = 8;   // one ymm register
constexpr int kVecs = 2;
#else
constexpr int64_t kLanes = 4;   // SSE (a build without -march=native): one xmm register
constexpr int kVecs = 2;
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4)));
constexpr int64_t kRows = 6;  // input rows per block

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// acc + d * w, one rounding (FMA) where the ISA has it, else two (this file has no FMA
// contraction): the same in every lane and every code path of one build.
inline Vec MulAdd(Vec acc, float d, Vec w) {
#if defined(__AVX512F__)
  return reinterpret_cast<Vec>(_mm512_fmadd_ps(_mm512_set1_ps(d), reinterpret_cast<__m512>(w), reinterpret_cast<__m512>(acc)));
#elif defined(__AVX__) && defined(__FMA__)
  return reinterpret_cast<Vec>(_mm256_fmadd_ps(_mm256_set1_ps(d), reinterpret_cast<__m256>(w), reinterpret_cast<__m256>(acc)));
#else
  return acc + d * w;
#endif
}

// Which of a block's g digit rows hold a non-zero digit (+0 and -0 are zero) in any of its kRows
// input rows (stride g): one vectorisable pass over the block, reused by every vector of columns.
inline void NonZeroRows(const float* x, int64_t g, uint8_t* nz) {
  for (int64_t r = 0; r < g; ++r) {
    uint32_t bits = 0;
#pragma GCC unroll 8
    for (int q = 0; q < kRows; ++q) {
      uint32_t u;
      std::memcpy(&u, x + q * g + r, sizeof u);
      bits |= u << 1;
    }
    nz[r] = bits != 0;
  }
}

// out[q][v] = sum over r of x[q][r] * w[r][v] for kRows input rows (stride g) and V vectors of
// columns (w and out: stride NRp floats), rows in order; rows whose digits are all zero (nz[r] == 0)
// skipped: acc + 0 * w == acc. Loops over q and v are unrolled and the accumulators never have
// their address taken, so they stay in registers; the zero test reads a precomputed byte, so no
// vector register holds digits (testing them in the loop spilled three accumulators on AVX2).
template <int V>
inline void Block(const float* x, int64_t g, const uint8_t* nz, const float* w, int64_t NRp, float* out) {
  Vec acc[kRows][V];
#pragma GCC unroll 8
  for (int q = 0; q < kRows; ++q) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[q][v] = Vec{};
  }
  for (int64_t r = 0; r < g; ++r) {
    if (!nz[r]) continue;
    Vec wv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) wv[v] = Load(w + r * NRp + v * kLanes);
#pragma GCC unroll 8
    for (int q = 0; q < kRows; ++q) {
      const float d = x[q * g + r];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[q][v] = MulAdd(acc[q][v], d, wv[v]);
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < kRows; ++q) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) Store(out + q * NRp + v * kLanes, acc[q][v]);
  }
}

}  // namespace

bool FloatSumsFuseMultiplyAdd() {
#if defined(__AVX512F__) || (defined(__AVX__) && defined(__FMA__))
  return true;
#else
  return false;
#endif
}

torch::Tensor FloatSums(const torch::Tensor& xg_in, const torch::Tensor& reads_in) {
  const int64_t G = xg_in.size(0), rows = xg_in.size(1), g = xg_in.size(2), NR = reads_in.size(2);
  const int64_t NRp = (NR + kLanes - 1) / kLanes * kLanes, rows_p = (rows + kRows - 1) / kRows * kRows;
  // Padded copies: zero columns and zero rows.
  torch::Tensor reads = reads_in.to(torch::kFloat32);
  if (NRp != NR) reads = torch::constant_pad_nd(reads, {0, NRp - NR}, 0);
  reads = reads.contiguous();
  torch::Tensor xg = xg_in.to(torch::kFloat32);
  if (rows_p != rows) xg = torch::constant_pad_nd(xg, {0, 0, 0, rows_p - rows}, 0);
  xg = xg.contiguous();
  torch::Tensor out = torch::empty({G, rows_p, NRp}, torch::kFloat32);
  const float* xp = xg.data_ptr<float>();
  const float* rp = reads.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t blocks = rows_p / kRows, vectors = NRp / kLanes;
  at::parallel_for(0, G * blocks, 4, [&](int64_t b0, int64_t b1) {
    std::vector<uint8_t> nz(static_cast<size_t>(g));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t grp = b / blocks, i0 = (b % blocks) * kRows;
      const float* w = rp + grp * g * NRp;
      const float* x = xp + (grp * rows_p + i0) * g;
      float* o = op + (grp * rows_p + i0) * NRp;
      NonZeroRows(x, g, nz.data());
      int64_t v = 0;
      for (; v + kVecs <= vectors; v += kVecs) Block<kVecs>(x, g, nz.data(), w + v * kLanes, NRp, o + v * kLanes);
      for (; v < vectors; ++v) Block<1>(x, g, nz.data(), w + v * kLanes, NRp, o + v * kLanes);
    }
  });
  if (NRp == NR && rows_p == rows) return out;
  return out.narrow(1, 0, rows).narrow(2, 0, NR).contiguous();
}

namespace {
std::atomic<bool> g_patterns{true};
std::atomic<int64_t> g_tables{0};
}  // namespace

void SetPatternSums(bool on) { g_patterns.store(on); }
int64_t PatternTablesBuilt() { return g_tables.load(); }

bool PatternSumsPay(int64_t g, int v, int64_t P, int64_t M) {
  if (!g_patterns.load(std::memory_order_relaxed) || g <= 0 || v * g > 8) return false;
  return 2 * (int64_t{1} << (v * g)) <= P * M * g;
}

int64_t PatternSumsStride(int64_t NR) { return (NR + kLanes - 1) / kLanes * kLanes; }

void PatternSums(const torch::Tensor& reads_in, int v, float* table) {
  const int64_t G = reads_in.size(0), g = reads_in.size(1), NR = reads_in.size(2);
  const int64_t NRp = PatternSumsStride(NR), patterns = int64_t{1} << (v * g);
  const int64_t digit_mask = (int64_t{1} << v) - 1;
  // The reads with their columns padded to whole vectors (zeros), so every row is whole vectors.
  torch::Tensor reads = reads_in.to(torch::kFloat32);
  if (NRp != NR) reads = torch::constant_pad_nd(reads, {0, NRp - NR}, 0);
  reads = reads.contiguous();
  const float* rp = reads.data_ptr<float>();
  const int64_t vectors = NRp / kLanes;
  for (int64_t grp = 0; grp < G; ++grp) {
    float* t = table + grp * patterns * NRp;
    std::fill(t, t + NRp, 0.0f);  // no non-zero digit: FloatSums' +0 start
    for (int64_t pat = 1; pat < patterns; ++pat) {
      // The last row FloatSums adds for this pattern (its highest non-zero digit) on top of the sum
      // of the rows before it, an earlier entry: the same operations in the same order.
      const int top = (63 - __builtin_clzll(static_cast<uint64_t>(pat))) / v;
      const auto d = static_cast<float>((pat >> (v * top)) & digit_mask);
      const float* before = table + (grp * patterns + (pat & ((int64_t{1} << (v * top)) - 1))) * NRp;
      const float* w = rp + (grp * g + top) * NRp;
      float* out = t + pat * NRp;
      for (int64_t j = 0; j < vectors; ++j) {
        Store(out + j * kLanes, MulAdd(Load(before + j * kLanes), d, Load(w + j * kLanes)));
      }
    }
  }
  g_tables.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace xbar
