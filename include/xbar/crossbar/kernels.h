// xbar/crossbar/kernels.h — the engine's sum kernels: a fixed-order float kernel for any read
// values (FloatSums), and the exact kernels for integer-valued cells: AND + popcount
// over bit-packed input digits and cell planes (integer-valued cells only). A column sum of g rows
// is sum_k 2^k sum_p ±2^shift_p popcount(x_k & cells_p) over the v input bits k and the cell planes
// p (positive and negative parts of every read), so it is exact at any size.
//
//   PackReads(tile, map.dac_bits);                        // once per programming (words = 0: not packable)
//   std::vector<uint64_t> x = PackTileInputs(xq, M, K, digits, tile, v);  // inputs xq [M, K] at tile.rows
//   torch::Tensor sums = PackedSums(tile, x, P * M, v);   // [G, P * M, NR], equal to bmm(xg, tile.reads)
//   ConvertPosition(tile, group, tables, v, x + ..., ...); // or counts, ADC and shift-and-add per position
#pragma once

#include <torch/torch.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xbar/crossbar/tile.h"

namespace xbar {

// How the DAC splits an integer input x into plane digits (stages/dac.cc): plane p's digit is
// ((signed_inputs && x < 0 ? x + wrap : x) >> shift[p]) & mask[p], an integer 0..2^v - 1.
struct InputDigits {
  const int* shift;
  const int64_t* mask;
  int64_t planes;
  bool signed_inputs;
  int64_t wrap;
};
// The digits of whole input rows xq [M, K] bit-packed: words [M][P][v][KW], KW = ceil(K / 64), bit
// r of word w holding bit k of plane p's digit of input 64 w + r. A crossbar whose rows are one
// 64-aligned run (RowBitsFit) reads its inputs from here directly: the words past its last row
// meet zero cell words.
std::vector<uint64_t> PackRowBits(const float* xq, int64_t M, int64_t K, const InputDigits& d, int v);
// RowBitsFit reads the tile's rows_contiguous, which CrossbarLayer sets from RowsContiguous when it
// builds the tile (the rows never change after).
bool RowBitsFit(const CrossbarTile& t);
bool RowsContiguous(const CrossbarTile& t);
// The same digits at one tile's rows, as words [G * P * M][v][words], row i = (group * P + p) * M
// + m: gathered from the inputs (any rows; the engine uses it for compacted rows), or cut from
// PackRowBits' words (a contiguous run).
std::vector<uint64_t> PackTileInputs(const float* xq, int64_t M, int64_t K, const InputDigits& d,
                                     const CrossbarTile& t, int v);
std::vector<uint64_t> PackTileFromRowBits(const std::vector<uint64_t>& row_bits, int64_t K, int64_t M, int64_t P,
                                          const CrossbarTile& t, int v);
// Packs the tile's read matrix into bit planes; leaves tile.words = 0 (not packable) when a read
// value is not an integer, read noise is on, or v > 8.
void PackReads(CrossbarTile& t, int v);
// Column sums of one input row (bit k's words at x + k * xk) on group `group`: acc[NR].
inline void PackedRow(const CrossbarTile& t, int64_t group, const uint64_t* x, int64_t xk, int v, int64_t* acc);
// Column sums [G, rows, NR] from inputs packed by PackTileInputs.
torch::Tensor PackedSums(const CrossbarTile& t, const std::vector<uint64_t>& inputs, int64_t rows, int v);
// Column sums [G, rows, NR] of float reads [G, g, NR] (kernels/float.cc): bmm(xg, reads), each sum
// in row order, so its bits do not depend on where the row sits or on the thread count.
torch::Tensor FloatSums(const torch::Tensor& xg, const torch::Tensor& reads);
// Whether FloatSums adds each row's product with one rounding (a fused multiply-add: builds for
// AVX-512, or AVX2 with FMA, which then give the same bits) or with two (a portable build).
bool FloatSumsFuseMultiplyAdd();
// Where a group has few rows (FORMS fragments: g = 4 or 8 with a 1-bit DAC), a column sum depends
// only on the group's digit pattern, so the engine looks the sums up instead of computing them for
// every position and input plane (layer.cc). PatternSums fills table [G][2^(v g)][stride] (stride
// = PatternSumsStride(NR), the columns past NR zero) from float reads [G, g, NR]: entry (group,
// pattern) is the sum FloatSums gives for digits d_r = (pattern >> (v r)) & (2^v - 1) — rows in
// order from +0, zero digits skipped, each row's product added as FloatSums adds it (one rounding
// with FMA, two without) — so the same bits on every build. Built row by row: each entry is one
// multiply-add on the entry of its lower rows.
int64_t PatternSumsStride(int64_t NR);
void PatternSums(const torch::Tensor& reads, int v, float* table);
// Whether a group of g rows with v-bit digits, read for M positions on P input planes, is looked
// up by pattern: at most 2^8 patterns, and fewer than half the sums the positions need (M P g
// products per column against one per pattern).
bool PatternSumsPay(int64_t g, int v, int64_t P, int64_t M);
// Tests and benchmarks switch the lookup off to compare; PatternTablesBuilt counts the tables
// PatternSums has filled in this process.
void SetPatternSums(bool on);
int64_t PatternTablesBuilt();
// The pattern of each input plane's digits at one group's rows for one position (inputs x at
// tile.rows; rows past the tile's last are zero digits): patterns[p] = sum_r d_pr << (v r).
void GroupPatterns(const float* x, const CrossbarTile& t, int64_t group, const InputDigits& d, int v,
                   uint32_t* patterns);

// The ADC's tables for one crossbar (stages/adc.cc) and the digital weights of the P input planes.
struct ConvertTables {
  const float* inv;            // [NR] 1 / LSB
  const float* lo;             // [NR] lowest code
  const float* hi;             // [NR] highest code
  const double* plane_weight;  // [planes]
  int64_t planes;
  const double* scale;         // [groups * NR] digital weight of a code
  // Every sum over planes of codes times plane weights fits int32 (CodesFitInt32).
  bool int_codes = false;
};
// Whether the largest |code| (CrossbarTile::adc_code_max) times the sum of |plane weights| stays
// below 2^31.
bool CodesFitInt32(float code_max, const std::vector<double>& plane_weight);
// One position on one group (kernels/convert.cc): for every read column c,
//   S[c] = scale[group, c] * sum_p plane_weight[p] * min(hi[c], max(lo[c], rint(sum_pc * inv[c])))
// where the column sum sum_pc of input plane p is counted by AND + popcount from packed inputs
// (x: plane p's bit k at x + p * x_stride + k * xk) or, with x null, read from float sums (plane
// p's row at sums + p * sum_stride). The sum over planes is exact (integer codes, power-of-two
// weights), then one rounding for the scale.
void ConvertPosition(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                     int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, double* S);
// The ADC's code of every entry of a PatternSums table (kernels/convert.cc), as ConvertPosition
// converts a sum: min(hi[c], max(lo[c], rint(sum * inv[c]))), in int32 (same layout and stride; the
// columns past NR zero).
void PatternCodes(const float* sums, int64_t entries, int64_t stride, int64_t NR, const ConvertTables& tab,
                  int32_t* codes);
// One position on one group from its planes' patterns and the group's codes (codes + pattern *
// stride): S[c] = scale[group, c] * sum_p plane_weight[p] * code(pattern[p], c), what
// ConvertPosition gives for the same sums (the sum over planes is exact in both).
void ConvertPatterns(const int32_t* codes, int64_t stride, const uint32_t* patterns, const ConvertTables& tab,
                     int64_t group, int64_t NR, double* S);
// The exact fast path's elementwise passes (kernels/fast_path.cc), one pass each over contiguous
// CPU data, with the same bits as the tensor ops they replace:
//   QuantizeCodes: q = min(hi, max(lo, round_half_even(x / scale))) in float32 (NaN stays NaN);
//   ScaleSums: y = float(double(sum) * scale + bias[c]) (double multiply, then add: never fused),
//   c = (i / plane) % channels the channel of element i ([B, C, H, W]: plane = H·W; [B, N]: plane
//   1), no bias when it is null; from float32 partial sums, sum = their exact float64 total.
void QuantizeCodes(const float* x, float* q, int64_t n, float scale, float lo, float hi);
// PlanesOfRow: dst[i] = the input cycles code x[i] needs on DACs of dac_bits: `all` when negative,
// else ceil(bit length of floor(x[i]) / dac_bits) (PlanesNeeded, one row at a time).
void PlanesOfRow(const float* x, uint8_t* dst, int64_t n, int dac_bits, uint8_t all);
void ScaleSums(const float* const* parts, int64_t num_parts, float* y, int64_t n, double scale, const double* bias,
               int64_t channels, int64_t plane);
void ScaleSums(const double* sums, float* y, int64_t n, double scale, const double* bias, int64_t channels,
               int64_t plane);
// Exact integer convolution (kernels/int_conv.cc; a linear layer is the 1 x 1 case of H = W = 1):
// y [N, O, OH, OW] (float32, contiguous) = the exact sums of the integer codes x (float32 NCHW)
// times the integer weights w (int8 [O, C/G, KH, KW]), each rounded once to float32. x holds
// integers in [0, 2^16) (unsigned inputs) or in [-2^15, 2^15) (signed inputs). Runs on oneDNN's
// int8 kernels where they sum exactly (VNNI, AMX; unsigned codes) and otherwise on an AVX2 kernel
// of its own; both give the same results, which do not depend on how the work is split across
// threads. Returns false and leaves y alone where it does not apply: a build for a CPU without AVX2
// (and without those oneDNN kernels), a value of x that is not such a code, or a reduction so long
// that a sum could pass int32 in oneDNN's kernels. ExactIntConvAvx2 is the AVX2 kernel alone
// (tests compare the two).
struct IntConvShape {
  int64_t batch = 1, in_channels = 1, height = 1, width = 1, out_channels = 1;
  int64_t kernel_h = 1, kernel_w = 1, stride = 1, padding = 0, dilation = 1, groups = 1;
};
bool ExactIntConv(const IntConvShape& shape, const float* x, const int8_t* w, float* y);
bool ExactIntConvAvx2(const IntConvShape& shape, const float* x, const int8_t* w, float* y);
bool ExactIntConvAvailable();
// The same sums exact in float64, for int16 weights (the AVX2 kernel; the simulator's exact fast
// path): false where it does not apply -- no AVX2, codes as above not given, or a product pair
// that could pass int32 (16-bit codes need weights below 2^15 in magnitude).
bool ExactIntSums(const IntConvShape& shape, const float* x, const int16_t* w, double* y);
bool ExactIntSumsAvailable();
// The vector kernels of kernels/convert.cc (AVX-512 or AVX2 + FMA, when the build targets a CPU
// with them) or the portable ones, which give the same bits; tests switch to the portable ones to
// compare.
void SetPortableKernels(bool on);
bool PortableKernels();

// ---- inline definitions ---------------------------------------------------------------------------

#if defined(__AVX2__)
// AVX2 has no vector popcount: bytes counted by nibble lookups (vpshufb) in this table, the
// nibbles picked by the mask below. PopcountBytes4x64: each byte's count (0..8), so up to 31 of
// them can be added in bytes before one per-lane sum (vpsadbw).
inline __m256i NibblePopcountTable() {
  return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3,
                          4);
}
inline __m256i LowNibbles() { return _mm256_set1_epi8(0x0f); }
inline __m256i PopcountBytes4x64(__m256i v, __m256i table, __m256i low) {
  const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, low));
  const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_add_epi8(lo, hi);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512VPOPCNTDQ__)
// Four 64-bit lanes counted, 4 columns per step instead of one scalar popcnt and a memory add per
// column.
inline __m256i Popcount4x64(__m256i v) {
  return _mm256_sad_epu8(PopcountBytes4x64(v, NibblePopcountTable(), LowNibbles()), _mm256_setzero_si256());
}
template <bool kSub>
inline int64_t PopcountAcc4(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  const __m256i xv = _mm256_set1_epi64x(static_cast<long long>(x));
  const __m128i sh = _mm_cvtsi32_si128(shift);
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + c));
    const __m256i cnt = _mm256_sll_epi64(Popcount4x64(_mm256_and_si256(xv, w)), sh);
    __m256i* a = reinterpret_cast<__m256i*>(acc + c);
    const __m256i old = _mm256_loadu_si256(a);
    _mm256_storeu_si256(a, kSub ? _mm256_sub_epi64(old, cnt) : _mm256_add_epi64(old, cnt));
  }
  return c;
}
#endif

// acc[c] += popcount(x & col[c]) << shift over n columns (vectorises to vpopcntq on AVX-512; AVX2:
// PopcountAcc4 above, the same integers).
inline void PopcountAdd(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  int64_t c = 0;
#if defined(__AVX2__) && !defined(__AVX512VPOPCNTDQ__)
  c = PopcountAcc4<false>(x, col, n, shift, acc);
#endif
  for (; c < n; ++c) acc[c] += static_cast<int64_t>(__builtin_popcountll(x & col[c])) << shift;
}
inline void PopcountSub(uint64_t x, const uint64_t* col, int64_t n, int shift, int64_t* acc) {
  int64_t c = 0;
#if defined(__AVX2__) && !defined(__AVX512VPOPCNTDQ__)
  c = PopcountAcc4<true>(x, col, n, shift, acc);
#endif
  for (; c < n; ++c) acc[c] -= static_cast<int64_t>(__builtin_popcountll(x & col[c])) << shift;
}

inline void PackedRow(const CrossbarTile& t, int64_t group, const uint64_t* x, int64_t xk, int v, int64_t* acc) {
  const int64_t NR = t.read_columns(), W = t.words;
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  std::fill(acc, acc + NR, 0);
  for (int64_t p = 0; p < NP; ++p) {
    const uint64_t* wp = t.packed.data() + (group * NP + p) * W * NR;
    for (int64_t k = 0; k < v; ++k) {
      const int shift = t.plane_shift[static_cast<size_t>(p)] + static_cast<int>(k);
      for (int64_t w = 0; w < W; ++w) {
        const uint64_t xw = x[k * xk + w];
        if (xw == 0) continue;
        if (t.plane_negative[static_cast<size_t>(p)]) {
          PopcountSub(xw, wp + w * NR, NR, shift, acc);
        } else {
          PopcountAdd(xw, wp + w * NR, NR, shift, acc);
        }
      }
    }
  }
}

}  // namespace xbar
