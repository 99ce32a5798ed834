// Exact integer convolutions (kernels.h): the counting pass of zero-skipping estimates
// (workload.cc) sums quantised inputs times quantised weights, integers that a float32 GEMM rounds
// once they pass 2^24. Two implementations, the same results (every output the exact sum, rounded
// once to float32; integer sums do not depend on the order of the additions, so the result is the
// same at any thread count and on any CPU that runs either):
// * oneDNN's int8 primitives where they sum exactly (AMX or VNNI): the inputs split into bytes, one
//   u8 x s8 -> s32 convolution per byte (4-8x a float32 convolution of the same shape), the byte
//   sums recombined in int64;
// * an AVX2 kernel of our own for every other AVX2 CPU and for signed inputs: the codes as int16
//   (offset by 2^15 where they pass it, the offset's share added back per output channel), lowered
//   in panels of 16 positions and multiplied by pairs of weights with vpmaddwd, whose pairwise sums
//   are exact in int32; each run of at most 255 weight pairs is added to int64 before int32 could
//   overflow.
#include "xbar/crossbar/kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#ifdef XBAR_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace xbar {

#ifdef XBAR_HAVE_DNNL
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Where oneDNN's u8 x s8 products accumulate straight into int32. Without VNNI (or AMX) its
// kernels add pairs of products in saturating int16 first (vpmaddubsw), which is not exact for
// inputs near 255 times weights near 127.
bool ExactInt8Isa() {
  static const bool exact = [] {
    switch (dnnl::get_effective_cpu_isa()) {
      case dnnl::cpu_isa::avx512_core_vnni:
      case dnnl::cpu_isa::avx512_core_bf16:
      case dnnl::cpu_isa::avx512_core_amx:
      case dnnl::cpu_isa::avx2_vnni:
        return true;
      default:
        return false;
    }
  }();
  return exact;
}

const dnnl::engine& CpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// oneDNN's path: unsigned codes only (u8 bytes); false where it does not apply.
bool DnnlConv(const IntConvShape& c, const float* x, const int8_t* w, float* y) {
  if (!ExactInt8Isa()) return false;
  const int64_t N = c.batch, C = c.in_channels, H = c.height, W = c.width, O = c.out_channels;
  const int64_t G = c.groups, KH = c.kernel_h, KW = c.kernel_w;
  const int64_t OH = (H + 2 * c.padding - c.dilation * (KH - 1) - 1) / c.stride + 1;
  const int64_t OW = (W + 2 * c.padding - c.dilation * (KW - 1) - 1) / c.stride + 1;
  if (N <= 0 || G <= 0 || C % G != 0 || O % G != 0 || OH <= 0 || OW <= 0) return false;
  // A byte's sum over one output's C/G·KH·KW products stays within int32: 255·128 per product.
  const int64_t reduce = C / G * KH * KW;
  if (reduce > (int64_t{1} << 31) / (255 * 128)) return false;

  // The inputs as bytes (NCHW), checked to be integer codes in [0, 2^16) on the way: low bytes,
  // then high bytes when any code needs them.
  const int64_t n_in = N * C * H * W;
  std::unique_ptr<uint8_t[]> lo(new uint8_t[static_cast<size_t>(n_in)]), hi(new uint8_t[static_cast<size_t>(n_in)]);
  uint32_t any_high = 0, bad = 0;
  {
    const float* __restrict xs = x;
    uint8_t* __restrict l = lo.get();
    uint8_t* __restrict h = hi.get();
    for (int64_t i = 0; i < n_in; ++i) {  // branch-free: vectorises (-fno-trapping-math)
      const float v = xs[i];
      const uint32_t in_range = static_cast<uint32_t>(v >= 0.0f) & static_cast<uint32_t>(v <= 65535.0f);  // 0 for NaN
      const auto u = static_cast<uint32_t>(static_cast<int32_t>(in_range != 0 ? v : 0.0f));
      bad |= (in_range ^ 1u) | static_cast<uint32_t>(static_cast<float>(u) != v);
      l[i] = static_cast<uint8_t>(u & 0xff);
      h[i] = static_cast<uint8_t>((u >> 8) & 0xff);
      any_high |= u >> 8;
    }
  }
  if (bad != 0) return false;
  const int passes = any_high != 0 ? 2 : 1;

  const int64_t n_out = N * O * OH * OW, P = OH * OW;
  std::unique_ptr<int32_t[]> sums(new int32_t[static_cast<size_t>(n_out * passes)]);
  bool nhwc = false;
  try {
    // oneDNN picks the layouts its int8 kernels want (NHWC for AMX); reorders move the data in and out.
    const dnnl::engine& engine = CpuEngine();
    dnnl::stream stream(engine);
    const dnnl::memory::dims wdims = G == 1 ? dnnl::memory::dims{O, C, KH, KW} : dnnl::memory::dims{G, O / G, C / G, KH, KW};
    const dnnl::memory::desc src_user({N, C, H, W}, dt::u8, tag::nchw);
    const dnnl::memory::desc dst_user({N, O, OH, OW}, dt::s32, tag::nchw);
    const dnnl::memory::desc wei_user(wdims, dt::s8, G == 1 ? tag::oihw : tag::goihw);
    const dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        dnnl::memory::desc({N, C, H, W}, dt::u8, tag::any), dnnl::memory::desc(wdims, dt::s8, tag::any),
        dnnl::memory::desc({N, O, OH, OW}, dt::s32, tag::any), {c.stride, c.stride}, {c.dilation - 1, c.dilation - 1},
        {c.padding, c.padding}, {c.padding, c.padding});
    const dnnl::convolution_forward::primitive_desc pd(desc, engine);  // from oneDNN's primitive cache
    const dnnl::convolution_forward conv(pd);
    // Brings user memory into the primitive's layout (or uses it as it is).
    auto in_layout = [&](dnnl::memory user, const dnnl::memory::desc& want) {
      if (user.get_desc() == want) return user;
      dnnl::memory packed(want, engine);
      dnnl::reorder(user, packed).execute(stream, user, packed);
      return packed;
    };
    const dnnl::memory weights = in_layout(dnnl::memory(wei_user, engine, const_cast<int8_t*>(w)), pd.weights_desc());
    // The sums in the primitive's layout: NHWC (AMX, VNNI) is recombined and transposed to NCHW in one
    // pass below; any other layout is reordered to NCHW first.
    const dnnl::memory::desc dst_nhwc({N, O, OH, OW}, dt::s32, tag::nhwc);
    nhwc = pd.dst_desc() == dst_nhwc;
    const bool direct = nhwc || pd.dst_desc() == dst_user;
    dnnl::memory dst_packed = direct ? dnnl::memory() : dnnl::memory(pd.dst_desc(), engine);
    for (int pass = 0; pass < passes; ++pass) {
      const dnnl::memory src = in_layout(dnnl::memory(src_user, engine, (pass == 0 ? lo : hi).get()), pd.src_desc());
      dnnl::memory out(direct ? pd.dst_desc() : dst_user, engine, sums.get() + pass * n_out);
      dnnl::memory dst = direct ? out : dst_packed;
      conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
      if (!direct) dnnl::reorder(dst, out).execute(stream, dst, out);
    }
    stream.wait();
  } catch (const dnnl::error&) {
    return false;  // no int8 implementation for this shape: the caller's float path, y untouched
  }

  // Exact int64 sums (high byte's sum · 256 + low byte's), rounded once to float32.
  const int32_t* __restrict s_lo = sums.get();
  const int32_t* __restrict s_hi = passes == 2 ? sums.get() + n_out : nullptr;
  auto sum_at = [s_lo, s_hi](int64_t i) {
    return static_cast<float>(s_hi != nullptr ? int64_t{s_hi[i]} * 256 + s_lo[i] : int64_t{s_lo[i]});
  };
  if (!nhwc) {
    for (int64_t i = 0; i < n_out; ++i) y[i] = sum_at(i);
    return true;
  }
  // NHWC [N, P, O] to NCHW [N, O, P] in 32 x 32 tiles: reads along o and writes along p stay in
  // cache. (Measured faster than oneDNN's s32 reorder followed by a contiguous pass, and than a
  // vectorised pass into a float buffer followed by a transposition.)
  constexpr int64_t kTile = 32;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t p0 = 0; p0 < P; p0 += kTile) {
      const int64_t p1 = std::min(P, p0 + kTile);
      for (int64_t o0 = 0; o0 < O; o0 += kTile) {
        const int64_t o1 = std::min(O, o0 + kTile);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t from = (n * P + p) * O;
          float* to = y + n * O * P + p;
          for (int64_t o = o0; o < o1; ++o) to[o * P] = sum_at(from + o);
        }
      }
    }
  }
  return true;
}

}  // namespace

#endif  // XBAR_HAVE_DNNL

#if defined(__AVX2__)
namespace {

constexpr int64_t kMr = 6;   // output channels per micro-tile
constexpr int64_t kNr = 16;  // positions per micro-tile (two vectors of 8 int32 sums)
// Weight pairs per int32 run at most (255 pairs of |c w| <= 2^15 * 2^7 stay below 2^31).
constexpr int64_t kChunkPairs = 255;

// c [kMr][kNr] (int64) += the sums over kp < pairs of a[kp][r] (the weights of two channels as
// one int32) times b[kp][col] (the codes of those channels, int16 pairs), in int32 registers.
inline void MicroTile(const int32_t* __restrict a, const int32_t* __restrict b, int64_t pairs, int64_t* __restrict c) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
          c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t kp = 0; kp < pairs; ++kp, a += kMr, b += kNr) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 8));
    __m256i t0, t1;
    // Written out: GCC 12 allocates the intrinsics' version with a register copy per accumulator.
    // Sixteen registers: twelve sums, the two position vectors, a broadcast weight pair, a product.
    __asm__(
        "vpbroadcastd 0(%[a]), %[t0]\n\t"
        "vpmaddwd %[b0], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c00], %[c00]\n\t"
        "vpmaddwd %[b1], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c01], %[c01]\n\t"
        "vpbroadcastd 4(%[a]), %[t0]\n\t"
        "vpmaddwd %[b0], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c10], %[c10]\n\t"
        "vpmaddwd %[b1], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c11], %[c11]\n\t"
        "vpbroadcastd 8(%[a]), %[t0]\n\t"
        "vpmaddwd %[b0], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c20], %[c20]\n\t"
        "vpmaddwd %[b1], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c21], %[c21]\n\t"
        "vpbroadcastd 12(%[a]), %[t0]\n\t"
        "vpmaddwd %[b0], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c30], %[c30]\n\t"
        "vpmaddwd %[b1], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c31], %[c31]\n\t"
        "vpbroadcastd 16(%[a]), %[t0]\n\t"
        "vpmaddwd %[b0], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c40], %[c40]\n\t"
        "vpmaddwd %[b1], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c41], %[c41]\n\t"
        "vpbroadcastd 20(%[a]), %[t0]\n\t"
        "vpmaddwd %[b0], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c50], %[c50]\n\t"
        "vpmaddwd %[b1], %[t0], %[t1]\n\t"
        "vpaddd %[t1], %[c51], %[c51]"
        : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21),
          [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51),
          [t0] "=&x"(t0), [t1] "=&x"(t1)
        : [a] "r"(a), [b0] "x"(b0), [b1] "x"(b1)
        : "memory");
  }
  const __m256i acc[kMr * 2] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  for (int64_t i = 0; i < kMr * 2; ++i) {
    int64_t* to = c + i * 8;  // row i / 2, positions (i % 2) * 8 ...
    const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc[i]));
    const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc[i], 1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to),
                        _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(to)), lo));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + 4),
                        _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(to + 4)), hi));
  }
}

// Four int64 below 2^51 in magnitude to float64, exactly: through the 2^52 + 2^51 bias.
inline __m256d Int64ToDouble(__m256i v) {
  const __m256i bias_i = _mm256_set1_epi64x(0x4338000000000000LL);  // the bits of 2^52 + 2^51
  return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(v, bias_i)), _mm256_castsi256_pd(bias_i));
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
std::unique_ptr<T[], AlignedFree> AlignedArray(int64_t n) {  // 64-byte aligned; throws std::bad_alloc
  const size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes > 0 ? bytes : 64);
  if (p == nullptr) throw std::bad_alloc();
  return std::unique_ptr<T[], AlignedFree>(static_cast<T*>(p));
}

// Output writers: float32 (the exact sum rounded once) or float64 (exact: every sum is below 2^51).
inline void StoreSums(float* out, __m256i lo, __m256i hi) {  // exact in float64, so rounded once
  _mm256_storeu_ps(out, _mm256_set_m128(_mm256_cvtpd_ps(Int64ToDouble(hi)), _mm256_cvtpd_ps(Int64ToDouble(lo))));
}
inline void StoreSums(double* out, __m256i lo, __m256i hi) {
  _mm256_storeu_pd(out, Int64ToDouble(lo));
  _mm256_storeu_pd(out + 4, Int64ToDouble(hi));
}

// y = the exact sums of codes x times weights w (int8 or int16), as float32 (rounded once) or
// float64 (exact). Column panels run in parallel (at::parallel_for: inside another parallel
// region, on the calling thread); each output's sum is the same integer whatever the split.
template <typename WeightT, typename OutT>
bool Avx2Conv(const IntConvShape& c, const float* x, const WeightT* w, OutT* y) {
  const int64_t N = c.batch, C = c.in_channels, H = c.height, W = c.width, O = c.out_channels;
  const int64_t G = c.groups, KH = c.kernel_h, KW = c.kernel_w, S = c.stride, D = c.dilation, pad = c.padding;
  if (N <= 0 || G <= 0 || C <= 0 || O <= 0 || C % G != 0 || O % G != 0 || S <= 0 || D <= 0 || pad < 0 || KH <= 0 ||
      KW <= 0) {
    return false;
  }
  const int64_t OH = (H + 2 * pad - D * (KH - 1) - 1) / S + 1;
  const int64_t OW = (W + 2 * pad - D * (KW - 1) - 1) / S + 1;
  if (OH <= 0 || OW <= 0) return false;

  // The codes: integers in [0, 2^16) or in [-2^15, 2^15), offset by 2^15 when any passes 2^15 - 1,
  // so that they fit int16. One vector pass converts them to int32 and checks them: a value that
  // is not an integer (NaN included) does not survive the round trip through int32.
  const int64_t n_in = N * C * H * W;
  auto codes = AlignedArray<int32_t>(n_in);
  __m256i vmin = _mm256_setzero_si256(), vmax = vmin, vbad = vmin;
  int64_t i = 0;
  for (; i + 8 <= n_in; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256i u = _mm256_cvttps_epi32(v);  // out of int32 range or NaN: INT32_MIN
    vbad = _mm256_or_si256(vbad, _mm256_castps_si256(_mm256_cmp_ps(_mm256_cvtepi32_ps(u), v, _CMP_NEQ_UQ)));
    vmin = _mm256_min_epi32(vmin, u);
    vmax = _mm256_max_epi32(vmax, u);
    _mm256_store_si256(reinterpret_cast<__m256i*>(codes.get() + i), u);
  }
  alignas(32) int32_t lanes[3][8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[0]), vmin);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[1]), vmax);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[2]), vbad);
  int32_t lo_code = 0, hi_code = 0;
  uint32_t bad = 0;
  for (int l = 0; l < 8; ++l) {
    lo_code = std::min(lo_code, lanes[0][l]);
    hi_code = std::max(hi_code, lanes[1][l]);
    bad |= static_cast<uint32_t>(lanes[2][l]);
  }
  for (; i < n_in; ++i) {
    const float v = x[i];
    const uint32_t in_range =
        static_cast<uint32_t>(v >= -32768.0f) & static_cast<uint32_t>(v <= 65535.0f);  // 0 for NaN
    const auto u = static_cast<int32_t>(in_range != 0 ? v : 0.0f);
    bad |= (in_range ^ 1u) | static_cast<uint32_t>(static_cast<float>(u) != v);
    codes[i] = u;
    lo_code = std::min(lo_code, u);
    hi_code = std::max(hi_code, u);
  }
  if (bad != 0 || lo_code < -32768 || hi_code > 65535 || (lo_code < 0 && hi_code > 32767)) return false;
  const int32_t offset = hi_code > 32767 ? 32768 : 0;

  // How long an int32 run may be: pairs of products of at most max_c · max_w each; and every
  // total below 2^51 in magnitude (the float conversions), the offset's share included.
  const int64_t Cg = C / G, Og = O / G, Cp = (Cg + 1) / 2, K = Cg * KH * KW;
  int64_t max_w = 0;
  for (int64_t i = 0; i < O * K; ++i) max_w = std::max<int64_t>(max_w, w[i] < 0 ? -int64_t{w[i]} : int64_t{w[i]});
  const int64_t max_c = std::max<int64_t>({1, offset - lo_code, hi_code - offset});
  const int64_t pair_max = 2 * max_c * std::max<int64_t>(1, max_w);
  if (pair_max > std::numeric_limits<int32_t>::max() ||
      K > (int64_t{1} << 51) / (2 * 32768 * std::max<int64_t>(1, max_w))) {
    return false;
  }

  // A zero-padded copy (padding is code 0) with each group's channels in pairs: one int32 holds
  // the int16 codes of channels 2i and 2i + 1 at one pixel (an odd group's last pair has a code-0
  // partner, whose weight is zero). xp [N][G][Cp][Hp][Wp].
  const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad, plane = Hp * Wp;
  const int64_t pairs = Cp * KH * KW, o_tiles = (Og + kMr - 1) / kMr, P = OH * OW, columns = N * P;
  const auto zero16 = static_cast<uint16_t>(-offset);
  auto xp = AlignedArray<int32_t>(N * G * Cp * plane);
  auto a = AlignedArray<int32_t>(G * o_tiles * pairs * kMr);  // the weights, in micro-tile order
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t cp = 0; cp < Cp; ++cp) {
        int32_t* to = xp.get() + ((n * G + g) * Cp + cp) * plane;
        std::fill(to, to + plane, static_cast<int32_t>(zero16 | (uint32_t{zero16} << 16)));
        const int64_t c0 = g * Cg + 2 * cp;
        const int32_t* even = codes.get() + (n * C + c0) * H * W;
        const int32_t* odd = 2 * cp + 1 < Cg ? even + H * W : nullptr;
        const __m256i off = _mm256_set1_epi32(offset), low16 = _mm256_set1_epi32(0xffff);
        const __m256i zero_hi = _mm256_set1_epi32(static_cast<int32_t>(uint32_t{zero16} << 16));
        for (int64_t h = 0; h < H; ++h) {
          int32_t* row = to + (h + pad) * Wp + pad;
          const int32_t* e = even + h * W;
          const int32_t* o = odd != nullptr ? odd + h * W : nullptr;
          int64_t k = 0;
          for (; k + 8 <= W; k += 8) {  // (even - offset) in the low half, (odd - offset) in the high
            const __m256i lo = _mm256_and_si256(
                _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(e + k)), off), low16);
            const __m256i hi =
                o != nullptr
                    ? _mm256_slli_epi32(
                          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + k)), off), 16)
                    : zero_hi;
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + k), _mm256_or_si256(lo, hi));
          }
          for (; k < W; ++k) {
            const auto lo = static_cast<uint16_t>(e[k] - offset);
            const auto hi = o != nullptr ? static_cast<uint16_t>(o[k] - offset) : zero16;
            row[k] = static_cast<int32_t>(lo | (uint32_t{hi} << 16));
          }
        }
      }
    }
  }
  // Weights of channel pairs as int16 pairs (the even channel in the low half), kMr output
  // channels side by side; missing channels and the partner of an odd group's last channel are 0.
  std::vector<int64_t> weight_sum(static_cast<size_t>(O));
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t t = 0; t < o_tiles; ++t) {
      for (int64_t kp = 0; kp < pairs; ++kp) {
        const int64_t cp = kp / (KH * KW), khw = kp % (KH * KW);
        for (int64_t r = 0; r < kMr; ++r) {
          const int64_t o = t * kMr + r;
          uint32_t v = 0;
          if (o < Og) {
            const WeightT* wo = w + (g * Og + o) * K;
            const int32_t w0 = wo[2 * cp * KH * KW + khw], w1 = 2 * cp + 1 < Cg ? wo[(2 * cp + 1) * KH * KW + khw] : 0;
            v = (static_cast<uint32_t>(w0) & 0xffffu) | (static_cast<uint32_t>(w1) << 16);
          }
          a[((g * o_tiles + t) * pairs + kp) * kMr + r] = static_cast<int32_t>(v);
        }
      }
    }
  }
  for (int64_t o = 0; o < O; ++o) {
    int64_t total = 0;
    for (int64_t k = 0; k < K; ++k) total += w[o * K + k];
    weight_sum[static_cast<size_t>(o)] = total * offset;  // what the offset added to every sum
  }
  // Where reduction pair kp = (cp, kh, kw) reads, relative to a position's corner.
  std::vector<int64_t> k_offset(static_cast<size_t>(pairs));
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const int64_t cp = kp / (KH * KW), kh = kp / KW % KH, kw = kp % KW;
    k_offset[static_cast<size_t>(kp)] = cp * plane + kh * D * Wp + kw * D;
  }
  // The fewest int32 runs, as equal as they can be: each within the overflow bound and at most
  // kChunkPairs (one run's lowered codes stay in L1).
  const int64_t run_max = std::min(kChunkPairs, std::numeric_limits<int32_t>::max() / pair_max);
  const int64_t runs = (pairs + run_max - 1) / run_max, chunk_pairs = (pairs + runs - 1) / runs;
  const int64_t panels = (columns + kNr - 1) / kNr;
  at::parallel_for(0, G * panels, 1, [&](int64_t i0, int64_t i1) {
    auto b = AlignedArray<int32_t>(chunk_pairs * kNr);       // one panel's lowered codes, one run
    auto sums = AlignedArray<int64_t>(o_tiles * kMr * kNr);  // one panel's sums, every output channel
    int64_t corner[kNr];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t g = i / panels, j0 = (i % panels) * kNr, width = std::min(kNr, columns - j0);
      for (int64_t j = 0; j < kNr; ++j) {  // the panel's positions (past the end: the last one again)
        const int64_t col = j0 + std::min(j, width - 1), n = col / P, p = col % P;
        corner[j] = ((n * G + g) * Cp) * plane + (p / OW) * S * Wp + (p % OW) * S;
      }
      // Positions in a row at stride 1 read consecutive pixels: the panel is two vector copies.
      const bool contiguous = corner[kNr - 1] - corner[0] == kNr - 1;
      std::fill(sums.get(), sums.get() + o_tiles * kMr * kNr, int64_t{0});
      for (int64_t k0 = 0; k0 < pairs; k0 += chunk_pairs) {
        const int64_t chunk = std::min(chunk_pairs, pairs - k0);
        for (int64_t kp = 0; kp < chunk; ++kp) {  // the lowered codes: kNr positions per pair
          const int32_t* from = xp.get() + k_offset[static_cast<size_t>(k0 + kp)];
          int32_t* to = b.get() + kp * kNr;
          if (contiguous) {
            const __m256i* v = reinterpret_cast<const __m256i*>(from + corner[0]);
            _mm256_store_si256(reinterpret_cast<__m256i*>(to), _mm256_loadu_si256(v));
            _mm256_store_si256(reinterpret_cast<__m256i*>(to + 8), _mm256_loadu_si256(v + 1));
          } else {
            for (int64_t j = 0; j < kNr; ++j) to[j] = from[corner[j]];
          }
        }
        for (int64_t t = 0; t < o_tiles; ++t) {
          MicroTile(a.get() + ((g * o_tiles + t) * pairs + k0) * kMr, b.get(), chunk, sums.get() + t * kMr * kNr);
        }
      }
      // The exact sums, the offset's share added back.
      const int64_t n0 = j0 / P, p0 = j0 % P;
      if (width == kNr && p0 + kNr <= P) {  // one image, consecutive positions: vector stores
        for (int64_t o = 0; o < Og; ++o) {
          const int64_t* row = sums.get() + (o / kMr) * kMr * kNr + (o % kMr) * kNr;
          const __m256i add = _mm256_set1_epi64x(weight_sum[static_cast<size_t>(g * Og + o)]);
          OutT* out = y + (n0 * O + g * Og + o) * P + p0;
          for (int64_t j = 0; j < kNr; j += 8) {
            StoreSums(out + j, _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j)), add),
                      _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j + 4)), add));
          }
        }
      } else {
        for (int64_t j = 0; j < width; ++j) {
          const int64_t col = j0 + j, n = col / P, p = col % P;
          OutT* out = y + (n * O + g * Og) * P + p;
          for (int64_t o = 0; o < Og; ++o) {
            const int64_t at = (o / kMr) * kMr * kNr + (o % kMr) * kNr + j;
            out[o * P] = static_cast<OutT>(sums[at] + weight_sum[static_cast<size_t>(g * Og + o)]);
          }
        }
      }
    }
  });
  return true;
}

constexpr bool kHaveAvx2 = true;

}  // namespace
#else
namespace {

constexpr bool kHaveAvx2 = false;
template <typename WeightT, typename OutT>
bool Avx2Conv(const IntConvShape&, const float*, const WeightT*, OutT*) {
  return false;  // a build without AVX2
}

}  // namespace
#endif  // __AVX2__

bool ExactIntConvAvailable() {
#ifdef XBAR_HAVE_DNNL
  if (ExactInt8Isa()) return true;
#endif
  return kHaveAvx2;
}

bool ExactIntConv(const IntConvShape& c, const float* x, const int8_t* w, float* y) {
#ifdef XBAR_HAVE_DNNL
  if (DnnlConv(c, x, w, y)) return true;
#endif
  return Avx2Conv(c, x, w, y);
}

bool ExactIntConvAvx2(const IntConvShape& c, const float* x, const int8_t* w, float* y) { return Avx2Conv(c, x, w, y); }

bool ExactIntSums(const IntConvShape& c, const float* x, const int16_t* w, double* y) { return Avx2Conv(c, x, w, y); }

bool ExactIntSumsAvailable() { return kHaveAvx2; }

}  // namespace xbar
