// The engine's per-position pass: column sums (counted from packed inputs or read from float sums),
// ADC conversion and the shift-and-add over input planes, in one go. The AVX-512 version keeps the
// counts and the plane sums of 64 columns in registers, the AVX2 one of 16 or 32 columns; the
// portable one does the same arithmetic in the same order, so all give the same bits
// (tests/crossbar: Kernels.*).
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "xbar/crossbar/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#define XBAR_HAVE_AVX512 1
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the undefined upper lanes inside its own AVX-512 conversion intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#else
#define XBAR_HAVE_AVX512 0
#endif
// Without AVX-512 (or without its vpopcntq), an AVX2 + FMA build has the same block kernel in
// 256-bit registers (ConvertBlockAvx2 below).
#if !XBAR_HAVE_AVX512 && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define XBAR_HAVE_AVX2_CONVERT 1
#else
#define XBAR_HAVE_AVX2_CONVERT 0
#endif

namespace xbar {
namespace {

std::atomic<bool> g_portable{false};

// The exponent of a plane weight, a signed power of two: its exponent field, unbiased (std::ilogb
// without the call).
inline int PowerOfTwoExponent(double pw) {
  uint64_t bits;
  std::memcpy(&bits, &pw, sizeof(bits));
  return static_cast<int>((bits >> 52) & 0x7FF) - 1023;
}

void ConvertPortable(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                     int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, double* S) {
  const int64_t NR = t.read_columns();
  std::fill(S, S + NR, 0.0);
  thread_local std::vector<int64_t> counts;  // scratch: this runs per position
  counts.resize(static_cast<size_t>(x != nullptr ? NR : 0));
  for (int64_t p = 0; p < tab.planes; ++p) {
    const float* row = nullptr;
    if (x != nullptr) {
      PackedRow(t, group, x + p * x_stride, xk, v, counts.data());
    } else {
      row = sums + p * sum_stride;
    }
    const double pw = tab.plane_weight[p];
    for (int64_t c = 0; c < NR; ++c) {
      const float s = x != nullptr ? static_cast<float>(counts[static_cast<size_t>(c)]) : row[c];
      const float code = std::min(tab.hi[c], std::max(tab.lo[c], std::nearbyint(s * tab.inv[c])));
      S[c] += pw * static_cast<double>(code);  // exact: a power of two times an integer code
    }
  }
  const double* sc = tab.scale + group * NR;
  for (int64_t c = 0; c < NR; ++c) S[c] *= sc[c];
}

#if XBAR_HAVE_AVX512
// Lanes of a register that hold columns, `rem` columns from its first.
inline __mmask8 LaneMask(int64_t rem) {
  return rem >= 8 ? __mmask8{0xFF} : rem > 0 ? static_cast<__mmask8>((1u << rem) - 1) : __mmask8{0};
}

// cnt[j] +-= popcount(x & col[j]) << shift over the block's registers (whole registers: the
// packed reads end in kConvertPad zero words).
template <int NB, bool kNegative, bool kShift>
inline void CountWord(__m512i* cnt, __m512i xb, const uint64_t* col, __m512i shift) {
  for (int j = 0; j < NB; ++j) {
    const __m512i cells = _mm512_loadu_si512(col + 8 * j);
    __m512i n = _mm512_popcnt_epi64(_mm512_and_si512(xb, cells));
    if (kShift) n = _mm512_sllv_epi64(n, shift);  // per-lane count: one uop, off the popcount port
    cnt[j] = kNegative ? _mm512_sub_epi64(cnt[j], n) : _mm512_add_epi64(cnt[j], n);
  }
}

// Columns [c0, c0 + 8 NB), 8 per register (kMasked: the last block, lanes past NR unused: read
// whole, since the tables and packed reads are padded, and not stored). The counts and the plane
// sums stay in registers; the ADC tables are read from L1 as operands. With
// kInt the codes are summed over planes as int32 shifts (exact while the sum fits, which the caller
// checks), else as doubles; either way the same integer, scaled once at the end.
template <int NB, bool kMasked, bool kInt, int kSimplePlanes>
void ConvertBlock(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                  int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, int64_t c0, double* S) {
  const int64_t NR = t.read_columns(), W = t.words;
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  __mmask8 mask[NB];
  __m512d acc[NB];
  __m256i iacc[NB];
  for (int j = 0; j < NB; ++j) {
    mask[j] = kMasked ? LaneMask(NR - c0 - 8 * j) : __mmask8{0xFF};
    acc[j] = _mm512_setzero_pd();
    iacc[j] = _mm256_setzero_si256();
  }
  const float* inv = tab.inv + c0;
  const float* lo = tab.lo + c0;
  const float* hi = tab.hi + c0;
  const uint64_t* packed = x != nullptr ? t.packed.data() + group * NP * W * NR + c0 : nullptr;
  for (int64_t p = 0; p < tab.planes; ++p) {
    const double pw = tab.plane_weight[p];
    const __m512d pwv = _mm512_set1_pd(pw);
    const __m256i plane_shift = _mm256_set1_epi32(PowerOfTwoExponent(pw));
    const bool negative_plane = pw < 0;
    // Register j's column sums s: ADC, then shift-and-add. min(hi, max(lo, rint(s * inv))): with
    // integer lo and hi, rounding after clipping is the same; std::min/std::max's choice on ties
    // (the second operand) is kept for the float path. Lanes past NR: zero tables, so a zero
    // code, and they are not stored.
    auto convert = [&](int j, __m256 s) {
      const __m256 iv = _mm256_loadu_ps(inv + 8 * j);
      const __m256 l = _mm256_loadu_ps(lo + 8 * j);
      const __m256 h = _mm256_loadu_ps(hi + 8 * j);
      const __m256 y = _mm256_mul_ps(s, iv);
      if (kInt) {
        // cvtps rounds to nearest even (the default mode, as std::nearbyint); added or subtracted
        // by the plane's sign.
        const __m256i code = _mm256_sllv_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, l), h)), plane_shift);
        iacc[j] = negative_plane ? _mm256_sub_epi32(iacc[j], code) : _mm256_add_epi32(iacc[j], code);
      } else {
        const __m256 r = _mm256_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        acc[j] = _mm512_fmadd_pd(pwv, _mm512_cvtps_pd(_mm256_min_ps(_mm256_max_ps(r, l), h)), acc[j]);
      }
    };
    if (x != nullptr) {
      __m512i cnt[NB];
      for (int j = 0; j < NB; ++j) cnt[j] = _mm512_setzero_si512();
      const uint64_t* xp = x + p * x_stride;
      if (kSimplePlanes > 0) {
        // kSimplePlanes positive cell planes at shifts 0, 1, ..., a 1-bit DAC and two words
        // (65..128 rows): straight-line code, no zero-word test (a zero word counts nothing).
        const __m512i x0 = _mm512_set1_epi64(static_cast<long long>(xp[0]));
        const __m512i x1 = _mm512_set1_epi64(static_cast<long long>(xp[1]));
        for (int j = 0; j < NB; ++j) {
          __m512i sum = _mm512_setzero_si512();
          for (int q = kSimplePlanes - 1; q >= 0; --q) {
            const uint64_t* c = packed + 2 * q * NR + 8 * j;
            const __m512i a = _mm512_loadu_si512(c);
            const __m512i b = _mm512_loadu_si512(c + NR);
            sum = _mm512_add_epi64(_mm512_add_epi64(sum, sum),  // earlier (higher) planes doubled
                                   _mm512_add_epi64(_mm512_popcnt_epi64(_mm512_and_si512(x0, a)),
                                                    _mm512_popcnt_epi64(_mm512_and_si512(x1, b))));
          }
          cnt[j] = sum;
        }
      }
      for (int64_t q = 0; q < (kSimplePlanes > 0 ? 0 : NP); ++q) {
        const bool negative = t.plane_negative[static_cast<size_t>(q)] != 0;
        for (int64_t k = 0; k < v; ++k) {
          const int sh = t.plane_shift[static_cast<size_t>(q)] + static_cast<int>(k);
          const __m512i shift = _mm512_set1_epi64(sh);
          for (int64_t w = 0; w < W; ++w) {
            const uint64_t xw = xp[k * xk + w];
            if (xw == 0) continue;
            const __m512i xb = _mm512_set1_epi64(static_cast<long long>(xw));
            const uint64_t* col = packed + (q * W + w) * NR;
            if (negative) {
              if (sh == 0) CountWord<NB, true, false>(cnt, xb, col, shift);
              else CountWord<NB, true, true>(cnt, xb, col, shift);
            } else {
              if (sh == 0) CountWord<NB, false, false>(cnt, xb, col, shift);
              else CountWord<NB, false, true>(cnt, xb, col, shift);
            }
          }
        }
      }
      for (int j = 0; j < NB; ++j) convert(j, _mm512_cvtepi64_ps(cnt[j]));
    } else {
      const float* row = sums + p * sum_stride + c0;
      for (int j = 0; j < NB; ++j) {
        convert(j, kMasked ? _mm256_maskz_loadu_ps(mask[j], row + 8 * j) : _mm256_loadu_ps(row + 8 * j));
      }
    }
  }
  const double* sc = tab.scale + group * NR + c0;
  for (int j = 0; j < NB; ++j) {
    const __m512d sum = kInt ? _mm512_cvtepi32_pd(iacc[j]) : acc[j];
    if (kMasked) {
      _mm512_mask_storeu_pd(S + c0 + 8 * j, mask[j], _mm512_mul_pd(sum, _mm512_maskz_loadu_pd(mask[j], sc + 8 * j)));
    } else {
      _mm512_storeu_pd(S + c0 + 8 * j, _mm512_mul_pd(sum, _mm512_loadu_pd(sc + 8 * j)));
    }
  }
}

template <bool kInt, int kSimple>
void ConvertAll(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, double* S) {
  const int64_t NR = t.read_columns();
  int64_t c0 = 0;
  for (; c0 + 64 <= NR; c0 += 64) ConvertBlock<8, false, kInt, kSimple>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, c0, S);
  if (NR - c0 > 32) {
    ConvertBlock<8, true, kInt, kSimple>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, c0, S);
  } else if (NR - c0 == 32) {
    ConvertBlock<4, false, kInt, kSimple>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, c0, S);
  } else if (NR > c0) {
    ConvertBlock<4, true, kInt, kSimple>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, c0, S);
  }
}
#endif

#if XBAR_HAVE_AVX2_CONVERT
// bytes[j] += the byte popcounts (PopcountBytes4x64) of input word xw AND the cells of columns
// [4 j, 4 j + 4) at col, for the N registers of a block.
template <int N>
inline void AddWordCounts(__m256i* bytes, uint64_t xw, const uint64_t* col, __m256i table, __m256i low) {
  const __m256i xb = _mm256_set1_epi64x(static_cast<long long>(xw));
  for (int j = 0; j < N; ++j) {
    const __m256i cells = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 4 * j));
    bytes[j] = _mm256_add_epi8(bytes[j], PopcountBytes4x64(_mm256_and_si256(xb, cells), table, low));
  }
}

// Columns [c0, c0 + 8 NB) in NB pairs of registers of four 64-bit counts (kMasked: the last block,
// whose lanes past NR are counted and converted from the padded reads and tables, and not stored).
// The AVX-512 ConvertBlock's arithmetic in the same order: each count (which fits int32: the
// caller checks) converted once to float, the ADC's scale, clip and round, the codes summed over
// input planes as int32 shifts (kInt) or as doubles, scaled once. The counts of one cell plane and
// input bit are summed in bytes over the row words (at most 31 at a time) before their per-lane sum.
template <int NB, bool kMasked, bool kInt, bool kHorner>
void ConvertBlockAvx2(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                      int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, int64_t c0, double* S) {
  const int64_t NR = t.read_columns(), W = t.words;
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  const __m256i table = NibblePopcountTable(), low = LowNibbles();
  __m256d acc[2 * NB];
  __m256i iacc[NB];
  for (int j = 0; j < NB; ++j) {
    acc[2 * j] = acc[2 * j + 1] = _mm256_setzero_pd();
    iacc[j] = _mm256_setzero_si256();
  }
  const int64_t rem = NR - c0;  // columns of this block that exist (kMasked: fewer than 8 NB)
  const float* inv = tab.inv + c0;
  const float* lo = tab.lo + c0;
  const float* hi = tab.hi + c0;
  const uint64_t* packed = x != nullptr ? t.packed.data() + group * NP * W * NR + c0 : nullptr;
  for (int64_t p = 0; p < tab.planes; ++p) {
    const double pw = tab.plane_weight[p];
    const __m256d pwv = _mm256_set1_pd(pw);
    const __m256i plane_shift = _mm256_set1_epi32(PowerOfTwoExponent(pw));
    const bool negative_plane = pw < 0;
    auto convert = [&](int j, __m256 s) {
      const __m256 y = _mm256_mul_ps(s, _mm256_loadu_ps(inv + 8 * j));
      const __m256 l = _mm256_loadu_ps(lo + 8 * j);
      const __m256 h = _mm256_loadu_ps(hi + 8 * j);
      if (kInt) {
        const __m256i code = _mm256_sllv_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, l), h)), plane_shift);
        iacc[j] = negative_plane ? _mm256_sub_epi32(iacc[j], code) : _mm256_add_epi32(iacc[j], code);
      } else {
        const __m256 rounded = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256 r = _mm256_min_ps(_mm256_max_ps(rounded, l), h);
        acc[2 * j] = _mm256_fmadd_pd(pwv, _mm256_cvtps_pd(_mm256_castps256_ps128(r)), acc[2 * j]);
        acc[2 * j + 1] = _mm256_fmadd_pd(pwv, _mm256_cvtps_pd(_mm256_extractf128_ps(r, 1)), acc[2 * j + 1]);
      }
    };
    if (x != nullptr) {
      __m256i cnt[2 * NB];
      for (int j = 0; j < 2 * NB; ++j) cnt[j] = _mm256_setzero_si256();
      const uint64_t* xp = x + p * x_stride;
      if (kHorner) {
        // One input bit, positive cell planes at shifts 0, 1, ..., NP - 1 and few words: the byte
        // counts of each plane added to the doubled sums of the planes above it, one vpsadbw at
        // the end (the caller checks that a byte holds the largest total, 8 W (2^NP - 1)).
        __m256i bytes[2 * NB];
        for (int j = 0; j < 2 * NB; ++j) bytes[j] = _mm256_setzero_si256();
        for (int64_t q = NP - 1; q >= 0; --q) {
          for (int j = 0; j < 2 * NB; ++j) bytes[j] = _mm256_add_epi8(bytes[j], bytes[j]);
          for (int64_t w = 0; w < W; ++w) {
            if (xp[w] != 0) AddWordCounts<2 * NB>(bytes, xp[w], packed + (q * W + w) * NR, table, low);
          }
        }
        for (int j = 0; j < 2 * NB; ++j) cnt[j] = _mm256_sad_epu8(bytes[j], _mm256_setzero_si256());
      }
      for (int64_t q = 0; q < (kHorner ? 0 : NP); ++q) {
        const bool negative = t.plane_negative[static_cast<size_t>(q)] != 0;
        for (int64_t k = 0; k < v; ++k) {
          const __m128i shift = _mm_cvtsi32_si128(t.plane_shift[static_cast<size_t>(q)] + static_cast<int>(k));
          for (int64_t w0 = 0; w0 < W; w0 += 31) {
            __m256i bytes[2 * NB];
            for (int j = 0; j < 2 * NB; ++j) bytes[j] = _mm256_setzero_si256();
            bool any = false;
            for (int64_t w = w0; w < std::min(W, w0 + 31); ++w) {
              const uint64_t xw = xp[k * xk + w];
              if (xw == 0) continue;
              any = true;
              AddWordCounts<2 * NB>(bytes, xw, packed + (q * W + w) * NR, table, low);
            }
            if (!any) continue;
            for (int j = 0; j < 2 * NB; ++j) {
              const __m256i n = _mm256_sll_epi64(_mm256_sad_epu8(bytes[j], _mm256_setzero_si256()), shift);
              cnt[j] = negative ? _mm256_sub_epi64(cnt[j], n) : _mm256_add_epi64(cnt[j], n);
            }
          }
        }
      }
      for (int j = 0; j < NB; ++j) {
        // The low halves of the eight counts (each fits int32: the caller checks), in column order,
        // converted to float as the int64 -> float conversion of the portable kernel rounds them.
        const __m256 lows = _mm256_shuffle_ps(_mm256_castsi256_ps(cnt[2 * j]), _mm256_castsi256_ps(cnt[2 * j + 1]),
                                              _MM_SHUFFLE(2, 0, 2, 0));
        convert(j, _mm256_cvtepi32_ps(_mm256_permute4x64_epi64(_mm256_castps_si256(lows), _MM_SHUFFLE(3, 1, 2, 0))));
      }
    } else {
      const float* row = sums + p * sum_stride + c0;
      for (int j = 0; j < NB; ++j) {
        if (kMasked) {
          alignas(32) float part[8] = {};
          for (int64_t c = 0; c < std::min<int64_t>(8, rem - 8 * j); ++c) part[c] = row[8 * j + c];
          convert(j, _mm256_load_ps(part));
        } else {
          convert(j, _mm256_loadu_ps(row + 8 * j));
        }
      }
    }
  }
  const double* sc = tab.scale + group * NR + c0;
  for (int j = 0; j < NB; ++j) {
    __m256d sum[2];
    if (kInt) {
      sum[0] = _mm256_cvtepi32_pd(_mm256_castsi256_si128(iacc[j]));
      sum[1] = _mm256_cvtepi32_pd(_mm256_extracti128_si256(iacc[j], 1));
    } else {
      sum[0] = acc[2 * j];
      sum[1] = acc[2 * j + 1];
    }
    for (int h = 0; h < 2; ++h) {
      const int64_t first = 8 * j + 4 * h;
      if (!kMasked || first + 4 <= rem) {
        _mm256_storeu_pd(S + c0 + first, _mm256_mul_pd(sum[h], _mm256_loadu_pd(sc + first)));
      } else if (first < rem) {
        alignas(32) double part[4];
        _mm256_store_pd(part, sum[h]);
        for (int64_t c = first; c < rem; ++c) S[c0 + c] = part[c - first] * sc[c];
      }
    }
  }
}

// Whether every column count of the packed kernel fits int32: |count| <= 64 W (2^v - 1) sum_q 2^shift_q
// (integer shifts: this runs per position).
bool CountsFitInt32(const CrossbarTile& t, int v) {
  int64_t most = 0;
  for (int shift : t.plane_shift) most += (int64_t{64} * t.words) << shift;
  return most * ((int64_t{1} << v) - 1) < (int64_t{1} << 31);
}

template <bool kInt, bool kHorner>
void ConvertAllAvx2(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                    int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, double* S) {
  // 8-column groups per block: 32 columns, 8 registers of byte counts with kHorner; else 16
  // columns, 4 of byte counts and 4 of counts (more would spill).
  constexpr int kBlock = kHorner ? 4 : 2;
  const int64_t NR = t.read_columns();
  int64_t c0 = 0;
  for (; c0 + 8 * kBlock <= NR; c0 += 8 * kBlock) {
    ConvertBlockAvx2<kBlock, false, kInt, kHorner>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, c0, S);
  }
  if (NR > c0) {
    ConvertBlockAvx2<kBlock, true, kInt, kHorner>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, c0, S);
  }
}

// Whether ConvertBlockAvx2 can sum a position's counts over cell planes in bytes (kHorner): a
// 1-bit DAC, positive planes at shifts 0, 1, ..., and 8 W (2^planes - 1) <= 255.
bool HornerInBytes(const CrossbarTile& t, int v) {
  const auto NP = static_cast<int64_t>(t.plane_shift.size());
  if (v != 1 || NP > 7 || 8 * t.words * ((int64_t{1} << NP) - 1) > 255) return false;
  for (int64_t q = 0; q < NP; ++q) {
    if (t.plane_shift[static_cast<size_t>(q)] != q || t.plane_negative[static_cast<size_t>(q)] != 0) return false;
  }
  return true;
}
#endif

}  // namespace

bool CodesFitInt32(float code_max, const std::vector<double>& plane_weight) {
  double weight = 0;
  for (double w : plane_weight) weight += std::fabs(w);
  return std::fabs(static_cast<double>(code_max)) * weight < 2147483648.0;
}

void SetPortableKernels(bool on) { g_portable.store(on); }
bool PortableKernels() { return !(XBAR_HAVE_AVX512 || XBAR_HAVE_AVX2_CONVERT) || g_portable.load(); }

void ConvertPosition(const CrossbarTile& t, int64_t group, const ConvertTables& tab, int v, const uint64_t* x,
                     int64_t x_stride, int64_t xk, const float* sums, int64_t sum_stride, double* S) {
#if XBAR_HAVE_AVX512
  if (!g_portable.load(std::memory_order_relaxed)) {
    // The common shapes get straight-line counting: 1-bit DAC, 65..128-row groups, one or two
    // positive cell planes at shifts 0 (and 1), as 1- and 2-bit cells give.
    int simple = 0;
    if (x != nullptr && v == 1 && t.words == 2 && t.plane_shift.size() <= 2) {
      simple = static_cast<int>(t.plane_shift.size());
      for (size_t q = 0; q < t.plane_shift.size(); ++q) {
        if (t.plane_shift[q] != static_cast<int>(q) || t.plane_negative[q] != 0) simple = 0;
      }
    }
    if (tab.int_codes) {
      if (simple == 1) ConvertAll<true, 1>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
      else if (simple == 2) ConvertAll<true, 2>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
      else ConvertAll<true, 0>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
    } else {
      if (simple == 1) ConvertAll<false, 1>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
      else if (simple == 2) ConvertAll<false, 2>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
      else ConvertAll<false, 0>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
    }
    return;
  }
#elif XBAR_HAVE_AVX2_CONVERT
  // Counts past int32 (tens of thousands of rows with 8-bit cells and DACs) take the portable kernel.
  if (!g_portable.load(std::memory_order_relaxed) && (x == nullptr || CountsFitInt32(t, v))) {
    const bool horner = x != nullptr && HornerInBytes(t, v);
    if (tab.int_codes) {
      if (horner) ConvertAllAvx2<true, true>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
      else ConvertAllAvx2<true, false>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
    } else {
      if (horner) ConvertAllAvx2<false, true>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
      else ConvertAllAvx2<false, false>(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
    }
    return;
  }
#endif
  ConvertPortable(t, group, tab, v, x, x_stride, xk, sums, sum_stride, S);
}

namespace {

// Bit k of plane p's digit of the integer input x, as the DAC splits it (stages/dac.cc).
inline uint64_t DigitBit(float xf, const InputDigits& d, int64_t p, int k) {
  const auto x = static_cast<int64_t>(xf);
  const int64_t u = d.signed_inputs && x < 0 ? x + d.wrap : x;
  return static_cast<uint64_t>((((u >> d.shift[p]) & d.mask[p]) >> k) & 1);
}

}  // namespace

void PatternCodes(const float* sums, int64_t entries, int64_t stride, int64_t NR, const ConvertTables& tab,
                  int32_t* codes) {
  for (int64_t e = 0; e < entries; ++e) {
    const float* s = sums + e * stride;
    int32_t* out = codes + e * stride;
    for (int64_t c = 0; c < NR; ++c) {
      out[c] = static_cast<int32_t>(std::min(tab.hi[c], std::max(tab.lo[c], std::nearbyint(s[c] * tab.inv[c]))));
    }
    std::fill(out + NR, out + stride, 0);
  }
}

namespace {

// acc[u] += sign_p * (code(pattern_p, c0 + u) << e_p) over the planes, for the columns c0 ..
// c0 + kBlock: the sums stay in registers across the planes (one load per code, no store).
template <int64_t kBlock>
inline void PatternBlock(const int32_t* const* rows, const int* shift, const bool* negative, int64_t planes, int64_t c0,
                         int32_t* __restrict out) {
  int32_t acc[kBlock] = {};
  for (int64_t p = 0; p < planes; ++p) {
    const int32_t* __restrict r = rows[p] + c0;
    const int e = shift[p];
    if (negative[p]) {
      for (int64_t u = 0; u < kBlock; ++u) acc[u] -= static_cast<int32_t>(static_cast<uint32_t>(r[u]) << e);
    } else {
      for (int64_t u = 0; u < kBlock; ++u) acc[u] += static_cast<int32_t>(static_cast<uint32_t>(r[u]) << e);
    }
  }
  for (int64_t u = 0; u < kBlock; ++u) out[u] = acc[u];
}

}  // namespace

void ConvertPatterns(const int32_t* codes, int64_t stride, const uint32_t* patterns, const ConvertTables& tab,
                     int64_t group, int64_t NR, double* S) {
  const double* sc = tab.scale + group * NR;
  constexpr int64_t kMaxPlanes = 64;
  if (tab.int_codes && tab.planes <= kMaxPlanes) {
    // Every partial sum fits int32 (CodesFitInt32): plane weights are signed powers of two, so each
    // plane adds or subtracts its codes shifted; exact, so in any order. Blocks of 32 columns, then
    // of 4 (the stride is whole vectors of at least 4 floats; PatternCodes zeroes the columns past NR).
    const int32_t* rows[kMaxPlanes];
    int shift[kMaxPlanes];
    bool negative[kMaxPlanes];
    for (int64_t p = 0; p < tab.planes; ++p) {
      rows[p] = codes + static_cast<int64_t>(patterns[p]) * stride;
      shift[p] = PowerOfTwoExponent(tab.plane_weight[p]);
      negative[p] = tab.plane_weight[p] < 0;
    }
    int32_t block[32];
    int64_t c0 = 0;
    for (; c0 + 32 <= stride && c0 < NR; c0 += 32) {
      PatternBlock<32>(rows, shift, negative, tab.planes, c0, block);
      const int64_t n = std::min<int64_t>(32, NR - c0);
      for (int64_t u = 0; u < n; ++u) S[c0 + u] = static_cast<double>(block[u]) * sc[c0 + u];
    }
    for (; c0 < NR; c0 += 4) {
      PatternBlock<4>(rows, shift, negative, tab.planes, c0, block);
      const int64_t n = std::min<int64_t>(4, NR - c0);
      for (int64_t u = 0; u < n; ++u) S[c0 + u] = static_cast<double>(block[u]) * sc[c0 + u];
    }
    return;
  }
  // Otherwise in double, exact as in ConvertPosition (integer codes times powers of two).
  std::fill(S, S + NR, 0.0);
  for (int64_t p = 0; p < tab.planes; ++p) {
    const double pw = tab.plane_weight[p];
    const int32_t* row = codes + static_cast<int64_t>(patterns[p]) * stride;
    for (int64_t c = 0; c < NR; ++c) S[c] += pw * static_cast<double>(row[c]);
  }
  for (int64_t c = 0; c < NR; ++c) S[c] *= sc[c];
}

void GroupPatterns(const float* x, const CrossbarTile& t, int64_t group, const InputDigits& d, int v,
                   uint32_t* patterns) {
  const int64_t r0 = group * t.group_rows, r1 = std::min(t.num_rows(), r0 + t.group_rows);
  const int64_t digit_mask = (int64_t{1} << v) - 1;
  std::fill(patterns, patterns + d.planes, 0u);
  for (int64_t r = r0; r < r1; ++r) {
    const auto xi = static_cast<int64_t>(x[t.rows[static_cast<size_t>(r)]]);
    if (xi == 0) continue;  // every digit zero
    const int64_t u = d.signed_inputs && xi < 0 ? xi + d.wrap : xi;
    const int at = static_cast<int>(v * (r - r0));
    for (int64_t p = 0; p < d.planes; ++p) {
      patterns[p] |= static_cast<uint32_t>(((u >> d.shift[p]) & d.mask[p] & digit_mask) << at);
    }
  }
}

namespace {

// The words of n (<= 64) inputs, at src (contiguous) or src[idx[b]]: bit b of plane p's bit k
// at out[p * p_stride + k * k_stride].
void PackInputWords(const float* src, const int64_t* idx, int64_t n, const InputDigits& d, int v, uint64_t* out,
                    int64_t p_stride, int64_t k_stride) {
#if XBAR_HAVE_AVX512
  if (d.wrap <= 256 && !g_portable.load(std::memory_order_relaxed)) {
    // The inputs as bytes u (wrapped into 0..255); bit k of plane p's digit is bit shift + k of u
    // where the plane's mask has bit k: one byte test per word.
    __m128i part[4];
    for (int b = 0; b < 4; ++b) {
      const int64_t left = n - 16 * b;
      const __mmask16 lanes = left >= 16 ? __mmask16{0xFFFF} : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : __mmask16{0};
      __m512 xf;
      if (idx == nullptr) {
        xf = _mm512_maskz_loadu_ps(lanes, src + 16 * b);
      } else {
        const auto lo8 = static_cast<__mmask8>(lanes & 0xFF), hi8 = static_cast<__mmask8>(lanes >> 8);
        const __m256 lo = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), lo8, _mm512_maskz_loadu_epi64(lo8, idx + 16 * b), src, 4);
        const __m256 hi = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), hi8, _mm512_maskz_loadu_epi64(hi8, idx + 16 * b + 8), src, 4);
        xf = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
      }
      __m512i x = _mm512_cvttps_epi32(xf);
      if (d.signed_inputs) {
        x = _mm512_mask_add_epi32(x, _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512()), x,
                                  _mm512_set1_epi32(static_cast<int>(d.wrap)));
      }
      part[b] = _mm512_cvtepi32_epi8(x);
    }
    const __m512i bytes = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(part[0]), part[1], 1)),
        _mm256_inserti128_si256(_mm256_castsi128_si256(part[2]), part[3], 1), 1);
    for (int64_t p = 0; p < d.planes; ++p) {
      for (int k = 0; k < v; ++k) {
        const int bit = d.shift[p] + k;
        const bool used = ((d.mask[p] >> k) & 1) != 0 && bit < 8;
        out[p * p_stride + k * k_stride] =
            used ? static_cast<uint64_t>(_mm512_test_epi8_mask(bytes, _mm512_set1_epi8(static_cast<char>(1 << bit)))) : 0;
      }
    }
    return;
  }
#elif XBAR_HAVE_AVX2_CONVERT
  if (d.wrap <= 256 && !g_portable.load(std::memory_order_relaxed)) {
    // As above in 256-bit registers: the 64 inputs (gathered, or padded with zeros, into a buffer
    // first) as bytes u in order, then bit b of every byte moved to its top bit (a 16-bit shift
    // left by 7 - b: the bits that cross into the next byte never reach its top) and collected by
    // vpmovmskb, 32 inputs at a time.
    alignas(32) float buf[64];
    const float* xs = src;
    if (idx != nullptr || n < 64) {
      for (int64_t b = 0; b < n; ++b) buf[b] = idx == nullptr ? src[b] : src[idx[b]];
      std::fill(buf + n, buf + 64, 0.0f);
      xs = buf;
    }
    const __m256i low_byte = _mm256_set1_epi32(0xFF), wrap = _mm256_set1_epi32(static_cast<int>(d.wrap));
    __m256i q[8];
    for (int b = 0; b < 8; ++b) {
      __m256i x = _mm256_cvttps_epi32(_mm256_loadu_ps(xs + 8 * b));
      if (d.signed_inputs) {
        x = _mm256_add_epi32(x, _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), x), wrap));
      }
      q[b] = _mm256_and_si256(x, low_byte);  // the low byte, as the AVX-512 path's truncating vpmovdb
    }
    // 32 int32 bytes in order: two unsigned packs interleave 128-bit lanes, one dword permute
    // restores the order.
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    auto bytes_of = [&](const __m256i* v) {
      const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(v[0], v[1]), _mm256_packus_epi32(v[2], v[3]));
      return _mm256_permutevar8x32_epi32(bytes, order);
    };
    const __m256i lo = bytes_of(q), hi = bytes_of(q + 4);
    for (int64_t p = 0; p < d.planes; ++p) {
      for (int k = 0; k < v; ++k) {
        const int bit = d.shift[p] + k;
        uint64_t word = 0;
        if (((d.mask[p] >> k) & 1) != 0 && bit < 8) {
          const __m128i up = _mm_cvtsi32_si128(7 - bit);
          word = static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(lo, up)))) |
                 static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(hi, up)))) << 32;
        }
        out[p * p_stride + k * k_stride] = word;
      }
    }
    return;
  }
#endif
  for (int64_t p = 0; p < d.planes; ++p) {
    for (int k = 0; k < v; ++k) {
      uint64_t word = 0;
      for (int64_t b = 0; b < n; ++b) word |= DigitBit(idx == nullptr ? src[b] : src[idx[b]], d, p, k) << b;
      out[p * p_stride + k * k_stride] = word;
    }
  }
}

}  // namespace

std::vector<uint64_t> PackRowBits(const float* xq, int64_t M, int64_t K, const InputDigits& d, int v) {
  const int64_t KW = (K + 63) / 64, P = d.planes;
  std::vector<uint64_t> out(static_cast<size_t>(M * P * v * KW));
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      uint64_t* dst = out.data() + m * P * v * KW;
      for (int64_t w = 0; w < KW; ++w) {
        PackInputWords(xq + m * K + w * 64, nullptr, std::min<int64_t>(64, K - w * 64), d, v, dst + w, v * KW, KW);
      }
    }
  });
  return out;
}

bool RowsContiguous(const CrossbarTile& t) {
  const int64_t R = t.num_rows();
  for (int64_t r = 1; r < R; ++r) {
    if (t.rows[static_cast<size_t>(r)] != t.rows[0] + r) return false;
  }
  return R > 0;
}

bool RowBitsFit(const CrossbarTile& t) {
  return t.rows_contiguous && t.rows[0] % 64 == 0 && (t.groups == 1 || t.group_rows % 64 == 0) &&
         t.groups * t.group_rows <= t.num_rows();
}

std::vector<uint64_t> PackTileInputs(const float* xq, int64_t M, int64_t K, const InputDigits& d,
                                     const CrossbarTile& t, int v) {
  const int64_t G = t.groups, g = t.group_rows, R = t.num_rows(), W = (g + 63) / 64, P = d.planes;
  const int64_t* rows = t.rows.data();
  std::vector<uint64_t> out(static_cast<size_t>(G * P * M * v * W));
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* src = xq + m * K;
      for (int64_t gi = 0; gi < G; ++gi) {
        uint64_t* dst = out.data() + (gi * P * M + m) * v * W;
        for (int64_t w = 0; w < W; ++w) {
          const int64_t r0 = gi * g + w * 64;  // first tile row of the word
          const int64_t n = std::max<int64_t>(0, std::min({int64_t{64}, R - r0, g - w * 64}));
          if (n == 0) {
            for (int64_t p = 0; p < P; ++p) {
              for (int k = 0; k < v; ++k) dst[p * M * v * W + k * W + w] = 0;
            }
          } else {
            PackInputWords(src, rows + r0, n, d, v, dst + w, M * v * W, W);
          }
        }
      }
    }
  });
  return out;
}

std::vector<uint64_t> PackTileFromRowBits(const std::vector<uint64_t>& row_bits, int64_t K, int64_t M, int64_t P,
                                          const CrossbarTile& t, int v) {
  const int64_t G = t.groups, g = t.group_rows, R = t.num_rows(), W = (g + 63) / 64, KW = (K + 63) / 64;
  const int64_t first = t.rows[0];
  std::vector<uint64_t> out(static_cast<size_t>(G * P * M * v * W));
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      for (int64_t p = 0; p < P; ++p) {
        for (int k = 0; k < v; ++k) {
          const uint64_t* rb = row_bits.data() + ((m * P + p) * v + k) * KW;
          for (int64_t gi = 0; gi < G; ++gi) {
            uint64_t* dst = out.data() + ((gi * P + p) * M + m) * v * W + k * W;
            for (int64_t w = 0; w < W; ++w) {
              const int64_t r0 = gi * g + w * 64;  // first tile row of the word
              const int64_t n = std::max<int64_t>(0, std::min({int64_t{64}, R - r0, g - w * 64}));
              uint64_t word = 0;
              if (n > 0) {
                const int64_t start = first + r0, q = start / 64, r = start % 64;
                word = rb[q] >> r;
                if (r != 0 && r + n > 64) word |= rb[q + 1] << (64 - r);
                if (n < 64) word &= (uint64_t{1} << n) - 1;
              }
              dst[w] = word;
            }
          }
        }
      }
    }
  });
  return out;
}

}  // namespace xbar
